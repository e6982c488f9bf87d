"""Train the tabular-classifier module's model: a small torch MLP over any numeric csv.

The `local` provider's run contract (docs/local-provider.md): the csv arrives in
MLFORM_INPUT_TRAIN, the hyperparameters in MLFORM_HYPERPARAMETERS (`epochs`, `lr`,
`hidden`, `label`, `features`: comma-separated, empty for every column but the label),
and the script writes a TorchScript `model.pt` (normalisation baked in, so the endpoint
takes raw features, and a softmax over the classes 0..K-1), `signature.json` (the
feature names, in input order) and `metrics.json` (holdout `accuracy`) to MLFORM_OUTPUT_DIR.
"""

import csv
import json
import os
import pathlib
import sys

import torch


class Classifier(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: int, classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(mean.shape[0], hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net((x - self.mean) / self.std), dim=1)


def load(path: str, label: str, wanted: list[str]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(feature names, features, labels) of the csv; exits with a message on bad data."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        data = list(reader)
    if label not in columns:
        sys.exit(f"label column {label!r} is not in the csv (columns: {', '.join(columns)})")
    features = wanted or [c for c in columns if c != label]
    missing = [f for f in features if f not in columns]
    if missing or not features:
        sys.exit(f"feature columns {missing or features} are not in the csv "
                 f"(columns: {', '.join(columns)})")
    rows, labels = [], []
    for number, record in enumerate(data, start=2):
        try:
            rows.append([float(record[f]) for f in features])
            labels.append(int(record[label]))
        except (TypeError, ValueError):
            sys.exit(f"line {number}: every feature must be a number and {label!r} an "
                     f"integer class: {record}")
    if len(rows) < 10:
        sys.exit(f"{len(rows)} rows: too few to train and hold some out")
    return (features, torch.tensor(rows, dtype=torch.float32),
            torch.tensor(labels, dtype=torch.long))


def main() -> None:
    hp = json.loads(os.environ.get("MLFORM_HYPERPARAMETERS", "{}"))
    out = pathlib.Path(os.environ["MLFORM_OUTPUT_DIR"])
    device = torch.device(os.environ.get("MLFORM_DEVICE", "cpu"))
    torch.manual_seed(int(hp.get("seed", 0)))
    wanted = [f.strip() for f in str(hp.get("features") or "").split(",") if f.strip()]
    features, x, y = load(os.environ["MLFORM_INPUT_TRAIN"], str(hp.get("label", "label")), wanted)
    if int(y.min()) < 0:
        sys.exit("labels must be classes 0..K-1")
    classes = max(2, int(y.max()) + 1)
    print(f"{len(x)} rows, {len(features)} features ({', '.join(features)}), {classes} classes",
          flush=True)
    split = int(len(x) * 0.8)
    mean, std = x[:split].mean(0), x[:split].std(0) + 1e-6
    model = Classifier(mean, std, int(hp.get("hidden", 32)), classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(hp.get("lr", 0.01)))
    xt, yt = x[:split].to(device), y[:split].to(device)
    for epoch in range(int(hp.get("epochs", 5))):
        for i in range(0, len(xt), 128):
            opt.zero_grad()
            probs = model(xt[i:i + 128])
            loss = torch.nn.functional.nll_loss(torch.log(probs + 1e-9), yt[i:i + 128])
            loss.backward()
            opt.step()
        # a step line of the run contract: mlform keeps it in the run's record (and MLflow)
        print(json.dumps({"step": epoch + 1, "loss": round(loss.item(), 6)}), flush=True)
    model.eval()
    with torch.no_grad():
        accuracy = (model(x[split:].to(device)).argmax(1).cpu() == y[split:]).float().mean().item()
    print(f"holdout accuracy {accuracy:.4f}")
    torch.jit.save(torch.jit.script(model.cpu()), str(out / "model.pt"))
    (out / "signature.json").write_text(json.dumps(
        {"inputs": features, "outputs": [f"p_{k}" for k in range(classes)]}))
    (out / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "rows": len(x)}))


if __name__ == "__main__":
    main()

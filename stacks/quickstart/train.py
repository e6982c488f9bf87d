"""Train the quickstart's fraud classifier: a small torch MLP, seconds on a CPU.

The `local` provider's run contract (docs/local-provider.md): inputs and
hyperparameters arrive in environment variables; the script writes a
TorchScript `model.pt` (normalisation baked in, so the endpoint takes raw
features), `signature.json` and `metrics.json` to MLFORM_OUTPUT_DIR.
"""

import csv
import json
import os
import pathlib

import torch

FEATURES = ["amount", "hour", "merchant_risk", "distance_km"]


class Classifier(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(len(FEATURES), hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net((x - self.mean) / self.std), dim=1)


def load(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    with open(path, newline="") as fh:
        data = list(csv.DictReader(fh))
    x = torch.tensor([[float(r[f]) for f in FEATURES] for r in data], dtype=torch.float32)
    y = torch.tensor([int(r["label"]) for r in data], dtype=torch.long)
    return x, y


def main() -> None:
    hp = json.loads(os.environ.get("MLFORM_HYPERPARAMETERS", "{}"))
    out = pathlib.Path(os.environ["MLFORM_OUTPUT_DIR"])
    device = torch.device(os.environ.get("MLFORM_DEVICE", "cpu"))
    torch.manual_seed(int(hp.get("seed", 0)))
    x, y = load(os.environ["MLFORM_INPUT_TRAIN"])
    split = int(len(x) * 0.8)
    mean, std = x[:split].mean(0), x[:split].std(0) + 1e-6
    model = Classifier(mean, std, int(hp.get("hidden", 32))).to(device)
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
    (out / "signature.json").write_text(json.dumps({"inputs": FEATURES,
                                                    "outputs": ["p_legit", "p_fraud"]}))
    metrics = {"accuracy": accuracy, "rows": len(x)}
    (out / "metrics.json").write_text(json.dumps(metrics))
    # Also on stdout, one JSON line: SageMaker reads metrics from the job's log with the
    # `"<metric>": <number>` regexes the sagemaker provider declares.
    print(json.dumps(metrics), flush=True)


if __name__ == "__main__":
    main()

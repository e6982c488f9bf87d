"""Train the tabular-classifier's model on several processes: DistributedDataParallel.

An optional entrypoint of the module, for a pipeline whose run has more than one
process (a cluster with `gpus_per_node > 1`, or `settings { processes_per_node = N }`
on the local provider): torchrun starts one copy per process with RANK, LOCAL_RANK and
WORLD_SIZE set, and the run contract adds MLFORM_DIST_BACKEND (nccl on GPUs, gloo on
CPU).  Each rank trains on its own shard of the training rows (DistributedSampler) and
DDP averages the gradients, so every rank ends with the same weights; rank 0 alone
evaluates the holdout and writes `model.pt`, `signature.json` and `metrics.json`, as
the contract asks.  Run as one plain process (no torchrun), it trains alone.

Same data, hyperparameters and model as train.py (it is self-contained, not importing
train.py, because a run's fingerprint covers its entrypoint file only).
"""

import csv
import json
import os
import pathlib
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


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
    distributed = "RANK" in os.environ   # started by torchrun
    if distributed:
        dist.init_process_group(os.environ.get("MLFORM_DIST_BACKEND", "gloo"))
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    hp = json.loads(os.environ.get("MLFORM_HYPERPARAMETERS", "{}"))
    out = pathlib.Path(os.environ["MLFORM_OUTPUT_DIR"])
    if os.environ.get("MLFORM_DEVICE") == "cuda":
        # one GPU per rank: LOCAL_RANK indexes the run's CUDA_VISIBLE_DEVICES
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    seed = int(hp.get("seed", 0))
    torch.manual_seed(seed)   # the same initial weights on every rank
    wanted = [f.strip() for f in str(hp.get("features") or "").split(",") if f.strip()]
    features, x, y = load(os.environ["MLFORM_INPUT_TRAIN"], str(hp.get("label", "label")), wanted)
    if int(y.min()) < 0:
        sys.exit("labels must be classes 0..K-1")
    classes = max(2, int(y.max()) + 1)
    split = int(len(x) * 0.8)
    if rank == 0:
        print(f"{len(x)} rows, {len(features)} features ({', '.join(features)}), {classes} "
              f"classes, {world} process(es)", flush=True)
    mean, std = x[:split].mean(0), x[:split].std(0) + 1e-6
    model = Classifier(mean, std, int(hp.get("hidden", 32)), classes).to(device)
    trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                      else None) if distributed else model
    opt = torch.optim.Adam(trained.parameters(), lr=float(hp.get("lr", 0.01)))
    train = TensorDataset(x[:split], y[:split])
    # drop_last: every rank takes the same number of batches, or DDP would wait forever
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, seed=seed,
                                 drop_last=True) if distributed else None
    batches = DataLoader(train, batch_size=128, sampler=sampler, shuffle=sampler is None)
    for epoch in range(int(hp.get("epochs", 5))):
        if sampler is not None:
            sampler.set_epoch(epoch)   # a new shuffle each epoch, the same on every rank
        for xb, yb in batches:
            opt.zero_grad()
            probs = trained(xb.to(device))
            loss = torch.nn.functional.nll_loss(torch.log(probs + 1e-9), yb.to(device))
            loss.backward()   # DDP all-reduces the gradients here
            opt.step()
        if rank == 0:
            # a step line of the run contract (rank 0's: the run's record keeps it)
            print(json.dumps({"step": epoch + 1, "loss": round(loss.item(), 6)}), flush=True)
    if rank == 0:   # the run contract: only rank 0 writes to MLFORM_OUTPUT_DIR
        model.eval()
        with torch.no_grad():
            predicted = model(x[split:].to(device)).argmax(1).cpu()
        accuracy = (predicted == y[split:]).float().mean().item()
        print(f"holdout accuracy {accuracy:.4f}")
        torch.jit.save(torch.jit.script(model.cpu()), str(out / "model.pt"))
        (out / "signature.json").write_text(json.dumps(
            {"inputs": features, "outputs": [f"p_{k}" for k in range(classes)]}))
        (out / "metrics.json").write_text(json.dumps(
            {"accuracy": accuracy, "rows": len(x), "processes": world}))
    if distributed:
        dist.barrier()   # rank 0 is done writing: only now may the ranks leave the group
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""Make the quickstart's dataset: a few thousand card transactions, no download.

Deterministic (seeded), so every machine trains on the same bytes.  Run
`python make_data.py [--shift]`; `--shift` writes the same shape of data with
larger amounts at night (the drift the monitor is there to catch).
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from pathlib import Path

FEATURES = ("amount", "hour", "merchant_risk", "distance_km")


def rows(n: int, seed: int, shift: float = 0.0):
    rng = random.Random(seed)
    for _ in range(n):
        amount = round(rng.lognormvariate(3.0 + shift, 1.0), 2)
        hour = rng.randint(0, 23)
        merchant_risk = round(rng.random(), 3)
        distance = round(rng.expovariate(1 / 20), 1)
        night = 1.0 if hour < 6 else 0.0
        score = 0.03 * amount + 2.5 * merchant_risk + 1.5 * night + 0.02 * distance - 4.0
        label = int(rng.random() < 1 / (1 + math.exp(-3 * score)))
        yield {"amount": amount, "hour": hour, "merchant_risk": merchant_risk,
               "distance_km": distance, "label": label}


def write(path: Path, n: int = 3000, seed: int = 7, shift: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*FEATURES, "label"])
        writer.writeheader()
        writer.writerows(rows(n, seed, shift))
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).parent / "data" / "transactions.csv"))
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shift", action="store_true")
    args = parser.parse_args()
    print(write(Path(args.out), args.rows, args.seed, 1.5 if args.shift else 0.0))

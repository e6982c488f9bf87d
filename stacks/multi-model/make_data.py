"""Make the multi-model stack's two datasets, generated (seeded), no download.

    data/fraud.csv   card transactions: amount, hour, merchant_risk, distance_km, label
    data/churn.csv   subscribers: tenure_months, monthly_charges, support_calls,
                     monthly_contract, label (1 = left)

`python make_data.py [--seed N] [--rows N] [--only fraud|churn]`.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from pathlib import Path


def fraud(rng: random.Random) -> dict:
    amount = round(rng.lognormvariate(3.0, 1.0), 2)
    hour = rng.randint(0, 23)
    merchant_risk = round(rng.random(), 3)
    distance = round(rng.expovariate(1 / 20), 1)
    night = 1.0 if hour < 6 else 0.0
    score = 0.03 * amount + 2.5 * merchant_risk + 1.5 * night + 0.02 * distance - 4.0
    return {"amount": amount, "hour": hour, "merchant_risk": merchant_risk,
            "distance_km": distance, "label": int(rng.random() < 1 / (1 + math.exp(-3 * score)))}


def churn(rng: random.Random) -> dict:
    tenure = rng.randint(1, 72)
    charges = round(rng.uniform(20, 120), 2)
    calls = min(10, int(rng.expovariate(1 / 1.5)))
    monthly = int(rng.random() < 0.5)
    score = -0.06 * tenure + 0.03 * charges + 0.6 * calls + 1.5 * monthly - 2.5
    return {"tenure_months": tenure, "monthly_charges": charges, "support_calls": calls,
            "monthly_contract": monthly,
            "label": int(rng.random() < 1 / (1 + math.exp(-2 * score)))}


KINDS = {"fraud": fraud, "churn": churn}


def write(path: Path, kind: str, n: int, seed: int) -> Path:
    rng = random.Random(f"{kind}-{seed}")
    rows = [KINDS[kind](rng) for _ in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default=str(Path(__file__).parent / "data"))
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", choices=sorted(KINDS))
    args = parser.parse_args()
    for kind in [args.only] if args.only else sorted(KINDS):
        print(write(Path(args.dir) / f"{kind}.csv", kind, args.rows, args.seed))

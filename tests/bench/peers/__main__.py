"""`python -m tests.bench.peers [PEER ...] [--reps N] [--quick]` (what `make bench-peers`
runs): builds or installs each named peer once per machine, then runs its side-by-side
figures.  PEER is one of `opentofu`, `dvc`, `serving`; none named runs them all."""

from __future__ import annotations

import argparse
import importlib
import sys

from ._common import MIN_REPS

PEERS = ("opentofu", "dvc", "serving")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.peers")
    parser.add_argument("peers", nargs="*", metavar="PEER", help=" | ".join(PEERS))
    parser.add_argument("--reps", type=int, default=MIN_REPS,
                        help=f"repetitions of each figure (at least {MIN_REPS} for the README)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few requests: checks the harness, not a figure")
    args = parser.parse_args(argv)
    unknown = [p for p in args.peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peer {unknown[0]!r}; choose from {', '.join(PEERS)}")
    for name in args.peers or PEERS:
        module = importlib.import_module(f"{__package__}.{name}")
        print(f"# {name}: building/installing the peer", file=sys.stderr, flush=True)
        module.build()
        print(f"# {name}: running", file=sys.stderr, flush=True)
        module.run(reps=args.reps, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

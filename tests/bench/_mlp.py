"""The model every serving benchmark serves: a seeded 16→64→64→2 MLP saved as TorchScript,
so mlform and its peers (tests/bench/peers/serving.py) answer with the same weights."""

from __future__ import annotations

from pathlib import Path

FEATURES, HIDDEN, CLASSES = 16, 64, 2


def save_mlp(directory: Path) -> Path:
    """Make `directory` and save the MLP in it as `model.pt`; returns that file."""
    import torch     # here: the peers' harness imports this module before building venvs

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(),
                              torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
                              torch.nn.Linear(HIDDEN, CLASSES), torch.nn.Softmax(dim=1))
    directory.mkdir(parents=True)
    path = directory / "model.pt"
    torch.jit.save(torch.jit.script(net.eval()), str(path))
    return path


def rows(n: int) -> list[list[float]]:
    """`n` input rows of the MLP, the same for every server."""
    return [[0.1 * ((i + r) % 7) for i in range(FEATURES)] for r in range(n)]

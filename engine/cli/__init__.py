"""The command-line interface: `mlform.cli:main` is the console script."""

from mlform.cli.app import app, main

__all__ = ["app", "main"]

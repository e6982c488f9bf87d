"""`python -m mlform.cli`: the same as the `mlform` console script."""

from mlform.cli.app import main

main()

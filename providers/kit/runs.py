"""The run contract: what a training script gets and gives, on every provider.

A pipeline's entrypoint runs with these environment variables (on top of the
pipeline's `environment`); a script written for one provider runs on the others:

=========================  ================================================
``MLFORM_INPUT_<NAME>``    one per input, the key upper-cased (non-alphanumerics
                           become ``_``): where the input's data is (a directory for
                           a directory dataset or an upstream pipeline's output)
``MLFORM_INPUTS``          JSON object: input name -> that path
``MLFORM_HYPERPARAMETERS`` JSON object: the pipeline's `hyperparameters`
``MLFORM_OUTPUT_DIR``      the directory the script writes to: ``model.pt`` (a
                           TorchScript module), optionally ``signature.json``, and
                           ``metrics.json`` (a JSON object of numbers)
``MLFORM_DEVICE``          ``cuda`` when the run has GPUs, else ``cpu``
``MLFORM_RUN_ID``          the run's id
``MLFORM_WORLD_SIZE``      how many processes run the script (1 unless the run is
                           distributed)
``MLFORM_DIST_BACKEND``    the torch.distributed backend a distributed script
                           passes to ``init_process_group``: ``nccl`` when the
                           run has GPUs, else ``gloo``
=========================  ================================================

Distributed runs (more than one process: several GPUs, or a provider setting such
as the local provider's ``processes_per_node``) start the entrypoint through torchrun,
which also sets, in each process, the standard variables of ``torch.distributed``:

=========================  ================================================
``RANK``                   this process's rank, 0 .. WORLD_SIZE-1
``LOCAL_RANK``             its rank on this node (the GPU it takes, among
                           ``CUDA_VISIBLE_DEVICES``)
``WORLD_SIZE``             how many processes there are (= MLFORM_WORLD_SIZE)
``MASTER_ADDR``            where rank 0's rendezvous store listens
``MASTER_PORT``            ...and on which port
=========================  ================================================

Every rank gets the same ``MLFORM_OUTPUT_DIR``: only rank 0 writes ``model.pt``,
``signature.json`` and ``metrics.json`` there (the run's metrics and model are rank
0's); other ranks must write nothing there.  A run fails when any rank fails, with
that rank's message.

Providers that read metrics from the log instead (SageMaker) ask the script to print
them as one JSON line as well.  `entrypoint_file` finds the entrypoint a provider runs
or uploads, and refuses one that changed since the plan.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any, Mapping

from mlform.providers.base import ProviderError

from .digests import hash_file

__all__ = ["MODEL_FILE", "METRICS_FILE", "input_variable", "contract_environment",
           "entrypoint_file", "code_archive", "reproducible_tar"]

MODEL_FILE, METRICS_FILE = "model.pt", "metrics.json"


def input_variable(key: str) -> str:
    """The contract's variable for input `key` (``train`` -> ``MLFORM_INPUT_TRAIN``)."""
    return "MLFORM_INPUT_" + re.sub(r"[^A-Z0-9]", "_", key.upper())


def contract_environment(*, inputs: Mapping[str, str], hyperparameters: Mapping[str, Any],
                         output_dir: str, device: str, run_id: str, world_size: int = 1,
                         backend: str | None = None) -> dict[str, str]:
    """The contract's variables of one run (see the module docstring); `backend` defaults
    to ``nccl`` on ``cuda`` and ``gloo`` otherwise."""
    env = {input_variable(key): path for key, path in inputs.items()}
    env.update({
        "MLFORM_INPUTS": json.dumps(dict(inputs), sort_keys=True),
        "MLFORM_HYPERPARAMETERS": json.dumps(dict(hyperparameters), sort_keys=True, default=str),
        "MLFORM_OUTPUT_DIR": output_dir,
        "MLFORM_DEVICE": device,
        "MLFORM_RUN_ID": run_id,
        "MLFORM_WORLD_SIZE": str(world_size),
        "MLFORM_DIST_BACKEND": backend or ("nccl" if device == "cuda" else "gloo"),
    })
    return env


def entrypoint_file(stack_dir: Path, address: str, attrs: Mapping[str, Any]) -> Path:
    """The pipeline's entrypoint on disk, refused if it changed since the plan.

    The engine gives a stack-relative `entrypoint_path` for pipelines inside modules, and
    the planned content's `entrypoint_sha256`.
    """
    relative = str(attrs.get("entrypoint_path") or attrs.get("entrypoint") or "")
    entrypoint = Path(relative) if Path(relative).is_absolute() else Path(stack_dir) / relative
    if not entrypoint.is_file():
        raise ProviderError(f"{address}: entrypoint {attrs.get('entrypoint')} not found "
                            f"(looked for {entrypoint})", address=address)
    wanted = attrs.get("entrypoint_sha256")
    if isinstance(wanted, str):
        found = hash_file(entrypoint).digest
        if found != wanted:
            raise ProviderError(f"{address}: entrypoint {attrs.get('entrypoint')} changed "
                                f"since the plan (sha256 {wanted[:12]}… → {found[:12]}…); "
                                f"run plan again", address=address)
    return entrypoint


#: folders never packed with a pipeline's code
_SKIP_IN_CODE = ("__pycache__", ".git", ".mlform")


def code_archive(stack_dir: Path, address: str, attrs: Mapping[str, Any],
                 source_dir: str | None) -> tuple[bytes, str]:
    """A reproducible tar.gz of the entrypoint (and every file of `source_dir`, relative
    to the stack), and the program's path inside it: what providers that run the
    entrypoint elsewhere (a training job, a pod) ship to it.  Fixed times, owners and
    modes: the same files give the same bytes, so the archive can be stored by digest."""
    entrypoint = entrypoint_file(Path(stack_dir), address, attrs)
    files: dict[str, Path] = {}
    program = entrypoint.name
    if source_dir:
        root = Path(source_dir)
        root = root if root.is_absolute() else Path(stack_dir) / root
        if not root.is_dir():
            raise ProviderError(f"{address}: settings.source_dir {source_dir} is not a "
                                f"directory (looked for {root})", address=address)
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not any(part in _SKIP_IN_CODE for part in rel.parts):
                files[rel.as_posix()] = path
        try:
            program = entrypoint.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:   # the entrypoint lies outside source_dir: beside it at the root
            if program in files:
                raise ProviderError(f"{address}: the entrypoint {entrypoint.name} would "
                                    f"overwrite {source_dir}/{program} in the code archive",
                                    address=address)
    files[program] = entrypoint
    return reproducible_tar({name: path.read_bytes() for name, path in files.items()}), program


def reproducible_tar(files: Mapping[str, bytes]) -> bytes:
    """A tar.gz of `files` (name -> content) with fixed times, owners and modes, in name
    order: the same files give the same bytes (`code_archive`, and archives built on
    one, such as a SageMaker sweep's with its launcher)."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    return raw.getvalue()

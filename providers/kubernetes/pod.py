"""The container side of the `kubernetes` provider: what mlform's pods run.

``python -m mlform.providers.kubernetes.pod COMMAND`` in the provider's image, with the
work in ``MLFORM_POD`` (JSON, written by the provider; `pods.pod_spec`):

* ``train`` - fetch the code archive (``code``: the entrypoint and its directory) and
  every input (``inputs``: name ->
  s3:// URI; a URI ending in ``/`` is a directory) from storage into a work directory,
  run the entrypoint with the kit's run contract, and upload ``MLFORM_OUTPUT_DIR`` to
  ``output``.  The script's exit code is the pod's; on failure the last lines of its
  output are the termination message (``FallbackToLogsOnError``).  In an Indexed Job
  (several nodes) every pod runs the script with ``NODE_RANK`` from its completion
  index; pod 0 uploads the output.  The script's output is also kept in a file, which
  pod 0 uploads beside the output as ``logs.txt`` whether the run succeeded or not (the
  provider reads the run's step metrics from it).

  A node with several GPUs (``processes_per_node`` > 1) runs one process per GPU: the
  entrypoint is launched through torchrun (`kit.torchrun`) with ``--nproc-per-node`` =
  the GPUs and ``--nnodes`` = the nodes; on one node a c10d rendezvous on a free local
  port, on several the static rendezvous at ``MASTER_ADDR:MASTER_PORT`` (pod 0, by the
  headless Service's name) with ``--node-rank`` from the completion index (a
  PyTorchJob's pods: the ``RANK`` its operator sets).  torchrun sets ``RANK``,
  ``LOCAL_RANK``, ``WORLD_SIZE``; ``MLFORM_WORLD_SIZE`` is nodes × processes per node.
  Only local rank 0's output reaches the pod's log (every rank's is kept under the
  work directory's ``ranks/``); when a rank fails, its own last lines are printed last,
  so they are in the termination message.
* ``serve`` - fetch each model version (``models``: ``[{version, uri, weight}]``, with
  ``variant``, ``role`` and ``framework`` for an endpoint's variants) and run the kit's
  model server (`kit.serving`, the one the `local` provider runs) on
  ``0.0.0.0:$MLFORM_PORT`` (8080 by default), which serves every variant and routes
  between them (``experiment``).  With ``capture`` the server captures requests to a
  local file, uploaded to ``capture`` + ``<pod name>.jsonl``; with an ``experiment`` it
  logs the rewards posted to it to a local file, uploaded to ``feedback`` + ``<pod
  name>.jsonl``: both every ``$MLFORM_CAPTURE_SECONDS`` (30) and when the pod stops.  A
  container that restarts takes its pod's objects back first (its files were lost with
  the old container), so the objects keep growing instead of starting again.  A bandit's
  policy starts from the rewards the endpoint's other pods (past ones: a bandit runs in
  one pod) uploaded, written as its state file; its own log is replayed over that.
* ``monitor`` - fetch the captured requests (every object under ``capture``), the
  baseline and the previous report, run the kit's check (`kit.monitor_check`), and
  upload the reports to ``reports`` (and a breach's stale marker to ``stale``).

The work directory is ``$MLFORM_WORKDIR`` (default ``mlform-work`` in the working directory).  Storage is
reached with the standard AWS variables (``AWS_ENDPOINT_URL_S3`` for MinIO and the
like), so the pod needs nothing but its environment.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

from mlform.providers.base import ProviderError
from mlform.providers.kit.monitor_check import capture_files
from mlform.providers.kit.runs import contract_environment
from mlform.providers.kit.sources import parse_s3
from mlform.providers.kit.storage import Missing, ObjectStore
from mlform.providers.kit.torchrun import (
    CPU_BACKEND, GPU_BACKEND, Launch, failed_rank, torchrun_argv,
)

__all__ = ["main", "train_command"]

_SERVER = Path(__file__).resolve().parent.parent / "kit" / "serving.py"


def _store(uri: str) -> ObjectStore:
    """The store of `uri`'s bucket (one per bucket: a boto3 client is slow to build, and
    a serving pod uploads its capture every few seconds)."""
    return _bucket_store(parse_s3(uri)[0])


@functools.lru_cache(maxsize=None)
def _bucket_store(bucket: str) -> ObjectStore:
    return ObjectStore(f"s3://{bucket}", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3"),
                       region=os.environ.get("AWS_DEFAULT_REGION"))


def fetch(uri: str, target: Path) -> Path:
    """An s3:// file, or every object under an s3:// "directory" (ending in /)."""
    _, key = parse_s3(uri)
    store = _store(uri)
    if uri.endswith("/"):
        target.mkdir(parents=True, exist_ok=True)
        store.download_prefix(key, target)
        return target
    return store.download(key, target / Path(key).name)


def upload(directory: Path, uri: str) -> None:
    _, prefix = parse_s3(uri)
    store = _store(uri)
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        store.upload(path, f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}")


def train_command(work: Mapping[str, Any], code: Path, root: Path,
                  environ: Mapping[str, str]) -> tuple[list[str], dict[str, str], int]:
    """(argv, the variables it adds, the world size) of the run's process in this pod:
    the script itself, or torchrun starting one process per GPU (module docstring)."""
    nodes = int(work.get("nodes") or 1)
    per_node = int(work.get("processes_per_node") or 1)
    index = environ.get("JOB_COMPLETION_INDEX")
    if per_node <= 1:
        # one process per node: its rank is the node's (the run contract's RANK and
        # LOCAL_RANK, as torchrun would set them on one process per node)
        added = {"NODE_RANK": index, "RANK": index, "LOCAL_RANK": "0"} if index is not None else {}
        return [sys.executable, str(code)], added, int(environ.get("WORLD_SIZE") or 1)
    # the node's rank: an Indexed Job's completion index; a PyTorchJob's operator's RANK
    node_rank = index if index is not None else environ.get("RANK") if nodes > 1 else None
    launch = Launch(per_node, GPU_BACKEND if work.get("device") == "cuda" else CPU_BACKEND)
    if nodes > 1:
        master, port = environ.get("MASTER_ADDR", ""), int(environ.get("MASTER_PORT") or 29500)
    else:
        master, port = "127.0.0.1", _free_port()
    argv = torchrun_argv(sys.executable, str(code), launch, master_addr=master,
                         master_port=port, run_id=str(work.get("run_id") or "run"),
                         nodes=nodes, node_rank=int(node_rank or 0), log_dir=root / "ranks")
    return argv, {"NODE_RANK": str(node_rank or 0)}, nodes * per_node


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_logged(argv: list[str], variables: Mapping[str, str], cwd: Path, log: Path) -> int:
    """Run `argv`, its output going to this process's (the pod's log) and to `log`."""
    with open(log, "wb") as kept:
        proc = subprocess.Popen(argv, env=dict(variables), cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
            kept.write(line)
        return proc.wait()


def train(work: Mapping[str, Any], root: Path) -> int:
    archive = fetch(work["code"], root / "download")
    with tarfile.open(archive) as tar:        # written by mlform (kit.runs.code_archive)
        tar.extractall(root / "code", filter="data")
    code = root / "code" / work["program"]
    inputs = {name: str(fetch(uri, root / "inputs" / name))
              for name, uri in sorted((work.get("inputs") or {}).items())}
    output = root / "output"
    output.mkdir(parents=True, exist_ok=True)
    argv, added, world = train_command(work, code, root, os.environ)
    device = work.get("device", "cpu")
    variables = {**os.environ, **dict(work.get("environment") or {}), **added,
                 **contract_environment(inputs=inputs,
                                        hyperparameters=work.get("hyperparameters") or {},
                                        output_dir=str(output), device=device,
                                        run_id=work.get("run_id", ""), world_size=world)}
    variables["PYTHONUNBUFFERED"] = "1"   # its lines reach the log as they are printed
    first = added.get("NODE_RANK", "0") == "0"
    print(f"mlform: running {work['program']} ({work.get('run_id')}"
          + (f", {world} processes" if world > 1 else "") + ")", flush=True)
    log = root / "logs.txt"
    status = _run_logged(argv, variables, code.parent, log)
    if status != 0:
        failure = failed_rank(log.read_text(errors="replace"), root / "ranks") \
            if argv[1:3] == ["-m", "torch.distributed.run"] else None
        if failure is not None:
            print(f"mlform: rank {failure.rank} of {world} exited with code "
                  f"{failure.exit_code}; its last lines:\n{failure.tail}", flush=True)
        print(f"mlform: {work['program']} exited with code {status}", flush=True)
    if first and work.get("output"):
        _upload_log(log, work["output"] + "logs.txt")
    if status != 0:
        return status
    if first:
        upload(output, work["output"] + "output/")
        print(f"mlform: uploaded the output to {work['output']}output/", flush=True)
    return 0


def _upload_log(log: Path, uri: str) -> None:
    """The run's log for its record; failing to upload it fails nothing (it is reported)."""
    _, key = parse_s3(uri)
    try:
        _store(uri).upload(log, key)
    except (ProviderError, Missing, OSError) as exc:
        print(f"mlform: uploading the log to {uri} failed: {exc}", file=sys.stderr, flush=True)


def serve(work: Mapping[str, Any], root: Path) -> int:
    models = []
    for entry in work.get("models") or []:
        variant = entry.get("variant") or "primary"
        path = fetch(entry["uri"] if entry["uri"].endswith("/") else entry["uri"] + "/",
                     root / "models" / variant / f"v{entry['version']}")
        models.append({"version": entry["version"], "path": str(path),
                       "weight": entry.get("weight", 100),
                       **{k: entry[k] for k in ("variant", "role", "framework") if k in entry}})
    pod = os.environ.get("HOSTNAME") or socket.gethostname()
    uploads: list[tuple[Path, str]] = []     # (local file, object) uploaded every round
    capture = work.get("capture")
    capture_file = root / "capture.jsonl"
    if capture:
        uploads.append((capture_file, capture["uri"] + f"{pod}.jsonl"))
    experiment = work.get("experiment")
    if experiment:
        experiment = {**experiment, "feedback_path": str(root / "feedback.jsonl"),
                      "state_path": str(root / "bandit.json")}
        uploads.append((root / "feedback.jsonl", work["feedback"]["uri"] + f"{pod}.jsonl"))
    for path, uri in uploads:
        _resume(path, uri)
    if experiment and experiment["type"] == "bandit":
        _seed_bandit(experiment, [m["variant"] for m in models if m.get("role") != "shadow"
                                  and m.get("variant")], work["feedback"]["uri"], uploads[-1][1])
    spec = {"address": work.get("address", ""), "name": work["name"], "host": "0.0.0.0",
            "port": int(os.environ.get("MLFORM_PORT", "8080")),
            "token": secrets.token_hex(16), "torch_threads": int(work.get("torch_threads", 1)),
            "generation": 1, "models": models,
            "capture": ({"path": str(capture_file),
                         "sample_percent": int(capture.get("sample_percent", 100))}
                        if capture else None),
            "experiment": experiment}
    spec_path = root / "server.json"
    spec_path.write_text(json.dumps(spec))
    spec_path.chmod(0o600)
    print(f"mlform: serving {work['name']} versions "
          f"{[m['version'] for m in models]} on port {spec['port']}", flush=True)
    if not uploads:
        os.execv(sys.executable, [sys.executable, str(_SERVER), str(spec_path)])
    # With files to upload, stay as the parent: upload them while the server runs.
    server = subprocess.Popen([sys.executable, str(_SERVER), str(spec_path)])
    stop = threading.Event()

    def forward(signum: int, _frame: Any) -> None:
        stop.set()
        server.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    every = float(os.environ.get("MLFORM_CAPTURE_SECONDS", "30"))
    try:
        while server.poll() is None:
            stop.wait(every)
            for path, uri in uploads:
                _upload_capture(path, uri)
        for path, uri in uploads:
            _upload_capture(path, uri)
    finally:     # never leave the server behind this process (it is the container's)
        if server.poll() is None:
            server.terminate()
            server.wait()
    return server.returncode or 0


def _resume(path: Path, uri: str) -> None:
    """Take back the pod's own uploaded object when its local file is gone (a restarted
    container starts with an empty disk): the next upload then holds the old lines and
    the new, and the server finds the ids it issued before (feedback for them counts).
    Failing to read it is reported; serving goes on (the object then starts again)."""
    if path.exists():
        return
    _, key = parse_s3(uri)
    try:
        body = _store(uri).get_bytes(key)
    except (ProviderError, Missing, OSError) as exc:
        print(f"mlform: reading {uri} back failed: {exc}", file=sys.stderr, flush=True)
        return
    if body:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body if body.endswith(b"\n") else body + b"\n")


def _seed_bandit(experiment: Mapping[str, Any], variants: list[str], prefix_uri: str,
                 own_uri: str) -> None:
    """Write the bandit's state file from the rewards the endpoint's other pods uploaded
    (a pod replaced by a rolling update or a rescheduling leaves its object behind), as a
    snapshot that includes none of this pod's own log: the server replays that log over
    it, so every reward counts once.  Without other rewards there is no state file."""
    from mlform.providers.kit import bandit

    state = Path(experiment["state_path"])
    state.unlink(missing_ok=True)
    _, prefix = parse_s3(prefix_uri)
    _, own = parse_s3(own_uri)
    store = _store(prefix_uri)
    try:
        lines = [line for item in store.list(prefix) if item["Key"] != own
                 for line in (store.get_bytes(item["Key"]) or b"").splitlines()]
    except (ProviderError, Missing, OSError) as exc:
        print(f"mlform: reading the bandit's rewards under {prefix_uri} failed: {exc}; its "
              "policy starts from this pod's own", file=sys.stderr, flush=True)
        return
    if not variants:
        return
    policy = bandit.Policy(variants, experiment["reward"], experiment["floor_percent"], None)
    if not policy.replay(lines):
        return
    # the snapshot's layout (`bandit.Policy.state`), saying it holds none of this pod's
    # log's lines: the server replays that log whole over it
    state.write_text(json.dumps({**policy.state(), "feedback_lines": 0}))
    print(f"mlform: the bandit starts from {len(lines)} rewards of the endpoint's other pods",
          flush=True)


def _upload_capture(path: Path, uri: str) -> None:
    """Upload the capture so far: the server rotates it (``capture.jsonl.N`` ...
    ``capture.jsonl``, at most its cap on disk), uploaded as one object of its files
    oldest first.  A failed upload is reported and retried on the next round (serving
    goes on: the capture is for monitors, not for answers)."""
    _, key = parse_s3(uri)
    try:
        with _opened_capture(path) as parts:
            if not parts:
                return
            # the files' content as it is now, from the open files: the server may rotate
            # (rename, delete the oldest) while this copies, which the open files ignore
            source = path.with_name(f".{path.name}.upload")
            with open(source, "wb") as out:
                for fh in parts:
                    shutil.copyfileobj(fh, out)
        _store(uri).upload(source, key)
    except (ProviderError, Missing, OSError) as exc:
        print(f"mlform: uploading the capture to {uri} failed: {exc}", file=sys.stderr,
              flush=True)


@contextlib.contextmanager
def _opened_capture(path: Path, attempts: int = 5) -> Iterator[list[BinaryIO]]:
    """The capture's non-empty files, opened, oldest first, all from one moment.

    Listing and opening the files are several calls, and the server may rotate in
    between (``path`` -> ``path.1`` -> ``path.2``; the oldest deleted): opening by the
    names listed would then skip a file or miss one deleted.  So the files are listed,
    opened, and listed again; the same names on the same inodes (a rename keeps the
    inode, a rotation gives ``path`` a new one) mean no rotation came between, and the
    open files are that moment's capture.  Otherwise it starts again."""
    for _ in range(attempts):
        opened = _open_together(path)
        if opened is None:
            continue
        try:
            yield [fh for fh in opened if os.fstat(fh.fileno()).st_size]
        finally:
            for fh in opened:
                fh.close()
        return
    raise OSError(f"{path} kept rotating while it was being read ({attempts} tries)")


def _open_together(path: Path) -> list[BinaryIO] | None:
    """The capture's files opened, or None (nothing left open) when it rotated meanwhile."""
    before = _inodes(path)
    if before is None:
        return None
    opened: list[BinaryIO] = []
    try:
        for name, inode in before:
            opened.append(open(name, "rb"))
            if os.fstat(opened[-1].fileno()).st_ino != inode:
                break
        else:
            if _inodes(path) == before:
                return opened
    except FileNotFoundError:          # deleted by the cap since the listing
        pass
    for fh in opened:
        fh.close()
    return None


def _inodes(path: Path) -> list[tuple[Path, int]] | None:
    """The capture's files and their inodes; None when one went while listing."""
    try:
        return [(name, name.stat().st_ino) for name in capture_files(path)]
    except FileNotFoundError:          # deleted by the cap since the listing
        return None


def monitor(work: Mapping[str, Any], root: Path) -> int:
    from mlform.providers.kit.monitor_check import MonitorSettings, run_check

    directory = root / "monitor"
    reports = directory / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    _, report_prefix = parse_s3(work["reports"])
    store = _store(work["reports"])
    previous = store.get_bytes(f"{report_prefix.rstrip('/')}/latest.json")
    if previous is not None:
        (reports / "latest.json").write_bytes(previous)
    # every pod's capture, in key order, as one file (read from its start each run: the
    # window is the last `window_rows` input rows, 1,000 unless settings say)
    capture = directory / "capture.jsonl"
    with open(capture, "wb") as out:
        _, prefix = parse_s3(work["capture"])
        source = _store(work["capture"])
        for item in source.list(prefix):
            out.write(source.get_bytes(item["Key"]) or b"")
    base = work["baseline"]
    baseline = fetch(base["uri"], directory / "baseline") if base.get("uri") else \
        directory / "baseline" / "missing"
    settings = MonitorSettings.model_validate(work.get("settings") or {})
    pipeline = work.get("pipeline")
    spec = {"address": work["address"], "dir": str(directory), "checks": work["checks"],
            "settings": work.get("settings") or {}, "on_breach": work.get("on_breach"),
            "endpoint": {"address": work.get("endpoint"), "capture": str(capture)},
            "baseline": {"address": base.get("address"), "path": str(baseline),
                         "format": base.get("format"), "digest": base.get("digest")},
            "pipeline": pipeline, "stale_marker": str(directory / "stale.json")}
    report = run_check(spec, window_rows=settings.window_rows or 1000)
    for path in sorted(reports.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            store.upload(path, f"{report_prefix.rstrip('/')}/{path.name}")
    stale = directory / "stale.json"
    if stale.is_file() and work.get("stale"):
        _, key = parse_s3(work["stale"])
        _store(work["stale"]).upload(stale, key)
    print(report["summary"], flush=True)
    return 0


COMMANDS = {"train": train, "serve": serve, "monitor": monitor}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        print(f"usage: python -m mlform.providers.kubernetes.pod {{{','.join(COMMANDS)}}}",
              file=sys.stderr)
        return 2
    work = json.loads(os.environ["MLFORM_POD"])
    root = Path(os.environ.get("MLFORM_WORKDIR") or Path.cwd() / "mlform-work")
    root.mkdir(parents=True, exist_ok=True)
    try:
        return COMMANDS[argv[1]](work, root)
    except Exception as exc:   # the message becomes the pod's termination message
        message = f"mlform {argv[1]}: {type(exc).__name__}: {exc}"
        print(message, file=sys.stderr, flush=True)
        log = os.environ.get("MLFORM_TERMINATION_LOG", "/dev/termination-log")
        try:
            Path(log).write_text(message)
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

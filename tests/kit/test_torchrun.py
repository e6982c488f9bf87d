"""kit.torchrun: the command line of a distributed run and the failing rank torchrun names
(the local provider and the kubernetes provider's pods both use them)."""

from __future__ import annotations

from pathlib import Path

from mlform.providers.kit.torchrun import Launch, failed_rank, launch_of, torchrun_argv


def test_one_node_is_a_c10d_rendezvous_and_python_args_reach_every_rank(tmp_path):
    argv = torchrun_argv("py", "train.py", Launch(2, "gloo"), master_addr="127.0.0.1",
                         master_port=4000, run_id="run-1", log_dir=tmp_path,
                         python_args=("-X", "mark"))
    assert argv == ["py", "-X", "mark", "-m", "torch.distributed.run", "--nnodes", "1",
                    "--nproc-per-node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                    "127.0.0.1:4000", "--rdzv-id", "run-1", "--max-restarts", "0",
                    "--log-dir", str(tmp_path), "--tee", "3", "--local-ranks-filter", "0",
                    "--no-python", "py", "-X", "mark", "-u", "train.py"]


def test_several_nodes_name_their_rank_and_node_0s_address():
    argv = torchrun_argv("py", "train.py", Launch(4, "nccl"), master_addr="r-0.r.ns.svc",
                         master_port=29500, run_id="r", nodes=3, node_rank=2)
    assert "--rdzv-backend" not in argv and "--log-dir" not in argv
    assert argv[argv.index("--nnodes") + 1] == "3"
    assert argv[argv.index("--node-rank") + 1] == "2"
    assert argv[argv.index("--master-addr") + 1] == "r-0.r.ns.svc"


def test_launch_is_one_process_per_gpu_or_the_cpu_processes_asked():
    assert launch_of([0, 1, 2], None) == Launch(3, "nccl")
    assert launch_of([], 4) == Launch(4, "gloo") and not launch_of([], None).distributed


def test_the_failing_rank_and_its_own_last_lines(tmp_path: Path):
    rank_dir = tmp_path / "run_abc" / "attempt_0" / "1"
    rank_dir.mkdir(parents=True)
    (rank_dir / "stderr.log").write_text("loading\nrank one ran out of memory\n")
    console = ("Root Cause (first observed failure):\n[0]:\n  time      : 2026-01-01\n"
               "  host      : h\n  rank      : 1 (local_rank: 1)\n  exitcode  : 3 (pid: 9)\n")
    failure = failed_rank(console, tmp_path, lines=1)
    assert (failure.rank, failure.exit_code, failure.tail) == (1, 3, "rank one ran out of memory")
    assert failed_rank("torchrun: error: bad flag", tmp_path) is None

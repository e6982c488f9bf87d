"""Refresh of 1,000 SageMaker resources against the emulator, at parallelism 1 and 16.

The stack: 250 each of dataset (an `s3://` source, read not copied), training_cluster
(a compute profile in S3), model (package group + package + Model) and endpoint
(EndpointConfig + Endpoint), every model and endpoint chained to its upstream
instance.  It is applied once; then the refresh phase alone (every resource read
through the provider over HTTP, compared with the state) is timed at parallelism 1
and 16.

The emulator is one moto process (a threaded Werkzeug server under one GIL, keeping
each client connection open), so at parallelism 16 the refresh is bounded by the CPU
time that process and the client's botocore spend per call (~2 ms each), not by the
waiting: against AWS, where each call waits ~20-100 ms on the network and the server
is not on the same cores, overlap pays more.  Each figure is the best of two runs,
parallelism 1 and 16 interleaved; both runs are recorded.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlform import operations
from mlform.plan.inputs import PlanOptions
from mlform.refresh import refresh
from mlform.session import Session, SessionOptions

from fixture import REGION, ROLE_ARN

from ._support import record

PER_KIND = 250
BUCKET = "mlform-bench"


def _stack(directory: Path, url: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.hcl").write_text(f'''
provider "sagemaker" {{
  region       = "{REGION}"
  role_arn     = "{ROLE_ARN}"
  bucket       = "{BUCKET}"
  endpoint_url = "{url}"
  poll_seconds = 0.01
}}

locals {{
  keys = [for i in range({PER_KIND}) : format("k%04d", i)]
}}

dataset "d" {{
  for_each = toset(local.keys)
  source   = "s3://{BUCKET}/source/${{each.key}}.csv"
  format   = "csv"
}}

training_cluster "c" {{
  for_each      = toset(local.keys)
  accelerator   = "cpu"
  gpus_per_node = 0
}}

model "m" {{
  for_each = toset(local.keys)
  artifact = "s3://{BUCKET}/artifacts/${{each.key}}/model.tar.gz"
  tags     = {{ source = dataset.d[each.key].digest }}
}}

endpoint "e" {{
  for_each = toset(local.keys)
  model    = model.m[each.key]
  replicas = 1
}}
''')
    return directory


def test_refresh_1000_sagemaker_resources(tmp_path, aws):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for i in range(PER_KIND):
        s3.put_object(Bucket=BUCKET, Key=f"source/k{i:04d}.csv", Body=b"x,y\n1,2\n")
    stack = _stack(tmp_path / "fleet", aws.url)

    session = Session(stack, SessionOptions(parallelism=16))
    try:
        with operations.locked(session, "apply"):
            state = operations.load_state(session)
            plan = operations.plan(session, state, PlanOptions(parallelism=16))
            assert not plan.errored, [d.summary for d in plan.diagnostics][:5]
            t0 = time.perf_counter()
            result = operations.apply(session, state, plan, parallelism=16)
            apply_s = time.perf_counter() - t0
        assert result.ok, result.failures[:5]
        state = result.state
        assert len(state.resources) == 4 * PER_KIND

        def timed(parallelism: int) -> tuple[float, int]:
            aws.clear_calls()
            t0 = time.perf_counter()
            refreshed = refresh(session.provider_set(state), state, parallelism)
            wall = time.perf_counter() - t0
            assert not refreshed.diagnostics, [d.summary for d in refreshed.diagnostics][:5]
            assert refreshed.drift == [], [c.address for c in refreshed.drift][:5]
            assert aws.mutating_calls() == []
            return wall, len(aws.calls())

        def interleaved() -> dict[int, list[float]]:
            runs: dict[int, list[float]] = {1: [], 16: []}
            for _ in range(2):
                for p in (1, 16):
                    wall, calls[p] = timed(p)
                    runs[p].append(wall)
            return runs

        calls: dict[int, int] = {}
        # As fast as the emulator answers...
        fast = interleaved()
        # ...and with 20 ms added to every answer, a network round trip to a region.
        aws.control(latency_ms=20)
        slow = interleaved()
    finally:
        session.close()

    n = 4 * PER_KIND
    record("sagemaker_apply_1000", round(apply_s, 2), "s", resources=n, parallelism=16)
    for label, runs in (("", fast), ("_20ms", slow)):
        best = {p: min(times) for p, times in runs.items()}
        for p in (1, 16):
            record(f"sagemaker_refresh{label}_p{p}", round(best[p], 2), "s", resources=n,
                   api_calls=calls[p], runs=[round(t, 2) for t in runs[p]])
        record(f"sagemaker_refresh{label}_speedup", round(best[1] / best[16], 2), "x",
               resources=n, target=12 if label else None,
               note="one moto process answers every call")

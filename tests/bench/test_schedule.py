"""Schedule efficiency: how close a parallel apply comes to the ideal schedule.

1,000 resources on the memory provider at 50 ms per call, a layered DAG of
depth 5 (dataset -> pipeline -> model -> endpoint -> monitor, 200 instances
each, every block `for_each` over the block before), `--parallelism 32`.

Dependencies are between resource blocks, as in Terraform: a layer starts
when the whole previous block is done.  So the ideal is
5 layers x ceil(200 / 32) rounds x 50 ms; the figure is the wall time of the
apply phase (plan excluded) over that ideal.  Target <= 1.15.
"""

from __future__ import annotations

import math
import time

from mlform import operations
from mlform.plan.inputs import PlanOptions
from mlform.session import Session, SessionOptions

from ._support import layered_stack, record

LAYERS, WIDTH, PARALLELISM, LATENCY_MS = 5, 200, 32, 50


def test_schedule_efficiency(tmp_path):
    stack = layered_stack(tmp_path / "layers", WIDTH, LATENCY_MS)
    session = Session(stack, SessionOptions(parallelism=PARALLELISM))
    try:
        with operations.locked(session, "apply"):
            state = operations.load_state(session)
            plan = operations.plan(session, state, PlanOptions(parallelism=PARALLELISM))
            assert not plan.errored, [d.summary for d in plan.diagnostics]
            assert plan.summary.add == LAYERS * WIDTH
            t0 = time.perf_counter()
            result = operations.apply(session, state, plan, parallelism=PARALLELISM)
            wall = time.perf_counter() - t0
    finally:
        session.close()
    assert result.ok, result.failures[:5]
    assert result.added == LAYERS * WIDTH
    assert len(result.state.resources) == LAYERS * WIDTH
    ideal = LAYERS * math.ceil(WIDTH / PARALLELISM) * LATENCY_MS / 1000
    record("apply_schedule_wall", round(wall, 3), "s", resources=LAYERS * WIDTH,
           layers=LAYERS, parallelism=PARALLELISM, latency_ms=LATENCY_MS)
    record("apply_schedule_ideal", round(ideal, 3), "s",
           formula=f"{LAYERS} x ceil({WIDTH}/{PARALLELISM}) x {LATENCY_MS} ms")
    record("apply_schedule_ratio", round(wall / ideal, 3), "x", target="<= 1.15",
           wall_s=round(wall, 3), ideal_s=round(ideal, 3))

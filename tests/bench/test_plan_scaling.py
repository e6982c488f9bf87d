"""Plan scaling: a no-op plan (refresh included) of 1,000 and 10,000 instances.

The stack chains four kinds with `for_each` over the block before
(dataset -> model -> endpoint -> monitor, see `_support.chained_stack`), on
the memory provider at zero latency.  It is applied first (untimed); then
the engine time of a plan is measured in this process: `Session` creation
(load + graph) + lock + state load + plan (refresh and walk), the best of a
few runs after one warm-up, so imports and first-use grammar builds are not
counted.

Targets (DESIGN.md section 7 / the benchmark brief): 10k under 2 s, and
t(10k) / t(1k) <= 12 (near-linear).
"""

from __future__ import annotations

import time

import pytest

from mlform.config.syntax import parse_hcl

from ._support import apply_stack, chained_stack, changed, many_blocks_hcl, record, timed_plan

RUNS = 3


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    out = {}
    for n in (1_000, 10_000):
        stack = chained_stack(tmp_path_factory.mktemp(f"plan{n}"), keys=n // 4)
        applied = apply_stack(stack)
        assert applied["result"].added == n
        out[n] = stack
    return out


def _best_plan(stack, n):
    plan, _ = timed_plan(stack)             # warm-up (imports, grammar, caches in the OS)
    assert not plan.errored
    runs = []
    for _ in range(RUNS):
        plan, t = timed_plan(stack)
        assert not plan.errored, [d.summary for d in plan.diagnostics]
        assert len(plan.changes) == n
        assert changed(plan) == [], changed(plan)[:5]
        assert not plan.drift and not plan.has_changes
        runs.append(t)
    return min(runs, key=lambda t: t.total)


def test_noop_plan_scaling(stacks):
    best = {n: _best_plan(stacks[n], n) for n in (1_000, 10_000)}
    for n, t in best.items():
        record(f"plan_noop_{n // 1000}k_engine", round(t.total, 3), "s",
               target="< 2 s" if n == 10_000 else None, instances=n, runs=RUNS,
               phases=t.as_dict())
    ratio = best[10_000].total / best[1_000].total
    record("plan_noop_scaling_ratio_10k_1k", round(ratio, 2), "x", target="<= 12",
           t_1k=round(best[1_000].total, 3), t_10k=round(best[10_000].total, 3))


def test_parse_1000_blocks():
    text = many_blocks_hcl(1_000)
    parse_hcl(text, "warmup.hcl")            # the grammar is built on first use
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        body, diags = parse_hcl(text, "bench.hcl")
        times.append(time.perf_counter() - t0)
        assert not diags
        assert len(body.blocks) == 1_000
    record("parse_hcl_1000_blocks", round(min(times), 3), "s", blocks=1_000,
           bytes=len(text.encode()), runs=RUNS)

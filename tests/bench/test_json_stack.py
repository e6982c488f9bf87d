"""Loading a 10,000-resource JSON stack (`main.mlform.json`), and JSON read the old way.

The stack (`_support.many_resources_json`) chains dataset -> pipeline -> model ->
endpoint -> monitor on the memory provider, every block referencing the one before
through a `${...}` template, with nested `settings`/`lifecycle` blocks.  Measured in
this process, after a warm-up on a small stack (imports, the HCL grammar), the best of
a few runs, each with the cyclic GC paused as `load_stack` pauses it (wall time, and the
process's CPU time beside it: on a shared machine the wall time also counts waiting):

* `load_stack` (read, parse, decode) and `build_graph` of the whole stack, with the
  phases beside it: `json.loads` of the same text (the floor: C, no positions) and
  `parse_json` (positions, values, and every `${...}` template compiled);
* the same file with its templates written as plain strings: the JSON reading alone,
  since each distinct `${...}` string costs one HCL parse of its own (python-hcl2's
  lark parser, about 0.3 ms; its cache holds 4,096);
* on a 1,000-resource file, `parse_json` against the path it replaced: `json.loads`
  then PyYAML's pure-Python composer for the line marks (`parse_yaml` on the text).

Target: 10k under 1 s for load + graph.
"""

from __future__ import annotations

import json
import time

import pytest

from mlform._gc import paused_gc
from mlform.config.loader import load_stack
from mlform.config.syntax import parse_json, parse_yaml
from mlform.graph import build_graph

from ._support import json_stack, many_resources_json, record

RUNS = 3
N = 10_000


def _best(fn, runs: int = RUNS) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process over the same span, result) of the
    fastest of `runs` calls, each with the cyclic GC paused as `load_stack` pauses it."""
    best, result = (float("inf"), 0.0), None
    for _ in range(runs):
        with paused_gc():
            c0, t0 = time.process_time(), time.perf_counter()
            result = fn()
            took = (time.perf_counter() - t0, time.process_time() - c0)
        best = min(best, took)
    return best[0], best[1], result


@pytest.mark.parametrize("references", [True, False], ids=["templates", "plain"])
def test_load_10k_resource_json_stack(tmp_path, references):
    load_stack(json_stack(tmp_path / "warmup", 50))
    stack = json_stack(tmp_path / "stack", N, references)
    text = (stack / "main.mlform.json").read_text()

    load_s, load_cpu, config = _best(lambda: load_stack(stack))
    graph_s, graph_cpu, graph = _best(lambda: build_graph(config))
    assert len(graph.resources()) == N
    loads_s, _, _ = _best(lambda: json.loads(text))
    parse_s, _, (body, diags) = _best(lambda: parse_json(text, "main.mlform.json"))
    assert not diags and len(body.blocks) == N + 2      # + provider and variable

    record("json_stack_load_10k" + ("" if references else "_plain_strings"),
           round(load_s + graph_s, 3), "s", target="< 1 s", resources=N,
           bytes=len(text.encode()), templates=text.count("${"), runs=RUNS,
           cpu_s=round(load_cpu + graph_cpu, 3),
           phases={"load_stack": round(load_s, 3), "build_graph": round(graph_s, 3),
                   "parse_json": round(parse_s, 3), "json_loads": round(loads_s, 4)})


def test_json_parse_against_the_yaml_composer_1k():
    text = many_resources_json(1_000)
    parse_json(many_resources_json(50), "warmup.json")

    def old_path():  # what parse_json did before: validate, then compose for line marks
        json.loads(text)
        return parse_yaml(text, "main.json")

    new_s, new_cpu, (body, diags) = _best(lambda: parse_json(text, "main.mlform.json"))
    old_s, old_cpu, (old_body, old_diags) = _best(old_path, runs=1)
    assert not diags and not old_diags
    assert len(body.blocks) == len(old_body.blocks) == 1_002
    record("json_parse_1k", round(new_s, 3), "s", resources=1_000, runs=RUNS,
           cpu_s=round(new_cpu, 3), yaml_composer_s=round(old_s, 3),
           yaml_composer_cpu_s=round(old_cpu, 3), speedup=round(old_s / new_s, 1))

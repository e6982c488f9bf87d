"""The dependency graph: edges from references and depends_on, cycles named in full."""

import pytest

from mlform.config.loader import load_stack
from mlform.diagnostics import DiagnosticError
from mlform.graph import build_graph, to_dot, to_mermaid

BASE = '''
provider "memory" {}
dataset "d" { source = "s" }
pipeline "p" {
  inputs     = { train = dataset.d }
  entrypoint = "train.py"
}
model "m" { artifact = pipeline.p.model_uri }
endpoint "e" {
  model      = model.m
  depends_on = [dataset.d]
}
'''


def stack(tmp_path, text):
    (tmp_path / "main.hcl").write_text(text)
    (tmp_path / "train.py").write_text("")
    return load_stack(tmp_path)


def test_edges_from_references_and_depends_on(tmp_path):
    graph = build_graph(stack(tmp_path, BASE))
    edges = graph.resource_edges()
    assert edges["pipeline.p"] == {"dataset.d"}
    assert edges["model.m"] == {"pipeline.p"}
    assert edges["endpoint.e"] == {"model.m", "dataset.d"}
    order = [n.key for n in graph.topological()]
    assert order.index("dataset.d") < order.index("pipeline.p") < order.index("model.m")


def test_edges_through_locals_are_collapsed_for_rendering(tmp_path):
    graph = build_graph(stack(tmp_path, BASE + 'locals { u = model.m.uri }\n'
                                              'monitor "x" {\n  endpoint = endpoint.e\n'
                                              '  baseline = dataset.d\n  tags = { u = local.u }\n}\n'))
    assert graph.resource_edges()["monitor.x"] == {"endpoint.e", "dataset.d", "model.m"}
    assert '"monitor.x" -> "model.m";' in to_dot(graph)
    assert "n_monitor_x --> n_model_m" in to_mermaid(graph)


def test_cycle_names_every_edge_with_its_line(tmp_path):
    text = '''provider "memory" {}
dataset "a" {
  source = dataset.b.uri
}
dataset "b" {
  source = dataset.a.uri
}
'''
    with pytest.raises(DiagnosticError) as exc:
        build_graph(stack(tmp_path, text))
    (diag,) = exc.value.diagnostics
    assert diag.summary == "Dependency cycle: dataset.a -> dataset.b -> dataset.a"
    assert "dataset.a -> dataset.b  (at " in diag.detail and "main.hcl:3:12)" in diag.detail
    assert "main.hcl:6:12)" in diag.detail.splitlines()[1]

"""`mlform cost`: the breakdown of the current state, as a user runs it (a subprocess)."""

from __future__ import annotations

STACK = """
provider "memory" {
  store  = ".mlform/memory.json"
  prices = { "ml.m5.large" = 0.115, "nvidia-h100" = 12.5 }
}
training_cluster "gpu" {
  accelerator   = "nvidia-h100"
  gpus_per_node = 1
  nodes         = 2
}
pipeline "train" {
  cluster    = training_cluster.gpu
  entrypoint = "train.py"
  settings {
    metrics = { accuracy = 0.97, run_seconds = 5400 }
  }
}
model "m" {
  artifact = pipeline.train.model_uri
}
endpoint "api" {
  for_each      = toset(["eu", "us"])
  model         = model.m
  replicas      = 2
  instance_type = "ml.m5.large"
}
endpoint "odd" {
  model         = model.m
  instance_type = "ml.x9.huge"
}
"""


def test_cost_of_the_current_state(make_stack, mlform):
    stack = make_stack(STACK, files={"train.py": "print('train')\n"})
    empty = mlform("cost", cwd=stack)
    assert empty.code == 0, empty
    assert "Nothing in the state is priced" in empty.stdout
    applied = mlform("apply", "--auto-approve", cwd=stack)
    assert applied.code == 0, applied

    shown = mlform("cost", cwd=stack)
    assert shown.code == 0, shown
    lines = shown.stdout.splitlines()
    assert lines[0] == "Cost of the current state (USD, on demand; a month is 730 h):"
    assert '  endpoint.api["eu"]  ml.m5.large × 2: $0.23/h, $167.90/mo' in lines
    assert '  endpoint.api["us"]  ml.m5.large × 2: $0.23/h, $167.90/mo' in lines
    # the last run recorded 5400 s: 2 nodes × $12.50 × 1.5 h
    assert ("  pipeline.train      nvidia-h100 × 2 nodes: $37.50 per run (last run took 1.5 h)"
            in lines)
    assert ("  endpoint.odd        ml.x9.huge × 1: unknown (no price for ml.x9.huge in the "
            "memory provider's prices)") in lines
    assert ("  Total: $0.46/h, $335.80/mo, $37.50 per run of every pipeline; "
            "unknown: endpoint.odd (not in the total)") in lines
    assert "Traceback" not in shown.output

    as_json = mlform("cost", "--json", cwd=stack)
    assert as_json.code == 0, as_json
    doc = as_json.json()
    assert set(doc) == {"currency", "resources", "total", "prices"}
    by_address = {r["address"]: r for r in doc["resources"]}
    assert set(by_address) == {'endpoint.api["eu"]', 'endpoint.api["us"]', "endpoint.odd",
                               "pipeline.train"}
    for entry in doc["resources"]:
        assert set(entry) == {"address", "kind", "provider", "instance_type", "instances",
                              "hourly", "monthly", "per_run", "unknown"}
    assert by_address["endpoint.odd"]["hourly"]["after"] is None
    assert by_address["pipeline.train"]["per_run"]["after"] == 37.5
    assert doc["total"]["monthly_after_max"] == 335.8
    assert doc["total"]["monthly_delta_max"] == 0.0     # the state against itself
    assert doc["total"]["unknown"] == ["endpoint.odd"]


def test_cost_needs_no_prices(make_stack, mlform):
    stack = make_stack('provider "memory" { store = ".mlform/memory.json" }\n'
                       'model "m" { artifact = "file:///m" }\n'
                       'endpoint "api" { model = model.m }\n')
    assert mlform("apply", "--auto-approve", cwd=stack).code == 0
    shown = mlform("cost", "--json", cwd=stack)
    assert shown.code == 0, shown
    assert shown.json()["resources"] == [] and shown.json()["total"]["unknown"] == []

"""Cost in a real SageMaker plan (the quickstart against the emulator): endpoints and
runs priced from the shipped, dated table (providers/sagemaker/prices.json)."""

from __future__ import annotations

import json

from fixture import REGION

from mlform.providers.sagemaker.pricing import price_document

from .test_quickstart_e2e import ENV, _vars, stack  # noqa: F401  (the fixture)
from .test_without_local_extras import run


def test_a_sagemaker_plan_is_priced_from_the_table(stack, aws):  # noqa: F811
    found = run("-C", stack, "plan", "--env", ENV, "--format", "json", env=_vars(aws))
    assert found.returncode == 0, found.stdout + found.stderr
    cost = json.loads(found.stdout)["cost"]
    table = price_document()
    assert cost["prices"] == [{"provider": "sagemaker", "source": table["source"],
                               "date": table["date"]}]
    by_kind = {r["kind"]: r for r in cost["resources"]}
    assert set(by_kind) == {"endpoint", "pipeline"}      # nothing else is priced
    endpoint, pipeline = by_kind["endpoint"], by_kind["pipeline"]
    region = table["regions"][REGION]
    hourly = region["inference"][endpoint["instance_type"]] * endpoint["instances"]["max"]
    assert endpoint["hourly"]["after"] == round(hourly, 4)
    assert endpoint["monthly"]["after_max"] == round(hourly * 730, 4)
    run_ = pipeline["per_run"]
    assert run_["will_run"] is True and run_["duration_source"] == "max_runtime"
    assert run_["after"] == round(region["training"][pipeline["instance_type"]]
                                  * pipeline["instances"]["max"] * run_["run_seconds"] / 3600, 4)
    assert cost["total"]["per_run_planned"] == run_["after"]
    assert cost["total"]["unknown"] == []

"""`mlform experiment report|step` on the `local` provider.

The endpoint's files are written as its server writes them (contract section 3): the
spec (server.json), captured requests in capture.jsonl and a rotated capture.jsonl.1
(the live file ending in a line still being written), and feedback.jsonl.  The report
read back through the CLI must give the numbers computed here from the same data, with
the p-values from scipy directly.
"""

from __future__ import annotations

import json
import uuid
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest
from _waiting import wait_until
from scipy import stats
from typer.testing import CliRunner

from mlform import registry
from mlform.cli.app import app
from mlform.cli.experiment_commands import summarize
from mlform.providers.base import Desired, ProviderContext
from mlform.providers.kit import calls as contract
from mlform.providers.local import LocalProvider
from mlform.providers.local.endpoints import EndpointHandler
from mlform.providers.local.experiments import action
from mlform.providers.local.models import ModelHandler
from mlform.state import ResourceState, State

ADDRESS = "endpoint.fraud"
T0 = 1_760_000_000.0


# ------------------------------------------------------------------ the endpoint's files

def make_provider(stack: Path) -> LocalProvider:
    context = ProviderContext(name="local", alias=None, stack=stack.name, env="default",
                              stack_dir=stack, config={})
    return LocalProvider(context)


@pytest.fixture
def stack(tmp_path, monkeypatch) -> Path:
    """A stack whose state holds endpoint.fraud (local) and dataset.transactions; the CLI
    runs in it."""
    path = tmp_path / "stack"
    path.mkdir()
    (path / "main.hcl").write_text('provider "local" {}\n')
    real_get = registry.get
    # the entry point may not be installed in this checkout: resolve "local" to the class
    monkeypatch.setattr(registry, "get", lambda name: LocalProvider if name == "local" else real_get(name))
    monkeypatch.chdir(path)
    state = State(serial=1, lineage="4a1d6b8e-0000-4000-8000-000000000012")
    for address, kind in ((ADDRESS, "endpoint"), ("dataset.transactions", "dataset"),
                          ("endpoint.plain", "endpoint")):
        state.set(ResourceState(address=address, kind=kind, name=address.split(".")[1],
                                provider="local", id=f"stack/{address}", attributes={}))
    (path / ".mlform" / "state").mkdir(parents=True)
    (path / ".mlform" / "state" / "default.json").write_text(state.dumps())
    return path


def endpoint_dir(stack: Path, address: str = ADDRESS) -> Path:
    provider = make_provider(stack)
    try:
        return provider.env.root / "endpoints" / provider.env.slug(address)
    finally:
        provider.close()


def write_endpoint(stack: Path, *, experiment: dict | None, models: list[dict],
                   captures: list[dict], feedback: list[dict], address: str = ADDRESS) -> Path:
    """The files of an endpoint whose server is not running (no process.json)."""
    folder = endpoint_dir(stack, address)
    folder.mkdir(parents=True)
    if experiment is not None:
        experiment = {"sticky_key": None, "shadow_percent": 100, "floor_percent": 5,
                      "state_path": str(folder / "bandit.json"),
                      "feedback_path": str(folder / "feedback.jsonl"), **experiment}
    spec = {"address": address, "name": address.split(".")[1], "host": "127.0.0.1",
            "port": 9, "token": "t", "generation": 1, "torch_threads": 1,
            "models": [{"path": str(folder / f"v{m['version']}"), "framework": "torch",
                        "role": "live", **m} for m in models],
            "capture": {"path": str(folder / "capture.jsonl"), "sample_percent": 100},
            "experiment": experiment}
    (folder / "server.json").write_text(json.dumps(spec))
    half = len(captures) // 2
    lines = [json.dumps({**c, "inputs": [{"x": 1.0}], "endpoint": spec["name"]}) for c in captures]
    (folder / "capture.jsonl.1").write_text("".join(f"{ln}\n" for ln in lines[:half]))
    # the newest line is still being written: no newline yet, so it is not read
    (folder / "capture.jsonl").write_text("".join(f"{ln}\n" for ln in lines[half:])
                                          + '{"time": 1, "variant": "a", "sta')
    (folder / "feedback.jsonl").write_text("".join(json.dumps(f) + "\n" for f in feedback))
    return folder


def traffic(rates: dict[str, float], n: int, *, binary: bool, seed: int = 7,
            error_rate: float = 0.03) -> tuple[list[dict], list[dict]]:
    """Captured requests split evenly at random between the variants, and a reward for
    most answered ones: Bernoulli(rate) when binary, else Normal(rate, 1)."""
    rng = np.random.default_rng(seed)
    names = list(rates)
    captures, feedback = [], []
    for i in range(n):
        variant = names[int(rng.integers(len(names)))]
        status = 500 if rng.random() < error_rate else 200
        rid = uuid.UUID(int=int(rng.integers(1 << 62))).hex
        when = T0 + i * 3.0
        captures.append({"time": when, "request_id": rid, "variant": variant, "role": "live",
                         "version": names.index(variant) + 1,
                         "latency_ms": float(rng.lognormal(2.5, 0.4)), "status": status,
                         "outputs": [[0.1]]})
        if status == 200 and rng.random() < 0.9:
            value = float(rng.random() < rates[variant]) if binary else float(
                rng.normal(rates[variant], 1.0))
            feedback.append({"time": when + 1.0, "request_id": rid, "variant": variant,
                             "reward": value})
    return captures, feedback


def report(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["experiment", "report", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


AB_MODELS = [{"version": 1, "variant": "a", "weight": 50}, {"version": 2, "variant": "b", "weight": 50}]


# ------------------------------------------------------------------ the numbers

def test_ab_binary_report_matches_the_captured_data(stack):
    captures, feedback = traffic({"a": 0.10, "b": 0.18}, 1200, binary=True)
    write_endpoint(stack, experiment={"type": "ab", "reward": "binary"}, models=AB_MODELS,
                   captures=captures, feedback=feedback)
    code, output = report(ADDRESS, "--format", "json")
    assert code == 0, output
    doc = json.loads(output)
    summary = doc["summary"]
    assert doc["experiment"]["type"] == "ab"
    assert [(v["name"], v["weight"]) for v in doc["variants"]] == [("a", 50), ("b", 50)]
    assert summary["requests"] == len(captures)          # the torn line is not a request
    rewards = {}
    for name in ("a", "b"):
        mine = [c for c in captures if c["variant"] == name]
        got = summary["variants"][name]
        assert got["requests"] == len(mine)
        assert got["errors"] == sum(c["status"] >= 400 for c in mine)
        assert got["latency_p99_ms"] == pytest.approx(np.percentile([c["latency_ms"] for c in mine], 99))
        rewards[name] = [f["reward"] for f in feedback if f["variant"] == name]
        assert got["rewards"] == len(rewards[name])
        assert got["reward_mean"] == pytest.approx(np.mean(rewards[name]))
        low, high = got["reward_ci95"]
        assert low < got["reward_mean"] < high
    # the pooled two-proportion z-test is the chi-square test of the 2x2 table without
    # Yates' correction: same p-value
    table = [[sum(rewards[n]), len(rewards[n]) - sum(rewards[n])] for n in ("a", "b")]
    expected = stats.chi2_contingency(table, correction=False).pvalue
    (test,) = summary["tests"]
    assert (test["control"], test["variant"]) == ("a", "b")
    assert test["p_value"] == pytest.approx(expected, rel=1e-9)
    assert test["significant"] is bool(expected < 0.05)
    assert summary["variants"]["b"]["prob_best"] > summary["variants"]["a"]["prob_best"]
    assert "Two-proportion z-test (pooled, two-sided), b vs the control a: p = " in doc["verdict"]


def test_continuous_rewards_use_welch(stack):
    captures, feedback = traffic({"a": 1.0, "b": 1.25}, 600, binary=False, seed=3)
    write_endpoint(stack, experiment={"type": "ab", "reward": "continuous"}, models=AB_MODELS,
                   captures=captures, feedback=feedback)
    code, output = report(ADDRESS, "--format", "json")
    assert code == 0, output
    summary = json.loads(output)["summary"]
    a = [f["reward"] for f in feedback if f["variant"] == "a"]
    b = [f["reward"] for f in feedback if f["variant"] == "b"]
    (test,) = summary["tests"]
    assert test["p_value"] == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue, rel=1e-9)
    assert summary["variants"]["b"]["reward_mean"] == pytest.approx(np.mean(b))


def test_a_shadow_is_reported_beside_the_live_variant(stack):
    captures, _ = traffic({"a": 0.1}, 200, binary=True)
    mirrored = [{**c, "variant": "b", "role": "shadow", "version": 2,
                 "outputs": [[0.1]] if i % 4 else [[0.9]], "status": 200}
                for i, c in enumerate(captures) if i % 2 == 0]
    write_endpoint(stack, experiment={"type": "shadow", "shadow": "b", "shadow_percent": 50},
                   models=[{"version": 1, "variant": "a", "weight": 100},
                           {"version": 2, "variant": "b", "weight": 0, "role": "shadow"}],
                   captures=captures + mirrored, feedback=[])
    code, output = report(ADDRESS, "--format", "json")
    assert code == 0, output
    summary = json.loads(output)["summary"]
    assert summary["variants"]["a"]["requests"] == len(captures)
    shadow = summary["shadow"]["b"]
    assert shadow["requests"] == len(mirrored) and shadow["compared"] == len(mirrored)
    agree = sum(m["outputs"] == [[0.1]] for m in mirrored)
    assert shadow["agreement"] == pytest.approx(agree / len(mirrored))
    code, text = report(ADDRESS)
    assert code == 0 and "shadow" in text and f"{100 * agree / len(mirrored):.1f}%" in text


# ------------------------------------------------------------------ the formats

class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []      # what a browser would fetch

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href")]


def test_every_format_renders(stack, tmp_path):
    captures, feedback = traffic({"a": 0.10, "b": 0.18}, 400, binary=True)
    write_endpoint(stack, experiment={"type": "bandit", "reward": "binary"}, models=AB_MODELS,
                   captures=captures, feedback=feedback)
    code, human = report(ADDRESS)
    assert code == 0, human
    assert "bandit" in human and "P(best)" in human
    for name in ("a", "b"):
        assert any(line.split()[:1] == [name] for line in human.splitlines()), human

    code, markdown = report(ADDRESS, "--format", "markdown")
    assert code == 0, markdown
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    header, rule, *body = table
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["", "`a`", "`b`"]
    assert all(line.count("|") == header.count("|") for line in table)
    assert set(rule.replace("|", "").replace("-", "").replace(":", "").split()) == set()
    figures = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:4]] for line in body}
    assert figures["requests"] == [f"{sum(c['variant'] == n for c in captures):,}" for n in "ab"]
    assert "**Test:**" in markdown and "**P(best):**" in markdown

    out = tmp_path / "report.html"
    code, said = report(ADDRESS, "--format", "html", "--out", str(out))
    assert code == 0 and str(out) in said
    page = _Page()
    page.feed(out.read_text())
    assert "svg" in page.tags and page.tags.count("polyline") == 4     # 2 charts x 2 variants
    assert "script" not in page.tags and page.links == []

    code, output = report(ADDRESS, "--format", "json")
    assert code == 0 and json.loads(output)["summary"]["experiment_type"] == "bandit"


def test_html_and_markdown_escape_names(stack, tmp_path):
    captures, feedback = traffic({"<b>x|y": 0.1, "a": 0.2}, 100, binary=True)
    write_endpoint(stack, experiment={"type": "ab", "reward": "binary"},
                   models=[{"version": 1, "variant": "<b>x|y", "weight": 50},
                           {"version": 2, "variant": "a", "weight": 50}],
                   captures=captures, feedback=feedback)
    code, page = report(ADDRESS, "--format", "html")
    assert code == 0 and "<b>x" not in page and "&lt;b&gt;x|y" in page
    code, markdown = report(ADDRESS, "--format", "markdown")
    assert code == 0 and "<b>" not in markdown and "`&lt;b&gt;x\\|y`" in markdown


# ------------------------------------------------------------------ mistakes

def test_bad_addresses_are_diagnostics(stack):
    write_endpoint(stack, address="endpoint.plain", experiment=None,
                   models=[{"version": 1, "weight": 100}], captures=[], feedback=[])
    for args, message in [
        ([ADDRESS], "has no local server files"),                  # in the state, no files
        (["endpoint.nope"], "No resource at endpoint.nope"),
        (["dataset.transactions"], "is a dataset, not an endpoint"),
        (["endpoint.plain"], "runs no experiment"),
    ]:
        code, output = report(*args)
        assert code == 1 and message in output, output
        assert "hint" in output or "mlform apply" in output, output


def test_out_to_an_unwritable_place_is_a_diagnostic(stack, tmp_path):
    captures, feedback = traffic({"a": 0.1, "b": 0.2}, 50, binary=True)
    write_endpoint(stack, experiment={"type": "ab", "reward": "binary"}, models=AB_MODELS,
                   captures=captures, feedback=feedback)
    code, output = report(ADDRESS, "--out", str(tmp_path / "missing" / "r.txt"))
    assert code == 1 and "Cannot write the human report of" in output


def test_step_needs_a_running_server(stack):
    write_endpoint(stack, experiment={"type": "bandit", "reward": "binary"}, models=AB_MODELS,
                   captures=[], feedback=[])
    result = CliRunner().invoke(app, ["experiment", "step", ADDRESS])
    assert result.exit_code == 1 and "not running" in result.output, result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ real traffic

def test_report_of_real_traffic_matches_what_callers_saw(local_env, tmp_path):
    """A served A/B endpoint: requests over HTTP, a reward posted for each answer; the
    provider's records and the report count what the callers were told."""
    torch = pytest.importorskip("torch")
    models, endpoints = ModelHandler(local_env), EndpointHandler(local_env)
    refs, model = [], None
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Softmax(dim=1))
        run = tmp_path / f"run-{seed}"
        run.mkdir()
        torch.jit.save(torch.jit.script(net), str(run / "model.pt"))
        want = Desired("model.fraud", "model", "fraud",
                       {"artifact": run.as_uri(), "framework": "torch", "stage": "production"})
        planned = contract.plan(models, want, model)
        model = models.create(planned) if model is None else models.update(model, planned)
        refs.append({"address": "model.fraud", **{k: model.attributes[k] for k in (
            "uri", "version", "stage", "framework") if k in model.attributes}})
    want = Desired(ADDRESS, "endpoint", "fraud", {
        "variants": {"a": {"model": refs[0], "weight": 50}, "b": {"model": refs[1], "weight": 50}},
        "experiment": {"type": "ab", "reward": "binary"}, "capture": {"sample_percent": 100}})
    live = endpoints.create(contract.plan(endpoints, want, None))
    try:
        url = live.attributes["url"]
        seen, rewards = {"a": 0, "b": 0}, {"a": [], "b": []}
        with httpx.Client(timeout=10, trust_env=False) as client:
            for i in range(120):
                body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                    "data": [float(i % 7), 1.0, 2.0, 3.0]}]}
                answer = client.post(f"{url}/infer", json=body)
                assert answer.status_code == 200, answer.text
                variant = answer.headers["x-mlform-variant"]
                seen[variant] += 1
                reward = int(variant == "b" or i % 3 == 0)
                fed = client.post(f"{url}/feedback", json={"request_id": answer.json()["id"],
                                                           "reward": reward})
                assert fed.status_code == 200, fed.text
                rewards[variant].append(reward)

        def written() -> dict | None:     # the capture and feedback writers are threads
            records = action(local_env, live, "experiment_records", {})
            return records if (len(records["captures"]), len(records["feedback"])) == (120, 120) \
                else None

        records = wait_until(written, 30, "every request and reward written to disk")
        assert records["served"] is True and records["experiment"]["type"] == "ab"
        assert {v["name"] for v in records["variants"]} == {"a", "b"}
        summary = summarize(records)
        for name in ("a", "b"):
            got = summary["variants"][name]
            assert got["requests"] == seen[name] and got["errors"] == 0
            assert got["rewards"] == len(rewards[name])
            assert got["reward_mean"] == pytest.approx(np.mean(rewards[name]))
        stepped = action(local_env, live, "experiment_step", {})
        assert stepped["weights"]["after"] == {"a": 50, "b": 50} and stepped["changed"] is False
    finally:
        endpoints.delete(live)

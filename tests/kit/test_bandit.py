"""The bandit policy (`providers/kit/bandit.py`): Thompson sampling that finds the
better variant, the floor share, posteriors checked against scipy, and state that
survives a restart (snapshot + feedback log replay), including a kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from _waiting import wait_until
from mlform.providers.kit import bandit
from mlform.providers.kit.bandit import Policy, validate_reward

KIT = Path(bandit.__file__).resolve().parent


def simulate(policy: Policy, means: dict[str, float], rounds: int, kind: str, seed: int) -> list[str]:
    """Serve `rounds` requests, rewarding each with the chosen variant's true mean."""
    env = np.random.default_rng(seed)
    chosen = []
    for _ in range(rounds):
        name = policy.choose()
        chosen.append(name)
        reward = (int(env.random() < means[name]) if kind == "binary"
                  else env.normal(means[name], 0.3))
        policy.update(name, reward)
    return chosen


# -- rewards --------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 1, True, False, 0.0, 1.0, np.bool_(True), np.int64(1)])
def test_binary_accepts_zero_one_and_booleans(value):
    assert validate_reward("binary", value) in (0.0, 1.0)


@pytest.mark.parametrize("value,message", [
    (0.5, "binary reward is 0 or 1"), (2, "binary reward is 0 or 1"),
    (-1, "binary reward is 0 or 1"), ("1", "must be a number"), (None, "must be a number"),
    (float("nan"), "finite"), (float("inf"), "finite")])
def test_binary_refuses_anything_else(value, message):
    with pytest.raises(ValueError, match=message):
        validate_reward("binary", value)


@pytest.mark.parametrize("value", ["x", [1], float("-inf"), float("nan")])
def test_continuous_refuses_non_finite_and_non_numbers(value):
    with pytest.raises(ValueError):
        validate_reward("continuous", value)
    assert validate_reward("continuous", -3.25) == -3.25


def test_update_refuses_unknown_variant_and_bad_reward_without_moving():
    policy = Policy(["a", "b"], "binary", 5, None, seed=1)
    with pytest.raises(ValueError, match="unknown variant 'c'"):
        policy.update("c", 1)
    with pytest.raises(ValueError, match="0 or 1"):
        policy.update("a", 0.3)
    assert policy.stats()["a"]["n"] == 0 and policy.feedback_lines == 0


@pytest.mark.parametrize("args,message", [
    (([], "binary", 5), "non-empty"), ((["a", "a"], "binary", 5), "unique"),
    ((["a"], "gaussian", 5), "reward must be one of"), ((["a"], "binary", 60), "between 0 and 50"),
    ((["a"], "binary", -1), "between 0 and 50")])
def test_constructor_refuses_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        Policy(*args, None)


# -- learning -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_better_variant_by_five_points_gets_most_traffic(kind):
    policy = Policy(["a", "b"], kind, 5, None, seed=3)
    chosen = simulate(policy, {"a": 0.10, "b": 0.15}, 3000, kind, seed=4)
    assert chosen[-1000:].count("b") > 850
    assert policy.weights()["b"] > 85
    assert policy.prob_best()["b"] > 0.95


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_without_rewards_the_choice_is_even(kind):
    policy = Policy(["a", "b", "c"], kind, 0, None, seed=5)
    best = policy.prob_best(30_000)
    assert sum(best.values()) == pytest.approx(1.0)
    assert all(abs(p - 1 / 3) < 0.02 for p in best.values()), best
    assert {policy.choose() for _ in range(100)} == {"a", "b", "c"}


def test_floor_keeps_each_variant_its_share():
    policy = Policy(["a", "b"], "binary", 10, None, seed=6)
    for _ in range(500):
        policy.update("a", 0)
        policy.update("b", 1)
    share = [policy.choose() for _ in range(20_000)].count("a") / 20_000
    # uniform with probability 0.2, half of it to a; Thompson never picks a here
    assert 0.09 < share < 0.11
    assert policy.weights()["a"] == pytest.approx(10.0, abs=0.01)


def test_floor_above_an_even_split_makes_the_choice_uniform():
    policy = Policy(["a", "b", "c"], "binary", 50, None, seed=6)
    for _ in range(50):
        policy.update("a", 1)
    assert policy.weights() == {n: pytest.approx(100 / 3) for n in "abc"}


@settings(max_examples=40, deadline=None)
@given(floor=st.floats(0, 50), k=st.integers(1, 5),
       rewards=st.lists(st.tuples(st.integers(0, 4), st.booleans()), max_size=60))
def test_weights_sum_to_100_and_respect_the_floor(floor, k, rewards):
    names = [f"v{i}" for i in range(k)]
    policy = Policy(names, "binary", floor, None, seed=0)
    for index, value in rewards:
        policy.update(names[index % k], value)
    weights = policy.weights()
    assert sum(weights.values()) == pytest.approx(100.0)
    assert min(weights.values()) >= min(floor, 100 / k) - 1e-9


def test_binary_prob_best_matches_the_beta_integral():
    policy = Policy(["a", "b"], "binary", 0, None, seed=8)
    for name, successes, failures in (("a", 12, 28), ("b", 18, 22)):
        for _ in range(successes):
            policy.update(name, 1)
        for _ in range(failures):
            policy.update(name, 0)
    a, b = stats.beta(13, 29), stats.beta(19, 23)
    exact, _ = integrate.quad(lambda x: b.pdf(x) * a.cdf(x), 0, 1)   # P(b > a)
    assert policy.prob_best(40_000)["b"] == pytest.approx(exact, abs=0.01)


def test_continuous_prob_best_matches_the_normal_approximation_with_data():
    env = np.random.default_rng(9)
    samples = {"a": env.normal(1.00, 0.5, 200), "b": env.normal(1.08, 0.5, 200)}
    policy = Policy(["a", "b"], "continuous", 0, None, seed=9)
    for name, values in samples.items():
        for value in values:
            policy.update(name, value)
    a, b = samples["a"], samples["b"]
    z = (b.mean() - a.mean()) / np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert policy.prob_best(40_000)["b"] == pytest.approx(stats.norm.cdf(z), abs=0.02)
    s = policy.stats()["a"]
    assert s["mean"] == pytest.approx(a.mean()) and s["variance"] == pytest.approx(a.var(ddof=1))


def test_continuous_keeps_exploring_after_few_rewards():
    policy = Policy(["a", "b"], "continuous", 0, None, seed=10)
    for name, value in (("a", 1.0), ("a", 1.2), ("b", 0.9), ("b", 1.1)):
        policy.update(name, value)
    best = policy.prob_best()
    assert 0.1 < best["b"] < 0.9, best


def test_weights_refresh_after_a_batch_of_updates():
    policy = Policy(["a", "b"], "binary", 0, None, seed=11)
    before = policy.weights()
    for _ in range(bandit.WEIGHT_REFRESH_UPDATES - 1):
        policy.update("b", 1)
    assert policy.weights() == before          # cached
    policy.update("b", 1)
    assert policy.weights()["b"] > 90


def test_a_caller_rng_makes_the_choice_reproducible():
    policy = Policy(["a", "b", "c"], "binary", 5, None, seed=None)
    first = [policy.choose(np.random.default_rng(42)) for _ in range(20)]
    assert first == [policy.choose(np.random.default_rng(42)) for _ in range(20)]


def test_threads_lose_no_update():
    policy = Policy(["a", "b"], "continuous", 5, None, seed=12)

    def work(offset: int) -> None:
        for i in range(500):
            policy.update(policy.choose(), float((i + offset) % 7))
            policy.weights()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = policy.stats()
    assert counts["a"]["n"] + counts["b"]["n"] == 4000 == policy.feedback_lines


# -- durability -----------------------------------------------------------------

def feed(policy: Policy, rewards: list[tuple[str, float]], start: int = 0) -> None:
    for i, (name, value) in enumerate(rewards, start=start):
        policy.record(f"req{i}", name, value, now=1000.0 + i)


REWARDS = [("a" if i % 3 else "b", float(i % 2)) for i in range(100)]


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_restart_from_snapshot_plus_replay_gives_the_same_posterior(tmp_path, kind):
    state, log = str(tmp_path / "bandit.json"), str(tmp_path / "feedback.jsonl")
    policy = Policy.load(["a", "b"], kind, 5, state, log, seed=1)
    feed(policy, REWARDS[:60])
    assert policy.snapshot()
    feed(policy, REWARDS[60:], start=60)       # after the snapshot: only in the log
    restarted = Policy.load(["a", "b"], kind, 5, state, log, seed=1)
    assert restarted.restore_error is None
    assert json.loads(Path(state).read_text())["feedback_lines"] == 60
    assert restarted.stats() == policy.stats()
    assert restarted.feedback_lines == 100
    lines = Path(log).read_text().splitlines()
    assert json.loads(lines[0]) == {"time": 1000.0, "request_id": "req0", "variant": "b",
                                    "reward": 0.0}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_maybe_save_writes_at_most_once_a_second(tmp_path):
    state = tmp_path / "bandit.json"
    policy = Policy(["a"], "binary", 0, str(state))
    assert not policy.maybe_save(100.0)          # nothing changed
    policy.update("a", 1)
    assert policy.maybe_save(100.0) and state.exists()
    policy.update("a", 1)
    assert not policy.maybe_save(100.5)
    assert policy.maybe_save(101.0)
    assert json.loads(state.read_text())["variants"]["a"]["n"] == 2
    policy.update("a", 0)
    policy.close()                               # close saves what changed
    assert json.loads(state.read_text())["variants"]["a"]["n"] == 3


def test_changed_variants_keep_the_posteriors_still_declared(tmp_path):
    state = str(tmp_path / "bandit.json")
    policy = Policy(["a", "b"], "continuous", 5, state)
    for name, value in (("a", 1.0), ("a", 3.0), ("b", 2.0)):
        policy.update(name, value)
    policy.close()
    changed = Policy(["b", "c"], "continuous", 5, state)
    assert changed.restore()
    assert changed.stats()["b"] == {"n": 1, "mean": 2.0, "variance": None, "successes": 0}
    assert changed.stats()["c"]["n"] == 0 and "a" not in changed.stats()


def test_replay_counts_lines_it_cannot_use(tmp_path):
    policy = Policy(["a"], "binary", 0, None)
    lines = ['{"variant": "a", "reward": 1}', "not json", '{"variant": "gone", "reward": 1}',
             '{"variant": "a", "reward": 0.5}', '{"variant": ["a"], "reward": 1}',
             {"variant": "a", "reward": 0}]
    assert policy.replay(lines) == 2
    assert policy.feedback_lines == 6 and policy.stats()["a"]["successes"] == 1
    assert policy.replay(lines + ['{"variant": "a", "reward": 1}']) == 1   # only the new line


def test_a_log_shorter_than_the_snapshot_was_started_afresh(tmp_path):
    policy = Policy(["a"], "binary", 0, None)
    policy.replay(['{"variant": "a", "reward": 1}'] * 5)
    assert policy.replay(['{"variant": "a", "reward": 1}'] * 2) == 0
    assert policy.feedback_lines == 2 and policy.stats()["a"]["n"] == 5


def test_a_snapshot_of_the_other_kind_or_unreadable_replays_the_whole_log(tmp_path):
    state, log = tmp_path / "bandit.json", str(tmp_path / "feedback.jsonl")
    policy = Policy.load(["a", "b"], "binary", 5, str(state), log)
    feed(policy, REWARDS[:30])
    policy.close()
    switched = Policy.load(["a", "b"], "continuous", 5, str(state), log)
    assert switched.stats()["a"]["n"] + switched.stats()["b"]["n"] == 30
    state.write_text("{not json")
    broken = Policy.load(["a", "b"], "binary", 5, str(state), log)
    assert "bandit.json: not a bandit state file" in broken.restore_error
    assert broken.stats() == policy.stats()


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import bandit                       # by file path, as the server loads it
    policy = bandit.Policy.load(["a", "b"], "continuous", 5, sys.argv[2], sys.argv[3], seed=1)
    i = 0
    while True:
        name = policy.choose()
        policy.record(f"r{i}", name, (i % 11) / 10 + (0.2 if name == "b" else 0.0))
        policy.maybe_save()
        i += 1
""")


def test_kill_9_loses_nothing_that_reached_the_log(tmp_path):
    state, log = tmp_path / "bandit.json", tmp_path / "feedback.jsonl"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(KIT), str(state), str(log)],
                             env={**os.environ, "PYTHONPATH": ""})
    try:
        wait_until(lambda: state.exists() and log.stat().st_size > 200_000, 60,
                   "a snapshot and a few thousand feedback lines")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    restarted = Policy.load(["a", "b"], "continuous", 5, str(state), str(log))
    assert restarted.restore_error is None
    snapshot_lines = json.loads(state.read_text())["feedback_lines"]
    assert 0 < snapshot_lines < restarted.feedback_lines
    from_scratch = Policy(["a", "b"], "continuous", 5, None)
    with open(log) as lines:
        from_scratch.replay(lines)
    for name in ("a", "b"):
        assert restarted.stats()[name]["n"] == from_scratch.stats()[name]["n"]
        assert restarted.stats()[name]["mean"] == pytest.approx(from_scratch.stats()[name]["mean"], rel=1e-12)
    # a line cut short by the kill stays one line: the next record starts its own
    restarted.record("after", "a", 1.0)
    restarted.close()
    last = log.read_text().splitlines()[-1]
    assert json.loads(last)["request_id"] == "after"

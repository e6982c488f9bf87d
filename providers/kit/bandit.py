"""The bandit policy of an endpoint: posteriors per variant, Thompson sampling with a
floor share, and state that survives a restart (a snapshot plus the feedback log).

Standalone (stdlib + numpy): the model server loads it by file path.

* `Policy` - the policy of one endpoint; thread-safe.
* `validate_reward` - the check `Policy.update` applies to a reward (for a 400 answer).

Posteriors.  Binary rewards: Beta(1 + successes, 1 + failures) per variant.
Continuous rewards: the normal model with unknown mean and variance and its conjugate
Normal-Inverse-chi^2 prior (Gelman et al., *Bayesian Data Analysis*, 3rd ed., section
3.3); the posterior of a variant's mean is a shifted, scaled Student t built from the
variant's count, mean and M2 (Welford).  The prior is weak and taken from all rewards
seen (pooled mean, pooled variance; unit scale before two distinct rewards exist) with
one pseudo-observation and one degree of freedom, so a variant with few rewards draws
from a Cauchy-like spread and keeps being tried until a few rewards arrive.

Durability.  Each feedback record is one line of feedback.jsonl (contract section 3),
appended by `Policy.record` under the policy's lock before the posterior moves.  The
snapshot (`state_path`, JSON, written atomically at most once a second by
`maybe_save`) stores how many lines of that log it includes; at start `Policy.load`
restores the snapshot and replays the lines after that count, so a kill -9 loses
nothing that reached the log.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["Policy", "validate_reward", "REWARD_KINDS", "STATE_FORMAT"]

REWARD_KINDS = ("binary", "continuous")
#: Version of the snapshot's JSON layout.
STATE_FORMAT = 1
#: Monte Carlo draws behind `Policy.weights` (its error is about 1 point at 2,000).
WEIGHT_DRAWS = 2_000
#: `weights()` is recomputed after this many updates (and on the first call).
WEIGHT_REFRESH_UPDATES = 10
#: `maybe_save` writes at most this often (seconds).
SAVE_INTERVAL = 1.0


def validate_reward(kind: str, reward: Any) -> float:
    """The reward as a float, or ValueError saying what is wrong with it.

    Any finite real number for "continuous"; 0, 1, True or False for "binary"."""
    if isinstance(reward, (bool, np.bool_, numbers.Real)):
        value = float(reward)
    else:
        raise ValueError(f"reward must be a number, got {reward!r}")
    if not math.isfinite(value):
        raise ValueError(f"reward must be a finite number, got {reward!r}")
    if kind == "binary" and value not in (0.0, 1.0):
        raise ValueError(f"a binary reward is 0 or 1 (or true/false), got {reward!r}")
    return value


class _Arm:
    """Sufficient statistics of one variant: count, mean and M2 (Welford).  For binary
    rewards successes = n * mean, kept exact as an integer."""

    __slots__ = ("n", "mean", "m2", "successes")

    def __init__(self, n: int = 0, mean: float = 0.0, m2: float = 0.0, successes: int = 0):
        self.n, self.mean, self.m2, self.successes = n, mean, m2, successes

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        if x == 1.0:
            self.successes += 1

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "m2": self.m2, "successes": self.successes}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "_Arm":
        return cls(int(doc["n"]), float(doc["mean"]), float(doc["m2"]), int(doc["successes"]))


class Policy:
    """A multi-armed bandit over named variants.

    `choose` serves the floor rule: with probability ``min(1, floor_percent * k / 100)``
    (k variants) the variant is drawn uniformly, otherwise by Thompson sampling (one
    draw from each variant's posterior, the largest wins).  Each variant thus keeps at
    least ``min(floor_percent, 100 / k)`` percent of the traffic.

    Every public method takes the policy's lock, so the server may call them from
    several threads.  `record` (log line + update) is what the server calls on
    feedback; `update` moves the posterior alone (simulations, tests).
    """

    def __init__(self, variants: list[str], reward: str, floor_percent: float,
                 state_path: str | None, seed: int | None = None, *,
                 feedback_path: str | None = None):
        names = list(variants)
        if not names or any(not isinstance(n, str) or not n for n in names):
            raise ValueError(f"variants must be a non-empty list of names, got {variants!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names!r}")
        if reward not in REWARD_KINDS:
            raise ValueError(f"reward must be one of {', '.join(REWARD_KINDS)}, got {reward!r}")
        floor = float(floor_percent)
        if not 0.0 <= floor <= 50.0:
            raise ValueError(f"floor_percent must be between 0 and 50, got {floor_percent!r}")
        self.variants: list[str] = names
        self.reward = reward
        self.floor_percent = floor
        self.state_path = state_path
        self.feedback_path = feedback_path
        #: Why the snapshot was not used by `load` (None when it was, or there was none).
        self.restore_error: str | None = None
        self._arms = {name: _Arm() for name in names}
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._save_lock = threading.Lock()
        self._lines = 0          # lines of feedback.jsonl the posterior includes
        self._dirty = False
        self._last_save = -math.inf
        self._weights: dict[str, float] | None = None
        self._updates_since_weights = 0
        self._log = None

    # -- construction from disk --------------------------------------------------

    @classmethod
    def load(cls, variants: list[str], reward: str, floor_percent: float,
             state_path: str | None, feedback_path: str | None,
             seed: int | None = None) -> "Policy":
        """The policy as it was: the snapshot at `state_path` (if any) plus the lines
        of `feedback_path` it does not include.  A snapshot that cannot be read is set
        aside (`restore_error` says why) and the whole log is replayed instead."""
        policy = cls(variants, reward, floor_percent, state_path, seed,
                     feedback_path=feedback_path)
        try:
            policy.restore()
        except ValueError as exc:
            policy.restore_error = str(exc)
        if feedback_path and os.path.exists(feedback_path):
            with open(feedback_path, encoding="utf-8", errors="replace") as lines:
                policy.replay(lines)
        return policy

    def restore(self) -> bool:
        """Read the snapshot at `state_path`; False when there is none.

        Variants still declared keep their statistics, new ones start from the prior,
        removed ones are dropped.  A snapshot of the other reward kind is ignored
        (returns False) so that `replay` rebuilds the posteriors from the whole log.
        Raises ValueError naming the file when it is not a snapshot."""
        if not self.state_path or not os.path.exists(self.state_path):
            return False
        try:
            doc = json.loads(Path(self.state_path).read_text(encoding="utf-8"))
            if doc.get("format") != STATE_FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            arms = {name: _Arm.from_json(arm) for name, arm in doc["variants"].items()}
            lines = int(doc["feedback_lines"])
            kind = doc["reward"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self.state_path}: not a bandit state file ({exc})") from None
        if kind != self.reward:
            return False
        with self._lock:
            for name in self.variants:
                self._arms[name] = arms.get(name, _Arm())
            self._lines = lines
            self._weights = None
        return True

    def replay(self, lines: Iterable[str | bytes | Mapping[str, Any]]) -> int:
        """Apply the feedback log from its first line, skipping the lines the
        posterior already includes; returns how many rewards moved it.

        Every line counts toward that position, even one that cannot be used (not
        JSON, a variant no longer declared, a reward invalid for this kind): those are
        skipped.  A log shorter than the position was started afresh: the posterior
        keeps what it has and the position becomes the log's length."""
        applied = 0
        with self._lock:
            start = self._lines
            index = 0
            for index, line in enumerate(lines, start=1):
                if index <= start:
                    continue
                self._lines = index
                record = _parse(line)
                variant = record.get("variant") if record is not None else None
                if not isinstance(variant, str) or variant not in self._arms:
                    continue
                try:
                    value = validate_reward(self.reward, record.get("reward"))
                except ValueError:
                    continue
                self._apply(variant, value)
                applied += 1
            if index < start:
                self._lines = index
                self._dirty = True
        return applied

    # -- serving -----------------------------------------------------------------

    def choose(self, rng: np.random.Generator | None = None) -> str:
        """The variant to serve this request (the floor rule is in the class doc).

        `rng` defaults to the policy's own generator; a caller wanting a sticky
        choice passes one seeded from the request's key."""
        with self._lock:
            rng = rng if rng is not None else self._rng
            k = len(self.variants)
            if rng.random() < self._uniform_probability():
                return self.variants[int(rng.integers(k))]
            draws = self._draw(rng, 1)[:, 0]
            return self.variants[int(np.argmax(draws))]

    def update(self, variant: str, reward: Any) -> float:
        """Move `variant`'s posterior by one reward; returns the reward as a float.

        Counts as one line of the feedback log (see `record`).  ValueError for an
        unknown variant or a reward `validate_reward` refuses."""
        value = validate_reward(self.reward, reward)
        with self._lock:
            if variant not in self._arms:
                raise ValueError(f"unknown variant {variant!r} (variants: {', '.join(self.variants)})")
            self._apply(variant, value)
            self._lines += 1
        return value

    def record(self, request_id: str, variant: str, reward: Any,
               now: float | None = None) -> dict[str, Any]:
        """Accept one feedback: validate it, append its line to `feedback_path` and
        update the posterior, all under the lock so log order and snapshot position
        agree.  Returns the record written (contract section 3).

        The line is flushed to the OS before the posterior moves (a kill -9 keeps it;
        a power cut may not: no fsync per request)."""
        value = validate_reward(self.reward, reward)
        record = {"time": time.time() if now is None else float(now),
                  "request_id": str(request_id), "variant": variant, "reward": value}
        with self._lock:
            if variant not in self._arms:
                raise ValueError(f"unknown variant {variant!r} (variants: {', '.join(self.variants)})")
            if self.feedback_path:
                log = self._open_log()
                log.write(json.dumps(record) + "\n")
                log.flush()
            self._apply(variant, value)
            self._lines += 1
        return record

    # -- what the policy believes ------------------------------------------------

    def weights(self) -> dict[str, float]:
        """Expected traffic share per variant in percent (the floor included), by
        Monte Carlo over the posteriors; recomputed every `WEIGHT_REFRESH_UPDATES`
        updates.  The values sum to 100."""
        with self._lock:
            if self._weights is None or self._updates_since_weights >= WEIGHT_REFRESH_UPDATES:
                uniform = self._uniform_probability()
                best = self._prob_best(WEIGHT_DRAWS)
                k = len(self.variants)
                self._weights = {name: 100.0 * (uniform / k + (1.0 - uniform) * best[name])
                                 for name in self.variants}
                self._updates_since_weights = 0
            return dict(self._weights)

    def prob_best(self, draws: int = 10_000) -> dict[str, float]:
        """P(variant has the highest mean reward) under the posteriors (Monte Carlo,
        `draws` joint draws); values sum to 1."""
        with self._lock:
            return self._prob_best(draws)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per variant: n, mean, variance (sample, None below 2) and successes."""
        with self._lock:
            return {name: {"n": arm.n, "mean": arm.mean if arm.n else None,
                           "variance": arm.m2 / (arm.n - 1) if arm.n > 1 else None,
                           "successes": arm.successes}
                    for name, arm in self._arms.items()}

    @property
    def feedback_lines(self) -> int:
        """How many lines of the feedback log the posterior includes."""
        with self._lock:
            return self._lines

    # -- durability --------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The snapshot's JSON document."""
        with self._lock:
            return {"format": STATE_FORMAT, "reward": self.reward,
                    "feedback_lines": self._lines, "saved_at": time.time(),
                    "variants": {name: arm.to_json() for name, arm in self._arms.items()}}

    def snapshot(self) -> bool:
        """Write the state to `state_path` atomically (temporary file, fsync,
        rename, fsync of the folder); False when there is no `state_path`."""
        if not self.state_path:
            return False
        with self._save_lock:   # two savers never race their renames
            with self._lock:
                doc = self.state()
                self._dirty = False
            target = Path(self.state_path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "w", encoding="utf-8") as out:
                json.dump(doc, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        return True

    def maybe_save(self, now: float | None = None) -> bool:
        """Snapshot if something changed and the last write is `SAVE_INTERVAL` old;
        True when it wrote.  `now` is a monotonic clock reading."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._dirty or now - self._last_save < SAVE_INTERVAL:
                return False
            self._last_save = now
        return self.snapshot()

    def close(self) -> None:
        """Save (when something changed) and close the feedback log."""
        with self._lock:
            dirty = self._dirty
            log, self._log = self._log, None
        if log is not None:
            log.close()
        if dirty:
            self.snapshot()

    # -- internals (callers hold the lock) --------------------------------------

    def _apply(self, variant: str, value: float) -> None:
        self._arms[variant].add(value)
        self._dirty = True
        self._updates_since_weights += 1

    def _uniform_probability(self) -> float:
        return min(1.0, self.floor_percent * len(self.variants) / 100.0)

    def _prob_best(self, draws: int) -> dict[str, float]:
        if draws < 1:
            raise ValueError(f"draws must be at least 1, got {draws}")
        winners = np.argmax(self._draw(self._rng, draws), axis=0)
        counts = np.bincount(winners, minlength=len(self.variants))
        return {name: float(c) / draws for name, c in zip(self.variants, counts)}

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Posterior draws of each variant's mean reward, shape (variants, size)."""
        arms = [self._arms[name] for name in self.variants]
        n = np.array([a.n for a in arms], dtype=float)
        if self.reward == "binary":
            s = np.array([a.successes for a in arms], dtype=float)
            return rng.beta((1.0 + s)[:, None], (1.0 + n - s)[:, None], size=(len(arms), size))
        mean = np.array([a.mean for a in arms])
        m2 = np.array([a.m2 for a in arms])
        mu0, var0 = _pooled_prior(arms)
        # Normal-Inverse-chi^2 update with kappa0 = nu0 = 1 (BDA3 eq. 3.6-3.7).
        kappa = 1.0 + n
        mu = (mu0 + n * mean) / kappa
        nu = 1.0 + n
        var = (var0 + m2 + n * (mean - mu0) ** 2 / kappa) / nu
        scale = np.sqrt(var / kappa)
        t = rng.standard_t(nu[:, None], size=(len(arms), size))
        return mu[:, None] + scale[:, None] * t

    def _open_log(self):
        if self._log is None:
            path = Path(self.feedback_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            log = open(path, "a+b")
            # A line cut short by a crash is ended here, so it stays one (skipped)
            # line and the next record starts a line of its own.
            if log.tell() > 0:
                log.seek(-1, os.SEEK_END)
                if log.read(1) != b"\n":
                    log.write(b"\n")
                    log.flush()
            log.close()
            self._log = open(path, "a", encoding="utf-8")
        return self._log


def _pooled_prior(arms: list[_Arm]) -> tuple[float, float]:
    """Mean and variance of all rewards seen (Chan's pairwise combination); the
    variance falls back to max(1, mean^2) while it is undefined or zero."""
    n, mean, m2 = 0, 0.0, 0.0
    for arm in arms:
        if arm.n == 0:
            continue
        total = n + arm.n
        delta = arm.mean - mean
        mean += delta * arm.n / total
        m2 += arm.m2 + delta * delta * n * arm.n / total
        n = total
    variance = m2 / (n - 1) if n > 1 else 0.0
    if variance <= 0.0:
        variance = max(1.0, mean * mean)
    return mean, variance


def _parse(line: str | bytes | Mapping[str, Any]) -> dict[str, Any] | None:
    if isinstance(line, Mapping):
        return dict(line)
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is; not possible on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

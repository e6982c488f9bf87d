"""What `mlform reconcile` tells Prometheus and a liveness probe.

`ReconcileMetrics` holds the metrics in a registry of its own (never the process-wide
default one, so two reconcilers, or a test, never share counters).  `Health` judges the
loop from the cycles it finished.  `MetricsServer` serves both over HTTP on one address
(`/metrics`, `/healthz`), on a daemon thread, bound to 127.0.0.1 unless told otherwise.

Health, decided here once: `/healthz` answers 200 while reconciling works, and 503
when it has stopped working for a while:

- 200 before the first cycle has finished (a first apply can be long; a liveness
  probe must not kill it),
- 200 when the last cycle succeeded (outcomes `unchanged`, `applied`, `pending`:
  changes held back by `--auto-apply` are reported, not an error),
- 200 when it failed but the last success (or the start, if none yet) is at most
  `grace_cycles` intervals ago (one failed fetch must not restart the pod),
- 503 otherwise.
The body is a small JSON document saying which, for people and alerts.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from mlform.diagnostics import DiagnosticError

__all__ = ["OUTCOMES", "SUCCESS_OUTCOMES", "ReconcileMetrics", "Health", "MetricsServer",
           "parse_address"]

#: every outcome a cycle can have (the `outcome` label of the cycle counter)
OUTCOMES = ("unchanged", "applied", "pending", "refused", "failed")
#: the outcomes that count as a successful reconcile
SUCCESS_OUTCOMES = frozenset({"unchanged", "applied", "pending"})

# Plans take from milliseconds (memory) to minutes (thousands of cloud objects); applies
# up to hours (a training run): buckets cover both ends.
_PLAN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_APPLY_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 14400)


class ReconcileMetrics:
    """The reconcile loop's metrics, in their own `CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.cycles = Counter("mlform_reconcile_cycles", "Reconcile cycles finished, by outcome",
                              ["outcome"], registry=r)
        for outcome in OUTCOMES:        # every series exists from the start, at 0
            self.cycles.labels(outcome)
        self.last_success = Gauge(
            "mlform_reconcile_last_success_timestamp_seconds",
            "Unix time of the end of the last successful cycle (0: none yet)", registry=r)
        self.last_cycle = Gauge("mlform_reconcile_last_cycle_timestamp_seconds",
                                "Unix time of the end of the last cycle", registry=r)
        self.drifted = Gauge("mlform_reconcile_drifted_resources",
                             "Resources found changed outside mlform in the last cycle", registry=r)
        self.pending = Gauge("mlform_reconcile_pending_changes",
                             "Changes the last cycle found but did not apply", registry=r)
        self.plan_seconds = Histogram("mlform_reconcile_plan_duration_seconds",
                                      "Time to refresh and plan", buckets=_PLAN_BUCKETS, registry=r)
        self.apply_seconds = Histogram("mlform_reconcile_apply_duration_seconds",
                                       "Time to apply", buckets=_APPLY_BUCKETS, registry=r)
        self.policy_failures = Counter(
            "mlform_reconcile_policy_failures",
            "Failing policy results seen in plans (mandatory ones stop the cycle)",
            ["policy", "level"], registry=r)
        self.git_failures = Counter("mlform_reconcile_git_pull_failures",
                                    "Cycles whose git clone or fetch failed", registry=r)

    def value(self, name: str, labels: dict | None = None) -> float | None:
        """One sample's current value (for tests and the health body)."""
        return self.registry.get_sample_value(name, labels or {})


@dataclass
class Health:
    """The liveness verdict (module docstring) from the cycles finished so far."""

    interval_s: float
    grace_cycles: int = 3
    clock: object = time.time
    started_at: float = field(default=0.0)
    last_success_at: float | None = None
    last_outcome: str | None = None
    last_cycle_at: float | None = None

    def __post_init__(self) -> None:
        self.started_at = self.started_at or self.clock()
        self._lock = threading.Lock()

    def record(self, outcome: str) -> None:
        with self._lock:
            now = self.clock()
            self.last_outcome, self.last_cycle_at = outcome, now
            if outcome in SUCCESS_OUTCOMES:
                self.last_success_at = now

    def check(self) -> tuple[bool, dict]:
        with self._lock:
            now = self.clock()
            since = self.last_success_at if self.last_success_at is not None else self.started_at
            # at least a minute of grace, so a tiny --interval does not make a flapping probe
            grace = max(self.grace_cycles * self.interval_s, 60.0)
            if self.last_outcome is None:
                ok, why = True, "no cycle has finished yet"
            elif self.last_outcome in SUCCESS_OUTCOMES:
                ok, why = True, "the last cycle succeeded"
            elif now - since <= grace:
                ok, why = True, "the last cycle failed, within the grace period"
            else:
                ok, why = False, f"no successful cycle for {now - since:.0f} s"
            return ok, {"healthy": ok, "reason": why, "last_outcome": self.last_outcome,
                        "last_success": self.last_success_at, "grace_seconds": grace}


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9464` for IPv6) -> (host, port); the port may be 0 (any free one)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise DiagnosticError.single(
            f'Invalid --metrics-addr "{text}"',
            hint="Give HOST:PORT, e.g. 127.0.0.1:9464 (0.0.0.0:9464 in a container), or 'off'.")
    return host, int(port)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:   # scrapes every 15 s would flood the log
        pass


class MetricsServer:
    """`/metrics` (Prometheus text) and `/healthz` on one address, on a daemon thread."""

    def __init__(self, metrics: ReconcileMetrics, health: Health, host: str, port: int) -> None:
        self.metrics = metrics
        self.health = health
        self.host, self.port = host, port
        self._server = None
        self._thread: threading.Thread | None = None

    def _app(self, environ, start_response):
        if environ.get("PATH_INFO", "/").rstrip("/") == "/healthz":
            ok, body = self.health.check()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        return self._metrics_app(environ, start_response)

    def start(self) -> "MetricsServer":
        self._metrics_app = make_wsgi_app(self.metrics.registry)
        family = ThreadingWSGIServer
        if ":" in self.host:                           # an IPv6 literal
            import socket
            family = type("ThreadingWSGIServer6", (ThreadingWSGIServer,),
                          {"address_family": socket.AF_INET6})
        try:
            self._server = make_server(self.host, self.port, self._app, family,
                                       handler_class=_QuietHandler)
        except OSError as exc:
            raise DiagnosticError.single(
                f"Cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}",
                hint="Pick another --metrics-addr, or 'off'.") from None
        self.port = self._server.server_address[1]    # the port chosen when 0 was asked
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="mlform-metrics", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

"""Prometheus metrics of one proxy worker, and the addon that feeds them.

Served on a port of its own (``GATEHOUSE_METRICS_PORT``, off when unset or 0; bound to
``GATEHOUSE_METRICS_HOST``, default 127.0.0.1) by ``prometheus_client``'s HTTP server in
a thread, so a scrape never touches the proxy's event loop and the proxy port never
answers anything but proxied traffic. Every series is per worker: aggregate in
Prometheus (``sum by (target, decision) (rate(gatehouse_proxy_requests_total[1m]))``).

Series (labels in brackets):

* ``gatehouse_proxy_requests_total`` [target, decision, status_class] finished exchanges;
  ``target`` is the slug or ``-`` (never a client-chosen string, to bound cardinality);
* ``gatehouse_proxy_request_duration_seconds`` [target] time from request to answer;
* ``gatehouse_proxy_masking_findings_total`` [type, direction] masked values;
* ``gatehouse_proxy_approval_wait_seconds`` time requests were held for a decision;
* ``gatehouse_proxy_upstream_errors_total`` [target, code] 502/504 answered for upstreams;
* ``gatehouse_proxy_held_requests`` requests waiting for a decision now;
* ``gatehouse_proxy_policy_version`` version of the policy in force;
* ``gatehouse_proxy_redis_up`` 1 while the control plane's Redis answers;
* ``gatehouse_proxy_spool_bytes`` exchanges spooled to disk waiting for Redis.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from proxy_worker.flowstate import state_of
from proxy_worker.masking import accel

if TYPE_CHECKING:
    from mitmproxy import http

    from proxy_worker.link import ControlPlaneLink

log = logging.getLogger("gatehouse.metrics")

#: ``flow.metadata`` key set once a flow has been counted.
COUNTED_KEY = "gatehouse.metered"
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
WAIT_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
UPSTREAM_ERROR_CODES = frozenset(
    {
        "upstream_timeout",
        "upstream_unreachable",
        "upstream_error",
        "upstream_response_too_large",
        "upstream_error_mid_response",
    }
)


def _spool_bytes(path: Path) -> float:
    total = 0
    for p in (path, path.with_suffix(".draining")):
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return float(total)


class WorkerMetrics:
    """The worker's metric families in a registry of their own (tests run several)."""

    def __init__(self, link: ControlPlaneLink, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gatehouse_proxy_requests",
            "Finished exchanges by target, decision and status class",
            ["target", "decision", "status_class"],
            registry=r,
        )
        self.duration = Histogram(
            "gatehouse_proxy_request_duration_seconds",
            "Time from the request to the answer, approval waits included",
            ["target"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.findings = Counter(
            "gatehouse_proxy_masking_findings",
            "Values masked, by entity type and direction",
            ["type", "direction"],
            registry=r,
        )
        self.approval_wait = Histogram(
            "gatehouse_proxy_approval_wait_seconds",
            "How long requests were held waiting for a decision",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "gatehouse_proxy_upstream_errors",
            "Upstream failures answered by the gateway (502/504)",
            ["target", "code"],
            registry=r,
        )
        Gauge(
            "gatehouse_proxy_held_requests", "Requests waiting for a decision now", registry=r
        ).set_function(lambda: float(link.held_count))
        Gauge(
            "gatehouse_proxy_policy_version", "Version of the policy snapshot in force", registry=r
        ).set_function(lambda: float(link.state.policy.version))
        Gauge(
            "gatehouse_proxy_redis_up", "1 while Redis (the control plane link) answers", registry=r
        ).set_function(lambda: 1.0 if link.redis_ok else 0.0)
        Gauge(
            "gatehouse_proxy_masking_accelerator",
            "1 when the masking engine's C accelerator is loaded (0: pure Python)",
            registry=r,
        ).set(1.0 if accel.AVAILABLE else 0.0)
        Gauge(
            "gatehouse_proxy_spool_bytes",
            "Bytes of exchanges spooled locally while Redis was unreachable",
            registry=r,
        ).set_function(lambda: _spool_bytes(link.spool_path))
        self._server = None
        #: Labelled children by (metric, label values): ``labels()`` takes a lock and
        #: builds its key on every call. Label values are bounded (target slugs,
        #: decisions, status classes, entity types).
        self._children: dict[tuple, Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, flow: http.HTTPFlow) -> None:
        """Count one finished flow (idempotent per flow)."""
        if flow.metadata.get(COUNTED_KEY):
            return
        flow.metadata[COUNTED_KEY] = True
        st = state_of(flow)
        target = st.target.slug if st.target else "-"
        status = flow.response.status_code if flow.response is not None else 0
        decision = st.decision if flow.response is not None else "error"
        status_class = f"{status // 100}xx" if status else "none"
        self._child(self.requests, target, decision, status_class).inc()
        total_ms = st.timings.get("total")
        if total_ms is None:
            total_ms = (time.perf_counter() - st.started_perf) * 1000
        self._child(self.duration, target).observe(total_ms / 1000)
        for direction, findings in (
            ("request", st.request_findings),
            ("response", st.response_findings),
        ):
            if not findings:
                continue
            # One counter update per entity type (a body can have thousands of findings).
            per_type: dict[str, int] = {}
            get = per_type.get
            for f in findings:
                t = f.get("type", "?")
                per_type[t] = get(t, 0) + f.get("count", 1)
            for t, n in per_type.items():
                self._child(self.findings, str(t), direction).inc(int(n))
        if "approval_wait" in st.timings:
            self.approval_wait.observe(st.timings["approval_wait"] / 1000)
        if st.error in UPSTREAM_ERROR_CODES:
            self.upstream_errors.labels(target, st.error).inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on ``host:port`` from a background thread."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class Metrics:
    """mitmproxy addon: feeds :class:`WorkerMetrics` when a flow ends (last in the chain)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def response(self, flow: http.HTTPFlow) -> None:
        try:
            self.metrics.observe(flow)
        except Exception:  # metrics must never break the data path
            log.exception("could not update metrics")

    def error(self, flow: http.HTTPFlow) -> None:
        self.response(flow)

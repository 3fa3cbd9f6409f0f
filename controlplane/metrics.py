"""``GET /metrics``: Prometheus metrics of the control plane (streams, ingest, approvals).

Access: a scraper presents ``Authorization: Bearer <GATEHOUSE_METRICS_TOKEN>`` (set the
token in the environment; compared in constant time); a signed-in user with the
``admin`` role may open it in a browser. Anything else gets 401 (no credentials) or 403,
and when no token is configured only admins can read it. The proxy workers serve their
own per-request metrics on a separate port (``proxy_worker/metrics.py``).

Every value is computed when scraped, from Redis and PostgreSQL, so any number of web
processes report the same figures (no per-process counters to aggregate):

* ``gatehouse_stream_length`` [stream] entries in the approvals / exchanges stream;
* ``gatehouse_ingest_pending`` [stream] entries read by ingest but not yet acknowledged;
* ``gatehouse_ingest_lag_entries`` [stream] entries not yet stored (undelivered + pending);
* ``gatehouse_ingest_lag_seconds`` [stream] age of the oldest entry not yet stored
  (0 when ingest is caught up): the ingest lag;
* ``gatehouse_approval_requests_pending`` requests held right now, waiting for a human;
* ``gatehouse_approval_oldest_pending_seconds`` how long the oldest of them has waited;
* ``gatehouse_approval_wait_seconds`` (summary, last hour) request-to-decision time;
* ``gatehouse_exchanges_recent`` [target, decision] exchanges started in the last 5 min;
* ``gatehouse_redis_up``, ``gatehouse_database_up``.
"""

from __future__ import annotations

import hmac
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, F, Min, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from redis.exceptions import RedisError, ResponseError

from controlplane.redis import client, keys
from controlplane.roles import ADMIN, has_role
from proxy_worker.contract import INGEST_GROUP

log = logging.getLogger("gatehouse.metrics")

RECENT_EXCHANGES = timedelta(minutes=5)
WAIT_WINDOW = timedelta(hours=1)


def _id_seconds(entry_id: bytes | str) -> float:
    """The time (epoch seconds) encoded in a Redis stream entry id ``<ms>-<seq>``."""
    s = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(s.split("-")[0]) / 1000


def stream_stats(r, stream: str) -> dict[str, float]:  # noqa: ANN001 - redis.Redis
    """Length, pending, lag (entries) and lag (seconds) of one stream for the ingest group."""
    out = {"length": float(r.xlen(stream)), "pending": 0.0, "lag_entries": 0.0, "lag_seconds": 0.0}
    try:
        groups = r.xinfo_groups(stream)
    except ResponseError:  # no stream yet
        return out
    group = next(
        (g for g in groups if g.get("name") in (INGEST_GROUP, INGEST_GROUP.encode())), None
    )
    if group is None:
        # Nobody consumes yet: everything is lag.
        out["lag_entries"] = out["length"]
        first = r.xrange(stream, count=1)
        if first:
            out["lag_seconds"] = max(0.0, time.time() - _id_seconds(first[0][0]))
        return out
    pending = float(group.get("pending") or 0)
    out["pending"] = pending
    after = f"({_as_str(group['last-delivered-id'])}"
    undelivered = r.xrange(stream, min=after, count=1)
    lag = group.get("lag")
    if lag is None:  # Redis < 7, or a lag Redis cannot tell: count (bounded) from the range
        lag = len(r.xrange(stream, min=after, count=100_000)) if undelivered else 0
    out["lag_entries"] = float(lag) + pending
    oldest: list[float] = []
    if pending:
        summary = r.xpending(stream, INGEST_GROUP)
        if summary and summary.get("min"):
            oldest.append(_id_seconds(summary["min"]))
    if undelivered:
        oldest.append(_id_seconds(undelivered[0][0]))
    if oldest:
        out["lag_seconds"] = max(0.0, time.time() - min(oldest))
    return out


def _as_str(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class ControlPlaneCollector:
    """Collects the control plane's metrics at scrape time (see the module docstring)."""

    def collect(self):  # noqa: ANN201 - prometheus_client collector protocol
        k = keys()
        streams = {"approvals": k.approvals_stream, "exchanges": k.exchanges_stream}
        redis_up = GaugeMetricFamily("gatehouse_redis_up", "1 if Redis answered this scrape")
        families = {
            "length": GaugeMetricFamily(
                "gatehouse_stream_length", "Entries in the stream", labels=["stream"]
            ),
            "pending": GaugeMetricFamily(
                "gatehouse_ingest_pending",
                "Entries read by ingest, not yet acknowledged",
                labels=["stream"],
            ),
            "lag_entries": GaugeMetricFamily(
                "gatehouse_ingest_lag_entries",
                "Entries not yet stored in PostgreSQL (undelivered + pending)",
                labels=["stream"],
            ),
            "lag_seconds": GaugeMetricFamily(
                "gatehouse_ingest_lag_seconds",
                "Age of the oldest entry not yet stored (0 when caught up)",
                labels=["stream"],
            ),
        }
        try:
            r = client()
            for name, stream in streams.items():
                for key, value in stream_stats(r, stream).items():
                    families[key].add_metric([name], value)
            redis_up.add_metric([], 1.0)
        except (RedisError, OSError) as e:
            log.warning("metrics: redis unavailable: %s", e)
            redis_up.add_metric([], 0.0)
        yield redis_up
        yield from families.values()
        yield from self._database()

    def _database(self):  # noqa: ANN202
        from approvals.models import ApprovalRequest
        from audit.models import Exchange

        db_up = GaugeMetricFamily("gatehouse_database_up", "1 if PostgreSQL answered this scrape")
        now = timezone.now()
        try:
            pending = ApprovalRequest.objects.filter(
                status=ApprovalRequest.Status.PENDING, deadline__gt=now
            ).aggregate(n=Count("id"), oldest=Min("requested_at"))
            decided = ApprovalRequest.objects.filter(
                decided_at__gte=now - WAIT_WINDOW, decided_at__isnull=False
            ).aggregate(n=Count("id"), total=Sum(F("decided_at") - F("requested_at")))
            recent = (
                Exchange.objects.filter(started_at__gte=now - RECENT_EXCHANGES)
                .values("target__slug", "decision")
                .annotate(n=Count("id"))
                .order_by()
            )
            recent = list(recent)
        except DatabaseError as e:
            log.warning("metrics: database unavailable: %s", e)
            db_up.add_metric([], 0.0)
            yield db_up
            return
        db_up.add_metric([], 1.0)
        yield db_up
        g = GaugeMetricFamily(
            "gatehouse_approval_requests_pending", "Requests held now, waiting for a decision"
        )
        g.add_metric([], float(pending["n"]))
        yield g
        g = GaugeMetricFamily(
            "gatehouse_approval_oldest_pending_seconds", "Wait of the oldest pending request"
        )
        oldest = pending["oldest"]
        g.add_metric([], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        yield g
        s = SummaryMetricFamily(
            "gatehouse_approval_wait_seconds",
            "Request-to-decision time of approval requests decided in the last hour",
        )
        total = decided["total"]
        s.add_metric([], decided["n"], total.total_seconds() if total else 0.0)
        yield s
        g = GaugeMetricFamily(
            "gatehouse_exchanges_recent",
            "Exchanges started in the last 5 minutes, by target and decision",
            labels=["target", "decision"],
        )
        for row in recent:
            g.add_metric([row["target__slug"] or "-", row["decision"]], float(row["n"]))
        yield g


def _authorised(request: HttpRequest) -> bool | None:
    """True: allowed; False: identified but refused (403); None: no credentials (401)."""
    token = getattr(settings, "GATEHOUSE_METRICS_TOKEN", "")
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if header:
        return bool(
            token
            and scheme.lower() == "bearer"
            and hmac.compare_digest(presented.strip().encode(), token.encode())
        )
    if request.user.is_authenticated:
        return has_role(request.user, ADMIN)
    return None


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of :class:`ControlPlaneCollector`."""
    allowed = _authorised(request)
    if allowed is None:
        resp = HttpResponse("authentication required\n", status=401, content_type="text/plain")
        resp["WWW-Authenticate"] = 'Bearer realm="gatehouse-metrics"'
        return resp
    if not allowed:
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector())
    resp = HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    resp["Cache-Control"] = "no-store"
    return resp

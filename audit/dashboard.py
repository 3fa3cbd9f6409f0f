"""Aggregates for the landing-page dashboard (auditors and admins).

:func:`dashboard_data` returns plain JSON-serialisable data that the page hands to
``static/audit/dashboard.js`` through ``json_script`` (no inline script under the CSP);
the script draws it with Chart.js.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, F
from django.db.models.functions import Trunc
from django.utils import timezone

from approvals.models import ApprovalRequest
from audit.models import Exchange

#: Range choices: key -> (label, length, bucket for "requests over time").
RANGES: dict[str, tuple[str, timedelta, str]] = {
    "24h": ("Last 24 hours", timedelta(hours=24), "hour"),
    "7d": ("Last 7 days", timedelta(days=7), "day"),
    "30d": ("Last 30 days", timedelta(days=30), "day"),
}
DEFAULT_RANGE = "24h"

#: Approval wait histogram buckets (upper bounds in seconds; the last is open-ended).
WAIT_BUCKETS = [(5, "< 5 s"), (30, "5–30 s"), (60, "30–60 s"), (300, "1–5 min"), (None, "> 5 min")]


def dashboard_data(range_key: str | None) -> dict[str, Any]:
    """Charts data for the last ``range_key`` (``24h``, ``7d`` or ``30d``; unknown → 24h).

    Shape::

        {"range": "24h", "ranges": [[key, label], …], "since": ISO time, "total": int,
         "over_time": {"labels": [ISO bucket start, …],
                       "series": {decision: [count per label], …}},
         "entity_types": {"labels": [type, …], "values": [findings, …]},
         "approval_wait": {"labels": [bucket, …], "values": [requests, …],
                           "median_s": float | None, "p95_s": float | None},
         "top_agents": {"labels": [name, …], "values": [exchanges, …]},
         "top_targets": {"labels": [slug, …], "values": [exchanges, …]}}
    """
    key = range_key if range_key in RANGES else DEFAULT_RANGE
    _, length, bucket = RANGES[key]
    now = timezone.now()
    since = now - length
    recent = Exchange.objects.filter(started_at__gte=since)

    # Requests over time by decision: every bucket present, zeros included.
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    first = since.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        first = first.replace(hour=0)
    labels = []
    t = first
    while t <= now:
        labels.append(t)
        t += step
    index = {lab: i for i, lab in enumerate(labels)}
    series: dict[str, list[int]] = {}
    rows = (
        recent.annotate(b=Trunc("started_at", bucket))
        .values("b", "decision")
        .annotate(n=Count("id"))
        .order_by()
    )
    total = 0
    for row in rows:
        i = index.get(row["b"])
        if i is None:
            continue
        series.setdefault(row["decision"], [0] * len(labels))[i] += row["n"]
        total += row["n"]

    # Masked findings by entity type (sum of the findings' counts, both directions).
    with connection.cursor() as cur:
        cur.execute(
            "SELECT f->>'type', SUM(COALESCE((f->>'count')::int, 1)) FROM audit_exchange x,"
            " jsonb_array_elements(x.request_findings || x.response_findings) f"
            " WHERE x.started_at >= %s AND x.finding_types <> '{}'"
            " GROUP BY 1 ORDER BY 2 DESC",
            [since],
        )
        types = cur.fetchall()

    # Approval wait times (requested -> decided), from the approvals app.
    waits = sorted(
        (r["decided_at"] - r["requested_at"]).total_seconds()
        for r in ApprovalRequest.objects.filter(
            requested_at__gte=since, decided_at__isnull=False
        ).values("requested_at", "decided_at")
    )
    wait_counts = [0] * len(WAIT_BUCKETS)
    for w in waits:
        for i, (upper, _) in enumerate(WAIT_BUCKETS):
            if upper is None or w < upper:
                wait_counts[i] += 1
                break

    def pct(p: float) -> float | None:
        if not waits:
            return None
        return round(waits[min(len(waits) - 1, int(p * len(waits)))], 1)

    agents = (
        recent.filter(agent__isnull=False)
        .values(name=F("agent__name"))
        .annotate(n=Count("id"))
        .order_by("-n")[:10]
    )
    targets = (
        recent.filter(target__isnull=False)
        .values(name=F("target__slug"))
        .annotate(n=Count("id"))
        .order_by("-n")[:10]
    )
    return {
        "range": key,
        "ranges": [[k, v[0]] for k, v in RANGES.items()],
        "since": since.isoformat(),
        "total": total,
        "over_time": {
            "bucket": bucket,
            "labels": [lab.isoformat() for lab in labels],
            "series": series,
        },
        "entity_types": {"labels": [t[0] for t in types], "values": [int(t[1]) for t in types]},
        "approval_wait": {
            "labels": [b[1] for b in WAIT_BUCKETS],
            "values": wait_counts,
            "median_s": pct(0.5),
            "p95_s": pct(0.95),
        },
        "top_agents": {"labels": [a["name"] for a in agents], "values": [a["n"] for a in agents]},
        "top_targets": {
            "labels": [t["name"] for t in targets],
            "values": [t["n"] for t in targets],
        },
    }

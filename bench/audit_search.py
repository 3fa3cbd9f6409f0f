#!/usr/bin/env python
"""p50/p95 latency of filtered full-text searches on the generated exchanges.

Usage (after bench/audit_generate.py filled the scratch database)::

    GATEHOUSE_DEBUG=1 GATEHOUSE_DB_NAME=gatehouse_bench \\
        .venv/bin/python bench/audit_search.py [--runs 40] [--seed 11]

Each query is what the search page runs for one page: :class:`audit.forms.SearchForm`
``.queryset()`` fetched by :func:`audit.search.fetch_page` (51 rows; the planner's plan
under a 60 ms budget, else the bitmap plan), timed with ``time.perf_counter`` around
the fetch (Django and psycopg included, template rendering excluded; the full page is
measured separately through Django's test client as ``page``). Query classes, each
run ``--runs`` times with words drawn at random from its frequency band of the
generator's Zipf vocabulary:

* ``common+target+7d``: a frequent word (rank 1–20), one target, the last 7 days;
* ``medium+decision``: a mid-frequency word (rank 100–500), ``decision=denied``;
* ``rare``: a rare word (rank 3000–5000) alone, whole 30 days;
* ``url-word+type``: a word of the URLs (``invoices``), ``entity_type=IBAN``, one agent;
* ``two-words+1d``: two mid-frequency words, the last day;
* ``page``: the whole search page (``medium+decision``) rendered through the test client.

The goal (issue 5) is p95 < 200 ms per class on one million exchanges.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from audit.forms import SearchForm  # noqa: E402
from audit.models import Exchange  # noqa: E402
from audit.search import fetch_page  # noqa: E402
from controlplane.models import Agent, Target  # noqa: E402


def word(rng: random.Random, lo: int, hi: int) -> str:
    return f"w{rng.randint(lo, hi)}"


def run_query(params: dict) -> float:
    form = SearchForm(params)
    assert form.is_valid(), form.errors
    t = time.perf_counter()
    rows = fetch_page(form.queryset(), 0, 51)
    elapsed = time.perf_counter() - t
    assert len(rows) <= 51
    return elapsed


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    total = Exchange.objects.count()
    now = datetime.now(UTC)
    fmt = "%Y-%m-%dT%H:%M"
    targets = list(Target.objects.filter(slug__startswith="bench-").values_list("pk", flat=True))
    agents = list(
        Agent.objects.filter(name__startswith="bench-agent-").values_list("pk", flat=True)
    )
    classes = {
        "common+target+7d": lambda: {
            "q": word(rng, 1, 20),
            "target": rng.choice(targets),
            "start": (now - timedelta(days=7)).strftime(fmt),
        },
        "medium+decision": lambda: {"q": word(rng, 100, 500), "decision": "denied"},
        "rare": lambda: {"q": word(rng, 3000, 4999)},
        "url-word+type": lambda: {
            "q": "invoices",
            "entity_type": "IBAN",
            "agent": rng.choice(agents),
        },
        "two-words+1d": lambda: {
            "q": f"{word(rng, 50, 300)} {word(rng, 50, 300)}",
            "start": (now - timedelta(days=1)).strftime(fmt),
        },
    }
    print(f"{total:,} exchanges; {args.runs} runs per class; PostgreSQL {connection.pg_version}")
    print(f"{'class':<20} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    worst = 0.0
    for name, make in classes.items():
        run_query(make())  # warm the plan cache and the pages touched
        times = [run_query(make()) * 1000 for _ in range(args.runs)]
        p95 = pct(times, 0.95)
        worst = max(worst, p95)
        print(f"{name:<20} {statistics.median(times):8.1f} {p95:8.1f} {max(times):8.1f}")

    user, _ = User.objects.get_or_create(username="bench-auditor")
    user.groups.add(Group.objects.get_or_create(name="auditor")[0])
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    times = []
    for _ in range(args.runs):
        params = {"q": word(rng, 100, 500), "decision": "denied"}
        t = time.perf_counter()
        r = client.get("/audit/search/", params)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200
    print(f"{'page':<20} {statistics.median(times):8.1f} {pct(times, 0.95):8.1f} {max(times):8.1f}")
    print(f"worst query-class p95: {worst:.1f} ms (goal < 200 ms)")


if __name__ == "__main__":
    main()

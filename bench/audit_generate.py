#!/usr/bin/env python
"""Generate N recorded exchanges (default one million) for the search benchmark, fast.

Usage (a scratch database; never production)::

    createdb -U postgres -h 127.0.0.1 gatehouse_bench
    export GATEHOUSE_DEBUG=1 GATEHOUSE_DB_NAME=gatehouse_bench
    .venv/bin/python manage.py migrate -v0
    .venv/bin/python bench/audit_generate.py [--count 1000000] [--seed 7] [--no-chain]

Rows go in with PostgreSQL ``COPY`` (:func:`audit.chain.copy_rows`), 20,000 per
transaction, so PostgreSQL computes the generated ``search_vector`` and maintains every
index exactly as at ingest. Shape of the data (deterministic for a seed):

* 20 agents, 8 targets, sessions of 50 consecutive exchanges, spread over 30 days;
* decisions: 80 % allowed, 10 % denied, 5 % approved, 2 % approval denied, 2 % expired,
  1 % error; status codes to match;
* URLs: ``/<resource>/<word>.json?q=<word>&page=<n>`` over 12 resources;
* bodies: JSON of 300–700 bytes with words drawn from a 5,000-word vocabulary with a
  Zipf-like distribution (``w0`` is the most common, ``w4999`` the rarest), and masking
  placeholders (``[EMAIL]``, ``[PHONE:xxxxxxxx]``, ``[IBAN]``…) with matching findings
  on about 60 % of exchanges.

With the chain (default) each exchange also gets its ``exchange`` chain record, so
``manage.py audit_verify`` works on the result.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

import django  # noqa: E402

django.setup()

from django.db import transaction  # noqa: E402

from audit.chain import copy_rows, exchange_digest, lock_head  # noqa: E402
from audit.ingest import EXCHANGE_COLUMNS  # noqa: E402
from audit.models import Exchange, Session  # noqa: E402
from controlplane.models import Agent, Target  # noqa: E402

VOCAB = [f"w{i}" for i in range(5000)]
RESOURCES = [
    "customers",
    "orders",
    "invoices",
    "payments",
    "tickets",
    "contracts",
    "v1/chat/completions",
    "v1/embeddings",
    "search",
    "reports",
    "users",
    "files",
]
DECISIONS = (
    ["allowed"] * 80
    + ["denied"] * 10
    + ["approved"] * 5
    + ["approval_denied"] * 2
    + ["expired"] * 2
    + ["error"]
)
STATUS = {
    "allowed": 200,
    "denied": 403,
    "approved": 200,
    "approval_denied": 403,
    "expired": 403,
    "error": 502,
}
TYPES = ["EMAIL", "PHONE", "IBAN", "CREDIT_CARD", "US_SSN", "IP_ADDRESS"]


def zipf_word(rng: random.Random) -> str:
    # P(rank r) ~ 1/r: inverse CDF of a log-uniform draw over the vocabulary.
    return VOCAB[min(int(len(VOCAB) ** rng.random()) - 1, len(VOCAB) - 1)]


def placeholder(t: str, rng: random.Random) -> str:
    return f"[{t}:{rng.getrandbits(32):08x}]" if rng.random() < 0.3 else f"[{t}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--no-chain", action="store_true", help="skip the chain records")
    args = ap.parse_args()
    rng = random.Random(args.seed)

    agents = [Agent.objects.get_or_create(name=f"bench-agent-{i}")[0].pk for i in range(20)]
    targets = [
        Target.objects.get_or_create(
            slug=f"bench-{i}", defaults={"name": f"Bench {i}", "upstream_url": "http://127.0.0.1:9"}
        )[0].pk
        for i in range(8)
    ]
    end = datetime.now(UTC)
    start = end - timedelta(days=30)
    step = (end - start) / args.count
    t0 = time.perf_counter()
    made = 0
    session = None
    while made < args.count:
        n = min(args.chunk, args.count - made)
        rows = []
        with transaction.atomic():
            chain = None if args.no_chain else lock_head()
            for i in range(made, made + n):
                at = start + step * i
                if i % 50 == 0:
                    a, t = rng.choice(agents), rng.choice(targets)
                    session = Session.objects.create(
                        agent_id=a,
                        target_id=t,
                        started_at=at,
                        last_activity_at=at,
                        exchange_count=0,
                    )
                decision = rng.choice(DECISIONS)
                found = rng.sample(TYPES, rng.randint(1, 3)) if rng.random() < 0.6 else []
                words = [zipf_word(rng) for _ in range(rng.randint(40, 90))]
                body_words = " ".join(words)
                fields = {t.lower(): placeholder(t, rng) for t in found}
                body = json.dumps(
                    {
                        "id": i,
                        "text": body_words,
                        **fields,
                        "next": f"/{rng.choice(RESOURCES)}?page={i % 7}",
                    }
                )
                resource = rng.choice(RESOURCES)
                url = (
                    f"http://127.0.0.1:8001/{resource}/{zipf_word(rng)}.json"
                    f"?q={zipf_word(rng)}&page={i % 10}"
                )
                row = SimpleNamespace(
                    id=uuid.UUID(int=rng.getrandbits(128), version=4),
                    session_id=session.pk,
                    agent_id=session.agent_id,
                    target_id=session.target_id,
                    rule_id=None,
                    approval_id=None,
                    worker_id="bench",
                    client_address="127.0.0.1",
                    started_at=at,
                    method="POST" if resource.startswith("v1") else "GET",
                    url=url,
                    request_headers={"authorization": "[REDACTED]"},
                    request_body=json.dumps({"model": "demo", "input": " ".join(words[:8])})
                    if resource.startswith("v1")
                    else "",
                    status_code=STATUS[decision],
                    response_headers={"content-type": "application/json"},
                    response_body=body if STATUS[decision] == 200 else '{"error": "denied"}',
                    decision=decision,
                    error="",
                    request_findings=[],
                    response_findings=[
                        {"type": t, "location": f"$.{t.lower()}", "count": 1} for t in found
                    ],
                    finding_types=sorted(found),
                    timings={"total": round(rng.uniform(5, 400), 2)},
                    body_truncated=False,
                    stream_entry_id="",
                    ingested_at=end,
                )
                rows.append(row)
                if chain is not None:
                    chain.add(
                        "exchange",
                        {
                            "exchange_id": str(row.id),
                            "session_id": row.session_id,
                            "digest": exchange_digest(row),
                        },
                        exchange_id=row.id,
                        plain=True,
                    )
            copy_rows(Exchange, EXCHANGE_COLUMNS, rows)
            if chain is not None:
                chain.flush()
        made += n
        Session.objects.filter(exchange_count=0).update(exchange_count=50)
        el = time.perf_counter() - t0
        print(f"{made:>9,} rows  {el:7.1f} s  {made / el:,.0f} rows/s", flush=True)
    print("ANALYZE …", flush=True)
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("ANALYZE audit_exchange")
        cur.execute("ANALYZE audit_chainrecord")
    print(f"done: {args.count:,} exchanges in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

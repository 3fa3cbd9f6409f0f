#!/usr/bin/env python
"""Sustained ingest throughput: exchanges per second from the Redis stream into PostgreSQL.

Usage (from the repository root, against a scratch database — never production)::

    createdb -U postgres -h 127.0.0.1 gatehouse_bench
    GATEHOUSE_DEBUG=1 GATEHOUSE_DB_NAME=gatehouse_bench GATEHOUSE_REDIS_PREFIX=ghbench \\
        .venv/bin/python manage.py migrate -v0
    GATEHOUSE_DEBUG=1 GATEHOUSE_DB_NAME=gatehouse_bench GATEHOUSE_REDIS_PREFIX=ghbench \\
        .venv/bin/python bench/audit_ingest.py [--count 100000] [--batch 500] [--processes 1]

What it does: creates a bench agent and target, fills the exchanges stream with
``--count`` realistic exchange messages (masked JSON response bodies of ~1 KB with
placeholders, findings, timings; a session key on a third of them), then runs the real
:class:`audit.ingest.Ingestor` (``--processes`` consumers of the ``ingest`` group, each
its own ``manage.py ingest`` process) until every message is stored, and reports
exchanges/s = count / wall time from the first read to the last commit. Everything an
ingest batch does is included: duplicate check, sessions, the ``exchange`` chain records
(hash chain under the head lock), the generated full-text ``search_vector`` and every
index. The stream is filled before timing, so the figure is the consumer's capacity,
not the producers'. ``--verify`` then verifies the whole chain and times it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

import django  # noqa: E402

django.setup()

from audit.chain import verify_chain  # noqa: E402
from audit.models import ChainHead, Exchange  # noqa: E402
from controlplane.models import Agent, Target  # noqa: E402
from controlplane.redis import client, keys  # noqa: E402
from proxy_worker.contract import INGEST_GROUP, ExchangeMessage  # noqa: E402


def body(i: int) -> str:
    rows = [
        {
            "id": i * 10 + j,
            "name": f"customer {i * 10 + j}",
            "email": "[EMAIL]",
            "phone": f"[PHONE:{(i * 7 + j) % 0xFFFFFFFF:08x}]",
            "city": ["Lisbon", "Porto", "Braga", "Faro"][j % 4],
            "orders": j * 3,
            "note": "regular customer, prefers invoice by mail",
        }
        for j in range(6)
    ]
    return json.dumps({"rows": rows, "next": f"/customers/customers.json?_next={i}"})


def messages(n: int, agent_id: int, target_id: int) -> list[str]:
    t0 = time.time() - 3600
    out = []
    for i in range(n):
        m = ExchangeMessage(
            exchange_id=str(uuid.uuid4()),
            worker_id="bench-worker",
            started_at=t0 + i * 0.01,
            agent_id=agent_id,
            target_id=target_id,
            session_key=f"job-{i // 100}" if i % 3 == 0 else "",
            client_address="127.0.0.1",
            method="GET",
            url=f"http://127.0.0.1:8001/customers/customers.json?sql=select+*+from+customers+where+id+%3E+{i}",
            request_headers={"authorization": "[REDACTED]", "accept": "application/json"},
            request_body="",
            status_code=200,
            response_headers={"content-type": "application/json"},
            response_body=body(i),
            decision="allowed",
            response_findings=[
                {"type": "EMAIL", "location": "$.rows[*].email", "count": 6},
                {"type": "PHONE", "location": "$.rows[*].phone", "count": 6},
            ],
            timings={"total": 12.5 + i % 7, "upstream": 9.25, "masking": 1.5},
        )
        out.append(m.to_json())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--verify", action="store_true", help="verify the whole chain afterwards")
    args = ap.parse_args()

    agent, _ = Agent.objects.get_or_create(name="bench-agent")
    target, _ = Target.objects.get_or_create(
        slug="bench", defaults={"name": "Bench", "upstream_url": "http://127.0.0.1:9"}
    )
    r = client()
    k = keys()
    for key in r.scan_iter(f"{k.prefix}:*"):
        r.delete(key)
    before = ChainHead.objects.get(pk=1).seq
    rows_before = Exchange.objects.count()
    payloads = messages(args.count, agent.id, target.id)
    pipe = r.pipeline(transaction=False)
    for n, p in enumerate(payloads, 1):
        pipe.xadd(k.exchanges_stream, {"data": p})
        if n % 5000 == 0:
            pipe.execute()
    pipe.execute()
    r.xgroup_create(k.exchanges_stream, INGEST_GROUP, id="0", mkstream=True)
    r.xgroup_create(k.approvals_stream, INGEST_GROUP, id="0", mkstream=True)
    print(
        f"stream filled with {args.count} exchanges; starting {args.processes} ingest process(es)"
    )

    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "ingest",
                "--consumer",
                f"bench-{i}",
                "--batch",
                str(args.batch),
                "--block-ms",
                "200",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for i in range(args.processes)
    ]
    start = None
    try:
        while True:
            # The chain head moves by one per stored exchange, in the same commit;
            # reading one row keeps the poll from competing with ingest for CPU.
            n = ChainHead.objects.get(pk=1).seq - before
            if start is None and n > 0:
                start = time.perf_counter()
                first = n
            if n >= args.count:
                break
            dead = [p.returncode for p in procs if p.poll() is not None]
            if dead:
                raise SystemExit(f"an ingest process exited with {dead[0]}")
            time.sleep(0.1)
        elapsed = time.perf_counter() - start
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    stored = Exchange.objects.count() - rows_before
    assert stored == args.count, f"{stored} rows stored for {args.count} messages"
    rate = (args.count - first) / elapsed
    print(
        f"ingested {args.count} exchanges; {args.count - first} in {elapsed:.2f} s "
        f"after the first commit: {rate:,.0f} exchanges/s "
        f"(batch {args.batch}, {args.processes} process(es), {os.cpu_count()} cores)"
    )
    if args.verify:
        t = time.perf_counter()
        result = verify_chain()
        print(
            f"chain verification: ok={result.ok}, {result.records} records in "
            f"{time.perf_counter() - t:.1f} s"
        )


if __name__ == "__main__":
    main()

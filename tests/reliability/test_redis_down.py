"""Redis (the control plane link) goes away and comes back: fail closed, lose nothing.

The worker runs against a private ``redis-server`` (AOF on, like a production Redis)
that the test stops with SIGTERM and restarts on the same port.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.reliability.harness import load, wait_until
from tests.reliability.upstream import RAW_PII

pytestmark = pytest.mark.reliability


def _metric(gw, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{gw.metrics_ports['w1']}/metrics").text
    line = next(ln for ln in text.splitlines() if ln.startswith(name + " "))
    return float(line.split()[1])


def _batch_counts(gw) -> tuple[Counter, list[str]]:
    """``Counter((batch, n))`` over the recorded exchanges, and their exchange ids."""
    seen: Counter = Counter()
    ids = []
    for x in gw.exchanges():
        q = parse_qs(urlsplit(x.url).query)
        seen[(q.get("batch", ["-"])[0], q.get("n", ["-"])[0])] += 1
        ids.append(x.exchange_id)
    return seen, ids


def test_redis_outage_fails_closed_keeps_serving_and_loses_nothing(make_gateway):
    gw = make_gateway(1)
    url = gw.worker_url()
    before = asyncio.run(load(f"{url}/api/json?size=300&batch=before", 20, 5, gw.headers()))
    assert {s for _, s in before} == {200}

    gw.redis.stop()
    # Allowed traffic goes on with the last good policy, still masked.
    during = asyncio.run(load(f"{url}/api/json?size=300&batch=during", 30, 5, gw.headers()))
    assert {s for _, s in during} == {200}
    r = httpx.get(f"{url}/api/json?size=300", headers=gw.headers())
    assert r.status_code == 200 and "[EMAIL]" in r.text
    assert not any(v in r.text for v in RAW_PII)
    # Denied stays denied; approval cannot be asked for: 503 JSON, fail closed.
    assert httpx.get(f"{url}/api/forbidden", headers=gw.headers()).status_code == 403
    held = httpx.get(f"{url}/api/json?hold=1&batch=held&n=0", headers=gw.headers(), timeout=15)
    assert held.status_code == 503
    assert held.json()["error"]["code"] == "approval_unavailable"
    assert held.headers["x-gatehouse-approval-id"]
    # A worker started during the outage has no policy: it refuses everything (503 JSON).
    gw.start_worker("w2")
    fresh = httpx.get(f"{gw.worker_url('w2')}/api/json", headers=gw.headers())
    assert fresh.status_code == 503 and fresh.json()["error"]["code"] == "policy_unavailable"
    gw.procs["w2"].stop()

    spool = gw.tmp / "spool" / "w1.jsonl"
    assert spool.exists() and len(spool.read_text().splitlines()) >= 31
    assert _metric(gw, "gatehouse_proxy_redis_up") == 0
    assert _metric(gw, "gatehouse_proxy_spool_bytes") > 0

    gw.redis.start()
    wait_until(lambda: not spool.exists() and not spool.with_suffix(".draining").exists(), 20)
    after = asyncio.run(load(f"{url}/api/json?size=300&batch=after", 10, 5, gw.headers()))
    assert {s for _, s in after} == {200}

    def complete():
        seen, _ = _batch_counts(gw)
        return sum(seen.values()) >= 20 + 30 + 1 + 10 and seen

    seen = wait_until(complete, 15)
    _, ids = _batch_counts(gw)
    expected = (
        {("before", str(i)) for i in range(20)}
        | {("during", str(i)) for i in range(30)}
        | {("held", "0")}
        | {("after", str(i)) for i in range(10)}
    )
    assert expected <= set(seen), f"lost: {sorted(expected - set(seen))}"
    assert all(seen[k] == 1 for k in expected), "duplicated: " + str(
        [k for k in expected if seen[k] != 1]
    )
    assert len(ids) == len(set(ids))
    assert wait_until(lambda: _metric(gw, "gatehouse_proxy_redis_up") == 1, 10)

"""Several workers behind HAProxy sharing one Redis; policy changes under load."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from proxy_worker.contract import DECISION_TTL_SECONDS, ApprovalRequestMessage, DecisionMessage
from tests.reliability.harness import HAPROXY, load, wait_until

pytestmark = pytest.mark.reliability


def _metric(gw, worker: str, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{gw.metrics_ports[worker]}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _decide(gw, approval_id: str, verdict: str) -> None:
    """What ``approvals.actions`` does on commit: store the decision key, then publish."""
    msg = DecisionMessage(approval_id, verdict, ["approver"], time.time(), comment="scale-out")
    r = gw.redis.client()
    r.set(gw.keys.decision(approval_id), msg.to_json(), ex=DECISION_TTL_SECONDS)
    r.publish(gw.keys.decisions_channel, msg.to_json())


def test_a_request_held_on_one_worker_is_released_while_others_serve(make_gateway):
    gw = make_gateway(2)
    base = gw.start_haproxy(["w1", "w2"]) if HAPROXY else gw.worker_url("w1")
    out: dict = {}

    def held() -> None:
        out["r"] = httpx.get(f"{base}/api/json?hold=1&size=300", headers=gw.headers(), timeout=30)

    t = threading.Thread(target=held)
    t.start()
    r = gw.redis.client()
    entries = wait_until(lambda: r.xrange(gw.keys.approvals_stream), 10)
    request = ApprovalRequestMessage.from_json(entries[0][1][b"data"])
    holder = request.worker_id
    assert _metric(gw, holder, "gatehouse_proxy_held_requests") == 1

    # Both workers serve traffic (through the balancer) while the request is held.
    results = asyncio.run(load(f"{base}/api/json?size=2048", 120, 8, gw.headers()))
    assert {s for _, s in results} == {200}
    served = {w: _metric(gw, w, "gatehouse_proxy_requests_total") for w in ("w1", "w2")}
    if HAPROXY:
        assert all(v >= 30 for v in served.values()), served
    assert t.is_alive()

    _decide(gw, request.approval_id, "approved")
    t.join(10)
    resp = out["r"]
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-gatehouse-approval-id"] == request.approval_id
    assert "[EMAIL]" in resp.text
    assert _metric(gw, holder, "gatehouse_proxy_held_requests") == 0
    assert _metric(gw, holder, "gatehouse_proxy_approval_wait_seconds_count") == 1
    approved = [x for x in gw.exchanges() if x.approval_id == request.approval_id]
    assert [(x.decision, x.worker_id) for x in approved] == [("approved", holder)]


def test_policy_changes_during_load_drop_no_request(make_gateway):
    gw = make_gateway(1)
    stop = threading.Event()
    versions: list[int] = []

    def churn() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            rule = {
                "id": 100 + i,
                "name": f"churn {i}",
                "target_id": 1,
                "agent_ids": None,
                "methods": ["DELETE"],
                "path_pattern": f"/churn-{i}*",
                "query_pattern": None,
                "body_pattern": None,
                "action": "deny",
                "approval_timeout": None,
                "reason": "",
            }
            versions.append(gw.publish(extra_rules=[rule]))
            time.sleep(0.1)

    t = threading.Thread(target=churn)
    t.start()
    try:
        results = asyncio.run(load(f"{gw.worker_url()}/api/json?size=2048", 400, 8, gw.headers()))
    finally:
        stop.set()
        t.join()
    assert len(versions) >= 5
    assert {s for _, s in results} == {200}, [s for _, s in results if s != 200][:5]

    # The last change is in force: a new deny rule applies at once.
    deny = {
        "id": 999,
        "name": "no echo",
        "target_id": 1,
        "agent_ids": None,
        "methods": [],
        "path_pattern": "/echo*",
        "query_pattern": None,
        "body_pattern": None,
        "action": "deny",
        "approval_timeout": None,
        "reason": "changed under load",
    }
    last = gw.publish(extra_rules=[deny])
    wait_until(lambda: _metric(gw, "w1", "gatehouse_proxy_policy_version") == last, 10)
    r = httpx.get(f"{gw.worker_url()}/api/echo", headers=gw.headers())
    assert r.status_code == 403 and r.json()["error"]["rule"]["name"] == "no echo"

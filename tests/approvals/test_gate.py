"""ApprovalGate with real Redis: wait, defer (exactly once across two workers), grants.

Two :class:`ControlPlaneLink` instances stand for two proxy workers sharing Redis.
Decisions are written the way the control plane writes them (key, then publish).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from mitmproxy.test import tflow

from proxy_worker.addons.approval_gate import (
    APPROVAL_URL_HEADER,
    GRANT_ID_HEADER,
    ApprovalGate,
)
from proxy_worker.contract import (
    SCHEMA_VERSION,
    ApprovalRequestMessage,
    DecisionMessage,
    Keys,
    WorkerHeartbeat,
)
from proxy_worker.flowstate import state_of
from proxy_worker.link import ControlPlaneLink
from proxy_worker.policy import request_info

DOC = {
    "v": SCHEMA_VERSION,
    "version": 5,
    "site_url": "http://gatehouse.test",
    "targets": [{"id": 1, "slug": "db", "upstream": "http://up.test", "approval_timeout": 30}],
    "agents": [{"id": 7, "name": "bot", "owner": "ann", "token_hashes": []}],
    "access_rules": [
        {
            "id": 1,
            "name": "deferred export",
            "target_id": 1,
            "path_pattern": "/defer*",
            "action": "approve",
            "approval_mode": "defer",
            "required_approvals": 2,
            "retry_window": 60,
            "reason": "exports need a human",
        },
        {
            "id": 2,
            "name": "held export",
            "target_id": 1,
            "path_pattern": "/wait*",
            "action": "approve",
            "approval_timeout": 2,
        },
    ],
    "grants": [
        {
            "id": 9,
            "agent_id": 7,
            "target_id": 1,
            "method": "GET",
            "path_pattern": "/wait/granted*",
            "expires_at": time.time() + 3600,
            "approval_id": None,
        }
    ],
}


def _link(tmp_path, name, url=None):
    link = ControlPlaneLink(
        redis_url=url or settings.REDIS_URL,
        keys=Keys(settings.REDIS_PREFIX),
        worker_id=name,
        worker_key=Fernet.generate_key(),
        masking_key=b"k" * 32,
        spool_dir=tmp_path / "spool",
        poll_interval=0.5,
    )
    link.install(DOC)
    return link


@pytest.fixture
async def links(tmp_path, redis_client):
    a, b = _link(tmp_path, "worker-a"), _link(tmp_path, "worker-b")
    yield a, b
    for link in (a, b):
        await link.stop()


def _flow(link, path="/defer/orders?x=1", body=b'{"q": 1}', method="GET"):
    f = tflow.tflow()
    f.request.method = method
    f.request.url = f"http://up.test{path}"
    f.request.content = body
    st = state_of(f)
    policy = link.state.policy
    st.agent = policy.agents_by_id[7]
    st.target = policy.targets_by_id[1]
    st.access = policy.evaluate(
        request_info(agent_id=7, target_id=1, method=method, upstream_path=path, body=body)
    )
    return f


def _stream(redis_client):
    entries = redis_client.xrange(Keys(settings.REDIS_PREFIX).approvals_stream)
    return [ApprovalRequestMessage.from_json(fields[b"data"]) for _, fields in entries]


def _decide(redis_client, approval_id, verdict, by=("ann",), decided_at=None, comment=""):
    k = Keys(settings.REDIS_PREFIX)
    msg = DecisionMessage(
        approval_id=approval_id,
        verdict=verdict,
        decided_by=list(by),
        decided_at=decided_at or time.time(),
        comment=comment,
    ).to_json()
    redis_client.set(k.decision(approval_id), msg, ex=3600)
    redis_client.publish(k.decisions_channel, msg)


def _error(flow):
    return json.loads(flow.response.content)["error"]


async def test_defer_answers_at_once_then_one_identical_retry_passes(links, redis_client):
    a, b = links
    gate_a, gate_b = ApprovalGate(a), ApprovalGate(b)

    first = _flow(a)
    await gate_a.request(first)
    assert first.response.status_code == 403
    err = _error(first)
    approval_id = err["approval_id"]
    assert err["code"] == "approval_pending" and err["required_approvals"] == 2
    assert err["approval_url"] == f"http://gatehouse.test/approvals/{approval_id}/"
    assert first.response.headers["X-Gatehouse-Approval-Id"] == approval_id
    assert first.response.headers[APPROVAL_URL_HEADER] == err["approval_url"]
    assert 1 <= int(first.response.headers["Retry-After"]) <= 5
    (msg,) = _stream(redis_client)
    assert (msg.approval_id, msg.mode, msg.required_approvals) == (approval_id, "defer", 2)
    assert msg.retry_window == 60 and msg.reason == "exports need a human"

    # Retrying before the decision (on any worker) names the same request; nothing new.
    again = _flow(b)
    await gate_b.request(again)
    assert _error(again)["code"] == "approval_pending"
    assert _error(again)["approval_id"] == approval_id
    assert len(_stream(redis_client)) == 1

    _decide(redis_client, approval_id, "approved", by=("ann", "bob"))
    racers = [_flow(a), _flow(b), _flow(a), _flow(b)]
    await asyncio.gather(
        *(ApprovalGate(a if i % 2 == 0 else b).request(f) for i, f in enumerate(racers))
    )
    passed = [f for f in racers if f.response is None]
    assert len(passed) == 1, "exactly one identical retry passes, across workers"
    assert state_of(passed[0]).decision == "approved"
    assert state_of(passed[0]).approval_id == approval_id
    # The others (and any later retry) ask anew: one new request, shared by them.
    others = {_error(f)["approval_id"] for f in racers if f.response is not None}
    assert len(others) == 1 and approval_id not in others
    assert len(_stream(redis_client)) == 2


async def test_defer_covers_the_body_and_the_query(links, redis_client):
    a, _ = links
    gate = ApprovalGate(a)
    one, two, three = _flow(a), _flow(a, body=b'{"q": 2}'), _flow(a, path="/defer/orders?x=2")
    for f in (one, two, three):
        await gate.request(f)
    ids = {_error(f)["approval_id"] for f in (one, two, three)}
    assert len(ids) == 3 and len(_stream(redis_client)) == 3
    _decide(redis_client, _error(one)["approval_id"], "approved")
    other = _flow(a, body=b'{"q": 2}')
    await gate.request(other)
    assert other.response is not None  # approving one body does not let another through


async def test_defer_denied_says_who_then_forgets(links, redis_client):
    a, _ = links
    gate = ApprovalGate(a)
    first = _flow(a)
    await gate.request(first)
    approval_id = _error(first)["approval_id"]
    _decide(redis_client, approval_id, "denied", by=("bob",), comment="not today")
    retry = _flow(a)
    await gate.request(retry)
    err = _error(retry)
    assert retry.response.status_code == 403
    assert err["code"] == "approval_denied" and err["decided_by"] == ["bob"]
    assert err["comment"] == "not today" and "by bob" in err["message"]
    assert state_of(retry).decision == "approval_denied"
    later = _flow(a)
    await gate.request(later)
    assert _error(later)["code"] == "approval_pending"
    assert _error(later)["approval_id"] != approval_id


async def test_defer_window_lapses(links, redis_client):
    a, _ = links
    gate = ApprovalGate(a)
    first = _flow(a)
    await gate.request(first)
    approval_id = _error(first)["approval_id"]
    _decide(redis_client, approval_id, "approved", decided_at=time.time() - 61)
    retry = _flow(a)
    await gate.request(retry)
    assert _error(retry)["code"] == "approval_pending"
    assert _error(retry)["approval_id"] != approval_id


async def test_wait_mode_holds_until_the_decision(links, redis_client):
    a, _ = links
    await a.start()
    gate = ApprovalGate(a)
    flow = _flow(a, path="/wait/orders")
    task = asyncio.create_task(gate.request(flow))
    for _ in range(50):
        if _stream(redis_client):
            break
        await asyncio.sleep(0.05)
    (msg,) = _stream(redis_client)
    assert msg.mode == "wait" and msg.required_approvals == 1
    assert a.held_count == 1 and not task.done()
    await a.beat()
    hb = WorkerHeartbeat.from_json(
        redis_client.get(Keys(settings.REDIS_PREFIX).worker_heartbeat("worker-a"))
    )
    assert hb.held == [msg.approval_id]
    _decide(redis_client, msg.approval_id, "approved")
    await asyncio.wait_for(task, 5)
    assert flow.response is None and state_of(flow).decision == "approved"
    assert a.held_count == 0
    flow.response = tflow.tresp()
    gate.responseheaders(flow)
    assert flow.response.headers["X-Gatehouse-Approval-Id"] == msg.approval_id


async def test_wait_mode_stops_at_the_deadline(links, redis_client):
    a, _ = links
    await a.start()
    flow = _flow(a, path="/wait/orders")
    t0 = time.monotonic()
    await ApprovalGate(a).request(flow)
    assert 1.5 < time.monotonic() - t0 < 4
    err = _error(flow)
    assert flow.response.status_code == 403 and err["code"] == "approval_expired"
    assert flow.response.headers["X-Gatehouse-Approval-Id"] == err["approval_id"]


async def test_a_grant_passes_without_asking(links, redis_client):
    a, _ = links
    flow = _flow(a, path="/wait/granted/1")
    assert flow.metadata["gatehouse"].access.grant.id == 9
    await ApprovalGate(a).request(flow)
    assert flow.response is None and state_of(flow).decision == "approved"
    assert _stream(redis_client) == []
    flow.response = tflow.tresp()
    ApprovalGate(a).responseheaders(flow)
    assert flow.response.headers[GRANT_ID_HEADER] == "9"


@pytest.mark.parametrize("path", ["/defer/x", "/wait/x"])
async def test_it_fails_closed_without_redis(tmp_path, path):
    link = _link(tmp_path, "worker-down", url="redis://127.0.0.1:9/0")
    try:
        flow = _flow(link, path=path)
        await ApprovalGate(link).request(flow)
        assert flow.response.status_code == 503
        assert _error(flow)["code"] == "approval_unavailable"
    finally:
        await link.stop()

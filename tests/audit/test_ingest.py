"""Ingest from the real Redis streams into PostgreSQL: idempotent, sessions, bad entries."""

from __future__ import annotations

import time
import uuid

import pytest

from audit.ingest import Ingestor
from audit.models import Exchange, IngestError, Session
from controlplane.redis import keys
from proxy_worker.contract import INGEST_GROUP, ExchangeMessage

pytestmark = pytest.mark.django_db


def _exchange(policy, *, at: float, session_key: str = "", **kw) -> ExchangeMessage:
    base = dict(
        exchange_id=str(uuid.uuid4()),
        worker_id="w1",
        started_at=at,
        agent_id=policy.agent.id,
        target_id=policy.target.id,
        session_key=session_key,
        client_address="127.0.0.1",
        method="GET",
        url="http://127.0.0.1:9/x",
        request_headers={"authorization": "[REDACTED]"},
        request_body="",
        status_code=200,
        response_headers={},
        response_body='{"email":"[EMAIL]"}',
        decision="allowed",
        response_findings=[{"type": "EMAIL", "location": "$.email", "count": 1}],
    )
    base.update(kw)
    return ExchangeMessage(**base)


@pytest.fixture
def ingestor(redis_client):
    ing = Ingestor(consumer="test", block_ms=10)
    ing.ensure_groups()
    return ing


def _xadd(r, msg):
    r.xadd(keys().exchanges_stream, {"data": msg.to_json()})


def test_it_stores_exchanges_and_acknowledges_them(policy, ingestor, redis_client):
    msg = _exchange(policy, at=time.time())
    _xadd(redis_client, msg)
    assert ingestor.step() >= 1
    x = Exchange.objects.get(pk=msg.exchange_id)
    assert x.response_findings[0]["type"] == "EMAIL" and x.agent == policy.agent
    pending = redis_client.xpending(keys().exchanges_stream, INGEST_GROUP)
    assert pending["pending"] == 0


def test_it_is_idempotent_on_the_exchange_id(policy, ingestor, redis_client):
    msg = _exchange(policy, at=time.time())
    _xadd(redis_client, msg)
    _xadd(redis_client, msg)  # a spool drain repeated after a crash
    ingestor.step()
    ingestor.step()
    assert Exchange.objects.count() == 1
    assert Session.objects.get().exchange_count == 1


def test_it_rereads_its_pending_entries_after_a_crash(policy, redis_client):
    k = keys()
    first = Ingestor(consumer="c1", block_ms=10)
    first.ensure_groups()
    msg = _exchange(policy, at=time.time())
    _xadd(redis_client, msg)
    # Read but never stored nor acknowledged: the process died mid-batch.
    redis_client.xreadgroup(INGEST_GROUP, "c1", {k.exchanges_stream: ">"}, count=10)
    restarted = Ingestor(consumer="c1", block_ms=10)
    restarted.step()
    assert Exchange.objects.filter(pk=msg.exchange_id).exists()


def test_another_consumer_claims_abandoned_entries(policy, redis_client):
    k = keys()
    Ingestor(consumer="dead", block_ms=10).ensure_groups()
    msg = _exchange(policy, at=time.time())
    _xadd(redis_client, msg)
    redis_client.xreadgroup(INGEST_GROUP, "dead", {k.exchanges_stream: ">"}, count=10)
    other = Ingestor(consumer="alive", block_ms=10, claim_idle_ms=0)
    assert other.claim_abandoned() == 1
    other.step()
    assert Exchange.objects.filter(pk=msg.exchange_id).exists()


def test_it_groups_sessions_by_idle_gap_and_by_key(policy, ingestor, redis_client, settings):
    t0 = time.time() - 3600
    for at in (t0, t0 + 10, t0 + 20, t0 + 20 + 301, t0 + 330):
        _xadd(redis_client, _exchange(policy, at=at))
    for at in (t0, t0 + 2000):
        _xadd(redis_client, _exchange(policy, at=at, session_key="job-42"))
    ingestor.step()
    counts = sorted(Session.objects.values_list("key", "exchange_count"))
    assert counts == [("", 2), ("", 3), ("job-42", 2)]


def test_it_keeps_unreadable_entries(policy, ingestor, redis_client):
    redis_client.xadd(keys().exchanges_stream, {"data": "{not json"})
    redis_client.xadd(keys().exchanges_stream, {"other": "x"})
    good = _exchange(policy, at=time.time())
    _xadd(redis_client, good)
    ingestor.step()
    assert IngestError.objects.count() == 2
    assert Exchange.objects.filter(pk=good.exchange_id).exists()


def test_it_nulls_references_to_deleted_objects(policy, ingestor, redis_client):
    msg = _exchange(policy, at=time.time(), agent_id=999999, rule_id=424242)
    _xadd(redis_client, msg)
    ingestor.step()
    x = Exchange.objects.get(pk=msg.exchange_id)
    assert x.agent_id is None and x.rule_id is None and x.session is None


def test_it_creates_approval_requests_from_the_approvals_stream(policy, ingestor, redis_client):
    from approvals.models import ApprovalRequest
    from proxy_worker.contract import ApprovalRequestMessage

    now = time.time()
    msg = ApprovalRequestMessage(
        approval_id=str(uuid.uuid4()),
        worker_id="w",
        agent_id=policy.agent.id,
        target_id=policy.target.id,
        rule_id=policy.approve_rule.id,
        method="GET",
        url="http://x/export",
        headers={},
        body="",
        body_truncated=False,
        requested_at=now,
        deadline=now + 30,
    )
    redis_client.xadd(keys().approvals_stream, {"data": msg.to_json()})
    redis_client.xadd(keys().approvals_stream, {"data": msg.to_json()})
    ingestor.step()
    assert ApprovalRequest.objects.get().rule == policy.approve_rule

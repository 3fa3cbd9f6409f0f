"""GET /metrics: bearer token or admin role; stream, ingest and approval figures."""

from __future__ import annotations

import pytest
from django.test import override_settings

from proxy_worker.contract import INGEST_GROUP

pytestmark = pytest.mark.django_db

TOKEN = "metrics-test-token-0123456789"


def _held_request(policy) -> None:
    """One pending approval request, created through the real action."""
    import time
    import uuid

    from approvals.actions import do_create_approval_request
    from proxy_worker.contract import ApprovalRequestMessage

    now = time.time()
    do_create_approval_request(
        ApprovalRequestMessage(
            approval_id=str(uuid.uuid4()),
            worker_id="w1",
            agent_id=policy.agent.id,
            target_id=policy.target.id,
            rule_id=policy.approve_rule.id,
            method="GET",
            url="http://127.0.0.1:9/export",
            headers={},
            body="",
            body_truncated=False,
            requested_at=now,
            deadline=now + 60,
        )
    )


def test_it_asks_anonymous_scrapers_to_authenticate(client):
    resp = client.get("/metrics")
    assert resp.status_code == 401 and resp["WWW-Authenticate"].startswith("Bearer")


@override_settings(GATEHOUSE_METRICS_TOKEN=TOKEN)
@pytest.mark.parametrize("header", ["Bearer wrong", "Basic " + TOKEN, "Bearer "])
def test_it_refuses_a_wrong_token(client, header):
    assert client.get("/metrics", HTTP_AUTHORIZATION=header).status_code == 403


@override_settings(GATEHOUSE_METRICS_TOKEN="")
def test_no_token_is_accepted_when_none_is_configured(client):
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


@pytest.mark.parametrize("who", ["approver", "auditor", "outsider"])
def test_it_refuses_users_without_the_admin_role(client, users, who):
    client.force_login(users[who])
    assert client.get("/metrics").status_code == 403


def test_it_refuses_post(client, users):
    client.force_login(users["admin"])
    assert client.post("/metrics").status_code == 405


@override_settings(GATEHOUSE_METRICS_TOKEN=TOKEN)
def test_it_reports_streams_ingest_lag_and_approvals(client, users, redis_client, policy):
    from controlplane.redis import keys

    k = keys()
    redis_client.xgroup_create(k.exchanges_stream, INGEST_GROUP, id="0", mkstream=True)
    for i in range(3):
        redis_client.xadd(k.exchanges_stream, {"data": str(i)})
    redis_client.xreadgroup(INGEST_GROUP, "c1", {k.exchanges_stream: ">"}, count=1)
    _held_request(policy)
    resp = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/plain")
    text = resp.content.decode()
    assert 'gatehouse_stream_length{stream="exchanges"} 3.0' in text
    assert 'gatehouse_ingest_pending{stream="exchanges"} 1.0' in text
    assert 'gatehouse_ingest_lag_entries{stream="exchanges"} 3.0' in text
    lag = next(
        ln
        for ln in text.splitlines()
        if ln.startswith('gatehouse_ingest_lag_seconds{stream="exchanges"}')
    )
    assert 0 <= float(lag.split()[-1]) < 60
    assert "gatehouse_approval_requests_pending 1.0" in text
    assert "gatehouse_redis_up 1.0" in text and "gatehouse_database_up 1.0" in text
    client.force_login(users["admin"])
    assert client.get("/metrics").status_code == 200

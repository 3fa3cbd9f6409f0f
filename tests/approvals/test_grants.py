"""Grants: matching (pure, worker side), issuing on approval, snapshot, revocation, pages."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals.actions import do_decide, do_revoke_grant
from approvals.models import Grant
from controlplane.redis import keys
from controlplane.snapshot import compile_snapshot
from proxy_worker.contract import SCHEMA_VERSION
from proxy_worker.policy import Policy, request_info

NOW = 1_800_000_000.0


def _doc(grants):
    return {
        "v": SCHEMA_VERSION,
        "version": 2,
        "targets": [
            {"id": 1, "slug": "db", "upstream": "http://up", "approval_timeout": 60},
            {"id": 2, "slug": "other", "upstream": "http://up2"},
        ],
        "agents": [{"id": 7, "name": "bot", "token_hashes": []}],
        "access_rules": [
            {
                "id": 1,
                "name": "no drop",
                "target_id": 1,
                "path_pattern": "/drop*",
                "action": "deny",
            },
            {"id": 2, "name": "exports", "target_id": 1, "path_pattern": "*", "action": "approve"},
        ],
        "grants": grants,
    }


GRANT = {
    "id": 5,
    "agent_id": 7,
    "target_id": 1,
    "method": "GET",
    "path_pattern": "/export/*",
    "expires_at": NOW + 600,
    "approval_id": "a1",
}


def _info(method="GET", path="/export/orders.json", agent_id=7, target_id=1):
    return request_info(
        agent_id=agent_id, target_id=target_id, method=method, upstream_path=path, body=b""
    )


@pytest.mark.parametrize(
    "info, now, granted",
    [
        (_info(), NOW, True),
        (_info(path="/export/a/b.json?x=1"), NOW, True),
        (_info(method="get"), NOW, True),
        (_info(method="POST"), NOW, False),  # other method
        (_info(path="/exports.json"), NOW, False),  # other path
        (_info(agent_id=8), NOW, False),  # other agent
        (_info(target_id=2), NOW, False),  # other target (whose default is allow anyway)
        (_info(), NOW + 600, False),  # expired by the worker's own clock
        (_info(), NOW + 599.9, True),
    ],
)
def test_grant_matching(info, now, granted):
    policy = Policy.from_document(_doc([GRANT]))
    decision = policy.evaluate(info, now=now)
    if info.target_id == 2:
        assert decision.action == "allow" and decision.grant is None
        return
    assert decision.action == "approve"
    assert (decision.grant is not None) is granted
    if granted:
        assert decision.grant.id == 5 and decision.grant.approval_id == "a1"


def test_a_grant_never_lifts_a_deny():
    policy = Policy.from_document(_doc([{**GRANT, "path_pattern": "*"}]))
    decision = policy.evaluate(_info(path="/drop/table"), now=NOW)
    assert decision.action == "deny" and decision.grant is None


def test_an_empty_method_grants_any_method():
    policy = Policy.from_document(_doc([{**GRANT, "method": ""}]))
    assert policy.evaluate(_info(method="DELETE"), now=NOW).grant is not None


def test_the_fingerprint_covers_the_raw_request():
    base = dict(agent_id=7, target_id=1, method="GET", body=b"{}")
    a = request_info(upstream_path="/x?q=a%26b", **base).fingerprint
    assert a == request_info(upstream_path="/x?q=a%26b", **base).fingerprint
    assert a != request_info(upstream_path="/x?q=a&b", **base).fingerprint
    assert a != request_info(upstream_path="/x?q=a%26b", **{**base, "body": b"{ }"}).fingerprint
    assert a != request_info(upstream_path="/x?q=a%26b", **{**base, "method": "POST"}).fingerprint
    assert a != request_info(upstream_path="/x?q=a%26b", **{**base, "agent_id": 8}).fingerprint


# Transactional: the publish must really happen on commit (not be merged into the
# fixture's pending one, as it would inside the test's wrapping transaction).
@pytest.mark.django_db(transaction=True)
def test_approve_with_grant_issues_a_grant_and_publishes_it(
    users, policy, make_request, redis_client
):
    req = make_request(url="http://127.0.0.1:9/export/orders.json?sql=x")
    do_decide(
        req,
        acting_user=users["approver"],
        verdict="approve",
        grant_minutes=15,
        grant_path_pattern="/export/*",
    )
    grant = Grant.objects.get()
    assert (grant.agent, grant.target, grant.method, grant.path_pattern) == (
        policy.agent,
        policy.target,
        "GET",
        "/export/*",
    )
    assert grant.approval_request_id == req.id and grant.created_by == users["approver"]
    left = (grant.expires_at - timezone.now()).total_seconds()
    assert 14 * 60 < left <= 15 * 60
    doc = json.loads(redis_client.get(keys().policy_snapshot))
    (compiled,) = doc["grants"]
    assert compiled["id"] == grant.id and compiled["path_pattern"] == "/export/*"
    assert abs(compiled["expires_at"] - grant.expires_at.timestamp()) < 1e-3
    # ...and the worker's policy honours it.
    worker = Policy.from_document(doc)
    info = request_info(
        agent_id=policy.agent.id,
        target_id=policy.target.id,
        method="GET",
        upstream_path="/export/customers.json",
        body=b"",
    )
    assert worker.evaluate(info).grant.id == grant.id


@pytest.mark.django_db
def test_the_default_grant_covers_exactly_the_path(users, make_request):
    req = make_request(url="http://127.0.0.1:9/export[1]*.json?x=1")
    do_decide(req, acting_user=users["approver"], verdict="approve", grant_minutes=5)
    grant = Grant.objects.get()
    assert grant.path_pattern == "/export[[]1][*].json"
    policy = Policy.from_document(
        _doc([{**GRANT, "path_pattern": grant.path_pattern, "expires_at": time.time() + 60}])
    )
    assert policy.evaluate(_info(path="/export[1]*.json")).grant is not None
    assert policy.evaluate(_info(path="/export1x.json")).grant is None


@pytest.mark.django_db
def test_a_grant_needs_every_approver_to_ask_for_it(users, make_request):
    req = make_request(required_approvals=2)
    do_decide(req, acting_user=users["approver"], verdict="approve", grant_minutes=60)
    do_decide(req, acting_user=users["approver2"], verdict="approve")
    assert not Grant.objects.exists()
    req = make_request(required_approvals=2)
    do_decide(req, acting_user=users["approver"], verdict="approve", grant_minutes=60)
    do_decide(req, acting_user=users["approver2"], verdict="approve", grant_minutes=5)
    grant = Grant.objects.get()
    assert (grant.expires_at - timezone.now()).total_seconds() <= 5 * 60  # the shortest


# Transactional: the publish must really happen on commit (not be merged into the
# fixture's pending one, as it would inside the test's wrapping transaction).
@pytest.mark.django_db(transaction=True)
def test_revoking_republishes_at_once(users, policy, make_request, redis_client):
    req = make_request()
    do_decide(req, acting_user=users["approver"], verdict="approve", grant_minutes=15)
    grant = Grant.objects.get()
    assert len(json.loads(redis_client.get(keys().policy_snapshot))["grants"]) == 1
    assert do_revoke_grant(grant, acting_user=users["approver2"])
    assert grant.status == "revoked" and grant.revoked_by == users["approver2"]
    assert json.loads(redis_client.get(keys().policy_snapshot))["grants"] == []
    assert not do_revoke_grant(grant, acting_user=users["approver"])  # once


@pytest.mark.django_db
def test_expired_grants_leave_the_snapshot(users, policy):
    Grant.objects.create(
        agent=policy.agent,
        target=policy.target,
        method="GET",
        path_pattern="/x",
        created_by=users["approver"],
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    assert compile_snapshot(9)["grants"] == []


@pytest.mark.django_db
def test_the_grants_page_lists_and_revokes(client, users, policy, payments_group, make_request):
    req = make_request()
    do_decide(req, acting_user=users["approver"], verdict="approve", grant_minutes=15)
    grant = Grant.objects.get()
    client.force_login(users["approver"])
    page = client.get(reverse("approvals:grants")).content.decode()
    assert f'id="grant-{grant.id}" data-status="active"' in page
    assert client.get(reverse("approvals:revoke_grant", args=[grant.id])).status_code == 405
    # An approver outside the request's group neither sees nor revokes it.
    policy.approve_rule.approver_group = payments_group
    policy.approve_rule.save()
    client.force_login(users["approver2"])
    assert f"grant-{grant.id}" not in client.get(reverse("approvals:grants")).content.decode()
    assert client.post(reverse("approvals:revoke_grant", args=[grant.id])).status_code == 403
    assert client.post(reverse("approvals:revoke_grant", args=[grant.id + 99])).status_code == 404
    client.force_login(users["auditor"])
    assert client.get(reverse("approvals:grants")).status_code == 403
    client.force_login(users["approver"])
    r = client.post(reverse("approvals:revoke_grant", args=[grant.id]))
    assert r.status_code == 302
    grant.refresh_from_db()
    assert grant.revoked_at is not None
    page = client.get(reverse("approvals:grants")).content.decode()
    assert f'id="grant-{grant.id}" data-status="revoked"' in page

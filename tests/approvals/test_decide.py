"""The approver's pages and the decide action (real PostgreSQL and Redis)."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from approvals.models import ApprovalRequest, Decision
from controlplane.redis import keys

pytestmark = pytest.mark.django_db


def _login(client, user):
    client.force_login(user)
    return client


def test_it_lists_pending_requests_for_approvers(client, users, make_request):
    req = make_request()
    r = _login(client, users["approver"]).get(reverse("approvals:queue"))
    assert r.status_code == 200
    assert f'id="approval-{req.id}"' in r.content.decode()


@pytest.mark.parametrize("who, status", [("auditor", 403), ("outsider", 403), ("admin", 403)])
def test_it_refuses_users_without_the_approver_role(client, users, make_request, who, status):
    req = make_request()
    c = _login(client, users[who])
    assert c.get(reverse("approvals:queue")).status_code == status
    assert c.get(reverse("approvals:detail", args=[req.id])).status_code == status
    assert (
        c.post(reverse("approvals:decide", args=[req.id]), {"verdict": "approve"}).status_code
        == status
    )


def test_it_sends_anonymous_users_to_sign_in(client, make_request):
    req = make_request()
    for url in (reverse("approvals:queue"), reverse("approvals:detail", args=[req.id])):
        r = client.get(url)
        assert r.status_code == 302 and r["Location"].startswith("/accounts/login/")


def test_it_refuses_the_wrong_method(client, users, make_request):
    req = make_request()
    c = _login(client, users["approver"])
    assert c.get(reverse("approvals:decide", args=[req.id])).status_code == 405
    assert c.post(reverse("approvals:queue")).status_code == 405


def test_it_shows_the_masked_request_escaped(client, users, make_request):
    req = make_request(body='{"note": "<script>alert(1)</script>"}')
    r = _login(client, users["approver"]).get(reverse("approvals:detail", args=[req.id]))
    html = r.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_it_approves_and_tells_the_workers(
    client, users, make_request, redis_client, django_capture_on_commit_callbacks
):
    req = make_request()
    k = keys()
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(k.decisions_channel)
    pubsub.get_message(timeout=0.5)
    c = _login(client, users["approver"])
    with django_capture_on_commit_callbacks(execute=True):
        r = c.post(
            reverse("approvals:decide", args=[req.id]),
            {"verdict": "approve", "comment": "ok for the audit"},
        )
    assert r.status_code == 302
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.APPROVED and req.decided_at
    d = Decision.objects.get()
    assert (d.user, d.verdict, d.comment) == (users["approver"], "approve", "ok for the audit")
    stored = json.loads(redis_client.get(k.decision(str(req.id))))
    assert stored["verdict"] == "approved" and stored["decided_by"] == ["approver"]
    msg = pubsub.get_message(timeout=2)
    assert json.loads(msg["data"])["approval_id"] == str(req.id)


def test_it_denies(client, users, make_request, redis_client, django_capture_on_commit_callbacks):
    req = make_request()
    with django_capture_on_commit_callbacks(execute=True):
        _login(client, users["approver"]).post(
            reverse("approvals:decide", args=[req.id]), {"verdict": "deny"}
        )
    req.refresh_from_db()
    assert req.status == "denied"
    assert json.loads(redis_client.get(keys().decision(str(req.id))))["verdict"] == "denied"


def test_it_answers_htmx_with_the_updated_row(
    client, users, make_request, redis_client, django_capture_on_commit_callbacks
):
    req = make_request()
    with django_capture_on_commit_callbacks(execute=True):
        r = _login(client, users["approver"]).post(
            reverse("approvals:decide", args=[req.id]),
            {"verdict": "approve"},
            HTTP_HX_REQUEST="true",
        )
    assert r.status_code == 200
    assert 'data-status="approved"' in r.content.decode()


def test_an_owner_cannot_decide_on_their_agents_requests(client, users, make_request):
    users["admin"].groups.add(users["approver"].groups.get())  # admin owns the agent
    req = make_request()
    r = _login(client, users["admin"]).post(
        reverse("approvals:decide", args=[req.id]), {"verdict": "approve"}
    )
    assert r.status_code == 403
    req.refresh_from_db()
    assert req.status == "pending"


def test_it_refuses_decisions_after_the_deadline(client, users, make_request):
    req = make_request(deadline_in=-1)
    r = _login(client, users["approver"]).post(
        reverse("approvals:decide", args=[req.id]), {"verdict": "approve"}
    )
    assert r.status_code == 403


def test_it_refuses_a_second_decision(
    client, users, make_request, redis_client, django_capture_on_commit_callbacks
):
    req = make_request()
    c = _login(client, users["approver"])
    with django_capture_on_commit_callbacks(execute=True):
        c.post(reverse("approvals:decide", args=[req.id]), {"verdict": "approve"})
    r = _login(client, users["approver2"]).post(
        reverse("approvals:decide", args=[req.id]), {"verdict": "deny"}
    )
    assert r.status_code == 403
    req.refresh_from_db()
    assert req.status == "approved"


def test_it_rejects_an_unknown_verdict(client, users, make_request):
    req = make_request()
    r = _login(client, users["approver"]).post(
        reverse("approvals:decide", args=[req.id]), {"verdict": "maybe"}
    )
    assert r.status_code == 400


def test_it_does_not_disclose_unknown_ids(client, users):
    import uuid

    r = _login(client, users["approver"]).get(reverse("approvals:detail", args=[uuid.uuid4()]))
    assert r.status_code == 404


def test_it_enforces_csrf_on_decisions(users, make_request):
    from django.test import Client

    req = make_request()
    c = Client(enforce_csrf_checks=True)
    c.force_login(users["approver"])
    r = c.post(reverse("approvals:decide", args=[req.id]), {"verdict": "approve"})
    assert r.status_code == 403
    req.refresh_from_db()
    assert req.status == "pending"


def test_the_sweep_expires_overdue_requests(
    make_request, redis_client, django_capture_on_commit_callbacks
):
    from approvals.tasks import expire_approval_requests

    late = make_request(deadline_in=-1)
    fresh = make_request(deadline_in=60)
    with django_capture_on_commit_callbacks(execute=True):
        assert expire_approval_requests() == 1
    late.refresh_from_db()
    fresh.refresh_from_db()
    assert (late.status, fresh.status) == ("expired", "pending")
    assert json.loads(redis_client.get(keys().decision(str(late.id))))["verdict"] == "expired"
    assert expire_approval_requests() == 0

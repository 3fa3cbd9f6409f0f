"""Thresholds and ownership: N distinct approvers, one deny ends it, owners never decide."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from approvals.actions import do_decide
from approvals.models import ApprovalRequest, Decision
from approvals.permissions import decide_refusal
from controlplane.redis import keys

pytestmark = pytest.mark.django_db


@pytest.fixture
def approver3(users):
    user = User.objects.create_user("approver3", password="pw-approver3")
    user.groups.add(Group.objects.get(name="approver"))
    return user


def _decision_key(redis_client, req):
    raw = redis_client.get(keys().decision(str(req.id)))
    return json.loads(raw) if raw else None


def test_it_needs_n_distinct_approvers(
    users, approver3, make_request, redis_client, django_capture_on_commit_callbacks
):
    req = make_request(required_approvals=2)
    assert req.required_approvals == 2
    with django_capture_on_commit_callbacks(execute=True):
        req = do_decide(req, acting_user=users["approver"], verdict="approve", comment="one")
    assert req.status == ApprovalRequest.Status.PENDING
    assert _decision_key(redis_client, req) is None  # workers hear nothing until settled
    # The same person approving again changes nothing.
    with django_capture_on_commit_callbacks(execute=True):
        req = do_decide(req, acting_user=users["approver"], verdict="approve")
    assert req.status == ApprovalRequest.Status.PENDING and req.decisions.count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        req = do_decide(req, acting_user=users["approver2"], verdict="approve", comment="two")
    assert req.status == ApprovalRequest.Status.APPROVED and req.decided_at
    decision = _decision_key(redis_client, req)
    assert decision["verdict"] == "approved"
    assert decision["decided_by"] == ["approver", "approver2"]
    # Settled: a third approver's click records nothing.
    do_decide(req, acting_user=approver3, verdict="deny")
    assert req.decisions.count() == 2


def test_one_deny_ends_it_even_after_approvals(
    users, approver3, make_request, redis_client, django_capture_on_commit_callbacks
):
    req = make_request(required_approvals=3)
    with django_capture_on_commit_callbacks(execute=True):
        do_decide(req, acting_user=users["approver"], verdict="approve")
        do_decide(req, acting_user=users["approver2"], verdict="approve")
        req = do_decide(req, acting_user=approver3, verdict="deny", comment="too broad")
    assert req.status == ApprovalRequest.Status.DENIED
    decision = _decision_key(redis_client, req)
    assert decision["verdict"] == "denied"
    assert decision["decided_by"] == ["approver3"] and decision["comment"] == "too broad"


def test_nothing_is_recorded_past_the_deadline(users, make_request):
    req = make_request(deadline_in=-1)
    req = do_decide(req, acting_user=users["approver"], verdict="approve")
    assert req.status == ApprovalRequest.Status.PENDING
    assert not Decision.objects.exists()


@pytest.mark.parametrize(
    "who, refusal",
    [
        ("owner", "you own this agent: another approver must decide"),
        ("auditor", "you are not an approver for this target"),
        ("approver", None),
    ],
)
def test_refusals(users, policy, make_request, who, refusal):
    owner = users["approver2"]
    policy.agent.owner = owner
    policy.agent.save()
    req = make_request()
    user = owner if who == "owner" else users[who]
    assert decide_refusal(user, req) == refusal


def test_an_owner_cannot_decide_through_the_page(client, users, policy, make_request):
    policy.agent.owner = users["approver"]
    policy.agent.save()
    req = make_request()
    client.force_login(users["approver"])
    r = client.post(reverse("approvals:decide", args=[req.id]), {"verdict": "approve"})
    assert r.status_code == 403
    assert not Decision.objects.exists()
    page = client.get(reverse("approvals:detail", args=[req.id])).content.decode()
    assert "you own this agent" in page and 'value="approve"' not in page


def test_the_page_shows_progress_and_refuses_a_second_vote(client, users, make_request):
    req = make_request(required_approvals=2)
    client.force_login(users["approver"])
    r = client.post(
        reverse("approvals:decide", args=[req.id]),
        {"verdict": "approve", "comment": "fine"},
        HTTP_HX_REQUEST="true",
    )
    assert r.status_code == 200
    html = r.content.decode()
    assert 'data-approvals="1"' in html and "1 of 2" in html and "(approver)" in html
    assert "you have already decided" in html
    r = client.post(reverse("approvals:decide", args=[req.id]), {"verdict": "approve"})
    assert r.status_code == 403
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING


@pytest.mark.parametrize(
    "data",
    [
        {"verdict": "maybe"},
        {"verdict": "grant", "grant_minutes": "7"},  # not an offered duration
        {"verdict": "grant", "grant_minutes": "15", "grant_path_pattern": "export*"},
        {"verdict": "approve", "comment": "x" * 2001},
    ],
)
def test_it_rejects_invalid_decisions(client, users, make_request, data):
    req = make_request()
    client.force_login(users["approver"])
    r = client.post(reverse("approvals:decide", args=[req.id]), data)
    assert r.status_code == 400
    assert not Decision.objects.exists()

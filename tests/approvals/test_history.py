"""The history page and its filters (a Django form over GET parameters)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals.actions import do_decide
from approvals.models import ApprovalRequest
from controlplane.models import Agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows(users, policy, make_request):
    other = Agent.objects.create(name="agent-2")
    approved = make_request()
    do_decide(approved, acting_user=users["approver"], verdict="approve")
    denied = make_request(agent=other)
    do_decide(denied, acting_user=users["approver2"], verdict="deny")
    pending = make_request()
    old = make_request()
    ApprovalRequest.objects.filter(pk=old.pk).update(
        requested_at=timezone.now() - timedelta(days=3)
    )
    return {"approved": approved, "denied": denied, "pending": pending, "old": old, "agent2": other}


@pytest.mark.parametrize(
    "params, expected",
    [
        ({}, {"approved", "denied", "pending", "old"}),
        ({"status": "approved"}, {"approved"}),
        ({"status": "pending"}, {"pending", "old"}),
        ({"approver": "approver2"}, {"denied"}),
        ({"agent": "agent2"}, {"denied"}),
        ({"since": "recent"}, {"approved", "denied", "pending"}),
        ({"until": "recent"}, {"old"}),
    ],
)
def test_it_filters(client, users, policy, rows, params, expected):
    client.force_login(users["approver"])
    query = dict(params)
    if "approver" in query:
        query["approver"] = users[query["approver"]].pk
    if "agent" in query:
        query["agent"] = rows["agent2"].pk
    cut = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    for key in ("since", "until"):
        if key in query:
            query[key] = cut
    html = client.get(reverse("approvals:history"), query).content.decode()
    names = ("approved", "denied", "pending", "old")
    shown = {name for name in names if str(rows[name].id) in html}
    assert shown == expected


def test_it_filters_by_target(client, users, policy, rows):
    client.force_login(users["approver"])
    html = client.get(reverse("approvals:history"), {"target": policy.target.pk}).content.decode()
    assert all(str(rows[n].id) in html for n in ("approved", "denied", "pending", "old"))


def test_an_invalid_filter_shows_the_error_and_no_rows(client, users, rows):
    client.force_login(users["approver"])
    r = client.get(reverse("approvals:history"), {"status": "nonsense"})
    assert r.status_code == 200
    html = r.content.decode()
    assert "Select a valid choice" in html and str(rows["approved"].id) not in html


def test_it_is_for_approvers_only(client, users, rows):
    client.force_login(users["auditor"])
    assert client.get(reverse("approvals:history")).status_code == 403
    client.force_login(users["approver"])
    assert client.post(reverse("approvals:history")).status_code == 405


def test_the_detail_page_shows_earlier_decisions_on_the_agent(client, users, rows, make_request):
    req = make_request()
    client.force_login(users["approver"])
    html = client.get(reverse("approvals:detail", args=[req.id])).content.decode()
    assert f"/approvals/{rows['approved'].id}/" in html  # same agent, decided earlier
    assert f"/approvals/{rows['denied'].id}/" not in html  # another agent

"""Approver groups: only members see or decide, in pages, history and on the WebSocket."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.urls import reverse

from approvals.consumers import ApprovalQueueConsumer
from approvals.models import ApprovalRequest, Decision
from approvals.permissions import can_view, visible_q


@pytest.fixture
def payments_rule(policy, payments_group):
    policy.approve_rule.approver_group = payments_group
    policy.approve_rule.save()
    return policy.approve_rule


@pytest.mark.django_db
def test_only_group_members_see_and_decide(client, users, payments_rule, make_request):
    req = make_request()
    client.force_login(users["approver2"])  # an approver, but not in "payments"
    assert str(req.id) not in client.get(reverse("approvals:queue")).content.decode()
    assert str(req.id) not in client.get(reverse("approvals:history")).content.decode()
    assert client.get(reverse("approvals:detail", args=[req.id])).status_code == 403
    r = client.post(reverse("approvals:decide", args=[req.id]), {"verdict": "approve"})
    assert r.status_code == 403
    assert not Decision.objects.exists()

    unknown = "00000000-0000-4000-8000-000000000000"
    assert client.get(reverse("approvals:detail", args=[unknown])).status_code == 404

    client.force_login(users["approver"])
    assert str(req.id) in client.get(reverse("approvals:queue")).content.decode()
    r = client.post(reverse("approvals:decide", args=[req.id]), {"verdict": "approve"})
    assert r.status_code == 302
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.APPROVED


@pytest.mark.django_db
def test_group_membership_without_the_role_is_not_enough(
    client, users, payments_rule, make_request
):
    req = make_request()
    users["auditor"].groups.add(payments_rule.approver_group)
    client.force_login(users["auditor"])
    assert client.get(reverse("approvals:detail", args=[req.id])).status_code == 403


@pytest.mark.django_db
def test_the_target_group_applies_when_the_rule_names_none(users, policy, make_request):
    ops = Group.objects.create(name="ops")
    users["approver2"].groups.add(ops)
    policy.target.approver_group = ops
    policy.target.save()
    req = ApprovalRequest.objects.select_related("rule", "target").get(pk=make_request().pk)
    assert can_view(users["approver2"], req) and not can_view(users["approver"], req)


@pytest.mark.django_db
@pytest.mark.parametrize("rule_group", [None, "payments"])
@pytest.mark.parametrize("target_group", [None, "ops"])
def test_the_queryset_filter_agrees_with_can_view(
    users, policy, payments_group, make_request, rule_group, target_group
):
    ops = Group.objects.create(name="ops")
    users["approver2"].groups.add(ops)
    policy.approve_rule.approver_group = Group.objects.get(name=rule_group) if rule_group else None
    policy.approve_rule.save()
    policy.target.approver_group = ops if target_group else None
    policy.target.save()
    req = make_request()
    for user in users.values():
        fresh = type(user).objects.get(pk=user.pk)
        seen = ApprovalRequest.objects.filter(visible_q(fresh)).filter(pk=req.pk).exists()
        assert seen == can_view(fresh, ApprovalRequest.objects.get(pk=req.pk)), user


@pytest.mark.django_db(transaction=True)
async def test_the_socket_pushes_only_rows_the_user_may_see(
    users, payments_rule, make_request, redis_client
):
    member = WebsocketCommunicator(ApprovalQueueConsumer.as_asgi(), "/ws/approvals/")
    member.scope["user"] = users["approver"]
    outsider = WebsocketCommunicator(ApprovalQueueConsumer.as_asgi(), "/ws/approvals/")
    outsider.scope["user"] = users["approver2"]
    assert (await member.connect())[0] and (await outsider.connect())[0]
    await member.receive_from(timeout=5)  # the current queue
    await outsider.receive_from(timeout=5)
    req = await sync_to_async(make_request)()
    pushed = await member.receive_from(timeout=5)
    assert str(req.id) in pushed
    assert await outsider.receive_nothing(timeout=1.0)
    await member.disconnect()
    await outsider.disconnect()

"""The live queue WebSocket (real Channels layer on Redis)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from approvals.consumers import ApprovalQueueConsumer

pytestmark = pytest.mark.django_db(transaction=True)


def _communicator(user):
    app = ApprovalQueueConsumer.as_asgi()
    comm = WebsocketCommunicator(app, "/ws/approvals/")
    comm.scope["user"] = user
    return comm


async def test_it_refuses_anonymous_users(users):
    from django.contrib.auth.models import AnonymousUser

    comm = _communicator(AnonymousUser())
    connected, code = await comm.connect()
    assert not connected and code == 4403


@pytest.mark.parametrize("who", ["auditor", "outsider", "admin"])
async def test_it_refuses_users_without_the_approver_role(users, who):
    comm = _communicator(users[who])
    connected, code = await comm.connect()
    assert not connected and code == 4403


async def test_it_renders_the_queue_then_pushes_new_requests(users, make_request, redis_client):
    existing = await sync_to_async(make_request)()
    comm = _communicator(users["approver"])
    connected, _ = await comm.connect()
    assert connected
    first = await comm.receive_from(timeout=5)
    assert 'id="queue"' in first and str(existing.id) in first
    new = await sync_to_async(make_request)()  # on_commit -> group_send
    pushed = await comm.receive_from(timeout=5)
    assert "beforeend:#queue" in pushed and str(new.id) in pushed
    assert 'data-status="pending"' in pushed
    await comm.disconnect()

"""The approvals WebSocket through the whole ASGI app: origin, session and role are checked.

``tests/approvals/test_consumer.py`` tests the consumer with a user put in the scope; this
goes through ``controlplane.asgi.application`` (origin validator, session middleware) with
real session cookies, as a browser would.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

pytestmark = [pytest.mark.security, pytest.mark.django_db(transaction=True)]


def _cookie(user) -> bytes:
    c = Client()
    c.force_login(user)
    return (
        f"{settings.SESSION_COOKIE_NAME}={c.cookies[settings.SESSION_COOKIE_NAME].value}".encode()
    )


async def _connect(origin: bytes | None, cookie: bytes | None):
    from controlplane.asgi import application

    headers = [(b"host", b"127.0.0.1:8000")]
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie is not None:
        headers.append((b"cookie", cookie))
    comm = WebsocketCommunicator(application, "/ws/approvals/", headers=headers)
    connected, code = await comm.connect(timeout=5)
    await comm.disconnect()
    return connected, code


async def test_an_approver_on_the_site_origin_connects(users, redis_client):
    cookie = await sync_to_async(_cookie)(users["approver"])
    connected, _ = await _connect(b"http://127.0.0.1:8000", cookie)
    assert connected


@pytest.mark.parametrize(
    "origin", [b"https://evil.example", b"http://127.0.0.1.evil.example", b"null"]
)
async def test_a_foreign_origin_is_refused_even_with_a_valid_session(users, origin):
    cookie = await sync_to_async(_cookie)(users["approver"])
    connected, _ = await _connect(origin, cookie)
    assert not connected


async def test_no_session_or_a_forged_session_is_refused(users):
    assert not (await _connect(b"http://127.0.0.1:8000", None))[0]
    forged = f"{settings.SESSION_COOKIE_NAME}=not-a-real-session-key".encode()
    assert not (await _connect(b"http://127.0.0.1:8000", forged))[0]


@pytest.mark.parametrize("who", ["auditor", "admin", "outsider"])
async def test_a_session_without_the_approver_role_is_refused(users, who):
    cookie = await sync_to_async(_cookie)(users[who])
    connected, code = await _connect(b"http://127.0.0.1:8000", cookie)
    assert not connected and code == 4403

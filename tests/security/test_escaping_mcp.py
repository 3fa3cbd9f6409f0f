"""Recorded MCP calls render inert: tool names, JSON-RPC methods, ids and sessions,
argument keys and values, text results, content types, tools/list names and
descriptions, hidden and changed tools, error messages, all carrying markup, are escaped
on every page that shows them (replay, search, approval queue and detail, grants,
WebSocket pushes, the console's rule list). The browser check is
``test_xss_mcp_browser.py``. This file's name sorts before the stack-based tests of this
package: their seed users would collide with ``users``."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.urls import reverse

from approvals.actions import do_decide
from audit.models import Session
from tests.approvals.conftest import make_mcp_request, make_request  # noqa: F401 - fixtures
from tests.audit.conftest import ingest, make_mcp_call, mcp_target  # noqa: F401 - fixtures
from tests.security.test_escaping_sql import ATTR, EVIL, RAW, SCRIPT, _assert_escaped

pytestmark = [pytest.mark.security, pytest.mark.django_db]


@pytest.fixture
def evil_session(policy, mcp_target, ingest):  # noqa: F811 - fixtures
    t0 = time.time() - 10
    ingest(
        make_mcp_call(
            policy,
            target=mcp_target,
            at=t0,
            tool=EVIL,
            call_id=EVIL,
            arguments={EVIL: EVIL, "nested": [EVIL, {"k": f"{ATTR}\n{SCRIPT}"}]},
            result={
                "content": [
                    {"type": "text", "text": EVIL},
                    {"type": "image", "mimeType": EVIL, "data": "AAAA"},
                    {"type": "resource_link", "uri": EVIL, "name": EVIL},
                    {"type": "resource", "resource": {"uri": EVIL, "text": EVIL}},
                    {"type": EVIL, "x": EVIL},
                ],
                "structuredContent": {EVIL: EVIL},
                "isError": True,
            },
            request_headers={"mcp-session-id": EVIL},
            request_body=EVIL,
            response_body=EVIL,
            details={
                "is_error": True,
                "mcp_session": EVIL,
                "batch_index": 0,
                "changed_tools": [EVIL],
                "hidden_tools": [EVIL, "x"],
            },
        ),
        make_mcp_call(
            policy,
            target=mcp_target,
            at=t0 + 1,
            method=EVIL[:60],
            tool=None,
            arguments={},
            decision="denied",
            details={
                "jsonrpc_method": EVIL,
                "result": {
                    "tools": [{"name": EVIL, "description": EVIL}],
                    "prompts": [{"name": EVIL}],
                    "serverInfo": {"name": EVIL, "version": EVIL},
                    "protocolVersion": EVIL,
                    "capabilities": {EVIL: {}},
                    "instructions": EVIL,
                },
                "error": {"code": EVIL, "message": EVIL},
                "server_request": True,
            },
        ),
        make_mcp_call(
            policy,
            target=mcp_target,
            at=t0 + 2,
            method="prompts/get",
            tool=EVIL,
            result={
                "description": EVIL,
                "messages": [{"role": EVIL, "content": {"type": "text", "text": EVIL}}],
                "contents": [{"uri": EVIL, "blob": "AA", "mimeType": EVIL}],
            },
        ),
    )
    return Session.objects.get()


def test_the_replay_escapes_every_recorded_mcp_byte(client, users, evil_session):
    client.force_login(users["auditor"])
    for step in (1, 2, 3):
        url = reverse("audit:session", args=[evil_session.id]) + f"?step={step}"
        html = client.get(url).content.decode()
        _assert_escaped(html, shown=2)
        assert 'id="mcp"' in html


def test_search_results_escape_mcp_calls(client, users, evil_session):
    client.force_login(users["auditor"])
    html = client.get(reverse("audit:search"), {"protocol": "mcp"}).content.decode()
    _assert_escaped(html)
    html = client.get(reverse("audit:search"), {"tool": EVIL}).content.decode()
    _assert_escaped(html)
    html = client.get(reverse("audit:search"), {"q": "window"}).content.decode()
    for raw in RAW:
        assert raw not in html


@pytest.fixture
def evil_request(make_mcp_request):  # noqa: F811 - fixtures
    return make_mcp_request(
        url=f"http://127.0.0.1:9/mcp?{EVIL}",
        body=EVIL,
        headers={"mcp-session-id": EVIL},
        details={"jsonrpc_method": EVIL, "tool": EVIL, "arguments": {EVIL: [EVIL, None]}},
    )


def test_approval_pages_escape_mcp_calls(client, users, evil_request):
    client.force_login(users["approver"])
    _assert_escaped(client.get(reverse("approvals:queue")).content.decode())
    _assert_escaped(
        client.get(reverse("approvals:detail", args=[evil_request.id])).content.decode(), shown=3
    )
    do_decide(evil_request, acting_user=users["approver"], verdict="approve", grant_minutes=5)
    _assert_escaped(client.get(reverse("approvals:grants")).content.decode())
    _assert_escaped(client.get(reverse("approvals:history")).content.decode())


def test_tool_globs_typed_by_an_approver_are_escaped(client, users, make_mcp_request):  # noqa: F811
    req = make_mcp_request()
    client.force_login(users["approver"])
    r = client.post(
        reverse("approvals:decide", args=[req.id]),
        {"verdict": "grant", "grant_minutes": "5", "grant_path_pattern": "<b>x</b>"},
    )
    assert r.status_code == 302
    html = client.get(reverse("approvals:grants")).content.decode()
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_the_console_escapes_tool_globs_and_patterns(client, users, mcp_target):  # noqa: F811
    from controlplane.models import AccessRule

    rule = AccessRule(
        name="evil", target=mcp_target, tool_names=[SCRIPT], argument_pattern=EVIL, action="deny"
    )
    rule.full_clean()  # a glob without spaces is a valid glob: it must still render inert
    rule.save()
    client.force_login(users["admin"])
    html = client.get(reverse("console:list", args=["access-rules"])).content.decode()
    _assert_escaped(html)
    html = client.get(reverse("console:edit", args=["access-rules", rule.pk])).content.decode()
    _assert_escaped(html)


@pytest.mark.django_db(transaction=True)
async def test_websocket_pushes_escape_mcp_calls(users, make_mcp_request, redis_client):  # noqa: F811
    from approvals.consumers import ApprovalQueueConsumer

    comm = WebsocketCommunicator(ApprovalQueueConsumer.as_asgi(), "/ws/approvals/")
    comm.scope["user"] = users["approver"]
    connected, _ = await comm.connect()
    assert connected
    await comm.receive_from(timeout=5)  # the queue as it is
    req = await sync_to_async(make_mcp_request)(
        details={"jsonrpc_method": EVIL, "tool": EVIL, "arguments": {EVIL: EVIL}}
    )
    pushed = await comm.receive_from(timeout=5)
    assert str(req.id) in pushed
    _assert_escaped(pushed)
    await comm.disconnect()

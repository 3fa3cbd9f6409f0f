"""Recorded MCP calls render inert in Chromium (replay, search, approvals).

A worker's records are put on the real streams of the running stack (as the MCP path
writes them: tool names, JSON-RPC method and id, masked arguments, text results, tool
lists, hidden and changed tools, errors, all carrying script and attribute-injection
payloads); its ingest process stores them. Auditors and approvers then open every page
that shows them: no payload may run, and the payload text must still be visible.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from controlplane.redis import client, keys
from proxy_worker.contract import ApprovalRequestMessage, ExchangeMessage
from tests.e2e.conftest import wait_for
from tests.security.test_xss_browser import MARK, PAYLOADS, _assert_inert

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.security, pytest.mark.django_db]

BLOB = " ".join(PAYLOADS)


@pytest.fixture(scope="module")
def mcp_recorded(stack, django_db_blocker):
    """Put one recorded tool call, one tools/list answer and one held tool call on the
    stack's streams; returns ``(session id, approval id)`` once its ingest stored them."""
    from approvals.models import ApprovalRequest
    from audit.models import Exchange
    from controlplane.models import Agent, Target

    with django_db_blocker.unblock():
        agent = Agent.objects.order_by("id").first()
        target, _ = Target.objects.get_or_create(
            slug="xss-tools",
            defaults={"name": "XSS tools", "kind": "mcp", "upstream_url": "http://127.0.0.1:9/mcp"},
        )
    now = time.time()
    session = f"mcp:{uuid.uuid4()}"
    arguments = {PAYLOADS[0]: PAYLOADS[1], "list": [PAYLOADS[2], {"k": PAYLOADS[3]}]}
    common = dict(
        worker_id="mcp-xss",
        agent_id=agent.id,
        target_id=target.id,
        session_key=session,
        client_address="127.0.0.1",
        url=target.upstream_url,
        request_headers={"content-type": "application/json", "mcp-session-id": PAYLOADS[4]},
        status_code=200,
        response_headers={"content-type": "application/json"},
        decision="allowed",
        protocol="mcp",
    )
    call = ExchangeMessage(
        exchange_id=str(uuid.uuid4()),
        started_at=now,
        method="tools/call",
        request_body=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call"}) + BLOB,
        response_body=BLOB,
        details={
            "jsonrpc_method": "tools/call",
            "jsonrpc_id": PAYLOADS[5],
            "tool": PAYLOADS[1],
            "arguments": arguments,
            "result": {
                "content": [
                    {"type": "text", "text": BLOB},
                    {"type": "image", "mimeType": PAYLOADS[3], "data": "AAAA"},
                    {"type": "resource_link", "uri": PAYLOADS[4], "name": PAYLOADS[0]},
                ],
                "structuredContent": {PAYLOADS[2]: PAYLOADS[5]},
                "isError": True,
            },
            "is_error": True,
            "mcp_session": PAYLOADS[2],
            "batch_index": 0,
            "hidden_tools": [],
            "changed_tools": [PAYLOADS[1]],
            "server_request": False,
        },
        **common,
    )
    listing = ExchangeMessage(
        exchange_id=str(uuid.uuid4()),
        started_at=now + 0.5,
        method="tools/list",
        request_body="{}",
        response_body=BLOB,
        details={
            "jsonrpc_method": "tools/list",
            "jsonrpc_id": 2,
            "tool": None,
            "arguments": {},
            "result": {"tools": [{"name": PAYLOADS[0], "description": BLOB}]},
            "error": {"code": PAYLOADS[3], "message": PAYLOADS[4]},
            "is_error": True,
            "hidden_tools": [PAYLOADS[5], PAYLOADS[1]],
            "changed_tools": [PAYLOADS[5]],
        },
        **common,
    )
    held = ApprovalRequestMessage(
        approval_id=str(uuid.uuid4()),
        worker_id="mcp-xss",
        agent_id=agent.id,
        target_id=target.id,
        rule_id=None,
        method="tools/call",
        url=target.upstream_url,
        headers={"mcp-session-id": PAYLOADS[4]},
        body=BLOB,
        body_truncated=False,
        requested_at=now,
        deadline=now + 300,
        reason=PAYLOADS[2],
        protocol="mcp",
        details={"jsonrpc_method": "tools/call", "tool": PAYLOADS[1], "arguments": arguments},
    )
    r = client()
    r.xadd(keys().exchanges_stream, {"data": call.to_json()})
    r.xadd(keys().exchanges_stream, {"data": listing.to_json()})
    r.xadd(keys().approvals_stream, {"data": held.to_json()})
    with django_db_blocker.unblock():
        stored = wait_for(lambda: Exchange.objects.filter(pk=call.exchange_id).first(), 20)
        wait_for(lambda: Exchange.objects.filter(pk=listing.exchange_id).exists(), 20)
        wait_for(lambda: ApprovalRequest.objects.filter(pk=held.approval_id).exists(), 20)
    return stored.session_id, held.approval_id


def test_recorded_tool_calls_are_inert_for_auditors(stack, mcp_recorded, browser, sign_in):
    session_id, _ = mcp_recorded
    dialogs: list = []
    page = browser.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, "auditor")
    base = f"{stack.web_url}/audit/sessions/{session_id}/"
    _assert_inert(page, base, dialogs, must_show=True)
    assert page.inner_text("#mcp-call").startswith("→ tools/call ")
    assert MARK in page.inner_text("#mcp-arguments")
    _assert_inert(page, base + "?step=2", dialogs, must_show=True)
    assert "tools hidden" in page.inner_text("#mcp")
    _assert_inert(page, f"{stack.web_url}/audit/sessions/", dialogs)
    _assert_inert(page, f"{stack.web_url}/audit/search/?protocol=mcp", dialogs, must_show=True)
    _assert_inert(page, f"{stack.web_url}/audit/search/?q={MARK}", dialogs)


def test_held_tool_calls_are_inert_for_approvers(stack, mcp_recorded, browser, sign_in):
    _, approval_id = mcp_recorded
    dialogs: list = []
    page = browser.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, "approver")
    _assert_inert(page, f"{stack.web_url}/approvals/", dialogs, must_show=True)
    _assert_inert(page, f"{stack.web_url}/approvals/{approval_id}/", dialogs, must_show=True)
    assert MARK in page.inner_text("#mcp-arguments")
    _assert_inert(page, f"{stack.web_url}/approvals/history/", dialogs)

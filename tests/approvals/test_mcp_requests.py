"""MCP tool calls held for approval: pages, decisions, grants scoped to the JSON-RPC
method and a tool-name glob, the snapshot, notifications, and the unchanged permission
checks."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django.core import mail
from django.urls import reverse

from approvals import tasks
from approvals.actions import do_decide
from approvals.forms import DecideForm
from approvals.models import Grant
from controlplane.redis import keys
from controlplane.snapshot import compile_grants

pytestmark = pytest.mark.django_db

MARK = '<mark class="masked" data-type="EMAIL" title="masked EMAIL">[EMAIL]</mark>'


def _login(client, user):
    client.force_login(user)
    return client


def test_the_detail_page_shows_the_tool_call(client, users, policy, make_mcp_request):
    req = make_mcp_request()
    r = _login(client, users["approver"]).get(reverse("approvals:detail", args=[req.id]))
    assert r.status_code == 200
    page = r.content.decode()
    assert "Masked tool call" in page and "/static/audit/mcp.css" in page
    assert '<pre class="mcp-line mcp-out" id="mcp-call">→ tools/call lookup_customer</pre>' in page
    assert (
        f'id="mcp-arguments">{{\n  &quot;email&quot;: &quot;{MARK}&quot;,\n'
        "  &quot;limit&quot;: 3\n}</pre>" in page
    )
    assert '<dd><code id="mcp-tool">lookup_customer</code></dd>' in page
    assert "<dt>Target</dt><dd>tools · <code>http://127.0.0.1:9/mcp</code></dd>" in page
    assert "JSON-RPC request as recorded" in page and 'id="request-body"' in page
    assert "bulk" in page and "bulk export" in page  # the rule and its reason
    assert "agent-1" in page  # the agent
    assert "Masked request" not in page and "Masked SQL statement" not in page


def test_the_queue_row_shows_method_tool_arguments_and_the_grant_glob(
    client, users, make_mcp_request
):
    req = make_mcp_request(details={"tool": "weird*[x]"})
    page = _login(client, users["approver"]).get(reverse("approvals:queue")).content.decode()
    assert f'id="approval-{req.id}"' in page
    assert '<span class="method mcp-method">tools/call</span>' in page
    assert 'class="mcp-tool">weird*[x]</a>' in page
    assert (
        f'<span class="mcp-arguments-preview">{{&quot;email&quot;: &quot;{MARK}&quot;, '
        "&quot;limit&quot;: 3}</span>" in page
    )
    # The grant covers exactly this tool unless the approver edits the glob.
    assert 'class="mcp-tool-glob" value="weird[*][[]x]"' in page
    assert "tools/call calls of tools matching" in page
    assert 'name="grant_tables"' not in page


def test_history_and_recent_rows_name_the_tool(client, users, make_mcp_request):
    req = make_mcp_request()
    do_decide(req, acting_user=users["approver"], verdict="deny")
    c = _login(client, users["approver2"])
    assert "tools/call lookup_customer</a>" in c.get(reverse("approvals:queue")).content.decode()
    assert "tools/call lookup_customer</a>" in c.get(reverse("approvals:history")).content.decode()


# Transactional: the snapshot is published on commit.
@pytest.mark.django_db(transaction=True)
def test_approve_with_grant_covers_the_method_and_the_tool(
    client, users, policy, mcp_target, make_mcp_request, redis_client
):
    req = make_mcp_request()
    r = _login(client, users["approver"]).post(
        reverse("approvals:decide", args=[req.id]),
        {"verdict": "grant", "grant_minutes": "15", "grant_path_pattern": ""},
    )
    assert r.status_code == 302
    grant = Grant.objects.get()
    assert (grant.agent, grant.target, grant.method, grant.path_pattern, grant.tables) == (
        policy.agent,
        mcp_target,
        "tools/call",
        "lookup_customer",
        [],
    )
    assert grant.is_mcp and not grant.is_sql
    (compiled,) = compile_grants()
    assert (compiled["method"], compiled["path_pattern"]) == ("tools/call", "lookup_customer")
    doc = json.loads(redis_client.get(keys().policy_snapshot))
    assert doc["grants"][0]["path_pattern"] == "lookup_customer"
    page = client.get(reverse("approvals:grants")).content.decode()
    assert '<span class="grant-tools">tools <code>lookup_customer</code></span>' in page
    detail = client.get(reverse("approvals:detail", args=[req.id])).content.decode()
    assert "tools/call calls of tools <code>lookup_customer</code>" in detail


def test_the_approver_may_edit_the_tool_glob(client, users, make_mcp_request):
    req = make_mcp_request()
    r = _login(client, users["approver"]).post(
        reverse("approvals:decide", args=[req.id]),
        {"verdict": "grant", "grant_minutes": "5", "grant_path_pattern": "Lookup_*"},
        HTTP_HX_REQUEST="true",
    )
    assert r.status_code == 200 and 'data-status="approved"' in r.content.decode()
    grant = Grant.objects.get()
    assert (grant.method, grant.path_pattern) == ("tools/call", "Lookup_*")  # case kept


@pytest.mark.parametrize(
    "pattern, error", [("two words", "no spaces"), ("a,b", "no spaces"), ("x\x01", "control")]
)
def test_invalid_tool_globs_are_refused(client, users, make_mcp_request, pattern, error):
    req = make_mcp_request()
    r = _login(client, users["approver"]).post(
        reverse("approvals:decide", args=[req.id]),
        {"verdict": "grant", "grant_minutes": "5", "grant_path_pattern": pattern},
    )
    assert r.status_code == 400 and error in r.content.decode()
    req.refresh_from_db()
    assert req.status == "pending" and not Grant.objects.exists()


def test_a_call_without_a_tool_name_needs_an_explicit_glob(client, users, make_mcp_request):
    req = make_mcp_request(details={"tool": None})
    c = _login(client, users["approver"])
    url = reverse("approvals:decide", args=[req.id])
    r = c.post(url, {"verdict": "grant", "grant_minutes": "5", "grant_path_pattern": ""})
    assert r.status_code == 400 and "names no tool" in r.content.decode()
    r = c.post(url, {"verdict": "grant", "grant_minutes": "5", "grant_path_pattern": "*"})
    assert r.status_code == 302
    assert Grant.objects.get().path_pattern == "*"


def test_a_grant_needs_no_leading_slash_for_mcp_but_does_for_http(make_mcp_request, make_request):
    data = {"verdict": "grant", "grant_minutes": "5", "grant_path_pattern": "lookup_*"}
    assert DecideForm(data, req=make_mcp_request()).is_valid()
    form = DecideForm(data, req=make_request())
    assert not form.is_valid()
    assert form.errors["grant_path_pattern"] == ["a path pattern starts with '/'"]


def test_approvers_who_disagree_on_the_glob_get_the_calls_own_tool(users, make_mcp_request):
    req = make_mcp_request(required_approvals=2, details={"tool": "refund[1]"})
    for user, minutes, pattern in (("approver", 60, "refund*"), ("approver2", 5, "*")):
        do_decide(
            req,
            acting_user=users[user],
            verdict="approve",
            grant_minutes=minutes,
            grant_path_pattern=pattern,
        )
    grant = Grant.objects.get()
    assert grant.path_pattern == "refund[[]1]"  # glob-escaped: exactly that tool
    assert grant.method == "tools/call"


def test_a_resources_read_grant_keeps_the_method(users, make_mcp_request):
    req = make_mcp_request(
        method="resources/read",
        details={"jsonrpc_method": "resources/read", "tool": "file:///etc/hosts", "arguments": {}},
    )
    do_decide(req, acting_user=users["approver"], verdict="approve", grant_minutes=5)
    grant = Grant.objects.get()
    assert (grant.method, grant.path_pattern) == ("resources/read", "file:///etc/hosts")


# --- permissions (unchanged: one query filter, visible_q) ----------------------------------


@pytest.mark.parametrize("who", ["auditor", "outsider", "admin"])
def test_users_without_the_approver_role_get_403(client, users, make_mcp_request, who):
    req = make_mcp_request()
    c = _login(client, users[who])
    assert c.get(reverse("approvals:detail", args=[req.id])).status_code == 403
    r = c.post(
        reverse("approvals:decide", args=[req.id]),
        {"verdict": "grant", "grant_minutes": "5", "grant_path_pattern": "*"},
    )
    assert r.status_code == 403
    req.refresh_from_db()
    assert req.status == "pending" and not Grant.objects.exists()


def test_an_approver_outside_the_group_gets_403(
    client, users, policy, payments_group, make_mcp_request
):
    policy.approve_rule.approver_group = payments_group
    policy.approve_rule.save()
    req = make_mcp_request()
    c = _login(client, users["approver2"])
    assert c.get(reverse("approvals:detail", args=[req.id])).status_code == 403
    assert f"approval-{req.id}" not in c.get(reverse("approvals:queue")).content.decode()
    r = c.post(reverse("approvals:decide", args=[req.id]), {"verdict": "approve"})
    assert r.status_code == 403


def test_the_agents_owner_may_not_decide(client, users, make_mcp_request):
    req = make_mcp_request()  # the agent is owned by admin; give admin the approver role
    from django.contrib.auth.models import Group

    users["admin"].groups.add(Group.objects.get(name="approver"))
    r = _login(client, users["admin"]).post(
        reverse("approvals:decide", args=[req.id]), {"verdict": "approve"}
    )
    assert r.status_code == 403


def test_decide_answers_405_to_get(client, users, make_mcp_request):
    req = make_mcp_request()
    r = _login(client, users["approver"]).get(reverse("approvals:decide", args=[req.id]))
    assert r.status_code == 405


# --- notifications ----------------------------------------------------------------------------


def test_notifications_show_the_tool_call(users, policy, make_mcp_request):
    from approvals.notifications import email_message, slack_payload, summary_line, webhook_payload
    from tests.approvals.conftest import MCP_BODY

    req = make_mcp_request()
    assert summary_line(req) == 'tools/call lookup_customer {"email": "[EMAIL]", "limit": 3}'
    hook = webhook_payload(req)
    assert (hook["protocol"], hook["method"]) == ("mcp", "tools/call")
    assert hook["mcp"] == {
        "jsonrpc_method": "tools/call",
        "tool": "lookup_customer",
        "arguments": {"email": "[EMAIL]", "limit": 3},
    }
    assert hook["body_preview"] == MCP_BODY and "sql" not in hook
    slack = slack_payload(req)
    summary = slack["blocks"][0]["text"]["text"]
    assert "wants to call tool *lookup_customer* (`tools/call`) on *tools*" in summary
    assert '"email": "[EMAIL]"' in slack["blocks"][1]["text"]["text"]
    assert slack["text"].startswith("Approval needed: tools/call lookup_customer {")
    subject, body = email_message(req)
    assert subject == (
        '[Gatehouse] Approval needed: tools/call lookup_customer {"email": "[EMAIL]", "limit": 3}'
    )
    assert "Tool: lookup_customer (tools/call) on target tools (http://127.0.0.1:9/mcp)" in body
    assert 'Masked arguments:\n{\n  "email": "[EMAIL]",\n  "limit": 3\n}' in body


def test_slack_escapes_tool_calls(users, make_mcp_request):
    from approvals.notifications import slack_payload

    req = make_mcp_request(details={"tool": "<!channel>", "arguments": {"x": "<@U1> ``` &"}})
    payload = slack_payload(req)
    text = json.dumps(payload)
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "<@U1>" not in text and "&lt;@U1&gt;" in text
    fenced = payload["blocks"][1]["text"]["text"]
    assert fenced.startswith("```") and fenced.endswith("```") and "```" not in fenced[3:-3]


def test_a_held_call_is_sent_to_every_channel(users, policy, make_mcp_request):
    rule = policy.approve_rule
    rule.notify_email = True
    rule.save()
    users["approver"].email = "ann@example.com"
    users["approver"].save()
    req = make_mcp_request()
    with mock.patch.object(
        tasks.send_approval_email, "delay", lambda *a: tasks.send_approval_email.apply(args=a)
    ):
        assert tasks.notify_approval_request.apply(args=[str(req.id)]).get() == ["email"]
    assert "Tool: lookup_customer (tools/call)" in mail.outbox[0].body


def test_ingest_stores_a_held_call_from_the_stream(policy, mcp_target, redis_client):
    import time
    import uuid

    from approvals.models import ApprovalRequest
    from audit.ingest import Ingestor
    from proxy_worker.contract import ApprovalRequestMessage

    ing = Ingestor(consumer="test", block_ms=10)
    ing.ensure_groups()
    now = time.time()
    msg = ApprovalRequestMessage(
        approval_id=str(uuid.uuid4()),
        worker_id="w1",
        agent_id=policy.agent.id,
        target_id=mcp_target.id,
        rule_id=policy.approve_rule.id,
        method="tools/call",
        url=mcp_target.upstream_url,
        headers={"content-type": "application/json"},
        body='{"jsonrpc": "2.0", "id": 1, "method": "tools/call"}',
        body_truncated=False,
        requested_at=now,
        deadline=now + 60,
        reason="refunds need a human",
        protocol="mcp",
        details={"jsonrpc_method": "tools/call", "tool": "refund", "arguments": {"n": 1}},
    )
    redis_client.xadd(keys().approvals_stream, {"data": msg.to_json()})
    while ing.step(block=False):
        pass
    req = ApprovalRequest.objects.get(pk=msg.approval_id)
    assert req.is_mcp and (req.mcp_method, req.tool) == ("tools/call", "refund")
    assert req.arguments_text == '{\n  "n": 1\n}'

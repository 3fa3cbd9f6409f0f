"""MCP calls in the audit trail: ingest, the tool-call rendering (audit.mcp), the replay
page, search and exports."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid

import pytest
from django.urls import reverse

from audit.chain import exchange_digest, verify_chain, verify_evidence
from audit.mcp import Badge, Block, result_blocks, tool_call
from audit.models import ChainRecord, Exchange, Session
from tests.audit.conftest import make_exchange, make_mcp_call

pytestmark = pytest.mark.django_db


def _kinds(call) -> list[str]:
    return [b.kind for b in call.badges]


# --- ingest --------------------------------------------------------------------------------


def test_ingest_stores_a_call_with_its_method_and_details(policy, mcp_target, ingest):
    msg = make_mcp_call(policy, target=mcp_target)
    long = make_mcp_call(
        policy,
        target=mcp_target,
        method="notifications/roots/list_changed",
        tool=None,
        call_id=None,
        result=None,
        details={"jsonrpc_id": None, "result": None},
    )
    ingest(msg, long)
    x = Exchange.objects.get(pk=msg.exchange_id)
    assert x.protocol == "mcp" and x.is_mcp and not x.is_sql
    assert (x.method, x.details) == ("tools/call", msg.details)
    assert x.session.key == "mcp:sess-1f2e" and x.target == mcp_target
    # JSON-RPC method names are longer than HTTP methods: kept whole.
    assert Exchange.objects.get(pk=long.exchange_id).method == "notifications/roots/list_changed"
    assert ChainRecord.objects.get(exchange_id=x.id).payload["digest"] == exchange_digest(x)
    assert verify_chain().ok


# --- the tool-call rendering ---------------------------------------------------------------


def test_a_tool_call_reads_as_a_call_and_its_result():
    call = tool_call(
        {
            "jsonrpc_method": "tools/call",
            "jsonrpc_id": 7,
            "tool": "lookup_customer",
            "arguments": {"email": "[EMAIL]", "nested": {"ok": True}},
            "result": {
                "content": [
                    {"type": "text", "text": "line one\nline two [EMAIL]"},
                    {"type": "image", "mimeType": "image/png", "data": "A" * 4096},
                    {"type": "audio", "mimeType": "audio/wav", "data": "AAAA"},
                    {"type": "resource_link", "uri": "file:///r.txt", "name": "report"},
                    {
                        "type": "resource",
                        "resource": {"uri": "file:///a.txt", "mimeType": "text/plain", "text": "A"},
                    },
                    {"type": "resource", "resource": {"uri": "file:///b.bin", "blob": "AAAA"}},
                    {"type": "hologram", "beams": 3},
                ],
                "structuredContent": {"id": 42},
                "isError": False,
            },
            "is_error": False,
            "mcp_session": "s1",
            "batch_index": 1,
            "hidden_tools": [],
            "changed_tools": [],
            "server_request": False,
        },
        method="tools/call",
        decision="allowed",
    )
    assert call.call_line == "→ tools/call lookup_customer"
    assert call.arguments == json.dumps(
        {"email": "[EMAIL]", "nested": {"ok": True}}, indent=2, ensure_ascii=False
    )
    assert call.result_line == "← result" and call.call_id == "7" and call.mcp_session == "s1"
    assert call.blocks == [
        Block("text", "", "line one\nline two [EMAIL]"),
        Block("summary", "", "[image, image/png, 3.0 KB]"),
        Block("summary", "", "[audio, audio/wav, 3 bytes]"),
        Block("summary", "", "[resource link report: file:///r.txt]"),
        Block("text", "resource file:///a.txt", "A"),
        Block("summary", "resource file:///b.bin", "[unknown type, 3 bytes]"),
        Block("json", "hologram content", json.dumps({"type": "hologram", "beams": 3}, indent=2)),
        Block("json", "structured content", json.dumps({"id": 42}, indent=2)),
    ]
    assert call.badges == [Badge("batch", "call 2 of a batch")]


def test_errors_and_tool_errors_are_badges():
    denied = tool_call(
        {
            "jsonrpc_method": "tools/call",
            "jsonrpc_id": "a-1",
            "tool": "delete_all",
            "arguments": {},
            "is_error": True,
            "error": {"code": -32001, "message": "denied by Gatehouse rule “no deletes”"},
        },
        decision="denied",
    )
    assert denied.result_line == "← error -32001: denied by Gatehouse rule “no deletes”"
    assert denied.arguments == "{}" and denied.call_id == "a-1"
    assert denied.badges == [Badge("error", "JSON-RPC error -32001")]
    failed = tool_call(
        {
            "jsonrpc_method": "tools/call",
            "tool": "lookup",
            "result": {"content": [{"type": "text", "text": "no such customer"}], "isError": True},
            "is_error": True,
        },
        decision="approved",
    )
    assert failed.result_line == "← result (tool error)"
    assert failed.badges == [Badge("tool-error", "tool error")]


def test_tools_list_shows_names_hidden_tools_and_drift():
    call = tool_call(
        {
            "jsonrpc_method": "tools/list",
            "jsonrpc_id": 2,
            "arguments": {},
            "result": {
                "tools": [
                    {"name": "lookup_customer", "description": "Find a customer"},
                    {"name": "send_mail", "description": "Send [EMAIL] a mail"},
                ],
                "nextCursor": None,
            },
            "hidden_tools": ["delete_all", "drop_table"],
            "changed_tools": ["send_mail", "drop_table"],
        },
        decision="allowed",
    )
    assert call.call_line == "→ tools/list" and call.arguments == ""
    assert call.blocks == [
        Block("summary", "", "2 tools"),
        Block("item", "lookup_customer", "Find a customer"),
        Block("item", "send_mail (changed)", "Send [EMAIL] a mail"),
    ]
    # drop_table was hidden: blocked; send_mail was let through: flagged.
    assert call.badges == [
        Badge("drift-blocked", "changed tool blocked: drop_table"),
        Badge("drift-flagged", "changed tool flagged: send_mail"),
        Badge("hidden", "2 tools hidden: delete_all, drop_table"),
    ]


def test_a_refused_call_of_a_changed_tool_counts_as_blocked():
    call = tool_call(
        {"jsonrpc_method": "tools/call", "tool": "send_mail", "changed_tools": ["send_mail"]},
        decision="denied",
    )
    assert Badge("drift-blocked", "changed tool blocked: send_mail") in call.badges
    assert call.result_line == "← no answer recorded"


def test_server_requests_and_notifications():
    server = tool_call(
        {
            "jsonrpc_method": "sampling/createMessage",
            "jsonrpc_id": 0,
            "arguments": {"messages": [{"role": "user", "content": {"type": "text"}}]},
            "server_request": True,
            "error": {"code": -32601, "message": "refused by Gatehouse"},
        },
        decision="denied",
    )
    assert server.call_line == "← sampling/createMessage (a request from the server)"
    assert server.result_line == "→ refused by Gatehouse: error -32601: refused by Gatehouse"
    assert server.server_request and "server-request" in _kinds(server)
    note = tool_call(
        {"jsonrpc_method": "notifications/initialized", "jsonrpc_id": None, "result": None},
        decision="allowed",
    )
    assert note.call_line == "→ notifications/initialized (notification)"
    assert note.result_line == "" and note.notification and _kinds(note) == ["notification"]


def test_unreadable_messages_client_answers_and_cut_values():
    unreadable = tool_call(
        {
            "jsonrpc_method": "",
            "tool": "",
            "is_error": True,
            "error": {"code": -32700, "message": "Parse error"},
        },
        method="POST",
        decision="error",
    )
    assert unreadable.call_line == "→ (no JSON-RPC method: the message could not be read)"
    assert unreadable.result_line == "← error -32700: Parse error"
    answer = tool_call(
        {"jsonrpc_method": "", "jsonrpc_id": 3, "client_response": True}, method="POST"
    )
    assert answer.call_line == "→ answer to the server's request 3"
    assert answer.result_line == "" and not answer.notification
    assert Badge("notification", "answer to a server request") in answer.badges
    cut = tool_call(
        {"jsonrpc_method": "tools/call", "tool": "t", "arguments": '{"a":"xxx', "result": None}
    )
    assert cut.arguments == '{"a":"xxx' and Badge("cut", "cut at the recording limit") in cut.badges
    unanswered = tool_call(
        {
            "jsonrpc_method": "tools/call",
            "is_error": True,
            "error": {"code": None, "message": "gone"},
        }
    )
    assert unanswered.result_line == "← error: gone"
    assert unanswered.badges == [Badge("error", "JSON-RPC error")]


@pytest.mark.parametrize(
    "method, result, expected",
    [
        (
            "resources/read",
            {
                "contents": [
                    {"uri": "file:///a.txt", "mimeType": "text/plain", "text": "hello"},
                    {"uri": "file:///b.png", "mimeType": "image/png", "blob": "A" * 8},
                ]
            },
            [
                Block("text", "resource file:///a.txt", "hello"),
                Block("summary", "resource file:///b.png", "[image/png, 6 bytes]"),
            ],
        ),
        (
            "prompts/get",
            {
                "description": "A review prompt",
                "messages": [
                    {"role": "user", "content": {"type": "text", "text": "Review [EMAIL]"}},
                    {"role": "assistant", "content": {"type": "image", "data": ""}},
                ],
            },
            [
                Block("summary", "", "A review prompt"),
                Block("text", "user", "Review [EMAIL]"),
                Block("summary", "assistant", "[image, unknown type, 0 bytes]"),
            ],
        ),
        (
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "serverInfo": {"name": "demo-tools", "version": "1.2"},
                "capabilities": {"tools": {}, "resources": {}},
            },
            [
                Block(
                    "summary",
                    "",
                    "server demo-tools 1.2 · protocol 2025-06-18 · capabilities: resources, tools",
                )
            ],
        ),
        ("ping", {}, [Block("summary", "", "(empty)")]),
        ("x/y", {"answer": 42}, [Block("json", "", '{\n  "answer": 42\n}')]),
        ("x/y", [1, 2], [Block("json", "", "[\n  1,\n  2\n]")]),
        (
            "tools/call",
            '{"content": [{"type": "te',
            [
                Block(
                    "text",
                    "result as recorded (cut: the start of its JSON)",
                    '{"content": [{"type": "te',
                )
            ],
        ),
        (
            "resources/list",
            {"resources": [{"uri": "a://b", "name": "b"}]},
            [
                Block("summary", "", "1 resource"),
                Block("item", "a://b", ""),
            ],
        ),
    ],
)
def test_results_of_other_methods(method, result, expected):
    assert result_blocks(method, result) == expected


@pytest.mark.parametrize(
    "details",
    [
        None,
        [],
        {"jsonrpc_method": 5, "tool": ["x"], "arguments": "text", "result": {"content": "x"}},
        {"hidden_tools": "all", "changed_tools": {"a": 1}, "batch_index": "1", "error": "boom"},
        {"result": {"content": [1, None]}, "jsonrpc_id": {"odd": True}},
        {"result": {"messages": "x", "tools": "y", "contents": 3}},
    ],
)
def test_malformed_details_still_render(details):
    call = tool_call(details, method="tools/call", decision="allowed")
    assert call.call_line.startswith("→ ")
    for b in call.blocks:
        assert isinstance(b.text, str) and isinstance(b.label, str)


def test_long_text_is_cut_and_long_lists_are_summarised():
    from audit.mcp import LIST_LIMIT, TEXT_LIMIT

    (block,) = result_blocks(
        "tools/call", {"content": [{"type": "text", "text": "x" * (TEXT_LIMIT + 5)}]}
    )
    assert len(block.text) == TEXT_LIMIT + 1 and block.text.endswith("…")
    blocks = result_blocks(
        "tools/list", {"tools": [{"name": f"t{i}"} for i in range(LIST_LIMIT + 3)]}
    )
    assert blocks[0].text == f"{LIST_LIMIT + 3} tools" and blocks[-1].text == "… and 3 more"


# --- replay page ---------------------------------------------------------------------------


@pytest.fixture
def mcp_session(policy, mcp_target, ingest, approved):
    """One MCP session: initialize, tools/list (two tools hidden, one changed), a tool
    call answered with text, a call denied by a rule, a call held and approved, a refused
    server request, a notification."""
    t0 = time.time() - 60
    msgs = [
        make_mcp_call(
            policy,
            target=mcp_target,
            at=t0,
            method="initialize",
            tool=None,
            call_id=0,
            arguments={"protocolVersion": "2025-06-18", "clientInfo": {"name": "agents-sdk"}},
            result={"protocolVersion": "2025-06-18", "serverInfo": {"name": "demo-tools"}},
            request_findings=[],
            response_findings=[],
        ),
        make_mcp_call(
            policy,
            target=mcp_target,
            at=t0 + 0.5,
            method="tools/list",
            tool=None,
            call_id=1,
            arguments={},
            result={"tools": [{"name": "lookup_customer", "description": "Find one"}]},
            details={"hidden_tools": ["delete_all", "refund"], "changed_tools": ["refund"]},
        ),
        make_mcp_call(policy, target=mcp_target, at=t0 + 1.5),
        make_mcp_call(
            policy,
            target=mcp_target,
            at=t0 + 2,
            tool="delete_all",
            call_id=8,
            arguments={"confirm": True},
            status_code=200,
            decision="denied",
            rule_id=policy.deny_rule.id,
            details={
                "is_error": True,
                "error": {"code": -32001, "message": "denied by Gatehouse rule “no schema”"},
                "result": None,
            },
        ),
        make_mcp_call(
            policy,
            target=mcp_target,
            at=t0 + 3,
            tool="refund_order",
            call_id=9,
            arguments={"order": 17, "amount": 1200},
            decision="approved",
            approval_id=str(approved.id),
            result={"content": [{"type": "text", "text": "refunded"}], "isError": False},
        ),
        make_mcp_call(
            policy,
            target=mcp_target,
            at=t0 + 4,
            method="sampling/createMessage",
            tool=None,
            call_id=0,
            arguments={"messages": [{"role": "user"}], "maxTokens": 10},
            decision="denied",
            details={
                "server_request": True,
                "error": {"code": -32601, "message": "refused by Gatehouse"},
                "result": None,
            },
        ),
        make_mcp_call(
            policy,
            target=mcp_target,
            at=t0 + 5,
            method="notifications/cancelled",
            tool=None,
            call_id=None,
            arguments={"requestId": 9},
            details={"jsonrpc_id": None, "result": None, "batch_index": 0},
        ),
    ]
    ingest(*msgs)
    return Session.objects.get(key="mcp:sess-1f2e"), msgs


@pytest.fixture
def approved(policy, mcp_target, users):
    """An approved MCP call's approval request (real actions)."""
    from approvals.actions import do_create_approval_request, do_decide
    from proxy_worker.contract import ApprovalRequestMessage

    now = time.time()
    req, _ = do_create_approval_request(
        ApprovalRequestMessage(
            approval_id=str(uuid.uuid4()),
            worker_id="w1",
            agent_id=policy.agent.id,
            target_id=mcp_target.id,
            rule_id=policy.approve_rule.id,
            method="tools/call",
            url=mcp_target.upstream_url,
            headers={},
            body="{}",
            body_truncated=False,
            requested_at=now,
            deadline=now + 60,
            protocol="mcp",
            details={"jsonrpc_method": "tools/call", "tool": "refund_order", "arguments": {}},
        )
    )
    return do_decide(req, acting_user=users["approver"], verdict="approve")


def _page(client, session, step: int) -> str:
    r = client.get(reverse("audit:session", args=[session.id]) + f"?step={step}")
    assert r.status_code == 200
    return r.content.decode()


MARK = '<mark class="masked" data-type="EMAIL" title="masked EMAIL">[EMAIL]</mark>'


def test_a_tool_call_replays_as_a_call_with_arguments_and_result(client, users, mcp_session):
    session, _ = mcp_session
    client.force_login(users["auditor"])
    html = _page(client, session, 3)
    assert "/static/audit/mcp.css" in html and 'id="mcp"' in html
    assert '<pre class="mcp-line mcp-out" id="mcp-call">→ tools/call lookup_customer</pre>' in html
    assert (
        f'id="mcp-arguments">{{\n  &quot;email&quot;: &quot;{MARK}&quot;,\n'
        "  &quot;limit&quot;: 3\n}" in html
    )
    assert '<pre class="mcp-line mcp-in" id="mcp-result-line">← result</pre>' in html
    assert f"<pre>Customer 42: {MARK}, tier gold</pre>" in html
    assert 'id="decision-badge">allowed</span>' in html
    assert "MCP, JSON-RPC request id <code>7</code>" in html
    assert "MCP session <code>sess-1f2e</code>" in html
    assert (
        '<code class="mcp-tool" id="mcp-tool">lookup_customer</code> on <code>http://127.0.0.1:9/mcp</code>'
        in html
    )
    # The JSON-RPC messages as recorded, below the call.
    assert "JSON-RPC messages as recorded" in html and 'id="request-body"' in html
    assert "&quot;jsonrpc&quot;: &quot;2.0&quot;" in html
    # The timeline names each call's method and tool.
    assert '<span class="mcp-method">tools/list</span> ·' not in html
    assert (
        '<span class="mcp-method">tools/call</span> <code class="mcp-tool">delete_all</code>'
        in html
    )
    assert '<span class="mcp-method">notifications/cancelled</span>' in html


def test_the_replay_shows_lists_denials_approvals_and_refusals(
    client, users, mcp_session, approved
):
    session, _ = mcp_session
    client.force_login(users["auditor"])
    init = _page(client, session, 1)
    assert "server demo-tools · protocol 2025-06-18" in init
    listing = _page(client, session, 2)
    assert '<span class="badge mcp-hidden">2 tools hidden: delete_all, refund</span>' in listing
    assert '<span class="badge mcp-drift-blocked">changed tool blocked: refund</span>' in listing
    assert '<div class="mcp-item"><code>lookup_customer</code> — Find one</div>' in listing
    denied = _page(client, session, 4)
    assert 'id="decision-badge">denied by rule “no schema”</span>' in denied
    assert "← error -32001: denied by Gatehouse rule “no schema”" in denied
    held = _page(client, session, 5)
    assert (
        f'id="decision-badge">held for approval {approved.id} · approved by approver</span>' in held
    )
    server = _page(client, session, 6)
    assert "← sampling/createMessage (a request from the server)" in server
    assert "→ refused by Gatehouse: error -32601: refused by Gatehouse" in server
    assert '<span class="badge mcp-server-request">server request refused</span>' in server
    assert "MCP, JSON-RPC request from the server" in server
    note = _page(client, session, 7)
    assert "→ notifications/cancelled (notification)" in note
    assert 'id="mcp-result-line"' not in note and "call 1 of a batch" in note


def test_http_and_sql_exchanges_do_not_render_as_tool_calls(client, users, policy, ingest):
    ingest(make_exchange(policy))
    client.force_login(users["auditor"])
    html = _page(client, Session.objects.get(), 1)
    assert 'id="mcp"' not in html and "GET http://127.0.0.1:9/customers/orders.json" in html


def test_the_session_list_and_search_show_mcp_calls(client, users, mcp_session, policy, ingest):
    ingest(make_exchange(policy, url="http://u/orders"))
    client.force_login(users["auditor"])
    sessions = client.get(reverse("audit:sessions")).content.decode()
    assert '<td class="protocol">MCP</td>' in sessions
    url = reverse("audit:search")

    def found(**params) -> int:
        r = client.get(url, params)
        assert r.status_code == 200
        return r.content.decode().count(">Replay</a>")

    assert found(protocol="mcp") == 7
    assert found(protocol="http") == 1
    assert found(tool="delete_all") == 1
    assert found(tool="delete_all", protocol="http") == 0
    assert found(tool="lookup") == 0  # exact names
    assert found(q="refund_order") == 1  # the JSON-RPC request is searched like a body
    html = client.get(url, {"tool": "lookup_customer"}).content.decode()
    assert '<code><span class="mcp-method">tools/call</span> lookup_customer</code>' in html
    assert '<option value="mcp">MCP</option>' in html


# --- exports -------------------------------------------------------------------------------


def _export(client, fmt: str, **filters):
    from audit.models import AuditJob

    r = client.post(reverse("audit:export"), {"format": fmt, **filters})
    assert r.status_code == 302
    return AuditJob.objects.order_by("-id").first()


def _download(client, job) -> bytes:
    r = client.get(reverse("audit:job_download", args=[job.pk]))
    assert r.status_code == 200
    return b"".join(r.streaming_content)


@pytest.fixture
def exports_dir(settings, tmp_path):
    settings.GATEHOUSE_EXPORT_DIR = str(tmp_path / "exports")
    return tmp_path


def test_csv_and_jsonl_carry_mcp_calls(client, users, mcp_session, exports_dir):
    _, msgs = mcp_session
    client.force_login(users["auditor"])
    text = _download(client, _export(client, "csv", protocol="mcp")).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].endswith(",protocol,tool")
    assert [(r["protocol"], r["method"], r["tool"]) for r in rows][:3] == [
        ("mcp", "initialize", ""),
        ("mcp", "tools/list", ""),
        ("mcp", "tools/call", "lookup_customer"),
    ]
    lines = _download(client, _export(client, "jsonl", protocol="mcp")).decode().splitlines()
    items = [json.loads(line) for line in lines[1:-1]]
    assert len(items) == 7
    call = next(i for i in items if i["exchange"]["id"] == msgs[2].exchange_id)
    assert call["exchange"]["details"] == msgs[2].details and call["facts"]["protocol"] == "mcp"
    assert verify_evidence(lines) == []


def test_har_has_one_post_per_call_and_counts_refused_server_requests(
    client, users, mcp_session, exports_dir, tmp_path
):
    client.force_login(users["auditor"])
    job = _export(client, "har", protocol="mcp")
    body = _download(client, job)
    log = json.loads(body)["log"]
    entries = log["entries"]
    assert len(entries) == 6  # the server's request is not the agent's HTTP request
    assert {e["request"]["method"] for e in entries} == {"POST"}
    call = entries[2]
    assert call["_gatehouse"]["mcp"] == {
        "jsonrpc_method": "tools/call",
        "jsonrpc_id": 7,
        "tool": "lookup_customer",
        "batch_index": None,
        "is_error": False,
    }
    assert call["comment"] == "MCP tools/call lookup_customer; Gatehouse decision: allowed"
    assert json.loads(call["request"]["postData"]["text"])["params"]["name"] == "lookup_customer"
    assert call["response"]["content"]["mimeType"] == "application/json"
    assert log["comment"] == (
        f"Gatehouse evidence export {job.pk}; 1 refused MCP server request not representable "
        "in HAR; export JSON Lines for every exchange"
    )
    from mitmproxy.io import FlowReader

    path = tmp_path / "mcp.har"
    path.write_bytes(body)
    with open(path, "rb") as f:
        flows = list(FlowReader(f).stream())
    assert [fl.request.method for fl in flows] == ["POST"] * 6
    assert flows[2].request.url == "http://127.0.0.1:9/mcp"


def test_har_comment_counts_statements_and_server_requests():
    from audit.exports import har_comment

    assert har_comment("t", 0, 0) == "t"
    assert har_comment("t", 2, 1) == (
        "t; 2 PostgreSQL statements and 1 refused MCP server request not representable in "
        "HAR; export JSON Lines for every exchange"
    )

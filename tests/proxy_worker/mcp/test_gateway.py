"""MCP targets end to end with real parts: the ``mcp`` package's client and FastMCP server,
a real proxy worker, a private Redis (harness.py).

Per-tool rules (hidden from tools/list, denied calls as JSON-RPC errors the client shows,
approvals held and deferred), masked results and records, tool drift blocked and flagged,
server-initiated requests refused and answered by the gateway, batches, notifications,
client responses and malformed bodies (raw httpx), JSON answers, resources, prompts and
binary content.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from mcp.shared.exceptions import McpError
from mcp.types import CreateMessageResult, TextContent

from proxy_worker import mcp as mcpmod
from tests.proxy_worker.mcp.harness import BINARY, CRM_JSON, FLAGGING, SLUGS, rule
from tests.proxy_worker.mcp.upstream import PNG

pytestmark = pytest.mark.reliability

PII = ("jane.roe@example.com", "123-45-6789", "+1 415 555 0132", "Jane Roe", "john.doe@example.org")


def assert_no_pii(text: str) -> None:
    for value in PII:
        assert value not in text, value


def recorded(gw) -> str:  # noqa: ANN001
    return "\n".join(x.to_json() for x in gw.exchanges())


def calls(gw, tool: str, port: int | None = None) -> list[dict]:  # noqa: ANN001
    return [c for c in gw.received(port)["calls"] if c.get("tool") == tool]


def by_method(gw, method: str, n: int = 1) -> list:  # noqa: ANN001
    for _ in range(100):
        found = [x for x in gw.exchanges() if x.method == method]
        if len(found) >= n:
            return found
        import time

        time.sleep(0.05)
    raise AssertionError(f"{n} exchange(s) {method} not recorded")


# -- tools/list and denied calls ---------------------------------------------------------


async def test_it_hides_denied_tools_and_answers_their_calls_with_a_jsonrpc_error(fresh):
    gw = fresh
    gw.policy([rule(1, "no deletes", "deny", tool_names=["delete_*"])])
    async with gw.session() as s:
        names = [t.name for t in (await s.list_tools()).tools]
        assert "delete_customer" not in names
        assert {"lookup_customer", "weather", "export_customers"} <= set(names)
        with pytest.raises(McpError) as e:
            await s.call_tool("delete_customer", {"customer_id": 7})
        assert e.value.error.code == mcpmod.REFUSED
        assert e.value.error.message == "denied by access rule 'no deletes'"
        assert e.value.error.data["rule"]["name"] == "no deletes"
        # The session goes on.
        assert (await s.call_tool("weather", {"city": "Oslo"})).content[0].text == "sunny in Oslo"
    assert calls(gw, "delete_customer") == []
    (listed,) = by_method(gw, "tools/list")
    assert listed.protocol == "mcp"
    assert listed.details["hidden_tools"] == ["delete_customer"]
    assert "delete_customer" not in listed.response_body
    denied = gw.wait_exchange(lambda x: x.details.get("tool") == "delete_customer")
    assert denied.decision == "denied" and denied.rule_id == 1
    assert denied.details["error"]["code"] == mcpmod.REFUSED
    assert denied.details["arguments"] == {"customer_id": 7}
    assert denied.session_key == f"mcp:{denied.details['mcp_session']}"
    assert denied.details["mcp_session"]


async def test_approve_rules_keep_the_tool_visible_and_argument_rules_deny_by_value(fresh):
    gw = fresh
    gw.policy(
        [
            rule(
                1,
                "no competitors",
                "deny",
                tool_names=["lookup_customer"],
                argument_path="$.email",
                argument_pattern=r"@rival\.com$",
            ),
            rule(2, "exports", "approve", tool_names=["export_*"]),
        ]
    )
    async with gw.session() as s:
        names = [t.name for t in (await s.list_tools()).tools]
        assert "lookup_customer" in names and "export_customers" in names
        with pytest.raises(McpError, match="no competitors"):
            await s.call_tool("lookup_customer", {"email": "boss@rival.com"})
        ok = await s.call_tool("lookup_customer", {"email": "jane.roe@example.com"})
        assert not ok.isError
    assert [c["email"] for c in calls(gw, "lookup_customer")] == ["jane.roe@example.com"]


# -- masking --------------------------------------------------------------------------------


async def test_tool_results_are_masked_text_structured_content_and_record(fresh):
    gw = fresh
    async with gw.session() as s:
        result = await s.call_tool("lookup_customer", {"email": "jane.roe@example.com"})
    text = result.content[0].text
    assert_no_pii(text)
    assert json.loads(text)["full_name"] == "[REDACTED]"  # a field rule inside the text block
    assert json.loads(text)["email"] == "[EMAIL]"
    assert result.structuredContent["ssn"] == "[US_SSN]"
    assert result.structuredContent["full_name"] == "[REDACTED]"
    assert_no_pii(json.dumps(result.structuredContent))
    # The tool got the real argument (masking is response-side on this target) ...
    assert calls(gw, "lookup_customer")[0]["email"] == "jane.roe@example.com"
    # ... and nothing of it is recorded.
    call = gw.wait_exchange(lambda x: x.details.get("tool") == "lookup_customer")
    assert call.details["arguments"] == {"email": "[EMAIL]"}
    assert call.details["result"]["structuredContent"]["email"] == "[EMAIL]"
    assert call.details["is_error"] is False
    assert call.response_findings
    assert_no_pii(recorded(gw))


async def test_resources_and_prompts_are_masked_and_ruled_by_uri_and_name(fresh):
    gw = fresh
    gw.policy(
        [
            rule(
                1,
                "no customer 666",
                "deny",
                mcp_methods=["resources/read"],
                tool_names=["customers://666"],
            ),
            rule(
                2,
                "no greetings",
                "deny",
                mcp_methods=["prompts/get"],
                tool_names=["gr*"],
                argument_path="$.name",
                argument_pattern="^Eve$",
            ),
        ]
    )
    async with gw.session() as s:
        res = await s.read_resource("customers://7")
        assert "[EMAIL]" in res.contents[0].text and "[US_SSN]" in res.contents[0].text
        with pytest.raises(McpError, match="no customer 666"):
            await s.read_resource("customers://666")
        prompt = await s.get_prompt("greet", {"name": "Bob"})
        assert "[EMAIL]" in prompt.messages[0].content.text
        with pytest.raises(McpError, match="no greetings"):
            await s.get_prompt("greet", {"name": "Eve"})
    read = gw.wait_exchange(lambda x: x.method == "resources/read" and x.decision == "allowed")
    assert read.details["tool"] == "customers://7"
    assert_no_pii(recorded(gw))


async def test_json_answers_are_filtered_and_masked_too(fresh):
    gw = fresh
    gw.policy([rule(1, "no deletes", "deny", tool_names=["delete_*"])])
    async with gw.session(SLUGS[CRM_JSON]) as s:
        names = [t.name for t in (await s.list_tools()).tools]
        assert "delete_customer" not in names
        result = await s.call_tool("lookup_customer", {"email": "jane.roe@example.com"})
    assert_no_pii(result.content[0].text + json.dumps(result.structuredContent))
    assert calls(gw, "lookup_customer", gw.json_port)
    assert_no_pii(recorded(gw))


async def test_binary_content_is_refused_or_passed_by_the_targets_setting(fresh):
    gw = fresh
    async with gw.session() as s:  # binary_bodies: refuse
        with pytest.raises(McpError) as e:
            await s.call_tool("logo", {})
    assert e.value.error.data["code"] == "binary_refused"
    async with gw.session(SLUGS[BINARY]) as s:  # binary_bodies: pass
        result = await s.call_tool("logo", {})
    assert base64.b64decode(result.content[0].data) == PNG


# -- approvals ------------------------------------------------------------------------------


async def test_a_held_call_waits_for_an_approver_who_sees_tool_and_masked_arguments(fresh):
    gw = fresh
    gw.policy(
        [
            rule(
                1,
                "vip lookups",
                "approve",
                tool_names=["lookup_customer"],
                argument_path="$.email",
                argument_pattern=r"@example\.com$",
            )
        ]
    )
    async with gw.session() as s:
        task = asyncio.create_task(
            s.call_tool("lookup_customer", {"email": "jane.roe@example.com"})
        )
        (req,) = await asyncio.to_thread(gw.approval_requests, 1)
        assert not task.done()
        assert req.protocol == "mcp"
        assert req.method == "tools/call"
        assert req.details == {
            "jsonrpc_method": "tools/call",
            "tool": "lookup_customer",
            "arguments": {"email": "[EMAIL]"},
        }
        assert req.url.endswith("/mcp")
        assert_no_pii(req.body)
        assert json.loads(req.body)["params"]["name"] == "lookup_customer"
        assert calls(gw, "lookup_customer") == []
        gw.decide(req.approval_id)
        result = await asyncio.wait_for(task, 20)
    assert "[EMAIL]" in result.content[0].text
    call = gw.wait_exchange(lambda x: x.details.get("tool") == "lookup_customer")
    assert call.decision == "approved" and call.approval_id == req.approval_id
    assert "approval_wait" in call.timings


async def test_a_denied_approval_is_an_error_naming_who_decided(fresh):
    gw = fresh
    gw.policy([rule(1, "exports", "approve", tool_names=["export_*"])])
    async with gw.session() as s:
        task = asyncio.create_task(s.call_tool("export_customers", {"limit": 5}))
        (req,) = await asyncio.to_thread(gw.approval_requests, 1)
        gw.decide(req.approval_id, "denied", by="alice")
        with pytest.raises(McpError) as e:
            await asyncio.wait_for(task, 20)
    assert e.value.error.code == mcpmod.REFUSED
    assert "denied by alice" in e.value.error.message
    assert e.value.error.data["code"] == "approval_denied"
    assert e.value.error.data["approval_id"] == req.approval_id
    assert calls(gw, "export_customers") == []
    call = gw.wait_exchange(lambda x: x.details.get("tool") == "export_customers")
    assert call.decision == "approval_denied" and call.approval_id == req.approval_id


async def test_a_deferred_call_passes_once_when_repeated_after_approval(fresh):
    gw = fresh
    gw.policy([rule(1, "exports", "approve", tool_names=["export_*"], approval_mode="defer")])
    async with gw.session() as s:
        with pytest.raises(McpError) as e:
            await s.call_tool("export_customers", {"limit": 5})
        data = e.value.error.data
        assert data["code"] == "approval_pending"
        assert data["approval_url"] == f"http://gatehouse.test/approvals/{data['approval_id']}/"
        (req,) = gw.approval_requests(1)
        assert req.mode == "defer" and req.approval_id == data["approval_id"]
        gw.decide(req.approval_id)
        # The retry has another JSON-RPC id, same call: it passes, once.
        result = await s.call_tool("export_customers", {"limit": 5})
        assert "exported 5" in result.content[0].text
        with pytest.raises(McpError, match="needs approval"):
            await s.call_tool("export_customers", {"limit": 5})
    assert len(calls(gw, "export_customers")) == 1


async def test_a_grant_lets_the_call_pass_without_asking(fresh):
    gw = fresh
    gw.policy(
        [rule(1, "exports", "approve", tool_names=["export_*"])],
        grants=[
            {
                "id": 5,
                "agent_id": 1,
                "target_id": 1,
                "method": "tools/call",
                "path_pattern": "export_customers",
                "expires_at": 4e9,
                "approval_id": None,
            }
        ],
    )
    async with gw.session() as s:
        result = await s.call_tool("export_customers", {"limit": 2})
    assert "exported 2" in result.content[0].text
    assert gw.approval_requests(0, timeout=0) == []
    call = gw.wait_exchange(lambda x: x.details.get("tool") == "export_customers")
    assert call.decision == "approved"


# -- drift ----------------------------------------------------------------------------------


async def test_a_tool_that_changes_within_a_session_is_hidden_and_blocked(fresh):
    gw = fresh
    async with gw.session() as s:
        assert "weather" in [t.name for t in (await s.list_tools()).tools]
        assert (await s.call_tool("weather", {"city": "Oslo"})).content[0].text == "sunny in Oslo"
        await s.call_tool("rug_pull", {})
        names = [t.name for t in (await s.list_tools()).tools]
        assert "weather" not in names and "lookup_customer" in names
        with pytest.raises(McpError) as e:
            await s.call_tool("weather", {"city": "Oslo"})
        assert e.value.error.data["code"] == "tool_changed"
        lists = await asyncio.to_thread(by_method, gw, "tools/list", 2)
        key = gw.keys.mcp_tools(1, lists[0].details["mcp_session"])
        stored = gw.redis.client().hgetall(key)
        assert stored[b"changed:weather"] == b"1"
        assert b"fp:weather" in stored and b"fp:lookup_customer" in stored
        assert 0 < gw.redis.client().ttl(key) <= 24 * 3600
    assert not gw.redis.client().exists(key)  # the session's DELETE forgets it
    assert len(calls(gw, "weather")) == 1
    lists = by_method(gw, "tools/list", 2)
    assert lists[0].details["changed_tools"] == []
    assert lists[1].details["changed_tools"] == ["weather"]
    assert "weather" in lists[1].details["hidden_tools"]
    blocked = gw.wait_exchange(
        lambda x: x.details.get("tool") == "weather" and x.decision == "denied"
    )
    assert blocked.details["changed_tools"] == ["weather"]


async def test_a_flagging_target_keeps_a_changed_tool_and_records_the_change(fresh):
    gw = fresh
    async with gw.session(SLUGS[FLAGGING]) as s:
        await s.list_tools()
        await s.call_tool("rug_pull", {})
        assert "weather" in [t.name for t in (await s.list_tools()).tools]
        assert (await s.call_tool("weather", {"city": "Rome"})).content[0].text == "sunny in Rome"
    lists = by_method(gw, "tools/list", 2)
    assert lists[1].details["changed_tools"] == ["weather"]
    assert lists[1].details["hidden_tools"] == []
    call = gw.wait_exchange(
        lambda x: x.details.get("tool") == "weather" and x.decision == "allowed"
    )
    assert call.details["changed_tools"] == ["weather"]


# -- server-initiated requests --------------------------------------------------------------


async def test_sampling_and_elicitation_are_refused_and_answered_by_the_gateway(fresh):
    gw = fresh
    asked: list = []

    async def sampling(context, params):  # noqa: ANN001
        asked.append(params)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text="42"), model="m"
        )

    async with gw.session(sampling_callback=sampling) as s:
        result = await s.call_tool("ask_llm", {"question": "mail jane.roe@example.com?"})
        assert result.content[0].text.startswith("sampling refused: refused by Gatehouse")
        elicited = await s.call_tool("ask_user", {})
        assert elicited.content[0].text.startswith("elicitation refused: refused by Gatehouse")
    assert asked == []  # the client never saw the request
    (refused,) = calls(gw, "ask_llm")
    assert refused["code"] == mcpmod.METHOD_NOT_FOUND
    answers = [
        m["body"]
        for m in gw.received()["messages"]
        if isinstance(m.get("body"), dict) and "error" in m["body"]
    ]
    assert len(answers) == 2 and all(a["error"]["code"] == -32601 for a in answers)
    sampled = gw.wait_exchange(
        lambda x: x.details.get("server_request") is True and x.method == "sampling/createMessage"
    )
    assert sampled.decision == "denied" and sampled.status_code == 202
    assert sampled.details["error"]["code"] == -32601
    assert "[EMAIL]" in json.dumps(sampled.details["arguments"])
    gw.wait_exchange(lambda x: x.method == "elicitation/create")
    assert_no_pii(recorded(gw))


async def test_a_target_that_allows_server_requests_lets_sampling_through(fresh):
    gw = fresh

    async def sampling(context, params):  # noqa: ANN001
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text="42"), model="m"
        )

    async with gw.session(SLUGS[FLAGGING], sampling_callback=sampling) as s:
        result = await s.call_tool("ask_llm", {"question": "six times seven?"})
    assert result.content[0].text == "the model said: 42"
    answer = gw.wait_exchange(lambda x: x.details.get("client_response") is True)
    assert answer.method == "response" and answer.decision == "allowed"
    assert answer.details["result"]["content"]["text"] == "42"


async def test_client_responses_are_dropped_when_server_requests_are_refused(fresh):
    gw = fresh
    r = await asyncio.to_thread(
        gw.post, '{"jsonrpc":"2.0","id":"srv-1","result":{"role":"assistant"}}', path="/mcp"
    )
    assert r.status_code == 202 and r.content == b""
    assert gw.received()["messages"] == []
    x = gw.wait_exchange(lambda x: x.details.get("client_response") is True)
    assert x.decision == "denied" and x.error == "server_requests_refused"


# -- batches, notifications, malformed bodies -------------------------------------------


def test_a_batch_is_answered_per_call_and_recorded_per_message(fresh):
    gw = fresh
    batch = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "weather", "arguments": {"city": "Oslo"}},
        },
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
        {
            "jsonrpc": "2.0",
            "id": "b",
            "method": "tools/call",
            "params": {"name": "lookup_customer", "arguments": {"email": "jane.roe@example.com"}},
        },
    ]
    r = gw.post(json.dumps(batch))
    assert r.status_code == 200
    answers = r.json()
    assert [a["id"] for a in answers] == [1, "b"]
    assert_no_pii(r.text)
    assert "[EMAIL]" in r.text
    (sent,) = [m["body"] for m in gw.received()["messages"]]
    assert sent == batch  # forwarded as sent (request masking is off on this target)
    xs = gw.exchanges(3)
    assert [x.details["batch_index"] for x in xs] == [0, 1, 2]
    assert [x.method for x in xs] == ["tools/call", "notifications/progress", "tools/call"]
    assert xs[1].details["jsonrpc_id"] is None and xs[1].response_body == ""
    assert xs[2].details["arguments"] == {"email": "[EMAIL]"}
    assert xs[2].details["result"]["echo"]["arguments"]["email"] == "[EMAIL]"
    assert_no_pii(recorded(gw))


def test_a_batch_with_a_denied_call_is_refused_whole_naming_the_call(fresh):
    gw = fresh
    gw.policy([rule(1, "no deletes", "deny", tool_names=["delete_*"])])
    batch = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "weather", "arguments": {"city": "Oslo"}},
        },
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "delete_customer", "arguments": {"customer_id": 1}},
        },
        {"jsonrpc": "2.0", "method": "notifications/progress"},
    ]
    r = gw.post(json.dumps(batch))
    assert r.status_code == 200
    first, second = r.json()
    assert second["error"]["message"] == "denied by access rule 'no deletes'"
    assert first["error"]["data"] == {"code": "batch_refused", "refused_ids": [2]}
    assert "id 2" in first["error"]["message"]
    assert gw.received()["messages"] == []
    xs = gw.exchanges(3)
    assert [x.decision for x in xs] == ["denied"] * 3
    assert xs[1].rule_id == 1 and xs[0].error == "batch_refused"


def test_a_batch_answered_as_sse_keeps_its_framing(fresh):
    gw = fresh
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "a"}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "b"}},
    ]
    r = gw.post(json.dumps(batch), path="/raw?sse=1")
    assert r.headers["content-type"].startswith("text/event-stream")
    text = r.text
    assert text.startswith(": hello\r\n\r\n")
    assert "id: e0\r\nevent: message\r\ndata: " in text and "id: e1\r\n" in text
    assert_no_pii(text)
    assert text.count("[EMAIL]") == 2
    xs = gw.exchanges(2)
    assert all(x.details["result"]["content"][0]["text"].endswith("[EMAIL]") for x in xs)


def test_notifications_alone_pass_and_are_recorded_one_each(fresh):
    gw = fresh
    r = gw.post(
        json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": 9, "reason": "mail jane.roe@example.com"},
            }
        )
    )
    assert r.status_code == 202
    (x,) = gw.exchanges(1)
    assert x.method == "notifications/cancelled" and x.status_code == 202
    assert x.details["jsonrpc_id"] is None and x.details["batch_index"] is None
    assert "[EMAIL]" in x.request_body and "jane.roe" not in x.request_body


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", mail: jane.roe@example.com', -32700),
        ('{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}', -32700),
        ('{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":NaN}}', -32700),
        ("[1, 2]", -32600),
        ("[]", -32600),
        ('{"jsonrpc":"1.0","id":1,"method":"tools/list"}', -32600),
        ('{"jsonrpc":"2.0","id":true,"method":"tools/list"}', -32600),
        ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"x"}', -32600),
        ('[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":1,"method":"b"}]', -32600),
    ],
)
def test_a_malformed_body_gets_a_jsonrpc_error_and_is_recorded(fresh, body, code):
    gw = fresh
    r = gw.post(body, path="/mcp")
    assert r.status_code == 400
    answer = r.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] is None
    assert answer["error"]["code"] == code
    assert gw.received()["messages"] == []
    (x,) = gw.exchanges(1)
    assert x.protocol == "mcp" and x.decision == "denied" and x.status_code == 400
    assert x.details["error"]["code"] == code
    assert x.request_body  # nothing lost ...
    assert "jane.roe@example.com" not in x.request_body  # ... and nothing unmasked
    assert x.response_body == r.text


def test_invalid_params_of_a_call_are_refused_with_32602(fresh):
    gw = fresh
    r = gw.post(
        '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"arguments":{}}}', path="/mcp"
    )
    assert r.status_code == 200
    assert r.json()["error"]["code"] == -32602
    assert gw.received()["messages"] == []


# -- streaming, request masking, transport requests ----------------------------------------


async def test_an_sse_answer_stays_streamed_progress_arrives_before_the_result(fresh):
    gw = fresh
    seen: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()

    async def progress(value, total, message):  # noqa: ANN001
        seen.append((loop.time(), message or ""))

    async with gw.session() as s:
        t0 = loop.time()
        result = await s.call_tool("slow_report", {}, progress_callback=progress)
        done = loop.time()
    assert result.content[0].text == "report for [EMAIL]"
    (at, message) = seen[0]
    assert message == "half way, mail [EMAIL]"  # notifications are masked too
    assert done - at > 0.7 and at - t0 < 0.7  # it came while the tool was still running


async def test_request_rules_mask_arguments_before_they_reach_the_server(fresh):
    gw = fresh
    masking = [
        {**r, "direction": "both"}
        for r in __import__("tests.proxy_worker.mcp.harness", fromlist=["MASKING"]).MASKING
    ]
    gw.policy(masking=masking)
    async with gw.session() as s:
        await s.call_tool("lookup_customer", {"email": "jane.roe@example.com"})
    assert calls(gw, "lookup_customer")[0]["email"] == "[EMAIL]"
    call = gw.wait_exchange(lambda x: x.details.get("tool") == "lookup_customer")
    assert call.details["arguments"] == {"email": "[EMAIL]"}
    assert {"type": "EMAIL", "location": "$.params.arguments.email", "count": 1} in (
        call.request_findings
    )


async def test_the_get_stream_and_delete_are_recorded_as_http_exchanges_of_the_session(fresh):
    gw = fresh
    async with gw.session() as s:
        await s.list_tools()
    (listed,) = by_method(gw, "tools/list")
    session = listed.session_key
    delete = gw.wait_exchange(lambda x: x.method == "DELETE")
    assert delete.protocol == "http" and delete.session_key == session
    get = gw.wait_exchange(lambda x: x.method == "GET")
    assert get.protocol == "http" and get.session_key == session


def test_an_unknown_session_is_the_servers_404_recorded_as_the_calls_error(fresh):
    gw = fresh
    r = gw.post(
        '{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
        path="/mcp",
        **{"Mcp-Session-Id": "no-such-session", "Mcp-Protocol-Version": "2025-06-18"},
    )
    assert r.status_code == 404
    (x,) = gw.exchanges(1)
    assert x.method == "tools/list" and x.status_code == 404
    assert x.details["is_error"] is True and "HTTP 404" in x.details["error"]["message"]
    assert x.session_key == "mcp:no-such-session"

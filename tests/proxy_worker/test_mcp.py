"""JSON-RPC and MCP streamable HTTP messages (``proxy_worker.mcp``), and McpGate's answer
stream (``McpStream``) on split SSE bodies, without a network.

Strict body parsing (parse errors, invalid requests, batches), call parameters, SSE
framing across every split point (hypothesis), rebuilding events, tool fingerprints,
list filtering, base64 payloads kept from the detectors, what approvals and records
keep, and the stream's masking, filtering and server-request removal.
"""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as hs
from mitmproxy.test import tflow

from proxy_worker import mcp
from proxy_worker.addons.mcp_gate import McpFlow, McpGate, McpStream, _mask_value, _split_findings
from proxy_worker.contract import SCHEMA_VERSION, Keys
from proxy_worker.flowstate import state_of
from proxy_worker.link import ControlPlaneLink
from proxy_worker.masking import Masker, MaskingRule

# -- request bodies ------------------------------------------------------------------------


def test_a_single_request_notification_and_response_are_told_apart():
    body = mcp.parse_body(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    assert not body.batch and body.messages[0].kind == "request"
    assert body.messages[0].index is None
    assert mcp.parse_body(b'{"jsonrpc":"2.0","method":"notifications/x"}').messages[0].kind == (
        "notification"
    )
    resp = mcp.parse_body(b'{"jsonrpc":"2.0","id":"s1","result":{}}').messages[0]
    assert resp.kind == "response" and resp.method == ""
    err = mcp.parse_body(b'{"jsonrpc":"2.0","id":"s1","error":{"code":1,"message":"no"}}')
    assert err.messages[0].kind == "response"


def test_a_batch_keeps_order_and_positions():
    body = mcp.parse_body(
        b'[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"n"},'
        b'{"jsonrpc":"2.0","id":"x","result":1}]'
    )
    assert body.batch
    assert [(m.kind, m.index) for m in body.messages] == [
        ("request", 0),
        ("notification", 1),
        ("response", 2),
    ]
    assert [m.id for m in body.requests] == [1]


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"{", -32700, "Parse error"),
        (b"\xff\xfe{}", -32700, "UTF-8"),
        (b'{"a":1,"a":2}', -32700, "repeated"),
        (b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"x":Infinity}}', -32700, "Infinity"),
        (b"[" * 100_000, -32700, ""),
        (b"", -32600, "empty"),
        (b"  ", -32600, "empty"),
        (b"[]", -32600, "empty batch"),
        (b"42", -32600, "not a JSON-RPC message"),
        (b'"x"', -32600, ""),
        (b"[1]", -32600, "batch element 0"),
        (b'{"id":1,"method":"m"}', -32600, '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc":"2.0","id":1,"method":""}', -32600, "method"),
        (b'{"jsonrpc":"2.0","id":1,"method":7}', -32600, "method"),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"m"}', -32600, "id"),
        (b'{"jsonrpc":"2.0","id":null,"method":"m"}', -32600, "id"),
        (b'{"jsonrpc":"2.0","id":[1],"method":"m"}', -32600, "id"),
        (b'{"jsonrpc":"2.0","id":false,"method":"m"}', -32600, "id"),
        (b'{"jsonrpc":"2.0","id":1,"method":"m","params":3}', -32600, "params"),
        (b'{"jsonrpc":"2.0","id":1,"method":"m","result":3}', -32600, "no result"),
        (b'{"jsonrpc":"2.0","id":1}', -32600, "result/error"),
        (b'{"jsonrpc":"2.0","id":1,"result":1,"error":{}}', -32600, "result/error"),
        (b'{"jsonrpc":"2.0","id":1,"error":{"code":"x"}}', -32600, "code"),
        (
            b'[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":1,"method":"b"}]',
            -32600,
            "twice",
        ),
    ],
)
def test_bodies_that_are_not_json_rpc_are_refused_with_the_right_code(data, code, words):
    with pytest.raises(mcp.JsonRpcError) as e:
        mcp.parse_body(data)
    assert e.value.code == code
    assert words in e.value.message


def test_ids_one_and_the_string_one_are_different_ids():
    body = mcp.parse_body(
        b'[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":"1","method":"b"}]'
    )
    assert len({mcp.id_key(m.id) for m in body.messages}) == 2


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"method": "tools/call", "params": {"name": "t", "arguments": {"a": 1}}}, ("t", {"a": 1})),
        ({"method": "tools/call", "params": {"name": "t"}}, ("t", {})),
        ({"method": "tools/call", "params": {"name": "t", "arguments": None}}, ("t", {})),
        (
            {"method": "prompts/get", "params": {"name": "p", "arguments": {"n": "x"}}},
            ("p", {"n": "x"}),
        ),
        ({"method": "resources/read", "params": {"uri": "file:///a"}}, ("file:///a", {})),
    ],
)
def test_call_of_reads_what_rules_see(message, expected):
    m = mcp.classify({"jsonrpc": "2.0", "id": 1, **message})
    assert mcp.call_of(m) == expected


@pytest.mark.parametrize(
    "message",
    [
        {"method": "tools/call"},
        {"method": "tools/call", "params": {"arguments": {}}},
        {"method": "tools/call", "params": {"name": 3}},
        {"method": "tools/call", "params": {"name": "t", "arguments": [1]}},
        {"method": "tools/call", "params": ["t"]},
        {"method": "resources/read", "params": {"name": "x"}},
    ],
)
def test_invalid_call_params_are_32602(message):
    with pytest.raises(mcp.JsonRpcError) as e:
        mcp.call_of(mcp.classify({"jsonrpc": "2.0", "id": 1, **message}))
    assert e.value.code == mcp.INVALID_PARAMS


def test_server_messages_are_classified():
    assert mcp.server_message_kind({"jsonrpc": "2.0", "id": 1, "method": "ping"}) == "request"
    assert mcp.server_message_kind({"jsonrpc": "2.0", "method": "n"}) == "notification"
    assert mcp.server_message_kind({"jsonrpc": "2.0", "id": 1, "result": {}}) == "response"
    assert mcp.server_message_kind({"jsonrpc": "2.0", "id": 1}) == "other"
    assert mcp.server_message_kind([1]) == "other"


# -- SSE framing ---------------------------------------------------------------------------

STREAM = (
    b"\xef\xbb\xbf: comment\r\n\r\n"
    b'id: 1\r\nevent: message\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
    b'retry: 10\nid: 2\ndata: {"b": 2}\n\n'
    b"data: x\rdata: y\r\r"
    b"id: 3\n\n"
    b"data: tail"
)


def _all_events(chunks: list[bytes]) -> list[mcp.SseEvent]:
    p = mcp.SseParser()
    out = []
    for c in chunks:
        out += p.feed(c)
    return out + p.finish()


def test_sse_events_are_split_with_every_kind_of_line_end():
    events = _all_events([STREAM])
    assert [e.data for e in events] == [None, '{"a":\n1}', '{"b": 2}', "x\ny", None, "tail"]
    assert [e.id for e in events] == [None, "1", "2", None, "3", None]
    assert events[1].event == "message" and events[1].eol == b"\r\n"
    assert b"".join(e.raw for e in events) == STREAM


@settings(max_examples=300, deadline=None)
@given(hs.lists(hs.integers(min_value=0, max_value=len(STREAM)), max_size=8))
def test_sse_events_are_the_same_whatever_the_chunking(cuts):
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    events = _all_events(chunks)
    whole = _all_events([STREAM])
    assert [(e.data, e.id, e.raw) for e in events] == [(e.data, e.id, e.raw) for e in whole]


def test_an_oversized_event_is_refused():
    p = mcp.SseParser(max_event_bytes=100)
    with pytest.raises(ValueError):
        p.feed(b"data: " + b"x" * 200)


def test_rebuilding_an_event_keeps_its_other_lines_and_line_ends():
    (ev,) = _all_events([b': note\r\nid: 7\r\ndata: {"a":\r\ndata: 1}\r\nevent: message\r\n\r\n'])
    assert mcp.rebuild_event(ev, '{"a":2}') == (
        b': note\r\nid: 7\r\ndata: {"a":2}\r\nevent: message\r\n\r\n'
    )
    (plain,) = _all_events([b"data: a\n\n"])
    assert mcp.rebuild_event(plain, "b\nc") == b"data: b\ndata: c\n\n"


# -- tools, lists, blobs -----------------------------------------------------------------


def test_a_tool_fingerprint_covers_description_schema_and_annotations_only():
    tool = {"name": "t", "description": "d", "inputSchema": {"type": "object", "a": 1, "b": 2}}
    fp = mcp.tool_fingerprint(tool)
    reordered = {"inputSchema": {"b": 2, "a": 1, "type": "object"}, "description": "d", "name": "t"}
    assert mcp.tool_fingerprint(reordered) == fp
    assert mcp.tool_fingerprint({**tool, "title": "T", "outputSchema": {}}) == fp
    assert mcp.tool_fingerprint({**tool, "description": "d!"}) != fp
    assert mcp.tool_fingerprint({**tool, "inputSchema": {"type": "object"}}) != fp
    assert mcp.tool_fingerprint({**tool, "annotations": {"destructiveHint": True}}) != fp


def test_lists_lose_hidden_and_unnamed_entries():
    result = {"tools": [{"name": "a"}, {"name": "b"}, {"x": 1}, "junk"], "nextCursor": "c"}
    assert [n for _i, n, _e in mcp.list_entries("tools/list", result)] == ["a", "b"]
    assert mcp.filter_list("tools/list", result, {"b"}) == {
        "tools": [{"name": "a"}],
        "nextCursor": "c",
    }
    res = {"resources": [{"uri": "file:///a", "name": "a"}, {"uri": "file:///b", "name": "b"}]}
    assert mcp.filter_list("resources/list", res, {"file:///a"})["resources"] == [
        {"uri": "file:///b", "name": "b"}
    ]


def test_blobs_are_stashed_and_restored():
    value = {
        "content": [
            {"type": "image", "data": "AAAA4111111111111111", "mimeType": "image/png"},
            {"type": "text", "text": "mail a@example.com"},
        ],
        "contents": [{"uri": "x", "blob": "QUJD"}],
    }
    assert len(mcp.find_blobs(value)) == 2
    stashed, blobs = mcp.stash_blobs(value)
    assert blobs == ["AAAA4111111111111111", "QUJD"]
    assert "4111" not in json.dumps(stashed)
    assert mcp.restore_blobs(stashed, blobs) == value


def test_blob_payloads_are_left_alone_by_the_detectors():
    masker = Masker(
        [MaskingRule(id=1, name="pii", entity_types=("EMAIL", "CREDIT_CARD"))], hash_key=b"k"
    )
    msg = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "content": [
                {"type": "image", "data": "4111111111111111", "mimeType": "image/png"},
                {"type": "text", "text": "card 4111111111111111"},
            ]
        },
    }
    masked, findings = _mask_value(masker, msg)
    content = masked["result"]["content"]
    assert content[0]["data"] == "4111111111111111"
    assert content[1]["text"] == "card [CREDIT_CARD]"
    assert findings


def test_json_text_blocks_are_masked_as_json_and_schemas_as_text():
    masker = Masker(
        [MaskingRule(id=1, name="f", entity_types=("EMAIL",), field_names=("email",))],
        hash_key=b"k",
    )
    text = json.dumps({"email": "bob", "other": "x"}, indent=2)
    msg = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}]}}
    masked, _ = _mask_value(masker, msg)
    inner = json.loads(masked["result"]["content"][0]["text"])
    assert inner == {"email": "[REDACTED]", "other": "x"}
    listed = {
        "jsonrpc": "2.0",
        "id": 2,
        "result": {
            "tools": [
                {
                    "name": "t",
                    "description": "mail a@example.com",
                    "inputSchema": {
                        "type": "object",
                        "properties": {"email": {"type": "string", "default": "a@example.com"}},
                    },
                }
            ]
        },
    }
    masked, _ = _mask_value(masker, listed)
    tool = masked["result"]["tools"][0]
    assert tool["description"] == "mail [EMAIL]"
    assert tool["inputSchema"]["properties"]["email"] == {"type": "string", "default": "[EMAIL]"}


# -- what approvals and records keep -----------------------------------------------------


def test_approval_details_come_from_the_masked_request():
    body = b'{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"u://[EMAIL]"}}'
    assert mcp.approval_details(body, {"jsonrpc_method": "x", "tool": "u://a@b.c"}) == {
        "jsonrpc_method": "resources/read",
        "tool": "u://[EMAIL]",
        "arguments": {},
    }
    call = (
        b'[{"jsonrpc":"2.0","id":3,"method":"tools/call",'
        b'"params":{"name":"t","arguments":{"e":"[EMAIL]"}}}]'
    )
    assert mcp.approval_details(call, {})["arguments"] == {"e": "[EMAIL]"}
    assert mcp.approval_details(b"{", {"jsonrpc_method": "tools/call", "tool": "raw"}) == {
        "jsonrpc_method": "tools/call",
        "tool": "",
        "arguments": None,
    }


def test_recorded_values_are_bounded():
    assert mcp.bounded({"a": "x"}) == {"a": "x"}
    big = {"a": "x" * 70_000}
    cut = mcp.bounded(big)
    assert isinstance(cut, str) and len(cut) == mcp.RECORD_VALUE_LIMIT
    assert mcp.bounded(None) is None and mcp.bounded(3) == 3


def test_session_ids_become_safe_key_parts():
    assert mcp.session_slot("abc123") == "abc123"
    assert mcp.session_slot("a:b").startswith("sha256:")
    assert mcp.session_slot("x" * 200).startswith("sha256:")
    assert mcp.session_slot("é").startswith("sha256:")
    assert Keys("gh").mcp_tools(3, "abc") == "gh:mcp:tools:3:abc"


def test_batch_findings_are_split_per_element():
    findings = [
        {"type": "EMAIL", "location": "$[0].params.arguments.e", "count": 1},
        {"type": "EMAIL", "location": "$[1]", "count": 1},
        {"type": "EMAIL", "location": "$[10].x", "count": 2},
    ]
    assert _split_findings(findings, 1) == [{"type": "EMAIL", "location": "$", "count": 1}]
    assert _split_findings(findings, 0) == [
        {"type": "EMAIL", "location": "$.params.arguments.e", "count": 1}
    ]
    assert _split_findings(findings, None) == findings


# -- the answer stream -----------------------------------------------------------------------


DOC = {
    "v": SCHEMA_VERSION,
    "version": 2,
    "targets": [
        {
            "id": 1,
            "slug": "t",
            "kind": "mcp",
            "upstream": "http://up.test",
            "mcp": {"block_changed_tools": True, "allow_server_requests": False},
        }
    ],
    "agents": [{"id": 7, "name": "bot", "token_hashes": []}],
    "masking_rules": [
        {
            "id": 1,
            "name": "pii",
            "entity_types": ["EMAIL"],
            "direction": "response",
            "strategy": "redact",
            "target_ids": None,
        }
    ],
    "access_rules": [{"id": 1, "name": "no deletes", "action": "deny", "tool_names": ["delete_*"]}],
}


class _Gate(McpGate):
    """McpGate without background work (what it would spawn is kept)."""

    def __init__(self, link: ControlPlaneLink) -> None:
        super().__init__(link)
        self.spawned: list = []

    def _spawn(self, coro) -> None:  # noqa: ANN001
        coro.close()
        self.spawned.append(coro)


@pytest.fixture
def gate(tmp_path):
    link = ControlPlaneLink(
        redis_url="redis://127.0.0.1:1/0",
        keys=Keys("ghtest_mcpunit"),
        worker_id="w",
        worker_key=Fernet.generate_key(),
        masking_key=b"k",
        spool_dir=tmp_path,
    )
    link.install(DOC)
    return _Gate(link)


def _stream(gate: _Gate, request: list | dict) -> tuple[McpStream, McpFlow]:
    f = tflow.tflow(resp=True)
    st = state_of(f)
    policy = gate.link.state.policy
    st.target, st.agent = policy.targets_by_id[1], policy.agents_by_id[7]
    body = mcp.parse_body(json.dumps(request).encode())
    mf = McpFlow(session="s1", body=body, forwarded=list(range(len(body.messages))))
    for pos, m in enumerate(body.messages):
        if m.kind == "request":
            mf.by_id[mcp.id_key(m.id)] = pos
    st.mcp = mf
    masker = gate.link.state.masker(1, "response")
    return McpStream(gate, f, st, mf, masker, "", sse=True), mf


def _events(*messages: dict, eol: str = "\n") -> bytes:
    return b"".join(
        f"id: e{i}{eol}event: message{eol}data: {json.dumps(m)}{eol}{eol}".encode()
        for i, m in enumerate(messages)
    )


SSE_ANSWER = _events(
    {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"message": "to a@example.com"},
    },
    {"jsonrpc": "2.0", "id": "srv", "method": "sampling/createMessage", "params": {}},
    {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "tools": [
                {"name": "weather", "description": "w", "inputSchema": {"type": "object"}},
                {"name": "delete_customer", "description": "d", "inputSchema": {"type": "object"}},
            ]
        },
    },
    eol="\r\n",
)


def _run(stream: McpStream, chunks: list[bytes]) -> bytes:
    out = b""
    for c in [*chunks, b""]:
        parts = stream(c)
        assert isinstance(parts, list) and all(parts)  # never b"": it would end a chunked body
        out += b"".join(parts)
    return out


def test_the_stream_masks_filters_and_removes_server_requests(gate):
    stream, mf = _stream(gate, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    out = _run(stream, [SSE_ANSWER])
    text = out.decode()
    assert "a@example.com" not in text and "to [EMAIL]" in text
    assert "sampling/createMessage" not in text and "id: e1" not in text
    assert "delete_customer" not in text and '"weather"' in text
    assert "id: e0\r\nevent: message\r\ndata: " in text and "id: e2\r\n" in text
    answer = mf.answers[mcp.id_key(1)]
    assert answer.hidden == ["delete_customer"]
    assert len(gate.spawned) == 1  # the gateway's answer to the server request
    assert not stream.error


@settings(max_examples=150, deadline=None)
@given(hs.lists(hs.integers(min_value=0, max_value=len(SSE_ANSWER)), max_size=6))
def test_the_stream_gives_the_same_answer_whatever_the_chunking(tmp_path_factory, cuts):
    link = ControlPlaneLink(
        redis_url="redis://127.0.0.1:1/0",
        keys=Keys("ghtest_mcpunit"),
        worker_id="w",
        worker_key=Fernet.generate_key(),
        masking_key=b"k",
        spool_dir=tmp_path_factory.mktemp("s"),
    )
    link.install(DOC)
    gate = _Gate(link)
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    whole = _run(_stream(gate, request)[0], [SSE_ANSWER])
    points = sorted(set(cuts))
    chunks = [
        SSE_ANSWER[a:b] for a, b in zip([0, *points], [*points, len(SSE_ANSWER)], strict=True)
    ]
    assert _run(_stream(gate, request)[0], [c for c in chunks if c]) == whole


def test_a_broken_stream_ends_with_errors_for_the_unanswered_calls(gate):
    stream, _mf = _stream(
        gate,
        [
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "a"}},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "b"}},
        ],
    )
    stream.limit = 10
    stream._sse.max_event_bytes = 10
    out = _run(stream, [b'id: 1\ndata: {"jsonrpc":"2.0","id":1,"result":{}}'])
    assert stream.error
    errors = [
        json.loads(line[6:]) for line in out.decode().splitlines() if line.startswith("data: ")
    ]
    assert [e["id"] for e in errors] == [1, 2]
    assert all(e["error"]["code"] == mcp.INTERNAL_ERROR for e in errors)


# -- the request hook ------------------------------------------------------------------------


def _post(gate: _Gate, body: bytes):  # noqa: ANN202
    f = tflow.tflow()
    f.request.method = "POST"
    f.request.content = body
    st = state_of(f)
    policy = gate.link.state.policy
    st.target, st.agent = policy.targets_by_id[1], policy.agents_by_id[7]
    return f, st


async def test_the_hook_answers_a_malformed_body_itself(gate):
    f, st = _post(gate, b'{"jsonrpc": "2.0", "id": 1,')
    await gate.request(f)
    assert f.response.status_code == 400
    assert json.loads(f.response.content)["error"]["code"] == mcp.PARSE_ERROR
    assert st.answered_by_gateway and st.mcp.records_calls


async def test_the_hook_refuses_a_denied_call_and_holds_an_approval_only_alone(gate):
    f, st = _post(
        gate, b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"delete_x"}}'
    )
    await gate.request(f)
    answer = json.loads(f.response.content)
    assert f.response.status_code == 200 and answer["id"] == 5
    assert answer["error"]["message"] == "denied by access rule 'no deletes'"
    f, st = _post(
        gate, b'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"weather"}}'
    )
    await gate.request(f)
    assert f.response is None and st.mcp.forwarded == [0]
    assert st.access.action == "allow" and st.protocol == "mcp"


async def test_the_hook_fails_closed_with_a_jsonrpc_error(gate, monkeypatch):
    def boom(*_a, **_k):  # noqa: ANN202
        raise RuntimeError("bug")

    monkeypatch.setattr(type(gate.link.state.policy), "evaluate_mcp_call", boom)
    f, st = _post(
        gate,
        b'[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"weather"}},'
        b'{"jsonrpc":"2.0","method":"notifications/x"}]',
    )
    await gate.request(f)
    assert f.response is not None  # never forwarded
    (err,) = json.loads(f.response.content)
    assert err["id"] == 1 and err["error"]["code"] == mcp.INTERNAL_ERROR
    assert "RuntimeError" in err["error"]["message"]

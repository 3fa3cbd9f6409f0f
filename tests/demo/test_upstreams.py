"""Tests of the demo upstreams: customers DB, datasette + auth plugin, LLM and echo servers.

No Django fixture is used here; if the project's Django settings are not
importable, run with ``pytest -p no:django tests/demo``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import openai
import pytest
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.us import ssn as stdnum_ssn

from demo import customers_db, echo_upstream, llm_upstream
from tests.demo.conftest import API_KEY

REPO = Path(__file__).resolve().parents[2]
PLUGINS_DIR = REPO / "demo" / "datasette_plugins"
METADATA = REPO / "demo" / "datasette_metadata.json"
DATASETTE_TOKEN = "ds-test-token-5f2c"


# --------------------------------------------------------------------------- helpers


def _free_port() -> int:
    """A currently free loopback TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _datasette_executable() -> str:
    """The venv's ``datasette`` script (beside the running interpreter), else PATH."""
    candidate = Path(sys.executable).parent / "datasette"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("datasette")
    if not found:
        pytest.skip("datasette executable not found")
    return found


def _load_plugin() -> ModuleType:
    """Import the datasette plugin file (it lives in a plugins dir, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "gatehouse_auth_under_test", PLUGINS_DIR / "gatehouse_auth.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- customers DB


def test_customers_db_has_valid_personal_data(tmp_path: Path) -> None:
    """Every card is Luhn-valid, every IBAN and SSN valid, addresses are one line."""
    path = customers_db.build_customers_db(tmp_path / "customers.db", rows=60)
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT id, name, email, phone, ssn, credit_card, iban, address, city, created_at"
            " FROM customers"
        ).fetchall()
        orders = conn.execute("SELECT id, customer_id, amount_cents, status FROM orders").fetchall()
    finally:
        conn.close()
    assert len(rows) == 60
    for _id, name, email, phone, ssn, card, iban, address, city, created_at in rows:
        assert name and " " in name
        assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", email), email
        assert phone
        assert re.fullmatch(r"\d{3}-\d{2}-\d{4}", ssn), ssn
        assert stdnum_ssn.is_valid(ssn), ssn
        assert card.isdigit() and luhn.is_valid(card), card
        assert stdnum_iban.is_valid(iban), iban
        assert "\n" not in address and city in address
        assert created_at.startswith("20")
    assert orders, "orders table is empty"
    ids = {row[0] for row in rows}
    assert all(customer_id in ids and amount > 0 for _, customer_id, amount, _ in orders)


def test_customers_db_is_deterministic_idempotent_and_atomic(tmp_path: Path) -> None:
    """Same seed -> same bytes; an existing file is left alone; no temp file remains."""
    a = customers_db.build_customers_db(tmp_path / "a" / "customers.db", rows=20)
    b = customers_db.build_customers_db(tmp_path / "b" / "customers.db", rows=20)
    assert a.read_bytes() == b.read_bytes()

    existing = tmp_path / "c" / "customers.db"
    existing.parent.mkdir()
    existing.write_bytes(b"not a database")
    assert customers_db.build_customers_db(existing, rows=5) == existing
    assert existing.read_bytes() == b"not a database"

    before = a.stat().st_mtime_ns
    customers_db.build_customers_db(a, rows=99)
    assert a.stat().st_mtime_ns == before
    assert sorted(p.name for p in a.parent.iterdir()) == ["customers.db"]


def test_customers_db_cli(tmp_path: Path) -> None:
    """``main`` builds the file with ``--rows``."""
    target = tmp_path / "cli.db"
    assert customers_db.main([str(target), "--rows", "7"]) == 0
    conn = sqlite3.connect(target)
    try:
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 7
    finally:
        conn.close()


# --------------------------------------------------------------------------- LLM upstream


def test_split_into_pieces() -> None:
    """Pieces are 3-6 characters (last may be shorter) and join back to the text."""
    text = "You said: my card is 4111 1111 1111 1111 and my SSN 123-45-6789"
    pieces = llm_upstream.split_into_pieces(text)
    assert "".join(pieces) == text
    assert all(3 <= len(p) <= 6 for p in pieces[:-1])
    assert 1 <= len(pieces[-1]) <= 6
    assert pieces == llm_upstream.split_into_pieces(text)
    assert llm_upstream.split_into_pieces("") == []


def test_llm_models_and_plain_completion(
    llm_server: llm_upstream.LLMUpstreamServer, llm_client: openai.OpenAI
) -> None:
    """Non-streamed completion via the SDK; the request is recorded."""
    assert [m.id for m in llm_client.models.list()] == ["gatehouse-echo"]
    completion = llm_client.chat.completions.create(
        model="gatehouse-echo",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "my email is jane.doe@example.com"},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "You said: my email is jane.doe@example.com"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0

    posted = [r for r in llm_server.received if r["path"] == "/v1/chat/completions"]
    assert len(posted) == 1
    assert posted[0]["method"] == "POST"
    assert posted[0]["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert (
        json.loads(posted[0]["body"])["messages"][1]["content"]
        == "my email is jane.doe@example.com"
    )


def test_llm_streamed_completion(llm_client: openai.OpenAI) -> None:
    """Streamed via the SDK: role chunk, 3-6 char deltas, stop, usage."""
    stream = llm_client.chat.completions.create(
        model="gatehouse-echo",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "call me on +1 415 555 2671"}]}
        ],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    first = chunks[0].choices[0]
    assert first.delta.role == "assistant" and first.delta.content == ""
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    pieces = [c.choices[0].delta.content for c in content_chunks]
    assert "".join(pieces) == "You said: call me on +1 415 555 2671"
    assert len(pieces) > 5 and all(3 <= len(p) <= 6 for p in pieces[:-1])
    assert not any("415 555 2671" in p for p in pieces), (
        "the phone number should be split across deltas"
    )
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_llm_stream_raw_sse_format_and_delay(llm_server: llm_upstream.LLMUpstreamServer) -> None:
    """Raw SSE: events arrive one by one (flushed), end with ``data: [DONE]``."""
    body = {
        "model": "gatehouse-echo",
        "stream": True,
        "messages": [{"role": "user", "content": "hello world"}],
    }
    started = time.monotonic()
    arrivals: list[float] = []
    events: list[str] = []
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST",
            llm_server.url + "/v1/chat/completions?delay_ms=120",
            json=body,
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: ") :])
                arrivals.append(time.monotonic() - started)
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    # 7 events after the first, 120 ms apart: the first must not wait for the rest.
    assert arrivals[-1] - arrivals[0] >= 0.6
    assert arrivals[0] < arrivals[-1] - 0.5


CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "lookup_customer",
            "description": "A customer by e-mail.",
            "parameters": {
                "type": "object",
                "properties": {"email": {"type": "string"}, "note": {"type": "string"}},
                "required": ["email", "note"],
                "additionalProperties": False,
            },
        },
    },
]
TOOL_PROMPT = "Please look up jane.doe@example.com, she called from +1 415 555 2671"
TOOL_RESULT = "Jane Doe, SSN 123-45-6789"


def test_llm_chat_tool_call_plain(
    llm_server: llm_upstream.LLMUpstreamServer, llm_client: openai.OpenAI
) -> None:
    """Offered tools: ``lookup_customer`` is called; its ``role: "tool"`` result is answered."""
    messages: list[Any] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": TOOL_PROMPT},
    ]
    completion = llm_client.chat.completions.create(
        model="gatehouse-echo", messages=messages, tools=CHAT_TOOLS
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "lookup_customer"
    assert json.loads(call.function.arguments) == {
        "email": "jane.doe@example.com",
        "note": TOOL_PROMPT,
    }
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT},
    ]
    answer = llm_client.chat.completions.create(
        model="gatehouse-echo", messages=messages, tools=CHAT_TOOLS
    )
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].message.content == (
        f"Tool result: {TOOL_RESULT}\nYou said: {TOOL_PROMPT}"
    )
    sent = json.loads(llm_server.received[-1]["body"])
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT}


def test_llm_chat_tool_call_streamed(llm_client: openai.OpenAI) -> None:
    """Streamed: the call's id and name first, then its arguments split across chunks."""
    stream = llm_client.chat.completions.create(
        model="gatehouse-echo",
        messages=[{"role": "user", "content": TOOL_PROMPT}],
        tools=CHAT_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content is None
    assert first.tool_calls is not None and len(first.tool_calls) == 1
    head = first.tool_calls[0]
    assert head.index == 0 and head.id is not None and head.id.startswith("call_")
    assert head.type == "function" and head.function is not None
    assert head.function.name == "lookup_customer" and head.function.arguments == ""
    pieces = []
    for chunk in chunks[1:]:
        if chunk.choices and chunk.choices[0].delta.tool_calls:
            (delta,) = chunk.choices[0].delta.tool_calls
            assert delta.index == 0 and delta.id is None and delta.function is not None
            pieces.append(delta.function.arguments)
    arguments = "".join(pieces)
    assert json.loads(arguments) == {"email": "jane.doe@example.com", "note": TOOL_PROMPT}
    assert len(pieces) > 10 and all(3 <= len(p) <= 6 for p in pieces[:-1])
    assert not any("jane.doe@example.com" in p for p in pieces), "the e-mail should be split"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None

    with llm_client.chat.completions.stream(
        model="gatehouse-echo",
        messages=[{"role": "user", "content": TOOL_PROMPT}],
        tools=CHAT_TOOLS,
    ) as helper:
        final = helper.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "lookup_customer"
    assert json.loads(calls[0].function.arguments)["email"] == "jane.doe@example.com"


def test_llm_chat_streamed_tool_result(llm_client: openai.OpenAI) -> None:
    """A streamed answer to a tool result: the result comes back split in the text deltas."""
    stream = llm_client.chat.completions.create(
        model="gatehouse-echo",
        messages=[
            {"role": "user", "content": TOOL_PROMPT},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup_customer", "arguments": "{}"},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": [{"type": "text", "text": TOOL_RESULT}],
            },
        ],
        tools=CHAT_TOOLS,
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Tool result: {TOOL_RESULT}\nYou said: {TOOL_PROMPT}"
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("none", None),
        ("auto", "lookup_customer"),
        ("required", "lookup_customer"),
        ({"type": "function", "function": {"name": "get_weather"}}, "get_weather"),
    ],
)
def test_llm_chat_tool_choice(
    llm_client: openai.OpenAI, tool_choice: Any, expected: str | None
) -> None:
    """``tool_choice`` "none" answers with text; a named function is the one called."""
    completion = llm_client.chat.completions.create(
        model="gatehouse-echo",
        messages=[{"role": "user", "content": TOOL_PROMPT}],
        tools=CHAT_TOOLS,
        tool_choice=tool_choice,
    )
    message = completion.choices[0].message
    if expected is None:
        assert message.tool_calls is None and message.content == f"You said: {TOOL_PROMPT}"
    else:
        assert message.tool_calls is not None
        assert message.tool_calls[0].function.name == expected


def test_llm_chat_new_user_message_calls_the_tool_again(llm_client: openai.OpenAI) -> None:
    """Only what follows the last user message counts: a new question calls the tool anew."""
    completion = llm_client.chat.completions.create(
        model="gatehouse-echo",
        messages=[
            {"role": "user", "content": TOOL_PROMPT},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup_customer", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": TOOL_RESULT},
            {"role": "assistant", "content": "Tool result: ..."},
            {"role": "user", "content": "and john@example.org?"},
        ],
        tools=CHAT_TOOLS,
    )
    calls = completion.choices[0].message.tool_calls
    assert calls is not None
    assert json.loads(calls[0].function.arguments) == {
        "email": "john@example.org",
        "note": "and john@example.org?",
    }


def test_llm_rejects_bad_or_missing_key(llm_server: llm_upstream.LLMUpstreamServer) -> None:
    """401 with an OpenAI-style error for a wrong key (SDK) and for no key (raw)."""
    bad = openai.OpenAI(
        base_url=llm_server.url + "/v1", api_key="sk-wrong", max_retries=0, timeout=10
    )
    with pytest.raises(openai.AuthenticationError) as excinfo:
        bad.chat.completions.create(
            model="gatehouse-echo", messages=[{"role": "user", "content": "hi"}]
        )
    assert excinfo.value.status_code == 401
    assert isinstance(excinfo.value.body, dict) and excinfo.value.body["code"] == "invalid_api_key"
    bad.close()

    response = httpx.get(llm_server.url + "/v1/models", timeout=10)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert error["message"]


def test_llm_received_endpoint(
    llm_server: llm_upstream.LLMUpstreamServer, llm_client: openai.OpenAI
) -> None:
    """``GET /_received`` lists requests without auth; ``DELETE`` clears them."""
    llm_client.models.list()
    listed = httpx.get(llm_server.url + "/_received", timeout=10).json()
    assert [(r["method"], r["path"]) for r in listed] == [("GET", "/v1/models")]
    assert httpx.delete(llm_server.url + "/_received", timeout=10).status_code == 200
    assert llm_server.received == []
    assert httpx.get(llm_server.url + "/_received", timeout=10).json() == []


def test_llm_make_server_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No api_key and no DEMO_LLM_API_KEY is an error; the env var is used otherwise."""
    monkeypatch.delenv("DEMO_LLM_API_KEY", raising=False)
    with pytest.raises(ValueError):
        llm_upstream.make_server("127.0.0.1", 0)
    monkeypatch.setenv("DEMO_LLM_API_KEY", "sk-from-env")
    server = llm_upstream.make_server("127.0.0.1", 0)
    try:
        assert server.api_key == "sk-from-env"
    finally:
        server.server_close()


# --------------------------------------------------------------------------- echo upstream


@pytest.fixture
def echo_server() -> Iterator[echo_upstream.RecordingHTTPServer]:
    """The echo upstream on a free port, in a thread."""
    server = echo_upstream.make_server("127.0.0.1", 0)
    echo_upstream.start_in_thread(server)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_echo_reflects_request(echo_server: echo_upstream.RecordingHTTPServer) -> None:
    """The JSON echo carries method, path, query, headers and body; it is recorded."""
    response = httpx.post(
        echo_server.url + "/api/items?x=1&y=two",
        content=b'{"ssn": "123-45-6789"}',
        headers={"X-Api-Key": "secret", "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200
    echo = response.json()
    assert echo["method"] == "POST"
    assert echo["path"] == "/api/items"
    assert echo["query"] == "x=1&y=two"
    assert echo["headers"]["x-api-key"] == "secret"
    assert echo["body"] == '{"ssn": "123-45-6789"}'
    assert echo_server.received[-1]["path"] == "/api/items"
    assert httpx.get(echo_server.url + "/_received", timeout=10).json()[-1]["body"] == echo["body"]


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_echo_compressed_endpoints(
    echo_server: echo_upstream.RecordingHTTPServer, encoding: str
) -> None:
    """``/gzip/``, ``/br/`` (and ``/zstd/``) send compressed JSON that httpx decodes."""
    with httpx.Client(timeout=10) as client:
        response = client.get(f"{echo_server.url}/{encoding}/customer")
        assert response.headers["content-encoding"] == encoding
        assert response.json() == {"email": "jane.doe@example.com", "phone": "+1 415 555 2671"}
        with client.stream("GET", f"{echo_server.url}/{encoding}/customer") as raw_response:
            raw = b"".join(raw_response.iter_raw())
    assert not raw.startswith(b"{")  # really encoded on the wire (zstd may store tiny data raw)
    if encoding == "gzip":
        assert json.loads(gzip.decompress(raw))["email"] == "jane.doe@example.com"


# --------------------------------------------------------------------------- datasette + plugin


def test_plugin_decision() -> None:
    """The plugin's pure decision: exact bearer token only, nothing without a token set."""
    plugin = _load_plugin()
    decide = plugin.actor_for_authorization
    assert decide("Bearer abc", "abc") == {"id": "gatehouse"}
    assert decide("bearer  abc ", "abc") == {"id": "gatehouse"}
    assert decide("Bearer abd", "abc") is None
    assert decide("Basic abc", "abc") is None
    assert decide("Bearer", "abc") is None
    assert decide(None, "abc") is None
    assert decide("Bearer abc", "") is None
    assert decide("Bearer abc", None) is None
    assert decide("Bearer ñ", "abc") is None


@pytest.fixture(scope="module")
def datasette_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``datasette`` process serving a fresh customers DB with the auth plugin."""
    db = customers_db.build_customers_db(tmp_path_factory.mktemp("ds") / "customers.db", rows=30)
    port = _free_port()
    env = {**os.environ, "DEMO_DATASETTE_TOKEN": DATASETTE_TOKEN}
    log = tmp_path_factory.mktemp("ds-log") / "datasette.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                _datasette_executable(),
                "serve",
                str(db),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--plugins-dir",
                str(PLUGINS_DIR),
                "--metadata",
                str(METADATA),
            ],
            env=env,
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"datasette exited with {process.returncode}:\n{log.read_text()}")
            try:
                httpx.get(url + "/-/versions.json", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail(f"datasette did not start:\n{log.read_text()}")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


TABLE_PATH = "/customers/customers.json?_shape=array&_size=5"
SQL_PATH = "/customers.json?sql=select+*+from+customers&_shape=array"


@pytest.mark.parametrize("path", [TABLE_PATH, SQL_PATH, "/", "/customers", "/-/plugins.json"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {DATASETTE_TOKEN}"])
def test_datasette_denies_without_token(
    datasette_url: str, path: str, authorization: str | None
) -> None:
    """No (or a wrong) credential: 403 everywhere."""
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(datasette_url + path, headers=headers, timeout=10)
    assert response.status_code == 403
    assert "credit_card" not in response.text and "@" not in response.text


def test_datasette_serves_rows_with_token(datasette_url: str) -> None:
    """With the injected token: table rows as a JSON array."""
    auth = {"Authorization": f"Bearer {DATASETTE_TOKEN}"}
    response = httpx.get(datasette_url + TABLE_PATH, headers=auth, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    rows = response.json()
    assert isinstance(rows, list) and len(rows) == 5
    assert {"id", "name", "email", "phone", "ssn", "credit_card", "iban", "address"} <= rows[
        0
    ].keys()
    assert luhn.is_valid(rows[0]["credit_card"])

    actor = httpx.get(datasette_url + "/-/actor.json", headers=auth, timeout=10).json()
    assert actor == {"actor": {"id": "gatehouse"}}


def test_datasette_custom_sql_with_token(datasette_url: str) -> None:
    """Arbitrary SQL is allowed for the gatehouse actor (``allow_sql``)."""
    auth = {"Authorization": f"Bearer {DATASETTE_TOKEN}"}
    response = httpx.get(datasette_url + SQL_PATH, headers=auth, timeout=10)
    assert response.status_code == 200
    rows = response.json()
    assert len(rows) == 30 and rows[0]["id"] == 1

    default_shape = httpx.get(
        datasette_url + "/customers.json?sql=select+count(*)+as+n+from+orders",
        headers=auth,
        timeout=10,
    )
    assert default_shape.status_code == 200
    assert default_shape.json()["ok"] is True and default_shape.json()["rows"][0][0] > 0

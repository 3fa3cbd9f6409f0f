"""The demo LLM upstream's Responses API and scripted tool calls.

Through the real ``openai`` SDK (typed events) and the real OpenAI Agents SDK
(``Runner.run`` / ``Runner.run_streamed`` with the Responses and the chat
completions models, function tools and an MCP server's tools), straight
against the upstream: no gateway here.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.mcp import MCPServerStreamableHttp
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)

from demo import llm_upstream
from demo.llm_upstream import Tool, Turn
from tests.demo.conftest import API_KEY

EMAIL = "jane.doe@example.com"
PROMPT = f"Please look up {EMAIL}, she called from +1 415 555 2671"
TOOL_RESULT = "Jane Doe, SSN 123-45-6789, card 4111 1111 1111 1111"
LOOKUP_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"email": {"type": "string"}, "note": {"type": "string"}},
    "required": ["email", "note"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": False,
    },
    {
        "type": "function",
        "name": "lookup_customer",
        "description": "A customer by e-mail.",
        "parameters": LOOKUP_PARAMETERS,
        "strict": True,
    },
]
ANSWER = f"Tool result: {TOOL_RESULT}\nYou said: {PROMPT}"

TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",  # one per piece: compare with _squeeze()
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
CALL_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
]
EVENT_CLASSES: dict[str, type] = {
    "response.created": ResponseCreatedEvent,
    "response.in_progress": ResponseInProgressEvent,
    "response.output_item.added": ResponseOutputItemAddedEvent,
    "response.content_part.added": ResponseContentPartAddedEvent,
    "response.output_text.delta": ResponseTextDeltaEvent,
    "response.output_text.done": ResponseTextDoneEvent,
    "response.content_part.done": ResponseContentPartDoneEvent,
    "response.function_call_arguments.delta": ResponseFunctionCallArgumentsDeltaEvent,
    "response.function_call_arguments.done": ResponseFunctionCallArgumentsDoneEvent,
    "response.output_item.done": ResponseOutputItemDoneEvent,
    "response.completed": ResponseCompletedEvent,
}


def _squeeze(types: list[str]) -> list[str]:
    """Event types with runs of the same type collapsed to one."""
    return [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t]


def _free_port() -> int:
    """A currently free loopback TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- the script


@pytest.mark.parametrize(
    ("parameters", "prompt", "expected"),
    [
        (LOOKUP_PARAMETERS, PROMPT, {"email": EMAIL, "note": PROMPT}),
        # The Agents SDK's strict schema of ``def f(customer_email: str, limit: int)``.
        (
            {
                "type": "object",
                "properties": {
                    "customer_email": {"title": "Customer Email", "type": "string"},
                    "limit": {"title": "Limit", "type": "integer"},
                },
                "required": ["customer_email", "limit"],
                "additionalProperties": False,
            },
            f"mail {EMAIL} or j@x.io",
            {"customer_email": EMAIL, "limit": 0},
        ),
        # No e-mail in the prompt: e-mail properties get the prompt too.
        ({"properties": {"E-Mail": {"type": "string"}}}, "nobody", {"E-Mail": "nobody"}),
        # Optional[str] (anyOf with null), untyped, enum, optional non-string, required
        # nullable integer, array.
        (
            {
                "properties": {
                    "q": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                    "any": {},
                    "mode": {"type": "string", "enum": ["fast", "slow"]},
                    "page": {"type": "integer"},
                    "max": {"type": ["integer", "null"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "filter": {"$ref": "#/$defs/Filter"},
                },
                "required": ["max", "tags", "filter"],
            },
            "hi",
            {"q": "hi", "any": "hi", "mode": "fast", "max": None, "tags": [], "filter": {}},
        ),
        ({"type": "object", "properties": {}}, PROMPT, {}),
        ({}, PROMPT, {}),
    ],
)
def test_tool_arguments(parameters: dict[str, Any], prompt: str, expected: dict[str, Any]) -> None:
    """Arguments follow the schema's properties, filled from the prompt."""
    assert llm_upstream.tool_arguments(parameters, prompt) == expected


@pytest.mark.parametrize(
    ("names", "tool_choice", "expected"),
    [
        (["get_weather", "lookup_customer"], None, "lookup_customer"),
        (["search", "Find-Customer", "lookup_customer"], "auto", "Find-Customer"),
        (["get_weather", "search"], "required", "get_weather"),
        (["get_weather", "lookup_customer"], "none", None),
        (
            ["get_weather", "lookup_customer"],
            {"type": "function", "name": "get_weather"},
            "get_weather",
        ),
        (["a", "b"], {"type": "function", "function": {"name": "b"}}, "b"),
        (["a", "b"], {"type": "function", "name": "missing"}, "a"),
        ([], None, None),
    ],
)
def test_choose_tool(names: list[str], tool_choice: Any, expected: str | None) -> None:
    """A named choice, else a customer look-up, else the first tool; "none" calls nothing."""
    tools = [Tool(name, {}) for name in names]
    chosen = llm_upstream.choose_tool(tools, tool_choice)
    assert (chosen.name if chosen else None) == expected


def test_offered_tools_both_shapes() -> None:
    """Responses and chat shapes give the same tools; non-function tools are skipped."""
    chat = [{"type": "function", "function": {"name": "a", "parameters": {"x": 1}}}]
    responses = [
        {"type": "web_search_preview"},
        {"type": "function", "name": "a", "parameters": {"x": 1}},
        {"type": "function", "name": ""},
    ]
    assert llm_upstream.offered_tools(chat) == [Tool("a", {"x": 1})]
    assert llm_upstream.offered_tools(responses) == [Tool("a", {"x": 1})]
    assert llm_upstream.offered_tools(None) == []


def test_plan_turn_and_states() -> None:
    """The conversation from the last user message on decides the turn."""
    tools = llm_upstream.offered_tools(TOOLS)
    call = llm_upstream.plan_turn(PROMPT, [], tools)
    assert call.is_tool_call and call.tool_name == "lookup_customer"
    assert json.loads(call.arguments) == {"email": EMAIL, "note": PROMPT}
    assert llm_upstream.plan_turn(PROMPT, [TOOL_RESULT], tools) == Turn(text=ANSWER)
    two = llm_upstream.plan_turn("q", ["a", "b"], tools).text
    assert two == "Tool result: a\nTool result: b\nYou said: q"
    assert llm_upstream.plan_turn(PROMPT, [], []) == Turn(text="You said: " + PROMPT)

    items = [
        {"role": "user", "content": "old"},
        {"type": "function_call_output", "call_id": "c0", "output": "stale"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "new"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "fresh"},
    ]
    assert llm_upstream.responses_state(items) == ("new", ["fresh"])
    assert llm_upstream.responses_state(items[:3]) == ("new", [])
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": []},
        {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "out"}]},
    ]
    assert llm_upstream.chat_state(messages) == ("hi", ["out"])


def test_response_events_text() -> None:
    """A text answer's events, their indexes, and the text split in the deltas."""
    response = llm_upstream.build_response({"model": "m"}, Turn(text="You said: " + PROMPT), 7)
    events = list(llm_upstream.response_events(response))
    types = [e["type"] for e in events]
    assert _squeeze(types) == TEXT_EVENTS
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    item = response["output"][0]
    assert item["type"] == "message" and item["id"].startswith("msg_")
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(d["delta"] for d in deltas) == "You said: " + PROMPT
    assert not any(EMAIL in d["delta"] for d in deltas)
    assert all(
        (d["item_id"], d["output_index"], d["content_index"]) == (item["id"], 0, 0) for d in deltas
    )
    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert created["usage"] is None and created["id"] == response["id"]
    assert events[2]["item"]["content"] == [] and events[2]["item"]["status"] == "in_progress"
    assert events[3]["part"]["text"] == ""
    done = {e["type"]: e for e in events}
    assert done["response.output_text.done"]["text"] == "You said: " + PROMPT
    assert done["response.content_part.done"]["part"] == item["content"][0]
    assert done["response.output_item.done"]["item"] == item
    assert done["response.completed"]["response"] == response
    assert response["usage"]["input_tokens"] == 7 and response["usage"]["output_tokens"] > 0


def test_response_events_tool_call() -> None:
    """A tool call's events: arguments split in the deltas, whole in the done events."""
    arguments = json.dumps({"email": EMAIL, "note": PROMPT})
    response = llm_upstream.build_response({}, Turn(tool_name="lookup", arguments=arguments), 1)
    events = list(llm_upstream.response_events(response))
    assert _squeeze([e["type"] for e in events]) == CALL_EVENTS
    item = response["output"][0]
    assert item["id"].startswith("fc_") and item["call_id"].startswith("call_")
    assert events[2]["item"] == {**item, "status": "in_progress", "arguments": ""}
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert "".join(d["delta"] for d in deltas) == arguments
    assert not any(EMAIL in d["delta"] for d in deltas)
    done = events[-3]
    assert done["type"] == "response.function_call_arguments.done"
    assert (done["arguments"], done["name"], done["item_id"]) == (arguments, "lookup", item["id"])


# --------------------------------------------------------------------------- openai SDK


def test_responses_plain_text(
    llm_server: llm_upstream.LLMUpstreamServer, llm_client: openai.OpenAI
) -> None:
    """No tools: ``You said: ...``; the request is recorded; the object parses as Response."""
    response = llm_client.responses.create(
        model="gatehouse-echo", instructions="be brief", input=f"my email is {EMAIL}"
    )
    assert isinstance(response, Response)
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_") and response.model == "gatehouse-echo"
    assert response.instructions == "be brief"
    assert response.output_text == f"You said: my email is {EMAIL}"
    message = response.output[0]
    assert isinstance(message, ResponseOutputMessage) and message.role == "assistant"
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    posted = [r for r in llm_server.received if r["path"] == "/v1/responses"]
    assert len(posted) == 1 and json.loads(posted[0]["body"])["input"] == f"my email is {EMAIL}"
    assert posted[0]["headers"]["authorization"] == f"Bearer {API_KEY}"


def test_responses_tool_call_then_result(
    llm_server: llm_upstream.LLMUpstreamServer, llm_client: openai.OpenAI
) -> None:
    """Tools offered: a function call; its ``function_call_output`` is answered with text."""
    first = llm_client.responses.create(model="gatehouse-echo", input=PROMPT, tools=TOOLS)
    (call,) = first.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.name == "lookup_customer" and call.status == "completed"
    assert call.call_id.startswith("call_") and call.id is not None
    assert json.loads(call.arguments) == {"email": EMAIL, "note": PROMPT}
    assert first.output_text == ""
    assert [t.name for t in first.tools if t.type == "function"] == [
        "get_weather",
        "lookup_customer",
    ]

    second = llm_client.responses.create(
        model="gatehouse-echo",
        input=[
            {"role": "user", "content": PROMPT},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT},
        ],
        tools=TOOLS,
    )
    assert second.output_text == ANSWER
    body = json.loads(llm_server.received[-1]["body"])
    assert body["input"][-1]["output"] == TOOL_RESULT


def test_responses_streamed_tool_call_typed_events(llm_client: openai.OpenAI) -> None:
    """``stream=True``: typed events in the API's order, arguments split across deltas."""
    stream = llm_client.responses.create(
        model="gatehouse-echo", input=PROMPT, tools=TOOLS, stream=True
    )
    events = list(stream)
    assert _squeeze([e.type for e in events]) == CALL_EVENTS
    assert all(isinstance(e, EVENT_CLASSES[e.type]) for e in events)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added = events[2]
    assert isinstance(added, ResponseOutputItemAddedEvent)
    assert isinstance(added.item, ResponseFunctionToolCall) and added.item.arguments == ""
    deltas = [e for e in events if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent)]
    pieces = [d.delta for d in deltas]
    assert len(pieces) > 10 and all(3 <= len(p) <= 6 for p in pieces[:-1])
    assert not any(EMAIL in p for p in pieces), "the e-mail should be split across deltas"
    assert {(d.item_id, d.output_index) for d in deltas} == {(added.item.id, 0)}
    arguments = "".join(pieces)
    assert json.loads(arguments) == {"email": EMAIL, "note": PROMPT}
    done = events[-3]
    assert isinstance(done, ResponseFunctionCallArgumentsDoneEvent)
    assert done.arguments == arguments and done.name == "lookup_customer"
    item_done = events[-2]
    assert isinstance(item_done, ResponseOutputItemDoneEvent)
    assert isinstance(item_done.item, ResponseFunctionToolCall)
    assert item_done.item.arguments == arguments and item_done.item.call_id == added.item.call_id
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    assert completed.response.status == "completed" and completed.response.usage is not None
    assert completed.response.output[0] == item_done.item


def test_responses_streamed_text_typed_events(llm_client: openai.OpenAI) -> None:
    """A streamed text answer to a tool result: the result split across text deltas."""
    stream = llm_client.responses.create(
        model="gatehouse-echo",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": PROMPT}]},
            {"type": "function_call_output", "call_id": "call_1", "output": TOOL_RESULT},
        ],
        tools=TOOLS,
        stream=True,
    )
    events = list(stream)
    assert _squeeze([e.type for e in events]) == TEXT_EVENTS
    assert all(isinstance(e, EVENT_CLASSES[e.type]) for e in events)
    deltas = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert "".join(d.delta for d in deltas) == ANSWER
    assert not any("123-45-6789" in d.delta for d in deltas)
    assert {(d.output_index, d.content_index) for d in deltas} == {(0, 0)}
    (text_done,) = [e for e in events if isinstance(e, ResponseTextDoneEvent)]
    assert text_done.text == ANSWER
    (part_done,) = [e for e in events if isinstance(e, ResponseContentPartDoneEvent)]
    assert part_done.part.type == "output_text" and part_done.part.text == ANSWER
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    assert completed.response.output_text == ANSWER


def test_responses_stream_helper(llm_client: openai.OpenAI) -> None:
    """``client.responses.stream``: the SDK's accumulated snapshot matches the final response."""
    with llm_client.responses.stream(model="gatehouse-echo", input=PROMPT, tools=TOOLS) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in types
    (call,) = final.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert json.loads(call.arguments) == {"email": EMAIL, "note": PROMPT}

    with llm_client.responses.stream(model="gatehouse-echo", input=PROMPT) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == "You said: " + PROMPT


def test_responses_raw_sse(llm_server: llm_upstream.LLMUpstreamServer) -> None:
    """Raw SSE: ``event:`` names the data's type, flushed one by one, no ``[DONE]``."""
    body = {"model": "gatehouse-echo", "stream": True, "input": "hello world"}
    started = time.monotonic()
    arrivals: list[float] = []
    names: list[str] = []
    datas: list[dict[str, Any]] = []
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST",
            llm_server.url + "/v1/responses?delay_ms=60",
            json=body,
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                names.append(line.removeprefix("event: "))
            elif line.startswith("data: "):
                datas.append(json.loads(line.removeprefix("data: ")))
                arrivals.append(time.monotonic() - started)
    assert names == [d["type"] for d in datas]
    assert _squeeze(names) == TEXT_EVENTS
    assert arrivals[-1] - arrivals[0] >= 0.06 * (len(datas) - 1) * 0.9


def test_responses_previous_response_id(llm_client: openai.OpenAI) -> None:
    """Stored responses continue a conversation, are retrievable, unless ``store`` is false."""
    first = llm_client.responses.create(model="gatehouse-echo", input=PROMPT, tools=TOOLS)
    call = first.output[0]
    assert isinstance(call, ResponseFunctionToolCall)
    second = llm_client.responses.create(
        model="gatehouse-echo",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT}],
        tools=TOOLS,
    )
    assert second.previous_response_id == first.id
    assert second.output_text == ANSWER
    assert llm_client.responses.retrieve(second.id).output_text == ANSWER

    with pytest.raises(openai.BadRequestError) as excinfo:
        llm_client.responses.create(
            model="gatehouse-echo", previous_response_id="resp_missing", input="hi"
        )
    assert excinfo.value.code == "previous_response_not_found"
    unstored = llm_client.responses.create(model="gatehouse-echo", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        llm_client.responses.retrieve(unstored.id)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/responses", {"model": "m", "input": 3}, 400),
        ("POST", "/v1/responses", {"model": "m"}, 400),
        ("POST", "/v1/responses", [1], 400),
        ("GET", "/v1/responses", None, 405),
        ("POST", "/v1/responses/resp_x", None, 405),
    ],
)
def test_responses_errors(
    llm_server: llm_upstream.LLMUpstreamServer,
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    """Bad requests get OpenAI-style errors."""
    response = httpx.request(
        method,
        llm_server.url + path,
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert response.status_code == status
    assert response.json()["error"]["type"] == "invalid_request_error"


# --------------------------------------------------------------------------- Agents SDK


@pytest.fixture(autouse=True)
def _no_tracing() -> Iterator[None]:
    """The Agents SDK's traces go nowhere (there is no internet)."""
    set_tracing_disabled(True)
    yield


MODELS = {"responses": OpenAIResponsesModel, "chat": OpenAIChatCompletionsModel}


def _agent(
    client: openai.AsyncOpenAI, api: str, calls: list[dict[str, str]], **kwargs: Any
) -> Agent:
    """A customer-support agent with two function tools on the given API style."""

    @function_tool
    def get_weather(city: str) -> str:
        """The weather of a city."""
        calls.append({"tool": "get_weather", "city": city})
        return "sunny"

    @function_tool
    def lookup_customer(email: str, note: str) -> str:
        """Look a customer up by e-mail address."""
        calls.append({"tool": "lookup_customer", "email": email, "note": note})
        return TOOL_RESULT

    return Agent(
        name="Support",
        instructions="You help the support team.",
        tools=[get_weather, lookup_customer],
        model=MODELS[api](model="gatehouse-echo", openai_client=client),
        **kwargs,
    )


def _check_upstream_saw_turn(server: llm_upstream.LLMUpstreamServer, api: str) -> None:
    """Two model requests: the prompt with the tools, then the tool's output."""
    path = "/v1/responses" if api == "responses" else "/v1/chat/completions"
    bodies = [json.loads(r["body"]) for r in server.received if r["path"] == path]
    assert len(bodies) == 2
    assert [t.get("name") or t["function"]["name"] for t in bodies[0]["tools"]] == [
        "get_weather",
        "lookup_customer",
    ]
    if api == "responses":
        assert bodies[0]["instructions"] == "You help the support team."
        assert bodies[1]["input"][-1]["type"] == "function_call_output"
        assert bodies[1]["input"][-1]["output"] == TOOL_RESULT
    else:
        assert bodies[0]["messages"][0] == {
            "role": "system",
            "content": "You help the support team.",
        }
        assert bodies[1]["messages"][-1]["role"] == "tool"
        assert bodies[1]["messages"][-1]["content"] == TOOL_RESULT


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_agents_sdk_run(
    llm_server: llm_upstream.LLMUpstreamServer, llm_async_client: openai.AsyncOpenAI, api: str
) -> None:
    """``Runner.run``: the look-up tool is called with the e-mail, its result answered."""
    calls: list[dict[str, str]] = []
    result = await Runner.run(_agent(llm_async_client, api, calls), PROMPT)
    assert calls == [{"tool": "lookup_customer", "email": EMAIL, "note": PROMPT}]
    assert result.final_output == ANSWER
    assert [item.type for item in result.new_items] == [
        "tool_call_item",
        "tool_call_output_item",
        "message_output_item",
    ]
    _check_upstream_saw_turn(llm_server, api)


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_agents_sdk_run_streamed(
    llm_server: llm_upstream.LLMUpstreamServer, llm_async_client: openai.AsyncOpenAI, api: str
) -> None:
    """``Runner.run_streamed``: the same turn, the arguments and answer arriving in deltas."""
    calls: list[dict[str, str]] = []
    result = Runner.run_streamed(_agent(llm_async_client, api, calls), PROMPT)
    raw: list[Any] = []
    run_items: list[str] = []
    async for event in result.stream_events():
        if event.type == "raw_response_event":
            raw.append(event.data)
        elif event.type == "run_item_stream_event":
            run_items.append(event.name)
    assert calls == [{"tool": "lookup_customer", "email": EMAIL, "note": PROMPT}]
    assert result.final_output == ANSWER
    assert run_items == ["tool_called", "tool_output", "message_output_created"]
    argument_deltas = [e.delta for e in raw if e.type == "response.function_call_arguments.delta"]
    assert len(argument_deltas) > 10
    assert json.loads("".join(argument_deltas)) == {"email": EMAIL, "note": PROMPT}
    text = "".join(e.delta for e in raw if e.type == "response.output_text.delta")
    assert text == ANSWER
    _check_upstream_saw_turn(llm_server, api)


# --------------------------------------------------------------------------- MCP tools


@pytest.fixture
def mcp_url() -> Iterator[str]:
    """A FastMCP server (streamable HTTP) with a ``find_customer`` tool, in a thread."""
    import uvicorn
    from mcp.server.fastmcp import FastMCP

    port = _free_port()
    mcp = FastMCP("customers", host="127.0.0.1", port=port)

    @mcp.tool()
    def count_orders(customer_id: int) -> int:
        """Number of orders of a customer."""
        return 3

    @mcp.tool()
    def find_customer(email: str, reason: str | None = None) -> str:
        """A customer's record by e-mail address."""
        return f"{TOOL_RESULT} <{email}> ({reason})"

    server = uvicorn.Server(
        uvicorn.Config(mcp.streamable_http_app(), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the MCP server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
async def mcp_server(mcp_url: str) -> AsyncIterator[MCPServerStreamableHttp]:
    """The Agents SDK's MCP client, connected."""
    async with MCPServerStreamableHttp(
        params={"url": mcp_url}, name="customers", cache_tools_list=True
    ) as server:
        yield server


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_agents_sdk_mcp_tool(
    llm_server: llm_upstream.LLMUpstreamServer,
    llm_async_client: openai.AsyncOpenAI,
    mcp_server: MCPServerStreamableHttp,
    api: str,
) -> None:
    """Tools listed from an MCP server arrive as functions; ``find_customer`` is called."""
    agent = Agent(
        name="Support",
        instructions="You help the support team.",
        mcp_servers=[mcp_server],
        model=MODELS[api](model="gatehouse-echo", openai_client=llm_async_client),
    )
    result = Runner.run_streamed(agent, PROMPT)
    async for _event in result.stream_events():
        pass
    # FastMCP wraps a tool's return value in a text content block (JSON in the output).
    assert f"{TOOL_RESULT} <{EMAIL}> ({PROMPT})" in result.final_output
    assert result.final_output.endswith(f"\nYou said: {PROMPT}")
    path = "/v1/responses" if api == "responses" else "/v1/chat/completions"
    first = json.loads(next(r["body"] for r in llm_server.received if r["path"] == path))
    names = [t.get("name") or t["function"]["name"] for t in first["tools"]]
    assert names == ["count_orders", "find_customer"]

"""A tiny OpenAI-compatible model upstream (standard library only) for the demo.

It stands in for a real LLM provider behind Gatehouse: the gateway injects
the API key, and a scripted, deterministic model answers so that personal
data the agent sends comes straight back, plain or streamed in small pieces
(3-6 characters, like tokens) that split it apart.

The script, the same for both API styles (:func:`plan_turn`), looks at the
conversation from the last user message on:

* a tool output follows it (``function_call_output`` item, ``role: "tool"``
  message): the answer is ``"Tool result: " + <output>`` (one line per
  output), a newline and ``"You said: " + <user message>``;
* else, if the request offers function tools (function tools of the agent and
  the tools the Agents SDK lists from an MCP server all arrive as
  ``type: "function"``) and ``tool_choice`` is not ``"none"``: a call of the
  tool named by ``tool_choice``, else of the first one named like
  ``lookup_customer``/``find_customer``, else of the first one, with JSON
  arguments derived from the user message (:func:`tool_arguments`);
* else ``"You said: " + <user message>``.

Endpoints (all need ``Authorization: Bearer <key>``, else 401 with an
OpenAI-style error body):

* ``GET /v1/models`` and ``GET /v1/models/gatehouse-echo``
* ``POST /v1/chat/completions``, with ``"stream": true`` (server-sent events,
  chunked transfer encoding, one flushed chunk per event, ``data: [DONE]``
  last) and ``stream_options.include_usage``.  A tool call is
  ``choices[0].message.tool_calls`` with ``finish_reason: "tool_calls"``;
  streamed, its ``function.arguments`` are split across ``delta.tool_calls``.
* ``POST /v1/responses`` (the Responses API), plain or ``"stream": true``
  (``event: <type>`` + ``data: <json>`` per event, no ``[DONE]``), with
  ``previous_response_id`` (responses are kept in memory unless
  ``"store": false``) and ``GET /v1/responses/<id>``.  A streamed response
  is, with ``sequence_number`` 0, 1, 2, ... (:func:`response_events`)::

      response.created, response.in_progress,
      per output item:
        response.output_item.added,
        a message:   response.content_part.added,
                     response.output_text.delta (one per piece),
                     response.output_text.done, response.content_part.done,
        a tool call: response.function_call_arguments.delta (one per piece),
                     response.function_call_arguments.done,
        response.output_item.done,
      response.completed (the whole response again, with usage).

``?delay_ms=N`` or the header ``X-Demo-Delay-Ms: N`` sleeps N ms between
streamed events.

Test helpers, unauthenticated and not recorded: ``GET /_received`` lists
every request received (method, path, query, headers with lower-cased names,
body as text) and ``DELETE /_received`` clears the list; the same list is
``server.received`` in-process.

Run::

    DEMO_LLM_API_KEY=sk-demo python -m demo.llm_upstream --host 127.0.0.1 --port 8102

(the port defaults to env ``DEMO_LLM_PORT``, else 8102).  From a test::

    server = make_server("127.0.0.1", 0, "sk-test")
    start_in_thread(server)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test")
"""

from __future__ import annotations

import argparse
import hmac
import itertools
import json
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from demo.echo_upstream import (
    RecordingHandler,
    RecordingHTTPServer,
    serve_until_signal,
    start_in_thread,
)

__all__ = [
    "MODEL_ID",
    "LLMUpstreamServer",
    "LLMHandler",
    "Tool",
    "Turn",
    "make_server",
    "start_in_thread",
    "split_into_pieces",
    "reply_for",
    "find_email",
    "offered_tools",
    "choose_tool",
    "tool_arguments",
    "plan_turn",
    "chat_state",
    "responses_state",
    "build_response",
    "response_events",
    "chat_chunks",
    "main",
]

#: The one model this upstream offers.
MODEL_ID = "gatehouse-echo"
#: Environment variable holding the API key the upstream requires.
API_KEY_ENV = "DEMO_LLM_API_KEY"
#: Environment variable giving the default port of the command line.
PORT_ENV = "DEMO_LLM_PORT"
#: Prefix of every reply.
REPLY_PREFIX = "You said: "
#: Prefix of each line of a reply that follows tool outputs.
TOOL_RESULT_PREFIX = "Tool result: "
#: Piece lengths cycled through when streaming (deterministic, 3 to 6 chars).
PIECE_LENGTHS: tuple[int, ...] = (4, 3, 5, 6, 3, 4, 6, 5)
#: Upper bound for the per-chunk delay (ms).
MAX_DELAY_MS = 10_000
#: ``created`` timestamp of the model in ``/v1/models``.
MODEL_CREATED = 1_700_000_000
#: Responses kept in memory for ``previous_response_id`` (oldest dropped first).
MAX_STORED_RESPONSES = 1000
#: Tool names preferred by the script.
PREFERRED_TOOL = re.compile(r"(lookup|find)[_-]?customer", re.IGNORECASE)
#: Property names that get the prompt's first e-mail address.
EMAIL_PROPERTY = re.compile(r"e[-_]?mail", re.IGNORECASE)
#: An e-mail address (simple, good enough for the demo's prompts).
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
#: Value of a required non-string property, by the first JSON type it allows.
NEUTRAL_VALUES: dict[str, Any] = {
    "null": None,
    "integer": 0,
    "number": 0,
    "boolean": False,
    "array": [],
    "object": {},
}


class LLMUpstreamServer(RecordingHTTPServer):
    """Recording HTTP server that also holds the API key and the stored responses."""

    def __init__(
        self,
        server_address: tuple[str, int],
        api_key: str,
        *,
        verbose: bool = False,
    ) -> None:
        """Bind to ``server_address``; requests must carry ``Bearer <api_key>``."""
        super().__init__(server_address, LLMHandler, verbose=verbose)
        self.api_key = api_key
        #: response id -> (the response object, the conversation items it ends).
        self.responses: OrderedDict[str, tuple[dict[str, Any], list[Any]]] = OrderedDict()
        self._responses_lock = threading.Lock()

    def store_response(self, response: dict[str, Any], items: list[Any]) -> None:
        """Keep ``response`` and its whole conversation (input and output items)."""
        with self._responses_lock:
            self.responses[response["id"]] = (response, items)
            while len(self.responses) > MAX_STORED_RESPONSES:
                self.responses.popitem(last=False)

    def stored_response(self, response_id: str) -> tuple[dict[str, Any], list[Any]] | None:
        """The stored ``(response, conversation items)`` of ``response_id``, if any."""
        with self._responses_lock:
            return self.responses.get(response_id)


# --------------------------------------------------------------------------- the script


@dataclass(frozen=True)
class Tool:
    """A function tool offered by a request: its name and JSON schema of parameters."""

    name: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Turn:
    """What the model answers: ``text``, or a call of ``tool_name`` with ``arguments`` (JSON)."""

    text: str = ""
    tool_name: str | None = None
    arguments: str = ""

    @property
    def is_tool_call(self) -> bool:
        """True if the model calls a tool."""
        return self.tool_name is not None


def split_into_pieces(text: str) -> list[str]:
    """Split ``text`` into consecutive pieces of 3-6 characters, deterministically.

    The lengths cycle through :data:`PIECE_LENGTHS`; only the last piece may
    be shorter.  ``"".join(pieces) == text`` always holds; an empty text
    gives no pieces.
    """
    pieces: list[str] = []
    pos = 0
    i = 0
    while pos < len(text):
        size = PIECE_LENGTHS[i % len(PIECE_LENGTHS)]
        pieces.append(text[pos : pos + size])
        pos += size
        i += 1
    return pieces


def _content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text")
        ]
        return "\n".join(texts)
    return str(content)


def reply_for(messages: Sequence[Any]) -> str:
    """The plain reply: ``"You said: "`` + the last user message's text."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return REPLY_PREFIX + _content_text(message.get("content"))
    return REPLY_PREFIX


def find_email(text: str) -> str | None:
    """The first e-mail address in ``text``, if any."""
    match = EMAIL_RE.search(text)
    return match.group(0) if match else None


def offered_tools(tools: Any) -> list[Tool]:
    """The function tools of a request's ``tools``, in order; other tools are ignored.

    Both shapes are understood: the Responses API's ``{"type": "function",
    "name": ..., "parameters": ...}`` and chat completions' ``{"type":
    "function", "function": {"name": ..., "parameters": ...}}``.
    """
    found: list[Tool] = []
    if not isinstance(tools, list):
        return found
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        spec = tool["function"] if isinstance(tool.get("function"), dict) else tool
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            continue
        parameters = spec.get("parameters")
        found.append(Tool(name, parameters if isinstance(parameters, dict) else {}))
    return found


def choose_tool(tools: Sequence[Tool], tool_choice: Any = None) -> Tool | None:
    """The tool the model calls, or None.

    ``tool_choice`` ``"none"`` calls nothing; a named function
    (``{"type": "function", "name": N}``, or chat's ``{"type": "function",
    "function": {"name": N}}``) calls that tool if offered; otherwise the
    first tool named like ``lookup_customer``/``find_customer`` is called,
    else the first tool.
    """
    if not tools or tool_choice == "none":
        return None
    if isinstance(tool_choice, dict):
        spec = tool_choice["function"] if isinstance(tool_choice.get("function"), dict) else {}
        wanted = spec.get("name", tool_choice.get("name"))
        for tool in tools:
            if tool.name == wanted:
                return tool
    for tool in tools:
        if PREFERRED_TOOL.search(tool.name):
            return tool
    return tools[0]


def _schema_types(schema: Any) -> list[str]:
    """The JSON types a property schema allows (``type``, or ``anyOf``/``oneOf`` branches)."""
    if not isinstance(schema, dict):
        return []
    declared = schema.get("type")
    types = [declared] if isinstance(declared, str) else []
    if isinstance(declared, list):
        types = [t for t in declared if isinstance(t, str)]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        for branch in branches if isinstance(branches, list) else []:
            types.extend(t for t in _schema_types(branch) if t not in types)
    return types


def tool_arguments(parameters: dict[str, Any], prompt: str) -> dict[str, Any]:
    """The arguments of a call of a tool with the JSON schema ``parameters``, from ``prompt``.

    Only the schema's ``properties`` are filled, in their order: an ``enum``
    gets its first value; a string property (or one of no declared type) the
    prompt, or, if its name looks like an e-mail (``email``,
    ``customer_email``, ``e-mail``), the prompt's first e-mail address (the
    prompt if it has none); a required property of another type a neutral
    value (``null`` if allowed, else 0, false, ``[]`` or ``{}``); other
    properties are left out.
    """
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return {}
    required = parameters.get("required")
    required_names = set(required) if isinstance(required, list) else set()
    email = find_email(prompt)
    arguments: dict[str, Any] = {}
    for name, schema in properties.items():
        enum = schema.get("enum") if isinstance(schema, dict) else None
        types = _schema_types(schema)
        if isinstance(enum, list) and enum:
            arguments[name] = enum[0]
        elif "string" in types or not (types or (isinstance(schema, dict) and "$ref" in schema)):
            arguments[name] = email if email and EMAIL_PROPERTY.search(name) else prompt
        elif name in required_names:
            neutral = next((t for t in NEUTRAL_VALUES if t in types), "object")
            arguments[name] = NEUTRAL_VALUES[neutral]
    return arguments


def plan_turn(
    user_text: str, tool_outputs: Sequence[str], tools: Sequence[Tool], tool_choice: Any = None
) -> Turn:
    """The model's answer, given the last user message and the tool outputs after it."""
    if tool_outputs:
        lines = [TOOL_RESULT_PREFIX + output for output in tool_outputs]
        return Turn(text="\n".join([*lines, REPLY_PREFIX + user_text]))
    tool = choose_tool(tools, tool_choice)
    if tool is None:
        return Turn(text=REPLY_PREFIX + user_text)
    arguments = tool_arguments(tool.parameters, user_text)
    return Turn(
        tool_name=tool.name,
        arguments=json.dumps(arguments, ensure_ascii=False, separators=(",", ":")),
    )


def chat_state(messages: Sequence[Any]) -> tuple[str, list[str]]:
    """The last user message's text and the ``role: "tool"`` contents after it."""
    user_text = ""
    outputs: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "user":
            user_text = _content_text(message.get("content"))
            outputs = []
        elif message.get("role") == "tool":
            outputs.append(_content_text(message.get("content")))
    return user_text, outputs


def responses_state(items: Sequence[Any]) -> tuple[str, list[str]]:
    """The last user message's text and the ``function_call_output`` outputs after it."""
    user_text = ""
    outputs: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") == "user":
            user_text = _content_text(item.get("content"))
            outputs = []
        elif kind == "function_call_output":
            outputs.append(_content_text(item.get("output")))
    return user_text, outputs


def _count_tokens(text: str) -> int:
    """A rough token count: the number of streaming pieces."""
    return len(split_into_pieces(text))


def _item_text(item: Any) -> str:
    """The text a Responses input or output item carries (for token counts)."""
    if not isinstance(item, dict):
        return ""
    return "".join(
        [
            _content_text(item.get("content")),
            str(item.get("arguments") or ""),
            _content_text(item.get("output")),
        ]
    )


def _new_id(prefix: str, length: int = 48) -> str:
    """A random id like the API's: ``resp_``/``msg_``/``fc_`` + hex, ``call_`` + 24 hex."""
    return prefix + (uuid.uuid4().hex + uuid.uuid4().hex)[:length]


def _output_item(turn: Turn) -> dict[str, Any]:
    """The completed output item of ``turn``: a ``function_call`` or a ``message``."""
    if turn.is_tool_call:
        return {
            "id": _new_id("fc_"),
            "type": "function_call",
            "status": "completed",
            "arguments": turn.arguments,
            "call_id": _new_id("call_", 24),
            "name": turn.tool_name,
        }
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": turn.text}],
    }


def build_response(
    request: dict[str, Any], turn: Turn, input_tokens: int, *, created_at: int | None = None
) -> dict[str, Any]:
    """The completed Responses API object answering ``request`` with ``turn``."""
    created = int(time.time()) if created_at is None else created_at
    item = _output_item(turn)
    output_tokens = _count_tokens(turn.arguments if turn.is_tool_call else turn.text)
    model = request.get("model") if isinstance(request.get("model"), str) else MODEL_ID
    return {
        "id": _new_id("resp_"),
        "object": "response",
        "created_at": created,
        "status": "completed",
        "background": False,
        "completed_at": created,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": model,
        "output": [item],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": request.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_logprobs": request.get("top_logprobs", 0),
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": None,
        "metadata": request.get("metadata") or {},
    }


def response_events(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The stream events of a completed ``response`` (see the module docstring for the order).

    Text and arguments are split with :func:`split_into_pieces`; the done
    events, ``response.output_item.done`` and ``response.completed`` repeat
    them whole.
    """
    seq = itertools.count()
    pending = {**response, "status": "in_progress", "completed_at": None}
    pending.update(output=[], usage=None)
    yield {"type": "response.created", "sequence_number": next(seq), "response": pending}
    yield {"type": "response.in_progress", "sequence_number": next(seq), "response": pending}
    for output_index, item in enumerate(response["output"]):
        where = {"item_id": item["id"], "output_index": output_index}
        if item["type"] == "function_call":
            added = {**item, "status": "in_progress", "arguments": ""}
        else:
            added = {**item, "status": "in_progress", "content": []}
        yield {
            "type": "response.output_item.added",
            "sequence_number": next(seq),
            "output_index": output_index,
            "item": added,
        }
        if item["type"] == "function_call":
            for piece in split_into_pieces(item["arguments"]):
                yield {
                    "type": "response.function_call_arguments.delta",
                    "sequence_number": next(seq),
                    **where,
                    "delta": piece,
                }
            yield {
                "type": "response.function_call_arguments.done",
                "sequence_number": next(seq),
                **where,
                "name": item["name"],
                "arguments": item["arguments"],
            }
        else:
            for content_index, part in enumerate(item["content"]):
                at = {**where, "content_index": content_index}
                yield {
                    "type": "response.content_part.added",
                    "sequence_number": next(seq),
                    **at,
                    "part": {**part, "text": ""},
                }
                for piece in split_into_pieces(part["text"]):
                    yield {
                        "type": "response.output_text.delta",
                        "sequence_number": next(seq),
                        **at,
                        "delta": piece,
                        "logprobs": [],
                    }
                yield {
                    "type": "response.output_text.done",
                    "sequence_number": next(seq),
                    **at,
                    "text": part["text"],
                    "logprobs": [],
                }
                yield {
                    "type": "response.content_part.done",
                    "sequence_number": next(seq),
                    **at,
                    "part": part,
                }
        yield {
            "type": "response.output_item.done",
            "sequence_number": next(seq),
            "output_index": output_index,
            "item": item,
        }
    yield {"type": "response.completed", "sequence_number": next(seq), "response": response}


def _chat_tool_call(turn: Turn, call_id: str) -> dict[str, Any]:
    """The ``tool_calls`` entry of a chat completion message."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": turn.tool_name, "arguments": turn.arguments},
    }


def chat_chunks(
    completion_id: str,
    created: int,
    model: str,
    turn: Turn,
    usage: dict[str, int] | None,
    call_id: str = "",
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed answer, in order.

    Text: a role chunk (``content: ""``), one chunk per piece, ``stop``.  A
    tool call: a role chunk carrying the call's id, name and empty
    arguments, one ``delta.tool_calls`` chunk per piece of the arguments,
    ``tool_calls``.  Then, with ``usage``, a last chunk with no choices.
    """

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if usage is not None:
            obj["usage"] = None
        return obj

    if turn.is_tool_call:
        first = {"index": 0, **_chat_tool_call(turn, call_id)}
        first["function"] = {"name": turn.tool_name, "arguments": ""}
        yield chunk({"role": "assistant", "content": None, "tool_calls": [first]}, None)
        for piece in split_into_pieces(turn.arguments):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None)
        yield chunk({}, "tool_calls")
    else:
        yield chunk({"role": "assistant", "content": ""}, None)
        for piece in split_into_pieces(turn.text):
            yield chunk({"content": piece}, None)
        yield chunk({}, "stop")
    if usage is not None:
        yield {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [],
            "usage": usage,
        }


def _input_items(value: Any) -> list[Any] | None:
    """The Responses ``input`` as a list of items (a string is one user message)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        return list(value)
    return None


def _error_body(
    message: str, err_type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI-style error body."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


# --------------------------------------------------------------------------- the handler


class LLMHandler(RecordingHandler):
    """Request handler implementing the OpenAI-compatible subset."""

    server: LLMUpstreamServer

    # -- auth and errors ------------------------------------------------------

    def _authorized(self) -> bool:
        """True if the request carries ``Authorization: Bearer <the key>``."""
        expected = self.server.api_key
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        if not expected or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode("utf-8"), expected.encode("utf-8"))

    def _send_error(
        self, status: int, message: str, err_type: str, code: str | None, param: str | None = None
    ) -> None:
        """Send an OpenAI-style JSON error."""
        self.send_json(status, _error_body(message, err_type, code, param))

    def _bad_request(self, message: str, param: str | None = None, code: str | None = None) -> None:
        """400 ``invalid_request_error``."""
        self._send_error(HTTPStatus.BAD_REQUEST, message, "invalid_request_error", code, param)

    # -- dispatch ---------------------------------------------------------------

    def respond(self, entry: dict[str, Any], body: bytes) -> None:
        """Route an (already recorded) request."""
        path = entry["path"].rstrip("/") or "/"
        if not self._authorized():
            supplied = (
                "no API key" if not self.headers.get("Authorization") else "an incorrect API key"
            )
            self._send_error(
                HTTPStatus.UNAUTHORIZED,
                f"You didn't provide a valid API key: the request carried {supplied}.",
                "invalid_request_error",
                "invalid_api_key",
            )
            return
        if path == "/v1/models":
            if self._allow("GET"):
                self.send_json(HTTPStatus.OK, {"object": "list", "data": [self._model()]})
        elif path == f"/v1/models/{MODEL_ID}":
            if self._allow("GET"):
                self.send_json(HTTPStatus.OK, self._model())
        elif path.startswith("/v1/models/"):
            model = path.removeprefix("/v1/models/")
            self._send_error(
                HTTPStatus.NOT_FOUND,
                f"The model '{model}' does not exist",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        elif path == "/v1/chat/completions":
            if self._allow("POST"):
                self._chat_completions(entry, body)
        elif path == "/v1/responses":
            if self._allow("POST"):
                self._responses(entry, body)
        elif path.startswith("/v1/responses/"):
            if self._allow("GET"):
                self._retrieve_response(path.removeprefix("/v1/responses/"))
        else:
            self._send_error(
                HTTPStatus.NOT_FOUND,
                f"Unknown request URL: {self.command} {entry['path']}.",
                "invalid_request_error",
                "unknown_url",
            )

    def _allow(self, method: str) -> bool:
        """True if the request's method is ``method``; else answer 405 in OpenAI style."""
        if self.command == method:
            return True
        self._send_error(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"Method {self.command} not allowed here.",
            "invalid_request_error",
            "method_not_allowed",
        )
        return False

    @staticmethod
    def _model() -> dict[str, Any]:
        """The model object of :data:`MODEL_ID`."""
        return {
            "id": MODEL_ID,
            "object": "model",
            "created": MODEL_CREATED,
            "owned_by": "gatehouse",
        }

    def _json_object(self, body: bytes) -> dict[str, Any] | None:
        """The request body as a JSON object, or None after answering 400."""
        try:
            request = json.loads(body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._bad_request(f"Invalid JSON body: {exc}")
            return None
        if not isinstance(request, dict):
            self._bad_request("The body must be a JSON object.")
            return None
        return request

    # -- chat completions -------------------------------------------------------

    def _delay_seconds(self, query: str) -> float:
        """Delay between streamed chunks from ``?delay_ms=`` or ``X-Demo-Delay-Ms``."""
        raw = parse_qs(query).get("delay_ms", [None])[0] or self.headers.get("X-Demo-Delay-Ms")
        if not raw:
            return 0.0
        try:
            ms = float(raw)
        except ValueError:
            return 0.0
        return max(0.0, min(ms, MAX_DELAY_MS)) / 1000.0

    def _chat_completions(self, entry: dict[str, Any], body: bytes) -> None:
        """``POST /v1/chat/completions``, plain or streamed."""
        request = self._json_object(body)
        if request is None:
            return
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            self._bad_request("'messages' must be a non-empty array.", "messages")
            return
        model = request.get("model") if isinstance(request.get("model"), str) else MODEL_ID
        user_text, outputs = chat_state(messages)
        turn = plan_turn(
            user_text, outputs, offered_tools(request.get("tools")), request.get("tool_choice")
        )
        prompt_tokens = sum(
            _count_tokens(_content_text(m.get("content"))) + 3
            for m in messages
            if isinstance(m, dict)
        )
        completion_tokens = _count_tokens(turn.arguments if turn.is_tool_call else turn.text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        call_id = _new_id("call_", 24)
        created = int(time.time())
        if request.get("stream"):
            options = request.get("stream_options")
            include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            chunks = chat_chunks(
                completion_id, created, model, turn, usage if include_usage else None, call_id
            )
            self._send_sse(((None, chunk) for chunk in chunks), entry["query"], done=True)
            return
        message: dict[str, Any] = {"role": "assistant", "content": turn.text, "refusal": None}
        if turn.is_tool_call:
            message.update(content=None, annotations=[])
            message["tool_calls"] = [_chat_tool_call(turn, call_id)]
        self.send_json(
            HTTPStatus.OK,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if turn.is_tool_call else "stop",
                    }
                ],
                "usage": usage,
            },
        )

    # -- responses ----------------------------------------------------------------

    def _responses(self, entry: dict[str, Any], body: bytes) -> None:
        """``POST /v1/responses``, plain or streamed."""
        request = self._json_object(body)
        if request is None:
            return
        items = _input_items(request.get("input"))
        if items is None:
            self._bad_request(
                "Invalid type for 'input': expected a string or an array of input items.",
                "input",
                "invalid_type",
            )
            return
        history: list[Any] = []
        previous = request.get("previous_response_id")
        if previous is not None:
            stored = self.server.stored_response(previous) if isinstance(previous, str) else None
            if stored is None:
                self._bad_request(
                    f"Previous response with id '{previous}' not found.",
                    "previous_response_id",
                    "previous_response_not_found",
                )
                return
            history = stored[1]
        conversation = history + items
        if not conversation:
            self._bad_request("Missing required parameter: 'input'.", "input", "missing_required")
            return
        user_text, outputs = responses_state(conversation)
        turn = plan_turn(
            user_text, outputs, offered_tools(request.get("tools")), request.get("tool_choice")
        )
        instructions = request.get("instructions")
        input_tokens = sum(_count_tokens(_item_text(item)) + 3 for item in conversation) + (
            _count_tokens(instructions) if isinstance(instructions, str) else 0
        )
        response = build_response(request, turn, input_tokens)
        if request.get("store") is not False:
            self.server.store_response(response, conversation + response["output"])
        if request.get("stream"):
            events = response_events(response)
            self._send_sse(((event["type"], event) for event in events), entry["query"])
        else:
            self.send_json(HTTPStatus.OK, response)

    def _retrieve_response(self, response_id: str) -> None:
        """``GET /v1/responses/<id>``: a stored response, or 404."""
        stored = self.server.stored_response(response_id)
        if stored is None:
            self._send_error(
                HTTPStatus.NOT_FOUND,
                f"Response with id '{response_id}' not found.",
                "invalid_request_error",
                None,
            )
            return
        self.send_json(HTTPStatus.OK, stored[0])

    # -- server-sent events -------------------------------------------------------

    def _write_chunk(self, data: bytes) -> None:
        """Write one HTTP/1.1 chunk and flush it."""
        self.wfile.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.flush()

    def _send_sse(
        self,
        events: Iterable[tuple[str | None, dict[str, Any]]],
        query: str,
        *,
        done: bool = False,
    ) -> None:
        """Send ``(event name or None, data)`` pairs as server-sent events.

        One chunked-encoding chunk per event, flushed; ``done`` ends with
        ``data: [DONE]`` (chat completions).
        """
        delay = self._delay_seconds(query)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        try:
            first = True
            for name, obj in events:
                if delay and not first:
                    time.sleep(delay)
                first = False
                head = f"event: {name}\n".encode() if name else b""
                data = json.dumps(obj).encode("utf-8")
                self._write_chunk(head + b"data: " + data + b"\n\n")
            if done:
                self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The client went away mid-stream: nothing more to send.
            self.close_connection = True


def make_server(
    host: str, port: int, api_key: str | None = None, *, verbose: bool = False
) -> LLMUpstreamServer:
    """Create (bind, not start) the LLM upstream; ``port=0`` picks a free port.

    ``api_key`` defaults to the environment variable ``DEMO_LLM_API_KEY``;
    one of them must be non-empty.  Start the server with ``serve_forever()``
    (or :func:`start_in_thread`); its base URL is ``server.url``.
    """
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
    if not key:
        raise ValueError(f"no API key: pass api_key or set {API_KEY_ENV}")
    return LLMUpstreamServer((host, port), key, verbose=verbose)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: ``python -m demo.llm_upstream [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(
        prog="python -m demo.llm_upstream",
        description=(
            f"OpenAI-compatible scripted model for the Gatehouse demo (API key from env "
            f"{API_KEY_ENV})."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(PORT_ENV, "8102")),
        help=f"port (default: env {PORT_ENV} or 8102)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    args = parser.parse_args(argv)
    try:
        server = make_server(args.host, args.port, verbose=not args.quiet)
    except ValueError as exc:
        parser.error(str(exc))
    serve_until_signal(server, "LLM upstream")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A tiny OpenAI-compatible chat upstream (standard library only) for the demo.

It stands in for a real LLM provider behind Gatehouse: the gateway injects
the API key, and the model answers ``"You said: " + <last user message>`` so
that personal data the agent sends comes straight back in the reply, plain or
streamed in small deltas (3-6 characters, like tokens) that split it apart.

Endpoints (all need ``Authorization: Bearer <key>``, else 401 with an
OpenAI-style error body):

* ``GET /v1/models`` and ``GET /v1/models/gatehouse-echo``
* ``POST /v1/chat/completions``, with ``"stream": true`` (server-sent events,
  chunked transfer encoding, one flushed chunk per event) and
  ``stream_options.include_usage``; ``?delay_ms=N`` or the header
  ``X-Demo-Delay-Ms: N`` sleeps N ms between streamed chunks.

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
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
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
    "make_server",
    "start_in_thread",
    "split_into_pieces",
    "reply_for",
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
#: Piece lengths cycled through when streaming (deterministic, 3 to 6 chars).
PIECE_LENGTHS: tuple[int, ...] = (4, 3, 5, 6, 3, 4, 6, 5)
#: Upper bound for the per-chunk delay (ms).
MAX_DELAY_MS = 10_000
#: ``created`` timestamp of the model in ``/v1/models``.
MODEL_CREATED = 1_700_000_000


class LLMUpstreamServer(RecordingHTTPServer):
    """Recording HTTP server that also holds the API key it requires."""

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
    """Text of a message ``content``: a string, or a list of ``{"type": "text"}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        ]
        return "\n".join(texts)
    return str(content)


def reply_for(messages: Sequence[Any]) -> str:
    """The assistant reply: ``"You said: "`` + the last user message's text."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return REPLY_PREFIX + _content_text(message.get("content"))
    return REPLY_PREFIX


def _count_tokens(text: str) -> int:
    """A rough token count: the number of streaming pieces."""
    return len(split_into_pieces(text))


def _error_body(
    message: str, err_type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI-style error body."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


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
            if self.command != "GET":
                self._method_not_allowed()
                return
            self.send_json(HTTPStatus.OK, {"object": "list", "data": [self._model()]})
        elif path == f"/v1/models/{MODEL_ID}":
            if self.command != "GET":
                self._method_not_allowed()
                return
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
            if self.command != "POST":
                self._method_not_allowed()
                return
            self._chat_completions(entry, body)
        else:
            self._send_error(
                HTTPStatus.NOT_FOUND,
                f"Unknown request URL: {self.command} {entry['path']}.",
                "invalid_request_error",
                "unknown_url",
            )

    def _method_not_allowed(self) -> None:
        """405 in OpenAI style."""
        self._send_error(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"Method {self.command} not allowed here.",
            "invalid_request_error",
            "method_not_allowed",
        )

    @staticmethod
    def _model() -> dict[str, Any]:
        """The model object of :data:`MODEL_ID`."""
        return {
            "id": MODEL_ID,
            "object": "model",
            "created": MODEL_CREATED,
            "owned_by": "gatehouse",
        }

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
        try:
            request = json.loads(body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._send_error(
                HTTPStatus.BAD_REQUEST, f"Invalid JSON body: {exc}", "invalid_request_error", None
            )
            return
        if not isinstance(request, dict):
            self._send_error(
                HTTPStatus.BAD_REQUEST,
                "The body must be a JSON object.",
                "invalid_request_error",
                None,
            )
            return
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            self._send_error(
                HTTPStatus.BAD_REQUEST,
                "'messages' must be a non-empty array.",
                "invalid_request_error",
                None,
                "messages",
            )
            return
        model = request.get("model") if isinstance(request.get("model"), str) else MODEL_ID
        reply = reply_for(messages)
        prompt_tokens = sum(
            _count_tokens(_content_text(m.get("content"))) + 3
            for m in messages
            if isinstance(m, dict)
        )
        completion_tokens = _count_tokens(reply)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if request.get("stream"):
            options = request.get("stream_options")
            include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            self._stream(
                completion_id,
                created,
                model,
                reply,
                usage if include_usage else None,
                entry["query"],
            )
            return
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
                        "message": {"role": "assistant", "content": reply, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )

    @staticmethod
    def _chunks(
        completion_id: str, created: int, model: str, reply: str, usage: dict[str, int] | None
    ) -> Iterator[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects of a streamed reply, in order."""

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

        yield chunk({"role": "assistant", "content": ""}, None)
        for piece in split_into_pieces(reply):
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

    def _write_chunk(self, data: bytes) -> None:
        """Write one HTTP/1.1 chunk and flush it."""
        self.wfile.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.flush()

    def _stream(
        self,
        completion_id: str,
        created: int,
        model: str,
        reply: str,
        usage: dict[str, int] | None,
        query: str,
    ) -> None:
        """Send the reply as server-sent events, one chunked-encoding chunk per event."""
        delay = self._delay_seconds(query)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        try:
            first = True
            for obj in self._chunks(completion_id, created, model, reply, usage):
                if delay and not first:
                    time.sleep(delay)
                first = False
                self._write_chunk(b"data: " + json.dumps(obj).encode("utf-8") + b"\n\n")
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
            f"OpenAI-compatible echo model for the Gatehouse demo (API key from env {API_KEY_ENV})."
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

"""Model Context Protocol (streamable HTTP) messages as the gateway reads them: pure.

No Redis, no mitmproxy. :mod:`proxy_worker.addons.mcp_gate` uses it on ``kind="mcp"``
targets (what the gateway does with the messages is described there).

* **Request bodies** (:func:`parse_body`): one JSON-RPC 2.0 message or a batch (a JSON
  array), each a request (``method`` and ``id``), a notification (``method``, no
  ``id``) or a response the client sends to a server-initiated request (``id`` and
  ``result`` or ``error``). Validation is strict, so the gateway and the MCP server never
  read one body two ways: invalid UTF-8, malformed JSON, ``NaN``/``Infinity`` and a key
  repeated in one object are parse errors (-32700); anything that is not JSON-RPC 2.0
  (no ``"jsonrpc": "2.0"``, a non-string method, an ``id`` that is not a string or an
  integer, ``params`` that are not an object or array, an empty batch, an ``id`` used
  twice in one batch) is an invalid request (-32600). :func:`call_of` reads what access
  rules see of a call (invalid ``params`` of a call: -32602).
* **Response bodies**: ``application/json`` (one message or a batch) and
  ``text/event-stream``, split into events by :class:`SseParser` (WHATWG "Server-sent
  events" framing: CRLF, LF or CR line ends, ``data:`` lines joined with ``\\n``,
  comments, one leading BOM) and rebuilt with :func:`rebuild_event`, which keeps every
  other line of the event (``id:``, ``event:``, ``retry:``, comments) and its line ends.
* **Tools**: :func:`tool_fingerprint` (drift detection), :func:`filter_list`
  (``tools/list``, ``prompts/list``, ``resources/list`` without the hidden entries),
  :func:`stash_blobs` / :func:`restore_blobs` (base64 payloads kept away from the
  text detectors).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

#: ``protocol`` of exchanges and approval requests for MCP calls (the contract's field).
PROTOCOL_MCP = "mcp"

#: Headers of the streamable HTTP transport (lower case, as mitmproxy compares them).
SESSION_HEADER = "mcp-session-id"
PROTOCOL_VERSION_HEADER = "mcp-protocol-version"

#: JSON-RPC 2.0 error codes (section 5.1) and the one Gatehouse uses for refusals (in
#: the -32000 to -32099 range JSON-RPC leaves to implementations).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REFUSED = -32001

#: Requests whose answer lists entries the gateway may hide, and the key of the list in
#: the result and the key naming an entry.
LIST_METHODS: dict[str, tuple[str, str]] = {
    "tools/list": ("tools", "name"),
    "prompts/list": ("prompts", "name"),
    "resources/list": ("resources", "uri"),
}
#: The call each listed entry stands for (what is evaluated to decide whether it shows).
LIST_CALL = {
    "tools/list": "tools/call",
    "prompts/list": "prompts/get",
    "resources/list": "resources/read",
}

#: Recorded results and arguments are kept as JSON up to this many characters of compact
#: JSON; longer ones are recorded as the first this-many characters, as a string.
RECORD_VALUE_LIMIT = 64 * 1024

MessageKind = Literal["request", "notification", "response"]


class JsonRpcError(ValueError):
    """A body or message the gateway refuses, with the JSON-RPC error code to answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Message:
    """One JSON-RPC message of a request body. ``index`` is its position in a batch
    (``None`` for a body holding one message)."""

    kind: MessageKind
    obj: dict[str, Any]
    index: int | None = None

    @property
    def id(self) -> Any:
        return self.obj.get("id")

    @property
    def method(self) -> str:
        return self.obj.get("method", "") if self.kind != "response" else ""

    @property
    def params(self) -> Any:
        return self.obj.get("params")


@dataclass(frozen=True)
class Body:
    """A parsed POST body: its messages in order and whether it was a batch."""

    messages: tuple[Message, ...]
    batch: bool = False

    @property
    def requests(self) -> tuple[Message, ...]:
        return tuple(m for m in self.messages if m.kind == "request")


# -- strict JSON ---------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise JsonRpcError(PARSE_ERROR, f"Parse error: key {k[:40]!r} repeated in one object")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise JsonRpcError(PARSE_ERROR, f"Parse error: {name} is not JSON")


def loads_strict(data: bytes | str) -> Any:
    """Parse JSON strictly: UTF-8 only, no repeated keys, no ``NaN``/``Infinity``.

    Raises :class:`JsonRpcError` (-32700) otherwise.
    """
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonRpcError(PARSE_ERROR, f"Parse error: body is not UTF-8 ({e.reason})") from e
    else:
        text = data
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except JsonRpcError:
        raise
    except RecursionError:
        raise JsonRpcError(PARSE_ERROR, "Parse error: JSON nested too deeply") from None
    except ValueError as e:
        raise JsonRpcError(PARSE_ERROR, f"Parse error: {e}") from None


def dumps(value: Any) -> bytes:
    """Compact JSON (UTF-8, non-ASCII kept): what the gateway writes on the wire."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def compact(value: Any) -> str:
    """Compact JSON text with sorted keys (canonical: fingerprints, rule matching)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def id_key(value: Any) -> str:
    """A dictionary key for a JSON-RPC id (``1`` and ``"1"`` are different ids)."""
    return json.dumps(value, separators=(",", ":"))


# -- request bodies ----------------------------------------------------------------------


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def classify(obj: Any, index: int | None = None) -> Message:
    """One message sent by a client, validated; :class:`JsonRpcError` (-32600) otherwise."""
    where = "" if index is None else f" (batch element {index})"
    if not isinstance(obj, dict):
        raise JsonRpcError(INVALID_REQUEST, f"Invalid Request: not a JSON-RPC message{where}")
    if obj.get("jsonrpc") != "2.0":
        raise JsonRpcError(INVALID_REQUEST, f'Invalid Request: "jsonrpc" must be "2.0"{where}')
    if "method" in obj:
        method = obj["method"]
        if not isinstance(method, str) or not method:
            raise JsonRpcError(INVALID_REQUEST, f"Invalid Request: method must be a string{where}")
        if "result" in obj or "error" in obj:
            raise JsonRpcError(
                INVALID_REQUEST, f"Invalid Request: a request has no result or error{where}"
            )
        if "params" in obj and not isinstance(obj["params"], dict | list):
            raise JsonRpcError(
                INVALID_REQUEST, f"Invalid Request: params must be an object or array{where}"
            )
        if "id" not in obj:
            return Message("notification", obj, index)
        if not _valid_id(obj["id"]):
            raise JsonRpcError(
                INVALID_REQUEST, f"Invalid Request: id must be a string or an integer{where}"
            )
        return Message("request", obj, index)
    if "id" not in obj or ("result" in obj) == ("error" in obj):
        raise JsonRpcError(
            INVALID_REQUEST,
            f"Invalid Request: a message needs a method, or an id and one of result/error{where}",
        )
    if obj["id"] is not None and not _valid_id(obj["id"]):
        raise JsonRpcError(
            INVALID_REQUEST, f"Invalid Request: id must be a string or an integer{where}"
        )
    if "error" in obj:
        err = obj["error"]
        if not (
            isinstance(err, dict)
            and isinstance(err.get("code"), int)
            and isinstance(err.get("message"), str)
        ):
            raise JsonRpcError(
                INVALID_REQUEST, f"Invalid Request: error needs a code and a message{where}"
            )
    return Message("response", obj, index)


def parse_body(data: bytes) -> Body:
    """Parse and validate a POST body of the streamable HTTP transport.

    Raises :class:`JsonRpcError` with -32700 (not JSON) or -32600 (not JSON-RPC 2.0).
    """
    if not data.strip():
        raise JsonRpcError(INVALID_REQUEST, "Invalid Request: empty body")
    value = loads_strict(data)
    if isinstance(value, list):
        if not value:
            raise JsonRpcError(INVALID_REQUEST, "Invalid Request: empty batch")
        messages = tuple(classify(v, i) for i, v in enumerate(value))
        seen: set[str] = set()
        for m in messages:
            if m.kind == "request":
                k = id_key(m.id)
                if k in seen:
                    raise JsonRpcError(
                        INVALID_REQUEST, f"Invalid Request: id {m.id!r} used twice in one batch"
                    )
                seen.add(k)
        return Body(messages, batch=True)
    return Body((classify(value),), batch=False)


def call_of(message: Message) -> tuple[str, Any]:
    """``(name, arguments)`` of a ``tools/call``, ``prompts/get`` or ``resources/read``
    request (``resources/read``: the URI and ``{}``).

    Raises :class:`JsonRpcError` (-32602) when ``params`` lack the name or URI or the
    arguments are not an object.
    """
    params = message.params
    if not isinstance(params, dict):
        raise JsonRpcError(INVALID_PARAMS, f"Invalid params: {message.method} needs params")
    if message.method == "resources/read":
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise JsonRpcError(INVALID_PARAMS, "Invalid params: resources/read needs a uri")
        return uri, {}
    name = params.get("name")
    if not isinstance(name, str):
        raise JsonRpcError(INVALID_PARAMS, f"Invalid params: {message.method} needs a name")
    arguments = params.get("arguments", {})
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise JsonRpcError(INVALID_PARAMS, "Invalid params: arguments must be an object")
    return name, arguments


def error_response(id_: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    """A JSON-RPC error response object."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": error}


def server_message_kind(obj: Any) -> str:
    """What a message from the server is: ``request`` (a server-initiated request),
    ``notification``, ``response`` (to a client request) or ``other``."""
    if not isinstance(obj, dict):
        return "other"
    if isinstance(obj.get("method"), str):
        return "request" if "id" in obj else "notification"
    if "id" in obj and ("result" in obj or "error" in obj):
        return "response"
    return "other"


# -- server-sent events ------------------------------------------------------------------


@dataclass
class SseEvent:
    """One event of a ``text/event-stream`` body, as received.

    ``lines`` are the raw lines without their line ends; ``eol`` the line end of the
    first line (``b"\\r\\n"``, ``b"\\n"`` or ``b"\\r"``); ``raw`` the bytes of the whole
    event, its terminating blank line included (empty when the stream ended without one).
    ``data`` is the event's data (``data:`` values joined with ``\\n``), ``None`` when it
    has no ``data:`` line.
    """

    lines: list[bytes]
    eol: bytes
    raw: bytes
    data: str | None = None
    id: str | None = None
    event: str | None = None


def _field(line: bytes) -> tuple[bytes, bytes]:
    name, sep, value = line.partition(b":")
    if sep and value.startswith(b" "):
        value = value[1:]
    return name, value


def _event(lines: list[bytes], eols: list[bytes], raw: bytes) -> SseEvent:
    data: list[str] = []
    ev = SseEvent(lines, eols[0] if eols else b"\n", raw)
    for line in lines:
        if line.startswith(b":"):
            continue
        name, value = _field(line)
        text = value.decode("utf-8", errors="replace")
        if name == b"data":
            data.append(text)
        elif name == b"id":
            ev.id = text
        elif name == b"event":
            ev.event = text
    ev.data = "\n".join(data) if data else None
    return ev


_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass
class SseParser:
    """Split a ``text/event-stream`` body into :class:`SseEvent` as bytes arrive.

    ``feed`` returns the events completed by a chunk, ``finish`` the last one when the
    stream ends without a blank line. An event larger than ``max_event_bytes`` raises
    ``ValueError`` (never passed on unread).
    """

    max_event_bytes: int = 10 * 1024 * 1024
    _buf: bytearray = field(default_factory=bytearray)
    _lines: list[bytes] = field(default_factory=list)
    _eols: list[bytes] = field(default_factory=list)
    _raw: bytearray = field(default_factory=bytearray)
    _started: bool = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buf += chunk
        if not self._started and len(self._buf) >= 3:
            self._started = True
            if self._buf.startswith(b"\xef\xbb\xbf"):
                self._raw += self._buf[:3]
                del self._buf[:3]
        out: list[SseEvent] = []
        pos = 0
        buf = bytes(self._buf)
        while True:
            m = _EOL.search(buf, pos)
            if m is None:
                break
            if m.group() == b"\r" and m.end() == len(buf):
                break  # a CR at the end of the chunk may be the start of CRLF
            line = buf[pos : m.start()]
            self._raw += buf[pos : m.end()]
            pos = m.end()
            if line:
                self._lines.append(line)
                self._eols.append(m.group())
            else:
                out.append(_event(self._lines, self._eols, bytes(self._raw)))
                self._lines, self._eols, self._raw = [], [], bytearray()
        del self._buf[:pos]
        if len(self._raw) + len(self._buf) > self.max_event_bytes:
            raise ValueError(f"an event exceeds {self.max_event_bytes} bytes")
        return out

    def finish(self) -> list[SseEvent]:
        if self._buf:
            tail = bytes(self._buf)
            self._buf.clear()
            self._raw += tail
            self._lines.append(tail.rstrip(b"\r"))
            self._eols.append(b"\n")
        if not self._lines and not self._raw:
            return []
        ev = _event(self._lines, self._eols, bytes(self._raw))
        self._lines, self._eols, self._raw = [], [], bytearray()
        return [ev]


def rebuild_event(event: SseEvent, data: str) -> bytes:
    """``event`` with its data replaced by ``data`` (one line: compact JSON has no line
    break; other text is split into ``data:`` lines), every other line kept as received,
    in place, with the event's line end."""
    eol = event.eol
    data_lines = [b"data: " + part.encode("utf-8") for part in data.split("\n")]
    out: list[bytes] = []
    placed = False
    for line in event.lines:
        if not line.startswith(b":") and _field(line)[0] == b"data":
            if not placed:
                out.extend(data_lines)
                placed = True
            continue
        out.append(line)
    if not placed:
        out.extend(data_lines)
    return b"".join(line + eol for line in out) + eol


# -- tools -----------------------------------------------------------------------------


def tool_fingerprint(tool: dict[str, Any]) -> str:
    """SHA-256 hex digest of what a tool tells the model: its description, input schema
    and annotations, as canonical JSON (sorted keys). A change within a session is drift."""
    basis = {
        "description": tool.get("description"),
        "inputSchema": tool.get("inputSchema"),
        "annotations": tool.get("annotations"),
    }
    return hashlib.sha256(compact(basis).encode("utf-8", "surrogatepass")).hexdigest()


def list_entries(method: str, result: Any) -> list[tuple[int, str, dict[str, Any]]]:
    """``(position, name, entry)`` of each named entry of a list answer (``tools/list``
    and the others of :data:`LIST_METHODS`)."""
    key, name_key = LIST_METHODS[method]
    entries = result.get(key) if isinstance(result, dict) else None
    if not isinstance(entries, list):
        return []
    return [
        (i, e[name_key], e)
        for i, e in enumerate(entries)
        if isinstance(e, dict) and isinstance(e.get(name_key), str)
    ]


def filter_list(method: str, result: dict[str, Any], hidden: set[str]) -> dict[str, Any]:
    """``result`` of a list answer without the entries named in ``hidden`` (a new dict;
    entries without a name are removed too: nothing unnamed can be judged)."""
    key, name_key = LIST_METHODS[method]
    entries = result.get(key)
    if not isinstance(entries, list):
        return result
    kept = [
        e
        for e in entries
        if isinstance(e, dict) and isinstance(e.get(name_key), str) and e[name_key] not in hidden
    ]
    return {**result, key: kept}


# -- binary payloads -------------------------------------------------------------------

_BLOB_MARK = "\x00gatehouse-blob-{}\x00"


def _is_blob_holder(d: dict[str, Any]) -> str | None:
    """The key of the base64 payload of a content item or resource, if it has one."""
    if isinstance(d.get("blob"), str):
        return "blob"
    if d.get("type") in ("image", "audio") and isinstance(d.get("data"), str):
        return "data"
    return None


def find_blobs(value: Any) -> list[dict[str, Any]]:
    """Every object holding a base64 payload (image/audio content ``data``, resource
    ``blob``) inside ``value``."""
    out: list[dict[str, Any]] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if _is_blob_holder(v):
                out.append(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return out


def stash_blobs(value: Any, blobs: list[str] | None = None) -> tuple[Any, list[str]]:
    """A copy of ``value`` whose base64 payloads are replaced by markers no detector
    matches, and the payloads (:func:`restore_blobs` puts them back)."""
    blobs = [] if blobs is None else blobs
    if isinstance(value, dict):
        key = _is_blob_holder(value)
        out = {}
        for k, v in value.items():
            if k == key:
                out[k] = _BLOB_MARK.format(len(blobs))
                blobs.append(v)
            else:
                out[k] = stash_blobs(v, blobs)[0]
        return out, blobs
    if isinstance(value, list):
        return [stash_blobs(v, blobs)[0] for v in value], blobs
    return value, blobs


_MARK_RE = re.compile("\x00gatehouse-blob-([0-9]+)\x00")


def restore_blobs(value: Any, blobs: list[str]) -> Any:
    """Put the payloads :func:`stash_blobs` took back (markers a rule replaced stay
    replaced)."""
    if not blobs:
        return value
    if isinstance(value, str):
        m = _MARK_RE.fullmatch(value)
        return blobs[int(m.group(1))] if m else value
    if isinstance(value, dict):
        return {k: restore_blobs(v, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [restore_blobs(v, blobs) for v in value]
    return value


# -- what is recorded ------------------------------------------------------------------


def bounded(value: Any, limit: int = RECORD_VALUE_LIMIT) -> Any:
    """``value`` when its compact JSON fits in ``limit`` characters, else the first
    ``limit`` characters of that JSON as a string (what the replay shows as text)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value if len(text) <= limit else text[:limit]


def message_target(obj: Any) -> str:
    """The tool name, resource URI or prompt name a (masked) request names, or ``""``."""
    params = obj.get("params") if isinstance(obj, dict) else None
    if not isinstance(params, dict):
        return ""
    value = params.get("uri") if obj.get("method") == "resources/read" else params.get("name")
    return value if isinstance(value, str) else ""


def approval_details(masked_body: bytes, base: dict[str, Any]) -> dict[str, Any]:
    """The ``details`` of an approval request for one held call: ``jsonrpc_method``,
    ``tool`` and ``arguments`` read from the masked JSON-RPC request (``base`` supplies
    the method when the masked body no longer parses)."""
    # The tool (a resource URI may hold personal data) is read from the masked request only.
    details = {"jsonrpc_method": base.get("jsonrpc_method", ""), "tool": ""}
    try:
        value = json.loads(masked_body)
    except ValueError:
        details["arguments"] = None
        return details
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        params = value.get("params")
        if isinstance(value.get("method"), str):
            details["jsonrpc_method"] = value["method"]
        details["tool"] = message_target(value)
        args = params.get("arguments", {}) if isinstance(params, dict) else {}
        details["arguments"] = bounded(args)
    return details


_SESSION_OK = re.compile(r"[!-~]{1,128}")


def session_slot(session_id: str) -> str:
    """The session id as a Redis key part: as sent when it is 1 to 128 visible ASCII
    characters without ``:`` or ``*``, else ``sha256:<hex>`` of it."""
    if _SESSION_OK.fullmatch(session_id) and ":" not in session_id and "*" not in session_id:
        return session_id
    return "sha256:" + hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()

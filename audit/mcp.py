"""Recorded MCP calls as tool calls: what the agent called, with which arguments, and
what came back.

Pure builders over an exchange's (or approval request's) recorded ``details`` (protocol
``mcp``; shape: :class:`proxy_worker.contract.ExchangeMessage`): ``jsonrpc_method``,
``jsonrpc_id``, ``tool`` (tool name, resource URI or prompt name), ``arguments``
(masked JSON), ``result`` (masked JSON, bounded), ``is_error``, ``error``
(``{"code", "message"}``), ``mcp_session``, ``batch_index``, ``hidden_tools``,
``changed_tools``, ``server_request`` and ``client_response`` (the client's answer to
a server-initiated request). Arguments and results past the worker's recording bound
are the start of their JSON text (a string). Any key may be missing or of the wrong type:
a malformed record still renders. They return plain text; templates escape it (``masked``
filter: escape first, then highlight masking placeholders), so nothing recorded ever
becomes markup.

A result is shown the way an MCP client shows it (MCP 2025-06-18, "Tools", "Resources",
"Prompts"): text content blocks as text; images, audio and blobs summarised (type, MIME
type, size); resource links by URI; structured content, unknown results and unknown
content as pretty JSON; tools/list, resources/list and prompts/list as lists of names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: Characters of one text block shown (the rest is cut with ``…``; the whole recorded
#: message is on the page too, under "as recorded").
TEXT_LIMIT = 20_000
#: Entries of a tools/list (resources/list, prompts/list) answer listed.
LIST_LIMIT = 200


@dataclass(frozen=True)
class Badge:
    """A short fact shown next to the call (beside the decision: denied by a rule, held
    for approval, approved by whom, which the page says as for every exchange).
    ``kind`` is one of a fixed set (a CSS class suffix, never recorded text):
    ``tool-error``, ``error``, ``drift-blocked``, ``drift-flagged``, ``hidden``,
    ``server-request``, ``notification``, ``batch``, ``cut``."""

    kind: str
    text: str


@dataclass(frozen=True)
class Block:
    """One part of a result. ``kind``: ``text`` (a text content block, shown as text),
    ``summary`` (one line saying what a non-text part was), ``json`` (pretty JSON) or
    ``item`` (one entry of a list answer: ``label`` its name, ``text`` its description).
    ``label`` says what the part is (``resource file:///a.txt``, ``assistant``) or is
    empty."""

    kind: str
    label: str
    text: str


@dataclass
class ToolCall:
    """What the replay (and the approval pages) show of one recorded MCP message."""

    method: str
    name: str
    call_id: str
    call_line: str
    arguments: str
    result_line: str
    blocks: list[Block] = field(default_factory=list)
    badges: list[Badge] = field(default_factory=list)
    notification: bool = False
    server_request: bool = False
    batch_index: int | None = None
    mcp_session: str = ""
    hidden_tools: list[str] = field(default_factory=list)
    changed_tools: list[str] = field(default_factory=list)


def pretty(value: Any) -> str:
    """``value`` as indented JSON (non-ASCII kept), ``str()`` when it is not JSON."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def compact(value: Any) -> str:
    """``value`` as one-line JSON (for queue rows and notifications)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        return str(value)


def _cut(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _str_list(value: Any) -> list[str]:
    return [_str(v) for v in value] if isinstance(value, list) else []


def _size(data: Any) -> str:
    """The decoded size of base64 ``data``, for summaries (``12.3 KB``)."""
    n = len(data) * 3 // 4 if isinstance(data, str) else 0
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


def _mime(item: dict[str, Any]) -> str:
    return _str(item.get("mimeType")) or "unknown type"


def content_blocks(content: Any) -> list[Block]:
    """Blocks of a tools/call ``content`` list (or a prompt message's ``content``)."""
    items = content if isinstance(content, list) else [content]
    out: list[Block] = []
    for item in items:
        if not isinstance(item, dict):
            out.append(Block("json", "content", pretty(item)))
            continue
        kind = _str(item.get("type"))
        if kind == "text":
            out.append(Block("text", "", _cut(_str(item.get("text")))))
        elif kind in ("image", "audio"):
            out.append(Block("summary", "", f"[{kind}, {_mime(item)}, {_size(item.get('data'))}]"))
        elif kind == "resource_link":
            name = _str(item.get("name"))
            label = f" {name}" if name else ""
            out.append(Block("summary", "", f"[resource link{label}: {_str(item.get('uri'))}]"))
        elif kind == "resource" and isinstance(item.get("resource"), dict):
            out.extend(resource_blocks([item["resource"]]))
        else:
            out.append(Block("json", f"{kind or 'unknown'} content", pretty(item)))
    return out


def resource_blocks(contents: Any) -> list[Block]:
    """Blocks of resources/read ``contents`` (or an embedded resource): text as text,
    a blob summarised."""
    out: list[Block] = []
    for item in contents if isinstance(contents, list) else [contents]:
        if not isinstance(item, dict):
            out.append(Block("json", "resource", pretty(item)))
            continue
        label = f"resource {_str(item.get('uri'))}"
        if "text" in item:
            out.append(Block("text", label, _cut(_str(item.get("text")))))
        elif "blob" in item:
            out.append(Block("summary", label, f"[{_mime(item)}, {_size(item.get('blob'))}]"))
        else:
            out.append(Block("json", label, pretty(item)))
    return out


def _list_blocks(
    entries: Any, what: str, key: str, changed: list[str], hidden: list[str]
) -> list[Block]:
    items = entries if isinstance(entries, list) else []
    out = [Block("summary", "", f"{len(items)} {what}{'' if len(items) == 1 else 's'}")]
    for item in items[:LIST_LIMIT]:
        if not isinstance(item, dict):
            out.append(Block("json", "", pretty(item)))
            continue
        name = _str(item.get(key) or item.get("name"))
        notes = [n for n, on in (("changed", name in changed), ("hidden", name in hidden)) if on]
        label = name + (f" ({', '.join(notes)})" if notes else "")
        out.append(Block("item", label, _cut(_str(item.get("description")), 2000)))
    if len(items) > LIST_LIMIT:
        out.append(Block("summary", "", f"… and {len(items) - LIST_LIMIT} more"))
    return out


def result_blocks(
    method: str, result: Any, *, changed: list[str] | None = None, hidden: list[str] | None = None
) -> list[Block]:
    """The blocks of a recorded ``result`` of ``method``."""
    changed, hidden = changed or [], hidden or []
    if result is None:
        return []
    if isinstance(result, str):  # cut by the worker's bound: kept as text
        return [Block("text", "result as recorded (cut: the start of its JSON)", _cut(result))]
    if not isinstance(result, dict):
        return [Block("json", "", pretty(result))]
    out: list[Block] = []
    if "content" in result:
        out.extend(content_blocks(result["content"]))
    if "structuredContent" in result:
        out.append(Block("json", "structured content", pretty(result["structuredContent"])))
    if "contents" in result:
        out.extend(resource_blocks(result["contents"]))
    if "messages" in result:
        if result.get("description"):
            out.append(Block("summary", "", _str(result["description"])))
        for message in result["messages"] if isinstance(result["messages"], list) else []:
            role = _str(message.get("role")) if isinstance(message, dict) else ""
            content = message.get("content") if isinstance(message, dict) else message
            out.extend(Block(b.kind, b.label or role, b.text) for b in content_blocks(content))
    if "tools" in result:
        out.extend(_list_blocks(result["tools"], "tool", "name", changed, hidden))
    if "resources" in result:
        out.extend(_list_blocks(result["resources"], "resource", "uri", changed, hidden))
    if "resourceTemplates" in result:
        out.extend(
            _list_blocks(result["resourceTemplates"], "template", "uriTemplate", changed, hidden)
        )
    if "prompts" in result:
        out.extend(_list_blocks(result["prompts"], "prompt", "name", changed, hidden))
    if "serverInfo" in result or "protocolVersion" in result:
        info = result.get("serverInfo") if isinstance(result.get("serverInfo"), dict) else {}
        caps = result.get("capabilities")
        line = f"server {_str(info.get('name')) or '?'} {_str(info.get('version'))}".rstrip()
        line += f" · protocol {_str(result.get('protocolVersion')) or '?'}"
        if isinstance(caps, dict) and caps:
            line += " · capabilities: " + ", ".join(sorted(str(k) for k in caps))
        out.append(Block("summary", "", line))
        if result.get("instructions"):
            out.append(Block("text", "instructions", _cut(_str(result["instructions"]))))
    if not out:
        out.append(Block("json", "", pretty(result)) if result else Block("summary", "", "(empty)"))
    return out


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error(value: Any) -> tuple[str, str] | None:
    if isinstance(value, dict) and (value.get("code") is not None or value.get("message")):
        return _str(value.get("code")), _str(value.get("message"))
    return None


def _error_text(code: str, message: str) -> str:
    head = f"error {code}" if code else "error"
    return f"{head}: {message}" if message else head


def tool_call(
    details: dict[str, Any] | None,
    *,
    method: str = "",
    decision: str = "",
) -> ToolCall:
    """The tool-call rendering of one recorded MCP message (an exchange's ``details``
    with its ``method`` and ``decision``; an approval request's details with its method).

    A changed tool (``changed_tools``) counts as blocked when the gateway hid it
    (``hidden_tools``) or refused this call of it, otherwise as flagged: the record says
    what happened, whatever the target's setting is today.
    """
    d = details if isinstance(details, dict) else {}
    client_response = d.get("client_response") is True
    rpc = _str(d.get("jsonrpc_method")) or (
        "" if client_response or "jsonrpc_method" in d else method
    )
    name = _str(d.get("tool"))
    raw_id = d.get("jsonrpc_id")
    call_id = "" if raw_id is None else (raw_id if isinstance(raw_id, str) else compact(raw_id))
    server = d.get("server_request") is True
    notification = not server and not client_response and "jsonrpc_id" in d and raw_id is None
    hidden = _str_list(d.get("hidden_tools"))
    changed = _str_list(d.get("changed_tools"))
    error = _error(d.get("error"))
    has_result = "result" in d and d.get("result") is not None
    arguments = d.get("arguments")
    # A call without arguments shows {} (tools/call sends them); others show nothing.
    # Arguments past the recording bound arrive as the start of their JSON text.
    empty = arguments is None or (arguments == {} and rpc != "tools/call")
    args_text = "" if empty else (arguments if isinstance(arguments, str) else pretty(arguments))

    target = f" {name}" if name else ""
    if server:
        call_line = f"← {rpc or 'request'}{target} (a request from the server)"
    elif client_response:
        call_line = "→ answer to the server's request" + (f" {call_id}" if call_id else "")
    elif not rpc:
        call_line = "→ (no JSON-RPC method: the message could not be read)"
    else:
        call_line = f"→ {rpc}{target}" + (" (notification)" if notification else "")
    answer = "→" if server else "←"
    if error:
        refused = "refused by Gatehouse: " if server else ""
        result_line = f"{answer} {refused}{_error_text(*error)}"
    elif server:
        result_line = f"{answer} refused by Gatehouse"
    elif has_result:
        result_line = f"{answer} result" + (" (tool error)" if d.get("is_error") is True else "")
    elif notification or client_response:
        result_line = ""
    else:
        result_line = f"{answer} no answer recorded"

    badges: list[Badge] = []
    if d.get("is_error") is True:
        badges.append(
            Badge("error", f"JSON-RPC error {error[0]}".rstrip())
            if error
            else Badge("tool-error", "tool error")
        )
    refused_here = decision in ("denied", "error")
    blocked = [t for t in changed if t in hidden or (refused_here and t == name)]
    flagged = [t for t in changed if t not in blocked]
    if blocked:
        badges.append(Badge("drift-blocked", "changed tool blocked: " + ", ".join(blocked)))
    if flagged:
        badges.append(Badge("drift-flagged", "changed tool flagged: " + ", ".join(flagged)))
    if hidden:
        shown = ", ".join(hidden[:20]) + (" …" if len(hidden) > 20 else "")
        n = len(hidden)
        badges.append(Badge("hidden", f"{n} tool{'' if n == 1 else 's'} hidden: {shown}"))
    if server:
        badges.append(Badge("server-request", "server request refused"))
    if notification:
        badges.append(Badge("notification", "notification"))
    if client_response:
        badges.append(Badge("notification", "answer to a server request"))
    if isinstance(arguments, str) or isinstance(d.get("result"), str):
        badges.append(Badge("cut", "cut at the recording limit"))
    batch = _int_or_none(d.get("batch_index"))
    if batch is not None:
        badges.append(Badge("batch", f"call {batch + 1} of a batch"))

    return ToolCall(
        method=rpc,
        name=name,
        call_id=call_id,
        call_line=call_line,
        arguments=args_text,
        result_line=result_line,
        blocks=result_blocks(rpc, d.get("result"), changed=changed, hidden=hidden)
        if has_result
        else [],
        badges=badges,
        notification=notification,
        server_request=server,
        batch_index=batch,
        mcp_session=_str(d.get("mcp_session")),
        hidden_tools=hidden,
        changed_tools=changed,
    )


def arguments_preview(details: dict[str, Any] | None, limit: int = 300) -> str:
    """The masked arguments of a call as one line of JSON, cut at ``limit``."""
    d = details if isinstance(details, dict) else {}
    if d.get("arguments") is None:
        return ""
    return _cut(compact(d["arguments"]), limit)

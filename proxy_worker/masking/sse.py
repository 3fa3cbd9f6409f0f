"""Incremental masking of ``text/event-stream`` bodies.

Event framing follows the WHATWG HTML "Server-sent events" section
(EventSource) and RFC 8895: lines end with CRLF, LF or CR; an event ends at a
blank line; ``data:`` lines of one event are joined with ``\\n``; lines starting
with ``:`` are comments; one leading UTF-8 BOM is allowed.

Each complete event is masked as soon as its blank line arrives:

* ``data`` that parses as JSON is masked with
  :meth:`~proxy_worker.masking.Masker.mask_json_value` (findings
  ``sse[<event index>]$…``) and re-serialised on one ``data:`` line when it
  changed; other data is masked as text (``sse[<event index>]@<offset>``);
  ``[DONE]`` passes; ``event:``, ``id:``, ``retry:`` and comments pass unchanged.
  Unchanged events are forwarded byte for byte.

* Token streams are reassembled so that a value split across deltas is still
  caught. Recognised delta texts:

  - OpenAI-compatible chat completions: ``choices[i].delta.content`` (also
    ``reasoning_content``, ``reasoning``, ``refusal``),
    ``choices[i].delta.tool_calls[j].function.arguments`` and legacy
    completions ``choices[i].text``, keyed by choice ``index`` (and tool call
    ``index``);
  - OpenAI Responses API: any ``response.*.delta`` event with a string
    ``delta`` (``response.output_text.delta``, ``…function_call_arguments.delta``,
    …), keyed by ``(type, item_id, output_index, content_index, summary_index)``.

  For each key the masker keeps a pending raw tail. A new delta is appended to
  it, the whole pending text is masked, and everything except a hold-back tail
  of at most :data:`HOLD_BACK` characters is emitted in place of the event's
  delta (possibly ``""``). The cut never splits a detected match and holds back
  the trailing whitespace-free run together with preceding space-separated
  groups that contain digits or look like IBAN groups (``4111 1111 …``,
  ``+1 234 567``, ``GB82 WEST 1234``), since those could still grow into an
  e-mail, phone, card or IBAN. The rest is flushed into the chunk that carries
  the choice's ``finish_reason``; on ``[DONE]``, on a Responses event about the
  same item (``….done``, ``response.output_item.done``) or a terminal
  ``response.completed``/``failed``/``incomplete``, and at :meth:`finish`, any
  remainder is emitted as a synthetic delta event copying the ``id``/``model``…
  fields (chat) or the last delta event (Responses; note its
  ``sequence_number`` is repeated).

Hold-back bound: at most :data:`HOLD_BACK` (4096) characters of one delta
stream are withheld, which is the longest span of any built-in detector
(``max_span``: PEM private keys and JWT/bearer tokens up to 4096 characters;
e-mail addresses about 640; cards, phones, IBANs, SSNs 64 or less). In
practice prose flows word by word: only the trailing whitespace-free run
(plus preceding digit or IBAN-like groups) is held, and an unfinished PEM
block from its ``-----BEGIN`` line. Limits: a single token longer than
:data:`HOLD_BACK`, and custom patterns or deny-list phrases longer than it,
may be emitted partly unmasked; values split across *generic* (non-delta)
events are not reassembled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .detectors import Detection
from .engine import Finding, _dumps, _DupKeys
from .errors import BodyTooLargeError, MaskingError
from .secrets import PEM_MAX_CHARS, TOKEN_MAX_CHARS, open_pem_start

if TYPE_CHECKING:
    from .engine import Masker
    from .jsonstream import JsonStreamMasker

__all__ = ["HOLD_BACK", "SSEStreamMasker", "TextTail", "safe_cut"]

#: Maximum number of characters of a delta text stream withheld while waiting
#: to see whether the tail completes a sensitive value: the longest
#: ``max_span`` of the built-in detectors (:data:`~.secrets.PEM_MAX_CHARS`,
#: :data:`~.secrets.TOKEN_MAX_CHARS`), so any built-in detection fits in it.
HOLD_BACK = max(PEM_MAX_CHARS, TOKEN_MAX_CHARS)

_CONTEXT_CHARS = 48  # raw text before the pending tail, keyword context (e.g. "SSN:")
_EOL_RE = re.compile(rb"[\r\n]")
_UTF8_BOM = b"\xef\xbb\xbf"
_CHAT_TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")
_RESP_TERMINAL = frozenset(
    {"response.completed", "response.failed", "response.incomplete", "response.cancelled", "error"}
)
_IBAN_GROUP_RE = re.compile(r"[A-Z0-9]{1,4}\Z")
#: Responses API delta events whose text is JSON (function-call arguments).
_RESP_JSON_DELTAS = frozenset(
    {"response.function_call_arguments.delta", "response.mcp_call_arguments.delta"}
)
_RESP_JSON_DONE = frozenset(
    {"response.function_call_arguments.done", "response.mcp_call_arguments.done"}
)
#: Output items whose ``arguments`` are JSON text.
_CALL_ITEMS = frozenset({"function_call", "mcp_call"})

StreamKey = tuple[Any, ...]


def _hashable(v: Any) -> Any:
    return v if isinstance(v, str | int | float | type(None)) else repr(v)


def _groupish(group: str) -> bool:
    """A space-separated group that may belong to a card/phone/SSN/IBAN."""
    return any(c.isdigit() for c in group) or _IBAN_GROUP_RE.match(group) is not None


def safe_cut(text: str, detections: list[Detection]) -> int:
    """Where to split a pending delta text into (emit now, hold back).

    Args:
        text: the pending raw text.
        detections: :meth:`Masker.scan` of ``text`` (sorted, non-overlapping).

    Returns:
        ``cut`` with ``len(text) - HOLD_BACK <= cut <= len(text)``, not strictly
        inside any detection, at or before the start of the trailing
        whitespace-free run and of preceding single-space-separated
        digit/IBAN-like groups and at or before the start of a PEM private
        key block without its END line (unless that would exceed
        :data:`HOLD_BACK`).
    """
    n = len(text)
    floor = max(0, n - HOLD_BACK)
    i = n
    while i > floor and not text[i - 1].isspace():
        i -= 1
    while i - 1 > floor and text[i - 1] == " " and not text[i - 2].isspace():
        k = i - 1
        while k > floor and not text[k - 1].isspace():
            k -= 1
        if not _groupish(text[k : i - 1]):
            break
        i = k
    pem = open_pem_start(text)
    if pem is not None and pem >= floor:
        i = min(i, pem)
    cut = i
    for d in detections:
        if d.start < cut < d.end:
            cut = d.start if d.start >= floor else d.end
            break
        if d.start >= cut:
            break
    return cut


class TextTail:
    """The incremental text masker of one delta stream: ``pending`` raw text
    withheld, ``context`` the last raw characters emitted (for keyword
    context such as ``SSN:``)."""

    __slots__ = ("context", "pending")

    def __init__(self) -> None:
        self.pending = ""
        self.context = ""

    def emit(
        self, masker: Masker, piece: str, *, flush: bool, hint: str = ""
    ) -> tuple[str, list[Detection]]:
        """Append ``piece``; return the masked text safe to emit (all of it
        when ``flush``) and the detections in it."""
        text = self.pending + piece
        if not text:
            return "", []
        # Scan with the already-emitted raw context in front so that detectors
        # see the same surroundings as in the whole text (e.g. "SSN: " before
        # nine bare digits); keep only what lies in the pending text.
        off = len(self.context)
        dets = [
            d._replace(start=max(d.start, off) - off, end=d.end - off)
            for d in masker.scan(self.context + text, hint)
            if d.end > off
        ]
        cut = len(text) if flush else safe_cut(text, dets)
        if cut == 0:
            self.pending = text
            return "", []
        keep = [d for d in dets if d.end <= cut]
        emitted = masker.render(text[:cut], keep)
        self.pending = text[cut:]
        self.context = (self.context + text[:cut])[-_CONTEXT_CHARS:]
        return emitted, keep


class _Stream(TextTail):
    """One delta stream: text (:class:`TextTail`) or, for function-call
    arguments, JSON (``json``, a :class:`~.jsonstream.JsonStreamMasker`)."""

    __slots__ = ("event_name", "inner", "json", "raw", "sent", "template")

    def __init__(self, json_masker: JsonStreamMasker | None = None) -> None:
        super().__init__()
        self.template: dict[str, Any] = {}
        self.event_name: str | None = None
        self.json = json_masker
        # Responses API arguments: what came and went, for the ….done events.
        self.raw: list[str] = []
        self.sent: list[str] = []
        self.inner: list[tuple[str, str]] = []

    def held(self) -> bool:
        return (self.json.withheld if self.json is not None else len(self.pending)) > 0


def _path_str(path: list[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _parent(root: Any, path: list[Any]) -> Any:
    node = root
    for p in path[:-1]:
        node = node[p]
    return node


class SSEStreamMasker:
    """Masks one ``text/event-stream`` body incrementally (one per flow; not
    thread-safe). Obtain with :meth:`Masker.sse_stream`.

    Usage::

        sm = masker.sse_stream()
        for chunk in upstream: send(sm.feed(chunk))   # bytes in, bytes out
        send(sm.finish())
        audit(summarise(sm.findings))

    Attributes:
        findings: :class:`~proxy_worker.masking.Finding` list, growing as
            events are emitted.

    Raises (from :meth:`feed` / :meth:`finish`):
        BodyTooLargeError: one event exceeds the masker's ``max_body_bytes``.
        MaskingError: internal failure; the stream must be aborted (the
            masker's state is undefined afterwards).
    """

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._passthrough = not masker.enabled
        self.findings: list[Finding] = []
        self._buf = bytearray()
        self._scan_from = 0
        self._lines: list[tuple[bytes, bytes]] = []
        self._event_size = 0
        self._event_index = 0
        self._started = False
        self._eol = b"\n"
        self._eol_known = False
        self._streams: dict[StreamKey, _Stream] = {}
        # Responses API item id -> (raw arguments, emitted arguments, findings).
        self._args_memo: dict[Any, tuple[str, str, list[tuple[str, str]]]] = {}
        self._finished = False
        blocked = {
            k
            for k in (
                "choices",
                "delta",
                "tool_calls",
                "function",
                "arguments",
                "function_call",
                "text",
                *_CHAT_TEXT_FIELDS,
            )
            if masker.field_strategy(k) is not None
        }
        self._blocked = frozenset(blocked)

    # ------------------------------------------------------------------ public

    def feed(self, chunk: bytes) -> bytes:
        """Add upstream bytes; return the masked bytes of every event completed
        so far (possibly ``b""``). Chunks may split lines, CRLF pairs and
        UTF-8 sequences anywhere."""
        if self._finished:
            raise MaskingError("feed() after finish()")
        if self._passthrough:
            return bytes(chunk)
        if not chunk:
            return b""
        self._buf += chunk
        try:
            return self._consume(final=False)
        except MaskingError:
            raise
        except Exception as exc:
            raise MaskingError(f"SSE masking failed: {type(exc).__name__}") from exc

    def finish(self) -> bytes:
        """End of stream: mask and return the trailing partial event (if any)
        and flush every held-back delta tail (as synthetic events)."""
        if self._finished:
            return b""
        self._finished = True
        if self._passthrough:
            return b""
        try:
            out = bytearray(self._consume(final=True))
            if self._buf:
                self._lines.append((bytes(self._buf), b""))
                self._buf.clear()
            if self._lines:
                lines, self._lines = self._lines, []
                out += self._dispatch(lines, b"", final=True)
            out += self._flush_streams(None, self._event_index)
            return bytes(out)
        except MaskingError:
            raise
        except Exception as exc:
            raise MaskingError(f"SSE masking failed: {type(exc).__name__}") from exc

    # ------------------------------------------------------------------ framing

    def _consume(self, *, final: bool) -> bytes:
        buf = self._buf
        out = bytearray()
        if not self._started:
            if not final and len(buf) < 3 and _UTF8_BOM.startswith(bytes(buf)):
                return b""
            if buf.startswith(_UTF8_BOM):
                out += _UTF8_BOM
                del buf[:3]
            self._started = True
        n = len(buf)
        pos = 0
        scan = self._scan_from
        while True:
            m = _EOL_RE.search(buf, scan)
            if m is None:
                scan = n
                break
            i = m.start()
            if buf[i] == 13:
                if i + 1 < n:
                    tl = 2 if buf[i + 1] == 10 else 1
                elif final:
                    tl = 1
                else:
                    scan = i
                    break
            else:
                tl = 1
            line = bytes(buf[pos:i])
            term = bytes(buf[i : i + tl])
            pos = scan = i + tl
            if not self._eol_known:
                self._eol, self._eol_known = term, True
            if line:
                self._lines.append((line, term))
                self._event_size += len(line) + tl
            else:
                lines, self._lines = self._lines, []
                self._event_size = 0
                out += self._dispatch(lines, term, final=False)
        del buf[:pos]
        self._scan_from = scan - pos
        size = self._event_size + len(buf)
        if size > self._masker.max_body_bytes:
            raise BodyTooLargeError(size, self._masker.max_body_bytes)
        return bytes(out)

    # ------------------------------------------------------------------ events

    def _dispatch(self, lines: list[tuple[bytes, bytes]], blank: bytes, *, final: bool) -> bytes:
        raw = b"".join(line + term for line, term in lines) + blank
        if not lines:
            return raw
        idx = self._event_index
        self._event_index += 1
        data_parts: list[str] = []
        event_name: str | None = None
        for line, _term in lines:
            s = line.decode("utf-8", "replace")
            if s.startswith(":"):
                continue
            name, sep, value = s.partition(":")
            if sep and value.startswith(" "):
                value = value[1:]
            if name == "data":
                data_parts.append(value)
            elif name == "event":
                event_name = value
        if not data_parts:
            return (self._flush_streams(None, idx) + raw) if final else raw
        data = "\n".join(data_parts)
        if data.strip() == "[DONE]":
            return self._flush_streams(None, idx) + raw
        obj: Any = None
        is_json = False
        hook = _DupKeys()
        if data.lstrip()[:1] in ("{", "["):
            try:
                obj = json.loads(data, object_pairs_hook=hook)
                is_json = True
            except (ValueError, RecursionError):
                pass
        if is_json:
            pre, new_obj, changed = self._mask_json_event(obj, idx, event_name, final=final)
            if not changed and not hook.seen:
                return pre + raw
            new_data = _dumps(new_obj)
        else:
            pre = self._flush_streams(None, idx) if final else b""
            masked, dets = self._masker._mask_str(data)
            self.findings.extend(Finding(d.entity_type, f"sse[{idx}]@{d.start}") for d in dets)
            if masked is data:
                return pre + raw
            new_data = masked
        return pre + self._rebuild(lines, new_data, blank)

    def _rebuild(self, lines: list[tuple[bytes, bytes]], data: str, blank: bytes) -> bytes:
        out = bytearray()
        written = False
        for line, term in lines:
            if line == b"data" or line.startswith(b"data:"):
                if not written:
                    for part in data.split("\n"):
                        out += b"data: " + part.encode("utf-8") + (term or self._eol)
                    written = True
                continue
            out += line + term
        out += blank
        return bytes(out)

    # ------------------------------------------------------------------ delta streams

    def _mask_json_event(
        self, obj: Any, idx: int, event_name: str | None, *, final: bool
    ) -> tuple[bytes, Any, bool]:
        """Returns (bytes to emit before this event, masked object, changed)."""
        managed: list[tuple[list[Any], StreamKey, bool]] = []
        slots: list[tuple[list[Any], Any]] = []  # (path to JSON arguments, item id)
        pre = bytearray()
        kind = None
        terminal = False
        if isinstance(obj, dict) and isinstance(obj.get("choices"), list) and not self._blocked:
            kind = "chat"
            self._collect_chat(obj, managed, final)
        elif isinstance(obj, dict) and isinstance(obj.get("type"), str):
            t: str = obj["type"]
            if (
                t.startswith("response.")
                and t.endswith(".delta")
                and isinstance(obj.get("delta"), str)
            ):
                if "delta" not in self._blocked:
                    kind = "resp"
                    key = (
                        "resp",
                        t,
                        _hashable(obj.get("item_id")),
                        _hashable(obj.get("output_index")),
                        _hashable(obj.get("content_index")),
                        _hashable(obj.get("summary_index")),
                    )
                    managed.append((["delta"], key, final))
            else:
                if t in _RESP_TERMINAL:
                    terminal = True
                    pre += self._flush_streams(lambda k: k[0] == "resp", idx)
                elif t.startswith("response."):
                    item = obj.get("item")
                    item_id = obj.get("item_id")
                    if item_id is None and isinstance(item, dict):
                        item_id = item.get("id")
                    if item_id is not None:
                        hid = _hashable(item_id)
                        pre += self._flush_streams(lambda k: k[0] == "resp" and k[2] == hid, idx)
                if "arguments" not in self._blocked:
                    _argument_slots(obj, t, slots)
        keys = {k for _p, k, _f in managed}
        if final:
            pre += self._flush_streams(lambda k: k not in keys, idx)

        raws: list[str] = []
        for path, _key, _flush in managed:
            parent = _parent(obj, path)
            raws.append(parent[path[-1]])
            parent[path[-1]] = ""
        args: list[str] = []
        for path, _iid in slots:
            parent = _parent(obj, path)
            args.append(parent[path[-1]])
            parent[path[-1]] = ""
        new_obj, fs = self._masker.mask_json_value(obj, f"sse[{idx}]$")
        self.findings.extend(fs)
        changed = bool(fs) or new_obj is not obj
        if kind == "chat" and isinstance(new_obj, dict):
            template = {k: v for k, v in new_obj.items() if k not in ("choices", "usage")}
        elif kind == "resp" and isinstance(new_obj, dict):
            template = dict(new_obj)
        else:
            template = {}
        for (path, key, flush), raw in zip(managed, raws, strict=True):
            st = self._streams.get(key)
            if st is None:
                st = self._streams[key] = self._new_stream(key)
            st.template = template
            st.event_name = event_name
            emitted = self._emit(st, raw, flush=flush, location=f"sse[{idx}]${_path_str(path)}")
            if flush:
                self._retire(key, self._streams.pop(key))
            try:
                _parent(new_obj, path)[path[-1]] = emitted
            except (KeyError, IndexError, TypeError) as exc:
                raise MaskingError("SSE event changed shape while masking") from exc
            changed = changed or emitted != raw
        for (path, iid), raw in zip(slots, args, strict=True):
            try:
                parent = _parent(new_obj, path)
            except (KeyError, IndexError, TypeError):
                continue  # masked whole by a field-name or JSONPath rule
            if not isinstance(parent, dict) or parent.get(path[-1]) != "":
                continue
            masked, inner = self._done_arguments(raw, iid)
            loc = f"sse[{idx}]${_path_str(path)}"
            self.findings.extend(Finding(t, loc + p) for t, p in inner)
            parent[path[-1]] = masked
            changed = changed or masked != raw
        if terminal:
            self._args_memo.clear()
        return bytes(pre), new_obj, changed

    def _new_stream(self, key: StreamKey) -> _Stream:
        if (key[0] == "chat" and key[2] in ("tool", "fcall")) or (
            key[0] == "resp" and key[1] in _RESP_JSON_DELTAS
        ):
            from .jsonstream import JsonStreamMasker

            return _Stream(JsonStreamMasker(self._masker))
        return _Stream()

    def _retire(self, key: StreamKey, st: _Stream) -> None:
        """A stream ended: remember what the Responses API arguments became, so
        that the ….done events repeating them say the same."""
        if key[0] == "resp" and st.json is not None:
            self._args_memo[key[2]] = ("".join(st.raw), "".join(st.sent), st.inner)

    def _done_arguments(self, raw: str, item_id: Any) -> tuple[str, list[tuple[str, str]]]:
        """The masked whole ``arguments`` of a ….done / output item event:
        the concatenated deltas as emitted when they add up to ``raw``, else
        ``raw`` masked at once (the same function, so the same text)."""
        memo = self._args_memo.get(item_id)
        if memo is not None and memo[0] == raw:
            return memo[1], memo[2]
        from .jsonstream import mask_arguments

        return mask_arguments(self._masker, raw)

    def _collect_chat(
        self, obj: dict[str, Any], managed: list[tuple[list[Any], StreamKey, bool]], final: bool
    ) -> None:
        for pos, ch in enumerate(obj["choices"]):
            if not isinstance(ch, dict):
                continue
            cidx = _hashable(ch.get("index", pos))
            flush = final or ch.get("finish_reason") is not None
            delta = ch.get("delta")
            seen: set[StreamKey] = set()
            if isinstance(delta, dict):
                for f in _CHAT_TEXT_FIELDS:
                    if isinstance(delta.get(f), str):
                        key = ("chat", cidx, "field", f)
                        seen.add(key)
                        managed.append((["choices", pos, "delta", f], key, flush))
                tcs = delta.get("tool_calls")
                if isinstance(tcs, list):
                    for tpos, tc in enumerate(tcs):
                        fn = tc.get("function") if isinstance(tc, dict) else None
                        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                            key = ("chat", cidx, "tool", _hashable(tc.get("index", tpos)))
                            seen.add(key)
                            path = [
                                "choices",
                                pos,
                                "delta",
                                "tool_calls",
                                tpos,
                                "function",
                                "arguments",
                            ]
                            managed.append((path, key, flush))
                fc = delta.get("function_call")  # the deprecated functions API
                if isinstance(fc, dict) and isinstance(fc.get("arguments"), str):
                    key = ("chat", cidx, "fcall")
                    seen.add(key)
                    managed.append(
                        (["choices", pos, "delta", "function_call", "arguments"], key, flush)
                    )
            elif isinstance(ch.get("text"), str):
                key = ("chat", cidx, "text")
                seen.add(key)
                managed.append((["choices", pos, "text"], key, flush))
            if not flush:
                continue
            # Inject the remainder of this choice's other streams into this chunk.
            for key in [k for k in self._streams if k[:2] == ("chat", cidx) and k not in seen]:
                if not self._streams[key].held():
                    self._retire(key, self._streams.pop(key))
                    continue
                if key[2] == "text":
                    ch["text"] = ""
                    managed.append((["choices", pos, "text"], key, True))
                    continue
                if not isinstance(ch.get("delta"), dict):
                    ch["delta"] = {}
                d = ch["delta"]
                if key[2] == "field":
                    d[key[3]] = ""
                    managed.append((["choices", pos, "delta", key[3]], key, True))
                elif key[2] == "fcall":
                    if not isinstance(d.get("function_call"), dict):
                        d["function_call"] = {}
                    d["function_call"]["arguments"] = ""
                    path = ["choices", pos, "delta", "function_call", "arguments"]
                    managed.append((path, key, True))
                else:
                    if not isinstance(d.get("tool_calls"), list):
                        d["tool_calls"] = []
                    d["tool_calls"].append({"index": key[3], "function": {"arguments": ""}})
                    tpos = len(d["tool_calls"]) - 1
                    path = ["choices", pos, "delta", "tool_calls", tpos, "function", "arguments"]
                    managed.append((path, key, True))

    def _emit(self, st: _Stream, piece: str, *, flush: bool, location: str) -> str:
        j = st.json
        if j is None:
            text, dets = st.emit(self._masker, piece, flush=flush)
            self.findings.extend(Finding(d.entity_type, location) for d in dets)
            return text
        text = j.feed(piece) if piece else ""
        if flush:
            text += j.finish()
        if j.findings:
            self.findings.extend(Finding(t, location + p) for t, p in j.findings)
            st.inner.extend(j.findings)
            j.findings.clear()
        st.raw.append(piece)
        st.sent.append(text)
        return text

    def _flush_streams(self, pred: Callable[[StreamKey], bool] | None, idx: int) -> bytes:
        out = bytearray()
        for key in [k for k in self._streams if pred is None or pred(k)]:
            st = self._streams.pop(key)
            if not st.held():
                self._retire(key, st)
                continue
            if key[0] == "chat":
                obj = dict(st.template)
                cidx = key[1]
                if key[2] == "field":
                    choice: dict[str, Any] = {
                        "index": cidx,
                        "delta": {key[3]: ""},
                        "finish_reason": None,
                    }
                    path: list[Any] = ["choices", 0, "delta", key[3]]
                elif key[2] == "tool":
                    choice = {
                        "index": cidx,
                        "delta": {"tool_calls": [{"index": key[3], "function": {"arguments": ""}}]},
                        "finish_reason": None,
                    }
                    path = ["choices", 0, "delta", "tool_calls", 0, "function", "arguments"]
                elif key[2] == "fcall":
                    choice = {
                        "index": cidx,
                        "delta": {"function_call": {"arguments": ""}},
                        "finish_reason": None,
                    }
                    path = ["choices", 0, "delta", "function_call", "arguments"]
                else:
                    choice = {"index": cidx, "text": "", "finish_reason": None}
                    path = ["choices", 0, "text"]
                obj["choices"] = [choice]
            else:
                obj = dict(st.template)
                path = ["delta"]
            text = self._emit(st, "", flush=True, location=f"sse[{idx}]${_path_str(path)}")
            self._retire(key, st)
            _parent(obj, path)[path[-1]] = text
            if st.event_name:
                out += b"event: " + st.event_name.encode("utf-8") + self._eol
            out += b"data: " + _dumps(obj).encode("utf-8") + self._eol + self._eol
        return bytes(out)


def _argument_slots(obj: dict[str, Any], t: str, slots: list[tuple[list[Any], Any]]) -> None:
    """Where a Responses API event repeats function-call arguments whole:
    ``….arguments.done``, an output item (``response.output_item.*``) and the
    output of a response (``response.completed``…)."""
    if t in _RESP_JSON_DONE and isinstance(obj.get("arguments"), str):
        slots.append((["arguments"], _hashable(obj.get("item_id"))))
    item = obj.get("item")
    if (
        isinstance(item, dict)
        and item.get("type") in _CALL_ITEMS
        and isinstance(item.get("arguments"), str)
    ):
        slots.append((["item", "arguments"], _hashable(item.get("id"))))
    resp = obj.get("response")
    if isinstance(resp, dict) and isinstance(resp.get("output"), list):
        for i, it in enumerate(resp["output"]):
            if (
                isinstance(it, dict)
                and it.get("type") in _CALL_ITEMS
                and isinstance(it.get("arguments"), str)
            ):
                slots.append((["response", "output", i, "arguments"], _hashable(it.get("id"))))

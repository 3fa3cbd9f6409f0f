"""Incremental, JSON-aware masking of a JSON text that arrives in pieces: the
arguments of a function call streamed by an LLM API (chat completions
``delta.tool_calls[j].function.arguments``, Responses API
``response.function_call_arguments.delta``). See :mod:`.sse` for the streams.

The arguments are JSON *text*. Masked as plain text, JSON escapes hide data from
the detectors (``"jane\\u0040example.com"``, ``"4111\\u00201111 1111 1111"``,
``https:\\/\\/…``) and a placeholder could in principle break the JSON.
:class:`JsonStreamMasker` lexes the text as it comes (RFC 8259, with
:func:`json.loads`'s extensions ``NaN``, ``Infinity``, ``-Infinity`` and lone
surrogate escapes), keeping the lexical state between pieces (inside a string
or not, an escape or a ``\\uXXXX`` surrogate pair cut anywhere), and masks what
the JSON *means*, as :meth:`Masker.mask_json_value` does for a parsed body:

* every string value is decoded and masked whole with its key as the hint
  (array items take the array's key); a string that changed is re-encoded as
  JSON string text (``ensure_ascii=False``, lone surrogates as ``\\uXXXX``), an
  unchanged one keeps its bytes;
* keys are masked (without hint); masked keys that would collide get ``~2``,
  ``~3``…;
* integers of a length a detector reads become the masked *string*
  (:meth:`Masker._mask_int`); floats and literals pass;
* a key matching a field-name rule has its whole value replaced by the field
  placeholder (``"[REDACTED]"``, ``"[REDACTED:xxxxxxxx]"`` over the value) or,
  for ``drop``, the member is removed with its comma. JSONPath rules are not
  applied inside the arguments.

Output order and hold-back: a value token is held until the next structural
character (``,`` ``:`` ``}`` ``]``) confirms it, so that on malformed input it
can still be masked together with what follows; with ``drop`` rules a comma
waits for the next key. A string value is held until it closes, at most
:data:`~.sse.HOLD_BACK` raw characters: a longer one is opened and streamed
through the text masker's hold-back (:class:`~.sse.TextTail`, decoded text,
re-encoded); a longer key or number ends the JSON masking (below). Whitespace
and punctuation flow as they come.

Malformed JSON (anything :func:`json.loads` refuses, including a truncated
text at :meth:`finish`, several top-level values, control characters in
strings) ends the JSON masking where it is found: what was not yet emitted and
everything after it is masked as text, with a view in which ``\\uXXXX``
escapes of printable characters and ``\\/`` are decoded (never ``"``, ``\\``
or control characters, so a string stays a string), so escaped data is still
found. Inside the value of a field-name rule, the placeholder is emitted and
the rest of the text dropped. Fail safe: raw text is never emitted unmasked.

The whole text masked at once gives the same bytes as the pieces concatenated
(the hold-back decides *when*, never *what*; strings over ``HOLD_BACK`` raw
characters are always re-encoded), so the ``….done`` events that repeat the
arguments agree with the deltas when masked with :func:`mask_arguments`.
Exceptions: strings over ``HOLD_BACK`` characters and the text fallback are
masked through the text hold-back, equal to masking at once wherever the
text masker is (see :mod:`.sse`); the SSE masker therefore reuses the
concatenated deltas for the ``….done`` events when their raw arguments match.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from . import strategies as _st
from .engine import FIELD, _dumps, _key_suffix
from .sse import HOLD_BACK, TextTail

if TYPE_CHECKING:
    from .engine import Masker

__all__ = ["JsonStreamMasker", "mask_arguments"]

# Lexical states outside strings (what may come next).
_VALUE = 0  # a value: the top level, after ':', after ',' in an array
_VALUE_OR_CLOSE = 1  # after '['
_KEY = 2  # after ',' in an object
_KEY_OR_CLOSE = 3  # after '{'
_COLON = 4  # after a key
_AFTER = 5  # after a value in a container: ',' or its close
_END = 6  # after the top-level value: whitespace only

# Modes.
_JSON = 0
_TEXT = 1  # malformed: the rest is masked as text
_DEAD = 2  # malformed inside a field-rule value: the rest is dropped

_CONTEXT_CHARS = 48
_WS_RE = re.compile(r"[ \t\n\r]+")
_STR_RUN_RE = re.compile(r'[^"\\\x00-\x1f]+')
_NUM_RUN_RE = re.compile(r"[-+0-9.eE]+")
_NUM_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z")
_HEX4_RE = re.compile(r"[0-9a-fA-F]{4}\Z")
_HEX_PREFIX_RE = re.compile(r"[0-9a-fA-F]{0,3}\Z")
_LOW_RE = re.compile(r"\\u[dD][c-fC-F][0-9a-fA-F]{2}\Z")
_LOW_PREFIX_RE = re.compile(r"(?:\\(?:u(?:[dD](?:[c-fC-F][0-9a-fA-F]?)?)?)?)?\Z")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS = {"t": "true", "f": "false", "n": "null", "N": "NaN", "I": "Infinity"}


def _enc_body(text: str) -> str:
    """``text`` as the inside of a JSON string (``ensure_ascii=False``; lone
    surrogates, which UTF-8 cannot carry, as ``\\uXXXX``). Per character, so
    the encodings of pieces concatenate to the encoding of the whole."""
    body = _dumps(text)[1:-1]
    if _SURROGATE_RE.search(body) is None:
        return body
    return _SURROGATE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", body)


def _enc(text: str) -> str:
    return '"' + _enc_body(text) + '"'


def _unescape(text: str, final: bool) -> tuple[str, str]:
    """The detection view of malformed JSON text: ``\\uXXXX`` escapes (and
    surrogate pairs) of printable characters other than ``"`` and ``\\``, and
    ``\\/``, decoded in place; other escapes kept. Returns ``(view, rest)``
    where ``rest`` is an escape cut by the end of ``text`` (at most 12
    characters, ``""`` when ``final``)."""
    i = text.find("\\")
    if i < 0:
        return text, ""
    out: list[str] = []
    pos = 0
    n = len(text)
    while i >= 0:
        out.append(text[pos:i])
        if i + 1 >= n:
            if not final:
                return "".join(out), text[i:]
            out.append("\\")
            pos = n
            break
        e = text[i + 1]
        if e == "/":
            out.append("/")
            pos = i + 2
        elif e != "u":
            out.append(text[i : i + 2])
            pos = i + 2
        else:
            h = text[i + 2 : i + 6]
            if _HEX4_RE.match(h) is None:
                if not final and len(h) < 4 and _HEX_PREFIX_RE.match(h):
                    return "".join(out), text[i:]
                out.append(text[i : i + 2])
                pos = i + 2
            else:
                cp = int(h, 16)
                end = i + 6
                if 0xD800 <= cp < 0xDC00:
                    nxt = text[end : end + 6]
                    if not final and len(nxt) < 6 and _LOW_PREFIX_RE.match(nxt):
                        return "".join(out), text[i:]
                    if _LOW_RE.match(nxt):
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (int(nxt[2:], 16) - 0xDC00)
                        end += 6
                ch = chr(cp)
                if cp < 0x20 or ch in '"\\' or 0xD800 <= cp <= 0xDFFF:
                    out.append(text[i:end])
                else:
                    out.append(ch)
                pos = end
        i = text.find("\\", pos)
    out.append(text[pos:])
    return "".join(out), ""


class _Frame:
    """An open object or array."""

    __slots__ = ("arr", "fs", "hint", "index", "kept", "key", "key_out", "keys")

    def __init__(self, arr: bool, hint: str) -> None:
        self.arr = arr
        self.hint = hint  # arrays: the key their items are masked under
        self.index = 0  # arrays: the current item
        self.key = ""  # objects: the current member's key (hint of its value)
        self.key_out = ""  # ... as emitted (masked)
        self.fs: str | None = None  # ... its field-name rule strategy
        self.kept = 0  # objects: members emitted
        self.keys: dict[str, bool] | None = None  # emitted keys -> came from masking


class _Str:
    """A string being lexed."""

    __slots__ = ("hint", "key", "loc", "parts", "raw", "start", "tail")

    def __init__(self, start: int, key: bool, collect: bool) -> None:
        self.start = start  # index of the opening quote in the buffer
        self.key = key
        self.parts: list[str] | None = [] if collect else None  # decoded text
        self.raw = 0  # raw characters of content consumed
        self.tail: TextTail | None = None  # set once streamed (over HOLD_BACK)
        self.hint = ""
        self.loc = ""


class JsonStreamMasker:
    """Masks one JSON text fed in pieces (not thread-safe); see the module doc.

    Usage::

        j = JsonStreamMasker(masker)
        for piece in deltas: send(j.feed(piece))   # masked text, maybe ""
        send(j.finish())
        j.findings   # [(entity type, JSON path inside the text), ...]

    Findings are ``(entity_type, path)`` with ``path`` the JSON path of the
    value inside the text (``$.customer.email``, keys masked), or ``""`` for
    text masked after malformed JSON; they grow as output is emitted.
    """

    def __init__(self, masker: Masker) -> None:
        self.m = masker
        self.findings: list[tuple[str, str]] = []
        self._drops = _st.DROP in masker._fields.values()
        self._mode = _JSON
        self._malformed = False
        self._buf = ""  # raw text from the first character still needed
        self._pos = 0  # lexing position in _buf
        self._pend = 0  # first raw character whose output is not committed
        self._out: list[str] = []  # committed output not yet returned
        self._pend_out: list[str] = []  # output of lexed, unconfirmed tokens
        self._pend_find: list[tuple[str, str]] = []
        self._ctx = ""  # raw text before _buf (context for the text fallback)
        self._stack: list[_Frame] = []
        self._state = _VALUE
        self._str: _Str | None = None
        self._skip = -1  # depth of the value masked by a field-name rule, or -1
        self._skip_fs = ""
        self._skip_start = -1  # its start in _buf (hash strategy only)
        self._skip_loc = ""
        self._fb = ""  # text fallback: raw text not yet viewed (a cut escape)
        self._tail: TextTail | None = None

    # ------------------------------------------------------------------ public

    def feed(self, piece: str) -> str:
        """Add raw text; return the masked text that is safe to emit now."""
        if piece:
            if self._mode == _JSON:
                self._buf += piece
                self._run(False)
            elif self._mode == _TEXT:
                self._fb += piece
        if self._mode == _TEXT:
            self._text(False)
        return self._take()

    def finish(self) -> str:
        """End of the text: return the rest (an incomplete text is malformed)."""
        if self._mode == _JSON:
            self._run(True)
            if self._mode == _JSON:
                if self._state == _END and self._str is None:
                    self._commit(len(self._buf))
                else:
                    self._fail(self._pos)
        if self._mode == _TEXT:
            self._text(True)
        self._mode = _DEAD
        return self._take()

    @property
    def withheld(self) -> int:
        """Raw characters fed whose masked form has not been returned yet (the
        value of a field-name rule included)."""
        if self._mode == _JSON:
            n = len(self._buf) - self._pend
            s = self._str
            if s is not None and s.tail is not None:
                n += len(s.tail.pending)
            return n
        if self._mode == _TEXT:
            assert self._tail is not None
            return len(self._fb) + len(self._tail.pending)
        return 0

    @property
    def malformed(self) -> bool:
        """The text was not valid JSON (so far): it is masked as text."""
        return self._malformed

    # ------------------------------------------------------------------ output

    def _take(self) -> str:
        if not self._out:
            return ""
        s = "".join(self._out)
        self._out.clear()
        return s

    def _commit(self, at: int) -> None:
        """Confirm the pending tokens: their output is emitted, up to ``at``."""
        if self._pend_out:
            self._out.extend(self._pend_out)
            self._pend_out.clear()
        if self._pend_find:
            self.findings.extend(self._pend_find)
            self._pend_find.clear()
        self._pend = at

    def _path(self) -> str:
        out = "$"
        for f in self._stack:
            out = f"{out}[{f.index}]" if f.arr else out + _key_suffix(f.key_out)
        return out

    def _hint(self) -> str:
        if not self._stack:
            return ""
        top = self._stack[-1]
        return top.hint if top.arr else top.key

    # ------------------------------------------------------------------ lexer

    def _run(self, final: bool) -> None:  # noqa: C901 - one state machine
        buf = self._buf
        n = len(buf)
        pos = self._pos
        stack = self._stack
        while pos < n and self._mode == _JSON:
            s = self._str
            if s is not None:
                pos = self._string(s, buf, pos, n, final)
                if self._str is s:
                    break  # needs more text (or became malformed)
                continue
            c = buf[pos]
            if c in " \t\n\r":
                m = _WS_RE.match(buf, pos)
                assert m is not None
                end = m.end()
                if self._skip >= 0:
                    pass
                elif self._pend_out:
                    self._pend_out.append(buf[pos:end])
                else:
                    self._out.append(buf[pos:end])
                if not self._pend_out:
                    self._pend = end
                pos = end
                continue
            st = self._state
            skipping = self._skip >= 0
            if c == '"':
                if st in (_KEY, _KEY_OR_CLOSE):
                    self._str = _Str(pos, True, not skipping)
                elif st in (_VALUE, _VALUE_OR_CLOSE):
                    self._value_start(pos)
                    self._str = _Str(pos, False, self._skip < 0)
                else:
                    self._fail(pos)
                    break
                pos += 1
                continue
            if c == "{" or c == "[":
                if st != _VALUE and st != _VALUE_OR_CLOSE:
                    self._fail(pos)
                    break
                self._value_start(pos)
                hint = self._hint()
                self._commit(pos)
                if self._skip < 0:
                    self._out.append(c)
                arr = c == "["
                stack.append(_Frame(arr, hint))
                self._state = _VALUE_OR_CLOSE if arr else _KEY_OR_CLOSE
                pos += 1
                self._pend = pos
                continue
            if c == "}" or c == "]":
                arr = c == "]"
                if (
                    not stack
                    or stack[-1].arr != arr
                    or (st != _AFTER and st != (_VALUE_OR_CLOSE if arr else _KEY_OR_CLOSE))
                ):
                    self._fail(pos)
                    break
                self._commit(pos)
                if not skipping:
                    self._out.append(c)
                stack.pop()
                pos += 1
                self._pend = pos
                self._value_done(pos)
                continue
            if c == ":":
                if st != _COLON:
                    self._fail(pos)
                    break
                self._commit(pos)
                if not skipping:
                    self._out.append(c)
                pos += 1
                self._pend = pos
                self._state = _VALUE
                continue
            if c == ",":
                if st != _AFTER:
                    self._fail(pos)
                    break
                self._commit(pos)
                top = stack[-1]
                pos += 1
                if top.arr:
                    top.index += 1
                    self._state = _VALUE
                elif self._drops:
                    self._state = _KEY
                    if not skipping:  # held until the next key is known
                        self._pend_out.append(c)
                    continue
                else:
                    self._state = _KEY
                if not skipping:
                    self._out.append(c)
                self._pend = pos
                continue
            if st != _VALUE and st != _VALUE_OR_CLOSE:
                self._fail(pos)
                break
            lit = _LITERALS.get(c)
            if c == "-" and pos + 1 < n and buf[pos + 1] == "I":
                lit = "-Infinity"
            if lit is not None:
                seg = buf[pos : pos + len(lit)]
                if seg != lit:
                    if not final and pos + len(seg) == n and lit.startswith(seg):
                        break
                    self._fail(pos)
                    break
                self._value_start(pos)
                if self._skip < 0:
                    self._pend_out.append(lit)
                pos += len(lit)
                self._value_done(pos)
                continue
            if c == "-" or "0" <= c <= "9":
                m = _NUM_RUN_RE.match(buf, pos)
                assert m is not None
                end = m.end()
                if end == n and not final:
                    break  # may go on
                tok = buf[pos:end]
                if _NUM_RE.match(tok) is None:
                    self._fail(pos)
                    break
                self._value_start(pos)
                if self._skip < 0 and not self._number(tok):
                    self._fail(pos)
                    break
                pos = end
                self._value_done(pos)
                continue
            self._fail(pos)
            break
        if self._mode != _JSON:
            return
        self._pos = pos
        if n - self._pend > HOLD_BACK and self._skip < 0:
            s = self._str
            if s is None and pos == n:
                if not (self._drops and self._state == _KEY):  # a comma waits for its key
                    self._commit(n)  # complete tokens followed by much whitespace
            elif s is None or s.key:
                self._fail(pos)  # a key or a number longer than HOLD_BACK
                return
        self._trim()

    def _trim(self) -> None:
        keep = self._pend
        if 0 <= self._skip_start < keep:
            keep = self._skip_start
        if keep <= 0:
            return
        buf = self._buf
        self._ctx = (self._ctx + buf[max(0, keep - _CONTEXT_CHARS) : keep])[-_CONTEXT_CHARS:]
        self._buf = buf[keep:]
        self._pos -= keep
        self._pend -= keep
        if self._skip_start >= 0:
            self._skip_start -= keep
        if self._str is not None:
            self._str.start -= keep

    def _value_start(self, pos: int) -> None:
        """A value starts at ``pos``: under a field-name rule's key, skip it."""
        if self._skip >= 0 or not self._stack:
            return
        top = self._stack[-1]
        if top.arr or top.fs is None:
            return
        self._skip = len(self._stack)
        self._skip_fs = top.fs
        self._skip_start = pos if top.fs == _st.HASH else -1
        self._skip_loc = self._path()

    def _value_done(self, pos: int) -> None:
        """A value ended just before ``pos``."""
        if self._skip == len(self._stack):
            # Confirmed at once: the value's raw text must never reach the fallback.
            self._commit(pos)
            fs = self._skip_fs
            if fs != _st.DROP:
                value = None
                if fs == _st.HASH:
                    value = json.loads(self._buf[self._skip_start : pos])
                self._out.append(_enc(_st.field_placeholder(fs, value, self.m._key)))
            self.findings.append((FIELD, self._skip_loc))
            self._skip = -1
            self._skip_start = -1
        self._state = _AFTER if self._stack else _END

    def _number(self, tok: str) -> bool:
        """Emit a number token (an integer a detector reads becomes the masked
        string). False: an integer too long for :func:`int`."""
        if len(tok) < 6 or "." in tok or "e" in tok or "E" in tok:
            self._pend_out.append(tok)
            return True
        try:
            value = int(tok)
        except ValueError:
            return False
        new, dets = self.m._mask_int(value, self._hint())
        if not dets:
            self._pend_out.append(tok)
            return True
        loc = self._path()
        self._pend_find.extend((d.entity_type, loc) for d in dets)
        self._pend_out.append(_enc(new))
        return True

    def _string(self, s: _Str, buf: str, pos: int, n: int, final: bool) -> int:
        """Lex string content from ``pos``; returns the new position. Leaves
        ``self._str`` set when the text ends inside the string."""
        parts = s.parts
        while pos < n:
            m = _STR_RUN_RE.match(buf, pos)
            if m is not None:
                end = m.end()
                if parts is not None:
                    parts.append(buf[pos:end])
                s.raw += end - pos
                pos = end
                if pos >= n:
                    break
            c = buf[pos]
            if c == '"':
                pos += 1
                self._str = None
                self._string_done(s, pos)
                return pos
            if c != "\\":  # a control character
                self._fail(pos)
                return pos
            if pos + 1 >= n:
                break
            e = buf[pos + 1]
            if e == "u":
                h = buf[pos + 2 : pos + 6]
                if _HEX4_RE.match(h) is None:
                    if not final and len(h) < 4 and _HEX_PREFIX_RE.match(h):
                        break
                    self._fail(pos)
                    return pos
                cp = int(h, 16)
                adv = 6
                if 0xD800 <= cp < 0xDC00:
                    nxt = buf[pos + 6 : pos + 12]
                    if not final and len(nxt) < 6 and _LOW_PREFIX_RE.match(nxt):
                        break
                    if _LOW_RE.match(nxt):
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (int(nxt[2:], 16) - 0xDC00)
                        adv = 12
                ch = chr(cp)
            else:
                esc = _ESCAPES.get(e)
                if esc is None:
                    self._fail(pos)
                    return pos
                ch = esc
                adv = 2
            if parts is not None:
                parts.append(ch)
            s.raw += adv
            pos += adv
        if parts is not None and not s.key:
            if s.tail is None and s.raw > HOLD_BACK and not final:
                # Too long to hold: open it and stream it through the text hold-back.
                s.hint = self._hint()
                s.loc = self._path()
                self._commit(s.start)
                self._out.append('"')
                s.tail = TextTail()
            if s.tail is not None:
                self._stream(s, pos, close=False)
        return pos

    def _stream(self, s: _Str, pos: int, *, close: bool, flush: bool = False) -> None:
        assert s.parts is not None and s.tail is not None
        text = "".join(s.parts)
        s.parts.clear()
        frag, dets = s.tail.emit(self.m, text, flush=close or flush, hint=s.hint)
        if frag:
            self._out.append(_enc_body(frag))
        if dets:
            self.findings.extend((d.entity_type, s.loc) for d in dets)
        if close:
            self._out.append('"')
        self._pend = pos

    def _string_done(self, s: _Str, pos: int) -> None:
        """A string ended (``pos`` is after its closing quote)."""
        if s.parts is None:  # inside a value masked by a field-name rule
            if s.key:
                self._state = _COLON
            else:
                self._value_done(pos)
            return
        if s.tail is not None:
            self._stream(s, pos, close=True)
            self._value_done(pos)
            return
        dec = "".join(s.parts)
        if s.key:
            self._key_done(s, dec, pos)
            return
        masked, dets = self.m._mask_str(dec, self._hint())
        if dets:
            loc = self._path()
            self._pend_find.extend((d.entity_type, loc) for d in dets)
            self._pend_out.append(_enc(masked))
        elif s.raw > HOLD_BACK:
            self._pend_out.append(_enc(dec))  # as a streamed string would be
        else:
            self._pend_out.append(self._buf[s.start : pos])
        self._value_done(pos)

    def _key_done(self, s: _Str, key: str, pos: int) -> None:
        top = self._stack[-1]
        new_k, kdets = self.m._mask_str(key)
        keys = top.keys
        if keys is None:
            keys = top.keys = {}
        changed = new_k is not key
        if new_k in keys and (changed or keys[new_k]):
            i = 2
            while f"{new_k}~{i}" in keys:
                i += 1
            new_k = f"{new_k}~{i}"
            changed = True
        fs = self.m.field_strategy(key)
        if fs != _st.DROP:
            keys[new_k] = changed
        top.key, top.key_out, top.fs = key, new_k, fs
        loc = self._path()
        if fs == _st.DROP:
            self._pend_out.clear()  # the comma before this member
            self._skip = len(self._stack)
            self._skip_fs = fs
            self._skip_start = -1
            self._skip_loc = loc
        else:
            if top.kept == 0 and self._pend_out and self._pend_out[0] == ",":
                del self._pend_out[0]  # the members before were all dropped
            top.kept += 1
            self._pend_out.append(_enc(new_k) if changed else self._buf[s.start : pos])
        self._pend_find.extend((d.entity_type, loc) for d in kdets)
        self._state = _COLON

    # ------------------------------------------------------------------ malformed

    def _fail(self, pos: int) -> None:
        """Malformed at ``pos``: mask what was not emitted, and the rest, as text."""
        self._malformed = True
        if self._skip >= 0:
            if self._skip_fs != _st.DROP:
                raw = self._buf[self._skip_start : pos] if self._skip_start >= 0 else ""
                self._out.append(_enc(_st.field_placeholder(self._skip_fs, raw, self.m._key)))
            self.findings.append((FIELD, self._skip_loc))
            self._mode = _DEAD
            self._str = None
            self._buf = ""
            return
        s = self._str
        tail = TextTail()
        if s is not None and s.tail is not None:
            self._stream(s, pos, close=False, flush=True)
            tail.context = s.tail.context
            start = pos
        else:
            start = self._pend
            tail.context = (self._ctx + self._buf[max(0, start - _CONTEXT_CHARS) : start])[
                -_CONTEXT_CHARS:
            ]
        self._pend_out.clear()
        self._pend_find.clear()
        self._fb = self._buf[start:]
        self._buf = ""
        self._str = None
        self._tail = tail
        self._mode = _TEXT

    def _text(self, final: bool) -> None:
        assert self._tail is not None
        view, self._fb = _unescape(self._fb, final)
        if not view and not final:
            return
        frag, dets = self._tail.emit(self.m, view, flush=final)
        if frag:
            self._out.append(frag)
        self.findings.extend((d.entity_type, "") for d in dets)


def mask_arguments(masker: Masker, text: str) -> tuple[str, list[tuple[str, str]]]:
    """Mask a whole JSON text (function-call arguments) as :class:`JsonStreamMasker`
    does in pieces. Returns ``(masked, findings)``; ``masked is text`` when unchanged."""
    if not text:
        return text, []
    j = JsonStreamMasker(masker)
    out = j.feed(text) + j.finish()
    return (text if out == text else out), j.findings

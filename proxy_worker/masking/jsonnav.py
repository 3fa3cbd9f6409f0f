"""Masking a JSON document in place: walk only the parts that can hold a match.

:meth:`Masker.mask_body <proxy_worker.masking.engine.Masker.mask_body>` used to parse
every JSON body into Python objects, walk every node and, when anything changed,
serialise the whole document again. On a 5 MB body with a handful of e-mail addresses
that is ~45 ms of walking and ~35 ms of ``json.dumps`` for a few hundred bytes of
change. This module does the same masking with the work proportional to what the
prefilter found:

* the engine's one RE2 pass over the raw bytes gives *events*: the offsets of gate
  matches (see ``Masker._flag_strings``); a value without an event cannot hold
  anything a detector finds (every detector's gate matches inside or next to what it
  detects, and a JSON string's raw form shows every gate character, which the caller
  has checked);
* :class:`Navigator` steps through the document with the standard library's C JSON
  scanner (``json.scanner.c_make_scanner``: ``scan_once(text, index) -> (value,
  end)``): containers at the top (the root, and containers that are members of
  objects near the root) are entered; any other value is parsed whole in C and,
  only when an event lies inside it or its key is secret-like, handed to the
  engine's ordinary walk (``_Walk.value``), which masks it exactly as the full walk
  would, with the same JSON-path findings;
* a changed value is serialised on its own (compact, ``ensure_ascii=False``, as the
  full path serialises a changed document) and spliced into the original text, so
  the rest of the body keeps its bytes, and the result is valid JSON of the same
  shape.

The whole document is still parsed (by the C scanner, piece by piece), so invalid
JSON is noticed exactly as ``json.loads`` notices it (:class:`InvalidJSON`).
Duplicate keys need no special case in entered containers (every member is masked
where it stands); a value parsed whole with an event inside and nothing changed is
parsed again with a duplicate-key hook and re-serialised if it had duplicates (the
parsed form keeps only the last, which is what was checked).

A masked *object key* is the one thing handled only by the full walk (it renames the
key, and may need a ``~2`` suffix against its siblings): :class:`NeedsFullWalk`.
"""

from __future__ import annotations

import bisect
import json
import json.scanner
from collections.abc import Callable
from typing import Any

from .errors import MaskingError

__all__ = ["DupKeys", "InvalidJSON", "NeedsFullWalk", "Navigator"]

#: Containers parsed whole (because they are array elements or deep) that hold an
#: event and are larger than this (characters) are entered instead of walked whole.
ENTER_LARGER_THAN = 64 * 1024
#: Containers that are members of an object are entered down to this depth (root = 0).
ENTER_MEMBERS_TO_DEPTH = 3

_WS = " \t\n\r"


class InvalidJSON(ValueError):
    """The text is not one JSON document (the caller falls back to its text masking)."""


class NeedsFullWalk(Exception):  # noqa: N818 - a signal, not an error condition
    """An object key needs masking: the caller masks the document with the full walk."""


def _scanner(**hooks: Any) -> Callable[[str, int], tuple[Any, int]]:
    """The C ``scan_once`` of a decoder configured like ``json.loads(**hooks)``."""
    return json.scanner.make_scanner(json.JSONDecoder(**hooks))


_PLAIN_SCAN = _scanner()


class DupKeys:
    """``object_pairs_hook`` that notices duplicate keys (last one wins, as with
    ``json.loads``), so a body or value is re-serialised instead of forwarding an
    unscanned earlier duplicate. ``seen`` is True once any object had one."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        d = dict(pairs)
        if len(d) != len(pairs):
            self.seen = True
        return d


class Navigator:
    """One pass over one JSON text.

    Args:
        text: the decoded document (no BOM).
        events: ascending character offsets in ``text`` of the prefilter's matches.
        walk: the engine's ``_Walk`` for this body (prefix ``"$"``); its
            ``value(value, parts, tp, hint)`` masks a parsed value and appends
            findings located by JSON path, ``parts`` being the key/index tuple.
        mask_key: ``key -> has_detections`` for a key with an event inside.
        forces_scan: ``key -> bool``, True for secret-like keys whose values are
            scanned even without an event.
        dumps: serialiser for changed values (the engine's compact ``json.dumps``).

    :meth:`run` returns the list of ``(start, end, replacement)`` splices, ascending
    and non-overlapping (character offsets into ``text``).

    Raises (from :meth:`run`):
        InvalidJSON: not valid JSON (what ``json.loads`` would refuse, including
            nesting beyond the recursion limit).
        NeedsFullWalk: an object key holds something to mask.
        MaskingError: a value too deeply nested for the walk, or too dense with
            digit groups to check for phone numbers (from the walk).
    """

    __slots__ = (
        "_dumps",
        "_dup_hook",
        "_dup_scan",
        "_events",
        "_forces",
        "_k",
        "_mask_key",
        "_n",
        "_text",
        "_walk",
    )

    def __init__(
        self,
        text: str,
        events: list[int],
        walk: Any,
        mask_key: Callable[[str], bool],
        forces_scan: Callable[[str], bool],
        dumps: Callable[[Any], str],
    ) -> None:
        self._text = text
        self._events = events
        self._n = len(events)
        self._k = 0
        self._walk = walk
        self._mask_key = mask_key
        self._forces = forces_scan
        self._dumps = dumps
        self._dup_hook: DupKeys | None = None
        self._dup_scan: Callable[[str, int], tuple[Any, int]] | None = None

    def run(self) -> list[tuple[int, int, str]]:
        """Mask the document; returns the splices (empty when nothing changed)."""
        text = self._text
        out: list[tuple[int, int, str]] = []
        try:
            start = self._ws(0)
            if start >= len(text):
                raise InvalidJSON("empty document")
            end = self._value(0, start, (), "", 0, True, out)
            if self._ws(end) != len(text):
                raise InvalidJSON("extra data after the document")
        except (StopIteration, IndexError, RecursionError) as exc:
            # scan_once signals "no value here" with StopIteration; IndexError is
            # running off the end of the text between tokens.
            raise InvalidJSON(str(exc) or type(exc).__name__) from None
        except InvalidJSON:
            raise
        except ValueError as exc:  # json.JSONDecodeError, int() digit limits
            raise InvalidJSON(str(exc)) from None
        return out

    # -- helpers ---------------------------------------------------------------------

    def _ws(self, pos: int) -> int:
        text = self._text
        n = len(text)
        while pos < n and text[pos] in _WS:
            pos += 1
        return pos

    def _has_event(self, start: int, end: int) -> bool:
        """An event lies in ``[start, end)``; events before ``start`` are passed over."""
        ev = self._events
        k = self._k
        if k < self._n and ev[k] < start:
            k = bisect.bisect_left(ev, start, k)
            self._k = k
        return k < self._n and ev[k] < end

    def _apply(
        self, value: Any, start: int, end: int, parts: tuple[Any, ...], hint: str, out: list
    ) -> None:
        """Mask one parsed value with the walk and record a splice if it changed."""
        try:
            new = self._walk.value(value, parts, (), hint)
        except RecursionError:
            raise MaskingError("JSON nested too deeply to mask") from None
        if new is not value:
            out.append((start, end, self._dumps(new)))
        elif type(value) in (dict, list):
            if self._dup_scan is None:
                self._dup_hook = DupKeys()
                self._dup_scan = _scanner(object_pairs_hook=self._dup_hook)
            self._dup_hook.seen = False
            self._dup_scan(self._text, start)
            if self._dup_hook.seen:  # the checked (parsed) form drops earlier duplicates
                out.append((start, end, self._dumps(value)))

    # -- structure -------------------------------------------------------------------

    def _value(
        self,
        lead: int,
        pos: int,
        parts: tuple[Any, ...],
        hint: str,
        depth: int,
        enter: bool,
        out: list,
    ) -> int:
        r"""Handle the value at ``pos``; returns the value's end.

        ``lead`` is the last character of the previous token (the key's closing
        quote, the previous element's last character, the ``[`` or whatever led
        to the enclosing array; 0 for the root). A gate match may begin before a
        number: in the separator and whitespace, or even on the previous token's
        last character (the phone gate's ``[^"0-9\]}\s,:\[][,:\[]`` matches
        ``e,`` in ``[false,4155552671]``), but never further back, since no gate
        match crosses a ``"`` or a ``,`` except at its start; so events from
        ``lead`` on belong to this value (also counting one for the previous
        token is harmless: it is walked, not skipped)."""
        c = self._text[pos]
        if enter and (c == "{" or c == "[") and self._k < self._n:
            if c == "{":
                return self._object(pos, parts, depth, out)
            return self._array(lead, pos, parts, hint, depth, out)
        value, end = _PLAIN_SCAN(self._text, pos)
        if self._has_event(lead, end):
            self._found(value, lead, pos, end, parts, hint, depth, out)
        elif hint and self._forces(hint):
            self._apply(value, pos, end, parts, hint, out)
        return end

    def _found(
        self,
        value: Any,
        lead: int,
        pos: int,
        end: int,
        parts: tuple[Any, ...],
        hint: str,
        depth: int,
        out: list,
    ) -> None:
        """A value parsed whole with an event inside: walk it, or enter it if large
        (the parse is then spent, but only once per large container and level)."""
        c = self._text[pos]
        if c == "{" and end - pos > ENTER_LARGER_THAN:
            self._object(pos, parts, depth, out)
        elif c == "[" and end - pos > ENTER_LARGER_THAN:
            self._array(lead, pos, parts, hint, depth, out)
        else:
            self._apply(value, pos, end, parts, hint, out)

    def _object(self, pos: int, parts: tuple[Any, ...], depth: int, out: list) -> int:
        text = self._text
        pos = self._ws(pos + 1)
        if text[pos] == "}":
            return pos + 1
        enter = depth + 1 <= ENTER_MEMBERS_TO_DEPTH
        while True:
            if text[pos] != '"':
                raise InvalidJSON(f"expected a key at character {pos}")
            key, kend = _PLAIN_SCAN(text, pos)
            if self._has_event(pos, kend) and self._mask_key(key):
                raise NeedsFullWalk
            pos = self._ws(kend)
            if text[pos] != ":":
                raise InvalidJSON(f"expected ':' at character {pos}")
            pos = self._ws(pos + 1)
            pos = self._value(kend - 1, pos, (*parts, key), key, depth + 1, enter, out)
            c = text[pos]
            if c in _WS:
                pos = self._ws(pos)
                c = text[pos]
            if c == ",":
                pos = self._ws(pos + 1)
            elif c == "}":
                return pos + 1
            else:
                raise InvalidJSON(f"expected ',' or '}}' at character {pos}")

    def _array(
        self, lead: int, pos: int, parts: tuple[Any, ...], hint: str, depth: int, out: list
    ) -> int:
        # The hot loop of a long array of records: elements are parsed in C and
        # only looked at when an event lies inside (inlined ``_value``).
        text = self._text
        scan = _PLAIN_SCAN
        events = self._events
        n = self._n
        forced = bool(hint) and self._forces(hint)
        first = self._ws(pos + 1)
        if text[first] == "]":
            return first + 1
        i = 0  # ``lead``: where the token before the first element ended, then each element
        start = first
        while True:
            value, end = scan(text, start)
            k = self._k
            if k < n and events[k] < end:
                if self._has_event(lead, end):
                    self._found(value, lead, start, end, (*parts, i), hint, depth + 1, out)
                elif forced:
                    self._apply(value, start, end, (*parts, i), hint, out)
            elif forced:
                self._apply(value, start, end, (*parts, i), hint, out)
            i += 1
            lead = end - 1
            c = text[end]
            if c in _WS:
                end = self._ws(end)
                c = text[end]
            if c == ",":
                start = end + 1
                if text[start] in _WS:
                    start = self._ws(start)
            elif c == "]":
                return end + 1
            else:
                raise InvalidJSON(f"expected ',' or ']' at character {end}")


def splice(text: str, splices: list[tuple[int, int, str]]) -> str:
    """``text`` with each ``(start, end, replacement)`` applied (ascending, disjoint)."""
    parts: list[str] = []
    pos = 0
    for start, end, new in splices:
        parts.append(text[pos:start])
        parts.append(new)
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def char_offsets(body: bytes, byte_offsets: list[int]) -> list[int]:
    """Ascending UTF-8 byte offsets in ``body`` -> character offsets in its decoding.

    An offset inside a multi-byte character maps to that character's start. ``body``
    must be valid UTF-8 (it was decoded as such).
    """
    if body.isascii():
        return byte_offsets
    out: list[int] = []
    pb = pc = 0
    for b in byte_offsets:
        while b > 0 and (body[b] & 0xC0) == 0x80:
            b -= 1
        if b > pb:
            pc += len(body[pb:b].decode("utf-8"))
            pb = b
        out.append(pc)
    return out

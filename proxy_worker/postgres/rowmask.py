"""Masking of query results: ``DataRow`` messages and ``COPY ... TO STDOUT`` data.

Pure (no I/O). The relay builds one :class:`RowMasker` per ``RowDescription`` (one
:class:`CopyMasker` per ``CopyOutResponse``, one :class:`CopyInSampler` per
``CopyInResponse``) and hands it the payloads of consecutive ``DataRow`` messages (the
bytes after the 4-byte length; PostgreSQL docs, "Message Formats": ``Int16`` column
count, then per column ``Int32`` length, -1 for NULL, and the value's bytes).

Rules for a value (a product decision; column = one field of the ``RowDescription``):

* **NULL stays NULL**, and the number of columns never changes.
* **Field-name rules.** A column is known by several names (``names[i]``: its field
  name, the table column it comes from, the columns its expression references); a
  field-name rule (:meth:`~proxy_worker.masking.engine.Masker.field_strategy`) matching
  any of them masks the whole value: text-like columns get
  :func:`~proxy_worker.masking.strategies.field_placeholder` (``[REDACTED]``,
  ``[REDACTED:1a2b3c4d]`` for ``hash``; ``drop`` also gives ``[REDACTED]``, as for JSON
  array elements: the column cannot be removed), ``json``/``jsonb`` columns the JSON
  string of that placeholder (still valid JSON), every other type NULL (a number, date or
  array cannot carry a placeholder). A column of a type unknown to Gatehouse in binary
  format with a field rule is refused (see below).
* **Detectors.** Text-like values (and, in text format, values of unknown types: enums,
  ``citext``, composites, extension types) are masked in place
  (:meth:`~proxy_worker.masking.engine.Masker.mask_text` semantics, hint = the column
  name). ``json``/``jsonb`` values go through the JSON body handler (``mask_body(value,
  "application/json")``) and stay valid JSON (binary ``jsonb`` keeps its version byte).
  Numbers (integers, ``oid``, ``numeric``, ``money``), ``inet``/``cidr``, ``tsvector`` and
  the other scanned non-text types are scanned as text (binary values decoded first) and
  become NULL on any finding; numbers are read the way the JSON path reads integers: only
  from 6 digits, as phone numbers only under a phone-like column name, else only at a
  length some detector reads (9 for an SSN, 12-19 for a card...). Arrays (text ``{...}``
  and binary) have their elements scanned by the element type's rule; any finding makes
  the whole array NULL (rebuilding array literals around placeholders is out of scope).
  ``bytea`` and the inert types (bool, floats, dates and times, uuid, geometric types,
  macaddr, bit strings, ranges) are not scanned.
* **Binary format of a type without decoder** (unknown OIDs, ``tsvector`` ...): with a
  field rule on the column, :class:`RowRefused` (``0A000``); otherwise per
  ``binary_policy``: ``"refuse"`` (default) the same refusal, ``"pass"`` the value goes
  out unscanned.
* **Encoding.** Text is decoded with the connection's client encoding; bytes that do not
  decode are refused (``22021``).

SQLSTATEs of :class:`RowRefused`: ``0A000`` binary value Gatehouse cannot mask, ``22021``
text not in the client encoding, ``08P01`` malformed data from the server (``DataRow``
framing, binary value, array literal, COPY data), ``54000`` a JSON value larger than the
masker's body limit, ``XX000`` any other masking failure (never forwarded unmasked).

Recording: the first ``sample_limit`` rows are kept as text (:attr:`RowMasker.sample`),
after the wire masking, masked again with ``record_masker`` (the default detectors the
target's rules did not cover); values sent in binary appear decoded where
:func:`~proxy_worker.postgres.types.decode_binary` can, else as ``[binary <oid>, N
bytes]``. :meth:`RowMasker.findings` counts what was masked on the wire, per entity type
and column (``[{"type": "EMAIL", "location": "column:email", "count": 120}]``).

How it is fast (``bench/pg_rowmask.py``; goal of issue 13: 200,000 rows/s per core on a
5-column table with personal data in 2 columns):

* one plan per column, computed once per ``RowDescription``; columns that need nothing
  (inert types, ``bytea``, ``int2``, masking off) are skipped;
* a ``DataRow`` parser generated for the plan (:func:`_row_parser`): one statement per
  column up to the last one that matters, no inner loop; numbers shorter than 6
  characters are not even copied out;
* the values of one text column across the whole batch are joined with NUL (which
  PostgreSQL text never contains), decoded once, scanned with one engine call per 4096
  characters and rendered at once (:class:`_Scanner`), which gives exactly what one call
  per value gives: the few cases where a detector could see across a NUL are detected
  and those values rescanned alone (proven by
  ``tests/proxy_worker/postgres/test_rowmask.py`` on generated values and the corpus);
* changed values are spliced into the payload (one ``join`` per row and column, or per
  row when two columns change in the same rows); unchanged rows are not copied.
"""

from __future__ import annotations

import codecs
import copy
import functools
import json
import re
import struct
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import accumulate, compress, count
from operator import itemgetter, ne
from typing import Any

from proxy_worker.masking import strategies as _st
from proxy_worker.masking.base import Detection
from proxy_worker.masking.detectors import (
    CreditCardDetector,
    DenyListDetector,
    EmailDetector,
    IbanDetector,
    IpAddressDetector,
    UsItinDetector,
    UsSsnDetector,
)
from proxy_worker.masking.engine import _INT_LENGTHS, _PHONE_KEY_RE, FIELD, Masker
from proxy_worker.masking.errors import BodyTooLargeError, MaskingError
from proxy_worker.masking.phone import PHONE, PhoneDetector
from proxy_worker.masking.regional import StdnumDetector
from proxy_worker.masking.secrets import (
    GenericSecretDetector,
    PemPrivateKeyDetector,
    TokenDetector,
)

from . import types as pgt
from .copy import (
    BINARY_SIGNATURE,
    CopyFormatError,
    CopyOptions,
    decode_binary_tuple,
    decode_csv_row,
    decode_text_row,
    encode_csv_row,
    encode_text_row,
    row_splitter,
)
from .protocol import FieldDescription

try:  # google-re2 (as in the masking engine); optional
    import re2 as _re2
except ImportError:  # pragma: no cover - exercised only without google-re2
    _re2 = None

__all__ = [
    "BINARY_POLICIES",
    "CopyInSampler",
    "CopyMasker",
    "RowMasker",
    "RowRefused",
    "copy_options",
]

#: ``binary_policy`` values: refuse (fail closed) or pass binary values Gatehouse cannot
#: read.
BINARY_POLICIES: tuple[str, ...] = ("refuse", "pass")


class RowRefused(Exception):
    """A result cannot be masked: the relay answers ``ErrorResponse(sqlstate, message)``
    and stops the result (fail closed). The message never contains row values.

    Attributes:
        sqlstate: five-character SQLSTATE (see the module docstring).
        message: human-readable reason (for the client's error message).
    """

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(f"{sqlstate}: {message}")
        self.sqlstate = sqlstate
        self.message = message


# --------------------------------------------------------------------------- scanning

#: Detector classes whose results the NUL-joined batch scan reproduces (with the
#: corrections of :class:`_Scanner`). Exact classes: a subclass may look further.
_BATCH_SAFE = frozenset(
    {
        EmailDetector,
        IbanDetector,
        CreditCardDetector,
        UsSsnDetector,
        UsItinDetector,
        IpAddressDetector,
        PhoneDetector,
        TokenDetector,
        PemPrivateKeyDetector,
        GenericSecretDetector,
        DenyListDetector,
        StdnumDetector,
    }
)
_TYPE = itemgetter(2)
_ROW = itemgetter(0)
#: Longest joined text scanned at once: the engine's window threshold
#: (``engine._WINDOW_MIN_CHARS``), below which Python detectors read the whole text.
_CHUNK = 4096


def _blank(text: str, dets: Sequence[Detection]) -> str:
    """``text`` with the detections replaced by NULs (the engine's blanked view)."""
    parts: list[str] = []
    pos = 0
    for d in dets:
        parts.append(text[pos : d.start])
        parts.append("\x00" * (d.end - d.start))
        pos = d.end
    parts.append(text[pos:])
    return "".join(parts)


def _compile_gate(pattern: str) -> Any:
    """A detector gate compiled with RE2 (linear time, ~100x faster than :mod:`re` on
    case-insensitive alternations over long texts) when google-re2 is installed."""
    if _re2 is not None:
        try:
            return _re2.compile(pattern)
        except Exception:  # noqa: BLE001 - a gate RE2 cannot read: Python re
            return re.compile(pattern)
    return re.compile(pattern)


class _Scanner:
    """Scan many texts (one column's values) with few ``Masker.scan`` calls.

    The texts are joined with ``"\\x00"`` (which PostgreSQL text never contains) into
    chunks of at most 4096 characters, the engine's window threshold: below it the
    Python detectors read the whole text, as they do for each short text alone (a
    longer text is scanned on its own). The engine itself blanks earlier detections
    with NUL (``Masker._view``) and every built-in detector treats NUL as a non-word
    character that no candidate crosses, so one scan of a chunk gives the detections of
    each text scanned alone, except in these cases, which are detected and the texts
    concerned scanned again one by one:

    * ``SECRET``'s ``key=value`` pattern, whose value class (``[^\\s"'&,;<>]``) runs over
      NUL: a ``password=`` at the end of one text could take the next text, or a
      candidate rejected by the entropy check could swallow a real one after it: texts
      where ``SECRET``'s gate (its keywords) matches are rescanned;
    * ``URL_CREDENTIALS`` (same kind of class) and ``PRIVATE_KEY`` (looks for its END
      line up to 4096 characters on): a detection that holds a NUL; every text it
      touches is rescanned (rendering the chunk at once notices it: the NUL is gone);
    * ``US_SSN`` / ``US_ITIN`` accept 9 bare digits when a keyword occurs in the 48
      characters before them, which may lie in the previous text: such detections are
      rescanned unless the hint (column name) itself holds the keyword;
    * ``PHONE`` is the one detector that can find a number its own gate does not match
      (digits after ``--``): the engine runs it on a text only when its gate matches the
      text (with earlier detections blanked), and in a chunk another text's number
      makes it run everywhere; a text with a PHONE detection is rescanned unless the
      gate matches next to that detection (or, checked in full, in the text alone);
    * ``PHONE``'s validation budget grows with the text, but slower than with many
      texts: on :class:`MaskingError` the chunk is scanned text by text;
    * ``SECRET`` under a secret-like hint masks the whole text, custom regexes may match
      anything, unknown detector classes are unknown: such columns are scanned text by
      text.

    * non-ASCII texts are scanned one by one (see :meth:`_regroup`): there the RE2
      prefilter (ASCII word boundaries) and the Python detectors (Unicode ones) disagree,
      so that e.g. the regional detectors find numbers after ``é`` that their gate does
      not select.

    ASCII texts with two colons or more are batched apart from the others: IPv6-looking
    text sends a whole chunk to the Python IP detector instead of the C accelerator.
    """

    __slots__ = ("batch", "context", "hint", "m", "phone_gate", "phones", "secret_gate")

    def __init__(self, masker: Masker, hint: str, *, phones: bool = True) -> None:
        self.m = masker
        self.hint = hint
        self.phones = phones
        dets = masker.detectors
        self.batch = all(type(d) in _BATCH_SAFE for d in dets) and not any(
            (rx := getattr(d, "hint_re", None)) is not None and hint and rx.fullmatch(hint)
            for d in dets
        )
        self.context = frozenset(
            d.entity_type
            for d in dets
            if isinstance(d, UsSsnDetector | UsItinDetector)
            and not (hint and d._keyword.search(hint))
        )
        gates = [d.gate for d in dets if isinstance(d, GenericSecretDetector) and d.gate]
        self.secret_gate = _compile_gate("|".join(gates)) if gates else None
        phone = next((d for d in dets if type(d) is PhoneDetector), None)
        self.phone_gate = re.compile(phone.gate) if phone is not None and phones else None

    # ---------------------------------------------------------------- one by one

    def _each(self, texts: Sequence[str]) -> dict[int, list[Detection]]:
        scan, hint, phones = self.m.scan, self.hint, self.phones
        out: dict[int, list[Detection]] = {}
        for k, t in enumerate(texts):
            if t:
                d = scan(t, hint, phones=phones)
                if d:
                    out[k] = d
        return out

    # ---------------------------------------------------------------- chunks

    @staticmethod
    def _chunks(joined: str) -> list[tuple[int, int, int, int]]:
        """``(first text, number of texts, start, end)`` of the chunks of a joined text:
        at most :data:`_CHUNK` characters each, a longer text alone."""
        out: list[tuple[int, int, int, int]] = []
        size = len(joined)
        k = pos = 0
        while True:
            limit = pos + _CHUNK
            if limit >= size:
                end = size
            else:
                end = joined.rfind("\x00", pos, limit + 1)
                if end < 0:
                    end = joined.find("\x00", limit)
                    if end < 0:
                        end = size
            n = joined.count("\x00", pos, end) + 1
            out.append((k, n, pos, end))
            if end >= size:
                return out
            k += n
            pos = end + 1

    def _phone_ok(self, text: str, dets: Sequence[Detection]) -> bool:
        """Every PHONE detection among ``dets`` (sorted, of ``text``) has a match of the
        phone gate next to it, in characters no other detection covers (so the engine
        scanning ``text`` alone runs the phone detector too)."""
        gate = self.phone_gate
        if gate is None or PHONE not in map(_TYPE, dets):
            return True
        prev_end = 0
        for d in dets:
            if d.entity_type == PHONE:
                s0 = text.rfind("\x00", 0, d.start) + 1
                lo = max(s0 - 1, d.start - 2, 0)
                if prev_end > lo or gate.search(text, lo, d.end) is None:
                    return False
            prev_end = d.end
        return True

    def _phone_exact(self, text: str, dets: list[Detection]) -> bool:
        """The engine would run the phone detector on ``text`` alone: its gate matches
        the text and, when other detections were made first, the text with them blanked
        (``Masker._scan_uncached``)."""
        gate = self.phone_gate
        assert gate is not None
        if gate.search(text) is None:
            return False
        others = [d for d in dets if d.entity_type != PHONE]
        return not others or gate.search(_blank(text, others)) is not None

    def _careful(
        self, texts: Sequence[str], joined: str, dets: list[Detection]
    ) -> dict[int, list[Detection]]:
        """Exact per-text detections from the scan of a chunk (the corrections of the
        class docstring)."""
        starts = [0, *(a + k + 1 for k, a in enumerate(accumulate(map(len, texts))))]
        redo: set[int] = set()
        if self.secret_gate is not None:
            for g in self.secret_gate.finditer(joined):
                redo.add(bisect_right(starts, g.start()) - 1)
        out: dict[int, list[Detection]] = {}
        ctx = self.context
        for d in dets:
            k = bisect_right(starts, d.start) - 1
            s0 = starts[k]
            if d.end > s0 + len(texts[k]):  # holds a separator
                redo.update(range(k, bisect_right(starts, d.end - 1)))
                continue
            if ctx and d.entity_type in ctx and joined[d.start : d.end].isdigit():
                redo.add(k)
                continue
            out.setdefault(k, []).append(
                Detection(d.start - s0, d.end - s0, d.entity_type, d.normalised)
            )
        if self.phone_gate is not None:
            for k, ds in out.items():
                if (
                    k not in redo
                    and any(d.entity_type == PHONE for d in ds)
                    and not self._phone_exact(texts[k], ds)
                ):
                    redo.add(k)
        if redo:
            scan, hint, phones = self.m.scan, self.hint, self.phones
            for k in redo:
                found = scan(texts[k], hint, phones=phones) if texts[k] else []
                if found:
                    out[k] = found
                else:
                    out.pop(k, None)
        return out

    def _scan_chunk(self, text: str) -> list[Detection] | None:
        """``Masker.scan`` of a chunk; ``None`` when the phone budget ran out."""
        try:
            return self.m.scan(text, self.hint, phones=self.phones)
        except MaskingError:
            return None

    def _chunk_fast(self, text: str, n: int) -> tuple[str | None, list[Detection]] | None:
        """Scan and render one chunk of ``n`` texts at once: ``(masked chunk or None if
        nothing was found, detections)``, or ``None`` when a correction is needed."""
        gate = self.secret_gate
        if gate is not None and gate.search(text) is not None:
            return None
        dets = self._scan_chunk(text)
        if dets is None:
            return None
        if not dets:
            return None, dets
        if self._context_hit(text, dets) or not self._phone_ok(text, dets):
            return None
        masked = self.m.render(text, dets)
        if masked.count("\x00") != n - 1:
            return None  # a detection held a NUL: it spans two texts
        return masked, dets

    def _context_hit(self, joined: str, dets: list[Detection]) -> bool:
        """A bare 9-digit SSN/ITIN that may owe its keyword to the previous text."""
        ctx = self.context
        if not ctx or not any(map(ctx.__contains__, map(_TYPE, dets))):
            return False
        return any(d.entity_type in ctx and joined[d.start : d.end].isdigit() for d in dets)

    def _regroup(
        self, texts: Sequence[str], joined: str
    ) -> list[tuple[list[int] | None, list[str], str | None]]:
        """The batches to scan: ``(indices or None for all, texts, their joined text or
        None: scan them one by one)``.

        ASCII texts with fewer than two colons go to the C accelerator together; ASCII
        texts with IPv6-looking colons are batched apart (the Python IPv6 detector then
        reads only them); non-ASCII texts are scanned one by one: in them the Python
        detectors and the RE2 prefilter disagree on word boundaries (``\\b`` is ASCII in
        RE2), so a detector may run on a text its gate did not select.
        """
        if joined.isascii() and joined.count(":") < 2:
            return [(None, list(texts), joined)]
        fast: list[int] = []
        colons: list[int] = []
        alone: list[int] = []
        for k, t in enumerate(texts):
            if not t.isascii():
                alone.append(k)
            elif t.count(":") < 2:
                fast.append(k)
            else:
                colons.append(k)
        out: list[tuple[list[int] | None, list[str], str | None]] = []
        for g, batched in ((fast, True), (colons, True), (alone, False)):
            if g:
                sub = [texts[k] for k in g]
                out.append((g, sub, "\x00".join(sub) if batched else None))
        return out

    # ---------------------------------------------------------------- API

    def sparse(self, texts: Sequence[str], joined: str | None = None) -> dict[int, list[Detection]]:
        """``{index: detections}`` for the texts with a detection, exactly as
        ``Masker.scan(text, hint, phones=...)`` gives them for each text alone.

        Args:
            texts: the texts.
            joined: ``"\\x00".join(texts)`` when the caller has it.

        Raises:
            MaskingError: from the engine (a text too dense to check for phones).
        """
        if not self.batch or len(texts) < 2:
            return self._each(texts)
        if joined is None:
            joined = "\x00".join(texts)
        if joined.count("\x00") != len(texts) - 1:
            return self._each(texts)  # a NUL inside a text (never in PostgreSQL text)
        out: dict[int, list[Detection]] = {}
        for idx, sub, sub_joined in self._regroup(texts, joined):
            if sub_joined is None:
                for j, d in self._each(sub).items():
                    out[idx[j] if idx is not None else j] = d
                continue
            for k0, n, start, end in self._chunks(sub_joined):
                part = sub[k0 : k0 + n]
                if n == 1:
                    found = self._each(part)
                else:
                    chunk = sub_joined[start:end]
                    dets = self._scan_chunk(chunk)
                    if dets is None:
                        found = self._each(part)
                    elif not dets and (
                        self.secret_gate is None or self.secret_gate.search(chunk) is None
                    ):
                        continue
                    else:
                        found = self._careful(part, chunk, dets)
                for j, d in found.items():
                    out[(idx[k0 + j] if idx is not None else k0 + j)] = d
        return out

    def mask(
        self, texts: Sequence[str], joined: str | None = None
    ) -> tuple[dict[int, str], dict[str, int]]:
        """Mask the texts as ``Masker.mask_text`` masks each one alone.

        Args:
            texts: the texts.
            joined: ``"\\x00".join(texts)`` when the caller has it.

        Returns:
            ``({index: masked text}`` for the texts that changed, ``{entity type:
            number of detections}``).

        Raises:
            MaskingError: from the engine.
        """
        if not self.batch or len(texts) < 2:
            return self._render(texts, self._each(texts))
        if joined is None:
            joined = "\x00".join(texts)
        if joined.count("\x00") != len(texts) - 1:
            return self._render(texts, self._each(texts))
        changed: dict[int, str] = {}
        counts: Counter[str] = Counter()
        for idx, sub, sub_joined in self._regroup(texts, joined):
            if sub_joined is None:
                ch, cn = self._render(sub, self._each(sub))
                counts.update(cn)
                for j, t in ch.items():
                    changed[idx[j] if idx is not None else j] = t
                continue
            for k0, n, start, end in self._chunks(sub_joined):
                part = sub[k0 : k0 + n]
                ch, cn = self._mask_chunk(part, sub_joined[start:end])
                counts.update(cn)
                for j, t in ch.items():
                    changed[(idx[k0 + j] if idx is not None else k0 + j)] = t
        return changed, counts

    def _mask_chunk(self, texts: list[str], chunk: str) -> tuple[dict[int, str], dict[str, int]]:
        if len(texts) == 1:
            return self._render(texts, self._each(texts))
        fast = self._chunk_fast(chunk, len(texts))
        if fast is not None:
            masked, dets = fast
            if masked is None:
                return {}, {}
            parts = masked.split("\x00")
            return {k: parts[k] for k in compress(count(), map(ne, texts, parts))}, Counter(
                map(_TYPE, dets)
            )
        dets = self._scan_chunk(chunk)
        found = self._each(texts) if dets is None else self._careful(texts, chunk, dets)
        return self._render(texts, found)

    def mask_joined(self, joined: str, n: int) -> tuple[str | None, dict[str, int]] | None:
        """:meth:`mask` for the common case, without splitting into texts: ``n`` texts
        joined with NUL, ASCII, fewer than two colons.

        Returns:
            ``(masked joined text, or None when nothing changed; {entity type: count})``,
            or ``None`` when the texts must go through :meth:`mask` (no batching for this
            column, non-ASCII or IPv6-looking text, a NUL inside a text).

        Raises:
            MaskingError: from the engine.
        """
        if (
            not self.batch
            or n < 2
            or not joined.isascii()
            or joined.count(":") >= 2
            or joined.count("\x00") != n - 1
        ):
            return None
        pieces: list[str] = []
        counts: Counter[str] = Counter()
        changed = False
        for _k, cnt, start, end in self._chunks(joined):
            chunk = joined[start:end]
            fast = self._chunk_fast(chunk, cnt) if cnt > 1 else None
            if fast is not None:
                masked, dets = fast
                if masked is not None:
                    changed = True
                    counts.update(map(_TYPE, dets))
                    chunk = masked
                pieces.append(chunk)
                continue
            texts = chunk.split("\x00")
            ch, cn = (
                self._mask_chunk(texts, chunk)
                if cnt > 1
                else self._render(texts, self._each(texts))
            )
            if ch:
                changed = True
                counts.update(cn)
                for j, t in ch.items():
                    texts[j] = t
                chunk = "\x00".join(texts)
            pieces.append(chunk)
        if not changed:
            return None, {}
        return "\x00".join(pieces), counts

    def _render(
        self, texts: Sequence[str], sparse: dict[int, list[Detection]]
    ) -> tuple[dict[int, str], dict[str, int]]:
        render = self.m.render
        changed = {k: render(texts[k], d) for k, d in sparse.items()}
        counts: Counter[str] = Counter()
        for d in sparse.values():
            counts.update(map(_TYPE, d))
        return changed, counts


# --------------------------------------------------------------------------- column plans

# What happens to a column's values (per RowDescription field and format).
_PASS = "pass"  # nothing (inert, bytea, binary_policy "pass")
_TEXT = "text"  # detectors, replaced in place
_JSON = "json"  # the JSON body handler
_SCAN_NULL = "scan_null"  # detectors; NULL on any finding
_ARRAY = "array"  # elements scanned; NULL on any finding
_FIELD_TEXT = "field_text"  # field rule: placeholder
_FIELD_JSON = "field_json"  # field rule: JSON string of the placeholder
_NULL = "null"  # field rule on a non-text column: NULL

_INT_TYPES = frozenset({pgt.INT2, pgt.INT4, pgt.INT8, pgt.OID, pgt.NUMERIC})
#: struct code and size of the binary integer types.
_BINARY_INTS = {pgt.INT4: ("i", 4), pgt.INT8: ("q", 8), pgt.OID: ("I", 4)}
#: Numbers shorter than this are never scanned (``Masker._mask_int``: 6+ digits).
_MIN_DIGITS = 6


class _Numbers:
    """Which numeric texts are worth scanning (``Masker._mask_int``'s rule for JSON
    integers: 6+ digits, and a length some detector reads unless the column name is
    phone-like or a detector has no gate)."""

    __slots__ = ("any_length", "lengths")

    def __init__(self, masker: Masker, phones: bool) -> None:
        lengths: set[int] = set()
        for t in masker.entity_types:
            lengths |= _INT_LENGTHS.get(t, set())
        self.lengths = frozenset(lengths)
        self.any_length = phones or any(d.gate is None for d in masker.detectors)

    def wanted(self, text: str) -> bool:
        ip = text.split(".", 1)[0]
        nd = len(ip) - (1 if ip[:1] in ("-", "+") else 0)
        return nd >= 6 and (self.any_length or nd in self.lengths)


class _Column:
    """The plan of one result column (see the module docstring for the rules)."""

    __slots__ = (
        "action",
        "binary",
        "category",
        "decoder",
        "element",
        "element_category",
        "element_decoder",
        "hint",
        "index",
        "jsonb",
        "location",
        "name",
        "numbers",
        "scanner",
        "strategy",
        "type_oid",
    )

    def __init__(self) -> None:
        self.action = _PASS
        self.binary = False
        self.category = pgt.UNKNOWN
        self.decoder: Callable[[bytes, str], str] | None = None
        self.element: int | None = None
        self.element_category = pgt.UNKNOWN
        self.element_decoder: Callable[[bytes, str], str] | None = None
        self.hint = ""
        self.index = 0
        self.jsonb = False
        self.location = ""
        self.name = ""
        self.numbers: _Numbers | None = None
        self.scanner: _Scanner | None = None
        self.strategy: str | None = None
        self.type_oid = 0


def _hint_for(masker: Masker | None, field_name: str, names: frozenset[str]) -> str:
    """The detector hint of a column: its field name, unless another of its names gives
    a keyword detector context (``ssn``, ``password``...) and the field name does not."""
    if masker is None or not masker.enabled:
        return field_name

    def gives_context(name: str) -> bool:
        for d in masker.detectors:
            rx = getattr(d, "hint_re", None)
            if rx is not None and rx.fullmatch(name):
                return True
            kw = getattr(d, "_keyword", None)
            if d.uses_hint and kw is not None and kw.search(name):
                return True
        return False

    if gives_context(field_name):
        return field_name
    for n in sorted(names - {field_name}):
        if gives_context(n):
            return n
    return field_name


def _strongest(masker: Masker, names: frozenset[str]) -> str | None:
    strategy = None
    for n in names:
        s = masker.field_strategy(n)
        if s is not None:
            strategy = s if strategy is None else _st.stronger(strategy, s)
    return strategy


def _refusal(col: _Column) -> RowRefused:
    return RowRefused(
        "0A000",
        f'column "{col.name}" (type oid {col.type_oid}) is returned in binary format, '
        "which Gatehouse cannot mask; request text format",
    )


def _plan(
    index: int,
    name: str,
    type_oid: int,
    binary: bool,
    names: frozenset[str],
    masker: Masker | None,
    binary_policy: str,
    location: str,
) -> tuple[_Column, RowRefused | None]:
    """Decide what happens to one column. Returns the plan and, for a binary column that
    cannot be masked under the policy, the refusal to raise."""
    col = _Column()
    col.index, col.name, col.type_oid, col.binary = index, name, type_oid, binary
    col.location = location
    cat = pgt.category(type_oid)
    if binary and type_oid == pgt.CHAR:
        cat = pgt.INERT  # one raw byte: no placeholder fits, nothing to find
    col.category = cat
    col.jsonb = type_oid == pgt.JSONB
    if cat == pgt.ARRAY:
        col.element = pgt.ARRAY_ELEMENT[type_oid]
        col.element_category = pgt.category(col.element)
        col.element_decoder = pgt.binary_decoder(col.element)
    col.decoder = pgt.binary_decoder(type_oid)
    col.hint = _hint_for(masker, name, names)
    if masker is None or not masker.enabled:
        return col, None
    strategy = _strongest(masker, names)
    col.strategy = strategy
    readable = not binary or (
        col.decoder is not None
        if cat != pgt.ARRAY
        else col.element_decoder is not None or col.element_category in (pgt.INERT, pgt.BYTEA_KIND)
    )
    if strategy is not None:
        if cat in (pgt.TEXT_LIKE,) or (cat == pgt.UNKNOWN and not binary):
            col.action = _FIELD_TEXT
        elif cat == pgt.JSON_KIND:
            col.action = _FIELD_JSON
        elif cat == pgt.UNKNOWN:
            return col, _refusal(col)
        else:
            col.action = _NULL
        return col, None
    if cat in (pgt.INERT, pgt.BYTEA_KIND):
        return col, None
    if not readable or (binary and cat == pgt.UNKNOWN):
        if binary_policy == "pass":
            return col, None
        return col, _refusal(col)
    phones = True
    if cat in (pgt.TEXT_LIKE, pgt.UNKNOWN):
        col.action = _TEXT
    elif cat == pgt.JSON_KIND:
        col.action = _JSON
    elif cat == pgt.ARRAY:
        ec = col.element_category
        if ec in (pgt.INERT, pgt.BYTEA_KIND):
            return col, None
        if col.element == pgt.INT2:
            return col, None  # at most 5 digits: no detector reads numbers that short
        col.action = _ARRAY
        if ec == pgt.NUMERIC_LIKE and col.element in _INT_TYPES:
            phones = _phone_name(masker, col.hint)
            col.numbers = _Numbers(masker, phones)
    else:  # NUMERIC_LIKE, INET_KIND, OTHER
        if type_oid == pgt.INT2:
            return col, None  # at most 5 digits: no detector reads numbers that short
        col.action = _SCAN_NULL
        if type_oid in _INT_TYPES:
            phones = _phone_name(masker, col.hint)
            col.numbers = _Numbers(masker, phones)
    col.scanner = _Scanner(masker, col.hint, phones=phones)
    return col, None


def _phone_name(masker: Masker, hint: str) -> bool:
    """Numbers are read as phone numbers only under a phone-like name (as JSON integers)."""
    return (
        any(type(d) is PhoneDetector for d in masker.detectors)
        and _PHONE_KEY_RE.search(hint) is not None
    )


# --------------------------------------------------------------------------- value masking


class _Findings:
    """Counts of masked entities per ``(entity type, location)``, first-seen order."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, entity_type: str, location: str, n: int = 1) -> None:
        k = (entity_type, location)
        self.counts[k] = self.counts.get(k, 0) + n

    def summary(self) -> list[dict[str, Any]]:
        return [{"type": t, "location": loc, "count": c} for (t, loc), c in self.counts.items()]


def _refuse_masking(exc: MaskingError, col: _Column) -> RowRefused:
    if isinstance(exc, BodyTooLargeError):
        return RowRefused("54000", f'a value of column "{col.name}" is too large to mask')
    return RowRefused("XX000", f'column "{col.name}" could not be masked: {exc}')


def _apply(
    col: _Column,
    texts: Sequence[str],
    masker: Masker,
    findings: _Findings,
    joined: str | None = None,
) -> dict[int, str | None]:
    """Mask one column's non-NULL values (as text; ``joined``: their NUL-joined text if
    the caller has it). Returns ``{index: new text, or None for NULL}`` for the values
    that change.

    Raises:
        RowRefused: see the module docstring.
    """
    action = col.action
    loc = col.location
    if action == _TEXT:
        assert col.scanner is not None
        try:
            changed, counts = col.scanner.mask(texts, joined)
        except MaskingError as exc:
            raise _refuse_masking(exc, col) from None
        for t, c in counts.items():
            findings.add(t, loc, c)
        return changed  # type: ignore[return-value]
    if action == _SCAN_NULL:
        assert col.scanner is not None
        idx: Sequence[int] = range(len(texts))
        nums = col.numbers
        if nums is not None:
            wanted = nums.wanted
            idx = [k for k, t in enumerate(texts) if len(t) >= 6 and wanted(t)]
            if not idx:
                return {}
        if len(idx) == len(texts):
            sub = texts
        else:
            sub, joined = [texts[k] for k in idx], None
        try:
            sparse = col.scanner.sparse(sub, joined)
        except MaskingError as exc:
            raise _refuse_masking(exc, col) from None
        out: dict[int, str | None] = {}
        for j, dets in sparse.items():
            out[idx[j]] = None
            for d in dets:
                findings.add(d.entity_type, loc)
        return out
    if action == _FIELD_TEXT:
        strategy, key = col.strategy, _hash_key(masker)
        assert strategy is not None
        findings.add(FIELD, loc, len(texts))
        return {k: _st.field_placeholder(strategy, t, key) for k, t in enumerate(texts)}
    if action == _FIELD_JSON:
        strategy, key = col.strategy, _hash_key(masker)
        assert strategy is not None
        findings.add(FIELD, loc, len(texts))
        out = {}
        for k, t in enumerate(texts):
            try:
                value: Any = json.loads(t)
            except ValueError:
                value = t
            out[k] = json.dumps(_st.field_placeholder(strategy, value, key))
        return out
    if action == _NULL:
        findings.add(FIELD, loc, len(texts))
        return dict.fromkeys(range(len(texts)))
    if action == _JSON:
        out = {}
        for k, t in enumerate(texts):
            body = t.encode("utf-8")
            try:
                res = masker.mask_body(body, "application/json")
            except MaskingError as exc:
                raise _refuse_masking(exc, col) from None
            for f in res.findings:
                findings.add(f.entity_type, loc)
            if res.body is not body:
                out[k] = res.body.decode("utf-8")
        return out
    raise AssertionError(action)  # pragma: no cover - arrays go through _apply_arrays


def _apply_arrays(
    col: _Column,
    arrays: Sequence[Sequence[str | None]],
    findings: _Findings,
) -> set[int]:
    """Scan the elements of one column's arrays; returns the indices of the arrays with
    a finding (they become NULL)."""
    assert col.scanner is not None
    owner: list[int] = []
    elems: list[str] = []
    nums = col.numbers
    for k, arr in enumerate(arrays):
        for e in arr:
            if e is None or not e:
                continue
            if nums is not None and not nums.wanted(e):
                continue
            owner.append(k)
            elems.append(e)
    if not elems:
        return set()
    try:
        sparse = col.scanner.sparse(elems)
    except MaskingError as exc:
        raise _refuse_masking(exc, col) from None
    hit: set[int] = set()
    for j, dets in sparse.items():
        hit.add(owner[j])
        for d in dets:
            findings.add(d.entity_type, col.location)
    return hit


def _hash_key(masker: Masker) -> bytes:
    """The masker's HMAC key for ``field_placeholder`` (the engine keeps it private)."""
    return masker._key


# --------------------------------------------------------------------------- sampling


def _binary_text(col: _Column, value: bytes, encoding: str) -> str | None:
    """A binary value as text where a decoder exists, else ``None``."""
    if pgt.has_binary_decoder(col.type_oid):
        try:
            return pgt.decode_binary(col.type_oid, value, encoding)
        except (ValueError, LookupError):
            return None
    return None


def _record_mask(record_masker: Masker | None, col: _Column, text: str | None) -> str | None:
    """Mask a sampled value again with the record masker (JSON as JSON)."""
    if text is None or record_masker is None or not record_masker.enabled:
        return text
    try:
        if col.category == pgt.JSON_KIND:
            body = text.encode("utf-8")
            res = record_masker.mask_body(body, "application/json")
            return text if res.body is body else res.body.decode("utf-8", "replace")
        return record_masker.mask_text(text, hint=col.hint)[0]
    except MaskingError:
        return "[unmaskable value]"


# --------------------------------------------------------------------------- DataRow

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_NULL_LEN = b"\xff\xff\xff\xff"
#: Length words of short values (placeholders), prebuilt.
_LENGTHS = tuple(_I32.pack(n) for n in range(256))


def _malformed(what: str) -> RowRefused:
    return RowRefused("08P01", f"malformed {what} from the server")


@functools.lru_cache(maxsize=1024)
def _row_parser(ncols: int, active: tuple[int, ...], sparse: frozenset[int]) -> Callable[..., Any]:
    """A parser of ``DataRow`` payloads for one ``RowDescription``, generated once.

    The generated ``parse(payloads) -> (values, offsets, rows)`` checks each row's
    ``Int16`` column count and reads the ``Int32`` length words up to the last column in
    ``active`` with one statement per column (no inner loop: this is the per-row cost of
    result masking; columns after the last active one are not read). Per active column
    it returns the values (``bytes``, ``None`` for NULL) and the offsets of their length
    words, one per row; for the columns in ``sparse`` (numbers, which only matter from 6
    digits on) only the values of at least 6 bytes are kept, with their row indices in
    ``rows`` (``None`` for the other columns).

    Raises (from the generated function):
        ValueError: wrong column count, a negative length other than -1, a row shorter
            than its length words say.
        struct.error: a row cut inside a length word.
    """
    hi, lo = divmod(ncols & 0xFFFF, 256)
    last = max(active, default=-1)
    slots = {c: k for k, c in enumerate(active)}
    lines = ["def parse(payloads):"]
    for c, k in slots.items():
        lines.append(f"    v{k} = []; o{k} = []; av{k} = v{k}.append; ao{k} = o{k}.append")
        if c in sparse:
            lines.append(f"    r{k} = []; ar{k} = r{k}.append")
    loop = "for r, p in enumerate(payloads):" if sparse else "for p in payloads:"
    lines += [
        f"    {loop}",
        f"        if p[1] != {lo} or p[0] != {hi}:",
        "            raise ValueError('column count')",
        "        off = 2",
    ]
    for c in range(last + 1):
        lines.append("        n = unpack(p, off)[0]")
        k = slots.get(c)
        if k is None:
            lines += [
                "        if n > 0:",
                "            off += 4 + n",
                "        elif n == -1 or n == 0:",
                "            off += 4",
                "        else:",
                "            raise ValueError('length')",
            ]
        elif c in sparse:
            lines += [
                f"        if n >= {_MIN_DIGITS}:",
                f"            ar{k}(r); ao{k}(off); av{k}(p[off + 4 : off + 4 + n])",
                "            off += 4 + n",
                "        elif n >= -1:",
                "            off += 4 + (n if n > 0 else 0)",
                "        else:",
                "            raise ValueError('length')",
            ]
        else:
            lines += [
                f"        ao{k}(off)",
                "        off += 4",
                "        if n >= 0:",
                "            e = off + n",
                f"            av{k}(p[off:e])",
                "            off = e",
                "        elif n == -1:",
                f"            av{k}(None)",
                "        else:",
                "            raise ValueError('length')",
            ]
    values = ", ".join(f"v{k}" for k in slots.values())
    offsets = ", ".join(f"o{k}" for k in slots.values())
    rows = ", ".join(f"r{k}" if c in sparse else "None" for c, k in slots.items())
    lines += [
        "        if off > len(p):",
        "            raise ValueError('truncated')",
        f"    return [{values}], [{offsets}], [{rows}]",
    ]
    namespace: dict[str, Any] = {"unpack": _I32.unpack_from}
    exec(compile("\n".join(lines), "<rowmask parser>", "exec"), namespace)  # noqa: S102
    return namespace["parse"]


def _same_rows(
    a: list[tuple[int, int, int, bytes | None]], b: list[tuple[int, int, int, bytes | None]]
) -> bool:
    """Both change lists touch exactly the same rows (in the same order)."""
    return len(a) == len(b) and list(map(_ROW, a)) == list(map(_ROW, b))


def _splice_pairs(
    out: list[bytes],
    left: list[tuple[int, int, int, bytes | None]],
    right: list[tuple[int, int, int, bytes | None]],
) -> None:
    """:func:`_splice` of two columns changing in the same rows (``left`` before
    ``right`` in the row), one ``join`` per row (PII-dense results)."""
    pack = _I32.pack
    lens = _LENGTHS
    join = b"".join
    null = _NULL_LEN
    for (r, o1, l1, n1), (_r, o2, l2, n2) in zip(left, right, strict=True):
        p = out[r]
        if n1 is None:
            w1, n1 = null, b""
        else:
            k = len(n1)
            w1 = lens[k] if k < 256 else pack(k)
        if n2 is None:
            w2, n2 = null, b""
        else:
            k = len(n2)
            w2 = lens[k] if k < 256 else pack(k)
        out[r] = join((p[:o1], w1, n1, p[o1 + 4 + l1 : o2], w2, n2, p[o2 + 4 + l2 :]))


def _splice(out: list[bytes], changes: list[tuple[int, int, int, bytes | None]]) -> None:
    """Replace one column's values in rows of ``out``, in place.

    ``changes``: ``(row, offset of the value's length word, old length, new value or
    None for NULL)``. Columns must be spliced right to left, so that the offsets of the
    columns still to do stay valid.
    """
    pack = _I32.pack
    lens = _LENGTHS
    join = b"".join
    for r, o, old, new in changes:
        p = out[r]
        if new is None:
            out[r] = join((p[:o], _NULL_LEN, p[o + 4 + old :]))
        else:
            n = len(new)
            out[r] = join((p[:o], lens[n] if n < 256 else pack(n), new, p[o + 4 + old :]))


class _Base:
    """What :class:`RowMasker` and :class:`CopyMasker` share: the column plans, findings,
    row count and sample."""

    def __init__(
        self,
        columns: Sequence[tuple[str, int, bool]],
        names: Sequence[frozenset[str]] | None,
        masker: Masker | None,
        *,
        encoding: str,
        binary_policy: str,
        record_masker: Masker | None,
        sample_limit: int,
    ) -> None:
        if binary_policy not in BINARY_POLICIES:
            raise ValueError(f"unknown binary_policy {binary_policy!r}")
        codecs.lookup(encoding)
        self.encoding = encoding
        self.masker = masker
        self.record_masker = record_masker
        self.sample_limit = sample_limit
        self.binary_policy = binary_policy
        self.wire_enabled: bool = masker is not None and masker.enabled
        self.covered: frozenset[str] = (
            frozenset(masker.entity_types) if self.wire_enabled and masker else frozenset()
        )
        self.row_count = 0
        self.sample: list[list[str | None]] = []
        self._findings = _Findings()
        namer = masker if self.wire_enabled else record_masker
        self.columns: list[_Column] = []
        self._refusal: RowRefused | None = None
        for i, (name, oid, binary) in enumerate(columns):
            known = frozenset(names[i]) if names is not None and i < len(names) else frozenset()
            loc_name = name
            if namer is not None and namer.enabled:
                try:
                    loc_name = namer.mask_text(name)[0]
                except MaskingError:
                    loc_name = f"${i + 1}"
            col, refusal = _plan(
                i,
                name,
                oid,
                binary,
                known | {name},
                masker,
                binary_policy,
                f"column:{loc_name}",
            )
            self.columns.append(col)
            if refusal is not None and self._refusal is None:
                self._refusal = refusal
        self.active = [c for c in self.columns if c.action != _PASS]

    def findings(self) -> list[dict[str, Any]]:
        """What was masked on the wire, shaped like
        :func:`~proxy_worker.masking.engine.summarise`: ``[{"type": "EMAIL",
        "location": "column:email", "count": 3}, ...]`` (``FIELD`` for field-name rules)."""
        return self._findings.summary()

    @property
    def refusal(self) -> RowRefused | None:
        """The refusal the first non-empty batch will raise (a binary column Gatehouse
        cannot mask), known from the column plans alone; ``None`` otherwise."""
        return self._refusal if self.wire_enabled else None

    def _sample_value(self, col: _Column, value: bytes | str | None, binary: bool) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            text = value
        elif binary:
            decoded = _binary_text(col, value, self.encoding)
            if decoded is None:
                return f"[binary {col.type_oid}, {len(value)} bytes]"
            text = decoded
        else:
            text = value.decode(self.encoding, "replace")
        return _record_mask(self.record_masker, col, text)


class RowMasker(_Base):
    """Masks the ``DataRow`` messages of one result (see the module docstring).

    Args:
        fields: the result's ``RowDescription`` fields; ``format_code`` must be the
            format the rows actually use (for the extended protocol, from ``Bind``'s
            result-format codes).
        names: per field, every name the column is known by (field name, source column,
            referenced columns); the field name is always added. Shorter than ``fields``
            or ``None``: the field name only.
        masker: the target's response masker; ``None`` or not ``enabled``: nothing is
            masked on the wire (:attr:`wire_enabled` False), rows are still counted and
            sampled.
        encoding: Python codec of the connection's client encoding
            (:func:`~proxy_worker.postgres.types.python_codec`).
        binary_policy: ``"refuse"`` or ``"pass"`` for binary values Gatehouse cannot read.
        record_masker: masks the recorded sample again; ``None``: the sample is as masked
            on the wire.
        sample_limit: rows kept in :attr:`sample`.

    Raises:
        ValueError: unknown ``binary_policy`` or codec.

    Attributes:
        wire_enabled: False when the relay may forward ``DataRow`` untouched (it should
            still call :meth:`observe`).
        row_count: rows seen so far.
        sample: the first ``sample_limit`` rows as recorded text (``None`` = NULL).
        covered: entity types the wire masker detects.
    """

    def __init__(
        self,
        fields: Sequence[FieldDescription],
        names: Sequence[frozenset[str]] | None,
        masker: Masker | None,
        *,
        encoding: str = "utf-8",
        binary_policy: str = "refuse",
        record_masker: Masker | None = None,
        sample_limit: int = 20,
    ) -> None:
        super().__init__(
            [(f.name, f.type_oid, f.format_code == 1) for f in fields],
            names,
            masker,
            encoding=encoding,
            binary_policy=binary_policy,
            record_masker=record_masker,
            sample_limit=sample_limit,
        )
        self.fields = tuple(fields)
        self._ncols = len(fields)
        sparse = frozenset(
            c.index
            for c in self.active
            if c.action == _SCAN_NULL and c.numbers is not None and not c.binary
        )
        self._parser = _row_parser(self._ncols, tuple(c.index for c in self.active), sparse)

    def fresh(self) -> RowMasker:
        """A masker with this one's column plans and nothing seen yet (no rows, sample or
        findings). Plans never change once built, so the relay builds one per result
        shape and takes a fresh copy per statement (building costs 50-170 µs)."""
        new = copy.copy(self)
        new.row_count = 0
        new.sample = []
        new._findings = _Findings()
        return new

    # ---------------------------------------------------------------- parsing

    def _parse(self, payloads: Sequence[bytes]) -> Any:
        """Per active column: values, offsets of their length words, row indices (see
        :func:`_row_parser`).

        Raises:
            RowRefused: ``08P01`` on a column count other than the ``RowDescription``'s,
                a negative length other than -1, or a row shorter than its lengths say.
        """
        try:
            return self._parser(payloads)
        except (ValueError, struct.error, IndexError):
            raise _malformed("DataRow") from None

    @staticmethod
    def _split(payload: bytes) -> list[bytes | None]:
        """Every value of one DataRow (for samples)."""
        n = _I16.unpack_from(payload)[0]
        off = 2
        out: list[bytes | None] = []
        for _ in range(n):
            ln = _I32.unpack_from(payload, off)[0]
            off += 4
            if ln < 0:
                out.append(None)
            else:
                out.append(payload[off : off + ln])
                off += ln
        return out

    # ---------------------------------------------------------------- masking

    def _column_changes(
        self,
        col: _Column,
        values: list[bytes | None],
        offsets: list[int],
        rows: list[int] | None,
    ) -> list[tuple[int, int, int, bytes | None]]:
        """The values of one column that change: ``(row, offset of its length word, old
        length, new value or None for NULL)``, in row order.

        Args:
            col: the column's plan.
            values, offsets: from the parser, one per row, or (``rows`` given) one per
                row in ``rows``.
            rows: row indices of ``values`` for sparse columns, else ``None``.
        """
        masker = self.masker
        assert masker is not None
        enc = self.encoding
        idx: Sequence[int]
        if rows is not None:
            idx = rows
        elif None in values:
            idx = [r for r, v in enumerate(values) if v is not None]
            offsets = [offsets[r] for r in idx]
            values = [values[r] for r in idx]
        else:
            idx = range(len(values))
        if not idx:
            return []
        nn: list[bytes] = values  # type: ignore[assignment]
        action = col.action
        if action == _NULL:
            self._findings.add(FIELD, col.location, len(idx))
            return [(r, o, len(v), None) for r, o, v in zip(idx, offsets, nn, strict=True)]
        if action == _TEXT and (not col.binary or col.category == pgt.TEXT_LIKE):
            fast = self._text_fast(col, nn, idx, offsets)
            if fast is not None:
                return fast
        if action == _SCAN_NULL and col.binary and col.type_oid in _BINARY_INTS:
            return self._binary_ints(col, nn, idx, offsets)
        if action == _ARRAY:
            hit = _apply_arrays(col, self._arrays(col, nn), self._findings)
            return [(idx[k], offsets[k], len(nn[k]), None) for k in sorted(hit)]
        texts, joined = self._texts(col, nn)
        changed = _apply(col, texts, masker, self._findings, joined)
        if not changed:
            return []
        out: list[tuple[int, int, int, bytes | None]] = []
        jsonb = col.binary and col.jsonb
        for k in sorted(changed):
            t = changed[k]
            if t is None:
                out.append((idx[k], offsets[k], len(nn[k]), None))
                continue
            try:
                b = t.encode(enc)
            except UnicodeEncodeError:
                raise RowRefused(
                    "22021", f'masked value of column "{col.name}" is not in {enc}'
                ) from None
            out.append((idx[k], offsets[k], len(nn[k]), b"\x01" + b if jsonb else b))
        return out

    def _binary_ints(
        self, col: _Column, values: list[bytes], idx: Sequence[int], offsets: list[int]
    ) -> list[tuple[int, int, int, bytes | None]]:
        """A binary integer column: all values unpacked with one ``struct`` call, only
        those of 6+ digits turned into text and scanned."""
        code, size = _BINARY_INTS[col.type_oid]
        raw = b"".join(values)
        if len(raw) != size * len(values) or any(len(v) != size for v in values):
            raise _malformed(f'binary value in column "{col.name}" (wrong length)')
        ints = struct.unpack(f">{len(values)}{code}", raw)
        big = [k for k, v in enumerate(ints) if v >= 100000 or v <= -100000]
        if not big:
            return []
        assert self.masker is not None
        texts = [str(ints[k]) for k in big]
        changed = _apply(col, texts, self.masker, self._findings)
        return [(idx[big[j]], offsets[big[j]], size, None) for j in sorted(changed)]

    def _text_fast(
        self, col: _Column, values: list[bytes], idx: Sequence[int], offsets: list[int]
    ) -> list[tuple[int, int, int, bytes | None]] | None:
        """Detectors on a text column, all values in one scan and one render
        (:meth:`_Scanner.mask_joined`); ``None`` when that does not apply.

        Returns:
            The changes, as :meth:`_column_changes` returns them.

        Raises:
            RowRefused: undecodable text, a masking failure.
        """
        enc = self.encoding
        try:
            joined = b"\x00".join(values).decode(enc)
        except UnicodeDecodeError:
            raise RowRefused(
                "22021", f'a value of column "{col.name}" is not valid {enc}'
            ) from None
        assert col.scanner is not None
        try:
            fast = col.scanner.mask_joined(joined, len(values))
        except MaskingError as exc:
            raise _refuse_masking(exc, col) from None
        if fast is None:
            return None
        masked, counts = fast
        for t, c in counts.items():
            self._findings.add(t, col.location, c)
        if masked is None:
            return []
        try:
            new = masked.encode(enc).split(b"\x00")
        except UnicodeEncodeError:
            raise RowRefused(
                "22021", f'masked value of column "{col.name}" is not in {enc}'
            ) from None
        return [
            (idx[k], offsets[k], len(values[k]), new[k])
            for k in compress(count(), map(ne, values, new))
        ]

    def _texts(self, col: _Column, values: list[bytes]) -> tuple[list[str], str | None]:
        """The values of one column as text, and their NUL-joined text when it was
        built on the way (text format and binary text-like types).

        Raises:
            RowRefused: ``22021`` undecodable text, ``08P01`` malformed binary value.
        """
        enc = self.encoding
        if not col.binary or (col.category in (pgt.TEXT_LIKE, pgt.JSON_KIND) and not col.jsonb):
            raw = b"\x00".join(values)
            try:
                joined = raw.decode(enc)
            except UnicodeDecodeError:
                raise RowRefused(
                    "22021", f'a value of column "{col.name}" is not valid {enc}'
                ) from None
            parts = joined.split("\x00")
            if len(parts) == len(values):
                return parts, joined
            # a NUL inside a value (never in PostgreSQL text): no joined text
            return [v.decode(enc) for v in values], None
        dec = col.decoder
        assert dec is not None
        try:
            return [dec(v, enc) for v in values], None
        except UnicodeDecodeError:
            raise RowRefused(
                "22021", f'a value of column "{col.name}" is not valid {enc}'
            ) from None
        except pgt.BinaryFormatError as exc:
            raise _malformed(f'binary value in column "{col.name}" ({exc})') from None

    def _arrays(self, col: _Column, values: list[bytes]) -> list[list[str | None]]:
        enc = self.encoding
        out: list[list[str | None]] = []
        try:
            if not col.binary:
                delim = ";" if col.element == pgt.BOX else ","
                for t in self._texts(col, values)[0]:
                    out.append(pgt.parse_array_literal(t, delim))
                return out
            dec = col.element_decoder
            assert dec is not None
            for v in values:
                arr = pgt.decode_array(v, col.element)
                out.append([None if e is None else dec(e, enc) for e in arr.elements])
        except UnicodeDecodeError:
            raise RowRefused(
                "22021", f'a value of column "{col.name}" is not valid {enc}'
            ) from None
        except ValueError as exc:  # BinaryFormatError, bad literal
            raise _malformed(f'array in column "{col.name}" ({exc})') from None
        return out

    def mask_rows(self, payloads: list[bytes]) -> list[bytes]:
        """Mask the payloads of consecutive ``DataRow`` messages.

        Args:
            payloads: each message's bytes after its length word.

        Returns:
            The new payloads, in order; the same object where a row did not change
            (``payloads`` itself when nothing changed or the wire is disabled).

        Raises:
            RowRefused: see the module docstring; nothing of the batch may be sent.
        """
        if not payloads:
            return payloads
        if not self.wire_enabled:
            self.observe(payloads)
            return payloads
        if self._refusal is not None:
            raise self._refusal
        out = payloads
        if self.active:
            vals, offs, rows = self._parse(payloads)
            todo = []
            for a, col in enumerate(self.active):
                ch = self._column_changes(col, vals[a], offs[a], rows[a])
                if ch:
                    todo.append(ch)
            if todo:
                out = list(payloads)
                if len(todo) == 2 and _same_rows(todo[0], todo[1]):
                    _splice_pairs(out, todo[0], todo[1])
                else:
                    for ch in reversed(todo):  # right to left: offsets stay valid
                        _splice(out, ch)
        self._count_and_sample(out)
        return out

    def observe(self, payloads: Sequence[bytes]) -> None:
        """Count and sample rows that go out unmasked (wire disabled)."""
        self._count_and_sample(payloads)

    def _count_and_sample(self, payloads: Sequence[bytes]) -> None:
        room = self.sample_limit - len(self.sample)
        if room > 0:
            for p in payloads[:room]:
                try:
                    values = self._split(p)
                except struct.error:
                    values = [None] * self._ncols
                self.sample.append(
                    [
                        self._sample_value(col, v, col.binary)
                        for col, v in zip(self.columns, values, strict=False)
                    ]
                )
        self.row_count += len(payloads)


# --------------------------------------------------------------------------- COPY


def copy_options(copy: Any, encoding: str = "utf-8") -> CopyOptions | None:
    """:class:`~proxy_worker.postgres.copy.CopyOptions` from a COPY description.

    Args:
        copy: a :class:`CopyOptions` (returned as is), any object with the attributes
            ``format``, ``delimiter``, ``null``, ``quote``, ``escape``, ``header`` and
            ``encoding`` (a PostgreSQL encoding name or ``None``; e.g.
            :class:`proxy_worker.postgres.sql.CopyInfo`), or ``None`` (not known).
        encoding: the client encoding's Python codec, used when the COPY has no
            ``ENCODING`` option.

    Returns:
        The options, or ``None`` when ``copy`` is ``None``.

    Raises:
        RowRefused: ``22021`` for an ``ENCODING`` Python cannot read, ``0A000`` for
            options PostgreSQL itself would refuse.
    """
    if copy is None or isinstance(copy, CopyOptions):
        return copy
    enc = encoding
    pg_enc = getattr(copy, "encoding", None)
    if pg_enc:
        codec = pgt.python_codec(pg_enc)
        if codec is None:
            raise RowRefused("22021", f"COPY encoding {pg_enc!r} cannot be masked")
        enc = codec
    try:
        return CopyOptions(
            format=copy.format,
            delimiter=copy.delimiter,
            null=copy.null,
            quote=copy.quote or '"',
            escape=copy.escape,
            header=bool(copy.header),
            encoding=enc,
        )
    except (ValueError, LookupError) as exc:
        raise RowRefused("0A000", f"unsupported COPY options: {exc}") from None


def _column_names(
    columns: Sequence[str | frozenset[str]] | None, n: int
) -> tuple[list[str], list[frozenset[str]]]:
    """Display names and name sets of COPY columns (a set's display name is its first
    name in sorted order; unknown columns are ``column1``, ``column2``...)."""
    display: list[str] = []
    sets: list[frozenset[str]] = []
    for i in range(n):
        c = columns[i] if columns is not None and i < len(columns) else None
        if isinstance(c, str):
            display.append(c)
            sets.append(frozenset({c}))
        elif c:
            display.append(sorted(c)[0])
            sets.append(frozenset(c))
        else:
            display.append(f"column{i + 1}")
            sets.append(frozenset())
    return display, sets


class CopyMasker(_Base):
    """Masks the data of one ``COPY ... TO STDOUT`` (the server's CopyData payloads), or
    samples a ``COPY ... FROM STDIN`` for the record (:meth:`sample_in`).

    Args:
        copy: the COPY's format (see :func:`copy_options`); ``None``: unknown, text or
            binary is told from the first bytes (binary data starts with the
            ``PGCOPY`` signature) with default options.
        columns: per column its name, or the set of names it is known by (as ``names``
            of :class:`RowMasker`); ``None`` or missing entries: ``column1``...
        type_oids: column type OIDs when known; missing: every column is read as text
            of an unknown type (masked in place), and a binary COPY with masking on is
            refused (``0A000``).
        masker: the target's response masker (``None`` / disabled: nothing changes).
        encoding: the client encoding's Python codec.
        binary_policy, record_masker, sample_limit: as for :class:`RowMasker`.
        column_count: the number of columns (``CopyOutResponse`` / ``CopyInResponse``);
            default ``len(columns)`` or ``len(type_oids)``.

    Header lines (``HEADER``), the binary file header and trailer pass through untouched.

    Raises:
        ValueError: no way to know the column count; unknown ``binary_policy``.
        RowRefused: see :func:`copy_options`.

    Attributes:
        row_count, sample, covered, wire_enabled: as for :class:`RowMasker`.
        error: why :meth:`sample_in` stopped sampling, or ``None``.
    """

    def __init__(
        self,
        copy: Any,
        columns: Sequence[str | frozenset[str]] | None = None,
        type_oids: Sequence[int] | None = None,
        masker: Masker | None = None,
        *,
        encoding: str = "utf-8",
        binary_policy: str = "refuse",
        record_masker: Masker | None = None,
        column_count: int | None = None,
        sample_limit: int = 20,
    ) -> None:
        n = column_count
        if n is None:
            known = columns if columns is not None else type_oids
            if known is None:
                raise ValueError("the number of COPY columns is not known")
            n = len(known)
        self.ncols = n
        self._args = (columns, type_oids, masker, encoding, binary_policy, record_masker)
        self.error: str | None = None
        self.options: CopyOptions | None = copy_options(copy, encoding)
        self._pending = b""
        self._configure(self.options or CopyOptions(encoding=encoding), sample_limit)
        self._configured = self.options is not None

    def _configure(self, options: CopyOptions, sample_limit: int) -> None:
        columns, type_oids, masker, encoding, binary_policy, record_masker = self._args
        binary = options.format == "binary"
        display, sets = _column_names(columns, self.ncols)
        cols = [
            (
                display[i],
                type_oids[i] if type_oids is not None and i < len(type_oids) else 0,
                binary,
            )
            for i in range(self.ncols)
        ]
        super().__init__(
            cols,
            sets,
            masker,
            encoding=options.encoding,
            binary_policy=binary_policy,
            record_masker=record_masker,
            sample_limit=sample_limit,
        )
        self._options = options
        if binary and type_oids is None and self.wire_enabled:
            self._refusal = RowRefused(
                "0A000",
                "binary COPY with unknown column types cannot be masked; use text or CSV",
            )
        self._splitter = row_splitter(options, self.ncols)
        self._rowmasker: RowMasker | None = None
        if binary:
            fields = [FieldDescription(name, 0, 0, oid, -1, -1, 1) for name, oid, _b in cols]
            self._rowmasker = RowMasker(
                fields,
                sets,
                masker,
                encoding=options.encoding,
                binary_policy=binary_policy,
                record_masker=record_masker,
                sample_limit=sample_limit,
            )
            self._rowmasker._findings = self._findings
            self._rowmasker.sample = self.sample

    def _detect(self, data: bytes) -> bytes | None:
        """With the format unknown: buffer until text or binary can be told; returns the
        data to process, or ``None`` to wait."""
        if self._configured:
            return data
        buf = self._pending + data
        sig = BINARY_SIGNATURE
        if len(buf) < len(sig) and sig.startswith(buf):
            self._pending = buf
            return None
        self._pending = b""
        fmt = "binary" if buf.startswith(sig) else "text"
        self.options = CopyOptions(format=fmt, encoding=self._options.encoding)
        self._configure(self.options, self.sample_limit)
        self._configured = True
        return buf

    def mask_chunk(self, data: bytes) -> bytes:
        """Mask one CopyData payload; returns the bytes to forward: complete rows only (an
        incomplete trailing row is held back until the next chunk or :meth:`finish`), so
        the result may be empty.

        Raises:
            RowRefused: see the module docstring (``08P01`` for malformed COPY data).
        """
        todo = self._detect(data)
        if todo is None:
            return b""
        if self.wire_enabled and self._refusal is not None and todo:
            raise self._refusal
        try:
            pieces = self._splitter.feed(todo)
        except CopyFormatError as exc:
            raise _malformed(f"COPY data ({exc})") from None
        return self._mask_pieces(pieces)

    def finish(self) -> bytes:
        """End of the COPY data (CopyDone): masks and returns what was held back (nothing
        for data PostgreSQL wrote: each of its CopyData messages holds whole rows).

        Raises:
            RowRefused: incomplete or malformed data.
        """
        if not self._configured:
            todo, self._pending = self._pending, b""
            if not todo:
                return b""
            self._configured = True
            out = self.mask_chunk(todo)
        else:
            out = b""
        try:
            pieces = self._splitter.finish()
        except CopyFormatError as exc:
            raise _malformed(f"COPY data ({exc})") from None
        return out + self._mask_pieces(pieces)

    def sample_in(self, data: bytes) -> None:
        """Count and sample one CopyData payload of a ``COPY FROM STDIN`` (nothing is
        masked; never raises: on bad data, sampling stops and :attr:`error` says why)."""
        if self.error is not None:
            return
        try:
            if self.wire_enabled:
                raise RowRefused("XX000", "sample_in needs a CopyMasker without wire masker")
            self.mask_chunk(data)
        except RowRefused as exc:
            self.error = exc.message

    def finish_in(self) -> None:
        """CopyDone of a ``COPY FROM STDIN``: counts a last row sent without newline."""
        if self.error is None:
            try:
                self.finish()
            except RowRefused as exc:
                self.error = exc.message

    def _mask_pieces(self, pieces: list[Any]) -> bytes:
        rows = [p.data for p in pieces if p.kind == "row"]
        if not rows:
            return b"".join(p.data for p in pieces)
        new_rows = self._mask_rows(rows)
        if new_rows is rows:
            return b"".join(p.data for p in pieces)
        it = iter(new_rows)
        return b"".join(next(it) if p.kind == "row" else p.data for p in pieces)

    def _mask_rows(self, rows: list[bytes]) -> list[bytes]:
        opts = self._options
        if opts.format == "binary":
            assert self._rowmasker is not None
            rm = self._rowmasker
            if not self.wire_enabled:
                self._sample_binary(rows)
                self.row_count += len(rows)
                return rows
            out = rm.mask_rows(rows)
            self.row_count = rm.row_count
            return out
        csv = opts.format == "csv"
        decoded: list[list[str | None]] = []
        quoted: list[list[bool]] = []
        masking = self.wire_enabled and self._refusal is None and bool(self.active)
        room = max(self.sample_limit - len(self.sample), 0)
        try:
            for r in rows if masking else rows[:room]:
                if csv:
                    v, q = decode_csv_row(r, opts)
                    quoted.append(q)
                else:
                    v = decode_text_row(r, opts)
                if len(v) != self.ncols:
                    raise _malformed("COPY row (column count)")
                decoded.append(v)
        except UnicodeDecodeError:
            raise RowRefused("22021", f"COPY data is not valid {opts.encoding}") from None
        except CopyFormatError as exc:
            raise _malformed(f"COPY data ({exc})") from None
        out = rows
        if masking:
            assert self.masker is not None
            changed_rows: set[int] = set()
            for col in self.active:
                i = col.index
                idx = [r for r, v in enumerate(decoded) if v[i] is not None]
                if col.numbers is not None and col.action == _SCAN_NULL:
                    idx = [r for r in idx if len(decoded[r][i]) >= 6]  # type: ignore[arg-type]
                if not idx:
                    continue
                texts: list[str] = [decoded[r][i] for r in idx]  # type: ignore[misc]
                if col.action == _NULL:
                    self._findings.add(FIELD, col.location, len(idx))
                    changes: dict[int, str | None] = dict.fromkeys(range(len(idx)))
                elif col.action == _ARRAY:
                    delim = ";" if col.element == pgt.BOX else ","
                    try:
                        arrays = [pgt.parse_array_literal(t, delim) for t in texts]
                    except ValueError as exc:
                        raise _malformed(f'array in column "{col.name}" ({exc})') from None
                    changes = dict.fromkeys(_apply_arrays(col, arrays, self._findings))
                else:
                    changes = _apply(col, texts, self.masker, self._findings)
                for k, t in changes.items():
                    decoded[idx[k]][i] = t
                    changed_rows.add(idx[k])
            if changed_rows:
                out = list(rows)
                for r in changed_rows:
                    try:
                        if csv:
                            out[r] = encode_csv_row(decoded[r], opts, quoted[r])
                        else:
                            out[r] = encode_text_row(decoded[r], opts)
                    except UnicodeEncodeError:
                        raise RowRefused(
                            "22021", f"masked COPY row is not in {opts.encoding}"
                        ) from None
        for v in decoded[:room]:
            self.sample.append(
                [self._sample_value(col, x, False) for col, x in zip(self.columns, v, strict=False)]
            )
        self.row_count += len(rows)
        return out

    def _sample_binary(self, rows: list[bytes]) -> None:
        room = self.sample_limit - len(self.sample)
        for r in rows[: max(room, 0)]:
            try:
                fields = decode_binary_tuple(r, self.ncols)
            except CopyFormatError:
                continue
            self.sample.append(
                [
                    self._sample_value(col, f, True)
                    for col, f in zip(self.columns, fields, strict=False)
                ]
            )


class CopyInSampler:
    """Counts and samples the rows of a ``COPY ... FROM STDIN`` (client to server) for the
    record; nothing on the wire changes and it never raises on bad data (the server
    judges it): on malformed data it stops sampling and sets :attr:`error`. (A
    :class:`CopyMasker` without wire masker, fed with :meth:`CopyMasker.sample_in`.)

    Args:
        copy, columns, type_oids, encoding, record_masker, column_count, sample_limit:
            as for :class:`CopyMasker`.
    """

    def __init__(
        self,
        copy: Any,
        columns: Sequence[str | frozenset[str]] | None = None,
        type_oids: Sequence[int] | None = None,
        *,
        encoding: str = "utf-8",
        record_masker: Masker | None = None,
        column_count: int | None = None,
        sample_limit: int = 20,
    ) -> None:
        self._copy = CopyMasker(
            copy,
            columns,
            type_oids,
            None,
            encoding=encoding,
            record_masker=record_masker,
            column_count=column_count,
            sample_limit=sample_limit,
        )

    @property
    def row_count(self) -> int:
        """Rows seen (header line and ``\\.`` excluded)."""
        return self._copy.row_count

    @property
    def sample(self) -> list[list[str | None]]:
        """The first rows as (record-masked) text."""
        return self._copy.sample

    @property
    def error(self) -> str | None:
        """Why sampling stopped, or ``None``."""
        return self._copy.error

    def feed(self, data: bytes) -> None:
        """One CopyData payload from the client."""
        self._copy.sample_in(data)

    def finish(self) -> None:
        """CopyDone from the client."""
        self._copy.finish_in()

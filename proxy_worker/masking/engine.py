"""The masking engine: rules -> compiled :class:`Masker` -> masked bodies.

Pure Python (no Django, no mitmproxy). Build one :class:`Masker` per policy
snapshot (and target, direction, agent groups) and reuse it for every
request/response; it is immutable after construction apart from its
memo caches, and safe to share between threads. Streams need one
:class:`~proxy_worker.masking.sse.SSEStreamMasker` per flow
(:meth:`Masker.sse_stream`).

How it stays fast (``docs/benchmarks.md`` has the figures):

* every detector declares a *gate*, a cheap regex that matches inside or next
  to everything it can detect; the gates are compiled into one RE2 set
  (``google-re2``) that tells, in one pass over a string, which detectors can
  possibly match (Python :mod:`re` is the fallback when RE2 is missing);
* for a JSON body encoded as UTF-8, the gates run once over the raw body and
  only the string values that contain a gate match (plus values under
  secret-like keys) are scanned while the parsed document is walked;
* in long strings each detector only reads windows around its own gate
  matches (at least its ``max_span`` wide on each side);
* validation is done with precompiled metadata (phone numbering plans, IBAN
  registry) rather than the libraries' general parsers.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote_plus, unquote_plus

from . import accel as _accel
from . import strategies as _st
from .detectors import (
    CREDIT_CARD,
    DEFAULT_PHONE_REGIONS,
    ENTITY_TYPES,
    IP_ADDRESS,
    PHONE,
    CreditCardDetector,
    CustomRegexDetector,
    DenyListDetector,
    Detection,
    Detector,
    EmailDetector,
    IbanDetector,
    IpAddressDetector,
    PhoneDetector,
    UsItinDetector,
    UsSsnDetector,
    custom_entity_type,
    make_detector,
)
from .errors import BinaryBodyError, BodyTooLargeError, MaskingConfigError, MaskingError
from .jsonnav import DupKeys as _DupKeys
from .jsonnav import InvalidJSON, Navigator, NeedsFullWalk, char_offsets, splice

try:  # google-re2: linear-time multi-pattern matching (optional, much faster gates)
    import re2 as _re2
except ImportError:  # pragma: no cover - exercised only without google-re2
    _re2 = None

if TYPE_CHECKING:
    from .sse import SSEStreamMasker

__all__ = [
    "BINARY_BODY_POLICIES",
    "DEFAULT_MAX_BODY_BYTES",
    "FIELD",
    "HANDLERS",
    "Finding",
    "MaskResult",
    "Masker",
    "MaskingRule",
    "compile_json_path",
    "parse_content_type",
    "summarise",
    "validate_rule",
]

#: Entity type of findings produced by field-name and JSONPath rules.
FIELD = "FIELD"

#: Values of :attr:`MaskResult.handler`.
HANDLERS: tuple[str, ...] = ("json", "ndjson", "form", "text", "sse", "empty", "binary")

#: ``binary_bodies`` settings of a target: refuse (fail closed) or pass unmasked.
BINARY_BODY_POLICIES: tuple[str, ...] = ("refuse", "pass")

#: Default limit of the body size the engine masks (10 MiB).
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
_CACHE_MAX_CHARS = 128
_CACHE_SIZE = 8192
#: Strings longer than this are scanned in windows around gate matches.
_WINDOW_MIN_CHARS = 4096
#: ASCII strings longer than this keep their blanked view as bytes while scanned.
_BLANK_MIN_CHARS = 256
_WINDOW_CONTEXT = 64


@dataclass(frozen=True, slots=True)
class MaskingRule:
    """One masking rule of a policy (a plain value object; the control plane
    maps its model rows to these).

    Attributes:
        id: database id (informational).
        name: display name; also names the custom pattern's and the deny
            list's entity type (:func:`~proxy_worker.masking.detectors.custom_entity_type`).
        entity_types: built-in detectors this rule turns on, a subset of
            :data:`~proxy_worker.masking.detectors.ENTITY_TYPES`; empty = none.
        field_names: JSON keys / form / query field names whose whole value is
            masked, compared case-insensitively (``str.casefold``).
        strategy: ``redact`` | ``hash`` | ``partial`` | ``drop``.
        custom_pattern: optional extra regex (Python :mod:`re`).
        json_paths: JSONPath expressions (``$.customers[*].address``,
            ``$..email``, filters ``[?(@.kind == "card")]``; the syntax of
            ``jsonpath-ng``'s extended parser) whose matches in JSON bodies
            are masked whole like field names.
        deny_list: words or phrases always masked wherever they occur
            (:class:`~proxy_worker.masking.detectors.DenyListDetector`).
    """

    id: int
    name: str
    entity_types: tuple[str, ...] = ()
    field_names: tuple[str, ...] = ()
    strategy: str = "redact"
    custom_pattern: str | None = None
    json_paths: tuple[str, ...] = ()
    deny_list: tuple[str, ...] = ()


class Finding(NamedTuple):
    """Something was masked. Never carries the value itself. (A named tuple: the C
    accelerator builds thousands per dense body.)

    Attributes:
        entity_type: ``"EMAIL"``, …, a custom type, or ``"FIELD"`` for a
            field-name or JSONPath rule.
        location: where: a JSON path (``$.rows[0][2]``, ``$.items[3].email``,
            ``$["odd key"]``), ``query:<name>``, ``form:<name>``,
            ``text@<char offset>``, ``ndjson[<line>]$…`` / ``ndjson[<line>]@<offset>``,
            ``sse[<event index>]$…`` / ``sse[<event index>]@<offset>``.
            Names and keys in locations are themselves masked.
    """

    entity_type: str
    location: str


def summarise(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    """Group findings by ``(entity_type, location)`` in first-seen order.

    Returns:
        JSON-serialisable ``[{"type": "EMAIL", "location": "$.rows[0][2]", "count": 2}, …]``.
    """
    counts: dict[tuple[str, str], int] = {}
    for f in findings:
        k = (f.entity_type, f.location)
        counts[k] = counts.get(k, 0) + 1
    return [{"type": t, "location": loc, "count": c} for (t, loc), c in counts.items()]


@dataclass(slots=True)
class MaskResult:
    """Result of :meth:`Masker.mask_body`.

    Attributes:
        body: the masked body (the original object when nothing changed).
        findings: what was masked, see :class:`Finding`.
        handler: how the body was treated, one of :data:`HANDLERS`
            (``"binary"``: not text, passed unmasked because the masker is
            disabled or its ``binary_bodies`` is ``"pass"``).
    """

    body: bytes
    findings: list[Finding] = field(default_factory=list)
    handler: str = "empty"


@functools.lru_cache(maxsize=512)
def compile_json_path(expr: str) -> Any:
    """Parse a JSONPath expression with ``jsonpath-ng`` (extended syntax).

    Raises:
        MaskingConfigError: the expression does not parse.
    """
    from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
    from jsonpath_ng.ext import parse

    try:
        return parse(expr)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
        raise MaskingConfigError(f"invalid JSONPath {expr!r}: {exc}") from None


def validate_rule(rule: MaskingRule) -> None:
    """Check a rule the way :class:`Masker` will (for control-plane forms).

    Raises:
        MaskingConfigError: unknown strategy or entity type, a custom
            pattern that does not compile, a JSONPath that does not parse,
            a deny list entry that is too long.
    """
    if rule.strategy not in _st.STRATEGIES:
        raise MaskingConfigError(f"rule {rule.name!r}: unknown strategy {rule.strategy!r}")
    for t in rule.entity_types:
        if t not in ENTITY_TYPES:
            raise MaskingConfigError(f"rule {rule.name!r}: unknown entity type {t!r}")
    if rule.custom_pattern:
        CustomRegexDetector(custom_entity_type(rule.name), rule.custom_pattern)
    for p in rule.json_paths:
        compile_json_path(p)
    if any(w.strip() for w in rule.deny_list):
        DenyListDetector(custom_entity_type(rule.name), rule.deny_list)


# --------------------------------------------------------------------------- content types

_JSON_TYPES = frozenset({"application/json", "text/json", "application/x-json"})
_NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
    }
)
_TEXT_TYPES = frozenset(
    {
        "application/xml",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/graphql",
        "application/sql",
        "application/yaml",
        "application/x-yaml",
        "application/csv",
        "application/xhtml",
    }
)
_BINARY_PREFIXES = ("image/", "audio/", "video/", "font/")
_BINARY_TYPES = frozenset(
    {
        "application/octet-stream",
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-tar",
        "application/x-protobuf",
        "application/protobuf",
        "application/grpc",
        "application/vnd.google.protobuf",
        "application/wasm",
    }
)


def parse_content_type(value: str | None) -> tuple[str | None, dict[str, str]]:
    """Split a Content-Type header (RFC 9110 §8.3).

    Returns:
        ``(media_type, params)``: lower-cased ``type/subtype`` (``None`` when
        absent or empty) and parameters with lower-cased names and unquoted
        values, e.g. ``("text/plain", {"charset": "ISO-8859-1"})``.
    """
    if not value:
        return None, {}
    parts = value.split(";")
    media = parts[0].strip().lower() or None
    params: dict[str, str] = {}
    for p in parts[1:]:
        k, sep, v = p.partition("=")
        if not sep:
            continue
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1].replace('\\"', '"')
        params[k.strip().lower()] = v
    return media, params


def _classify(media: str | None) -> str:
    if media is None:
        return "unknown"
    if media in _JSON_TYPES or media.endswith("+json"):
        return "json"
    if media in _NDJSON_TYPES:
        return "ndjson"
    if media == "text/event-stream":
        return "sse"
    if media == "application/x-www-form-urlencoded":
        return "form"
    if media.startswith("text/") or media in _TEXT_TYPES or media.endswith("+xml"):
        return "text"
    if media.startswith(_BINARY_PREFIXES) or media in _BINARY_TYPES:
        return "binary"
    return "unknown"


# --------------------------------------------------------------------------- helpers

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BOM = "\ufeff"
_PHONE_KEY_RE = re.compile(
    r"phone|mobile|msisdn|(?<![a-z])(?:tel|fax|cell)(?![a-z])", re.IGNORECASE
)
# JSON escapes that could hide a gate character (printable ASCII, Latin-1
# punctuation such as NBSP, Unicode dashes, full-width forms, Arabic-Indic and
# Devanagari digits): a body containing one is scanned string by string.
_UNSAFE_ESCAPE_RE = re.compile(
    rb"\\u(?:00[2-9a-fA-F][0-9a-fA-F]|20[0-6][0-9a-fA-F]|[fF][fF][0-9a-fA-F]{2}"
    rb"|06[6-9a-fA-F][0-9a-fA-F]|09[6-9a-fA-F][0-9a-fA-F])"
)
_SIMPLE_ESCAPE_RE = re.compile(rb'\\(["\\/bfnrt])')
# UTF-8 of the non-ASCII characters that Python's case-insensitive matching folds to
# ASCII letters (U+0130 İ, U+0131 ı, U+017F ſ, U+212A Kelvin sign): in a key they could
# make a secret-like key (``paſſword``) that the Latin-1 body gates do not see.
_FOLDS_TO_ASCII_RE = re.compile(rb"\xc4[\xb0\xb1]|\xc5\xbf|\xe2\x84\xaa")
_ESCAPE_VIEW = {
    b'"': b'\\"',
    b"\\": b"\\\\",
    b"/": b"//",
    b"b": b"  ",
    b"f": b"  ",
    b"n": b"\n\n",
    b"r": b"\r\r",
    b"t": b"\t\t",
}


def _escape_view(m: re.Match[bytes]) -> bytes:
    return _ESCAPE_VIEW[m.group(1)]


def _simple_escape_view(body: bytes) -> bytes:
    """``body`` with simple JSON escapes replaced by same-length stand-ins that show
    what they decode to (``_ESCAPE_VIEW``; ``\\u`` escapes kept), in C when the
    accelerator is built."""
    if _accel.MODULE is not None:
        return _accel.MODULE.escape_view(body)
    return _SIMPLE_ESCAPE_RE.sub(_escape_view, body)


def _quote_escaped(body: bytes, q: int) -> bool:
    """The ``"`` at ``body[q]`` is preceded by an odd number of backslashes."""
    n = 0
    while q - n - 1 >= 0 and body[q - n - 1] == 0x5C:
        n += 1
    return n % 2 == 1


def _key_path(path: str, key: str) -> str:
    return path + _key_suffix(key)


@functools.lru_cache(maxsize=4096)
def _key_suffix(key: str) -> str:
    """``.key`` or ``["odd key"]``: how a key extends a JSON path (memoised)."""
    if _IDENT_RE.match(key):
        return f".{key}"
    return f"[{json.dumps(key, ensure_ascii=False)}]"


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dumps(value: Any) -> str:
    """Compact JSON, non-ASCII kept (``json.dumps(value, ensure_ascii=False,
    separators=(",", ":"))`` with the encoder built once)."""
    return _ENCODER.encode(value)


def _json_text(value: Any) -> str:
    """:func:`_dumps`, or ASCII-escaped JSON when ``value`` holds a lone surrogate
    (which UTF-8 cannot carry)."""
    text = _dumps(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"))
    return text


def _datum_path(match: Any) -> tuple[Any, ...]:
    """Key/index tuple of a ``jsonpath-ng`` match (``()`` for the root)."""
    parts: list[Any] = []
    d = match
    while d is not None:
        p = d.path
        fields = getattr(p, "fields", None)
        indices = getattr(p, "indices", None)
        if fields is not None and len(fields) == 1:
            parts.append(fields[0])
        elif indices is not None and len(indices) == 1:
            parts.append(indices[0])
        elif fields is not None or indices is not None:
            raise MaskingError("unsupported JSONPath match")
        d = d.context
    return tuple(reversed(parts))


def _body_gate(gate: str) -> str:
    """A detector gate rewritten for RE2's Latin-1 mode over UTF-8 bytes.

    ASCII patterns are kept (each UTF-8 byte of a non-ASCII character is then
    a non-ASCII Latin-1 character, which classes like ``[^0-9A-Za-z]`` match,
    so matches are never lost). The few non-ASCII characters used in built-in
    gates are spelled as their UTF-8 byte sequences; any other non-ASCII gate
    (a deny-list word in another script) becomes "any non-ASCII byte", which
    is looser and therefore safe.
    """
    if gate.isascii():
        return gate
    g = gate
    for src, dst in _BODY_GATE_REWRITES:
        g = g.replace(src, dst)
    return g if g.isascii() else r"[\x80-\xff]"


# Rewrites of the non-ASCII parts of the phone gate (see phone.PhoneDetector.gate).
_BODY_GATE_REWRITES: tuple[tuple[str, str], ...] = (
    (
        "[ \t().\\-/\u00a0\u2010-\u2015]*",
        "(?:[ \t().\\-/]|\\xc2\\xa0|\\xe2\\x80[\\x90-\\x95])*",
    ),
    (
        "[\uff10-\uff19\u0660-\u0669\u06f0-\u06f9\u0966-\u096f]",
        "\\xef\\xbc[\\x90-\\x99]|\\xd9[\\xa0-\\xa9]|\\xdb[\\xb0-\\xb9]|\\xe0\\xa5[\\xa6-\\xaf]",
    ),
)


class _Prefilter:
    """The detectors' gates, compiled together (shared between maskers with
    the same gates: see :func:`_prefilter`).

    ``select(text)`` returns the indices (into the gate list), ascending, i.e.
    in detector priority order, of the gates that match somewhere in
    ``text``; ``body_hits(data)`` iterates ``(start, end)`` of gate matches
    in UTF-8 bytes (RE2 Latin-1 mode, see :func:`_body_gate`);
    ``spans(i, text)`` the matches of gate ``i``.
    """

    def __init__(
        self, gates: tuple[str | None, ...], body_gates: tuple[str | None, ...] = ()
    ) -> None:
        self.gated = [i for i, g in enumerate(gates) if g is not None]
        srcs = [g for g in gates if g is not None]
        bsrcs = [
            (body_gates[i] if i < len(body_gates) and body_gates[i] else None)
            or _body_gate(gates[i])  # type: ignore[arg-type]
            for i in self.gated
        ]
        self._py = {i: re.compile(gates[i]) for i in self.gated}  # type: ignore[arg-type]
        self._set = None
        self._set_match = None
        self._any_bytes = None
        self._any_raw = None
        self._any_set_match = None
        self._one_raw: dict[int, Any] = {}
        self._one: dict[int, Any] = {}
        if not srcs or _re2 is None:
            return
        opts = _re2.Options()
        opts.max_mem = 256 << 20
        s = _re2.Set.SearchSet(opts)
        for src in srcs:
            s.Add(src)
        s.Compile()
        self._set = s
        # The C++ set's Match on UTF-8 bytes (google-re2's wrapper only encodes and
        # adds a Python call per string; ``select`` runs once per scanned string).
        raw_set = getattr(s, "_set", None)
        self._set_match = raw_set.Match if raw_set is not None else None
        lopts = _re2.Options()
        lopts.max_mem = 256 << 20
        lopts.encoding = _re2.Options.Encoding.LATIN1
        union = "|".join(f"(?:{g})" for g in bsrcs)
        self._any_bytes = _re2.compile(union.encode("ascii"), lopts)
        self._any_raw = _re2_raw_match(self._any_bytes)
        # "Any match at all?" as a set: the DFA alone, without the submatch engines
        # RE2 picks for a positional match on short texts (about twice as fast).
        any_set = _re2.Set.SearchSet(lopts)
        any_set.Add(union)
        any_set.Compile()
        self._any_set_match = getattr(getattr(any_set, "_set", None), "Match", None)
        self._one = {i: _re2.compile(gates[i], opts) for i in self.gated}  # type: ignore[arg-type]
        self._one_raw = {i: _re2_raw_match(p) for i, p in self._one.items()}

    def select(self, text: str) -> list[int]:
        if not self.gated:
            return []
        if self._set_match is not None:
            hit = self._set_match(text.encode("utf-8", "surrogatepass"))  # any order
            return sorted(self.gated[k] for k in hit) if hit else []
        if self._set is not None:  # pragma: no cover - another google-re2 wrapper layout
            hit = self._set.Match(text)
            return sorted(self.gated[k] for k in hit) if hit else []
        return [i for i in self.gated if self._py[i].search(text)]  # pragma: no cover

    def body_hits(self, data: bytes) -> Iterable[tuple[int, int]]:
        if self._any_bytes is None:  # pragma: no cover - needs RE2
            return ()
        if self._any_set_match is not None and not self._any_set_match(data):
            return ()
        raw = self._any_raw
        if raw is None:  # pragma: no cover - another google-re2 wrapper layout
            return (m.span() for m in self._any_bytes.finditer(data))
        return _raw_finditer(raw, data)

    @property
    def body_prefilter(self) -> bool:
        """True when :meth:`body_hits` is available (RE2 installed)."""
        return self._any_bytes is not None

    def search(self, i: int, text: str) -> bool:
        """Gate ``i`` matches somewhere in ``text`` (Python :mod:`re`, for short texts)."""
        return self._py[i].search(text) is not None

    def spans(self, i: int, text: str) -> Iterable[tuple[int, int]]:
        raw = self._one_raw.get(i)
        if raw is not None and text.isascii():  # byte offsets are character offsets
            return _raw_finditer(raw, text.encode("ascii"))
        pat = self._one.get(i) or self._py[i]
        return (m.span() for m in pat.finditer(text))


def _re2_raw_match(compiled: Any) -> Any:
    """The C++ ``RE2.Match`` of a compiled google-re2 pattern, or ``None``.

    ``re2.finditer`` wraps every match in Python objects (about 4 µs each, most of the
    prefilter's time on PII-dense bodies); over bytes the raw call returns the same
    spans. Private to google-re2's wrapper (1.1): ``None`` when its layout differs.
    """
    raw = getattr(compiled, "_regexp", None)
    anchor = getattr(getattr(_re2, "_Anchor", None), "UNANCHORED", None)
    if raw is None or anchor is None or not hasattr(raw, "Match"):
        return None
    return functools.partial(raw.Match, anchor)


def _raw_finditer(match: Any, data: bytes) -> Iterable[tuple[int, int]]:
    """``(start, end)`` of successive non-overlapping matches in ``data`` (bytes), as
    ``finditer`` gives them (an empty match moves on by one byte)."""
    pos, end = 0, len(data)
    while pos <= end:
        s, e = match(data, pos, end)[0]
        if s < 0:
            return
        yield s, e
        pos = e if e > pos else pos + 1


@functools.lru_cache(maxsize=64)
def _prefilter(
    gates: tuple[str | None, ...], body_gates: tuple[str | None, ...] = ()
) -> _Prefilter:
    """Compiled gates, shared by maskers with the same detectors (RE2 builds
    its automata lazily and keeps them: sharing keeps them warm across policy
    snapshots). ``body_gates`` optionally override the raw-JSON form of a
    gate (see ``PhoneDetector.body_gate``)."""
    return _Prefilter(gates, body_gates)


def _merge(
    accepted: list[Detection], new: list[Detection], added: list[Detection] | None = None
) -> list[Detection]:
    """Linear merge: keep the earlier (higher-priority) detections, add the
    new ones that overlap nothing already accepted (also appended to ``added``)."""
    merged: list[Detection] = []
    i = 0
    n = len(accepted)
    for d in new:
        while i < n and accepted[i].end <= d.start:
            merged.append(accepted[i])
            i += 1
        if i < n and accepted[i].start < d.end:
            continue
        if merged and merged[-1].end > d.start:
            continue
        merged.append(d)
        if added is not None:
            added.append(d)
    merged.extend(accepted[i:])
    return merged


#: Digit counts of JSON integers worth scanning, per entity type.
_INT_LENGTHS: dict[str, set[int]] = {
    CREDIT_CARD: set(range(12, 20)),
    "US_SSN": {9},
    "US_ITIN": {9},
    "CA_SIN": {9},
    "UK_NHS": {10},
    "BR_CPF": {11},
    "DE_TAX_ID": {11},
    "IN_AADHAAR": {12},
    "FR_NIR": {15},
}


#: Detector classes with a C finder (exact class: a subclass may behave differently).
_ACCEL_CLASSES = frozenset(
    {
        EmailDetector,
        IbanDetector,
        CreditCardDetector,
        UsSsnDetector,
        UsItinDetector,
        IpAddressDetector,
        PhoneDetector,
    }
)

#: One probe per C finder: text and the detection the Python detector makes in it.
_ACCEL_PROBES: dict[str, str] = {
    "EMAIL": "mail jane.doe@example.com now",
    "IBAN": "iban GB82 WEST 1234 5698 7654 32.",
    "CREDIT_CARD": "card 4111-1111-1111-1111 ok",
    "US_SSN": "ssn 123-45-6789 ok",
    "US_ITIN": "itin 912-70-1234 ok",
    "IP_ADDRESS": "from 192.168.10.1 ok",
    "PHONE": "call +1 650-253-0000 now",
}


@functools.cache
def _accel_ready() -> frozenset[str]:
    """Entity types whose C finder works and agrees with the Python detector on a
    probe (a finder the build could not prepare, e.g. IBAN without the registry,
    raises NotImplementedError and stays in Python)."""
    mod = _accel.MODULE
    if mod is None:
        return frozenset()
    ready = set()
    for t, text in _ACCEL_PROBES.items():
        det = make_detector(t)
        want = [tuple(d) for d in det.find(text)]
        try:
            got = mod.find(t, text, detector=det if t == PHONE else None)
        except NotImplementedError:
            continue
        if got == want and want:
            ready.add(t)
    return frozenset(ready)


def _finder(det: Detector) -> Callable[[str, str], Iterable[Detection]]:
    """``det.find``, or its C finder for ASCII text when the accelerator has one
    (exact ports: same detections; see ``_accel/detectors.c``, ``_accel/phone.c``).
    The C IP finder reads IPv4 only, so text with two colons (where the Python
    detector looks for IPv6) stays in Python; so does a non-ASCII hint."""
    mod = _accel.MODULE
    t = det.entity_type
    py = det.find
    if mod is None or type(det) not in _ACCEL_CLASSES or t not in _accel_ready():
        return py
    find = mod.find
    if t == PHONE:
        mod.prepare(det)

        def phone(text: str, hint: str = "") -> Iterable[Detection]:
            return find(t, text, "", det, Detection) if text.isascii() else py(text, hint)

        return phone
    if t == IP_ADDRESS:

        def ip(text: str, hint: str = "") -> Iterable[Detection]:
            if text.isascii() and text.count(":") < 2:
                return find(t, text, "", None, Detection)
            return py(text, hint)

        return ip
    if det.uses_hint:

        def hinted(text: str, hint: str = "") -> Iterable[Detection]:
            if text.isascii() and hint.isascii():
                return find(t, text, hint, None, Detection)
            return py(text, hint)

        return hinted

    def plain(text: str, hint: str = "") -> Iterable[Detection]:
        return find(t, text, "", None, Detection) if text.isascii() else py(text, hint)

    return plain


def _c_types(detectors: Sequence[Detector]) -> tuple[tuple[int, ...] | None, int]:
    """Per detector, its C finder's type number (-1: none), or ``None`` without the
    accelerator; and the index of the IP detector (-1: none)."""
    mod = _accel.MODULE
    if mod is None:
        return None, -1
    ready = _accel_ready()
    types = tuple(
        mod.ENTITY_TYPES.index(d.entity_type)
        if type(d) in _ACCEL_CLASSES and d.entity_type in ready
        else -1
        for d in detectors
    )
    ip = next((i for i, d in enumerate(detectors) if type(d) is IpAddressDetector), -1)
    return (types if any(t >= 0 for t in types) else None), ip


@functools.lru_cache(maxsize=64)
def _key_memo(detectors: tuple[Any, ...]) -> dict[bytes, tuple[int, bytes, bytes]]:
    """The C driver's memo of object keys (``Masker._accel_key_info``), shared by the
    maskers with the same detectors (``detectors`` describes them): what a key means
    depends only on the detectors, and keys repeat across policy snapshots."""
    return {}


@dataclass(frozen=True, slots=True)
class _AccelPlan:
    """A masker's arguments of ``_accel.mask_json`` (see ``_accel/driver.c``) and
    the prefilter of the gates of its detectors without a C finder."""

    plan: tuple[Any, ...]
    prefilter: _Prefilter | None


class _Walk:
    """One walk over a parsed JSON document (see :meth:`Masker.mask_json_value`).

    ``parts`` is the tuple of (masked) keys and indices leading to a node;
    its JSONPath string is only formatted when a finding is recorded.
    ``tp`` is the tuple of *original* keys, kept only for JSONPath rules.
    """

    __slots__ = ("fields", "findings", "flagged", "m", "prefix", "targets")

    def __init__(
        self,
        masker: Masker,
        prefix: str,
        findings: list[Finding],
        flagged: set[str] | None,
        targets: dict[tuple[Any, ...], str] | None,
    ) -> None:
        self.m = masker
        self.prefix = prefix
        self.findings = findings
        self.flagged = flagged
        self.targets = targets
        self.fields = masker._fields

    def loc(self, parts: tuple[Any, ...]) -> str:
        out = self.prefix
        for p in parts:
            out = f"{out}[{p}]" if type(p) is int else out + _key_suffix(p)
        return out

    def string(self, value: str, parts: tuple[Any, ...], hint: str) -> str:
        flagged = self.flagged
        m = self.m
        if flagged is not None and value not in flagged and not m._hint_forces_scan(hint):
            return value
        masked, dets = m._mask_str(value, hint)
        if dets:
            loc = self.loc(parts)
            for d in dets:
                self.findings.append(Finding(d.entity_type, loc))
        return masked

    def integer(self, value: int, parts: tuple[Any, ...], hint: str) -> Any:
        new, dets = self.m._mask_int(value, hint)
        if dets:
            loc = self.loc(parts)
            for d in dets:
                self.findings.append(Finding(d.entity_type, loc))
        return new

    def value(self, value: Any, parts: tuple[Any, ...], tp: tuple[Any, ...], hint: str) -> Any:
        t = type(value)
        if t is str:
            return self.string(value, parts, hint)
        if t is dict:
            return self.obj(value, parts, tp)
        if t is list:
            return self.array(value, parts, tp, hint)
        if t is int:
            return self.integer(value, parts, hint)
        if isinstance(value, str):
            return self.string(value, parts, hint)
        if isinstance(value, dict):
            return self.obj(value, parts, tp)
        if isinstance(value, list):
            return self.array(value, parts, tp, hint)
        if isinstance(value, int) and not isinstance(value, bool):
            return self.integer(value, parts, hint)
        return value

    def array(
        self, value: list[Any], parts: tuple[Any, ...], tp: tuple[Any, ...], hint: str
    ) -> Any:
        targets = self.targets
        flagged = self.flagged
        new_items = None
        for i, item in enumerate(value):
            t = type(item)
            if (
                targets is None
                and flagged is not None
                and t is str
                and item not in flagged
                and not self.m._hint_forces_scan(hint)
            ):
                continue  # the common case: nothing to look at
            if targets is not None and (ctp := (*tp, i)) in targets:
                self.findings.append(Finding(FIELD, self.loc((*parts, i))))
                new = _st.field_placeholder(targets[ctp], item, self.m._key)
            elif t is str:
                new = self.string(item, (*parts, i), hint)
            else:
                new = self.value(item, (*parts, i), (*tp, i) if targets is not None else tp, hint)
            if new is not item:
                if new_items is None:
                    new_items = list(value)
                new_items[i] = new
        return value if new_items is None else new_items

    def obj(self, value: dict[Any, Any], parts: tuple[Any, ...], tp: tuple[Any, ...]) -> Any:
        m = self.m
        flagged = self.flagged
        fields = self.fields
        targets = self.targets
        hinted = bool(m._hinted)
        simple = targets is None and not fields and flagged is not None
        out: dict[Any, Any] = {}
        changed = False
        for k, v in value.items():
            if simple and k not in flagged and k not in out:
                # Fast path: an unflagged key, no field or path rules.
                t = type(v)
                if t is str:
                    if v in flagged or (hinted and m._hint_forces_scan(k)):
                        nv = self.string(v, (*parts, k), k)
                        if nv is not v:
                            changed = True
                        out[k] = nv
                    else:
                        out[k] = v
                    continue
                if t is dict:
                    nv = self.obj(v, (*parts, k), tp)
                elif t is list:
                    nv = self.array(v, (*parts, k), tp, k)
                elif t is int:
                    nv = self.integer(v, (*parts, k), k)
                else:
                    nv = self.value(v, (*parts, k), tp, k)
                if nv is not v:
                    changed = True
                out[k] = nv
                continue
            if isinstance(k, str):
                if flagged is not None and k not in flagged:
                    new_k, kdets = k, []
                else:
                    new_k, kdets = m._mask_str(k)
                fs = fields.get(k.casefold()) if fields else None
            else:
                new_k, kdets, fs = k, [], None
            if new_k in out:
                n = 2
                while f"{new_k}~{n}" in out:
                    n += 1
                new_k = f"{new_k}~{n}"
            cparts = (*parts, new_k)
            if kdets:
                loc = self.loc(cparts)
                for d in kdets:
                    self.findings.append(Finding(d.entity_type, loc))
            ctp = tp
            if targets is not None:
                ctp = (*tp, k)
                if ctp in targets:
                    fs = targets[ctp] if fs is None else _st.stronger(fs, targets[ctp])
            if fs is not None:
                self.findings.append(Finding(FIELD, self.loc(cparts)))
                changed = True
                if fs == _st.DROP:
                    continue
                out[new_k] = _st.field_placeholder(fs, v, m._key)
                continue
            new_v = self.value(v, cparts, ctp, k if isinstance(k, str) else "")
            changed = changed or new_v is not v or new_k is not k
            out[new_k] = new_v
        return out if changed else value


# --------------------------------------------------------------------------- masker


class Masker:
    """Compiled set of rules. Build once (on each policy snapshot), reuse for every body.

    Args:
        rules: the policy's masking rules. When several rules cover the same
            entity type, field name or JSONPath, the strategy revealing least
            wins (``drop`` > ``redact`` > ``hash`` > ``partial``).
        hash_key: HMAC key for the ``hash`` strategy (must be non-empty when a
            rule uses ``hash``).
        phone_regions: ISO 3166-1 alpha-2 regions for national phone formats
            (default :data:`~proxy_worker.masking.phone.DEFAULT_PHONE_REGIONS`);
            ``+`` numbers are always recognised.
        max_body_bytes: bodies (and single SSE events) larger than this raise
            :class:`BodyTooLargeError` (default 10 MiB).
        binary_bodies: ``"refuse"`` (default): binary or undecodable bodies
            raise :class:`BinaryBodyError`; ``"pass"``: they are returned
            unchanged with handler ``"binary"`` (the target's setting).

    Raises:
        MaskingConfigError: see :func:`validate_rule`; also empty ``hash_key``
            with a hash rule, unknown phone region, unknown ``binary_bodies``.

    Detector priority (a later detector never masks inside an earlier match):
    the order of :data:`~proxy_worker.masking.detectors.ENTITY_TYPES`, with
    custom patterns and deny lists (rule order) just before PHONE.
    """

    def __init__(
        self,
        rules: Sequence[MaskingRule],
        *,
        hash_key: bytes,
        phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        binary_bodies: str = "refuse",
    ) -> None:
        if not isinstance(hash_key, bytes | bytearray):
            raise MaskingConfigError("hash_key must be bytes")
        if binary_bodies not in BINARY_BODY_POLICIES:
            raise MaskingConfigError(f"unknown binary_bodies setting {binary_bodies!r}")
        self._key = bytes(hash_key)
        self.max_body_bytes = int(max_body_bytes)
        self.binary_bodies = binary_bodies
        self._strategy: dict[str, str] = {}
        self._fields: dict[str, str] = {}
        self._paths: dict[str, str] = {}
        extra: list[Detector] = []
        uses_hash = False
        for rule in rules:
            validate_rule(rule)
            uses_hash = uses_hash or rule.strategy == _st.HASH
            for t in rule.entity_types:
                self._strategy[t] = _st.stronger(
                    self._strategy.get(t, rule.strategy), rule.strategy
                )
            for name in rule.field_names:
                k = name.casefold()
                self._fields[k] = _st.stronger(self._fields.get(k, rule.strategy), rule.strategy)
            for p in rule.json_paths:
                self._paths[p] = _st.stronger(self._paths.get(p, rule.strategy), rule.strategy)
            own = custom_entity_type(rule.name)
            if rule.custom_pattern or any(w.strip() for w in rule.deny_list):
                self._strategy[own] = _st.stronger(
                    self._strategy.get(own, rule.strategy), rule.strategy
                )
            if rule.custom_pattern:
                extra.append(CustomRegexDetector(own, rule.custom_pattern))
            if any(w.strip() for w in rule.deny_list):
                extra.append(DenyListDetector(own, rule.deny_list))
        if uses_hash and not self._key:
            raise MaskingConfigError("a rule uses the hash strategy but hash_key is empty")
        detectors: list[Detector] = []
        for t in ENTITY_TYPES:
            if t == PHONE:
                detectors += extra
            if t in self._strategy:
                detectors.append(make_detector(t, phone_regions=phone_regions))
        if PHONE not in self._strategy:
            detectors += extra
        self._detectors: tuple[Detector, ...] = tuple(detectors)
        self._phone_idx = next(
            (i for i, d in enumerate(detectors) if d.entity_type == PHONE and d not in extra), -1
        )
        self._pf = _prefilter(
            tuple(d.gate for d in detectors),
            tuple(getattr(d, "body_gate", None) for d in detectors),
        )
        self._always = tuple(i for i, d in enumerate(detectors) if d.gate is None)
        self._hinted = tuple(
            (i, d.hint_re)  # type: ignore[attr-defined]
            for i, d in enumerate(detectors)
            if getattr(d, "hint_re", None) is not None
        )
        self._uses_hint = any(d.uses_hint for d in detectors)
        # Integers in JSON are scanned only when their digit count fits a detector.
        lengths: set[int] = set()
        for d in detectors:
            lengths |= _INT_LENGTHS.get(d.entity_type, set())
        self._int_any = bool(self._always)
        self._int_lengths = frozenset(lengths)
        self._hint_memo: dict[str, tuple[int, ...]] = {}
        self._scan_small = functools.lru_cache(maxsize=_CACHE_SIZE)(self._scan_tuple)
        self._mask_small = functools.lru_cache(maxsize=_CACHE_SIZE)(self._mask_tuple)
        self._json_paths = tuple((compile_json_path(p), s) for p, s in self._paths.items())
        self._enabled = bool(self._detectors or self._fields or self._paths)
        self._accel_keys = _key_memo(
            tuple(
                (
                    type(d).__qualname__,
                    d.entity_type,
                    d.gate,
                    getattr(d, "regions", None),
                    getattr(getattr(d, "pattern", None), "pattern", None),
                )
                for d in self._detectors
            )
        )
        self._accel = self._accel_plan()
        self._finders = tuple(_finder(d) for d in self._detectors)
        self._c_types, self._c_ip = _c_types(self._detectors)
        # Rendering and text findings in C (Masker.render, mask_text) when built.
        self._c_render = _accel.MODULE.render if _accel.MODULE is not None else None
        self._fixed = {
            t: f"[{t}]" for t, st in self._strategy.items() if st in (_st.REDACT, _st.DROP)
        }
        self._c_phone = next(
            (d for d in self._detectors if type(d) is PhoneDetector and d.entity_type == PHONE),
            None,
        )

    # ------------------------------------------------------------------ properties

    @property
    def enabled(self) -> bool:
        """False when the rules mask nothing: callers can skip all work."""
        return self._enabled

    @property
    def entity_types(self) -> tuple[str, ...]:
        """Entity types this masker detects, in priority order."""
        return tuple(d.entity_type for d in self._detectors)

    @property
    def detectors(self) -> tuple[Detector, ...]:
        """The detectors, in priority order."""
        return self._detectors

    @property
    def has_field_rules(self) -> bool:
        """Whether any rule masks fields by name (then result columns are looked up by
        every name they are known by; see ``proxy_worker.postgres.catalog``)."""
        return bool(self._fields)

    def field_strategy(self, name: str) -> str | None:
        """Strategy of the field-name rule matching ``name`` (case-insensitive), if any."""
        return self._fields.get(name.casefold()) if self._fields else None

    # ------------------------------------------------------------------ core

    def _hint_triggers(self, hint: str) -> tuple[int, ...]:
        """Indices of the detectors that must run on a value under key ``hint``
        (memoised per key: keys repeat in every record)."""
        if not hint or not self._hinted:
            return ()
        memo = self._hint_memo
        r = memo.get(hint)
        if r is None:
            r = tuple(i for i, rx in self._hinted if rx.fullmatch(hint))
            if len(memo) < 4096:
                memo[hint] = r
        return r

    def _hint_forces_scan(self, hint: str) -> bool:
        """A value under this key must be scanned whatever the prefilter says."""
        return bool(self._hint_triggers(hint))

    def _value_forces_walk(self, key: str) -> bool:
        """A value under ``key`` is masked even without a gate match of its own:
        secret-like keys (see :meth:`_hint_forces_scan`) and, with the phone
        detector on, phone-like keys, under which integers are phone numbers."""
        if self._hint_forces_scan(key):
            return True
        return self._phone_idx >= 0 and _PHONE_KEY_RE.search(key) is not None

    def scan(self, text: str, hint: str = "", *, phones: bool = True) -> list[Detection]:
        """Detect entities in ``text``.

        Results for short strings (<= 128 characters, e.g. ids, names and
        model fields repeated in every streamed chunk) are memoised per masker
        (LRU, 8192 entries; the cache keeps those recent strings in memory).

        Args:
            text: the string to scan.
            hint: context for keyword-gated detectors (the JSON key or form
                field name the string belongs to).
            phones: False skips the PHONE detector.

        Returns:
            Non-overlapping detections sorted by start offset.

        Raises:
            MaskingError: text so dense with digit groups that phone numbers
                cannot be checked within budget.
        """
        if not text or not self._detectors:
            return []
        if not self._uses_hint:
            hint = ""
        if len(text) <= _CACHE_MAX_CHARS:
            return list(self._scan_small(text, hint, phones))
        return self._scan_uncached(text, hint, phones)

    def _scan_tuple(self, text: str, hint: str, phones: bool) -> tuple[Detection, ...]:
        return tuple(self._scan_uncached(text, hint, phones))

    def _scan_uncached(self, text: str, hint: str, phones: bool = True) -> list[Detection]:
        sel = self._pf.select(text)
        if self._always or (hint and self._hinted):
            extra = (*self._always, *self._hint_triggers(hint))
            if extra:
                sel = sorted({*sel, *extra})
        if not sel:
            return []
        if self._c_types is not None and text.isascii() and hint.isascii():
            found = self._scan_c(text, hint, sel, phones)
            if found is not None:
                return found
        n = len(text)
        accepted: list[Detection] = []
        # Long ASCII text: the blanked view (see _view) is kept as bytes and updated
        # with each detector's new detections, instead of rebuilt from all of them.
        blank = bytearray(text, "ascii") if n > _BLANK_MIN_CHARS and text.isascii() else None
        for i in sel:
            if i == self._phone_idx and not phones:
                continue
            det = self._detectors[i]
            if n > _WINDOW_MIN_CHARS and det.max_span is not None and det.gate is not None:
                margin = det.max_span + _WINDOW_CONTEXT
                windows: list[list[int]] = []
                for s, e in self._pf.spans(i, text):
                    ws, we = max(0, s - margin), min(n, e + margin)
                    if windows and ws <= windows[-1][1]:
                        windows[-1][1] = max(windows[-1][1], we)
                    else:
                        windows.append([ws, we])
            else:
                windows = [[0, n]]
            if accepted and len(windows) == 1 and det.gate is not None:
                # Earlier detectors may have consumed what selected this one
                # (the digits of a card also select PHONE): re-check its gate
                # on the text with their matches blanked out.
                if blank is not None:
                    view = blank.decode("ascii")
                else:
                    view = self._view(text, 0, n, accepted)
                if not self._pf.search(i, view):
                    continue
            new: list[Detection] = []
            find = self._finders[i]
            for ws, we in windows:
                if blank is not None:
                    view = blank[ws:we].decode("ascii")
                else:
                    view = self._view(text, ws, we, accepted)
                if ws == 0:
                    new.extend(find(view, hint))
                else:
                    new.extend(
                        Detection(d.start + ws, d.end + ws, d.entity_type, d.normalised)
                        for d in find(view, hint)
                    )
            if not new:
                continue
            new.sort()
            if blank is None:
                accepted = _merge(accepted, new)
                continue
            added: list[Detection] = []
            accepted = _merge(accepted, new, added)
            for d in added:
                blank[d.start : d.end] = bytes(d.end - d.start)
        return accepted

    def _scan_c(self, text: str, hint: str, sel: list[int], phones: bool) -> list[Detection] | None:
        """:meth:`_scan_uncached` in C when every selected detector has a C finder
        (ASCII text and hint), else ``None``."""
        ctypes = self._c_types
        assert ctypes is not None and _accel.MODULE is not None
        types = []
        for i in sel:
            if i == self._phone_idx and not phones:
                continue
            t = ctypes[i]
            if t < 0 or (i == self._c_ip and text.count(":") >= 2):
                return None  # a detector without a C finder, or IPv6 to look for
            types.append(t)
        return _accel.MODULE.scan(text, tuple(types), hint, self._c_phone, Detection)

    @staticmethod
    def _view(text: str, ws: int, we: int, accepted: list[Detection]) -> str:
        """``text[ws:we]`` with accepted detections replaced by NULs, so that
        later detectors never combine characters of an earlier match with
        their surroundings (card digits + a phone number). Offsets are kept."""
        if not accepted:
            return text if (ws == 0 and we == len(text)) else text[ws:we]
        parts: list[str] = []
        pos = ws
        for d in accepted:
            if d.end <= ws:
                continue
            if d.start >= we:
                break
            a, b = max(d.start, ws), min(d.end, we)
            parts.append(text[pos:a])
            parts.append("\x00" * (b - a))
            pos = b
        parts.append(text[pos:we])
        return "".join(parts)

    def render(self, text: str, detections: Sequence[Detection]) -> str:
        """Replace ``detections`` (sorted, non-overlapping, within ``text``)
        with their placeholders. Returns ``text`` itself when there are none."""
        if not detections:
            return text
        if self._c_render is not None and type(detections) is list:
            return self._c_render(text, detections, self._fixed, self._accel_placeholder)
        parts: list[str] = []
        pos = 0
        for d in detections:
            parts.append(text[pos : d.start])
            parts.append(
                _st.placeholder(
                    d.entity_type,
                    self._strategy.get(d.entity_type, _st.REDACT),
                    text[d.start : d.end],
                    d.normalised,
                    self._key,
                )
            )
            pos = d.end
        parts.append(text[pos:])
        return "".join(parts)

    def _mask_str(self, text: str, hint: str = "") -> tuple[str, list[Detection]]:
        if text and len(text) <= _CACHE_MAX_CHARS and self._detectors:
            # Short strings repeat (the same e-mail in every record, ids, names): the
            # masked form is memoised with the detections. ``text`` itself comes back
            # when nothing was found, so callers can tell "unchanged" by identity.
            masked, dets = self._mask_small(text, hint if self._uses_hint else "")
            return (masked, list(dets)) if dets else (text, [])
        dets = self.scan(text, hint)
        return (self.render(text, dets), dets) if dets else (text, dets)

    def _mask_tuple(self, text: str, hint: str) -> tuple[str | None, tuple[Detection, ...]]:
        dets = self._scan_small(text, hint, True)
        return (self.render(text, dets) if dets else None), dets

    def _mask_int(self, value: int, hint: str) -> tuple[Any, list[Detection]]:
        """A JSON integer under key ``hint``: ``(value, [])`` or ``(placeholder
        string, detections)``. Bare integers are ids and timestamps far more often
        than personal data: only those of 6+ digits are looked at, as phone numbers
        only under a phone-like key, else only at a length a detector reads (9
        digits for an SSN, 12-19 for a card...)."""
        if -100000 < value < 100000 or not self._detectors:
            return value, []
        s = str(value)
        phones = bool(hint) and self._phone_idx >= 0 and _PHONE_KEY_RE.search(hint) is not None
        if len(s) < 6 or not (phones or self._int_any or len(s.lstrip("-")) in self._int_lengths):
            return value, []
        dets = self.scan(s, hint, phones=phones)
        if not dets:
            return value, []
        return self.render(s, dets), dets

    def mask_text(
        self, text: str, *, location: str = "text", hint: str = ""
    ) -> tuple[str, list[Finding]]:
        """Mask entities in free text.

        Args:
            text: input text.
            location: prefix for findings, which are ``f"{location}@{offset}"``
                with ``offset`` the character index of the match in ``text``.
            hint: keyword context (see :meth:`scan`).

        Returns:
            ``(masked_text, findings)``; ``masked_text is text`` when nothing matched.

        Raises:
            MaskingError: text so dense with digit groups that phone numbers
                cannot be checked within budget (see
                :class:`~proxy_worker.masking.phone.PhoneDetector`).
        """
        masked, dets = self._mask_str(text, hint)
        if self._c_render is not None and dets:
            return masked, _accel.MODULE.located(dets, location, Finding)  # type: ignore[union-attr]
        return masked, [Finding(d.entity_type, f"{location}@{d.start}") for d in dets]

    # ------------------------------------------------------------------ accelerator

    def _accel_plan(self) -> _AccelPlan | None:
        """How the C accelerator masks JSON bodies for this masker, or ``None`` when
        it cannot (not built, turned off, a detector without a gate, no C finder
        at all). Detectors without a C finder are handled by delegation: their
        gates run over the raw body and strings with a match are masked in Python."""
        mod = _accel.MODULE
        if mod is None or self._always or not self._detectors:
            return None
        ready = _accel_ready()
        c_types: list[int] = []
        py_gates: list[str] = []
        py_body_gates: list[str | None] = []
        phone = None
        for d in self._detectors:
            t = d.entity_type
            if type(d) in _ACCEL_CLASSES and t in ready:
                c_types.append(mod.ENTITY_TYPES.index(t))
                if t == PHONE:
                    phone = d
                ipv6 = getattr(d, "ipv6_gate", None)
                if ipv6:
                    py_gates.append(ipv6)
                    py_body_gates.append(None)
            else:
                py_gates.append(d.gate)  # type: ignore[arg-type] - no _always here
                py_body_gates.append(getattr(d, "body_gate", None))
        if not c_types:
            return None
        fixed = tuple(
            f"[{t}]".encode()
            if self._strategy.get(t, _st.REDACT) in (_st.REDACT, _st.DROP)
            else None
            for t in mod.ENTITY_TYPES
        )
        lengths = sum(1 << k for k in self._int_lengths if k < 64)
        plan = (
            tuple(c_types),
            fixed,
            self._accel_placeholder,
            self._accel_delegate_str,
            self._accel_delegate_int,
            self._accel_key_info,
            self._accel_keys,
            phone,
            lengths,
            _WINDOW_MIN_CHARS,
            Finding,
        )
        if phone is not None:
            mod.prepare(phone)  # compiled with the masker, not on its first body
        pf = _prefilter(tuple(py_gates), tuple(py_body_gates)) if py_gates else None
        if pf is not None and not pf.body_prefilter:
            return None  # no RE2: the Python-only gates cannot run over raw bytes
        return _AccelPlan(plan, pf)

    def _accel_placeholder(self, entity_type: str, raw: str, normalised: str) -> str:
        return _st.placeholder(
            entity_type, self._strategy.get(entity_type, _st.REDACT), raw, normalised, self._key
        )

    def _accel_delegate_str(self, token: bytes, hint: str) -> tuple[str, tuple[str, ...]] | None:
        """A JSON string token the C driver leaves to Python: masked as the walk
        masks a string (``_Walk.string``)."""
        value = json.loads(token) if b"\\" in token else token[1:-1].decode("utf-8")
        masked, dets = self._mask_str(value, hint)
        if not dets:
            return None
        return _json_text(masked), tuple(d.entity_type for d in dets)

    def _accel_delegate_int(self, token: str, hint: str) -> tuple[str, tuple[str, ...]] | None:
        """A JSON integer the C driver leaves to Python (``_Walk.integer``)."""
        new, dets = self._mask_int(int(token), hint)
        if not dets:
            return None
        return _json_text(new), tuple(d.entity_type for d in dets)

    def _accel_key_info(self, raw: bytes) -> tuple[int, bytes, bytes]:
        """What the C driver needs to know about an object key (raw JSON, no
        quotes): flags, its JSON-path suffix and the key as UTF-8 (the hint)."""
        mod = _accel.MODULE
        assert mod is not None
        key = json.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode("utf-8")
        try:
            hint = key.encode("utf-8")
            suffix = _key_suffix(key).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the Python path decides
            return mod.KEY_MASKED, b"", b""
        flags = 0
        if self._hint_forces_scan(key):
            flags |= mod.KEY_FORCE
        if self._phone_idx >= 0 and _PHONE_KEY_RE.search(key):
            flags |= mod.KEY_PHONE
        if self._mask_str(key)[1]:
            flags |= mod.KEY_MASKED
        if not key.isascii():
            flags |= mod.KEY_NONASCII
        return flags, suffix, hint

    def _accel_mask_json(self, body: bytes, root: str = "$") -> MaskResult | None:
        """Mask a UTF-8 JSON body with the C driver (``None``: take the Python path);
        finding locations start with ``root``."""
        accel = self._accel
        assert accel is not None and _accel.MODULE is not None
        events: list[int] = []
        if accel.prefilter is not None:
            view = body
            if b"\\" in body:
                view = _simple_escape_view(body)
            events = [s for s, _e in accel.prefilter.body_hits(view)]
        if len(self._accel_keys) > _CACHE_SIZE:
            self._accel_keys.clear()
        res = _accel.MODULE.mask_json(body, accel.plan, events, root)
        if res is None:
            return None
        out, findings = res
        return MaskResult(body if out is None else out, findings, "json")

    # ------------------------------------------------------------------ JSON

    def flag_strings(self, body: bytes) -> set[str] | None:
        """The string values (and keys) of a UTF-8 JSON document that contain
        a gate match, found with one pass of the prefilter over the raw bytes.

        JSON strings cannot contain an unescaped ``"`` and no gate matches
        ``"`` except as its first character (a string's opening quote), so
        every gate match lies inside one string token (or between tokens,
        which only adds harmless junk to the set). Simple escapes are
        mapped to same-length stand-ins before matching (``\\t`` to two tabs,
        ``\\/`` to ``//``…).

        Returns:
            The set of decoded strings to scan, or ``None`` when the raw body
            cannot be trusted to show every gate character (``\\u`` escapes of
            printable ASCII, NBSP, dashes, full-width forms or non-Latin
            digits), when a detector has no gate, or without RE2: the caller
            then scans every string.
        """
        return self._flag_strings(body)[0]

    def _flag_strings(
        self, body: bytes, events: list[int] | None = None
    ) -> tuple[set[str] | None, bool]:
        """:meth:`flag_strings`, and whether any gate matched anywhere in ``body``
        (strings, keys, numbers, between tokens); ``(None, True)`` when not trusted.

        ``events``, when given, receives the byte offset of every gate match
        (ascending): what
        :class:`~proxy_worker.masking.jsonnav.Navigator` needs to find the values
        worth masking."""
        if self._always or not self._pf.body_prefilter:
            return None, True
        view = body
        # No backslash anywhere: no escape to decode, no escaped quote to step over.
        # (Not ``view is body``: ``re.sub`` returns its input when nothing matched, as
        # in a body whose only escapes are \u escapes of CJK text.)
        plain = b"\\" not in body
        if not plain:
            if _UNSAFE_ESCAPE_RE.search(body):
                return None, True
            view = _simple_escape_view(body)
        flagged: set[str] = set()
        close = -1
        hit = False
        for hs, _he in self._pf.body_hits(view):
            hit = True
            if events is not None:
                events.append(hs)
            if hs < close:
                continue  # inside the string extracted last
            if body[hs] == 0x22 and (plain or not _quote_escaped(body, hs)):
                q = hs  # a gate that may start at a string's opening quote
                hs += 1
            else:
                q = body.rfind(b'"', 0, hs)
                while not plain and q > 0 and _quote_escaped(body, q):
                    q = body.rfind(b'"', 0, q)
            if q < 0:
                continue  # a bare top-level number
            c = body.find(b'"', hs)
            while not plain and c >= 0 and _quote_escaped(body, c):
                c = body.find(b'"', c + 1)
            if c < 0:
                return None, True
            raw = body[q + 1 : c]
            try:  # noqa: SIM105 - contextlib.suppress costs ~1 µs per hit here
                flagged.add(
                    raw.decode("utf-8")
                    if plain or b"\\" not in raw
                    else json.loads(b'"' + raw + b'"')
                )
            except ValueError:  # between two strings: structure, no value
                pass
            close = c
        return flagged, hit

    def mask_json_value(
        self, value: Any, path: str = "$", *, flagged: set[str] | None = None
    ) -> tuple[Any, list[Finding]]:
        """Mask a parsed JSON value (dict / list / str / int / float / bool / None).

        * string leaves (and object keys) are scanned (only those in
          ``flagged`` and those under secret-like keys, when ``flagged`` is
          given: see :meth:`flag_strings`);
        * ints (not bools) are scanned as their decimal string when their
          digit count fits a detector and become the masked *string* when
          something is found (e.g. a card stored as a number); PHONE applies
          to ints only under a phone-like key (``phone``, ``mobile``, ``tel``,
          ``fax``, ``cell``, ``msisdn``), since bare integers are usually ids
          or timestamps; floats, bools and null are left alone;
        * a key matching a field-name rule, or a node matching a JSONPath
          rule, has its whole value replaced by ``[REDACTED]`` /
          ``[REDACTED:xxxxxxxx]`` or, for ``drop``, removed (array elements
          and the root are replaced instead, so positions stay);
        * masked keys that would collide get a ``~2``, ``~3``… suffix so the
          object keeps its size.

        The input is not modified; unchanged sub-trees are shared with the
        result, and the result ``is value`` when nothing changed.

        Args:
            value: the JSON value.
            path: JSONPath of ``value`` used as prefix in findings.
            flagged: optional prefilter result (see :meth:`flag_strings`).

        Returns:
            ``(masked_value, findings)`` with findings located by JSON path.

        Raises:
            MaskingError: nesting too deep for the recursion limit, or text
                too dense to check for phone numbers.
        """
        findings: list[Finding] = []
        targets: dict[tuple[Any, ...], str] | None = None
        if self._json_paths:
            targets = {}
            for expr, strategy in self._json_paths:
                for m in expr.find(value):
                    tp = _datum_path(m)
                    targets[tp] = _st.stronger(targets.get(tp, strategy), strategy)
            if () in targets:
                findings.append(Finding(FIELD, path))
                return _st.field_placeholder(targets[()], value, self._key), findings
            if not targets:
                targets = None
        walker = _Walk(self, path, findings, flagged, targets)
        try:
            new = walker.value(value, (), (), "")
        except RecursionError:
            raise MaskingError("JSON nested too deeply to mask") from None
        return new, findings

    # ------------------------------------------------------------------ query / form

    def _mask_pair(
        self, name: str, value: str, prefix: str, findings: list[Finding]
    ) -> tuple[str, str | None]:
        """Mask one name/value pair; value ``None`` means drop the pair."""
        new_name, ndets = self._mask_str(name)
        loc = f"{prefix}:{new_name}"
        for d in ndets:
            findings.append(Finding(d.entity_type, loc))
        fs = self._fields.get(name.casefold()) if self._fields else None
        if fs is not None:
            findings.append(Finding(FIELD, loc))
            if fs == _st.DROP:
                return new_name, None
            return new_name, _st.field_placeholder(fs, value, self._key)
        new_value, vdets = self._mask_str(value, name)
        for d in vdets:
            findings.append(Finding(d.entity_type, loc))
        return new_name, new_value

    def mask_query(
        self, pairs: Sequence[tuple[str, str]]
    ) -> tuple[list[tuple[str, str]], list[Finding]]:
        """Mask decoded query parameters (order and duplicates preserved).

        Field-name rules apply (``drop`` removes the pair). Findings are
        located ``query:<name>``.

        Returns:
            ``(new_pairs, findings)``.
        """
        findings: list[Finding] = []
        out: list[tuple[str, str]] = []
        for name, value in pairs:
            new_name, new_value = self._mask_pair(name, value, "query", findings)
            if new_value is not None:
                out.append((new_name, new_value))
        return out, findings

    def _mask_form(self, text: str, encoding: str) -> tuple[str, list[Finding]]:
        findings: list[Finding] = []
        out: list[str] = []
        changed = False
        for part in text.split("&"):
            if not part:
                out.append(part)
                continue
            raw_name, sep, raw_value = part.partition("=")
            name = unquote_plus(raw_name, encoding=encoding, errors="replace")
            value = unquote_plus(raw_value, encoding=encoding, errors="replace")
            new_name, new_value = self._mask_pair(name, value, "form", findings)
            if new_value is None:
                changed = True
                continue
            if new_name is name and new_value is value:
                out.append(part)
                continue
            changed = True
            enc_name = raw_name if new_name is name else quote_plus(new_name, encoding=encoding)
            out.append(f"{enc_name}{sep or '='}{quote_plus(new_value, encoding=encoding)}")
        return ("&".join(out) if changed else text), findings

    # ------------------------------------------------------------------ bodies

    def sse_stream(self) -> SSEStreamMasker:
        """A new incremental masker for one ``text/event-stream`` response."""
        from .sse import SSEStreamMasker

        return SSEStreamMasker(self)

    def _decode(self, body: bytes, charset: str | None) -> tuple[str, str]:
        """Decode with the declared charset, falling back to UTF-8.

        Returns:
            ``(text, codec_name)``.

        Raises:
            BinaryBodyError: neither decodes.
        """
        encodings: list[str] = []
        if charset:
            with contextlib.suppress(LookupError):
                encodings.append(codecs.lookup(charset).name)
        if "utf-8" not in encodings:
            encodings.append("utf-8")
        for enc in encodings:
            try:
                return body.decode(enc), enc
            except (UnicodeDecodeError, ValueError):
                continue
        raise BinaryBodyError(f"body is not valid {' or '.join(encodings)}")

    @staticmethod
    def _encode(text: str, encoding: str) -> bytes:
        try:
            return text.encode(encoding)
        except UnicodeEncodeError as exc:
            raise MaskingError(
                f"masked body cannot be encoded as {encoding}: {exc.reason}"
            ) from None

    def mask_body(self, body: bytes, content_type: str | None) -> MaskResult:
        """Mask an HTTP body (already content-decoded: no gzip/br/zstd, see
        :func:`~proxy_worker.masking.limits.decode_content`).

        Dispatch on the media type of ``content_type``:

        * ``application/json``, ``*/*+json`` -> ``"json"``: parsed, masked
          with :meth:`mask_json_value`, re-serialised compactly
          (``ensure_ascii=False``) only when something changed (or duplicate
          keys were present); unparseable JSON falls back to text masking
          (handler ``"text"``);
        * ``application/x-ndjson``, ``application/jsonl``… -> ``"ndjson"``:
          per line (locations ``ndjson[<line>]$…``);
        * ``application/x-www-form-urlencoded`` -> ``"form"``: per field
          (field-name rules apply, ``drop`` removes the field; unchanged
          fields keep their original encoding);
        * ``text/event-stream`` -> ``"sse"``: as a whole stream;
        * ``text/*``, XML, JavaScript, YAML… and unknown or missing types
          that decode -> ``"text"``;
        * image/audio/video/font/octet-stream/pdf/zip/protobuf… types and
          bodies that do not decode -> ``"binary"``: refused or passed per
          ``binary_bodies``;
        * empty body -> ``"empty"``, returned unchanged.

        The ``charset`` parameter is honoured (unknown or failing charsets
        fall back to UTF-8) and the output is encoded with the codec that
        decoded the input.

        Returns:
            :class:`MaskResult`; ``result.body is body`` when nothing changed.

        Raises:
            BodyTooLargeError: ``len(body) > max_body_bytes``.
            BinaryBodyError: a binary or undecodable body and
                ``binary_bodies == "refuse"``.
            MaskingError: any other failure, e.g. JSON nested beyond the
                recursion limit or text too dense with digit groups to check
                for phone numbers (never partially masked output).
        """
        if not body:
            return MaskResult(body, [], "empty")
        media, params = parse_content_type(content_type)
        kind = _classify(media)
        if not self._enabled:
            return MaskResult(body, [], "text" if kind == "unknown" else kind)
        if len(body) > self.max_body_bytes:
            raise BodyTooLargeError(len(body), self.max_body_bytes)
        if kind == "binary":
            if self.binary_bodies == "pass":
                return MaskResult(body, [], "binary")
            raise BinaryBodyError(f"{media} bodies are not masked")
        if kind == "sse":
            stream = self.sse_stream()
            out = stream.feed(body) + stream.finish()
            return MaskResult(body if out == body else out, stream.findings, "sse")
        try:
            text, enc = self._decode(body, params.get("charset"))
        except BinaryBodyError:
            if self.binary_bodies == "pass":
                return MaskResult(body, [], "binary")
            raise
        try:
            if kind == "json":
                return self._mask_json_body(body, text, enc)
            if kind == "ndjson":
                return self._mask_ndjson_body(body, text, enc)
            if kind == "form":
                masked, findings = self._mask_form(text, enc)
                return MaskResult(
                    body if masked is text else self._encode(masked, enc), findings, "form"
                )
            masked, findings = self.mask_text(text)
            return MaskResult(
                body if masked is text else self._encode(masked, enc), findings, "text"
            )
        except MaskingError:
            raise
        except RecursionError:
            raise MaskingError("body nested too deeply to mask") from None
        except Exception as exc:  # never let a bug forward unmasked data
            raise MaskingError(f"masking failed: {type(exc).__name__}") from exc

    def _in_place_ok(self, body: bytes) -> bool:
        """The raw-bytes prefilter sees every secret-like key of ``body`` (UTF-8): no
        non-ASCII letter that case-insensitive matching folds to ASCII (``ſ``, ``K``)
        could spell one (see ``_FOLDS_TO_ASCII_RE``)."""
        return (
            (not self._hinted and self._phone_idx < 0)
            or body.isascii()
            or not _FOLDS_TO_ASCII_RE.search(body)
        )

    def _mask_json_body(self, body: bytes, text: str, enc: str) -> MaskResult:
        if (
            enc == "utf-8"
            and not self._fields
            and not self._json_paths
            and not text.startswith(_BOM)
        ):
            folds_ok = self._in_place_ok(body)
            if self._accel is not None and folds_ok:
                result = self._accel_mask_json(body)
                if result is not None:
                    return result
            events: list[int] = []
            flagged, _hit = self._flag_strings(body, events)
            if flagged is not None and folds_ok:
                result = self._splice_json_body(body, text, flagged, events)
                if result is not None:
                    return result
        return self._mask_json_body_whole(body, text, enc)

    def _splice_json_body(
        self, body: bytes, text: str, flagged: set[str], events: list[int]
    ) -> MaskResult | None:
        """Mask only the values the prefilter points at and splice them into the
        body (see :mod:`.jsonnav`); ``None`` when the full walk must do it (an
        object key to mask). Invalid JSON is masked as text, as by the full path."""
        findings: list[Finding] = []
        nav = Navigator(
            text,
            char_offsets(body, events),
            _Walk(self, "$", findings, flagged, None),
            mask_key=lambda key: bool(self._mask_str(key)[1]),
            forces_scan=self._value_forces_walk,
            dumps=_json_text,
        )
        try:
            splices = nav.run()
        except NeedsFullWalk:
            return None
        except InvalidJSON:
            masked, findings = self.mask_text(text)
            return MaskResult(
                body if masked is text else self._encode(masked, "utf-8"), findings, "text"
            )
        if not splices:
            return MaskResult(body, findings, "json")
        return MaskResult(self._encode(splice(text, splices), "utf-8"), findings, "json")

    def _mask_json_body_whole(self, body: bytes, text: str, enc: str) -> MaskResult:
        """Parse, walk and (when changed) re-serialise the whole document: bodies
        with field-name or JSONPath rules, other charsets, a BOM, or escapes the
        raw prefilter cannot see through."""
        bom = text.startswith(_BOM)
        src = text[1:] if bom else text
        hook = _DupKeys()
        try:
            value = json.loads(src, object_pairs_hook=hook)
        except (ValueError, RecursionError):
            masked, findings = self.mask_text(text)
            return MaskResult(
                body if masked is text else self._encode(masked, enc), findings, "text"
            )
        flagged, hit = self._flag_strings(body) if enc == "utf-8" else (None, True)
        if (
            not hit
            and flagged is not None
            and not self._fields
            and not self._json_paths
            and (not self._hinted or body.isascii())
        ):
            # No gate matches anywhere in the raw document, no field or JSONPath rule,
            # and (ASCII body) every secret-like key would have matched a gate: the
            # walk could neither scan nor change anything, so it is skipped.
            new, findings = value, []
        else:
            new, findings = self.mask_json_value(value, flagged=flagged)
        if new is value and not hook.seen:
            return MaskResult(body, findings, "json")
        out = (_BOM if bom else "") + _json_text(new)
        return MaskResult(self._encode(out, enc), findings, "json")

    def _mask_ndjson_body(self, body: bytes, text: str, enc: str) -> MaskResult:
        findings: list[Finding] = []
        lines = text.split("\n")
        changed = False
        accel = (
            self._accel is not None
            and enc == "utf-8"
            and not self._fields
            and not self._json_paths
            and self._in_place_ok(body)
        )
        for i, line in enumerate(lines):
            cr = line.endswith("\r")
            core = line[:-1] if cr else line
            if not core.strip():
                continue
            if accel and not core.startswith(_BOM):
                raw = core.encode("utf-8")
                res = self._accel_mask_json(raw, f"ndjson[{i}]$")
                if res is not None:
                    findings += res.findings
                    if res.body is not raw:
                        lines[i] = res.body.decode("utf-8") + ("\r" if cr else "")
                        changed = True
                    continue
            hook = _DupKeys()
            try:
                value = json.loads(core, object_pairs_hook=hook)
            except (ValueError, RecursionError):
                masked, fs = self.mask_text(core, location=f"ndjson[{i}]")
                findings += fs
                if masked is not core:
                    lines[i] = masked + ("\r" if cr else "")
                    changed = True
                continue
            new, fs = self.mask_json_value(value, f"ndjson[{i}]$")
            findings += fs
            if new is not value or hook.seen:
                lines[i] = _dumps(new) + ("\r" if cr else "")
                changed = True
        if not changed:
            return MaskResult(body, findings, "ndjson")
        return MaskResult(self._encode("\n".join(lines), enc), findings, "ndjson")

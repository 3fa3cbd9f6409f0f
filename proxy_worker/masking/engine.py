"""The masking engine: rules -> compiled :class:`Masker` -> masked bodies.

Pure Python (no Django, no mitmproxy). Build one :class:`Masker` per policy
snapshot and reuse it for every request/response; it is immutable after
construction and safe to share between threads. Streams need one
:class:`~proxy_worker.masking.sse.SSEStreamMasker` per flow
(:meth:`Masker.sse_stream`).
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus, unquote_plus

from . import strategies as _st
from .detectors import (
    CREDIT_CARD,
    EMAIL,
    ENTITY_TYPES,
    IBAN,
    IP_ADDRESS,
    NEEDS_AT,
    NEEDS_COLON,
    NEEDS_DIGIT,
    PHONE,
    US_SSN,
    CreditCardDetector,
    CustomRegexDetector,
    Detection,
    Detector,
    EmailDetector,
    IbanDetector,
    IpAddressDetector,
    PhoneDetector,
    UsSsnDetector,
    custom_entity_type,
)
from .errors import BinaryBodyError, BodyTooLargeError, MaskingConfigError, MaskingError

if TYPE_CHECKING:
    from .sse import SSEStreamMasker

__all__ = [
    "FIELD",
    "HANDLERS",
    "Finding",
    "MaskResult",
    "Masker",
    "MaskingRule",
    "parse_content_type",
    "summarise",
    "validate_rule",
]

#: Entity type of findings produced by field-name rules.
FIELD = "FIELD"

#: Values of :attr:`MaskResult.handler`.
HANDLERS: tuple[str, ...] = ("json", "ndjson", "form", "text", "sse", "empty", "binary")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
_CACHE_MAX_CHARS = 128
_CACHE_SIZE = 8192


@dataclass(frozen=True, slots=True)
class MaskingRule:
    """One masking rule of a policy (a plain value object; the control plane
    maps its model rows to these).

    Attributes:
        id: database id (informational).
        name: display name; also names the custom pattern's entity type.
        entity_types: built-in detectors this rule turns on, a subset of
            :data:`~proxy_worker.masking.detectors.ENTITY_TYPES`; empty = none.
        field_names: JSON keys / form / query field names whose whole value is
            masked, compared case-insensitively (``str.casefold``).
        strategy: ``redact`` | ``hash`` | ``partial`` | ``drop``.
        custom_pattern: optional extra regex (Python :mod:`re`); its entity type
            is :func:`~proxy_worker.masking.detectors.custom_entity_type` of
            ``name``.
    """

    id: int
    name: str
    entity_types: tuple[str, ...] = ()
    field_names: tuple[str, ...] = ()
    strategy: str = "redact"
    custom_pattern: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """Something was masked. Never carries the value itself.

    Attributes:
        entity_type: ``"EMAIL"``, …, a custom type, or ``"FIELD"`` for a
            field-name rule.
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
            (``"binary"`` only appears when the masker is disabled;
            an enabled masker raises :class:`BinaryBodyError` instead).
    """

    body: bytes
    findings: list[Finding] = field(default_factory=list)
    handler: str = "empty"


def validate_rule(rule: MaskingRule) -> None:
    """Check a rule the way :class:`Masker` will (for control-plane forms).

    Raises:
        MaskingConfigError: unknown strategy or entity type, or a custom
            pattern that does not compile.
    """
    if rule.strategy not in _st.STRATEGIES:
        raise MaskingConfigError(f"rule {rule.name!r}: unknown strategy {rule.strategy!r}")
    for t in rule.entity_types:
        if t not in ENTITY_TYPES:
            raise MaskingConfigError(f"rule {rule.name!r}: unknown entity type {t!r}")
    if rule.custom_pattern:
        CustomRegexDetector(custom_entity_type(rule.name), rule.custom_pattern)


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

_DIGIT_RE = re.compile(r"\d")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BOM = "\ufeff"
_PHONE_KEY_RE = re.compile(
    r"phone|mobile|msisdn|(?<![a-z])(?:tel|fax|cell)(?![a-z])", re.IGNORECASE
)


def _key_path(path: str, key: str) -> str:
    if _IDENT_RE.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


class _DupKeys:
    """``object_pairs_hook`` that notices duplicate keys (last one wins, as
    with ``json.loads``) so the body is re-serialised instead of forwarding
    an unscanned earlier duplicate."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        d = dict(pairs)
        if len(d) != len(pairs):
            self.seen = True
        return d


def _blank(text: str, spans: Sequence[Detection]) -> str:
    """``text`` with every span replaced by as many NUL characters."""
    parts: list[str] = []
    pos = 0
    for d in spans:
        parts.append(text[pos : d.start])
        parts.append("\x00" * (d.end - d.start))
        pos = d.end
    parts.append(text[pos:])
    return "".join(parts)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- masker


class Masker:
    """Compiled set of rules. Build once (on each policy snapshot), reuse for every body.

    Args:
        rules: the policy's masking rules. When several rules cover the same
            entity type or field name, the strategy revealing least wins
            (``drop`` > ``redact`` > ``hash`` > ``partial``).
        hash_key: HMAC key for the ``hash`` strategy (must be non-empty when a
            rule uses ``hash``).
        phone_regions: ISO 3166-1 alpha-2 regions for national phone formats;
            ``+`` numbers are always recognised.
        max_body_bytes: bodies (and single SSE events) larger than this raise
            :class:`BodyTooLargeError`.

    Raises:
        MaskingConfigError: see :func:`validate_rule`; also empty ``hash_key``
            with a hash rule, unknown phone region.

    Detector priority (a later detector never masks inside an earlier match):
    EMAIL, IBAN, CREDIT_CARD, US_SSN, IP_ADDRESS, custom patterns (rule order),
    PHONE. Each detector is a precompiled regex with validation; strings that
    cannot contain an entity (no digit / no ``@`` / no ``:``) skip it.
    """

    def __init__(
        self,
        rules: Sequence[MaskingRule],
        *,
        hash_key: bytes,
        phone_regions: Sequence[str] = ("US",),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if not isinstance(hash_key, bytes | bytearray):
            raise MaskingConfigError("hash_key must be bytes")
        self._key = bytes(hash_key)
        self.max_body_bytes = int(max_body_bytes)
        self._strategy: dict[str, str] = {}
        self._fields: dict[str, str] = {}
        customs: list[tuple[str, str]] = []
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
            if rule.custom_pattern:
                t = custom_entity_type(rule.name)
                self._strategy[t] = _st.stronger(
                    self._strategy.get(t, rule.strategy), rule.strategy
                )
                customs.append((t, rule.custom_pattern))
        if uses_hash and not self._key:
            raise MaskingConfigError("a rule uses the hash strategy but hash_key is empty")
        builtin: dict[str, Detector] = {}
        for t in ENTITY_TYPES:
            if t not in self._strategy:
                continue
            if t == EMAIL:
                builtin[t] = EmailDetector()
            elif t == IBAN:
                builtin[t] = IbanDetector()
            elif t == CREDIT_CARD:
                builtin[t] = CreditCardDetector()
            elif t == US_SSN:
                builtin[t] = UsSsnDetector()
            elif t == IP_ADDRESS:
                builtin[t] = IpAddressDetector()
            elif t == PHONE:
                builtin[t] = PhoneDetector(phone_regions)
        detectors: list[Detector] = [d for t, d in builtin.items() if t != PHONE]
        detectors += [CustomRegexDetector(t, p) for t, p in customs]
        if PHONE in builtin:
            detectors.append(builtin[PHONE])
        self._detectors: tuple[Detector, ...] = tuple(detectors)
        self._uses_hint = US_SSN in builtin
        self._scan_small = functools.lru_cache(maxsize=_CACHE_SIZE)(self._scan_tuple)
        self._enabled = bool(self._detectors or self._fields)

    # ------------------------------------------------------------------ properties

    @property
    def enabled(self) -> bool:
        """False when the rules mask nothing: callers can skip all work."""
        return self._enabled

    @property
    def entity_types(self) -> tuple[str, ...]:
        """Entity types this masker detects, in priority order."""
        return tuple(d.entity_type for d in self._detectors)

    def field_strategy(self, name: str) -> str | None:
        """Strategy of the field-name rule matching ``name`` (case-insensitive), if any."""
        return self._fields.get(name.casefold()) if self._fields else None

    # ------------------------------------------------------------------ core

    def scan(self, text: str, hint: str = "", *, phones: bool = True) -> list[Detection]:
        """Detect entities in ``text``.

        Results for short strings (<= 128 characters, e.g. ids, names and
        model fields repeated in every streamed chunk) are memoised per masker
        (LRU, 8192 entries; the cache keeps those recent strings in memory).

        Args:
            text: the string to scan.
            hint: context for keyword-gated detectors (the JSON key or form
                field name the string belongs to, or preceding stream text).
            phones: False skips the PHONE detector.

        Returns:
            Non-overlapping detections sorted by start offset.
        """
        if not text or not self._detectors:
            return []
        if not self._uses_hint:
            hint = ""
        if len(text) <= _CACHE_MAX_CHARS:
            return list(self._scan_small(text, hint, phones))
        return self._scan_uncached(text, hint, phones)

    def _scan_uncached(self, text: str, hint: str, phones: bool = True) -> list[Detection]:
        flags = 0
        if _DIGIT_RE.search(text):
            flags |= NEEDS_DIGIT
        if "@" in text:
            flags |= NEEDS_AT
        if ":" in text:
            flags |= NEEDS_COLON
        accepted: list[Detection] = []
        view = text
        stale = False
        for det in self._detectors:
            if det.needs & ~flags or (not phones and det.entity_type == PHONE):
                continue
            if stale:
                # Later detectors must not combine characters of an earlier
                # match with their surroundings (card digits + a phone number):
                # blank accepted matches out, keeping offsets.
                view = _blank(text, accepted)
                stale = False
            new = list(det.find(view, hint))
            if not new:
                continue
            stale = True
            new.sort()
            # Linear merge: keep earlier (higher-priority) detections, add the
            # new ones that overlap nothing already accepted.
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
            merged.extend(accepted[i:])
            accepted = merged
        return accepted

    def _scan_tuple(self, text: str, hint: str, phones: bool) -> tuple[Detection, ...]:
        return tuple(self._scan_uncached(text, hint, phones))

    def render(self, text: str, detections: Sequence[Detection]) -> str:
        """Replace ``detections`` (sorted, non-overlapping, within ``text``)
        with their placeholders. Returns ``text`` itself when there are none."""
        if not detections:
            return text
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
        dets = self.scan(text, hint)
        return (self.render(text, dets), dets) if dets else (text, dets)

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
                :class:`~proxy_worker.masking.detectors.PhoneDetector`).
        """
        masked, dets = self._mask_str(text, hint)
        return masked, [Finding(d.entity_type, f"{location}@{d.start}") for d in dets]

    # ------------------------------------------------------------------ JSON

    def mask_json_value(self, value: Any, path: str = "$") -> tuple[Any, list[Finding]]:
        """Mask a parsed JSON value (dict / list / str / int / float / bool / None).

        * string leaves (and object keys) are scanned;
        * ints (not bools) are scanned as their decimal string and become the
          masked *string* when something is found (e.g. a card stored as a
          number); PHONE applies to ints only under a phone-like key
          (``phone``, ``mobile``, ``tel``, ``fax``, ``cell``, ``msisdn``), since
          bare integers are usually ids or timestamps; floats, bools and null
          are left alone;
        * a key matching a field-name rule has its whole value replaced by
          ``[REDACTED]`` / ``[REDACTED:xxxxxxxx]`` or, for ``drop``, removed;
        * masked keys that would collide get a ``~2``, ``~3``… suffix so the
          object keeps its size.

        The input is not modified; unchanged sub-trees are shared with the
        result, and the result ``is value`` when nothing changed.

        Args:
            value: the JSON value.
            path: JSONPath of ``value`` used as prefix in findings.

        Returns:
            ``(masked_value, findings)`` with findings located by JSON path.

        Raises:
            MaskingError: nesting too deep for the recursion limit.
        """
        findings: list[Finding] = []
        try:
            new = self._walk(value, path, "", findings)
        except RecursionError:
            raise MaskingError("JSON nested too deeply to mask") from None
        return new, findings

    def _walk(self, value: Any, path: str, hint: str, findings: list[Finding]) -> Any:
        if isinstance(value, str):
            masked, dets = self._mask_str(value, hint)
            for d in dets:
                findings.append(Finding(d.entity_type, path))
            return masked
        if isinstance(value, dict):
            return self._walk_dict(value, path, findings)
        if isinstance(value, list):
            new_items = []
            changed = False
            for i, item in enumerate(value):
                new = self._walk(item, f"{path}[{i}]", hint, findings)
                changed = changed or new is not item
                new_items.append(new)
            return new_items if changed else value
        if isinstance(value, int) and not isinstance(value, bool) and self._detectors:
            s = str(value)
            if len(s) < 6:
                return value
            # Bare integers are ids and timestamps far more often than phone
            # numbers: only treat them as phones under a phone-like key.
            phones = bool(hint) and _PHONE_KEY_RE.search(hint) is not None
            dets = self.scan(s, hint, phones=phones)
            if not dets:
                return value
            masked = self.render(s, dets)
            for d in dets:
                findings.append(Finding(d.entity_type, path))
            return masked
        return value

    def _walk_dict(self, value: dict[Any, Any], path: str, findings: list[Finding]) -> Any:
        out: dict[Any, Any] = {}
        changed = False
        for k, v in value.items():
            if isinstance(k, str):
                new_k, kdets = self._mask_str(k)
                fs = self._fields.get(k.casefold()) if self._fields else None
            else:
                new_k, kdets, fs = k, [], None
            if new_k in out:
                n = 2
                while f"{new_k}~{n}" in out:
                    n += 1
                new_k = f"{new_k}~{n}"
            child = _key_path(path, new_k) if isinstance(new_k, str) else f"{path}[{new_k!r}]"
            for d in kdets:
                findings.append(Finding(d.entity_type, child))
            if fs is not None:
                findings.append(Finding(FIELD, child))
                changed = True
                if fs == _st.DROP:
                    continue
                out[new_k] = _st.field_placeholder(fs, v, self._key)
                continue
            new_v = self._walk(v, child, k if isinstance(k, str) else "", findings)
            changed = changed or new_v is not v or new_k is not k
            out[new_k] = new_v
        return out if changed else value

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
        """Mask an HTTP body (already content-decoded: no gzip/br/zstd).

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
        * empty body -> ``"empty"``, returned unchanged.

        The ``charset`` parameter is honoured (unknown or failing charsets
        fall back to UTF-8) and the output is encoded with the codec that
        decoded the input.

        Returns:
            :class:`MaskResult`; ``result.body is body`` when nothing changed.

        Raises:
            BodyTooLargeError: ``len(body) > max_body_bytes``.
            BinaryBodyError: image/audio/video/font/octet-stream/pdf/zip/
                protobuf… types, or a body that decodes neither with its
                charset nor as UTF-8.
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
            raise BinaryBodyError(f"{media} bodies are not masked")
        if kind == "sse":
            stream = self.sse_stream()
            out = stream.feed(body) + stream.finish()
            return MaskResult(body if out == body else out, stream.findings, "sse")
        text, enc = self._decode(body, params.get("charset"))
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

    def _mask_json_body(self, body: bytes, text: str, enc: str) -> MaskResult:
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
        new, findings = self.mask_json_value(value)
        if new is value and not hook.seen:
            return MaskResult(body, findings, "json")
        out = (_BOM if bom else "") + _dumps(new)
        return MaskResult(self._encode(out, enc), findings, "json")

    def _mask_ndjson_body(self, body: bytes, text: str, enc: str) -> MaskResult:
        findings: list[Finding] = []
        lines = text.split("\n")
        changed = False
        for i, line in enumerate(lines):
            cr = line.endswith("\r")
            core = line[:-1] if cr else line
            if not core.strip():
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

"""PII detectors: candidate regexes plus validation.

Every detector finds *candidates* with a regex compiled once at import time
and keeps only those that pass a validity check (checksum, numbering plan,
address parser), so that e.g. a Luhn-failing 16-digit number is not masked.

A detector is any object with

* ``entity_type: str`` – the upper-case type name used in placeholders,
* ``needs: int`` – a bit set of cheap pre-conditions (:data:`NEEDS_DIGIT`,
  :data:`NEEDS_AT`, :data:`NEEDS_COLON`) the engine tests once per string so a
  detector is skipped on text that cannot contain its entity,
* ``find(text: str, hint: str = "") -> Iterator[Detection]`` – detections in
  ascending ``start`` order (``hint`` is extra context such as the JSON key the
  string is stored under; only :class:`UsSsnDetector` uses it).

Offsets are Python ``str`` indices (code points), ``end`` exclusive.
Detections of one detector never overlap each other; overlaps *between*
detectors are resolved by the engine (:class:`~proxy_worker.masking.Masker`).
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol

import phonenumbers
from phonenumbers import Leniency, PhoneNumberFormat, PhoneNumberMatcher
from stdnum import iban as _stdnum_iban

from .errors import MaskingConfigError, MaskingError

__all__ = [
    "CREDIT_CARD",
    "EMAIL",
    "ENTITY_TYPES",
    "IBAN",
    "IP_ADDRESS",
    "NEEDS_AT",
    "NEEDS_COLON",
    "NEEDS_DIGIT",
    "PHONE",
    "US_SSN",
    "CreditCardDetector",
    "CustomRegexDetector",
    "Detection",
    "Detector",
    "EmailDetector",
    "IbanDetector",
    "IpAddressDetector",
    "PhoneDetector",
    "UsSsnDetector",
    "card_issuer",
    "custom_entity_type",
    "luhn_valid",
    "ssn_valid",
]

EMAIL = "EMAIL"
PHONE = "PHONE"
CREDIT_CARD = "CREDIT_CARD"
US_SSN = "US_SSN"
IBAN = "IBAN"
IP_ADDRESS = "IP_ADDRESS"

#: Built-in entity types, in the order their detectors run (highest priority
#: first; PHONE is last because its numbering-plan validation is the most
#: permissive about digit strings).
ENTITY_TYPES: tuple[str, ...] = (EMAIL, IBAN, CREDIT_CARD, US_SSN, IP_ADDRESS, PHONE)

#: Pre-condition bits (see module docstring).
NEEDS_DIGIT = 1
NEEDS_AT = 2
NEEDS_COLON = 4


class Detection(NamedTuple):
    """One detected entity in a string.

    Attributes:
        start: index of the first character (``int``, code points).
        end: index after the last character (exclusive).
        entity_type: e.g. ``"EMAIL"``.
        normalised: canonical form used for hashing and partial display
            (lower-cased e-mail, digits of a card/SSN, E.164 phone, compact
            upper-case IBAN, compressed IP). Contains the sensitive value:
            never log it or put it in a :class:`~proxy_worker.masking.Finding`.
    """

    start: int
    end: int
    entity_type: str
    normalised: str


class Detector(Protocol):
    """Structural type of a detector (see module docstring)."""

    entity_type: str
    needs: int

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield detections in ``text`` in ascending start order."""
        ...


def _is_alnum_at(text: str, i: int) -> bool:
    """True if ``text[i]`` exists and is a letter or digit (any script)."""
    return 0 <= i < len(text) and text[i].isalnum()


# --------------------------------------------------------------------------- e-mail

# Pragmatic subset of RFC 5322 addr-spec: dot-atom local part restricted to the
# characters seen in practice (letters, digits, "._%+-"), a domain of one or
# more labels and an alphabetic (or punycode) TLD. Unicode letters are allowed
# (RFC 6531 internationalised addresses). The local part is possessive and the
# look-behind pins matches to the start of a token, so scanning is linear.
_EMAIL_RE = re.compile(
    r"(?<![\w.%+\-])"
    r"[\w.%+\-]++"
    r"@"
    r"(?:[^\W_][\w\-]{0,62}\.)+"
    r"(?:[^\W\d_]{2,63}|xn--[\w\-]{1,59})"
    r"(?![^\W_])"
)


class EmailDetector:
    """E-mail addresses (``local@domain.tld``, pragmatic RFC 5322 / RFC 6531).

    ``normalised`` is the address lower-cased. Leading dots picked up by the
    permissive local-part class are excluded from the span.
    """

    entity_type = EMAIL
    needs = NEEDS_AT

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield e-mail detections in ``text`` (``hint`` is ignored)."""
        for m in _EMAIL_RE.finditer(text):
            start, end = m.span()
            while text[start] == ".":
                start += 1
            if text[start] == "@":  # local part was only dots
                continue
            yield Detection(start, end, EMAIL, text[start:end].lower())


# --------------------------------------------------------------------------- cards

# (low prefix, high prefix, allowed lengths) – ISO/IEC 7812 issuer
# identification numbers of the major networks.
_CARD_RANGES: tuple[tuple[int, int, int, frozenset[int]], ...] = tuple(
    (lo, hi, len(str(lo)), frozenset(lengths))
    for lo, hi, lengths in (
        (4, 4, (13, 16, 19)),  # Visa
        (51, 55, (16,)),  # Mastercard
        (2221, 2720, (16,)),  # Mastercard 2-series
        (34, 34, (15,)),  # American Express
        (37, 37, (15,)),  # American Express
        (6011, 6011, range(16, 20)),  # Discover
        (644, 649, range(16, 20)),  # Discover
        (65, 65, range(16, 20)),  # Discover
        (3528, 3589, range(16, 20)),  # JCB
        (300, 305, range(14, 20)),  # Diners Club
        (36, 36, range(14, 20)),  # Diners Club
        (38, 39, range(14, 20)),  # Diners Club
        (62, 62, range(16, 20)),  # UnionPay
        (50, 50, range(12, 20)),  # Maestro
        (56, 69, range(12, 20)),  # Maestro
    )
)


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check of ISO/IEC 7812-1 Annex B.

    Args:
        digits: ASCII digits only, check digit last.

    Returns:
        True if the checksum is 0 mod 10 (and ``digits`` is non-empty).
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return bool(digits) and total % 10 == 0


def card_issuer(digits: str) -> bool:
    """True if ``digits`` has a known issuer prefix and a length valid for it.

    Networks: Visa 4; Mastercard 51–55, 2221–2720; Amex 34, 37; Discover 6011,
    644–649, 65; JCB 3528–3589; Diners 300–305, 36, 38–39; UnionPay 62;
    Maestro 50, 56–69 (lengths 12–19).
    """
    n = len(digits)
    if n < 12 or digits[0] not in "23456":
        return False
    for lo, hi, plen, lengths in _CARD_RANGES:
        if n in lengths and lo <= int(digits[:plen]) <= hi:
            return True
    return False


# A maximal run of ASCII digit groups separated by single spaces or dashes.
# Groups glued to letters at either end of the run are dropped in code.
_CARD_RUN_RE = re.compile(r"(?<![0-9])[0-9]++(?:[ \-][0-9]++)*+")
_DIGIT_GROUP_RE = re.compile(r"[0-9]+")


class CreditCardDetector:
    """Payment card numbers (PAN): 12–19 digits, Luhn-valid, known issuer.

    Digits may be grouped with single spaces or dashes; every group of a
    grouped number must have at least 3 digits (covers 4-4-4-4, 4-6-5, …).
    Within a longer run of groups the longest valid window wins.
    ``normalised`` is the digit string.
    """

    entity_type = CREDIT_CARD
    needs = NEEDS_DIGIT

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield card detections in ``text`` (``hint`` is ignored)."""
        for m in _CARD_RUN_RE.finditer(text):
            if m.end() - m.start() < 12:
                continue
            base = m.start()
            groups = [
                (base + g.start(), base + g.end()) for g in _DIGIT_GROUP_RE.finditer(m.group())
            ]
            if _is_alnum_at(text, m.end()):  # last group glued to a word
                groups.pop()
            if groups and _is_alnum_at(text, m.start() - 1):  # first group glued to a word
                groups.pop(0)
            i = 0
            while i < len(groups):
                best = -1
                total = 0
                short = False
                for j in range(i, len(groups)):
                    glen = groups[j][1] - groups[j][0]
                    total += glen
                    short = short or glen < 3
                    if total > 19 or (j > i and short):
                        break
                    if total >= 12:
                        digits = "".join(text[a:b] for a, b in groups[i : j + 1])
                        if card_issuer(digits) and luhn_valid(digits):
                            best = j
                if best >= 0:
                    digits = "".join(text[a:b] for a, b in groups[i : best + 1])
                    yield Detection(groups[i][0], groups[best][1], CREDIT_CARD, digits)
                    i = best + 1
                else:
                    i += 1


# --------------------------------------------------------------------------- SSN

_SSN_SEP_RE = re.compile(
    r"(?<![^\W_])(?<![0-9][\-])"
    r"([0-9]{3})([\- ])([0-9]{2})\2([0-9]{4})"
    r"(?![^\W_])(?![\-][0-9])"
)
_SSN_BARE_RE = re.compile(r"(?<![^\W_])[0-9]{9}(?![^\W_])")
_SSN_KEYWORD_RE = re.compile(
    r"(?<![a-z])(?:ssns?|ss\#|social[\s_\-]*sec(?:urity)?|soc\.?\s*sec)(?![a-z])",
    re.IGNORECASE,
)
#: How far back (characters) a keyword may be for a bare 9-digit SSN.
SSN_KEYWORD_WINDOW = 48


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA numbering rules: area not 000, 666 or 900–999; group not 00;
    serial not 0000 (SSA, "Social Security Number Randomization", 2011).
    """
    a = int(area)
    return a != 0 and a != 666 and a < 900 and group != "00" and serial != "0000"


class UsSsnDetector:
    """US Social Security Numbers.

    ``AAA-GG-SSSS`` or ``AAA GG SSSS`` (same separator twice) anywhere; nine
    bare digits only when a keyword (``ssn``, ``SS#``, ``social security``,
    ``soc sec``) occurs in the :data:`SSN_KEYWORD_WINDOW` characters before the
    number or in ``hint`` (e.g. the JSON key ``"customer_ssn"``). Validated
    with :func:`ssn_valid`. ``normalised`` is the 9 digits.
    """

    entity_type = US_SSN
    needs = NEEDS_DIGIT

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield SSN detections in ``text``; ``hint`` is keyword context."""
        found: list[Detection] = []
        for m in _SSN_SEP_RE.finditer(text):
            area, _sep, group, serial = m.groups()
            if ssn_valid(area, group, serial):
                found.append(Detection(m.start(), m.end(), US_SSN, area + group + serial))
        hint_ok: bool | None = None
        for m in _SSN_BARE_RE.finditer(text):
            s = m.group()
            if not ssn_valid(s[:3], s[3:5], s[5:]):
                continue
            start = m.start()
            if not _SSN_KEYWORD_RE.search(text, max(0, start - SSN_KEYWORD_WINDOW), start):
                if hint_ok is None:
                    hint_ok = bool(hint) and _SSN_KEYWORD_RE.search(hint) is not None
                if not hint_ok:
                    continue
            found.append(Detection(start, m.end(), US_SSN, s))
        found.sort()
        yield from found


# --------------------------------------------------------------------------- IBAN

# Country code + 2 check digits + BBAN, optionally grouped by single spaces.
# Bounded so that a candidate never scans more than ~13 groups.
_IBAN_RUN_RE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}[A-Za-z0-9]{0,32}+(?: [A-Za-z0-9]{1,32}+){0,12}+"
)
_ALNUM_GROUP_RE = re.compile(r"[A-Za-z0-9]+")


def _iban_lengths() -> dict[str, int]:
    """Country code -> IBAN length, from python-stdnum's copy of the SWIFT
    IBAN registry (empty if its internal layout ever changes: then every
    length 15–34 is tried)."""
    lengths: dict[str, int] = {}
    try:
        for _n, low, high, props, _children in _stdnum_iban._ibandb.prefixes:
            bban = props.get("bban")
            if low == high and bban:
                lengths[low] = 4 + sum(int(c) for c in re.findall(r"(\d+)!", bban))
    except (AttributeError, TypeError, ValueError):
        return {}
    return lengths


_IBAN_LENGTHS = _iban_lengths()


class IbanDetector:
    """International Bank Account Numbers (ISO 13616).

    Candidates: two letters, two digits, then alphanumerics, optionally in
    space-separated groups (case-insensitive). The longest prefix of groups
    that passes :func:`stdnum.iban.is_valid` (mod 97-10 per ISO 7064, country
    length and BBAN format) is kept. ``normalised`` is the compact upper-case
    IBAN.
    """

    entity_type = IBAN
    needs = NEEDS_DIGIT

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield IBAN detections in ``text`` (``hint`` is ignored)."""
        pos = 0
        while True:
            m = _IBAN_RUN_RE.search(text, pos)
            if m is None:
                return
            base = m.start()
            groups = [
                (base + g.start(), base + g.end()) for g in _ALNUM_GROUP_RE.finditer(m.group())
            ]
            # Drop groups cut by the length bounds (glued to further letters/digits).
            keep = len(groups)
            for k, (_a, b) in enumerate(groups):
                if _is_alnum_at(text, b):
                    keep = k
                    break
            found = None
            compact = "".join(text[a:b] for a, b in groups[:keep])
            want = _IBAN_LENGTHS.get(compact[:2].upper()) if _IBAN_LENGTHS else None
            if _IBAN_LENGTHS and want is None:
                keep = 0  # not an IBAN country
            for k in range(keep, 0, -1):
                n = len(compact)
                if (n == want if want else 15 <= n <= 34) and _stdnum_iban.is_valid(compact):
                    found = k
                    break
                compact = compact[: n - (groups[k - 1][1] - groups[k - 1][0])]
            if found is not None:
                end = groups[found - 1][1]
                yield Detection(base, end, IBAN, compact.upper())
                pos = end
            else:
                pos = groups[0][1]


# --------------------------------------------------------------------------- IP

_IPV4_RE = re.compile(r"(?<![\w.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?!\w|\.[0-9])")
_IPV6_RE = re.compile(
    r"(?<![\w:.])"
    r"(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4}|(?<=:))"
    r"(?:%[0-9A-Za-z_.\-]{1,32})?"
    r"(?![\w:]|\.[0-9])"
)


class IpAddressDetector:
    """IPv4 (dotted quad, RFC 791) and IPv6 (RFC 4291 text forms, RFC 4007
    zone ids) addresses, validated with :mod:`ipaddress` (so ``999.1.1.1`` and
    leading-zero octets are rejected). IPv6 candidates need at least two
    non-empty hex groups (skips ``::``, ``::1`` and Python slices like
    ``[::2]``). ``normalised`` is the compressed address.
    """

    entity_type = IP_ADDRESS
    needs = NEEDS_DIGIT

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield IP detections in ``text`` (``hint`` is ignored)."""
        found: list[Detection] = []
        if text.count(":") >= 2:
            for m in _IPV6_RE.finditer(text):
                cand = m.group()
                head = cand.split("%", 1)[0]
                if "." not in head and sum(1 for g in head.split(":") if g) < 2:
                    continue
                try:
                    addr = ipaddress.IPv6Address(cand)
                except ValueError:
                    continue
                found.append(Detection(m.start(), m.end(), IP_ADDRESS, addr.compressed))
        if "." in text:
            v6_spans = [(d.start, d.end) for d in found]
            for m in _IPV4_RE.finditer(text):
                if any(a <= m.start() < b for a, b in v6_spans):
                    continue
                try:
                    addr4 = ipaddress.IPv4Address(m.group())
                except ValueError:
                    continue
                found.append(Detection(m.start(), m.end(), IP_ADDRESS, addr4.compressed))
            if v6_spans:
                found.sort()
        yield from found


# --------------------------------------------------------------------------- phone

# Candidate runs: maximal stretches of digits and phone punctuation (>= 6
# digits, checked in code). phonenumbers' matcher then runs on a window around
# each run (it costs ~40 µs per short window but is far slower on long texts).
_PHONE_RUN_RE = re.compile(r"\d[\d().\-/ \t\u00a0\u2010-\u2015]*\d")
_NON_DIGIT_RE = re.compile(r"\D+")
_PHONE_PRE = 8  # characters of context before a run ("tel:+", "(")
_PHONE_POST = 24  # characters after (extensions such as " ext. 1234")
_PHONE_MAX_WINDOW = 256  # longer windows are cut into overlapping slices
_PHONE_OVERLAP = 96  # slice overlap: well above the longest number with extension
_MIN_INTL_DIGITS = 6
#: Invalid candidates the matcher may try per window before giving up (what
#: it leaves uncovered is parsed directly).
_MATCHER_TRIES = 12
#: Runs with this many whitespace-separated groups skip the matcher.
_DENSE_TOKENS = 32
#: Direct parse budget: 256 + one per this many characters of text.
_PARSE_BUDGET_MIN = 256
_PARSE_BUDGET_CHARS = 32


class PhoneDetector:
    """Telephone numbers valid in the numbering plan (ITU-T E.164 / libphonenumber).

    Candidate runs (digits and phone punctuation, at least 6 digits; without
    ``+``/``00`` at least the shortest national number of the regions, which
    skips dates) are found with one regex. :class:`phonenumbers.PhoneNumberMatcher`
    with ``Leniency.VALID`` then runs on a window around each run, once per
    region (giving up after ``_MATCHER_TRIES`` invalid candidates per window;
    runs of ``_DENSE_TOKENS``+ space-separated groups, i.e. tables of
    numbers, skip it). The matcher misses numbers in runs of several
    space-separated numbers, so every run's whitespace-separated tokens that
    no matcher result covers are then parsed directly: up to 6 adjacent
    tokens, longest valid combination first, with ``parse`` +
    ``is_valid_number`` (skipping tokens glued to words, dates, times and
    percentages).

    Numbers written with ``+`` are found for any region; a leading ``00``
    international prefix (ITU-T E.164 recommended prefix, used by Faker's
    ``001-…`` format) is treated like ``+``.

    Args:
        regions: ISO 3166-1 alpha-2 default regions for national formats
            (e.g. ``("US", "GB")``); empty = only ``+``/``00`` numbers.

    Raises:
        MaskingConfigError: unknown region (constructor).
        MaskingError: (``find``) the text is so dense with digit groups that
            validating them would exceed 256 + one direct parse per
            ``_PARSE_BUDGET_CHARS`` (32) characters (e.g. 10 kB of
            ``"12 34 56 …"``); failing closed instead of leaving numbers
            unchecked.

    ``normalised`` is the E.164 form (without extension).
    """

    entity_type = PHONE
    needs = NEEDS_DIGIT

    def __init__(self, regions: Sequence[str] = ("US",)) -> None:
        regs = tuple(r.upper() for r in regions)
        national: set[int] = set()
        for r in regs:
            if r not in phonenumbers.SUPPORTED_REGIONS:
                raise MaskingConfigError(f"unknown phone region {r!r}")
            md = phonenumbers.PhoneMetadata.metadata_for_region(r)
            lengths = tuple(md.general_desc.possible_length or ()) if md else ()
            prefix = len(md.national_prefix or "") if md else 0
            for length in lengths or range(_MIN_INTL_DIGITS, 16):
                national.update((length, length + prefix))
        self.regions: tuple[str, ...] = regs or ("ZZ",)
        #: digit counts a number written without "+"/"00" can have
        self._national_lengths = frozenset(national)
        self._min_national = max(min(national, default=99), _MIN_INTL_DIGITS)

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield phone detections in ``text`` (``hint`` is ignored)."""
        windows: list[list[int]] = []  # [start, end]
        runs: list[tuple[int, int]] = []
        n = len(text)
        for m in _PHONE_RUN_RE.finditer(text):
            nd = len(_NON_DIGIT_RE.sub("", m.group()))
            if nd < _MIN_INTL_DIGITS:
                continue
            s0 = m.start()
            if nd < self._min_national and not (
                (s0 > 0 and text[s0 - 1] in "+\uff0b") or _intl_00_at(text, s0)
            ):
                continue
            runs.append(m.span())
            if len(_WS_RE.findall(m.group())) >= _DENSE_TOKENS:
                continue  # a table of numbers: only parsed token by token below
            ws = max(0, s0 - _PHONE_PRE)
            we = min(n, m.end() + _PHONE_POST)
            limit = min(n, we + 16)
            while we < limit and text[we].isalnum():
                we += 1
            if windows and ws <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], we)
            else:
                windows.append([ws, we])
        if not runs:
            return
        found: list[Detection] = []
        step = _PHONE_MAX_WINDOW - _PHONE_OVERLAP
        for ws, we in windows:
            for cs in range(ws, max(ws + 1, we - _PHONE_OVERLAP), step):
                if cs > ws and not text[cs - 1].isspace():
                    # start slices at a token boundary, not inside a number
                    sp = _WS_RE.search(text, cs, min(we, cs + 32))
                    if sp:
                        cs = sp.end()
                self._match_window(text, cs, min(we, cs + _PHONE_MAX_WINDOW), found)
        found.sort()
        # Direct parsing of what the matcher left uncovered: it misses numbers
        # in runs of several space-separated numbers ("+1-650-253-0000
        # 650.253.0000"), next to such runs, and in windows it gave up on.
        extra: list[Detection] = []
        starts = [d.start for d in found]
        max_end: list[int] = []
        for d in found:
            max_end.append(max(d.end, max_end[-1]) if max_end else d.end)
        budget = [_PARSE_BUDGET_MIN + n // _PARSE_BUDGET_CHARS]
        for a, b in runs:
            extra.extend(self._fallback(text, a, b, starts, max_end, budget))
        if extra:
            found = sorted(found + extra)
        # Overlapping results (several regions, window slices): keep the union.
        merged: list[Detection] = []
        for d in found:
            if merged and d.start < merged[-1].end:
                last = merged[-1]
                if d.end > last.end:
                    longer = d if d.end - d.start > last.end - last.start else last
                    merged[-1] = Detection(last.start, d.end, PHONE, longer.normalised)
                continue
            merged.append(d)
        yield from merged

    def _match_window(self, text: str, ws: int, we: int, found: list[Detection]) -> None:
        """Run the matcher on ``text[ws:we]`` (``00`` prefixes read as ``+``),
        appending to ``found``."""
        chunk = text[ws:we]
        replaced: set[int] = set()
        for m in _INTL_00_RE.finditer(chunk):
            s = ws + m.start()
            if _intl_00_at(text, s):
                rel = m.start()
                chunk = chunk[:rel] + " +" + chunk[rel + 2 :]
                replaced.add(s)
        for region in self.regions:
            matcher = PhoneNumberMatcher(
                chunk, region, leniency=Leniency.VALID, max_tries=_MATCHER_TRIES
            )
            for pm in matcher:
                a = ws + pm.start
                b = ws + pm.end
                if a - 1 in replaced:
                    a -= 1
                # the matcher may include a leading "[" or a stray "("
                while a < b and not (
                    text[a].isdigit() or text[a] == "+" or _opens_group(text, a, b)
                ):
                    a += 1
                if a >= b or _glued_left(text, a):
                    continue
                e164 = phonenumbers.format_number(pm.number, PhoneNumberFormat.E164)
                found.append(Detection(a, b, PHONE, e164))

    def _fallback(
        self,
        text: str,
        a: int,
        b: int,
        starts: list[int],
        max_end: list[int],
        budget: list[int],
    ) -> list[Detection]:
        if a > 0 and text[a - 1] in "+(":
            a -= 1
        free: list[tuple[int, int]] = []
        acc = [0]  # prefix sums of digit counts over free tokens
        for m in _TOKEN_RE.finditer(text, a, b):
            nd = len(m.group().translate(_PUNCT_DROP))
            if not nd:
                continue  # "." or "-" between numbers
            ts, te = m.span()
            while text[ts] in ".-/":  # sentence punctuation around a number
                ts += 1
            while text[te - 1] in ".-/":
                te -= 1
            if _glued_left(text, ts):
                continue  # part of an identifier such as "ORD-2024-000123"
            if te < len(text) and text[te].isalpha() and text[te] not in "xXeE":
                continue  # (x / ext extensions may follow directly)
            i = bisect.bisect_left(starts, te)  # found[:i] start before the token ends
            if i and max_end[i - 1] > ts:
                continue  # overlaps a matcher result
            free.append((ts, te))
            acc.append(acc[-1] + nd)
        out: list[Detection] = []
        national = self._national_lengths
        i = 0
        while i < len(free):
            hit = None
            s0 = free[i][0]
            intl = text[s0] in "+\uff0b" or _intl_00_at(text, s0)
            last = i
            while last + 1 < len(free) and last + 1 - i < 6:
                gap = text[free[last][1] : free[last + 1][0]]
                if gap.strip() or len(gap) > 2:
                    break
                last += 1
            for j in range(last, i - 1, -1):
                nd = acc[j + 1] - acc[i]
                if nd > 15 or (nd < 7 if intl else nd not in national):
                    continue
                hit = self._parse_valid(text, s0, free[j][1], budget)
                if hit is not None:
                    ext = _EXT_RE.match(text, hit.end)
                    if ext:
                        hit = hit._replace(end=ext.end())
                    out.append(hit)
                    i = j + 1
                    break
            if hit is None:
                i += 1
        return out

    def _parse_valid(self, text: str, s0: int, e0: int, budget: list[int]) -> Detection | None:
        sub = text[s0:e0]
        nd = len(_NON_DIGIT_RE.sub("", sub))
        intl = sub[:1] in ("+", "\uff0b") or _intl_00_at(text, s0)
        if nd > 15 or (nd not in self._national_lengths if not intl else nd < 7):
            return None
        if _DATE_LIKE_RE.search(sub):
            return None
        before = text[max(0, s0 - 2) : s0]
        if text[e0 : e0 + 1] in (":", "%") or (before.endswith(":") and before[:1].isdigit()):
            return None  # part of a time stamp or a percentage
        budget[0] -= 1
        if budget[0] < 0:
            raise MaskingError("text too dense with digit groups to check for phone numbers")
        if _intl_00_at(text, s0):
            sub = "+" + sub[2:]
        for region in self.regions:
            try:
                num = phonenumbers.parse(sub, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(num):
                return Detection(
                    s0, e0, PHONE, phonenumbers.format_number(num, PhoneNumberFormat.E164)
                )
        return None


_TOKEN_RE = re.compile(r"\S+")
_EXT_RE = re.compile(r"[ \t]*(?:x|ext\.?|extension|\#)[ \t]*\d{1,7}(?!\d)", re.IGNORECASE)
_PUNCT_DROP = str.maketrans("", "", "()+.-/\u00a0\u2010\u2011\u2012\u2013\u2014\u2015\uff0b")
_INTL_00_RE = re.compile(r"00[1-9]")
_DIGIT_RE = re.compile(r"\d")
_WS_RE = re.compile(r"\s")
_DATE_LIKE_RE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}")


def _glued_left(text: str, a: int) -> bool:
    """``text[a]`` continues an identifier: directly after a letter, digit or
    ``_``, or after ``-``/``_`` that follows one (``ORD-2024000123``, ``id_2125551234``)."""
    if a == 0:
        return False
    c = text[a - 1]
    if c.isalnum() or c == "_":
        return True
    return c == "-" and a >= 2 and (text[a - 2].isalnum() or text[a - 2] == "_")


def _opens_group(text: str, a: int, b: int) -> bool:
    """``text[a]`` is a "(" closed before ``b`` around digits only, e.g. ``(650)``."""
    if text[a] != "(":
        return False
    close = text.find(")", a, b)
    return close > a + 1 and text[a + 1 : close].strip().isdigit()


def _intl_00_at(text: str, s: int) -> bool:
    """``00`` + non-zero digit at a token start: the E.164 international prefix."""
    return (
        text.startswith("00", s)
        and (s == 0 or not (text[s - 1].isalnum() or text[s - 1] == "+"))
        and s + 2 < len(text)
        and text[s + 2].isdigit()
        and text[s + 2] != "0"
    )


# --------------------------------------------------------------------------- custom

_NON_ALNUM_RE = re.compile(r"[^A-Za-z0-9]+")


def custom_entity_type(rule_name: str) -> str:
    """Entity type of a rule's custom pattern: the rule name upper-cased with
    every run of non-alphanumeric characters replaced by ``_``
    (``"Employee id"`` -> ``"EMPLOYEE_ID"``; empty -> ``"CUSTOM"``).
    """
    t = _NON_ALNUM_RE.sub("_", rule_name).strip("_").upper()
    return t or "CUSTOM"


class CustomRegexDetector:
    """User-defined regular expression (Python :mod:`re` syntax).

    Args:
        name: entity type reported for matches (used verbatim in placeholders).
        pattern: regex source or compiled pattern; the whole match is masked;
            zero-length matches are ignored.

    Raises:
        MaskingConfigError: the pattern does not compile.

    Note: patterns are trusted configuration; :mod:`re` has no timeout, so a
    catastrophically backtracking pattern slows the data path.
    """

    needs = 0

    def __init__(self, name: str, pattern: str | re.Pattern[str]) -> None:
        self.entity_type = name
        if isinstance(pattern, re.Pattern):
            self.pattern = pattern
        else:
            try:
                self.pattern = re.compile(pattern)
            except re.error as exc:
                raise MaskingConfigError(f"invalid custom pattern for {name!r}: {exc}") from None

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield non-empty matches of the pattern (``hint`` is ignored)."""
        for m in self.pattern.finditer(text):
            if m.end() > m.start():
                yield Detection(m.start(), m.end(), self.entity_type, m.group())

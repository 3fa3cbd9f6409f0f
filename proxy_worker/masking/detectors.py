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

import ipaddress
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol

import phonenumbers
from phonenumbers import Leniency, PhoneNumberFormat, PhoneNumberMatcher
from stdnum import iban as _stdnum_iban

from .errors import MaskingConfigError

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
    for lo, hi, plen, lengths in _CARD_RANGES:
        if n in lengths and lo <= int(digits[:plen]) <= hi:
            return True
    return False


# A run of ASCII digit groups separated by single spaces or dashes, starting at
# a token boundary (not after a letter/digit, not after "digit + separator").
_CARD_RUN_RE = re.compile(r"(?<![^\W_])(?<![0-9][ \-])[0-9]++(?:[ \-][0-9]++)*+")
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
            for k in range(keep, 0, -1):
                if 15 <= len(compact) <= 34 and _stdnum_iban.is_valid(compact):
                    found = k
                    break
                compact = compact[: len(compact) - (groups[k - 1][1] - groups[k - 1][0])]
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

# Loose candidate: digits with common separators, >= 6 digits checked in code.
# Only used to find windows on which phonenumbers' matcher runs (the matcher is
# ~40 µs per short window but far slower on long texts).
_PHONE_CANDIDATE_RE = re.compile(r"\d[\d().\-/ \t\u00a0\u2010-\u2015]{4,40}\d")
_NON_DIGIT_RE = re.compile(r"\D+")
_PHONE_PRE = 8  # characters of context before a candidate ("tel:+", "(")
_PHONE_POST = 24  # characters after (extensions such as " ext. 1234")
_FALLBACK_BUDGET = 2048  # max direct parse attempts per find() call


class PhoneDetector:
    """Telephone numbers valid in the numbering plan (ITU-T E.164 / libphonenumber).

    Candidate windows are found with a cheap regex, then
    :class:`phonenumbers.PhoneNumberMatcher` with ``Leniency.VALID`` runs on
    each window, once per region. Numbers written with ``+`` are found for any
    region; a leading ``00`` international prefix (ITU-T E.164 recommended
    prefix, used by Faker's ``001-…`` format) is treated like ``+``.

    Args:
        regions: ISO 3166-1 alpha-2 default regions for national formats
            (e.g. ``("US", "GB")``); empty = only ``+``/``00`` numbers.

    Raises:
        MaskingConfigError: unknown region.

    ``normalised`` is the E.164 form (without extension).
    """

    entity_type = PHONE
    needs = NEEDS_DIGIT

    def __init__(self, regions: Sequence[str] = ("US",)) -> None:
        regs = tuple(r.upper() for r in regions)
        for r in regs:
            if r not in phonenumbers.SUPPORTED_REGIONS:
                raise MaskingConfigError(f"unknown phone region {r!r}")
        self.regions: tuple[str, ...] = regs or ("ZZ",)

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield phone detections in ``text`` (``hint`` is ignored)."""
        windows: list[list[int]] = []  # [start, end, cand_start...]
        runs: list[tuple[int, int]] = []
        n = len(text)
        for m in _PHONE_CANDIDATE_RE.finditer(text):
            if len(_NON_DIGIT_RE.sub("", m.group())) < 6:
                continue
            runs.append(m.span())
            ws = max(0, m.start() - _PHONE_PRE)
            we = min(n, m.end() + _PHONE_POST)
            limit = min(n, we + 16)
            while we < limit and text[we].isalnum():
                we += 1
            if windows and ws <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], we)
                windows[-1].append(m.start())
            else:
                windows.append([ws, we, m.start()])
        found: list[Detection] = []
        for win in windows:
            ws, we, starts = win[0], win[1], win[2:]
            chunk = text[ws:we]
            replaced: set[int] = set()
            for s in starts:
                if _intl_00_at(text, s):
                    rel = s - ws
                    chunk = chunk[:rel] + " +" + chunk[rel + 2 :]
                    replaced.add(s)
            for region in self.regions:
                for pm in PhoneNumberMatcher(chunk, region, leniency=Leniency.VALID):
                    a = ws + pm.start
                    b = ws + pm.end
                    if a - 1 in replaced:
                        a -= 1
                    while a < b and not (text[a].isdigit() or text[a] in "+("):
                        a += 1
                    if a >= b:
                        continue
                    e164 = phonenumbers.format_number(pm.number, PhoneNumberFormat.E164)
                    found.append(Detection(a, b, PHONE, e164))
        found.sort()
        # The matcher gives up on some runs of several numbers separated only by
        # spaces ("+1-650-253-0000 650.253.0000"): parse the uncovered
        # whitespace-separated tokens of each candidate run directly.
        extra: list[Detection] = []
        budget = [_FALLBACK_BUDGET]
        for a, b in runs:
            extra.extend(self._fallback(text, a, b, found, budget))
        if extra:
            found = sorted(found + extra)
        yield from found

    def _fallback(
        self, text: str, a: int, b: int, found: list[Detection], budget: list[int]
    ) -> list[Detection]:
        if a > 0 and text[a - 1] in "+(":
            a -= 1
        tokens = [(m.start(), m.end()) for m in _TOKEN_RE.finditer(text, a, b)]
        free = [t for t in tokens if not any(d.start < t[1] and t[0] < d.end for d in found)]
        out: list[Detection] = []
        i = 0
        while i < len(free):
            hit = None
            last = i
            while last + 1 < len(free) and last + 1 - i < 6:
                gap = text[free[last][1] : free[last + 1][0]]
                if gap.strip() or len(gap) > 2:
                    break
                last += 1
            for j in range(last, i - 1, -1):
                if budget[0] <= 0:
                    return out
                budget[0] -= 1
                s0, e0 = free[i][0], free[j][1]
                hit = self._parse_valid(text, s0, e0)
                if hit is not None:
                    out.append(hit)
                    i = j + 1
                    break
            if hit is None:
                i += 1
        return out

    def _parse_valid(self, text: str, s0: int, e0: int) -> Detection | None:
        sub = text[s0:e0]
        nd = len(_NON_DIGIT_RE.sub("", sub))
        if nd < 7 or nd > 15 or _DATE_LIKE_RE.search(sub):
            return None
        before = text[max(0, s0 - 2) : s0]
        if text[e0 : e0 + 1] in (":", "%") or (before.endswith(":") and before[:1].isdigit()):
            return None  # part of a time stamp or a percentage
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
_DATE_LIKE_RE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}")


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

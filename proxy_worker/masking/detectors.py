"""PII detectors: candidate regexes plus validation, and the detector registry.

Every detector finds *candidates* with a regex compiled once at import time
and keeps only those that pass a validity check (checksum, numbering plan,
address parser), so that e.g. a Luhn-failing 16-digit number is not masked.
The detector protocol (``entity_type``, ``gate``, ``max_span``,
``uses_hint``, ``find``) is described in :mod:`.base`.

Built-in entity types (:data:`ENTITY_TYPES`, in priority order: a later
detector never masks inside an earlier one's match):

* on by default (:data:`DEFAULT_ENTITY_TYPES`): the secrets of
  :mod:`.secrets`, e-mail, IBAN, payment card, US SSN, US ITIN, IP address,
  generic ``password=``/``api_key=`` secrets, phone;
* opt-in, by region (:data:`REGIONAL_ENTITY_TYPES`, :mod:`.regional`): UK NHS
  number, Canadian SIN, Indian Aadhaar and PAN, Spanish DNI and NIE, Italian
  codice fiscale, French NIR, Brazilian CPF, German tax id.

Rules may add custom regex detectors (:class:`CustomRegexDetector`) and
dictionary detectors (:class:`DenyListDetector`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence

from stdnum import iban as _stdnum_iban

from . import regional as _regional
from . import secrets as _secrets
from .base import Detection, Detector
from .errors import MaskingConfigError
from .phone import DEFAULT_PHONE_REGIONS, PHONE, PhoneDetector

__all__ = [
    "CREDIT_CARD",
    "DEFAULT_ENTITY_TYPES",
    "DEFAULT_PHONE_REGIONS",
    "EMAIL",
    "ENTITY_TYPES",
    "IBAN",
    "IP_ADDRESS",
    "PHONE",
    "REGIONAL_ENTITY_TYPES",
    "SECRET_ENTITY_TYPES",
    "US_ITIN",
    "US_SSN",
    "CreditCardDetector",
    "CustomRegexDetector",
    "DenyListDetector",
    "Detection",
    "Detector",
    "EmailDetector",
    "IbanDetector",
    "IpAddressDetector",
    "PhoneDetector",
    "UsItinDetector",
    "UsSsnDetector",
    "card_issuer",
    "custom_entity_type",
    "iban_valid",
    "itin_valid",
    "luhn_valid",
    "make_detector",
    "ssn_valid",
]

EMAIL = "EMAIL"
CREDIT_CARD = "CREDIT_CARD"
US_SSN = "US_SSN"
US_ITIN = "US_ITIN"
IBAN = "IBAN"
IP_ADDRESS = "IP_ADDRESS"

#: Secret types (:mod:`.secrets`), highest priority first.
SECRET_ENTITY_TYPES: tuple[str, ...] = _secrets.SECRET_ENTITY_TYPES
#: Opt-in national identifiers (:mod:`.regional`).
REGIONAL_ENTITY_TYPES: tuple[str, ...] = _regional.REGIONAL_ENTITY_TYPES

#: Every built-in entity type, in the order their detectors run (highest
#: priority first). Token-shaped secrets come first (a URL with credentials
#: must not become an e-mail), the keyword-triggered generic secret after the
#: structured identifiers, PHONE last because its numbering-plan validation
#: is the most permissive about digit strings.
ENTITY_TYPES: tuple[str, ...] = (
    *_secrets.TOKEN_SECRET_TYPES,
    EMAIL,
    IBAN,
    CREDIT_CARD,
    US_SSN,
    US_ITIN,
    IP_ADDRESS,
    *REGIONAL_ENTITY_TYPES,
    _secrets.SECRET,
    PHONE,
)

#: The types on by default (everything but the regional identifiers): what
#: the recorder masks in bodies no target rule masked, and the preselection
#: of the rule preview.
DEFAULT_ENTITY_TYPES: tuple[str, ...] = tuple(
    t for t in ENTITY_TYPES if t not in REGIONAL_ENTITY_TYPES
)


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
    r"[\w.%+\-]{1,64}+"
    r"@"
    r"(?:[^\W_][\w\-]{0,62}\.){1,8}"
    r"(?:xn--[\w\-]{1,59}|[^\W\d_]{2,63})"
    r"(?![^\W_])"
)


class EmailDetector:
    """E-mail addresses (``local@domain.tld``, pragmatic RFC 5322 / RFC 6531).

    The local part is at most 64 characters (RFC 5321 §4.5.3.1.1), the domain
    at most 8 labels. ``normalised`` is the address lower-cased. Leading dots
    picked up by the permissive local-part class are excluded from the span.
    """

    entity_type = EMAIL
    gate: str | None = "@"
    max_span: int | None = 64 + 1 + 8 * 64 + 64
    uses_hint = False

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

# (low prefix, high prefix, allowed lengths): issuer identification numbers
# (ISO/IEC 7812-1) of the card networks, from the networks' published BIN
# ranges as summarised in Wikipedia's "Payment card number" table (2025).
_CARD_RANGES: tuple[tuple[int, int, int, frozenset[int]], ...] = tuple(
    (lo, hi, len(str(lo)), frozenset(lengths))
    for lo, hi, lengths in (
        (4, 4, (13, 16, 19)),  # Visa (incl. Electron)
        (51, 55, (16,)),  # Mastercard
        (2221, 2720, (16,)),  # Mastercard 2-series
        (34, 34, (15,)),  # American Express
        (37, 37, (15,)),  # American Express
        (6011, 6011, range(16, 20)),  # Discover
        (644, 649, range(16, 20)),  # Discover
        (65, 65, range(16, 20)),  # Discover, RuPay
        (3500, 3599, range(15, 20)),  # JCB block 35 (3528-3589 assigned; see below)
        (1800, 1800, (15,)),  # JCB, legacy 15-digit
        (2131, 2131, (15,)),  # JCB, legacy 15-digit
        (1, 1, (15,)),  # UATP
        (300, 305, range(14, 20)),  # Diners Club International
        (36, 36, range(14, 20)),  # Diners Club International
        (38, 39, range(14, 20)),  # Diners Club
        (62, 62, range(16, 20)),  # UnionPay
        (81, 82, (16,)),  # UnionPay (81), RuPay (82)
        (2200, 2204, range(16, 20)),  # Mir
        (9792, 9792, (16,)),  # Troy
        (60, 60, range(16, 20)),  # RuPay, Discover 6011
        (508, 508, (16,)),  # RuPay
        (50, 50, range(12, 20)),  # Maestro, Verve, Dankort (5019)
        (56, 69, range(12, 20)),  # Maestro, InstaPayment (637-639), Verve (650)
    )
)


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check of ISO/IEC 7812-1 Annex B.

    Args:
        digits: ASCII digits only, check digit last.

    Returns:
        True if the checksum is 0 mod 10 (and ``digits`` is non-empty).
    """
    if not digits:
        return False
    total = sum(map(int, digits[-1::-2]))
    for ch in digits[-2::-2]:
        total += _LUHN_DOUBLE[ord(ch) - 48]
    return total % 10 == 0


_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def card_issuer(digits: str) -> bool:
    """True if ``digits`` has a known issuer prefix and a length valid for it.

    Networks (prefix: lengths): Visa 4: 13, 16, 19; Mastercard 51–55 and
    2221–2720: 16; Amex 34, 37: 15; Discover 6011, 644–649, 65: 16–19; JCB
    3500–3599: 15–19 and legacy 1800, 2131: 15; UATP 1: 15; Diners 300–305,
    36, 38–39: 14–19; UnionPay 62: 16–19, 81: 16; RuPay 60, 65, 82, 508; Mir
    2200–2204: 16–19; Troy 9792: 16; Maestro, Verve, Dankort, InstaPayment
    50, 56–69: 12–19.

    The whole JCB block 35xx is accepted (JCB's assigned range is 3528–3589):
    the presidio-research corpus labels Faker-generated 3502–3527 and
    3590–3599 numbers as cards, nothing else issues from 35, and the Luhn
    check still applies.
    """
    n = len(digits)
    if n < 12 or n > 19 or digits[0] not in "123456789":
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
    """Payment card numbers (PAN): 12–19 digits, Luhn-valid, known issuer
    (:func:`card_issuer`).

    Digits may be grouped with single spaces or dashes, one kind per number;
    every group of a grouped number must have at least 3 digits (covers
    4-4-4-4, 4-6-5, …). A number never starts at a group joined to the
    previous group by the other separator.
    Within a longer run of groups the longest valid window wins.
    ``normalised`` is the digit string.
    """

    entity_type = CREDIT_CARD
    gate: str | None = r"(?:\b|_)[0-9](?:[ \-]?[0-9]){11}"
    max_span: int | None = 64
    uses_hint = False

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield card detections in ``text`` (``hint`` is ignored)."""
        for m in _CARD_RUN_RE.finditer(text):
            if m.end() - m.start() < 12:
                continue
            base = m.start()
            run = m.group()
            if run.isdigit():
                groups = [(base, m.end())]
            else:
                groups = [(base + g.start(), base + g.end()) for g in _DIGIT_GROUP_RE.finditer(run)]
            if _is_alnum_at(text, m.end()):  # last group glued to a word
                groups.pop()
            if groups and _is_alnum_at(text, m.start() - 1):  # first group glued to a word
                groups.pop(0)
            # Separator between group k-1 and group k ("" when not adjacent).
            seps = [""] + [
                text[groups[k - 1][1]] if groups[k][0] - groups[k - 1][1] == 1 else ""
                for k in range(1, len(groups))
            ]
            i = 0
            while i < len(groups):
                best = -1
                total = 0
                short = False
                for j in range(i, len(groups)):
                    glen = groups[j][1] - groups[j][0]
                    total += glen
                    short = short or glen < 3
                    # One number uses one separator: "123-45-6789 4111 …" is an SSN and
                    # a card, never a card starting at "6789".
                    mixed = j > i and (
                        seps[j] != seps[i + 1] or (i > 0 and seps[i] and seps[i] != seps[j])
                    )
                    if total > 19 or (j > i and short) or mixed:
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


# --------------------------------------------------------------------------- SSN / ITIN

#: How far back (characters) a keyword may be for a bare 9-digit SSN/ITIN.
SSN_KEYWORD_WINDOW = 48

_TIN_SEP_RE = re.compile(
    r"(?<![^\W_])(?<![0-9][\-])"
    r"([0-9]{3})([\- ])([0-9]{2})\2([0-9]{4})"
    r"(?![^\W_])(?![\-][0-9])"
)
_TIN_BARE_RE = re.compile(r"(?<![^\W_])[0-9]{9}(?![^\W_])")
_SSN_KEYWORD_RE = re.compile(
    r"(?<![a-z])(?:ssns?|ss\#|social[\s_\-]*sec(?:urity)?|soc\.?\s*sec)(?![a-z])",
    re.IGNORECASE,
)
_ITIN_KEYWORD_RE = re.compile(
    r"(?<![a-z])(?:itins?|individual[\s_\-]*taxpayer|taxpayer[\s_\-]*id|tin)(?![a-z])",
    re.IGNORECASE,
)


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA numbering rules: area not 000, 666 or 900–999; group not 00;
    serial not 0000 (SSA, "Social Security Number Randomization", 2011).
    """
    a = int(area)
    return a != 0 and a != 666 and a < 900 and group != "00" and serial != "0000"


def itin_valid(area: str, group: str, serial: str) -> bool:
    """IRS ITIN rules: area 900–999; group 50–65, 70–88, 90–92 or 94–99
    (IRS, "Individual Taxpayer Identification Number", IRM 3.21.263)."""
    if area[0] != "9":
        return False
    g = int(group)
    return 50 <= g <= 65 or 70 <= g <= 88 or 90 <= g <= 92 or 94 <= g <= 99


class _UsTinDetector:
    """Shared logic of SSN and ITIN (same 3-2-4 layout)."""

    entity_type = ""
    #: 9 digits (3-2-4) not inside a longer run of letters or digits.
    gate: str | None = r"(?:\b|_)[0-9]{3}[ \-]?[0-9]{2}[ \-]?[0-9]{4}(?:\b|_)"
    max_span: int | None = 11 + SSN_KEYWORD_WINDOW + 8
    uses_hint = True
    _keyword: re.Pattern[str]

    @staticmethod
    def _valid(area: str, group: str, serial: str) -> bool:
        raise NotImplementedError

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield detections in ``text``; ``hint`` is keyword context."""
        found: list[Detection] = []
        et = self.entity_type
        for m in _TIN_SEP_RE.finditer(text):
            area, _sep, group, serial = m.groups()
            if self._valid(area, group, serial):
                found.append(Detection(m.start(), m.end(), et, area + group + serial))
        hint_ok: bool | None = None
        for m in _TIN_BARE_RE.finditer(text):
            s = m.group()
            if not self._valid(s[:3], s[3:5], s[5:]):
                continue
            start = m.start()
            if not self._keyword.search(text, max(0, start - SSN_KEYWORD_WINDOW), start):
                if hint_ok is None:
                    hint_ok = bool(hint) and self._keyword.search(hint) is not None
                if not hint_ok:
                    continue
            found.append(Detection(start, m.end(), et, s))
        found.sort()
        yield from found


class UsSsnDetector(_UsTinDetector):
    """US Social Security Numbers.

    ``AAA-GG-SSSS`` or ``AAA GG SSSS`` (same separator twice) anywhere; nine
    bare digits only when a keyword (``ssn``, ``SS#``, ``social security``,
    ``soc sec``) occurs in the :data:`SSN_KEYWORD_WINDOW` characters before the
    number or in ``hint`` (e.g. the JSON key ``"customer_ssn"``). Validated
    with :func:`ssn_valid`. ``normalised`` is the 9 digits.
    """

    entity_type = US_SSN
    _keyword = _SSN_KEYWORD_RE

    @staticmethod
    def _valid(area: str, group: str, serial: str) -> bool:
        return ssn_valid(area, group, serial)


class UsItinDetector(_UsTinDetector):
    """US Individual Taxpayer Identification Numbers: like
    :class:`UsSsnDetector` (keywords ``itin``, ``individual taxpayer``,
    ``taxpayer id``, ``tin``), validated with :func:`itin_valid`."""

    entity_type = US_ITIN
    gate: str | None = r"(?:\b|_)9[0-9]{2}[ \-]?[0-9]{2}[ \-]?[0-9]{4}(?:\b|_)"
    _keyword = _ITIN_KEYWORD_RE

    @staticmethod
    def _valid(area: str, group: str, serial: str) -> bool:
        return itin_valid(area, group, serial)


# --------------------------------------------------------------------------- IBAN

# Country code + 2 check digits + BBAN, optionally grouped by single spaces.
# Bounded so that a candidate never scans more than ~13 groups.
_IBAN_RUN_RE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}[A-Za-z0-9]{0,32}+(?: [A-Za-z0-9]{1,32}+){0,12}+"
)
_ALNUM_GROUP_RE = re.compile(r"[A-Za-z0-9]+")
_BBAN_PART_RE = re.compile(r"(\d+)!([nac])")
_BBAN_CLASS = {"n": "[0-9]", "a": "[A-Z]", "c": "[A-Z0-9]"}
_IBAN_DIGITS = str.maketrans({chr(65 + i): str(10 + i) for i in range(26)})


def _iban_registry() -> dict[str, tuple[int, re.Pattern[str] | None]]:
    """Country code -> (IBAN length, BBAN structure regex), from
    python-stdnum's copy of the SWIFT IBAN registry (empty if its internal
    layout ever changes: then every length 15–34 is tried and
    :func:`stdnum.iban.is_valid` decides)."""
    out: dict[str, tuple[int, re.Pattern[str] | None]] = {}
    try:
        for _n, low, high, props, _children in _stdnum_iban._ibandb.prefixes:
            bban = props.get("bban")
            if low == high and bban:
                parts = _BBAN_PART_RE.findall(bban)
                length = 4 + sum(int(k) for k, _c in parts)
                rx = "".join(f"{_BBAN_CLASS[c]}{{{k}}}" for k, c in parts)
                out[low] = (length, re.compile(rx) if parts else None)
    except (AttributeError, TypeError, ValueError, KeyError):
        return {}
    return out


_IBAN_REGISTRY = _iban_registry()


def iban_valid(compact: str) -> bool:
    """IBAN check (ISO 13616): known country, its length and BBAN structure
    (SWIFT IBAN registry) and the ISO 7064 mod 97-10 check digits.

    Args:
        compact: upper-case IBAN without spaces.

    Gives the same answer as :func:`stdnum.iban.is_valid` without its
    per-call overhead (the test suite compares both).
    """
    entry = _IBAN_REGISTRY.get(compact[:2]) if _IBAN_REGISTRY else None
    if entry is None:
        return not _IBAN_REGISTRY and _stdnum_iban.is_valid(compact)
    length, bban = entry
    if len(compact) != length or not compact[2:4].isdigit():
        return False
    if bban is not None and bban.fullmatch(compact, 4) is None:
        return False
    if not compact.isalnum() or not compact.isascii():
        return False
    return int((compact[4:] + compact[:4]).translate(_IBAN_DIGITS)) % 97 == 1


class IbanDetector:
    """International Bank Account Numbers (ISO 13616).

    Candidates: two letters, two digits, then alphanumerics, optionally in
    space-separated groups (case-insensitive). The longest prefix of groups
    that passes :func:`iban_valid` is kept. ``normalised`` is the compact
    upper-case IBAN.
    """

    entity_type = IBAN
    gate: str | None = r"[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11}"
    max_span: int | None = 64
    uses_hint = False

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
            compact = "".join(text[a:b] for a, b in groups[:keep]).upper()
            entry = _IBAN_REGISTRY.get(compact[:2]) if _IBAN_REGISTRY else None
            want = entry[0] if entry else None
            if _IBAN_REGISTRY and want is None:
                keep = 0  # not an IBAN country
            for k in range(keep, 0, -1):
                n = len(compact)
                if (n == want if want else 15 <= n <= 34) and iban_valid(compact):
                    found = k
                    break
                compact = compact[: n - (groups[k - 1][1] - groups[k - 1][0])]
            if found is not None:
                end = groups[found - 1][1]
                yield Detection(base, end, IBAN, compact)
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
    gate: str | None = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]|:[0-9A-Fa-f]{0,4}:"
    #: The IPv6 half of :attr:`gate` (the C accelerator finds IPv4 only and hands
    #: strings matching this to the Python detector).
    ipv6_gate = ":[0-9A-Fa-f]{0,4}:"
    max_span: int | None = 80
    uses_hint = False

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


# --------------------------------------------------------------------------- custom

_NON_ALNUM_RE = re.compile(r"[^A-Za-z0-9]+")


def custom_entity_type(rule_name: str) -> str:
    """Entity type of a rule's custom pattern or deny list: the rule name
    upper-cased with every run of non-alphanumeric characters replaced by
    ``_`` (``"Employee id"`` -> ``"EMPLOYEE_ID"``; empty -> ``"CUSTOM"``).
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
    catastrophically backtracking pattern slows the data path. A custom
    pattern has no prefilter: it runs over every string of every body the
    rule covers.
    """

    gate: str | None = None
    max_span: int | None = None
    uses_hint = False

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


_WS_RUN_RE = re.compile(r"\s+")
#: Longest deny-list entry (characters).
DENY_LIST_MAX_CHARS = 200


class DenyListDetector:
    """Dictionary detector: whole words or phrases from an admin's list.

    Matching is case-insensitive (Unicode case folding), on word boundaries
    (an entry is not found inside a longer word), and any run of whitespace
    inside a phrase matches any run of whitespace in the text (``"Project
    Falcon"`` finds ``"project\\nfalcon"``). Longer entries win over shorter
    ones that start at the same place.

    Args:
        name: entity type reported (see :func:`custom_entity_type`).
        words: the entries; blank ones are ignored.

    Raises:
        MaskingConfigError: no non-blank entry, or an entry longer than
            :data:`DENY_LIST_MAX_CHARS`.

    ``normalised`` is the entry as matched, case-folded with single spaces
    (so the hash strategy gives one token per entry).
    """

    max_span: int | None
    uses_hint = False

    def __init__(self, name: str, words: Iterable[str]) -> None:
        self.entity_type = name
        entries = sorted(
            {_WS_RUN_RE.sub(" ", w.strip()) for w in words if w and w.strip()},
            key=lambda w: (-len(w), w),
        )
        if not entries:
            raise MaskingConfigError(f"deny list of {name!r} has no entries")
        for w in entries:
            if len(w) > DENY_LIST_MAX_CHARS:
                raise MaskingConfigError(
                    f"deny list entry of {name!r} longer than {DENY_LIST_MAX_CHARS} characters"
                )
        alts = "|".join(r"\s+".join(re.escape(p) for p in w.split(" ")) for w in entries)
        self.pattern = re.compile(rf"(?<!\w)(?:{alts})(?!\w)", re.IGNORECASE)
        # Gate: the first word of each entry (a looser condition than the match).
        firsts = sorted({w.split(" ")[0] for w in entries}, key=lambda w: (-len(w), w))
        self.gate: str | None = "(?i:" + "|".join(_re2_escape(w) for w in firsts) + ")"
        self.max_span = 2 * max(len(w) for w in entries) + 8

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield deny-list matches in ``text`` (``hint`` is ignored)."""
        for m in self.pattern.finditer(text):
            yield Detection(
                m.start(), m.end(), self.entity_type, _WS_RUN_RE.sub(" ", m.group()).casefold()
            )


def _re2_escape(word: str) -> str:
    """Escape for a pattern read by both Python :mod:`re` and RE2."""
    return "".join(c if c.isalnum() or c == "_" or ord(c) > 127 else "\\" + c for c in word)


# --------------------------------------------------------------------------- registry


def make_detector(entity_type: str, *, phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS):
    """A new detector for a built-in entity type.

    Args:
        entity_type: one of :data:`ENTITY_TYPES`.
        phone_regions: default regions of :class:`PhoneDetector`.

    Raises:
        MaskingConfigError: unknown entity type or phone region.
    """
    if entity_type == EMAIL:
        return EmailDetector()
    if entity_type == IBAN:
        return IbanDetector()
    if entity_type == CREDIT_CARD:
        return CreditCardDetector()
    if entity_type == US_SSN:
        return UsSsnDetector()
    if entity_type == US_ITIN:
        return UsItinDetector()
    if entity_type == IP_ADDRESS:
        return IpAddressDetector()
    if entity_type == PHONE:
        return PhoneDetector(phone_regions)
    if entity_type in SECRET_ENTITY_TYPES:
        return _secrets.make(entity_type)
    if entity_type in REGIONAL_ENTITY_TYPES:
        return _regional.make(entity_type)
    raise MaskingConfigError(f"unknown entity type {entity_type!r}")

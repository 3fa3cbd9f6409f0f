"""Telephone numbers: candidate extraction and a fast numbering-plan validator.

Validation follows libphonenumber (ITU-T E.164 numbering plans as published in
Google's libphonenumber metadata, read from the :mod:`phonenumbers` package):
:func:`is_valid_number` gives the same answer as
``phonenumbers.is_valid_number(phonenumbers.parse(candidate, region))`` for
the candidates this module produces (digits with phone punctuation, an
optional leading ``+``), but costs a few regex full-matches instead of a full
``parse`` (about 20–40 µs per call in phonenumbers, ~2 µs here). The test
suite checks the agreement on thousands of numbers from many locales.

What is replicated from ``phonenumberutil`` (phonenumbers 9.x): country
calling code extraction, the international (IDD) prefix of the default
region, the "number starts with the region's own country code" rule,
national prefix stripping with ``national_prefix_for_parsing`` and
``national_prefix_transform_rule`` (kept only when the result still has a
possible length), and validity as "general description and one number type
match, in the region that ``region_code_for_number`` would pick".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from functools import cache

import phonenumbers
from phonenumbers import PhoneMetadata

from .base import Detection
from .errors import MaskingConfigError, MaskingError

try:  # google-re2 (see engine.py); optional here too
    import re2 as _re2
except ImportError:  # pragma: no cover
    _re2 = None

__all__ = ["DEFAULT_PHONE_REGIONS", "PHONE", "PhoneDetector", "is_valid_number"]

PHONE = "PHONE"

#: Default regions for numbers written without ``+``/``00``: North America,
#: the UK and Ireland's neighbours, the large EU/EEA economies with the Nordic
#: countries, Switzerland, Australia, India and Brazil. Every region added
#: raises recall on foreign numbers and the chance that another digit group
#: (a house number followed by a postcode) is a valid number somewhere; the
#: evaluation behind this choice is in ``docs/benchmarks.md``. National
#: numbers must carry their national prefix where their region requires it
#: (libphonenumber's ``VALID`` leniency), which keeps that chance low.
#: Configure with ``GATEHOUSE_PHONE_REGIONS``.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    "US",
    "CA",
    "GB",
    "DE",
    "FR",
    "IT",
    "ES",
    "NL",
    "BE",
    "CH",
    "AT",
    "SE",
    "DK",
    "NO",
    "AU",
    "IN",
    "BR",
)

_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)
_MIN_NSN = 2  # phonenumbers' MIN_LENGTH_FOR_NSN
_MAX_NSN = 17  # phonenumbers' MAX_LENGTH_FOR_NSN
_MAX_CC_LEN = 3

_Desc = tuple[frozenset[int], re.Pattern[str]]
_FIRST_GROUP_ONLY = re.compile(r"\(?\\1\)?")


def _desc(d: object) -> _Desc | None:
    pattern = getattr(d, "national_number_pattern", None)
    if d is None or not pattern:
        return None
    return frozenset(getattr(d, "possible_length", None) or ()), re.compile(pattern)


def _matches(nsn: str, d: _Desc | None) -> bool:
    if d is None:
        return False
    lengths, pat = d
    if lengths and len(nsn) not in lengths:
        return False
    return pat.fullmatch(nsn) is not None


class _Region:
    """Precompiled metadata of one region (or non-geographic entity)."""

    __slots__ = (
        "cc",
        "formats",
        "general",
        "idd",
        "leading",
        "local_lengths",
        "max_input",
        "npp",
        "possible",
        "transform",
        "types",
        "types_any",
    )

    def __init__(self, md: PhoneMetadata) -> None:
        self.cc: int = md.country_code
        self.general = _desc(md.general_desc)
        types = [_desc(getattr(md, t, None)) for t in _TYPES]
        if md.same_mobile_and_fixed_line_pattern:
            types = types[:-1]
        self.types: tuple[_Desc, ...] = tuple(t for t in types if t is not None)
        #: All number types' patterns in one alternation: a number that matches
        #: none of them (most candidates) is refused with one full-match.
        self.types_any = (
            re.compile("|".join(f"(?:{t[1].pattern})" for t in self.types)) if self.types else None
        )
        self.leading = re.compile(md.leading_digits) if md.leading_digits else None
        self.npp = (
            re.compile(md.national_prefix_for_parsing) if md.national_prefix_for_parsing else None
        )
        self.transform = md.national_prefix_transform_rule or None
        self.idd = re.compile(md.international_prefix) if md.international_prefix else None
        gd = md.general_desc
        self.possible: tuple[int, ...] = tuple(sorted(gd.possible_length or ()))
        self.local_lengths = frozenset(gd.possible_length_local_only or ())
        #: Longest digit string that can still be a national number of this
        #: region after an IDD, country code or national prefix is removed.
        # (leading digits, pattern, national prefix required when formatting)
        formats = []
        for f in md.number_format or ():
            lead = re.compile(f.leading_digits_pattern[-1]) if f.leading_digits_pattern else None
            rule = f.national_prefix_formatting_rule
            required = bool(rule) and not f.national_prefix_optional_when_formatting
            required = required and not _FIRST_GROUP_ONLY.fullmatch(rule or "")
            formats.append((lead, re.compile(f.pattern), required))
        self.formats = tuple(formats)
        lengths = [n for n in self.possible if n > 0] or list(range(_MIN_NSN, _MAX_NSN + 1))
        ccl = len(str(self.cc))
        self.max_input = frozenset(
            n + extra + k for n in lengths for extra in (0, ccl) for k in range(0, 6)
        )

    def valid(self, nsn: str) -> bool:
        """``_number_type_helper(nsn) != UNKNOWN``."""
        if not _matches(nsn, self.general):
            return False
        if self.types_any is None or self.types_any.fullmatch(nsn) is None:
            return False
        return any(_matches(nsn, t) for t in self.types)

    def prefix_required(self, nsn: str) -> bool:
        """The national prefix must be written with this national number
        (``_is_national_prefix_present_if_required`` of libphonenumber: the
        first matching number format has a formatting rule that is more than
        the first group and is not optional)."""
        for lead, pat, required in self.formats:
            if (lead is None or lead.match(nsn)) and pat.fullmatch(nsn):
                return required
        return False

    def length_ok(self, number: str) -> bool:
        """``_test_number_length`` is not TOO_SHORT, INVALID_LENGTH or LOCAL_ONLY."""
        n = len(number)
        if not self.possible or self.possible[0] == -1 or n in self.local_lengths:
            return False
        if n < self.possible[0]:
            return False
        if n > self.possible[-1]:
            return True  # TOO_LONG is accepted by parse()
        return n in self.possible

    def strip_national_prefix(self, number: str) -> str:
        """``_maybe_strip_national_prefix_carrier_code`` (number part only)."""
        if not number or self.npp is None:
            return number
        m = self.npp.match(number)
        if not m:
            return number
        viable = _matches_pattern(number, self.general)
        groups = m.groups()
        if self.transform is None or not groups or groups[-1] is None:
            stripped = number[m.end() :]
        else:
            stripped = self.npp.sub(self.transform.replace("$", "\\"), number, count=1)
        if viable and not _matches_pattern(stripped, self.general):
            return number
        return stripped


def _matches_pattern(number: str, d: _Desc | None) -> bool:
    """``_match_national_number`` (pattern only, no length check)."""
    return d is not None and d[1].fullmatch(number) is not None


@cache
def _region(code: str) -> _Region | None:
    md = PhoneMetadata.metadata_for_region(code, None)
    if md is None:
        return None
    return _Region(md)


@cache
def _cc_regions(cc: int) -> tuple[_Region, ...]:
    out: list[_Region] = []
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(cc, ()):
        if code == "001":
            md = PhoneMetadata.metadata_for_nongeo_region(cc, None)
            if md is not None:
                out.append(_Region(md))
            continue
        r = _region(code)
        if r is not None:
            out.append(r)
    return tuple(out)


@cache
def _cc_plan(cc: int) -> tuple[tuple[re.Pattern[str] | None, tuple[_Region, ...]], ...]:
    """``_region_code_for_number_from_list`` of calling code ``cc`` as steps: a
    region without leading digits is tried on its own (``(None, (region,))``);
    consecutive regions with leading digits become one alternation whose first
    matching branch (named ``r<i>``) picks the region, as the list order would."""
    steps: list[tuple[re.Pattern[str] | None, tuple[_Region, ...]]] = []
    block: list[_Region] = []

    def flush() -> None:
        if block:
            alt = "|".join(f"(?P<r{i}>{r.leading.pattern})" for i, r in enumerate(block))  # type: ignore[union-attr]
            steps.append((re.compile(alt), tuple(block)))
            block.clear()

    for r in _cc_regions(cc):
        if r.leading is not None:
            block.append(r)
        else:
            flush()
            steps.append((None, (r,)))
    flush()
    return tuple(steps)


def _valid_for_cc(cc: int, nsn: str, memo: dict | None = None) -> bool:
    """``is_valid_number`` of a parsed ``(cc, nsn)`` (``memo``: results of this
    candidate's earlier calls, see :func:`is_valid_number`)."""
    if memo is not None:
        r = memo.get((cc, nsn))
        if r is None:
            r = memo[(cc, nsn)] = _valid_for_cc(cc, nsn)
        return r
    regions = _cc_regions(cc)
    if not regions:
        return False
    if len(regions) == 1:
        return regions[0].valid(nsn)
    for pat, regs in _cc_plan(cc):
        if pat is None:
            if regs[0].valid(nsn):
                return True
            continue
        m = pat.match(nsn)
        if m:
            return regs[int(m.lastgroup[1:])].valid(nsn)  # type: ignore[index]
    return False


def _intl(digits: str, memo: dict | None = None) -> str | None:
    """Digits after ``+``: E.164 or ``None`` (``memo``: see :func:`is_valid_number`)."""
    if memo is not None:
        key = ("+", digits)
        if key not in memo:
            memo[key] = _intl(digits)
        return memo[key]
    if not digits or digits[0] == "0":
        return None
    for n in range(1, _MAX_CC_LEN + 1):
        cc = int(digits[:n])
        regions = _cc_regions(cc)
        if not regions:
            continue
        national = digits[n:]
        main = regions[0]
        stripped = main.strip_national_prefix(national)
        if stripped != national and main.length_ok(stripped):
            national = stripped
        if not (_MIN_NSN <= len(national) <= _MAX_NSN):
            return None
        return f"+{cc}{national}" if _valid_for_cc(cc, national) else None
    return None


@cache
def _national_filter(region: str) -> re.Pattern[str] | None:
    """A full-match pattern that every digit string :func:`is_valid_number` accepts
    for ``region`` (not international) also matches: the region's international
    prefix or country code followed by anything, or an optional national prefix
    (``national_prefix_for_parsing``) and a national number matching one of the
    number types (fixed line, mobile, toll free…) of a region with the same calling
    code. Most candidates that fail a region fail this one regex
    instead of the whole procedure. ``None`` (no filter) for regions whose national
    prefix rule rewrites the number (``national_prefix_transform_rule``)."""
    reg = _region(region)
    if reg is None or reg.transform is not None:
        return None
    generals = [r.types_any.pattern for r in _cc_regions(reg.cc) if r.types_any is not None]
    if not generals:
        return None
    alts = [f"{reg.cc}\\d*"]
    if reg.idd is not None:
        alts.append(f"(?:{reg.idd.pattern})\\d*")
    npp = f"(?:{reg.npp.pattern})?" if reg.npp is not None else ""
    alts.append(npp + "(?:" + "|".join(f"(?:{g})" for g in generals) + ")")
    return re.compile("|".join(f"(?:{a})" for a in alts))


@cache
def _filters(regions: tuple[str, ...]) -> tuple:
    """The region filters of :func:`_regions_filter` (and of the C port):
    ``(kind, owners, matcher)``; ``owners[i]`` is the filter (pattern index) of
    ``regions[i]`` or -1; kind 0: no filter (every region), 1: ``matcher`` is the
    RE2 set's C++ ``Match`` (ASCII bytes -> indices of the matching patterns; the
    Python wrapper adds a call and a type check per use), 2: ``matcher`` is a
    tuple of full-match functions, one per pattern (without google-re2)."""
    pats: dict[str, int] = {}
    owners: list[int] = []
    for r in regions:
        f = _national_filter(r)
        owners.append(-1 if f is None else pats.setdefault(f.pattern, len(pats)))
    if not pats:
        return 0, tuple(owners), None
    if _re2 is None:  # pragma: no cover - without google-re2
        return 2, tuple(owners), tuple(re.compile(p).fullmatch for p in pats)
    opts = _re2.Options()
    opts.max_mem = 64 << 20
    rset = _re2.Set.FullMatchSet(opts)
    for p in pats:
        rset.Add(p)
    rset.Compile()
    return 1, tuple(owners), getattr(rset, "_set", rset).Match


@cache
def _regions_filter(regions: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """``digits -> regions worth trying``, in ``regions`` order: those whose
    :func:`_national_filter` accepts ``digits`` and those without a filter.
    All filters run as one linear-time RE2 full-match set (Python :mod:`re`, one
    filter at a time, without google-re2); :func:`_filters` builds them."""
    kind, owners, matcher = _filters(regions)
    if kind == 0:
        return lambda digits: regions
    if kind == 2:  # pragma: no cover - without google-re2

        def py_regions(digits: str) -> tuple[str, ...]:
            ok = {i for i, full in enumerate(matcher) if full(digits)}
            return tuple(r for r, o in zip(regions, owners, strict=True) if o < 0 or o in ok)

        return py_regions
    unfiltered = tuple(r for r, o in zip(regions, owners, strict=True) if o < 0)
    picks: dict[tuple[int, ...], tuple[str, ...]] = {}  # few distinct answers: memoised

    def worth_trying(digits: str) -> tuple[str, ...]:
        ok = matcher(digits.encode("ascii"))  # ASCII digits
        if not ok:
            return unfiltered
        key = tuple(ok)
        got = picks.get(key)
        if got is None:
            got = tuple(r for r, o in zip(regions, owners, strict=True) if o < 0 or o in ok)
            if len(picks) < 4096:
                picks[key] = got
        return got

    return worth_trying


def is_valid_number(
    digits: str,
    region: str,
    *,
    international: bool = False,
    require_prefix: bool = False,
    memo: dict | None = None,
) -> str | None:
    """Validate a phone number given as ASCII digits.

    Args:
        digits: the digits of the candidate (punctuation and extension removed).
        region: ISO 3166-1 alpha-2 default region for national formats.
        international: the number was written with ``+`` (or ``00``).
        require_prefix: also apply libphonenumber's ``VALID`` leniency rule
            that a national number must carry its national prefix when its
            region's format requires it (``030 901820``, not ``30 901820``).
        memo: a dict shared by the calls for one candidate in several regions:
            the region-independent parts (the number after an international
            prefix, a national number's validity for its calling code) are then
            computed once.

    Returns:
        The E.164 form (``"+16502530000"``) when
        ``phonenumbers.is_valid_number(phonenumbers.parse(..., region))``
        would be true, else ``None``.
    """
    if international:
        return _intl(digits, memo)
    reg = _region(region)
    if reg is None or len(digits) < _MIN_NSN:
        return None
    if reg.idd is not None:
        m = reg.idd.match(digits)
        if m and m.end() < len(digits) and digits[m.end()] != "0":
            return _intl(digits[m.end() :], memo)
    if len(digits) not in reg.max_input:
        return None  # no national prefix or country code makes this length valid
    cc = reg.cc
    number = digits
    ccs = str(cc)
    if number.startswith(ccs):
        pot = reg.strip_national_prefix(number[len(ccs) :])
        too_long = bool(reg.possible) and reg.possible[-1] != -1 and len(number) > reg.possible[-1]
        if (
            not _matches_pattern(number, reg.general) and _matches_pattern(pot, reg.general)
        ) or too_long:
            number = pot
            if not (_MIN_NSN <= len(number) <= _MAX_NSN):
                return None
            return f"+{cc}{number}" if _valid_for_cc(cc, number, memo) else None
    stripped = reg.strip_national_prefix(number)
    had_prefix = stripped != number and reg.length_ok(stripped)
    if had_prefix:
        number = stripped
    if not (_MIN_NSN <= len(number) <= _MAX_NSN):
        return None
    if not _valid_for_cc(cc, number, memo):
        return None
    if not had_prefix and require_prefix:
        main = _cc_regions(cc)[0]
        if main.prefix_required(number):
            return None  # e.g. German numbers written without their leading 0
    return f"+{cc}{number}"


# --------------------------------------------------------------------------- detector

# Candidate runs: maximal stretches of digits and phone punctuation.
_PHONE_RUN_RE = re.compile(r"\d[\d().\-/ \t\u00a0\u2010-\u2015]*\d")
_NON_DIGIT_RE = re.compile(r"\D+")
_TOKEN_RE = re.compile(r"\S+")
_EXT_RE = re.compile(r"[ \t]*(?:x|ext\.?|extension|\#)[ \t]*\d{1,7}(?!\d)", re.IGNORECASE)
_PUNCT_DROP = str.maketrans("", "", "()+.-/\u00a0\u2010\u2011\u2012\u2013\u2014\u2015\uff0b")
_DATE_LIKE_RE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}")
_MIN_INTL_DIGITS = 6
_MAX_DIGITS = 15  # E.164: at most 15 digits
_MAX_TOKENS = 6  # a number is written in at most this many space-separated groups
#: Parse budget: 512 + one validation per this many characters of text.
_BUDGET_MIN = 512
_BUDGET_CHARS = 8
#: The longest text a phone detection can span: 15 digits, their separators,
#: a ``+``/``00`` prefix, "(0)" and an extension (`` ext. 1234567``).
PHONE_MAX_SPAN = 64


def _ascii_digits(s: str) -> str:
    d = _NON_DIGIT_RE.sub("", s)
    return d if d.isascii() else "".join(str(int(c)) for c in d)


def _glued_left(text: str, a: int) -> bool:
    """``text[a]`` continues an identifier: directly after a letter, digit or
    ``_``, or after ``-``/``_`` that follows one (``ORD-2024000123``, ``id_2125551234``)."""
    if a == 0:
        return False
    c = text[a - 1]
    if c.isalnum() or c == "_":
        return True
    return c == "-" and a >= 2 and (text[a - 2].isalnum() or text[a - 2] == "_")


def _intl_00_at(text: str, s: int) -> bool:
    """``00`` + non-zero digit at a token start: the E.164 international prefix."""
    return (
        text.startswith("00", s)
        and (s == 0 or not (text[s - 1].isalnum() or text[s - 1] == "+"))
        and s + 2 < len(text)
        and text[s + 2].isdigit()
        and text[s + 2] != "0"
    )


class PhoneDetector:
    """Telephone numbers valid in the numbering plan (ITU-T E.164 / libphonenumber).

    Candidate runs (digits and phone punctuation with at least 6 digits) are
    found with one regex and split into whitespace-separated tokens (tokens
    glued to words, dates, times and percentages are skipped). Up to 6
    adjacent tokens are tried, longest first, and validated with
    :func:`is_valid_number` for each default region; a trailing extension
    (``x123``, ``ext. 123``, ``#123``) joins the match.

    Numbers written with ``+`` are found for any region; a leading ``00``
    (ITU-T E.164 recommended international prefix) is read as ``+``, and the
    default region's own international prefix (``011`` for US) too.

    Args:
        regions: ISO 3166-1 alpha-2 default regions for national formats
            (default :data:`DEFAULT_PHONE_REGIONS`); empty = only
            international numbers.

    Raises:
        MaskingConfigError: unknown region (constructor).
        MaskingError: (``find``) the text is so dense with digit groups that
            validating them would take more than 512 + one validation per 8
            characters; failing closed instead of leaving numbers unchecked.

    ``normalised`` is the E.164 form (without extension). Only numbers made
    of decimal digits are found (any script: full-width and Arabic-Indic
    digits are normalised).
    """

    entity_type = PHONE
    #: At least 6 digits (any script) joined by phone punctuation, starting a
    #: token (not glued to a letter, digit, ``_`` or ``-`` as in identifiers,
    #: see :func:`_glued_left`; a ``"`` may precede: a JSON string start).
    gate: str | None = (
        '(?:^-?|"-?|[^0-9A-Za-z_"\\-]-?)[0-9](?:[ \t().\\-/\u00a0\u2010-\u2015]*[0-9]){5}'
        "|[\uff10-\uff19\u0660-\u0669\u06f0-\u06f9\u0966-\u096f]"
    )
    #: The gate for raw JSON bytes (RE2 Latin-1 mode): like :attr:`gate` but a
    #: run right after ``":`` / ``,`` / ``[`` that follow a quote, digit,
    #: bracket or whitespace does not count, which skips the structural
    #: numbers of compact JSON (``"created":1700000000``) while every run
    #: inside a string still does. Instead, every phone-like key
    #: (``"mobile":``, see ``_PHONE_KEY_RE`` in the engine) matches, because
    #: the engine reads integers under such keys as phone numbers.
    body_gate = (
        r'(?:^|"|[^0-9A-Za-z_"\-,:\[]|[^"0-9\]}\s,:\[][,:\[]|\s\[)-?[0-9]'
        r"(?:(?:[ \t().\-/]|\xc2\xa0|\xe2\x80[\x90-\x95])*[0-9]){5}"
        r"|\xef\xbc[\x90-\x99]|\xd9[\xa0-\xa9]|\xdb[\xb0-\xb9]|\xe0\xa5[\xa6-\xaf]"
        r'|(?i:phone|mobile|msisdn|tel|fax|cell)[^"]*"[ \t\r\n]*:'
    )
    max_span: int | None = PHONE_MAX_SPAN
    uses_hint = False

    def __init__(self, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> None:
        regs = tuple(dict.fromkeys(r.strip().upper() for r in regions if r.strip()))
        national: set[int] = set()
        for r in regs:
            if r not in phonenumbers.SUPPORTED_REGIONS:
                raise MaskingConfigError(f"unknown phone region {r!r}")
            reg = _region(r)
            assert reg is not None
            prefix = len(phonenumbers.PhoneMetadata.metadata_for_region(r).national_prefix or "")
            for length in reg.possible or range(_MIN_INTL_DIGITS, 16):
                if length > 0:
                    national.update((length, length + prefix, length + len(str(reg.cc))))
        self.regions: tuple[str, ...] = regs
        #: digit counts a number written without "+"/"00" can have
        self._national_lengths = frozenset(national)
        self._min_national = max(min(national, default=99), _MIN_INTL_DIGITS)
        self._worth_trying = _regions_filter(regs)

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield phone detections in ``text`` (``hint`` is ignored)."""
        budget = [_BUDGET_MIN + len(text) // _BUDGET_CHARS]
        last_end = 0
        for m in _PHONE_RUN_RE.finditer(text):
            a, b = m.span()
            nd = len(_NON_DIGIT_RE.sub("", m.group()))
            if nd < _MIN_INTL_DIGITS:
                continue
            intl_start = (a > 0 and text[a - 1] in "+\uff0b") or _intl_00_at(text, a)
            if nd < self._min_national and not intl_start and " " not in m.group():
                continue
            for d in self._candidates(text, a, b, budget):
                if d.start >= last_end:
                    last_end = d.end
                    yield d

    def _candidates(self, text: str, a: int, b: int, budget: list[int]) -> list[Detection]:
        if a > 0 and text[a - 1] in "+(\uff0b":
            a -= 1
        free: list[tuple[int, int]] = []
        acc = [0]  # prefix sums of digit counts over tokens
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
            while last + 1 < len(free) and last + 1 - i < _MAX_TOKENS:
                gap = text[free[last][1] : free[last + 1][0]]
                if gap.strip() or len(gap) > 2:
                    break
                last += 1
            for j in range(last, i - 1, -1):
                nd = acc[j + 1] - acc[i]
                if nd > _MAX_DIGITS + 3 or (nd < 7 if intl else nd not in national):
                    continue
                hit = self._validate(text, s0, free[j][1], budget)
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

    def _validate(self, text: str, s0: int, e0: int, budget: list[int]) -> Detection | None:
        sub = text[s0:e0]
        intl00 = _intl_00_at(text, s0)
        intl = sub[:1] in ("+", "\uff0b") or intl00
        if _DATE_LIKE_RE.search(sub):
            return None
        before = text[max(0, s0 - 2) : s0]
        if text[e0 : e0 + 1] in (":", "%") or (before.endswith(":") and before[:1].isdigit()):
            return None  # part of a time stamp or a percentage
        digits = _ascii_digits(sub)
        if intl00:
            digits = digits[2:]
        budget[0] -= 1
        if budget[0] < 0:
            raise MaskingError("text too dense with digit groups to check for phone numbers")
        if intl:
            e164 = is_valid_number(digits, "ZZ", international=True)
            return Detection(s0, e0, PHONE, e164) if e164 else None
        memo: dict = {}
        for region in self._worth_trying(digits):
            e164 = is_valid_number(digits, region, require_prefix=True, memo=memo)
            if e164:
                return Detection(s0, e0, PHONE, e164)
        return None


# --------------------------------------------------------------------------- C accelerator tables
# Plain tables of this module's precompiled data for the C port of PhoneDetector
# (proxy_worker/masking/_accel/phone.c), read once per region, calling code and
# detector. The C code calls the same compiled patterns (bound methods) as the
# functions above; nothing here is used by the Python detector.

_ACCEL_LITERAL_RE = re.compile(r"[0-9]+")


def _accel_literal(p: re.Pattern[str] | None) -> str | None:
    """The pattern's text when it only matches itself (ASCII digits), else ``None``."""
    return p.pattern if p is not None and _ACCEL_LITERAL_RE.fullmatch(p.pattern) else None


def _accel_desc(d: _Desc | None) -> tuple | None:
    return None if d is None else (tuple(sorted(d[0])), d[1].fullmatch)


def _accel_region(reg: _Region) -> tuple:
    """One :class:`_Region` for C: ``(cc, general, types_any, types, npp, transform,
    idd, possible, local_lengths, formats, max_input)`` where a description is
    ``(lengths, fullmatch)``, ``npp`` is ``(match, groups, sub, literal)``, ``idd``
    is ``(match, literal)``, ``transform`` the replacement template of ``re.sub``
    and a format ``(leading match or None, fullmatch, required)``."""
    npp = reg.npp
    return (
        reg.cc,
        _accel_desc(reg.general),
        reg.types_any.fullmatch if reg.types_any is not None else None,
        tuple(_accel_desc(t) for t in reg.types),
        (npp.match, npp.groups, npp.sub, _accel_literal(npp)) if npp is not None else None,
        reg.transform.replace("$", "\\") if reg.transform is not None else None,
        (reg.idd.match, _accel_literal(reg.idd)) if reg.idd is not None else None,
        reg.possible,
        tuple(sorted(reg.local_lengths)),
        tuple(
            (lead.match if lead is not None else None, pat.fullmatch, required)
            for lead, pat, required in reg.formats
        ),
        tuple(sorted(reg.max_input)),
    )


def _accel_cc(cc: int) -> tuple:
    """Calling code ``cc`` for C: ``(_cc_regions(cc), plan)``, the plan being
    :func:`_cc_plan` as ``(match or None, owner, regions)`` steps where
    ``owner[m.lastindex]`` is the index in ``regions`` that ``m.lastgroup`` names."""
    plan = []
    for pat, regs in _cc_plan(cc):
        if pat is None:
            plan.append((None, None, regs))
            continue
        owner = [-1] * (pat.groups + 1)
        for name, idx in pat.groupindex.items():
            owner[idx] = int(name[1:])
        plan.append((pat.match, tuple(owner), regs))
    return _cc_regions(cc), tuple(plan)


def _accel_detector(det: PhoneDetector) -> tuple:
    """A :class:`PhoneDetector` for C: ``(regions, national_lengths, min_national,
    filter)`` with the :class:`_Region` of each region and :func:`_filters`."""
    return (
        tuple(_region(r) for r in det.regions),
        tuple(sorted(det._national_lengths)),
        det._min_national,
        _filters(det.regions),
    )

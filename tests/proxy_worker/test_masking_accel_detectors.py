"""The C finders of the structural detectors (``_accel/detectors.c``) against the
Python reference detectors of :mod:`proxy_worker.masking.detectors`.

Every C finder must give exactly the Python detector's detections (spans and
normalised forms, in order) on ASCII text, NUL being a blanked-out character.
Checked with hypothesis on texts built to hit each regex's edge cases, explicit
regression examples, and every ASCII text of the presidio-research corpus.
Skipped when the accelerator is not built.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy_worker.masking import accel
from proxy_worker.masking import detectors as D

if accel.MODULE is None:
    pytest.skip("masking accelerator not built", allow_module_level=True)

MODULE = accel.MODULE

PY = {
    D.EMAIL: D.EmailDetector(),
    D.CREDIT_CARD: D.CreditCardDetector(),
    D.US_SSN: D.UsSsnDetector(),
    D.US_ITIN: D.UsItinDetector(),
    D.IBAN: D.IbanDetector(),
    D.IP_ADDRESS: D.IpAddressDetector(),
}
TYPES = tuple(PY)
# The driver only runs the IPv4 finder on text without this (the IPv6 gate).
IPV6_GATE = re.compile(r":[0-9A-Fa-f]{0,4}:")
#: The labelled corpus (presidio-research format): GATEHOUSE_PII_CORPUS, else the
#: checkout's neighbour ../shared/corpora (as bench/masking_accuracy.py reads it).
CORPUS = Path(
    os.environ.get("GATEHOUSE_PII_CORPUS")
    or Path(__file__).resolve().parents[3] / "shared/corpora/presidio_synth_dataset_v2.json"
)

EXAMPLES = settings(
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def check(entity_type: str, text: str, hint: str = "") -> None:
    if entity_type == D.IBAN and not D._IBAN_REGISTRY:
        # python-stdnum fallback: the C finder refuses, the engine uses Python.
        with pytest.raises(NotImplementedError):
            MODULE.find(entity_type, text, hint)
        return
    want = [tuple(d) for d in PY[entity_type].find(text, hint)]
    assert MODULE.find(entity_type, text, hint) == want, (entity_type, text, hint)


def check_ip(text: str) -> None:
    if not IPV6_GATE.search(text):
        check(D.IP_ADDRESS, text)


def joined(*parts: st.SearchStrategy[str], max_size: int = 12) -> st.SearchStrategy[str]:
    """Concatenations of fragments drawn from ``parts``."""
    return st.lists(st.one_of(*parts), max_size=max_size).map("".join)


def chars(alphabet: str, max_size: int = 8) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, max_size=max_size)


DIGITS = "0123456789"
LETTERS = "abcxyzABCXYZ"
NOISE = st.sampled_from(["\x00", "\n", "\t", " ", "  ", '"', ",", ":", "/", "(", ")"])

# --------------------------------------------------------------------------- e-mail

_email_fragment = st.one_of(
    chars("ab.%+-_@Z09\x00 ", 6),
    st.sampled_from(
        ["@", ".", "..", "xn--", "xn--ab", "com", "co", "c", "example", "a-b", "_x", "-"]
    ),
    st.integers(1, 70).map(lambda k: "a" * k),  # local part / label / TLD length bounds
    st.integers(60, 66).map(lambda k: "b" * k + "."),
    NOISE,
)
_email_address = st.builds(
    lambda local, labels, tld: f"{local}@{''.join(lab + '.' for lab in labels)}{tld}",
    chars("ab1.%+-_", 10),
    st.lists(chars("ab1-_", 6), min_size=1, max_size=10),
    st.one_of(chars("abcXY", 6), st.sampled_from(["xn--p1ai", "xn--", "c0m", "com1"])),
)


_email_plain = st.builds(
    "{}@{}.{}".format,
    st.sampled_from(["roger.harris", "a", "x_y+z", ".a", "..", "%"]),
    st.sampled_from(["example", "a-b.c", "b_c", "x1.y2", "mail.example"]),
    st.sampled_from(
        ["com", "io", "COM", "c", "c1", "xn--p1ai", "xn--a_b-1", "XN--p1ai", "xn--" + "a" * 62]
    ),
)


@EXAMPLES
@given(joined(_email_fragment, _email_address, _email_plain, max_size=10))
def test_email(text: str) -> None:
    check(D.EMAIL, text)


@EXAMPLES
@given(chars("a1_.%+-@ \x00", 40))
def test_email_small_alphabet(text: str) -> None:
    check(D.EMAIL, text)


# --------------------------------------------------------------------------- cards


def _luhn_complete(body: str) -> str:
    for d in DIGITS:
        if D.luhn_valid(body + d):
            return body + d
    raise AssertionError(body)


@st.composite
def _card_number(draw: st.DrawFn) -> str:
    """A number with a known issuer prefix and length, Luhn-valid (or not)."""
    lo, hi, plen, lengths = draw(st.sampled_from(D._CARD_RANGES))
    length = draw(st.sampled_from(sorted(lengths)))
    prefix = str(draw(st.integers(lo, hi))).zfill(plen)
    body = prefix + draw(chars(DIGITS, length)).ljust(length - 1 - plen, "0")[: length - 1 - plen]
    number = _luhn_complete(body)
    if draw(st.booleans()):
        number = number[:-1] + draw(st.sampled_from(DIGITS))
    # Group it: none, 4-4-4-4 style or random cuts, with one separator (or mixed).
    cuts = draw(st.lists(st.integers(1, len(number) - 1), max_size=5, unique=True))
    if draw(st.booleans()):
        cuts = list(range(4, len(number), 4))
    seps = draw(st.sampled_from([" ", "-", " -", "- "]))
    out, last = [], 0
    for k, c in enumerate(sorted(cuts)):
        out.append(number[last:c])
        out.append(seps[k % len(seps)])
        last = c
    out.append(number[last:])
    return "".join(out)


_card_fragment = st.one_of(
    chars(DIGITS, 6),
    st.sampled_from([" ", "-", "x", "A", "_", "123-45-6789 ", "4111 1111 1111 1111"]),
    NOISE,
    _card_number(),
)


@EXAMPLES
@given(joined(_card_fragment, max_size=8))
def test_card(text: str) -> None:
    check(D.CREDIT_CARD, text)


@EXAMPLES
@given(chars("0123456789 -a\x00", 60))
def test_card_small_alphabet(text: str) -> None:
    check(D.CREDIT_CARD, text)


# --------------------------------------------------------------------------- SSN / ITIN

_KEYWORDS = [
    "ssn", "SSN", "ssns", "SSNs", "ssnx", "SS#", "ss #", "social security", "Social_Sec",
    "social-\t-security", "socialsecurityx", "social secur", "soc. sec", "soc.sec", "soc sec",
    "soc\x1csec", "soc security", "socsec", "xssn", "itin", "ITINs", "itinss", "tin", "TIN",
    "tins", "individual taxpayer", "Individual_Taxpayer", "taxpayer id", "taxpayer-ID",
    "taxpayerid", "taxpayer ids", "stin",
]  # fmt: skip
_keyword = st.sampled_from(_KEYWORDS)


@st.composite
def _tin_number(draw: st.DrawFn) -> str:
    if draw(st.booleans()):  # valid SSN / ITIN
        return draw(st.sampled_from(["661-91-9620", "661 91 9620", "661919620", "912-70-1234"]))
    area = draw(st.sampled_from(["000", "001", "123", "666", "661", "899", "900", "912", "999"]))
    group = draw(
        st.sampled_from(["00", "01", "49", "50", "65", "66", "70", "88", "89", "93", "99"])
    )
    serial = draw(st.sampled_from(["0000", "0001", "9620", "1234"]))
    sep = draw(st.sampled_from(["", "-", " ", "-", " -"]))
    return area + sep[:1] + group + sep[-1:] + serial


_tin_fragment = st.one_of(
    _tin_number(),
    _keyword,
    chars(DIGITS + "- ", 4),
    chars(LETTERS + "._#", 4),
    st.integers(0, 60).map(lambda k: "." * k),  # keyword window distance
    NOISE,
    st.sampled_from(["\x1c", "\x1f", "\x0b", "#"]),
)
_hint = st.one_of(st.just(""), _keyword, joined(_keyword, chars(LETTERS + "_ ", 5), max_size=3))


@EXAMPLES
@given(joined(_tin_fragment, max_size=8), _hint)
def test_ssn(text: str, hint: str) -> None:
    check(D.US_SSN, text, hint)


@EXAMPLES
@given(joined(_tin_fragment, max_size=8), _hint)
def test_itin(text: str, hint: str) -> None:
    check(D.US_ITIN, text, hint)


@EXAMPLES
@given(
    st.sampled_from(["", "x", ".", "\x00"]),
    _keyword,
    st.integers(D.SSN_KEYWORD_WINDOW - 10, D.SSN_KEYWORD_WINDOW + 2),
    st.sampled_from(["661919620", "912701234", "912-70-1234"]),
)
def test_tin_keyword_window(before: str, keyword: str, gap: int, number: str) -> None:
    """A keyword just inside or outside the window (the look-behind sees further)."""
    text = before + keyword + "." * max(0, gap - len(keyword)) + number
    check(D.US_SSN, text)
    check(D.US_ITIN, text)


@EXAMPLES
@given(chars("0912 -a\x00", 30), st.sampled_from(["", "ssn", "tin"]))
def test_tin_small_alphabet(text: str, hint: str) -> None:
    check(D.US_SSN, text, hint)
    check(D.US_ITIN, text, hint)


# --------------------------------------------------------------------------- IBAN

needs_registry = pytest.mark.skipif(not D._IBAN_REGISTRY, reason="no IBAN registry")
_BBAN_CLASS = {"0-9": DIGITS, "A-Z": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "A-Z0-9": DIGITS + "ABCZ"}


def _iban(country: str, rnd: random.Random) -> str:
    _length, rx = D._IBAN_REGISTRY[country]
    bban = "".join(
        "".join(rnd.choice(_BBAN_CLASS[cls]) for _ in range(int(k)))
        for cls, k in re.findall(r"\[([^\]]+)\]\{(\d+)\}", rx.pattern)
    )
    check_digits = 98 - int((bban + country + "00").translate(D._IBAN_DIGITS)) % 97
    return f"{country}{check_digits:02d}{bban}"


@st.composite
def _iban_text(draw: st.DrawFn) -> str:
    """A valid IBAN (sometimes damaged), compact or grouped, in any case."""
    rnd = random.Random(draw(st.integers(0, 2**32)))
    value = _iban(draw(st.sampled_from(sorted(D._IBAN_REGISTRY))), rnd)
    how = draw(st.integers(0, 6))
    if how == 1:
        value = " ".join(value[k : k + 4] for k in range(0, len(value), 4))
    elif how == 2:
        value = value.lower()
    elif how == 3:
        k = draw(st.integers(0, len(value) - 1))
        value = value[:k] + draw(st.sampled_from(DIGITS + "AZ ")) + value[k + 1 :]
    elif how == 4:
        k = draw(st.integers(1, len(value) - 1))
        value = value[:k] + " " + value[k:]
    elif how == 5:  # right length and check digits, any characters in the BBAN
        bban = "".join(rnd.choice(DIGITS + "AZ") for _ in range(len(value) - 4))
        check_digits = 98 - int((bban + value[:2] + "00").translate(D._IBAN_DIGITS)) % 97
        value = f"{value[:2]}{check_digits:02d}{bban}"
    elif how == 6:  # split into many small groups (the run takes at most 12 after the first)
        cuts = sorted(draw(st.lists(st.integers(5, len(value) - 1), unique=True, max_size=16)))
        value = " ".join(value[a:b] for a, b in zip([0, *cuts], [*cuts, len(value)], strict=True))
    return value


_iban_fragment = st.one_of(
    _iban_text(),
    st.sampled_from(["GB", "DE", "FR", "XX", "gb", "NO", "GB82", "DE89 ", "  ", " "]),
    chars(DIGITS, 6),
    chars(LETTERS + DIGITS, 6),
    st.integers(28, 40).map(lambda k: "1" * k),
    NOISE,
)


@needs_registry
@EXAMPLES
@given(joined(_iban_fragment, max_size=8))
def test_iban(text: str) -> None:
    check(D.IBAN, text)


@needs_registry
@EXAMPLES
@given(st.lists(_iban_text(), min_size=1, max_size=3).map(" ".join))
def test_iban_valid_numbers(text: str) -> None:
    check(D.IBAN, text)


@needs_registry
@EXAMPLES
@given(joined(st.sampled_from(["GB", "AZ", "1", "12", "a", " ", "\x00"]), max_size=40))
def test_iban_small_alphabet(text: str) -> None:
    check(D.IBAN, text)


# --------------------------------------------------------------------------- IPv4

_octet = st.one_of(
    st.integers(0, 300).map(str),
    st.integers(0, 99).map(lambda v: f"0{v}"),
    st.sampled_from(["00", "000", "0000", "1234", ""]),
)
_quad = st.lists(_octet, min_size=3, max_size=5).map(".".join)
_valid_quad = st.tuples(*[st.integers(0, 255)] * 4).map(lambda q: ".".join(map(str, q)))
_ip_fragment = st.one_of(
    _quad,
    _valid_quad,
    chars(DIGITS + ".", 5),
    chars("a_.", 3),
    NOISE,
    st.sampled_from([".", "..", "x"]),
)


@EXAMPLES
@given(joined(_ip_fragment, max_size=8))
def test_ipv4(text: str) -> None:
    check_ip(text)


@EXAMPLES
@given(chars("0125.a \x00", 40))
def test_ipv4_small_alphabet(text: str) -> None:
    check_ip(text)


# --------------------------------------------------------------------------- all finders


@EXAMPLES
@given(chars("0123456789abAZ@._-+%# \x00\n\t:", 50), _hint)
def test_every_finder_on_mixed_text(text: str, hint: str) -> None:
    for entity_type in TYPES:
        if entity_type == D.IP_ADDRESS:
            check_ip(text)
        else:
            check(entity_type, text, hint)


REGRESSIONS = [
    # e-mail: possessive local part, label/TLD backtracking, dots, xn--
    (D.EMAIL, "rogerharris@example.com"),
    (D.EMAIL, "..a@b.co x@y.z .@a.bc ..@b.cd"),
    (D.EMAIL, "a@b.xn--abc a@b.c1 a@b.com.x a@b.com1.de a@b.c-d.ef"),
    (D.EMAIL, "a" * 64 + "@b.co " + "a" * 65 + "@b.co"),
    (D.EMAIL, "x@" + "b." * 9 + "co"),
    (D.EMAIL, "x@" + "a" * 63 + ".co x@" + "a" * 64 + ".co"),
    (D.EMAIL, "x@a." + "b" * 63 + " x@a." + "b" * 64),
    (D.EMAIL, "a@b.co@c.de x@y.COM\x00a@b.cd"),
    # cards: glued groups, separators, longest window
    (D.CREDIT_CARD, "4849815406993709740"),
    (D.CREDIT_CARD, "4111 1111 1111 1111 x4111-1111-1111-1111 4111-1111-1111-1111y"),
    (D.CREDIT_CARD, "123-45-6789 4111 1111 1111 1111"),
    (D.CREDIT_CARD, "12 4111 1111 1111 1111 4111 1111 1111 1111 4111"),
    (D.CREDIT_CARD, "a4111 1111 1111 1111 1"),
    # SSN / ITIN
    (D.US_SSN, "661-91-9620"),
    (D.US_SSN, "ssn: 661919620, 1-661-91-9620 661-91-9620-1 661-91-96201 661 91-9620"),
    (D.US_SSN, "ssn" + "." * 45 + "661919620"),  # keyword at the window's first character
    (D.US_SSN, "ssn" + "." * 46 + "661919620"),
    (D.US_SSN, "xssn" + "." * 45 + "661919620"),  # the look-behind sees before the window
    (D.US_SSN, "soc. sec 661919620 soc sec661919620 socsec 661919620 social security 661919620"),
    (D.US_SSN, "xssn 661919620 ssnx 661919620 soc. sec 661919620"),
    (D.US_ITIN, "912-70-1234 tin 912701234 itins:912711234"),
]


@pytest.mark.parametrize(("entity_type", "text"), REGRESSIONS)
def test_regressions(entity_type: str, text: str) -> None:
    check(entity_type, text)
    check(entity_type, text, "ssn tin")


@pytest.mark.parametrize(
    "text",
    [
        "GB10JGCI23956064241456",
        "GB82 WEST 1234 5698 7654 32 and gb82west12345698765432",
        "GB82 WEST 1234 5698 7654 32X GB82WEST12345698765432 1",
        "DE89 3704 0044 0532 0130 00 NO9386011117947 XX12 3456 7890 1234",
        "GB82WEST123456987654321234567890123456789 GB82 WEST",
        "GB82 W E S T 1 2 3 4 5 6 9876543 2",  # 13 groups
        "GB82 W E S T 1 2 3 4 5 6 9 876543 2",  # 14 groups: too many
        "GB25 1234 1234 5698 7654 32",  # digits where the BBAN wants letters
    ],
)
def test_iban_regressions(text: str) -> None:
    check(D.IBAN, text)


@pytest.mark.parametrize(
    "text",
    ["78.142.45.217", "01.2.3.4 1.2.3.4.5 256.1.1.1 1.2.3.4 a1.2.3.4 .1.2.3.4 1.2.3.4a 1.2.3.4."],
)
def test_ipv4_regressions(text: str) -> None:
    check_ip(text)


@pytest.mark.parametrize("entity_type", TYPES)
@pytest.mark.parametrize("text", ["", "\x00"])
def test_empty_and_blanked(entity_type: str, text: str) -> None:
    assert MODULE.find(entity_type, text) == []
    assert MODULE.find(entity_type, text, "ssn") == []


def test_non_ascii_is_refused() -> None:
    with pytest.raises(ValueError):
        MODULE.find(D.EMAIL, "josé@example.com")


def test_presidio_corpus() -> None:
    if not CORPUS.exists():
        pytest.skip(f"{CORPUS} not found")
    texts = [r["full_text"] for r in json.loads(CORPUS.read_text(encoding="utf-8"))]
    texts = [t for t in texts if isinstance(t, str) and t.isascii()]
    assert texts
    for text in texts:
        for entity_type in TYPES:
            if entity_type == D.IP_ADDRESS:
                check_ip(text)
            else:
                check(entity_type, text)
        check(D.US_SSN, text, "ssn")
        check(D.US_ITIN, text, "itin")

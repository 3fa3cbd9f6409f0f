"""The C PhoneDetector (``proxy_worker/masking/_accel/phone.c``) against the Python one.

``MODULE.find("PHONE", text, detector=det)`` must give exactly
``[tuple(d) for d in det.find(text)]`` on ASCII text (NUL = a blanked-out
character), and the same :class:`MaskingError` when the validation budget runs out.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy_worker.masking.accel import MODULE
from proxy_worker.masking.errors import MaskingError
from proxy_worker.masking.phone import DEFAULT_PHONE_REGIONS, PhoneDetector, is_valid_number

pytestmark = pytest.mark.skipif(MODULE is None, reason="masking accelerator not built")

REGION_LISTS = [
    DEFAULT_PHONE_REGIONS,
    (),
    ("DE",),
    ("US", "GB", "IN"),
    ("BR", "FR"),
    ("AU", "AR", "MX"),
]
#: See test_masking_accel_detectors.py.
CORPUS = os.environ.get("GATEHOUSE_PII_CORPUS") or str(
    Path(__file__).resolve().parents[3] / "shared/corpora/presidio_synth_dataset_v2.json"
)


@cache
def detector(regions: tuple[str, ...]) -> PhoneDetector:
    return PhoneDetector(regions)


def python_find(det: PhoneDetector, text: str) -> list[tuple] | str:
    try:
        return [tuple(d) for d in det.find(text)]
    except MaskingError as e:
        return f"MaskingError: {e}"


def c_find(det: PhoneDetector, text: str) -> list[tuple] | str:
    try:
        return MODULE.find("PHONE", text, detector=det)
    except MaskingError as e:
        return f"MaskingError: {e}"


def check(text: str, regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS) -> None:
    det = detector(regions)
    assert c_find(det, text) == python_find(det, text), (regions, text)


# ------------------------------------------------------------------ phone-like pieces

_TYPES = [
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.PREMIUM_RATE,
    phonenumbers.PhoneNumberType.SHARED_COST,
    phonenumbers.PhoneNumberType.VOIP,
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
    phonenumbers.PhoneNumberType.UAN,
]
_FORMATS = [
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.NATIONAL,
]


def _examples() -> list[str]:
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for t in _TYPES:
            num = phonenumbers.example_number_for_type(region, t)
            if num is None:
                continue
            for f in _FORMATS:
                s = phonenumbers.format_number(num, f)
                if s.isascii():
                    out.append(s)
    return out


EXAMPLES = _examples()

digit_group = st.text(alphabet="0123456789", min_size=1, max_size=5)
separator = st.sampled_from([" ", "-", ".", "/", "(", ")", ") ", " (", "\t", "  ", " - ", "", "--"])


@st.composite
def digit_groups(draw) -> str:
    n = draw(st.integers(1, 7))
    parts = [draw(digit_group)]
    for _ in range(n - 1):
        parts.append(draw(separator))
        parts.append(draw(digit_group))
    return "".join(parts)


@st.composite
def example_number(draw) -> str:
    s = draw(st.sampled_from(EXAMPLES))
    if draw(st.booleans()):  # shuffle the punctuation a little
        s = s.replace(" ", draw(st.sampled_from([" ", "-", ".", "  ", "\t", ""])))
    return s


prefix = st.sampled_from(
    ["", "", "", "+", "+", "00", "011", "0", "(0)", "+1 ", "+44 ", "0049 ", "(", "+("]
)
extension = st.sampled_from(
    [
        "",
        "",
        "",
        "x12",
        " x 123",
        "X9",
        "ext. 123",
        "EXT 4",
        "ext.99",
        " extension 9",
        "Extension12",
        "#45",
        " # 6",
        "x12345678",
        "ext",
        "x",
        " ext. ",
        "e5",
        "E12",
    ]
)
filler = st.sampled_from(
    [
        " ",
        " ",
        ", ",
        "; ",
        " or ",
        "\n",
        " tel: ",
        "Phone: ",
        "call ",
        "abc",
        "id_",
        "ORD-",
        "-",
        ".",
        "/",
        ":",
        "%",
        "12:30",
        "at 12:30 ",
        "2024-01-15",
        "15/01/2024",
        "1.2.2024",
        "50%",
        "\x00",
        "\x00\x00",
        "a",
        "x",
        "e",
        "Z",
        "_",
        '"',
        "(",
        ")",
        "+",
        "\t",
        "\x1c",
        "\x0b",
        "olivia57@example.org ",
        "No. ",
    ]
)


@st.composite
def piece(draw) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        body = draw(example_number())
    elif kind == 1:
        body = draw(digit_groups())
    elif kind == 2:
        body = draw(st.sampled_from(FAKER_NUMBERS))
    else:
        body = draw(st.text(alphabet="0123456789 -().+/x#\x00:%", max_size=20))
    return draw(prefix) + body + draw(extension)


@st.composite
def phone_text(draw) -> str:
    n = draw(st.integers(1, 5))
    parts = []
    for _ in range(n):
        parts.append(draw(filler))
        parts.append(draw(piece()))
    parts.append(draw(filler))
    return "".join(parts)


def _faker_numbers() -> list[str]:
    try:
        from faker import Faker
    except ImportError:  # pragma: no cover
        return ["+1-261-456-4985", "(464)953-2684x2369", "947.310.0472x011"]
    fake = Faker("en_US")
    fake.seed_instance(1234)
    return [fake.phone_number() for _ in range(2000)]


FAKER_NUMBERS = _faker_numbers()

SETTINGS = settings(
    max_examples=int(os.environ.get("PHONE_EXAMPLES", "3000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ------------------------------------------------------------------ tests


@SETTINGS
@given(text=phone_text())
def test_default_regions(text: str) -> None:
    check(text)


@SETTINGS
@given(text=phone_text(), regions=st.sampled_from(REGION_LISTS))
def test_other_regions(text: str, regions: tuple[str, ...]) -> None:
    check(text, regions)


@SETTINGS
@given(text=st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_any_ascii(text: str) -> None:
    check(text)


@pytest.mark.parametrize("regions", REGION_LISTS)
def test_examples_and_faker(regions: tuple[str, ...]) -> None:
    det = detector(regions)
    for s in EXAMPLES + FAKER_NUMBERS:
        for text in (s, f"Call {s} today.", f"x{s}", f"{s}:", f"\x00{s}\x00"):
            assert c_find(det, text) == python_find(det, text), (regions, text)


def test_known_values() -> None:
    for text in [
        "+1-261-456-4985",
        "(464)953-2684x2369",
        "947.310.0472x011",
        "Contact olivia57@example.org or 802-339-9862x63494",
        "call 030 901820 or +49 30 901820, 0049 30 901820 ext. 12",
        "011 44 20 7946 0958",
        "+55 11 91234-5678 (11) 91234-5678 0 11 91234-5678",
        "2024-01-02 12:30 15% 12:30 2125551234",
    ]:
        for regions in REGION_LISTS:
            check(text, regions)
    assert MODULE.find("PHONE", "+1-212-456-4985", detector=detector(DEFAULT_PHONE_REGIONS)) == [
        (0, 15, "PHONE", "+12124564985")
    ]


@pytest.mark.skipif(not os.path.exists(CORPUS), reason="presidio corpus not available")
def test_presidio_corpus() -> None:
    with open(CORPUS, encoding="utf-8") as f:
        data = json.load(f)
    texts = [d["full_text"] for d in data if d.get("full_text", "").isascii()]
    assert len(texts) > 100
    found = 0
    for regions in (DEFAULT_PHONE_REGIONS, ("US", "GB", "IN")):
        det = detector(regions)
        for text in texts:
            want = python_find(det, text)
            assert c_find(det, text) == want, (regions, text)
            found += len(want)
    assert found > 0


@pytest.mark.parametrize("regions", [DEFAULT_PHONE_REGIONS, (), ("DE",)])
def test_budget(regions: tuple[str, ...]) -> None:
    det = detector(regions)
    # "00" + digits at every token start: up to 6 windows validated per token
    text = " ".join(f"00{i % 90 + 9} {i:03d}" for i in range(3000))
    want = python_find(det, text)
    assert isinstance(want, str) and want.startswith("MaskingError")
    assert c_find(det, text) == want
    # just under the budget: the same detections
    short = text[: len(text) // 20]
    assert c_find(det, short) == python_find(det, short)


def test_refcounts_flat() -> None:
    import gc
    import tracemalloc

    det = detector(DEFAULT_PHONE_REGIONS)
    texts = ["+1-261-456-4985", "(464)953-2684x2369", "0049 30 901820", "+55 11 91234-5678 x"]
    for t in texts * 200:
        MODULE.find("PHONE", t, detector=det)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for t in texts * 5000:
        MODULE.find("PHONE", t, detector=det)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 200_000


VALID_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)


def _check_valid(digits: str, region: str) -> None:
    for intl in (False, True):
        want = is_valid_number(digits, region, international=intl, require_prefix=True)
        got = MODULE.phone_is_valid_number(digits, region, international=intl)
        assert got == want, (digits, region, intl)


def test_is_valid_number_examples() -> None:
    """Every region's example numbers (national and international digits) in
    their own region and a few others."""
    for region in VALID_REGIONS:
        for t in _TYPES:
            num = phonenumbers.example_number_for_type(region, t)
            if num is None:
                continue
            nsn = phonenumbers.national_significant_number(num)
            national = "".join(
                c
                for c in phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
                if c in "0123456789"
            )
            for digits in {nsn, national, f"{num.country_code}{nsn}", f"00{num.country_code}{nsn}"}:
                for r in (region, "US", "DE", "BR", "AR", "GB"):
                    _check_valid(digits, r)


@SETTINGS
@given(
    digits=st.text(alphabet="0123456789", min_size=0, max_size=19),
    region=st.sampled_from(VALID_REGIONS),
)
def test_is_valid_number_random(digits: str, region: str) -> None:
    _check_valid(digits, region)

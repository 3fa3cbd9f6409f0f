"""Detectors added to the masking engine: secrets, ITIN, regional identifiers, deny
lists, the fast phone and IBAN validators (checked against phonenumbers and
python-stdnum), JSONPath rules, binary bodies, decompression limits and the raw-JSON
prefilter."""

from __future__ import annotations

import base64
import gzip
import json
import random
import re
import zlib

import brotli
import phonenumbers
import pytest
import zstandard
from faker import Faker
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import iban as stdnum_iban

from proxy_worker.masking import (
    DEFAULT_ENTITY_TYPES,
    DEFAULT_PHONE_REGIONS,
    ENTITY_TYPES,
    REGIONAL_ENTITY_TYPES,
    SECRET_ENTITY_TYPES,
    BinaryBodyError,
    BodyTooLargeError,
    DecompressionError,
    Masker,
    MaskingConfigError,
    MaskingRule,
    StreamDecoder,
    decode_content,
    validate_rule,
)
from proxy_worker.masking.detectors import card_issuer, iban_valid, itin_valid, luhn_valid
from proxy_worker.masking.phone import is_valid_number
from proxy_worker.masking.secrets import looks_secret

KEY = b"k"
DEFAULT = MaskingRule(1, "default", entity_types=DEFAULT_ENTITY_TYPES)


def make(*rules: MaskingRule, **kw) -> Masker:
    return Masker(rules or (DEFAULT,), hash_key=KEY, **kw)


@pytest.fixture(scope="module")
def masker() -> Masker:
    return make()


def types_in(m: Masker, text: str, hint: str = "") -> list[str]:
    return [d.entity_type for d in m.scan(text, hint)]


# ----------------------------------------------------------------------------- registry


def test_registry_lists_every_type_once() -> None:
    assert len(set(ENTITY_TYPES)) == len(ENTITY_TYPES)
    assert set(DEFAULT_ENTITY_TYPES) | set(REGIONAL_ENTITY_TYPES) == set(ENTITY_TYPES)
    assert not set(DEFAULT_ENTITY_TYPES) & set(REGIONAL_ENTITY_TYPES)
    assert set(SECRET_ENTITY_TYPES) <= set(DEFAULT_ENTITY_TYPES)
    assert ENTITY_TYPES[-1] == "PHONE"
    for t in ENTITY_TYPES:  # each name builds a detector with a gate and a bounded span
        validate_rule(MaskingRule(1, "x", entity_types=(t,)))


# ----------------------------------------------------------------------------- secrets

GH = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
AWS = "AKIAIOSFODNN7EXAMPLE"
OPENAI = (
    "sk-proj-"
    + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6kM9nP2rS5uV8xA1dG4iL7oR0tU3wX6zB9"
    + "T3BlbkFJ"
)
ANTHROPIC = "sk-ant-api03-" + "x" * 10 + "Y7z" * 30 + "AA"
GOOGLE = "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6q"
SLACK = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
JWT = ".".join(
    [
        base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("="),
        base64.urlsafe_b64encode(b'{"sub":"1234567890","name":"Jane"}').decode().rstrip("="),
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ]
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aozN3tihPmljnnudb9G3HECdnH\n"
    "lWu2/a1gB9JW5TBQ+AVpum9Okx7KfqkfBKL9mcHgSL0yWMdjMfNOqNtrQqKlN4kE\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("etype", "text", "secret"),
    [
        ("GITHUB_TOKEN", f"token {GH} here", GH),
        ("AWS_ACCESS_KEY", f"aws id {AWS}.", AWS),
        ("OPENAI_API_KEY", f"OPENAI_API_KEY={OPENAI}", OPENAI),
        ("ANTHROPIC_API_KEY", f"key: {ANTHROPIC}", ANTHROPIC),
        ("GOOGLE_API_KEY", f"?key={GOOGLE}&q=1", GOOGLE),
        ("SLACK_TOKEN", f"slack {SLACK}", SLACK),
        ("STRIPE_KEY", f"stripe {STRIPE}", STRIPE),
        ("JWT", f"id_token {JWT} end", JWT),
        ("PRIVATE_KEY", f"key:\n{PEM}\nthanks", PEM),
        ("BEARER_TOKEN", "Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0", "9f8e7d"),
        ("URL_CREDENTIALS", "db at postgres://admin:s3cr3tPass@db.internal:5432/x", "s3cr3t"),
        ("SECRET", "password=Tr0ub4dor&3 next", "Tr0ub4dor"),
        ("SECRET", "api_key: 'q8Zr2LmV9xKp4TnW7'", "q8Zr2LmV9xKp4TnW7"),
        ("SECRET", '{"client_secret": "Zx81kQp0vMw3LsT6"}', "Zx81kQp0vMw3LsT6"),
    ],
)
def test_secrets_masked(masker: Masker, etype: str, text: str, secret: str) -> None:
    masked, findings = masker.mask_text(text)
    assert secret not in masked
    assert etype in [f.entity_type for f in findings]
    assert f"[{etype}]" in masked


@pytest.mark.parametrize(
    "text",
    [
        "password=changeme",
        "password: ********",
        "api_key=<your key here>",
        "api_key=${OPENAI_API_KEY}",
        "token=null",
        "the max_tokens=512 setting",
        "Bearer authentication is described in RFC 6750",
        "sk-this-is-not-a-key-at-all-really",
        "eyJhbGciOiJIUzI1NiJ9.not.a.jwt",
        "see https://example.com/path:8080",
        "prompt_tokens: 120, completion_tokens: 20",
    ],
)
def test_secret_lookalikes_not_masked(masker: Masker, text: str) -> None:
    assert masker.mask_text(text)[1] == []


def test_secret_under_json_key_uses_the_key(masker: Masker) -> None:
    body = json.dumps({"user": "jane", "password": "hunter2xyz", "page_token": "abc"}).encode()
    out = json.loads(masker.mask_body(body, "application/json").body)
    assert out == {"user": "jane", "password": "[SECRET]", "page_token": "abc"}


def test_looks_secret() -> None:
    assert looks_secret("hunter2xyz", password=True)
    assert not looks_secret("aaaaaaa", password=True)
    assert not looks_secret("short", password=False)
    assert looks_secret("q8Zr2LmV9xKp4TnW7", password=False)


def test_punycode_top_level_domain_is_part_of_the_address(masker: Masker) -> None:
    # xn-- (IDNA, RFC 5890) before plain letters: "xn" alone once ended the match and
    # left "--p1ai" behind.
    masked, _ = masker.mask_text("write to ivan@example.xn--p1ai today")
    assert masked == "write to [EMAIL] today"


def test_url_credentials_win_over_email(masker: Masker) -> None:
    masked, _ = masker.mask_text("https://bob:pw123456@example.com/x")
    assert masked == "https://[URL_CREDENTIALS]@example.com/x"


# ----------------------------------------------------------------------------- ITIN, cards


def test_itin() -> None:
    assert itin_valid("912", "70", "1234") and not itin_valid("912", "69", "1234")
    assert not itin_valid("123", "70", "1234")
    m = make()
    assert types_in(m, "ITIN 912-70-1234") == ["US_ITIN"]
    assert "US_ITIN" not in types_in(m, "ref 912701234")  # (a Madrid phone number)
    assert types_in(m, "itin: 912701234") == ["US_ITIN"]
    assert types_in(m, "912701234", hint="taxpayer_itin") == ["US_ITIN"]
    assert types_in(m, "912-69-1234") == []  # group 69 is not issued


@pytest.mark.parametrize(
    "number",
    [
        "2221000000000009",  # Mastercard 2-series, low end
        "2720999999999996",  # Mastercard 2-series, high end
        "4000000000000000006",  # Visa 19 digits
        "6200000000000000000",  # UnionPay 19 digits
        "213176828496175",  # legacy JCB 15 digits (corpus)
        "180016070420458",  # legacy JCB 15 digits (corpus)
        "3598899323053410",  # JCB block 35 outside 3528-3589 (corpus)
        "2200000000000004",  # Mir
    ],
)
def test_card_issuer_ranges(number: str) -> None:
    assert luhn_valid(number)
    assert card_issuer(number)
    assert types_in(make(), f"card {number} ok") == ["CREDIT_CARD"]


def test_card_rejections() -> None:
    assert not card_issuer("7000000000000007")  # MII 7: petroleum, not a card network
    assert not card_issuer("5600000000")  # too short for any network
    assert types_in(make(), "4111111111111112") == []  # Luhn fails


# ----------------------------------------------------------------------------- phone


def test_fast_phone_validator_agrees_with_phonenumbers() -> None:
    """The precompiled validator gives phonenumbers' answer (parse + is_valid_number)."""
    rnd = random.Random(5)
    cands: list[str] = []
    for loc in ("en_US", "en_GB", "de_DE", "fr_FR", "it_IT", "es_ES", "pt_BR", "en_IN", "sv_SE"):
        f = Faker(loc)
        f.seed_instance(3)
        cands += [re.split(r"\s*(?:x|ext\.?|#)\s*\d+$", f.phone_number())[0] for _ in range(60)]
    cands += [
        "".join(rnd.choice("0123456789") for _ in range(rnd.randint(6, 14))) for _ in range(300)
    ]
    checked = 0
    for c in cands:
        intl = c.strip().startswith("+") and not c.strip().startswith("+0")
        digits = re.sub(r"\D", "", c)
        for region in ("US", "GB", "DE", "FR", "BR", "IN"):
            try:
                num = phonenumbers.parse(("+" if intl else "") + digits, region)
                ref = (
                    phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
                    if phonenumbers.is_valid_number(num)
                    else None
                )
            except phonenumbers.NumberParseException:
                ref = None
            assert is_valid_number(digits, region, international=intl) == ref, (c, region)
            checked += 1
    assert checked > 5000


def test_default_regions_and_national_prefix() -> None:
    m = make()
    assert "GB" in DEFAULT_PHONE_REGIONS and "US" in DEFAULT_PHONE_REGIONS
    assert types_in(m, "call 030 901820 today") == ["PHONE"]  # German, with trunk 0
    assert types_in(m, "Meet me at 1987 74 Diakou St") == []  # house number + postcode
    assert types_in(m, "ruf 07700 900123 an") in (["PHONE"], [])  # UK drama range: either
    with pytest.raises(MaskingConfigError):
        make(phone_regions=("XX",))


# ----------------------------------------------------------------------------- IBAN


def test_iban_validator_agrees_with_stdnum() -> None:
    f = Faker()
    f.seed_instance(9)
    rnd = random.Random(2)
    samples = [f.iban() for _ in range(300)]
    samples += [s[:5] + str(rnd.randint(0, 9)) + s[6:] for s in samples]  # one digit changed
    for s in samples:
        assert iban_valid(s) == stdnum_iban.is_valid(s), s


# ----------------------------------------------------------------------------- regional


@pytest.mark.parametrize(
    ("etype", "value"),
    [
        ("UK_NHS", "943 476 5919"),
        ("CA_SIN", "123 456 782"),
        ("IN_AADHAAR", "2345 6789 0124"),
        ("IN_PAN", "ABCPD1234E"),
        ("ES_DNI", "54362315K"),
        ("ES_NIE", "X2482300W"),
        ("IT_FISCAL_CODE", "RCCMNL83S18D969H"),
        ("FR_NIR", "2 95 10 99 126 111 93"),
        ("BR_CPF", "390.533.447-05"),
        ("DE_TAX_ID", "36 574 261 809"),
    ],
)
def test_regional_detectors_are_opt_in(etype: str, value: str) -> None:
    on = make(MaskingRule(1, "r", entity_types=(etype,)))
    masked, findings = on.mask_text(f"id: {value} end")
    assert value not in masked and [f.entity_type for f in findings] == [etype]
    # A wrong check digit (for PAN: an impossible holder type) is not masked.
    if etype == "IN_PAN":
        bad = value[:3] + "X" + value[4:]
    elif value[-1].isdigit():
        bad = value[:-1] + ("0" if value[-1] != "0" else "1")
    else:
        bad = value[:-1] + ("A" if value[-1] != "A" else "B")
    assert on.mask_text(f"id: {bad} end")[1] == []
    # Off by default.
    assert etype not in DEFAULT_ENTITY_TYPES


# ----------------------------------------------------------------------------- deny list


def test_deny_list() -> None:
    m = make(MaskingRule(1, "Project names", deny_list=("Project Falcon", "Zephyr")))
    masked, findings = m.mask_text("About project\nfalcon and ZEPHYR, not zephyrs.")
    assert masked == "About [PROJECT_NAMES] and [PROJECT_NAMES], not zephyrs."
    assert len(findings) == 2
    body = json.dumps({"note": "Zephyr launch", "zephyr": 1}).encode()
    out = json.loads(m.mask_body(body, "application/json").body)
    assert out == {"note": "[PROJECT_NAMES] launch", "[PROJECT_NAMES]": 1}
    with pytest.raises(MaskingConfigError):
        make(MaskingRule(1, "x", deny_list=("a" * 201,)))


def test_deny_list_non_ascii() -> None:
    m = make(MaskingRule(1, "names", deny_list=("Müller",)))
    body = json.dumps({"a": "Herr MÜLLER kommt"}, ensure_ascii=False).encode()
    assert json.loads(m.mask_body(body, "application/json").body) == {"a": "Herr [NAMES] kommt"}


# ----------------------------------------------------------------------------- JSONPath


def test_json_paths() -> None:
    m = make(
        MaskingRule(1, "addr", json_paths=("$.customers[*].address", "$..iban")),
        MaskingRule(2, "drop", json_paths=("$.meta.internal",), strategy="drop"),
    )
    doc = {
        "customers": [
            {"name": "A", "address": {"street": "1 Main St", "zip": "12345"}},
            {"name": "B", "address": "2 High St", "bank": {"iban": "x"}},
        ],
        "meta": {"internal": [1, 2], "page": 1},
    }
    r = m.mask_body(json.dumps(doc).encode(), "application/json")
    out = json.loads(r.body)
    assert out == {
        "customers": [
            {"name": "A", "address": "[REDACTED]"},
            {"name": "B", "address": "[REDACTED]", "bank": {"iban": "[REDACTED]"}},
        ],
        "meta": {"page": 1},
    }
    locs = sorted(f.location for f in r.findings)
    assert locs == [
        "$.customers[0].address",
        "$.customers[1].address",
        "$.customers[1].bank.iban",
        "$.meta.internal",
    ]


def test_json_path_array_element_and_root() -> None:
    m = make(MaskingRule(1, "p", json_paths=("$.rows[1]",)))
    out = json.loads(m.mask_body(b'{"rows": ["a", "b", "c"]}', "application/json").body)
    assert out == {"rows": ["a", "[REDACTED]", "c"]}
    root = make(MaskingRule(1, "p", json_paths=("$",), strategy="hash"))
    assert json.loads(root.mask_body(b'{"a": 1}', "application/json").body).startswith("[REDACTED:")


def test_invalid_json_path_rejected() -> None:
    with pytest.raises(MaskingConfigError):
        validate_rule(MaskingRule(1, "p", json_paths=("$.[[",)))


# ----------------------------------------------------------------------------- raw-JSON prefilter


def test_prefilter_sees_values_behind_escapes(masker: Masker) -> None:
    # "\u0040" is "@": the raw bytes hide the gate character, so every string is scanned.
    body = b'{"a": "jane\\u0040example.com", "b": "tab\\tsep 650-253-0000"}'
    out = json.loads(masker.mask_body(body, "application/json").body)
    assert out == {"a": "[EMAIL]", "b": "tab\tsep [PHONE]"}
    body2 = b'{"q": "say \\"hi\\" to jane@example.com", "k\\"ey": "4111 1111 1111 1111"}'
    out2 = json.loads(masker.mask_body(body2, "application/json").body)
    assert out2 == {"q": 'say "hi" to [EMAIL]', 'k"ey': "[CREDIT_CARD]"}


JSON_LEAVES = st.sampled_from(
    [
        "jane.doe@example.com",
        "+1 650-253-0000",
        "4111 1111 1111 1111",
        "123-45-6789",
        "DE89 3704 0044 0532 0130 00",
        "10.0.0.1",
        "hello",
        "order 12345",
        'quote " and \\ slash',
        "tab\there",
        "ünïcode ✓",
        "",
    ]
)
JSON_DOCS = st.recursive(
    st.one_of(JSON_LEAVES, st.integers(-(10**18), 10**18), st.booleans(), st.none()),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(JSON_LEAVES, st.text(max_size=5)), children, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(doc=JSON_DOCS, ascii_only=st.booleans(), indent=st.sampled_from([None, 2]))
def test_prefiltered_json_equals_full_walk(doc, ascii_only: bool, indent) -> None:
    """Masking with the raw-body prefilter gives exactly the result of scanning every
    string of the document."""
    m = make()
    body = json.dumps(doc, ensure_ascii=ascii_only, indent=indent).encode()
    fast = m.mask_body(body, "application/json")
    full, findings = m.mask_json_value(json.loads(body), flagged=None)
    assert json.loads(fast.body) == full
    assert sorted(map(repr, fast.findings)) == sorted(map(repr, findings))


# ----------------------------------------------------------------------------- binary, limits


def test_binary_bodies_refused_or_passed() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    with pytest.raises(BinaryBodyError):
        make().mask_body(png, "image/png")
    with pytest.raises(BinaryBodyError):
        make().mask_body(b"\xff\xfe\x00bad", "text/plain")
    r = make(binary_bodies="pass").mask_body(png, "image/png")
    assert r.handler == "binary" and r.body is png and r.findings == []
    with pytest.raises(MaskingConfigError):
        make(binary_bodies="sometimes")


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("gzip, br", lambda b: brotli.compress(gzip.compress(b))),
    ],
)
def test_decode_content_roundtrip(encoding: str, encode) -> None:
    body = json.dumps({"email": "jane@example.com", "pad": "x" * 5000}).encode()
    assert decode_content(encode(body), encoding, max_bytes=10**6) == body


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("br", brotli.compress),
        ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
    ],
)
def test_decompression_bomb_refused(encoding: str, encode) -> None:
    bomb = encode(b"\x00" * (64 * 1024 * 1024))
    assert len(bomb) < 200_000
    with pytest.raises(DecompressionError) as e:
        decode_content(bomb, encoding, max_bytes=None)
    assert e.value.reason == "ratio" and "decompression bomb" in str(e.value)
    with pytest.raises((BodyTooLargeError, DecompressionError)):
        decode_content(bomb, encoding, max_bytes=10 * 1024 * 1024)
    d = StreamDecoder(encoding)
    with pytest.raises(DecompressionError):
        for i in range(0, len(bomb), 1000):
            d.feed(bomb[i : i + 1000])


def test_decode_errors_fail_closed() -> None:
    with pytest.raises(DecompressionError) as e:
        decode_content(b"not gzip at all", "gzip", max_bytes=100)
    assert e.value.reason == "corrupt"
    with pytest.raises(DecompressionError) as e:
        decode_content(b"x", "compress", max_bytes=100)
    assert e.value.reason == "unsupported"
    with pytest.raises(BodyTooLargeError):
        decode_content(b"x" * 101, "", max_bytes=100)
    # Small repetitive bodies are fine: the ratio applies past 1 MiB only.
    assert decode_content(gzip.compress(b"a" * 500_000), "gzip", max_bytes=10**6) == b"a" * 500_000


def test_detectors_run_in_priority_order_whatever_the_prefilter_returns() -> None:
    """A card is a card, not a phone number plus digits (RE2 sets report matches in no
    particular order; the engine must still run CREDIT_CARD before PHONE)."""
    m = make(MaskingRule(1, "p", entity_types=("EMAIL", "PHONE", "US_SSN", "CREDIT_CARD")))
    text = (
        "mail jane.roe@example.com or +1 415 555 2671; card 4111 1111 1111 1111, SSN 123-45-6789."
    )
    assert m.mask_text(text)[0] == ("mail [EMAIL] or [PHONE]; card [CREDIT_CARD], SSN [US_SSN].")

"""Tests of the pure masking engine (proxy_worker.masking): no Django needed."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from urllib.parse import parse_qsl

import phonenumbers
import pytest
from faker import Faker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy_worker.masking import (
    DEFAULT_ENTITY_TYPES,
    ENTITY_TYPES,
    HOLD_BACK,
    BinaryBodyError,
    BodyTooLargeError,
    CustomRegexDetector,
    Finding,
    Masker,
    MaskingConfigError,
    MaskingError,
    MaskingRule,
    custom_entity_type,
    parse_content_type,
    summarise,
    validate_rule,
)
from proxy_worker.masking.detectors import card_issuer, luhn_valid, ssn_valid
from proxy_worker.masking.sse import safe_cut

KEY = b"test-key"
ALL = MaskingRule(1, "all pii", entity_types=DEFAULT_ENTITY_TYPES)


def make(*rules: MaskingRule, **kw) -> Masker:
    kw.setdefault("phone_regions", ("US",))
    return Masker(rules or (ALL,), hash_key=KEY, **kw)


@pytest.fixture(scope="module")
def masker() -> Masker:
    return make()


def token(value: str) -> str:
    return hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()[:8]


def with_luhn(prefix_and_body: str) -> str:
    """Append the Luhn check digit."""
    for d in "0123456789":
        if luhn_valid(prefix_and_body + d):
            return prefix_and_body + d
    raise AssertionError


# ----------------------------------------------------------------------------- detectors

POSITIVES = [
    ("EMAIL", "jane.doe@example.com"),
    ("EMAIL", "J.Smith+tag@mail.example.co.uk"),
    ("EMAIL", "user_1%x@sub-domain.example.org"),
    ("EMAIL", "müller@beispiel.de"),
    ("CREDIT_CARD", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "4111-1111-1111-1111"),
    ("CREDIT_CARD", "4111111111111111"),
    ("CREDIT_CARD", "5555555555554444"),
    ("CREDIT_CARD", "2223003122003222"),
    ("CREDIT_CARD", "378282246310005"),
    ("CREDIT_CARD", "3782 822463 10005"),
    ("CREDIT_CARD", "6011111111111117"),
    ("CREDIT_CARD", "3530111333300000"),
    ("CREDIT_CARD", "30569309025904"),
    ("CREDIT_CARD", "6200000000000005"),
    ("CREDIT_CARD", "4222222222222"),
    ("US_SSN", "123-45-6789"),
    ("US_SSN", "123 45 6789"),
    ("US_SSN", "899-99-9999"),
    ("IBAN", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "DE89370400440532013000"),
    ("IBAN", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN", "gb82west12345698765432"),
    ("IBAN", "FR14 2004 1010 0505 0001 3M02 606"),
    ("IBAN", "NO9386011117947"),
    ("IP_ADDRESS", "192.168.1.1"),
    ("IP_ADDRESS", "8.8.8.8"),
    ("IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    ("IP_ADDRESS", "fe80::1%eth0"),
    ("IP_ADDRESS", "::ffff:192.0.2.1"),
    ("IP_ADDRESS", "2001:0db8:0000:0000:0000:ff00:0042:8329"),
    ("PHONE", "+1-650-253-0000"),
    ("PHONE", "650.253.0000"),
    ("PHONE", "(650)253-0000"),
    ("PHONE", "(650) 253-0000"),
    ("PHONE", "650-253-0000"),
    ("PHONE", "001-650-253-0000x123"),
    ("PHONE", "650-253-0000 ext. 1234"),
    ("PHONE", "+44 20 7946 0958"),
    ("PHONE", "0044 20 7946 0958"),
    ("PHONE", "+16502530000"),
    ("PHONE", "+49 30 901820"),
]


@pytest.mark.parametrize(("etype", "value"), POSITIVES)
def test_detects_value_in_sentence(masker: Masker, etype: str, value: str) -> None:
    text = f"Contact: {value} (please keep private)."
    out, findings = masker.mask_text(text)
    assert out == f"Contact: [{etype}] (please keep private)."
    assert findings == [Finding(etype, f"text@{text.index(value)}")]


@pytest.mark.parametrize(("etype", "value"), POSITIVES)
def test_detects_value_alone(masker: Masker, etype: str, value: str) -> None:
    assert masker.mask_text(value)[0] == f"[{etype}]"


NEGATIVES = [
    "jane@localhost",
    "@example.com",
    "jane@.com",
    "4111 1111 1111 1112",  # Luhn fails
    "4111111111111112",
    "5555555555554445",
    with_luhn("999999999999999"),  # Luhn ok, no issuer
    with_luhn("1234567890123"),
    "411111111111",  # too short for Visa
    "41 11 11 11 11 11 11 11",  # groups too short
    "000-12-3456",  # SSN area 000
    "666-12-3456",  # area 666
    "900-12-3456",  # area 9xx
    "123-00-4567",  # group 00
    "123-45-0000",  # serial 0000
    "123-45 6789",  # mixed separators
    "order 123456789 shipped",  # bare 9 digits without keyword
    "DE89 3704 0044 0532 0130 01",  # bad IBAN check digits
    "DE8937040044053201300",  # wrong length
    "XX89370400440532013000",  # unknown country
    "999.1.1.1",
    "256.1.1.1",
    "1.2.3",
    "010.0.0.1",
    "12:30:45",
    "00:1a:2b:3c:4d:5e",
    "x[::2]",
    "::1",
    "(555) 123-4567",  # 555 is not a valid area code
    "123-456-7890",  # area code cannot start with 1
    "2024-01-15 12:30:45",
    "12345",
    "version 2.0.1",
    "Plain words with no personal data at all.",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_negatives_not_masked(masker: Masker, text: str) -> None:
    out, findings = masker.mask_text(text)
    assert out == text
    assert findings == []


@pytest.mark.parametrize(
    "text",
    [
        "SSN: 123456789",
        "social security number 123456789",
        "ss# 123456789",
        "my ssn is 123456789.",
    ],
)
def test_bare_ssn_needs_keyword(masker: Masker, text: str) -> None:
    assert "123456789" not in masker.mask_text(text)[0]
    assert "[US_SSN]" in masker.mask_text(text)[0]


def test_bare_ssn_keyword_from_json_key(masker: Masker) -> None:
    out, findings = masker.mask_json_value({"customer_ssn": "123456789", "id": "123456789"})
    assert out == {"customer_ssn": "[US_SSN]", "id": "123456789"}
    assert findings == [Finding("US_SSN", "$.customer_ssn")]
    out, _ = masker.mask_json_value({"SSN": 123456789})
    assert out == {"SSN": "[US_SSN]"}


def test_validators() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert card_issuer("4111111111111111") and not card_issuer("9111111111111111")
    assert card_issuer("2720990000000000") and not card_issuer("2721000000000000")
    assert ssn_valid("123", "45", "6789") and not ssn_valid("666", "45", "6789")


def test_priority_card_not_phone_and_iban_not_phone(masker: Masker) -> None:
    text = "card 4111111111111111 iban DE89370400440532013000 ssn 123-45-6789"
    out, findings = masker.mask_text(text)
    assert out == "card [CREDIT_CARD] iban [IBAN] ssn [US_SSN]"
    assert [f.entity_type for f in findings] == ["CREDIT_CARD", "IBAN", "US_SSN"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+1-650-253-0000 650.253.0000 (650)253-0000", "[PHONE] [PHONE] [PHONE]"),
        ("001-650-253-0000x12 650-253-0000. 650-253-0000", "[PHONE] [PHONE]. [PHONE]"),
        ("4111 1111 1111 1111 650-253-0000", "[CREDIT_CARD] [PHONE]"),
        (
            "4111 1111 1111 1111 4111 1111 1111 1111 (650) 253-0000",
            "[CREDIT_CARD] [CREDIT_CARD] [PHONE]",
        ),
        ("( ). 650-253-0000.", "( ). [PHONE]."),
        ("[650-253-0000]", "[[PHONE]]"),
        ("ABC6502530000", "ABC6502530000"),  # glued to an identifier
        ("ORD-2024-000123 ref_6502530000", "ORD-2024-000123 ref_6502530000"),
        ("tel:6502530000, fax/6502530000", "tel:[PHONE], fax/[PHONE]"),
    ],
)
def test_adjacent_numbers(masker: Masker, text: str, expected: str) -> None:
    assert masker.mask_text(text)[0] == expected


def test_card_inside_longer_digit_run(masker: Masker) -> None:
    assert masker.mask_text("4111 1111 1111 1111 2024")[0] == "[CREDIT_CARD] 2024"
    assert masker.mask_text("ref 1234 4111 1111 1111 1111")[0] == "ref 1234 [CREDIT_CARD]"


def test_phone_table_of_numbers(masker: Masker) -> None:
    # a long run of space-separated groups skips the matcher and is parsed token-wise
    rows = " ".join(f"{i} 650 253 {1000 + i}" for i in range(20, 31))
    out = masker.mask_text(rows)[0]
    assert out == " ".join(f"{i} [PHONE]" for i in range(20, 31))


def test_digit_soup_fails_closed(masker: Masker) -> None:
    with pytest.raises(MaskingError):
        masker.mask_text("12 " * 5000)
    with pytest.raises(MaskingError):
        masker.mask_body(("12 " * 5000).encode(), "text/plain")


def test_phone_regions() -> None:
    uk = make(MaskingRule(1, "p", entity_types=("PHONE",)), phone_regions=("GB",))
    us = make(MaskingRule(1, "p", entity_types=("PHONE",)))
    assert uk.mask_text("ring 020 7946 0958")[0] == "ring [PHONE]"
    assert us.mask_text("ring 020 7946 0958")[0] == "ring 020 7946 0958"
    # E.164 numbers are always recognised
    none = make(MaskingRule(1, "p", entity_types=("PHONE",)), phone_regions=())
    assert none.mask_text("+44 20 7946 0958 / 650-253-0000")[0] == "[PHONE] / 650-253-0000"


def test_faker_phone_numbers() -> None:
    fake = Faker("en_US")
    fake.seed_instance(7)
    m = make(MaskingRule(1, "p", entity_types=("PHONE",)))
    seen_valid = seen_invalid = 0
    for _ in range(200):
        number = fake.phone_number()
        core = re.split(r"x", number)[0]
        if core.startswith("001-"):
            core = "+1-" + core[4:]
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse(core, "US"))
        except phonenumbers.NumberParseException:
            valid = False
        out = m.mask_text(f"Call me at {number} tomorrow.")[0]
        if valid:
            seen_valid += 1
            assert out == "Call me at [PHONE] tomorrow.", number
        else:
            seen_invalid += 1
            assert out == f"Call me at {number} tomorrow.", number
    assert seen_valid > 20 and seen_invalid > 20


def test_custom_regex_detector() -> None:
    rule = MaskingRule(7, "Employee id", custom_pattern=r"EMP-\d{6}")
    m = make(rule)
    out, findings = m.mask_text("ask EMP-123456 or EMP-12")
    assert out == "ask [EMPLOYEE_ID] or EMP-12"
    assert findings == [Finding("EMPLOYEE_ID", "text@4")]
    assert custom_entity_type("Employee id #2") == "EMPLOYEE_ID_2"
    det = CustomRegexDetector("TICKET", r"T-\d+|x*")  # zero-length matches ignored
    assert [(d.start, d.end, d.entity_type) for d in det.find("a T-12 b")] == [(2, 6, "TICKET")]


@pytest.mark.parametrize(
    "rule",
    [
        MaskingRule(1, "x", entity_types=("EMAIL",), strategy="scramble"),
        MaskingRule(1, "x", entity_types=("PASSPORT",)),
        MaskingRule(1, "x", custom_pattern="(unclosed"),
    ],
)
def test_invalid_rules(rule: MaskingRule) -> None:
    with pytest.raises(MaskingConfigError):
        validate_rule(rule)
    with pytest.raises(MaskingConfigError):
        Masker([rule], hash_key=KEY)


def test_config_errors() -> None:
    with pytest.raises(MaskingConfigError):
        Masker([MaskingRule(1, "h", entity_types=("EMAIL",), strategy="hash")], hash_key=b"")
    with pytest.raises(MaskingConfigError):
        Masker([ALL], hash_key=KEY, phone_regions=("XX",))


# ----------------------------------------------------------------------------- strategies


def test_redact(masker: Masker) -> None:
    assert masker.mask_text("mail jane@example.com")[0] == "mail [EMAIL]"


def test_hash_tokens_are_stable_and_keyed() -> None:
    m = make(MaskingRule(1, "h", entity_types=ENTITY_TYPES, strategy="hash"))
    out = m.mask_text("a Jane@Example.com b jane@example.com c john@example.com")[0]
    t = token("jane@example.com")
    assert out == f"a [EMAIL:{t}] b [EMAIL:{t}] c [EMAIL:{token('john@example.com')}]"
    # card hashed over its digits regardless of formatting
    t_card = token("4111111111111111")
    assert m.mask_text("4111-1111-1111-1111")[0] == f"[CREDIT_CARD:{t_card}]"
    assert m.mask_text("4111 1111 1111 1111")[0] == f"[CREDIT_CARD:{t_card}]"
    # phone hashed over E.164
    assert m.mask_text("650-253-0000")[0] == f"[PHONE:{token('+16502530000')}]"
    assert m.mask_text("+1 (650) 253-0000")[0] == f"[PHONE:{token('+16502530000')}]"
    other = Masker(
        [MaskingRule(1, "h", entity_types=("EMAIL",), strategy="hash")], hash_key=b"other"
    )
    assert other.mask_text("jane@example.com")[0] != f"[EMAIL:{t}]"
    assert re.fullmatch(r"\[EMAIL:[0-9a-f]{8}\]", other.mask_text("jane@example.com")[0])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4111 1111 1111 1111", "****1111"),
        ("650-253-0000", "****0000"),
        ("123-45-6789", "****6789"),
        ("DE89 3704 0044 0532 0130 00", "****3000"),
        ("jane.doe@example.com", "j***@example.com"),
        ("192.168.1.1", "[IP_ADDRESS]"),
    ],
)
def test_partial(value: str, expected: str) -> None:
    m = make(MaskingRule(1, "p", entity_types=ENTITY_TYPES, strategy="partial"))
    assert m.mask_text(f"x {value} y")[0] == f"x {expected} y"


def test_drop_for_entities_behaves_like_redact() -> None:
    m = make(MaskingRule(1, "d", entity_types=("EMAIL",), strategy="drop"))
    assert m.mask_text("jane@example.com")[0] == "[EMAIL]"
    assert m.mask_json_value({"a": "jane@example.com"})[0] == {"a": "[EMAIL]"}


def test_least_revealing_strategy_wins() -> None:
    m = make(
        MaskingRule(1, "p", entity_types=("EMAIL",), strategy="partial"),
        MaskingRule(2, "r", entity_types=("EMAIL",), strategy="redact"),
        MaskingRule(3, "h", entity_types=("EMAIL",), strategy="hash"),
    )
    assert m.mask_text("jane@example.com")[0] == "[EMAIL]"


def test_only_enabled_types_are_masked() -> None:
    m = make(MaskingRule(1, "e", entity_types=("EMAIL",)))
    assert m.mask_text("jane@example.com 4111111111111111")[0] == "[EMAIL] 4111111111111111"
    assert m.entity_types == ("EMAIL",)


# ----------------------------------------------------------------------------- JSON


def shape(v):
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(x) for x in v]
    return None


DOC = {
    "rows": [
        [1, "Jane", "jane@example.com", "650-253-0000"],
        [2, "Bob", "bob@example.org", None],
    ],
    "items": [{"email": f"u{i}@example.com", "n": i, "ok": True, "f": 1.5} for i in range(5)],
    "card": 4111111111111111,
    "ip": "10.0.0.1",
    "nested": {"deep": {"deeper": ["x", {"iban": "DE89 3704 0044 0532 0130 00"}]}},
    "weird key": "ssn 123-45-6789",
    "unicode": "Grüße 👋 jane@example.com",
}


def test_json_body_shape_and_locations(masker: Masker) -> None:
    body = json.dumps(DOC).encode()
    r = masker.mask_body(body, "application/json; charset=utf-8")
    assert r.handler == "json"
    out = json.loads(r.body)
    assert shape(out) == shape(DOC)
    assert out["rows"][0] == [1, "Jane", "[EMAIL]", "[PHONE]"]
    assert out["items"][3] == {"email": "[EMAIL]", "n": 3, "ok": True, "f": 1.5}
    assert out["card"] == "[CREDIT_CARD]"
    assert out["nested"]["deep"]["deeper"][1]["iban"] == "[IBAN]"
    assert out["unicode"] == "Grüße 👋 [EMAIL]"
    summary = summarise(r.findings)
    assert {"type": "EMAIL", "location": "$.rows[0][2]", "count": 1} in summary
    assert {"type": "PHONE", "location": "$.rows[0][3]", "count": 1} in summary
    assert {"type": "EMAIL", "location": "$.items[3].email", "count": 1} in summary
    assert {"type": "CREDIT_CARD", "location": "$.card", "count": 1} in summary
    assert {"type": "IP_ADDRESS", "location": "$.ip", "count": 1} in summary
    assert {"type": "US_SSN", "location": '$["weird key"]', "count": 1} in summary
    assert {"type": "IBAN", "location": "$.nested.deep.deeper[1].iban", "count": 1} in summary
    json.dumps(summary)  # serialisable


def test_json_unchanged_body_is_returned_verbatim(masker: Masker) -> None:
    body = b'{ "a" : 1.10, "b": [true, null, "hello"] }'
    r = masker.mask_body(body, "application/vnd.api+json")
    assert r.body is body and r.findings == [] and r.handler == "json"


def test_json_integers(masker: Masker) -> None:
    value = {"created": 6502530000, "id": 123456789, "card": 4111111111111111, "phone": 6502530000}
    out, findings = masker.mask_json_value(value)
    # bare integers are ids/timestamps unless the key says phone
    assert out == {
        "created": 6502530000,
        "id": 123456789,
        "card": "[CREDIT_CARD]",
        "phone": "[PHONE]",
    }
    assert [f.location for f in findings] == ["$.card", "$.phone"]


def test_json_value_not_mutated_and_counts(masker: Masker) -> None:
    value = {"a": "jane@example.com and jane@example.com", "b": ["x"]}
    out, findings = masker.mask_json_value(value)
    assert value["a"] == "jane@example.com and jane@example.com"
    assert out == {"a": "[EMAIL] and [EMAIL]", "b": ["x"]}
    assert out["b"] is value["b"]
    assert summarise(findings) == [{"type": "EMAIL", "location": "$.a", "count": 2}]


def test_json_keys_masked_without_collisions(masker: Masker) -> None:
    value = {"jane@example.com": 1, "bob@example.com": 2, "other": 3}
    out, findings = masker.mask_json_value(value)
    assert out == {"[EMAIL]": 1, "[EMAIL]~2": 2, "other": 3}
    assert "jane" not in repr(findings)


def test_json_duplicate_keys_are_not_forwarded(masker: Masker) -> None:
    body = b'{"a": "jane@example.com", "a": "fine"}'
    r = masker.mask_body(body, "application/json")
    assert b"jane" not in r.body
    assert json.loads(r.body) == {"a": "fine"}


def test_invalid_json_falls_back_to_text(masker: Masker) -> None:
    body = b'{"email": "jane@example.com", oops'
    r = masker.mask_body(body, "application/json")
    assert r.handler == "text"
    assert r.body == b'{"email": "[EMAIL]", oops'
    assert r.findings == [Finding("EMAIL", "text@11")]


def test_json_bom_is_kept(masker: Masker) -> None:
    body = '\ufeff{"e":"jane@example.com"}'.encode()
    r = masker.mask_body(body, "application/json")
    assert r.body == '\ufeff{"e":"[EMAIL]"}'.encode()


def test_deeply_nested_json_raises(masker: Masker) -> None:
    deep: list = []
    cur = deep
    for _ in range(5000):
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    with pytest.raises(MaskingError):
        masker.mask_json_value(deep)


# ----------------------------------------------------------------------------- field names

FIELDS = MaskingRule(2, "secrets", field_names=("Password", "token"), strategy="drop")


def test_field_name_drop_in_json() -> None:
    m = make(ALL, FIELDS)
    value = {
        "user": {"PASSWORD": "hunter2", "name": "x"},
        "token": {"a": 1},
        "list": [{"token": "t"}],
    }
    out, findings = m.mask_json_value(value)
    assert out == {"user": {"name": "x"}, "list": [{}]}
    assert summarise(findings) == [
        {"type": "FIELD", "location": "$.user.PASSWORD", "count": 1},
        {"type": "FIELD", "location": "$.token", "count": 1},
        {"type": "FIELD", "location": "$.list[0].token", "count": 1},
    ]
    assert "hunter2" not in repr(findings)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("redact", "[REDACTED]"),
        ("partial", "[REDACTED]"),
        ("hash", f"[REDACTED:{token('hunter2')}]"),
    ],
)
def test_field_name_strategies(strategy: str, expected: str) -> None:
    m = make(MaskingRule(1, "f", field_names=("password",), strategy=strategy))
    assert m.mask_json_value({"password": "hunter2"})[0] == {"password": expected}
    # the whole value, whatever its type
    out = m.mask_json_value({"password": {"a": [1, 2]}})[0]
    assert isinstance(out["password"], str) and out["password"].startswith("[REDACTED")


def test_query_pairs() -> None:
    m = make(ALL, FIELDS)
    pairs = [("email", "jane@example.com"), ("q", "hello"), ("token", "abc"), ("q", "650-253-0000")]
    out, findings = m.mask_query(pairs)
    assert out == [("email", "[EMAIL]"), ("q", "hello"), ("q", "[PHONE]")]
    assert findings == [
        Finding("EMAIL", "query:email"),
        Finding("FIELD", "query:token"),
        Finding("PHONE", "query:q"),
    ]


def test_form_body() -> None:
    m = make(ALL, FIELDS)
    body = b"name=Jane+D&email=jane%40example.com&Token=secret&note=call+650-253-0000&empty="
    r = m.mask_body(body, "application/x-www-form-urlencoded")
    assert r.handler == "form"
    assert r.body.startswith(b"name=Jane+D&")  # untouched fields keep their encoding
    assert parse_qsl(r.body.decode(), keep_blank_values=True) == [
        ("name", "Jane D"),
        ("email", "[EMAIL]"),
        ("note", "call [PHONE]"),
        ("empty", ""),
    ]
    assert summarise(r.findings) == [
        {"type": "EMAIL", "location": "form:email", "count": 1},
        {"type": "FIELD", "location": "form:Token", "count": 1},
        {"type": "PHONE", "location": "form:note", "count": 1},
    ]


# ----------------------------------------------------------------------------- bodies


def test_text_offsets(masker: Masker) -> None:
    text = "a jane@x.io b 4111111111111111 c 10.1.2.3"
    r = masker.mask_body(text.encode(), "text/plain")
    assert r.handler == "text"
    assert r.body == b"a [EMAIL] b [CREDIT_CARD] c [IP_ADDRESS]"
    assert r.findings == [
        Finding("EMAIL", f"text@{text.index('jane')}"),
        Finding("CREDIT_CARD", f"text@{text.index('4111')}"),
        Finding("IP_ADDRESS", f"text@{text.index('10.1')}"),
    ]


RAW_VALUES = [
    "jane.doe@example.com",
    "4111111111111111",
    "650-253-0000",
    "123-45-6789",
    "DE89370400440532013000",
    "192.168.7.7",
]


@pytest.mark.parametrize("strategy", ["redact", "hash", "partial"])
def test_findings_never_contain_values(strategy: str) -> None:
    m = make(MaskingRule(1, "all", entity_types=ENTITY_TYPES, strategy=strategy))
    text = " ".join(RAW_VALUES)
    doc = {v: v for v in RAW_VALUES}
    results = [
        m.mask_text(text)[1],
        m.mask_json_value(doc)[1],
        m.mask_query([(v, v) for v in RAW_VALUES])[1],
        m.mask_body(json.dumps(doc).encode(), "application/json").findings,
        m.mask_body(text.encode(), None).findings,
    ]
    for findings in results:
        assert findings
        blob = repr(findings) + json.dumps(summarise(findings))
        for v in RAW_VALUES:
            assert v not in blob
            assert v.replace("-", "") not in blob


def test_ndjson(masker: Masker) -> None:
    body = b'{"e":"jane@example.com"}\r\n\n{"n":1}\nnot json 650-253-0000\n'
    r = masker.mask_body(body, "application/x-ndjson")
    assert r.handler == "ndjson"
    assert r.body == b'{"e":"[EMAIL]"}\r\n\n{"n":1}\nnot json [PHONE]\n'
    assert r.findings == [Finding("EMAIL", "ndjson[0]$.e"), Finding("PHONE", "ndjson[3]@9")]


@pytest.mark.parametrize(
    ("content_type", "encoding", "expected_encoding"),
    [
        ("text/plain; charset=ISO-8859-1", "latin-1", "latin-1"),
        ('text/plain; charset="windows-1252"', "cp1252", "cp1252"),
        ("text/plain; charset=utf-16", "utf-16", "utf-16"),
        ("text/plain; charset=x-unknown", "utf-8", "utf-8"),  # unknown -> utf-8
        ("text/plain; charset=us-ascii", "utf-8", "utf-8"),  # fails -> utf-8
        ("text/html", "utf-8", "utf-8"),
        ("application/xml", "utf-8", "utf-8"),
        (None, "utf-8", "utf-8"),
        ("application/x-unknown", "utf-8", "utf-8"),
    ],
)
def test_charsets(masker: Masker, content_type, encoding: str, expected_encoding: str) -> None:
    text = "Café ½ jane@example.com"
    r = masker.mask_body(text.encode(encoding), content_type)
    assert r.handler == "text"
    assert r.body.decode(expected_encoding) == "Café ½ [EMAIL]"


def test_json_with_latin1_charset(masker: Masker) -> None:
    body = '{"name":"Zoë","e":"jane@example.com"}'.encode("latin-1")
    r = masker.mask_body(body, "application/json; charset=latin-1")
    assert json.loads(r.body.decode("latin-1")) == {"name": "Zoë", "e": "[EMAIL]"}


def test_undecodable_text_raises(masker: Masker) -> None:
    with pytest.raises(MaskingError):
        masker.mask_body(b"\xff\xfe\xfa jane@example.com \xc3", "text/plain; charset=us-ascii")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"plain text but octet-stream", "application/octet-stream"),
        (b"\x00\x01\xff\xfe\x80", None),
        (b"\x00\x01\xff\xfe\x80", "application/x-whatever"),
    ],
)
def test_binary_bodies_raise(masker: Masker, body: bytes, content_type) -> None:
    with pytest.raises(BinaryBodyError):
        masker.mask_body(body, content_type)


def test_too_large() -> None:
    m = make(max_body_bytes=100)
    assert m.mask_body(b"x" * 100, "text/plain").body == b"x" * 100
    with pytest.raises(BodyTooLargeError):
        m.mask_body(b"x" * 101, "text/plain")
    sm = m.sse_stream()
    with pytest.raises(BodyTooLargeError):
        sm.feed(b"data: " + b"y" * 200)


def test_empty_and_disabled() -> None:
    m = make()
    assert m.mask_body(b"", "application/json").handler == "empty"
    off = Masker([], hash_key=b"")
    assert not off.enabled and m.enabled
    body = b"jane@example.com"
    r = off.mask_body(body, "text/plain")
    assert r.body is body and r.findings == []
    assert off.mask_body(b"\x89PNG", "image/png").handler == "binary"
    sm = off.sse_stream()
    assert sm.feed(b"data: jane@example.com\n\n") == b"data: jane@example.com\n\n"
    assert Masker([MaskingRule(1, "f", field_names=("x",))], hash_key=b"").enabled


def test_parse_content_type() -> None:
    assert parse_content_type('Application/JSON; Charset="UTF-8"; q=1') == (
        "application/json",
        {"charset": "UTF-8", "q": "1"},
    )
    assert parse_content_type(None) == (None, {})


# ----------------------------------------------------------------------------- SSE

SECRETS = {
    "jane.doe@example.com": "[EMAIL]",
    "650-253-0000": "[PHONE]",
    "4111 1111 1111 1111": "[CREDIT_CARD]",
}
STREAM_TEXT = (
    "Hello! Grüße 👋. Write to jane.doe@example.com or call 650-253-0000; "
    "the card on file is 4111 1111 1111 1111. Thanks, bye."
)
EXPECTED_TEXT = (
    "Hello! Grüße 👋. Write to [EMAIL] or call [PHONE]; "
    "the card on file is [CREDIT_CARD]. Thanks, bye."
)


def chat_chunk(content=None, *, finish=None, role=None, index=0) -> dict:
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-test",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def chat_stream(
    pieces: list[str], eol: str = "\n", done: bool = True, finish: bool = True
) -> bytes:
    events = [chat_chunk("", role="assistant")] + [chat_chunk(p) for p in pieces]
    if finish:
        events.append(chat_chunk(finish="stop"))
    out = "".join(f"data: {json.dumps(e)}{eol}{eol}" for e in events)
    if done:
        out += f": keep-alive{eol}{eol}data: [DONE]{eol}{eol}"
    return out.encode()


def parse_sse(data: bytes) -> list[dict]:
    """WHATWG EventSource parsing; asserts that no incomplete event is left."""
    text = data.decode("utf-8")
    assert text.endswith(("\n\n", "\r\n\r\n", "\r\r")), "stream must end on an event boundary"
    events, data_lines, name = [], [], None
    for line in re.split(r"\r\n|\r|\n", text)[:-1]:
        if line == "":
            if data_lines:
                events.append({"event": name, "data": "\n".join(data_lines)})
            data_lines, name = [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data_lines.append(value)
        elif field == "event":
            name = value
    assert not data_lines
    return events


def delta_text(data: bytes) -> str:
    out = []
    for ev in parse_sse(data):
        if ev["data"] == "[DONE]":
            continue
        obj = json.loads(ev["data"])  # every data payload is valid JSON
        for ch in obj["choices"]:
            out.append(ch["delta"].get("content") or "")
    return "".join(out)


def run_stream(m: Masker, stream: bytes, cuts) -> tuple[bytes, list[Finding]]:
    sm = m.sse_stream()
    out = bytearray()
    prev = 0
    for c in [*sorted(set(cuts)), len(stream)]:
        out += sm.feed(stream[prev:c])
        prev = c
    out += sm.finish()
    return bytes(out), sm.findings


def assert_stream_masked(out: bytes, findings: list[Finding]) -> None:
    assert delta_text(out) == EXPECTED_TEXT
    for raw in SECRETS:
        assert raw.encode() not in out
        assert raw not in repr(findings)
    assert sorted(f.entity_type for f in findings) == ["CREDIT_CARD", "EMAIL", "PHONE"]
    assert all(
        re.fullmatch(r"sse\[\d+\]\$\.choices\[0\]\.delta\.content", f.location) for f in findings
    )


def split_text(text: str, cuts) -> list[str]:
    cuts = sorted(set(c for c in cuts if 0 < c < len(text)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def pii_split_pieces(step: int = 5) -> list[str]:
    """Deltas that split every secret in the middle (e.g. "jane.d"/"oe@exa"/"mple.com")
    plus a cut every ``step`` characters."""
    cuts = []
    for raw in SECRETS:
        i = STREAM_TEXT.index(raw)
        cuts += [i + 6, i + 12]
    cuts += list(range(0, len(STREAM_TEXT), step))
    return split_text(STREAM_TEXT, cuts)


def test_sse_split_deltas_basic(masker: Masker) -> None:
    pieces = ["Write to jane.d", "oe@exa", "mple.com now"]
    out, findings = run_stream(masker, chat_stream(pieces), [])
    assert delta_text(out) == "Write to [EMAIL] now"
    assert b"jane" not in out


def test_sse_every_single_byte_boundary(masker: Masker) -> None:
    stream = chat_stream(pii_split_pieces(step=20))
    for k in range(1, len(stream)):
        out, findings = run_stream(masker, stream, [k])
        assert_stream_masked(out, findings)


def test_sse_one_byte_chunks_and_crlf(masker: Masker) -> None:
    for eol in ("\n", "\r\n", "\r"):
        stream = chat_stream(pii_split_pieces(), eol=eol)
        out, findings = run_stream(masker, stream, range(1, len(stream)))
        assert_stream_masked(out, findings)
        assert eol.encode() * 2 in out


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    text_cuts=st.lists(st.integers(1, len(STREAM_TEXT) - 1), max_size=40),
    byte_cuts=st.lists(st.integers(1, 4000), max_size=30),
    eol=st.sampled_from(["\n", "\r\n"]),
)
def test_sse_random_splits_property(text_cuts, byte_cuts, eol) -> None:
    m = make()
    stream = chat_stream(split_text(STREAM_TEXT, text_cuts), eol=eol)
    out, findings = run_stream(m, stream, [c for c in byte_cuts if c < len(stream)])
    assert_stream_masked(out, findings)


TOKENS = [
    "jane.doe@example.com",
    "650-253-0000",
    "(650) 253-0000",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "5555555555554444",
    "DE89 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 32",
    "123-45-6789",
    "192.168.10.20",
    "001-650-253-0000x12",
    "fe80::1",
    "hello",
    "card",
    "ssn",
    "SSN:",
    "123456789",
    "call",
    ",",
    ".",
    "(",
    "\n",
    "  ",
    "Grüße",
    "👋",
    "42",
    "2024",
    "email:",
]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pairs=st.lists(
        st.tuples(
            st.sampled_from(TOKENS), st.sampled_from([" ", " ", ", ", ". ", "\n", "\t", " - "])
        ),
        min_size=1,
        max_size=25,
    ),
    text_cuts=st.lists(st.integers(1, 600), max_size=30),
    byte_cuts=st.lists(st.integers(1, 20000), max_size=20),
)
def test_sse_stream_equals_whole_text_property(masker: Masker, pairs, text_cuts, byte_cuts):
    """Whatever the delta and chunk boundaries, the streamed deltas concatenate
    to exactly what masking the whole text at once gives, and no secret leaks."""
    text = "".join(tok + sep for tok, sep in pairs)
    expected = masker.mask_text(text)[0]
    stream = chat_stream(split_text(text, text_cuts))
    out, findings = run_stream(masker, stream, [c for c in byte_cuts if c < len(stream)])
    assert delta_text(out) == expected
    for tok in TOKENS[:12]:
        if tok in text:
            assert tok not in expected
            assert tok.encode() not in out
            assert tok not in repr(findings)


def test_sse_first_bytes_do_not_wait(masker: Masker) -> None:
    words = [f"word{i} " for i in range(200)]
    stream = chat_stream(words, done=False, finish=False)
    sm = masker.sse_stream()
    out = sm.feed(stream)  # no finish(): the stream is still open
    emitted = delta_text(out)
    full = "".join(words)
    assert full.startswith(emitted)
    assert len(full) - len(emitted) <= HOLD_BACK
    rest = sm.finish()
    assert delta_text(out + rest) == full


def test_sse_flush_without_finish_reason_emits_synthetic_chunk(masker: Masker) -> None:
    stream = chat_stream(["mail jane.d", "oe@example.com"], finish=False)
    out, findings = run_stream(masker, stream, [])
    assert delta_text(out) == "mail [EMAIL]"
    events = [json.loads(e["data"]) for e in parse_sse(out) if e["data"] != "[DONE]"]
    synthetic = events[-1]
    assert synthetic["id"] == "chatcmpl-1" and synthetic["model"] == "gpt-test"
    assert synthetic["choices"][0]["delta"]["content"].endswith("[EMAIL]")
    # and [DONE] is still last
    assert parse_sse(out)[-1]["data"] == "[DONE]"


def test_sse_stream_cut_without_done(masker: Masker) -> None:
    stream = chat_stream(["mail jane.d", "oe@example.com"], finish=False, done=False)
    out, _ = run_stream(masker, stream[:-1], [])  # last blank line missing
    assert b"jane" not in out
    assert "[EMAIL]" in out.decode()


def test_sse_multiple_choices_and_tool_calls(masker: Masker) -> None:
    def tool_chunk(args: str, first: bool = False) -> dict:
        tc = {"index": 0, "function": {"arguments": args}}
        if first:
            tc.update({"id": "call_1", "type": "function"})
            tc["function"]["name"] = "send"
        return {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 1, "delta": {"tool_calls": [tc]}, "finish_reason": None}],
        }

    events = [
        chat_chunk("a jane.", index=0),
        tool_chunk('{"to": "bob@ex', first=True),
        chat_chunk("doe@example.com b", index=0),
        tool_chunk('ample.com", "n": "650-25'),
        tool_chunk('3-0000"}'),
        chat_chunk(None, finish="stop", index=0),
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 1, "delta": {}, "finish_reason": "tool_calls"}],
        },
    ]
    stream = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    out, findings = run_stream(masker, stream.encode(), [])
    content = {0: "", 1: ""}
    args = ""
    for ev in parse_sse(out):
        if ev["data"] == "[DONE]":
            continue
        for ch in json.loads(ev["data"])["choices"]:
            content[ch["index"]] += ch["delta"].get("content") or ""
            for tc in ch["delta"].get("tool_calls") or []:
                args += tc["function"]["arguments"]
    assert content[0] == "a [EMAIL] b"
    assert json.loads(args) == {"to": "[EMAIL]", "n": "[PHONE]"}
    assert b"bob@" not in out and b"jane" not in out and b"253-0000" not in out


def test_sse_responses_api(masker: Masker) -> None:
    pieces = ["Mail jane.d", "oe@exa", "mple.com", " or call +1 650 ", "253 0000"]
    full = "".join(pieces)
    events = [
        (
            "response.created",
            {"type": "response.created", "response": {"id": "r"}, "sequence_number": 0},
        )
    ]
    for i, p in enumerate(pieces):
        ev = {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": p,
            "sequence_number": i + 1,
        }
        events.append(("response.output_text.delta", ev))
    done = {
        "type": "response.output_text.done",
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "text": full,
    }
    events.append(("response.output_text.done", done))
    events.append(
        (
            "response.completed",
            {"type": "response.completed", "response": {"output": [{"content": [{"text": full}]}]}},
        )
    )
    stream = "".join(f"event: {n}\ndata: {json.dumps(e)}\n\n" for n, e in events).encode()
    for cut in range(1, len(stream), 37):
        out, findings = run_stream(masker, stream, [cut])
        parsed = parse_sse(out)
        deltas = "".join(
            json.loads(e["data"])["delta"]
            for e in parsed
            if e["event"] == "response.output_text.delta"
        )
        assert deltas == "Mail [EMAIL] or call [PHONE]"
        kinds = [e["event"] for e in parsed]
        # all deltas come before the .done event
        assert kinds.index("response.output_text.done") > max(
            i for i, k in enumerate(kinds) if k == "response.output_text.delta"
        )
        done_ev = json.loads(parsed[kinds.index("response.output_text.done")]["data"])
        assert done_ev["text"] == "Mail [EMAIL] or call [PHONE]"
        assert b"jane" not in out and b"650" not in out


def test_sse_generic_events(masker: Masker) -> None:
    stream = (
        b": comment jane@example.com stays\n\n"
        b"event: note\nid: 7\ndata: hello jane@example.com\ndata: second line\n\n"
        b'data: {"user": {"email": "bob@example.com"}}\n\n'
        b"retry: 100\n\n"
        b"data: nothing here\n\n"
    )
    out, findings = run_stream(masker, stream, [])
    assert out == (
        b": comment jane@example.com stays\n\n"
        b"event: note\nid: 7\ndata: hello [EMAIL]\ndata: second line\n\n"
        b'data: {"user":{"email":"[EMAIL]"}}\n\n'
        b"retry: 100\n\n"
        b"data: nothing here\n\n"
    )
    assert findings == [Finding("EMAIL", "sse[1]@6"), Finding("EMAIL", "sse[2]$.user.email")]


def test_sse_unchanged_stream_is_byte_identical(masker: Masker) -> None:
    stream = b'\xef\xbb\xbfdata: {"a" : 1}\r\n\r\n: ping\r\n\r\ndata: [DONE]\r\n\r\n'
    out, findings = run_stream(masker, stream, range(1, len(stream)))
    assert out == stream and findings == []


def test_sse_body_via_mask_body(masker: Masker) -> None:
    body = chat_stream(pii_split_pieces())
    r = masker.mask_body(body, "text/event-stream; charset=utf-8")
    assert r.handler == "sse"
    assert_stream_masked(r.body, r.findings)


@pytest.mark.parametrize(
    ("text", "expected_tail"),
    [
        ("Hello world ", ""),
        ("Hello wor", "wor"),
        ("write to jane.doe@exa", "jane.doe@exa"),
        ("card 4111 1111 11", "4111 1111 11"),
        ("iban GB82 WEST ", "GB82 WEST "),
        ("x" * (HOLD_BACK + 100), "x" * HOLD_BACK),
    ],
)
def test_safe_cut(masker: Masker, text: str, expected_tail: str) -> None:
    cut = safe_cut(text, masker.scan(text))
    assert text[cut:] == expected_tail
    assert len(text) - cut <= HOLD_BACK


def test_safe_cut_never_splits_a_match(masker: Masker) -> None:
    text = "a" * 50 + " jane@example.com" + "b" * 30
    dets = masker.scan(text)
    cut = safe_cut(text, dets)
    assert not any(d.start < cut < d.end for d in dets)
    assert len(text) - cut <= HOLD_BACK


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd", "gzip, br"])
def test_a_truncated_whole_body_is_refused_in_every_coding(coding):
    import gzip
    import zlib

    import brotli
    import zstandard

    from proxy_worker.masking import DecompressionError, decode_content

    plain = json.dumps([{"email": f"user{i}@example.com"} for i in range(200)]).encode()
    enc = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "br": brotli.compress,
        "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    }
    whole = plain
    for c in [c.strip() for c in coding.split(",")]:
        whole = enc[c](whole)
    assert decode_content(whole, coding, max_bytes=1 << 20) == plain
    for cut in (len(whole) // 2, len(whole) - 1):
        with pytest.raises(DecompressionError):
            decode_content(whole[:cut], coding, max_bytes=1 << 20)

"""The in-place JSON path (``proxy_worker/masking/jsonnav.py``) masks exactly what the
full parse-walk-serialise path masks: same decoded result, same findings in the same
order, untouched bytes kept, and invalid JSON handled as text, on generated documents
full of personal data in every position (keys, nested values, integers, secret-like
keys, whitespace between tokens, non-ASCII text)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from proxy_worker.masking import DEFAULT_ENTITY_TYPES, Masker, MaskingRule, accel, jsonnav

_RULE = MaskingRule(id=1, name="default", entity_types=DEFAULT_ENTITY_TYPES)


@pytest.fixture(autouse=True)
def _python_path(monkeypatch):
    """These tests are about the Python path (jsonnav): maskers are built without the C
    accelerator (``test_masking_accel.py`` compares the two)."""
    monkeypatch.setattr(accel, "MODULE", None)


_PII = [
    "jane.roe@example.com",
    "call +44 20 7946 0958 today",
    "(415) 555-2671",
    "4111 1111 1111 1111",
    "SSN 123-45-6789",
    "GB82 WEST 1234 5698 7654 32",
    "10.0.0.1",
    "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "password=Zx9vQ2mL8pR4tY7wK3nB",
    "Grüße an jürgen.müller@example.de",
]
_PLAIN = ["", "hello", "Grüße", "line\nbreak", 'quote " inside', "tab\tand \\ slash", "日本語"]

_scalar = (
    hs.sampled_from(_PII)
    | hs.sampled_from(_PLAIN)
    | hs.text(max_size=15)
    | hs.integers()
    | hs.sampled_from([4111111111111111, 123456789, 4155552671, 1700000000])
    | hs.booleans()
    | hs.none()
    | hs.floats(allow_nan=False, allow_infinity=False)
)
_key = hs.sampled_from(["id", "email", "phone", "api_token", "client_secret", "note", "ü"]) | (
    hs.text(max_size=8)
)
_doc = hs.recursive(
    _scalar,
    lambda kids: hs.lists(kids, max_size=6) | hs.dictionaries(_key, kids, max_size=6),
    max_leaves=40,
)


def _full(masker: Masker, body: bytes):
    """The reference: parse, walk every string, serialise (the pre-jsonnav path)."""
    return masker.mask_json_value(json.loads(body))


def _check(masker: Masker, body: bytes) -> None:
    got = masker.mask_body(body, "application/json")
    want, findings = _full(masker, body)
    assert got.handler == "json"
    assert got.findings == findings
    assert json.loads(got.body) == want
    if not findings:
        assert got.body is body  # nothing changed: the very same bytes


@pytest.fixture(params=[64 * 1024, 0], ids=["walk-records", "enter-everything"])
def enter_threshold(request, monkeypatch):
    # 0: every container holding a match is entered instead of walked whole, so the
    # navigator's own object and array handling is exercised at every depth.
    monkeypatch.setattr(jsonnav, "ENTER_LARGER_THAN", request.param)
    return request.param


# The fixture only sets a module constant, the same for every example.
@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=_doc, indent=hs.sampled_from([None, 0, 2]), compact=hs.booleans())
def test_in_place_masking_equals_the_full_walk(enter_threshold, doc, indent, compact):
    seps = (",", ":") if compact else None
    body = json.dumps(doc, ensure_ascii=False, indent=indent, separators=seps).encode()
    _check(Masker([_RULE], hash_key=b"k"), body)


def test_untouched_bytes_are_kept_and_changed_values_spliced():
    body = (
        b'{ "id" : 7,\n  "items": [ {"n": "ok", "x": 1.50},\n'
        b'  {"email" : "jane.roe@example.com", "n": "ok"} ],\n  "tail" : "done" }'
    )
    got = Masker([_RULE], hash_key=b"k").mask_body(body, "application/json")
    assert got.body == (
        b'{ "id" : 7,\n  "items": [ {"n": "ok", "x": 1.50},\n'
        b'  {"email":"[EMAIL]","n":"ok"} ],\n  "tail" : "done" }'
    )
    assert [(f.entity_type, f.location) for f in got.findings] == [("EMAIL", "$.items[1].email")]


def test_a_large_array_of_records_is_entered_and_located_by_path():
    records = [{"id": i, "text": "nothing here"} for i in range(5000)]
    records[1234]["text"] = "mail jane.roe@example.com"
    records[4321]["card"] = 4111111111111111
    body = json.dumps({"object": "list", "data": records}).encode()
    assert len(body) > jsonnav.ENTER_LARGER_THAN
    got = Masker([_RULE], hash_key=b"k").mask_body(body, "application/json")
    assert [(f.entity_type, f.location) for f in got.findings] == [
        ("EMAIL", "$.data[1234].text"),
        ("CREDIT_CARD", "$.data[4321].card"),
    ]
    out = json.loads(got.body)
    assert out["data"][1234]["text"] == "mail [EMAIL]"
    assert out["data"][4321]["card"] == "[CREDIT_CARD]"
    assert out["data"][:1234] == records[:1234]


def test_duplicate_keys_never_forward_an_unmasked_earlier_value():
    m = Masker([_RULE], hash_key=b"k")
    for body in (
        b'{"a": "jane.roe@example.com", "a": "x"}',
        b'[{"a": "jane.roe@example.com", "a": "x"}]',
        b'[{"a": {"b": "jane.roe@example.com"}, "a": 1}]',
    ):
        got = m.mask_body(body, "application/json")
        assert b"jane.roe" not in got.body, body
        json.loads(got.body)


def test_a_key_holding_personal_data_is_masked_by_the_full_walk():
    m = Masker([_RULE], hash_key=b"k")
    body = b'[{"jane.roe@example.com": 1, "[EMAIL]": 2}]'
    got = m.mask_body(body, "application/json")
    assert json.loads(got.body) == [{"[EMAIL]": 1, "[EMAIL]~2": 2}]
    assert got.findings == _full(m, body)[1]


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "jane.roe@example.com",}',
        b'["jane.roe@example.com" "x"]',
        b'{"a": "jane.roe@example.com"} trailing',
        b'{"a": "jane.roe@example.com"',
        b'["jane.roe@example.com",',
        b'{"a" "jane.roe@example.com"}',
        b"   ",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_invalid_json_is_masked_as_text(body):
    got = Masker([_RULE], hash_key=b"k").mask_body(body, "application/json")
    assert got.handler == "text"
    assert b"jane.roe" not in got.body


@pytest.mark.parametrize("doc", [["中 jane.roe@example.com"], {"a": "Привет jane.roe@example.com"}])
def test_u_escaped_text_without_other_escapes_is_scanned(doc):
    # json.dumps' default ensure_ascii=True writes CJK or Cyrillic text as \u escapes; a
    # body with no other escape once made the prefilter record the escaped form, so the
    # decoded string was never scanned and the e-mail went through.
    body = json.dumps(doc).encode()
    assert b"\\u" in body and b"\\n" not in body
    got = Masker([_RULE], hash_key=b"k").mask_body(body, "application/json")
    assert b"jane.roe" not in got.body
    assert [f.entity_type for f in got.findings] == ["EMAIL"]

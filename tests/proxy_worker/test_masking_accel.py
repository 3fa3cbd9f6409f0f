"""The C accelerator's JSON driver (``proxy_worker/masking/_accel/driver.c``) masks
exactly what the engine's Python path masks: same decoded result, same findings in
the same order, on generated documents with personal data in every position, every
strategy, escapes, non-ASCII text, secret-like and phone-like keys; what it cannot
decide exactly it hands to Python or gives up on, and that gives the same result too.
The finders themselves are compared with the Python detectors in
``test_masking_accel_detectors.py`` and ``test_masking_accel_phone.py``."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from proxy_worker.masking import DEFAULT_ENTITY_TYPES, Masker, MaskingRule, accel
from proxy_worker.masking import engine as _engine
from proxy_worker.masking.errors import MaskingError

pytestmark = pytest.mark.skipif(not accel.AVAILABLE, reason="the C accelerator is not built")

_ALL_C = {"EMAIL", "IBAN", "CREDIT_CARD", "US_SSN", "US_ITIN", "IP_ADDRESS", "PHONE"}


def test_the_accelerator_is_built_where_ci_requires_it():
    # .ci/run sets GATEHOUSE_REQUIRE_ACCEL=1: CI must exercise the C path, not skip it.
    if os.environ.get("GATEHOUSE_REQUIRE_ACCEL") != "1":
        pytest.skip("GATEHOUSE_REQUIRE_ACCEL is not set")
    assert accel.AVAILABLE
    assert _engine._accel_ready() == _ALL_C


def _rule(strategy: str = "redact") -> MaskingRule:
    return MaskingRule(id=1, name="default", entity_types=DEFAULT_ENTITY_TYPES, strategy=strategy)


def _pair(strategy: str = "redact", **kw) -> tuple[Masker, Masker]:
    """A masker with the accelerator and the same one without it."""
    fast = Masker([_rule(strategy)], hash_key=b"k", **kw)
    slow = Masker([_rule(strategy)], hash_key=b"k", **kw)
    slow._accel = None
    assert fast._accel is not None
    return fast, slow


def _same(fast: Masker, slow: Masker, body: bytes, content_type: str = "application/json"):
    try:
        want = slow.mask_body(body, content_type)
    except MaskingError as exc:
        with pytest.raises(type(exc)):
            fast.mask_body(body, content_type)
        return None
    got = fast.mask_body(body, content_type)
    assert got.handler == want.handler
    assert got.findings == want.findings
    if want.handler == "json":
        assert json.loads(got.body) == json.loads(want.body)
    elif want.handler == "ndjson":
        for g, w in zip(got.body.split(b"\n"), want.body.split(b"\n"), strict=True):
            try:
                assert json.loads(g) == json.loads(w)
            except ValueError:
                assert g == w
    else:
        assert got.body == want.body
    if not want.findings and want.body is body:
        assert got.body is body  # nothing changed: the very same bytes
    return got


_PII = [
    "jane.roe@example.com",
    "Mail: J.Doe+tag@mail.example.co.uk.",
    "call +44 20 7946 0958 today",
    "(415) 555-2671",
    "+1-261-456-4985",
    "947.310.0472x011",
    "4111 1111 1111 1111",
    "4849815406993709740",
    "SSN 123-45-6789",
    "ssn 123456789",
    "itin 912-70-1234",
    "GB82 WEST 1234 5698 7654 32",
    "GB10JGCI23956064241456",
    "10.0.0.1",
    "from 192.168.010.1 and 256.1.1.1",
    "fe80::1ff:fe23:4567:890a",
    "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "password=Zx9vQ2mL8pR4tY7wK3nB",
    "Grüße an jürgen.müller@example.de",
    "０９０ １２３４ ５６７８",
    "id 2024-01-15 at 12:30, 45% of 4155552671",
    "8351 House Forks Apt. 496\nBurnsfurt, HI 20326",
]
_PLAIN = ["", "hello", "Grüße", "line\nbreak", 'quote " inside', "tab\tand \\ slash", "日本語"]

_piece = (
    hs.sampled_from(_PII)
    | hs.sampled_from(_PLAIN)
    | hs.text(alphabet='0123456789 -.()+@xabcAB_\n\t"\\', max_size=24)
)
_string = hs.lists(_piece, min_size=1, max_size=3).map(" ".join) | hs.text(max_size=15)
_scalar = (
    _string
    | hs.integers()
    | hs.sampled_from([4111111111111111, 123456789, 4155552671, 1700000000, -4155552671])
    | hs.booleans()
    | hs.none()
    | hs.floats(allow_nan=False, allow_infinity=False)
)
_key = hs.sampled_from(
    [
        "id",
        "email",
        "phone",
        "mobile_no",
        "ssn",
        "customer_itin",
        "api_token",
        "client_secret",
        "note",
        "ü",
        "tel",
        "x y",
        "jane@example.com",
    ]
) | hs.text(max_size=8)
_doc = hs.recursive(
    _scalar,
    lambda kids: hs.lists(kids, max_size=6) | hs.dictionaries(_key, kids, max_size=6),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(
    doc=_doc,
    indent=hs.sampled_from([None, 0, 2]),
    compact=hs.booleans(),
    ascii_only=hs.booleans(),
    strategy=hs.sampled_from(["redact", "hash", "partial", "drop"]),
)
def test_the_c_driver_masks_like_the_python_path(doc, indent, compact, ascii_only, strategy):
    seps = (",", ":") if compact else None
    body = json.dumps(doc, ensure_ascii=ascii_only, indent=indent, separators=seps).encode()
    fast, slow = _PAIRS[strategy]
    _same(fast, slow, body)


_PAIRS = {s: _pair(s) for s in ("redact", "hash", "partial", "drop")} if accel.AVAILABLE else {}


def test_untouched_bytes_are_kept_and_values_masked_in_place():
    fast, slow = _pair()
    body = (
        b'{ "id" : 7,\n  "items": [ {"n": "ok", "x": 1.50},\n'
        b'  {"email" : "jane.roe@example.com", "n": "ok\\n"} ],\n  "tail" : "done" }'
    )
    got = _same(fast, slow, body)
    assert got.body == (
        b'{ "id" : 7,\n  "items": [ {"n": "ok", "x": 1.50},\n'
        b'  {"email" : "[EMAIL]", "n": "ok\\n"} ],\n  "tail" : "done" }'
    )
    assert [(f.entity_type, f.location) for f in got.findings] == [("EMAIL", "$.items[1].email")]


def test_escapes_around_a_match_are_kept():
    fast, slow = _pair()
    body = b'["a\\tb jane.roe@example.com\\n\\"c\\" x\\/y", "x\\u00e9 jane.roe@example.com"]'
    got = _same(fast, slow, body)
    assert got.body == b'["a\\tb [EMAIL]\\n\\"c\\" x\\/y", "x\xc3\xa9 [EMAIL]"]'


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "jane.roe@example.com",}',
        b'{"a": NaN, "b": "jane.roe@example.com"}',
        b'[Infinity, "jane.roe@example.com"]',
        b'["tab\there jane.roe@example.com"]',
        b'["jane.roe@example.com"] extra',
        b'"\\ud800 jane.roe@example.com"',
        b'{"\\ud800": "jane.roe@example.com"}',
        b'"jane.roe@example.com"',
        b'["\\u4e2d jane.roe@example.com", {"k": "\\u041f 4111 1111 1111 1111"}]',
        b"4155552671",
        b'{"phone": 4155552671, "card": 4111111111111111, "n": 123456789012}',
        b'{"phone": -4155552671.0, "ssn": 123456789}',
        b"[" * 600 + b'"jane.roe@example.com"' + b"]" * 600,
        b"[" * 100 + b'"jane.roe@example.com"' + b"]" * 100,
        b'{"jane.roe@example.com": 1, "[EMAIL]": 2}',
        b'{"pass\\u0077ord": "Zx9vQ2mL8pR4tY7wK3nB"}',
        b'{"password": ["Zx9vQ2mL8pR4tY7wK3nB", ["hunter2hunter2XYZ"]]}',
        b'{"n": "' + b"x " * 3000 + b'jane.roe@example.com"}',
        b'{"n": "' + b"4155552671 " * 800 + b'"}',
        b"[" + b"1" * 5000 + b"]",
        b'  {"a" : [ ] , "b" : { } , "c" : "jane.roe@example.com" }  ',
        b"",
        b"[]",
        json.dumps(["０９０ １２３４ ５６７８ full-width"], ensure_ascii=False).encode(),
    ],
)
@pytest.mark.parametrize("strategy", ["redact", "hash"])
def test_edge_documents_give_what_the_python_path_gives(body, strategy):
    fast, slow = _PAIRS[strategy]
    _same(fast, slow, body)


def test_a_lone_surrogate_is_kept_escaped():
    fast, slow = _pair()
    got = _same(fast, slow, b'["\\ud800 jane.roe@example.com"]')
    assert json.loads(got.body) == ["\ud800 [EMAIL]"]


def test_phone_budget_error_is_raised_as_by_python():
    fast, slow = _pair()
    body = json.dumps({"n": " ".join(["12 34 56"] * 600)}).encode()
    _same(fast, slow, body)


def test_key_memo_is_bounded():
    fast, _slow = _pair()
    for i in range(3):
        body = json.dumps({f"k{j}-{i}": "jane.roe@example.com" for j in range(5000)}).encode()
        got = fast.mask_body(body, "application/json")
        assert b"jane" not in got.body
    assert len(fast._accel_keys) <= 2 * 5000 + 8192


def test_dense_records_are_masked_in_c():
    # The benchmark's shape: every string with personal data is decided in C, none is
    # handed back to Python (delegation is counted through the callbacks).
    fast, slow = _pair()
    calls = []
    plan = list(fast._accel.plan)
    orig = plan[3]
    plan[3] = lambda token, hint: calls.append(token) or orig(token, hint)
    object.__setattr__(fast._accel, "plan", tuple(plan))
    records = [
        {
            "id": i,
            "email": f"user{i}@example.com",
            "phone": f"+1-415-555-{2671 + i:04d}",
            "ssn": "123-45-6789",
            "card": "4111 1111 1111 1111",
            "iban": "GB82 WEST 1234 5698 7654 32",
            "ip": f"10.0.{i % 250}.1",
            "address": "8351 House Forks Apt. 496\nBurnsfurt, HI 20326",
        }
        for i in range(200)
    ]
    body = json.dumps(records).encode()
    got = _same(fast, slow, body)
    assert len(got.findings) >= 200 * 6
    assert calls == []


@settings(max_examples=400, deadline=None)
@given(
    doc=_doc,
    cuts=hs.lists(
        hs.tuples(hs.integers(0, 10_000), hs.integers(0, 3), hs.binary(max_size=3)), max_size=3
    ),
)
def test_damaged_documents_give_what_the_python_path_gives(doc, cuts):
    # Bytes deleted, replaced or inserted anywhere (truncated bodies, stray quotes and
    # backslashes, broken UTF-8): the driver must never crash, accept what Python
    # refuses, or mask differently.
    body = bytearray(json.dumps(doc, ensure_ascii=False).encode())
    for pos, drop, new in cuts:
        pos %= len(body) + 1
        body[pos : pos + drop] = new
    fast, slow = _PAIRS["redact"]
    _same(fast, slow, bytes(body))


@settings(max_examples=150, deadline=None)
@given(
    docs=hs.lists(_doc, max_size=5),
    crlf=hs.booleans(),
    junk=hs.sampled_from(["", "not json jane.roe@example.com", "  "]),
)
def test_ndjson_lines_are_masked_like_the_python_path(docs, crlf, junk):
    eol = "\r\n" if crlf else "\n"
    lines = [json.dumps(d, ensure_ascii=False) for d in docs] + [junk]
    body = eol.join(lines).encode()
    fast, slow = _PAIRS["redact"]
    got = _same(fast, slow, body, "application/x-ndjson")
    assert got is None or all(f.location.startswith("ndjson[") for f in got.findings)


@settings(max_examples=2000, deadline=None)
@given(
    body=hs.binary(max_size=40) | hs.text(alphabet='\\"/bfnrtu0a é', max_size=30).map(str.encode)
)
def test_escape_view_equals_the_regex_substitution(body):
    want = _engine._SIMPLE_ESCAPE_RE.sub(_engine._escape_view, body)
    assert accel.MODULE.escape_view(body) == want


def test_the_driver_keeps_no_references():
    # Every object the driver creates or borrows (findings, paths, key entries,
    # normalised forms, delegated results) is released: a leak of one reference per
    # value would grow by megabytes here.
    import gc
    import tracemalloc

    fast, _slow = _pair("hash")
    records = [
        {"email": f"u{i}@example.com", "k{i}": "4111 1111 1111 1111", "n": "中 ssn 123-45-6789"}
        for i in range(300)
    ]
    bodies = [json.dumps(records).encode(), b'{"a": NaN}', b'{"jane@example.com": 1}']
    text = "\n".join(f"{r['email']}, 4111 1111 1111 1111, +1 415 555 2671" for r in records)
    for body in bodies * 3:
        fast.mask_body(body, "application/json")
        fast.mask_body(text.encode(), "text/csv")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for body in bodies * 30:
        fast.mask_body(body, "application/json")
        fast.mask_body(text.encode(), "text/csv")
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 300_000


_long_text = hs.lists(_piece | hs.sampled_from(["\n", ", ", " | "]), min_size=20, max_size=400).map(
    "".join
)


def _python_masker(strategy: str = "redact") -> Masker:
    """The default masker in pure Python (built without the module: Python detectors,
    rendering and findings)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(accel, "MODULE", None)
        return Masker([_rule(strategy)], hash_key=b"k")


_PY = {s: _python_masker(s) for s in ("redact", "hash", "partial")} if accel.AVAILABLE else {}
_PY_MASKER = _PY.get("redact")


@settings(max_examples=200, deadline=None)
@given(
    text=_long_text,
    hint=hs.sampled_from(["", "ssn", "note"]),
    strategy=hs.sampled_from(["redact", "hash", "partial"]),
)
def test_long_text_is_scanned_like_the_python_detectors(text, hint, strategy):
    # Text bodies, form fields and SSE deltas go through Masker.scan, render and
    # mask_text: with the C finders, scan, render and findings, and the blanked view
    # kept as bytes, the result is that of the Python code over views rebuilt from scratch.
    fast, ref = _PAIRS[strategy][0], _PY[strategy]
    got = fast._scan_uncached(text, hint), fast.mask_text(text, location="t")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_engine, "_BLANK_MIN_CHARS", 10**9)
        want = ref._scan_uncached(text, hint), ref.mask_text(text, location="t")
    assert got == want


@pytest.mark.parametrize("seed", range(6))
def test_long_dense_and_sparse_texts_match_the_python_detectors(seed):
    # Past the window threshold (4096 characters): detectors read windows around their
    # gate matches, the same with both implementations.
    import random

    rnd = random.Random(seed)
    filler = ["lorem", "ipsum 12", "4-5", "a.b", "x" * 70, "\n", "(12) 3", "id_2125551234"]
    pieces = [
        rnd.choice(_PII if rnd.random() < (0.5 if seed % 2 else 0.05) else filler)
        for _ in range(3000)
    ]
    text = " ".join(pieces)
    assert len(text) > 4096
    fast = _PAIRS["hash"][0]
    got = fast.mask_text(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_engine, "_BLANK_MIN_CHARS", 10**9)
        want = _PY_MASKER.mask_text(text)
    assert [f.location for f in got[1]] == [f.location for f in want[1]]
    assert [f.entity_type for f in got[1]] == [f.entity_type for f in want[1]]

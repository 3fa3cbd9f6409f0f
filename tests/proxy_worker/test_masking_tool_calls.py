"""Masking of function-call arguments streamed as JSON text (issue 14).

Property tests: generated argument objects with personal data in values and keys
(nested objects and arrays, non-ASCII, integers, JSON escapes of every kind), serialised
with and without ``ensure_ascii`` and with random ``\\uXXXX`` / ``\\/`` escapes, split into
deltas at arbitrary points and the SSE bytes into arbitrary chunks, through
:class:`SSEStreamMasker` as Responses API events and as chat-completion chunks. The
concatenated emitted arguments (a) parse as JSON, (b) hold no original value, (c) equal
the masked ``.done`` / ``output_item.done`` / ``response.completed`` arguments, and (d)
decode to what the engine's JSON masking makes of the whole object; (e) they are the
same bytes as :func:`mask_arguments` of the whole text. Then explicit escape, field-rule
and malformed cases, and the real ``openai`` SDK and OpenAI Agents SDK parsing the masked
streams served by an in-process HTTP server."""

from __future__ import annotations

import asyncio
import json
import random
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from demo.echo_upstream import RecordingHandler, RecordingHTTPServer, start_in_thread
from proxy_worker.masking import DEFAULT_ENTITY_TYPES, HOLD_BACK, Masker, MaskingRule
from proxy_worker.masking.detectors import DEFAULT_PHONE_REGIONS
from proxy_worker.masking.jsonstream import JsonStreamMasker, _unescape, mask_arguments

DEFAULT = Masker(
    [MaskingRule(1, "default", entity_types=DEFAULT_ENTITY_TYPES)],
    hash_key=b"k",
    phone_regions=DEFAULT_PHONE_REGIONS,
)
PARTIAL_TYPES = ("EMAIL", "CREDIT_CARD", "PHONE", "IBAN", "US_SSN")
MIXED = Masker(
    [
        MaskingRule(1, "partial", entity_types=PARTIAL_TYPES, strategy="partial"),
        MaskingRule(
            2,
            "hash",
            entity_types=tuple(t for t in DEFAULT_ENTITY_TYPES if t not in PARTIAL_TYPES),
            strategy="hash",
        ),
        MaskingRule(3, "address", field_names=("address",), strategy="redact"),
        MaskingRule(4, "notes", field_names=("Notes",), strategy="drop"),
        MaskingRule(5, "profile", field_names=("profile",), strategy="hash"),
    ],
    hash_key=b"k",
    phone_regions=DEFAULT_PHONE_REGIONS,
)
MASKERS = [DEFAULT, MIXED]

#: (value, a fragment that must not survive masking, under any strategy)
PII = [
    ("jane.doe@example.com", "jane.doe"),
    ("Zoë.Ünal@example.org", "Zoë.Ünal"),
    ("4111 1111 1111 1111", "4111 1111 1111"),
    ("+1 650-253-0000", "650-253"),
    ("123-45-6789", "123-45"),
    ("DE89 3704 0044 0532 0130 00", "3704 0044 0532"),
    ("https://admin:s3cr3t-Pa55@db.example.com/x", "s3cr3t-Pa55"),
    ("ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"),
    ("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE"),
    ("2001:db8::8a2e:370:7334", "8a2e:370:7334"),
]
#: Integers the engine reads as personal data (a card number stored as a number).
PII_INTS = [(4111111111111111, "4111111111111111"), (5555555555554444, "5555555555554444")]
#: Keys: ordinary, non-ASCII, odd, hint-bearing and field-rule ones.
KEYS = st.sampled_from(
    ["email", "q", "name", "items", "ключ", "a b", "x/y", 'say "hi"', "phone", "password"]
    + ["address", "notes", "profile", "jane.doe@example.com", "bob@example.net"]
)
WORDS = st.sampled_from(["Hello", "the", "Grüße", "日本", "👋", "42", "ok.", "see:", "(x)", "a/b"])


def _pii_text(draw_index: int, words: list[str]) -> str:
    value = PII[draw_index][0]
    return " ".join([*words[:2], value, *words[2:]])


LEAVES = st.one_of(
    st.builds(_pii_text, st.integers(0, len(PII) - 1), st.lists(WORDS, max_size=4)),
    st.sampled_from([v for v, _ in PII]),
    st.sampled_from([v for v, _ in PII_INTS]),
    st.text(max_size=12),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
VALUES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=14,
)
OBJECTS = st.dictionaries(KEYS, VALUES, min_size=1, max_size=6)


# --------------------------------------------------------------------------- serialising


def dump(value: Any, rnd: random.Random, *, ascii_only: bool, p_escape: float, ws: bool) -> str:
    """JSON text of ``value`` with random whitespace and string escapes (``\\uXXXX`` of any
    character in either case, surrogate pairs, ``\\/``, ``\\u0022``): all valid JSON that
    decodes to ``value``."""

    def space() -> str:
        return rnd.choice(["", "", " ", "\n  ", "\t"]) if ws else ""

    def string(s: str) -> str:
        out = ['"']
        for ch in s:
            cp = ord(ch)
            esc = rnd.random() < p_escape
            if ch == '"':
                out.append("\\u0022" if esc else '\\"')
            elif ch == "\\":
                out.append("\\u005c" if esc else "\\\\")
            elif cp < 0x20:
                out.append(f"\\u{cp:04x}" if esc else json.dumps(ch)[1:-1])
            elif ch == "/" and esc:
                out.append("\\/")
            elif esc or (ascii_only and cp > 0x7E):
                if cp > 0xFFFF:
                    hi, lo = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
                    text = f"\\u{hi:04x}\\u{lo:04x}"
                else:
                    text = f"\\u{cp:04x}"
                out.append(text.upper().replace("\\U", "\\u") if rnd.random() < 0.5 else text)
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)

    def node(v: Any) -> str:
        if isinstance(v, dict):
            members = [
                space() + string(k) + space() + ":" + space() + node(x) for k, x in v.items()
            ]
            return "{" + ",".join(members) + space() + "}"
        if isinstance(v, list):
            return "[" + ",".join(space() + node(x) for x in v) + space() + "]"
        if isinstance(v, str):
            return string(v)
        return json.dumps(v)

    return space() + node(value) + space()


def split(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({c % (len(text) + 1) for c in cuts} - {0, len(text)}), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# --------------------------------------------------------------------------- streams


ITEM = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "lookup"}


def responses_events(args: str, pieces: list[str]) -> list[dict[str, Any]]:
    """A Responses API turn that calls one function, as the API streams it."""
    resp = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m", "output": []}
    done_item = {**ITEM, "status": "completed", "arguments": args}
    evs: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**resp, "status": "in_progress"}},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**ITEM, "status": "in_progress", "arguments": ""},
        },
    ]
    evs += [
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_1",
            "output_index": 0,
            "delta": p,
        }
        for p in pieces
    ]
    evs += [
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_1",
            "output_index": 0,
            "name": "lookup",
            "arguments": args,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
        {
            "type": "response.completed",
            "response": {**resp, "status": "completed", "output": [done_item]},
        },
    ]
    for i, e in enumerate(evs):
        e["sequence_number"] = i
    return evs


def responses_sse(events: list[dict[str, Any]]) -> bytes:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


def chat_sse(pieces: list[str], *, finish: bool = True) -> bytes:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"

    first = {"index": 0, "id": "call_1", "type": "function"}
    out = chunk({"role": "assistant", "content": None})
    out += chunk({"tool_calls": [{**first, "function": {"name": "lookup", "arguments": ""}}]})
    out += "".join(
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces
    )
    if finish:
        out += chunk({}, "tool_calls") + "data: [DONE]\n\n"
    return out.encode()


def run_sse(masker: Masker, stream: bytes, byte_cuts: list[int]) -> tuple[bytes, Any]:
    sm = masker.sse_stream()
    out = bytearray()
    prev = 0
    for c in [*sorted({c % len(stream) for c in byte_cuts} - {0}), len(stream)]:
        out += sm.feed(stream[prev:c])
        prev = c
    out += sm.finish()
    return bytes(out), sm


def events_of(out: bytes) -> list[dict[str, Any]]:
    evs = []
    for block in out.decode("utf-8").split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                evs.append(json.loads(line[6:]))
    return evs


def responses_arguments(out: bytes) -> dict[str, str]:
    """What a client can read as the arguments: the deltas joined, and each repetition."""
    got = {"deltas": ""}
    for e in events_of(out):
        t = e["type"]
        if t == "response.function_call_arguments.delta":
            got["deltas"] += e["delta"]
        elif t == "response.function_call_arguments.done":
            got["done"] = e["arguments"]
        elif t == "response.output_item.done":
            got["item"] = e["item"]["arguments"]
        elif t == "response.completed":
            got["completed"] = e["response"]["output"][0]["arguments"]
    return got


def chat_arguments(out: bytes) -> str:
    args = ""
    for e in events_of(out):
        for ch in e["choices"]:
            for tc in (ch.get("delta") or {}).get("tool_calls") or []:
                assert tc["index"] == 0
                args += (tc.get("function") or {}).get("arguments") or ""
    return args


def strings_of(value: Any) -> list[str]:
    """Every key, string and number of a decoded JSON value, as text."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings_of(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings_of(v)]
    return [value if isinstance(value, str) else json.dumps(value)]


def assert_no_pii(masked: str, original: Any) -> None:
    texts = strings_of(json.loads(masked))
    used = json.dumps(original, ensure_ascii=False)
    for value, fragment in [*PII, *PII_INTS]:
        if str(value) in used:
            assert not any(fragment in t for t in texts), (fragment, masked)
            assert fragment not in masked


# --------------------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    obj=OBJECTS,
    rnd=st.randoms(use_true_random=False),
    ascii_only=st.booleans(),
    p_escape=st.sampled_from([0.0, 0.1, 0.5]),
    ws=st.booleans(),
    delta_cuts=st.lists(st.integers(0, 10**6), max_size=40),
    byte_cuts=st.lists(st.integers(0, 10**6), max_size=20),
    masker=st.sampled_from(MASKERS),
    api=st.sampled_from(["responses", "chat"]),
)
def test_split_arguments_are_masked_valid_json(
    obj, rnd, ascii_only, p_escape, ws, delta_cuts, byte_cuts, masker, api
) -> None:
    args = dump(obj, rnd, ascii_only=ascii_only, p_escape=p_escape, ws=ws)
    assert json.loads(args) == obj
    pieces = split(args, delta_cuts)
    if api == "responses":
        out, _sm = run_sse(masker, responses_sse(responses_events(args, pieces)), byte_cuts)
        got = responses_arguments(out)
        emitted = got["deltas"]
        # (c) the repetitions carry what the deltas delivered
        assert got["done"] == got["item"] == got["completed"] == emitted
    else:
        out, _sm = run_sse(masker, chat_sse(pieces), byte_cuts)
        emitted = chat_arguments(out)
    decoded = json.loads(emitted)  # (a)
    assert_no_pii(emitted, obj)  # (b)
    assert decoded == masker.mask_json_value(obj)[0]  # (d)
    assert emitted == mask_arguments(masker, args)[0]  # (e) same bytes as masked at once


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    obj=OBJECTS,
    rnd=st.randoms(use_true_random=False),
    ascii_only=st.booleans(),
    p_escape=st.sampled_from([0.0, 0.2, 1.0]),
    cuts=st.lists(st.integers(0, 10**6), max_size=60),
    masker=st.sampled_from(MASKERS),
)
def test_pieces_give_the_bytes_of_the_whole(obj, rnd, ascii_only, p_escape, cuts, masker) -> None:
    """JsonStreamMasker directly: any split gives the bytes of the whole, nothing past
    the hold-back bound is withheld (outside field-rule values), and what was emitted
    so far is always a prefix of the whole."""
    args = dump(obj, rnd, ascii_only=ascii_only, p_escape=p_escape, ws=True)
    whole, findings = mask_arguments(masker, args)
    j = JsonStreamMasker(masker)
    out = ""
    for piece in split(args, cuts):
        out += j.feed(piece)
        assert whole.startswith(out)
        if masker is DEFAULT:
            assert j.withheld <= HOLD_BACK + 12
    out += j.finish()
    assert out == whole
    assert not j.malformed
    assert sorted(j.findings) == sorted(findings)
    assert json.loads(whole) == masker.mask_json_value(obj)[0]
    for _t, path in findings:
        assert path.startswith("$")


def test_values_flow_token_by_token() -> None:
    """Nothing but the value being typed is withheld: each string goes out when the
    next structural character confirms it."""
    args = '{"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}'
    j = JsonStreamMasker(DEFAULT)
    seen = [j.feed(ch) for ch in args] + [j.finish()]
    assert "".join(seen) == args
    joined = ""
    for ch, got in zip(args, seen, strict=False):
        joined += got
        if ch in ",:}]":
            assert joined.endswith(ch) or joined.endswith(ch + " ") or ch == ","
    assert j.withheld == 0


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_a_long_string_streams_within_the_hold_back(api) -> None:
    """A string longer than HOLD_BACK is opened and streamed through the text hold-back:
    output flows before it closes, and it is masked all along."""
    note = " ".join(
        f"word{i} jane.doe@example.com" if i % 50 == 7 else f"word{i}" for i in range(3000)
    )
    args = json.dumps({"note": note, "email": "bob\u0040example.net"})
    pieces = split(args, list(range(7, len(args), 7)))
    j = JsonStreamMasker(DEFAULT)
    out = ""
    for i, p in enumerate(pieces):
        out += j.feed(p)
        assert j.withheld <= HOLD_BACK + 12
        if i * 7 > HOLD_BACK + 200 and i * 7 < len(note):
            assert len(out) > i * 7 - HOLD_BACK - 200  # flowing, not held
    out += j.finish()
    assert json.loads(out) == DEFAULT.mask_json_value(json.loads(args))[0]
    stream = (
        responses_sse(responses_events(args, pieces)) if api == "responses" else chat_sse(pieces)
    )
    sse_out, _ = run_sse(DEFAULT, stream, [])
    emitted = (
        responses_arguments(sse_out)["deltas"] if api == "responses" else chat_arguments(sse_out)
    )
    assert "jane.doe" not in emitted and json.loads(emitted)["email"] == "[EMAIL]"
    assert emitted == out


# --------------------------------------------------------------------------- escapes


ESCAPED = [
    # (arguments text, the value hidden in it)
    ('{"to": "jane\\u0040example.com"}', "jane"),
    ('{"card": "4111\\u00201111 1111 1111"}', "4111"),
    ('{"url": "https:\\/\\/admin:s3cr3t-Pa55\\u0040db.example.com\\/x"}', "s3cr3t"),
    ('{"q": "say \\"jane.doe@example.com\\" now"}', "jane.doe"),
    ('{"q": "\\ud83d\\ude00 jane.doe@example.com \\u00e9"}', "jane.doe"),
    ('{"k": ["\\u0034111 1111 1111 1111"]}', "1111 1111"),
    ('{"jane\\u0040example.com": 1}', "jane"),
    ('{"n": 4111111111111111}', "4111111111111111"),
    ('{"phone": 16502530000}', "16502530000"),
    ('{"a": {"b": [{"c": "IBAN DE89\\u00203704 0044 0532 0130 00"}]}}', "3704"),
]


@pytest.mark.parametrize(("args", "hidden"), ESCAPED)
def test_escapes_no_longer_hide_data(args, hidden) -> None:
    whole, findings = mask_arguments(DEFAULT, args)
    assert findings
    assert hidden not in json.dumps(json.loads(whole), ensure_ascii=False)
    assert json.loads(whole) == DEFAULT.mask_json_value(json.loads(args))[0]
    for step in range(1, 8):  # a surrogate pair or \\u escape cut at every position
        j = JsonStreamMasker(DEFAULT)
        out = "".join(j.feed(args[i : i + step]) for i in range(0, len(args), step))
        assert out + j.finish() == whole


def test_unchanged_arguments_keep_their_bytes() -> None:
    args = '{ "city" : "Z\\u00fcrich",\n "tags": [ "a\\/b", 1.5e3, true, null ] }'
    assert mask_arguments(DEFAULT, args)[0] is args
    out, _ = run_sse(DEFAULT, responses_sse(responses_events(args, split(args, [3, 9, 20]))), [])
    got = responses_arguments(out)
    assert got["deltas"] == got["completed"] == args


def test_a_placeholder_never_breaks_the_string() -> None:
    """Partial placeholders and hashes are re-encoded as JSON string text."""
    m = Masker(
        [
            MaskingRule(1, "p", entity_types=("EMAIL",), strategy="partial"),
            MaskingRule(2, "c", custom_pattern=r'x"y\\z'),
        ],
        hash_key=b"k",
    )
    args = json.dumps({"a": 'see x"y\\z and "jane"@example.com'})
    whole, _ = mask_arguments(m, args)
    assert json.loads(whole) == m.mask_json_value(json.loads(args))[0]


# --------------------------------------------------------------------------- field names


FIELDS = Masker(
    [
        MaskingRule(1, "d", entity_types=DEFAULT_ENTITY_TYPES),
        MaskingRule(2, "drop", field_names=("notes", "ssn"), strategy="drop"),
        MaskingRule(3, "redact", field_names=("address",), strategy="redact"),
        MaskingRule(4, "hash", field_names=("profile",), strategy="hash"),
    ],
    hash_key=b"k",
)


@pytest.mark.parametrize(
    "obj",
    [
        {"notes": "x", "a": 1},
        {"a": 1, "notes": "x"},
        {"a": 1, "notes": {"deep": ["jane.doe@example.com"]}, "b": 2},
        {"notes": 1, "ssn": 2},
        {"notes": 1, "ssn": 2, "c": 3},
        {"address": {"street": "1 Main St", "zip": 12345}, "b": [{"notes": "n", "x": "y"}]},
        {"profile": {"name": "Jane", "tags": ["a", 1, None]}, "address": "Rue 1"},
        {"profile": "Jane Doe", "list": [{"address": "x"}, {"ssn": "1"}]},
        [{"notes": "x"}, {"address": [1, 2]}],
    ],
)
def test_field_name_rules_apply_to_argument_keys(obj) -> None:
    for args in (
        json.dumps(obj),
        json.dumps(obj, indent=2),
        json.dumps(obj, separators=(",", ":")),
    ):
        whole, findings = mask_arguments(FIELDS, args)
        assert json.loads(whole) == FIELDS.mask_json_value(obj)[0]
        assert any(t == "FIELD" for t, _p in findings)
        for step in (1, 2, 5):
            j = JsonStreamMasker(FIELDS)
            out = "".join(j.feed(args[i : i + step]) for i in range(0, len(args), step))
            assert out + j.finish() == whole


def test_a_field_value_is_never_replayed_as_text() -> None:
    """Malformed inside, or truncated in, a field-rule value: its placeholder and
    nothing more."""
    for args in (
        '{"address": "1 Main St',
        '{"address": {"street": "1 Main St" x',
        '{"notes": [1, 2',
    ):
        out, _ = mask_arguments(FIELDS, args)
        assert "Main" not in out and "1, 2" not in out


# --------------------------------------------------------------------------- malformed


MALFORMED = [
    '{"a": "jane\\u0040example.com" x',  # garbage after a value
    '{"a": 415 555 0132, "b": "+1 650-253-0000"}',  # numbers run together
    "{'a': 'jane\\u0040example.com'}",  # single quotes
    '{"a": "jane.doe@example.com\n"}',  # a raw control character in a string
    '{"a": "4111 1111 1111 1111", }',  # trailing comma
    '{"a": "https:\\/\\/admin:s3cr3t-Pa55\\u0040db.example.com',  # truncated
    '{"a":"x"}{"b":"jane\\u0040example.com"}',  # two values
    "call lookup(jane\\u0040example.com)",  # not JSON at all
    '{"a": "\\x41 jane\\u0040example.com"}',  # an invalid escape
]


@pytest.mark.parametrize("args", MALFORMED)
def test_malformed_arguments_fall_back_to_text_masking(args) -> None:
    whole, findings = mask_arguments(DEFAULT, args)
    assert findings
    view, _ = _unescape(whole, True)
    for _value, fragment in PII:
        assert fragment not in view
    assert "example.com" not in view or "[EMAIL]" in view or "[URL_CREDENTIALS]" in view
    for step in (1, 3, 8):
        j = JsonStreamMasker(DEFAULT)
        out = "".join(j.feed(args[i : i + step]) for i in range(0, len(args), step)) + j.finish()
        assert j.malformed
        for _value, fragment in PII:
            assert fragment not in _unescape(out, True)[0]


def test_a_truncated_stream_is_flushed_masked() -> None:
    """The upstream dies mid-arguments: finish() flushes what was held, masked."""
    args = '{"email": "jane\\u0040example.com", "note": "call +1 650-253-0000'
    out, sm = run_sse(DEFAULT, chat_sse(split(args, [5, 17, 30, 41]), finish=False), [])
    emitted = chat_arguments(out)
    assert "jane" not in emitted and "253-0000" not in emitted
    assert emitted.startswith('{"email": "[EMAIL]"')
    assert {f.entity_type for f in sm.findings} >= {"EMAIL", "PHONE"}


# --------------------------------------------------------------------------- SSE details


def test_done_events_without_deltas_are_masked_the_same_way() -> None:
    args = json.dumps({"to": "jane.doe@example.com", "cc": ["bob@example.net"]})
    evs = [e for e in responses_events(args, []) if not e["type"].endswith(".delta")]
    out, sm = run_sse(MIXED, responses_sse(evs), [])
    got = responses_arguments(out)
    assert got["done"] == got["item"] == got["completed"] == mask_arguments(MIXED, args)[0]
    assert any(f.location == "sse[2]$.arguments$.to" for f in sm.findings)


def test_findings_locate_the_argument_inside_the_event() -> None:
    args = json.dumps({"customer": {"email": "jane.doe@example.com"}})
    out, sm = run_sse(DEFAULT, responses_sse(responses_events(args, split(args, [4, 20]))), [])
    locs = {f.location for f in sm.findings}
    assert any(loc.endswith("$.delta$.customer.email") for loc in locs)
    assert "sse[7]$.response.output[0].arguments$.customer.email" in locs
    assert "jane" not in out.decode()


def test_custom_tool_input_stays_text() -> None:
    """``response.custom_tool_call_input.delta`` is free text, not JSON."""
    ev = {
        "type": "response.custom_tool_call_input.delta",
        "item_id": "ct_1",
        "output_index": 0,
        "delta": "mail jane.doe@example.com {",
    }
    out, _ = run_sse(DEFAULT, responses_sse([ev]), [])
    assert "".join(e["delta"] for e in events_of(out)) == "mail [EMAIL] {"


def test_legacy_function_call_deltas_are_reassembled() -> None:
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    args = '{"to": "jane.doe@example.com"}'
    chunks = [
        {"function_call": {"name": "send", "arguments": ""}},
        *({"function_call": {"arguments": p}} for p in split(args, [9, 15, 22])),
    ]
    stream = "".join(
        f"data: {json.dumps({**head, 'choices': [{'index': 0, 'delta': d, 'finish_reason': None}]})}\n\n"  # noqa: E501
        for d in chunks
    )
    stream += f"data: {json.dumps({**head, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'function_call'}]})}\n\ndata: [DONE]\n\n"  # noqa: E501
    out, _ = run_sse(DEFAULT, stream.encode(), [])
    got = "".join(
        (c.get("delta") or {}).get("function_call", {}).get("arguments", "")
        for e in events_of(out)
        for c in e["choices"]
    )
    assert json.loads(got) == {"to": "[EMAIL]"}


def test_parallel_tool_calls_are_kept_apart() -> None:
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    a, b = '{"to": "jane.doe@example.com"}', '{"card": "4111 1111 1111 1111"}'
    deltas = []
    for pa, pb in zip(split(a, [3, 12, 20]), split(b, [5, 14, 22]), strict=False):
        deltas.append(
            [
                {"index": 0, "function": {"arguments": pa}},
                {"index": 1, "function": {"arguments": pb}},
            ]
        )
    stream = "".join(
        f"data: {json.dumps({**head, 'choices': [{'index': 0, 'delta': {'tool_calls': d}, 'finish_reason': None}]})}\n\n"  # noqa: E501
        for d in deltas
    )
    stream += f"data: {json.dumps({**head, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'tool_calls'}]})}\n\n"  # noqa: E501
    out, _ = run_sse(DEFAULT, stream.encode(), [])
    got = {0: "", 1: ""}
    for e in events_of(out):
        for tc in (e["choices"][0].get("delta") or {}).get("tool_calls") or []:
            got[tc["index"]] += tc["function"]["arguments"]
    assert json.loads(got[0]) == {"to": "[EMAIL]"}
    assert json.loads(got[1]) == {"card": "[CREDIT_CARD]"}


# --------------------------------------------------------------------------- the SDKs


TOOL_ARGS = (
    '{"email": "jane\\u0040example.com", "card": "4111\\u00201111 1111 1111",'
    ' "note": "call +1 650-253-0000 or see https:\\/\\/admin:s3cr3t-Pa55\\u0040db.example.com\\/x"}'
)
MASKED_TOOL_ARGS = {
    "email": "[EMAIL]",
    "card": "[CREDIT_CARD]",
    "note": "call [PHONE] or see https://[URL_CREDENTIALS]@db.example.com/x",
}


def _responses_turn(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The upstream's scripted Responses turn: a tool call, then (with its output) an answer."""
    base = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": body.get("model", "m"),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "output": [],
    }
    items = body.get("input") if isinstance(body.get("input"), list) else []
    if not any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items):
        return responses_events(TOOL_ARGS, split(TOOL_ARGS, list(range(3, len(TOOL_ARGS), 5))))
    msg = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Done.", "annotations": []}],
    }
    evs: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**base, "status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**msg, "content": []}},
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "Done.",
        },
        {"type": "response.output_item.done", "output_index": 0, "item": msg},
        {
            "type": "response.completed",
            "response": {**base, "status": "completed", "output": [msg]},
        },
    ]
    for i, e in enumerate(evs):
        e["sequence_number"] = i
    for e in evs[:1]:
        e["response"].update(base)
    return evs


def _chat_turn(body: dict[str, Any]) -> bytes:
    if not any(m.get("role") == "tool" for m in body.get("messages", [])):
        return chat_sse(split(TOOL_ARGS, list(range(3, len(TOOL_ARGS), 5))))
    head = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [({"role": "assistant", "content": "Done."}, None), ({}, "stop")]
    return (
        "".join(
            f"data: {json.dumps({**head, 'choices': [{'index': 0, 'delta': d, 'finish_reason': f}]})}\n\n"  # noqa: E501
            for d, f in chunks
        )
        + "data: [DONE]\n\n"
    ).encode()


class _MaskedLLM(RecordingHandler):
    """An LLM upstream whose answers pass through the gateway's SSE masker (byte
    chunks of 7) before they are sent: what an agent behind Gatehouse receives."""

    def respond(self, entry: dict[str, Any], body: bytes) -> None:
        req = json.loads(body or b"{}")
        if entry["path"].endswith("/responses"):
            raw = responses_sse(_responses_turn(req))
        else:
            raw = _chat_turn(req)
        out, _sm = run_sse(DEFAULT, raw, list(range(7, len(raw), 7)))
        self.send_bytes(200, out, "text/event-stream")


@pytest.fixture(scope="module")
def llm():
    server = RecordingHTTPServer(("127.0.0.1", 0), _MaskedLLM)
    start_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()


def test_openai_sdk_parses_the_masked_responses_stream(llm) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{llm.url}/v1", api_key="k")
    deltas = ""
    with client.responses.stream(model="m", input="look up Jane") as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                deltas += event.delta
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call"
    assert call.arguments == deltas
    assert json.loads(call.arguments) == MASKED_TOOL_ARGS


def test_openai_sdk_parses_the_masked_chat_stream(llm) -> None:
    import openai
    from pydantic import BaseModel

    class Lookup(BaseModel):
        email: str
        card: str
        note: str

    client = openai.OpenAI(base_url=f"{llm.url}/v1", api_key="k")
    chunks = client.chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": "look up Jane"}]
    )
    args = "".join(
        tc.function.arguments or ""
        for c in chunks
        for tc in (c.choices[0].delta.tool_calls or [])
        if tc.function
    )
    assert json.loads(args) == MASKED_TOOL_ARGS
    # The SDK's own accumulator, which parses the arguments against the tool's schema.
    with client.chat.completions.stream(
        model="m",
        messages=[{"role": "user", "content": "look up Jane"}],
        tools=[openai.pydantic_function_tool(Lookup, name="lookup")],
    ) as stream:
        for _ in stream:
            pass
        completion = stream.get_final_completion()
    parsed = completion.choices[0].message.tool_calls[0].function.parsed_arguments
    assert parsed == Lookup(**MASKED_TOOL_ARGS)


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_agents_sdk_calls_the_tool_with_masked_arguments(llm, api) -> None:
    """A whole agent turn with the OpenAI Agents SDK, streamed: the tool runs with the
    masked arguments the SDK parsed, then the agent answers."""
    from agents import Agent, RunConfig, Runner, function_tool
    from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
    from agents.models.openai_responses import OpenAIResponsesModel
    from openai import AsyncOpenAI

    calls: list[dict[str, str]] = []

    @function_tool
    def lookup(email: str, card: str, note: str) -> str:
        """Look a customer up."""
        calls.append({"email": email, "card": card, "note": note})
        return "found"

    async def turn() -> str:
        client = AsyncOpenAI(base_url=f"{llm.url}/v1", api_key="k")
        model_cls = OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel
        agent = Agent(
            name="support",
            instructions="Look customers up.",
            tools=[lookup],
            model=model_cls(model="m", openai_client=client),
        )
        result = Runner.run_streamed(
            agent, "look up Jane", run_config=RunConfig(tracing_disabled=True)
        )
        async for _ in result.stream_events():
            pass
        return str(result.final_output)

    assert asyncio.run(turn()) == "Done."
    assert calls == [MASKED_TOOL_ARGS]
    bodies = [r["body"] for r in llm.received_snapshot()]
    assert not any(re.search(r"jane|s3cr3t|4111", b) for b in bodies)

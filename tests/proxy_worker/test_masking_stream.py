"""Property tests of incremental stream masking: PII and secrets split at random points
across SSE token deltas (chat completions and the Responses API) and across the byte
chunks of the stream (plain and gzip-encoded) never leak, and the hold-back stays within
its documented bound (``proxy_worker.masking.sse.HOLD_BACK``)."""

from __future__ import annotations

import base64
import json
import re
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy_worker.masking import DEFAULT_ENTITY_TYPES, HOLD_BACK, Masker, MaskingRule
from proxy_worker.masking.detectors import DEFAULT_PHONE_REGIONS
from proxy_worker.streaming import MaskedStream

MASKER = Masker(
    [MaskingRule(1, "default", entity_types=DEFAULT_ENTITY_TYPES)],
    hash_key=b"k",
    phone_regions=DEFAULT_PHONE_REGIONS,
)

_JWT = ".".join(
    [
        base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"k1"}').decode().rstrip("="),
        base64.urlsafe_b64encode(b'{"sub":"agent-7","scope":"read write"}').decode().rstrip("="),
        "c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2lnbmF0dXJl" * 3,
    ]
)
_PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    + "\n".join("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" for _ in range(12))
    + "\n-----END PRIVATE KEY-----"
)
#: (value, what must not appear in the output)
SECRETS = [
    ("jane.doe@example.com", "jane.doe@example.com"),
    ("+1 650-253-0000", "253-0000"),
    ("4111 1111 1111 1111", "1111 1111 1111"),
    ("123-45-6789", "123-45-6789"),
    ("DE89 3704 0044 0532 0130 00", "3704 0044 0532"),
    ("2001:db8::8a2e:370:7334", "8a2e:370:7334"),
    ("ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"),
    ("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE"),
    (_JWT, _JWT.split(".")[2][:40]),
    (_PEM, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"),
    ("password=Tr0ub4dor&3", "Tr0ub4dor"),
]
PROSE = st.sampled_from(
    ["Hello", "the", "account", "is", "Grüße", "👋", "42", "2024", "ok.", "see:", "(x)"]
)


def chat_stream(pieces: list[str]) -> bytes:
    def chunk(delta: dict, finish=None) -> str:
        obj = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(obj)}\n\n"

    out = chunk({"role": "assistant", "content": ""})
    out += "".join(chunk({"content": p}) for p in pieces)
    out += chunk({}, "stop") + "data: [DONE]\n\n"
    return out.encode()


def responses_stream(pieces: list[str]) -> bytes:
    out = []
    for i, p in enumerate(pieces):
        ev = {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": p,
            "sequence_number": i + 1,
        }
        out.append(f"event: response.output_text.delta\ndata: {json.dumps(ev)}\n\n")
    done = {"type": "response.output_text.done", "item_id": "msg_1", "sequence_number": 99}
    out.append(f"event: response.output_text.done\ndata: {json.dumps(done)}\n\n")
    return "".join(out).encode()


def deltas(data: bytes) -> str:
    text = []
    for block in re.split(r"\n\n", data.decode("utf-8")):
        for line in block.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                obj = json.loads(line[6:])  # every payload stays valid JSON
                if "choices" in obj:
                    text += [c["delta"].get("content") or "" for c in obj["choices"]]
                elif obj.get("type", "").endswith(".delta"):
                    text.append(obj["delta"])
    return "".join(text)


def split(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(text)}), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


TEXTS = st.lists(
    st.one_of(PROSE, st.sampled_from(range(len(SECRETS))).map(lambda i: SECRETS[i][0])),
    min_size=1,
    max_size=12,
).map(lambda parts: " ".join(parts) + " end.")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=TEXTS,
    delta_cuts=st.lists(st.integers(1, 5000), max_size=40),
    byte_cuts=st.lists(st.integers(1, 20000), max_size=30),
    api=st.sampled_from(["chat", "responses"]),
)
def test_split_pii_never_leaks(text: str, delta_cuts, byte_cuts, api: str) -> None:
    """Whatever the delta and chunk boundaries, no value leaks and the streamed deltas
    equal masking the whole text at once."""
    stream = (chat_stream if api == "chat" else responses_stream)(split(text, delta_cuts))
    sm = MASKER.sse_stream()
    out = bytearray()
    prev = 0
    for c in [*sorted({c for c in byte_cuts if c < len(stream)}), len(stream)]:
        out += sm.feed(stream[prev:c])
        prev = c
    out += sm.finish()
    assert deltas(bytes(out)) == MASKER.mask_text(text)[0]
    for value, fragment in SECRETS:
        if value in text:
            assert fragment.encode() not in out
            assert fragment not in repr(sm.findings)


@settings(max_examples=100, deadline=None)
@given(
    text=TEXTS,
    delta_cuts=st.lists(st.integers(1, 5000), max_size=40),
)
def test_hold_back_bound(text: str, delta_cuts) -> None:
    """After every delta event at most HOLD_BACK characters of delta text are withheld,
    and what was emitted so far is a prefix of the masked whole text."""
    pieces = split(text, delta_cuts)
    stream = chat_stream(pieces)
    sm = MASKER.sse_stream()
    emitted = ""
    masked_whole = MASKER.mask_text(text)[0]
    for ev in stream.split(b"\n\n"):
        if not ev:
            continue
        emitted += deltas(sm.feed(ev + b"\n\n"))
        assert masked_whole.startswith(emitted)
        withheld = max((len(s.pending) for s in sm._streams.values()), default=0)
        assert withheld <= HOLD_BACK
    emitted += deltas(sm.finish())
    assert emitted == masked_whole


def test_prose_is_not_held_back() -> None:
    """Words flow as they arrive: only the trailing word is withheld."""
    sm = MASKER.sse_stream()
    out = ""
    words = [f"word{chr(97 + i % 26)} " for i in range(50)]
    for i, w in enumerate(words):
        out += deltas(sm.feed(chat_stream([w]).split(b"\n\n")[1] + b"\n\n"))
        assert out == "".join(words[: i + 1])  # nothing withheld after a space


def test_hold_back_is_the_longest_detector_span() -> None:
    spans = [d.max_span for d in MASKER.detectors]
    assert all(s is not None for s in spans)
    assert max(s for s in spans if s is not None) - 64 <= HOLD_BACK  # context excluded
    assert HOLD_BACK == 4096


@settings(max_examples=60, deadline=None)
@given(
    text=TEXTS,
    delta_cuts=st.lists(st.integers(1, 5000), max_size=20),
    byte_cuts=st.lists(st.integers(1, 4000), max_size=30),
)
def test_gzip_stream_through_masked_stream(text: str, delta_cuts, byte_cuts) -> None:
    """The proxy's stream callable: gzip-encoded SSE cut at random byte positions."""
    raw = chat_stream(split(text, delta_cuts))
    co = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    gz = co.compress(raw) + co.flush()
    ms = MaskedStream(MASKER.sse_stream(), "gzip")
    out = bytearray()
    prev = 0
    for c in [*sorted({c for c in byte_cuts if c < len(gz)}), len(gz)]:
        got = ms(gz[prev:c])
        out += b"".join(got) if isinstance(got, list) else got  # [] = no chunk now
        prev = c
    out += ms(b"")
    assert not ms.error
    assert deltas(bytes(out)) == MASKER.mask_text(text)[0]
    for value, fragment in SECRETS:
        if value in text:
            assert fragment.encode() not in out

"""MaskedStream as mitmproxy calls it: what it returns becomes chunks on the wire."""

from __future__ import annotations

from proxy_worker.masking import Masker, MaskingRule
from proxy_worker.streaming import MaskedStream


def _stream() -> MaskedStream:
    masker = Masker([MaskingRule(id=1, name="pii", entity_types=("EMAIL",))], hash_key=b"k")
    return MaskedStream(masker.sse_stream())


def test_an_incomplete_event_emits_no_chunk_rather_than_an_empty_one():
    """mitmproxy writes a returned ``b""`` as a zero-length chunk, which ends a chunked
    body: half an event must give ``[]`` (nothing sent), the rest the whole event."""
    s = _stream()
    assert s(b'data: {"a": "jane.roe@exa') == []
    out = s(b'mple.com"}\n\n')
    assert isinstance(out, bytes) and b"[EMAIL]" in out and b"jane" not in out
    assert s(b"") in (b"", [])


def test_after_a_failure_the_body_ends_once_and_nothing_follows():
    s = _stream()
    s.error = "stream masking failed: test"
    assert s(b"data: x\n\n") == []
    assert s(b"") == []

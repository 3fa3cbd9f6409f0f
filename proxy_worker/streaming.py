"""Masking a streamed response body chunk by chunk (mitmproxy ``flow.response.stream``).

mitmproxy hands a stream callable each chunk still content-encoded, then ``b""`` at the
end (PITFALLS.md). :class:`MaskedStream` decodes incrementally (gzip, deflate, br,
zstd) with the engine's decompression-ratio limit
(:class:`~proxy_worker.masking.StreamDecoder`), feeds the masking engine's SSE masker,
and returns identity-encoded masked bytes; the caller removes ``Content-Encoding`` and
``Content-Length`` in ``responseheaders``.
"""

from __future__ import annotations

from proxy_worker.contract import RECORD_BODY_LIMIT
from proxy_worker.masking import StreamDecoder

#: Content-encodings :class:`MaskedStream` can decode incrementally (RFC 9110 §8.4.1).
STREAM_DECODABLE = frozenset({"", "identity", "gzip", "x-gzip", "deflate", "br", "zstd"})


class MaskedStream:
    """A ``flow.response.stream`` callable that decodes and masks an SSE body.

    ``sse_masker`` is a :class:`proxy_worker.masking.SSEStreamMasker`. The first
    :data:`RECORD_BODY_LIMIT` bytes of the masked output are kept in :attr:`recorded`
    for the audit record. A decoding error ends the stream (the rest is dropped, never
    passed unmasked) and is kept in :attr:`error`.
    """

    def __init__(self, sse_masker, encoding: str = "") -> None:
        self.masker = sse_masker
        self._decoder = StreamDecoder(encoding)
        self.recorded = bytearray()
        self.error = ""

    def _keep(self, out: bytes) -> bytes:
        room = RECORD_BODY_LIMIT - len(self.recorded)
        if room > 0:
            self.recorded += out[:room]
        return out

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        """mitmproxy's stream callable: each upstream chunk (``b""`` at the end) in, the
        bytes to send out (``[]``: nothing now). After a masking failure the body is
        ended once (one ``b""``, a zero-length chunk) and nothing more is sent."""
        if self.error:
            return []
        try:
            if chunk:
                out = self._keep(self.masker.feed(self._decoder.feed(chunk)))
                # Nothing to emit yet (an event not complete): emit no chunk at all.
                # ``b""`` would be written as a zero-length chunk, which ends a chunked
                # body (mitmproxy sends what the callable returns as one chunk).
                return out if out else []
            tail = self._decoder.finish()
            return self._keep((self.masker.feed(tail) if tail else b"") + self.masker.finish())
        except Exception as e:  # fail closed: stop the stream rather than leak
            self.error = f"stream masking failed: {type(e).__name__}"
            return b""

    @property
    def findings(self) -> list:
        return list(self.masker.findings)

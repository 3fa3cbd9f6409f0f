"""Decoding content-encoded bodies with limits (decompression bombs fail closed).

HTTP content codings (RFC 9110 §8.4.1): ``gzip``/``x-gzip`` (RFC 1952, several
members allowed), ``deflate`` (RFC 1950 zlib; raw RFC 1951 deflate as sent by
some servers is accepted too), ``br`` (RFC 7932), ``zstd`` (RFC 8878) and
``identity``. A header listing several codings (``gzip, br``) is decoded in
reverse order.

Two limits protect the worker's memory, checked while output is produced in
bounded steps (never more than :data:`STEP_BYTES` of new output between
checks for gzip/deflate/br; zstd input is fed in 512-byte slices):

* ``max_bytes``: decoded size (the masking limit, 10 MiB by default);
* ``max_ratio``: decoded size / encoded size, default :data:`DEFAULT_MAX_RATIO`
  (200), applied once the decoded size passes :data:`RATIO_FLOOR` (1 MiB) so
  small, highly repetitive bodies are not refused. Ordinary JSON and text
  compress 3–20×; a gzip bomb compresses about 1000×.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import brotli
import zstandard

from .errors import BodyTooLargeError, DecompressionError

__all__ = [
    "DEFAULT_MAX_RATIO",
    "RATIO_FLOOR",
    "STEP_BYTES",
    "SUPPORTED_ENCODINGS",
    "StreamDecoder",
    "decode_content",
    "parse_content_encoding",
]

DEFAULT_MAX_RATIO = 200.0
RATIO_FLOOR = 1024 * 1024
STEP_BYTES = 64 * 1024
_ZSTD_SLICE = 512

#: Content codings :class:`StreamDecoder` understands.
SUPPORTED_ENCODINGS = frozenset({"identity", "gzip", "x-gzip", "deflate", "br", "zstd"})

Emit = Callable[[bytes], None]


def parse_content_encoding(value: str | None) -> list[str]:
    """The codings of a ``Content-Encoding`` header in the order they were
    applied, lower-cased, ``identity`` removed.

    Raises:
        DecompressionError: an unsupported coding (``reason="unsupported"``).
    """
    out = []
    for part in (value or "").split(","):
        c = part.strip().lower()
        if not c or c == "identity":
            continue
        if c not in SUPPORTED_ENCODINGS:
            raise DecompressionError(f"unsupported content-encoding {c!r}", "unsupported")
        out.append(c)
    return out


class _Zlib:
    def __init__(self, coding: str) -> None:
        self._gzip = coding in ("gzip", "x-gzip")
        self._wbits = 16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS
        self._d = zlib.decompressobj(self._wbits)
        self._started = False
        self._fed = False
        #: Set for whole bodies (:func:`decode_content`): the stream must be complete.
        self.strict = False

    def run(self, data: bytes, emit: Emit) -> None:
        self._fed = self._fed or bool(data)
        buf = data
        while buf:
            try:
                out = self._d.decompress(buf, STEP_BYTES)
            except zlib.error:
                if self._gzip or self._started:
                    raise
                # "deflate" sent as raw RFC 1951 data
                self._wbits = -zlib.MAX_WBITS
                self._d = zlib.decompressobj(self._wbits)
                out = self._d.decompress(buf, STEP_BYTES)
            self._started = True
            if out:
                emit(out)
            buf = self._d.unconsumed_tail
            if not buf and self._d.eof and self._d.unused_data:
                if not self._gzip:
                    break  # trailing garbage after a zlib stream: ignored, as browsers do
                buf = self._d.unused_data  # next gzip member
                self._d = zlib.decompressobj(self._wbits)

    def end(self, emit: Emit) -> None:
        out = self._d.flush()
        if out:
            emit(out)
        if self.strict and self._fed and not self._d.eof:
            # A cut-off body decodes to a prefix without any error from zlib; forwarding
            # that prefix as the whole body would pass a truncated document on as complete.
            raise zlib.error("compressed stream is truncated")


class _Brotli:
    def __init__(self) -> None:
        self._d = brotli.Decompressor()
        self._fed = False
        #: Set for whole bodies (:func:`decode_content`): the stream must be complete.
        self.strict = False

    def run(self, data: bytes, emit: Emit) -> None:
        self._fed = self._fed or bool(data)
        out = self._d.process(data, output_buffer_limit=STEP_BYTES)
        if out:
            emit(out)
        while not self._d.can_accept_more_data():
            out = self._d.process(b"", output_buffer_limit=STEP_BYTES)
            if not out:
                break
            emit(out)

    def end(self, emit: Emit) -> None:
        # Brotli has no magic number: other data (a gzip body labelled ``br``) can be
        # consumed as the start of a stream that never ends and decode to nothing. An
        # unfinished stream is corrupt, never an empty body that passes unmasked.
        if self.strict and self._fed and not self._d.is_finished():
            raise brotli.error("brotli stream is truncated or not brotli data")


class _Zstd:
    def __init__(self) -> None:
        self._d = zstandard.ZstdDecompressor().decompressobj()
        self._fed = False
        #: Set for whole bodies (:func:`decode_content`): the last frame must be complete.
        self.strict = False

    def run(self, data: bytes, emit: Emit) -> None:
        self._fed = self._fed or bool(data)
        for i in range(0, len(data), _ZSTD_SLICE):
            if self._d.eof:
                self._d = zstandard.ZstdDecompressor().decompressobj()  # next frame
            out = self._d.decompress(data[i : i + _ZSTD_SLICE])
            if out:
                emit(out)

    def end(self, emit: Emit) -> None:
        if self.strict and self._fed and not self._d.eof:
            raise zstandard.ZstdError("zstd frame is truncated")


def _codec(coding: str) -> _Zlib | _Brotli | _Zstd:
    if coding in ("gzip", "x-gzip", "deflate"):
        return _Zlib(coding)
    if coding == "br":
        return _Brotli()
    return _Zstd()


class StreamDecoder:
    """Incremental, limited decoder for one body.

    Args:
        encoding: the ``Content-Encoding`` header value (``""`` = identity).
        max_bytes: decoded size limit in bytes, ``None`` = unlimited (streams).
        max_ratio: decoded/encoded size limit past :data:`RATIO_FLOOR`.

    Raises:
        DecompressionError: (constructor) unsupported coding; (``feed``,
            ``finish``) corrupt data (``reason="corrupt"``) or ratio past the
            limit (``reason="ratio"``).
        BodyTooLargeError: decoded size past ``max_bytes``.
    """

    def __init__(
        self,
        encoding: str | None,
        *,
        max_bytes: int | None = None,
        max_ratio: float = DEFAULT_MAX_RATIO,
    ) -> None:
        self._codecs = [_codec(c) for c in reversed(parse_content_encoding(encoding))]
        self.max_bytes = max_bytes
        self.max_ratio = max_ratio
        self.bytes_in = 0
        self.bytes_out = 0
        self._out: list[bytes] = []

    def _sink(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.max_bytes is not None and self.bytes_out > self.max_bytes:
            raise BodyTooLargeError(self.bytes_out, self.max_bytes)
        if self.bytes_out > RATIO_FLOOR and self.bytes_out > self.max_ratio * max(self.bytes_in, 1):
            raise DecompressionError(
                f"decompression ratio above {self.max_ratio:g}:1 "
                f"({self.bytes_in} encoded bytes gave {self.bytes_out}+): refused as a "
                "decompression bomb",
                "ratio",
            )
        self._out.append(data)

    def _stage(self, k: int) -> Emit:
        if k == len(self._codecs):
            return self._sink
        nxt = self._stage(k + 1)
        codec = self._codecs[k]
        return lambda data: codec.run(data, nxt)

    def feed(self, chunk: bytes) -> bytes:
        """Decode the next encoded bytes; returns the decoded bytes so far."""
        self.bytes_in += len(chunk)
        if not self._codecs:
            self._sink(bytes(chunk))
        elif chunk:
            try:
                self._stage(0)(bytes(chunk))
            except (zlib.error, brotli.error, zstandard.ZstdError) as exc:
                raise DecompressionError(f"cannot decode body: {exc}", "corrupt") from None
        out, self._out = b"".join(self._out), []
        return out

    def finish(self) -> bytes:
        """End of input: flush the decoders; returns the last decoded bytes."""
        try:
            for k, codec in enumerate(self._codecs):
                codec.end(self._stage(k + 1))
        except (zlib.error, brotli.error, zstandard.ZstdError) as exc:
            raise DecompressionError(f"cannot decode body: {exc}", "corrupt") from None
        out, self._out = b"".join(self._out), []
        return out


def decode_content(
    raw: bytes,
    encoding: str | None,
    *,
    max_bytes: int | None,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> bytes:
    """Decode a whole content-encoded body with limits.

    Args:
        raw: the body as sent (``flow.request.raw_content``).
        encoding: its ``Content-Encoding`` header value.
        max_bytes: decoded size limit (bytes).
        max_ratio: decoded/encoded size limit past :data:`RATIO_FLOOR`.

    Returns:
        The decoded body (``raw`` itself for identity).

    Raises:
        DecompressionError: unsupported coding, corrupt or truncated data (every
            coding's stream must end: a cut-off gzip, deflate, brotli or zstd body
            is refused rather than passed on as a shorter complete one), or a ratio
            past the limit (a decompression bomb).
        BodyTooLargeError: the decoded body is larger than ``max_bytes``.
    """
    if not parse_content_encoding(encoding):
        if max_bytes is not None and len(raw) > max_bytes:
            raise BodyTooLargeError(len(raw), max_bytes)
        return raw
    d = StreamDecoder(encoding, max_bytes=max_bytes, max_ratio=max_ratio)
    for codec in d._codecs:
        codec.strict = True  # a whole body: an unfinished stream is refused as corrupt
    return d.feed(raw) + d.finish()

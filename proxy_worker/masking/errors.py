"""Exceptions raised by the masking engine.

Every error path in :mod:`proxy_worker.masking` raises one of these instead of
returning partially masked data: a caller that catches :class:`MaskingError`
must block (or otherwise withhold) the body, never forward the original.
"""

from __future__ import annotations

__all__ = [
    "BinaryBodyError",
    "BodyTooLargeError",
    "DecompressionError",
    "MaskingConfigError",
    "MaskingError",
]


class MaskingError(Exception):
    """Base class: the body could not be masked; do not forward it unmasked."""


class BodyTooLargeError(MaskingError):
    """The body (or one server-sent event) is larger than ``max_body_bytes``.

    Attributes:
        size: bytes seen so far (``int``).
        limit: the configured limit in bytes (``int``).
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"body of {size} bytes exceeds the masking limit of {limit} bytes")
        self.size = size
        self.limit = limit


class BinaryBodyError(MaskingError):
    """The body is not text (not decodable with its charset nor as UTF-8).

    Whether such a body is blocked or passed through is the caller's policy.
    """


class MaskingConfigError(MaskingError, ValueError):
    """A :class:`~proxy_worker.masking.MaskingRule` is invalid.

    Raised by :class:`~proxy_worker.masking.Masker` and
    :func:`~proxy_worker.masking.validate_rule`: unknown strategy or entity
    type, a custom pattern that does not compile or matches the empty string,
    an unknown phone region, or a hash strategy with an empty key.
    """


class DecompressionError(MaskingError):
    """A content-encoded body could not be decoded safely: corrupt data, an
    unsupported or stacked encoding, or a decompression bomb (decoded size
    past the limit or past the allowed ratio to the encoded size).

    Attributes:
        reason: ``"corrupt"``, ``"unsupported"``, ``"too_large"`` or ``"ratio"``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

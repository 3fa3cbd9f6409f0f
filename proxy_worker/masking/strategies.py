"""Masking strategies: how a detected value is replaced.

=========  ==========================================  =========================
strategy   entity placeholder                          whole-field placeholder
=========  ==========================================  =========================
redact     ``[EMAIL]``                                 ``[REDACTED]``
hash       ``[EMAIL:1a2b3c4d]``                        ``[REDACTED:1a2b3c4d]``
partial    ``****1234`` (card, phone, SSN, IBAN),      ``[REDACTED]``
           ``j***@example.com`` (e-mail), else redact
drop       like redact                                 key / field removed
=========  ==========================================  =========================

The hash is the first 8 hex digits of HMAC-SHA256 (RFC 2104, FIPS 180-4)
keyed with the deployment's masking key over the UTF-8 *normalised* value,
so equal values give equal tokens (joinable) without being reversible
without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from .detectors import CREDIT_CARD, EMAIL, IBAN, PHONE, US_SSN

__all__ = [
    "DROP",
    "HASH",
    "PARTIAL",
    "REDACT",
    "STRATEGIES",
    "field_placeholder",
    "hash_token",
    "placeholder",
    "stronger",
]

REDACT = "redact"
HASH = "hash"
PARTIAL = "partial"
DROP = "drop"

#: Valid strategy names.
STRATEGIES: tuple[str, ...] = (REDACT, HASH, PARTIAL, DROP)

# When several rules cover the same entity type or field, the one that reveals
# least wins: drop > redact > hash (linkable) > partial (shows 4 characters).
_STRENGTH = {DROP: 3, REDACT: 2, HASH: 1, PARTIAL: 0}

_PARTIAL_LAST4 = frozenset({CREDIT_CARD, PHONE, US_SSN, IBAN})


def stronger(a: str, b: str) -> str:
    """Return whichever of two strategies reveals less (``drop`` > ``redact`` >
    ``hash`` > ``partial``)."""
    return a if _STRENGTH[a] >= _STRENGTH[b] else b


def hash_token(key: bytes, value: str) -> str:
    """First 8 lower-case hex digits of HMAC-SHA256(``key``, UTF-8 ``value``)."""
    return hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:8]


def placeholder(entity_type: str, strategy: str, raw: str, normalised: str, key: bytes) -> str:
    """Replacement text for one detected entity.

    Args:
        entity_type: e.g. ``"EMAIL"``.
        strategy: one of :data:`STRATEGIES`.
        raw: the matched text as it appears in the input.
        normalised: canonical value (see :class:`~proxy_worker.masking.detectors.Detection`).
        key: HMAC key for ``hash``.

    Returns:
        The placeholder string (never contains more than 4 characters of the
        value, and only for ``partial``).
    """
    if strategy == HASH:
        return f"[{entity_type}:{hash_token(key, normalised)}]"
    if strategy == PARTIAL:
        if entity_type in _PARTIAL_LAST4:
            tail = "".join(ch for ch in normalised if ch.isalnum())[-4:]
            return "****" + tail
        if entity_type == EMAIL and "@" in raw:
            local, _, domain = raw.rpartition("@")
            return f"{local[:1]}***@{domain}"
    return f"[{entity_type}]"


def _canonical(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def field_placeholder(strategy: str, value: Any, key: bytes) -> str:
    """Replacement for a whole field matched by name (``drop`` is handled by
    the caller, which removes the field): ``[REDACTED]`` or, for ``hash``,
    ``[REDACTED:xxxxxxxx]`` over the value (strings as-is, other JSON values
    as canonical compact JSON with sorted keys).
    """
    if strategy == HASH:
        return f"[REDACTED:{hash_token(key, _canonical(value))}]"
    return "[REDACTED]"

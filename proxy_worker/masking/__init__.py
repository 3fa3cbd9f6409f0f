"""Gatehouse masking engine (pure Python: no Django, no mitmproxy).

Finds personal data in HTTP bodies, query strings, forms and server-sent
event streams, and replaces it according to a policy's
:class:`MaskingRule` list::

    masker = Masker(rules, hash_key=key)          # once per policy snapshot
    if masker.enabled:
        result = masker.mask_body(body, content_type)   # -> MaskResult
        audit(summarise(result.findings))               # never contains values

See :mod:`.detectors` (what is detected and how it is validated),
:mod:`.strategies` (placeholders), :mod:`.engine` (dispatch) and :mod:`.sse`
(streams, :data:`HOLD_BACK`).
"""

from __future__ import annotations

from .detectors import (
    CREDIT_CARD,
    EMAIL,
    ENTITY_TYPES,
    IBAN,
    IP_ADDRESS,
    PHONE,
    US_SSN,
    CreditCardDetector,
    CustomRegexDetector,
    Detection,
    Detector,
    EmailDetector,
    IbanDetector,
    IpAddressDetector,
    PhoneDetector,
    UsSsnDetector,
    custom_entity_type,
)
from .engine import (
    FIELD,
    HANDLERS,
    Finding,
    Masker,
    MaskingRule,
    MaskResult,
    parse_content_type,
    summarise,
    validate_rule,
)
from .errors import BinaryBodyError, BodyTooLargeError, MaskingConfigError, MaskingError
from .sse import HOLD_BACK, SSEStreamMasker
from .strategies import DROP, HASH, PARTIAL, REDACT, STRATEGIES

__all__ = [
    "CREDIT_CARD",
    "DROP",
    "EMAIL",
    "ENTITY_TYPES",
    "FIELD",
    "HANDLERS",
    "HASH",
    "HOLD_BACK",
    "IBAN",
    "IP_ADDRESS",
    "PARTIAL",
    "PHONE",
    "REDACT",
    "STRATEGIES",
    "US_SSN",
    "BinaryBodyError",
    "BodyTooLargeError",
    "CreditCardDetector",
    "CustomRegexDetector",
    "Detection",
    "Detector",
    "EmailDetector",
    "Finding",
    "IbanDetector",
    "IpAddressDetector",
    "MaskResult",
    "Masker",
    "MaskingConfigError",
    "MaskingError",
    "MaskingRule",
    "PhoneDetector",
    "SSEStreamMasker",
    "UsSsnDetector",
    "custom_entity_type",
    "parse_content_type",
    "summarise",
    "validate_rule",
]

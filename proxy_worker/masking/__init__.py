"""Gatehouse masking engine (pure Python: no Django, no mitmproxy).

Finds personal data and secrets in HTTP bodies, query strings, forms and
server-sent event streams, and replaces it according to a policy's
:class:`MaskingRule` list::

    masker = Masker(rules, hash_key=key)          # once per policy snapshot
    if masker.enabled:
        result = masker.mask_body(body, content_type)   # -> MaskResult
        audit(summarise(result.findings))               # never contains values

See :mod:`.detectors` (what is detected, the registry), :mod:`.phone`,
:mod:`.secrets`, :mod:`.regional`, :mod:`.strategies` (placeholders),
:mod:`.engine` (dispatch, prefilter, JSON paths), :mod:`.sse` (streams,
:data:`HOLD_BACK`) and :mod:`.limits` (decompression limits).
"""

from __future__ import annotations

from .base import Detection, Detector
from .detectors import (
    CREDIT_CARD,
    DEFAULT_ENTITY_TYPES,
    DEFAULT_PHONE_REGIONS,
    EMAIL,
    ENTITY_TYPES,
    IBAN,
    IP_ADDRESS,
    PHONE,
    REGIONAL_ENTITY_TYPES,
    SECRET_ENTITY_TYPES,
    US_ITIN,
    US_SSN,
    CreditCardDetector,
    CustomRegexDetector,
    DenyListDetector,
    EmailDetector,
    IbanDetector,
    IpAddressDetector,
    PhoneDetector,
    UsItinDetector,
    UsSsnDetector,
    custom_entity_type,
    make_detector,
)
from .engine import (
    BINARY_BODY_POLICIES,
    DEFAULT_MAX_BODY_BYTES,
    FIELD,
    HANDLERS,
    Finding,
    Masker,
    MaskingRule,
    MaskResult,
    compile_json_path,
    parse_content_type,
    summarise,
    validate_rule,
)
from .errors import (
    BinaryBodyError,
    BodyTooLargeError,
    DecompressionError,
    MaskingConfigError,
    MaskingError,
)
from .limits import DEFAULT_MAX_RATIO, StreamDecoder, decode_content
from .sse import HOLD_BACK, SSEStreamMasker
from .strategies import DROP, HASH, PARTIAL, REDACT, STRATEGIES

__all__ = [
    "BINARY_BODY_POLICIES",
    "CREDIT_CARD",
    "DEFAULT_ENTITY_TYPES",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_RATIO",
    "DEFAULT_PHONE_REGIONS",
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
    "REGIONAL_ENTITY_TYPES",
    "SECRET_ENTITY_TYPES",
    "STRATEGIES",
    "US_ITIN",
    "US_SSN",
    "BinaryBodyError",
    "BodyTooLargeError",
    "CreditCardDetector",
    "CustomRegexDetector",
    "DecompressionError",
    "DenyListDetector",
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
    "StreamDecoder",
    "UsItinDetector",
    "UsSsnDetector",
    "compile_json_path",
    "custom_entity_type",
    "decode_content",
    "make_detector",
    "parse_content_type",
    "summarise",
    "validate_rule",
]

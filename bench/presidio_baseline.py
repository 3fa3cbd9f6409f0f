"""Presidio's pattern recognizers, the baseline both masking benchmarks compare against.

Presidio is not a project dependency: ``.venv/bin/pip install presidio-analyzer`` (see
docs/benchmarks.md for the version measured). No spaCy model is loaded: recognizers are
called with ``nlp_artifacts=None``.
"""

from __future__ import annotations

import logging

#: Presidio entity name -> Gatehouse entity type (also the corpus's names).
TYPE_MAP = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "US_SSN": "US_SSN",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP_ADDRESS",
}
PRESIDIO_ENTITIES = list(TYPE_MAP)


def recognizers() -> list:
    """One instance of each pattern recognizer; raises ImportError without Presidio."""
    # tldextract (the e-mail recognizer's) tries to download the Public Suffix List and
    # logs a traceback when offline before falling back to its bundled copy.
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    return [
        EmailRecognizer(),
        PhoneRecognizer(),
        CreditCardRecognizer(),
        UsSsnRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
    ]


def analyze(recs: list, text: str) -> list[tuple[int, int, str]]:
    """``(start, end, gatehouse type)`` of every Presidio result on ``text``."""
    out = []
    for r in recs:
        for res in r.analyze(text, entities=PRESIDIO_ENTITIES, nlp_artifacts=None) or []:
            t = TYPE_MAP.get(res.entity_type)
            if t is not None:
                out.append((res.start, res.end, t))
    return out

"""Opt-in national identifiers, validated with python-stdnum.

Each detector matches the usual written forms of the number (compact or with
the customary separators) on token boundaries and keeps only candidates that
pass the ``is_valid`` of the python-stdnum module named below (check digits,
date and region parts):

==================  ===========================  ===================================
type                stdnum module                standard / check
==================  ===========================  ===================================
``UK_NHS``          ``stdnum.gb.nhs``            NHS number, mod 11
``CA_SIN``          ``stdnum.ca.sin``            Social Insurance Number, Luhn
``IN_AADHAAR``      ``stdnum.in_.aadhaar``       UIDAI Aadhaar, Verhoeff
``IN_PAN``          ``stdnum.in_.pan``           Income Tax PAN, holder-type letter
``ES_DNI``          ``stdnum.es.dni``            DNI, mod 23 check letter
``ES_NIE``          ``stdnum.es.nie``            NIE, mod 23 check letter
``IT_FISCAL_CODE``  ``stdnum.it.codicefiscale``  codice fiscale, check letter
``FR_NIR``          ``stdnum.fr.nir``            NIR / INSEE number, mod 97 key
``BR_CPF``          ``stdnum.br.cpf``            CPF, two mod 11 check digits
``DE_TAX_ID``       ``stdnum.de.idnr``           Steuerliche Identifikationsnummer,
                                                 ISO 7064 mod 11,10
==================  ===========================  ===================================

These are off by default: a rule turns them on by listing the type.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import ModuleType

from stdnum.br import cpf
from stdnum.ca import sin
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.gb import nhs
from stdnum.in_ import aadhaar, pan
from stdnum.it import codicefiscale

from .base import Detection

__all__ = ["REGIONAL_ENTITY_TYPES", "StdnumDetector", "make"]

_O = "0-9LMNPQRSTUV"  # codice fiscale digits and their omocodia letters

# type: (module, candidate regex, gate)
_SPECS: dict[str, tuple[ModuleType, str, str]] = {
    "UK_NHS": (
        nhs,
        r"[0-9]{3}([ \-]?)[0-9]{3}\1[0-9]{4}",
        r"[0-9]{3}[ \-]?[0-9]{3}[ \-]?[0-9]{4}",
    ),
    "CA_SIN": (
        sin,
        r"[0-9]{3}([ \-]?)[0-9]{3}\1[0-9]{3}",
        r"[0-9]{3}[ \-]?[0-9]{3}[ \-]?[0-9]{3}",
    ),
    "IN_AADHAAR": (
        aadhaar,
        r"[2-9][0-9]{3}([ \-]?)[0-9]{4}\1[0-9]{4}",
        r"[2-9][0-9]{3}[ \-]?[0-9]{4}[ \-]?[0-9]{4}",
    ),
    "IN_PAN": (pan, r"[A-Z]{5}[0-9]{4}[A-Z]", r"[A-Z]{5}[0-9]{4}[A-Z]"),
    "ES_DNI": (dni, r"[0-9]{8}-?[A-Za-z]", r"[0-9]{8}-?[A-Za-z]"),
    "ES_NIE": (nie, r"[XYZxyz]-?[0-9]{7}-?[A-Za-z]", r"[XYZxyz]-?[0-9]{7}-?[A-Za-z]"),
    "IT_FISCAL_CODE": (
        codicefiscale,
        rf"[A-Z]{{6}}[{_O}]{{2}}[A-Z][{_O}]{{2}}[A-Z][{_O}]{{3}}[A-Z]",
        rf"[A-Z]{{6}}[{_O}]{{2}}[A-Z][{_O}]{{2}}[A-Z]",
    ),
    "FR_NIR": (
        nir,
        r"[12] ?[0-9]{2} ?[0-9]{2} ?(?:[0-9]{2}|2[AB]) ?[0-9]{3} ?[0-9]{3} ?[0-9]{2}",
        r"[12] ?[0-9]{2} ?[0-9]{2} ?(?:[0-9]{2}|2[AB]) ?[0-9]{3}",
    ),
    "BR_CPF": (
        cpf,
        r"[0-9]{3}(\.?)[0-9]{3}\1[0-9]{3}-?[0-9]{2}",
        r"[0-9]{3}\.?[0-9]{3}\.?[0-9]{3}-?[0-9]{2}",
    ),
    "DE_TAX_ID": (
        idnr,
        r"[0-9]{2}( ?)[0-9]{3}\1[0-9]{3}\1[0-9]{3}",
        r"[0-9]{2} ?[0-9]{3} ?[0-9]{3} ?[0-9]{3}",
    ),
}

#: Opt-in regional entity types, in priority order.
REGIONAL_ENTITY_TYPES: tuple[str, ...] = tuple(_SPECS)


class StdnumDetector:
    """A national identifier validated by a python-stdnum module.

    Args:
        entity_type: one of :data:`REGIONAL_ENTITY_TYPES`.

    ``normalised`` is the compact form (``module.compact``).
    """

    max_span: int | None = 40
    uses_hint = False

    def __init__(self, entity_type: str) -> None:
        module, pattern, gate = _SPECS[entity_type]
        self.entity_type = entity_type
        self._module = module
        self.gate: str | None = rf"(?:\b|_){gate}"
        self._re = re.compile(rf"(?<![0-9A-Za-z]){pattern}(?![0-9A-Za-z])")

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield valid identifiers in ``text`` (``hint`` is ignored)."""
        for m in self._re.finditer(text):
            value = m.group()
            if self._module.is_valid(value):
                yield Detection(m.start(), m.end(), self.entity_type, self._module.compact(value))


def make(entity_type: str) -> StdnumDetector:
    """A new detector for one of :data:`REGIONAL_ENTITY_TYPES`."""
    return StdnumDetector(entity_type)

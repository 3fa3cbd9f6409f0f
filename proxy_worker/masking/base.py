"""Shared types of the detectors: :class:`Detection` and the :class:`Detector` protocol.

A detector is any object with

* ``entity_type: str`` – the upper-case type name used in placeholders;
* ``gate: str | None`` – a regular expression (syntax common to Python
  :mod:`re` and RE2, no look-around) that matches somewhere inside or right
  next to every detection the detector can make. The engine combines the
  gates of all active detectors into one prefilter, so text without any gate
  match is never handed to the detectors. ``None`` = no prefilter (the
  detector runs on every string, e.g. a custom pattern);
* ``max_span: int | None`` – the longest text (characters) one detection,
  together with the context the detector looks at, can cover; ``None`` =
  unbounded (the engine then never scans only a window of a long text);
* ``uses_hint: bool`` – whether ``hint`` changes the result;
* ``find(text: str, hint: str = "") -> Iterator[Detection]`` – detections in
  ascending ``start`` order, never overlapping each other. ``hint`` is
  context such as the JSON key the string is stored under.

Offsets are Python ``str`` indices (code points), ``end`` exclusive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, Protocol

__all__ = ["Detection", "Detector"]


class Detection(NamedTuple):
    """One detected entity in a string.

    Attributes:
        start: index of the first character (``int``, code points).
        end: index after the last character (exclusive).
        entity_type: e.g. ``"EMAIL"``.
        normalised: canonical form used for hashing and partial display
            (lower-cased e-mail, digits of a card/SSN, E.164 phone, compact
            upper-case IBAN, compressed IP). Contains the sensitive value:
            never log it or put it in a :class:`~proxy_worker.masking.Finding`.
    """

    start: int
    end: int
    entity_type: str
    normalised: str


class Detector(Protocol):
    """Structural type of a detector (see module docstring)."""

    entity_type: str
    gate: str | None
    max_span: int | None
    uses_hint: bool

    def find(self, text: str, hint: str = "") -> Iterator[Detection]:
        """Yield detections in ``text`` in ascending start order."""
        ...

"""Template filters of the audit pages.

``masked`` renders recorded text with the masking engine's placeholders highlighted.
Recorded text is untrusted: it is HTML-escaped *first*; only then are placeholders
(which escaping leaves unchanged: ``[``, ``]``, ``:``, letters, digits) wrapped in
``<mark>``. The wrapper's attributes hold only the matched type, which the pattern
limits to ``[A-Z0-9_]``, so no recorded byte can become markup.
"""

from __future__ import annotations

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

#: ``[EMAIL]``, ``[EMAIL:3f9a1c2b]`` (keyed hash), ``[REDACTED]``, ``[REDACTED:…]``.
PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9_]{1,39})(?::([0-9a-f]{6,64}))?\]")


def _wrap(m: re.Match[str]) -> str:
    kind = m.group(1)
    title = f"masked {kind}" + (" (keyed hash: equal values match)" if m.group(2) else "")
    return f'<mark class="masked" data-type="{kind}" title="{title}">{m.group(0)}</mark>'


@register.filter(name="masked", is_safe=True)
def masked(value: object) -> SafeString:
    """``value`` escaped, with masking placeholders wrapped in ``<mark class="masked">``."""
    return mark_safe(PLACEHOLDER.sub(_wrap, escape("" if value is None else str(value))))  # noqa: S308


@register.filter(name="ms")
def ms(value: object) -> str:
    """A duration in milliseconds for display (``12.3 ms``; ``—`` when missing)."""
    try:
        return f"{float(value):.1f} ms"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"

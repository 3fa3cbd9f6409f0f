"""Presentation helpers shared by the approvals and audit pages."""

from __future__ import annotations

import json


def pretty_json(body: str) -> str:
    """``body`` pretty-printed (2-space indent) when it is JSON, else unchanged.

    The result is still untrusted text: templates render it autoescaped, never ``|safe``.
    """
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except (ValueError, TypeError):
        return body

"""Template context: the signed-in user's roles, for navigation."""

from __future__ import annotations

from django.http import HttpRequest

from controlplane.roles import roles_of


def roles(request: HttpRequest) -> dict[str, object]:
    """``{"roles": frozenset[str]}`` for the current user."""
    return {"roles": roles_of(request.user)}

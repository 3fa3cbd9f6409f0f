"""Roles are the Django groups ``admin``, ``approver`` and ``auditor``.

Views use :func:`role_required`: anonymous users are sent to sign in, signed-in users
without the role get 403. Superuser status grants no role by itself: separation of
duties (an admin is not an approver unless placed in that group) is deliberate.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

ADMIN = "admin"
APPROVER = "approver"
AUDITOR = "auditor"
ROLES = (ADMIN, APPROVER, AUDITOR)


def roles_of(user: Any) -> frozenset[str]:
    """The Gatehouse roles of ``user`` (cached on the user object for the request)."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    cached = getattr(user, "_gatehouse_roles", None)
    if cached is None:
        cached = frozenset(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        user._gatehouse_roles = cached
    return cached


def has_role(user: Any, *roles: str) -> bool:
    """Whether ``user`` holds at least one of ``roles``."""
    return bool(roles_of(user) & set(roles))


def role_required(
    *roles: str,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """View decorator: sign-in redirect for anonymous users, 403 without one of ``roles``."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                from django.contrib.auth.views import redirect_to_login

                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, *roles):
                raise PermissionDenied(f"requires role: {' or '.join(roles)}")
            return view(request, *args, **kwargs)

        wrapper.gatehouse_roles = roles  # type: ignore[attr-defined]
        return wrapper

    return decorator


#: Django model permissions of each role (app label -> actions); the Gatehouse pages
#: check roles, Django admin checks these.
ROLE_PERMISSIONS: dict[str, dict[str, tuple[str, ...]]] = {
    ADMIN: {
        "controlplane": ("add", "change", "delete", "view"),
        "approvals": ("view",),
        "audit": ("view",),
        "auth": ("add", "change", "view"),
    },
    APPROVER: {},
    AUDITOR: {},
}


def ensure_roles(**kwargs: Any) -> None:
    """Create the role groups with their model permissions (a ``post_migrate`` handler)."""
    from django.contrib.auth.models import Group, Permission

    for role, apps in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        perms = [
            p
            for p in Permission.objects.filter(
                content_type__app_label__in=list(apps)
            ).select_related("content_type")
            if p.codename.split("_", 1)[0] in apps[p.content_type.app_label]
        ]
        group.permissions.add(*perms)

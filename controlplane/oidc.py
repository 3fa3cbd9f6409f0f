"""OpenID Connect for people (sign-in, roles from group claims) and for agents (JWTs).

People sign in through allauth's generic ``openid_connect`` provider (OpenID Connect
Core 1.0, authorization-code flow with PKCE), configured from the environment in
``settings.py`` (``GATEHOUSE_OIDC_*``). On every such sign-in the user's Gatehouse roles
are set from a group claim (:func:`roles_from_claims`, :func:`apply_roles`; called from
:class:`controlplane.adapters.GatehouseSocialAccountAdapter`): the identity provider is
the source of truth for SSO users, so a group removed there removes the role here at
the next sign-in.

Agents present a JWT access token (RFC 7519, RFC 9068) obtained from their identity
provider with the client-credentials grant. The control plane only configures it
(``GATEHOUSE_AGENT_OIDC_*`` -> :func:`agent_oidc_config`, compiled into the policy
snapshot); the proxy worker validates tokens (:mod:`proxy_worker.identity`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from controlplane.roles import ADMIN, ROLES
from proxy_worker.contract import ContractError
from proxy_worker.identity import AgentOIDCConfig

log = logging.getLogger("gatehouse.oidc")


def parse_role_map(raw: str) -> dict[str, frozenset[str]]:
    """Parse ``"idp-group=role,idp-group2=role"`` into ``{idp group: {roles}}``.

    A group may be listed more than once to grant several roles. Raises
    :class:`ImproperlyConfigured` for an entry without ``=`` or an unknown role.

    >>> sorted(parse_role_map("sec=approver, sec=auditor")["sec"])
    ['approver', 'auditor']
    """
    out: dict[str, set[str]] = {}
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        group, sep, role = entry.rpartition("=")
        group, role = group.strip(), role.strip()
        if not sep or not group:
            raise ImproperlyConfigured(f"GATEHOUSE_OIDC_ROLE_MAP: {entry!r} is not group=role")
        if role not in ROLES:
            raise ImproperlyConfigured(
                f"GATEHOUSE_OIDC_ROLE_MAP: unknown role {role!r} (one of {', '.join(ROLES)})"
            )
        out.setdefault(group, set()).add(role)
    return {g: frozenset(r) for g, r in out.items()}


def claim_values(claims: Mapping[str, Any], name: str) -> list[str]:
    """The string values of claim ``name``: a JSON array, or one space/comma-separated string.

    A dotted name reaches into nested objects (``realm_access.roles`` for Keycloak).
    """
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping):
            return []
        value = value.get(part)
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def roles_from_claims(
    claims: Mapping[str, Any], claim: str, role_map: Mapping[str, Iterable[str]]
) -> frozenset[str]:
    """The Gatehouse roles the identity provider's claims grant (empty: none)."""
    roles: set[str] = set()
    for group in claim_values(claims, claim):
        roles.update(role_map.get(group, ()))
    return frozenset(roles)


def login_claims(extra_data: Mapping[str, Any]) -> dict[str, Any]:
    """Claims of one OpenID Connect login: ID token claims, overridden by userinfo.

    allauth stores ``{"userinfo": {...}, "id_token": {...}}`` as the social account's
    ``extra_data`` (older versions: the claims themselves).
    """
    if "userinfo" in extra_data or "id_token" in extra_data:
        return {**(extra_data.get("id_token") or {}), **(extra_data.get("userinfo") or {})}
    return dict(extra_data)


def apply_roles(user: Any, roles: frozenset[str]) -> None:
    """Make ``user``'s Gatehouse role groups exactly ``roles``; other groups are untouched.

    ``is_staff`` follows the admin role (Django admin needs both, see ``admin_site.py``);
    ``is_superuser`` is never changed. One transaction.
    """
    # Imported here: settings.py imports this module (parse_role_map) before apps load.
    from django.contrib.auth.models import Group
    from django.db import transaction

    with transaction.atomic():
        groups = {g.name: g for g in Group.objects.filter(name__in=ROLES)}
        for role in ROLES:
            group = groups.get(role) or Group.objects.get_or_create(name=role)[0]
            if role in roles:
                user.groups.add(group)
            else:
                user.groups.remove(group)
        is_staff = ADMIN in roles
        if user.is_staff != is_staff:
            user.is_staff = is_staff
            user.save(update_fields=["is_staff"])
    user.__dict__.pop("_gatehouse_roles", None)  # drop roles cached for this request
    log.info("roles of %s set from the identity provider: %s", user.pk, sorted(roles) or "none")


def sync_roles_from_login(user: Any, extra_data: Mapping[str, Any]) -> frozenset[str]:
    """Apply the configured claim-to-role mapping to ``user`` for one OIDC login."""
    cfg = settings.GATEHOUSE_OIDC
    roles = roles_from_claims(login_claims(extra_data), cfg["roles_claim"], cfg["role_map"])
    apply_roles(user, roles)
    return roles


def agent_oidc_config() -> dict[str, Any] | None:
    """The snapshot's ``agent_oidc`` block from ``settings.GATEHOUSE_AGENT_OIDC``, or ``None``.

    Validated with the worker's own parser (:class:`AgentOIDCConfig`), so a setting the
    workers would refuse fails here first with :class:`ImproperlyConfigured`.
    """
    cfg = settings.GATEHOUSE_AGENT_OIDC
    if not cfg.get("issuer"):
        return None
    doc = {
        "issuer": cfg["issuer"],
        "audience": cfg["audience"],
        "jwks_url": cfg["jwks_url"],
        "algorithms": list(cfg["algorithms"]),
        "subject_claim": cfg["subject_claim"],
        "groups_claim": cfg["groups_claim"] or None,
        "leeway": cfg["leeway"],
    }
    try:
        AgentOIDCConfig.from_document(doc)
    except ContractError as e:
        raise ImproperlyConfigured(f"GATEHOUSE_AGENT_OIDC_*: {e}") from e
    return doc

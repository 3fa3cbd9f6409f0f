"""The test identity provider's claims: group names for people, client ids for agents."""

from __future__ import annotations

from typing import Any

from allauth.idp.oidc.adapter import DefaultOIDCAdapter
from django.conf import settings


class GroupsOIDCAdapter(DefaultOIDCAdapter):
    """Adds ``groups`` (the user's Django group names) to ID tokens and userinfo, as
    corporate IdPs do; client-credentials access tokens get ``sub`` = the client id and
    the Gatehouse audience (RFC 9068 §2.2)."""

    def get_claims(self, purpose, user, client, scopes, email=None, **kwargs) -> dict[str, Any]:
        claims = super().get_claims(purpose, user, client, scopes, email=email, **kwargs)
        claims["groups"] = sorted(user.groups.values_list("name", flat=True))
        claims["preferred_username"] = user.get_username()
        return claims

    def populate_access_token(self, access_token, *, client, scopes, user, **kwargs) -> None:
        if user is None:
            access_token["sub"] = client.id
            access_token["aud"] = settings.IDP_AUDIENCE

"""allauth social-account adapter: who may sign in with OpenID Connect, and with what roles.

Local sign-up stays closed (:class:`controlplane.auth.NoSignupAccountAdapter`). People
who sign in through the configured identity provider get an account on first sign-in
when ``GATEHOUSE_OIDC_AUTO_SIGNUP`` is on (default), and their roles are set from the
identity provider's group claim on every sign-in (:mod:`controlplane.oidc`). Accounts
are never matched to existing local users by e-mail: an SSO user whose name collides
with a local one gets a fresh, de-duplicated user name.
"""

from __future__ import annotations

from typing import Any

from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings

from controlplane.oidc import sync_roles_from_login


class GatehouseSocialAccountAdapter(DefaultSocialAccountAdapter):
    """Opens sign-up to the identity provider only, and maps its groups to roles."""

    def is_open_for_signup(self, request: Any, sociallogin: Any) -> bool:
        return bool(settings.GATEHOUSE_OIDC["auto_signup"])

    def pre_social_login(self, request: Any, sociallogin: Any) -> None:
        # Existing users: roles follow the claims of this login before it completes.
        if sociallogin.is_existing and sociallogin.user is not None:
            sync_roles_from_login(sociallogin.user, sociallogin.account.extra_data or {})

    def save_user(self, request: Any, sociallogin: Any, form: Any = None) -> Any:
        # New users: roles from the claims of their first login.
        user = super().save_user(request, sociallogin, form)
        sync_roles_from_login(user, sociallogin.account.extra_data or {})
        return user

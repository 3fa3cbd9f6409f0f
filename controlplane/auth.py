"""allauth integration: accounts are created by admins, never by self sign-up."""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter


class NoSignupAccountAdapter(DefaultAccountAdapter):
    """Closes the public sign-up form: a gateway's users are provisioned, not self-made."""

    def is_open_for_signup(self, request) -> bool:
        return False

"""Optional TOTP (allauth MFA, RFC 6238) for local accounts: activate, then sign in with it."""

from __future__ import annotations

import time

import pytest
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY, format_hotp_value, hotp_value

pytestmark = pytest.mark.django_db


def _code(secret: str, step: int = 0) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30 + step))


def test_a_user_turns_on_totp_and_then_needs_a_code_to_sign_in(client, users, settings):
    settings.MFA_TOTP_TOLERANCE = 1  # the second sign-in below uses the next period's code
    r = client.post("/accounts/login/", {"login": "auditor", "password": "pw-auditor"})
    assert r.status_code == 302
    page = client.get("/accounts/2fa/totp/activate/", follow=True)
    if page.redirect_chain and "/accounts/reauthenticate/" in page.redirect_chain[-1][0]:
        # allauth asks for the password again before a security change.
        client.post(page.redirect_chain[-1][0], {"password": "pw-auditor"})
        page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200
    secret = client.session[SECRET_SESSION_KEY]
    assert client.post("/accounts/2fa/totp/activate/", {"code": "000000"}).status_code == 200
    r = client.post("/accounts/2fa/totp/activate/", {"code": _code(secret)})
    assert r.status_code == 302
    from allauth.mfa.models import Authenticator

    assert Authenticator.objects.filter(user=users["auditor"], type="totp").exists()

    client.post("/accounts/logout/")
    r = client.post("/accounts/login/", {"login": "auditor", "password": "pw-auditor"})
    assert r.status_code == 302
    assert r["Location"].startswith("/accounts/2fa/authenticate/")
    # The password alone does not sign in.
    assert client.get("/audit/sessions/").status_code == 302
    wrong = client.post("/accounts/2fa/authenticate/", {"code": "123456"})
    assert wrong.status_code == 200
    ok = client.post("/accounts/2fa/authenticate/", {"code": _code(secret, 1)})
    assert ok.status_code == 302
    assert client.get("/audit/sessions/").status_code == 200


def test_totp_is_optional(client, users):
    r = client.post("/accounts/login/", {"login": "approver", "password": "pw-approver"})
    assert r.status_code == 302 and r["Location"] == "/"
    assert client.get("/approvals/").status_code == 200

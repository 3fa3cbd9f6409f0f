"""Security headers on every page: CSP without inline script, frame denial, nosniff,
referrer policy, opener policy, and HSTS when configured."""

from __future__ import annotations

import pytest
from django.test import override_settings

pytestmark = [pytest.mark.security, pytest.mark.django_db]

PAGES = ["/accounts/login/", "/", "/approvals/", "/audit/sessions/", "/console/", "/healthz"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_sends_the_security_headers(client, users, path):
    client.force_login(users["admin"])
    resp = client.get(path)
    csp = resp.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["script-src"] == "'self'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "same-origin"
    assert resp.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in resp.headers  # off unless configured


@override_settings(
    SECURE_HSTS_SECONDS=31536000, SECURE_HSTS_INCLUDE_SUBDOMAINS=True, SECURE_HSTS_PRELOAD=True
)
def test_hsts_is_sent_over_https_when_configured(client):
    resp = client.get("/accounts/login/", secure=True)
    assert resp.headers["Strict-Transport-Security"] == (
        "max-age=31536000; includeSubDomains; preload"
    )
    assert "Strict-Transport-Security" not in client.get("/accounts/login/").headers


def test_session_and_csrf_cookies_are_not_readable_by_script(client, users):
    from django.conf import settings

    client.get("/accounts/login/")
    assert client.cookies["csrftoken"]["httponly"]
    assert settings.SESSION_COOKIE_HTTPONLY and settings.SESSION_COOKIE_SAMESITE == "Lax"

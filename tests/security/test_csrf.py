"""CSRF is enforced on every state-changing URL of the web app (decisions, admin, console).

Every URL pattern is enumerated from the URL conf, so a view added later is covered
without editing this test. A POST without a token from a signed-in user holding every
role must be refused with Django's CSRF failure, before the view runs; the same POST
with the token must get past the CSRF check.
"""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.converters import IntConverter, SlugConverter, UUIDConverter

pytestmark = [pytest.mark.security, pytest.mark.django_db]

#: Views that accept POST from clients without a session, by design.
CSRF_EXEMPT: set[str] = set()
#: Admin URLs (regex patterns, not enumerable with sample arguments) that change state.
ADMIN_POSTS = [
    "/admin/logout/",
    "/admin/auth/user/add/",
    "/admin/auth/group/add/",
    "/admin/controlplane/target/add/",
    "/admin/controlplane/target/1/change/",
    "/admin/controlplane/target/1/delete/",
    "/admin/controlplane/agent/add/",
    "/admin/controlplane/accessrule/add/",
    "/admin/controlplane/maskingrule/add/",
]


def _sample(converter) -> str:
    if isinstance(converter, UUIDConverter):
        return str(uuid.uuid4())
    if isinstance(converter, IntConverter):
        return "1"
    if isinstance(converter, SlugConverter):
        return "targets"
    return "up"


def _urls(patterns=None, prefix: str = "") -> list[str]:
    """Every route of the URL conf with sample arguments (regex routes are skipped)."""
    out: list[str] = []
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        route = getattr(p.pattern, "_route", None)
        if route is None:
            continue  # RegexPattern (Django admin internals): covered by ADMIN_POSTS
        convs = p.pattern.converters
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m, c=convs: _sample(c[m.group(1)]), route)
        if isinstance(p, URLResolver):
            if path.startswith("admin/"):
                continue
            out += _urls(p.url_patterns, prefix + path)
        elif isinstance(p, URLPattern):
            out.append("/" + prefix + path)
    return out


@pytest.fixture
def everyone(users):
    """A user holding every Gatehouse role (and staff, for the Django admin)."""
    from django.contrib.auth.models import Group

    user = users["admin"]
    for role in ("admin", "approver", "auditor"):
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    user.is_staff = user.is_superuser = True
    user.save()
    return user


def _is_csrf_failure(resp) -> bool:
    return resp.status_code == 403 and b"CSRF" in resp.content


def test_the_url_conf_is_enumerated():
    urls = _urls()
    assert any(u.startswith("/approvals/") and u.endswith("/decide") for u in urls)
    assert any(u.startswith("/console/") for u in urls)
    assert any(u.startswith("/audit/") for u in urls)
    assert len(urls) > 20


def test_every_post_without_a_token_is_refused(everyone):
    c = Client(enforce_csrf_checks=True)
    c.force_login(everyone)
    accepted = []
    for url in _urls() + ADMIN_POSTS:
        if url in CSRF_EXEMPT or url.startswith("/static/"):
            continue
        resp = c.post(url, {"verdict": "approve", "comment": "csrf"})
        if resp.status_code == 405:
            continue  # GET-only view: nothing to forge
        if not _is_csrf_failure(resp):
            accepted.append((url, resp.status_code))
    assert accepted == [], f"POST accepted without a CSRF token: {accepted}"


def test_a_forged_cross_site_post_is_refused_even_with_a_stolen_cookie(everyone):
    c = Client(enforce_csrf_checks=True)
    c.force_login(everyone)
    c.get("/")  # a page with a form: sets the csrftoken cookie
    token = c.cookies["csrftoken"].value
    # The cookie alone (what a cross-site form carries) is not enough: the token must be
    # in the body or the X-CSRFToken header, which another origin cannot read.
    resp = c.post(f"/approvals/{uuid.uuid4()}/decide", {"verdict": "approve"})
    assert _is_csrf_failure(resp)
    # With the token, the CSRF check passes (the view answers: 404, unknown request).
    resp = c.post(
        f"/approvals/{uuid.uuid4()}/decide", {"verdict": "approve"}, HTTP_X_CSRFTOKEN=token
    )
    assert not _is_csrf_failure(resp) and resp.status_code in (302, 400, 403, 404)
    # A token with an https Referer from another site is refused (strict referer check).
    resp = c.post(
        f"/approvals/{uuid.uuid4()}/decide",
        {"verdict": "approve", "csrfmiddlewaretoken": token},
        secure=True,
        HTTP_REFERER="https://evil.example/",
    )
    assert _is_csrf_failure(resp)


def test_logout_needs_a_token():
    c = Client(enforce_csrf_checks=True)
    assert _is_csrf_failure(c.post("/accounts/logout/"))

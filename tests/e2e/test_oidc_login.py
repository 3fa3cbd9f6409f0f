"""OpenID Connect sign-in end to end, against a real local identity provider.

The identity provider is allauth's own (``allauth.idp.oidc``) running as a second Django
process (``tests/identity/idp_settings.py``, SQLite); Gatehouse's web process is
configured for it through the ``GATEHOUSE_OIDC_*`` environment. Debian's Chromium, driven
by Playwright, signs in: Gatehouse -> IdP sign-in form -> back to Gatehouse, where the
account is created and its roles come from the IdP's ``groups`` claim, again on every
sign-in. The same IdP issues a client-credentials JWT that the worker's verifier accepts.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings

from demo.stack import ROOT, Ports, Stack, free_port, wait_port

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RP_CLIENT_ID, RP_SECRET = "gatehouse-console", "rp-" + secrets.token_urlsafe(16)
AGENT_CLIENT_ID, AGENT_SECRET = "agent-etl-job", "agent-" + secrets.token_urlsafe(16)
ALICE_PW, BOB_PW = "alice-" + secrets.token_urlsafe(8), "bob-" + secrets.token_urlsafe(8)


def _idp_env(tmp: Path, key_pem: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.identity.idp_settings",
        IDP_DB=str(tmp / "idp.sqlite3"),
        IDP_PRIVATE_KEY=key_pem,
        IDP_AUDIENCE="gatehouse-proxy",
        PYTHONUNBUFFERED="1",
    )
    return env


def _seed(env: dict[str, str], spec: dict) -> None:
    subprocess.run(
        [sys.executable, "-m", "tests.identity.idp_setup", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def sso(django_db_setup, django_db_blocker, tmp_path_factory):
    """A running IdP and a Gatehouse web process configured to sign in through it."""
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("sso")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    ports = Ports.free()
    idp_port = free_port()
    idp_url = f"http://127.0.0.1:{idp_port}"
    web_url = f"http://127.0.0.1:{ports.web}"
    idp_env = _idp_env(tmp, key_pem)
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=idp_env,
        check=True,
        timeout=120,
    )
    _seed(
        idp_env,
        {
            "users": [
                {
                    "username": "alice",
                    "password": ALICE_PW,
                    "groups": ["gh-approvers", "gh-auditors"],
                },
                {"username": "bob", "password": BOB_PW, "groups": ["marketing"]},
            ],
            "clients": [
                {
                    "id": RP_CLIENT_ID,
                    "name": "Gatehouse",
                    "secret": RP_SECRET,
                    "redirect_uris": [f"{web_url}/accounts/oidc/sso/login/callback/"],
                    "grant_types": ["authorization_code"],
                },
                {
                    "id": AGENT_CLIENT_ID,
                    "name": "ETL agent",
                    "secret": AGENT_SECRET,
                    "grant_types": ["client_credentials"],
                    "scopes": ["openid"],
                },
            ],
        },
    )
    idp_log = open(tmp / "idp.log", "ab")  # noqa: SIM115 - closed at teardown
    idp = subprocess.Popen(
        [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{idp_port}", "--noreload"],
        cwd=ROOT,
        env=idp_env,
        stdout=idp_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    web_env = {
        "GATEHOUSE_DB_NAME": settings.DATABASES["default"]["NAME"],
        "GATEHOUSE_REDIS_URL": settings.REDIS_URL,
        "GATEHOUSE_REDIS_PREFIX": settings.REDIS_PREFIX,
        "GATEHOUSE_SECRET_KEY": secrets.token_urlsafe(40),
        "GATEHOUSE_FIELD_KEYS": ",".join(settings.GATEHOUSE_FIELD_KEYS),
        "GATEHOUSE_WORKER_KEY": settings.GATEHOUSE_WORKER_KEY,
        "GATEHOUSE_SITE_URL": web_url,
        "GATEHOUSE_OIDC_SERVER_URL": idp_url,
        "GATEHOUSE_OIDC_CLIENT_ID": RP_CLIENT_ID,
        "GATEHOUSE_OIDC_CLIENT_SECRET": RP_SECRET,
        "GATEHOUSE_OIDC_NAME": "Example SSO",
        "GATEHOUSE_OIDC_ROLE_MAP": "gh-admins=admin,gh-approvers=approver,gh-auditors=auditor",
    }
    st = Stack(ports=ports, env=web_env, log_dir=tmp / "log", customers_db=tmp / "none.db")
    try:
        wait_port(idp_port, 30, idp, "identity provider")
        st.start(["web"])
    except Exception:
        print((tmp / "idp.log").read_text()[-3000:], st.log("web")[-3000:])
        idp.terminate()
        st.stop()
        raise
    ns = SimpleNamespace(idp_url=idp_url, web_url=web_url, idp_env=idp_env, stack=st, tmp=tmp)
    try:
        yield ns
    finally:
        st.stop()
        idp.terminate()
        idp.wait(10)
        idp_log.close()
        with django_db_blocker.unblock():
            from allauth.socialaccount.models import SocialAccount
            from django.contrib.auth.models import User

            ids = SocialAccount.objects.filter(provider="sso").values_list("user_id", flat=True)
            User.objects.filter(pk__in=list(ids)).delete()


@pytest.fixture
def browser(sso):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _sso_sign_in(page, sso, username: str, password: str | None) -> None:
    """Gatehouse sign-in page -> "Example SSO" -> IdP form (unless signed in there) -> home."""
    page.goto(f"{sso.web_url}/accounts/login/")
    page.get_by_text("Example SSO").first.click()
    # allauth asks for a POST before leaving for the provider (no login on GET).
    page.locator("form button[type=submit]").last.click()
    if password is not None:
        page.wait_for_url(f"{sso.idp_url}/accounts/login/**")
        page.fill("input[name=login]", username)
        page.fill("input[name=password]", password)
        page.locator("form button[type=submit]").last.click()
    page.wait_for_url(f"{sso.web_url}/", timeout=15000)


def _roles(username: str) -> set[str]:
    """Role groups of the SSO user ``username`` as the web process committed them.

    Read in a worker thread: Playwright's sync API runs an event loop in this one, where
    Django refuses ORM calls.
    """
    from concurrent.futures import ThreadPoolExecutor

    from allauth.socialaccount.models import SocialAccount
    from django.db import connection

    def read() -> set[str]:
        try:
            account = SocialAccount.objects.select_related("user").get(
                provider="sso", user__username=username
            )
            return set(account.user.groups.values_list("name", flat=True))
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(read).result()


def test_a_person_signs_in_through_the_idp_and_gets_roles_from_groups(sso, browser):
    errors: list[str] = []
    page = browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    _sso_sign_in(page, sso, "alice", ALICE_PW)
    body = page.inner_text("main")
    assert "alice" in body
    assert "approver" in body and "auditor" in body
    assert _roles("alice") == {"approver", "auditor"}
    # The mapped roles open the pages they guard, and only those.
    assert page.goto(f"{sso.web_url}/approvals/").status == 200
    assert page.goto(f"{sso.web_url}/audit/sessions/").status == 200
    assert page.goto(f"{sso.web_url}/console/").status == 403
    assert not [e for e in errors if "Content Security Policy" in e]


def test_roles_follow_the_idp_on_every_sign_in(sso, browser):
    page = browser.new_page()
    _sso_sign_in(page, sso, "alice", ALICE_PW)
    assert _roles("alice") == {"approver", "auditor"}
    # At the IdP, alice leaves the approvers and becomes an admin.
    _seed(
        sso.idp_env,
        {
            "users": [
                {"username": "alice", "password": ALICE_PW, "groups": ["gh-auditors", "gh-admins"]}
            ]
        },
    )
    page.locator("form.logout button[type=submit]").click()
    page.wait_for_url(f"{sso.web_url}/accounts/login/**")
    _sso_sign_in(page, sso, "alice", None)  # still signed in at the IdP: no password asked
    assert _roles("alice") == {"auditor", "admin"}
    assert page.goto(f"{sso.web_url}/approvals/").status == 403
    assert page.goto(f"{sso.web_url}/console/").status == 200


def test_a_person_without_mapped_groups_gets_no_role(sso, browser):
    page = browser.new_page()
    _sso_sign_in(page, sso, "bob", BOB_PW)
    assert "no Gatehouse role yet" in page.inner_text("main")
    assert _roles("bob") == set()
    assert page.goto(f"{sso.web_url}/approvals/").status == 403


def test_a_wrong_idp_password_signs_nobody_in(sso, browser):
    page = browser.new_page()
    page.goto(f"{sso.web_url}/accounts/login/")
    page.get_by_text("Example SSO").first.click()
    page.locator("form button[type=submit]").last.click()
    page.wait_for_url(f"{sso.idp_url}/accounts/login/**")
    page.fill("input[name=login]", "alice")
    page.fill("input[name=password]", "wrong-password")
    page.locator("form button[type=submit]").last.click()
    page.wait_for_load_state()
    assert page.url.startswith(sso.idp_url)
    assert page.goto(f"{sso.web_url}/approvals/").url.startswith(f"{sso.web_url}/accounts/login/")


async def test_the_idp_issues_agent_jwts_the_worker_accepts(sso):
    """Client-credentials grant at the IdP, then the worker's verifier with its real JWKS."""
    from proxy_worker.identity import AgentOIDCConfig, JWTVerifier

    async with httpx.AsyncClient(timeout=10) as c:
        meta = (await c.get(f"{sso.idp_url}/.well-known/openid-configuration")).json()
        resp = await c.post(
            meta["token_endpoint"],
            data={"grant_type": "client_credentials", "scope": "openid"},
            auth=(AGENT_CLIENT_ID, AGENT_SECRET),
        )
    assert resp.status_code == 200, resp.text
    token = resp.json()["access_token"]
    cfg = AgentOIDCConfig(
        issuer=meta["issuer"], audience="gatehouse-proxy", jwks_url=meta["jwks_uri"]
    )
    verified = await JWTVerifier().verify(token, cfg)
    assert verified.subject == AGENT_CLIENT_ID

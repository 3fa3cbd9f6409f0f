"""The whole stack on free ports: web, proxy worker, ingest, datasette, the LLM and MCP
upstreams.

Processes are real (:mod:`demo.stack`) and share the test database and Redis with this
test process. Data is created with the real seed command; the database is flushed at the
end so later tests start clean.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command

from demo.stack import Ports, Stack

PASSWORD = "e2e-" + secrets.token_urlsafe(8)


# Package scope: pytest-django runs non-transactional tests (these) before transactional
# ones; tearing the stack down (and flushing its committed data) when the e2e package is
# done keeps the seed from leaking into later tests.
@pytest.fixture(scope="package")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """A running Gatehouse with the demo seed; yields a namespace of URLs and secrets."""
    from controlplane.redis import client
    from demo.customers_db import build_customers_db

    tmp: Path = tmp_path_factory.mktemp("stack")
    ports = Ports.free()
    db_path = build_customers_db(tmp / "customers.db", rows=50)
    datasette_token = "dstok-" + secrets.token_urlsafe(16)
    llm_key = "sk-upstream-" + secrets.token_urlsafe(16)
    mcp_token = "mcp-upstream-" + secrets.token_urlsafe(16)
    r = client()
    for key in r.scan_iter(f"{settings.REDIS_PREFIX}:*"):
        r.delete(key)
    env = {
        "GATEHOUSE_DB_NAME": settings.DATABASES["default"]["NAME"],
        "GATEHOUSE_REDIS_URL": settings.REDIS_URL,
        "GATEHOUSE_REDIS_PREFIX": settings.REDIS_PREFIX,
        "GATEHOUSE_SECRET_KEY": secrets.token_urlsafe(40),
        "GATEHOUSE_FIELD_KEYS": ",".join(settings.GATEHOUSE_FIELD_KEYS),
        "GATEHOUSE_WORKER_KEY": settings.GATEHOUSE_WORKER_KEY,
        "GATEHOUSE_MASKING_KEY": secrets.token_urlsafe(32),
        "GATEHOUSE_SITE_URL": f"http://127.0.0.1:{ports.web}",
        "GATEHOUSE_SPOOL_DIR": str(tmp / "spool"),
        "GATEHOUSE_CA_DIR": str(tmp / "ca"),
        "DEMO_DATASETTE_TOKEN": datasette_token,
        "DEMO_LLM_API_KEY": llm_key,
        "DEMO_MCP_TOKEN": mcp_token,
    }
    token_file = tmp / "agent-token"
    # The PostgreSQL target's database: the demo's customers, in a database of its own.
    from demo.customers_pg import build_customers_pg

    pg_database = f"gh_e2e_{secrets.token_hex(5)}"
    pg_role = f"gh_e2e_reader_{secrets.token_hex(3)}"
    pg_password = "pg-" + secrets.token_urlsafe(12)
    build_customers_pg(database=pg_database, role=pg_role, password=pg_password, rows=50)
    with django_db_blocker.unblock():
        call_command(
            "seed_demo",
            password=PASSWORD,
            datasette_url=f"http://127.0.0.1:{ports.datasette}",
            datasette_token=datasette_token,
            llm_url=f"http://127.0.0.1:{ports.llm}",
            llm_key=llm_key,
            mcp_url=f"http://127.0.0.1:{ports.mcp}",
            mcp_token=mcp_token,
            approval_timeout=20,
            token_file=token_file,
            pg_database=pg_database,
            pg_user=pg_role,
            pg_password=pg_password,
        )
        from controlplane.models import AccessRule, Target

        llm = Target.objects.get(slug="llm")
        AccessRule.objects.create(
            name="No file uploads",
            position=5,
            target=llm,
            path_pattern="/v1/files*",
            action="deny",
            reason="files API is off limits",
        )
        customers = Target.objects.get(slug="customers")
        AccessRule.objects.create(
            name="Orders export (short timeout)",
            position=6,
            target=customers,
            path_pattern="/customers/orders.json",
            query_pattern="_size=max",
            action="approve",
            approval_timeout=2,
        )
    st = Stack(ports=ports, env=env, log_dir=tmp / "log", customers_db=db_path)
    try:
        st.start(["datasette", "llm", "mcp", "web", "proxy", "ingest"])
    except Exception:
        for name in st.procs:
            print(f"--- {name}\n{st.log(name)[-3000:]}")
        st.stop()
        raise
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("select email, phone, ssn, credit_card, iban from customers").fetchall()
    ns = SimpleNamespace(
        stack=st,
        ports=ports,
        password=PASSWORD,
        token=token_file.read_text().strip(),
        proxy_url=f"http://127.0.0.1:{ports.proxy}",
        web_url=f"http://127.0.0.1:{ports.web}",
        llm_url=f"http://127.0.0.1:{ports.llm}",
        datasette_token=datasette_token,
        llm_key=llm_key,
        mcp_url=f"http://127.0.0.1:{ports.mcp}/mcp",
        mcp_token=mcp_token,
        pii_rows=rows,
        pg_port=ports.pg,
        pg_database=pg_database,
        ca_file=tmp / "ca" / "mitmproxy-ca-cert.pem",
    )
    try:
        yield ns
    finally:
        st.stop()
        with django_db_blocker.unblock():
            call_command("flush", "--no-input", verbosity=0)
        for key in r.scan_iter(f"{settings.REDIS_PREFIX}:*"):
            r.delete(key)
        _drop_pg(pg_database, pg_role)


def _drop_pg(database: str, role: str) -> None:
    import psycopg
    from psycopg import sql

    from demo.customers_pg import server_params

    with psycopg.connect(dbname="postgres", autocommit=True, **server_params()) as c:
        c.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def agent_http(stack):
    """An httpx client of the demo agent, pointed at the proxy port."""
    with httpx.Client(
        base_url=stack.proxy_url, timeout=60, headers={"Authorization": f"Bearer {stack.token}"}
    ) as c:
        yield c


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; return it or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@contextlib.contextmanager
def signed_in(stack, username: str):
    """An httpx client of the web console signed in as ``username`` through the real
    login form (CSRF included); closed on exit."""
    with httpx.Client(base_url=stack.web_url, follow_redirects=True, timeout=10) as http:
        http.get("/accounts/login/")
        r = http.post(
            "/accounts/login/",
            data={
                "login": username,
                "password": stack.password,
                "csrfmiddlewaretoken": http.cookies["csrftoken"],
            },
            headers={"Referer": stack.web_url},
        )
        assert "/accounts/login/" not in str(r.url), f"{username} could not sign in"
        yield http


def pending_approval_ids() -> set[str]:
    """Ids of approval requests pending now, in the database: earlier tests of the package
    may leave some behind (a wait that timed out stays pending until the expiry sweep,
    which the e2e stack does not run); a test approving "the next pending request"
    excludes them."""
    from approvals.models import ApprovalRequest

    return {
        str(i)
        for i in ApprovalRequest.objects.filter(
            status=ApprovalRequest.Status.PENDING
        ).values_list("id", flat=True)
    }


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: The flags Debian's Chromium needs here (no sandbox, no GPU, no network chatter).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser(monkeypatch):
    """A Playwright Chromium browser (Debian's build); fails in CI if it is missing.

    Playwright's sync API runs an event loop in the test thread, which Django takes for
    an async context; the test's own ORM calls are synchronous, so they are allowed.
    """
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def sign_in(stack):
    """``sign_in(page, username)``: sign ``page`` in through the real login form."""

    def _sign_in(page, username: str, password: str | None = None) -> None:
        page.goto(f"{stack.web_url}/accounts/login/")
        page.fill("input[name=login]", username)
        page.fill("input[name=password]", password or stack.password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{stack.web_url}/")

    return _sign_in

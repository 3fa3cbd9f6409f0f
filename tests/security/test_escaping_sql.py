"""Recorded SQL renders inert: statement text, column names, sampled rows, parameters,
errors, table names and connection facts carrying markup are escaped on every page that
shows them (replay, search, approval queue and detail, grants, WebSocket pushes).
The browser check is ``test_xss_sql_browser.py``. This file's name sorts before the
stack-based tests of this package: their seed users would collide with ``users``."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.urls import reverse

from approvals.actions import do_decide
from audit.models import Session
from tests.approvals.conftest import make_request  # noqa: F401 - fixture
from tests.audit.conftest import ingest, make_statement, pg_target  # noqa: F401 - fixtures

pytestmark = [pytest.mark.security, pytest.mark.django_db]

SCRIPT = "<script>window.__xss=1</script>"
ATTR = "\"'><img src=x onerror=alert(1)>"
EVIL = f"{SCRIPT}{ATTR}"
#: What a page may contain of the payloads: only their escaped forms.
RAW = ("<script>window", "<img src=x", "onerror=alert(1)>")


class _Elements(HTMLParser):
    """Collects what the browser would build: tags, their attributes, script text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text.append(data)


def _assert_escaped(html: str, *, shown: int = 1) -> None:
    """No payload became markup, and the payload text is shown (escaped) ``shown`` times."""
    for raw in RAW:
        assert raw not in html, raw
    assert html.count("&lt;script&gt;window.__xss=1&lt;/script&gt;") >= shown
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    parsed = _Elements()
    parsed.feed(html)
    assert not [t for t, _ in parsed.tags if t == "img"]
    assert not [(t, a) for t, attrs in parsed.tags for a, _ in attrs if a.startswith("on")]
    assert not [s for s in parsed.script_text if "__xss" in s]
    # An attribute may quote a payload (a grant input's value), never end early.
    for _, attrs in parsed.tags:
        for name, _value in attrs:
            assert re.fullmatch(r"[a-z][a-z0-9_:-]*", name), name


@pytest.fixture
def evil_session(policy, pg_target, ingest):  # noqa: F811 - fixtures
    t0 = time.time() - 10
    ingest(
        make_statement(
            policy,
            at=t0,
            target=pg_target,
            request_body=f"select '{EVIL}' as \"{EVIL}\" from {EVIL}",
            request_headers={"application_name": EVIL, "database": EVIL, "user": EVIL},
            response_body=EVIL,
            details={
                "tables": [EVIL],
                "functions": [EVIL],
                "parameters": [EVIL, None],
                "columns": [EVIL, "ok"],
                "rows": [[EVIL, f"{ATTR}\n{SCRIPT}"], [None, EVIL]],
                "command_tag": EVIL,
                "statement_kinds": [EVIL],
            },
        ),
        make_statement(
            policy,
            at=t0 + 1,
            target=pg_target,
            request_body=("select 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 from t where x = " + EVIL) * 2,
            status_code=400,
            details={"error": EVIL, "sqlstate": EVIL, "columns": []},
        ),
    )
    return Session.objects.get()


def test_the_replay_escapes_every_recorded_sql_byte(client, users, evil_session):
    client.force_login(users["auditor"])
    for step in (1, 2):
        url = reverse("audit:session", args=[evil_session.id]) + f"?step={step}"
        html = client.get(url).content.decode()
        _assert_escaped(html, shown=2)
    assert "ERROR:  &lt;script&gt;" in html


def test_search_results_escape_sql(client, users, evil_session):
    client.force_login(users["auditor"])
    html = client.get(reverse("audit:search"), {"protocol": "postgres"}).content.decode()
    _assert_escaped(html)
    html = client.get(reverse("audit:search"), {"q": "window"}).content.decode()
    for raw in RAW:
        assert raw not in html


@pytest.fixture
def evil_request(make_sql_request_factory):
    return make_sql_request_factory()


@pytest.fixture
def make_sql_request_factory(make_request, pg_target, policy):  # noqa: F811 - fixtures
    def make(**kw):
        return make_request(
            protocol="postgres",
            method="DELETE",
            url=f"postgresql://db:5432/{EVIL}",
            body=f"DELETE FROM {EVIL}\nWHERE x = '{EVIL}'",
            target=pg_target,
            headers={"user": EVIL, "database": EVIL, "application_name": EVIL},
            details={
                "statement_kind": EVIL[:16],
                "statement_kinds": [EVIL],
                "tables": [EVIL, "public.orders"],
                "functions": [EVIL],
                "parameters": [EVIL, None],
            },
            **kw,
        )

    return make


def test_approval_pages_escape_sql(client, users, evil_request):
    client.force_login(users["approver"])
    _assert_escaped(client.get(reverse("approvals:queue")).content.decode())
    _assert_escaped(
        client.get(reverse("approvals:detail", args=[evil_request.id])).content.decode(), shown=3
    )
    do_decide(
        evil_request,
        acting_user=users["approver"],
        verdict="approve",
        grant_minutes=5,
    )
    _assert_escaped(client.get(reverse("approvals:grants")).content.decode())
    _assert_escaped(client.get(reverse("approvals:history")).content.decode())


def test_grant_tables_typed_by_an_approver_are_escaped(client, users, make_sql_request_factory):
    req = make_sql_request_factory()
    client.force_login(users["approver"])
    r = client.post(
        reverse("approvals:decide", args=[req.id]),
        {"verdict": "grant", "grant_minutes": "5", "grant_tables": "<b>x</b>"},
    )
    assert r.status_code == 302
    html = client.get(reverse("approvals:grants")).content.decode()
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


@pytest.mark.django_db(transaction=True)
async def test_websocket_pushes_escape_sql(users, make_sql_request_factory, redis_client):
    from approvals.consumers import ApprovalQueueConsumer

    comm = WebsocketCommunicator(ApprovalQueueConsumer.as_asgi(), "/ws/approvals/")
    comm.scope["user"] = users["approver"]
    connected, _ = await comm.connect()
    assert connected
    await comm.receive_from(timeout=5)  # the queue as it is
    req = await sync_to_async(make_sql_request_factory)()
    pushed = await comm.receive_from(timeout=5)
    assert str(req.id) in pushed
    _assert_escaped(pushed)
    await comm.disconnect()

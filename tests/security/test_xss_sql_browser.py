"""Recorded SQL statements render inert in Chromium (replay, search, approvals).

A worker's records are put on the real streams of the running stack (as the PostgreSQL
listener writes them: statement text, column names, sampled rows, parameters, error,
tables and connection facts all carrying script and attribute-injection payloads); its
ingest process stores them. Auditors and approvers then open every page that shows them:
no payload may run, and the payload text must still be visible.
"""

from __future__ import annotations

import time
import uuid

import pytest

from controlplane.redis import client, keys
from proxy_worker.contract import ApprovalRequestMessage, ExchangeMessage
from tests.e2e.conftest import wait_for
from tests.security.test_xss_browser import MARK, PAYLOADS, _assert_inert

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.security, pytest.mark.django_db]

BLOB = " ".join(PAYLOADS)


@pytest.fixture(scope="module")
def sql_recorded(stack, django_db_blocker):
    """Put one recorded statement and one held statement on the stack's streams; returns
    ``(session id, approval id)`` once its ingest stored them."""
    from approvals.models import ApprovalRequest
    from audit.models import Exchange
    from controlplane.models import Agent, Target

    with django_db_blocker.unblock():
        agent = Agent.objects.order_by("id").first()
        target = Target.objects.get(slug="customers")
    now = time.time()
    facts = {"application_name": PAYLOADS[1], "database": PAYLOADS[3], "user": PAYLOADS[0]}
    exchange = ExchangeMessage(
        exchange_id=str(uuid.uuid4()),
        worker_id="pg-xss",
        started_at=now,
        agent_id=agent.id,
        target_id=target.id,
        session_key=f"pg:{uuid.uuid4()}",
        client_address="127.0.0.1",
        method="SELECT",
        url="postgresql://127.0.0.1:5432/crm",
        request_headers=facts,
        request_body=f"select '{PAYLOADS[0]}' as \"{PAYLOADS[1]}\" from customers -- {BLOB}",
        status_code=200,
        response_headers={},
        response_body=BLOB,
        decision="allowed",
        protocol="postgres",
        details={
            "statement_kind": "SELECT",
            "statement_kinds": ["SELECT"],
            "tables": [PAYLOADS[2]],
            "functions": [PAYLOADS[3]],
            "parameters": [PAYLOADS[4], None],
            "columns": [PAYLOADS[1], PAYLOADS[5]],
            "rows": [[PAYLOADS[0], PAYLOADS[2]], [None, f"{PAYLOADS[3]}\n{PAYLOADS[4]}"]],
            "rows_truncated": True,
            "row_count": 3,
            "command_tag": "SELECT 3",
            "error": PAYLOADS[5],
            "sqlstate": PAYLOADS[1][:5],
            "extended": True,
        },
    )
    held = ApprovalRequestMessage(
        approval_id=str(uuid.uuid4()),
        worker_id="pg-xss",
        agent_id=agent.id,
        target_id=target.id,
        rule_id=None,
        method="DELETE",
        url="postgresql://127.0.0.1:5432/crm",
        headers=facts,
        body=f"DELETE FROM customers\nWHERE name = '{PAYLOADS[1]}' -- {BLOB}",
        body_truncated=False,
        requested_at=now,
        deadline=now + 300,
        reason=PAYLOADS[2],
        protocol="postgres",
        details={
            "statement_kind": "DELETE",
            "statement_kinds": ["DELETE", PAYLOADS[0]],
            "tables": [PAYLOADS[2], "customers"],
            "functions": [PAYLOADS[3]],
            "parameters": [PAYLOADS[4], None],
            "sql_fingerprint": "0" * 64,
        },
    )
    r = client()
    r.xadd(keys().exchanges_stream, {"data": exchange.to_json()})
    r.xadd(keys().approvals_stream, {"data": held.to_json()})
    with django_db_blocker.unblock():
        stored = wait_for(lambda: Exchange.objects.filter(pk=exchange.exchange_id).first(), 20)
        wait_for(lambda: ApprovalRequest.objects.filter(pk=held.approval_id).exists(), 20)
    return stored.session_id, held.approval_id


def test_recorded_sql_is_inert_for_auditors(stack, sql_recorded, browser, sign_in):
    session_id, _ = sql_recorded
    dialogs: list = []
    page = browser.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, "auditor")
    _assert_inert(page, f"{stack.web_url}/audit/sessions/{session_id}/", dialogs, must_show=True)
    assert "(3 rows)" in page.inner_text("#psql")
    _assert_inert(page, f"{stack.web_url}/audit/sessions/", dialogs)
    _assert_inert(page, f"{stack.web_url}/audit/search/?protocol=postgres", dialogs, must_show=True)
    _assert_inert(page, f"{stack.web_url}/audit/search/?q={MARK}", dialogs)


def test_held_sql_is_inert_for_approvers(stack, sql_recorded, browser, sign_in):
    _, approval_id = sql_recorded
    dialogs: list = []
    page = browser.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, "approver")
    _assert_inert(page, f"{stack.web_url}/approvals/", dialogs, must_show=True)
    _assert_inert(page, f"{stack.web_url}/approvals/{approval_id}/", dialogs, must_show=True)
    assert "DELETE FROM customers" in page.inner_text("#sql")
    _assert_inert(page, f"{stack.web_url}/approvals/history/", dialogs)

"""The PostgreSQL path against the whole running stack: the demo agent's database steps,
a statement approved live in the browser, and the psql-like replay an auditor reads."""

from __future__ import annotations

import threading

import psycopg
import pytest

from demo.agent_pg import AGENT, TARGET, dsn
from demo.agent_pg import run as run_agent_pg
from demo.approver_bot import ApproverBot
from tests.e2e.conftest import pending_approval_ids, signed_in, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def _raw_values(stack) -> list[str]:
    """Personal data of the customers database (also in the datasette copy)."""
    return [v for row in stack.pii_rows for v in row]


def test_the_demo_agents_database_steps_through_the_gateway(stack):
    """Masked rows (also through an alias over a view), an UPDATE without WHERE refused,
    a bulk SELECT held and approved through the web UI by the scripted approver."""
    from audit.models import Exchange

    decided: list[str] = []
    earlier = pending_approval_ids()

    def approve() -> None:
        bot = ApproverBot(stack.web_url, "approver", stack.password)
        try:
            approval_id = bot.wait_for_pending(20, exclude=earlier)
            decided.append(approval_id)
            assert bot.decide(approval_id, "approve", "e2e").status_code in (200, 302)
        finally:
            bot.close()

    def on_held() -> None:
        threading.Thread(target=approve, daemon=True).start()

    failures = run_agent_pg(
        "127.0.0.1",
        stack.ports.pg,
        stack.token,
        ca_file=stack.ca_file,
        approval_wait=30,
        on_held=on_held,
    )
    assert failures == 0
    assert decided
    rows = wait_for(
        lambda: list(Exchange.objects.filter(protocol="postgres", approval_id=decided[0])),
        timeout=20,
    )
    assert rows[0].decision == "approved" and rows[0].method == "SELECT"
    refused = wait_for(
        lambda: Exchange.objects.filter(protocol="postgres", decision="denied", method="UPDATE")
        .order_by("-started_at")
        .first(),
        timeout=20,
    )
    assert refused.status_code == 403 and refused.details["sqlstate"] == "42501"
    stored = " ".join(
        f"{x.request_body} {x.response_body} {x.details}"
        for x in Exchange.objects.filter(protocol="postgres")
    )
    leaked = [v for v in _raw_values(stack) if v and v in stored]
    assert not leaked, f"unmasked values recorded: {leaked[:3]}"


@pytest.mark.browser
def test_an_approver_sees_the_sql_and_approves_it_live(stack, browser, sign_in):
    """The held statement appears on the live queue with its SQL and tables; Approve lets
    it run and the agent gets its (masked) rows."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, "approver")
    page.goto(f"{stack.web_url}/approvals/")
    page.wait_for_selector("#queue", state="attached")
    page.wait_for_timeout(500)

    out: dict = {}

    def held() -> None:
        with psycopg.connect(dsn("127.0.0.1", stack.ports.pg, stack.token, stack.ca_file)) as c:
            out["rows"] = c.execute(
                "SELECT id, email FROM customers WHERE city IS NOT NULL"
            ).fetchall()

    t = threading.Thread(target=held)
    t.start()
    # The statement's row (an earlier test's expired request may still be listed).
    row = page.locator("article[data-status=pending]", has_text="SELECT").filter(
        has_text="customers"
    )
    row.first.wait_for(timeout=15000)  # live, without a reload
    text = row.first.inner_text()
    assert "SELECT" in text and "customers" in text
    approval_id = row.first.get_attribute("id").removeprefix("approval-")
    detail = context.new_page()
    detail.goto(f"{stack.web_url}/approvals/{approval_id}/")
    body = detail.locator("body").inner_text()
    assert "FROM customers" in body and "WHERE city IS NOT NULL" in body
    assert "Bulk customer reads need approval" in body
    detail.close()
    row.first.locator("button.approve").click()
    page.locator(f"#approval-{approval_id}[data-status=approved]").wait_for(timeout=10000)
    t.join(20)
    assert len(out["rows"]) == 50
    assert all(email == "[EMAIL]" for _id, email in out["rows"])
    assert not [e for e in errors if "Content Security Policy" in e]
    context.close()


def test_the_auditor_replays_the_connection_like_a_psql_session(stack):
    """One session per connection; the replay page shows the prompt, the statements and
    the masked rows, and nothing unmasked."""

    from audit.models import Exchange

    conninfo = dsn("127.0.0.1", stack.ports.pg, stack.token, stack.ca_file)
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute("SELECT id, email, ssn FROM customers ORDER BY id LIMIT 2").fetchall()
        c.execute("SELECT count(*) FROM orders").fetchall()
    x = wait_for(
        lambda: Exchange.objects.filter(
            protocol="postgres", request_body__contains="count(*) FROM orders"
        )
        .order_by("-started_at")
        .first(),
        timeout=20,
    )
    session = x.session
    assert session is not None and session.key.startswith("pg:")
    assert session.exchanges.count() == 2
    with signed_in(stack, "auditor") as http:
        page = http.get(f"/audit/sessions/{session.pk}/")
    assert page.status_code == 200
    html = page.text
    assert f"{AGENT}@{TARGET}=&gt;" in html or f"{AGENT}@{TARGET}=>" in html
    assert "[EMAIL]" in html and "(2 rows)" in html
    leaked = [v for v in _raw_values(stack) if v and v in html]
    assert not leaked

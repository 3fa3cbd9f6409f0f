"""Browser: an approver sees a held request appear live and approves it (Chromium)."""

from __future__ import annotations

import threading

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db]


def test_an_approver_approves_a_held_request_live(stack, agent_http, browser, sign_in):
    errors: list[str] = []
    page = browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, "approver")
    page.goto(f"{stack.web_url}/approvals/")
    # The socket is open once the server sent the current queue.
    # No wait_for_function: the page's CSP forbids the eval it needs.
    page.wait_for_selector("#queue", state="attached")
    page.wait_for_timeout(500)
    seen_before = page.locator("article[data-status=pending]").count()

    out: dict = {}
    sql = "select id, email, phone from customers where id > 7"
    t = threading.Thread(
        target=lambda: out.setdefault(
            "r", agent_http.get("/customers/customers.json", params={"sql": sql, "_shape": "array"})
        )
    )
    t.start()
    row = page.locator("article[data-status=pending]").nth(seen_before)
    row.wait_for(timeout=5000)  # appears without a reload
    assert "customers.json" in row.inner_text()
    assert "sql=" in row.inner_text()
    row.locator("button.approve").click()
    page.locator("article[data-status=approved]").first.wait_for(timeout=5000)
    t.join(15)
    resp = out["r"]
    assert resp.status_code == 200
    assert all(r["email"] == "[EMAIL]" for r in resp.json())
    assert not [e for e in errors if "Content Security Policy" in e]


def test_a_non_approver_cannot_open_the_queue(stack, browser, sign_in):
    page = browser.new_page()
    sign_in(page, "auditor")
    resp = page.goto(f"{stack.web_url}/approvals/")
    assert resp.status == 403

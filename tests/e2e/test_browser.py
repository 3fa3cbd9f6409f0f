"""Browser: an approver sees a held request appear live and approves it (Chromium)."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

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


@pytest.fixture
def browser():
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _sign_in(page, web_url, username, password):
    page.goto(f"{web_url}/accounts/login/")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{web_url}/")


def test_an_approver_approves_a_held_request_live(stack, agent_http, browser):
    errors: list[str] = []
    page = browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    _sign_in(page, stack.web_url, "approver", stack.password)
    page.goto(f"{stack.web_url}/approvals/")
    # The socket is open once the server sent the current queue.
    page.wait_for_function("document.querySelector('#queue') !== null")
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


def test_a_non_approver_cannot_open_the_queue(stack, browser):
    page = browser.new_page()
    _sign_in(page, stack.web_url, "auditor", stack.password)
    resp = page.goto(f"{stack.web_url}/approvals/")
    assert resp.status == 403

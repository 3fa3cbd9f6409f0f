"""Browser: an admin manages the policy from the console, and the proxy follows at once."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db]


def _rule_names(page) -> list[str]:
    return [
        cells.split("\t")[1].strip()
        for cells in page.locator("#console-table tbody tr").all_inner_texts()
    ]


def test_a_rule_made_in_the_console_applies_on_the_proxy_within_a_second(
    stack, agent_http, browser, sign_in
):
    errors: list[str] = []
    page = browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: d.accept())
    sign_in(page, "admin")
    path = "/customers/console-probe.json"  # the rule sees the upstream path
    assert agent_http.get(path).status_code != 403

    page.goto(f"{stack.web_url}/console/access-rules/new/")
    page.fill("input[name=name]", "Console probe")
    page.fill("input[name=position]", "1")
    page.select_option("select[name=target]", label="customers")
    page.fill("input[name=path_pattern]", "/console-probe.json")
    page.select_option("select[name=action]", "deny")
    page.fill("input[name=reason]", "made in the console")
    # An invalid regex first: the form comes back in place (htmx) with the error.
    page.fill("input[name=query_pattern]", "(unclosed")
    page.click("#console-form button[type=submit]")
    page.locator("#console-form .errorlist").first.wait_for(timeout=5000)
    assert "not a valid regular expression" in page.inner_text("#console-form")
    page.fill("input[name=query_pattern]", "")
    page.click("#console-form button[type=submit]")
    page.get_by_text("Saved access rule").wait_for(timeout=5000)
    saved_at = time.monotonic()

    deadline = saved_at + 1.0
    status = None
    while time.monotonic() < deadline:
        status = agent_http.get(path).status_code
        if status == 403:
            break
        time.sleep(0.05)
    assert status == 403, "the proxy did not apply the console's rule within a second"
    body = agent_http.get(path).json()
    assert body["error"]["code"] == "denied_by_rule" and "Console probe" in str(body)

    # Ordering with the up/down buttons re-renders the table in place.
    names = _rule_names(page)
    assert names[0] == "Console probe"
    page.locator("#console-table tbody tr").first.locator("button[title='Move down']").click()
    # expect() retries until the swapped-in table shows the new order (reading the rows
    # in a loop could catch htmx's swap half done). No wait_for_function: the page's CSP
    # forbids evaluating strings.
    rows = page.locator("#console-table tbody tr")
    expect(rows.nth(1).locator("td").nth(1)).to_have_text("Console probe", timeout=5000)
    expect(rows.first.locator("td").nth(1)).not_to_have_text("Console probe")

    # Delete (confirmed in the dialog): the proxy lets the path through again.
    page.locator("#console-table tbody tr", has_text="Console probe").get_by_text("Edit").click()
    page.click("form.danger button")
    page.get_by_text("Deleted access rule").wait_for(timeout=5000)
    assert "Console probe" not in _rule_names(page)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and agent_http.get(path).status_code == 403:
        time.sleep(0.05)
    assert agent_http.get(path).status_code != 403
    assert not [e for e in errors if "Content Security Policy" in e]


def test_policy_import_shows_errors_then_a_diff_then_applies(stack, browser, sign_in):
    page = browser.new_page()
    sign_in(page, "admin")
    page.goto(f"{stack.web_url}/console/policy/")
    page.fill("textarea[name=document]", "version: 1\nagent_groups:\n  - description: x\n")
    page.click("#policy-import form.console-form button[type=submit]")
    page.locator("#policy-errors").wait_for(timeout=5000)
    assert "line 3" in page.inner_text("#policy-errors")

    page.fill(
        "textarea[name=document]",
        "version: 1\nagent_groups:\n  - name: browser-made\n    description: from the page\n",
    )
    page.click("#policy-import form.console-form button[type=submit]")
    page.locator("#policy-diff").wait_for(timeout=5000)
    assert "+ agent_groups/browser-made" in page.inner_text("#policy-diff")
    page.click("text=Apply these changes")
    page.get_by_text("Policy imported").wait_for(timeout=5000)
    page.goto(f"{stack.web_url}/console/agent-groups/")
    assert "browser-made" in page.inner_text("#console-table")

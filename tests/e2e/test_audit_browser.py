"""Browser (Chromium): an auditor searches, replays a session with the keyboard and the
player, and downloads a HAR export — against the whole running stack."""

from __future__ import annotations

import json
import os
import secrets

import pytest

from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db]


@pytest.fixture
def recorded_session(stack, agent_http):
    """Three exchanges of one session (explicit session header), with a unique marker
    word in their URLs; returns the marker once ingest stored them."""
    from audit.models import Exchange

    marker = "zq" + secrets.token_hex(4)
    session = "browser-" + marker
    for i in range(3):
        agent_http.get(
            "/customers/customers.json",
            params={
                "sql": f"select id, email from customers where id < {i + 2} limit 5",
                "_shape": "array",
                "_marker": marker,
            },
            headers={"X-Gatehouse-Session": session},
        )
    wait_for(lambda: Exchange.objects.filter(url__contains=marker).count() == 3, timeout=20)
    return marker


def test_an_auditor_searches_replays_and_exports(
    stack, recorded_session, browser, sign_in, tmp_path
):
    marker = recorded_session
    errors: list[str] = []
    page = browser.new_page(accept_downloads=True)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    sign_in(page, "auditor")

    # Search by a word of the URL and by the masked entity type.
    page.goto(f"{stack.web_url}/audit/search/")
    page.fill("input[name=q]", marker)
    page.select_option("select[name=entity_type]", "EMAIL")
    page.click("#search-form button[type=submit]")
    rows = page.locator("table.results tbody tr")
    rows.first.wait_for()
    assert rows.count() == 3
    assert "customers.json" in rows.first.inner_text()  # the URL, shortened in the table

    # Replay: open the oldest, step with the keyboard.
    rows.nth(2).locator("a", has_text="Replay").click()
    page.wait_for_selector("#step-label")
    assert page.inner_text("#step-label") == "Exchange 1 of 3"
    assert page.locator("#response-body mark.masked[data-type=EMAIL]").count() >= 1
    page.keyboard.press("ArrowRight")
    page.locator("#step-label", has_text="2 of 3").wait_for()
    page.keyboard.press("ArrowLeft")
    page.locator("#step-label", has_text="1 of 3").wait_for()
    # The player advances by itself at 16x, then stops at the end.
    page.click("a.play-speed[data-speed='16']")
    # (Waits use locators: the CSP forbids the eval that wait_for_function needs.)
    page.locator("#step-label", has_text="3 of 3").wait_for(timeout=15000)
    page.locator("#play-status", has_text="end of session").wait_for()

    # Export the session as HAR and download it.
    page.click("#session-export button[value=har]")
    page.wait_for_selector("#download")
    with page.expect_download() as info:
        page.click("#download")
    path = tmp_path / "session.har"
    info.value.save_as(path)
    har = json.loads(path.read_text())
    entries = har["log"]["entries"]
    assert len(entries) == 3 and all(marker in e["request"]["url"] for e in entries)
    assert all("[EMAIL]" in e["response"]["content"]["text"] for e in entries)

    # The chain page verifies what was recorded.
    page.goto(f"{stack.web_url}/audit/chain/")
    page.click("#verify-now")
    page.wait_for_selector("#verify-result")
    assert "Chain verified" in page.inner_text("#verify-result")

    # The landing page draws the dashboard charts (Chart.js sizes each canvas it drew).
    page.goto(f"{stack.web_url}/?range=24h")
    page.locator("#chart-over-time[width]").wait_for()
    assert page.locator(".charts canvas[width]").count() == 5
    if os.environ.get("GATEHOUSE_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["GATEHOUSE_SCREENSHOTS"], "dash.png"))
    assert not [u for u in missing if not u.endswith("/favicon.ico")], missing
    assert not [e for e in errors if "404" not in e], errors


def test_a_non_auditor_cannot_download_or_search(stack, browser, sign_in):
    page = browser.new_page()
    sign_in(page, "approver")
    r = page.goto(f"{stack.web_url}/audit/search/")
    assert r.status == 403
    r = page.goto(f"{stack.web_url}/audit/jobs/1/download")
    assert r.status == 403

"""Recorded payloads render inert in every page that shows them (Chromium).

An agent sends script and attribute-injection payloads in bodies, queries, a session key
and a held request. Auditors and approvers then open every page that displays recorded
or held data; no payload may run: no dialog, no ``window.__xss``, no element it tried to
create. The payload text must still be visible (escaped, not dropped).
"""

from __future__ import annotations

import threading
import uuid

import pytest

from demo.approver_bot import ApproverBot
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.security, pytest.mark.django_db]

MARK = uuid.uuid4().hex[:8]
PAYLOADS = [
    f"<script>window.__xss='script-{MARK}'</script>",
    f'"><img src=x onerror="window.__xss=\'img-{MARK}\'">',
    f"' onmouseover='window.__xss=1' data-x='{MARK}",
    f"<svg onload=\"window.__xss='svg-{MARK}'\"></svg>",
    f"javascript:window.__xss='js-{MARK}'",
    f"</textarea></pre><iframe srcdoc='<script>parent.__xss=1</script>'>{MARK}",
]
BLOB = " ".join(PAYLOADS)

INERT_CHECK = """() => ({
  xss: window.__xss === undefined ? null : String(window.__xss),
  imgs: document.querySelectorAll('img[src="x"], img[onerror]').length,
  svgs: document.querySelectorAll('svg[onload]').length,
  frames: document.querySelectorAll('iframe').length,
  scripts: [...document.scripts].filter(s => s.text.includes('__xss')).length,
  handlers: [...document.querySelectorAll('*')].filter(
      e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
  jsLinks: [...document.querySelectorAll('a[href]')].filter(
      a => a.getAttribute('href').trim().toLowerCase().startsWith('javascript:')).length,
})"""


def _assert_inert(page, url: str, dialogs: list, must_show: bool = False) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)
    page.mouse.move(200, 200)
    page.mouse.move(400, 300)
    state = page.evaluate(INERT_CHECK)
    assert state == {
        "xss": None,
        "imgs": 0,
        "svgs": 0,
        "frames": 0,
        "scripts": 0,
        "handlers": 0,
        "jsLinks": 0,
    }, (url, state)
    assert dialogs == [], (url, dialogs)
    if must_show:
        assert MARK in page.inner_text("body"), f"{url}: payload not shown at all"


@pytest.fixture(scope="module")
def recorded(stack):
    """Send the payloads through the proxy; returns the approval id of the held one."""
    import httpx

    h = {"Authorization": f"Bearer {stack.token}", "X-Gatehouse-Session": PAYLOADS[0]}
    with httpx.Client(base_url=stack.proxy_url, headers=h, timeout=30) as c:
        c.post(
            "/llm/v1/chat/completions",
            json={"model": "gatehouse-echo", "messages": [{"role": "user", "content": BLOB}]},
        )
        c.get("/llm/v1/models", params={"q": BLOB})
        c.get("/llm/v1/files", params={"q": PAYLOADS[1]})  # denied: recorded too
    bot = ApproverBot(stack.web_url, "approver", stack.password)
    before = set(bot.pending_ids())
    out: dict = {}
    held = threading.Thread(
        target=lambda: out.setdefault(
            "r",
            httpx.get(
                f"{stack.proxy_url}/customers/customers.json",
                params={"sql": f"select email from customers where name = '{PAYLOADS[1]}'"},
                headers={"Authorization": f"Bearer {stack.token}"},
                timeout=60,
            ),
        )
    )
    held.start()
    approval_id = bot.wait_for_pending(10, exclude=before)
    yield approval_id
    bot.decide(approval_id, "deny", comment=PAYLOADS[2])
    held.join(15)
    bot.close()


def test_recorded_payloads_are_inert_for_auditors(
    stack, recorded, browser, sign_in, django_db_blocker
):
    from audit.models import Session

    with django_db_blocker.unblock():
        session = wait_for(lambda: Session.objects.filter(key=PAYLOADS[0]).first(), 15)
    dialogs: list = []
    page = browser.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, "auditor")
    _assert_inert(page, f"{stack.web_url}/audit/sessions/", dialogs)  # lists no payload text
    _assert_inert(page, f"{stack.web_url}/audit/sessions/{session.id}/", dialogs, must_show=True)
    _assert_inert(page, f"{stack.web_url}/audit/search/?q={MARK}", dialogs)
    _assert_inert(page, f"{stack.web_url}/audit/search/?q=%3Cscript%3E{MARK}", dialogs)


def test_held_payloads_are_inert_for_approvers(stack, recorded, browser, sign_in):
    dialogs: list = []
    page = browser.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, "approver")
    _assert_inert(page, f"{stack.web_url}/approvals/", dialogs)  # rows show a shortened URL
    _assert_inert(page, f"{stack.web_url}/approvals/{recorded}/", dialogs, must_show=True)
    _assert_inert(page, f"{stack.web_url}/approvals/history/", dialogs)


def test_payloads_are_inert_in_the_admin_pages(stack, recorded, browser, sign_in):
    dialogs: list = []
    page = browser.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, "admin")
    for path in ("/admin/audit/exchange/", "/admin/audit/session/", "/console/"):
        resp = page.goto(f"{stack.web_url}{path}")
        if resp.status == 200:
            _assert_inert(page, f"{stack.web_url}{path}", dialogs)

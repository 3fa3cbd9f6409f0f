"""Browser (Chromium): two approvers in two browser contexts approve the same request
(threshold 2), while an approver outside the rule's group sees nothing of it."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db]

SLUG = "appr-browser"
GROUP = "e2e-treasury"


class _Upstream(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server API
        self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        self.server.hits += 1
        out = json.dumps({"paid": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser_env(stack, django_db_blocker):
    """Target ``appr-browser`` with a rule needing 2 approvers of group ``e2e-treasury``
    (``approver`` and ``approver2``); ``approver3`` is an approver outside it."""
    from django.contrib.auth.models import Group, User

    from controlplane.models import AccessRule, Target

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    upstream.hits = 0
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    with django_db_blocker.unblock():
        group = Group.objects.create(name=GROUP)
        for name in ("approver", "approver2"):
            User.objects.get(username=name).groups.add(group)
        outsider = User.objects.create_user("approver3", password=stack.password)
        outsider.groups.add(Group.objects.get(name="approver"))
        target = Target.objects.create(
            name="Treasury (browser e2e)",
            slug=SLUG,
            upstream_url=f"http://127.0.0.1:{upstream.server_port}",
        )
        AccessRule.objects.create(
            name="e2e browser: payments need two",
            position=1,
            target=target,
            path_pattern="/payments*",
            action="approve",
            approval_mode="wait",
            required_approvals=2,
            approval_timeout=60,
            approver_group=group,
            reason="Payments need two treasury approvers",
        )
    client = httpx.Client(
        base_url=f"{stack.proxy_url}/{SLUG}",
        timeout=90,
        headers={"Authorization": f"Bearer {stack.token}"},
    )
    wait_for(lambda: client.get("/ping").status_code == 200, timeout=15)
    upstream.hits = 0  # count only what the approvals let through
    yield client, upstream
    client.close()
    upstream.shutdown()
    with django_db_blocker.unblock():
        AccessRule.objects.filter(target=target).delete()
        target.delete()
        User.objects.filter(username="approver3").delete()
        Group.objects.filter(name=GROUP).delete()


def _signed_in_queue(browser, sign_in, stack, username):
    """A new browser context (own cookies) signed in as ``username``, live queue open."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, username)
    page.goto(f"{stack.web_url}/approvals/")
    # No wait_for_function: the page's CSP forbids the eval it needs.
    page.wait_for_selector("#queue", state="attached")
    page.wait_for_timeout(500)  # the socket has sent the current queue
    return context, page, errors


def test_two_approvers_approve_and_a_non_member_sees_nothing(
    stack, browser_env, browser, sign_in
):
    client, upstream = browser_env
    ctx1, page1, errors1 = _signed_in_queue(browser, sign_in, stack, "approver")
    ctx2, page2, errors2 = _signed_in_queue(browser, sign_in, stack, "approver2")
    ctx3, page3, _ = _signed_in_queue(browser, sign_in, stack, "approver3")

    out: dict = {}
    t = threading.Thread(
        target=lambda: out.setdefault("r", client.post("/payments", json={"amount": 125}))
    )
    t.start()
    row1 = page1.locator("article[data-status=pending]", has_text=SLUG)
    row1.first.wait_for(timeout=10000)  # live, without a reload
    row2 = page2.locator("article[data-status=pending]", has_text=SLUG)
    row2.first.wait_for(timeout=10000)
    approval_id = row1.first.get_attribute("id").removeprefix("approval-")
    assert "0 of 2" in row1.first.inner_text()
    assert row1.first.locator(".countdown").inner_text().endswith(" s")

    row1.first.locator("input[name=comment]").fill("first of two")
    row1.first.locator("button.approve").click()
    # The first approver's row now says they decided; the second sees "1 of 2" live.
    page1.locator(f"#approval-{approval_id} .refusal").wait_for(timeout=5000)
    page2.locator(f"#approval-{approval_id} .progress", has_text="1 of 2").wait_for(timeout=5000)
    time.sleep(0.5)
    assert t.is_alive() and upstream.hits == 0  # still held: one approval is not enough

    page2.locator(f"#approval-{approval_id} button.approve").click()
    page1.locator(f"#approval-{approval_id}[data-status=approved]").wait_for(timeout=5000)
    page2.locator(f"#approval-{approval_id}[data-status=approved]").wait_for(timeout=5000)
    t.join(15)
    r = out["r"]
    assert r.status_code == 200 and r.json() == {"paid": True}
    assert r.headers["x-gatehouse-approval-id"] == approval_id
    assert upstream.hits == 1
    assert "2 of 2" in page1.locator(f"#approval-{approval_id}").inner_text()

    # approver3 holds the approver role but is not in the group: nothing reached them.
    assert page3.locator(f"#approval-{approval_id}").count() == 0
    assert SLUG not in page3.locator("#queue").inner_text()
    resp = page3.goto(f"{stack.web_url}/approvals/{approval_id}/")
    assert resp.status == 403 and "payments need two" not in page3.content().lower()
    resp = page3.goto(f"{stack.web_url}/approvals/history/")
    assert approval_id not in page3.content()
    for errors in (errors1, errors2):
        assert not [e for e in errors if "Content Security Policy" in e]
    for ctx in (ctx1, ctx2, ctx3):
        ctx.close()

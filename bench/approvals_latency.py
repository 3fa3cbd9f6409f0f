#!/usr/bin/env python
"""Approval latency as an approver sees it, through the real processes and Chromium.

Usage (from the repository root; PostgreSQL and Redis running, Debian's chromium)::

    .venv/bin/python bench/approvals_latency.py [--requests 40]

Starts web (daphne), one proxy worker and ingest against a private database
(``gatehouse_bench_appr``) and Redis prefix, opens the live queue in headless Chromium
signed in as ``approver``, then for each of ``--requests`` wait-mode requests measures

* **appear**: from the moment the client sends the request to the proxy until the row is
  inserted into the approver's page (a ``MutationObserver`` timestamps it in the
  browser, ``performance.timeOrigin + performance.now()``), i.e. worker -> Redis stream
  -> ingest -> PostgreSQL -> Channels -> WebSocket -> htmx swap;
* **release**: from the approver's click on *Approve* (timestamped in the browser, in
  a capture-phase listener) until the request arrives at the upstream (timestamped by
  the in-process upstream), i.e. htmx POST -> decide -> Redis publish -> worker ->
  upstream; "click -> published" is the part up to the decision's pub/sub message
  (received by this process), the rest is the worker resuming and forwarding.

Browser, benchmark and upstream share the machine's clock (all on 127.0.0.1). Requests
are sequential, one held at a time. Prints p50/p95/max in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time

import httpx

try:
    from bench.approvals_stack import PASSWORD, percentile, start_stack
except ImportError:  # run as a script
    from approvals_stack import PASSWORD, percentile, start_stack  # type: ignore[no-redef]

OBSERVER_JS = """
() => {
  window.__seen = {};
  window.__clicks = [];
  new MutationObserver((muts) => {
    const t = performance.timeOrigin + performance.now();
    for (const m of muts) for (const n of m.addedNodes) {
      const rows = n.nodeType === 1 ? (n.matches('article[data-status=pending]') ? [n]
        : [...n.querySelectorAll('article[data-status=pending]')]) : [];
      for (const r of rows) if (!(r.id in window.__seen)) window.__seen[r.id] = t;
    }
  }).observe(document.body, {childList: true, subtree: true});
  document.addEventListener('click', (ev) => {
    if (ev.target.matches && ev.target.matches('button.approve')) {
      window.__clicks.push(performance.timeOrigin + performance.now());
    }
  }, true);
}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--db", default="gatehouse_bench_appr")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium is required (apt-get install chromium)")
    env = start_stack(
        ["web", "proxy", "ingest"],
        db_name=args.db,
        prefix="ghbenchappr",
        rules={"/held*": {"approval_mode": "wait", "approval_timeout": 60}},
    )
    from playwright.sync_api import sync_playwright

    from controlplane.redis import client, keys

    published: dict[str, float] = {}  # approval id -> when its decision was published
    pubsub = client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys().decisions_channel)

    def listen() -> None:
        for msg in pubsub.listen():
            published[json.loads(msg["data"])["approval_id"]] = time.time()

    threading.Thread(target=listen, daemon=True).start()
    appear: list[float] = []
    release: list[float] = []
    to_publish: list[float] = []
    agent = httpx.Client(timeout=90, headers={"Authorization": f"Bearer {env.token}"})
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page()
            page.goto(f"{env.web_url}/accounts/login/")
            page.fill("input[name=login]", "approver")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{env.web_url}/")
            page.goto(f"{env.web_url}/approvals/")
            page.wait_for_function("document.querySelector('#queue') !== null")
            page.wait_for_timeout(1000)
            page.evaluate(OBSERVER_JS)
            for i in range(args.requests + 3):  # the first 3 warm up and are not counted
                path = f"/held/{i}"
                out: dict = {}
                sent = time.time()
                t = threading.Thread(
                    target=lambda path=path, out=out: out.setdefault(
                        "r", agent.get(f"{env.proxy_url}{path}")
                    )
                )
                t.start()
                page.wait_for_function(
                    "(n) => Object.keys(window.__seen).length > n", arg=i, timeout=30000
                )
                row_id = page.evaluate(
                    "Object.entries(window.__seen).sort((a, b) => b[1] - a[1])[0][0]"
                )
                seen_at = page.evaluate("(id) => window.__seen[id]", row_id)
                page.locator(f"#{row_id} button.approve").first.click()
                t.join(30)
                clicked_at = page.evaluate("window.__clicks[window.__clicks.length - 1]")
                arrived = env.upstream.arrivals.get(path)
                if out.get("r") is None or out["r"].status_code != 200 or arrived is None:
                    raise SystemExit(f"request {i} was not approved: {out.get('r')}")
                if i >= 3:
                    appear.append(seen_at - sent * 1000)
                    release.append(arrived * 1000 - clicked_at)
                    to_publish.append(
                        published[row_id.removeprefix("approval-")] * 1000 - clicked_at
                    )
                page.wait_for_timeout(100)
            browser.close()
    finally:
        agent.close()
        env.stack.stop()
    print(f"requests measured: {len(appear)} (sequential, one held at a time)")
    for name, values in (
        ("appear (proxy -> browser row)", appear),
        ("release (click -> upstream)", release),
        ("  of which click -> published", to_publish),
    ):
        print(
            f"{name:32s} p50 {percentile(values, 50):7.1f} ms"
            f"   p95 {percentile(values, 95):7.1f} ms   max {max(values):7.1f} ms"
        )


if __name__ == "__main__":
    main()

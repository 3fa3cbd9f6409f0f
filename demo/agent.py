"""The demo agent: real clients talking to real upstreams, only through the gateway.

``python -m demo.agent --gateway http://127.0.0.1:8080 --token-file var/demo/agent-token``

It uses ``httpx`` against datasette's JSON API (target ``customers``) and the ``openai``
SDK with its base URL pointed at the gateway (target ``llm``), and shows, step by step:
masked responses, a masked prompt seen through the echo, a masked streamed completion,
a request denied by an access rule, and a bulk export held for approval.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

import httpx
import openai

SESSION = "demo-session"


def _show(title: str, text: str) -> None:
    print(f"\n== {title}\n{text}", flush=True)


def _body(resp: httpx.Response, limit: int = 700) -> str:
    try:
        text = json.dumps(resp.json(), indent=2)
    except ValueError:
        text = resp.text
    return text if len(text) <= limit else text[:limit] + "\n  …"


def run(gateway: str, token: str, *, approval_wait: float, on_held=None) -> int:
    """Run every step; returns the number of steps whose outcome was not the expected one.

    ``on_held`` (optional) is called with the approval id once the bulk export is held.
    """
    headers = {"Authorization": f"Bearer {token}", "X-Gatehouse-Session": SESSION}
    failures = 0
    with httpx.Client(base_url=gateway, headers=headers, timeout=approval_wait + 30) as http:
        r = http.get(
            "/customers/customers/customers.json", params={"_shape": "array", "_size": "3"}
        )
        _show(
            f"1. Three customers through the gateway: HTTP {r.status_code} (personal data masked)",
            _body(r),
        )
        failures += r.status_code != 200 or "[EMAIL]" not in r.text

        r = http.get(
            "/customers/customers.json",
            params={"sql": "select name from sqlite_master", "_shape": "array"},
        )
        _show(f"2. Schema discovery: HTTP {r.status_code} (denied by an access rule)", _body(r))
        failures += r.status_code != 403

        llm = openai.OpenAI(
            base_url=f"{gateway}/llm/v1",
            api_key=token,
            default_headers={"X-Gatehouse-Session": SESSION + "-llm"},
        )
        prompt = (
            "Draft a reply to Jane Roe, jane.roe@example.com, phone +1 415 555 2671, "
            "card 4111 1111 1111 1111."
        )
        reply = llm.chat.completions.create(
            model="gatehouse-echo", messages=[{"role": "user", "content": prompt}]
        )
        text = reply.choices[0].message.content or ""
        _show(
            "3. openai SDK chat completion (the upstream echoes what it received)",
            f"sent:     {prompt}\nreceived: {text}",
        )
        failures += "jane.roe@example.com" in text or "[EMAIL]" not in text

        stream = llm.chat.completions.create(
            model="gatehouse-echo", stream=True, messages=[{"role": "user", "content": prompt}]
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        _show("4. The same, streamed (SSE, masked as it flows)", f"received: {streamed}")
        failures += "4111" in streamed.replace(" ", "") or "[CREDIT_CARD]" not in streamed

        result: dict[str, httpx.Response] = {}

        def export() -> None:
            result["r"] = http.get(
                "/customers/customers.json",
                params={"sql": "select * from customers", "_shape": "array"},
            )

        t = threading.Thread(target=export)
        t.start()
        _show(
            "5. Bulk export (SQL without LIMIT): held until an approver decides",
            f"waiting up to {approval_wait:g} s …",
        )
        if on_held:
            on_held()
        t.join(approval_wait + 30)
        r = result.get("r")
        if r is None:
            _show("5. result", "no answer")
            return failures + 1
        approval_id = r.headers.get("x-gatehouse-approval-id", "?")
        _show(f"5. result: HTTP {r.status_code} (approval {approval_id})", _body(r, 500))
        failures += r.status_code not in (200, 403)
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gateway", default=os.environ.get("GATEHOUSE_PROXY_URL", "http://127.0.0.1:8080")
    )
    parser.add_argument("--token-file", type=Path, default=Path("var/demo/agent-token"))
    parser.add_argument("--approval-wait", type=float, default=130.0)
    args = parser.parse_args(argv)
    token = os.environ.get("GATEHOUSE_AGENT_TOKEN") or args.token_file.read_text().strip()
    failures = run(args.gateway.rstrip("/"), token, approval_wait=args.approval_wait)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

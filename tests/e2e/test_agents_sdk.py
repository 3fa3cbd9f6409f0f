"""The OpenAI Agents SDK demo program against the whole running stack: a real agent
(``Agent``, ``Runner``, function tools, ``MCPServerStreamableHttp``) whose model, MCP tool
server and database are reached only through the gateway, in reverse and forward mode,
with the Responses API (streamed) and chat completions (not streamed); a tool call held
and approved live in the browser; the replay an auditor reads."""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import timedelta

import pytest

from demo.agent_sdk import PROMPT, Gateway, run_async
from demo.approver_bot import ApproverBot
from tests.e2e.conftest import pending_approval_ids, signed_in, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def _raw_values(stack) -> list[str]:
    return [v for row in stack.pii_rows for v in row]


def _gateway(stack) -> Gateway:
    return Gateway(
        proxy_url=stack.proxy_url,
        token=stack.token,
        pg=("127.0.0.1", stack.ports.pg, stack.ca_file),
        forward_url=f"http://127.0.0.1:{stack.ports.forward}",
        llm_url=stack.llm_url,
        mcp_url=stack.mcp_url,
    )


def test_the_agents_sdk_program_runs_every_step_through_the_gateway(stack):
    """Every step of the demo program as expected (it checks its own outcomes: masked
    prompt, tool call, masked tool result and answer, masked rows, the hidden and refused
    tool, the approved deletion, forward mode); the records hold each tool call as its own
    step and no personal data."""
    from audit.models import Exchange

    decided: list[str] = []
    earlier = pending_approval_ids()

    def approve() -> None:
        bot = ApproverBot(stack.web_url, "approver", stack.password)
        try:
            approval_id = bot.wait_for_pending(20, exclude=earlier | set(decided))
            decided.append(approval_id)
            assert bot.decide(approval_id, "approve", "e2e").status_code in (200, 302)
        finally:
            bot.close()

    def on_held() -> None:
        threading.Thread(target=approve, daemon=True).start()

    failures = asyncio.run(run_async(_gateway(stack), approval_wait=30, on_held=on_held))
    assert failures == 0
    assert decided
    calls = wait_for(
        lambda: (
            list(
                Exchange.objects.filter(protocol="mcp", details__tool="lookup_customer").order_by(
                    "started_at"
                )
            )
            if Exchange.objects.filter(protocol="mcp", details__tool="lookup_customer").count() >= 3
            else None
        ),
        timeout=20,
    )
    # Reverse mode (Responses, chat completions) and forward mode: three lookups.
    assert len(calls) == 3
    assert all(c.decision == "allowed" and c.status_code == 200 for c in calls)
    assert "[EMAIL]" in calls[0].response_body
    deletion = wait_for(
        lambda: Exchange.objects.filter(protocol="mcp", details__tool="delete_customer").first(),
        timeout=20,
    )
    assert deletion.decision == "approved" and str(deletion.approval_id) == decided[0]
    denied = Exchange.objects.filter(protocol="mcp", details__tool="export_all_customers").first()
    assert denied is not None and denied.decision == "denied"
    llm = wait_for(
        lambda: list(Exchange.objects.filter(target__slug="llm", url__contains="/responses")),
        timeout=20,
    )
    assert llm
    stored = " ".join(
        f"{x.request_body} {x.response_body} {x.details}"
        for x in Exchange.objects.filter(target__slug__in=["llm", "crm-tools", "customers-db"])
    )
    leaked = [v for v in [*_raw_values(stack), "jane.roe@example.com"] if v and v in stored]
    assert not leaked, f"unmasked values recorded: {leaked[:3]}"
    assert "jane.roe@example.com" in PROMPT  # the program did send personal data


async def _call_tool(stack, name: str, arguments: dict) -> object:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with (
        streamablehttp_client(
            f"{stack.proxy_url}/crm-tools/mcp",
            headers={"Authorization": f"Bearer {stack.token}"},
            timeout=60,
            sse_read_timeout=60,
        ) as (read, write, _),
        ClientSession(read, write, read_timeout_seconds=timedelta(seconds=60)) as session,
    ):
        await session.initialize()
        return await session.call_tool(name, arguments)


@pytest.mark.browser
def test_an_approver_sees_the_tool_call_and_approves_it_live(stack, browser, sign_in):
    """The held ``delete_customer`` call appears on the live queue with the tool and its
    masked arguments; Approve lets it run and the agent gets the (masked) result."""
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
        out["result"] = asyncio.run(
            _call_tool(stack, "delete_customer", {"query": "customer 4, mail ann@example.org"})
        )

    t = threading.Thread(target=held)
    t.start()
    row = page.locator("article[data-status=pending]", has_text="delete_customer")
    row.first.wait_for(timeout=15000)  # live, without a reload
    approval_id = row.first.get_attribute("id").removeprefix("approval-")
    detail = context.new_page()
    detail.goto(f"{stack.web_url}/approvals/{approval_id}/")
    body = detail.locator("body").inner_text()
    assert "delete_customer" in body and "Customer deletion needs approval" in body
    assert "[EMAIL]" in body and "ann@example.org" not in body
    detail.close()
    row.first.locator("button.approve").click()
    page.locator(f"#approval-{approval_id}[data-status=approved]").wait_for(timeout=10000)
    t.join(30)
    result = out["result"]
    assert not result.isError
    text = result.content[0].text
    assert text.startswith("customer 4 (") and "[EMAIL]" in text and "@" not in text
    assert not [e for e in errors if "Content Security Policy" in e]
    context.close()


def test_the_auditor_replays_tool_calls_not_json_rpc_frames(stack):
    """The MCP session's replay lists each tool call by name with its masked arguments
    and result, and nothing unmasked."""
    from audit.models import Exchange

    asyncio.run(_call_tool(stack, "lookup_customer", {"query": "customer 5"}))
    x = wait_for(
        lambda: Exchange.objects.filter(
            protocol="mcp", details__tool="lookup_customer", request_body__contains="customer 5"
        ).first(),
        timeout=20,
    )
    assert x.session is not None
    with signed_in(stack, "auditor") as http:
        first = http.get(f"/audit/sessions/{x.session.pk}/")
        assert first.status_code == 200
        # The timeline names each step by its JSON-RPC method and tool.
        step = re.search(
            r'href="\?step=(\d+)">[^<]*<span class="mcp-method">tools/call</span> '
            r'<code class="mcp-tool">lookup_customer</code>',
            first.text,
        )
        assert step, "the timeline does not list the tool call"
        page = http.get(f"/audit/sessions/{x.session.pk}/", params={"step": step.group(1)})
    assert page.status_code == 200
    html = page.text
    # The call and its result as an MCP client shows them; the raw frames only under
    # "as recorded".
    call = html[html.index('id="mcp-call"') : html.index('class="recorded"')]
    assert "lookup_customer" in call and "customer 5" in call
    assert "[EMAIL]" in call and "&quot;jsonrpc&quot;" not in call
    leaked = [v for v in _raw_values(stack) if v and v in html]
    assert not leaked

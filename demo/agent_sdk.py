"""The demo's OpenAI Agents SDK program: an agent with function and MCP tools, only
through the gateway.

``python -m demo.agent_sdk --gateway http://127.0.0.1:8080 --token-file var/demo/agent-token``

A real ``openai-agents`` program (``Agent``, ``Runner``, ``@function_tool``, and
``MCPServerStreamableHttp`` as a tool source). Its model is the demo's LLM upstream (target
``llm``, an OpenAI-compatible server speaking the Responses API and chat completions),
its tools are the demo's CRM MCP server (target ``crm-tools``) and a function tool that
queries the PostgreSQL customers database through the gateway's PostgreSQL port
(target ``customers-db``). The agent holds only its Gatehouse token; Gatehouse injects
each upstream's credential. Steps:

1. a whole agent turn, Responses API streamed (the SDK's default): the prompt is masked
   before the model sees it, the model calls the MCP tool ``lookup_customer``, the tool's
   result is masked before the model (and the program) sees it, the answer is masked;
2. the same turn with chat completions, not streamed;
3. a function tool whose SQL runs through the gateway's PostgreSQL port: masked rows;
4. ``tools/list`` through the gateway hides ``export_all_customers`` (an access rule denies
   it), and calling it anyway is refused with a JSON-RPC error;
5. ``delete_customer`` is held until a security analyst approves it in the browser;
6. forward mode: the same agent keeps the upstreams' real URLs and sends its traffic
   through the gateway's forward-proxy port (``HTTPS_PROXY`` style) instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:  # the SDK is imported when a step runs, not at import time
    from agents import Agent, FunctionTool
    from agents.mcp import MCPServerStreamableHttp
    from agents.models.interface import Model
    from agents.result import RunResultBase

SESSION = "demo-agents-sdk"
MODEL = "gatehouse-echo"
#: An e-mail address anywhere in a text: none may reach the program unmasked.
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PROMPT = (
    "Customer 3 wrote in from jane.roe@example.com (phone +1 415 555 2671) asking about "
    "their account: look them up and summarise."
)


@dataclass
class Gateway:
    """Where the agent reaches Gatehouse, and with what.

    ``proxy_url``: the reverse-proxy port (``http://host:8080``); ``forward_url``: the
    forward-proxy port (``http://host:8081``) or None to skip forward mode; ``llm_url`` and
    ``mcp_url``: the upstreams' real URLs, used only in forward mode; ``pg``: ``(host,
    port, CA file)`` of the PostgreSQL port; ``token``: the agent's Gatehouse token.
    """

    proxy_url: str
    token: str
    pg: tuple[str, int, Path | None]
    forward_url: str | None = None
    llm_url: str | None = None
    mcp_url: str | None = None


def _show(title: str, text: str) -> None:
    print(f"\n== {title}\n{text}", flush=True)


def _short(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


def _model(gw: Gateway, api: str, *, forward: bool = False) -> Model:
    """The agent's model: the SDK's Responses or chat-completions model on an
    ``AsyncOpenAI`` client whose only key is the Gatehouse token."""
    from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
    from agents.models.openai_responses import OpenAIResponsesModel
    from openai import AsyncOpenAI

    headers = {"X-Gatehouse-Session": SESSION + ("-forward" if forward else "")}
    if forward:
        client = AsyncOpenAI(
            base_url=f"{gw.llm_url}/v1",
            api_key=gw.token,
            default_headers=headers,
            http_client=httpx.AsyncClient(proxy=gw.forward_url, timeout=60),
        )
    else:
        client = AsyncOpenAI(
            base_url=f"{gw.proxy_url}/llm/v1", api_key=gw.token, default_headers=headers
        )
    cls = OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel
    return cls(model=MODEL, openai_client=client)


def _crm(gw: Gateway, timeout: float, *, forward: bool = False) -> MCPServerStreamableHttp:
    """The CRM MCP server as the SDK's ``MCPServerStreamableHttp`` tool source."""
    from agents.mcp import MCPServerStreamableHttp

    headers = {
        "Authorization": f"Bearer {gw.token}",
        "X-Gatehouse-Session": SESSION + ("-forward" if forward else ""),
    }
    params: dict[str, Any] = {
        "url": gw.mcp_url if forward else f"{gw.proxy_url}/crm-tools/mcp",
        "headers": headers,
        "timeout": timeout,
        "sse_read_timeout": timeout,
    }
    if forward:

        def factory(
            headers: dict[str, str] | None = None,
            timeout: httpx.Timeout | None = None,
            auth: httpx.Auth | None = None,
        ) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                proxy=gw.forward_url, headers=headers, timeout=timeout, auth=auth
            )

        params["httpx_client_factory"] = factory
    return MCPServerStreamableHttp(
        params=params,
        name="crm-tools",
        cache_tools_list=True,
        client_session_timeout_seconds=timeout,
    )


def _items(result: RunResultBase) -> list[str]:
    """One line per tool call and tool output of a run result."""
    from agents.items import ToolCallItem, ToolCallOutputItem

    lines = []
    for item in result.new_items:
        if isinstance(item, ToolCallItem):
            raw = item.raw_item
            name = getattr(raw, "name", None) or raw.get("name", "?")
            args = getattr(raw, "arguments", None) or raw.get("arguments", "")
            lines.append(f"tool call:   {name}({_short(str(args), 200)})")
        elif isinstance(item, ToolCallOutputItem):
            lines.append(f"tool output: {_short(str(item.output), 400)}")
    return lines


def _tool_outputs(result: RunResultBase) -> list[str]:
    """The outputs of the tool calls of a run, as text, in order."""
    from agents.items import ToolCallOutputItem

    return [str(i.output) for i in result.new_items if isinstance(i, ToolCallOutputItem)]


def _masked_turn_ok(result: RunResultBase) -> bool:
    """A turn went as it should: a tool ran, its output and the answer hold masked
    personal data and no e-mail address."""
    outputs = _tool_outputs(result)
    answer = str(result.final_output or "")
    return bool(
        outputs
        and all("[EMAIL]" in o and not EMAIL.search(o) for o in outputs)
        and "[EMAIL]" in answer
        and not EMAIL.search(answer)
    )


async def _turn(agent: Agent, prompt: str, *, streamed: bool) -> RunResultBase:
    """One ``Runner`` run of ``agent`` on ``prompt`` (streamed: every event consumed)."""
    from agents import RunConfig, Runner

    config = RunConfig(tracing_disabled=True, workflow_name="gatehouse-demo")
    if not streamed:
        return await Runner.run(agent, prompt, run_config=config)
    result = Runner.run_streamed(agent, prompt, run_config=config)
    async for _ in result.stream_events():
        pass
    return result


def sql_tool(gw: Gateway) -> FunctionTool:
    """``query_customers_db(sql)``: a function tool running read-only SQL on the customers
    database through the gateway's PostgreSQL port (psycopg; rows come back masked)."""
    import psycopg
    from agents import function_tool

    from demo.agent_pg import dsn

    host, port, ca_file = gw.pg

    @function_tool
    async def query_customers_db(sql: str) -> str:
        """Run one read-only SQL query on the customers database; rows as JSON lines."""
        try:
            async with await psycopg.AsyncConnection.connect(
                dsn(host, port, gw.token, ca_file), autocommit=True
            ) as conn:
                cur = await conn.execute(sql)
                names = [c.name for c in cur.description or []]
                rows = await cur.fetchall()
        except psycopg.Error as e:
            return f"error: {e.diag.sqlstate or ''} {e}".strip()
        return "\n".join(json.dumps(dict(zip(names, r, strict=True)), default=str) for r in rows)

    return query_customers_db


async def run_async(
    gw: Gateway, *, approval_wait: float, on_held: Callable[[], None] | None = None
) -> int:
    """Run every step; returns the number of steps whose outcome was not the expected one.

    ``on_held`` (optional) is called once ``delete_customer`` has been sent (it is then
    held for approval); the step waits up to ``approval_wait`` seconds for a decision.
    """
    from agents import Agent, ModelSettings
    from agents.exceptions import AgentsException

    failures = 0
    timeout = approval_wait + 30
    instructions = "You are a CRM assistant. Use the tools to answer about customers."
    async with _crm(gw, timeout) as crm:
        for step, api, streamed in ((1, "responses", True), (2, "chat", False)):
            agent = Agent(
                name="crm-assistant",
                instructions=instructions,
                model=_model(gw, api),
                mcp_servers=[crm],
            )
            result = await _turn(agent, PROMPT, streamed=streamed)
            ok = _masked_turn_ok(result)
            failures += not ok
            label = "Responses API, streamed" if streamed else "chat completions, not streamed"
            _show(
                f"{step}. Agents SDK turn with the MCP tool ({label}): prompt, tool result "
                "and answer masked",
                "\n".join(
                    [f"prompt:      {PROMPT}", *_items(result)]
                    + [f"answer:      {_short(str(result.final_output))}"]
                ),
            )

        agent = Agent(
            name="crm-analyst",
            instructions="Answer with SQL on the customers database.",
            model=_model(gw, "responses"),
            tools=[sql_tool(gw)],
            model_settings=ModelSettings(tool_choice="query_customers_db"),
        )
        sql = "select id, name, email, city from customers order by id limit 3"
        result = await _turn(agent, sql, streamed=True)
        outputs = _tool_outputs(result)
        failures += not (outputs and "[EMAIL]" in outputs[0] and not EMAIL.search(outputs[0]))
        _show(
            "3. A function tool running SQL through the PostgreSQL port (rows masked)",
            "\n".join(_items(result)),
        )

        tools = [t.name for t in await crm.list_tools()]
        try:
            denied = await crm.call_tool("export_all_customers", {})
            refusal = f"answered (unexpected): {_short(str(denied))}"
            failures += 1
        except Exception as e:  # noqa: BLE001 - the SDK raises McpError, shown as is
            refusal = f"refused: {e}"
        failures += "export_all_customers" in tools or "lookup_customer" not in tools
        _show(
            "4. tools/list through the gateway hides the denied tool; calling it is refused",
            f"tools offered: {', '.join(tools)}\nexport_all_customers: {_short(refusal, 300)}",
        )

        agent = Agent(
            name="crm-assistant",
            instructions=instructions,
            model=_model(gw, "responses"),
            mcp_servers=[crm],
            model_settings=ModelSettings(tool_choice="delete_customer"),
        )
        _show(
            "5. delete_customer: held until an approver decides",
            f"waiting up to {approval_wait:g} s …",
        )
        task = asyncio.ensure_future(
            _turn(agent, "Customer 3 asked us to delete their account.", streamed=False)
        )
        await asyncio.sleep(0.5)
        if on_held:
            on_held()
        try:
            result = await task
            _show("5. result: approved", "\n".join(_items(result)))
            failures += not _tool_outputs(result)
        except AgentsException as e:
            _show("5. result: refused", _short(str(e), 400))

    if gw.forward_url and gw.llm_url and gw.mcp_url:
        async with _crm(gw, timeout, forward=True) as crm:
            agent = Agent(
                name="crm-assistant",
                instructions=instructions,
                model=_model(gw, "responses", forward=True),
                mcp_servers=[crm],
            )
            result = await _turn(agent, PROMPT, streamed=True)
        failures += not _masked_turn_ok(result)
        _show(
            "6. Forward mode: real upstream URLs, traffic through the forward-proxy port",
            "\n".join(
                [
                    f"model base URL: {gw.llm_url}/v1   MCP: {gw.mcp_url}",
                    f"proxy:          {gw.forward_url}",
                    *_items(result),
                    f"answer:      {_short(str(result.final_output))}",
                ]
            ),
        )
    return failures


def run(gw: Gateway, *, approval_wait: float, on_held: Callable[[], None] | None = None) -> int:
    """:func:`run_async` from synchronous code."""
    return asyncio.run(run_async(gw, approval_wait=approval_wait, on_held=on_held))


def main(argv: list[str] | None = None) -> int:
    """Command line: run every step; exit status 1 if any outcome was not the expected one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gateway", default=os.environ.get("GATEHOUSE_PROXY_URL", "http://127.0.0.1:8080")
    )
    parser.add_argument("--forward", default=os.environ.get("GATEHOUSE_FORWARD_PROXY_URL"))
    parser.add_argument("--llm-url", default=os.environ.get("DEMO_LLM_URL"))
    mcp_base = os.environ.get("DEMO_MCP_URL")
    parser.add_argument(
        "--mcp-url",
        default=f"{mcp_base}/mcp" if mcp_base else None,
        help="the MCP server's real endpoint (forward mode)",
    )
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument(
        "--pg-port", type=int, default=int(os.environ.get("GATEHOUSE_PG_PORT", "6432"))
    )
    parser.add_argument("--ca-file", type=Path, default=Path("var/ca/mitmproxy-ca-cert.pem"))
    parser.add_argument("--token-file", type=Path, default=Path("var/demo/agent-token"))
    parser.add_argument("--approval-wait", type=float, default=130.0)
    args = parser.parse_args(argv)
    token = os.environ.get("GATEHOUSE_AGENT_TOKEN") or args.token_file.read_text().strip()
    gw = Gateway(
        proxy_url=args.gateway.rstrip("/"),
        token=token,
        pg=(args.pg_host, args.pg_port, args.ca_file),
        forward_url=args.forward,
        llm_url=args.llm_url,
        mcp_url=args.mcp_url,
    )
    return 1 if run(gw, approval_wait=args.approval_wait) else 0


if __name__ == "__main__":
    sys.exit(main())

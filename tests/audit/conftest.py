"""Audit fixtures: exchanges stored through the real ingest path (so they are chained)."""

from __future__ import annotations

import time
import uuid

import pytest

from audit.ingest import Ingestor
from controlplane.redis import keys
from proxy_worker.contract import ExchangeMessage


def make_exchange(policy, *, at: float | None = None, **kw) -> ExchangeMessage:
    """An exchange message of ``policy``'s agent and target; ``kw`` overrides fields."""
    base = dict(
        exchange_id=str(uuid.uuid4()),
        worker_id="w1",
        started_at=time.time() if at is None else at,
        agent_id=policy.agent.id,
        target_id=policy.target.id,
        session_key="",
        client_address="127.0.0.1",
        method="GET",
        url="http://127.0.0.1:9/customers/orders.json?_size=10",
        request_headers={"authorization": "[REDACTED]", "accept": "application/json"},
        request_body="",
        status_code=200,
        response_headers={"content-type": "application/json"},
        response_body='{"rows": [{"email": "[EMAIL]", "phone": "[PHONE:3f9a1c2b]"}]}',
        decision="allowed",
        response_findings=[
            {"type": "EMAIL", "location": "$.rows[0].email", "count": 1},
            {"type": "PHONE", "location": "$.rows[0].phone", "count": 1},
        ],
        timings={"total": 12.5, "upstream": 9.25, "masking": 0.5},
    )
    base.update(kw)
    return ExchangeMessage(**base)


@pytest.fixture
def ingest(redis_client):
    """``ingest(*messages)``: push messages to the stream and run the real ingestor."""
    ing = Ingestor(consumer="test", block_ms=10)
    ing.ensure_groups()

    def run(*msgs: ExchangeMessage) -> None:
        for m in msgs:
            redis_client.xadd(keys().exchanges_stream, {"data": m.to_json()})
        while ing.step(block=False):
            pass

    return run


def make_statement(policy, *, at: float | None = None, target=None, details=None, **kw):
    """A PostgreSQL statement's exchange message (as the worker records it) of
    ``policy``'s agent on ``target`` (default ``policy.target``): a ``SELECT`` that
    returned three rows, two of them sampled. ``details`` entries replace the defaults;
    ``kw`` overrides message fields."""
    target = target or policy.target
    base_details = {
        "statement_kind": "SELECT",
        "statement_kinds": ["SELECT"],
        "tables": ["public.customers"],
        "functions": [],
        "parameters": [],
        "columns": ["id", "email", "note"],
        "rows": [["1", "[EMAIL]", None], ["2", "[EMAIL:3f9a1c2b]", "vip"]],
        "rows_truncated": True,
        "row_count": 3,
        "command_tag": "SELECT 3",
        "sqlstate": "",
        "error": "",
        "extended": False,
        "statement_index": 0,
        "portal_suspended": False,
    }
    base = dict(
        method="SELECT",
        url="postgresql://db.internal:5432/crm",
        session_key="pg:5b0c6a3e-0000-4000-8000-000000000001",
        request_headers={
            "application_name": "psql",
            "tls": "TLSv1.3",
            "client_encoding": "UTF8",
            "database": target.slug,
            "user": policy.agent.name,
        },
        request_body="select id, email, note from public.customers",
        response_headers={},
        response_body=" id | email | note\n----+-------+------\n  1 | [EMAIL] |\n(3 rows)",
        response_findings=[{"type": "EMAIL", "location": "row 1 column email", "count": 2}],
        timings={"total": 4.25, "upstream": 3.5},
        protocol="postgres",
        details={**base_details, **(details or {})},
    )
    base.update(kw)
    return make_exchange(policy, at=at, target_id=target.id, **base)


@pytest.fixture
def pg_target(db):
    """A PostgreSQL target (``kind`` and the ``pg_*`` fields when the model has them)."""
    from controlplane.models import Target

    names = {f.name for f in Target._meta.get_fields()}
    extra = {
        k: v
        for k, v in {
            "kind": "postgres",
            "pg_host": "db.internal",
            "pg_database": "crm",
            "pg_user": "gatehouse",
        }.items()
        if k in names
    }
    target = Target(name="CRM database", slug="crm", upstream_url="http://unused.invalid", **extra)
    target.set_credential("pg-upstream-password")
    target.save()
    return target


@pytest.fixture
def mcp_target(db):
    """An MCP server target ``tools`` (its endpoint ``http://127.0.0.1:9/mcp``)."""
    from controlplane.models import Target

    target = Target(
        name="Tool server", slug="tools", kind="mcp", upstream_url="http://127.0.0.1:9/mcp"
    )
    target.set_credential("mcp-upstream-token")
    target.save()
    return target


def make_mcp_call(
    policy,
    *,
    target,
    at: float | None = None,
    method: str = "tools/call",
    tool: str | None = "lookup_customer",
    arguments=None,
    result=None,
    details=None,
    call_id=7,
    **kw,
) -> ExchangeMessage:
    """One recorded JSON-RPC call to the MCP server ``target`` as the worker records it:
    by default ``tools/call lookup_customer({"email": "[EMAIL]"})`` answered with one
    text content block. ``details`` entries replace the defaults; ``kw`` overrides
    message fields."""
    import json

    arguments = {"email": "[EMAIL]", "limit": 3} if arguments is None else arguments
    if result is None:
        result = {
            "content": [{"type": "text", "text": "Customer 42: [EMAIL], tier gold"}],
            "isError": False,
        }
    d = {
        "jsonrpc_method": method,
        "jsonrpc_id": call_id,
        "tool": tool,
        "arguments": arguments,
        "result": result,
        "is_error": False,
        "mcp_session": "sess-1f2e",
        "batch_index": None,
        "hidden_tools": [],
        "changed_tools": [],
        "server_request": False,
        **(details or {}),
    }
    params = {"name": tool, "arguments": arguments} if method == "tools/call" else {}
    request = {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params}
    response = {"jsonrpc": "2.0", "id": call_id}
    if "error" in d:
        response["error"] = d["error"]
    else:
        response["result"] = d["result"]
    base = dict(
        method=method,
        url=target.upstream_url,
        session_key="mcp:sess-1f2e",
        request_headers={"content-type": "application/json", "mcp-session-id": "sess-1f2e"},
        request_body=json.dumps(request),
        response_headers={"content-type": "text/event-stream"},
        response_body=json.dumps(response),
        request_findings=[{"type": "EMAIL", "location": "$.params.arguments.email", "count": 1}],
        response_findings=[{"type": "EMAIL", "location": "result.content[0].text", "count": 1}],
        timings={"total": 3.5, "upstream": 2.75},
        protocol="mcp",
        details=d,
    )
    base.update(kw)
    return make_exchange(policy, at=at, target_id=target.id, **base)

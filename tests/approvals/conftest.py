from __future__ import annotations

import time
import uuid

import pytest

from approvals.actions import do_create_approval_request
from proxy_worker.contract import ApprovalRequestMessage
from tests.audit.conftest import mcp_target, pg_target  # noqa: F401 - fixtures

#: The formatted, masked statement of :func:`make_sql_request` (as the worker sends it).
SQL_BODY = "DELETE FROM public.orders\nWHERE customer_id = $1\n  AND note = '[EMAIL]'"


@pytest.fixture
def make_request(policy):
    """Create a pending approval request through the real action; returns the row.

    Keyword arguments: ``deadline_in`` (s), ``body``, ``required_approvals``, ``mode``,
    ``rule`` (an AccessRule, default the policy's approve rule), ``agent``, ``worker_id``,
    ``requested_ago`` (s), ``url``, ``method``, ``target``, ``protocol``, ``details``,
    ``headers``.
    """

    def make(deadline_in: float = 60.0, **kw):
        now = time.time() - kw.pop("requested_ago", 0.0)
        rule = kw.pop("rule", policy.approve_rule)
        agent = kw.pop("agent", policy.agent)
        msg = ApprovalRequestMessage(
            approval_id=str(uuid.uuid4()),
            worker_id=kw.pop("worker_id", "w1"),
            agent_id=agent.id,
            target_id=kw.pop("target", policy.target).id,
            rule_id=rule.id if rule else None,
            method=kw.pop("method", "GET"),
            url=kw.pop("url", "http://127.0.0.1:9/export?sql=select+*"),
            headers=kw.pop("headers", {"accept": "*/*"}),
            body=kw.pop("body", '{"q": "[EMAIL]"}'),
            body_truncated=False,
            requested_at=now,
            deadline=now + deadline_in,
            reason="bulk export",
            mode=kw.pop("mode", "wait"),
            required_approvals=kw.pop("required_approvals", 1),
            retry_window=kw.pop("retry_window", 0.0),
            protocol=kw.pop("protocol", "http"),
            details=kw.pop("details", {}),
        )
        assert not kw, f"unknown arguments {kw}"
        req, created = do_create_approval_request(msg)
        assert created
        return req

    return make


@pytest.fixture
def payments_group(users):
    """An approver group ``payments`` holding ``approver`` only (``approver2`` is not in it)."""
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="payments")
    users["approver"].groups.add(group)
    return group


@pytest.fixture
def make_sql_request(make_request, request, policy):
    """A pending SQL statement held for approval (real action): a ``DELETE`` on
    ``public.orders`` with one bound parameter, on the PostgreSQL target ``crm``.
    ``details`` entries replace the defaults; other keywords go to ``make_request``."""

    target = request.getfixturevalue("pg_target")

    def make(details: dict | None = None, **kw):
        base = {
            "statement_kind": "DELETE",
            "statement_kinds": ["DELETE", "SELECT"],
            "tables": ["public.orders"],
            "functions": ["lower"],
            "parameters": ["42", None],
            "sql_fingerprint": "ab" * 32,
        }
        kw.setdefault("method", "DELETE")
        kw.setdefault("url", "postgresql://db.internal:5432/crm")
        kw.setdefault("body", SQL_BODY)
        kw.setdefault("target", target)
        kw.setdefault("headers", {"database": "crm", "user": policy.agent.name, "tls": "TLSv1.3"})
        return make_request(protocol="postgres", details={**base, **(details or {})}, **kw)

    return make


#: The masked JSON-RPC request of :func:`make_mcp_request` (as the worker sends it).
MCP_BODY = (
    '{"jsonrpc": "2.0", "id": 12, "method": "tools/call", "params": {"name": '
    '"lookup_customer", "arguments": {"email": "[EMAIL]", "limit": 3}}}'
)


@pytest.fixture
def make_mcp_request(make_request, request, policy):
    """A pending MCP tool call held for approval (real action):
    ``tools/call lookup_customer({"email": "[EMAIL]", "limit": 3})`` on the MCP server
    ``tools``. ``details`` entries replace the defaults; other keywords go to
    ``make_request``."""

    target = request.getfixturevalue("mcp_target")

    def make(details: dict | None = None, **kw):
        base = {
            "jsonrpc_method": "tools/call",
            "tool": "lookup_customer",
            "arguments": {"email": "[EMAIL]", "limit": 3},
        }
        kw.setdefault("method", "tools/call")
        kw.setdefault("url", target.upstream_url)
        kw.setdefault("body", MCP_BODY)
        kw.setdefault("target", target)
        kw.setdefault("headers", {"content-type": "application/json", "mcp-session-id": "s-1"})
        return make_request(protocol="mcp", details={**base, **(details or {})}, **kw)

    return make

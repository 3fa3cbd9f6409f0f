"""What approvers are told about a new approval request, per channel.

Pure builders (payloads, messages, recipients) plus :func:`post_json`, the one outbound
HTTP call. The Celery tasks in :mod:`approvals.tasks` send them; nothing here runs on the
data path. Everything quoted from the request was masked by the worker; credentials were
removed from its headers, and headers are not sent at all.

Channels (on the access rule):

* ``notify_webhook_url``: ``POST`` of :func:`webhook_payload` as JSON;
* ``notify_slack_url``: a Slack incoming-webhook message (:func:`slack_payload`),
  which Mattermost and Rocket.Chat accept too;
* ``notify_email``: one e-mail per member of the approver group with an address (the
  agent's owner excluded, as they may not decide).

For a SQL statement (``req.is_sql``) every channel quotes the formatted masked SQL
instead of a body and names the statement kind and the tables it touches. For an MCP
call (``req.is_mcp``) every channel names the JSON-RPC method and the tool and quotes
the masked arguments.
"""

from __future__ import annotations

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.urls import reverse

from approvals.models import ApprovalRequest
from approvals.permissions import approver_group_name
from audit.psql import parameter_lines
from controlplane.roles import APPROVER

#: Characters of the masked body quoted in notifications.
PREVIEW_CHARS = 500
#: Seconds an outbound notification call may take.
HTTP_TIMEOUT = 10.0


class NotifyError(Exception):
    """A notification could not be delivered."""


class RetryableNotifyError(NotifyError):
    """Delivery failed in a way worth retrying (network error, 429, 5xx)."""


def approval_page_url(req: ApprovalRequest) -> str:
    """Absolute URL of the request's approval page (``SITE_URL`` + path)."""
    return settings.SITE_URL + reverse("approvals:detail", args=[req.id])


def preview(req: ApprovalRequest, limit: int = PREVIEW_CHARS) -> str:
    """The masked body cut to ``limit`` characters (``…`` when cut)."""
    body = req.body or ""
    return body if len(body) <= limit else body[:limit] + "…"


def arguments_block(req: ApprovalRequest, limit: int = PREVIEW_CHARS) -> str:
    """The masked arguments of an MCP call as indented JSON, cut to ``limit``."""
    text = req.arguments_text
    return text if len(text) <= limit else text[:limit] + "…"


def summary_line(req: ApprovalRequest, url_chars: int = 300) -> str:
    """What the agent wants, in one line: ``GET <url>``, for a SQL statement
    ``DELETE on public.orders, public.items: <first line of SQL>``, for an MCP call
    ``tools/call lookup_customer {"email": "[EMAIL]"}``."""
    if req.is_mcp:
        text = f"{req.mcp_method} {req.tool} {req.arguments_preview}".strip()
        return text if len(text) <= url_chars else text[:url_chars] + "…"
    if req.is_sql:
        tables = ", ".join(req.tables[:10]) + (" …" if len(req.tables) > 10 else "")
        where = f" on {tables}" if tables else ""
        return f"{req.statement_kind}{where}: {req.sql_first_line[:url_chars]}"
    return f"{req.method} {req.url[:url_chars]}"


def webhook_payload(req: ApprovalRequest) -> dict:
    """The generic webhook's JSON document (``event`` = ``approval.requested``).

    Shape: ``{"event", "approval_id", "approval_url", "status", "mode", "protocol",
    "method", "url" (masked), "body_preview" (masked), "agent": {"id", "name", "owner"},
    "target": {"id", "slug"}, "rule": {"id", "name", "reason"}, "approver_group",
    "required_approvals", "requested_at", "deadline" (ISO 8601, UTC)}``; for a SQL
    statement (``protocol`` ``postgres``) also ``"sql": {"preview" (masked, formatted),
    "statement_kind", "statement_kinds", "tables", "functions"}`` (``method`` is the
    statement kind, ``body_preview`` the SQL preview too); for an MCP call (``protocol``
    ``mcp``) also ``"mcp": {"jsonrpc_method", "tool", "arguments" (masked JSON)}``
    (``method`` is the JSON-RPC method, ``body_preview`` the masked JSON-RPC request).
    """
    agent = req.agent
    sql = (
        {
            "sql": {
                "preview": preview(req),
                "statement_kind": req.statement_kind,
                "statement_kinds": req.statement_kinds,
                "tables": req.tables,
                "functions": req.functions,
            }
        }
        if req.is_sql
        else {}
    )
    if req.is_mcp:
        sql = {
            "mcp": {
                "jsonrpc_method": req.mcp_method,
                "tool": req.tool,
                "arguments": (req.details or {}).get("arguments"),
            }
        }
    return {
        "event": "approval.requested",
        "approval_id": str(req.id),
        "approval_url": approval_page_url(req),
        "status": req.status,
        "mode": req.mode,
        "protocol": req.protocol,
        "method": req.method,
        "url": req.url,
        "body_preview": preview(req),
        **sql,
        "agent": {
            "id": req.agent_id,
            "name": agent.name if agent else None,
            "owner": agent.owner.get_username() if agent and agent.owner else None,
        },
        "target": {"id": req.target_id, "slug": req.target.slug if req.target else None},
        "rule": {
            "id": req.rule_id,
            "name": req.rule.name if req.rule else None,
            "reason": req.reason,
        },
        "approver_group": approver_group_name(req),
        "required_approvals": req.required_approvals,
        "requested_at": req.requested_at.isoformat(),
        "deadline": req.deadline.isoformat(),
    }


def _slack_escape(text: str) -> str:
    """Escape Slack mrkdwn control characters (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(req: ApprovalRequest) -> dict:
    """A Slack incoming-webhook message: summary, masked preview, link to the page."""
    url = approval_page_url(req)
    agent = req.agent.name if req.agent else "(deleted agent)"
    target = req.target.slug if req.target else "(deleted target)"
    if req.is_mcp:
        wants = (
            f"to call tool *{_slack_escape(req.tool[:200] or '(no name)')}* "
            f"(`{_slack_escape(req.mcp_method)}`) on *{_slack_escape(target)}*"
        )
    elif req.is_sql:
        wants = (
            f"to run a *{_slack_escape(req.statement_kind)}* statement on "
            f"*{_slack_escape(target)}*"
            + (f" (tables {_slack_escape(', '.join(req.tables[:10]))})" if req.tables else "")
        )
    else:
        wants = f"`{_slack_escape(req.method)} {_slack_escape(req.url[:300])}`"
    summary = (
        f"*Approval needed* ({req.required_approvals} approver"
        f"{'s' if req.required_approvals != 1 else ''}, by "
        f"{req.deadline:%H:%M:%S} UTC): agent *{_slack_escape(agent)}* wants " + wants
    )
    if req.reason:
        summary += f"\nRule: {_slack_escape(req.reason)}"
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": summary}}]
    body = arguments_block(req, 300) if req.is_mcp else preview(req, 300)
    if body:
        fenced = _slack_escape(body).replace("```", "'''")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{fenced}```"}})
    blocks.append(
        {
            "type": "actions",
            "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Review"}, "url": url}
            ],
        }
    )
    return {
        "text": f"Approval needed: {_slack_escape(summary_line(req, 200))} by "
        f"{_slack_escape(agent)} <{url}|review>",
        "blocks": blocks,
    }


def email_recipients(req: ApprovalRequest) -> list[str]:
    """Addresses of active approvers in the request's group, minus the agent's owner."""
    users = (
        get_user_model()
        .objects.filter(is_active=True, groups__name=approver_group_name(req))
        .filter(groups__name=APPROVER)
        .exclude(email="")
        .distinct()
    )
    if req.agent_id and req.agent and req.agent.owner_id:
        users = users.exclude(pk=req.agent.owner_id)
    return sorted({u.email for u in users})


def email_message(req: ApprovalRequest) -> tuple[str, str]:
    """``(subject, plain-text body)`` of the approval e-mail."""
    agent = req.agent.name if req.agent else "(deleted agent)"
    subject = f"[Gatehouse] Approval needed: {summary_line(req, 80)}"
    subject = " ".join(subject.split())  # no line break in a header
    rule = req.rule.name if req.rule else "(deleted)"
    needs = f"({req.required_approvals} approver{'s' if req.required_approvals != 1 else ''})."
    if req.is_mcp:
        target = req.target.slug if req.target else "(deleted target)"
        lines = [
            f"Agent {agent} wants to call an MCP tool; the call needs approval {needs}",
            "",
            f"Tool: {req.tool or '(no name)'} ({req.mcp_method}) on target {target} ({req.url})",
            f"Rule: {rule}" + (f" ({req.reason})" if req.reason else ""),
            f"Deadline: {req.deadline:%Y-%m-%d %H:%M:%S} UTC",
            "",
            "Masked arguments:",
            arguments_block(req) or "(none)",
        ]
    elif req.is_sql:
        target = req.target.slug if req.target else "(deleted target)"
        lines = [
            f"Agent {agent} sent a SQL statement that needs approval {needs}",
            "",
            f"Statement: {req.statement_kind} on target {target} ({req.url})",
            f"Tables: {', '.join(req.tables) or 'none'}",
            *([f"Functions: {', '.join(req.functions)}"] if req.functions else []),
            f"Rule: {rule}" + (f" ({req.reason})" if req.reason else ""),
            f"Deadline: {req.deadline:%Y-%m-%d %H:%M:%S} UTC",
            "",
            "Masked SQL:",
            preview(req) or "(empty)",
            *(["", "Parameters:", *parameter_lines(req.parameters)] if req.parameters else []),
        ]
    else:
        lines = [
            f"Agent {agent} sent a request that needs approval {needs}",
            "",
            f"Request: {req.method} {req.url}",
            f"Rule: {rule}" + (f" ({req.reason})" if req.reason else ""),
            f"Deadline: {req.deadline:%Y-%m-%d %H:%M:%S} UTC",
            "",
            "Masked body preview:",
            preview(req) or "(no body)",
        ]
    lines += ["", f"Review it: {approval_page_url(req)}"]
    return subject, "\n".join(lines)


def post_json(url: str, payload: dict) -> int:
    """POST ``payload`` as JSON to ``url``; returns the status code (2xx).

    Raises :class:`RetryableNotifyError` on network errors, 429 and 5xx, and
    :class:`NotifyError` on other non-2xx answers (retrying would not help).
    """
    try:
        r = httpx.post(
            url,
            json=payload,
            timeout=HTTP_TIMEOUT,
            headers={"User-Agent": "Gatehouse-approvals/1"},
            follow_redirects=False,
        )
    except httpx.HTTPError as e:
        raise RetryableNotifyError(f"{url}: {type(e).__name__}: {e}") from e
    if r.status_code == 429 or r.status_code >= 500:
        raise RetryableNotifyError(f"{url}: HTTP {r.status_code}")
    if not 200 <= r.status_code < 300:
        raise NotifyError(f"{url}: HTTP {r.status_code}")
    return r.status_code

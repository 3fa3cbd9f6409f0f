"""State transitions of approval requests. Views validate input; actions assume it valid.

Each action runs in ``transaction.atomic`` and, on commit, tells the data path
(decision key + pub/sub, :mod:`proxy_worker.contract`; grants through a new policy
snapshot), open approver pages (Channels group :data:`QUEUE_GROUP`) and, for new
requests, the notification tasks (Celery, never on the data path).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from approvals.models import ApprovalRequest, Decision, Grant
from audit.chain import storable
from audit.models import METHOD_MAX_LENGTH
from controlplane.models import AccessRule, Agent, Target
from controlplane.redis import client, keys
from controlplane.snapshot import schedule_publish
from proxy_worker.contract import DECISION_TTL_SECONDS, ApprovalRequestMessage, DecisionMessage

log = logging.getLogger("gatehouse.approvals")

#: Longest grant an approver can give (minutes).
GRANT_MAX_MINUTES = 24 * 60

#: Channels group of every open approval queue page.
QUEUE_GROUP = "approvals.queue"


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def notify_pages(approval_id: uuid.UUID | str, *, created: bool = False) -> None:
    """Tell open queue pages that ``approval_id`` is new (``created``) or changed.

    Best effort (``group_send`` may drop messages): pages render the current state from
    the database when they load and when their socket (re)connects.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            QUEUE_GROUP,
            {"type": "approval.changed", "approval_id": str(approval_id), "created": created},
        )
    except Exception:
        log.exception("could not notify approval pages")


def publish_decision(req: ApprovalRequest, decided_by: list[str], comment: str = "") -> None:
    """Write the final verdict of ``req`` to its decision key and announce it to workers.

    The key is written before the publish, so a worker that subscribes and then reads the
    key (the contract's order) cannot miss it. Raises ``redis.RedisError`` when Redis is
    unreachable.
    """
    verdict = {"approved": "approved", "denied": "denied"}.get(req.status, "expired")
    msg = DecisionMessage(
        approval_id=str(req.id),
        verdict=verdict,  # type: ignore[arg-type]
        decided_by=decided_by,
        decided_at=(req.decided_at or timezone.now()).timestamp(),
        comment=comment,
    )
    payload = msg.to_json()
    k = keys()
    pipe = client().pipeline(transaction=True)
    pipe.set(k.decision(str(req.id)), payload, ex=DECISION_TTL_SECONDS)
    pipe.publish(k.decisions_channel, payload)
    pipe.execute()


def _enqueue_notifications(approval_id: uuid.UUID) -> None:
    from approvals.tasks import notify_approval_request

    try:
        notify_approval_request.delay(str(approval_id))
    except Exception:  # a broker outage must not break ingest; approvers still see the page
        log.exception("could not queue notifications for %s", approval_id)


def do_create_approval_request(msg: ApprovalRequestMessage) -> tuple[ApprovalRequest, bool]:
    """Store an approval request from the stream; idempotent on its id.

    Returns ``(row, created)``. References to an agent, target or rule deleted since the
    worker's snapshot are kept as NULL. When the rule has notification channels, one
    Celery task is queued after the commit to notify them.
    """
    rule = AccessRule.objects.filter(id=msg.rule_id).first() if msg.rule_id else None
    with transaction.atomic():
        req, created = ApprovalRequest.objects.get_or_create(
            id=uuid.UUID(msg.approval_id),
            defaults={
                "agent": Agent.objects.filter(id=msg.agent_id).first(),
                "target": Target.objects.filter(id=msg.target_id).first(),
                "rule": rule,
                "worker_id": msg.worker_id,
                "protocol": (msg.protocol or "http")[:16],
                "details": storable(msg.details) if msg.details else {},
                "method": msg.method[:METHOD_MAX_LENGTH],
                "url": msg.url,
                "headers": msg.headers,
                "body": msg.body,
                "body_truncated": msg.body_truncated,
                "reason": msg.reason,
                "requested_at": _ts(msg.requested_at),
                "deadline": _ts(msg.deadline),
                "mode": msg.mode,
                "required_approvals": max(1, int(msg.required_approvals)),
                "retry_window": max(0, int(msg.retry_window)),
            },
        )
        if created:
            transaction.on_commit(lambda: notify_pages(req.id, created=True))
            if rule and (rule.notify_webhook_url or rule.notify_slack_url or rule.notify_email):
                transaction.on_commit(lambda: _enqueue_notifications(req.id))
    return req, created


def do_decide(
    req: ApprovalRequest,
    *,
    acting_user,
    verdict: str,
    comment: str = "",
    grant_minutes: int | None = None,
    grant_path_pattern: str = "",
    grant_tables: list[str] | None = None,
) -> ApprovalRequest:
    """Record ``acting_user``'s verdict (``approve``/``deny``) and settle the request.

    One deny ends the request; it is approved once ``required_approvals`` distinct users
    approved. ``grant_minutes`` (approve only) asks for a grant; it is issued when the
    request is approved (see :func:`_issue_grant`). ``grant_path_pattern`` (HTTP) or
    ``grant_tables`` (SQL statements: table globs, empty = the statement's tables) say
    what it should cover. The caller has checked
    :func:`approvals.permissions.decide_refusal`; the row is re-read under a lock here, so
    concurrent clicks cannot both settle it, and nothing is recorded on a request that is
    no longer pending, past its deadline, or already decided by this user.
    """
    with transaction.atomic():
        req = ApprovalRequest.objects.select_for_update().get(pk=req.pk)
        if (
            req.status != ApprovalRequest.Status.PENDING
            or req.deadline <= timezone.now()
            or req.decisions.filter(user=acting_user).exists()
        ):
            return req
        approving = verdict == Decision.Verdict.APPROVE
        Decision.objects.create(
            approval_request=req,
            user=acting_user,
            verdict=verdict,
            comment=comment,
            grant_minutes=grant_minutes if approving and grant_minutes else None,
            grant_path_pattern=grant_path_pattern if approving and grant_minutes else "",
            grant_tables=list(grant_tables or []) if approving and grant_minutes else [],
        )
        approvals = list(
            req.decisions.filter(verdict=Decision.Verdict.APPROVE)
            .select_related("user")
            .order_by("created_at", "id")
        )
        decided_by: list[str] = []
        if verdict == Decision.Verdict.DENY:
            req.status = ApprovalRequest.Status.DENIED
            decided_by = [acting_user.get_username()]
        elif len(approvals) >= req.required_approvals:
            req.status = ApprovalRequest.Status.APPROVED
            decided_by = [d.user.get_username() for d in approvals]
            _issue_grant(req, approvals, acting_user)
        if decided_by:
            req.decided_at = timezone.now()
            req.save(update_fields=["status", "decided_at"])
            settled = req
            transaction.on_commit(lambda: publish_decision(settled, decided_by, comment))
        transaction.on_commit(lambda: notify_pages(req.id))
    return req


def _issue_grant(req: ApprovalRequest, approvals: list[Decision], acting_user) -> Grant | None:
    """Create the grant an approved request's approvers asked for, if they all did.

    A grant needs the same consent as the request: every approving decision must have
    asked for one. It lasts the shortest duration asked for, covers the request's agent,
    target and method, and the path pattern the approvers gave when they agree (else the
    request's exact path). For a SQL statement it covers the statement's kind (path
    pattern ``*``) and the table globs the approvers gave when they agree, else the
    statement's own tables (glob-escaped); a statement that touches no table gets no
    grant unless the approvers agreed on globs (an empty list would mean any table).
    For an MCP call it covers the call's JSON-RPC method and the tool-name glob the
    approvers gave when they agree, else the call's own tool (glob-escaped).
    Publishing the snapshot is scheduled by the ``post_save`` signal, after the commit.
    """
    if not approvals or any(not d.grant_minutes for d in approvals):
        return None
    if req.agent_id is None or req.target_id is None:
        return None
    minutes = min(min(d.grant_minutes or 0 for d in approvals), GRANT_MAX_MINUTES)
    expires_at = timezone.now() + timedelta(minutes=minutes)
    if req.is_sql:
        asked = {tuple(d.grant_tables or req.exact_tables) for d in approvals}
        tables = list(asked.pop()) if len(asked) == 1 else req.exact_tables
        if not tables:
            log.warning("no grant for %s: the statement names no table to scope it to", req.id)
            return None
        return Grant.objects.create(
            agent_id=req.agent_id,
            target_id=req.target_id,
            method=req.statement_kind.upper()[:16],
            path_pattern="*",
            tables=tables,
            approval_request=req,
            created_by=acting_user,
            expires_at=expires_at,
        )
    exact = req.exact_tool_pattern if req.is_mcp else req.exact_path_pattern
    patterns = {d.grant_path_pattern or exact for d in approvals}
    pattern = patterns.pop() if len(patterns) == 1 else exact
    if not pattern:
        log.warning("no grant for %s: the call names no tool to scope it to", req.id)
        return None
    return Grant.objects.create(
        agent_id=req.agent_id,
        target_id=req.target_id,
        # JSON-RPC methods are case-sensitive; HTTP methods are compared upper-case.
        method=req.mcp_method[:METHOD_MAX_LENGTH] if req.is_mcp else req.method.upper(),
        path_pattern=pattern,
        approval_request=req,
        created_by=acting_user,
        expires_at=expires_at,
    )


def do_revoke_grant(grant: Grant, *, acting_user) -> bool:
    """Revoke ``grant`` now; returns whether it changed (it may already be revoked).

    Claims the row with a conditional UPDATE and publishes a new snapshot after the
    commit, so workers stop honouring it within one pub/sub round trip.
    """
    with transaction.atomic():
        changed = Grant.objects.filter(pk=grant.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_by=acting_user
        )
        if changed:
            schedule_publish()
    grant.refresh_from_db()
    return bool(changed)


def do_expire(req: ApprovalRequest) -> bool:
    """Mark a pending request past its deadline as expired; returns whether it changed.

    Claims the row with a conditional UPDATE, so concurrent sweeps expire it once.
    """
    with transaction.atomic():
        changed = ApprovalRequest.objects.filter(
            pk=req.pk, status=ApprovalRequest.Status.PENDING, deadline__lte=timezone.now()
        ).update(status=ApprovalRequest.Status.EXPIRED, decided_at=timezone.now())
        if changed:
            req.refresh_from_db()
            transaction.on_commit(lambda: publish_decision(req, []))
            transaction.on_commit(lambda: notify_pages(req.id))
    return bool(changed)


def do_abandon(req: ApprovalRequest, reason: str) -> bool:
    """Mark a pending request whose worker no longer holds it as abandoned.

    Claims the row with a conditional UPDATE (concurrent sweeps abandon it once). After
    the commit an ``expired`` decision carrying ``reason`` is published, so a worker that
    is in fact still alive (cut off from Redis past its heartbeat) fails closed too, and
    open pages are updated. Returns whether the row changed.
    """
    with transaction.atomic():
        changed = ApprovalRequest.objects.filter(
            pk=req.pk, status=ApprovalRequest.Status.PENDING
        ).update(status=ApprovalRequest.Status.ABANDONED, decided_at=timezone.now())
        if changed:
            req.refresh_from_db()
            transaction.on_commit(lambda: publish_decision(req, [], f"abandoned: {reason}"))
            transaction.on_commit(lambda: notify_pages(req.id))
    return bool(changed)

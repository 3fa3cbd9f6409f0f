"""State transitions of approval requests. Views validate input; actions assume it valid.

Each action runs in ``transaction.atomic`` and, on commit, tells the data path
(decision key + pub/sub, :mod:`proxy_worker.contract`) and open approver pages
(Channels group :data:`QUEUE_GROUP`).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from approvals.models import ApprovalRequest, Decision
from controlplane.models import AccessRule, Agent, Target
from controlplane.redis import client, keys
from proxy_worker.contract import DECISION_TTL_SECONDS, ApprovalRequestMessage, DecisionMessage

log = logging.getLogger("gatehouse.approvals")

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


def do_create_approval_request(msg: ApprovalRequestMessage) -> tuple[ApprovalRequest, bool]:
    """Store an approval request from the stream; idempotent on its id.

    Returns ``(row, created)``. References to an agent, target or rule deleted since the
    worker's snapshot are kept as NULL.
    """
    with transaction.atomic():
        req, created = ApprovalRequest.objects.get_or_create(
            id=uuid.UUID(msg.approval_id),
            defaults={
                "agent": Agent.objects.filter(id=msg.agent_id).first(),
                "target": Target.objects.filter(id=msg.target_id).first(),
                "rule": AccessRule.objects.filter(id=msg.rule_id).first(),
                "worker_id": msg.worker_id,
                "method": msg.method,
                "url": msg.url,
                "headers": msg.headers,
                "body": msg.body,
                "body_truncated": msg.body_truncated,
                "reason": msg.reason,
                "requested_at": _ts(msg.requested_at),
                "deadline": _ts(msg.deadline),
            },
        )
        if created:
            transaction.on_commit(lambda: notify_pages(req.id, created=True))
    return req, created


def do_decide(
    req: ApprovalRequest, *, acting_user, verdict: str, comment: str = ""
) -> ApprovalRequest:
    """Record ``acting_user``'s verdict (``approve``/``deny``) and settle the request.

    One deny ends the request; it is approved once ``required_approvals`` distinct users
    approved. The caller has checked :func:`approvals.permissions.decide_refusal`; the row
    is re-read under a lock here so concurrent clicks cannot both settle it.
    """
    with transaction.atomic():
        req = ApprovalRequest.objects.select_for_update().get(pk=req.pk)
        if req.status != ApprovalRequest.Status.PENDING:
            return req
        Decision.objects.create(
            approval_request=req, user=acting_user, verdict=verdict, comment=comment
        )
        approvers = list(
            req.decisions.filter(verdict=Decision.Verdict.APPROVE)
            .select_related("user")
            .values_list("user__username", flat=True)
        )
        final = False
        if verdict == Decision.Verdict.DENY:
            req.status = ApprovalRequest.Status.DENIED
            decided_by = [acting_user.get_username()]
            final = True
        elif len(approvers) >= req.required_approvals:
            req.status = ApprovalRequest.Status.APPROVED
            decided_by = approvers
            final = True
        if final:
            req.decided_at = timezone.now()
            req.save(update_fields=["status", "decided_at"])
            settled = req
            transaction.on_commit(lambda: publish_decision(settled, decided_by, comment))
        transaction.on_commit(lambda: notify_pages(req.id))
    return req


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

"""Celery tasks: the approval sweeps (beat) and approver notifications.

* :func:`expire_approval_requests` (beat, every 5 s): pending requests past their
  deadline become ``expired``; workers and open pages are told.
* :func:`abandon_orphaned_requests` (beat, every 5 s): pending wait-mode requests that no
  live worker holds any more become ``abandoned`` (heartbeats,
  :class:`proxy_worker.contract.WorkerHeartbeat`).
* :func:`notify_approval_request` fans a new request out to its rule's channels, one
  task per channel, each retried with exponential back-off on transient failures.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.core.mail import send_mass_mail
from django.utils import timezone

from approvals.actions import do_abandon, do_expire
from approvals.models import ApprovalRequest
from approvals.notifications import (
    NotifyError,
    RetryableNotifyError,
    email_message,
    email_recipients,
    post_json,
    slack_payload,
    webhook_payload,
)
from controlplane.redis import client, keys
from proxy_worker.contract import ContractError, WorkerHeartbeat

log = logging.getLogger("gatehouse.approvals.tasks")

#: Requests younger than this (s) are never abandoned: their worker's first heartbeat
#: since it took them may not be written yet.
ABANDON_GRACE_SECONDS = 3
#: Requests this close (s) to their deadline are left to the expiry sweep.
EXPIRY_MARGIN_SECONDS = 1
#: Notification retries: 2 s, 4 s, 8 s, ... (jittered), capped at 5 minutes, 6 attempts.
RETRY_OPTIONS = {
    "autoretry_for": (RetryableNotifyError, OSError),
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task
def expire_approval_requests() -> int:
    """Expire every pending request whose deadline has passed; returns how many."""
    overdue = ApprovalRequest.objects.filter(
        status=ApprovalRequest.Status.PENDING, deadline__lte=timezone.now()
    )
    return sum(do_expire(req) for req in overdue[:500])


def _heartbeats(worker_ids: list[str]) -> dict[str, WorkerHeartbeat | None]:
    """The current heartbeat of each worker (``None`` when it has none). Workers whose
    heartbeat is unreadable are left out (never abandon on garbage). Raises
    ``redis.RedisError`` when Redis is unreachable (then nothing is abandoned)."""
    if not worker_ids:
        return {}
    k = keys()
    values = client().mget([k.worker_heartbeat(w) for w in worker_ids])
    out: dict[str, WorkerHeartbeat | None] = {}
    for worker_id, raw in zip(worker_ids, values, strict=True):
        if raw is None:
            out[worker_id] = None
            continue
        try:
            out[worker_id] = WorkerHeartbeat.from_json(raw)
        except ContractError as e:
            log.error("unreadable heartbeat of worker %s: %s", worker_id, e)
    return out


@shared_task
def abandon_orphaned_requests() -> int:
    """Mark pending wait-mode requests held by no live worker ``abandoned``; returns how many.

    A request is orphaned when its worker has no heartbeat (it died, or stopped cleanly
    and deleted it), or when the worker's heartbeat was taken after the request was made
    and does not list it (the worker restarted under the same id, or its hook failed).
    Deferred requests are not held by anyone and only expire.
    """
    now = timezone.now()
    candidates = list(
        ApprovalRequest.objects.filter(
            status=ApprovalRequest.Status.PENDING,
            mode=ApprovalRequest.Mode.WAIT,
            deadline__gt=now + timedelta(seconds=EXPIRY_MARGIN_SECONDS),
            requested_at__lte=now - timedelta(seconds=ABANDON_GRACE_SECONDS),
        ).only("id", "worker_id", "requested_at", "status")[:2000]
    )
    heartbeats = _heartbeats(sorted({r.worker_id for r in candidates}))
    held = {w: set(hb.held) for w, hb in heartbeats.items() if hb is not None}
    abandoned = 0
    for req in candidates:
        if req.worker_id not in heartbeats:
            continue  # unreadable heartbeat
        hb = heartbeats[req.worker_id]
        if hb is None:
            reason = f"worker {req.worker_id} stopped (no heartbeat)"
        elif hb.at > req.requested_at.timestamp() and str(req.id) not in held[req.worker_id]:
            reason = f"worker {req.worker_id} no longer holds the request"
        else:
            continue
        abandoned += do_abandon(req, reason)
    return abandoned


def _pending(approval_id: str) -> ApprovalRequest | None:
    req = (
        ApprovalRequest.objects.select_related(
            "agent__owner", "target__approver_group", "rule__approver_group"
        )
        .filter(pk=approval_id)
        .first()
    )
    if req is None or req.status != ApprovalRequest.Status.PENDING:
        return None  # decided (or gone) before the notification went out: say nothing
    return req


@shared_task
def notify_approval_request(approval_id: str) -> list[str]:
    """Queue one delivery task per channel of the request's rule; returns the channels."""
    req = _pending(approval_id)
    if req is None or req.rule is None:
        return []
    rule = req.rule
    channels = []
    if rule.notify_webhook_url:
        send_approval_webhook.delay(approval_id, "webhook")
        channels.append("webhook")
    if rule.notify_slack_url:
        send_approval_webhook.delay(approval_id, "slack")
        channels.append("slack")
    if rule.notify_email:
        send_approval_email.delay(approval_id)
        channels.append("email")
    return channels


@shared_task(**RETRY_OPTIONS)
def send_approval_webhook(approval_id: str, kind: str) -> int | None:
    """POST the generic (``kind="webhook"``) or Slack (``"slack"``) message; returns the
    HTTP status, or ``None`` when there was nothing to send or the endpoint refused it
    for good (4xx other than 429, logged). Transient failures are retried."""
    req = _pending(approval_id)
    if req is None or req.rule is None:
        return None
    if kind == "slack":
        url, payload = req.rule.notify_slack_url, slack_payload(req)
    else:
        url, payload = req.rule.notify_webhook_url, webhook_payload(req)
    if not url:
        return None
    try:
        return post_json(url, payload)
    except RetryableNotifyError:
        raise
    except NotifyError as e:
        log.error("approval %s: %s notification refused: %s", approval_id, kind, e)
        return None


@shared_task(**RETRY_OPTIONS)
def send_approval_email(approval_id: str) -> int:
    """E-mail the approver group's members; returns how many messages were sent.
    SMTP and connection errors are retried."""
    req = _pending(approval_id)
    if req is None:
        return 0
    recipients = email_recipients(req)
    if not recipients:
        return 0
    subject, body = email_message(req)
    return send_mass_mail([(subject, body, None, [to]) for to in recipients])

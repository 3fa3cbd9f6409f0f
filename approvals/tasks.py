"""Celery tasks: the approval expiry sweep (run by beat every few seconds)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from approvals.actions import do_expire
from approvals.models import ApprovalRequest


@shared_task
def expire_approval_requests() -> int:
    """Expire every pending request whose deadline has passed; returns how many."""
    overdue = ApprovalRequest.objects.filter(
        status=ApprovalRequest.Status.PENDING, deadline__lte=timezone.now()
    )
    return sum(do_expire(req) for req in overdue[:500])

"""Approval requests (requests held by a worker) and the decisions humans make on them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from controlplane.models import AccessRule, Agent, Target


class ApprovalRequest(models.Model):
    """A request that an access rule sent for approval.

    The primary key is the approval id the worker generated. Everything stored here was
    masked by the worker before it left the data path; credentials are not in ``headers``.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True)
    agent = models.ForeignKey(Agent, null=True, on_delete=models.SET_NULL, related_name="+")
    target = models.ForeignKey(Target, null=True, on_delete=models.SET_NULL, related_name="+")
    rule = models.ForeignKey(AccessRule, null=True, on_delete=models.SET_NULL, related_name="+")
    worker_id = models.CharField(max_length=200)
    method = models.CharField(max_length=16)
    url = models.TextField()
    headers = models.JSONField(default=dict)
    body = models.TextField(blank=True)
    body_truncated = models.BooleanField(default=False)
    reason = models.CharField(max_length=300, blank=True)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    required_approvals = models.PositiveSmallIntegerField(default=1)
    requested_at = models.DateTimeField()
    deadline = models.DateTimeField(db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"{self.method} {self.url} ({self.status})"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING and self.deadline > timezone.now()

    @property
    def seconds_left(self) -> int:
        return max(0, int((self.deadline - timezone.now()).total_seconds()))


class Decision(models.Model):
    """One person's verdict on an approval request, with who, when and why."""

    class Verdict(models.TextChoices):
        APPROVE = "approve"
        DENY = "deny"

    approval_request = models.ForeignKey(
        ApprovalRequest, on_delete=models.CASCADE, related_name="decisions"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approval_decisions"
    )
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["approval_request", "user"], name="one_decision_per_user"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.verdict}"

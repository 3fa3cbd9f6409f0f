"""Recorded sessions and exchanges (masked), as ingested from the workers' stream."""

from __future__ import annotations

from django.db import models

from controlplane.models import AccessRule, Agent, Target

DECISION_CHOICES = [
    ("allowed", "Allowed"),
    ("denied", "Denied"),
    ("approved", "Approved"),
    ("approval_denied", "Approval denied"),
    ("expired", "Approval expired"),
    ("error", "Error"),
]


class Session(models.Model):
    """Consecutive exchanges of one agent with one target.

    Grouped by the agent's ``X-Gatehouse-Session`` header when it sends one (``key``),
    otherwise by an idle gap (``GATEHOUSE_SESSION_IDLE_SECONDS``, default 300 s).
    """

    agent = models.ForeignKey(Agent, null=True, on_delete=models.SET_NULL, related_name="+")
    target = models.ForeignKey(Target, null=True, on_delete=models.SET_NULL, related_name="+")
    key = models.CharField(max_length=200, blank=True, help_text="Agent-supplied session id")
    started_at = models.DateTimeField(db_index=True)
    last_activity_at = models.DateTimeField()
    exchange_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-last_activity_at"]
        indexes = [models.Index(fields=["agent", "target", "key", "-last_activity_at"])]

    def __str__(self) -> str:
        return f"session {self.pk}"


class Exchange(models.Model):
    """One request and its answer as the worker recorded it: masked, no credentials."""

    id = models.UUIDField(primary_key=True, help_text="The worker's exchange id")
    session = models.ForeignKey(
        Session, null=True, on_delete=models.SET_NULL, related_name="exchanges"
    )
    agent = models.ForeignKey(Agent, null=True, on_delete=models.SET_NULL, related_name="+")
    target = models.ForeignKey(Target, null=True, on_delete=models.SET_NULL, related_name="+")
    rule = models.ForeignKey(AccessRule, null=True, on_delete=models.SET_NULL, related_name="+")
    approval_id = models.UUIDField(null=True, blank=True, db_index=True)
    worker_id = models.CharField(max_length=200)
    client_address = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(db_index=True)
    method = models.CharField(max_length=16)
    url = models.TextField()
    request_headers = models.JSONField(default=dict)
    request_body = models.TextField(blank=True)
    status_code = models.PositiveSmallIntegerField()
    response_headers = models.JSONField(default=dict)
    response_body = models.TextField(blank=True)
    decision = models.CharField(max_length=20, choices=DECISION_CHOICES, db_index=True)
    error = models.CharField(max_length=300, blank=True)
    request_findings = models.JSONField(default=list)
    response_findings = models.JSONField(default=list)
    timings = models.JSONField(default=dict)
    body_truncated = models.BooleanField(default=False)
    stream_entry_id = models.CharField(max_length=40, blank=True)
    ingested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["started_at"]

    def __str__(self) -> str:
        return f"{self.method} {self.url} -> {self.status_code}"


class IngestError(models.Model):
    """A stream entry ingest could not read: kept (already masked) instead of dropped."""

    stream = models.CharField(max_length=100)
    entry_id = models.CharField(max_length=40)
    error = models.TextField()
    raw = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream", "entry_id"], name="one_error_per_entry")
        ]

    def __str__(self) -> str:
        return f"{self.stream} {self.entry_id}"

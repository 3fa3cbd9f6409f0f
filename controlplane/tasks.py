"""Celery tasks of the control plane."""

from __future__ import annotations

from celery import shared_task

from controlplane.snapshot import publish_snapshot


@shared_task
def republish_policy() -> int:
    """Publish the current policy again (a periodic safety net); returns the version."""
    return publish_snapshot()

"""Celery tasks of the audit app: chain anchors and retention (beat), and audit jobs."""

from __future__ import annotations

from celery import shared_task

from audit import chain, retention


@shared_task
def anchor_chain() -> int | None:
    """Sign the current chain head (beat, every ``GATEHOUSE_AUDIT_ANCHOR_SECONDS``);
    returns the anchor's ``seq``, or ``None`` when there was nothing new or no key."""
    with chain.acting_as("system:anchor"):
        rec = chain.anchor()
    return rec.seq if rec else None


@shared_task
def purge_expired() -> dict[str, int]:
    """Retention sweep (beat, every ``GATEHOUSE_RETENTION_SWEEP_SECONDS``)."""
    return {str(k): v for k, v in retention.purge_expired().items()}


@shared_task
def run_job(job_id: int) -> str:
    """Run one :class:`~audit.models.AuditJob` (export or verification); returns its status."""
    from audit.jobs import run

    return run(job_id)


@shared_task
def expire_exports() -> int:
    """Delete export files past ``GATEHOUSE_EXPORT_TTL_HOURS`` (beat, every 15 minutes);
    returns how many jobs were marked expired."""
    from audit.jobs import expire_exports as expire

    return expire()

"""Audit jobs: evidence exports and chain verifications, run inline or by Celery.

A job is created by a view (:func:`start_export`, :func:`start_verify`). Small jobs (at
most ``GATEHOUSE_EXPORT_SYNC_LIMIT`` exchanges, or ten times as many chain records for a
verification) run at once in the request; larger ones are queued to Celery
(:func:`audit.tasks.run_job`) after the commit, and the page polls the job's progress.
Export files are written under ``GATEHOUSE_EXPORT_DIR`` (``<job id>-<scope>.<ext>``,
written to a temporary name and renamed when complete) and deleted
``GATEHOUSE_EXPORT_TTL_HOURS`` after they were finished (:func:`expire_exports`, Celery
beat), the job then being ``expired``.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.http import QueryDict
from django.utils import timezone

from audit import chain, exports
from audit.forms import SearchForm
from audit.models import AuditJob, ChainRecord, Exchange

log = logging.getLogger("gatehouse.audit.jobs")


def export_dir() -> Path:
    path = Path(settings.GATEHOUSE_EXPORT_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def scope_queryset(params: dict[str, Any]) -> QuerySet[Exchange]:
    """Exchanges an export covers: ``{"session": id}`` or search-form filters.

    Raises ``ValueError`` when stored search filters no longer validate (for example
    an agent that was deleted since).
    """
    if "session" in params:
        return Exchange.objects.filter(session_id=int(params["session"]))
    qd = QueryDict(mutable=True)
    qd.update(params.get("search", {}))
    form = SearchForm(qd)
    if not form.is_valid():
        raise ValueError(f"invalid search filters: {form.errors.as_json()}")
    return form.queryset()


def _start(job: AuditJob, size: int, limit: int) -> AuditJob:
    if size <= limit:
        run(job.pk)
        job.refresh_from_db()
    else:
        from audit.tasks import run_job

        transaction.on_commit(lambda: run_job.delay(job.pk))
    return job


def start_export(user: AbstractBaseUser, fmt: str, params: dict[str, Any]) -> AuditJob:
    """Create an export job of ``fmt`` (``har``, ``jsonl``, ``csv``) and start it."""
    if fmt not in exports.FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    total = scope_queryset(params).count()
    job = AuditJob.objects.create(
        kind=AuditJob.Kind.EXPORT, fmt=fmt, params=params, total=total, created_by=user
    )
    return _start(job, total, settings.GATEHOUSE_EXPORT_SYNC_LIMIT)


def start_verify(user: AbstractBaseUser) -> AuditJob:
    """Create a chain verification job and start it."""
    total = ChainRecord.objects.count()
    job = AuditJob.objects.create(kind=AuditJob.Kind.VERIFY, total=total, created_by=user)
    return _start(job, total, settings.GATEHOUSE_EXPORT_SYNC_LIMIT * 10)


def _progress(job_id: int):
    def report(done: int, total: int | None = None) -> None:
        fields: dict[str, Any] = {"progress": done}
        if total is not None:
            fields["total"] = total
        AuditJob.objects.filter(pk=job_id).update(**fields)

    return report


def run(job_id: int) -> str:
    """Run a queued job to completion; returns the final status. A job that is not
    ``queued`` (already claimed by another worker) is left alone."""
    claimed = AuditJob.objects.filter(pk=job_id, status=AuditJob.Status.QUEUED).update(
        status=AuditJob.Status.RUNNING
    )
    job = AuditJob.objects.select_related("created_by").get(pk=job_id)
    if not claimed:
        return job.status
    try:
        if job.kind == AuditJob.Kind.VERIFY:
            result = chain.verify_chain(progress=_progress(job.pk)).as_dict()
            job.result = result
        else:
            job.file_name, job.result = _export(job)
        job.status = AuditJob.Status.DONE
    except Exception as e:  # the job records its failure; the page shows it
        log.exception("audit job %s failed", job.pk)
        job.status = AuditJob.Status.FAILED
        job.error = f"{type(e).__name__}: {e}"[:2000]
    job.finished_at = timezone.now()
    job.progress = job.total if job.status == AuditJob.Status.DONE else job.progress
    job.save(update_fields=["status", "result", "file_name", "error", "finished_at", "progress"])
    return job.status


def _export(job: AuditJob) -> tuple[str, dict[str, Any]]:
    qs = scope_queryset(job.params)
    scope = f"session{job.params['session']}" if "session" in job.params else "search"
    name = f"{job.pk}-{scope}.{exports.FORMATS[job.fmt][1]}"
    path = export_dir() / name
    tmp = path.with_suffix(path.suffix + ".part")
    report = _progress(job.pk)
    items = exports.iter_items(qs, progress=report)
    with open(tmp, "w", encoding="utf-8", newline="") as out:
        if job.fmt == "har":
            n = exports.write_har(items, out, title=f"Gatehouse evidence export {job.pk}")
        elif job.fmt == "jsonl":
            n = exports.write_jsonl(items, out, scope=job.params, by=job.created_by.get_username())
        else:
            n = exports.write_csv(items, out)
    os.replace(tmp, path)
    return name, {"count": n, "bytes": path.stat().st_size}


def expire_exports(now: datetime | None = None) -> int:
    """Delete the files of export jobs finished more than ``GATEHOUSE_EXPORT_TTL_HOURS``
    ago and mark those jobs ``expired``; also delete ``.part`` files (exports that died
    while being written) older than that. A TTL of 0 keeps everything.

    Returns:
        The number of jobs marked expired.
    """
    hours = settings.GATEHOUSE_EXPORT_TTL_HOURS
    if hours <= 0:
        return 0
    now = now or timezone.now()
    cutoff = now - timedelta(hours=hours)
    base = export_dir().resolve()
    expired = 0
    stale = AuditJob.objects.filter(
        kind=AuditJob.Kind.EXPORT, status=AuditJob.Status.DONE, finished_at__lt=cutoff
    )
    for job in stale.only("pk", "file_name"):
        if job.file_name:
            path = (base / job.file_name).resolve()
            if base in path.parents:
                path.unlink(missing_ok=True)
        expired += AuditJob.objects.filter(pk=job.pk, status=AuditJob.Status.DONE).update(
            status=AuditJob.Status.EXPIRED, file_name=""
        )
    for part in base.glob("*.part"):
        try:
            if part.stat().st_mtime < cutoff.timestamp():
                part.unlink(missing_ok=True)
        except OSError:  # removed by another sweep meanwhile
            continue
    if expired:
        log.info("expired %d export file(s) older than %d h", expired, hours)
    return expired

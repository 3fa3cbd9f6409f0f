"""Retention: purge exchanges older than their target's ``retention_days``.

Exchanges are deleted in batches of ``GATEHOUSE_RETENTION_BATCH``, each batch in one
transaction that holds the chain-head lock and appends a ``purge`` record naming the
deleted exchange ids. Their ``exchange`` chain records stay: the chain still verifies
after a purge (:func:`audit.chain.verify_chain` accepts a missing row that a purge
record names). Exchanges of a session under legal hold are never purged; exchanges
whose target was deleted (``target`` NULL) have no retention and are kept.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from audit.chain import acting_as, appending, describe_actor, iso
from audit.models import Exchange, Session
from controlplane.models import Target

log = logging.getLogger("gatehouse.retention")


def purge_expired(
    *, now: datetime | None = None, batch: int | None = None, max_batches: int = 1000
) -> dict[int, int]:
    """Purge every target's expired exchanges; returns ``{target_id: rows deleted}``.

    ``max_batches`` bounds one run (per target) so a beat tick cannot run for hours;
    the next tick continues where this one stopped.
    """
    now = now or timezone.now()
    batch = batch or settings.GATEHOUSE_RETENTION_BATCH
    deleted: dict[int, int] = {}
    with acting_as("system:retention"):
        for target in Target.objects.filter(retention_days__isnull=False).order_by("pk"):
            cutoff = now - timedelta(days=target.retention_days)
            for _ in range(max_batches):
                n = _purge_batch(target, cutoff, batch)
                if not n:
                    break
                deleted[target.pk] = deleted.get(target.pk, 0) + n
    if deleted:
        log.info("retention purged %s", deleted)
    return deleted


def _purge_batch(target: Target, cutoff: datetime, batch: int) -> int:
    with appending() as chain:
        rows = list(
            Exchange.objects.filter(target=target, started_at__lt=cutoff)
            .filter(Q(session__isnull=True) | Q(session__legal_hold_at__isnull=True))
            .order_by("started_at")
            .values_list("id", "session_id")[:batch]
        )
        if not rows:
            return 0
        ids = [r[0] for r in rows]
        sessions = {r[1] for r in rows if r[1] is not None}
        Exchange.objects.filter(id__in=ids).delete()
        # Sessions keep their metadata while exchanges remain; empty ones go too.
        left = dict(
            Session.objects.filter(id__in=sessions)
            .annotate(n=Count("exchanges"))
            .values_list("id", "n")
        )
        Session.objects.filter(id__in=[s for s, n in left.items() if n == 0]).delete()
        for sid, n in left.items():
            if n:
                Session.objects.filter(id=sid).update(exchange_count=n)
        chain.add(
            "purge",
            {
                "actor": describe_actor(),
                "target_id": target.pk,
                "target": target.slug,
                "retention_days": target.retention_days,
                "cutoff": iso(cutoff),
                "count": len(ids),
                "exchange_ids": sorted(str(i) for i in ids),
            },
        )
        return len(ids)

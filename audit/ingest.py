"""Ingest: consume the workers' Redis streams into PostgreSQL.

Reads the approvals and exchanges streams through the consumer group
:data:`~proxy_worker.contract.INGEST_GROUP`. Entries are acknowledged (``XACK``) only
after the database transaction that stored them committed, and storing is idempotent on
the approval and exchange ids, so delivery is at-least-once and the database sees each
record once. A consumer that restarts first re-reads its own pending entries; entries
left pending by a dead consumer are claimed after ``claim_idle_ms`` (``XAUTOCLAIM``).
Unreadable entries are kept in :class:`~audit.models.IngestError`, not dropped.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from redis.exceptions import RedisError, ResponseError

from approvals.actions import do_create_approval_request
from audit.models import Exchange, IngestError, Session
from controlplane.models import AccessRule, Agent, Target
from controlplane.redis import client, keys
from proxy_worker.contract import (
    INGEST_GROUP,
    ApprovalRequestMessage,
    ContractError,
    ExchangeMessage,
)

log = logging.getLogger("gatehouse.ingest")


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _decode(fields: dict) -> str:
    raw = fields.get(b"data") or fields.get("data")
    if raw is None:
        raise ContractError("entry has no 'data' field")
    return raw.decode() if isinstance(raw, bytes) else raw


class SessionAssigner:
    """Finds or opens the session of each exchange within one ingest batch.

    Explicit session keys (``X-Gatehouse-Session``) are reused for as long as the agent
    sends them; otherwise a session ends after ``idle`` without exchanges.
    """

    def __init__(self, idle: timedelta) -> None:
        self.idle = idle
        self._open: dict[tuple[int, int, str], Session] = {}
        self.touched: dict[int, Session] = {}

    def assign(self, agent_id: int, target_id: int, key: str, at: datetime) -> Session:
        """The session for one exchange at ``at``; created when none fits."""
        k = (agent_id, target_id, key)
        session = self._open.get(k)
        if session is None:
            session = (
                Session.objects.filter(agent_id=agent_id, target_id=target_id, key=key)
                .order_by("-last_activity_at")
                .first()
            )
        if session is None or (not key and at - session.last_activity_at > self.idle):
            session = Session.objects.create(
                agent_id=agent_id,
                target_id=target_id,
                key=key,
                started_at=at,
                last_activity_at=at,
            )
        session.last_activity_at = max(session.last_activity_at, at)
        session.started_at = min(session.started_at, at)
        session.exchange_count += 1
        self._open[k] = session
        self.touched[session.pk] = session
        return session

    def save(self) -> None:
        """Write the activity times and counts of every session this batch touched."""
        Session.objects.bulk_update(
            list(self.touched.values()), ["started_at", "last_activity_at", "exchange_count"]
        )


class Ingestor:
    """One ingest consumer. :meth:`run` loops until ``stop`` is set; :meth:`step` is one pass."""

    def __init__(
        self, *, consumer: str, batch: int = 500, block_ms: int = 1000, claim_idle_ms: int = 60_000
    ) -> None:
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.keys = keys()
        self.redis = client()
        self._pending_first = True
        self.idle = timedelta(seconds=settings.GATEHOUSE_SESSION_IDLE_SECONDS)

    def ensure_groups(self) -> None:
        """Create the consumer group on both streams (and the streams) if missing."""
        for stream in (self.keys.approvals_stream, self.keys.exchanges_stream):
            try:
                self.redis.xgroup_create(stream, INGEST_GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    def _read(self, block: bool) -> list:
        """Own pending entries first (after a start, a claim or an error), then new ones."""
        names = (self.keys.approvals_stream, self.keys.exchanges_stream)
        if self._pending_first:
            result = self.redis.xreadgroup(
                INGEST_GROUP, self.consumer, {s: "0" for s in names}, count=self.batch
            )
            if any(entries for _, entries in result or []):
                return result
            self._pending_first = False
        return (
            self.redis.xreadgroup(
                INGEST_GROUP,
                self.consumer,
                {s: ">" for s in names},
                count=self.batch,
                block=self.block_ms if block else None,
            )
            or []
        )

    def claim_abandoned(self) -> int:
        """Take over entries another consumer left pending longer than ``claim_idle_ms``."""
        claimed = 0
        for stream in (self.keys.approvals_stream, self.keys.exchanges_stream):
            _, entries, _ = self.redis.xautoclaim(
                stream, INGEST_GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
            )
            claimed += len(entries)
        if claimed:
            self._pending_first = True
        return claimed

    def step(self, block: bool = True) -> int:
        """Read and store one batch from each stream; returns how many entries were acked."""
        done = 0
        for stream, entries in self._read(block):
            name = stream.decode() if isinstance(stream, bytes) else stream
            if not entries:
                continue
            if name == self.keys.approvals_stream:
                done += self._approvals(name, entries)
            else:
                done += self._exchanges(name, entries)
        return done

    def _reject(self, stream: str, entry_id: str, error: Exception, raw: str) -> None:
        log.error("unreadable entry %s on %s: %s", entry_id, stream, error)
        IngestError.objects.get_or_create(
            stream=stream, entry_id=entry_id, defaults={"error": str(error), "raw": raw[:1_000_000]}
        )

    def _approvals(self, stream: str, entries: list) -> int:
        ids = []
        for entry_id, fields in entries:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            raw = ""
            try:
                raw = _decode(fields)
                do_create_approval_request(ApprovalRequestMessage.from_json(raw))
            except (ContractError, ValueError) as e:
                self._reject(stream, eid, e, raw)
            ids.append(eid)
        self.redis.xack(stream, INGEST_GROUP, *ids)
        return len(ids)

    def _exchanges(self, stream: str, entries: list) -> int:
        msgs: list[tuple[str, ExchangeMessage]] = []
        ids = []
        for entry_id, fields in entries:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            ids.append(eid)
            raw = ""
            try:
                raw = _decode(fields)
                msgs.append((eid, ExchangeMessage.from_json(raw)))
            except (ContractError, ValueError) as e:
                self._reject(stream, eid, e, raw)
        if msgs:
            self._store_exchanges(msgs)
        self.redis.xack(stream, INGEST_GROUP, *ids)
        return len(ids)

    def _store_exchanges(self, msgs: list[tuple[str, ExchangeMessage]]) -> None:
        with transaction.atomic():
            wanted = {uuid.UUID(m.exchange_id) for _, m in msgs}
            existing = set(Exchange.objects.filter(id__in=wanted).values_list("id", flat=True))
            agents = set(
                Agent.objects.filter(id__in={m.agent_id for _, m in msgs}).values_list(
                    "id", flat=True
                )
            )
            targets = set(
                Target.objects.filter(id__in={m.target_id for _, m in msgs}).values_list(
                    "id", flat=True
                )
            )
            rules = set(
                AccessRule.objects.filter(id__in={m.rule_id for _, m in msgs}).values_list(
                    "id", flat=True
                )
            )
            sessions = SessionAssigner(self.idle)
            rows = []
            for eid, m in sorted(msgs, key=lambda p: p[1].started_at):
                xid = uuid.UUID(m.exchange_id)
                if xid in existing:
                    continue
                existing.add(xid)
                at = _ts(m.started_at)
                agent_id = m.agent_id if m.agent_id in agents else None
                target_id = m.target_id if m.target_id in targets else None
                session = (
                    sessions.assign(agent_id, target_id, m.session_key, at)
                    if agent_id and target_id
                    else None
                )
                rows.append(
                    Exchange(
                        id=xid,
                        session=session,
                        agent_id=agent_id,
                        target_id=target_id,
                        rule_id=m.rule_id if m.rule_id in rules else None,
                        approval_id=uuid.UUID(m.approval_id) if m.approval_id else None,
                        worker_id=m.worker_id[:200],
                        client_address=m.client_address[:64],
                        started_at=at,
                        method=m.method[:16],
                        url=m.url,
                        request_headers=m.request_headers,
                        request_body=m.request_body,
                        status_code=m.status_code,
                        response_headers=m.response_headers,
                        response_body=m.response_body,
                        decision=m.decision,
                        error=m.error[:300],
                        request_findings=m.request_findings,
                        response_findings=m.response_findings,
                        timings=m.timings,
                        body_truncated=m.body_truncated,
                        stream_entry_id=eid,
                    )
                )
            Exchange.objects.bulk_create(rows, ignore_conflicts=True)
            sessions.save()

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set, waiting out Redis and PostgreSQL outages."""
        backoff = 0.5
        ready = False
        next_claim = 0.0
        while not stop.is_set():
            try:
                if not ready:
                    self.ensure_groups()
                    ready = True
                if time.monotonic() >= next_claim:
                    self.claim_abandoned()
                    next_claim = time.monotonic() + self.claim_idle_ms / 1000
                self.step()
                backoff = 0.5
            except (RedisError, OSError) as e:
                log.warning("redis unavailable, retrying in %.1fs: %s", backoff, e)
                ready = False
            except DatabaseError as e:  # IntegrityError included
                log.warning("database unavailable, retrying in %.1fs: %s", backoff, e)
                close_old_connections()
                self._pending_first = True  # re-read what was read but not stored
            else:
                continue
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

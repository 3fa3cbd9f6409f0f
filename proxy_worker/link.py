"""The worker's link to the control plane: everything it does with Redis.

One :class:`ControlPlaneLink` per worker process owns

* the current :class:`~proxy_worker.policy.Policy` (loaded at start, swapped atomically
  when a new version is published, polled as a fallback, kept when Redis goes away);
* one pub/sub connection for policy updates and approval decisions: held requests wait
  on an :class:`asyncio.Future` each, so a thousand held requests cost a thousand
  futures, not a thousand connections or threads;
* appending approval requests and exchanges to their streams, with a local
  append-only spool for exchanges while Redis is unreachable, drained when it returns.

It never imports Django and never talks to PostgreSQL (see ``docs/architecture.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from cryptography.fernet import Fernet, InvalidToken
from redis.exceptions import RedisError

from proxy_worker.contract import (
    STREAM_MAXLEN,
    ApprovalRequestMessage,
    ContractError,
    DecisionMessage,
    ExchangeMessage,
    Keys,
    loads_json,
)
from proxy_worker.masking import Masker, MaskingRule
from proxy_worker.policy import Policy

log = logging.getLogger("gatehouse.link")


#: Entity types the recorder masks in bodies that no target rule masked.
RECORD_ENTITY_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN")


class ControlPlaneUnavailable(RuntimeError):
    """Redis cannot be reached, so a decision that needs the control plane cannot be made."""


@dataclass(frozen=True)
class PolicyState:
    """A policy and the maskers compiled for it, swapped as one object."""

    policy: Policy
    maskers: dict[tuple[int, str], Masker] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)

    def masker(self, target_id: int, direction: str) -> Masker | None:
        """The masker for one target and direction (``request``/``response``), or ``None``."""
        return self.maskers.get((target_id, direction))


def compile_maskers(
    policy: Policy, *, hash_key: bytes, phone_regions: Iterable[str], max_body_bytes: int
) -> dict[tuple[int, str], Masker]:
    """Build one :class:`Masker` per (target id, direction) from the snapshot's masking rules.

    A rule applies to a direction when its ``direction`` is that one or ``both``, and to a
    target when its ``target_ids`` is null (every target) or lists it. Directions with no
    applicable rule get no masker.
    """
    out: dict[tuple[int, str], Masker] = {}
    regions = tuple(phone_regions)
    for target_id in policy.targets_by_id:
        for direction in ("request", "response"):
            rules = [
                MaskingRule(
                    id=int(r["id"]),
                    name=str(r["name"]),
                    entity_types=tuple(r.get("entity_types") or ()),
                    field_names=tuple(r.get("field_names") or ()),
                    strategy=r.get("strategy", "redact"),
                    custom_pattern=r.get("custom_pattern") or None,
                )
                for r in policy.masking_rules
                if r.get("direction", "both") in (direction, "both")
                and (r.get("target_ids") is None or target_id in r["target_ids"])
            ]
            if rules:
                out[(target_id, direction)] = Masker(
                    rules, hash_key=hash_key, phone_regions=regions, max_body_bytes=max_body_bytes
                )
    return out


class ControlPlaneLink:
    """The worker side of the Redis contract (:mod:`proxy_worker.contract`).

    ``worker_key`` is the Fernet key (URL-safe base64, 32 bytes) that decrypts target
    credentials in snapshots. ``spool_dir`` receives ``<worker_id>.jsonl`` while Redis is
    down. Call :meth:`start` once inside the event loop, :meth:`stop` at shutdown.
    """

    def __init__(
        self,
        *,
        redis_url: str,
        keys: Keys,
        worker_id: str,
        worker_key: bytes,
        masking_key: bytes,
        spool_dir: Path,
        phone_regions: Iterable[str] = ("US",),
        max_mask_bytes: int = 10 * 1024 * 1024,
        poll_interval: float = 5.0,
    ) -> None:
        self.keys = keys
        self.worker_id = worker_id
        self.redis = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=15,
            max_connections=64,
        )
        self._fernet = Fernet(worker_key)
        self._masking_key = masking_key
        self._phone_regions = tuple(phone_regions)
        self._max_mask_bytes = max_mask_bytes
        self._poll_interval = poll_interval
        self.spool_path = spool_dir / f"{worker_id}.jsonl"
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.state = PolicyState(Policy.empty())
        #: Masks what is recorded when no target rule did (see ``addons/recorder.py``).
        self.record_masker = Masker(
            [MaskingRule(id=0, name="record", entity_types=RECORD_ENTITY_TYPES)],
            hash_key=masking_key,
            phone_regions=self._phone_regions,
            max_body_bytes=max_mask_bytes,
        )
        self.redis_ok = False
        self._waiters: dict[str, asyncio.Future[DecisionMessage]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load the snapshot (if Redis is up) and start the listener, poller and drainer."""
        with contextlib.suppress(RedisError, OSError):
            await self.reload_policy()
        self._tasks = [
            asyncio.create_task(self._listen(), name="gatehouse-listen"),
            asyncio.create_task(self._poll(), name="gatehouse-poll"),
            asyncio.create_task(self._drain_spool_forever(), name="gatehouse-spool"),
        ]

    async def stop(self) -> None:
        """Cancel background tasks and close the Redis pool."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.redis.aclose()

    # -- policy -------------------------------------------------------------------------

    def _decrypt(self, doc: dict) -> dict:
        targets = []
        for t in doc.get("targets", []):
            t = dict(t)
            if t.get("credential"):
                try:
                    t["credential"] = self._fernet.decrypt(t["credential"].encode()).decode()
                except InvalidToken as e:
                    raise ContractError(
                        f"target {t.get('slug')}: credential does not decrypt with "
                        "GATEHOUSE_WORKER_KEY"
                    ) from e
            targets.append(t)
        return {**doc, "targets": targets}

    def install(self, doc: dict) -> Policy:
        """Swap in the policy from a snapshot document (already parsed JSON).

        Raises :class:`ContractError` when the document is malformed; the current policy
        then stays in force.
        """
        policy = Policy.from_document(self._decrypt(doc))
        maskers = compile_maskers(
            policy,
            hash_key=self._masking_key,
            phone_regions=self._phone_regions,
            max_body_bytes=self._max_mask_bytes,
        )
        self.state = PolicyState(policy, maskers)
        log.info("policy version %s installed", policy.version)
        return policy

    async def reload_policy(self) -> None:
        """Read the snapshot key and install it when its version is newer than ours."""
        raw = await self.redis.get(self.keys.policy_snapshot)
        self.redis_ok = True
        if raw is None:
            return
        try:
            doc = loads_json(raw, "policy snapshot")
            if int(doc.get("version", 0)) > self.state.policy.version:
                self.install(doc)
        except ContractError as e:
            log.error(
                "ignoring bad policy snapshot, keeping version %s: %s", self.state.policy.version, e
            )

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                # The version counter is a few bytes; the snapshot is fetched only when
                # it moved past ours (a missed pub/sub message).
                latest = await self.redis.get(self.keys.policy_version)
                self.redis_ok = True
                if latest is not None and int(latest) > self.state.policy.version:
                    await self.reload_policy()
                await self._recheck_waiters()
            except (RedisError, OSError) as e:
                if self.redis_ok:
                    log.warning(
                        "redis unreachable, serving policy version %s: %s",
                        self.state.policy.version,
                        e,
                    )
                self.redis_ok = False

    # -- pub/sub: policy updates and decisions --------------------------------------------

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.policy_updates, self.keys.decisions_channel)
                self._subscribed.set()
                self.redis_ok = True
                backoff = 0.2
                # Anything published while we were not subscribed is re-read from keys.
                await self.reload_policy()
                await self._recheck_waiters()
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    channel = msg["channel"].decode()
                    if channel == self.keys.policy_updates:
                        await self.reload_policy()
                    elif channel == self.keys.decisions_channel:
                        self._resolve(msg["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                self._subscribed.clear()
                if self.redis_ok:
                    log.warning("lost redis subscription: %s", e)
                self.redis_ok = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _resolve(self, raw: bytes | str) -> None:
        try:
            decision = DecisionMessage.from_json(raw)
        except ContractError as e:
            log.error("ignoring bad decision message: %s", e)
            return
        fut = self._waiters.get(decision.approval_id)
        if fut is not None and not fut.done():
            fut.set_result(decision)

    async def _recheck_waiters(self) -> None:
        ids = [i for i, f in self._waiters.items() if not f.done()]
        if not ids:
            return
        values = await self.redis.mget([self.keys.decision(i) for i in ids])
        for raw in values:
            if raw is not None:
                self._resolve(raw)

    # -- approvals ------------------------------------------------------------------------

    async def submit_approval(self, msg: ApprovalRequestMessage) -> None:
        """Append an approval request to the approvals stream.

        Raises :class:`ControlPlaneUnavailable` when Redis cannot take it: the caller must
        fail closed (the request cannot be approved by anyone).
        """
        try:
            await self.redis.xadd(
                self.keys.approvals_stream,
                {"data": msg.to_json()},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
        except (RedisError, OSError) as e:
            self.redis_ok = False
            raise ControlPlaneUnavailable(f"cannot reach the control plane: {e}") from e

    async def wait_for_decision(self, approval_id: str, timeout: float) -> DecisionMessage | None:
        """Wait up to ``timeout`` seconds for the decision on ``approval_id``.

        Returns the decision, or ``None`` at the deadline. Ordering follows the contract:
        the pub/sub subscription is live before the decision key is read, so a decision
        published at any moment is seen. Raises :class:`ControlPlaneUnavailable` when
        Redis is unreachable before the wait starts.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[DecisionMessage] = loop.create_future()
        self._waiters[approval_id] = fut
        try:
            try:
                async with asyncio.timeout(min(timeout, 5.0)):
                    await self._subscribed.wait()
                raw = await self.redis.get(self.keys.decision(approval_id))
            except (TimeoutError, RedisError, OSError) as e:
                raise ControlPlaneUnavailable(f"cannot reach the control plane: {e}") from e
            if raw is not None:
                self._resolve(raw)
            try:
                async with asyncio.timeout(timeout):
                    return await fut
            except TimeoutError:
                return None
        finally:
            self._waiters.pop(approval_id, None)

    @property
    def held_count(self) -> int:
        """How many requests are waiting for a decision right now."""
        return len(self._waiters)

    # -- exchanges ------------------------------------------------------------------------

    async def record_exchange(self, msg: ExchangeMessage) -> None:
        """Append a finished exchange to the exchanges stream, or spool it locally.

        Never raises for a Redis failure: the entry goes to the spool file and is drained
        later. Ingest is idempotent on ``exchange_id``, so a drain that is cut off and
        repeated duplicates nothing in the database.
        """
        data = msg.to_json()
        if self.redis_ok or not self.spool_path.exists():
            try:
                await self.redis.xadd(
                    self.keys.exchanges_stream,
                    {"data": data},
                    maxlen=STREAM_MAXLEN,
                    approximate=True,
                )
                return
            except (RedisError, OSError) as e:
                log.warning("spooling exchange %s: %s", msg.exchange_id, e)
                self.redis_ok = False
        self._spool(data)

    def _spool(self, data: str) -> None:
        with open(self.spool_path, "a", encoding="utf-8") as f:
            f.write(data + "\n")
            f.flush()
            os.fsync(f.fileno())

    async def drain_spool(self) -> int:
        """Send spooled exchanges to the stream; returns how many were sent.

        The spool is renamed before it is read so that new entries go to a fresh file;
        a drain interrupted half-way leaves the ``.draining`` file to be retried.
        """
        draining = self.spool_path.with_suffix(".draining")
        if not draining.exists():
            if not self.spool_path.exists():
                return 0
            os.replace(self.spool_path, draining)
        sent = 0
        with open(draining, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        pipe = self.redis.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(
                self.keys.exchanges_stream, {"data": line}, maxlen=STREAM_MAXLEN, approximate=True
            )
            sent += 1
        await pipe.execute()
        draining.unlink()
        if sent:
            log.info("drained %d spooled exchanges", sent)
        return sent

    async def _drain_spool_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if not (self.spool_path.exists() or self.spool_path.with_suffix(".draining").exists()):
                continue
            try:
                await self.redis.ping()
                self.redis_ok = True
                await self.drain_spool()
            except (RedisError, OSError):
                self.redis_ok = False

"""The worker's link to the control plane: everything it does with Redis.

One :class:`ControlPlaneLink` per worker process owns

* the current :class:`~proxy_worker.policy.Policy` (loaded at start, swapped atomically
  when a new version is published, polled as a fallback, kept when Redis goes away);
* one pub/sub connection for policy updates, approval decisions and PostgreSQL cancel
  requests passed between workers (``Keys.pg_cancel_channel``): held requests wait
  on an :class:`asyncio.Future` each, so a thousand held requests cost a thousand
  futures, not a thousand connections or threads; other commands share one bounded
  pool that makes callers queue (never fail) when all its connections are busy;
* a heartbeat key listing the approval ids it holds, so the control plane can tell
  requests held by a dead worker (``abandoned``) from requests still waiting;
* defer mode's bookkeeping: the approval id of a deferred request by its fingerprint,
  and the atomic, exactly-once redemption of an approved one across workers;
* appending approval requests and exchanges to their streams, with a local
  append-only spool for exchanges while Redis is unreachable, drained when it returns.

It never imports Django and never talks to PostgreSQL (see ``docs/architecture.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import redis.asyncio as aioredis
from cryptography.fernet import Fernet, InvalidToken
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy_worker.contract import (
    DELETE_IF_EQUALS_LUA,
    HEARTBEAT_INTERVAL_SECONDS,
    HEARTBEAT_TTL_SECONDS,
    REDEEM_DEFERRED_LUA,
    STREAM_MAXLEN,
    ApprovalRequestMessage,
    ContractError,
    DecisionMessage,
    ExchangeMessage,
    Keys,
    WorkerHeartbeat,
    loads_json,
)
from proxy_worker.masking import (
    DEFAULT_ENTITY_TYPES,
    DEFAULT_PHONE_REGIONS,
    Masker,
    MaskingConfigError,
    MaskingRule,
)
from proxy_worker.policy import Policy

log = logging.getLogger("gatehouse.link")


#: Entity types the recorder masks in bodies that no target rule masked: every
#: on-by-default detector (personal data and secrets).
RECORD_ENTITY_TYPES = DEFAULT_ENTITY_TYPES


class ControlPlaneUnavailable(RuntimeError):
    """Redis cannot be reached, so a decision that needs the control plane cannot be made."""


@dataclass(frozen=True)
class PolicyState:
    """A policy and the maskers compiled for it, swapped as one object."""

    policy: Policy
    maskers: dict[tuple[int, str], Masker] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    factory: MaskerFactory | None = None

    def masker(
        self, target_id: int, direction: str, group_ids: Iterable[int] = ()
    ) -> Masker | None:
        """The masker for one target, direction (``request``/``response``) and the
        requesting agent's groups, or ``None`` when no rule applies."""
        if self.factory is None or not self.factory.group_scoped:
            return self.maskers.get((target_id, direction))
        return self.factory.masker(target_id, direction, frozenset(group_ids))


def masking_rule_from_snapshot(r: dict) -> MaskingRule:
    """A snapshot ``masking_rules`` entry as an engine :class:`MaskingRule`."""
    return MaskingRule(
        id=int(r["id"]),
        name=str(r["name"]),
        entity_types=tuple(r.get("entity_types") or ()),
        field_names=tuple(r.get("field_names") or ()),
        strategy=r.get("strategy", "redact"),
        custom_pattern=r.get("custom_pattern") or None,
        json_paths=tuple(r.get("json_paths") or ()),
        deny_list=tuple(r.get("deny_list") or ()),
    )


class MaskerFactory:
    """Maskers of one policy, per (target, direction, applicable rules), built on demand.

    A snapshot rule applies to a direction when its ``direction`` is that one or
    ``both``; to a target when its ``target_ids`` is null (every target) or lists it; to
    an agent when its ``agent_group_ids`` is null (every agent) or shares a group with
    the agent's ``group_ids``. Maskers for the same set of rules on the same target are
    shared; each takes the target's ``binary_bodies`` setting (``refuse``/``pass``).

    Raises:
        MaskingConfigError: (constructor) a rule the engine rejects: the snapshot is then
            refused and the previous policy stays in force.
    """

    def __init__(
        self, policy: Policy, *, hash_key: bytes, phone_regions: Iterable[str], max_body_bytes: int
    ) -> None:
        self._kw = {
            "hash_key": hash_key,
            "phone_regions": tuple(phone_regions),
            "max_body_bytes": max_body_bytes,
        }
        self._rules = [(r, masking_rule_from_snapshot(r)) for r in policy.masking_rules]
        self.group_scoped = any(r.get("agent_group_ids") for r, _m in self._rules)
        self._binary = {
            int(t["id"]): t.get("binary_bodies") or "refuse"
            for t in policy.raw.get("targets", [])
            if isinstance(t, dict) and "id" in t
        }
        self._cache: dict[tuple[int, tuple[int, ...]], Masker] = {}
        for _r, rule in self._rules:  # fail on a bad rule now, not on a request
            Masker([rule], **self._kw)  # type: ignore[arg-type]

    def masker(self, target_id: int, direction: str, group_ids: frozenset[int]) -> Masker | None:
        """The masker for a request or response (``None``: no rule applies)."""
        rules = [
            rule
            for r, rule in self._rules
            if r.get("direction", "both") in (direction, "both")
            and (r.get("target_ids") is None or target_id in r["target_ids"])
            and (not r.get("agent_group_ids") or group_ids.intersection(r["agent_group_ids"]))
        ]
        if not rules:
            return None
        key = (target_id, tuple(rule.id for rule in rules))
        m = self._cache.get(key)
        if m is None:
            m = self._cache[key] = Masker(
                rules,
                binary_bodies=self._binary.get(target_id, "refuse"),
                **self._kw,  # type: ignore[arg-type]
            )
        return m


def compile_maskers(
    policy: Policy, *, hash_key: bytes, phone_regions: Iterable[str], max_body_bytes: int
) -> dict[tuple[int, str], Masker]:
    """Build one :class:`Masker` per (target id, direction) for agents in no group.

    See :class:`MaskerFactory` for which rules apply. Directions with no applicable rule
    get no masker.
    """
    factory = MaskerFactory(
        policy, hash_key=hash_key, phone_regions=phone_regions, max_body_bytes=max_body_bytes
    )
    out: dict[tuple[int, str], Masker] = {}
    for target_id in policy.targets_by_id:
        for direction in ("request", "response"):
            m = factory.masker(target_id, direction, frozenset())
            if m is not None:
                out[(target_id, direction)] = m
    return out


@dataclass(frozen=True)
class DeferredSlot:
    """The deferred approval request held for one (agent, request fingerprint).

    Stored at ``Keys.defer_index`` as ``"<approval id> <deadline>"`` (:attr:`value`;
    the deadline in epoch seconds); :meth:`ControlPlaneLink.deferred_lookup` fills in
    ``decision`` once the request has been decided.
    """

    approval_id: str
    deadline: float
    decision: DecisionMessage | None = None

    @property
    def value(self) -> str:
        """The index entry (compared as a whole by the compare-and-delete scripts)."""
        return f"{self.approval_id} {self.deadline:.3f}"

    @classmethod
    def parse(cls, value: str) -> DeferredSlot:
        """Read an index entry; ``ValueError`` when it is malformed."""
        approval_id, sep, deadline = value.partition(" ")
        if not sep or not approval_id:
            raise ValueError(f"bad defer index entry {value!r}")
        return cls(approval_id, float(deadline))


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
        phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS,
        max_mask_bytes: int = 10 * 1024 * 1024,
        poll_interval: float = 5.0,
    ) -> None:
        self.keys = keys
        self.worker_id = worker_id
        # A blocking pool: when all 64 connections are busy (a burst of a thousand held
        # requests each storing its approval request) callers queue for a free one, for
        # up to 20 s on a saturated event loop, instead of failing with "Too many
        # connections". An unreachable Redis still fails fast (connect timeout 2 s).
        self.redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                redis_url,
                max_connections=64,
                timeout=20,
                socket_timeout=5,
                socket_connect_timeout=2,
                health_check_interval=15,
            )
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
        self._record_maskers: dict[frozenset[str], Masker] = {}
        self._record_maskers_by_covered: dict[frozenset[str], Masker | None] = {}
        self.redis_ok = False
        self._waiters: dict[str, asyncio.Future[DecisionMessage]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        #: Called with each message of ``Keys.pg_cancel_channel`` (the PostgreSQL
        #: listener sets it); its coroutine runs as a task of its own.
        self.pg_cancel_handler: Callable[[bytes], Awaitable[None]] | None = None
        self._handler_tasks: set[asyncio.Task[None]] = set()
        #: Exchanges waiting for the next pipelined flush, with their callers' futures.
        self._outbox: list[tuple[str, asyncio.Future[BaseException | None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: The connection exchanges are sent on (:meth:`_send_exchanges`), made on first use.
        self._exchange_conn: aioredis.Connection | None = None
        self._xadd_head: bytes | None = None

    def record_masker_for(self, covered: frozenset[str]) -> Masker | None:
        """A masker for the record-side types that ``covered`` (a target masker's entity
        types) lacks, or ``None`` when the target's masking already covered them all.

        The Recorder runs it over what the target's rules produced, so a type no rule
        asked for (a secret, an IBAN) is still never stored. Cached per missing set.
        """
        try:
            return self._record_maskers_by_covered[covered]
        except KeyError:
            pass
        missing = frozenset(RECORD_ENTITY_TYPES) - covered
        if not missing:
            masker = None
        else:
            masker = self._record_maskers.get(missing)
            if masker is None:
                masker = Masker(
                    [MaskingRule(id=0, name="record", entity_types=sorted(missing))],
                    hash_key=self._masking_key,
                    phone_regions=self._phone_regions,
                    max_body_bytes=self._max_mask_bytes,
                )
                self._record_maskers[missing] = masker
        if len(self._record_maskers_by_covered) < 4096:  # covered sets come from policies
            self._record_maskers_by_covered[covered] = masker
        return masker

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load the snapshot (if Redis is up) and start the listener, poller and drainer."""
        with contextlib.suppress(RedisError, OSError):
            await self.reload_policy()
        self._tasks = [
            asyncio.create_task(self._listen(), name="gatehouse-listen"),
            asyncio.create_task(self._poll(), name="gatehouse-poll"),
            asyncio.create_task(self._drain_spool_forever(), name="gatehouse-spool"),
            asyncio.create_task(self._heartbeat_forever(), name="gatehouse-heartbeat"),
        ]

    async def stop(self) -> None:
        """Cancel background tasks, drop the heartbeat and close the Redis pool.

        Deleting the heartbeat on a clean stop lets the control plane mark the requests
        this worker still held ``abandoned`` at its next sweep instead of after the TTL.
        """
        if self._flusher is not None:  # exchanges already queued still go out first
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.keys.worker_heartbeat(self.worker_id))
        if self._exchange_conn is not None:
            with contextlib.suppress(Exception):
                await self._exchange_conn.disconnect()
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
        try:
            factory = MaskerFactory(
                policy,
                hash_key=self._masking_key,
                phone_regions=self._phone_regions,
                max_body_bytes=self._max_mask_bytes,
            )
            maskers = {
                (tid, direction): m
                for tid in policy.targets_by_id
                for direction in ("request", "response")
                if (m := factory.masker(tid, direction, frozenset())) is not None
            }
        except MaskingConfigError as e:
            raise ContractError(f"policy snapshot: masking rule rejected: {e}") from e
        self.state = PolicyState(policy, maskers, factory=factory)
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
            if not isinstance(doc, dict):
                raise ContractError("policy snapshot: not a JSON object")
            try:
                newer = int(doc.get("version", 0)) > self.state.policy.version
            except (TypeError, ValueError) as e:
                raise ContractError(f"policy snapshot: bad version {doc.get('version')!r}") from e
            if newer:
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
                await pubsub.subscribe(
                    self.keys.policy_updates,
                    self.keys.decisions_channel,
                    self.keys.pg_cancel_channel,
                )
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
                    elif channel == self.keys.pg_cancel_channel:
                        handler = self.pg_cancel_handler
                        if handler is not None:
                            self._spawn_handler(handler(msg["data"]))
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

    def _spawn_handler(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)

    async def publish_pg_cancel(self, process_id: int, secret: bytes) -> bool:
        """Pass a PostgreSQL ``CancelRequest`` this worker holds no key for to the other
        workers (``Keys.pg_cancel_channel``). Returns ``False`` when Redis is unreachable
        (the cancel is then lost, as a cancel to a stopped server is)."""
        payload = json.dumps(
            {"worker_id": self.worker_id, "process_id": process_id, "secret": secret.hex()},
            separators=(",", ":"),
        )
        try:
            await self.redis.publish(self.keys.pg_cancel_channel, payload)
        except (RedisError, OSError) as e:
            log.warning("could not pass a cancel request to the other workers: %s", e)
            return False
        return True

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

    async def hold(self, msg: ApprovalRequestMessage) -> DecisionMessage | None:
        """Submit a wait-mode approval request and wait for its decision until ``msg.deadline``.

        The request is registered as held before it is submitted, so the heartbeat never
        misses it. Returns the decision, or ``None`` at the deadline. Raises
        :class:`ControlPlaneUnavailable` when Redis is unreachable before the wait starts.
        """
        fut = self._register(msg.approval_id)
        try:
            await self.submit_approval(msg)
            return await self._await_decision(msg.approval_id, fut, msg.deadline - time.time())
        finally:
            self._waiters.pop(msg.approval_id, None)

    async def wait_for_decision(self, approval_id: str, timeout: float) -> DecisionMessage | None:
        """Wait up to ``timeout`` seconds for the decision on ``approval_id``.

        Returns the decision, or ``None`` at the deadline. Ordering follows the contract:
        the pub/sub subscription is live before the decision key is read, so a decision
        published at any moment is seen. Raises :class:`ControlPlaneUnavailable` when
        Redis is unreachable before the wait starts.
        """
        fut = self._register(approval_id)
        try:
            return await self._await_decision(approval_id, fut, timeout)
        finally:
            self._waiters.pop(approval_id, None)

    def _register(self, approval_id: str) -> asyncio.Future[DecisionMessage]:
        fut: asyncio.Future[DecisionMessage] = asyncio.get_running_loop().create_future()
        self._waiters[approval_id] = fut
        return fut

    async def _await_decision(
        self, approval_id: str, fut: asyncio.Future[DecisionMessage], timeout: float
    ) -> DecisionMessage | None:
        if timeout <= 0:
            return None
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

    @property
    def held_count(self) -> int:
        """How many requests are waiting for a decision right now."""
        return len(self._waiters)

    # -- defer mode -----------------------------------------------------------------------

    async def deferred_lookup(self, agent_id: int, fingerprint: str) -> DeferredSlot | None:
        """The open deferred request with this fingerprint and its decision, if any.

        Raises :class:`ControlPlaneUnavailable` when Redis is unreachable, and for an
        unreadable index entry or decision (fail closed).
        """
        try:
            value = await self.redis.get(self.keys.defer_index(agent_id, fingerprint))
            if value is None:
                return None
            slot = DeferredSlot.parse(value.decode())
            raw = await self.redis.get(self.keys.decision(slot.approval_id))
        except (RedisError, OSError) as e:
            self.redis_ok = False
            raise ControlPlaneUnavailable(f"cannot reach the control plane: {e}") from e
        except ValueError as e:
            raise ControlPlaneUnavailable(f"unreadable defer index entry: {e}") from e
        if raw is None:
            return slot
        try:
            return replace(slot, decision=DecisionMessage.from_json(raw))
        except ContractError as e:
            raise ControlPlaneUnavailable(f"unreadable decision for {slot.approval_id}: {e}") from e

    async def claim_deferred(
        self, agent_id: int, fingerprint: str, slot: DeferredSlot, ttl: float
    ) -> DeferredSlot:
        """Record ``slot`` as the deferred request for this fingerprint (``SET NX``).

        Returns the slot that holds the place: ``slot``, or the one another worker stored
        a moment earlier for the same retry (then submit nothing). ``ttl`` is in seconds
        (the approval timeout plus the retry window). Raises :class:`ControlPlaneUnavailable`.
        """
        key = self.keys.defer_index(agent_id, fingerprint)
        try:
            if await self.redis.set(key, slot.value, nx=True, ex=max(1, int(ttl))):
                return slot
            current = await self.redis.get(key)
        except (RedisError, OSError) as e:
            self.redis_ok = False
            raise ControlPlaneUnavailable(f"cannot reach the control plane: {e}") from e
        if current is None:
            return slot
        try:
            return DeferredSlot.parse(current.decode())
        except ValueError as e:
            raise ControlPlaneUnavailable(f"unreadable defer index entry: {e}") from e

    async def release_deferred(self, agent_id: int, fingerprint: str, slot: DeferredSlot) -> None:
        """Forget the deferred request for this fingerprint if it is still ``slot``
        (after a denial, an expiry or a lapsed window, so the next retry asks anew)."""
        try:
            await self.redis.eval(
                DELETE_IF_EQUALS_LUA, 1, self.keys.defer_index(agent_id, fingerprint), slot.value
            )
        except (RedisError, OSError) as e:
            self.redis_ok = False
            raise ControlPlaneUnavailable(f"cannot reach the control plane: {e}") from e

    async def redeem_deferred(
        self, agent_id: int, fingerprint: str, slot: DeferredSlot, retry_window: float
    ) -> int:
        """Atomically use the one retry an approved deferred request allows.

        Returns the code of :data:`proxy_worker.contract.REDEEM_DEFERRED_LUA`: 1 when this
        call redeemed it (let the request pass), -1 when it was already redeemed (by any
        worker), -2 when the window after the approval has passed, 0/-3/-4 when it is not
        (readably) approved. Raises :class:`ControlPlaneUnavailable`.
        """
        try:
            return int(
                await self.redis.eval(
                    REDEEM_DEFERRED_LUA,
                    3,
                    self.keys.decision(slot.approval_id),
                    self.keys.redeemed(slot.approval_id),
                    self.keys.defer_index(agent_id, fingerprint),
                    retry_window,
                    self.worker_id,
                    slot.value,
                )
            )
        except (RedisError, OSError) as e:
            self.redis_ok = False
            raise ControlPlaneUnavailable(f"cannot reach the control plane: {e}") from e

    # -- heartbeat ------------------------------------------------------------------------

    async def beat(self) -> None:
        """Store this worker's :class:`~proxy_worker.contract.WorkerHeartbeat` (held ids)."""
        hb = WorkerHeartbeat(worker_id=self.worker_id, at=time.time(), held=list(self._waiters))
        await self.redis.set(
            self.keys.worker_heartbeat(self.worker_id), hb.to_json(), ex=HEARTBEAT_TTL_SECONDS
        )

    async def _heartbeat_forever(self) -> None:
        while True:
            try:
                await self.beat()
            except (RedisError, OSError) as e:
                log.debug("heartbeat failed: %s", e)
            await asyncio.sleep(HEARTBEAT_INTERVAL_SECONDS)

    # -- exchanges ------------------------------------------------------------------------

    def submit_exchange(self, msg: ExchangeMessage) -> asyncio.Future[None]:
        """Queue an exchange like :meth:`record_exchange` without a task of its own;
        returns a future done once the entry is in Redis or in the (fsync'd) spool.

        For callers that record many exchanges and wait once (the PostgreSQL relay
        waits before each ``ReadyForQuery``). Never fails for a Redis failure.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        data = msg.to_json()
        if not (self.redis_ok or not self.spool_path.exists()):
            self._spool(data)
            done.set_result(None)
            return done
        fut: asyncio.Future[BaseException | None] = loop.create_future()
        self._outbox.append((data, fut))

        def _stored(f: asyncio.Future[BaseException | None]) -> None:
            try:
                error = f.result()
                if error is not None:
                    log.warning("spooling exchange %s: %s", msg.exchange_id, error)
                    self.redis_ok = False
                    self._spool(data)
            except BaseException as e:  # never lose the entry
                log.warning("spooling exchange %s: %r", msg.exchange_id, e)
                self._spool(data)
            finally:
                if not done.done():
                    done.set_result(None)

        fut.add_done_callback(_stored)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_exchanges(), name="gatehouse-exchanges")
        return done

    async def record_exchange(self, msg: ExchangeMessage) -> None:
        """Append a finished exchange to the exchanges stream, or spool it locally.

        Returns once the entry is in Redis or in the (fsync'd) spool file, so an answered
        request is always recorded. Exchanges finishing together share one pipelined
        round trip (:meth:`_flush_exchanges`). Never raises for a Redis failure: the
        entry goes to the spool file and is drained later. Ingest is idempotent on
        ``exchange_id``, so a drain that is cut off and repeated duplicates nothing in
        the database.
        """
        data = msg.to_json()
        if self.redis_ok or not self.spool_path.exists():
            fut: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
            self._outbox.append((data, fut))
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(
                    self._flush_exchanges(), name="gatehouse-exchanges"
                )
            error = await fut  # a cancelled caller's exchange is still sent
            if error is None:
                return
            log.warning("spooling exchange %s: %s", msg.exchange_id, error)
            self.redis_ok = False
        self._spool(data)

    async def _flush_exchanges(self) -> None:
        """Send queued exchanges, all ``XADD``s of a batch in one write, one batch per
        round trip, on a connection of their own (:meth:`_send_exchanges`).

        Whatever queues while a batch is in flight goes in the next one, so under
        load a round trip carries many exchanges and at low load each goes at once. Each
        waiting :meth:`record_exchange` learns its own outcome (``None`` or the error).
        """
        # No yield before the first batch: with mitmproxy's eager task factory this runs
        # inside the first caller's ``create_task``, so a lone exchange is written at once
        # (what queues while it is in flight forms the next batch).
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                results = await self._send_exchanges([data for data, _fut in batch])
            except BaseException as e:  # cancelled at shutdown: the callers spool
                for _data, fut in batch:
                    if not fut.done():
                        fut.set_result(RedisError(f"exchange flush interrupted: {e!r}"))
                raise
            for (_data, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)

    async def _send_exchanges(self, entries: list[str]) -> list[BaseException | None]:
        """``XADD`` each entry (JSON text) to the exchanges stream; one outcome per entry:
        ``None`` once Redis stored it, else the error (the caller spools that entry).

        The commands are written at once and the replies read in order on a connection
        kept for exchanges only (no pipeline object, no pool checkout per batch: most of
        the client-side cost of a small batch). A connection Redis closed while it was
        idle is reopened and the unanswered entries sent once more, as the pool does
        before handing out a connection; an entry may then be stored twice, which ingest
        ignores (idempotent on ``exchange_id``). Never raises for a Redis error.
        """
        results: list[BaseException | None] = []
        retried = False
        while True:
            conn = self._exchange_conn
            if conn is None:
                pool = self.redis.connection_pool
                conn = self._exchange_conn = pool.connection_class(**pool.connection_kwargs)
            reused = conn.is_connected
            todo = entries[len(results) :]
            try:
                await conn.send_packed_command(self._pack_xadds(todo), check_health=False)
                for _ in todo:
                    try:
                        await conn.read_response()
                    except ResponseError as e:  # this entry refused; the rest go on
                        results.append(e)
                    else:
                        results.append(None)
                return results
            except (RedisError, OSError) as e:
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                if reused and not retried and not isinstance(e, RedisTimeoutError):
                    retried = True  # stale connection (Redis restarted): once more
                    continue
                return results + [e] * (len(entries) - len(results))
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
                raise

    def _pack_xadds(self, entries: list[str]) -> list[bytes]:
        """``XADD <exchanges> MAXLEN ~ <cap> * data <entry>`` for each entry, in the Redis
        protocol (RESP arrays of bulk strings: what ``pack_command`` writes, without its
        per-argument work)."""
        head = self._xadd_head
        if head is None:
            args = [b"XADD", self.keys.exchanges_stream.encode(), b"MAXLEN", b"~"]
            args += [str(STREAM_MAXLEN).encode(), b"*", b"data"]
            head = b"*%d\r\n" % (len(args) + 1) + b"".join(
                b"$%d\r\n%s\r\n" % (len(a), a) for a in args
            )
            self._xadd_head = head
        out = []
        for data in entries:
            raw = data.encode()
            out.append(b"%s$%d\r\n%s\r\n" % (head, len(raw), raw))
        return out

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

"""The worker's PostgreSQL listener (``GATEHOUSE_PG_PORT``), beside its HTTP listeners.

It runs in the worker's own asyncio event loop (the one mitmproxy runs in), shares the
policy snapshot, approvals, Redis link and recorder with the HTTP path through the
:class:`~proxy_worker.link.ControlPlaneLink`, and serves every agent connection with a
:class:`~proxy_worker.postgres.relay.Relay`.

Cancel keys: each agent connection gets a ``BackendKeyData`` of Gatehouse's own (random
process id and secret); a ``CancelRequest`` presenting them is mapped to the upstream's
key and sent to the upstream server (PostgreSQL docs, "Canceling Requests in
Progress"), or ends an approval wait. Keys are compared in constant time. A key this
worker did not give out is passed to the other workers over Redis
(``Keys.pg_cancel_channel``): behind a TCP load balancer a cancel request, which comes on
a new connection, often reaches another worker than the session it cancels. The worker
holding the key cancels; the others ignore it, as PostgreSQL ignores an unknown key.

Revocation: whenever a new policy is installed, every connection it no longer allows
(its agent's token revoked or expired, its target removed) is ended at once with a FATAL
``ErrorResponse`` (28000 or 3D000), idle or busy: statements running for it upstream are
cancelled, a statement waiting for approval is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import ssl
from collections import OrderedDict
from typing import Any

from proxy_worker.identity import Authenticator
from proxy_worker.link import ControlPlaneLink
from proxy_worker.policy import Target
from proxy_worker.postgres import protocol as pq
from proxy_worker.postgres.catalog import Catalog, catalog_key

log = logging.getLogger("gatehouse.postgres")

#: Seconds between looks at the policy version (to end connections a new one revokes).
POLICY_WATCH_INTERVAL = 0.5


class PostgresListener:
    """Accepts agent connections and keeps what they share (cancel keys, catalogs).

    Args:
        link: the worker's control-plane link.
        authenticator: the worker's :class:`~proxy_worker.identity.Authenticator` (shared
            with the HTTP listeners so the bad-credential limiter sees every failure).
        host, port: where to listen.
        tls_context: the server TLS context (``None``: ``SSLRequest`` is answered ``N``
            and only targets allowing plaintext can be used).
        max_message: largest frontend or backend message relayed (bytes).
    """

    def __init__(
        self,
        link: ControlPlaneLink,
        authenticator: Authenticator,
        *,
        host: str,
        port: int,
        tls_context: ssl.SSLContext | None,
        max_message: int = pq.DEFAULT_MAX_MESSAGE,
    ) -> None:
        self.link = link
        self.authenticator = authenticator
        self.host = host
        self.port = port
        self.tls_context = tls_context
        self.max_message = max_message
        self._server: asyncio.base_events.Server | None = None
        self._relays: set[Any] = set()
        self._keys: dict[int, tuple[bytes, Any]] = {}
        self._catalogs: dict[tuple[Any, ...], Catalog] = {}
        #: Column plans (``RowMasker`` prototypes) by result shape, shared by connections.
        self.row_plans: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start listening (raises ``OSError`` when the port is taken)."""
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, limit=256 * 1024, reuse_address=True
        )
        self._watcher = asyncio.create_task(self._watch_policy(), name="gatehouse-pg-policy")
        self.link.pg_cancel_handler = self.cancel_from_peer

    async def _watch_policy(self) -> None:
        """When a new policy arrives, end the connections it no longer allows (a revoked
        token, a removed target) at once, idle ones included, with a FATAL 28000/3D000:
        a revocation must not wait for the agent's next statement."""
        seen = self.link.state.policy.version
        while True:
            await asyncio.sleep(POLICY_WATCH_INTERVAL)
            policy = self.link.state.policy
            if policy.version == seen:
                continue
            seen = policy.version
            for relay in list(self._relays):
                try:
                    refusal = relay.revocation()
                    if refusal is not None:
                        log.info("ending a connection: %s", refusal.message)
                        await relay.shutdown(refusal.message, sqlstate=refusal.sqlstate)
                except Exception:  # one connection's trouble must not stop the watch
                    log.exception("could not check a connection against the new policy")

    async def stop(self, grace: float = 3.0) -> None:
        """Stop accepting, tell every agent the worker is shutting down, close everything.

        Each connected agent gets a FATAL ``ErrorResponse`` 57P01 (admin_shutdown, as
        PostgreSQL sends on a fast shutdown); connections then have ``grace`` seconds to
        end (their statements cancelled upstream, exchanges recorded) before their tasks
        are cancelled.
        """
        self.link.pg_cancel_handler = None
        if self._server is not None:
            self._server.close()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        relays = list(self._relays)
        for relay in relays:
            with contextlib.suppress(Exception):
                await relay.shutdown("terminating connection: the gateway is shutting down")
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        for c in list(self._catalogs.values()):
            with contextlib.suppress(Exception):
                await c.close()

    @property
    def connection_count(self) -> int:
        return len(self._relays)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from proxy_worker.postgres.relay import Relay

        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        relay = Relay(self, reader, writer)
        self._relays.add(relay)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await relay.run()
        except asyncio.CancelledError:
            # Cancelled by stop() after its grace period: end quietly (asyncio's stream
            # callback would log a cancelled connection task as an error).
            pass
        finally:
            self._relays.discard(relay)
            if task is not None:
                self._tasks.discard(task)

    # ------------------------------------------------------------------ cancel keys

    def register(self, relay: Any) -> tuple[int, bytes]:
        """A fresh (process id, secret) for ``relay``'s ``BackendKeyData``."""
        while True:
            pid = secrets.randbelow(2**31 - 2) + 1
            if pid not in self._keys:
                break
        secret = secrets.token_bytes(4)
        self._keys[pid] = (secret, relay)
        return pid, secret

    def unregister(self, relay: Any) -> None:
        key = getattr(relay, "backend_key", None)
        if key is not None:
            entry = self._keys.get(key[0])
            if entry is not None and entry[1] is relay:
                del self._keys[key[0]]

    async def cancel(self, pid: int, secret: bytes) -> None:
        """Handle a ``CancelRequest``: cancel what that connection runs (or waits for);
        a key of no connection of this worker goes to the other workers."""
        if await self._cancel_local(pid, secret):
            return
        await self.link.publish_pg_cancel(pid, secret)

    async def _cancel_local(self, pid: int, secret: bytes) -> bool:
        entry = self._keys.get(pid)
        if entry is None or not hmac.compare_digest(entry[0], secret):
            return False
        await entry[1].cancel()
        return True

    async def cancel_from_peer(self, raw: bytes | str) -> None:
        """A cancel request another worker passed on (``Keys.pg_cancel_channel``): cancel
        when the key is one of ours, else ignore it. Never raises."""
        try:
            msg = json.loads(raw)
            if msg.get("worker_id") == self.link.worker_id:
                return  # our own, already looked up
            pid, secret = int(msg["process_id"]), bytes.fromhex(msg["secret"])
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("ignoring a malformed cancel message from another worker")
            return
        try:
            if await self._cancel_local(pid, secret):
                log.info("cancelled a statement for a cancel request another worker received")
        except Exception:
            log.exception("could not carry out a cancel request from another worker")

    # ------------------------------------------------------------------ catalogs

    def catalog(self, target: Target) -> Catalog:
        """The catalog connection of ``target`` (one per upstream configuration)."""
        assert target.postgres is not None
        key = catalog_key(target.postgres)
        c = self._catalogs.get(key)
        if c is None:
            c = self._catalogs[key] = Catalog(target.postgres, max_message=self.max_message)
        return c

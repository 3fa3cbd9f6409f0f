"""One agent connection on the PostgreSQL listener: startup, login, and the message relay.

Start-up (PostgreSQL docs, "Message Flow: Start-up"): the agent may ask for TLS
(``SSLRequest``: answered ``S`` when the listener has a certificate) and sends its
``StartupMessage`` with ``user`` = the agent's name and ``database`` = the target's slug.
Without TLS the connection is refused before any password is asked for, unless the
target allows plaintext. Gatehouse then asks for a cleartext password (the agent's
``gh_`` token or an OpenID Connect JWT, protected by TLS), identifies the agent, and
only then opens the upstream connection and logs in with the target's own credentials
(:mod:`.upstream`). The agent receives the server's ``ParameterStatus`` messages and a
``BackendKeyData`` of Gatehouse's own, which :mod:`.server` maps to the upstream key so
``CancelRequest`` works through the gateway.

The relay (:class:`Relay`) then forwards frontend messages one by one, deciding on each
statement before it can run:

* ``Query``: every statement of it is analysed (:mod:`.sql`) and evaluated; the worst
  outcome decides the whole message.
* ``Parse`` is analysed; ``Bind`` (statement + parameters) is evaluated; ``Execute``
  runs an allowed portal. A portal whose result shape was not described is described by
  an injected ``Describe`` whose answer is not relayed, so every ``DataRow`` is masked
  with its real column types and formats.
* ``FunctionCall`` (``F``) is resolved to the function's name and refused unless an
  access rule explicitly allows the kind ``FASTPATH``.
* Refused messages are replaced by a placeholder that fails at the server without any
  effect (a syntax error, or a ``Bind`` of a statement that does not exist), and the
  server's error is replaced by Gatehouse's (SQLSTATE 42501 naming the rule). So the
  server's transaction state is exactly what a refusal by the server itself would
  leave (a failed transaction block, skipped messages until ``Sync``).
* Statements held for approval stop the relay of this connection's later messages
  (others are unaffected); the agent's cancel request or disconnect ends the wait.

Backend messages are relayed in order: ``DataRow`` and ``COPY`` data masked
(:mod:`.rowmask`), notices, errors and notifications masked, everything recorded
(:mod:`.record`): one exchange per statement, one session per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import ssl
import struct
import time
import uuid
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from proxy_worker.contract import PREVIEW_LIMIT, ApprovalRequestMessage
from proxy_worker.link import ControlPlaneUnavailable, DeferredSlot
from proxy_worker.policy import (
    AccessDecision,
    Agent,
    Policy,
    SqlFacts,
    StatementRequest,
    Target,
    hash_token,
    statement_fingerprint,
)
from proxy_worker.postgres import protocol as pq
from proxy_worker.postgres import record as rec
from proxy_worker.postgres import sql as sqlmod
from proxy_worker.postgres.rowmask import CopyMasker, RowMasker, RowRefused
from proxy_worker.postgres.state import (
    BindExpect,
    CloseExpect,
    DescribeExpect,
    ExecuteExpect,
    Expect,
    FunctionCallExpect,
    ParseExpect,
    Portal,
    PreparedStatement,
    QueryExpect,
    RefusalExpect,
    StatementRecord,
    SyncExpect,
    is_boundary,
)
from proxy_worker.postgres.types import python_codec
from proxy_worker.postgres.upstream import (
    CoalescingWriter,
    MessageReader,
    UpstreamError,
    UpstreamSession,
    connect,
)

if TYPE_CHECKING:
    from proxy_worker.postgres.server import PostgresListener

log = logging.getLogger("gatehouse.postgres")

#: Seconds the agent has to complete the start-up and send its password.
STARTUP_TIMEOUT = 30.0
#: Largest password message accepted (bytes, length word included): a token or a JWT.
#: PostgreSQL's own limit for authentication data is 65535 (PG_MAX_AUTH_TOKEN_LENGTH).
AUTH_MAX_MESSAGE = 65536
#: Startup parameters passed on to the upstream (others are refused, see
#: :data:`ALLOWED_OPTIONS` for ``-c`` settings inside ``options``).
PASSED_PARAMETERS = frozenset(
    {
        "application_name",
        "client_encoding",
        "datestyle",
        "intervalstyle",
        "timezone",
        "extra_float_digits",
        "search_path",
        "options",
        "fallback_application_name",
    }
)
#: Settings an agent may give in the startup ``options`` (``-c name=value``); anything
#: else (``-c role=…``, ``session_authorization``, …) is refused: privileges change only
#: through statements, which access rules see.
ALLOWED_OPTIONS = frozenset(
    {
        "search_path",
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "application_name",
        "datestyle",
        "timezone",
        "intervalstyle",
        "extra_float_digits",
        "client_encoding",
        "default_transaction_isolation",
        "default_transaction_read_only",
        "work_mem",
        "jit",
    }
)
#: The statement sent in place of a refused simple query or function call: it fails
#: to parse, so nothing runs, and the server's error is replaced by Gatehouse's.
REFUSED_QUERY = "GATEHOUSE REFUSED"
#: Messages of the frontend protocol the relay accepts after start-up.
_Q, _P, _B, _D, _E, _S, _H, _C, _F, _X = (ord(c) for c in "QPBDESHCFX")
_COPY_DATA, _COPY_DONE, _COPY_FAIL = ord("d"), ord("c"), ord("f")


class Refused(Exception):
    """A statement Gatehouse refuses; ``sqlstate``, ``message``, ``detail``, ``hint`` go
    into the agent's ``ErrorResponse``; ``decision`` is what the exchange records."""

    def __init__(
        self,
        sqlstate: str,
        message: str,
        *,
        detail: str | None = None,
        hint: str | None = None,
        decision: str = "denied",
        rule_id: int | None = None,
        approval_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint
        self.decision = decision
        self.rule_id = rule_id
        self.approval_id = approval_id

    def frame(self) -> bytes:
        """The ``ErrorResponse`` the agent receives (approval ids travel in DETAIL)."""
        return pq.build_error(
            self.message, sqlstate=self.sqlstate, detail=self.detail, hint=self.hint
        )


class ClientGone(Exception):
    """The agent closed its connection (or broke the protocol) while we waited."""


class Relay:
    """One client connection: start-up, login, and the relay until either side closes."""

    def __init__(
        self,
        listener: PostgresListener,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.listener = listener
        self.link = listener.link
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("", 0)
        self.client_address: str = str(peer[0])
        self.connection_id = str(uuid.uuid4())
        self.tls = ""
        self.agent: Agent | None = None
        self.target: Target | None = None
        self.token_hash: str | None = None
        self.jwt_expires_at: float | None = None
        self.upstream: UpstreamSession | None = None
        self.encoding = "utf-8"
        self.client_params: dict[str, str] = {}
        self.server_params: dict[str, str] = {}
        self.backend_key: tuple[int, bytes] | None = None
        # Protocol state.
        self.statements: dict[str, PreparedStatement] = {}
        self.sql_prepared: dict[str, sqlmod.StatementAnalysis] = {}
        self.cursors: dict[str, sqlmod.StatementAnalysis] = {}
        self.portals: dict[str, Portal] = {}
        self.pending: deque[Expect] = deque()
        #: An extended-protocol error left the server discarding messages until the
        #: next Sync, and that Sync has not been forwarded yet.
        self._skipping_to_sync = False
        self.copy_in: StatementRecord | None = None
        self.copy_in_masker: CopyMasker | None = None
        self.transaction_status = "I"
        self.records_in_flight: list[asyncio.Task[None]] = []
        self.client_messages: MessageReader | None = None
        self.cancel_requested = asyncio.Event()
        self.holding = False
        self.closed = False
        #: Set by :meth:`shutdown`: why the gateway ended this session (recorded on a
        #: statement that was waiting for approval when it did).
        self.ended_by: Refused | None = None
        self._readahead: list[tuple[int, bytes]] = []
        self._client_eof = False
        self.terminated = False
        self._record_maskers: dict[int, tuple[Any, Any]] = {}
        #: Stop relaying at once (a result that cannot be masked was cut off).
        self.abort = False
        self._upstream_task: asyncio.Task[None] | None = None
        # Message relay bookkeeping (see state.Portal): segments end at Sync/Query/
        # FunctionCall; the namespace epoch also moves at Close; ``_answered`` is set
        # whenever the upstream loop has handled a batch of backend messages.
        self._segment = 0
        self._epoch = 0
        #: Sequence number of the frontend message being handled (from 1).
        self._seq = 0
        #: COPY FROM data sent before the server's CopyInResponse (asyncpg does so):
        #: ``(tag, payload)``, sampled once the COPY's columns are known.
        self._copy_early: list[tuple[int, bytes]] = []
        self._copy_early_bytes = 0
        self._answered = asyncio.Event()

    # ------------------------------------------------------------------ entry point

    async def run(self) -> None:
        """Serve the connection to its end; never raises (errors go to the agent)."""
        try:
            if not await self._startup():
                return
            await self._relay()
        except ClientGone:
            pass
        except pq.ProtocolViolation as e:
            await self._fatal(e.sqlstate, str(e))
        except (OSError, asyncio.IncompleteReadError, EOFError) as e:
            # The agent's socket failed (reset, or TLS broken: ssl.SSLError is an OSError).
            log.info("connection from %s ended: %s", self.client_address, type(e).__name__)
        except Exception as e:  # fail closed: close the connection, say why
            log.exception("postgres relay failed")
            await self._fatal(
                "XX000", f"Gatehouse could not relay this connection: {type(e).__name__}"
            )
        finally:
            await self._close()

    # ------------------------------------------------------------------ start-up

    async def _read_startup_packet(self) -> pq.StartupPacket:
        head = await self.reader.readexactly(4)
        try:
            length = pq.startup_length(head)
        except pq.ProtocolViolation as e:
            raise _not_a_startup_packet(head) or e from None
        body = await self.reader.readexactly(length - 4)
        return pq.parse_startup(head + body)

    async def _startup(self) -> bool:
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                return await self._startup_steps()
        except TimeoutError:
            await self._fatal("08006", "start-up not completed in time")
            return False

    async def _startup_steps(self) -> bool:
        negotiated_tls = negotiated_gss = False
        while True:
            packet = await self._read_startup_packet()
            if packet.kind == "cancel":
                await self.listener.cancel(packet.process_id, packet.secret_key)
                return False
            if packet.kind == "ssl":
                if negotiated_tls or self.tls:
                    raise pq.ProtocolViolation("SSLRequest received twice")
                negotiated_tls = True
                ctx = self.listener.tls_context
                if ctx is None:
                    self.writer.write(b"N")
                    await self.writer.drain()
                    continue
                if getattr(self.reader, "_buffer", b""):
                    # Bytes after the SSLRequest, before the handshake: a man-in-the-middle
                    # injection attempt (CVE-2021-23214); PostgreSQL refuses it too.
                    raise pq.ProtocolViolation("received unencrypted data after SSL request")
                self.writer.write(b"S")
                await self.writer.drain()
                if getattr(self.reader, "_buffer", b""):
                    # Arrived while "S" was sent: it would be read as if it came
                    # through TLS. No await between this check and the upgrade.
                    raise pq.ProtocolViolation("received unencrypted data after SSL request")
                try:
                    await self.writer.start_tls(ctx)
                except (ssl.SSLError, OSError) as e:
                    log.info("TLS handshake with %s failed: %s", self.client_address, e)
                    return False
                sslobj = self.writer.get_extra_info("ssl_object")
                self.tls = sslobj.version() if sslobj is not None else "TLS"
                continue
            if packet.kind == "gssenc":
                if negotiated_gss:
                    raise pq.ProtocolViolation("GSSENCRequest received twice")
                negotiated_gss = True
                self.writer.write(b"N")
                await self.writer.drain()
                continue
            break
        return await self._accept(packet)

    async def _accept(self, packet: pq.StartupPacket) -> bool:
        params = packet.params
        if packet.version >> 16 != 3:
            await self._fatal("0A000", f"unsupported frontend protocol {packet.version >> 16}")
            return False
        if params.get("replication", "false").lower() not in ("false", "off", "no", "0"):
            await self._fatal(
                "0A000", "replication connections are not supported through Gatehouse"
            )
            return False
        user = params.get("user", "")
        slug = params.get("database") or user
        if not user:
            await self._fatal("28000", "no user name given: connect as the agent's name")
            return False
        unsupported = [k for k in params if k.startswith("_pq_.")]
        others = [
            k
            for k in params
            if k not in ("user", "database", "replication")
            and not k.startswith("_pq_.")
            and not _startup_parameter_allowed(k)
        ]
        if others:
            await self._fatal(
                "42501", f"startup parameter {others[0]!r} is not allowed through Gatehouse"
            )
            return False
        options = params.get("options", "")
        if options:
            bad = _disallowed_options(options)
            if bad:
                await self._fatal(
                    "42501", f"startup option {bad!r} is not allowed through Gatehouse"
                )
                return False
        policy = self.link.state.policy
        if policy.version == 0:
            await self._fatal("57P03", "the gateway has no policy yet (control plane unreachable)")
            return False
        target = policy.resolve_target(slug, kind="postgres")
        if not self.tls and not (
            target is not None and target.postgres and target.postgres.allow_plaintext
        ):
            # Refused before the password is asked for, so a token never crosses the
            # network in the clear; the same answer whether the target exists or not.
            await self._fatal(
                "28000",
                "Gatehouse requires TLS for this connection",
                hint="connect with sslmode=require, or sslmode=verify-full with the "
                "Gatehouse CA certificate as sslrootcert",
            )
            return False
        if packet.version & 0xFFFF or unsupported:
            # We speak 3.0: tell a newer client so (PostgreSQL does the same).
            self.writer.write(pq.build_negotiate_protocol_version(0, unsupported))
        self.writer.write(pq.build_authentication(3))  # AuthenticationCleartextPassword
        await self.writer.drain()
        tag, payload, _raw = await self._read_client_message()
        if tag != ord("p"):
            raise pq.ProtocolViolation(f"expected a password message, got {chr(tag)!r}")
        try:
            credential = pq.parse_password(payload).decode("utf-8")
        except UnicodeDecodeError:
            credential = ""
        result = await self.listener.authenticator.authenticate(
            policy, [credential] if credential else [], self.client_address
        )
        if result.agent is None:
            if result.code == "rate_limited":
                await self._fatal(
                    "53300",
                    "too many failed authentications from this address; retry in "
                    f"{int(result.retry_after or 60) + 1} s",
                )
            elif result.code == "jwks_unavailable":
                await self._fatal("08004", result.message)
            else:
                await self._fatal(
                    "28P01", f"password authentication failed for agent {user!r}: {result.message}"
                )
            return False
        agent = result.agent
        if agent.name != user:
            await self._fatal("28000", f"the token belongs to agent {agent.name!r}, not {user!r}")
            return False
        if target is None:
            await self._fatal("3D000", f"no PostgreSQL target named {slug!r}")
            return False
        self.agent, self.target = agent, target
        if result.method == "token":
            self.token_hash = hash_token(credential)
        else:
            self.jwt_expires_at = _jwt_expiry(credential)
        passed = {k: v for k, v in params.items() if _startup_parameter_allowed(k)}
        self.client_params = dict(passed)
        assert target.postgres is not None
        try:
            self.upstream = await connect(
                target.postgres, passed, max_message=self.listener.max_message
            )
        except UpstreamError as e:
            log.info("upstream of %s unavailable: %s", target.slug, e.message)
            await self._fatal(e.sqlstate, e.message)
            self._record_connection_error(e)
            return False
        up = self.upstream
        # Frontend messages forwarded in one turn of the loop leave in one write.
        up.writer = CoalescingWriter(up.writer)  # type: ignore[assignment]
        self.server_params = dict(up.parameters)
        codec = python_codec(up.parameters.get("client_encoding", "UTF8"))
        if codec is None:
            await self._fatal(
                "22021",
                f"client_encoding {up.parameters.get('client_encoding')!r} is not supported "
                "through Gatehouse (use UTF8)",
            )
            return False
        self.encoding = codec
        out = [pq.build_authentication(0)]
        out += up.notices
        for name, value in up.parameters.items():
            out.append(pq.build_parameter_status(name, value))
        self.backend_key = self.listener.register(self)
        out.append(pq.build_backend_key_data(*self.backend_key))
        out.append(pq.build_ready_for_query(up.transaction_status))
        self.writer.write(b"".join(out))
        await self.writer.drain()
        log.info("agent %s connected to %s (%s)", agent.name, target.slug, self.tls or "no TLS")
        return True

    async def _read_client_message(self) -> tuple[int, bytes, bytes]:
        """One frontend message during the start-up (the password), under
        :data:`AUTH_MAX_MESSAGE`: nobody unauthenticated makes the worker buffer more."""
        if self.client_messages is None:
            self.client_messages = MessageReader(
                self.reader, min(AUTH_MAX_MESSAGE, self.listener.max_message), backend=False
            )
        return await self.client_messages.read()

    # ------------------------------------------------------------------ relay loops

    async def _relay(self) -> None:
        assert self.upstream is not None
        if self.client_messages is None:
            self.client_messages = MessageReader(
                self.reader, self.listener.max_message, backend=False
            )
        else:  # authenticated: from now on the listener's limit
            self.client_messages.set_max_message(self.listener.max_message)
        upstream_task = asyncio.create_task(
            self._upstream_loop(), name=f"gatehouse-pg-up-{self.connection_id[:8]}"
        )
        client_task = asyncio.create_task(
            self._client_loop(), name=f"gatehouse-pg-client-{self.connection_id[:8]}"
        )
        self._upstream_task = upstream_task
        done, _ = await asyncio.wait(
            {upstream_task, client_task}, return_when=asyncio.FIRST_COMPLETED
        )
        if client_task in done:
            exc = client_task.exception()
            if exc is None and not self._client_eof:
                # Terminate, or Gatehouse is closing the connection: what is pending
                # (a refusal, the last results) still reaches the agent first.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(upstream_task), 30)
            else:
                # The agent is gone or broke the protocol: stop what it started upstream.
                if self.pending:
                    await self._cancel_upstream()
                upstream_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await upstream_task
                if isinstance(exc, pq.ProtocolViolation):
                    await self._fatal(exc.sqlstate, str(exc))
                elif exc is not None and not isinstance(
                    # OSError: a reset, or a broken TLS record (ssl.SSLError).
                    exc,
                    ClientGone | OSError | EOFError | asyncio.IncompleteReadError,
                ):
                    raise exc
        else:
            client_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await client_task
            exc = upstream_task.exception()
            if isinstance(exc, OSError | EOFError | asyncio.IncompleteReadError):
                if self.writer.is_closing():
                    # The agent vanished while its results were being written: stop the
                    # statement upstream rather than let it run to its end.
                    if self.pending:
                        await self._cancel_upstream()
                else:
                    await self._upstream_gone(
                        f"the connection to the upstream database failed: {type(exc).__name__}"
                    )
            elif isinstance(exc, pq.ProtocolViolation):
                # The server's frames, not the agent's: say so (and cancel what runs).
                if self.pending:
                    await self._cancel_upstream()
                await self._upstream_gone(f"the upstream database broke the protocol: {exc}")
            elif exc is not None:
                raise exc

    async def _client_loop(self) -> None:
        assert self.client_messages is not None and self.upstream is not None
        up = self.upstream.writer
        while True:
            if self._readahead:
                batch, self._readahead = self._readahead, []
            elif self._client_eof:
                return
            else:
                batch = await self.client_messages.read_batch()
                if not batch:
                    self._client_eof = True
                    return
            for i, (tag, payload, raw) in enumerate(batch):
                if self.closed:
                    return
                keep_going = await self._client_message(tag, payload, raw)
                if self._readahead and i + 1 < len(batch):
                    # Messages read ahead during a hold came after the rest of this batch.
                    self._readahead = batch[i + 1 :] + self._readahead
                    break
                if not keep_going:
                    await up.drain()
                    return
            await up.drain()

    async def _client_message(self, tag: int, payload: bytes, raw: bytes) -> bool:
        """Handle one frontend message (``raw``: its whole frame); ``False`` after
        ``Terminate``."""
        assert self.upstream is not None
        up = self.upstream.writer
        self._seq += 1
        if tag == _Q:
            await self._on_query(payload, raw)
            self._segment += 1
            self._epoch += 1
        elif tag == _P:
            await self._on_parse(payload, raw)
        elif tag == _B:
            await self._on_bind(payload, raw)
        elif tag == _D:
            kind, name = pq.parse_describe(payload, self.encoding)
            target = self.statements.get(name) if kind == "S" else self.portals.get(name)
            self._expect(DescribeExpect(kind, target, epoch=self._epoch))
            up.write(raw)
        elif tag == _E:
            await self._on_execute(payload, raw)
        elif tag == _S:
            self._expect(SyncExpect(segment=self._segment))
            up.write(pq.build_sync())
            self._segment += 1
            self._epoch += 1
        elif tag == _H:
            up.write(pq.build_flush())
        elif tag == _C:
            kind, name = pq.parse_close(payload, self.encoding)
            self._expect(CloseExpect(kind, name, seq=self._seq))
            up.write(raw)
            self._epoch += 1
        elif tag == _F:
            await self._on_function_call(payload, raw)
            self._segment += 1
            self._epoch += 1
        elif tag in (_COPY_DATA, _COPY_DONE, _COPY_FAIL):
            self._on_copy_in(tag, payload, raw)
        elif tag == _X:
            self.terminated = True
            up.write(pq.build_terminate())
            return False
        else:
            raise pq.ProtocolViolation(f"unexpected message type {chr(tag)!r}")
        return True

    async def _settle(self) -> None:
        """Wait until the server has answered every earlier segment.

        What a named prepared statement, portal or cursor stands for is known once the
        messages that create, replace or drop it are answered. Within one segment the
        relay's optimistic view is exact (an error makes the server skip the rest of the
        segment), but a message of a later segment meets the server's state whatever the
        earlier outcome was; so a message that depends on that state waits here for those
        answers (clients that wait for each result never do). The agent's later messages
        are read ahead meanwhile, so a disconnect is noticed (:class:`ClientGone`).
        """
        if not any(is_boundary(e) for e in self.pending):
            return
        assert self.upstream is not None
        await self.upstream.writer.drain()
        watch = asyncio.ensure_future(self._read_ahead_until_gone())
        try:
            while not self.closed and any(is_boundary(e) for e in self.pending):
                self._answered.clear()
                answered = asyncio.ensure_future(self._answered.wait())
                done, _ = await asyncio.wait({answered, watch}, return_when=asyncio.FIRST_COMPLETED)
                if watch in done:
                    answered.cancel()
                    raise ClientGone()
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch

    # ------------------------------------------------------------------ frontend messages

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError as e:
            raise pq.ProtocolViolation(
                f"invalid byte sequence for encoding {self.encoding}", sqlstate="22021"
            ) from e

    async def _on_query(self, payload: bytes, raw: bytes) -> None:
        assert self.upstream is not None
        text = pq.parse_query(payload, self.encoding)
        if _refers_to_state(text):
            await self._settle()
        try:
            analyses = sqlmod.analyze(text, prepared=self._prepared_view(), cursors=self.cursors)
        except sqlmod.SqlAnalysisError as e:
            record = StatementRecord(None, text, "UTILITY", extended=False)
            self._refuse_simple(_unparseable(e), record)
            return
        records = [
            StatementRecord(a, a.sql, a.facts.kind, extended=False, statement_index=i)
            for i, a in enumerate(analyses)
        ]
        try:
            outcome = await self._decide(analyses, (), records)
        except Refused as r:
            rec0 = _first_record_for(records, r)
            self._refuse_simple(r, rec0)
            return
        for r in records:
            r.started_at, r.started_perf = time.time(), time.perf_counter()
            if outcome is not None:
                r.decision, r.approval_id, r.grant_id = outcome
        self._expect(QueryExpect(records, segment=self._segment, seq=self._seq))
        self.upstream.writer.write(raw)

    def _refuse_simple(self, refusal: Refused, record: StatementRecord) -> None:
        assert self.upstream is not None
        self._apply_refusal(record, refusal)
        self._expect(
            RefusalExpect(refusal.frame(), simple=True, record=record, segment=self._segment)
        )
        self.upstream.writer.write(pq.build_query(REFUSED_QUERY))

    def _apply_refusal(self, record: StatementRecord, refusal: Refused) -> None:
        record.decision = refusal.decision
        record.rule_id = refusal.rule_id
        record.approval_id = refusal.approval_id
        record.status = 403
        record.sqlstate = refusal.sqlstate
        record.error = refusal.message

    def _prepared_view(self) -> dict[str, sqlmod.StatementAnalysis]:
        """Prepared statements by name as SQL ``EXECUTE`` sees them (SQL ``PREPARE`` and
        protocol-level named statements share one namespace)."""
        view = dict(self.sql_prepared)
        for name, st in self.statements.items():
            if name and not st.refused and len(st.analyses) == 1:
                view[name] = st.analyses[0]
        return view

    async def _on_parse(self, payload: bytes, raw: bytes) -> None:
        assert self.upstream is not None
        name, text, oids = pq.parse_parse(payload, self.encoding)
        if _refers_to_state(text):
            await self._settle()
        try:
            analyses = sqlmod.analyze(text, prepared=self._prepared_view(), cursors=self.cursors)
        except sqlmod.SqlAnalysisError as e:
            st = PreparedStatement(name, text, [], tuple(oids), refused=True, seq=self._seq)
            self.statements[name] = st
            record = StatementRecord(None, text, "UTILITY", extended=True)
            refusal = _unparseable(e)
            self._apply_refusal(record, refusal)
            self._expect(RefusalExpect(refusal.frame(), record=record))
            self.upstream.writer.write(pq.build_parse(name, REFUSED_QUERY, ()))
            return
        st = PreparedStatement(
            name, text, analyses, tuple(oids), segment=self._segment, seq=self._seq
        )
        previous = self.statements.get(name)
        self.statements[name] = st
        self._expect(ParseExpect(st, previous))
        self.upstream.writer.write(raw)

    async def _on_bind(self, payload: bytes, raw: bytes) -> None:
        assert self.upstream is not None
        bind = pq.parse_bind(payload, self.encoding)
        st = self.statements.get(bind.statement)
        if st is None or st.segment != self._segment:
            # Not parsed in this segment: what the name stands for at the server may
            # still change with an earlier segment's answer.
            await self._settle()
            st = self.statements.get(bind.statement)
        if st is None and bind.statement in self.sql_prepared:
            a = self.sql_prepared[bind.statement]
            st = PreparedStatement(bind.statement, a.sql, [a])
        params = self._parameters_text(bind, st)
        if st is None or st.refused:
            # Unknown to Gatehouse: the server would not know it either, unless it was
            # prepared where Gatehouse cannot see (dynamic SQL): fail closed.
            record = StatementRecord(None, "", "UTILITY", extended=True, parameters=params)
            refusal = (
                Refused("26000", f"prepared statement {bind.statement!r} does not exist")
                if st is None
                else Refused("26000", f"prepared statement {bind.statement!r} was refused")
            )
            self._refuse_bind(bind, refusal, record, st)
            return
        analysis = st.analyses[0] if st.analyses else None
        record = StatementRecord(
            analysis,
            st.sql,
            analysis.facts.kind if analysis else "UTILITY",
            extended=True,
            parameters=params,
        )
        portal = Portal(
            bind.portal,
            st,
            analysis,
            params,
            tuple(bind.result_formats),
            segment=self._segment,
            seq=self._seq,
        )
        try:
            outcome = await self._decide(st.analyses, params, [record])
        except Refused as r:
            self._refuse_bind(bind, r, record, st)
            return
        if outcome is not None:
            record.decision, record.approval_id, record.grant_id = outcome
        portal.record = record
        previous = self.portals.get(bind.portal)
        self.portals[bind.portal] = portal
        self._expect(BindExpect(portal, previous))
        self.upstream.writer.write(raw)

    def _refuse_bind(
        self, bind: Any, refusal: Refused, record: StatementRecord, st: PreparedStatement | None
    ) -> None:
        assert self.upstream is not None
        self._apply_refusal(record, refusal)
        portal = Portal(
            bind.portal,
            st,
            record.analysis,
            record.parameters,
            (),
            refused=True,
            segment=self._segment,
            seq=self._seq,
        )
        portal.record = record
        restore = (bind.portal, self.portals.get(bind.portal))
        self.portals[bind.portal] = portal
        self._expect(RefusalExpect(refusal.frame(), record=record, restore=restore))
        missing = f"gatehouse_refused_{secrets.token_hex(8)}"
        self.upstream.writer.write(pq.build_bind(bind.portal, missing, (), (), ()))

    def _parameters_text(self, bind: Any, st: PreparedStatement | None) -> tuple[str | None, ...]:
        """Bound values as text for rules and records (binary ones decoded when the
        parameter type is known and decodable, else shown as ``\\x`` hex)."""
        from proxy_worker.postgres.types import decode_binary

        formats = bind.param_formats
        out: list[str | None] = []
        oids = st.param_oids if st is not None else ()
        for i, value in enumerate(bind.params):
            if value is None:
                out.append(None)
                continue
            fmt = formats[0] if len(formats) == 1 else (formats[i] if i < len(formats) else 0)
            if fmt == 0:
                out.append(value.decode(self.encoding, errors="replace"))
                continue
            oid = oids[i] if i < len(oids) else 0
            text = None
            if oid:
                with contextlib.suppress(Exception):
                    text = decode_binary(oid, bytes(value), self.encoding)
            out.append(text if text is not None else "\\x" + bytes(value).hex())
        return tuple(out)

    async def _on_execute(self, payload: bytes, raw: bytes) -> None:
        assert self.upstream is not None
        name, _max_rows = pq.parse_execute(payload, self.encoding)
        portal = self.portals.get(name)
        if portal is None or portal.segment != self._segment:
            # Bound in an earlier segment (or unknown): wait for its answers, so that
            # the portal the relay knows is the one the server will run.
            await self._settle()
            portal = self.portals.get(name)
        if portal is None:
            self._refuse_execute(name)
            return
        up = self.upstream.writer
        if not portal.refused and (
            portal.described_epoch != self._epoch or (portal.fields is None and not portal.no_data)
        ):
            # Learn the result's columns, types and formats before any row arrives (again
            # after anything that could have replaced the portal at the server).
            self._expect(DescribeExpect("P", portal, internal=True, epoch=self._epoch))
            up.write(pq.build_describe("P", name))
        if portal.record is not None and not portal.refused:
            r = portal.record
            if not r.portal_suspended:
                r.started_at, r.started_perf = time.time(), time.perf_counter()
        self._expect(ExecuteExpect(portal, seq=self._seq))
        up.write(raw)

    def _refuse_execute(self, name: str) -> None:
        """``Execute`` of a portal this connection did not bind through the protocol: a
        cursor declared in SQL (or opened by a function) runs only through ``FETCH``,
        which access rules see; the placeholder names a portal that does not exist."""
        assert self.upstream is not None
        if name in self.cursors:
            refusal = Refused(
                "0A000",
                f"Gatehouse runs the cursor {name!r} only through FETCH, not the Execute message",
            )
        else:
            refusal = Refused("34000", f'portal "{name}" does not exist')
        record = StatementRecord(None, f"-- execute portal {name}", "CURSOR", extended=True)
        self._apply_refusal(record, refusal)
        self._expect(RefusalExpect(refusal.frame(), record=record))
        missing = f"gatehouse_refused_{secrets.token_hex(8)}"
        self.upstream.writer.write(pq.build_execute(missing))

    async def _on_function_call(self, payload: bytes, raw: bytes) -> None:
        assert self.upstream is not None and self.target is not None
        call = pq.parse_function_call(payload)
        catalog = self.listener.catalog(self.target)
        try:
            name = await catalog.function_name(call.oid)
        except UpstreamError as e:
            name = None
            log.info("function name lookup failed: %s", e.message)
        record = StatementRecord(
            None, f"-- function call: {name or call.oid}", "FASTPATH", extended=False
        )
        if name is None:
            self._refuse_simple(
                Refused(
                    "42501",
                    f"function call {call.oid} refused: the function cannot be identified",
                ),
                record,
            )
            return
        facts = SqlFacts(
            kind="FASTPATH", kinds=frozenset({"FASTPATH"}), functions=frozenset({name})
        )
        args = tuple(None if a is None else ("\\x" + bytes(a).hex()) for a in call.args)
        record.parameters = args
        try:
            outcome = await self._decide_facts([(facts, record.sql)], args, [record], fastpath=True)
        except Refused as r:
            self._refuse_simple(r, record)
            return
        if outcome is not None:
            record.decision, record.approval_id, record.grant_id = outcome
        record.started_at, record.started_perf = time.time(), time.perf_counter()
        self._expect(FunctionCallExpect(record, segment=self._segment))
        self.upstream.writer.write(raw)

    def _on_copy_in(self, tag: int, payload: bytes, raw: bytes) -> None:
        assert self.upstream is not None
        if self.copy_in_masker is None:
            # Before the CopyInResponse (the server buffers it): kept for the sample, up
            # to EARLY_COPY_SAMPLE bytes (then a marker: sampling stops there).
            if tag != _COPY_DATA or self._copy_early_bytes < EARLY_COPY_SAMPLE:
                self._copy_early.append((tag, bytes(payload)))
                self._copy_early_bytes += len(payload)
            elif self._copy_early[-1][0] != -1:
                self._copy_early.append((-1, b""))
            self.upstream.writer.write(raw)
            return
        if tag == _COPY_DATA and self.copy_in_masker is not None:
            with contextlib.suppress(Exception):
                self.copy_in_masker.sample_in(payload)
        elif tag != _COPY_DATA:
            if tag == _COPY_DONE and self.copy_in_masker is not None:
                with contextlib.suppress(Exception):
                    self.copy_in_masker.finish_in()
            self.copy_in = self.copy_in_masker = None
        self.upstream.writer.write(raw)

    # ------------------------------------------------------------------ decisions

    def _current_policy(self) -> tuple[Policy, Agent, Target]:
        """The newest policy, and this connection's agent and target in it.

        Raises :class:`Refused` (and the connection is closed afterwards) when the
        agent's token was revoked, its JWT expired, or the target was removed.
        """
        assert self.agent is not None and self.target is not None
        policy = self.link.state.policy
        if self.token_hash is not None:
            agent = policy.agents_by_token_hash.get(self.token_hash)
        else:
            agent = policy.agents_by_id.get(self.agent.id)
            if self.jwt_expires_at is not None and time.time() > self.jwt_expires_at:
                agent = None
        if agent is None or agent.id != self.agent.id:
            self.closed = True
            raise _SessionRefused(
                "28000", "the agent's token is no longer valid (revoked or expired)"
            )
        target = policy.targets_by_id.get(self.target.id)
        if target is None or target.kind != "postgres":
            self.closed = True
            raise _SessionRefused("3D000", f"the target {self.target.slug!r} no longer exists")
        return policy, agent, target

    async def _decide(
        self,
        analyses: list[sqlmod.StatementAnalysis],
        params: tuple[str | None, ...],
        records: list[StatementRecord],
    ) -> tuple[str, str | None, int | None] | None:
        return await self._decide_facts([(a.facts, a.sql) for a in analyses], params, records)

    async def _decide_facts(
        self,
        statements: list[tuple[SqlFacts, str]],
        params: tuple[str | None, ...],
        records: list[StatementRecord],
        *,
        fastpath: bool = False,
    ) -> tuple[str, str | None, int | None] | None:
        """Evaluate the access rules for every statement of one message.

        Returns ``None`` (allowed), or ``(decision, approval id, grant id)`` for a
        statement let through by an approval or a grant. Raises :class:`Refused`.
        The worst outcome decides: any deny refuses the whole message; otherwise any
        statement needing approval holds it.
        """
        policy, agent, target = self._current_policy()
        held: tuple[int, AccessDecision, StatementRequest] | None = None
        for i, (facts, text) in enumerate(statements):
            req = StatementRequest(
                agent_id=agent.id,
                target_id=target.id,
                facts=facts,
                sql=text,
                parameters=params,
                agent_group_ids=agent.group_ids,
            )
            decision = policy.evaluate_statement(req)
            rec_i = records[i] if i < len(records) else records[-1]
            rec_i.rule_id = decision.rule_id
            if (
                fastpath
                and decision.action != "deny"
                and (decision.rule is None or "FASTPATH" not in decision.rule.statement_kinds)
            ):
                # Only a rule naming the kind FASTPATH lets a function call through (or
                # asks for approval): not the default action, nor a rule for anything.
                raise Refused(
                    "42501",
                    "the function-call protocol is refused unless an access rule allows the "
                    "statement kind FASTPATH",
                    detail=f"function {next(iter(facts.functions), '?')}",
                )
            if decision.action == "deny":
                rule = decision.rule
                raise Refused(
                    "42501",
                    f"denied by access rule {rule.name!r}"
                    if rule
                    else "denied by the target's default action",
                    detail=(rule.reason or None) if rule else None,
                    rule_id=rule.id if rule else None,
                )
            if decision.action == "approve" and held is None:
                held = (i, decision, req)
        if held is None:
            return None
        i, decision, req = held
        if decision.grant is not None:
            return ("approved", decision.grant.approval_id, decision.grant.id)
        fp = statement_fingerprint(
            agent_id=req.agent_id,
            target_id=req.target_id,
            sql="\x00".join(t for _f, t in statements),
            parameters=params,
        )
        decision = replace(decision, fingerprint=fp)
        if decision.approval_mode == "defer":
            approval_id = await self._defer(decision, statements, params, i)
        else:
            approval_id = await self._hold(decision, statements, params, i, records)
            # The wait can be long: a token revoked (or a target removed) meanwhile
            # ends the connection rather than run the approved statement.
            self._current_policy()
        return ("approved", approval_id, None)

    def _approval_message(
        self,
        approval_id: str,
        decision: AccessDecision,
        statements: list[tuple[SqlFacts, str]],
        params: tuple[str | None, ...],
        index: int,
        mode: str,
        now: float,
    ) -> ApprovalRequestMessage:
        assert self.agent is not None and self.target is not None
        facts = statements[index][0]
        text = ";\n\n".join(sqlmod.format_sql(t) for _f, t in statements)
        masked_sql = rec.mask_for_record(self, text, "request")
        masked_params = [
            None if p is None else rec.mask_for_record(self, p, "request") for p in params
        ]
        rule = decision.rule
        return ApprovalRequestMessage(
            approval_id=approval_id,
            worker_id=self.link.worker_id,
            agent_id=self.agent.id,
            target_id=self.target.id,
            rule_id=rule.id if rule else None,
            method=facts.kind,
            url=rec.upstream_url(self.target),
            headers=rec.connection_facts(self),
            body=masked_sql[:PREVIEW_LIMIT],
            body_truncated=len(masked_sql) > PREVIEW_LIMIT,
            requested_at=now,
            deadline=now + decision.timeout,
            reason=rule.reason if rule else "",
            mode=mode,  # type: ignore[arg-type]
            required_approvals=decision.required_approvals,
            retry_window=decision.retry_window if mode == "defer" else 0.0,
            protocol="postgres",
            details={
                "statement_kind": facts.kind,
                "statement_kinds": sorted({k for f, _t in statements for k in f.kinds}),
                "tables": sorted({r for f, _t in statements for r in f.relations}),
                "functions": sorted({fn for f, _t in statements for fn in f.functions}),
                "parameters": masked_params,
                "sql_fingerprint": decision.fingerprint,
                "statement_count": len(statements),
            },
        )

    async def _hold(
        self,
        decision: AccessDecision,
        statements: list[tuple[SqlFacts, str]],
        params: tuple[str | None, ...],
        index: int,
        records: list[StatementRecord],
    ) -> str:
        approval_id = str(uuid.uuid4())
        msg = self._approval_message(
            approval_id, decision, statements, params, index, "wait", time.time()
        )
        t0 = time.perf_counter()
        self.holding = True
        self.cancel_requested.clear()
        hold = asyncio.ensure_future(self.link.hold(msg))
        watch = asyncio.ensure_future(self._read_ahead_until_gone())
        cancel = asyncio.ensure_future(self.cancel_requested.wait())
        try:
            done, _ = await asyncio.wait({hold, watch, cancel}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.holding = False
            for t in (watch, cancel):
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
            wait_ms = round((time.perf_counter() - t0) * 1000, 3)
            for r in records:
                r.approval_wait_ms = wait_ms
        if hold not in done:
            hold.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await hold
            if self.ended_by is not None:
                # The gateway ended the session (token revoked, target removed, worker
                # stopping) while the statement waited: nothing ran; record why.
                for r in records:
                    self._apply_refusal(r, self.ended_by)
                    if self.ended_by.decision == "error":
                        r.status = 503
                    r.approval_id, r.rule_id = approval_id, decision.rule_id
                    self._finish(r)
                raise ClientGone()
            if watch in done and not watch.cancelled() and watch.exception() is not None:
                raise watch.exception()  # the agent broke the protocol while it waited
            if self._client_eof:
                # Nothing ran, but the statement was asked for: keep it in the record.
                for r in records:
                    r.status, r.sqlstate, r.decision = 499, "57014", "expired"
                    r.error = "the agent disconnected while the statement waited for approval"
                    r.approval_id, r.rule_id = approval_id, decision.rule_id
                    self._finish(r)
                raise ClientGone()
            raise Refused(
                "57014",
                "canceling statement due to user request (it was waiting for approval)",
                detail=f"approval id {approval_id}",
                decision="expired",
                approval_id=approval_id,
                rule_id=decision.rule_id,
            )
        try:
            verdict = hold.result()
        except ControlPlaneUnavailable as e:
            raise Refused(
                "57P03",
                f"this statement needs approval and {e}; refused (fail closed)",
                decision="error",
                approval_id=approval_id,
                rule_id=decision.rule_id,
            ) from e
        if verdict is None:
            raise Refused(
                "42501",
                f"approval expired: no decision within {decision.timeout:g} s",
                detail=f"approval id {approval_id}",
                decision="expired",
                approval_id=approval_id,
                rule_id=decision.rule_id,
            )
        if verdict.verdict != "approved":
            raise _verdict_refusal(verdict, approval_id, decision.rule_id)
        return approval_id

    async def _read_ahead_until_gone(self) -> None:
        """While a statement is held: keep reading the agent's later messages (kept for
        after the decision) so a disconnect is noticed; returns when the agent is gone."""
        assert self.client_messages is not None
        while True:
            batch = await self.client_messages.read_batch()
            if not batch:
                self._client_eof = True
                return
            self._readahead.extend(batch)
            if sum(len(m[2]) for m in self._readahead) > 8 * 1024 * 1024:
                # Bounded memory: stop reading (TCP pushes back) until the decision.
                await asyncio.Event().wait()

    async def _defer(
        self,
        decision: AccessDecision,
        statements: list[tuple[SqlFacts, str]],
        params: tuple[str | None, ...],
        index: int,
    ) -> str:
        """Defer mode: fail at once naming the approval; the identical statement retried
        after the approval passes once (the HTTP approval gate's protocol, same keys)."""
        assert self.agent is not None
        link, agent_id, fp = self.link, self.agent.id, decision.fingerprint
        try:
            slot = await link.deferred_lookup(agent_id, fp)
            now = time.time()
            if slot is not None:
                verdict = slot.decision
                if verdict is None and now < slot.deadline:
                    raise self._pending(slot, decision, now)
                if verdict is not None and verdict.verdict == "approved":
                    code = await link.redeem_deferred(agent_id, fp, slot, decision.retry_window)
                    if code == 1:
                        return slot.approval_id
                    await link.release_deferred(agent_id, fp, slot)
                else:
                    await link.release_deferred(agent_id, fp, slot)
                    if verdict is None:
                        raise Refused(
                            "42501",
                            f"approval expired: no decision within {decision.timeout:g} s",
                            detail=f"approval id {slot.approval_id}",
                            decision="expired",
                            approval_id=slot.approval_id,
                            rule_id=decision.rule_id,
                        )
                    raise _verdict_refusal(verdict, slot.approval_id, decision.rule_id)
            fresh = DeferredSlot(str(uuid.uuid4()), now + decision.timeout)
            ttl = decision.timeout + decision.retry_window + 60
            slot = await link.claim_deferred(agent_id, fp, fresh, ttl)
            if slot.approval_id == fresh.approval_id:
                try:
                    await link.submit_approval(
                        self._approval_message(
                            fresh.approval_id, decision, statements, params, index, "defer", now
                        )
                    )
                except ControlPlaneUnavailable:
                    await link.release_deferred(agent_id, fp, fresh)
                    raise
            raise self._pending(slot, decision, now)
        except ControlPlaneUnavailable as e:
            raise Refused(
                "57P03",
                f"this statement needs approval and {e}; refused (fail closed)",
                decision="error",
                rule_id=decision.rule_id,
            ) from e

    def _pending(self, slot: DeferredSlot, decision: AccessDecision, now: float) -> Refused:
        site = self.link.state.policy.site_url
        url = f"{site}/approvals/{slot.approval_id}/" if site else None
        n = decision.required_approvals
        return Refused(
            "42501",
            f"approval pending: this statement needs approval by {n} approver"
            f"{'s' if n != 1 else ''}; retry the identical statement once it is approved",
            detail=f"approval id {slot.approval_id}; it passes once within "
            f"{decision.retry_window:g} s of the approval",
            hint=f"approve at {url}" if url else None,
            decision="denied",
            approval_id=slot.approval_id,
            rule_id=decision.rule_id,
        )

    # ------------------------------------------------------------------ backend messages

    async def _upstream_loop(self) -> None:
        assert self.upstream is not None
        messages = self.upstream.messages
        out: list[bytes] = []
        while True:
            batch = await messages.read_batch()
            if not batch:
                if not self.terminated:
                    await self._upstream_gone("the upstream database closed the connection")
                self._answered.set()
                return
            i, n = 0, len(batch)
            while i < n:
                tag, payload, raw = batch[i]
                if tag == 68:  # 'D' DataRow: take the whole run of rows at once
                    j = i + 1
                    while j < n and batch[j][0] == 68:
                        j += 1
                    out.extend(await self._data_rows(batch[i:j]))
                    i = j
                    continue
                frame = await self._backend_message(tag, payload, raw)
                if frame is not None:
                    if frame is _FLUSH_THEN_Z:
                        # ReadyForQuery: the cycle's exchanges are stored before the agent
                        # may go on (nothing answered is unrecorded). What precedes it in
                        # this batch waits too (one Redis round trip), so the answer
                        # leaves in one write (one TLS record, one send).
                        if self.records_in_flight:
                            if sum(map(len, out)) > 64 * 1024:
                                self.writer.write(b"".join(out))
                                out = []
                            await self._records_stored()
                        frame = raw
                    out.append(frame)
                i += 1
                if self.abort:
                    break
            if out:
                self.writer.write(b"".join(out))
                out = []
            self._answered.set()
            await self.writer.drain()
            if self.abort or (self.closed and not self.pending):
                return

    async def _records_stored(self) -> None:
        tasks, self.records_in_flight = self.records_in_flight, []
        pending = [t for t in tasks if not t.done()]
        if pending:
            with contextlib.suppress(Exception):
                await asyncio.gather(*pending, return_exceptions=True)

    def _head(self) -> Expect | None:
        return self.pending[0] if self.pending else None

    async def _backend_message(self, tag: int, payload: bytes, raw: bytes) -> Any:
        """Process one backend message; returns the frame to relay, or ``None``."""
        head = self._head()
        if tag == 67:  # 'C' CommandComplete
            tagtext = pq.parse_command_complete(payload)
            if isinstance(head, QueryExpect):
                r = head.current
                if r is not None:
                    self._statement_done(r, tagtext)
                    self._after_statement(r, head.seq)
                head.index += 1
            elif isinstance(head, ExecuteExpect):
                self.pending.popleft()
                r = head.portal.record
                if r is not None:
                    self._statement_done(r, tagtext)
                    self._after_statement(r, head.seq)
            elif isinstance(head, FunctionCallExpect):
                pass
            return raw
        if tag == 90:  # 'Z' ReadyForQuery
            self.transaction_status = pq.parse_ready_for_query(payload)
            segment = self._segment
            if isinstance(head, (QueryExpect, SyncExpect, FunctionCallExpect, RefusalExpect)):
                self.pending.popleft()
                segment = head.segment
                if isinstance(head, FunctionCallExpect):
                    self._finish(head.record)
            if self.transaction_status == "I":
                self._transaction_ended(segment)
            if not self.pending:
                self._copy_early, self._copy_early_bytes = [], 0  # CopyData out of place
            return _FLUSH_THEN_Z
        if tag == 69:  # 'E' ErrorResponse
            return self._on_error(head, payload, raw)
        if tag == 84:  # 'T' RowDescription
            fields = pq.parse_row_description(payload, self.encoding)
            if isinstance(head, DescribeExpect):
                self.pending.popleft()
                if isinstance(head.target, PreparedStatement):
                    head.target.fields = fields
                elif isinstance(head.target, Portal):
                    self._described(head.target, fields, head.epoch)
                if head.internal:
                    return None
            elif isinstance(head, QueryExpect) and head.current is not None:
                r = head.current
                try:
                    r.row_masker = await self._row_masker(fields, r.analysis)
                except RowRefused as e:
                    return await self._refuse_rows(r, e)
            return raw
        if tag == 110:  # 'n' NoData
            if isinstance(head, DescribeExpect):
                self.pending.popleft()
                if isinstance(head.target, Portal):
                    self._described(head.target, None, head.epoch)
                if head.internal:
                    return None
            return raw
        if tag == 116:  # 't' ParameterDescription
            if isinstance(head, DescribeExpect) and isinstance(head.target, PreparedStatement):
                head.target.param_oids = _parameter_oids(payload)
            return raw
        if tag == 49:  # '1' ParseComplete
            if isinstance(head, ParseExpect):
                self.pending.popleft()
                if head.statement.name:
                    self.sql_prepared.pop(head.statement.name, None)
            return raw
        if tag == 50:  # '2' BindComplete
            if isinstance(head, BindExpect):
                self.pending.popleft()
            return raw
        if tag == 51:  # '3' CloseComplete
            if isinstance(head, CloseExpect):
                self.pending.popleft()
                # One namespace each: protocol statements and SQL PREPARE, protocol
                # portals and SQL cursors.
                if head.kind == "S":
                    self._drop_statement(head.name, head.seq)
                    self.sql_prepared.pop(head.name, None)
                else:
                    self._drop_portal(head.name, head.seq)
                    self.cursors.pop(head.name, None)
            return raw
        if tag == 73:  # 'I' EmptyQueryResponse
            if isinstance(head, QueryExpect):
                r = head.current
                if r is not None:
                    r.command_tag = ""
                    r.finished = True  # nothing ran: not recorded
                head.index += 1
            elif isinstance(head, ExecuteExpect):
                self.pending.popleft()
            return raw
        if tag == 115:  # 's' PortalSuspended
            if isinstance(head, ExecuteExpect):
                self.pending.popleft()
                if head.portal.record is not None:
                    head.portal.record.portal_suspended = True
            return raw
        if tag == 78:  # 'N' NoticeResponse
            masked = self._mask_error_fields(payload)
            return raw if masked is payload else pq.frame(b"N", masked)
        if tag == 65:  # 'A' NotificationResponse
            return self._mask_notification(payload, raw)
        if tag == 83:  # 'S' ParameterStatus
            name, value = pq.parse_parameter_status(payload)
            self.server_params[name] = value
            if name == "client_encoding":
                codec = python_codec(value)
                if codec is None:
                    self.closed = True
                    return pq.build_error(
                        f"client_encoding {value!r} is not supported through Gatehouse (use "
                        "UTF8); closing the connection",
                        sqlstate="22021",
                        severity="FATAL",
                    )
                self.encoding = codec
            return raw
        if tag in (71, 72):  # 'G' CopyInResponse, 'H' CopyOutResponse
            r = self._current_record(head)
            overall, formats = pq.parse_copy_response(payload)
            if r is None:
                if tag == 71:
                    return raw  # nothing leaves the database through COPY FROM
                return await self._unexpected_result("COPY data")
            try:
                await self._start_copy(r, tag == 71, overall, formats)
            except RowRefused as e:
                if tag == 71:  # only the record's sample is lost
                    log.info("COPY FROM data not sampled: %s", e.message)
                    return raw
                return await self._refuse_rows(r, e)
            return raw
        if tag == 100:  # 'd' CopyData (COPY TO)
            r = self._current_record(head)
            if r is None or r.copy_masker is None:
                # Fail closed: data Gatehouse cannot attribute to a statement.
                return await self._unexpected_result("COPY data")
            try:
                masked = r.copy_masker.mask_chunk(payload)
            except RowRefused as e:
                return await self._refuse_rows(r, e)
            if masked != payload:
                return pq.frame(b"d", masked)
            return raw
        if tag == 99:  # 'c' CopyDone
            r = self._current_record(head)
            if (
                r is not None
                and r.copy_masker is not None
                and r.copy is not None
                and r.copy.get("direction") == "out"
            ):
                try:
                    rest = r.copy_masker.finish()
                except RowRefused as e:
                    return await self._refuse_rows(r, e)
                if rest:
                    return pq.frame(b"d", rest) + raw
            return raw
        if tag == 86:  # 'V' FunctionCallResponse
            masked = self._mask_function_result(payload)
            return raw if masked is payload else pq.frame(b"V", masked)
        if tag == 87:  # 'W' CopyBothResponse (replication only, which we refuse)
            raise pq.ProtocolViolation("unexpected CopyBothResponse from the upstream")
        return raw

    def _current_record(self, head: Expect | None) -> StatementRecord | None:
        if isinstance(head, QueryExpect):
            return head.current
        if isinstance(head, ExecuteExpect):
            return head.portal.record
        return None

    def _on_error(self, head: Expect | None, payload: bytes, raw: bytes) -> bytes:
        fields = pq.parse_error_fields(payload, self.encoding, errors="replace")
        if isinstance(head, RefusalExpect):
            if head.simple:
                # The Z that follows is consumed by this expectation too.
                if head.record is not None:
                    self._finish(head.record)
                    head.record = None
            else:
                self.pending.popleft()
                if head.record is not None:
                    self._finish(head.record)
                self._undo(head)
                self._skip_to_sync()
            return head.error
        masked = self._mask_error_fields(payload)
        if isinstance(head, QueryExpect):
            r = head.current
            if r is not None:
                r.status, r.sqlstate = 400, fields.get("C", "")
                r.error = self._masked_text(fields.get("M", ""))
                self._finish(r)
            head.index = len(head.records)  # the rest of the query does not run
        elif isinstance(head, FunctionCallExpect):
            head.record.status, head.record.sqlstate = 400, fields.get("C", "")
            head.record.error = self._masked_text(fields.get("M", ""))
        elif head is not None and not isinstance(head, SyncExpect):
            self.pending.popleft()
            r = (
                self._current_record(head)
                if isinstance(head, ExecuteExpect)
                else (head.portal.record if isinstance(head, BindExpect) else None)
            )
            if r is not None and not r.finished:
                r.status, r.sqlstate = 400, fields.get("C", "")
                r.error = self._masked_text(fields.get("M", ""))
                self._finish(r)
            self._undo(head)
            self._skip_to_sync()
        if fields.get("S") in ("FATAL", "PANIC") or fields.get("V") in ("FATAL", "PANIC"):
            self.closed = True
        return raw if masked is payload else pq.frame(b"E", masked)

    def _expect(self, e: Expect) -> None:
        """Queue the expectation of a message just forwarded upstream (in wire order).

        While the server discards messages until ``Sync`` after an extended-protocol
        error (PostgreSQL's ``ignore_till_sync``: every message but ``Sync``, simple
        queries and function calls included), a message forwarded before that ``Sync``
        gets no answer: its expectation is dropped at once, as :meth:`_skip_to_sync` drops
        those already queued, instead of waiting for replies that never come.
        """
        if isinstance(e, SyncExpect):
            self._skipping_to_sync = False
        elif self._skipping_to_sync:
            self._skipped(e)
            self._undo(e)
            return
        self.pending.append(e)

    @staticmethod
    def _skipped(e: Expect) -> None:
        if isinstance(e, RefusalExpect) and e.record is not None:
            e.record.finished = True  # never reached the server: not a statement run
        elif isinstance(e, QueryExpect):
            for r in e.records:
                r.finished = True
        elif isinstance(e, FunctionCallExpect):
            e.record.finished = True

    def _skip_to_sync(self) -> None:
        """After an error in the extended protocol the server skips every message until
        ``Sync``: drop their expectations (what they would have created or replaced at the
        server was not, so the relay's names go back to what they stood for before). If
        that ``Sync`` has not been forwarded yet, :meth:`_expect` drops the expectations
        of what is forwarded until it is."""
        skipped = []
        while self.pending and not isinstance(self.pending[0], SyncExpect):
            e = self.pending.popleft()
            skipped.append(e)
            if isinstance(e, RefusalExpect) and e.record is not None:
                e.record.finished = True  # never reached the server: not a statement run
        if not self.pending:
            self._skipping_to_sync = True
        for e in reversed(skipped):  # the latest change of a name is undone first
            self._undo(e)

    def _undo(self, e: Expect) -> None:
        """The server refused or skipped ``e``: forget what it would have created."""
        if isinstance(e, ParseExpect):
            e.statement.refused = True
            name = e.statement.name
            if self.statements.get(name) is e.statement:
                if e.previous is None:
                    del self.statements[name]
                else:
                    self.statements[name] = e.previous
        elif isinstance(e, BindExpect):
            self._restore_portal(e.portal.name, e.portal, e.previous)
        elif isinstance(e, RefusalExpect) and e.restore is not None:
            name, previous = e.restore
            current = self.portals.get(name)
            if current is not None and current.refused:
                self._restore_portal(name, current, previous)

    def _restore_portal(self, name: str, portal: Portal, previous: Portal | None) -> None:
        if self.portals.get(name) is not portal:
            return
        if previous is None:
            del self.portals[name]
        else:
            self.portals[name] = previous

    def _drop_portal(self, name: str, seq: int) -> None:
        """Message ``seq`` closed portal ``name`` at the server (a suspended statement's
        record is then done); a portal bound by a later message, already sent, stays."""
        p = self.portals.get(name)
        if p is None or p.seq > seq:
            return
        del self.portals[name]
        if p.record is not None and p.record.portal_suspended:
            self._finish(p.record)

    def _drop_statement(self, name: str, seq: int) -> None:
        """Message ``seq`` dropped prepared statement ``name`` (see :meth:`_drop_portal`)."""
        st = self.statements.get(name)
        if st is not None and st.seq <= seq:
            del self.statements[name]

    def _described(self, portal: Portal, fields: tuple[Any, ...] | None, epoch: int) -> None:
        """The server described ``portal`` (``fields`` ``None``: ``NoData``)."""
        portal.fields = fields
        portal.no_data = fields is None
        portal.described_epoch = epoch
        r = portal.record
        if r is not None and r.row_masker is not None and tuple(r.row_masker.fields) != fields:
            r.row_masker = None  # the next rows are masked with the new description

    def _transaction_ended(self, segment: int) -> None:
        """Portals live until the end of their transaction: the ``ReadyForQuery`` of
        ``segment`` ended one, so the portals bound up to it are gone (record suspended
        ones); those bound in later segments, already sent, are not."""
        for name, p in list(self.portals.items()):
            if p.segment > segment:
                continue
            if p.record is not None and p.record.portal_suspended and not p.record.finished:
                self._finish(p.record)
            del self.portals[name]

    def _statement_done(self, r: StatementRecord, tag: str) -> None:
        r.command_tag = tag
        r.portal_suspended = False
        self._finish(r)

    def _after_statement(self, r: StatementRecord, seq: int) -> None:
        """Keep SQL-level prepared statements and cursors known after they succeed
        (``seq``: the frontend message that ran the statement)."""
        a = r.analysis
        if a is None:
            return
        # SQL PREPARE/DEALLOCATE and the protocol's Parse/Close share one namespace of
        # prepared statements; SQL DECLARE/CLOSE and the protocol's portals one of portals.
        if a.prepares and a.prepared is not None:
            self.sql_prepared[a.prepares] = a.prepared
            self._drop_statement(a.prepares, seq)
        if a.declares:
            self.cursors[a.declares] = a
            self._drop_portal(a.declares, seq)
        if a.closes:
            if a.closes == "ALL":
                self.cursors.clear()
                for name in list(self.portals):
                    self._drop_portal(name, seq)
            else:
                self.cursors.pop(a.closes, None)
                self._drop_portal(a.closes, seq)
        if a.deallocates:
            if a.deallocates == "ALL":
                self.sql_prepared.clear()
                for name in [k for k in self.statements if k]:
                    self._drop_statement(name, seq)
            else:
                self.sql_prepared.pop(a.deallocates, None)
                self._drop_statement(a.deallocates, seq)
        if a.discards_all:
            self.sql_prepared.clear()
            self.cursors.clear()
            for name in [k for k in self.statements if k]:
                self._drop_statement(name, seq)
            for name in list(self.portals):
                self._drop_portal(name, seq)
        if a.transaction in ("commit", "rollback", "prepare") and self.cursors:
            pass  # non-holdable cursors end with the transaction; ReadyForQuery('I') says when
        if "DDL" in a.facts.kinds and self.target is not None:
            self.listener.catalog(self.target).invalidate()

    # ------------------------------------------------------------------ masking

    async def _row_masker(
        self, fields: tuple[Any, ...], analysis: sqlmod.StatementAnalysis | None
    ) -> RowMasker:
        assert self.target is not None and self.agent is not None
        masker = self._masker("response")
        names = await self._field_names(fields, analysis, masker)
        record_masker = self._record_masker(masker)
        binary_policy = self._binary_policy()
        # Column plans depend only on these; build once per result shape, copy per use.
        key = (
            tuple(fields),
            tuple(names),
            id(masker),
            id(record_masker),
            self.encoding,
            binary_policy,
        )
        plans = self.listener.row_plans
        proto = plans.get(key)
        if proto is None or proto.masker is not masker or proto.record_masker is not record_masker:
            proto = RowMasker(
                fields,
                names,
                masker,
                encoding=self.encoding,
                binary_policy=binary_policy,
                record_masker=record_masker,
            )
            plans[key] = proto
            if len(plans) > ROW_PLAN_CACHE:
                plans.popitem(last=False)
        else:
            plans.move_to_end(key)
        return proto.fresh()

    async def _field_names(
        self, fields: tuple[Any, ...], analysis: sqlmod.StatementAnalysis | None, masker: Any
    ) -> list[frozenset[str]]:
        """Every name each result column is known by (see :mod:`.catalog`)."""
        refs = analysis.output_refs if analysis is not None else None
        aligned = refs is not None and len(refs) == len(fields)
        all_refs = analysis.all_refs if analysis is not None else frozenset()
        origins: dict[tuple[int, int], frozenset[str]] = {}
        wants_origins = masker is not None and getattr(masker, "has_field_rules", True)
        if wants_origins:
            pairs = {(f.table_oid, f.column_attnum) for f in fields if f.table_oid}
            if pairs:
                assert self.target is not None
                try:
                    origins = await self.listener.catalog(self.target).origins(pairs)
                except UpstreamError as e:
                    raise RowRefused(
                        "58000",
                        f"Gatehouse could not resolve the result's column origins: {e.message}",
                    ) from e
        # A column with the table's OID and attribute number 0 is a whole row of it
        # (``SELECT t FROM t``); with ``whole_row`` a computed column may hold whole rows
        # (``t::text``, ``row_to_json(t)``): such values are known by every column name
        # of the relations read.
        whole = [bool(f.table_oid) and f.column_attnum <= 0 for f in fields]
        widen = any(whole) or (
            analysis is not None and analysis.whole_row and any(not f.table_oid for f in fields)
        )
        if wants_origins and widen:
            all_refs = all_refs | await self._relation_column_names(analysis)
        out = []
        for i, f in enumerate(fields):
            names = {f.name.lower()}
            if f.table_oid and not whole[i]:
                names |= origins.get((f.table_oid, f.column_attnum), frozenset())
            if aligned:
                names |= refs[i]  # type: ignore[index]
            elif not f.table_oid or whole[i]:
                names |= all_refs
            out.append(frozenset(names))
        return out

    def _masker(self, direction: str) -> Any:
        assert self.target is not None and self.agent is not None
        return self.link.state.masker(self.target.id, direction, self.agent.group_ids)

    def _record_masker(self, masker: Any) -> Any:
        """The masker run over what is recorded after ``masker`` (every default type it
        does not cover; all of them without one). Memoised per target masker."""
        if masker is None or not masker.enabled:
            return self.link.record_masker
        memo = self._record_maskers
        hit = memo.get(id(masker))
        if hit is not None and hit[0] is masker:
            return hit[1]
        extra = self.link.record_masker_for(frozenset(masker.entity_types))
        if len(memo) > 64:
            memo.clear()
        memo[id(masker)] = (masker, extra)
        return extra

    def _binary_policy(self) -> str:
        assert self.target is not None
        for t in self.link.state.policy.raw.get("targets", []):
            if isinstance(t, dict) and t.get("id") == self.target.id:
                return t.get("binary_bodies") or "refuse"
        return "refuse"

    async def _data_rows(self, msgs: list[tuple[int, bytes, bytes]]) -> list[bytes]:
        """Frames to relay for a run of ``DataRow`` messages (masked where needed)."""
        head = self._head()
        r = self._current_record(head)
        if r is None:
            # Rows Gatehouse cannot attribute to a statement it let through: fail closed.
            return [await self._unexpected_result("result rows")]
        if r.row_masker is None:
            fields = None
            if isinstance(head, ExecuteExpect):
                fields = head.portal.fields
            if fields is None:
                # Rows without a description: fail closed rather than pass them unmasked.
                return [
                    await self._refuse_rows(
                        r, RowRefused("08P01", "result rows arrived without their description")
                    )
                ]
            try:
                r.row_masker = await self._row_masker(fields, r.analysis)
            except RowRefused as e:
                return [await self._refuse_rows(r, e)]
        if self.abort:  # rows already refused for this statement: drop the rest
            return []
        payloads = [m[1] for m in msgs]
        try:
            masked = r.row_masker.mask_rows(payloads)
        except RowRefused as e:
            return [await self._refuse_rows(r, e)]
        return [
            m[2] if new is old else pq.frame(b"D", new)
            for m, old, new in zip(msgs, payloads, masked, strict=True)
        ]

    async def _unexpected_result(self, what: str) -> bytes:
        """Result data with no statement of this connection expecting it (never relayed):
        recorded as a refusal, and the connection is closed like :meth:`_refuse_rows`."""
        if self.abort:
            return b""
        r = StatementRecord(None, "", "UTILITY", extended=False)
        return await self._refuse_rows(
            r, RowRefused("08P01", f"{what} arrived for no statement Gatehouse relayed")
        )

    async def _refuse_rows(self, r: StatementRecord, e: RowRefused) -> bytes:
        """A result Gatehouse cannot mask: the statement is cancelled upstream, the agent
        gets an error in place of the rest of the result, and the connection is closed
        (the protocol offers no way to end a result early and stay in sync)."""
        r.status, r.sqlstate, r.error = 502, e.sqlstate, e.message
        self._finish(r)
        self.closed = self.abort = True
        await self._cancel_upstream()
        return pq.build_error(
            f"Gatehouse refused the result: {e.message}", sqlstate=e.sqlstate, severity="FATAL"
        )

    async def _start_copy(
        self, r: StatementRecord, copy_in: bool, overall: int, formats: tuple[int, ...]
    ) -> None:
        info = r.analysis.copy if r.analysis is not None else None
        fmt = info.format if info is not None else ("binary" if overall == 1 else "text")
        r.copy = {"direction": "in" if copy_in else "out", "format": fmt, "rows": 0}
        masker = self._masker("request" if copy_in else "response")
        columns, types = await self._copy_columns(info, r.analysis, len(formats))
        if (
            not copy_in
            and columns is None
            and info is not None
            and masker is not None
            and getattr(masker, "has_field_rules", True)
        ):
            # Field rules need the column names (a table the catalog cannot see: another
            # session's temporary table, a search_path of the agent's own).
            raise RowRefused(
                "58000", "Gatehouse could not resolve the columns of this COPY's relation"
            )
        cm = CopyMasker(
            info,
            columns,
            types,
            None if copy_in else masker,
            encoding=self.encoding,
            binary_policy=self._binary_policy(),
            # COPY FROM data is not masked on the wire; its sample is masked for the
            # record in record.statement_exchange (request rules, then every default).
            record_masker=None if copy_in else self._record_masker(masker),
            column_count=len(formats),
        )
        r.copy_masker = cm
        if copy_in:
            self.copy_in = r
            self.copy_in_masker = cm
            early, self._copy_early, self._copy_early_bytes = self._copy_early, [], 0
            for tag, data in early:
                if tag == -1:
                    cm.error = "sampling stopped: data sent before the COPY began"
                elif tag == _COPY_DATA:
                    cm.sample_in(data)
                else:  # the COPY already ended (CopyDone or CopyFail)
                    if tag == _COPY_DONE:
                        cm.finish_in()
                    self.copy_in = self.copy_in_masker = None
                    break

    async def _copy_columns(
        self, info: Any, analysis: sqlmod.StatementAnalysis | None, ncols: int
    ) -> tuple[list[frozenset[str]] | None, list[int] | None]:
        """Names (and type OIDs when known) of the COPY's ``ncols`` columns, in order.

        ``COPY (query) TO`` has no ``RowDescription``: its columns are named by the
        query's references when they align, by the relation of ``SELECT * FROM rel``,
        and otherwise (stars, whole rows) each column is known by every column name of
        every relation read: a field rule on any of them masks them all (fail-safe).
        """
        if info is None:
            return None, None
        if info.relation is None:
            refs = info.query_output_refs
            if refs is not None:
                return [frozenset(x) for x in refs], None
            if info.query_relation is not None:
                cols = await self._table_columns(info.query_relation)
                if cols is not None and len(cols) == ncols:
                    return [frozenset({n}) for n, _t in cols], [t for _n, t in cols]
            every = await self._relation_column_names(analysis)
            return [every] * ncols, None
        cols = await self._table_columns(info.relation)
        if cols is None:
            if info.columns:
                return [frozenset({c}) for c in info.columns], None
            return None, None
        if info.columns:
            by_name = dict(cols)
            return [frozenset({c}) for c in info.columns], [by_name.get(c, 0) for c in info.columns]
        return [frozenset({n}) for n, _t in cols], [t for _n, t in cols]

    async def _table_columns(self, relation: str) -> list[tuple[str, int]] | None:
        assert self.target is not None
        try:
            return await self.listener.catalog(self.target).table_columns(relation)
        except UpstreamError:
            return None

    async def _relation_column_names(
        self, analysis: sqlmod.StatementAnalysis | None
    ) -> frozenset[str]:
        """Every column name of every relation ``analysis`` reads, and every column it
        mentions: the names of a value that may hold whole rows of them (relations the
        catalog cannot resolve add nothing)."""
        if analysis is None:
            return frozenset()
        names = set(analysis.all_refs)
        for rel in sorted(analysis.facts.relations):
            cols = await self._table_columns(rel)
            if cols:
                names.update(n for n, _t in cols)
        return frozenset(names)

    def _masked_text(self, text: str) -> str:
        """Server text (errors, notices) masked for the wire: the target's response rules,
        else every default detector (an error's DETAIL can hold a row's values)."""
        masker = self._masker("response") or self.link.record_masker
        if not text:
            return text
        try:
            masked, _ = masker.mask_text(text, location="error")
        except Exception:
            return "[message withheld: it could not be masked]"
        return masked

    def _mask_error_fields(self, payload: bytes) -> bytes:
        """An ErrorResponse/NoticeResponse payload with its message, detail, hint,
        context and query fields masked (the same object when nothing changed): a
        unique-violation DETAIL holds the row's values, a RAISE NOTICE anything."""
        fields = pq.parse_error_fields(payload, self.encoding, errors="replace")
        changed = False
        for code in ("M", "D", "H", "W", "q"):
            v = fields.get(code)
            if v:
                m = self._masked_text(v)
                if m != v:
                    fields[code] = m
                    changed = True
        if not changed:
            return payload
        enc = self.encoding
        return (
            b"".join(
                [
                    k.encode("ascii") + v.encode(enc, errors="replace") + b"\0"
                    for k, v in fields.items()
                ]
            )
            + b"\0"
        )

    def _mask_notification(self, payload: bytes, raw: bytes) -> bytes:
        pid, channel, text = pq.parse_notification_response(payload, self.encoding)
        masked = self._masked_text(text)
        if masked == text:
            return raw
        return pq.build_notification_response(pid, channel, masked, self.encoding)

    def _mask_function_result(self, payload: bytes) -> bytes:
        (n,) = struct.unpack_from("!i", payload, 0)
        if n < 0:
            return payload
        value = bytes(payload[4 : 4 + n])
        try:
            text = value.decode(self.encoding)
        except UnicodeDecodeError:
            return payload
        if self._masked_text(text) != text:
            return struct.pack("!i", -1)  # a masked value of unknown type becomes NULL
        return payload

    # ------------------------------------------------------------------ recording

    def _finish(self, r: StatementRecord) -> None:
        if r.finished:
            return
        r.finished = True
        try:
            msg = rec.statement_exchange(self, r)
        except Exception:
            log.exception("could not build the exchange of a statement")
            return
        self.records_in_flight.append(self.link.submit_exchange(msg))

    def _record_connection_error(self, e: UpstreamError) -> None:
        r = StatementRecord(None, "", "UTILITY", extended=False)
        r.status, r.sqlstate, r.error, r.decision = 502, e.sqlstate, e.message, "error"
        self._finish(r)

    # ------------------------------------------------------------------ cancel / close

    async def cancel(self) -> None:
        """The agent sent a ``CancelRequest`` for this connection."""
        if self.holding:
            self.cancel_requested.set()
            return
        await self._cancel_upstream()

    async def _cancel_upstream(self) -> None:
        up, target = self.upstream, self.target
        if up is None or target is None or target.postgres is None or not up.backend_pid:
            return
        from proxy_worker.postgres.upstream import send_cancel

        await send_cancel(target.postgres, up.backend_pid, up.backend_secret)

    async def _upstream_gone(self, why: str) -> None:
        for e in list(self.pending):
            r = self._current_record(e)
            if r is not None and not r.finished:
                r.status, r.sqlstate, r.error = 502, "08006", why
                self._finish(r)
        self.pending.clear()
        await self._fatal("08006", why)
        self.closed = True

    async def _fatal_after_pending(self, sqlstate: str, message: str) -> None:
        await self._fatal(sqlstate, message)

    async def _fatal(self, sqlstate: str, message: str, *, hint: str | None = None) -> None:
        """Send a FATAL ``ErrorResponse`` (the connection ends after it); never raises."""
        try:
            if not self.writer.is_closing():
                self.writer.write(
                    pq.build_error(message, sqlstate=sqlstate, severity="FATAL", hint=hint)
                )
                await asyncio.wait_for(self.writer.drain(), 5)
        except (OSError, RuntimeError, TimeoutError, ConnectionError):
            pass

    def revocation(self) -> Refused | None:
        """What ends this connection under the current policy: a :class:`Refused`
        (28000 token revoked or expired, 3D000 target removed), or ``None`` while the
        connection is still allowed (and before it is logged in)."""
        if self.agent is None or self.target is None or self.upstream is None:
            return None
        try:
            self._current_policy()
        except Refused as r:
            return r
        return None

    async def shutdown(self, message: str, *, sqlstate: str = "57P01") -> None:
        """End the connection from the gateway's side: a FATAL ``ErrorResponse`` (57P01
        admin_shutdown when the worker stops; 28000/3D000 when the policy no longer
        allows the session), the connection closed, and what it started upstream
        cancelled. Never raises; the relay's tasks then end by themselves (and record
        what was pending)."""
        self.closed = True
        if self.ended_by is None:
            revoked = sqlstate in ("28000", "3D000")
            self.ended_by = _SessionRefused(
                sqlstate, message, decision="denied" if revoked else "error"
            )
        await self._fatal(sqlstate, message)
        with contextlib.suppress(Exception):
            self.writer.close()
        if self.pending:
            with contextlib.suppress(Exception):
                await self._cancel_upstream()

    async def _close(self) -> None:
        self.closed = True
        for e in list(self.pending):
            r = self._current_record(e)
            if r is not None and not r.finished:
                r.status, r.sqlstate, r.error = 499, "08006", "the agent disconnected"
                self._finish(r)
        for p in self.portals.values():
            if p.record is not None and p.record.portal_suspended and not p.record.finished:
                self._finish(p.record)
        self.listener.unregister(self)
        if self.upstream is not None:
            self.upstream.close()
        with contextlib.suppress(Exception):
            self.writer.close()
        await self._records_stored()


#: Result shapes whose column plans are kept (LRU, per worker).
ROW_PLAN_CACHE = 2048

#: Bytes of COPY FROM data sent ahead of the server's CopyInResponse kept for sampling.
EARLY_COPY_SAMPLE = 1024 * 1024

#: Marker returned for ReadyForQuery: flush, wait for the records, then relay it.
_FLUSH_THEN_Z = object()


def _parameter_oids(payload: bytes) -> tuple[int, ...]:
    (n,) = struct.unpack_from("!h", payload, 0)
    if n < 0 or len(payload) < 2 + 4 * n:
        raise pq.ProtocolViolation("malformed ParameterDescription")
    return struct.unpack_from(f"!{n}I", payload, 2)


#: Words of statements whose meaning depends on the connection's named objects.
_STATE_WORDS = re.compile(r"\b(?:execute|fetch|move)\b", re.IGNORECASE)


def _refers_to_state(text: str) -> bool:
    """Whether SQL ``text`` may ``EXECUTE`` a prepared statement or ``FETCH``/``MOVE``
    in a cursor (a cheap over-approximation: the analysis then needs settled state)."""
    return _STATE_WORDS.search(text) is not None


def _unparseable(e: Exception) -> Refused:
    return Refused(
        "42601",
        f"Gatehouse refused a statement it cannot parse: {e}",
        hint="statements must parse with PostgreSQL's grammar to be checked by access rules",
    )


def _first_record_for(records: list[StatementRecord], r: Refused) -> StatementRecord:
    for x in records:
        if x.rule_id == r.rule_id:
            return x
    return records[0]


class _SessionRefused(Refused):
    """A refusal that ends the connection (the agent's token was revoked, its target
    removed): reported with severity FATAL, as PostgreSQL reports a session it ends."""

    def frame(self) -> bytes:
        return pq.build_error(
            self.message,
            sqlstate=self.sqlstate,
            detail=self.detail,
            hint=self.hint,
            severity="FATAL",
        )


def _verdict_refusal(verdict: Any, approval_id: str, rule_id: int | None) -> Refused:
    denied = verdict.verdict == "denied"
    who = f" by {', '.join(verdict.decided_by)}" if verdict.decided_by else ""
    why = f": {verdict.comment}" if verdict.comment else ""
    return Refused(
        "42501",
        f"approval {verdict.verdict}{who}{why}",
        detail=f"approval id {approval_id}",
        decision="approval_denied" if denied else "expired",
        approval_id=approval_id,
        rule_id=rule_id,
    )


#: First bytes of HTTP requests (RFC 9110 methods, and HTTP/2's connection preface).
_HTTP_STARTS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"PRI ")


def _not_a_startup_packet(head: bytes) -> pq.ProtocolViolation | None:
    """A clearer refusal for first bytes that are no start-up packet length but
    something recognisable (an HTTP request, a TLS handshake without ``SSLRequest``, a
    protocol message sent too early); ``None`` when they are plain garbage."""
    if head in _HTTP_STARTS:
        return pq.ProtocolViolation(
            "an HTTP request was received on the PostgreSQL port: connect with a "
            "PostgreSQL client (Gatehouse's HTTP proxy listens on another port)"
        )
    if head[:1] == b"\x16" and head[1:2] == b"\x03":
        return pq.ProtocolViolation(
            "TLS handshake without SSLRequest: Gatehouse does not accept direct TLS, "
            "connect with sslnegotiation=postgres (libpq's default)"
        )
    if head[0] in pq.FRONTEND_TAGS and head[1:3] == b"\0\0":
        return pq.ProtocolViolation(f"a {chr(head[0])!r} message before the start-up packet")
    return None


def _startup_parameter_allowed(name: str) -> bool:
    """Whether a startup parameter is passed on to the upstream: the connection
    parameters of :data:`PASSED_PARAMETERS`, and the settings an agent may also give in
    ``options`` (:data:`ALLOWED_OPTIONS`), which drivers such as asyncpg send as
    parameters of their own (``server_settings``)."""
    key = name.lower()
    return key in PASSED_PARAMETERS or key in ALLOWED_OPTIONS


def _disallowed_options(options: str) -> str | None:
    """The first setting in a startup ``options`` string not in :data:`ALLOWED_OPTIONS`
    (``-c name=value`` or ``--name=value``; anything else is refused as a whole)."""
    tokens = options.replace("\\ ", "\x00").split()
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t == "-c" and i + 1 < len(tokens):
            setting = tokens[i + 1]
            i += 2
        elif t.startswith("-c") or t.startswith("--"):
            setting = t[2:]
            i += 1
        else:
            return t
        name = setting.split("=", 1)[0].strip().lower().replace("-", "_")
        if name not in ALLOWED_OPTIONS:
            return name
    return None


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of an (already verified) JWT, read without verifying again."""
    import jwt

    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return float(exp) if isinstance(exp, int | float) else None

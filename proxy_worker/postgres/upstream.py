"""Connections from the worker to a target's database: TCP, TLS, startup and login.

Gatehouse logs in with the target's own user and password (the agent never learns
them), answering whatever the server asks (PostgreSQL docs, "Message Flow: Start-up"):
``AuthenticationOk`` (trust), SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677;
channel binding ``tls-server-end-point``, RFC 5929, when TLS is on; done with
``scramp``, not by hand), MD5 (``"md5" + md5(md5(password + user) + salt)``) and
cleartext. Kerberos, GSSAPI and SSPI are refused with a clear error.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import scramp

from proxy_worker.policy import PostgresUpstream
from proxy_worker.postgres import protocol as pq
from proxy_worker.postgres.tls import upstream_context

#: Seconds to establish the TCP connection, TLS and login together.
CONNECT_TIMEOUT = 10.0
READ_CHUNK = 256 * 1024

_AUTH_NAMES = {2: "Kerberos V5", 6: "SCM credentials", 7: "GSSAPI", 9: "SSPI"}


class UpstreamError(Exception):
    """The upstream database could not be reached or refused Gatehouse's login.

    ``sqlstate`` is what the agent is told (``08001`` unreachable, ``08004`` login
    refused, ``08P01`` the server broke the protocol); ``message`` says why, without
    the password.
    """

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message


class MessageReader:
    """Reads whole messages ``(tag, payload, raw frame)`` from an asyncio stream.

    ``read_batch`` returns every complete message available after at most one read from
    the socket, so a burst of ``DataRow`` messages is handled together; ``read`` returns
    one. Frames are limited to ``max_message`` bytes and to the tags of the direction
    (:class:`pq.ProtocolViolation`).
    """

    def __init__(self, reader: asyncio.StreamReader, max_message: int, *, backend: bool) -> None:
        self.reader = reader
        self._tags = pq.BACKEND_TAGS if backend else pq.FRONTEND_TAGS
        self.splitter = pq.MessageSplitter(max_message=max_message, allowed_tags=self._tags)
        self._ready: list[tuple[int, bytes, bytes]] = []
        self._pos = 0

    def set_max_message(self, max_message: int) -> None:
        """Change the frame size limit from now on, keeping every byte received (the
        relay reads the password under a small limit, then raises it for queries)."""
        pending = self.splitter.take_buffered()
        self.splitter = pq.MessageSplitter(max_message=max_message, allowed_tags=self._tags)
        self.splitter.feed(pending)

    async def read_batch(self) -> list[tuple[int, bytes, bytes]]:
        """Every buffered complete message, reading more first when there is none.

        Returns ``[]`` at end of stream (with no partial message buffered). Raises
        :class:`pq.ProtocolViolation` for bad framing and ``EOFError`` when the stream
        ends inside a message.
        """
        if self._pos < len(self._ready):
            out = self._ready[self._pos :]
            self._ready, self._pos = [], 0
            return out
        while True:
            msgs = self.splitter.drain()
            if msgs:
                return msgs
            data = await self.reader.read(READ_CHUNK)
            if not data:
                if self.splitter.buffered:
                    raise EOFError("the connection closed in the middle of a message")
                return []
            self.splitter.feed(data)

    async def read(self) -> tuple[int, bytes, bytes]:
        """The next message; ``EOFError`` at end of stream."""
        if self._pos >= len(self._ready):
            self._ready = await self.read_batch()
            self._pos = 0
            if not self._ready:
                raise EOFError("the connection closed")
        msg = self._ready[self._pos]
        self._pos += 1
        return msg

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned (complete messages or a partial one)."""
        return self.splitter.buffered + sum(len(m[2]) for m in self._ready[self._pos :])


class CoalescingWriter:
    """A :class:`asyncio.StreamWriter` whose writes within one turn of the event loop go
    out as one: the relay forwards a pipeline of frontend messages (``Parse``, ``Bind``,
    ``Describe``, ``Execute``, ``Sync``) message by message, and each plain write is a
    ``send`` system call (and, with TLS, a TLS record). Buffered bytes are written by a
    callback scheduled on the first write, so they leave before anything the relay
    awaits can run; :meth:`drain` and :meth:`close` flush first.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._buf: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self._buf.append(data)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what is buffered now (never raises for a closed connection)."""
        self._scheduled = False
        if not self._buf:
            return
        data = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
        self._buf.clear()
        if not self._writer.is_closing():
            self._writer.write(data)

    async def drain(self) -> None:
        self.flush()
        await self._writer.drain()

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def __getattr__(self, name: str):  # is_closing, get_extra_info, transport, ...
        return getattr(self._writer, name)


@dataclass
class UpstreamSession:
    """A logged-in upstream connection, ready for queries (``ReadyForQuery`` seen).

    ``parameters`` are the server's ``ParameterStatus`` values, ``backend_pid`` and
    ``backend_secret`` its cancel key, ``tls`` the TLS version in use (``""`` for none).
    """

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    messages: MessageReader
    parameters: dict[str, str] = field(default_factory=dict)
    backend_pid: int = 0
    backend_secret: bytes = b""
    tls: str = ""
    #: Notices the server sent during login (frames, relayed to the client).
    notices: list[bytes] = field(default_factory=list)
    transaction_status: str = "I"

    def close(self) -> None:
        """Send ``Terminate`` and close (never raises)."""
        try:
            if not self.writer.is_closing():
                self.writer.write(pq.build_terminate())
            self.writer.close()
        except (OSError, RuntimeError):
            pass


def md5_password(password: str, user: str, salt: bytes) -> bytes:
    """PostgreSQL's MD5 answer: ``"md5" + hex(md5(hex(md5(password + user)) + salt))``.

    PostgreSQL docs, "Password Authentication" (``AuthenticationMD5Password``).
    """
    inner = hashlib.md5((password + user).encode(), usedforsecurity=False).hexdigest()
    outer = hashlib.md5(inner.encode() + salt, usedforsecurity=False).hexdigest()
    return b"md5" + outer.encode()


async def _open_tcp(pg: PostgresUpstream) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_connection(pg.host, pg.port, limit=READ_CHUNK)
    except OSError as e:
        raise UpstreamError(
            "08001", f"upstream database {pg.host}:{pg.port} is unreachable: {e.strerror or e}"
        ) from e


async def _negotiate_tls(
    pg: PostgresUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    try:
        ctx = upstream_context(pg.sslmode, pg.ca_pem)
    except ValueError as e:
        raise UpstreamError("08001", str(e)) from e
    if ctx is None:
        return reader, writer, ""
    writer.write(pq.build_ssl_request())
    await writer.drain()
    answer = await reader.readexactly(1)
    if answer == b"N":
        if pg.sslmode != "prefer":
            raise UpstreamError(
                "08001", f"upstream database refused TLS (target requires sslmode={pg.sslmode})"
            )
        return reader, writer, ""
    if answer != b"S":
        raise UpstreamError("08P01", "upstream database answered the SSL request wrongly")
    if getattr(reader, "_buffer", b""):
        # Bytes after the "S", before the handshake, would be read as if they came
        # through TLS: a man-in-the-middle injecting a response (CVE-2021-23222, which
        # libpq refuses the same way). No await between this check and the upgrade.
        raise UpstreamError(
            "08P01", "upstream database sent unencrypted data after its SSL response"
        )
    try:
        await writer.start_tls(ctx, server_hostname=pg.host)
    except (ssl.SSLError, ssl.CertificateError) as e:
        raise UpstreamError("08001", f"TLS with the upstream database failed: {e}") from e
    sslobj = writer.get_extra_info("ssl_object")
    return reader, writer, sslobj.version() if sslobj is not None else "TLS"


async def connect(
    pg: PostgresUpstream,
    params: Mapping[str, str],
    *,
    max_message: int = pq.DEFAULT_MAX_MESSAGE,
    timeout: float = CONNECT_TIMEOUT,
) -> UpstreamSession:
    """Open, secure and log in a connection to ``pg``; returns it ready for queries.

    ``params`` are extra startup parameters (``application_name``, ``client_encoding``,
    ...); ``user`` and ``database`` always come from ``pg``. Raises
    :class:`UpstreamError` (unreachable, TLS failure, login refused, unsupported
    authentication, timeout).
    """
    try:
        async with asyncio.timeout(timeout):
            return await _connect(pg, params, max_message)
    except TimeoutError as e:
        raise UpstreamError(
            "08001", f"upstream database {pg.host}:{pg.port} did not answer within {timeout:g} s"
        ) from e
    except (EOFError, asyncio.IncompleteReadError, ConnectionError) as e:
        raise UpstreamError("08001", f"upstream database closed the connection: {e}") from e
    except OSError as e:  # e.g. ssl.SSLError on a TLS record after the handshake
        raise UpstreamError("08001", f"connection to the upstream database failed: {e}") from e
    except pq.ProtocolViolation as e:
        raise UpstreamError("08P01", f"upstream database broke the protocol: {e}") from e


async def _connect(
    pg: PostgresUpstream, params: Mapping[str, str], max_message: int
) -> UpstreamSession:
    reader, writer = await _open_tcp(pg)
    try:
        reader, writer, tls = await _negotiate_tls(pg, reader, writer)
        startup = {k: v for k, v in params.items() if k not in ("user", "database")}
        startup = {"user": pg.user, "database": pg.database, **startup}
        writer.write(pq.build_startup(startup))
        await writer.drain()
        messages = MessageReader(reader, max_message, backend=True)
        session = UpstreamSession(reader, writer, messages, tls=tls)
        await _login(session, pg)
        return session
    except BaseException:
        writer.close()
        raise


async def _login(session: UpstreamSession, pg: PostgresUpstream) -> None:
    w = session.writer
    scram: scramp.ScramClient | None = None
    while True:
        tag, payload, _raw = await session.messages.read()
        if tag == ord("R"):
            code, data = pq.parse_authentication(payload)
            if code == 0:
                break
            if code in (3, 5, 10) and not pg.password:
                raise UpstreamError(
                    "08004",
                    "upstream database asks for a password and the target has none "
                    "(set the target's database password)",
                )
            password = pg.password or ""
            if code == 3:
                w.write(pq.build_password(password.encode()))
            elif code == 5:
                w.write(pq.build_password(md5_password(password, pg.user, data[:4])))
            elif code == 10:
                mechanisms = pq.parse_sasl_mechanisms(data)
                scram, first, mech = _scram_start(session, pg, mechanisms)
                w.write(pq.build_sasl_initial_response(mech, first.encode()))
            elif code == 11:
                if scram is None:
                    raise UpstreamError("08P01", "upstream sent SASLContinue without SASL")
                try:
                    scram.set_server_first(data.decode())
                    w.write(pq.build_sasl_response(scram.get_client_final().encode()))
                except scramp.ScramException as e:
                    raise UpstreamError("08004", f"SCRAM with the upstream failed: {e}") from e
            elif code == 12:
                if scram is None:
                    raise UpstreamError("08P01", "upstream sent SASLFinal without SASL")
                try:
                    scram.set_server_final(data.decode())
                except scramp.ScramException as e:
                    raise UpstreamError(
                        "08004", f"the upstream's SCRAM signature is wrong: {e}"
                    ) from e
                continue
            else:
                name = _AUTH_NAMES.get(code, f"method {code}")
                raise UpstreamError(
                    "08004",
                    f"upstream database asks for {name} authentication, which Gatehouse "
                    "does not support (use scram-sha-256, md5 or password for the target's user)",
                )
            await w.drain()
        elif tag == ord("E"):
            fields = pq.parse_error_fields(payload)
            raise UpstreamError(
                "08004",
                "upstream database refused Gatehouse's login: "
                f"{fields.get('M', 'error')} (SQLSTATE {fields.get('C', '?')})",
            )
        elif tag == ord("N"):
            session.notices.append(pq.frame(b"N", payload))
        elif tag == ord("v"):
            continue  # NegotiateProtocolVersion: we asked for 3.0, nothing to change
        else:
            raise UpstreamError("08P01", f"unexpected message {chr(tag)!r} during login")
    if scram is not None and not _scram_done(scram):
        raise UpstreamError("08004", "upstream ended SCRAM without proving it knows the password")
    while True:
        tag, payload, _raw = await session.messages.read()
        if tag == ord("S"):
            name, value = pq.parse_parameter_status(payload)
            session.parameters[name] = value
        elif tag == ord("K"):
            session.backend_pid, session.backend_secret = pq.parse_backend_key_data(payload)
        elif tag == ord("Z"):
            session.transaction_status = pq.parse_ready_for_query(payload)
            return
        elif tag == ord("N"):
            session.notices.append(pq.frame(b"N", payload))
        elif tag == ord("E"):
            fields = pq.parse_error_fields(payload)
            raise UpstreamError(
                "08004",
                f"upstream database refused the session: {fields.get('M', 'error')} "
                f"(SQLSTATE {fields.get('C', '?')})",
            )
        else:
            raise UpstreamError("08P01", f"unexpected message {chr(tag)!r} after login")


def _scram_start(
    session: UpstreamSession, pg: PostgresUpstream, mechanisms: list[str]
) -> tuple[scramp.ScramClient, str, str]:
    sslobj = session.writer.get_extra_info("ssl_object")
    usable = [m for m in ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256") if m in mechanisms]
    if sslobj is None:
        usable = [m for m in usable if not m.endswith("-PLUS")]
    if not usable:
        raise UpstreamError(
            "08004", f"upstream database offers no SASL mechanism Gatehouse supports: {mechanisms}"
        )
    binding = None
    if usable[0].endswith("-PLUS"):
        binding = ("tls-server-end-point", sslobj)
    # PostgreSQL ignores the SCRAM user name (it uses the startup user): send it anyway.
    client = scramp.ScramClient(usable[:1], pg.user, pg.password or "", channel_binding=binding)
    return client, client.get_client_first(), usable[0]


def _scram_done(client: scramp.ScramClient) -> bool:
    """Whether the server's final SCRAM message (its proof) was checked.

    Reaching ``AuthenticationOk`` without ``SASLFinal`` would skip the server's proof of
    the password, which an impostor upstream could use.
    """
    from scramp.core import ClientStage

    return client.stage == ClientStage.set_server_final


def cancel_request_frame(pid: int, secret: bytes) -> bytes:
    """The 16-byte (protocol 3.0) ``CancelRequest`` packet for ``pid``/``secret``."""
    return struct.pack("!iiI", 16, pq.CANCEL_REQUEST_CODE, pid) + secret[:4]


async def send_cancel(pg: PostgresUpstream, pid: int, secret: bytes) -> None:
    """Ask the upstream server to cancel what backend ``pid`` is running (best effort).

    A cancel request goes on a new connection (PostgreSQL docs, "Canceling Requests in
    Progress"), over TLS when the target uses it. Never raises.
    """
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(pg.host, pg.port)
            try:
                reader, writer, _tls = await _negotiate_tls(pg, reader, writer)
                writer.write(pq.build_cancel_request(pid, secret))
                await writer.drain()
                await reader.read(1)  # the server closes the connection
            finally:
                writer.close()
    except (OSError, TimeoutError, UpstreamError, asyncio.IncompleteReadError, ssl.SSLError):
        pass

"""A raw PostgreSQL frontend for the hostile-input and authentication tests.

Unlike :mod:`.rawclient` (which always logs in over TLS), :class:`Wire` does nothing by
itself: the test decides every byte (a start-up packet with any parameters, garbage, an
HTTP request, a TLS ClientHello, an ``SSLRequest`` twice, ...) and reads back what the
gateway answers. It keeps every byte it received (after TLS decryption) in
:attr:`Wire.received`, so a test can check that a secret never reached the client, and it
can connect from another loopback source address (``127.0.0.x``) so the bad-credential
limiter of one test does not block the others.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import NamedTuple

from proxy_worker.postgres import protocol as pq


class Msg(NamedTuple):
    """One backend message: its tag character and payload."""

    tag: str
    payload: bytes

    def fields(self) -> dict[str, str]:
        """The fields of an ``ErrorResponse``/``NoticeResponse`` (``C``, ``M``, ``S``...)."""
        return pq.parse_error_fields(self.payload, "utf-8", errors="replace")

    def values(self) -> list[str | None]:
        """A ``DataRow``'s values as UTF-8 text."""
        return [None if v is None else bytes(v).decode() for v in pq.parse_data_row(self.payload)]


class Wire:
    """One TCP connection to the gateway's PostgreSQL port, driven byte by byte."""

    def __init__(
        self, port: int, *, source: str | None = None, timeout: float = 15, host: str = "127.0.0.1"
    ) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.buf = b""
        self.received = bytearray()

    # -- bytes ----------------------------------------------------------------------------

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        self.received += data
        return data

    def read_byte(self) -> bytes:
        """One byte (the answer to an ``SSLRequest``); ``b""`` at end of stream."""
        if self.buf:
            b, self.buf = self.buf[:1], self.buf[1:]
            return b
        data = self._recv()
        if not data:
            return b""
        self.buf = data[1:]
        return data[:1]

    def read(self) -> Msg:
        """The next backend message; ``EOFError`` when the gateway closed the connection."""
        while True:
            if len(self.buf) >= 5:
                tag, n = struct.unpack_from("!ci", self.buf, 0)
                if len(self.buf) >= 1 + n:
                    payload = self.buf[5 : 1 + n]
                    self.buf = self.buf[1 + n :]
                    return Msg(tag.decode("latin-1"), payload)
            data = self._recv()
            if not data:
                raise EOFError("the gateway closed the connection")
            self.buf += data

    def until(self, tags: str) -> list[Msg]:
        """Messages up to and including the first whose tag is in ``tags``."""
        out = []
        while True:
            m = self.read()
            out.append(m)
            if m.tag in tags:
                return out

    def closed(self, timeout: float = 5) -> bool:
        """Whether the gateway closes the connection within ``timeout`` seconds (anything
        it still sends before is kept in :attr:`buf`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self._recv()
            except TimeoutError:
                return False
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                return True
            if not data:
                return True
            self.buf += data
        return False

    def error_then_close(self) -> dict[str, str]:
        """Read to the first ``ErrorResponse`` (the gateway's answer to something hostile),
        check that the connection is closed after it; returns the error's fields."""
        msgs = self.until("E")
        fields = msgs[-1].fields()
        assert self.closed(), f"connection still open after {fields}"
        return fields

    # -- start-up -------------------------------------------------------------------------

    def ssl_request(self) -> bytes:
        """Send an ``SSLRequest``; returns the gateway's one-byte answer."""
        self.send(pq.build_ssl_request())
        return self.read_byte()

    def start_tls(self, ca_file: Path, server_hostname: str = "127.0.0.1") -> None:
        ctx = ssl.create_default_context(cafile=str(ca_file))
        assert isinstance(self.sock, socket.socket)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)

    def tls(self, ca_file: Path) -> Wire:
        """``SSLRequest`` and the TLS handshake (asserting the gateway said ``S``)."""
        assert self.ssl_request() == b"S"
        self.start_tls(ca_file)
        return self

    def startup(self, **params: str) -> None:
        self.send(pq.build_startup(params))

    def login(self, user: str, password: str, database: str, **params: str) -> list[Msg]:
        """Start-up and password; returns the messages up to ``ReadyForQuery`` or the
        first ``ErrorResponse``."""
        self.startup(user=user, database=database, **params)
        first = self.read()
        if first.tag != "R":
            return [first]
        self.send(pq.build_password(password))
        return self.until("ZE")

    def query(self, sql: str) -> list[Msg]:
        """A simple ``Query``; the messages up to ``ReadyForQuery``."""
        self.send(pq.build_query(sql))
        return self.until("Z")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def errors(msgs: list[Msg]) -> list[tuple[str, str]]:
    """``(SQLSTATE, message)`` of every ``ErrorResponse`` in ``msgs``."""
    return [(m.fields().get("C", ""), m.fields().get("M", "")) for m in msgs if m.tag == "E"]


def data_rows(msgs: list[Msg]) -> list[list[str | None]]:
    return [m.values() for m in msgs if m.tag == "D"]

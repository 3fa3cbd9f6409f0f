"""A minimal PostgreSQL frontend for the relay tests: exact control over the messages.

Real drivers never send some message sequences a hostile agent can send (an
``Execute`` of a portal bound elsewhere, a ``Bind`` reusing a portal name, ...);
:class:`RawClient` sends whatever frames it is given (built with
:mod:`proxy_worker.postgres.protocol`) over TLS to the gateway and reads the answers up
to ``ReadyForQuery``.
"""

from __future__ import annotations

import socket
import ssl
import struct
from pathlib import Path
from typing import NamedTuple

from proxy_worker.postgres import protocol as pq


class Message(NamedTuple):
    tag: str
    payload: bytes

    def error(self) -> dict[str, str]:
        """The fields of an ``ErrorResponse``/``NoticeResponse``."""
        return pq.parse_error_fields(self.payload, "utf-8", errors="replace")

    def values(self) -> list[str | None]:
        """The values of a ``DataRow`` decoded as UTF-8 text."""
        return [None if v is None else bytes(v).decode() for v in pq.parse_data_row(self.payload)]


class RawClient:
    """One connection through the gateway: ``send(*frames)`` then ``until_ready()``."""

    def __init__(self, port: int, user: str, password: str, database: str, ca_file: Path) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        sock.sendall(pq.build_ssl_request())
        assert sock.recv(1) == b"S"
        ctx = ssl.create_default_context(cafile=str(ca_file))
        self.sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        self.buf = b""
        self.send(pq.build_startup({"user": user, "database": database}))
        m = self.read()
        assert m.tag == "R", m
        self.send(pq.build_password(password))
        self.until_ready()

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def read(self) -> Message:
        while True:
            if len(self.buf) >= 5:
                tag, n = struct.unpack_from("!ci", self.buf, 0)
                if len(self.buf) >= 1 + n:
                    payload = self.buf[5 : 1 + n]
                    self.buf = self.buf[1 + n :]
                    return Message(tag.decode(), payload)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the gateway closed the connection")
            self.buf += data

    def until_ready(self) -> list[Message]:
        """Messages up to and including ``ReadyForQuery`` (``ParameterStatus`` dropped)."""
        out = []
        while True:
            m = self.read()
            if m.tag != "S":
                out.append(m)
            if m.tag == "Z":
                return out

    def query(self, sql: str) -> list[Message]:
        self.send(pq.build_query(sql))
        return self.until_ready()

    def close(self) -> None:
        try:
            self.send(pq.build_terminate())
        finally:
            self.sock.close()


def tags(messages: list[Message]) -> str:
    """The message tags as one string (``"TDDCZ"``)."""
    return "".join(m.tag for m in messages)


def rows(messages: list[Message]) -> list[list[str | None]]:
    """The values of every ``DataRow``."""
    return [m.values() for m in messages if m.tag == "D"]


def errors(messages: list[Message]) -> list[str]:
    """``"SQLSTATE message"`` of every ``ErrorResponse``."""
    return [f"{m.error().get('C')} {m.error().get('M')}" for m in messages if m.tag == "E"]

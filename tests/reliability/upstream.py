"""A small, fast asyncio HTTP/1.1 upstream that misbehaves on request (faults and benchmarks).

Run it as ``python -m tests.reliability.upstream --port N``. Keep-alive, no threads, so
it is fast enough to be the "direct" baseline of ``bench/proxy_throughput.py``.

Paths (query parameters in brackets):

* ``/json[?size=N]`` a JSON document of about N bytes (default 2048) whose records carry
  e-mail addresses, phone numbers and SSNs, so masking has work to do;
* ``/sse[?events=N&delay=ms]`` a ``text/event-stream`` of N events, ``delay`` apart;
* ``/slow[?delay=s]`` answers after ``delay`` seconds (default 30);
* ``/reset`` reads the request and resets the connection (RST, no answer);
* ``/close`` reads the request and closes the connection (FIN, no answer);
* ``/garbage`` answers bytes that are not HTTP;
* ``/midreset`` sends headers and half a body, then resets;
* ``/redirect`` answers 302 with ``Location`` and ``Link`` headers naming this server;
* ``/echo`` answers JSON describing the request (method, path, headers, body);
* ``/big?size=N`` a JSON body of N bytes; ``/gzipbomb`` a tiny gzip body inflating to 128 MiB;
* ``/ws`` accepts a WebSocket upgrade and echoes text frames back;
* ``GET /_received`` the last 200 requests received (method, path, headers, body as
  latin-1 text), ``DELETE /_received`` forgets them. Not recorded themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import gzip
import hashlib
import io
import json
import socket
import struct
from urllib.parse import parse_qs, urlsplit

PII_RECORD = {
    "name": "Jane Roe",
    "email": "jane.roe@example.com",
    "phone": "+1 415 555 2671",
    "ssn": "123-45-6789",
    "note": "customer since 2019, prefers e-mail",
}
RAW_PII = ("jane.roe@example.com", "415 555 2671", "123-45-6789")


def json_body(size: int) -> bytes:
    """A JSON array of PII records, padded to about ``size`` bytes."""
    rec = json.dumps(PII_RECORD)
    n = max(1, size // (len(rec) + 1))
    items = [dict(PII_RECORD, id=i) for i in range(n)]
    body = json.dumps(items).encode()
    if len(body) < size:
        items[-1]["pad"] = "x" * (size - len(body) - 10)
        body = json.dumps(items).encode()
    return body


def _gzip_bomb() -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as f:
        chunk = b"\0" * (1 << 20)
        for _ in range(128):  # 128 MiB: 12x the masking limit, built in well under a second
            f.write(chunk)
    return buf.getvalue()


class Upstream:
    """The server; ``base_url`` is what it names itself in ``Location``/``Link``."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self._cache: dict[int, bytes] = {}
        self._bomb: bytes | None = None
        self.received: collections.deque[dict] = collections.deque(maxlen=200)

    def body(self, size: int) -> bytes:
        if size not in self._cache:
            self._cache[size] = json_body(size)
        return self._cache[size]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                keep = await self.answer(method, target, headers, body, reader, writer)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if not writer.is_closing():
                writer.close()

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _websocket(self, headers: dict, reader, writer) -> None:  # noqa: ANN001
        """Accept the upgrade (RFC 6455) and echo text frames until a close frame."""
        key = headers.get("sec-websocket-key", "")
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        while True:
            b1, b2 = await reader.readexactly(2)
            opcode, length = b1 & 0x0F, b2 & 0x7F
            if length == 126:
                length = struct.unpack("!H", await reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await reader.readexactly(8))[0]
            mask = await reader.readexactly(4) if b2 & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(length)))
            if opcode == 8:
                writer.write(b"\x88\x00")
                await writer.drain()
                return
            if opcode == 1:
                reply = b"echo: " + data
                n = len(reply)
                head = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + struct.pack("!H", n)
                writer.write(head + reply)
                await writer.drain()

    async def answer(self, method, target, headers, body, reader, writer) -> bool:  # noqa: ANN001
        """Write one answer; return whether the connection stays open."""
        u = urlsplit(target)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        path = u.path

        def send(status: str, payload: bytes, ctype: str = "application/json", extra=()) -> None:
            hdrs = [f"HTTP/1.1 {status}", f"Content-Type: {ctype}"]
            hdrs.append(f"Content-Length: {len(payload)}")
            hdrs += list(extra)
            writer.write(("\r\n".join(hdrs) + "\r\n\r\n").encode() + payload)

        if path == "/_received":
            if method == "DELETE":
                self.received.clear()
            send("200 OK", json.dumps(list(self.received)).encode())
            return True
        self.received.append(
            {
                "method": method,
                "path": target,
                "headers": headers,
                "body": body.decode("latin-1"),
            }
        )
        if path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
            await self._websocket(headers, reader, writer)
            return False
        if path == "/json" or path == "/big":
            send("200 OK", self.body(int(q.get("size", "2048"))))
            return True
        if path == "/sse":
            events, delay = int(q.get("events", "5")), float(q.get("delay", "0")) / 1000
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
            )
            for i in range(events):
                data = json.dumps({"i": i, "text": f"write to {PII_RECORD['email']}"})
                writer.write(f"data: {data}\n\n".encode())
                await writer.drain()
                if delay:
                    await asyncio.sleep(delay)
            return False
        if path == "/slow":
            await asyncio.sleep(float(q.get("delay", "30")))
            send("200 OK", b'{"slow": true}')
            return True
        if path == "/reset":
            self._reset(writer)
            return False
        if path == "/close":
            return False
        if path == "/garbage":
            writer.write(b"this is not HTTP at all\r\n\r\n")
            return False
        if path == "/midreset":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b"Content-Length: 100000\r\n\r\n" + b'{"email": "jane.roe@exam')
            await writer.drain()
            await asyncio.sleep(0.05)
            self._reset(writer)
            return False
        if path == "/redirect":
            send(
                "302 Found",
                b"{}",
                extra=(
                    f"Location: {self.base_url}/next?page=2",
                    f'Link: <{self.base_url}/json?page=2>; rel="next", '
                    f'<https://docs.example.org/api>; rel="help"',
                    "Content-Location: /json",
                ),
            )
            return True
        if path == "/gzipbomb":
            if self._bomb is None:
                self._bomb = _gzip_bomb()
            send("200 OK", self._bomb, extra=("Content-Encoding: gzip",))
            return True
        if path == "/echo":
            payload = json.dumps(
                {
                    "method": method,
                    "path": target,
                    "headers": headers,
                    "body": body.decode("utf-8", errors="replace"),
                }
            ).encode()
            send("200 OK", payload)
            return True
        send("404 Not Found", b'{"error": "no such path"}')
        return True


async def serve(host: str, port: int) -> None:
    up = Upstream(host, port)
    server = await asyncio.start_server(up.handle, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

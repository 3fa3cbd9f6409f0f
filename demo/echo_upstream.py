"""A generic echo HTTP server (standard library only) for testing the gateway.

Every request is answered ``200`` with a JSON description of what arrived::

    {"method": "POST", "path": "/a/b", "query": "x=1&y=2",
     "args": {"x": ["1"], "y": ["2"]},
     "headers": {"host": "...", ...}, "body": "<request body as text>"}

so a test can see exactly what the gateway forwarded (injected credentials,
stripped headers, masked bodies).  Header names are lower-cased.

Special paths:

* ``/gzip/...`` answers a gzip-encoded JSON body full of personal data
  (``{"email": "jane.doe@example.com", "phone": "+1 415 555 2671"}``) with
  ``Content-Encoding: gzip``; ``/br/...`` the same with brotli and
  ``/zstd/...`` with zstandard, to test masking of compressed responses.
* ``GET /_received`` returns every request recorded so far (JSON list) and
  ``DELETE /_received`` clears the record; these two need no credentials and
  are not recorded themselves.

The same recording machinery (:class:`RecordingHTTPServer`,
:class:`RecordingHandler`) is reused by :mod:`demo.llm_upstream`.

Run it with ``python -m demo.echo_upstream --host 127.0.0.1 --port 8103``
(or env ``DEMO_ECHO_PORT``), or from a test::

    server = make_server("127.0.0.1", 0)
    start_in_thread(server)
    ... httpx.get(server.url + "/hello") ...
    server.shutdown(); server.server_close()
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "PERSONAL_JSON",
    "RecordingHTTPServer",
    "RecordingHandler",
    "EchoHandler",
    "make_server",
    "start_in_thread",
    "main",
]

#: Body served (compressed) under ``/gzip/``, ``/br/`` and ``/zstd/``.
PERSONAL_JSON: dict[str, str] = {"email": "jane.doe@example.com", "phone": "+1 415 555 2671"}

#: Path of the unauthenticated test endpoint listing recorded requests.
RECEIVED_PATH = "/_received"

#: Largest request body read (bytes); bigger ones get 413.
MAX_BODY = 32 * 1024 * 1024


class RecordingHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that keeps a record of the requests it received.

    ``received`` is a list of dicts ``{"method", "path", "headers", "body"}``
    (plus ``"query"``), appended to under a lock by the handler threads.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        server_address: tuple[str, int],
        handler_class: type[BaseHTTPRequestHandler],
        *,
        verbose: bool = False,
    ) -> None:
        """Bind to ``server_address``; ``verbose`` logs each request to stderr."""
        super().__init__(server_address, handler_class)
        self.verbose = verbose
        self.received: list[dict[str, Any]] = []
        self._received_lock = threading.Lock()

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:8103`` (no trailing slash)."""
        host, port = self.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        if ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def record(self, entry: dict[str, Any]) -> None:
        """Append one request record (thread-safe)."""
        with self._received_lock:
            self.received.append(entry)

    def received_snapshot(self) -> list[dict[str, Any]]:
        """A copy of the records, safe to serialise while requests keep arriving."""
        with self._received_lock:
            return list(self.received)

    def clear_received(self) -> None:
        """Forget every record."""
        with self._received_lock:
            self.received.clear()


class RecordingHandler(BaseHTTPRequestHandler):
    """Base request handler: HTTP/1.1, body reading, JSON replies, ``/_received``."""

    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY: a streamed answer's small writes leave at once, not after the
    #: client's delayed ACK (about 40 ms on Linux), as a real API server sends them.
    disable_nagle_algorithm = True
    server: RecordingHTTPServer
    server_version = "GatehouseDemo/1.0"

    # -- helpers --------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Log to stderr only when the server is verbose (tests stay quiet)."""
        if self.server.verbose:
            super().log_message(format, *args)

    def header_dict(self) -> dict[str, str]:
        """Request headers with lower-cased names; repeated headers joined by ``", "``."""
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def read_body(self) -> bytes:
        """Read the request body (``Content-Length`` or chunked); empty if neither."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        length = int(length_header)
        if length < 0 or length > MAX_BODY:
            raise ValueError(f"bad Content-Length {length}")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        """Decode a chunked request body (trailers are read and dropped)."""
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise ValueError("chunked body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline(3)  # CRLF after the chunk

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        """Send a complete response with ``Content-Length`` (keeps the connection alive)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status: int, obj: Any, extra_headers: dict[str, str] | None = None) -> None:
        """Send ``obj`` as a JSON response."""
        body = json.dumps(obj).encode("utf-8")
        self.send_bytes(status, body, "application/json", extra_headers)

    def split_target(self) -> tuple[str, str]:
        """Split the request target into (path, raw query string)."""
        parts = urlsplit(self.path)
        return parts.path or "/", parts.query

    def record_request(self, body: bytes) -> dict[str, Any]:
        """Record this request on the server and return the record."""
        path, query = self.split_target()
        entry: dict[str, Any] = {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": self.header_dict(),
            "body": body.decode("utf-8", errors="replace"),
        }
        self.server.record(entry)
        return entry

    def handle_received_endpoint(self) -> bool:
        """Serve ``GET``/``DELETE /_received``; return True if this request was one."""
        path, _ = self.split_target()
        if path != RECEIVED_PATH or self.command not in ("GET", "DELETE"):
            return False
        self.read_body()  # drain, if any
        if self.command == "GET":
            self.send_json(HTTPStatus.OK, self.server.received_snapshot())
        else:
            self.server.clear_received()
            self.send_json(HTTPStatus.OK, {"cleared": True})
        return True

    def handle_any(self) -> None:
        """Handle one request of any method; subclasses implement ``respond``."""
        if self.handle_received_endpoint():
            return
        try:
            body = self.read_body()
        except ValueError as exc:
            self.close_connection = True
            self.send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": str(exc)})
            return
        entry = self.record_request(body)
        self.respond(entry, body)

    def respond(self, entry: dict[str, Any], body: bytes) -> None:
        """Answer a recorded request (override in subclasses)."""
        raise NotImplementedError

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = handle_any


def _compress(encoding: str, data: bytes) -> bytes:
    """Compress ``data`` with ``gzip``, ``br`` or ``zstd``."""
    if encoding == "gzip":
        return gzip.compress(data, mtime=0)
    if encoding == "br":
        import brotli

        return brotli.compress(data)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    raise ValueError(encoding)


#: Path prefix -> Content-Encoding of the compressed personal-data endpoints.
COMPRESSED_PREFIXES: dict[str, str] = {"/gzip/": "gzip", "/br/": "br", "/zstd/": "zstd"}


class EchoHandler(RecordingHandler):
    """Answer every request with a JSON echo of it (see the module docstring)."""

    def respond(self, entry: dict[str, Any], body: bytes) -> None:
        """Echo the request, or serve compressed personal data under ``/gzip/`` etc."""
        path = entry["path"]
        for prefix, encoding in COMPRESSED_PREFIXES.items():
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                raw = json.dumps(PERSONAL_JSON).encode("utf-8")
                self.send_bytes(
                    HTTPStatus.OK,
                    _compress(encoding, raw),
                    "application/json",
                    {"Content-Encoding": encoding, "Vary": "Accept-Encoding"},
                )
                return
        echo = {
            "method": entry["method"],
            "path": path,
            "query": entry["query"],
            "args": parse_qs(entry["query"], keep_blank_values=True),
            "headers": entry["headers"],
            "body": entry["body"],
        }
        self.send_json(HTTPStatus.OK, echo)


def make_server(host: str, port: int, *, verbose: bool = False) -> RecordingHTTPServer:
    """Create (bind, not start) an echo server; ``port=0`` picks a free port.

    Start it with ``serve_forever()`` (or :func:`start_in_thread`); the
    chosen address is ``server.server_address`` and ``server.url``.
    """
    return RecordingHTTPServer((host, port), EchoHandler, verbose=verbose)


def start_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Run ``server.serve_forever()`` in a daemon thread and return the thread.

    Stop it with ``server.shutdown()`` then ``server.server_close()``.
    """
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"{type(server).__name__}-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return thread


def serve_until_signal(server: ThreadingHTTPServer, name: str) -> None:
    """Serve in the foreground until SIGINT/SIGTERM, then close the socket."""

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    host, port = server.server_address[:2]
    print(f"{name} listening on http://{host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: ``python -m demo.echo_upstream [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(
        prog="python -m demo.echo_upstream", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("DEMO_ECHO_PORT", "8103")),
        help="port (default: env DEMO_ECHO_PORT or 8103)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, verbose=not args.quiet)
    serve_until_signal(server, "echo upstream")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

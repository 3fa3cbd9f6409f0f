"""Hostile and broken input through the real proxy: a clear JSON error or correct masking,
never unmasked personal data upstream or back to the agent, and the worker stays up.

What reached the upstream is read from the upstream's own record (``/_received``),
directly, not through the gateway.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import zlib

import brotli
import httpx
import pytest

from tests.reliability.harness import HAPROXY, UPSTREAM_SECRET, Gateway
from tests.reliability.upstream import RAW_PII

pytestmark = pytest.mark.reliability

EMAIL = "jane.roe@example.com"
SSN = "123-45-6789"
MAX_MASK = 256 * 1024
#: Known bug, reported to the policy owner: split_reverse_path refuses dot segments and
#: encoded slashes only in the slug, so /api/..%2fforbidden reaches the upstream as
#: /..%2fforbidden; access rules match the decoded "/../forbidden", which no "/forbidden*"
#: glob matches, and an upstream that decodes %2F before normalising serves /forbidden.


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    """One worker with a small masking limit (``GATEHOUSE_MAX_MASK_BYTES`` = 256 KiB)."""
    gw = Gateway(tmp_path_factory.mktemp("bad"), upstream_timeout=5.0)
    gw.env["GATEHOUSE_MAX_MASK_BYTES"] = str(MAX_MASK)
    try:
        gw.start(1)
    except Exception:
        gw.stop()
        raise
    yield gw
    log = gw.procs["w1"].log()
    gw.stop()
    assert "mitmproxy has crashed" not in log
    assert UPSTREAM_SECRET not in log and gw.token not in log


@pytest.fixture
def sent(gw):
    """Clears the upstream's record; returns a function giving what reached it since."""
    gw.clear_received()
    return gw.received


def _clean(text: str) -> bool:
    return not any(v in text for v in (*RAW_PII, EMAIL, SSN))


def _assert_refused_or_masked(r: httpx.Response, received: list[dict]) -> None:
    """Either a JSON error and nothing upstream, or forwarded with no raw PII."""
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/json", r.text[:200]
        assert "code" in r.json()["error"]
    for req in received:
        assert _clean(req["body"]) and _clean(req["path"]), req
    assert _clean(r.text)


def _post(gw, body: bytes, ctype: str | None, path: str = "/api/echo", **headers: str):
    hdrs = gw.headers(**headers)
    if ctype:
        hdrs["Content-Type"] = ctype
    return httpx.post(gw.worker_url() + path, content=body, headers=hdrs, timeout=30)


def raw_http(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to the worker and read the answer (for what httpx would not send)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out:
                    head, _, rest = out.partition(b"\r\n\r\n")
                    length = next(
                        (
                            int(line.split(b":")[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ),
                        None,
                    )
                    if length is not None and len(rest) >= length:
                        break
        except TimeoutError:
            pass
    return out


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else 0


# -- bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, ctype",
    [
        (b'{"email": "jane.roe@example.com", "ssn": "123-45-6789", ', "application/json"),
        (b'{"a": [1, 2,, "jane.roe@example.com"]}', "application/json"),
        (b"\xff\xfe\xfa jane.roe@example.com \x80\x81 123-45-6789", "text/plain"),
        (b'{"email": "jane.roe@example.com\xff\xfe"}', "application/json"),
        (b'{"email": "jane.roe@example.com"}', "application/json; charset=utf-16"),
        (b'{"email": "jane.roe@example.com"}', "application/json; charset=latin-1"),
        ('{"email": "jane.roe@example.com"}'.encode("utf-16"), "application/json"),
        (b"email=jane.roe%40example.com&ssn=123-45-6789", "application/x-www-form-urlencoded"),
        (b'{"email": "jane.roe@example.com"}', "text/html"),
        (b'{"email": "jane.roe@example.com"}', None),
        (b'{"email": "jane.roe@example.com"}', "application/octet-stream"),
        (b'{"email": "jane.roe@example.com"}', "image/png"),
        (b'{"email": "jane.roe@example.com"}', "multipart/form-data; boundary=x"),
        (b'{"email": "jane.roe@example.com"}', "application/json; charset=nonsense"),
    ],
    ids=[
        "truncated-json",
        "malformed-json",
        "invalid-utf8-text",
        "invalid-utf8-in-json",
        "charset-lies-utf16",
        "charset-lies-latin1",
        "real-utf16-undeclared",
        "form",
        "json-as-html",
        "no-content-type",
        "json-as-octet-stream",
        "json-as-png",
        "json-as-multipart",
        "unknown-charset",
    ],
)
def test_broken_or_mislabelled_bodies_never_carry_pii_upstream(gw, sent, body, ctype):
    r = _post(gw, body, ctype)
    _assert_refused_or_masked(r, sent())


def test_deeply_nested_json_is_refused_or_masked_and_the_worker_survives(gw, sent):
    depth = 100_000
    body = b"[" * depth + json.dumps(EMAIL).encode() + b"]" * depth
    r = _post(gw, body, "application/json")
    _assert_refused_or_masked(r, sent())
    obj = {"email": EMAIL}
    for _ in range(500):
        obj = {"a": obj}
    r = _post(gw, json.dumps(obj).encode(), "application/json")
    _assert_refused_or_masked(r, sent())
    assert httpx.get(gw.worker_url() + "/api/json", headers=gw.headers()).status_code == 200


def test_a_body_over_the_masking_limit_is_refused(gw, sent):
    body = json.dumps({"email": EMAIL, "pad": "x" * MAX_MASK}).encode()
    r = _post(gw, body, "application/json")
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large_to_mask"
    assert sent() == []
    big = httpx.get(f"{gw.worker_url()}/api/big?size={MAX_MASK * 2}", headers=gw.headers())
    assert big.status_code == 502
    assert big.json()["error"]["code"] == "response_too_large_to_mask"


def test_a_body_over_the_proxy_limit_gets_a_json_413(gw, sent):
    r = _post(gw, b"x" * (64 * 1024 * 1024 + 10), "text/plain")
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/json"
    assert sent() == []


def test_a_gzip_bomb_request_is_refused(gw, sent):
    bomb = gzip.compress(b"\0" * (256 * 1024 * 1024) + EMAIL.encode())
    r = _post(gw, bomb, "text/plain", **{"Content-Encoding": "gzip"})
    assert r.status_code in (400, 413), r.text[:200]
    assert r.headers["content-type"] == "application/json"
    assert sent() == []


def test_a_gzip_bomb_response_is_refused(gw):
    r = httpx.get(f"{gw.worker_url()}/api/gzipbomb", headers=gw.headers(), timeout=60)
    assert r.status_code == 502 and r.headers["content-type"] == "application/json"


def _layers(body: bytes) -> list[bytes]:
    """``body`` and every layer gzip/brotli/deflate-decoding it peels off."""
    out = [body]
    for _ in range(5):
        for decode in (gzip.decompress, brotli.decompress, zlib.decompress):
            try:
                body = decode(body)
            except Exception:  # noqa: S112 - not this encoding: try the next
                continue
            out.append(body)
            break
        else:
            break
    return out


@pytest.mark.parametrize(
    "encoding, applied",
    [
        ("gzip, br", ["gzip", "br"]),
        ("br, gzip", ["br", "gzip"]),
        ("gzip, gzip", ["gzip", "gzip"]),
        ("x-unknown", []),
        ("br", ["gzip"]),  # the header lies about the encoding
        ("gzip", []),  # says gzip, is plain
    ],
)
def test_stacked_lying_or_unknown_encodings_never_carry_pii(gw, sent, encoding, applied):
    body = json.dumps({"email": EMAIL}).encode()
    for enc in applied:  # Content-Encoding lists codings in the order they were applied
        body = {"gzip": gzip.compress, "br": brotli.compress}[enc](body)
    r = _post(gw, body, "application/json", **{"Content-Encoding": encoding})
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/json"
    for req in sent():
        raw = req["body"].encode("latin-1")
        assert all(EMAIL.encode() not in layer for layer in _layers(raw)), (encoding, raw[:80])


# -- headers ----------------------------------------------------------------------------------


def test_header_injection_and_smuggling_attempts_are_refused(gw, sent):
    port = gw.worker_ports["w1"]
    auth = f"Authorization: Bearer {gw.token}\r\n".encode()
    attempts = {
        "bare-lf-in-header": b"GET /api/echo HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"X-A: 1\nX-Injected: 1\r\n\r\n",
        "obs-fold": b"GET /api/echo HTTP/1.1\r\nHost: x\r\n" + auth + b"X-A: 1\r\n  folded\r\n\r\n",
        "cl-te": b"POST /api/echo HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + b"GET /api/forbidden HTTP/1.1\r\nHost: x\r\n\r\n",
        "two-content-lengths": b"POST /api/echo HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
        "space-before-colon": b"GET /api/echo HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "nul-in-header": b"GET /api/echo HTTP/1.1\r\nHost: x\r\n" + auth + b"X-A: a\x00b\r\n\r\n",
    }
    for name, data in attempts.items():
        answer = raw_http(port, data)
        status = _status(answer)
        # mitmproxy's parser refuses these (400, now a JSON body) or the request is
        # forwarded with the agent's token stripped and nothing smuggled.
        if status == 400:
            assert b"application/json" in answer, (name, answer[:300])
        else:
            assert status in (200, 0), (name, answer[:300])
    for req in sent():
        # A bare LF ends a header line (RFC 9112 §2.2 allows it): "X-Injected" arrives
        # as a header of the agent's own request, which the agent could send anyway.
        assert gw.token not in json.dumps(req)
        assert "/forbidden" not in req["path"]
        assert "\n" not in json.dumps(req["headers"]).replace("\\n", "")


def test_the_agent_cannot_override_the_injected_credential_or_see_it(gw, sent):
    r = httpx.get(
        gw.worker_url() + "/api/echo",
        headers={
            "Authorization": f"Bearer {gw.token}",
            "Proxy-Authorization": "Bearer attacker-chosen",
            "X-Gatehouse-Session": "s1 <script>x</script>",
        },
    )
    assert r.status_code == 200
    (req,) = sent()
    assert req["headers"]["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert "proxy-authorization" not in req["headers"]
    assert gw.token not in json.dumps(req)
    # The echo's answer carries the credential back: the gateway must not show it.
    assert UPSTREAM_SECRET not in r.text


# -- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/../down/x",
        "/api/%2e%2e/down/x",
        "/api/%2E%2e/down/x",
        "/api/.%2e/down/x",
        "/api/%2e/json",
        "/api%2Fdown/x",
        "/api%2fjson",
        "/%61pi/json",
        "/api/..%2fdown/x",
        "/api/..%2Fforbidden",
        "/api/%252e%252e/down/x",
        "/api/..%5cdown/x",
        "/api\\..\\down/x",
        "/./api/json",
        "/../api/json",
    ],
)
def test_path_tricks_in_the_target_prefix_are_refused(gw, sent, path):
    auth = f"Authorization: Bearer {gw.token}\r\n".encode()
    answer = raw_http(
        gw.worker_ports["w1"], f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + auth + b"\r\n"
    )
    assert _status(answer) in (400, 404), answer[:300]
    assert b"application/json" in answer
    assert sent() == []


# -- protocols -------------------------------------------------------------------------------


def test_http2_prior_knowledge_straight_to_a_worker_is_refused(gw, sent):
    """mitmproxy's plain-HTTP listener does not speak h2c: the connection is closed."""
    with (
        httpx.Client(http1=False, http2=True, base_url=gw.worker_url()) as c,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        c.get("/api/json", headers=gw.headers())
    assert sent() == []


@pytest.mark.skipif(not HAPROXY, reason="haproxy is not installed (apt-get install haproxy)")
def test_http2_clients_through_the_balancer_get_the_same_policy_and_masking(gw, sent):
    lb = gw.start_haproxy(["w1"], h2=True)
    try:
        with httpx.Client(http1=False, http2=True, base_url=lb) as c:
            r = c.get("/api/json", headers=gw.headers())
            assert r.http_version == "HTTP/2"
            assert r.status_code == 200 and "[EMAIL]" in r.text and _clean(r.text)
            assert c.get("/api/json").status_code == 401
            assert c.get("/api/forbidden", headers=gw.headers()).status_code == 403
            r = c.post(
                "/api/echo",
                headers={**gw.headers(), "Content-Type": "application/json"},
                content=json.dumps({"email": EMAIL}).encode(),
            )
            assert r.status_code == 200 and _clean(r.text)
            down = c.get("/down/x", headers=gw.headers())
            assert down.status_code == 502
            assert down.json()["error"]["code"] == "upstream_unreachable"
    finally:
        gw.procs.pop("haproxy").stop()
    for req in sent():
        assert _clean(req["body"])


def _ws_handshake(gw, path: str, token: str | None) -> tuple[int, socket.socket]:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: x",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    s = socket.create_connection(("127.0.0.1", gw.worker_ports["w1"]), timeout=5)
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return _status(head), s


def _ws_send_text(s: socket.socket, text: str) -> bytes:
    data = text.encode()
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | len(data)]) + mask
    frame += bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    s.sendall(frame)
    try:
        return s.recv(4096)
    except TimeoutError:
        return b""


def test_websocket_upgrades_obey_policy_and_are_refused(gw, sent):
    status, s = _ws_handshake(gw, "/api/ws", None)
    s.close()
    assert status == 401
    status, s = _ws_handshake(gw, "/api/forbidden", gw.token)
    s.close()
    assert status == 403
    # Allowed by policy, but an upgraded connection's messages could not be masked: 501.
    status, s = _ws_handshake(gw, "/api/ws", gw.token)
    s.close()
    assert status == 501
    assert sent() == []
    ws = [x for x in gw.exchanges() if x.url.endswith("/ws") and x.status_code == 501]
    assert ws and ws[-1].error == "upgrade_not_supported"

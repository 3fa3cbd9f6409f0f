"""UpstreamErrors: JSON 502/504 answers for upstream failures, and no upstream URL leaks.

mitmproxy 12.2 answers an upstream that refuses, resets or closes the connection with its
own HTML page, sent from deep inside its HTTP layer, after the ``error`` hook, and never
recorded. It has no timeout on waiting for an upstream response at all. This addon:

* starts a watchdog when a request goes upstream (``request``, after every policy addon)
  and, if no response headers arrived within ``upstream_timeout`` seconds, aborts the
  upstream connection and answers **504** ``upstream_timeout``;
* turns refused, reset or closed upstream connections and invalid upstream responses
  into **502** JSON answers (``upstream_unreachable``, ``upstream_error``) that go
  through the normal ``response`` hooks, so the Recorder stores them as exchanges;
* replaces the target's credential by ``[REDACTED]`` where an upstream reflects it in a
  buffered response (headers and body), so neither the agent nor the recording gets it;
* refuses WebSocket upgrades with **501** ``upgrade_not_supported`` (their messages
  would bypass masking and recording) and strips other ``Upgrade`` offers;
* rewrites ``Location``, ``Content-Location`` and ``Link`` response headers that point at
  the target's upstream base URL to the gateway path ``/<slug>/…`` and drops the ones
  that point elsewhere on the upstream host (``responseheaders``), so agents never learn
  the upstream address (reverse mode only: forward-mode agents name the upstream).

The 502/504 answers need one hook mitmproxy 12.2 lacks: an error that happens before any
response byte reached the client is answered with ``flow.response`` through the normal
response path. :func:`install_error_response_shim` adds it by wrapping
``HttpStream.handle_protocol_error`` (what upstream mitmproxy PR #7999 proposes). The
remaining HTML answers mitmproxy writes itself (malformed client requests) become JSON
through :func:`json_error_page`. Messages never carry the upstream address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from mitmproxy import ctx, http
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import ErrorCode, HttpStream, ResponseProtocolError
from mitmproxy.proxy.layers.http import _http1 as mitm_http1

from proxy_worker.flowstate import answer_error, state_of
from proxy_worker.forward import is_forward
from proxy_worker.policy import Target

log = logging.getLogger("gatehouse.upstream_errors")

#: ``flow.metadata`` key set when the watchdog aborted the upstream connection.
TIMED_OUT_KEY = "gatehouse.upstream_timed_out"
#: Response headers whose URLs are rewritten from the upstream to the gateway.
URL_HEADERS = ("location", "content-location")
#: Upstream failures answered through the response path (before any byte was sent).
UPSTREAM_CODES = frozenset(
    {
        ErrorCode.CONNECT_FAILED,
        ErrorCode.GENERIC_SERVER_ERROR,
        ErrorCode.RESPONSE_VALIDATION_FAILED,
        ErrorCode.RESPONSE_TOO_LARGE,
    }
)
DEFAULT_PORTS = {"http": 80, "https": 443}


# -- pure helpers -------------------------------------------------------------------------


def classify_upstream_error(code: ErrorCode, message: str, timed_out: bool) -> tuple[int, str, str]:
    """``(status, error code, message)`` for an upstream failure; never names the upstream.

    ``timed_out`` (set by the watchdog) wins: the connection was aborted by us.
    """
    if timed_out:
        return 504, "upstream_timeout", "the upstream did not answer in time"
    low = message.lower()
    if code == ErrorCode.RESPONSE_TOO_LARGE:
        return 502, "upstream_response_too_large", "the upstream response exceeds the size limit"
    if code == ErrorCode.RESPONSE_VALIDATION_FAILED:
        return 502, "upstream_error", "the upstream sent an invalid HTTP response"
    if code == ErrorCode.CONNECT_FAILED:
        refused = "refused" in low or "errno 111" in low or "connect call failed" in low
        reason = "connection refused" if refused else "connection failed"
        return 502, "upstream_unreachable", f"the upstream could not be reached ({reason})"
    if "reset" in low:
        reason = "connection reset"
    elif "invalid" in low or "malformed" in low or "bad " in low:
        reason = "invalid response"
    else:
        reason = "connection closed before a complete response"
    return 502, "upstream_error", f"the upstream failed ({reason})"


def _origin(scheme: str, host: str, port: int | None) -> tuple[str, str, int]:
    scheme = scheme.lower()
    return scheme, host.lower(), port or DEFAULT_PORTS.get(scheme, 0)


def rewrite_upstream_url(value: str, upstream: str, slug: str) -> str | None:
    """Map a URL the upstream sent to the gateway path of its target.

    ``upstream`` is the target's base URL (``http://host:port/base``). A URL under it
    (absolute, or an absolute path under ``/base``) becomes ``/<slug>/rest`` (a relative
    reference, valid in ``Location`` and ``Link``); any other URL on the upstream's origin
    returns ``None`` (drop it: it would reveal the upstream); foreign URLs are kept.
    """
    value = value.strip()
    base = urlsplit(upstream)
    base_path = base.path.rstrip("/")
    try:
        u = urlsplit(value)
        port = u.port
    except ValueError:
        return None  # unparseable: do not pass on what we cannot check
    if u.scheme or u.netloc:
        if not u.netloc:
            return value  # mailto:, urn: and the like
        same_origin = _origin(u.scheme or base.scheme, u.hostname or "", port) == _origin(
            base.scheme, base.hostname or "", base.port
        )
        if not same_origin:
            # Foreign URLs are kept, unless the upstream's host hides in them (user info).
            return None if (base.hostname or "\0") in u.netloc.lower() else value
    elif not value.startswith("/"):
        return value  # relative reference: resolves under the gateway path already
    path = u.path
    if base_path and not (path == base_path or path.startswith(base_path + "/")):
        return None  # elsewhere on the upstream: it would reveal the upstream's layout
    rest = path[len(base_path) :] or "/"
    out = f"/{slug}{rest}"
    if u.query:
        out += f"?{u.query}"
    if u.fragment:
        out += f"#{u.fragment}"
    return out


_LINK_VALUE = re.compile(r"\s*<([^>]*)>([^,]*(?:\"[^\"]*\"[^,]*)*)")


def rewrite_link_header(value: str, upstream: str, slug: str) -> str | None:
    """Rewrite every URI of an RFC 8288 ``Link`` header; drop link-values that leak.

    Returns ``None`` when no link-value is left.
    """
    out = []
    pos = 0
    while pos < len(value):
        m = _LINK_VALUE.match(value, pos)
        if m is None:
            return ", ".join(out) or None  # unparseable tail: dropped
        new = rewrite_upstream_url(m.group(1), upstream, slug)
        if new is not None:
            out.append(f"<{new}>{m.group(2).rstrip()}")
        pos = m.end()
        while pos < len(value) and value[pos] in ", ":
            pos += 1
    return ", ".join(out) or None


#: Lower-case names of every header :func:`rewrite_response_headers` looks at.
_URL_HEADER_KEYS = frozenset(n.encode() for n in (*URL_HEADERS, "link"))


def rewrite_response_headers(headers: http.Headers, target: Target) -> int:
    """Rewrite or drop URL headers of an upstream response in place; returns changes made."""
    if not any(name.lower() in _URL_HEADER_KEYS for name, _v in headers.fields):
        return 0  # one pass over the fields instead of a lookup per name
    changed = 0
    for name in URL_HEADERS:
        values = headers.get_all(name)
        if not values:
            continue
        new = [rewrite_upstream_url(x, target.upstream, target.slug) for x in values]
        kept = [v for v in new if v is not None]
        if kept != values:
            changed += 1
            headers.set_all(name, kept)
    links = headers.get_all("link")
    if links:
        new_links = [rewrite_link_header(v, target.upstream, target.slug) for v in links]
        kept = [v for v in new_links if v is not None]
        if kept != links:
            changed += 1
            headers.set_all("link", kept)
    return changed


def json_error_page(status_code: int, message: str = "") -> bytes:
    """Stand-in for mitmproxy's HTML error page (HTTP/1): the gateway's JSON error body.

    Only client errors (4xx) repeat mitmproxy's message; server-side ones never do, since
    it can contain the upstream address.
    """
    if 400 <= status_code < 500:
        code = "request_too_large" if status_code == 413 else "bad_request"
        text = message.strip()[:300] or "the request could not be parsed"
    else:
        code, text = "upstream_error", "the request could not be completed upstream"
    body = json.dumps({"error": {"code": code, "message": text}}).encode()
    resp = http.Response.make(
        status_code,
        body,
        {"Content-Type": "application/json", "Cache-Control": "no-store", "Connection": "close"},
    )
    return http1.assemble_response(resp)


# -- the mitmproxy 12.2 shim ----------------------------------------------------------------

#: Called with (flow, event) for upstream failures before any response byte was sent;
#: returns True when it set ``flow.response`` (then sent through the response path).
Responder = Callable[[http.HTTPFlow, ResponseProtocolError], bool]
_responder: Responder | None = None
_original_handle_protocol_error = HttpStream.handle_protocol_error


def _handle_protocol_error(self: HttpStream, event):  # type: ignore[no-untyped-def]
    flow = self.flow
    if (
        _responder is not None
        and isinstance(event, ResponseProtocolError)
        and event.code in UPSTREAM_CODES
        and self.client_state == self.state_done  # the whole request was read
        and self.server_state not in (self.state_done, self.state_errored)
        and (flow.response is None or not flow.response.stream)  # nothing sent yet
        and flow.websocket is None
    ):
        try:
            answered = _responder(flow, event)
        except Exception:  # fall back to mitmproxy's own answer
            log.exception("upstream error responder failed")
            answered = False
        if answered and flow.response is not None:
            yield from self.send_response()
            # The upstream side may still report its end (a close after garbage, say):
            # this stream is finished for both sides, so later events are swallowed.
            self.client_state = self.server_state = self.state_errored
            return
    yield from _original_handle_protocol_error(self, event)


def install_error_response_shim(responder: Responder) -> None:
    """Route early upstream failures to ``responder`` and JSON-ify mitmproxy's error pages.

    Idempotent; the last responder installed wins (one worker process runs one addon).
    """
    global _responder
    _responder = responder
    HttpStream.handle_protocol_error = _handle_protocol_error  # type: ignore[method-assign]
    mitm_http1.make_error_response = json_error_page  # type: ignore[assignment]


# -- the addon --------------------------------------------------------------------------


class UpstreamErrors:
    """Upstream timeouts and failures as JSON 502/504 exchanges; upstream URLs hidden.

    ``upstream_timeout`` is in seconds (time until the upstream's response headers).
    """

    def __init__(self, upstream_timeout: float = 60.0) -> None:
        if upstream_timeout <= 0:
            raise ValueError("upstream_timeout must be positive")
        self.upstream_timeout = upstream_timeout
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def load(self, loader) -> None:  # noqa: ANN001 - mitmproxy's Loader
        install_error_response_shim(self.answer)

    # -- hooks --------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        if refuse_upgrade(flow):
            return
        loop = asyncio.get_running_loop()
        self._timers[flow.id] = loop.call_later(self.upstream_timeout, self._expire, flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)
        st = state_of(flow)
        if st.answered_by_gateway or st.target is None or flow.response is None:
            return
        if is_forward(flow):
            return  # forward-mode agents address the upstream by its own name already
        try:
            rewrite_response_headers(flow.response.headers, st.target)
        except Exception:  # fail closed: drop every URL header rather than leak
            log.exception("could not rewrite upstream URL headers")
            for name in (*URL_HEADERS, "link"):
                flow.response.headers.pop(name, None)

    def response(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)
        st = state_of(flow)
        if st.answered_by_gateway or st.target is None or flow.response is None:
            return
        if st.target.credential and st.stream is None:
            # An undecodable body raises ValueError: ResponseMasking then refuses it (502).
            with contextlib.suppress(ValueError):
                scrub_credential(flow.response, st.target.credential)

    def error(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)
        st = state_of(flow)
        if flow.response is not None and not st.answered_by_gateway and not st.error:
            # The upstream failed after its headers were streamed to the agent.
            st.decision = "error"
            st.error = "upstream_error_mid_response"
            if st.stream is not None and st.response_record is None:
                st.response_record = bytes(st.stream.recorded)  # what the agent got, masked

    # -- internals ------------------------------------------------------------------------

    def answer(self, flow: http.HTTPFlow, event: ResponseProtocolError) -> bool:
        """Set the JSON 502/504 answer for an upstream failure (the shim's responder)."""
        self._cancel(flow)
        st = state_of(flow)
        if st.answered_by_gateway:
            return False
        status, code, message = classify_upstream_error(
            event.code, event.message, bool(flow.metadata.get(TIMED_OUT_KEY))
        )
        log.warning(
            "upstream failure on %s %s: %s (%s)",
            flow.request.method,
            st.target.slug if st.target else "?",
            code,
            event.message,
        )
        extra = {"target": st.target.slug} if st.target else {}
        answer_error(flow, status, code, message, **extra)
        return True

    def _cancel(self, flow: http.HTTPFlow) -> None:
        timer = self._timers.pop(flow.id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, flow: http.HTTPFlow) -> None:
        self._timers.pop(flow.id, None)
        if flow.response is not None or flow.error is not None or not flow.live:
            return
        flow.metadata[TIMED_OUT_KEY] = True
        if not abort_upstream(flow):
            log.error("upstream timeout: no upstream connection found to abort")

    def done(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


def scrub_credential(response: http.Response, credential: str) -> int:
    """Replace the target's credential wherever an upstream reflected it (body, headers).

    An upstream that echoes request headers (debug endpoints, httpbin-style APIs) would
    otherwise hand the agent the very credential the gateway keeps from it, and the
    recording would store it. Returns the number of places scrubbed. Raises
    ``ValueError`` when the body cannot be decoded.
    """
    secret = credential.encode()
    if len(secret) < 8:
        return 0  # too short to replace without mangling unrelated bytes
    n = 0
    fields = response.headers.fields
    if any(credential in v.decode("utf-8", "surrogateescape") for _k, v in fields):
        for name in list(response.headers):
            values = response.headers.get_all(name)
            if any(credential in v for v in values):
                new = [v.replace(credential, "[REDACTED]") for v in values]
                response.headers.set_all(name, new)
                n += 1
        fields = response.headers.fields
    raw = response.raw_content or b""
    coding = [
        v.decode("utf-8", "surrogateescape") for k, v in fields if k.lower() == b"content-encoding"
    ]
    encoded = bool(", ".join(coding).strip())  # as headers.get("content-encoding", "")
    if not encoded and secret not in raw:
        return n
    body = response.content or b""
    if secret in body:
        response.content = body.replace(secret, b"[REDACTED]")
        n += 1
    return n


def refuse_upgrade(flow: http.HTTPFlow) -> bool:
    """Refuse WebSocket upgrades (501 JSON); strip other ``Upgrade`` offers (h2c, TLS).

    Messages on an upgraded connection would bypass masking and recording, so the
    gateway never lets a connection be upgraded. Runs after the policy addons: an
    unknown agent still gets 401, a denied path 403. Returns True when it answered.
    """
    upgrade = flow.request.headers.get("upgrade", "")
    if not upgrade:
        return False
    if "websocket" in upgrade.lower():
        answer_error(
            flow,
            501,
            "upgrade_not_supported",
            "WebSocket connections are not supported: their messages cannot be masked",
            decision="denied",
        )
        return True
    flow.request.headers.pop("upgrade", None)
    conn = [
        t.strip()
        for t in flow.request.headers.get("connection", "").split(",")
        if t.strip() and t.strip().lower() != "upgrade"
    ]
    if conn:
        flow.request.headers["connection"] = ", ".join(conn)
    else:
        flow.request.headers.pop("connection", None)
    return False


def abort_upstream(flow: http.HTTPFlow) -> bool:
    """Cancel the upstream connection (being opened or open) of ``flow``; True if found."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver else None
    if handler is None:
        return False
    address = (flow.request.host, flow.request.port)
    for conn, io in list(handler.transports.items()):
        if conn is handler.client or io.handler is None:
            continue
        if conn is flow.server_conn or conn.address == address:
            io.handler.cancel("gatehouse: upstream timeout")
            return True
    return False

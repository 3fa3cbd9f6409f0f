"""PolicyGate: identify the agent, resolve the target, apply the access rules.

First Gatehouse addon in the chain. The agent is identified by a Gatehouse token or an
OpenID Connect JWT (:mod:`proxy_worker.identity`; repeated failures from one address are
answered 429). The target is resolved by path prefix on the reverse listener and by
scheme, host, port and base path on the forward listener (:mod:`proxy_worker.forward`).

Fails closed: any exception in the hook becomes a 500 JSON answer (mitmproxy would
otherwise log it and forward the request).
"""

from __future__ import annotations

import functools
import logging
import re

from mitmproxy import http
from mitmproxy.net.http import url as mitm_url

from proxy_worker.flowstate import SESSION_HEADER, answer_error, state_of
from proxy_worker.forward import is_forward, tunnel_credential
from proxy_worker.identity import Authenticator, TokenUsage
from proxy_worker.link import ControlPlaneLink
from proxy_worker.policy import (
    PathError,
    Target,
    extract_token,
    request_info,
    split_reverse_path,
    with_fingerprint,
)

log = logging.getLogger("gatehouse.policy_gate")

#: Headers that carry the agent's own credential; never forwarded upstream.
AGENT_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization")
_AGENT_CREDENTIAL_KEYS = frozenset(h.encode() for h in AGENT_CREDENTIAL_HEADERS)
_SESSION_KEY = SESSION_HEADER.lower().encode()


def _native(value: bytes) -> str:
    """A header value as mitmproxy's ``Headers`` returns it."""
    return value.decode("utf-8", "surrogateescape")


def _header_values(headers: http.Headers) -> tuple[str | None, str | None]:
    """``(Authorization, Proxy-Authorization)`` as ``headers.get`` returns them (repeated
    headers joined with ``", "``, ``None`` when absent), in one pass over the fields."""
    auth: list[bytes] = []
    proxy: list[bytes] = []
    for name, value in headers.fields:
        key = name.lower()
        if key == b"authorization":
            auth.append(value)
        elif key == b"proxy-authorization":
            proxy.append(value)
    return (
        ", ".join(map(_native, auth)) if auth else None,
        ", ".join(map(_native, proxy)) if proxy else None,
    )


def _strip_agent_headers(headers: http.Headers, credentials: list[str]) -> str:
    """Remove the agent's headers before anything goes upstream; return the session key.

    Removed: ``Authorization`` and ``Proxy-Authorization``; every header whose value
    contains one of the agent's ``credentials`` (agents or their SDKs sometimes repeat
    the token in ``X-Api-Key``, a cookie or a custom header: Gatehouse tokens are for
    Gatehouse only); then ``X-Gatehouse-Session``, whose values (joined with ``", "``,
    at most 200 characters; ``""`` when absent or removed as a credential carrier) are
    returned. Credentials shorter than 16 characters are ignored (no real token is that
    short, and short strings would match innocent values). Names compare case-insensitively;
    one pass over the header fields, one assignment.
    """
    secrets = [c for c in credentials if c and len(c) >= 16]
    kept = [(name, name.lower(), value) for name, value in headers.fields]
    kept = [f for f in kept if f[1] not in _AGENT_CREDENTIAL_KEYS]
    if secrets:
        carriers = {key for _n, key, value in kept if any(sec in _native(value) for sec in secrets)}
        if carriers:
            kept = [f for f in kept if f[1] not in carriers]
    session = [_native(value) for _n, key, value in kept if key == _SESSION_KEY]
    if session:
        kept = [f for f in kept if f[1] != _SESSION_KEY]
    if len(kept) != len(headers.fields):
        headers.fields = tuple((name, value) for name, _k, value in kept)
    return ", ".join(session)[:200]


#: Printable ASCII but ``#`` and ``;``: a path mitmproxy's URL parser leaves as it is.
_PLAIN_PATH = re.compile(r"/[!-\"$-:<-~]*")


@functools.lru_cache(maxsize=1024)
def _upstream_origin(upstream: str) -> tuple[bytes, str, int, bytes, str] | None:
    """``(scheme, host, port, base path, host header value)`` as ``Request.url = upstream
    + path`` would set them (mitmproxy's parser: IDNA host, default ports; the ``Host``
    value without a default port), or ``None`` when the upstream URL has a query,
    parameters or a fragment (then the URL is set the slow way)."""
    try:
        scheme, host, port, path = mitm_url.parse(upstream.rstrip("/") + "/")
    except ValueError:
        return None
    if not path.endswith(b"/") or any(c in path for c in (b"?", b";", b"#")):
        return None
    name = host.decode("idna")  # what the host setter stores
    host_value = mitm_url.hostport(scheme.decode(), name, port)
    return scheme, name, port, path[:-1], host_value


def set_upstream(request: http.Request, target: Target, upstream_path: str) -> None:
    """Point ``request`` at ``target``'s upstream: ``upstream_path`` (``/``-rooted, query
    included) under the target's base URL.

    Same result as ``request.url = target.upstream_url(upstream_path)`` (scheme, host,
    port, path, the first ``Host`` header replaced and any further one removed, HTTP/2
    authority), without parsing the whole URL for the common case: a printable-ASCII
    path without ``#``, ``;`` or an empty query, under an upstream URL with none either.
    Anything else goes through mitmproxy's parser.

    Raises:
        ValueError: the URL does not parse (non-ASCII path, bad host), as the setter does.
    """
    origin = _upstream_origin(target.upstream)
    if origin is None or not _PLAIN_PATH.fullmatch(upstream_path) or upstream_path.endswith("?"):
        request.url = target.upstream_url(upstream_path)
        return
    scheme, host, port, base, host_value = origin
    data = request.data
    data.scheme = scheme
    data.host = host
    data.port = port
    data.path = base + upstream_path.encode("ascii")
    # What the host and port setters do to the Host header (``headers["Host"] = …``
    # when present) and to a non-empty authority.
    fields = data.headers.fields
    out = []
    seen = False
    for name, value in fields:
        if name.lower() != b"host":
            out.append((name, value))
        elif not seen:
            out.append((name, host_value.encode("utf-8", "surrogateescape")))
            seen = True
    if seen:
        data.headers.fields = tuple(out)
    if data.authority:
        request.authority = host_value


class PolicyGate:
    """Decides allow / deny / approve for each request from the current policy snapshot."""

    def __init__(self, link: ControlPlaneLink, authenticator: Authenticator | None = None) -> None:
        self.link = link
        self.authenticator = authenticator or Authenticator(
            usage=TokenUsage(link.redis, link.keys.token_last_used)
        )

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        try:
            await self._request(flow)
        except Exception as e:  # fail closed: never let a bug forward a request
            log.exception("policy gate failed")
            answer_error(
                flow, 500, "gateway_error", f"policy could not be applied: {type(e).__name__}"
            )

    @staticmethod
    def _credentials(flow: http.HTTPFlow, forward: bool) -> list[str]:
        """Credentials to try, in order (see :mod:`proxy_worker.forward` for forward mode)."""
        auth, proxy = _header_values(flow.request.headers)
        from_auth = extract_token(auth)
        from_proxy = extract_token(proxy)
        if forward:
            ordered = [from_proxy, tunnel_credential(flow.client_conn), from_auth]
        else:
            ordered = [from_auth, from_proxy]
        out: list[str] = []
        for c in ordered:
            if c and c not in out:
                out.append(c)
        return out

    async def _request(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        state = self.link.state
        policy = state.policy
        if policy.version == 0:
            answer_error(
                flow,
                503,
                "policy_unavailable",
                "the gateway has no policy yet (control plane unreachable)",
            )
            return

        headers = flow.request.headers
        forward = is_forward(flow)
        presented = self._credentials(flow, forward)
        result = await self.authenticator.authenticate(
            policy,
            presented,
            (flow.client_conn.peername or ("", 0))[0],
        )
        agent = result.agent
        if agent is None:
            if result.code == "rate_limited":
                status, challenge = 429, {"Retry-After": str(int(result.retry_after or 60) + 1)}
            elif result.code == "jwks_unavailable":
                status, challenge = 503, {"Retry-After": "10"}
            else:
                status, challenge = 401, {"WWW-Authenticate": 'Bearer realm="gatehouse"'}
            answer_error(
                flow, status, result.code, result.message, headers=challenge, decision="denied"
            )
            return
        st.agent = agent
        st.session_key = _strip_agent_headers(headers, presented)

        if forward:
            req = flow.request
            try:
                routed = policy.resolve_forward(req.scheme, req.host, req.port, req.path)
            except PathError as e:
                answer_error(flow, 400, "bad_path", str(e), decision="denied")
                return
            if routed is None:
                answer_error(
                    flow,
                    403,
                    "egress_denied",
                    f"{req.scheme}://{req.host}:{req.port}{req.path.partition('?')[0]} "
                    "is not under a registered target",
                    decision="denied",
                )
                return
            target, upstream_path = routed
            st.target = target  # the URL stays: it already names the target's upstream
        else:
            try:
                slug, upstream_path = split_reverse_path(flow.request.path)
            except PathError as e:
                answer_error(flow, 400, "bad_path", str(e), decision="denied")
                return
            target = policy.resolve_target(slug, kind="http")  # not PostgreSQL targets
            if target is None:
                answer_error(
                    flow, 404, "unknown_target", f"no target named {slug!r}", decision="denied"
                )
                return
            st.target = target
            set_upstream(flow.request, target, upstream_path)

        method = flow.request.method
        body = flow.request.raw_content or b""
        info = request_info(
            agent_id=agent.id,
            target_id=target.id,
            method=method,
            upstream_path=upstream_path,
            body=body,
            agent_group_ids=agent.group_ids,
            fingerprint=False,  # digested below only for approve outcomes (defer mode)
        )
        decision = with_fingerprint(
            policy.evaluate(info),
            agent_id=agent.id,
            target_id=target.id,
            method=method,
            upstream_path=upstream_path,
            body=body,
        )
        st.access = decision
        st.rule_id = decision.rule_id
        if decision.action == "deny":
            rule = decision.rule
            answer_error(
                flow,
                403,
                "denied_by_rule",
                f"denied by access rule {rule.name!r}"
                if rule
                else "denied by the target's default",
                decision="denied",
                rule={"id": rule.id, "name": rule.name, "reason": rule.reason} if rule else None,
            )

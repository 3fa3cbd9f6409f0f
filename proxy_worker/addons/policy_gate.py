"""PolicyGate: identify the agent, resolve the target, apply the access rules.

First Gatehouse addon in the chain. The agent is identified by a Gatehouse token or an
OpenID Connect JWT (:mod:`proxy_worker.identity`; repeated failures from one address are
answered 429). The target is resolved by path prefix on the reverse listener and by
scheme, host, port and base path on the forward listener (:mod:`proxy_worker.forward`).

Fails closed: any exception in the hook becomes a 500 JSON answer (mitmproxy would
otherwise log it and forward the request).
"""

from __future__ import annotations

import logging

from mitmproxy import http

from proxy_worker.flowstate import SESSION_HEADER, answer_error, state_of
from proxy_worker.forward import is_forward, tunnel_credential
from proxy_worker.identity import Authenticator, TokenUsage
from proxy_worker.link import ControlPlaneLink
from proxy_worker.policy import PathError, extract_token, request_info, split_reverse_path

log = logging.getLogger("gatehouse.policy_gate")

#: Headers that carry the agent's own credential; never forwarded upstream.
AGENT_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization")


def _drop_headers_carrying(headers, credentials: list[str]) -> None:
    """Remove every header whose value contains one of the agent's ``credentials``.

    Agents (or their SDKs) sometimes repeat the token in ``X-Api-Key``, a cookie or a
    custom header; Gatehouse tokens are for Gatehouse only and never go upstream.
    Credentials shorter than 16 characters are ignored (no real token is that short, and
    short strings would match innocent values).
    """
    secrets = [c for c in credentials if c and len(c) >= 16]
    if not secrets:
        return
    for name in {k.lower() for k in headers}:
        if any(sec in v for v in headers.get_all(name) for sec in secrets):
            del headers[name]


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
        headers = flow.request.headers
        from_auth = extract_token(headers.get("authorization"))
        from_proxy = extract_token(headers.get("proxy-authorization"))
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
        for name in AGENT_CREDENTIAL_HEADERS:
            headers.pop(name, None)
        _drop_headers_carrying(headers, presented)
        st.session_key = headers.pop(SESSION_HEADER, "")[:200]

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
            target = policy.resolve_target(slug)
            if target is None:
                answer_error(
                    flow, 404, "unknown_target", f"no target named {slug!r}", decision="denied"
                )
                return
            st.target = target
            flow.request.url = target.upstream_url(upstream_path)

        info = request_info(
            agent_id=agent.id,
            target_id=target.id,
            method=flow.request.method,
            upstream_path=upstream_path,
            body=flow.request.raw_content or b"",
            agent_group_ids=agent.group_ids,
        )
        decision = policy.evaluate(info)
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

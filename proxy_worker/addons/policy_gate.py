"""PolicyGate: identify the agent, resolve the target, apply the access rules.

First Gatehouse addon in the chain. Fails closed: any exception in the hook becomes a
500 JSON answer (mitmproxy would otherwise log it and forward the request).
"""

from __future__ import annotations

import logging

from mitmproxy import http

from proxy_worker.flowstate import SESSION_HEADER, answer_error, state_of
from proxy_worker.link import ControlPlaneLink
from proxy_worker.policy import PathError, extract_token, request_info, split_reverse_path

log = logging.getLogger("gatehouse.policy_gate")

#: Headers that carry the agent's own credential; never forwarded upstream.
AGENT_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization")


class PolicyGate:
    """Decides allow / deny / approve for each request from the current policy snapshot."""

    def __init__(self, link: ControlPlaneLink) -> None:
        self.link = link

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        try:
            self._request(flow)
        except Exception as e:  # fail closed: never let a bug forward a request
            log.exception("policy gate failed")
            answer_error(
                flow, 500, "gateway_error", f"policy could not be applied: {type(e).__name__}"
            )

    def _request(self, flow: http.HTTPFlow) -> None:
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
        token = extract_token(headers.get("authorization")) or extract_token(
            headers.get("proxy-authorization")
        )
        agent = policy.identify(token)
        if agent is None:
            answer_error(
                flow,
                401,
                "missing_token" if not token else "unknown_token",
                "present a Gatehouse agent token: 'Authorization: Bearer gh_...'"
                if not token
                else "the token is unknown, expired or revoked",
                headers={"WWW-Authenticate": 'Bearer realm="gatehouse"'},
                decision="denied",
            )
            return
        st.agent = agent
        for name in AGENT_CREDENTIAL_HEADERS:
            headers.pop(name, None)
        st.session_key = headers.pop(SESSION_HEADER, "")[:200]

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

"""ForwardGate: the egress allow-list of the forward-proxy listener (``CONNECT`` requests).

A ``CONNECT`` to a host and port where no target lives is answered ``403`` JSON
(``egress_denied``) in the ``http_connect`` hook, before any upstream connection is made
(``connection_strategy=lazy``) and before TLS is intercepted. A ``Proxy-Authorization``
sent with the ``CONNECT`` is checked here (``407`` JSON when it identifies no agent, ``429``
once the address is rate-limited) and remembered for the requests inside the tunnel;
without one, each request inside must carry the agent's credential (``PolicyGate``).
Refused ``CONNECT``\\ s are recorded as exchanges (method ``CONNECT``, no bodies).

Fails closed: any exception becomes a 500 JSON answer, which refuses the tunnel.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from proxy_worker.flowstate import answer_error, state_of
from proxy_worker.forward import is_forward, remember_tunnel_credential
from proxy_worker.identity import Authenticator
from proxy_worker.link import ControlPlaneLink
from proxy_worker.policy import extract_token
from proxy_worker.recording import build_exchange

log = logging.getLogger("gatehouse.forward_gate")


class ForwardGate:
    """Refuses tunnels to hosts that are not targets; checks CONNECT proxy credentials."""

    def __init__(self, link: ControlPlaneLink, authenticator: Authenticator) -> None:
        self.link = link
        self.authenticator = authenticator

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not is_forward(flow):
            return
        try:
            await self._connect(flow)
        except Exception as e:  # fail closed: a bug must not open a tunnel
            log.exception("forward gate failed")
            answer_error(
                flow, 500, "gateway_error", f"tunnel could not be checked: {type(e).__name__}"
            )
        if flow.response is not None and flow.response.status_code >= 300:
            await self._record_refusal(flow)

    async def _connect(self, flow: http.HTTPFlow) -> None:
        policy = self.link.state.policy
        if policy.version == 0:
            answer_error(
                flow,
                503,
                "policy_unavailable",
                "the gateway has no policy yet (control plane unreachable)",
            )
            return
        host, port = flow.request.host, flow.request.port
        proxy_auth = flow.request.headers.pop("proxy-authorization", None)
        if not policy.allows_host(host, port):
            answer_error(
                flow,
                403,
                "egress_denied",
                f"{host}:{port} is not a registered target; this proxy only reaches targets",
                decision="denied",
            )
            return
        credential = extract_token(proxy_auth)
        if credential is None:
            return  # each request inside the tunnel must then identify the agent
        client_address = (flow.client_conn.peername or ("", 0))[0]
        result = await self.authenticator.authenticate(policy, [credential], client_address)
        if result.agent is None:
            headers = {"Proxy-Authenticate": 'Basic realm="gatehouse"'}
            status = 407
            if result.code == "rate_limited":
                status = 429
                headers = {"Retry-After": str(int(result.retry_after or 60) + 1)}
            elif result.code == "jwks_unavailable":
                status = 503
            answer_error(
                flow, status, result.code, result.message, headers=headers, decision="denied"
            )
            return
        state_of(flow).agent = result.agent
        remember_tunnel_credential(flow.client_conn, credential)

    async def _record_refusal(self, flow: http.HTTPFlow) -> None:
        try:
            st = state_of(flow)
            body = flow.response.raw_content if flow.response else b""
            msg = build_exchange(
                flow,
                st,
                self.link.worker_id,
                url=f"{flow.request.host}:{flow.request.port}",
                request_body=b"",
                response_body=body or b"",
                masker=self.link.record_masker,
            )
            await self.link.record_exchange(msg)
        except Exception:
            log.exception("could not record a refused CONNECT")

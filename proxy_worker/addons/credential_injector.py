"""CredentialInjector: put the target's credential on the upstream request.

The agent's own credential headers were removed by PolicyGate; here the credential that
Gatehouse holds for the target (decrypted from the snapshot into memory only) is set.
It is never recorded: :func:`proxy_worker.recording.safe_headers` hides the header.
"""

from __future__ import annotations

from mitmproxy import http

from proxy_worker.flowstate import state_of


class CredentialInjector:
    """Sets ``<auth_header>: <auth_scheme> <credential>`` for the resolved target."""

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        target = state_of(flow).target
        if target is None or not target.credential:
            return
        value = (
            f"{target.auth_scheme} {target.credential}" if target.auth_scheme else target.credential
        )
        flow.request.headers[target.auth_header] = value

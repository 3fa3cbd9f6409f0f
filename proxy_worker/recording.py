"""Turning a finished flow into an :class:`~proxy_worker.contract.ExchangeMessage`.

Only masked data reaches here: request bodies were masked before they went upstream,
response bodies before they went to the agent. Credentials are removed from headers by
name: the agent's token headers, the target's injected credential header, cookies and
common API-key headers.
"""

from __future__ import annotations

import time
import uuid

from mitmproxy import http

from proxy_worker.contract import RECORD_BODY_LIMIT, ExchangeMessage
from proxy_worker.flowstate import FlowState
from proxy_worker.policy import Target

#: Header names (lower case) whose values are never recorded nor shown to approvers.
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
    }
)
REDACTED = "[REDACTED]"


def safe_headers(headers: http.Headers, target: Target | None) -> dict[str, str]:
    """Headers as a dict with every credential value replaced by ``[REDACTED]``.

    Repeated headers are joined with ``", "`` (RFC 9110 §5.3).
    """
    hidden = set(CREDENTIAL_HEADERS)
    if target is not None and target.auth_header:
        hidden.add(target.auth_header.lower())
    out: dict[str, str] = {}
    for name in headers:
        value = REDACTED if name.lower() in hidden else ", ".join(headers.get_all(name))
        out[name] = value
    return out


def _text(body: bytes | None) -> tuple[str, bool]:
    if not body:
        return "", False
    text = body.decode("utf-8", errors="replace")
    return text[:RECORD_BODY_LIMIT], len(text) > RECORD_BODY_LIMIT


def build_exchange(
    flow: http.HTTPFlow,
    st: FlowState,
    worker_id: str,
    *,
    url: str,
    request_body: bytes,
    response_body: bytes,
) -> ExchangeMessage:
    """The exchange record of a finished flow (``flow.response`` or ``flow.error`` set).

    ``url``, ``request_body`` and ``response_body`` are the masked forms to record (for a
    streamed response, the bytes the streaming masker emitted); bodies are cut to
    :data:`RECORD_BODY_LIMIT` characters. Everything else is read from ``flow`` and ``st``.
    """
    req_text, req_cut = _text(request_body)
    resp_text, resp_cut = _text(response_body)
    resp = flow.response
    st.timings.setdefault("total", round((time.perf_counter() - st.started_perf) * 1000, 3))
    return ExchangeMessage(
        exchange_id=str(uuid.uuid4()),
        worker_id=worker_id,
        started_at=st.started_at,
        agent_id=st.agent.id if st.agent else None,
        target_id=st.target.id if st.target else None,
        session_key=st.session_key,
        client_address=(flow.client_conn.peername or ("", 0))[0],
        method=flow.request.method,
        url=url,
        request_headers=safe_headers(flow.request.headers, st.target),
        request_body=req_text,
        status_code=resp.status_code if resp else 502,
        response_headers=safe_headers(resp.headers, st.target) if resp else {},
        response_body=resp_text,
        decision=st.decision if not (flow.error and not resp) else "error",
        rule_id=st.rule_id,
        approval_id=st.approval_id,
        error=st.error or (flow.error.msg if flow.error else ""),
        request_findings=st.request_findings,
        response_findings=st.response_findings,
        timings=st.timings,
        body_truncated=req_cut or resp_cut,
    )

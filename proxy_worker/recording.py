"""Turning a finished flow into an :class:`~proxy_worker.contract.ExchangeMessage`.

Only masked data reaches here: request bodies were masked before they went upstream,
response bodies before they went to the agent. Credentials are removed from headers by
name: the agent's token headers, the target's injected credential header, cookies and
common API-key headers.
"""

from __future__ import annotations

import functools
import time
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mitmproxy import http
from mitmproxy.net.http import url as mitm_url

from proxy_worker.contract import RECORD_BODY_LIMIT, ExchangeMessage
from proxy_worker.flowstate import FlowState
from proxy_worker.masking import BinaryBodyError, Masker, MaskingError
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


def fallback_mask_body(masker: Masker, body: bytes, content_type: str | None) -> tuple[bytes, list]:
    """Mask a body for the record only; binary or unmaskable bodies become a placeholder."""
    if not body:
        return b"", []
    try:
        result = masker.mask_body(body, content_type)
        return result.body, result.findings
    except BinaryBodyError:
        return f"[binary body: {len(body)} bytes]".encode(), []
    except MaskingError as e:
        return f"[body not recorded: {e}]".encode(), []


def remask_url(masker: Masker, url: str) -> str:
    """``url`` (already masked by a target's rules) with path and query masked again."""
    parts = urlsplit(url)
    path, _ = masker.mask_text(parts.path, location="path")
    query = parts.query
    if query:
        pairs, _ = masker.mask_query(parse_qsl(query, keep_blank_values=True))
        query = urlencode(pairs)
    return urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))


def safe_headers(
    headers: http.Headers, target: Target | None, masker: Masker | None = None
) -> dict[str, str]:
    """Headers as a dict with every credential value replaced by ``[REDACTED]`` and, when
    ``masker`` is given, every other value masked (``X-Note: ssn [US_SSN]``).

    Keys are the first spelling of each name; repeated headers (names compared
    case-insensitively) are joined with ``", "`` (RFC 9110 §5.3). Used for what is stored
    (exchanges, approval requests), never for what is forwarded.
    """
    hidden = CREDENTIAL_HEADERS
    if target is not None and target.auth_header:
        hidden = hidden | {target.auth_header.lower()}
    # One pass over the raw fields (``for name in headers: headers.get_all(name)`` walks
    # them once per name): values grouped under their first spelling, in order.
    groups: dict[bytes, tuple[bytes, list[bytes]]] = {}
    for name, value in headers.fields:
        group = groups.get(key := name.lower())
        if group is None:
            groups[key] = (name, [value])
        else:
            group[1].append(value)
    out: dict[str, str] = {}
    for raw_name, values in groups.values():
        name = raw_name.decode("utf-8", "surrogateescape")
        if name.lower() in hidden:
            out[name] = REDACTED
            continue
        value = ", ".join([v.decode("utf-8", "surrogateescape") for v in values])
        if masker is not None and value:
            value, _ = masker.mask_text(value, location=f"header:{name}")
        out[name] = value
    return out


@functools.lru_cache(maxsize=1024)
def _pretty_origin(scheme: str, host_header: str) -> str:
    host, port = mitm_url.parse_authority(host_header, check=False)
    return mitm_url.unparse(scheme, host, port or mitm_url.default_port(scheme) or 443, "")


def pretty_url(request: http.Request) -> str:
    """``request.pretty_url`` (the URL with the ``Host`` header's, or HTTP/2 authority's,
    host and port), with the parse of the host header value memoised."""
    if request.first_line_format == "authority":
        return request.authority
    host_header = request.host_header
    if not host_header:
        return request.url
    path = request.path
    return _pretty_origin(request.scheme, host_header) + (path if path != "*" else "")


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
    masker: Masker | None = None,
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
        request_headers=safe_headers(flow.request.headers, st.target, masker),
        request_body=req_text,
        status_code=resp.status_code if resp else 502,
        response_headers=safe_headers(resp.headers, st.target, masker) if resp else {},
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

"""Per-flow state shared by the Gatehouse addons, and the gateway's JSON error answers."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

from proxy_worker.contract import ExchangeDecision
from proxy_worker.policy import AccessDecision, Agent, Target

METADATA_KEY = "gatehouse"

#: Header carrying the approval id on held, deferred, denied and expired answers.
APPROVAL_ID_HEADER = "X-Gatehouse-Approval-Id"
#: Header an agent may send to group its exchanges into one recorded session.
SESSION_HEADER = "X-Gatehouse-Session"


@dataclass
class FlowState:
    """What the addons learned about one flow, kept in ``flow.metadata["gatehouse"]``.

    Times: ``started_at`` is Unix epoch seconds; ``timings`` values are milliseconds.
    """

    started_at: float = field(default_factory=time.time)
    started_perf: float = field(default_factory=time.perf_counter)
    agent: Agent | None = None
    target: Target | None = None
    access: AccessDecision | None = None
    decision: ExchangeDecision = "allowed"
    rule_id: int | None = None
    approval_id: str | None = None
    error: str = ""
    session_key: str = ""
    answered_by_gateway: bool = False
    request_findings: list[dict[str, Any]] = field(default_factory=list)
    response_findings: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: Masked request body/URL to record, set by RequestMasking; ``None`` = not masked yet.
    request_record: bytes | None = None
    request_url_record: str | None = None
    #: Masked response body to record, set by ResponseMasking; ``None`` = not masked yet.
    response_record: bytes | None = None
    #: Entity types the target's maskers covered in each direction; the Recorder masks
    #: the record again for every default type missing here (nothing unmasked is stored).
    request_covered: frozenset[str] = frozenset()
    response_covered: frozenset[str] = frozenset()
    #: The streaming masker (``proxy_worker.streaming.MaskedStream``) when streamed.
    stream: Any = None
    #: Set once the exchange has been handed to the recorder (response or error hook).
    emitted: bool = False
    #: What an approval request for this flow records (``ApprovalRequestMessage``):
    #: ``"mcp"`` with the held call's ``jsonrpc_method`` and ``tool`` (set by McpGate).
    protocol: str = "http"
    details: dict[str, Any] = field(default_factory=dict)
    #: McpGate's per-flow state (``proxy_worker.addons.mcp_gate.McpFlow``) on MCP targets.
    mcp: Any = None


def state_of(flow: http.HTTPFlow) -> FlowState:
    """The :class:`FlowState` of a flow, created on first use."""
    st = flow.metadata.get(METADATA_KEY)
    if st is None:
        st = flow.metadata[METADATA_KEY] = FlowState()
    return st


def answer_error(
    flow: http.HTTPFlow,
    status: int,
    code: str,
    message: str,
    *,
    decision: ExchangeDecision = "error",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> None:
    """Answer ``flow`` from the gateway with a JSON error; nothing goes upstream.

    Body shape: ``{"error": {"code": str, "message": str, ...extra}}`` with
    ``Content-Type: application/json``. ``code`` is stable and machine-readable
    (documented in ``docs/agents.md``); ``message`` is for humans.
    """
    st = state_of(flow)
    st.answered_by_gateway = True
    st.decision = decision
    st.error = code
    body = json.dumps({"error": {"code": code, "message": message, **extra}}, indent=None)
    hdrs = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    if headers:
        hdrs.update(headers)
    flow.response = http.Response.make(status, body.encode(), hdrs)

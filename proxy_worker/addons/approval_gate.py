"""ApprovalGate: hold requests that an access rule sends for approval.

The request is already masked when it gets here (RequestMasking runs first), so the
approver sees exactly what would be forwarded. The hold is an ``async`` hook awaiting a
future with its own timeout (PITFALLS.md: mitmproxy sets none); other flows go on.
"""

from __future__ import annotations

import logging
import time
import uuid

from mitmproxy import http

from proxy_worker.contract import PREVIEW_LIMIT, ApprovalRequestMessage
from proxy_worker.flowstate import APPROVAL_ID_HEADER, answer_error, state_of
from proxy_worker.link import ControlPlaneLink, ControlPlaneUnavailable
from proxy_worker.recording import safe_headers

log = logging.getLogger("gatehouse.approval_gate")


class ApprovalGate:
    """Waits for a human decision on requests whose access decision is ``approve``."""

    def __init__(self, link: ControlPlaneLink) -> None:
        self.link = link

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        st = state_of(flow)
        if st.access is None or st.access.action != "approve":
            return
        try:
            await self._hold(flow)
        except Exception as e:  # fail closed
            log.exception("approval gate failed")
            answer_error(
                flow, 500, "gateway_error", f"approval could not be handled: {type(e).__name__}"
            )

    async def _hold(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        assert st.access is not None and st.agent is not None and st.target is not None
        rule = st.access.rule
        approval_id = str(uuid.uuid4())
        st.approval_id = approval_id
        now = time.time()
        body = (flow.request.content or b"").decode("utf-8", errors="replace")
        msg = ApprovalRequestMessage(
            approval_id=approval_id,
            worker_id=self.link.worker_id,
            agent_id=st.agent.id,
            target_id=st.target.id,
            rule_id=rule.id if rule else None,
            method=flow.request.method,
            url=flow.request.pretty_url,
            headers=safe_headers(flow.request.headers, st.target),
            body=body[:PREVIEW_LIMIT],
            body_truncated=len(body) > PREVIEW_LIMIT,
            requested_at=now,
            deadline=now + st.access.timeout,
            reason=rule.reason if rule else "",
        )
        hdr = {APPROVAL_ID_HEADER: approval_id}
        t0 = time.perf_counter()
        try:
            await self.link.submit_approval(msg)
            decision = await self.link.wait_for_decision(approval_id, st.access.timeout)
        except ControlPlaneUnavailable as e:
            answer_error(
                flow,
                503,
                "approval_unavailable",
                f"this request needs approval and {e}; refused (fail closed)",
                headers=hdr,
                approval_id=approval_id,
            )
            return
        finally:
            st.timings["approval_wait"] = round((time.perf_counter() - t0) * 1000, 3)
        if decision is None:
            answer_error(
                flow,
                403,
                "approval_expired",
                f"no decision within {st.access.timeout:g} s",
                decision="expired",
                headers=hdr,
                approval_id=approval_id,
            )
        elif decision.verdict == "approved":
            st.decision = "approved"
        else:
            answer_error(
                flow,
                403,
                "approval_denied" if decision.verdict == "denied" else "approval_expired",
                f"request {decision.verdict}"
                + (f" by {', '.join(decision.decided_by)}" if decision.decided_by else ""),
                decision="approval_denied" if decision.verdict == "denied" else "expired",
                headers=hdr,
                approval_id=approval_id,
                decided_by=decision.decided_by,
                comment=decision.comment,
            )

"""ApprovalGate: hold, defer or pass (by grant) requests an access rule sends for approval.

The request is already masked when it gets here (RequestMasking runs first), so the
approver sees exactly what would be forwarded. Three ways through, by the rule:

* **grant**: an active grant covers the request (``AccessDecision.grant``, checked by the
  worker's own clock in :meth:`proxy_worker.policy.Policy.evaluate`): it passes at once,
  with ``X-Gatehouse-Grant-Id``.
* **wait**: the hold is an ``async`` hook awaiting a future until the request's deadline
  (PITFALLS.md: mitmproxy sets no timeout of its own); other flows go on, and a thousand
  held requests cost a thousand futures, not threads or Redis connections.
* **defer**: the gateway answers at once with ``403`` and error code
  ``approval_pending`` (not ``202``: a 2xx would read as success to clients that do not
  look at the body), ``Retry-After``, ``X-Gatehouse-Approval-Id`` and the approval page
  URL. Once approved, an identical retry (same agent, method, target, path, query and
  body digest, :func:`proxy_worker.policy.request_fingerprint`) passes exactly once
  within the rule's ``retry_window``, redeemed atomically in Redis so it holds across
  workers. Retries before the decision get the same approval id, not a new request.

Every answer names the approval id; denied and expired answers say who decided and why.
"""

from __future__ import annotations

import logging
import math
import time
import uuid

from mitmproxy import http

from proxy_worker import mcp
from proxy_worker.contract import PREVIEW_LIMIT, ApprovalMode, ApprovalRequestMessage
from proxy_worker.flowstate import APPROVAL_ID_HEADER, METADATA_KEY, answer_error, state_of
from proxy_worker.link import ControlPlaneLink, ControlPlaneUnavailable, DeferredSlot
from proxy_worker.recording import fallback_mask_body, remask_url, safe_headers

log = logging.getLogger("gatehouse.approval_gate")

#: Header naming the grant that let a request pass without asking.
GRANT_ID_HEADER = "X-Gatehouse-Grant-Id"
#: Header with the approval page URL on deferred answers.
APPROVAL_URL_HEADER = "X-Gatehouse-Approval-Url"
#: Longest ``Retry-After`` (seconds) a deferred answer suggests.
RETRY_AFTER_SECONDS = 5
#: Defer index entries outlive the approval timeout plus the retry window by this much (s).
DEFER_INDEX_SLACK_SECONDS = 60


def retry_after(deadline: float, now: float, cap: int = RETRY_AFTER_SECONDS) -> int:
    """Seconds an agent should wait before retrying a deferred request: at most ``cap``,
    at least 1, and not past the deadline (both Unix epoch seconds)."""
    return max(1, min(cap, math.ceil(deadline - now)))


def approval_url(site_url: str, approval_id: str) -> str | None:
    """The approval page of ``approval_id`` under the control plane's ``site_url``."""
    return f"{site_url}/approvals/{approval_id}/" if site_url else None


class ApprovalGate:
    """Decides what happens to requests whose access decision is ``approve``."""

    def __init__(self, link: ControlPlaneLink) -> None:
        self.link = link

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        st = state_of(flow)
        if st.access is None or st.access.action != "approve":
            return
        try:
            if st.access.grant is not None:
                st.decision = "approved"
                return
            if st.access.approval_mode == "defer":
                await self._defer(flow)
            else:
                await self._hold(flow)
        except Exception as e:  # fail closed
            log.exception("approval gate failed")
            answer_error(
                flow,
                500,
                "gateway_error",
                f"approval could not be handled: {type(e).__name__}",
                **({"approval_id": st.approval_id} if st.approval_id else {}),
            )

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Name the approval (or grant) on upstream answers to approved requests."""
        st = flow.metadata.get(METADATA_KEY)
        if st is None or flow.response is None or st.answered_by_gateway:
            return
        if st.approval_id:
            flow.response.headers[APPROVAL_ID_HEADER] = st.approval_id
        if st.access is not None and st.access.grant is not None:
            flow.response.headers[GRANT_ID_HEADER] = str(st.access.grant.id)

    # -- shared ----------------------------------------------------------------------------

    def _message(
        self, flow: http.HTTPFlow, approval_id: str, mode: ApprovalMode, now: float
    ) -> ApprovalRequestMessage:
        st = state_of(flow)
        assert st.access is not None and st.agent is not None and st.target is not None
        rule = st.access.rule
        # What approvers see is stored: mask again every default type the target's
        # request rules did not cover, as the Recorder does.
        raw = flow.request.content or b""
        url = flow.request.pretty_url
        extra = self.link.record_masker_for(st.request_covered)
        if extra is not None:
            raw, _ = fallback_mask_body(extra, raw, flow.request.headers.get("content-type"))
            url = remask_url(extra, url)
        body = raw.decode("utf-8", errors="replace")
        method, details = flow.request.method, dict(st.details)
        if st.protocol == mcp.PROTOCOL_MCP:  # one JSON-RPC call (McpGate)
            details = mcp.approval_details(raw, st.details)
            method = details.get("jsonrpc_method") or method
        return ApprovalRequestMessage(
            approval_id=approval_id,
            worker_id=self.link.worker_id,
            agent_id=st.agent.id,
            target_id=st.target.id,
            rule_id=rule.id if rule else None,
            method=method,
            url=url,
            headers=safe_headers(flow.request.headers, st.target, self.link.record_masker),
            body=body[:PREVIEW_LIMIT],
            body_truncated=len(body) > PREVIEW_LIMIT,
            requested_at=now,
            deadline=now + st.access.timeout,
            reason=rule.reason if rule else "",
            mode=mode,
            required_approvals=st.access.required_approvals,
            retry_window=st.access.retry_window if mode == "defer" else 0.0,
            protocol=st.protocol,
            details=details,
        )

    def _unavailable(self, flow: http.HTTPFlow, approval_id: str | None, e: Exception) -> None:
        answer_error(
            flow,
            503,
            "approval_unavailable",
            f"this request needs approval and {e}; refused (fail closed)",
            headers={APPROVAL_ID_HEADER: approval_id} if approval_id else None,
            approval_id=approval_id,
        )

    def _refuse(self, flow: http.HTTPFlow, approval_id: str, decision) -> None:
        """Answer a denied or expired request (``decision`` is a ``DecisionMessage``)."""
        denied = decision.verdict == "denied"
        who = f" by {', '.join(decision.decided_by)}" if decision.decided_by else ""
        why = f": {decision.comment}" if decision.comment else ""
        answer_error(
            flow,
            403,
            "approval_denied" if denied else "approval_expired",
            f"request {decision.verdict}{who}{why}",
            decision="approval_denied" if denied else "expired",
            headers={APPROVAL_ID_HEADER: approval_id},
            approval_id=approval_id,
            verdict=decision.verdict,
            decided_by=decision.decided_by,
            decided_at=decision.decided_at,
            comment=decision.comment,
        )

    # -- wait mode -------------------------------------------------------------------------

    async def _hold(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        assert st.access is not None
        approval_id = str(uuid.uuid4())
        st.approval_id = approval_id
        msg = self._message(flow, approval_id, "wait", time.time())
        t0 = time.perf_counter()
        try:
            decision = await self.link.hold(msg)
        except ControlPlaneUnavailable as e:
            self._unavailable(flow, approval_id, e)
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
                headers={APPROVAL_ID_HEADER: approval_id},
                approval_id=approval_id,
                verdict="expired",
                decided_by=[],
            )
        elif decision.verdict == "approved":
            st.decision = "approved"
        else:
            self._refuse(flow, approval_id, decision)

    # -- defer mode ------------------------------------------------------------------------

    async def _defer(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        assert st.access is not None and st.agent is not None
        access, agent_id, fp = st.access, st.agent.id, st.access.fingerprint
        if not fp:
            raise RuntimeError("no request fingerprint for a deferred approval")
        try:
            slot = await self.link.deferred_lookup(agent_id, fp)
            now = time.time()
            if slot is not None:
                st.approval_id = slot.approval_id
                decision = slot.decision
                if decision is None and now < slot.deadline:
                    self._pending(flow, slot, now)
                    return
                if decision is not None and decision.verdict == "approved":
                    code = await self.link.redeem_deferred(agent_id, fp, slot, access.retry_window)
                    if code == 1:
                        st.decision = "approved"
                        return
                    # Already used (-1) or the window lapsed (-2): this is a new request.
                    await self.link.release_deferred(agent_id, fp, slot)
                else:
                    # Denied, expired, or past its deadline without a decision: say so once
                    # and forget it, so the next identical request asks again.
                    await self.link.release_deferred(agent_id, fp, slot)
                    if decision is None:
                        answer_error(
                            flow,
                            403,
                            "approval_expired",
                            f"no decision within {access.timeout:g} s",
                            decision="expired",
                            headers={APPROVAL_ID_HEADER: slot.approval_id},
                            approval_id=slot.approval_id,
                            verdict="expired",
                            decided_by=[],
                        )
                    else:
                        self._refuse(flow, slot.approval_id, decision)
                    return
            fresh = DeferredSlot(str(uuid.uuid4()), now + access.timeout)
            st.approval_id = fresh.approval_id
            ttl = access.timeout + access.retry_window + DEFER_INDEX_SLACK_SECONDS
            slot = await self.link.claim_deferred(agent_id, fp, fresh, ttl)
            st.approval_id = slot.approval_id
            if slot.approval_id == fresh.approval_id:
                try:
                    await self.link.submit_approval(
                        self._message(flow, fresh.approval_id, "defer", now)
                    )
                except ControlPlaneUnavailable:
                    await self.link.release_deferred(agent_id, fp, fresh)
                    raise
            self._pending(flow, slot, now)
        except ControlPlaneUnavailable as e:
            self._unavailable(flow, st.approval_id, e)

    def _pending(self, flow: http.HTTPFlow, slot: DeferredSlot, now: float) -> None:
        st = state_of(flow)
        assert st.access is not None
        wait = retry_after(slot.deadline, now)
        url = approval_url(self.link.state.policy.site_url, slot.approval_id)
        headers = {APPROVAL_ID_HEADER: slot.approval_id, "Retry-After": str(wait)}
        if url:
            headers[APPROVAL_URL_HEADER] = url
        n = st.access.required_approvals
        answer_error(
            flow,
            403,
            "approval_pending",
            f"this request needs approval by {n} approver{'s' if n != 1 else ''}; repeat the "
            f"identical request after it is approved (it passes once, within "
            f"{st.access.retry_window:g} s of the approval)",
            decision="denied",
            headers=headers,
            approval_id=slot.approval_id,
            approval_url=url,
            retry_after=wait,
            deadline=slot.deadline,
            required_approvals=n,
            retry_window=st.access.retry_window,
        )

"""Recorder: emit one audit exchange per finished flow (last addon in the chain).

What it records is masked: bodies masked by the target's rules when it has them, then
masked again here for every default entity type those rules did not cover
(:meth:`ControlPlaneLink.record_masker_for`); without target masking (no rule for that
direction, or a request refused before masking) masked here with every default type. So
no unmasked payload is ever stored, whatever the target's rules ask for on the wire. Credentials are
removed from headers by :func:`proxy_worker.recording.safe_headers`. A POST to an MCP
target is recorded as one exchange per JSON-RPC message
(:func:`proxy_worker.addons.mcp_gate.build_exchanges`, same masking).
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from mitmproxy import http

from proxy_worker.addons.mcp_gate import build_exchanges
from proxy_worker.flowstate import APPROVAL_ID_HEADER, FlowState, state_of
from proxy_worker.link import ControlPlaneLink
from proxy_worker.masking import Masker, summarise
from proxy_worker.recording import build_exchange, fallback_mask_body, remask_url

log = logging.getLogger("gatehouse.recorder")


def fallback_mask_url(masker: Masker, request: http.Request) -> str:
    """The request URL (or path, when no target was resolved) with path and query masked."""
    path, _, _ = request.path.partition("?")
    masked_path, _ = masker.mask_text(path, location="path")
    pairs = list(request.query.items(multi=True))
    if pairs:
        pairs, _ = masker.mask_query(pairs)
    q = urlencode(pairs)
    return masked_path + (f"?{q}" if q else "")


class Recorder:
    """Builds the :class:`~proxy_worker.contract.ExchangeMessage` and hands it to the link."""

    def __init__(self, link: ControlPlaneLink) -> None:
        self.link = link

    def _request_record(self, flow: http.HTTPFlow, st: FlowState) -> tuple[str, bytes]:
        if st.request_record is not None and st.request_url_record is not None:
            extra = self.link.record_masker_for(st.request_covered)
            if extra is None:
                return st.request_url_record, st.request_record
            body = st.request_record
            if body:
                body, _ = fallback_mask_body(extra, body, flow.request.headers.get("content-type"))
            return remask_url(extra, st.request_url_record), body
        masker = self.link.record_masker
        url = fallback_mask_url(masker, flow.request)
        if st.target is not None:
            url = f"{flow.request.scheme}://{flow.request.pretty_host}:{flow.request.port}{url}"
        try:
            body = flow.request.content or b""
        except ValueError:
            body = b"[undecodable request body]"
        masked, _ = fallback_mask_body(masker, body, flow.request.headers.get("content-type"))
        return url, masked

    def _response_record(self, flow: http.HTTPFlow, st: FlowState) -> bytes:
        if st.response_record is not None:
            extra = self.link.record_masker_for(st.response_covered)
            if extra is None or flow.response is None:
                return st.response_record
            body, _ = fallback_mask_body(
                extra, st.response_record, flow.response.headers.get("content-type")
            )
            return body
        if flow.response is None:
            return b""
        try:
            raw = flow.response.content or b""
        except ValueError:
            raw = b"[undecodable response body]"
        masked, findings = fallback_mask_body(
            self.link.record_masker, raw, flow.response.headers.get("content-type")
        )
        if findings and not st.response_findings:
            st.response_findings = summarise(findings)
        return masked

    async def _record(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        if st.emitted:
            return
        st.emitted = True
        if flow.response is not None and st.approval_id:
            flow.response.headers.setdefault(APPROVAL_ID_HEADER, st.approval_id)
        if st.mcp is not None and st.mcp.records_calls:
            for msg in build_exchanges(flow, st, self.link):
                await self.link.record_exchange(msg)
            return
        url, request_body = self._request_record(flow, st)
        msg = build_exchange(
            flow,
            st,
            self.link.worker_id,
            url=url,
            request_body=request_body,
            response_body=self._response_record(flow, st),
            masker=self.link.record_masker,
        )
        await self.link.record_exchange(msg)

    async def response(self, flow: http.HTTPFlow) -> None:
        try:
            await self._record(flow)
        except Exception:
            log.exception("could not record exchange")

    async def error(self, flow: http.HTTPFlow) -> None:
        # Also when a response had started (a stream cut mid-way): ``emitted`` keeps an
        # exchange from being recorded twice.
        try:
            await self._record(flow)
        except Exception:
            log.exception("could not record exchange")

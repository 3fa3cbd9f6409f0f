"""RequestMasking: mask the query and body of a request before it goes upstream.

Runs after PolicyGate (rules see the raw request) and before ApprovalGate (approvers see
the masked request, exactly what would be forwarded). Fails closed: a body that cannot
be decoded or is too large to mask is refused with a JSON error. Content-encoded bodies
are decoded here with the engine's limits (:func:`~proxy_worker.masking.decode_content`:
decoded size and decompression ratio), never with mitmproxy's unbounded ``.content``.
Binary bodies are refused (415) unless the target's ``binary_bodies`` is ``pass``.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import http

from proxy_worker.addons.mcp_gate import mask_jsonrpc_body
from proxy_worker.flowstate import answer_error, state_of
from proxy_worker.link import ControlPlaneLink
from proxy_worker.masking import (
    BinaryBodyError,
    BodyTooLargeError,
    DecompressionError,
    MaskingError,
    decode_content,
    summarise,
)
from proxy_worker.recording import pretty_url

log = logging.getLogger("gatehouse.request_masking")


class RequestMasking:
    """Applies the target's request-side masking rules to the query and the body."""

    def __init__(self, link: ControlPlaneLink) -> None:
        self.link = link

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        st = state_of(flow)
        if st.target is None:
            return
        groups = st.agent.group_ids if st.agent is not None else ()
        masker = self.link.state.masker(st.target.id, "request", groups)
        if masker is None:
            return
        t0 = time.perf_counter()
        try:
            self._mask(flow, masker)
        except BodyTooLargeError as e:
            answer_error(flow, 413, "request_too_large_to_mask", str(e))
        except DecompressionError as e:
            if e.reason == "ratio":
                answer_error(flow, 413, "request_decompression_refused", str(e))
            else:
                answer_error(flow, 400, "request_undecodable", str(e))
        except BinaryBodyError as e:
            answer_error(
                flow, 415, "request_binary_refused", f"{e}; this target refuses binary bodies"
            )
        except MaskingError as e:
            answer_error(flow, 400, "request_not_maskable", str(e))
        except ValueError as e:  # undecodable content-encoding
            answer_error(flow, 400, "request_undecodable", f"cannot decode request body: {e}")
        except Exception as e:  # fail closed
            log.exception("request masking failed")
            answer_error(flow, 500, "gateway_error", f"request masking failed: {type(e).__name__}")
        finally:
            st.timings["mask_request"] = round((time.perf_counter() - t0) * 1000, 3)

    def _mask(self, flow: http.HTTPFlow, masker) -> None:
        st = state_of(flow)
        req = flow.request
        findings = []
        # ``req.query`` parses the whole URL: only worth it when there may be a query.
        pairs = list(req.query.items(multi=True)) if b"?" in req.data.path else None
        if pairs:
            masked_pairs, qf = masker.mask_query(pairs)
            if qf:
                req.query = masked_pairs
                findings += qf
        raw = req.raw_content or b""
        body = decode_content(
            raw, req.headers.get("content-encoding"), max_bytes=masker.max_body_bytes
        )
        mcp_masked = mask_jsonrpc_body(masker, body, st.mcp) if body and st.mcp else None
        if mcp_masked is not None:
            # An MCP call: its data masked by every rule, its protocol fields (the tool's
            # name, ids, method) by the detectors only, so the call still names its tool.
            new_body, mf = mcp_masked
            if new_body is not body:
                req.content = new_body
            findings += mf
            st.request_record = new_body
        elif body:
            result = masker.mask_body(body, req.headers.get("content-type"))
            if result.handler == "binary":  # the target passes binary bodies
                st.request_record = f"[binary body: {len(body)} bytes]".encode()
            else:
                if result.body is not body:
                    req.content = result.body  # re-encoded as declared
                findings += result.findings
                st.request_record = result.body
        else:
            st.request_record = b""
        st.request_url_record = pretty_url(req)
        st.request_covered = frozenset(masker.entity_types)
        st.request_findings = summarise(findings)

"""ResponseMasking: mask response bodies before they reach the agent.

Buffered bodies are decoded (gzip, deflate, br, zstd), masked by content type and sent
identity-encoded. Server-sent event streams (``text/event-stream``) are masked chunk by
chunk as they pass (:mod:`proxy_worker.streaming`). Fails closed: a body that cannot be
decoded or is too large to mask is replaced by a 502 JSON error. Buffered bodies are
decoded with the engine's limits (:func:`~proxy_worker.masking.decode_content`: decoded
size and decompression ratio, so a gzip bomb is refused); binary bodies are refused
(502) unless the target's ``binary_bodies`` is ``pass``. A body an earlier addon already
streams through its own masking (McpGate, for MCP targets: each JSON-RPC message masked
with the same engine) is left to it.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import http

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
from proxy_worker.streaming import STREAM_DECODABLE, MaskedStream

log = logging.getLogger("gatehouse.response_masking")

STREAMED_TYPES = ("text/event-stream",)


class ResponseMasking:
    """Applies the target's response-side masking rules."""

    def __init__(self, link: ControlPlaneLink) -> None:
        self.link = link

    def _masker(self, flow: http.HTTPFlow):
        st = state_of(flow)
        if st.answered_by_gateway or st.target is None or flow.response is None:
            return None
        groups = st.agent.group_ids if st.agent is not None else ()
        return self.link.state.masker(st.target.id, "response", groups)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        masker = self._masker(flow)
        if masker is None or state_of(flow).stream is not None:
            return
        resp = flow.response
        assert resp is not None
        ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        encoding = resp.headers.get("content-encoding", "")
        state_of(flow).response_covered = frozenset(masker.entity_types)
        if ctype in STREAMED_TYPES and encoding.strip().lower() in STREAM_DECODABLE:
            stream = MaskedStream(masker.sse_stream(), encoding)
            state_of(flow).stream = stream
            resp.stream = stream
            resp.headers.pop("content-encoding", None)
            resp.headers.pop("content-length", None)

    def response(self, flow: http.HTTPFlow) -> None:
        st = state_of(flow)
        if st.stream is not None:
            st.response_findings = summarise(st.stream.findings)
            st.response_record = bytes(st.stream.recorded)
            if st.stream.error:
                st.error = st.stream.error
            return
        masker = self._masker(flow)
        if masker is None:
            return
        t0 = time.perf_counter()
        try:
            self._mask(flow, masker)
        except BodyTooLargeError as e:
            answer_error(flow, 502, "response_too_large_to_mask", str(e))
        except DecompressionError as e:
            code = (
                "response_decompression_refused" if e.reason == "ratio" else "response_undecodable"
            )
            answer_error(flow, 502, code, str(e))
        except BinaryBodyError as e:
            answer_error(
                flow, 502, "response_binary_refused", f"{e}; this target refuses binary bodies"
            )
        except MaskingError as e:
            answer_error(flow, 502, "response_not_maskable", str(e))
        except ValueError as e:
            answer_error(flow, 502, "response_undecodable", f"cannot decode response body: {e}")
        except Exception as e:  # fail closed
            log.exception("response masking failed")
            answer_error(flow, 500, "gateway_error", f"response masking failed: {type(e).__name__}")
        finally:
            st.timings["mask_response"] = round((time.perf_counter() - t0) * 1000, 3)

    def _mask(self, flow: http.HTTPFlow, masker) -> None:
        st = state_of(flow)
        resp = flow.response
        assert resp is not None
        body = decode_content(
            resp.raw_content or b"",
            resp.headers.get("content-encoding"),
            max_bytes=masker.max_body_bytes,
        )
        if not body:
            st.response_record = b""
            return
        result = masker.mask_body(body, resp.headers.get("content-type"))
        st.response_covered = frozenset(masker.entity_types)
        if result.handler == "binary":  # the target passes binary bodies, as sent
            st.response_record = f"[binary body: {len(body)} bytes]".encode()
            return
        resp.headers.pop("content-encoding", None)
        resp.content = result.body
        st.response_findings = summarise(result.findings)
        st.response_record = result.body

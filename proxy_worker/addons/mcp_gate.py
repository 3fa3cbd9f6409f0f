"""McpGate: JSON-RPC aware policy, masking and recording for MCP targets.

Runs on flows whose target has ``kind="mcp"`` (an MCP server's streamable HTTP
endpoint), after PolicyGate (agent and target known; ``Policy.evaluate`` allows every
HTTP request of an MCP target, so the decisions are made here, per call) and before
RequestMasking (rules see the raw calls; approvers see the masked request).

**Requests** (``request``). A POST body is parsed strictly (:func:`proxy_worker.mcp.parse_body`):
malformed JSON gets ``-32700`` and a body that is not JSON-RPC 2.0 ``-32600``, answered by
the gateway with HTTP 400 (and recorded, body masked). Each ``tools/call``,
``resources/read`` and ``prompts/get`` is evaluated with
:meth:`~proxy_worker.policy.Policy.evaluate_mcp_call`:

* *deny*: the gateway answers a JSON-RPC error (``-32001``, ``"denied by access rule
  'x'"``, ``data`` naming the rule) with HTTP 200, so clients show it as the call's error;
* a tool that changed within the session (see below) on a target that blocks changed
  tools: the same, ``data.code`` ``tool_changed``;
* *approve*: a body holding that one call sets the flow's access decision, so
  ApprovalGate holds or defers it exactly as an HTTP request (the approval request has
  protocol ``mcp``, the masked JSON-RPC request as body and ``details`` with
  ``jsonrpc_method``, ``tool`` and the masked ``arguments``); a grant lets it pass.
  ApprovalGate's answers (pending, denied, expired, unavailable) and every other gateway
  error on a parsed body are turned into JSON-RPC errors for the body's request ids here,
  in ``response``;
* **batches**: when any call of a batch is refused, or needs a human approval (held
  calls are one per HTTP request), the whole batch is refused, nothing goes upstream:
  every request of the batch gets an error, the refused ones their own, the others
  ``-32001`` ``batch_refused`` naming the refused ids (``data.refused_ids``), so the
  client can send the rest again. A partial forward would need the gateway to merge its
  own answers into the server's stream; refusing whole is simple and never half-runs a
  batch the client meant as a unit;
* responses the client posts to server-initiated requests are dropped (HTTP 202, or
  removed from a batch) unless the target allows server requests: the gateway removed
  those requests from the stream and answered them itself, so no client response can
  belong to one the server is waiting for.

**Answers** (``responseheaders``). A 2xx ``application/json`` or ``text/event-stream``
answer (and the session's GET stream) is read message by message as it streams
(:class:`McpStream`; SSE stays streamed, framing and event ids kept). The per-message work
runs on the messages as the server sent them, then each message is masked with the
target's response rules (:meth:`~proxy_worker.masking.Masker.mask_json_value`: every
string, ``structuredContent`` included; a text block holding JSON is masked as JSON, so
field-name rules apply inside it; base64 payloads of image/audio content and resource
blobs are kept away from the detectors and passed, or the message refused, by the
target's ``binary_bodies``). ResponseMasking leaves a body McpGate streams alone.

* ``tools/list`` (and ``prompts/list``, ``resources/list``) answers lose the entries this
  agent may not use: each name is evaluated as a call with empty arguments; *deny*
  hides it, *approve* keeps it visible.
* Drift: within an ``Mcp-Session-Id`` the fingerprint of each tool
  (:func:`proxy_worker.mcp.tool_fingerprint`) first seen is kept in Redis
  (``Keys.mcp_tools``, TTL 24 h) so every worker agrees; a later ``tools/list`` showing
  another fingerprint marks the tool changed for the rest of the session: recorded
  (``changed_tools``), and on targets with ``block_changed_tools`` hidden and its calls
  refused. The fingerprints are read before the request goes upstream (the stream
  callback cannot wait for Redis) and written when the answer passes. Redis down: a
  blocking target refuses ``tools/list`` and ``tools/call`` of that session (fail
  closed); a flagging one passes them unchecked.
* Server-initiated requests (``sampling/createMessage``, ``elicitation/create``,
  ``roots/list``, ``ping``, ...) are removed from the stream unless the target allows
  them, and the gateway answers the server itself: a POST to the upstream with the
  session id and the target's credential carrying JSON-RPC error ``-32601`` ("refused by
  Gatehouse"), recorded as an exchange of its own (``server_request``).

**Recording**: one exchange per JSON-RPC request, notification or client response of a
POST (:func:`build_exchanges`, called by the Recorder), protocol ``mcp``, masked with the
record maskers as the Recorder masks bodies; GET streams and DELETE are recorded as
HTTP exchanges, as before.

Every hook catches every exception and fails closed with a JSON-RPC error (mitmproxy
would otherwise forward the request, PITFALLS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from mitmproxy import http
from redis.exceptions import RedisError

from proxy_worker import mcp
from proxy_worker.contract import (
    MCP_TOOLS_TTL_SECONDS,
    RECORD_BODY_LIMIT,
    ExchangeDecision,
    ExchangeMessage,
)
from proxy_worker.flowstate import METADATA_KEY, FlowState, answer_error, state_of
from proxy_worker.link import ControlPlaneLink
from proxy_worker.masking import Masker, MaskingError, StreamDecoder, decode_content, summarise
from proxy_worker.masking.engine import parse_content_type
from proxy_worker.policy import MCP_CALL_METHODS, McpCall, McpSettings
from proxy_worker.recording import fallback_mask_body, pretty_url, remask_url, safe_headers
from proxy_worker.streaming import STREAM_DECODABLE

log = logging.getLogger("gatehouse.mcp_gate")

#: Gatehouse error codes (``error.data.code``) answered as JSON-RPC ``-32001``; other
#: gateway errors (masking, upstream) become ``-32603``.
REFUSAL_CODES = frozenset(
    {
        "denied_by_rule",
        "tool_changed",
        "batch_refused",
        "approval_pending",
        "approval_denied",
        "approval_expired",
        "approval_unavailable",
        "approval_needs_single_call",
        "drift_unavailable",
        "binary_refused",
    }
)
#: What the gateway answers a server-initiated request it refuses.
SERVER_REQUEST_REFUSAL = "refused by Gatehouse: this MCP target does not allow server requests"
_JSON_TYPES = ("application/json", "text/event-stream")


@dataclass
class Outcome:
    """What the gateway decided for one message of a POST body."""

    decision: ExchangeDecision = "allowed"
    rule_id: int | None = None
    #: The JSON-RPC error object the gateway answered for it (``None``: not refused).
    error: dict[str, Any] | None = None
    #: Gatehouse's error code (``denied_by_rule``, ``approval_pending``, ...).
    code: str = ""
    #: The tool is marked changed in this session (tools/call).
    changed: bool = False
    grant_id: int | None = None


@dataclass
class Answer:
    """The server's (masked) answer to one forwarded request."""

    message: dict[str, Any]
    at: float
    findings: list = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


@dataclass
class DriftView:
    """An MCP session's tool fingerprints as read from Redis before the request went up."""

    key: str
    baselines: dict[str, str] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)


@dataclass
class McpFlow:
    """McpGate's state for one flow (``FlowState.mcp``)."""

    session: str = ""
    body: mcp.Body | None = None
    raw_body: bytes = b""
    parse_error: mcp.JsonRpcError | None = None
    #: Position in the body (0 for a single message) -> outcome.
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    #: Positions of the messages sent upstream, in order.
    forwarded: list[int] = field(default_factory=list)
    #: Request id key (``mcp.id_key``) -> position, for forwarded requests.
    by_id: dict[str, int] = field(default_factory=dict)
    answers: dict[str, Answer] = field(default_factory=dict)
    #: Position of the call ApprovalGate decides (a body holding one call).
    held: int | None = None
    drift: DriftView | None = None
    drift_error: str = ""
    #: The gateway wrote the JSON-RPC answer itself (no conversion needed).
    answered: bool = False

    @property
    def records_calls(self) -> bool:
        """Whether this flow is recorded call by call (a POST McpGate parsed or refused)."""
        return self.body is not None or self.parse_error is not None


def _mcp_state(flow: http.HTTPFlow) -> tuple[FlowState | None, McpFlow | None]:
    st = flow.metadata.get(METADATA_KEY)
    return st, (st.mcp if st is not None else None)


def _media(headers: http.Headers) -> str:
    return (parse_content_type(headers.get("content-type"))[0] or "").lower()


def _unsized(flow: http.HTTPFlow) -> None:
    """Drop ``Content-Length`` from an answer whose body the gateway rewrites as it streams,
    and frame it chunked for an HTTP/1.1 client (without either, the client would read
    until the connection closes, and the connection could not be reused). HTTP/2 clients
    need nothing: mitmproxy sends DATA frames (and drops the header of an HTTP/1 answer)."""
    resp = flow.response
    assert resp is not None
    resp.headers.pop("content-length", None)
    if flow.request.http_version == "HTTP/1.1" and "transfer-encoding" not in resp.headers:
        resp.headers["transfer-encoding"] = "chunked"


def _compact_text(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class McpGate:
    """JSON-RPC calls on MCP targets: per-call rules, list filtering, drift, masking."""

    def __init__(self, link: ControlPlaneLink) -> None:
        self.link = link
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- hooks ----------------------------------------------------------------------------

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        st = state_of(flow)
        if st.target is None or st.target.kind != "mcp" or st.agent is None:
            return
        try:
            await self._request(flow, st)
        except Exception as e:  # fail closed: never let a bug forward a call
            log.exception("mcp gate failed")
            reason = f"the gateway could not check the call: {type(e).__name__}"
            try:
                self._fail_request(flow, st, reason)
            except Exception:
                log.exception("mcp gate could not answer with a JSON-RPC error")
                answer_error(flow, 500, "gateway_error", reason)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        st, mf = _mcp_state(flow)
        if st is None or mf is None or st.answered_by_gateway or flow.response is None:
            return
        try:
            self._responseheaders(flow, st, mf)
        except Exception as e:  # fail closed: the body is replaced by an error
            log.exception("mcp gate failed on response headers")
            self._break_response(flow, st, mf, f"{type(e).__name__}")

    def response(self, flow: http.HTTPFlow) -> None:
        st, mf = _mcp_state(flow)
        if st is None or mf is None or mf.body is None or flow.response is None:
            return
        if not st.answered_by_gateway or mf.answered:
            return
        try:
            self._jsonrpc_answer(flow, st, mf)
        except Exception:  # keep the gateway's own (HTTP) error answer: it is closed
            log.exception("mcp gate could not rewrite a gateway answer")

    # -- requests -------------------------------------------------------------------------

    async def _request(self, flow: http.HTTPFlow, st: FlowState) -> None:
        target, agent = st.target, st.agent
        assert target is not None and agent is not None
        mf = McpFlow(session=flow.request.headers.get(mcp.SESSION_HEADER, ""))
        st.mcp = mf
        if mf.session:
            st.session_key = f"mcp:{mf.session}"[:200]
        if flow.request.method != "POST":
            return  # the session's GET stream, DELETE: HTTP exchanges, answers filtered
        st.protocol = mcp.PROTOCOL_MCP
        try:
            raw = decode_content(
                flow.request.raw_content or b"",
                flow.request.headers.get("content-encoding"),
                max_bytes=self.link.record_masker.max_body_bytes,
            )
        except (MaskingError, ValueError) as e:
            mf.raw_body = flow.request.raw_content or b""
            mf.parse_error = mcp.JsonRpcError(mcp.PARSE_ERROR, f"Parse error: {e}")
            self._answer_parse_error(flow, st, mf)
            return
        mf.raw_body = raw
        try:
            body = mcp.parse_body(raw)
        except mcp.JsonRpcError as e:
            mf.parse_error = e
            self._answer_parse_error(flow, st, mf)
            return
        mf.body = body
        settings = target.mcp or McpSettings()
        policy = self.link.state.policy
        calls: dict[int, tuple[mcp.Message, McpCall, Any]] = {}
        dropped: list[int] = []
        for pos, m in enumerate(body.messages):
            out = mf.outcomes[pos] = Outcome()
            if m.kind == "response":
                if not settings.allow_server_requests:
                    out.decision, out.code = "denied", "server_requests_refused"
                    dropped.append(pos)
                continue
            if m.kind != "request" or m.method not in MCP_CALL_METHODS:
                continue
            try:
                name, arguments = mcp.call_of(m)
            except mcp.JsonRpcError as e:
                self._refuse(mf, pos, e.code, e.message, {"code": "invalid_params"})
                continue
            call = McpCall(
                agent_id=agent.id,
                target_id=target.id,
                method=m.method,
                name=name,
                arguments=arguments,
                text=_compact_text(m.obj),
                agent_group_ids=agent.group_ids,
            )
            decision = policy.evaluate_mcp_call(call)
            out.rule_id = decision.rule_id
            if decision.action == "deny":
                rule = decision.rule
                self._refuse(
                    mf,
                    pos,
                    mcp.REFUSED,
                    f"denied by access rule {rule.name!r}"
                    if rule
                    else "denied by the target's default",
                    {
                        "code": "denied_by_rule",
                        "tool": name,
                        "rule": {"id": rule.id, "name": rule.name, "reason": rule.reason}
                        if rule
                        else None,
                    },
                )
                continue
            calls[pos] = (m, call, decision)

        await self._read_drift(mf, target.id, body, calls)
        block = settings.block_changed_tools
        pending: list[int] = []
        for pos, (m, call, decision) in calls.items():
            out = mf.outcomes[pos]
            if m.method == "tools/call" and mf.session:
                if mf.drift is not None and call.name in mf.drift.changed:
                    out.changed = True
                    if block:
                        self._refuse(
                            mf,
                            pos,
                            mcp.REFUSED,
                            f"tool {call.name!r} changed its description or input schema in "
                            "this session; blocked by Gatehouse",
                            {"code": "tool_changed", "tool": call.name},
                        )
                        continue
                elif mf.drift is None and mf.drift_error and block:
                    self._refuse_drift_unknown(mf, pos)
                    continue
            if decision.action == "approve":
                if decision.grant is not None:
                    out.decision, out.grant_id = "approved", decision.grant.id
                else:
                    pending.append(pos)
        if mf.drift is None and mf.drift_error and block:
            for pos, m in enumerate(body.messages):
                if m.kind == "request" and m.method == "tools/list":
                    self._refuse_drift_unknown(mf, pos)
        if pending and len(body.messages) > 1:
            for pos in pending:
                self._refuse(
                    mf,
                    pos,
                    mcp.REFUSED,
                    "this call needs approval: send it on its own, not in a batch",
                    {"code": "approval_needs_single_call"},
                )
            pending = []

        if any(o.error is not None for o in mf.outcomes.values()):
            self._answer_refusals(flow, st, mf)
            return
        if len(body.messages) == 1 and 0 in calls:
            _m, call, decision = calls[0]
            st.access = decision
            st.rule_id = decision.rule_id
            st.details = {"jsonrpc_method": call.method, "tool": call.name}
            if pending:
                mf.held = 0
        if dropped:
            kept = [pos for pos in range(len(body.messages)) if pos not in dropped]
            if not kept:
                self._answer(flow, st, mf, 202, None, "server_requests_refused")
                return
            flow.request.content = mcp.dumps([body.messages[pos].obj for pos in kept])
            mf.forwarded = kept
        else:
            mf.forwarded = list(range(len(body.messages)))
        for pos in mf.forwarded:
            m = body.messages[pos]
            if m.kind == "request":
                mf.by_id[mcp.id_key(m.id)] = pos

    def _refuse(self, mf: McpFlow, pos: int, code: int, message: str, data: dict[str, Any]) -> None:
        assert mf.body is not None
        out = mf.outcomes[pos]
        out.decision = "denied"
        out.code = str(data.get("code") or "")
        out.error = mcp.error_response(mf.body.messages[pos].id, code, message, data)["error"]

    def _refuse_drift_unknown(self, mf: McpFlow, pos: int) -> None:
        self._refuse(
            mf,
            pos,
            mcp.REFUSED,
            "the tool definitions of this session cannot be checked for changes right now "
            f"({mf.drift_error}); refused (fail closed)",
            {"code": "drift_unavailable"},
        )

    async def _read_drift(
        self, mf: McpFlow, target_id: int, body: mcp.Body, calls: dict[int, tuple]
    ) -> None:
        """Read the session's fingerprints when a ``tools/list`` or ``tools/call`` needs them."""
        if not mf.session:
            return
        lists = any(m.kind == "request" and m.method == "tools/list" for m in body.messages)
        names = sorted({c.name for m, c, _d in calls.values() if m.method == "tools/call"})
        if not lists and not names:
            return
        key = self.link.keys.mcp_tools(target_id, mcp.session_slot(mf.session))
        view = DriftView(key)
        try:
            if lists:
                raw = await self.link.redis.hgetall(key)
                for k, v in raw.items():
                    k = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
                    v = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                    if k.startswith("fp:"):
                        view.baselines[k[3:]] = v
                    elif k.startswith("changed:"):
                        view.changed.add(k[8:])
            else:
                values = await self.link.redis.hmget(key, [f"changed:{n}" for n in names])
                view.changed = {n for n, v in zip(names, values, strict=True) if v}
        except (RedisError, OSError, TimeoutError) as e:
            mf.drift_error = f"Redis unavailable: {type(e).__name__}"
            log.warning("mcp drift check: %s", mf.drift_error)
            return
        mf.drift = view

    # -- gateway answers ------------------------------------------------------------------

    def _answer(
        self,
        flow: http.HTTPFlow,
        st: FlowState,
        mf: McpFlow,
        status: int,
        payload: Any,
        code: str,
        decision: ExchangeDecision = "denied",
    ) -> None:
        st.answered_by_gateway = True
        st.decision = decision
        st.error = code
        mf.answered = True
        headers = {"Cache-Control": "no-store"}
        content = b""
        if payload is not None:
            headers["Content-Type"] = "application/json"
            content = mcp.dumps(payload)
        flow.response = http.Response.make(status, content, headers)

    def _answer_parse_error(self, flow: http.HTTPFlow, st: FlowState, mf: McpFlow) -> None:
        e = mf.parse_error
        assert e is not None
        code = "mcp_parse_error" if e.code == mcp.PARSE_ERROR else "mcp_invalid_request"
        self._answer(flow, st, mf, 400, mcp.error_response(None, e.code, e.message), code)

    def _answer_refusals(self, flow: http.HTTPFlow, st: FlowState, mf: McpFlow) -> None:
        """Answer a body in which some call was refused: nothing goes upstream."""
        body = mf.body
        assert body is not None
        refused_pos = [pos for pos, o in sorted(mf.outcomes.items()) if o.error is not None]
        refused = [body.messages[pos].id for pos in refused_pos]
        first_code = mf.outcomes[refused_pos[0]].code
        errors: list[dict[str, Any]] = []
        for pos, m in enumerate(body.messages):
            out = mf.outcomes[pos]
            if out.error is not None:
                errors.append({"jsonrpc": "2.0", "id": m.id, "error": out.error})
                continue
            out.decision = "denied"
            out.code = out.code or "batch_refused"
            if m.kind != "request":
                continue  # notifications and responses get no answer
            err = mcp.error_response(
                m.id,
                mcp.REFUSED,
                "batch refused by Gatehouse: "
                + ", ".join(f"id {i!r}" for i in refused)
                + " refused; send the other calls again without "
                + ("it" if len(refused) == 1 else "them"),
                {"code": "batch_refused", "refused_ids": refused},
            )
            out.error = err["error"]
            errors.append(err)
        self._answer(flow, st, mf, 200, errors if body.batch else errors[0], first_code)

    def _jsonrpc_answer(self, flow: http.HTTPFlow, st: FlowState, mf: McpFlow) -> None:
        """Turn another addon's JSON error (ApprovalGate, masking, upstream) on a parsed
        body into JSON-RPC errors for the body's request ids (HTTP 200)."""
        body = mf.body
        resp = flow.response
        assert body is not None and resp is not None
        requests = [(pos, m) for pos, m in enumerate(body.messages) if m.kind == "request"]
        try:
            gw = json.loads(resp.content or b"{}").get("error")
        except (ValueError, AttributeError):
            gw = None
        if not isinstance(gw, dict):
            gw = {"code": st.error or "gateway_error", "message": f"HTTP {resp.status_code}"}
        gcode = str(gw.get("code") or "gateway_error")
        jcode = mcp.REFUSED if gcode in REFUSAL_CODES else mcp.INTERNAL_ERROR
        message = str(gw.get("message") or gcode)
        for pos in range(len(body.messages)):
            out = mf.outcomes.setdefault(pos, Outcome())
            out.decision = st.decision
            out.code = gcode
        if not requests:
            return  # notifications only: the HTTP error stays
        errors = []
        for pos, m in requests:
            err = mcp.error_response(m.id, jcode, message, gw)
            mf.outcomes[pos].error = err["error"]
            errors.append(err)
        resp.status_code = 200
        resp.headers["Content-Type"] = "application/json"
        resp.content = mcp.dumps(errors if body.batch else errors[0])
        mf.answered = True

    def _fail_request(self, flow: http.HTTPFlow, st: FlowState, reason: str) -> None:
        mf = st.mcp if isinstance(st.mcp, McpFlow) else McpFlow()
        st.mcp = mf
        body = mf.body
        message = f"{reason}; refused (fail closed)"
        if body is not None and body.requests:
            errors = []
            for pos, m in enumerate(body.messages):
                out = mf.outcomes.setdefault(pos, Outcome())
                out.decision, out.code = "error", "gateway_error"
                if m.kind == "request":
                    err = mcp.error_response(
                        m.id, mcp.INTERNAL_ERROR, message, {"code": "gateway_error"}
                    )
                    out.error = err["error"]
                    errors.append(err)
            payload: Any = errors if body.batch else errors[0]
            self._answer(flow, st, mf, 200, payload, "gateway_error", "error")
            return
        if body is None and mf.parse_error is None:
            mf.raw_body = flow.request.raw_content or b""
            mf.parse_error = mcp.JsonRpcError(mcp.INTERNAL_ERROR, message)
        self._answer(
            flow,
            st,
            mf,
            500,
            mcp.error_response(None, mcp.INTERNAL_ERROR, message, {"code": "gateway_error"}),
            "gateway_error",
            "error",
        )

    # -- answers from the server ----------------------------------------------------------

    def _responseheaders(self, flow: http.HTTPFlow, st: FlowState, mf: McpFlow) -> None:
        resp = flow.response
        target = st.target
        assert resp is not None and target is not None
        if mf.held is not None:
            # ApprovalGate let the held call through: keep its verdict, which a client
            # closing the stream after its answer (an error of the flow) must not undo.
            mf.outcomes[mf.held].decision = st.decision
        session = resp.headers.get(mcp.SESSION_HEADER, "")
        if session and not mf.session:
            mf.session = session
            st.session_key = f"mcp:{session}"[:200]
        if flow.request.method == "DELETE":
            if 200 <= resp.status_code < 300 and mf.session:
                self._spawn(self._forget_session(target.id, mf.session))
            return
        groups = st.agent.group_ids if st.agent is not None else frozenset()
        masker = self.link.state.masker(target.id, "response", groups)
        st.response_covered = frozenset(masker.entity_types) if masker is not None else frozenset()
        media = _media(resp.headers)
        if not 200 <= resp.status_code < 300 or media not in _JSON_TYPES:
            return  # an HTTP error or another type: ResponseMasking masks it as HTTP
        encoding = resp.headers.get("content-encoding", "").strip().lower()
        if encoding not in STREAM_DECODABLE:
            raise MaskingError(f"cannot decode a {encoding!r} encoded MCP answer")
        stream = McpStream(self, flow, st, mf, masker, encoding, sse=media == "text/event-stream")
        st.stream = stream
        resp.stream = stream
        resp.headers.pop("content-encoding", None)
        _unsized(flow)

    def _break_response(self, flow: http.HTTPFlow, st: FlowState, mf: McpFlow, why: str) -> None:
        """Replace an answer the gateway cannot read by JSON-RPC errors (nothing passes)."""
        resp = flow.response
        assert resp is not None
        message = f"the gateway could not check the server's answer ({why}); refused"
        ids = [
            mf.body.messages[p].id
            for p in mf.forwarded
            if mf.body is not None and mf.body.messages[p].kind == "request"
        ]
        errors = [
            mcp.error_response(i, mcp.INTERNAL_ERROR, message, {"code": "gateway_error"})
            for i in ids
        ]
        payload: Any = (
            errors
            if (mf.body is not None and mf.body.batch)
            else (errors[0] if errors else mcp.error_response(None, mcp.INTERNAL_ERROR, message))
        )
        data = mcp.dumps(payload)
        st.decision, st.error = "error", "gateway_error"
        resp.status_code = 200
        resp.headers["Content-Type"] = "application/json"
        resp.headers.pop("content-encoding", None)
        _unsized(flow)
        stream = _FixedStream(data)
        st.stream = stream
        resp.stream = stream

    # -- background work --------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _http(self) -> httpx.AsyncClient:
        """The client that answers servers (upstream TLS trusted as mitmproxy trusts it)."""
        if self._client is None:
            ca_file = os.environ.get("GATEHOUSE_UPSTREAM_CA_FILE")
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=ca_file) if ca_file else True
            )
            self._client = httpx.AsyncClient(timeout=10.0, verify=verify)
        return self._client

    async def _store_fingerprints(self, key: str, new: dict[str, str], changed: list[str]) -> None:
        try:
            pipe = self.link.redis.pipeline(transaction=True)
            for name, fp in new.items():
                pipe.hsetnx(key, f"fp:{name}", fp)
            for name in changed:
                pipe.hset(key, f"changed:{name}", "1")
            pipe.expire(key, MCP_TOOLS_TTL_SECONDS)
            await pipe.execute()
        except (RedisError, OSError, TimeoutError) as e:
            log.warning("could not store MCP tool fingerprints: %s", type(e).__name__)

    async def _forget_session(self, target_id: int, session: str) -> None:
        key = self.link.keys.mcp_tools(target_id, mcp.session_slot(session))
        with contextlib.suppress(RedisError, OSError, TimeoutError):  # it expires anyway
            await self.link.redis.delete(key)

    async def _refuse_server_request(
        self, flow: http.HTTPFlow, st: FlowState, mf: McpFlow, obj: dict[str, Any], masked: Any
    ) -> None:
        """Answer a server-initiated request with -32601 and record it."""
        target = st.target
        assert target is not None
        answer = mcp.error_response(
            obj.get("id"),
            mcp.METHOD_NOT_FOUND,
            SERVER_REQUEST_REFUSAL,
            {"code": "server_request_refused"},
        )
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if mf.session:
            headers["Mcp-Session-Id"] = mf.session
        version = flow.request.headers.get(mcp.PROTOCOL_VERSION_HEADER)
        if version:
            headers["Mcp-Protocol-Version"] = version
        if target.credential:
            headers[target.auth_header] = (
                f"{target.auth_scheme} {target.credential}"
                if target.auth_scheme
                else target.credential
            )
        status, error = 502, ""
        t0 = time.perf_counter()
        started = time.time()
        try:
            r = await self._http().post(
                flow.request.url, content=mcp.dumps(answer), headers=headers
            )
            status = r.status_code
            if status >= 300:
                error = f"the server refused the gateway's answer (HTTP {status})"
        except httpx.HTTPError as e:
            error = f"could not answer the server: {type(e).__name__}"
            log.warning("mcp: %s", error)
        try:
            await self.link.record_exchange(
                self._server_request_exchange(
                    flow, st, mf, obj, masked, answer, status, error, started, t0
                )
            )
        except Exception:
            log.exception("could not record a refused server request")

    def _server_request_exchange(
        self,
        flow: http.HTTPFlow,
        st: FlowState,
        mf: McpFlow,
        obj: dict[str, Any],
        masked: Any,
        answer: dict[str, Any],
        status: int,
        error: str,
        started: float,
        t0: float,
    ) -> ExchangeMessage:
        extra = self.link.record_masker_for(st.response_covered)
        if extra is not None:
            masked, _ = _record_value(extra, masked)
        params = masked.get("params") if isinstance(masked, dict) else None
        details = {
            "jsonrpc_method": str(obj.get("method") or ""),
            "jsonrpc_id": obj.get("id"),
            "tool": "",
            "arguments": mcp.bounded(params),
            "error": {"code": mcp.METHOD_NOT_FOUND, "message": SERVER_REQUEST_REFUSAL},
            "is_error": True,
            "mcp_session": mf.session,
            "batch_index": None,
            "server_request": True,
            "hidden_tools": [],
            "changed_tools": [],
        }
        req_text, req_cut = _text(_compact_text(masked))
        resp_text, resp_cut = _text(_compact_text(answer))
        return ExchangeMessage(
            exchange_id=str(uuid.uuid4()),
            worker_id=self.link.worker_id,
            started_at=started,
            agent_id=st.agent.id if st.agent else None,
            target_id=st.target.id if st.target else None,
            session_key=f"mcp:{mf.session}"[:200] if mf.session else st.session_key,
            client_address=(flow.client_conn.peername or ("", 0))[0],
            method=details["jsonrpc_method"] or "request",
            url=_record_url(flow, st, self.link),
            request_headers={},
            request_body=req_text,
            status_code=status,
            response_headers={},
            response_body=resp_text,
            decision="denied",
            error="server_request_refused" + (f": {error}" if error else ""),
            timings={"total": round((time.perf_counter() - t0) * 1000, 3)},
            body_truncated=req_cut or resp_cut,
            protocol=mcp.PROTOCOL_MCP,
            details=details,
        )


class _FixedStream:
    """A stream callable that drops the upstream body and sends ``data`` at its end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.recorded = bytearray(data[:RECORD_BODY_LIMIT])
        self.error = "gateway_error"
        self.findings: list = []

    def __call__(self, chunk: bytes) -> list[bytes]:
        return [] if chunk else [self.data]


# -- masking one message ---------------------------------------------------------------------

_DROP = object()


def _mask_json_text(masker: Masker, value: Any, findings: list) -> Any:
    """``value`` with every text content block holding JSON masked as JSON (field-name
    and JSONPath rules then apply inside it); unchanged parts are shared."""
    if isinstance(value, list):
        new = [_mask_json_text(masker, v, findings) for v in value]
        return value if all(a is b for a, b in zip(new, value, strict=True)) else new
    if not isinstance(value, dict):
        return value
    text = value.get("text")
    if value.get("type") == "text" and isinstance(text, str) and text[:1] in ("{", "["):
        try:
            inner = json.loads(text)
        except ValueError:
            inner = None
        if isinstance(inner, dict | list):
            masked, f = masker.mask_json_value(inner, "$text")
            findings.extend(f)
            if masked is not inner:
                indent = 2 if "\n" in text else None
                return {**value, "text": json.dumps(masked, ensure_ascii=False, indent=indent)}
        return value
    new_items = {k: _mask_json_text(masker, v, findings) for k, v in value.items()}
    return value if all(new_items[k] is value[k] for k in value) else new_items


def _record_value(masker: Masker, value: Any) -> tuple[Any, list]:
    """:func:`_mask_value` for the record: a value that cannot be masked is recorded as a
    placeholder (never unmasked, never lost silently)."""
    try:
        return _mask_value(masker, value)
    except (MaskingError, RecursionError) as e:
        return f"[not recorded: {e}]", []


def _mask_strings(masker: Masker, value: Any, findings: list, loc: str) -> Any:
    """``value`` with each string masked as text (detectors only: no field-name or
    JSONPath rule replaces a whole value), structure kept."""
    if isinstance(value, str):
        masked, f = masker.mask_text(value, location=loc)
        findings.extend(f)
        return masked
    if isinstance(value, list):
        return [_mask_strings(masker, v, findings, loc) for v in value]
    if isinstance(value, dict):
        return {k: _mask_strings(masker, v, findings, loc) for k, v in value.items()}
    return value


#: Where a JSON-RPC message carries data (as opposed to protocol fields): a tool result's
#: ``content`` and ``structuredContent``, a resource's ``contents``, a prompt's or a
#: sampling request's ``messages``, a call's ``arguments``. Spec: MCP 2025-06-18, "Server
#: features" (tools/call, resources/read, prompts/get) and "Client features" (sampling).
_PAYLOAD_KEYS = {
    "result": ("content", "structuredContent", "contents", "messages"),
    "params": ("arguments", "messages"),
}


def _mask_value(masker: Masker, value: Any) -> tuple[Any, list]:
    """Mask one JSON-RPC message with ``masker`` (base64 payloads left alone).

    The data a message carries (:data:`_PAYLOAD_KEYS`) gets every rule: detectors,
    field-name and JSONPath rules (paths from the message root, ``$.result.content…``),
    JSON inside text blocks masked as JSON. Everything else (ids, method names, tool
    names, descriptions and input schemas of ``tools/list``, error messages, progress
    notifications) is masked by the detectors only, as text, so that a field-name rule
    (``name``, ``email``) never replaces a protocol field or a tool's schema and breaks the
    session for the client (list answers carry no payload keys: masked as text
    throughout). Returns ``(masked, findings)``.
    """
    findings: list = []
    stashed, blobs = mcp.stash_blobs(value) if mcp.find_blobs(value) else (value, [])
    if not isinstance(stashed, dict):
        return mcp.restore_blobs(_mask_strings(masker, stashed, findings, "$"), blobs), findings
    payload: dict[str, dict[str, Any]] = {}
    rest: dict[str, Any] = dict(stashed)
    for part, keys in _PAYLOAD_KEYS.items():
        block = stashed.get(part)
        if isinstance(block, dict) and any(k in block for k in keys):
            payload[part] = {k: block[k] for k in keys if k in block}
            rest[part] = {k: v for k, v in block.items() if k not in keys}
    masked = _mask_strings(masker, rest, findings, "$")
    if payload:
        inner = _mask_json_text(masker, payload, findings)
        inner, f = masker.mask_json_value(inner, "$")
        findings.extend(f)
        for part, values in inner.items():
            masked[part] = {**masked.get(part, {}), **values}
    return mcp.restore_blobs(masked, blobs), findings


def mask_jsonrpc_body(
    masker: Masker, body: bytes, mf: McpFlow | None = None
) -> tuple[bytes, list] | None:
    """A JSON-RPC POST body (one message or a batch) masked message by message with
    :func:`_mask_value` (data fully, protocol fields by the detectors only), as compact
    UTF-8 JSON; the body itself when nothing changed. ``None`` when ``body`` is not JSON
    (the caller masks it as any other body). Returns ``(body, findings)``.

    ``mf``: McpGate's state of the flow; when it parsed exactly this body, its messages
    are reused instead of parsing the body again.
    """
    parsed = mf.body if mf is not None and mf.raw_body == body else None
    if parsed is not None:
        objs = [m.obj for m in parsed.messages]
        value: Any = objs if parsed.batch else objs[0]
    else:
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
    findings: list = []
    if isinstance(value, list):
        masked = []
        for message in value:
            out, f = _mask_value(masker, message)
            masked.append(out)
            findings.extend(f)
    else:
        masked, findings = _mask_value(masker, value)
    if not findings and masked == value:
        return body, findings
    return json.dumps(masked, ensure_ascii=False, separators=(",", ":")).encode(), findings


class McpStream:
    """``flow.response.stream`` for an MCP answer: JSON-RPC messages checked and masked
    one by one (SSE events as they complete; a JSON body whole, at its end).

    Same interface as :class:`proxy_worker.streaming.MaskedStream` (``recorded``,
    ``findings``, ``error``), which ResponseMasking and the Recorder read. A failure stops
    the stream after JSON-RPC errors for the requests still unanswered (nothing passes
    unchecked).
    """

    def __init__(
        self,
        gate: McpGate,
        flow: http.HTTPFlow,
        st: FlowState,
        mf: McpFlow,
        masker: Masker | None,
        encoding: str,
        *,
        sse: bool,
    ) -> None:
        self.gate = gate
        self.flow = flow
        self.st = st
        self.mf = mf
        self.masker = masker
        self.limit = gate.link.record_masker.max_body_bytes
        self._decoder = StreamDecoder(encoding)
        self._sse = mcp.SseParser(max_event_bytes=self.limit) if sse else None
        self._buf = bytearray()
        self.recorded = bytearray()
        self.findings: list = []
        self.error = ""
        target = st.target
        self.settings = (target.mcp if target is not None else None) or McpSettings()

    def _keep(self, out: bytes) -> bytes:
        room = RECORD_BODY_LIMIT - len(self.recorded)
        if room > 0 and out:
            self.recorded += out[:room]
        return out

    def __call__(self, chunk: bytes) -> list[bytes]:
        # A list, never b"": mitmproxy writes each returned bytes object as one chunk of
        # a chunked HTTP/1.1 answer, and an empty one is the chunk that ends the body.
        if self.error:
            return []
        try:
            if chunk:
                out = self._feed(self._decoder.feed(chunk))
            else:
                tail = self._decoder.finish()
                out = (self._feed(tail) if tail else b"") + self._finish()
        except Exception as e:  # fail closed: stop the stream rather than leak
            log.exception("mcp stream failed")
            self.error = f"mcp stream failed: {type(e).__name__}"
            self.st.decision, self.st.error = "error", "mcp_stream_failed"
            out = self._fail_closed()
        return [self._keep(out)] if out else []

    # -- framing --------------------------------------------------------------------------

    def _feed(self, data: bytes) -> bytes:
        if self._sse is None:
            self._buf += data
            if len(self._buf) > self.limit:
                raise MaskingError(f"an MCP answer larger than {self.limit} bytes")
            return b""
        return b"".join(self._event(ev) for ev in self._sse.feed(data))

    def _finish(self) -> bytes:
        if self._sse is not None:
            return b"".join(self._event(ev) for ev in self._sse.finish())
        body = bytes(self._buf)
        if not body.strip():
            return body
        try:
            value = json.loads(body)
        except ValueError:
            return self._text(body.decode("utf-8", "replace")).encode("utf-8")
        new, changed = self._value(value)
        if new is _DROP:
            return b""
        return mcp.dumps(new) if changed else body

    def _event(self, ev: mcp.SseEvent) -> bytes:
        if not ev.data:
            return ev.raw  # comments, priming events (an id and no data)
        try:
            value = json.loads(ev.data)
        except ValueError:
            text = self._text(ev.data)
            return ev.raw if text is ev.data else mcp.rebuild_event(ev, text)
        new, changed = self._value(value)
        if new is _DROP:
            return b""  # removed whole: its id would name a message the client never got
        if not changed:
            return ev.raw
        return mcp.rebuild_event(ev, mcp.dumps(new).decode("utf-8"))

    def _text(self, text: str) -> str:
        if self.masker is None:
            return text
        masked, findings = self.masker.mask_text(text, location="mcp")
        self.findings.extend(findings)
        return masked

    def _value(self, value: Any) -> tuple[Any, bool]:
        if isinstance(value, list):
            out, changed = [], False
            for item in value:
                new, c = self._message(item)
                changed = changed or c
                if new is not _DROP:
                    out.append(new)
            if not out and value:
                return _DROP, True
            return out, changed
        return self._message(value)

    # -- one message ----------------------------------------------------------------------

    def _mask(self, obj: Any) -> tuple[Any, list]:
        if self.masker is None:
            return obj, []
        masked, findings = _mask_value(self.masker, obj)
        self.findings.extend(findings)
        return masked, findings

    def _message(self, obj: Any) -> tuple[Any, bool]:
        kind = mcp.server_message_kind(obj)
        mf = self.mf
        if kind == "request":
            masked, _ = self._mask(obj)
            if not self.settings.allow_server_requests:
                self.gate._spawn(
                    self.gate._refuse_server_request(self.flow, self.st, mf, obj, masked)
                )
                return _DROP, True
            return masked, masked is not obj
        if kind != "response":
            if self._binary_refused(obj):
                return _DROP, True
            masked, _ = self._mask(obj)
            return masked, masked is not obj
        key = mcp.id_key(obj.get("id"))
        pos = mf.by_id.get(key)
        request = mf.body.messages[pos] if (mf.body is not None and pos is not None) else None
        new: dict[str, Any] = obj
        hidden: list[str] = []
        changed: list[str] = []
        if request is not None and request.method in mcp.LIST_METHODS and "result" in obj:
            new, hidden, changed = self._filter_list(request.method, obj)
        if self._binary_refused(new):
            new = mcp.error_response(
                obj.get("id"),
                mcp.REFUSED,
                "the answer holds binary content and this target refuses binary bodies",
                {"code": "binary_refused"},
            )
        masked, findings = self._mask(new)
        if request is not None:
            mf.answers[key] = Answer(masked, time.perf_counter(), findings, hidden, changed)
        return masked, masked is not obj

    def _binary_refused(self, obj: Any) -> bool:
        return (
            self.masker is not None
            and self.masker.binary_bodies != "pass"
            and bool(mcp.find_blobs(obj))
        )

    def _filter_list(
        self, method: str, obj: dict[str, Any]
    ) -> tuple[dict[str, Any], list[str], list[str]]:
        """A list answer without the entries this agent may not use (and, on blocking
        targets, without changed tools); drift recorded and stored."""
        st, mf = self.st, self.mf
        result = obj.get("result")
        entries = mcp.list_entries(method, result)
        if not isinstance(result, dict):
            return obj, [], []
        policy = self.gate.link.state.policy
        agent, target = st.agent, st.target
        assert agent is not None and target is not None
        hidden: set[str] = set()
        for _i, name, _entry in entries:
            decision = policy.evaluate_mcp_call(
                McpCall(
                    agent_id=agent.id,
                    target_id=target.id,
                    method=mcp.LIST_CALL[method],
                    name=name,
                    arguments={},
                    agent_group_ids=agent.group_ids,
                )
            )
            if decision.action == "deny":
                hidden.add(name)
        changed: list[str] = []
        view = mf.drift
        if method == "tools/list" and view is not None:
            fps = {name: mcp.tool_fingerprint(entry) for _i, name, entry in entries}
            new = {n: fp for n, fp in fps.items() if n not in view.baselines}
            changed = sorted(
                n
                for n, fp in fps.items()
                if n in view.changed or (n in view.baselines and view.baselines[n] != fp)
            )
            newly = [n for n in changed if n not in view.changed]
            view.baselines.update(new)
            view.changed.update(newly)
            if self.settings.block_changed_tools:
                hidden.update(changed)
            self.gate._spawn(self.gate._store_fingerprints(view.key, new, newly))
            if changed:
                log.warning(
                    "mcp target %s session %s: tools changed: %s",
                    target.slug,
                    mf.session[:16],
                    ", ".join(changed),
                )
        listed = result.get(mcp.LIST_METHODS[method][0])
        unnamed = isinstance(listed, list) and len(entries) != len(listed)
        if not hidden and not unnamed:
            return obj, [], changed
        return (
            {**obj, "result": mcp.filter_list(method, result, hidden)},
            sorted(hidden),
            changed,
        )

    def _fail_closed(self) -> bytes:
        """JSON-RPC errors for the forwarded requests not answered yet."""
        mf = self.mf
        body = mf.body
        ids = []
        if body is not None:
            ids = [
                body.messages[p].id
                for p in mf.forwarded
                if body.messages[p].kind == "request"
                and mcp.id_key(body.messages[p].id) not in mf.answers
            ]
        message = f"the gateway could not check the server's answer ({self.error}); refused"
        errors = [
            mcp.error_response(i, mcp.INTERNAL_ERROR, message, {"code": "gateway_error"})
            for i in ids
        ]
        for i, err in zip(ids, errors, strict=True):
            mf.answers[mcp.id_key(i)] = Answer(err, time.perf_counter())
        if self._sse is not None:
            return b"".join(b"event: message\ndata: " + mcp.dumps(e) + b"\n\n" for e in errors)
        if not errors:
            return b""
        return mcp.dumps(errors if (body is not None and body.batch) else errors[0])


# -- recording -------------------------------------------------------------------------------


def _text(value: str) -> tuple[str, bool]:
    return value[:RECORD_BODY_LIMIT], len(value) > RECORD_BODY_LIMIT


def _record_url(flow: http.HTTPFlow, st: FlowState, link: ControlPlaneLink) -> str:
    """The request URL as the Recorder records it (masked)."""
    if st.request_url_record is not None:
        extra = link.record_masker_for(st.request_covered)
        return remask_url(extra, st.request_url_record) if extra else st.request_url_record
    return remask_url(link.record_masker, pretty_url(flow.request))


def _split_findings(findings: list[dict[str, Any]], index: int | None) -> list[dict[str, Any]]:
    """The findings of one batch element (locations ``$[i]...`` become ``$...``)."""
    if index is None:
        return findings
    prefix = f"$[{index}]"
    return [
        {**f, "location": "$" + f["location"][len(prefix) :]}
        for f in findings
        if isinstance(f.get("location"), str)
        and f["location"].startswith(prefix)
        and f["location"][len(prefix) : len(prefix) + 1] in ("", ".", "[")
    ]


def _masked_requests(
    st: FlowState, mf: McpFlow, link: ControlPlaneLink
) -> tuple[dict[int, Any], dict[int, list]]:
    """Each message of the body as recorded (masked) and its request findings."""
    body = mf.body
    assert body is not None
    out: dict[int, Any] = {}
    findings: dict[int, list] = {}
    if st.request_record is not None and mf.forwarded:
        try:
            parsed = json.loads(st.request_record)
        except ValueError:
            parsed = None
        sent = parsed if (body.batch or len(mf.forwarded) != len(body.messages)) else [parsed]
        if isinstance(sent, list) and len(sent) == len(mf.forwarded):
            extra = link.record_masker_for(st.request_covered)
            for i, pos in enumerate(mf.forwarded):
                value = sent[i]
                if extra is not None:
                    value, _ = _record_value(extra, value)
                out[pos] = value
                index = i if isinstance(parsed, list) else None
                findings[pos] = _split_findings(st.request_findings, index)
    for pos, m in enumerate(body.messages):
        if pos not in out:
            out[pos], f = _record_value(link.record_masker, m.obj)
            findings[pos] = summarise(f)
    return out, findings


def _answer_parts(answer: Any) -> dict[str, Any]:
    """``result``/``is_error``/``error`` details of a (masked) JSON-RPC response."""
    if not isinstance(answer, dict):
        return {}
    if "error" in answer:
        err = answer["error"] if isinstance(answer["error"], dict) else {}
        return {
            "is_error": True,
            "error": {"code": err.get("code"), "message": err.get("message")},
        }
    result = answer.get("result")
    return {
        "result": mcp.bounded(result),
        "is_error": bool(isinstance(result, dict) and result.get("isError") is True),
    }


def build_exchanges(
    flow: http.HTTPFlow, st: FlowState, link: ControlPlaneLink
) -> list[ExchangeMessage]:
    """The exchanges of a POST McpGate read: one per JSON-RPC message (a body that did
    not parse: one, with the gateway's error). Everything in them is masked: requests
    by the target's request rules (when they ran) and the record maskers, answers by the
    target's response rules and the record maskers (``Recorder`` semantics)."""
    mf: McpFlow = st.mcp
    resp = flow.response
    total = st.timings.setdefault("total", round((time.perf_counter() - st.started_perf) * 1000, 3))
    common = {
        "worker_id": link.worker_id,
        "started_at": st.started_at,
        "agent_id": st.agent.id if st.agent else None,
        "target_id": st.target.id if st.target else None,
        "session_key": f"mcp:{mf.session}"[:200] if mf.session else st.session_key,
        "client_address": (flow.client_conn.peername or ("", 0))[0],
        "url": _record_url(flow, st, link),
        "request_headers": safe_headers(flow.request.headers, st.target, link.record_masker),
        "status_code": resp.status_code if resp else 502,
        "response_headers": safe_headers(resp.headers, st.target, link.record_masker)
        if resp
        else {},
        "protocol": mcp.PROTOCOL_MCP,
    }
    flow_error = st.error or (flow.error.msg if flow.error else "")
    if mf.body is None:
        e = mf.parse_error or mcp.JsonRpcError(mcp.INTERNAL_ERROR, "unreadable body")
        masked, _ = fallback_mask_body(link.record_masker, mf.raw_body, "text/plain")
        req_text, req_cut = _text(masked.decode("utf-8", errors="replace"))
        resp_text, resp_cut = _text(
            (resp.content or b"").decode("utf-8", "replace") if resp is not None else ""
        )
        return [
            ExchangeMessage(
                exchange_id=str(uuid.uuid4()),
                method=flow.request.method,
                request_body=req_text,
                response_body=resp_text,
                decision=st.decision,
                error=flow_error,
                timings=dict(st.timings),
                body_truncated=req_cut or resp_cut,
                details={
                    "jsonrpc_method": "",
                    "tool": "",
                    "is_error": True,
                    "error": {"code": e.code, "message": e.message},
                    "mcp_session": mf.session,
                    "batch_index": None,
                    "server_request": False,
                    "hidden_tools": [],
                    "changed_tools": [],
                },
                **common,
            )
        ]
    body = mf.body
    requests, req_findings = _masked_requests(st, mf, link)
    extra = link.record_masker_for(st.response_covered)
    upstream_error: dict[str, Any] | None = None
    if resp is not None and not 200 <= resp.status_code < 300 and not st.answered_by_gateway:
        upstream_error = _upstream_error(st, resp.status_code)
    out: list[ExchangeMessage] = []
    for pos, m in enumerate(body.messages):
        outcome = mf.outcomes.get(pos) or Outcome()
        masked = requests[pos]
        key = mcp.id_key(m.id)
        answer_obj: Any = None
        answer = mf.answers.get(key) if m.kind == "request" else None
        response_findings: list = []
        if outcome.error is not None:
            answer_obj = {"jsonrpc": "2.0", "id": m.id, "error": outcome.error}
        elif answer is not None:
            answer_obj = answer.message
            response_findings = summarise(answer.findings)
            if extra is not None:
                answer_obj, f = _record_value(extra, answer_obj)
                if not response_findings:
                    response_findings = summarise(f)
        details: dict[str, Any] = {
            "jsonrpc_method": m.method,
            "jsonrpc_id": m.id,
            "mcp_session": mf.session,
            "batch_index": m.index,
            "server_request": False,
            "hidden_tools": answer.hidden if answer else [],
            "changed_tools": answer.changed
            if answer and answer.changed
            else ([mcp.message_target(masked)] if outcome.changed else []),
        }
        if m.kind == "request":
            details["tool"] = mcp.message_target(masked)
            if m.method in MCP_CALL_METHODS:
                params = masked.get("params") if isinstance(masked, dict) else None
                args = params.get("arguments", {}) if isinstance(params, dict) else {}
                details["arguments"] = mcp.bounded(args)
            if answer_obj is not None:
                details.update(_answer_parts(answer_obj))
            elif upstream_error is not None and pos in mf.forwarded:
                details.update(is_error=True, error=upstream_error)
            elif pos in mf.forwarded:
                why = flow_error or "the server did not answer"
                details.update(is_error=True, error={"code": None, "message": why})
        elif m.kind == "notification":
            details["jsonrpc_id"] = None
        else:  # a response the client sent to a server-initiated request
            details["jsonrpc_method"] = ""
            details["client_response"] = True
            details.update(_answer_parts(masked))
        decision: ExchangeDecision = outcome.decision
        error = outcome.code
        approval_id = None
        timings: dict[str, float] = {"total": total}
        if pos == mf.held:
            approval_id = st.approval_id
            if outcome.error is None and outcome.decision == "allowed":
                decision = st.decision
            if "approval_wait" in st.timings:
                timings["approval_wait"] = st.timings["approval_wait"]
        elif outcome.grant_id is not None and outcome.error is None:
            decision = "approved"
        if answer is not None:
            timings["total"] = round((answer.at - st.started_perf) * 1000, 3)
        unanswered = outcome.error is None and answer is None and m.kind == "request"
        if (
            unanswered
            and pos in mf.forwarded
            and (flow.error is not None or resp is None or upstream_error is not None or st.error)
        ):
            decision = "error" if decision in ("allowed", "approved") else decision
            error = error or flow_error or "upstream_error"
        req_text, req_cut = _text(_compact_text(masked))
        resp_text, resp_cut = _text(_compact_text(answer_obj) if answer_obj is not None else "")
        out.append(
            ExchangeMessage(
                exchange_id=str(uuid.uuid4()),
                method=(m.method or "response")[:64],
                request_body=req_text,
                response_body=resp_text,
                decision=decision,
                rule_id=outcome.rule_id,
                approval_id=approval_id,
                error=error,
                request_findings=req_findings.get(pos, []),
                response_findings=response_findings,
                timings=timings,
                body_truncated=req_cut or resp_cut,
                details=details,
                **common,
            )
        )
    return out


def _upstream_error(st: FlowState, status: int) -> dict[str, Any]:
    """The error of an HTTP error answer from the server (its JSON-RPC error when the
    masked body holds one)."""
    try:
        value = json.loads(st.response_record or b"")
    except ValueError:
        value = None
    err = value.get("error") if isinstance(value, dict) else None
    if isinstance(err, dict) and "message" in err:
        return {"code": err.get("code"), "message": f"HTTP {status}: {err.get('message')}"}
    return {"code": None, "message": f"the server answered HTTP {status}"}

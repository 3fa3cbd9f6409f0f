"""Masking rules from a policy snapshot in the worker: agent-group scoping, the target's
binary-body setting, JSON paths and deny lists compiled, and the masking addons' limits
(decompression bombs, binary bodies) answered fail-closed."""

from __future__ import annotations

import gzip
import json

import pytest
from mitmproxy.test import tflow

from proxy_worker.addons.request_masking import RequestMasking
from proxy_worker.addons.response_masking import ResponseMasking
from proxy_worker.contract import SCHEMA_VERSION
from proxy_worker.flowstate import state_of
from proxy_worker.link import MaskerFactory, PolicyState, compile_maskers
from proxy_worker.policy import Agent, Policy


def policy(rules: list[dict], binary: str = "refuse") -> Policy:
    return Policy.from_document(
        {
            "v": SCHEMA_VERSION,
            "version": 3,
            "targets": [
                {"id": 1, "slug": "crm", "upstream": "http://crm", "binary_bodies": binary},
                {"id": 2, "slug": "llm", "upstream": "http://llm"},
            ],
            "masking_rules": rules,
        }
    )


RULES = [
    {"id": 1, "name": "all", "entity_types": ["EMAIL"], "direction": "both"},
    {
        "id": 2,
        "name": "contractors",
        "entity_types": ["PHONE"],
        "json_paths": ["$.customers[*].address"],
        "deny_list": ["Falcon"],
        "direction": "response",
        "target_ids": [1],
        "agent_group_ids": [7],
    },
]


def factory(rules=RULES, binary="refuse") -> MaskerFactory:
    return MaskerFactory(
        policy(rules, binary), hash_key=b"k", phone_regions=("US",), max_body_bytes=1 << 20
    )


def test_group_scoped_rules_apply_to_members_only() -> None:
    f = factory()
    outsider = f.masker(1, "response", frozenset({3}))
    member = f.masker(1, "response", frozenset({3, 7}))
    assert outsider is not None and member is not None
    assert outsider.entity_types == ("EMAIL",)
    assert set(member.entity_types) >= {"EMAIL", "PHONE", "CONTRACTORS"}
    assert f.masker(2, "response", frozenset({7})).entity_types == ("EMAIL",)
    assert f.masker(1, "response", frozenset({3, 7})) is member  # shared
    body = json.dumps({"customers": [{"address": "1 Main St"}], "n": "Falcon"}).encode()
    out = json.loads(member.mask_body(body, "application/json").body)
    assert out == {"customers": [{"address": "[REDACTED]"}], "n": "[CONTRACTORS]"}


def test_policy_state_passes_the_agent_groups() -> None:
    f = factory()
    maskers = compile_maskers(
        policy(RULES), hash_key=b"k", phone_regions=("US",), max_body_bytes=1 << 20
    )
    state = PolicyState(policy(RULES), maskers, factory=f)
    assert state.masker(1, "response").entity_types == ("EMAIL",)
    assert "PHONE" in state.masker(1, "response", {7}).entity_types
    assert state.masker(1, "request", {7}).entity_types == ("EMAIL",)


def test_binary_bodies_follow_the_target() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x01"
    assert (
        factory(binary="pass").masker(1, "request", frozenset()).mask_body(png, "image/png").handler
        == "binary"
    )
    with pytest.raises(Exception, match="not masked"):
        factory().masker(1, "request", frozenset()).mask_body(png, "image/png")


def test_a_bad_rule_rejects_the_snapshot() -> None:
    from proxy_worker.masking import MaskingConfigError

    with pytest.raises(MaskingConfigError):
        factory([{"id": 1, "name": "bad", "json_paths": ["$[["]}])


class _Link:
    def __init__(self, binary: str = "refuse") -> None:
        p = policy(RULES, binary)
        f = MaskerFactory(p, hash_key=b"k", phone_regions=("US",), max_body_bytes=1 << 20)
        self.state = PolicyState(p, {}, factory=f)


def _flow(body: bytes, headers: dict[str, str]):
    flow = tflow.tflow(resp=True)
    flow.request.headers.clear()
    for k, v in headers.items():
        flow.request.headers[k] = v
    flow.request.raw_content = body
    st = state_of(flow)
    st.target = policy(RULES).targets_by_id[1]
    st.agent = Agent(id=1, name="a", group_ids=frozenset({7}))
    flow.response = None
    return flow


def test_request_gzip_bomb_is_refused() -> None:
    bomb = gzip.compress(b"{" + b" " * (64 << 20) + b"}")
    flow = _flow(bomb, {"content-type": "application/json", "content-encoding": "gzip"})
    RequestMasking(_Link()).request(flow)
    assert flow.response is not None and flow.response.status_code == 413
    body = json.loads(flow.response.content)
    assert body["error"]["code"] in ("request_decompression_refused", "request_too_large_to_mask")


def test_request_gzip_body_is_masked_and_reencoded() -> None:
    raw = json.dumps({"email": "jane@example.com"}).encode()
    flow = _flow(
        gzip.compress(raw), {"content-type": "application/json", "content-encoding": "gzip"}
    )
    RequestMasking(_Link()).request(flow)
    assert flow.response is None
    assert flow.request.headers["content-encoding"] == "gzip"
    assert json.loads(flow.request.content) == {"email": "[EMAIL]"}
    assert state_of(flow).request_findings == [{"type": "EMAIL", "location": "$.email", "count": 1}]


@pytest.mark.parametrize(("binary", "status"), [("refuse", 415), ("pass", None)])
def test_request_binary_body(binary: str, status) -> None:
    flow = _flow(b"\x89PNG\r\n\x1a\n\x00", {"content-type": "image/png"})
    RequestMasking(_Link(binary)).request(flow)
    if status is None:
        assert flow.response is None and flow.request.raw_content == b"\x89PNG\r\n\x1a\n\x00"
    else:
        assert flow.response.status_code == status
        assert json.loads(flow.response.content)["error"]["code"] == "request_binary_refused"


def test_response_bomb_and_binary_are_refused() -> None:
    flow = _flow(b"", {})
    flow.response = tflow.tresp()
    flow.response.headers["content-type"] = "application/json"
    flow.response.headers["content-encoding"] = "gzip"
    flow.response.raw_content = gzip.compress(b"[" + b"0," * (32 << 20) + b"0]")
    ResponseMasking(_Link()).response(flow)
    assert flow.response.status_code == 502
    flow2 = _flow(b"", {})
    flow2.response = tflow.tresp()
    flow2.response.headers["content-type"] = "application/octet-stream"
    flow2.response.raw_content = b"\x00\x01\x02"
    ResponseMasking(_Link()).response(flow2)
    assert flow2.response.status_code == 502
    assert json.loads(flow2.response.content)["error"]["code"] == "response_binary_refused"

"""The Redis contract's message schemas: round trips and refusals."""

from __future__ import annotations

import json

import pytest

from proxy_worker.contract import (
    SCHEMA_VERSION,
    ApprovalRequestMessage,
    ContractError,
    DecisionMessage,
    ExchangeMessage,
    Keys,
)


def _approval(**kw):
    base = dict(
        approval_id="a1",
        worker_id="w",
        agent_id=1,
        target_id=2,
        rule_id=3,
        method="GET",
        url="http://u/x",
        headers={"accept": "*/*"},
        body="{}",
        body_truncated=False,
        requested_at=1.0,
        deadline=121.0,
        reason="why",
    )
    return ApprovalRequestMessage(**{**base, **kw})


def test_it_round_trips_an_approval_request():
    msg = _approval()
    assert ApprovalRequestMessage.from_json(msg.to_json()) == msg


def test_it_round_trips_a_decision():
    msg = DecisionMessage(approval_id="a1", verdict="approved", decided_by=["ann"], decided_at=2.5)
    assert DecisionMessage.from_json(msg.to_json()) == msg


def test_it_round_trips_an_exchange_with_defaults():
    msg = ExchangeMessage(
        exchange_id="e",
        worker_id="w",
        started_at=1.0,
        agent_id=None,
        target_id=None,
        session_key="",
        client_address="127.0.0.1",
        method="GET",
        url="/x",
        request_headers={},
        request_body="",
        status_code=401,
        response_headers={},
        response_body="",
        decision="denied",
    )
    again = ExchangeMessage.from_json(msg.to_json())
    assert again == msg
    assert again.request_findings == [] and again.timings == {}


@pytest.mark.parametrize(
    "raw, match",
    [
        ("not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"v": SCHEMA_VERSION + 1}), "unsupported schema version"),
        (json.dumps({"v": SCHEMA_VERSION, "approval_id": "a"}), "missing fields"),
    ],
)
def test_it_refuses_malformed_decisions(raw, match):
    with pytest.raises(ContractError, match=match):
        DecisionMessage.from_json(raw)


def test_it_refuses_an_unknown_verdict():
    raw = json.dumps(
        {
            "v": SCHEMA_VERSION,
            "approval_id": "a",
            "verdict": "maybe",
            "decided_by": [],
            "decided_at": 1.0,
        }
    )
    with pytest.raises(ContractError, match="unknown verdict"):
        DecisionMessage.from_json(raw)


def test_it_ignores_unknown_fields_for_forward_compatibility():
    data = json.loads(_approval().to_json())
    data["added_in_a_later_minor"] = 1
    assert ApprovalRequestMessage.from_json(json.dumps(data)).approval_id == "a1"


def test_it_names_keys_under_the_prefix():
    k = Keys("p")
    assert [
        k.policy_snapshot,
        k.policy_updates,
        k.approvals_stream,
        k.exchanges_stream,
        k.decisions_channel,
        k.decision("x"),
    ] == [
        "p:policy:snapshot",
        "p:policy:updates",
        "p:approvals",
        "p:exchanges",
        "p:decisions",
        "p:decision:x",
    ]

"""The Redis contract's message schemas: round trips and refusals."""

from __future__ import annotations

import json
from dataclasses import asdict

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


def _exchange(**kw):
    base = dict(
        exchange_id="e",
        worker_id="w",
        started_at=1.0,
        agent_id=1,
        target_id=2,
        session_key="pg:c0ffee",
        client_address="127.0.0.1",
        method="SELECT",
        url="postgresql://db:5432/crm",
        request_headers={"database": "crm", "user": "bot"},
        request_body="select 1",
        status_code=200,
        response_headers={},
        response_body=" ?column?\n----------\n        1\n(1 row)",
        decision="allowed",
    )
    return ExchangeMessage(**{**base, **kw})


PG_DETAILS = {
    "statement_kind": "SELECT",
    "statement_kinds": ["SELECT"],
    "tables": [],
    "functions": [],
    "parameters": [None, "[EMAIL]"],
    "columns": ["?column?"],
    "rows": [["1"]],
    "rows_truncated": False,
    "row_count": 1,
    "command_tag": "SELECT 1",
    "sqlstate": "",
    "error": "",
    "extended": True,
    "statement_index": 0,
    "portal_suspended": False,
    "copy": {"direction": "out", "format": "csv", "rows": 1},
}


def test_it_round_trips_a_postgres_exchange_and_approval():
    msg = _exchange(protocol="postgres", details=PG_DETAILS)
    again = ExchangeMessage.from_json(msg.to_json())
    assert again == msg and again.details["parameters"] == [None, "[EMAIL]"]
    # The hot path's serialisation is exactly asdict's, the new fields included.
    assert json.loads(msg.to_json()) == asdict(msg)
    approval = _approval(protocol="postgres", details={"statement_kind": "DELETE", "tables": []})
    assert ApprovalRequestMessage.from_json(approval.to_json()) == approval


def test_messages_without_the_new_fields_read_as_http():
    for msg, cls in ((_exchange(), ExchangeMessage), (_approval(), ApprovalRequestMessage)):
        data = json.loads(msg.to_json())
        assert (data["protocol"], data["details"]) == ("http", {})
        del data["protocol"], data["details"]
        old = cls.from_json(json.dumps(data))
        assert (old.protocol, old.details) == ("http", {}) and old.v == SCHEMA_VERSION


@pytest.mark.parametrize(
    "change, match",
    [
        ({"details": []}, "details must be a JSON object"),
        ({"details": "x"}, "details must be a JSON object"),
        ({"protocol": ""}, "protocol must be a non-empty string"),
        ({"protocol": 7}, "protocol must be a non-empty string"),
    ],
)
def test_it_refuses_malformed_protocol_fields(change, match):
    for msg, cls in ((_exchange(), ExchangeMessage), (_approval(), ApprovalRequestMessage)):
        data = {**json.loads(msg.to_json()), **change}
        with pytest.raises(ContractError, match=match):
            cls.from_json(json.dumps(data))

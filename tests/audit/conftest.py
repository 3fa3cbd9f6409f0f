"""Audit fixtures: exchanges stored through the real ingest path (so they are chained)."""

from __future__ import annotations

import time
import uuid

import pytest

from audit.ingest import Ingestor
from controlplane.redis import keys
from proxy_worker.contract import ExchangeMessage


def make_exchange(policy, *, at: float | None = None, **kw) -> ExchangeMessage:
    """An exchange message of ``policy``'s agent and target; ``kw`` overrides fields."""
    base = dict(
        exchange_id=str(uuid.uuid4()),
        worker_id="w1",
        started_at=time.time() if at is None else at,
        agent_id=policy.agent.id,
        target_id=policy.target.id,
        session_key="",
        client_address="127.0.0.1",
        method="GET",
        url="http://127.0.0.1:9/customers/orders.json?_size=10",
        request_headers={"authorization": "[REDACTED]", "accept": "application/json"},
        request_body="",
        status_code=200,
        response_headers={"content-type": "application/json"},
        response_body='{"rows": [{"email": "[EMAIL]", "phone": "[PHONE:3f9a1c2b]"}]}',
        decision="allowed",
        response_findings=[
            {"type": "EMAIL", "location": "$.rows[0].email", "count": 1},
            {"type": "PHONE", "location": "$.rows[0].phone", "count": 1},
        ],
        timings={"total": 12.5, "upstream": 9.25, "masking": 0.5},
    )
    base.update(kw)
    return ExchangeMessage(**base)


@pytest.fixture
def ingest(redis_client):
    """``ingest(*messages)``: push messages to the stream and run the real ingestor."""
    ing = Ingestor(consumer="test", block_ms=10)
    ing.ensure_groups()

    def run(*msgs: ExchangeMessage) -> None:
        for m in msgs:
            redis_client.xadd(keys().exchanges_stream, {"data": m.to_json()})
        while ing.step(block=False):
            pass

    return run

from __future__ import annotations

import time
import uuid

import pytest

from approvals.actions import do_create_approval_request
from proxy_worker.contract import ApprovalRequestMessage


@pytest.fixture
def make_request(policy):
    """Create a pending approval request through the real action; returns the row."""

    def make(deadline_in: float = 60.0, **kw):
        now = time.time()
        msg = ApprovalRequestMessage(
            approval_id=str(uuid.uuid4()),
            worker_id="w1",
            agent_id=policy.agent.id,
            target_id=policy.target.id,
            rule_id=policy.approve_rule.id,
            method="GET",
            url="http://127.0.0.1:9/export?sql=select+*",
            headers={"accept": "*/*"},
            body=kw.pop("body", '{"q": "[EMAIL]"}'),
            body_truncated=False,
            requested_at=now,
            deadline=now + deadline_in,
            reason="bulk export",
        )
        req, created = do_create_approval_request(msg)
        assert created
        return req

    return make

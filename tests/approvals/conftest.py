from __future__ import annotations

import time
import uuid

import pytest

from approvals.actions import do_create_approval_request
from proxy_worker.contract import ApprovalRequestMessage


@pytest.fixture
def make_request(policy):
    """Create a pending approval request through the real action; returns the row.

    Keyword arguments: ``deadline_in`` (s), ``body``, ``required_approvals``, ``mode``,
    ``rule`` (an AccessRule, default the policy's approve rule), ``agent``, ``worker_id``,
    ``requested_ago`` (s), ``url``, ``method``.
    """

    def make(deadline_in: float = 60.0, **kw):
        now = time.time() - kw.pop("requested_ago", 0.0)
        rule = kw.pop("rule", policy.approve_rule)
        agent = kw.pop("agent", policy.agent)
        msg = ApprovalRequestMessage(
            approval_id=str(uuid.uuid4()),
            worker_id=kw.pop("worker_id", "w1"),
            agent_id=agent.id,
            target_id=policy.target.id,
            rule_id=rule.id if rule else None,
            method=kw.pop("method", "GET"),
            url=kw.pop("url", "http://127.0.0.1:9/export?sql=select+*"),
            headers={"accept": "*/*"},
            body=kw.pop("body", '{"q": "[EMAIL]"}'),
            body_truncated=False,
            requested_at=now,
            deadline=now + deadline_in,
            reason="bulk export",
            mode=kw.pop("mode", "wait"),
            required_approvals=kw.pop("required_approvals", 1),
            retry_window=kw.pop("retry_window", 0.0),
        )
        assert not kw, f"unknown arguments {kw}"
        req, created = do_create_approval_request(msg)
        assert created
        return req

    return make


@pytest.fixture
def payments_group(users):
    """An approver group ``payments`` holding ``approver`` only (``approver2`` is not in it)."""
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="payments")
    users["approver"].groups.add(group)
    return group

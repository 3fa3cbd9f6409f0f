"""The beat sweeps: expiry, and abandoned requests of dead workers (real Redis)."""

from __future__ import annotations

import json
import time

import pytest

from approvals.models import ApprovalRequest
from approvals.tasks import abandon_orphaned_requests, expire_approval_requests
from controlplane.redis import keys
from proxy_worker.contract import WorkerHeartbeat

pytestmark = pytest.mark.django_db


def _beat(redis_client, worker_id, held, at=None):
    hb = WorkerHeartbeat(worker_id=worker_id, at=at or time.time(), held=[str(i) for i in held])
    redis_client.set(keys().worker_heartbeat(worker_id), hb.to_json(), ex=10)


def _decision(redis_client, req):
    raw = redis_client.get(keys().decision(str(req.id)))
    return json.loads(raw) if raw else None


def test_it_expires_overdue_requests_and_tells_workers(
    make_request, redis_client, django_capture_on_commit_callbacks
):
    overdue = make_request(deadline_in=-1)
    current = make_request(deadline_in=60)
    with django_capture_on_commit_callbacks(execute=True):
        assert expire_approval_requests() == 1
    overdue.refresh_from_db()
    current.refresh_from_db()
    assert overdue.status == "expired" and current.status == "pending"
    assert _decision(redis_client, overdue)["verdict"] == "expired"
    assert expire_approval_requests() == 0


def test_requests_of_a_worker_without_heartbeat_are_abandoned(
    make_request, redis_client, django_capture_on_commit_callbacks
):
    orphan = make_request(worker_id="dead-1", requested_ago=5)
    young = make_request(worker_id="dead-1", requested_ago=0)  # within the grace period
    with django_capture_on_commit_callbacks(execute=True):
        assert abandon_orphaned_requests() == 1
    orphan.refresh_from_db()
    young.refresh_from_db()
    assert orphan.status == ApprovalRequest.Status.ABANDONED and orphan.decided_at
    assert young.status == "pending"
    decision = _decision(redis_client, orphan)
    assert decision["verdict"] == "expired" and "abandoned" in decision["comment"]


def test_requests_a_live_worker_holds_stay_pending(make_request, redis_client):
    held = make_request(worker_id="live-1", requested_ago=5)
    _beat(redis_client, "live-1", [held.id])
    assert abandon_orphaned_requests() == 0
    held.refresh_from_db()
    assert held.status == "pending"


def test_a_restarted_worker_no_longer_holds_old_requests(make_request, redis_client):
    old = make_request(worker_id="w-same", requested_ago=5)
    _beat(redis_client, "w-same", [])  # beat taken after the request, not listing it
    assert abandon_orphaned_requests() == 1
    old.refresh_from_db()
    assert old.status == ApprovalRequest.Status.ABANDONED


def test_a_heartbeat_older_than_the_request_proves_nothing(make_request, redis_client):
    make_request(worker_id="w-slow", requested_ago=5)
    _beat(redis_client, "w-slow", [], at=time.time() - 30)
    assert abandon_orphaned_requests() == 0


def test_deferred_requests_are_never_abandoned(make_request, redis_client):
    make_request(worker_id="gone", requested_ago=5, mode="defer", retry_window=600)
    assert abandon_orphaned_requests() == 0


def test_an_unreadable_heartbeat_abandons_nothing(make_request, redis_client):
    make_request(worker_id="w-garbage", requested_ago=5)
    redis_client.set(keys().worker_heartbeat("w-garbage"), "not json", ex=10)
    assert abandon_orphaned_requests() == 0

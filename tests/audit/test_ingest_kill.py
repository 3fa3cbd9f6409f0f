"""A real ``manage.py ingest`` process killed with SIGKILL mid-run loses and duplicates
nothing once restarted: batches commit atomically with their chain records, and entries
are acknowledged only after the commit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from audit.chain import verify_chain
from audit.models import ChainHead, ChainRecord, Exchange
from controlplane.redis import keys
from proxy_worker.contract import INGEST_GROUP
from tests.audit.conftest import make_exchange

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
COUNT = 4000


def _ingest_process(consumer: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        GATEHOUSE_DB_NAME=settings.DATABASES["default"]["NAME"],
        GATEHOUSE_REDIS_URL=settings.REDIS_URL,
        GATEHOUSE_REDIS_PREFIX=settings.REDIS_PREFIX,
    )
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "ingest",
            "--consumer",
            consumer,
            "--batch",
            "100",
            "--block-ms",
            "100",
            "--claim-idle-ms",
            "1000",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _stored() -> int:
    head = ChainHead.objects.filter(pk=1).first()
    return head.seq if head else 0


def _wait(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"ingest exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_a_killed_ingest_loses_and_duplicates_nothing(policy, redis_client):
    t0 = time.time() - 3600
    msgs = [make_exchange(policy, at=t0 + i * 0.5) for i in range(COUNT)]
    pipe = redis_client.pipeline(transaction=False)
    for m in msgs:
        pipe.xadd(keys().exchanges_stream, {"data": m.to_json()})
    for m in msgs[:200]:  # a worker's spool drained twice: the same ids again
        pipe.xadd(keys().exchanges_stream, {"data": m.to_json()})
    pipe.execute()

    first = _ingest_process("kill-me")
    try:
        _wait(lambda: _stored() >= 300, 60, first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    stored_at_kill = Exchange.objects.count()
    assert 0 < stored_at_kill < COUNT, "the kill must land mid-run"
    pending = redis_client.xpending(keys().exchanges_stream, INGEST_GROUP)["pending"]
    assert pending > 0  # read but not acknowledged when it died

    # Restart under the same name (it re-reads its pending entries first) and a second
    # consumer that claims what the dead one held.
    again = _ingest_process("kill-me")
    other = _ingest_process("other")
    try:
        _wait(lambda: _stored() >= COUNT, 120, again)
        _wait(
            lambda: redis_client.xpending(keys().exchanges_stream, INGEST_GROUP)["pending"] == 0,
            30,
            again,
        )
    finally:
        for p in (again, other):
            p.send_signal(signal.SIGTERM)
        for p in (again, other):
            p.wait(10)

    ids = set(Exchange.objects.values_list("id", flat=True))
    assert len(ids) == COUNT == Exchange.objects.count()
    assert {str(i) for i in ids} == {m.exchange_id for m in msgs}
    assert ChainRecord.objects.filter(kind="exchange").count() == COUNT
    result = verify_chain()
    assert result.ok, result.problems

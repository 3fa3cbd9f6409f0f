"""Retention: per-target purge in batches, legal holds, purge records, chain still verifies."""

from __future__ import annotations

import time
import uuid

import pytest
from django.urls import reverse

from audit.chain import verify_chain
from audit.models import ChainRecord, Exchange, Session
from audit.retention import purge_expired
from audit.tasks import purge_expired as purge_task
from tests.audit.conftest import make_exchange

pytestmark = pytest.mark.django_db

DAY = 86400


@pytest.fixture
def aged(policy, ingest):
    """Five exchanges 40 days old in one session, three 40 days old in a keyed session,
    and two from today."""
    old = time.time() - 40 * DAY
    olds = [make_exchange(policy, at=old + i) for i in range(5)]
    held = [make_exchange(policy, at=old + i, session_key="case-7") for i in range(3)]
    new = [make_exchange(policy, at=time.time() - i) for i in range(2)]
    ingest(*olds, *held, *new)
    return olds, held, new


def test_nothing_is_purged_without_retention(aged):
    assert purge_expired() == {}
    assert Exchange.objects.count() == 10


def test_it_purges_expired_exchanges_in_batches_and_chains_each_purge(policy, aged):
    olds, held, new = aged
    policy.target.retention_days = 30
    policy.target.save()
    deleted = purge_expired(batch=3)
    assert deleted == {policy.target.pk: 8}
    assert set(Exchange.objects.values_list("id", flat=True)) == {
        uuid.UUID(m.exchange_id) for m in new
    }
    purges = list(ChainRecord.objects.filter(kind="purge").order_by("seq"))
    assert [p.payload["count"] for p in purges] == [3, 3, 2]
    assert purges[0].payload["actor"]["username"] == "system:retention"
    named = {i for p in purges for i in p.payload["exchange_ids"]}
    assert named == {m.exchange_id for m in olds + held}
    # Emptied sessions go; the exchange chain records stay and the chain verifies.
    assert Session.objects.count() == 1
    result = verify_chain()
    assert result.ok, result.problems
    assert result.purged == 8 and result.exchanges == 10


def test_a_legal_hold_stops_the_purge(client, users, policy, aged):
    olds, held, new = aged
    session = Session.objects.get(key="case-7")
    client.force_login(users["auditor"])
    r = client.post(reverse("audit:legal_hold", args=[session.pk]), {"on": "1", "reason": "case 7"})
    assert r.status_code == 302
    session.refresh_from_db()
    assert session.on_legal_hold and session.legal_hold_by == users["auditor"]
    hold = ChainRecord.objects.filter(kind="hold").get()
    assert hold.payload["on"] is True and hold.payload["actor"]["username"] == "auditor"
    policy.target.retention_days = 30
    policy.target.save()
    assert purge_expired() == {policy.target.pk: 5}
    assert Exchange.objects.filter(session=session).count() == 3
    assert verify_chain().ok
    # Lifting the hold lets the next sweep purge them.
    client.post(reverse("audit:legal_hold", args=[session.pk]), {"on": "0"})
    assert purge_task() == {str(policy.target.pk): 3}
    assert verify_chain().ok


def test_a_hold_needs_a_reason_and_the_auditor_role(client, users, policy, aged):
    session = Session.objects.get(key="case-7")
    client.force_login(users["auditor"])
    client.post(reverse("audit:legal_hold", args=[session.pk]), {"on": "1", "reason": " "})
    session.refresh_from_db()
    assert not session.on_legal_hold
    client.force_login(users["approver"])
    r = client.post(reverse("audit:legal_hold", args=[session.pk]), {"on": "1", "reason": "x"})
    assert r.status_code == 403
    client.force_login(users["auditor"])
    assert client.get(reverse("audit:legal_hold", args=[session.pk])).status_code == 405


def test_the_beat_schedule_runs_retention_and_anchors(settings):
    tasks = {v["task"] for v in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"audit.tasks.purge_expired", "audit.tasks.anchor_chain"} <= tasks

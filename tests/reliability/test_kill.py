"""SIGKILL a proxy worker under load and ingest in the middle of a batch; count the loss."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings

from proxy_worker.contract import ExchangeMessage
from tests.reliability.harness import load, wait_until

pytestmark = pytest.mark.reliability


def _numbers(gw, batch: str) -> list[int]:
    out = []
    for x in gw.exchanges():
        q = parse_qs(urlsplit(x.url).query)
        if q.get("batch") == [batch]:
            out.append(int(q["n"][0]))
    return out


def test_a_worker_killed_under_load_loses_only_requests_in_flight(make_gateway, capsys):
    gw = make_gateway(1)
    url = f"{gw.worker_url()}/api/json?size=2048&batch=kill"
    n, concurrency = 600, 8
    results: list = []
    t = threading.Thread(
        target=lambda: results.extend(
            asyncio.run(load(url, n, concurrency, gw.headers(), retry_refused=20))
        ),
    )
    t.start()
    wait_until(lambda: len(_numbers(gw, "kill")) >= 100, 20, 0.02)
    gw.procs["w1"].signal(signal.SIGKILL)
    gw.procs["w1"].kill()
    time.sleep(0.3)
    gw.start_worker("w1")  # same port, same spool: what a supervisor would do
    t.join(60)

    status = dict(results)
    recorded = _numbers(gw, "kill")
    answered = {i for i, s in status.items() if s == 200}
    in_flight = {i for i, s in status.items() if s == 0}  # sent, no answer
    refused = {i for i, s in status.items() if s == -1}  # worker down: never arrived
    lost = in_flight - set(recorded)
    with capsys.disabled():
        print(
            f"\n[worker SIGKILL] sent={n} answered={len(answered)} refused={len(refused)} "
            f"in-flight-unanswered={len(in_flight)} recorded={len(set(recorded))} "
            f"lost(in flight, not recorded)={len(lost)} "
            f"recorded-but-unanswered={len(set(recorded) & in_flight)}"
        )
    assert len(status) == n and answered and in_flight | refused
    assert answered <= set(recorded), f"answered but not recorded: {answered - set(recorded)}"
    assert len(recorded) == len(set(recorded)), "an exchange was recorded twice"
    # Only requests that were in flight at the kill may be missing: one per client
    # connection, plus at most one more sent on each pooled connection before the client
    # noticed it was dead (the load runs `concurrency` connections).
    assert len(lost) <= 2 * concurrency
    assert not (set(recorded) & refused)
    assert len(answered) > 300, "the restarted worker served the rest of the load"


def _exchange(i: int) -> str:
    return ExchangeMessage(
        exchange_id=str(uuid.uuid4()),
        worker_id="synthetic",
        started_at=time.time(),
        agent_id=None,
        target_id=None,
        session_key="",
        client_address="127.0.0.1",
        method="GET",
        url=f"http://upstream.invalid/x?n={i}",
        request_headers={},
        request_body="",
        status_code=200,
        response_headers={},
        response_body='{"ok": true}',
        decision="allowed",
    ).to_json()


@pytest.mark.django_db(transaction=True)
def test_ingest_killed_mid_batch_resumes_without_loss_or_duplicates(make_gateway, capsys):
    from audit.models import Exchange, IngestError

    gw = make_gateway(0)
    total = 3000
    r = gw.redis.client()
    pipe = r.pipeline(transaction=False)
    for i in range(total):
        pipe.xadd(gw.keys.exchanges_stream, {"data": _exchange(i)})
    pipe.execute()
    db = settings.DATABASES["default"]
    gw.start_ingest("ingest-a", db_name=db["NAME"], db_port=int(db["PORT"]), batch=100)
    wait_until(lambda: Exchange.objects.count() >= 300, 60, 0.01)
    gw.procs["ingest-a"].signal(signal.SIGKILL)
    gw.procs["ingest-a"].kill()
    at_kill = Exchange.objects.count()
    pending = r.xpending(gw.keys.exchanges_stream, "ingest")["pending"]
    # A new consumer (a restarted container has a new name) claims what the dead one
    # left pending (XAUTOCLAIM after --claim-idle-ms) and reads the rest.
    gw.start_ingest("ingest-b", db_name=db["NAME"], db_port=int(db["PORT"]), batch=100)
    wait_until(lambda: Exchange.objects.count() >= total, 60, 0.1)
    time.sleep(0.5)
    with capsys.disabled():
        print(
            f"\n[ingest SIGKILL] stream={total} stored-at-kill={at_kill} "
            f"pending-at-kill={pending} stored-after-restart={Exchange.objects.count()}"
        )
    assert at_kill < total
    assert Exchange.objects.count() == total
    urls = set(Exchange.objects.values_list("url", flat=True))
    assert len(urls) == total
    assert not IngestError.objects.exists()
    wait_until(lambda: r.xpending(gw.keys.exchanges_stream, "ingest")["pending"] == 0, 10)

"""PostgreSQL goes away under ingest: the proxy keeps working, ingest waits and resumes.

Ingest reaches PostgreSQL through a TCP relay (:class:`~tests.reliability.harness.TcpGate`)
that the test closes: every open connection is cut and new ones are refused, which is
what ingest sees when the database host dies or restarts. The shared PostgreSQL of the
other tests is never stopped.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings

from tests.reliability.harness import TcpGate, load, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


def _stored(batch: str) -> list[int]:
    from audit.models import Exchange

    urls = Exchange.objects.filter(url__contains=f"batch={batch}").values_list("url", flat=True)
    return [int(parse_qs(urlsplit(url).query)["n"][0]) for url in urls]


def test_ingest_waits_out_a_database_outage_and_loses_nothing(make_gateway):
    from audit.models import Exchange

    gw = make_gateway(1)
    db = settings.DATABASES["default"]
    gate = TcpGate(int(db["PORT"]), db["HOST"] or "127.0.0.1").open()
    try:
        ingest = gw.start_ingest("ingest", db_name=db["NAME"], db_port=gate.port, batch=50)
        url = gw.worker_url()
        first = asyncio.run(load(f"{url}/api/json?size=500&batch=one", 40, 5, gw.headers()))
        assert {s for _, s in first} == {200}
        wait_until(lambda: len(_stored("one")) == 40, 20)

        gate.close()  # PostgreSQL is down for ingest
        second = asyncio.run(load(f"{url}/api/json?size=500&batch=two", 60, 5, gw.headers()))
        assert {s for _, s in second} == {200}, "the proxy must not depend on PostgreSQL"
        wait_until(lambda: "database unavailable" in ingest.log(), 15)
        time.sleep(1)
        assert _stored("two") == []
        assert ingest.alive, "ingest must wait, not die"
        r = gw.redis.client()
        assert r.xlen(gw.keys.exchanges_stream) == 100  # waiting safely in Redis

        gate.open()
        wait_until(lambda: len(_stored("two")) == 60, 30)
        assert sorted(_stored("one")) == list(range(40))
        assert sorted(_stored("two")) == list(range(60))  # nothing lost, nothing twice
        assert Exchange.objects.count() == 100
        wait_until(lambda: r.xpending(gw.keys.exchanges_stream, "ingest")["pending"] == 0, 10)
    finally:
        gate.shutdown()

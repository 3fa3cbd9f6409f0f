"""The worker's fast paths do exactly what the slow ones did (see "Proxy" in
docs/benchmarks.md): cached hook dispatch, batched exchange recording, and the masking
engine's shortcuts."""

from __future__ import annotations

import asyncio
import json
import logging
import random

import pytest
from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as hs
from mitmproxy.addonmanager import AddonManager
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.test import taddons, tflow

from proxy_worker.contract import ExchangeMessage, Keys
from proxy_worker.dispatch import CachedHookDispatch, install
from proxy_worker.link import RECORD_ENTITY_TYPES, ControlPlaneLink
from proxy_worker.masking import Masker, MaskingRule
from proxy_worker.masking.engine import _re2_raw_match

# -- hook dispatch ----------------------------------------------------------------------


class _Probe:
    def __init__(self, name: str, calls: list, fail: bool = False) -> None:
        self.name = name
        self.calls = calls
        self.fail = fail

    def request(self, flow) -> None:
        self.calls.append((self.name, "request"))
        if self.fail:
            raise RuntimeError("boom")

    async def response(self, flow) -> None:
        await asyncio.sleep(0)
        self.calls.append((self.name, "response"))


class _Quiet:
    name = "quiet"


async def _dispatch(manager_cls) -> list:
    calls: list = []
    with taddons.context() as tctx:
        master = tctx.master
        if manager_cls is CachedHookDispatch:
            install(master)
        master.addons.add(_Probe("a", calls), _Quiet(), _Probe("b", calls, fail=True))
        f = tflow.tflow(resp=True)
        await master.addons.trigger_event(HttpRequestHook(f))
        await master.addons.trigger_event(HttpResponseHook(f))
        master.addons.add(_Probe("c", calls))  # a later addon is seen
        await master.addons.trigger_event(HttpRequestHook(f))
        master.addons.remove(master.addons.get("a"))
        await master.addons.trigger_event(HttpRequestHook(f))
    return calls


async def test_cached_dispatch_calls_the_same_hooks_in_the_same_order(caplog):
    caplog.set_level(logging.ERROR)
    plain = await _dispatch(AddonManager)
    cached = await _dispatch(CachedHookDispatch)
    assert cached == plain
    assert plain[:3] == [("a", "request"), ("b", "request"), ("a", "response")]
    assert sum("Addon error: boom" in r.getMessage() for r in caplog.records) == 6


# -- exchanges --------------------------------------------------------------------------


def _msg(i: int) -> ExchangeMessage:
    return ExchangeMessage(
        exchange_id=f"x{i}",
        worker_id="w",
        started_at=0.0,
        agent_id=None,
        target_id=None,
        session_key="",
        client_address="127.0.0.1",
        method="GET",
        url=f"http://u.test/?n={i}",
        request_headers={"a": "b"},
        request_body="",
        status_code=200,
        response_headers={},
        response_body="{}",
        decision="allowed",
        request_findings=[{"type": "EMAIL", "location": "$.e", "count": 1}],
    )


def test_exchange_json_is_what_asdict_gave():
    from dataclasses import asdict

    m = _msg(1)
    assert m.to_json() == json.dumps(asdict(m), separators=(",", ":"))
    assert ExchangeMessage.from_json(m.to_json()) == m


def _link(tmp_path, url: str) -> ControlPlaneLink:
    return ControlPlaneLink(
        redis_url=url,
        keys=Keys(f"ghtest-fast-{random.randrange(1 << 30)}"),
        worker_id="w-fast",
        worker_key=Fernet.generate_key(),
        masking_key=b"k" * 32,
        spool_dir=tmp_path / "spool",
    )


async def test_concurrent_exchanges_share_round_trips_and_all_arrive(tmp_path):
    link = _link(tmp_path, "redis://127.0.0.1:6379/0")
    link.redis_ok = True
    try:
        try:
            await link.redis.ping()
        except Exception:
            pytest.skip("no local Redis")
        await asyncio.gather(*(link.record_exchange(_msg(i)) for i in range(50)))
        entries = await link.redis.xrange(link.keys.exchanges_stream)
        ids = [ExchangeMessage.from_json(e[1][b"data"]).exchange_id for e in entries]
        assert sorted(ids) == sorted(f"x{i}" for i in range(50))
        assert not link.spool_path.exists()
    finally:
        await link.redis.delete(link.keys.exchanges_stream)
        await link.stop()


async def test_exchanges_are_spooled_when_redis_is_unreachable(tmp_path):
    link = _link(tmp_path, "redis://127.0.0.1:1/0")
    link.redis_ok = True
    await asyncio.gather(*(link.record_exchange(_msg(i)) for i in range(5)))
    lines = link.spool_path.read_text().splitlines()
    assert sorted(json.loads(x)["exchange_id"] for x in lines) == [f"x{i}" for i in range(5)]
    assert not link.redis_ok
    await link.stop()


# -- masking ----------------------------------------------------------------------------

_PERSONAL = MaskingRule(id=1, name="p", entity_types=("EMAIL", "PHONE", "US_SSN", "CREDIT_CARD"))
_RECORD = MaskingRule(id=0, name="r", entity_types=tuple(RECORD_ENTITY_TYPES))


def test_raw_re2_matches_are_finditer_spans():
    m = Masker([_RECORD], hash_key=b"k")
    assert _re2_raw_match(m._pf._any_bytes) is not None
    rnd = random.Random(7)
    alphabet = b'ab@.-_ "0123456789+()x\\/:,{}[]\xc2\xa0\xe2\x80\x93passwordtoken'
    for _ in range(500):
        data = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 120)))
        want = [x.span() for x in m._pf._any_bytes.finditer(data)]
        assert list(m._pf.body_hits(data)) == want


@pytest.mark.parametrize(
    "body",
    [
        b"4111111111111111",  # a bare top-level number (no string holds the match)
        b'{"ids": [4111111111111111]}',
        b'{"api_token": "Zx9vQ2mL8pR4tY7wK3nB"}',  # secret-like key, no other gate
        b'{"client_secret": "s3cr3t-Value-9f8e7d"}',
        b'{"a": "x", "a": "jane@example.com"}',
    ],
)
def test_shortcut_bodies_mask_as_the_full_walk(body):
    for rule in (_PERSONAL, _RECORD):
        m = Masker([rule], hash_key=b"k")
        got = m.mask_body(body, "application/json")
        value, findings = m.mask_json_value(json.loads(body))
        assert got.findings == findings
        assert json.loads(got.body) == value


_json = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.text(max_size=20),
    lambda kids: (
        hs.lists(kids, max_size=4) | hs.dictionaries(hs.text(max_size=12), kids, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_mask_body_equals_scanning_every_string(doc):
    body = json.dumps(doc, ensure_ascii=False).encode()
    for rule in (_PERSONAL, _RECORD):
        m = Masker([rule], hash_key=b"k")
        got = m.mask_body(body, "application/json")
        value, findings = m.mask_json_value(doc)  # flagged=None: every string scanned
        assert got.findings == findings
        assert got.handler == "json"
        if value is doc:
            assert got.body is body
        else:
            assert json.loads(got.body) == value


# -- content decoding (found by a flaky tests/reliability/test_bad_input.py run) -----------


def test_a_body_labelled_br_that_is_not_brotli_is_refused_not_emptied():
    import gzip

    import brotli

    from proxy_worker.masking import DecompressionError, decode_content

    # Brotli has no magic number: this gzip body (its mtime bytes matter) used to be
    # swallowed as an unfinished brotli stream and decode to b"", so the request went
    # upstream as sent, unmasked.
    raw = (
        b"\x1f\x8b\x08\x00HV\x01k\x02\xff\xabVJ\xcdM\xcc\xccQ\xb2RP\xcaJ\xccK\xd5+\xcaOuH"
        b"\xadH\xcc-\xc8I\xd5K\xce\xcfU\xaa\x05\x00\xff\xdd[\xb2!\x00\x00\x00"
    )
    assert b"jane.roe@example.com" in gzip.decompress(raw)
    for encoding in ("br", "gzip, br"):
        with pytest.raises(DecompressionError):
            decode_content(raw, encoding, max_bytes=1 << 20)
    whole = brotli.compress(b'{"a": 1}')
    with pytest.raises(DecompressionError):
        decode_content(whole[:-1], "br", max_bytes=1 << 20)  # truncated
    assert decode_content(whole, "br", max_bytes=1 << 20) == b'{"a": 1}'
    assert decode_content(b"", "br", max_bytes=1 << 20) == b""  # empty stays empty

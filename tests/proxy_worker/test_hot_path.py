"""The proxy worker's per-request shortcuts (issue 7, "Proxy" in docs/benchmarks.md) give
exactly what the general code they stand in for gave: each is checked against that code
(mitmproxy's URL setter and ``pretty_url``, ``urlsplit``, the previous header walks) on
generated inputs, and the exchange connection against a real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from urllib.parse import unquote, unquote_plus, urlsplit

import pytest
import redis as sync_redis
from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as hs
from mitmproxy import http
from mitmproxy.addonmanager import AddonManager
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.test import taddons, tflow

from proxy_worker.addons.policy_gate import (
    _header_values,
    _strip_agent_headers,
    set_upstream,
)
from proxy_worker.addons.upstream_errors import rewrite_response_headers, scrub_credential
from proxy_worker.contract import STREAM_MAXLEN, ExchangeMessage, Keys
from proxy_worker.dispatch import CachedHookDispatch, hook_args, install
from proxy_worker.flowstate import state_of
from proxy_worker.link import ControlPlaneLink
from proxy_worker.masking import Masker, MaskingRule
from proxy_worker.metrics import WorkerMetrics
from proxy_worker.policy import (
    PathError,
    Target,
    _fully_unquoted,
    request_info,
    split_reverse_path,
)
from proxy_worker.recording import CREDENTIAL_HEADERS, REDACTED, pretty_url, safe_headers

# -- generators ---------------------------------------------------------------------------

#: Characters that make URL parsers take their slow or special paths.
_URL_CHARS = "/?#;%:@ab.\\+=&[]\t \x7f\u00e9~!$'()*,"
_paths = hs.text(alphabet=_URL_CHARS, max_size=14).map(lambda s: "/" + s)
_upstreams = hs.sampled_from(
    [
        "http://127.0.0.1:9999",
        "http://up:81/base/",
        "https://Example.COM/api",
        "https://h:443/x",
        "http://h:80/",
        "http://h/a?b=1",
        "http://h/a;p",
        "http://xn--bcher-kva.example/",
        "http://b\u00fccher.example:8080/p",
        "http://[::1]:8080/v1",
    ]
)
_TOKEN = "gh_testtest_" + "s" * 24
_names = hs.sampled_from(
    [
        b"Host",
        b"host",
        b"Authorization",
        b"authorization",
        b"Proxy-Authorization",
        b"X-Gatehouse-Session",
        b"x-gatehouse-session",
        b"X-Api-Key",
        b"Cookie",
        b"Accept",
        b"X-\xc3\x84",
    ]
)
_values = hs.sampled_from(
    [
        b"",
        b"a",
        b"Bearer " + _TOKEN.encode(),
        b"Basic Zm9vOmJhcg==",
        b"k=" + _TOKEN.encode() + b"; x=1",
        b"sess-1",
        b"\xff\xfe",
        b"caf\xc3\xa9",
        b"jane@example.com",
    ]
)
_fields = hs.lists(hs.tuples(_names, _values), max_size=7)


# -- PolicyGate ---------------------------------------------------------------------------


def _request(fields, authority: bool = False) -> http.Request:
    req = http.Request.make("GET", "http://127.0.0.1:9/x", b"", fields)
    if authority:
        req.authority = "127.0.0.1:9"
    return req


@settings(max_examples=400, deadline=None)
@given(_upstreams, _paths, _fields, hs.booleans())
def test_set_upstream_equals_the_url_setter(upstream, path, fields, authority):
    target = Target(id=1, slug="t", upstream=upstream)
    want, got = _request(fields, authority), _request(fields, authority)
    try:
        want.url = target.upstream_url(path)
    except ValueError:
        with pytest.raises(ValueError):
            set_upstream(got, target, path)
        return
    set_upstream(got, target, path)
    d1, d2 = want.data, got.data
    assert (d1.scheme, d1.host, d1.port, d1.path) == (d2.scheme, d2.host, d2.port, d2.path)
    assert want.headers.fields == got.headers.fields
    assert d1.authority == d2.authority


def _old_strip(headers: http.Headers, presented: list[str]) -> str:
    """PolicyGate's header handling before issue 7 (lookups per name)."""
    for name in ("authorization", "proxy-authorization"):
        headers.pop(name, None)
    secrets = [c for c in presented if c and len(c) >= 16]
    if secrets:
        for name in {k.lower() for k in headers}:
            if any(sec in v for v in headers.get_all(name) for sec in secrets):
                del headers[name]
    return headers.pop("X-Gatehouse-Session", "")[:200]


def _ascii_names(fields) -> bool:
    # The old walk lower-cased decoded names with str.lower(), which differs from the
    # byte-wise comparison mitmproxy (and now PolicyGate) uses for non-ASCII names: the
    # old code could miss such a header (a gap closed by the new code, checked below).
    return all(name.isascii() for name, _ in fields)


@settings(max_examples=400, deadline=None)
@given(_fields, hs.lists(hs.sampled_from([_TOKEN, "short", "", "caf\u00e9" * 5]), max_size=3))
def test_agent_headers_are_removed_as_before(fields, presented):
    old, new = http.Headers(fields), http.Headers(fields)
    assert _header_values(new) == (old.get("authorization"), old.get("proxy-authorization"))
    session_new = _strip_agent_headers(new, presented)
    if _ascii_names(fields):
        assert _strip_agent_headers(http.Headers(fields), presented) == _old_strip(old, presented)
        assert new.fields == old.fields
    # Whatever the names: no credential header and no value carrying a long credential.
    assert "authorization" not in new and "proxy-authorization" not in new
    for secret in (c for c in presented if len(c) >= 16):
        assert not any(secret in v.decode("utf-8", "surrogateescape") for _n, v in new.fields)
        assert secret not in session_new


def test_a_non_ascii_header_name_carrying_the_token_is_dropped_too():
    headers = http.Headers([(b"X-\xc3\x84", b"x " + _TOKEN.encode()), (b"Accept", b"*/*")])
    assert _strip_agent_headers(headers, [_TOKEN]) == ""
    assert headers.fields == ((b"Accept", b"*/*"),)


@settings(max_examples=400, deadline=None)
@given(hs.text(alphabet=_URL_CHARS, max_size=14).map(lambda s: "/" + s), hs.binary(max_size=8))
def test_request_info_splits_like_urlsplit(upstream_path, body):
    def info():
        return request_info(
            agent_id=1, target_id=2, method="get", upstream_path=upstream_path, body=body
        )

    try:
        parts = urlsplit(upstream_path)
    except ValueError:  # "//[": PolicyGate then answers 500, as before
        with pytest.raises(ValueError):
            info()
        return
    got = info()
    assert got.path == unquote(parts.path)
    assert got.query == unquote_plus(parts.query)
    assert got.method == "GET"


def test_the_fingerprint_is_taken_for_approve_outcomes_only():
    from proxy_worker.policy import AccessDecision, AccessRule, with_fingerprint

    kw = dict(agent_id=1, target_id=2, method="post", upstream_path="/x?a=1", body=b"{}")
    full = request_info(**kw)
    lazy = request_info(**kw, fingerprint=False)
    assert full.fingerprint and not lazy.fingerprint
    assert lazy == type(full)(**{**full.__dict__, "fingerprint": ""})
    for action in ("allow", "deny"):
        d = AccessDecision(action, None, 10.0)
        assert with_fingerprint(d, **kw) is d
    rule = AccessRule(id=1, name="r", action="approve", approval_mode="defer")
    d = with_fingerprint(AccessDecision("approve", rule, 10.0), **kw)
    assert d.fingerprint == full.fingerprint and d.rule is rule


def _old_split_checks(path: str) -> bool:
    """Whether the pre-issue-7 segment loop refuses ``path`` (dots, backslashes)."""
    for seg in path.split("/"):
        decoded = _fully_unquoted(seg)
        if "\\" in decoded or any(part in (".", "..") for part in decoded.split("/")):
            return True
    return False


@settings(max_examples=500, deadline=None)
@given(hs.text(alphabet="/.%2e5cfF\\ab?", max_size=16).map(lambda s: "/" + s))
def test_split_reverse_path_refuses_what_the_decoding_loop_refused(raw):
    path = raw.partition("?")[0]
    try:
        split_reverse_path(raw)
    except PathError as e:
        if "dot segments" in str(e):
            assert _old_split_checks(path)
        return
    assert not _old_split_checks(path)


# -- recording ----------------------------------------------------------------------------


def _old_safe_headers(headers, target, masker):
    hidden = set(CREDENTIAL_HEADERS)
    if target is not None and target.auth_header:
        hidden.add(target.auth_header.lower())
    out = {}
    for name in headers:
        if name.lower() in hidden:
            out[name] = REDACTED
            continue
        value = ", ".join(headers.get_all(name))
        if masker is not None and value:
            value, _ = masker.mask_text(value, location=f"header:{name}")
        out[name] = value
    return out


_MASKER = Masker(
    [MaskingRule(id=0, name="r", entity_types=("EMAIL", "SECRET", "IP_ADDRESS"))],
    hash_key=b"k" * 16,
)


@settings(max_examples=300, deadline=None)
@given(_fields)
def test_safe_headers_are_what_the_per_name_walk_gave(fields):
    if not _ascii_names(fields):
        fields = [(n, v) for n, v in fields if n.isascii()]
    headers = http.Headers(fields)
    for target in (None, Target(id=1, slug="t", upstream="http://u", auth_header="X-Api-Key")):
        for masker in (None, _MASKER):
            assert safe_headers(headers, target, masker) == _old_safe_headers(
                headers, target, masker
            )


@settings(max_examples=300, deadline=None)
@given(
    hs.sampled_from(["http", "https"]),
    hs.sampled_from(["h", "h:81", "H:443", "[::1]:8080", "b\u00fccher.example", "a b", ""]),
    hs.sampled_from(["/x?y=1", "*", "/"]),
    hs.booleans(),
)
def test_pretty_url_is_mitmproxys(scheme, host_header, path, http2):
    fields = [(b"Host", host_header.encode())] if host_header else []
    req = http.Request.make("GET", f"{scheme}://up:9/x", b"", fields)
    req.path = path
    if http2:
        req.http_version = "HTTP/2.0"
        req.authority = host_header
    assert pretty_url(req) == req.pretty_url


# -- upstream errors ------------------------------------------------------------------------


def test_header_shortcuts_leave_clean_responses_alone_and_still_scrub():
    target = Target(
        id=1, slug="api", upstream="http://up:81/base", credential="upstream-secret-123"
    )
    resp = http.Response.make(200, b'{"a": 1}', {"Content-Type": "application/json"})
    before = resp.headers.fields
    assert rewrite_response_headers(resp.headers, target) == 0
    assert scrub_credential(resp, target.credential) == 0
    assert resp.headers.fields == before
    resp = http.Response.make(
        200,
        b"echo upstream-secret-123",
        {"Location": "http://up:81/base/next", "X-Echo": "Bearer upstream-secret-123"},
    )
    assert rewrite_response_headers(resp.headers, target) == 1
    assert resp.headers["location"] == "/api/next"
    assert scrub_credential(resp, target.credential) == 2
    assert resp.headers["x-echo"] == "Bearer [REDACTED]"
    assert resp.content == b"echo [REDACTED]"


# -- hook dispatch --------------------------------------------------------------------------


class _Probe:
    def __init__(self, name: str, calls: list) -> None:
        self.name = name
        self.calls = calls

    def request(self, flow) -> None:
        self.calls.append((self.name, "request"))

    async def response(self, flow) -> None:
        await asyncio.sleep(0)
        self.calls.append((self.name, "response"))


class _Updates:
    name = "updates"

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def update(self, flows) -> None:
        self.calls.append(("updates", "update", len(flows)))


class _Composite:
    """An addon with sub-addons (as mitmproxy's script loader) and a hook of its own."""

    name = "composite"

    def __init__(self, calls: list) -> None:
        self.calls = calls
        self.addons: list = []

    def request(self, flow) -> None:
        self.calls.append(("composite", "request"))


async def _lifecycle(manager_cls) -> list:
    calls: list = []
    with taddons.context() as tctx:
        master = tctx.master
        if manager_cls is CachedHookDispatch:
            install(master)
        comp = _Composite(calls)
        master.addons.add(_Probe("a", calls), comp)
        f = tflow.tflow(resp=True)
        await master.addons.handle_lifecycle(HttpRequestHook(f))
        comp.addons.append(_Probe("child", calls))  # children appear: walked from now on
        await master.addons.handle_lifecycle(HttpRequestHook(f))
        await master.addons.handle_lifecycle(HttpResponseHook(f))
        master.addons.add(_Updates(calls))  # someone implements update: it gets it
        await master.addons.handle_lifecycle(HttpResponseHook(f))
        comp.addons.clear()
        await master.addons.handle_lifecycle(HttpRequestHook(f))
    return calls


async def test_lifecycle_dispatch_calls_the_same_hooks_in_the_same_order(caplog):
    caplog.set_level(logging.ERROR)
    plain = await _lifecycle(AddonManager)
    cached = await _lifecycle(CachedHookDispatch)
    assert cached == plain
    assert ("child", "request") in plain and ("updates", "update", 1) in plain


def test_hook_args_are_the_dataclass_fields():
    f = tflow.tflow(resp=True)
    for event in (HttpRequestHook(f), HttpResponseHook(f)):
        assert hook_args(event) == event.args()


# -- metrics --------------------------------------------------------------------------------


def test_metrics_count_findings_per_type_and_requests(tmp_path):
    link = _link(tmp_path, "redis://127.0.0.1:1/0")
    m = WorkerMetrics(link)
    for _ in range(2):
        f = tflow.tflow(resp=True)
        st = state_of(f)
        st.response_findings = [
            {"type": "EMAIL", "location": "$[0].e", "count": 1},
            {"type": "EMAIL", "location": "$[1].e", "count": 2},
            {"type": "PHONE", "location": "$[0].p", "count": 1},
        ]
        m.observe(f)
        m.observe(f)  # once per flow
    r = m.registry
    assert (
        r.get_sample_value(
            "gatehouse_proxy_masking_findings_total", {"type": "EMAIL", "direction": "response"}
        )
        == 6
    )
    assert (
        r.get_sample_value(
            "gatehouse_proxy_masking_findings_total", {"type": "PHONE", "direction": "response"}
        )
        == 2
    )
    assert (
        r.get_sample_value(
            "gatehouse_proxy_requests_total",
            {"target": "-", "decision": "allowed", "status_class": "2xx"},
        )
        == 2
    )
    from proxy_worker.masking import accel

    assert r.get_sample_value("gatehouse_proxy_masking_accelerator") == float(accel.AVAILABLE)
    assert (
        r.get_sample_value("gatehouse_proxy_request_duration_seconds_count", {"target": "-"}) == 2
    )


# -- exchanges on their own connection (real Redis) -------------------------------------------


def _link(tmp_path, url: str) -> ControlPlaneLink:
    return ControlPlaneLink(
        redis_url=url,
        keys=Keys(f"ghtest-hot-{random.randrange(1 << 30)}"),
        worker_id="w-hot",
        worker_key=Fernet.generate_key(),
        masking_key=b"k" * 32,
        spool_dir=tmp_path / "spool",
    )


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
        url="http://u.test/",
        request_headers={},
        request_body="",
        status_code=200,
        response_headers={},
        response_body="{}",
        decision="allowed",
    )


@pytest.fixture
async def live_link(tmp_path):
    link = _link(tmp_path, "redis://127.0.0.1:6379/0")
    try:
        await link.redis.ping()
    except Exception:
        pytest.skip("no local Redis")
    link.redis_ok = True
    yield link
    await link.redis.delete(link.keys.exchanges_stream)
    await link.stop()


async def _stored(link) -> list[str]:
    entries = await link.redis.xrange(link.keys.exchanges_stream)
    return [json.loads(e[1][b"data"])["exchange_id"] for e in entries]


async def test_an_exchange_connection_closed_by_redis_is_reopened_not_spooled(live_link):
    link = live_link
    await link.record_exchange(_msg(0))
    conn = link._exchange_conn
    assert conn is not None and conn.is_connected
    # Redis drops the idle connection (a restart, a timeout, CLIENT KILL).
    await conn.send_command("CLIENT", "ID")
    client_id = await conn.read_response()
    killer = sync_redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        assert killer.execute_command("CLIENT", "KILL", "ID", client_id) == 1
    finally:
        killer.close()
    await asyncio.sleep(0.05)
    await asyncio.gather(*(link.record_exchange(_msg(i)) for i in range(1, 6)))
    assert sorted(await _stored(link)) == [f"x{i}" for i in range(6)]
    assert not link.spool_path.exists()
    assert link.redis_ok


async def test_exchanges_redis_refuses_are_spooled_each(live_link):
    link = live_link
    await link.redis.set(link.keys.exchanges_stream, "not a stream")  # XADD: WRONGTYPE
    await asyncio.gather(*(link.record_exchange(_msg(i)) for i in range(3)))
    lines = link.spool_path.read_text().splitlines()
    assert sorted(json.loads(x)["exchange_id"] for x in lines) == ["x0", "x1", "x2"]
    assert not link.redis_ok
    await link.redis.delete(link.keys.exchanges_stream)
    assert await link.drain_spool() == 3
    assert sorted(await _stored(link)) == ["x0", "x1", "x2"]


def test_xadd_commands_are_packed_as_redis_py_packs_them(tmp_path):
    link = _link(tmp_path, "redis://127.0.0.1:1/0")
    link.keys = Keys("ghtest-h\u00f6t")
    conn = link.redis.connection_pool.make_connection()
    for data in ["", "x", '{"a":"\u00e9\\u0000"}', "\u00e9" * 5000]:
        want = conn.pack_command(
            "XADD", link.keys.exchanges_stream, "MAXLEN", "~", STREAM_MAXLEN, "*", "data", data
        )
        assert b"".join(link._pack_xadds([data])) == b"".join(want)

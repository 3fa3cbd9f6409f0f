"""Failures around the PostgreSQL path: the upstream down or killed, Redis down, cancels,
clients that vanish mid-result, and the worker itself being stopped.

Each failure must reach the agent as a clear PostgreSQL error (SQLSTATE and text), leave
nothing running upstream, be recorded, and leave the worker serving everyone else.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import errors as pgerr

from demo.stack import free_port, wait_port
from proxy_worker.postgres import protocol as pq
from tests.proxy_worker.postgres.harness import PgGateway, pg_target, sql_rule
from tests.proxy_worker.postgres.hxenv import HxEnv, app_name
from tests.proxy_worker.postgres.rawwire import Wire

# --- the upstream ---------------------------------------------------------------------------


def test_an_unreachable_upstream_is_a_clear_08001(hx: HxEnv) -> None:
    mark = hx.mark()
    w = hx.wire().tls(hx.gw.ca_file)
    msgs = w.login(hx.gw.agent_name, hx.gw.token, "hx-down")
    f = msgs[-1].fields()
    assert (f["S"], f["C"]) == ("FATAL", "08001")
    assert f["M"].startswith("upstream database 127.0.0.1:")
    assert "is unreachable" in f["M"]
    assert w.closed()
    with pytest.raises(psycopg.OperationalError, match="is unreachable"):
        hx.connect("hx-down")
    xs = hx.exchanges(mark, 2)
    assert [(x.status_code, x.decision, x.details.get("sqlstate")) for x in xs] == [
        (502, "error", "08001")
    ] * 2
    hx.assert_worker_alive()


def test_an_upstream_killed_mid_session_reaches_the_client_as_fatal(hx: HxEnv) -> None:
    name = app_name("hx-kill")
    conn = hx.connect(application_name=name, autocommit=True)
    w = hx.logged_in(application_name=name + "-raw")
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with hx.direct(autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name IN (%s, %s)",
                (name, name + "-raw"),
            ).fetchall()
        assert killed == [(True,), (True,)]
        with pytest.raises(psycopg.OperationalError) as e:
            conn.execute("SELECT 2")
        assert "terminating connection due to administrator command" in str(e.value)
        # The raw client sees PostgreSQL's own FATAL, then the end of the connection.
        f = w.error_then_close()
        assert (f["S"], f["C"]) == ("FATAL", "57P01")
        assert f["M"] == "terminating connection due to administrator command"
    finally:
        conn.close()
        w.close()
    hx.assert_worker_alive()


def test_an_upstream_killed_during_a_statement(hx: HxEnv) -> None:
    name = app_name("hx-kill2")
    mark = hx.mark()
    w = hx.logged_in(application_name=name)
    w.send(pq.build_query("SELECT pg_sleep(30)"))
    _wait_active(hx, name)
    with hx.direct(autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        )
    f = w.error_then_close()
    assert (f["S"], f["C"]) == ("FATAL", "57P01")
    (x,) = [x for x in hx.exchanges(mark, 1) if "pg_sleep" in x.request_body]
    assert x.status_code in (400, 502)
    assert x.details.get("sqlstate") in ("57P01", "08006")
    hx.assert_worker_alive()


def _wait_active(hx: HxEnv, name: str, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, state, _query in hx.upstream_activity(name):
            if state == "active":
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no active upstream query from {name}")


def _wait_idle(hx: HxEnv, name: str, timeout: float = 5) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + timeout
    while True:
        active = [r for r in hx.upstream_activity(name) if r[1] == "active"]
        if not active or time.monotonic() > deadline:
            return active
        time.sleep(0.05)


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_during_pg_sleep_is_57014_quickly(hx: HxEnv) -> None:
    name = app_name("hx-cancel")
    mark = hx.mark()
    with hx.connect(application_name=name, autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        t0 = time.monotonic()
        timer.start()
        with pytest.raises(pgerr.QueryCanceled) as e:
            conn.execute("SELECT pg_sleep(10)")
        elapsed = time.monotonic() - t0
        assert elapsed < 4, elapsed
        assert e.value.sqlstate == "57014"
        assert "canceling statement due to user request" in str(e.value)
        assert conn.execute("SELECT 'after'").fetchone() == ("after",)
    (x,) = [x for x in hx.exchanges(mark, 2) if "pg_sleep" in x.request_body]
    assert (x.status_code, x.details["sqlstate"]) == (400, "57014")
    assert _wait_idle(hx, name) == []


def test_a_cancel_request_with_a_wrong_key_is_ignored(hx: HxEnv) -> None:
    name = app_name("hx-cancel-bad")
    with hx.connect(application_name=name, autocommit=True) as conn:
        pid = conn.info.backend_pid

        def bad_cancel() -> None:
            time.sleep(0.3)
            w = hx.wire()
            w.send(pq.build_cancel_request(pid, b"\0\0\0\0"))
            assert w.closed()

        t = threading.Thread(target=bad_cancel)
        t.start()
        assert conn.execute("SELECT pg_sleep(1.2), 'done'").fetchone() == ("", "done")
        t.join()


def _second_worker(hx: HxEnv, tmp_path: Path, suffix: str) -> PgGateway:
    """Another worker (not started) on the ``hx`` gateway's Redis prefix, worker key,
    token, policy and CA, as a replica of one deployment; its ``stop()`` leaves the
    shared keys alone."""
    other = PgGateway(
        tmp_path,
        prefix=hx.gw.prefix,
        worker_key=hx.gw.worker_key,
        token=hx.gw.token,
        version=hx.gw.version,
        owns_keys=False,
        extra_env={"GATEHOUSE_WORKER_ID": f"pgworker-{hx.gw.prefix}-{suffix}"},
    )
    other.ca_dir = hx.gw.ca_dir  # one CA for the pool, as in docker-compose.yml
    return other


def _passed_on(*workers: PgGateway) -> int:
    """Cancels the ``workers`` carried out for a request another worker received."""
    return sum(w.log().count("another worker received") for w in workers)


def test_a_cancel_reaching_another_worker_is_passed_on_through_redis(
    hx: HxEnv, tmp_path: Path
) -> None:
    """Two workers on one Redis, as behind a TCP load balancer: the cancel request for a
    session on worker A arrives at worker B (it comes on a connection of its own); B gave
    out no such key, passes it on, and A cancels. A wrong secret passed on is ignored."""
    other = _second_worker(hx, tmp_path, "b")
    other.start()
    try:
        name = app_name("hx-cancel-peer")
        mark = hx.mark()
        before = _passed_on(hx.gw, other)
        w = hx.wire().tls(hx.gw.ca_file)
        msgs = w.login(hx.gw.agent_name, hx.gw.token, "hx", application_name=name)
        assert msgs[-1].tag == "Z", [m.fields() for m in msgs if m.tag == "E"]
        (key,) = [m.payload for m in msgs if m.tag == "K"]
        pid, secret = struct.unpack_from("!i", key)[0], key[4:]
        w.send(pq.build_query("SELECT pg_sleep(10)"))
        _wait_active(hx, name)

        wrong = Wire(other.pg_port)
        wrong.send(pq.build_cancel_request(pid, bytes(b ^ 0xFF for b in secret)))
        assert wrong.closed()
        time.sleep(0.5)
        assert _wait_idle(hx, name, timeout=0) != [], "a wrong key cancelled the statement"

        t0 = time.monotonic()
        right = Wire(other.pg_port)
        right.send(pq.build_cancel_request(pid, secret))
        assert right.closed()
        reply = w.until("Z")
        assert time.monotonic() - t0 < 4
        (err,) = [m.fields() for m in reply if m.tag == "E"]
        assert (err["C"], err["M"]) == ("57014", "canceling statement due to user request")
        assert w.query("SELECT 'after'")[-1].tag == "Z"  # the session goes on
        w.close()
        (x,) = [x for x in hx.exchanges(mark, 2) if "pg_sleep" in x.request_body]
        assert (x.status_code, x.details["sqlstate"]) == (400, "57014")
        assert _passed_on(hx.gw, other) == before + 1
        assert "Traceback" not in other.log(), other.log()[-3000:]
    finally:
        other.stop()


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_psycopg_cancels_through_haproxy_in_front_of_two_workers(hx: HxEnv, tmp_path: Path) -> None:
    """The deployment of deploy/haproxy.cfg: TCP mode, least connections, two workers on
    one Redis and one CA. The session holds one worker, so the balancer sends psycopg's
    cancel connection to the other one; the statement is cancelled all the same."""
    other = _second_worker(hx, tmp_path, "lb")
    lb_port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "global\n    maxconn 256\ndefaults\n    mode tcp\n    timeout connect 2s\n"
        "    timeout client 60s\n    timeout server 60s\n"
        f"frontend pg\n    bind 127.0.0.1:{lb_port}\n    default_backend workers\n"
        "backend workers\n    balance leastconn\n"
        f"    server a 127.0.0.1:{hx.gw.pg_port} check inter 1s\n"
        f"    server b 127.0.0.1:{other.pg_port} check inter 1s\n"
    )
    lb: subprocess.Popen[bytes] | None = None
    try:
        other.start()
        lb = subprocess.Popen(
            [shutil.which("haproxy") or "haproxy", "-db", "-f", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(lb_port, 10, lb, "haproxy")
        before = _passed_on(hx.gw, other)
        name = app_name("hx-cancel-lb")
        with psycopg.connect(
            hx.gw.dsn("hx", port=lb_port, application_name=name), autocommit=True
        ) as conn:
            timer = threading.Timer(0.5, conn.cancel)
            t0 = time.monotonic()
            timer.start()
            with pytest.raises(pgerr.QueryCanceled):
                conn.execute("SELECT pg_sleep(10)")
            assert time.monotonic() - t0 < 5
            assert conn.execute("SELECT 'after'").fetchone() == ("after",)
        assert _wait_idle(hx, name) == []
        assert _passed_on(hx.gw, other) == before + 1  # it crossed workers
    finally:
        if lb is not None:
            lb.terminate()
            lb.wait(10)
        other.stop()


def test_a_malformed_cancel_message_from_another_worker_is_ignored(hx: HxEnv) -> None:
    keys = hx.gw.keys
    for junk in (b"not json", b"[]", b'{"process_id": "x", "secret": "zz"}'):
        hx.gw.redis.publish(keys.pg_cancel_channel, junk)
    deadline = time.monotonic() + 5
    while hx.gw.log().count("malformed cancel message") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hx.gw.log().count("malformed cancel message") >= 3
    with hx.connect(autocommit=True) as conn:
        assert conn.execute("SELECT 'alive'").fetchone() == ("alive",)
    hx.assert_worker_alive()


def test_a_client_gone_mid_result_cancels_the_upstream_query(hx: HxEnv) -> None:
    name = app_name("hx-gone")
    mark = hx.mark()
    w = hx.logged_in(application_name=name)
    w.send(
        pq.build_query(
            "SELECT g, 'mail ' || g || '@example.com' AS email, repeat('x', 400) "
            "FROM generate_series(1, 5000000) g"
        )
    )
    rows = 0
    while rows < 50:
        if w.read().tag == "D":
            rows += 1
    pid = _wait_active(hx, name)
    assert pid
    w.close()  # gone, with millions of rows still to come
    assert _wait_idle(hx, name) == [], "the upstream query kept running"
    (x,) = [x for x in hx.exchanges(mark, 1) if "generate_series" in x.request_body]
    assert x.status_code == 499
    assert x.details["error"] == "the agent disconnected"
    assert not re.search(r"\d@example\.com", x.to_json())  # the rows sampled are masked
    hx.assert_worker_alive()


def test_a_client_gone_while_the_gateway_is_blocked_writing(hx: HxEnv) -> None:
    """The client stops reading (the gateway's writes block), then disconnects."""
    name = app_name("hx-stuck")
    w = hx.logged_in(application_name=name)
    w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    w.send(pq.build_query("SELECT repeat('y', 1000) FROM generate_series(1, 5000000)"))
    _wait_active(hx, name)
    time.sleep(1.0)  # buffers fill up, the gateway is stuck in drain()
    w.close()
    assert _wait_idle(hx, name, timeout=8) == [], "the upstream query kept running"
    hx.assert_worker_alive()


# --- Redis (the control plane's link) -----------------------------------------------------------


class PrivateRedis:
    """A ``redis-server`` of the test's own (so it can be stopped)."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir(parents=True)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, 15, self.proc, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def lonely_gateway(hx: HxEnv, tmp_path: Path) -> Iterator[tuple[PgGateway, PrivateRedis]]:
    """A worker of its own on a private Redis, approvals needed for ``secrets``."""
    r = PrivateRedis(tmp_path).start()
    gw = PgGateway(tmp_path / "gw", extra_env={"GATEHOUSE_REDIS_URL": r.url})
    (tmp_path / "gw").mkdir()
    gw.redis = redis.Redis.from_url(r.url, socket_timeout=5)
    target = pg_target(1, "lonely", database=hx.db.name, worker_key=gw.worker_key)
    gw.policy(
        [target],
        rules=[
            sql_rule(1, "Wait", "approve", statement_kinds=["SELECT"], tables=["secrets"]),
            sql_rule(
                2,
                "Defer",
                "approve",
                statement_kinds=["INSERT"],
                tables=["audit_log"],
                approval_mode="defer",
            ),
        ],
    )
    gw.start()
    try:
        yield gw, r
    finally:
        # Not gw.stop(): it would clean the (stopped) Redis.
        if gw.proc is not None and gw.proc.poll() is None:
            gw.proc.terminate()
            try:
                gw.proc.wait(10)
            except subprocess.TimeoutExpired:
                gw.proc.kill()
        r.stop()


def test_approvals_fail_closed_when_redis_is_down(
    lonely_gateway: tuple[PgGateway, PrivateRedis], hx: HxEnv
) -> None:
    gw, r = lonely_gateway
    with psycopg.connect(gw.dsn("lonely"), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        r.stop()
        t0 = time.monotonic()
        with pytest.raises(pgerr.CannotConnectNow) as e:
            conn.execute("SELECT * FROM secrets")
        assert time.monotonic() - t0 < 8
        assert e.value.sqlstate == "57P03"
        assert "needs approval" in str(e.value) and "fail closed" in str(e.value)
        with pytest.raises(pgerr.CannotConnectNow):
            conn.execute("INSERT INTO audit_log (what) VALUES ('x')")
        # Statements without approval still run on the last policy.
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (3,)
    with hx.direct() as c:
        assert c.execute("SELECT count(*) FROM audit_log WHERE what = 'x'").fetchone() == (0,)
    assert gw.proc is not None and gw.proc.poll() is None


# --- the worker stopping ----------------------------------------------------------------------


def test_sigterm_tells_connected_clients_57p01(hx: HxEnv, tmp_path: Path) -> None:
    gw = PgGateway(tmp_path)
    target = pg_target(1, "stopping", database=hx.db.name, worker_key=gw.worker_key)
    gw.policy([target])
    gw.start()
    name = app_name("hx-term")
    try:
        idle = Wire(gw.pg_port).tls(gw.ca_file)
        assert idle.login(gw.agent_name, gw.token, "stopping")[-1].tag == "Z"
        busy = Wire(gw.pg_port).tls(gw.ca_file)
        assert busy.login(gw.agent_name, gw.token, "stopping", application_name=name)[-1].tag == "Z"
        busy.send(pq.build_query("SELECT pg_sleep(60)"))
        _wait_active(hx, name)
        conn = psycopg.connect(gw.dsn("stopping"), autocommit=True)
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        for w in (idle, busy):
            f = w.error_then_close()
            assert (f["S"], f["C"]) == ("FATAL", "57P01")
            assert f["M"] == "terminating connection: the gateway is shutting down"
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        conn.close()
        gw.proc.wait(15)
        assert _wait_idle(hx, name) == [], "the upstream query kept running"
        assert "Traceback" not in gw.log(), gw.log()[-3000:]
    finally:
        gw.stop()


# --- approval waits ending early --------------------------------------------------------------


def test_cancel_during_an_approval_wait_ends_the_hold_with_57014(hx: HxEnv) -> None:
    mark = hx.mark()
    with hx.connect("hx-appr", autocommit=True) as c:

        def cancel_once_held() -> None:
            hx.approvals(mark, 1)
            time.sleep(0.2)
            c.cancel()

        t = threading.Thread(target=cancel_once_held)
        t.start()
        t0 = time.monotonic()
        with pytest.raises(pgerr.QueryCanceled) as e:
            c.execute("SELECT * FROM secrets")
        t.join()
        assert time.monotonic() - t0 < 10
        assert e.value.diag.message_primary == (
            "canceling statement due to user request (it was waiting for approval)"
        )
        (req,) = hx.approvals(mark, 1)
        assert e.value.diag.message_detail == f"approval id {req.approval_id}"
        # An approval after the cancel runs nothing; the connection goes on.
        hx.gw.decide(req.approval_id, "approved")
        assert c.execute("SELECT 'next'").fetchone() == ("next",)
    xs = hx.exchanges(mark, 2)
    (x,) = [x for x in xs if "secrets" in x.request_body]
    assert (x.status_code, x.decision, x.details["sqlstate"]) == (403, "expired", "57014")
    assert "sk-live" not in "".join(y.to_json() for y in xs)


def test_a_client_gone_during_an_approval_wait_is_recorded(hx: HxEnv) -> None:
    mark = hx.mark()
    w = hx.logged_in("hx-appr")
    w.send(pq.build_query("SELECT api_key FROM secrets"))
    (req,) = hx.approvals(mark, 1)
    w.close()
    (x,) = hx.exchanges(mark, 1)
    assert (x.status_code, x.approval_id) == (499, req.approval_id)
    assert x.details["error"] == "the agent disconnected while the statement waited for approval"
    hx.gw.decide(req.approval_id, "approved")  # nobody is left to run it for
    hx.assert_worker_alive()


# --- a hostile (or broken) upstream server --------------------------------------------------------


class FakeUpstream:
    """A PostgreSQL "server" speaking one scripted conversation (``script(reader, writer)``
    after the start-up packet), in a thread of its own."""

    def __init__(self, script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]):
        self.script = script
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __enter__(self) -> FakeUpstream:
        self._thread.start()

        async def start() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await r.readexactly(4)
            await r.readexactly(pq.startup_length(head) - 4)
            await self.script(r, w)
            await w.drain()
            while await r.read(65536):  # until the gateway hangs up
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            w.close()
            self._tasks.discard(task)


def _logged_in() -> bytes:
    return (
        pq.build_authentication(0)
        + pq.build_parameter_status("client_encoding", "UTF8")
        + pq.build_parameter_status("server_version", "16.0")
        + pq.build_backend_key_data(4242, b"\x01\x02\x03\x04")
        + pq.build_ready_for_query("I")
    )


async def _asks_gssapi(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(pq.build_authentication(7))


async def _scram_without_proof(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """SCRAM, but "AuthenticationOk" in place of the server's signature (an impostor that
    does not know the password)."""
    w.write(pq.build_authentication(10, pq.build_sasl_mechanisms(["SCRAM-SHA-256"])))
    await w.drain()
    tag, n = struct.unpack("!ci", await r.readexactly(5))
    _mech, first = pq.parse_sasl_initial_response(await r.readexactly(n - 4))
    nonce = first.decode().split("r=", 1)[1]
    salt = base64.b64encode(b"saltsaltsalt").decode()
    w.write(pq.build_authentication(11, f"r={nonce}srv,s={salt},i=4096".encode()))
    await w.drain()
    tag, n = struct.unpack("!ci", await r.readexactly(5))
    await r.readexactly(n - 4)  # the client's proof
    w.write(_logged_in())


async def _garbage_after_query(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(_logged_in())
    await w.drain()
    await r.readexactly(5)  # the query's header
    w.write(b"\x01\0\0\0\x04")


@pytest.mark.parametrize(
    ("script", "sqlstate", "message"),
    [
        (
            _asks_gssapi,
            "08004",
            "upstream database asks for GSSAPI authentication, which Gatehouse does not support",
        ),
        (
            _scram_without_proof,
            "08004",
            "upstream ended SCRAM without proving it knows the password",
        ),
    ],
)
def test_a_hostile_upstream_login_is_refused(
    hx: HxEnv, script: Any, sqlstate: str, message: str
) -> None:
    with FakeUpstream(script) as fake:
        hx.publish(
            targets=[
                hx.target(
                    401,
                    "hx-fake",
                    host="127.0.0.1",
                    port=fake.port,
                    sslmode="disable",
                    password="pw-fake",
                )
            ]
        )
        w = hx.wire().tls(hx.gw.ca_file)
        msgs = w.login(hx.gw.agent_name, hx.gw.token, "hx-fake")
        f = msgs[-1].fields()
        assert (f["S"], f["C"]) == ("FATAL", sqlstate)
        assert message in f["M"], f
        assert "pw-fake" not in str(f)
    hx.assert_worker_alive()


def test_an_upstream_breaking_the_protocol_is_reported_as_its_fault(hx: HxEnv) -> None:
    with FakeUpstream(_garbage_after_query) as fake:
        hx.publish(
            targets=[
                hx.target(
                    402,
                    "hx-fake2",
                    host="127.0.0.1",
                    port=fake.port,
                    sslmode="disable",
                    password="pw-fake",
                )
            ]
        )
        w = hx.logged_in("hx-fake2")
        w.send(pq.build_query("SELECT 1"))
        f = w.error_then_close()
    assert (f["S"], f["C"]) == ("FATAL", "08006")
    assert f["M"] == "the upstream database broke the protocol: unknown message type '\\x01'"
    hx.assert_worker_alive()

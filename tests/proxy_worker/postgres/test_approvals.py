"""Statements held for approval on the PostgreSQL path, decided through Redis.

The decisions are given exactly as the control plane gives them (``PgGateway.decide``:
the decision key, then the pub/sub message). Wait mode holds the statement (the agent's
other connections flow meanwhile); defer mode fails at once naming the approval, and the
identical statement retried after the approval passes exactly once; a grant lets a
statement through without asking.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerr

from proxy_worker.policy import hash_token
from proxy_worker.postgres import protocol as pq
from tests.proxy_worker.postgres.hxenv import (
    GRANT_ID,
    R_DEFER,
    R_SHORT,
    R_WAIT,
    HxEnv,
    app_name,
)


class Background:
    """Run ``fn`` in a thread; ``result()`` returns its value or raises its error."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            self._error = e

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float = 20) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "still waiting"
        if self._error is not None:
            raise self._error
        return self._value


def held_query(hx: HxEnv, sql: str, params: tuple[Any, ...] | None = None, **kw: Any) -> Background:
    def run() -> Any:
        with hx.connect("hx-appr", autocommit=True, **kw) as c:
            return c.execute(sql, params).fetchall()

    return Background(run)


# --- wait mode ---------------------------------------------------------------------------------


def test_an_approved_statement_returns_masked_rows(hx: HxEnv) -> None:
    mark = hx.mark()
    name = app_name("hx-appr")
    job = held_query(
        hx, "select id, contact, name from customer_contacts order by id", application_name=name
    )
    (req,) = hx.approvals(mark, 1)
    assert not job.done()  # held
    assert (req.protocol, req.mode, req.method, req.rule_id) == (
        "postgres",
        "wait",
        "SELECT",
        R_WAIT,
    )
    assert req.url == f"postgresql://postgres@127.0.0.1:5432/{hx.db.name}"
    assert req.headers["database"] == "hx-appr" and req.headers["user"] == hx.gw.agent_name
    assert req.headers["application_name"] == name
    # pglast's formatting (upper-case keywords, one clause per line).
    assert req.body == "SELECT id\n     , contact\n     , name\nFROM customer_contacts\nORDER BY id"
    assert req.details["tables"] == ["customer_contacts"]
    assert req.details["statement_kinds"] == ["SELECT"]
    assert req.details["statement_kind"] == "SELECT"
    assert len(req.details["sql_fingerprint"]) == 64
    assert req.deadline - req.requested_at == pytest.approx(30, abs=1)
    hx.gw.decide(req.approval_id, "approved", by="alice")
    rows = job.result()
    assert [r[0] for r in rows] == [1, 2, 3]
    assert {r[1] for r in rows} == {"[EMAIL]"}
    assert not {r[2] for r in rows} & {"Jane Roe", "John Doe", "Ana Lima"}
    (x,) = [x for x in hx.exchanges(mark, 1) if x.method == "SELECT"]
    assert (x.status_code, x.decision, x.approval_id) == (200, "approved", req.approval_id)
    assert "jane.roe@example.com" not in x.to_json()


def test_the_approval_request_shows_masked_sql_and_parameters(hx: HxEnv) -> None:
    mark = hx.mark()
    job = held_query(
        hx,
        "SELECT id FROM secrets WHERE api_key = 'jane.roe@example.com' OR api_key = %s OR id = %s",
        ("ssn 123-45-6789", 1),
    )
    (req,) = hx.approvals(mark, 1)
    assert "jane.roe@example.com" not in req.to_json()
    assert "123-45-6789" not in req.to_json()
    assert "[EMAIL]" in req.body and "$1" in req.body
    assert req.details["parameters"] == ["ssn [US_SSN]", "1"]
    assert req.details["tables"] == ["secrets"]
    hx.gw.decide(req.approval_id, "approved")
    assert job.result() == [(1,)]


def test_a_denied_statement_is_42501_naming_the_approver(hx: HxEnv) -> None:
    mark = hx.mark()
    job = held_query(hx, "SELECT * FROM secrets")
    (req,) = hx.approvals(mark, 1)
    hx.gw.decide(req.approval_id, "denied", by="bob")
    with pytest.raises(pgerr.InsufficientPrivilege) as e:
        job.result()
    assert str(e.value).startswith("approval denied by bob")
    assert e.value.diag.message_detail == f"approval id {req.approval_id}"
    (x,) = [x for x in hx.exchanges(mark, 1) if x.method == "SELECT"]
    assert (x.status_code, x.decision, x.approval_id) == (403, "approval_denied", req.approval_id)
    assert "sk-live" not in x.to_json()


def test_an_approval_that_expires_is_an_error(hx: HxEnv) -> None:
    mark = hx.mark()
    t0 = time.monotonic()
    with hx.connect("hx-appr", autocommit=True) as c:
        with pytest.raises(pgerr.InsufficientPrivilege) as e:
            c.execute("SELECT * FROM contact_list")
        assert 1.2 < time.monotonic() - t0 < 8
        assert e.value.diag.message_primary == "approval expired: no decision within 1.5 s"
        assert e.value.diag.message_detail.startswith("approval id ")
        # The connection goes on.
        assert c.execute("SELECT 1").fetchone() == (1,)
    (req,) = hx.approvals(mark, 1)
    assert req.rule_id == R_SHORT
    (x,) = [x for x in hx.exchanges(mark, 2) if "contact_list" in x.request_body]
    assert (x.status_code, x.decision) == (403, "expired")
    # A decision after the deadline changes nothing.
    hx.gw.decide(req.approval_id, "approved")


def test_other_connections_flow_while_one_is_held(hx: HxEnv) -> None:
    mark = hx.mark()
    job = held_query(hx, "SELECT api_key FROM secrets")
    (req,) = hx.approvals(mark, 1)
    t0 = time.monotonic()
    for _ in range(5):
        with hx.connect("hx-appr", autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM audit_log").fetchone() == (3,)
    with hx.connect("hx") as c:
        assert c.execute("SELECT 'other target'").fetchone() == ("other target",)
    assert time.monotonic() - t0 < 10
    assert not job.done()
    hx.gw.decide(req.approval_id, "approved")
    assert job.result() == [("sk-live-0000",)]


def test_a_held_pipeline_keeps_its_order(hx: HxEnv) -> None:
    """Messages sent behind a held statement wait for it and keep their order."""
    mark = hx.mark()

    def run() -> list[Any]:
        with hx.connect("hx-appr", autocommit=True) as c, c.pipeline():
            a = c.execute("SELECT 'before'")
            b = c.execute("SELECT id FROM secrets")
            d = c.execute("SELECT 'after'")
            return [a.fetchall(), b.fetchall(), d.fetchall()]

    job = Background(run)
    (req,) = hx.approvals(mark, 1)
    hx.gw.decide(req.approval_id, "approved")
    assert job.result() == [[("before",)], [(1,)], [("after",)]]


# --- defer mode ------------------------------------------------------------------------------


def insert(c: psycopg.Connection[Any], what: str) -> psycopg.Error | None:
    try:
        c.execute("INSERT INTO audit_log (what) VALUES (%s)", (what,))
    except psycopg.Error as e:
        return e
    return None


def audit_count(hx: HxEnv, what: str) -> int:
    with hx.direct() as c:
        return c.execute("SELECT count(*) FROM audit_log WHERE what = %s", (what,)).fetchone()[0]


def test_defer_mode_names_the_approval_and_passes_the_retry_once(hx: HxEnv) -> None:
    mark = hx.mark()
    what = "deferred " + app_name()
    with hx.connect("hx-appr", autocommit=True) as c:
        e = insert(c, what)
        assert isinstance(e, pgerr.InsufficientPrivilege)
        (req,) = hx.approvals(mark, 1)
        assert (req.mode, req.rule_id, req.method) == ("defer", R_DEFER, "INSERT")
        assert req.retry_window == 600
        assert str(e).startswith("approval pending: this statement needs approval by 1 approver")
        assert e.diag.message_detail.startswith(f"approval id {req.approval_id}")
        assert (
            e.diag.message_hint == f"approve at http://127.0.0.1:8000/approvals/{req.approval_id}/"
        )
        # A retry before the decision: the same approval, no new request.
        e2 = insert(c, what)
        assert isinstance(e2, pgerr.InsufficientPrivilege)
        assert req.approval_id in e2.diag.message_detail
        assert len(hx.approvals(mark, 2, timeout=0.5)) == 1
        hx.gw.decide(req.approval_id, "approved", by="carol")
        assert insert(c, what) is None  # the identical retry passes...
        assert audit_count(hx, what) == 1
        e3 = insert(c, what)  # ...once: the next one asks anew
        assert isinstance(e3, pgerr.InsufficientPrivilege)
        reqs = hx.approvals(mark, 2)
        assert len(reqs) == 2 and reqs[1].approval_id != req.approval_id
        assert reqs[1].approval_id in e3.diag.message_detail
        # A different parameter value is a different statement: asked for anew.
        e4 = insert(c, what + " (other)")
        assert isinstance(e4, pgerr.InsufficientPrivilege)
        reqs = hx.approvals(mark, 3)
        assert len({r.approval_id for r in reqs}) == 3
        assert reqs[2].details["parameters"] == [what + " (other)"]
    assert audit_count(hx, what) == 1
    xs = [x for x in hx.exchanges(mark, 5) if x.method == "INSERT"]
    assert [(x.status_code, x.decision) for x in xs] == [
        (403, "denied"),
        (403, "denied"),
        (200, "approved"),
        (403, "denied"),
        (403, "denied"),
    ]
    assert xs[2].approval_id == req.approval_id


def test_defer_mode_a_denied_approval_refuses_the_retry(hx: HxEnv) -> None:
    mark = hx.mark()
    what = "deferred-denied " + app_name()
    with hx.connect("hx-appr", autocommit=True) as c:
        insert(c, what)
        (req,) = hx.approvals(mark, 1)
        hx.gw.decide(req.approval_id, "denied", by="dave")
        e = insert(c, what)
        assert isinstance(e, pgerr.InsufficientPrivilege)
        assert str(e).startswith("approval denied by dave")
    assert audit_count(hx, what) == 0


# --- grants ----------------------------------------------------------------------------------


def test_a_grant_lets_the_statement_pass_without_asking(hx: HxEnv) -> None:
    mark = hx.mark()
    with hx.connect("hx-appr", autocommit=True) as c:
        rows = c.execute("SELECT id, email FROM customers WHERE id = %s", (1,)).fetchall()
    assert rows == [(1, "[EMAIL]")]
    assert hx.approvals(mark, 1, timeout=0.5) == []
    (x,) = [x for x in hx.exchanges(mark, 1) if x.method == "SELECT"]
    assert (x.status_code, x.decision) == (200, "approved")
    assert x.details["grant_id"] == GRANT_ID
    assert x.approval_id == "hx-grant-approval"


def test_a_grant_does_not_cover_other_tables(hx: HxEnv) -> None:
    mark = hx.mark()
    job = held_query(hx, "SELECT c.id FROM customers c JOIN secrets s ON s.id = c.id")
    (req,) = hx.approvals(mark, 1)
    assert req.details["tables"] == ["customers", "secrets"]
    hx.gw.decide(req.approval_id, "denied")
    with pytest.raises(pgerr.InsufficientPrivilege):
        job.result()


def test_a_protocol_violation_during_a_hold_ends_the_connection(hx: HxEnv) -> None:
    mark = hx.mark()
    w = hx.logged_in("hx-appr")
    w.send(pq.build_query("SELECT api_key FROM secrets"))
    (req,) = hx.approvals(mark, 1)
    w.send(b"\x01\0\0\0\x04")  # garbage behind the held statement
    f = w.error_then_close()
    assert (f["S"], f["C"], f["M"]) == ("FATAL", "08P01", "unknown message type '\\x01'")
    hx.gw.decide(req.approval_id, "approved")
    assert b"sk-live" not in bytes(w.received)
    hx.assert_worker_alive()


def _held_then_revoked(hx: HxEnv, token: str) -> tuple[Background, Any, tuple[int, int]]:
    """An agent of its own (``hx-held``, ``token``) whose statement on ``secrets`` is
    held for approval; its token is revoked (a policy without it) while it waits.
    Returns the client's job, the approval request and the mark before it."""
    agent = {"id": 4, "name": "hx-held", "owner": "admin", "token_hashes": [hash_token(token)]}
    hx.publish(agents=[agent])
    mark = hx.mark()

    def run() -> Any:
        dsn = hx.dsn("hx-appr", user="hx-held", password=token)
        with psycopg.connect(dsn, autocommit=True) as c:
            return c.execute("SELECT api_key FROM secrets").fetchall()

    job = Background(run)
    (req,) = hx.approvals(mark, 1)
    hx.publish()
    return job, req, mark


def test_a_token_revoked_during_the_wait_runs_nothing(hx: HxEnv) -> None:
    job, req, mark = _held_then_revoked(hx, "gh_heldrevo_" + "h" * 32)
    hx.gw.decide(req.approval_id, "approved")
    with pytest.raises(psycopg.Error) as e:
        job.result()
    assert e.value.sqlstate == "28000"
    (x,) = [x for x in hx.exchanges(mark, 1) if "secrets" in x.request_body]
    assert (x.status_code, x.details["sqlstate"]) == (403, "28000")
    assert "sk-live" not in x.to_json()


def test_a_revocation_ends_the_wait_before_any_decision_and_is_recorded_as_such(
    hx: HxEnv,
) -> None:
    """The worker's policy watch ends the session while the statement still waits (no
    decision ever comes): the agent gets FATAL 28000 and the exchange says the token was
    revoked (403, 28000, the approval id), not that the agent went away."""
    job, req, mark = _held_then_revoked(hx, "gh_heldgone_" + "g" * 32)
    with pytest.raises(psycopg.Error) as e:
        job.result()
    assert e.value.sqlstate == "28000"
    (x,) = [x for x in hx.exchanges(mark, 1) if "secrets" in x.request_body]
    assert (x.status_code, x.details["sqlstate"]) == (403, "28000")
    assert (x.decision, x.approval_id) == ("denied", req.approval_id)
    assert "revoked" in x.details["error"]

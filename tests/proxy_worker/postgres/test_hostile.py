"""Hostile input on the gateway's PostgreSQL port, and attempts to get around the rules.

Everything is real: the worker process, the machine's PostgreSQL behind it, psycopg,
asyncpg, and a raw socket client (:mod:`.rawwire`) that sends frames built with
:mod:`proxy_worker.postgres.protocol` (or plain garbage). A hostile frame gets one
``ErrorResponse`` saying what is wrong (SQLSTATE and text, read on the raw socket) and
the connection is closed; every such test then connects a normal client to show the
worker still serves.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from pathlib import Path

import asyncpg
import psycopg
import pytest
from psycopg import errors as pgerr

from proxy_worker.postgres import protocol as pq
from tests.proxy_worker.postgres.hxenv import (
    AUDIT_ROWS,
    R_ALLOW_CUSTOMERS,
    R_NO_COPY_PROGRAM,
    R_NO_DELETE,
    R_NO_DO,
    RAW_VALUES,
    HxEnv,
    app_name,
)
from tests.proxy_worker.postgres.rawwire import data_rows, errors


def audit_rows(hx: HxEnv) -> int:
    with hx.direct() as c:
        return c.execute("SELECT count(*) FROM audit_log").fetchone()[0]


def client_hello() -> bytes:
    """The first flight of a real TLS handshake (a ClientHello record)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


# --- start-up phase ----------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 7, -1, -8, 10_005, 2**31 - 1])
def test_it_refuses_a_startup_packet_of_a_wrong_length(hx: HxEnv, length: int) -> None:
    w = hx.wire()
    w.send(struct.pack("!i", length) + struct.pack("!I", pq.PROTOCOL_3_0))
    err = w.error_then_close()
    assert (err["S"], err["C"]) == ("FATAL", "08P01")
    assert err["M"] == "invalid length of startup packet"
    hx.assert_worker_alive()


@pytest.mark.parametrize(
    ("packet", "sqlstate", "message"),
    [
        # Protocol 2.0 (long gone), and a major version nobody speaks.
        (struct.pack("!iI", 8, 2 << 16), "0A000", "unsupported frontend protocol 2.0"),
        (struct.pack("!iI", 8, 9 << 16 | 7), "0A000", "unsupported frontend protocol 9.7"),
        (struct.pack("!iI", 8, 1234 << 16 | 9999), "08P01", "unsupported startup request code"),
        # Parameters that are not NUL-terminated pairs.
        (
            struct.pack("!iI", 8 + 9, pq.PROTOCOL_3_0) + b"user\0agent",
            "08P01",
            "invalid startup packet layout",
        ),
        (
            struct.pack("!iI", 8 + 6, pq.PROTOCOL_3_0) + b"user\0\0",
            "08P01",
            "invalid startup packet layout",
        ),
        (
            struct.pack("!iI", 8 + 4, pq.PROTOCOL_3_0) + b"\xff\xfe\0\0",
            "08P01",
            "invalid startup packet layout",
        ),
        # A length word that says less than what follows the request code.
        (struct.pack("!iI", 12, pq.SSL_REQUEST_CODE) + b"\0\0\0\0", "08P01", "invalid length"),
    ],
)
def test_it_refuses_startup_garbage(hx: HxEnv, packet: bytes, sqlstate: str, message: str) -> None:
    w = hx.wire()
    w.send(packet)
    err = w.error_then_close()
    assert err["C"] == sqlstate, err
    assert message in err["M"], err
    hx.assert_worker_alive()


def test_it_refuses_undecodable_startup_parameters(hx: HxEnv) -> None:
    w = hx.wire()
    body = struct.pack("!I", pq.PROTOCOL_3_0) + b"user\0\xff\xfe\0\0"
    w.send(struct.pack("!i", len(body) + 4) + body)
    err = w.error_then_close()
    assert err["C"] == "22021"
    assert "not valid UTF-8" in err["M"]


def test_it_tells_an_http_client_this_is_a_postgresql_port(hx: HxEnv) -> None:
    w = hx.wire()
    w.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    err = w.error_then_close()
    assert (err["S"], err["C"]) == ("FATAL", "08P01")
    assert "HTTP request" in err["M"] and "PostgreSQL" in err["M"], err
    hx.assert_worker_alive()


def test_it_refuses_a_tls_handshake_without_ssl_request(hx: HxEnv) -> None:
    w = hx.wire()
    w.send(client_hello())
    err = w.error_then_close()
    assert err["C"] == "08P01"
    assert "TLS handshake without SSLRequest" in err["M"], err
    assert "sslnegotiation=postgres" in err["M"]
    hx.assert_worker_alive()


def test_it_refuses_a_message_before_the_startup_packet(hx: HxEnv) -> None:
    w = hx.wire()
    w.send(pq.build_password(hx.gw.token))
    err = w.error_then_close()
    assert err["C"] == "08P01"
    assert "'p' message before the start-up packet" in err["M"], err
    assert hx.gw.token not in str(err)
    hx.assert_worker_alive()


def test_it_refuses_data_after_the_ssl_request_before_the_handshake(hx: HxEnv) -> None:
    w = hx.wire()
    w.send(pq.build_ssl_request() + pq.build_startup({"user": "x", "database": "hx"}))
    # The gateway answers in plaintext (no TLS was agreed) and closes.
    err = w.error_then_close()
    assert err["C"] == "08P01"
    assert err["M"] == "received unencrypted data after SSL request"
    hx.assert_worker_alive()


def test_it_refuses_two_ssl_requests_in_a_row(hx: HxEnv) -> None:
    w = hx.wire()
    w.send(pq.build_ssl_request() + pq.build_ssl_request())
    err = w.error_then_close()
    assert err["M"] == "received unencrypted data after SSL request"


def test_it_refuses_an_ssl_request_inside_tls(hx: HxEnv) -> None:
    w = hx.wire().tls(hx.gw.ca_file)
    w.send(pq.build_ssl_request())
    err = w.error_then_close()
    assert (err["S"], err["C"], err["M"]) == ("FATAL", "08P01", "SSLRequest received twice")
    hx.assert_worker_alive()


def test_it_answers_gssenc_with_no_and_goes_on(hx: HxEnv) -> None:
    w = hx.wire()
    w.send(pq.build_gssenc_request())
    assert w.read_byte() == b"N"
    # The same connection then asks for TLS, as libpq does after a GSSAPI refusal.
    assert w.ssl_request() == b"S"
    w.start_tls(hx.gw.ca_file)
    assert w.login(hx.gw.agent_name, hx.gw.token, "hx")[-1].tag == "Z"
    assert data_rows(w.query("SELECT 'ok'")) == [["ok"]]


def test_it_refuses_a_large_password_message_before_reading_it(hx: HxEnv) -> None:
    """Unauthenticated, nobody makes the worker buffer more than a token's worth (64 KiB)
    although queries may be larger (256 KiB on this worker)."""
    w = hx.wire().tls(hx.gw.ca_file)
    w.startup(user=hx.gw.agent_name, database="hx")
    assert w.read().tag == "R"
    w.send(b"p" + struct.pack("!i", 100 * 1024))  # the header alone
    err = w.error_then_close()
    assert (err["C"], err["M"]) == ("08P01", "message of 102400 bytes exceeds the limit of 65536")
    # A password message and a first query sent together (no wait for AuthenticationOk)
    # are both served: the bytes read ahead are kept when the limit is raised.
    w = hx.wire().tls(hx.gw.ca_file)
    w.startup(user=hx.gw.agent_name, database="hx")
    assert w.read().tag == "R"
    w.send(pq.build_password(hx.gw.token) + pq.build_query("SELECT '" + "z" * 100_000 + "'"))
    assert w.until("Z")[-1].tag == "Z"  # login
    msgs = w.until("Z")
    assert data_rows(msgs) == [["z" * 100_000]]


def test_it_refuses_replication_connections(hx: HxEnv) -> None:
    for value in ("database", "true", "on"):
        w = hx.wire().tls(hx.gw.ca_file)
        w.startup(user=hx.gw.agent_name, database="hx", replication=value)
        err = w.error_then_close()
        assert (err["S"], err["C"]) == ("FATAL", "0A000")
        assert "replication connections are not supported" in err["M"]
    with psycopg.connect(hx.dsn("hx", replication="false")) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ("-c role=postgres", "role"),
        ("-c session_authorization=postgres", "session_authorization"),
        ("-crole=postgres", "role"),
        ("--role=postgres", "role"),
        ("-c search_path=public -c ROLE=postgres", "role"),
        (
            "-c default_transaction_read_only=off -c session-authorization=x",
            "session_authorization",
        ),
        ("-c log_statement=none", "log_statement"),
        ("-c gatehouse.bypass=1", "gatehouse.bypass"),
        ("-B 1000", "-B"),
    ],
)
def test_it_refuses_disallowed_startup_options(hx: HxEnv, options: str, name: str) -> None:
    w = hx.wire().tls(hx.gw.ca_file)
    w.startup(user=hx.gw.agent_name, database="hx", options=options)
    err = w.error_then_close()
    assert (err["S"], err["C"]) == ("FATAL", "42501")
    assert err["M"] == f"startup option {name!r} is not allowed through Gatehouse"
    # With libpq too: the refusal comes before the password is asked for.
    with pytest.raises(psycopg.OperationalError, match="is not allowed through Gatehouse"):
        psycopg.connect(hx.dsn("hx", options=options))


def test_it_passes_allowed_startup_options(hx: HxEnv) -> None:
    # An escaped space keeps "-c role=..." inside the value (PostgreSQL's pg_split_opts
    # rules): no role change sneaks through.
    options = r"-c statement_timeout=4321 -c application_name=x\ -c\ role=nobody"
    with psycopg.connect(hx.dsn("hx", options=options)) as c:
        assert c.execute("SHOW statement_timeout").fetchone() == ("4321ms",)
        assert c.execute("SHOW application_name").fetchone() == ("x -c role=nobody",)
        assert c.execute("SELECT current_user = session_user").fetchone() == (True,)
    options = r'-c search_path="x\ -c\ role=nobody",public'
    with psycopg.connect(hx.dsn("hx", options=options)) as c:
        assert c.execute("SHOW search_path").fetchone() == ('"x -c role=nobody",public',)
        assert c.execute("SELECT current_user = session_user").fetchone() == (True,)


@pytest.mark.parametrize("name", ["foo", "role", "session_authorization", "_pq_"])
def test_it_refuses_unknown_startup_parameters(hx: HxEnv, name: str) -> None:
    w = hx.wire().tls(hx.gw.ca_file)
    w.startup(user=hx.gw.agent_name, database="hx", **{name: "postgres"})
    err = w.error_then_close()
    assert (err["S"], err["C"]) == ("FATAL", "42501")
    assert err["M"] == f"startup parameter {name!r} is not allowed through Gatehouse"
    hx.assert_worker_alive()


def test_it_accepts_settings_as_startup_parameters(hx: HxEnv) -> None:
    """asyncpg sends ``server_settings`` as startup parameters (not in ``options``)."""

    async def go() -> list[str]:
        ctx = ssl.create_default_context(cafile=str(hx.gw.ca_file))
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=hx.gw.pg_port,
            user=hx.gw.agent_name,
            password=hx.gw.token,
            database="hx",
            ssl=ctx,
            server_settings={"statement_timeout": "1234", "application_name": "hx-asyncpg"},
        )
        try:
            return [
                await conn.fetchval("SHOW statement_timeout"),
                await conn.fetchval("SHOW application_name"),
            ]
        finally:
            await conn.close()

    assert asyncio.run(go()) == ["1234ms", "hx-asyncpg"]


def test_it_asks_a_newer_client_to_speak_3_0(hx: HxEnv) -> None:
    w = hx.wire().tls(hx.gw.ca_file)
    body = pq.build_startup(
        {"user": hx.gw.agent_name, "database": "hx", "_pq_.test_option": "1"},
        version=3 << 16 | 2,
    )
    w.send(body)
    first = w.read()
    assert first.tag == "v"
    newest, unsupported = pq.parse_negotiate_protocol_version(first.payload)
    assert (newest, tuple(unsupported)) == (pq.PROTOCOL_3_0, ("_pq_.test_option",))
    assert w.read().tag == "R"
    w.send(pq.build_password(hx.gw.token))
    assert w.until("ZE")[-1].tag == "Z"
    assert data_rows(w.query("SELECT 2")) == [["2"]]


# --- frames after the login ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"Q" + struct.pack("!i", 0), "invalid message length 0"),
        (b"Q" + struct.pack("!i", 3), "invalid message length 3"),
        (b"Q" + struct.pack("!i", -1), "invalid message length -1"),
        (
            b"Q" + struct.pack("!i", 300 * 1024),
            "message of 307200 bytes exceeds the limit of 262144",
        ),
        (b"\x01" + struct.pack("!i", 4), "unknown message type '\\x01'"),
        (b"Z" + struct.pack("!i", 5) + b"I", "unknown message type 'Z'"),
        (pq.build_password("again"), "unexpected message type 'p'"),
    ],
)
def test_it_closes_on_a_hostile_frame_after_login(hx: HxEnv, frame: bytes, message: str) -> None:
    w = hx.logged_in()
    w.send(frame + b"\0" * 16)
    err = w.error_then_close()
    assert (err["S"], err["C"]) == ("FATAL", "08P01")
    assert message in err["M"], err
    hx.assert_worker_alive()


def test_it_refuses_an_oversize_query_arriving_in_pieces(hx: HxEnv) -> None:
    w = hx.logged_in()
    big = pq.build_query("SELECT '" + "x" * (300 * 1024) + "'")
    w.send(big[:5])  # the header alone is enough to refuse it
    err = w.error_then_close()
    assert "exceeds the limit of 262144" in err["M"]


def test_it_accepts_a_query_just_under_the_limit(hx: HxEnv) -> None:
    w = hx.logged_in()
    text = "x" * (250 * 1024)
    msgs = w.query(f"SELECT length('{text}')")
    assert data_rows(msgs) == [[str(len(text))]]


def test_it_refuses_undecodable_sql(hx: HxEnv) -> None:
    w = hx.logged_in()
    w.send(pq.frame(b"Q", b"SELECT '\xff\xfe'\0"))
    err = w.error_then_close()
    assert err["C"] == "22021"


# --- the legacy function call ---------------------------------------------------------------


def function_oid(hx: HxEnv, signature: str) -> int:
    with hx.direct() as c:
        return c.execute("SELECT %s::regprocedure::oid::int8", (signature,)).fetchone()[0]


def test_it_refuses_function_calls_without_a_fastpath_rule(hx: HxEnv) -> None:
    mark = hx.mark()
    oid = function_oid(hx, "pg_read_file(text)")
    w = hx.logged_in()
    w.send(pq.build_function_call(oid, [b"/etc/passwd"]))
    msgs = w.until("Z")
    assert [m.tag for m in msgs] == ["E", "Z"]
    (err,) = [m.fields() for m in msgs if m.tag == "E"]
    assert err["C"] == "42501"
    assert "function-call protocol is refused" in err["M"]
    assert "pg_catalog.pg_read_file" in err.get("D", "")
    assert b"root:" not in bytes(w.received)
    # lower() neither: no rule allows the kind FASTPATH on this target.
    w.send(pq.build_function_call(function_oid(hx, "lower(text)"), [b"X"]))
    msgs = w.until("Z")
    assert [m.tag for m in msgs] == ["E", "Z"]
    assert "pg_catalog.lower" in msgs[0].fields()["D"]
    # The connection goes on.
    assert data_rows(w.query("SELECT 'still here'")) == [["still here"]]
    xs = [e for e in hx.exchanges(mark, 3) if e.method == "FASTPATH"]
    assert [(x.status_code, x.decision) for x in xs] == [(403, "denied")] * 2
    assert "pg_catalog.pg_read_file" in xs[0].request_body


def test_it_lets_an_allowed_function_call_through_masked(hx: HxEnv) -> None:
    mark = hx.mark()
    textcat = function_oid(hx, "textcat(text, text)")
    w = hx.logged_in("hx-fast")
    w.send(pq.build_function_call(textcat, [b"hel", b"lo"]))
    msgs = w.until("Z")
    (v,) = [m for m in msgs if m.tag == "V"]
    assert pq.parse_function_call_response(v.payload) == b"hello"
    w.send(pq.build_function_call(textcat, [b"jane.roe@", b"example.com"]))
    msgs = w.until("Z")
    (v,) = [m for m in msgs if m.tag == "V"]
    assert pq.parse_function_call_response(v.payload) is None  # masked: NULL
    assert b"jane.roe@example.com" not in bytes(w.received)
    # The rule allows textcat() only: pg_read_file stays refused on this target.
    w.send(pq.build_function_call(function_oid(hx, "pg_read_file(text)"), [b"/etc/passwd"]))
    msgs = w.until("Z")
    assert errors(msgs)[0][0] == "42501"
    fast = [e for e in hx.exchanges(mark, 3) if e.method == "FASTPATH"]
    assert [e.status_code for e in fast] == [200, 200, 403]
    for e in fast:
        assert "jane.roe@example.com" not in e.to_json()


def test_a_rule_for_anything_does_not_allow_function_calls(hx: HxEnv) -> None:
    """Only a rule naming the kind FASTPATH does; ``hx-plain``'s rule has no conditions."""
    w = hx.logged_in("hx-plain")
    assert errors(w.query("SELECT 1")) == []  # the rule matches statements...
    w.send(pq.build_function_call(function_oid(hx, "textcat(text, text)"), [b"a", b"b"]))
    msgs = w.until("Z")  # ...but not the function-call protocol
    assert [m.tag for m in msgs] == ["E", "Z"]
    assert "function-call protocol is refused" in msgs[0].fields()["M"]


def test_it_refuses_a_function_call_of_an_unknown_oid(hx: HxEnv) -> None:
    w = hx.logged_in("hx-fast")
    w.send(pq.build_function_call(4_000_000_000, [b"x"]))
    msgs = w.until("Z")
    ((code, message),) = errors(msgs)
    assert code == "42501" and "cannot be identified" in message


# --- parameters in the records ----------------------------------------------------------------


def test_it_records_bind_parameters_masked(hx: HxEnv) -> None:
    mark = hx.mark()
    with hx.connect(application_name=app_name()) as c:
        row = c.execute(
            "SELECT %s::text AS a, %s::text AS b, %s::int AS n",
            ("jane.roe@example.com", "ssn 123-45-6789", 7),
        ).fetchone()
        assert row == ("[EMAIL]", "ssn [US_SSN]", 7)
        # Binary-format parameters too (psycopg's %b: int4 and text sent binary).
        row = c.execute("SELECT %b::text, %b", ("card 4111111111111111", 8)).fetchone()
        assert row == ("card [CREDIT_CARD]", 8)
    xs = [e for e in hx.exchanges(mark, 2) if e.method == "SELECT"]
    assert xs[0].details["parameters"] == ["[EMAIL]", "ssn [US_SSN]", "7"]
    assert xs[1].details["parameters"] == ["card [CREDIT_CARD]", "8"]
    for e in xs:
        text = e.to_json()
        for raw in [*RAW_VALUES, "4111111111111111"]:
            assert raw not in text


# --- statements that hide other statements ----------------------------------------------------


def test_it_refuses_a_multi_statement_query_as_a_whole(hx: HxEnv) -> None:
    mark = hx.mark()
    w = hx.logged_in()
    msgs = w.query("SELECT 1; DELETE FROM audit_log")
    # Nothing ran: no row description, no row, no command tag of the SELECT.
    assert [m.tag for m in msgs] == ["E", "Z"]
    ((code, message),) = errors(msgs)
    assert code == "42501" and message == "denied by access rule 'No deletes'"
    assert audit_rows(hx) == AUDIT_ROWS
    xs = hx.exchanges(mark, 1)
    assert [(x.method, x.status_code, x.decision) for x in xs] == [("DELETE", 403, "denied")]
    assert xs[0].rule_id == R_NO_DELETE


def test_it_aborts_the_transaction_on_a_refusal_like_a_server_error(hx: HxEnv) -> None:
    w = hx.logged_in()
    assert w.query("BEGIN")[-1].payload == b"T"
    assert data_rows(w.query("INSERT INTO audit_log (what) VALUES ('in tx') RETURNING 1")) == [
        ["1"]
    ]
    msgs = w.query("SELECT 1; DELETE FROM audit_log")
    assert errors(msgs)[0][0] == "42501"
    assert msgs[-1].payload == b"E"  # ReadyForQuery: in a failed transaction block
    msgs = w.query("SELECT 1")
    ((code, message),) = errors(msgs)
    assert code == "25P02" and "current transaction is aborted" in message
    assert w.query("ROLLBACK")[-1].payload == b"I"
    assert audit_rows(hx) == AUDIT_ROWS  # the insert was rolled back too
    # psycopg sees the same.
    with hx.connect() as c:
        c.execute("INSERT INTO audit_log (what) VALUES ('x')")
        with pytest.raises(pgerr.InsufficientPrivilege):
            c.execute("SELECT 1; DELETE FROM audit_log")
        with pytest.raises(pgerr.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.rollback()
    assert audit_rows(hx) == AUDIT_ROWS


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT $$; DELETE FROM audit_log$$", [["; DELETE FROM audit_log"]]),
        ("SELECT $x$; DELETE FROM audit_log; $x$ AS t", [["; DELETE FROM audit_log; "]]),
        ("/* ; DELETE FROM audit_log */ SELECT 1", [["1"]]),
        ("SELECT 1 -- ;DELETE FROM audit_log", [["1"]]),
        ("SELECT ';DELETE FROM audit_log'", [[";DELETE FROM audit_log"]]),
        ('SELECT 1 AS "; DELETE FROM audit_log"', [["1"]]),
        ("SELECT E'\\'; DELETE FROM audit_log; --'", [["'; DELETE FROM audit_log; --"]]),
    ],
)
def test_it_is_not_fooled_by_quotes_and_comments(
    hx: HxEnv, sql: str, expected: list[list[str]]
) -> None:
    w = hx.logged_in()
    msgs = w.query(sql)
    assert errors(msgs) == []
    assert data_rows(msgs) == expected
    assert audit_rows(hx) == AUDIT_ROWS


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; /* hi */ DELETE FROM audit_log",
        "SELECT $$x$$; DELETE FROM audit_log",
        "WITH d AS (DELETE FROM audit_log RETURNING *) SELECT count(*) FROM d",
        "EXPLAIN ANALYZE DELETE FROM audit_log",
        "EXPLAIN (ANALYZE, FORMAT JSON) WITH d AS (DELETE FROM audit_log RETURNING 1) SELECT 1",
        "CREATE TABLE hx_copy AS WITH d AS (DELETE FROM audit_log RETURNING *) SELECT * FROM d",
        "delete from AUDIT_LOG where true",
    ],
)
def test_it_finds_deletes_hidden_in_other_statements(hx: HxEnv, sql: str) -> None:
    w = hx.logged_in()
    msgs = w.query(sql)
    assert [m.tag for m in msgs] == ["E", "Z"], msgs
    assert errors(msgs) == [("42501", "denied by access rule 'No deletes'")]
    assert audit_rows(hx) == AUDIT_ROWS


def test_it_lets_explain_without_analyze_through(hx: HxEnv) -> None:
    w = hx.logged_in()
    msgs = w.query("EXPLAIN DELETE FROM audit_log")
    assert errors(msgs) == []
    assert any("Delete on audit_log" in (r[0] or "") for r in data_rows(msgs))
    assert audit_rows(hx) == AUDIT_ROWS


def test_it_refuses_executing_a_sql_prepared_delete(hx: HxEnv) -> None:
    mark = hx.mark()
    w = hx.logged_in()
    assert errors(w.query("PREPARE p AS DELETE FROM audit_log")) == []
    msgs = w.query("EXECUTE p")
    assert errors(msgs) == [("42501", "denied by access rule 'No deletes'")]
    assert audit_rows(hx) == AUDIT_ROWS
    # Inside one message as well.
    msgs = w.query("PREPARE q AS DELETE FROM audit_log; EXECUTE q")
    assert errors(msgs) == [("42501", "denied by access rule 'No deletes'")]
    assert audit_rows(hx) == AUDIT_ROWS
    xs = hx.exchanges(mark, 3)
    assert [(x.method, x.status_code) for x in xs][-2:] == [("DELETE", 403), ("DELETE", 403)]


def test_it_refuses_executing_a_protocol_prepared_delete_by_sql(hx: HxEnv) -> None:
    w = hx.logged_in()
    w.send(pq.build_parse("s_del", "DELETE FROM audit_log"), pq.build_sync())
    assert [m.tag for m in w.until("Z")] == ["1", "Z"]  # prepared upstream, never run
    msgs = w.query("EXECUTE s_del")
    assert errors(msgs) == [("42501", "denied by access rule 'No deletes'")]
    # And through the protocol itself.
    w.send(
        pq.build_bind("", "s_del", (), (), ()),
        pq.build_execute(""),
        pq.build_sync(),
    )
    msgs = w.until("Z")
    assert errors(msgs) == [("42501", "denied by access rule 'No deletes'")]
    assert audit_rows(hx) == AUDIT_ROWS
    assert data_rows(w.query("SELECT count(*) FROM audit_log")) == [[str(AUDIT_ROWS)]]


def test_it_refuses_what_it_cannot_parse(hx: HxEnv) -> None:
    mark = hx.mark()
    w = hx.logged_in()
    msgs = w.query("SELEC email FROM customers")
    (m,) = [m for m in msgs if m.tag == "E"]
    f = m.fields()
    assert f["C"] == "42601"
    assert f["M"].startswith("Gatehouse refused a statement it cannot parse")
    assert "access rules" in f["H"]
    assert [x.tag for x in msgs] == ["E", "Z"]
    # The extended protocol: Parse of the same.
    with hx.connect() as c:
        with pytest.raises(pgerr.SyntaxError, match="Gatehouse refused"):
            c.execute("SELEC %s", (1,))
        c.rollback()
        assert c.execute("SELECT 3").fetchone() == (3,)
    refused = [x for x in hx.exchanges(mark, 3) if x.status_code == 403]
    assert [x.details.get("sqlstate") for x in refused] == ["42601", "42601"]
    assert refused[0].request_body == "SELEC email FROM customers"


def test_it_applies_the_rules_for_do_blocks(hx: HxEnv) -> None:
    body = "DO $$ BEGIN DELETE FROM audit_log; END $$"
    w = hx.logged_in()
    msgs = w.query(body)
    assert errors(msgs) == [("42501", "denied by access rule 'No DO blocks'")]
    assert audit_rows(hx) == AUDIT_ROWS
    mark = hx.mark()
    # On a target without rules the DO block runs.
    w2 = hx.logged_in("hx-plain")
    msgs = w2.query("DO $$ BEGIN INSERT INTO audit_log (what) VALUES ('from do'); END $$")
    assert errors(msgs) == []
    assert audit_rows(hx) == AUDIT_ROWS + 1
    (x,) = hx.exchanges(mark, 1)
    assert (x.method, x.status_code) == ("DO", 200)
    assert R_NO_DO not in (x.rule_id,)


@pytest.mark.parametrize(
    "sql",
    [
        "COPY audit_log (what) FROM PROGRAM 'echo pwned'",
        "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
        "COPY audit_log TO PROGRAM 'touch {marker}'",
        "copy audit_log to program 'touch {marker}' with (format csv)",
    ],
)
def test_it_denies_copy_program(hx: HxEnv, tmp_path: Path, sql: str) -> None:
    marker = tmp_path / "pwned"
    mark = hx.mark()
    w = hx.logged_in()
    msgs = w.query(sql.format(marker=marker))
    assert errors(msgs) == [("42501", "denied by access rule 'No COPY PROGRAM'")]
    assert not marker.exists()
    assert audit_rows(hx) == AUDIT_ROWS
    (x,) = hx.exchanges(mark, 1)
    assert x.rule_id == R_NO_COPY_PROGRAM and "copy_program" in x.details["functions"]


def test_an_allow_list_refuses_a_join_with_another_table(hx: HxEnv) -> None:
    mark = hx.mark()
    with hx.connect("hx-allow", autocommit=True) as c:
        assert c.execute("SELECT email FROM customers ORDER BY id LIMIT 1").fetchone() == (
            "[EMAIL]",
        )
        for sql in (
            "SELECT c.email, s.api_key FROM customers c JOIN secrets s ON s.id = c.id",
            "SELECT * FROM customers WHERE id IN (SELECT id FROM secrets)",
            "SELECT * FROM secrets",
            "WITH x AS (SELECT * FROM secrets) SELECT * FROM customers, x",
            "DELETE FROM customers WHERE false",
        ):
            with pytest.raises(pgerr.InsufficientPrivilege) as e:
                c.execute(sql)
            assert "denied by the target's default action" in str(e.value)
    w = hx.logged_in("hx-allow")
    msgs = w.query("SELECT c.id, s.api_key FROM customers c JOIN secrets s ON s.id = c.id")
    assert [m.tag for m in msgs] == ["E", "Z"]
    assert b"sk-live" not in bytes(w.received)
    # The allow rule is the one that let the plain SELECT through.
    first = hx.exchanges(mark, 1)[0]
    assert (first.status_code, first.rule_id) == (200, R_ALLOW_CUSTOMERS)

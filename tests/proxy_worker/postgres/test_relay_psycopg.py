"""psycopg 3 through the gateway: result formats, cursors, pipelines, COPY, async messages.

Where the protocol flow is intricate (pipelines with an error, server-side cursors) the
same client code runs against the upstream directly and both outcomes are compared.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerr
from psycopg.types.json import Jsonb

from tests.proxy_worker.postgres.conftest import PgEnv

# --- result formats ----------------------------------------------------------------------


def test_it_masks_binary_results(pg: PgEnv) -> None:
    with pg.connect() as c:
        cur = c.cursor(binary=True)
        rows = cur.execute(
            "select id, card_number, email, profile, tags, created, note from customers order by id"
        ).fetchall()
    assert [r[0] for r in rows] == [1, 2, 3]
    for _id, card_number, email, profile, tags, created, note in rows:
        assert card_number is None  # an int8 holding a card number cannot be redacted
        assert email == "[EMAIL]"
        assert profile == {"email": "[EMAIL]", "vip": True}  # still valid jsonb
        assert tags is None  # a binary array holding PII becomes NULL
        assert str(created) == "2024-01-02"
        assert note == "call [PHONE] or mail [EMAIL]"
    (x,) = [x for x in pg.exchanges(2) if x.method == "SELECT"]
    assert x.details["columns"] == [
        "id",
        "card_number",
        "email",
        "profile",
        "tags",
        "created",
        "note",
    ]
    assert x.details["rows"][0][:3] == ["1", None, "[EMAIL]"]
    pg.assert_nothing_raw([x])


def test_it_masks_text_results_of_every_type(pg: PgEnv) -> None:
    with pg.connect() as c:
        rows = c.execute(
            "select card_number, profile, tags, phone, iban from customers order by id"
        ).fetchall()
    for card_number, profile, tags, phone, iban in rows:
        assert card_number is None
        assert profile == {"email": "[EMAIL]", "vip": True}
        assert tags is None  # an array with PII becomes NULL (see rowmask)
        assert phone == "[PHONE]"
        assert iban == "[IBAN]"


def test_it_keeps_values_without_personal_data_exact(pg: PgEnv) -> None:
    query = (
        "select 42::int8, 1.5::float8, 12345.678::numeric, true, 'plain text', "
        "'2024-05-06 07:08:09+00'::timestamptz, '{1,2,3}'::int[], "
        "'{\"a\": [1, null]}'::jsonb, '\\x00ff'::bytea, interval '1 day 2 hours', "
        "'8b0b5b0e-3f4b-4a4e-9d2a-0c1d2e3f4a5b'::uuid, null::text"
    )
    with pg.direct() as d:
        expected_text = d.execute(query).fetchone()
        expected_binary = d.cursor(binary=True).execute(query).fetchone()
    with pg.connect() as c:
        assert c.execute(query).fetchone() == expected_text
        assert c.cursor(binary=True).execute(query).fetchone() == expected_binary


# --- server-side cursors -----------------------------------------------------------------


def _named_cursor_run(conn: psycopg.Connection[Any]) -> list[Any]:
    out: list[Any] = []
    with conn.transaction():
        cur = conn.cursor(name="walk", scrollable=True)
        cur.itersize = 2
        cur.execute("select g, 'u' || g || '@example.com' from generate_series(1, 7) g")
        out.append(cur.fetchmany(3))
        out.append(cur.fetchmany(3))
        cur.scroll(-4)
        out.append(cur.fetchone())
        cur.scroll(0, mode="absolute")
        out.append(cur.fetchmany(2))
        out.append(list(cur))
        cur.close()
    return out


def test_it_serves_named_cursors(pg: PgEnv) -> None:
    with pg.connect() as c:
        got = _named_cursor_run(c)
    with pg.direct() as d:
        want = _named_cursor_run(d)
    masked = [
        [(g, "[EMAIL]") for g, _e in batch] if isinstance(batch, list) else (batch[0], "[EMAIL]")
        for batch in want
    ]
    assert got == masked
    assert got[0] == [(1, "[EMAIL]"), (2, "[EMAIL]"), (3, "[EMAIL]")]
    assert got[2] == (3, "[EMAIL]")
    xs = pg.exchanges()
    fetches = [x for x in xs if x.request_body.upper().startswith(("FETCH", "MOVE"))]
    assert len(fetches) >= 5
    declare = next(x for x in xs if x.request_body.upper().startswith("DECLARE"))
    assert declare.details["command_tag"] == "DECLARE CURSOR"
    first = next(x for x in xs if x.request_body.upper().startswith("FETCH"))
    assert first.details["rows"] == [["1", "[EMAIL]"], ["2", "[EMAIL]"], ["3", "[EMAIL]"]]
    assert "u1@example.com" not in "".join(x.to_json() for x in xs)


def test_it_serves_a_cursor_declared_in_sql(pg: PgEnv) -> None:
    with pg.connect() as c:
        c.execute("declare cc cursor for select id, ssn from customers order by id")
        assert c.execute("fetch 2 from cc").fetchall() == [(1, "[US_SSN]"), (2, "[US_SSN]")]
        assert c.execute("fetch next from cc").fetchall() == [(3, "[US_SSN]")]
        assert c.execute("fetch next from cc").fetchall() == []
        c.execute("close cc")
        c.commit()


# --- pipeline mode -----------------------------------------------------------------------


def _pipeline_run(conn: psycopg.Connection[Any], autocommit: bool) -> list[Any]:
    conn.autocommit = autocommit
    conn.execute("delete from scratch where id between 100 and 199")
    conn.commit()
    outcomes: list[Any] = []
    cursors: list[psycopg.Cursor[Any]] = []
    try:
        with conn.pipeline() as p:
            for i in range(5):
                cursors.append(
                    conn.execute(
                        "insert into scratch (id, email) values (%s, %s) returning id",
                        (100 + i, f"p{i}@example.com"),
                    )
                )
            cursors.append(conn.execute("select email, id from scratch where id = %s", (101,)))
            p.sync()
            cursors.append(conn.execute("select 1 / %s::int", (0,)))  # division by zero
            cursors.append(conn.execute("insert into scratch (id) values (%s)", (150,)))
            cursors.append(conn.execute("select count(*) from scratch"))
    except psycopg.Error as e:
        outcomes.append(("raised", type(e).__name__, e.sqlstate))
    for cur in cursors:
        try:
            outcomes.append(("rows", cur.fetchall()))
        except psycopg.Error as e:
            outcomes.append(("error", type(e).__name__, e.sqlstate))
    if not autocommit:
        conn.rollback()
    after = conn.execute("select count(*) from scratch where id between 100 and 199").fetchone()
    outcomes.append(("after", after))
    conn.commit()
    return outcomes


@pytest.mark.parametrize("autocommit", [True, False])
def test_it_relays_a_pipeline_with_an_error_like_the_server(pg: PgEnv, autocommit: bool) -> None:
    with pg.direct() as d:
        want = _pipeline_run(d, autocommit)
    with pg.connect() as c:
        got = _pipeline_run(c, autocommit)

    def masked(o: Any) -> Any:
        if o[0] == "rows":
            return ("rows", [tuple("[EMAIL]" if "@" in str(v) else v for v in r) for r in o[1]])
        return o

    # psycopg reads pipeline results as they arrive: how many of the statements after
    # the failed one were queued (and fail with "pipeline aborted") before the error
    # surfaced depends on timing, directly as through the gateway. All else must match.
    def settled(outcomes: list[Any]) -> list[Any]:
        return [o for o in outcomes if o != ("error", "ProgrammingError", None)]

    assert settled(got) == [masked(o) for o in settled(want)]
    assert all(o[0] != "error" or o[1] == "ProgrammingError" for o in got)
    assert ("raised", "DivisionByZero", "22012") in got
    xs = pg.exchanges()
    division = [x for x in xs if "1 / $1" in x.request_body]
    assert len(division) == 1 and division[0].details["sqlstate"] == "22012"
    assert division[0].status_code == 400
    # The statements skipped after the error never ran: nothing recorded for them.
    assert not [x for x in xs if "values ($1)" in x.request_body]


def test_it_runs_many_statements_in_a_pipeline(pg: PgEnv) -> None:
    with pg.connect(autocommit=True) as c:
        with c.pipeline():
            curs = [
                c.execute("select %s::int, email from customers where id = %s", (i, 1 + i % 3))
                for i in range(200)
            ]
        got = [cur.fetchall() for cur in curs]
    assert got == [[(i, "[EMAIL]")] for i in range(200)]
    xs = pg.exchanges(200)
    assert len([x for x in xs if x.method == "SELECT"]) == 200
    assert all(x.details["extended"] for x in xs)


# --- prepared statements, executemany, transactions --------------------------------------


def test_it_serves_prepared_statements(pg: PgEnv) -> None:
    with pg.connect() as c:
        for i in (1, 2, 3, 1):
            row = c.execute(
                "select id, email, %s::text from customers where id = %s",
                (f"param-{i}@example.com", i),
                prepare=True,
            ).fetchone()
            assert row == (i, "[EMAIL]", "[EMAIL]")
    xs = [x for x in pg.exchanges(4) if x.method == "SELECT"]
    assert len(xs) == 4
    assert [x.details["parameters"] for x in xs] == [
        ["[EMAIL]", "1"],
        ["[EMAIL]", "2"],
        ["[EMAIL]", "3"],
        ["[EMAIL]", "1"],
    ]
    assert all(x.details["extended"] for x in xs)
    assert "param-1@example.com" not in "".join(x.to_json() for x in xs)


def test_it_serves_executemany(pg: PgEnv) -> None:
    rows = [(i, f"m{i}@example.com", f"{i}.25") for i in range(20)]
    with pg.connect() as c:
        cur = c.cursor()
        cur.executemany("insert into scratch (id, email, amount) values (%s, %s, %s)", rows)
        cur.executemany("select id, email from scratch where id = %s", [(1,), (2,)], returning=True)
        got = []
        while True:
            got.append(cur.fetchall())
            if not cur.nextset():
                break
        c.commit()
    assert got == [[(1, "[EMAIL]")], [(2, "[EMAIL]")]]
    with pg.direct() as d:
        stored = d.execute("select id, email, amount::text from scratch order by id").fetchall()
    assert stored == rows
    inserts = [x for x in pg.exchanges() if x.method == "INSERT"]
    assert len(inserts) == 20
    assert inserts[3].details["parameters"] == ["3", "[EMAIL]", "3.25"]
    assert inserts[3].details["command_tag"] == "INSERT 0 1"


def test_it_keeps_transactions_and_rollbacks(pg: PgEnv) -> None:
    with pg.connect() as c:
        with c.transaction():
            c.execute("insert into scratch (id, note) values (1, 'kept')")
            with pytest.raises(pgerr.UniqueViolation), c.transaction():
                c.execute("insert into scratch (id, note) values (2, 'savepoint')")
                c.execute("insert into scratch (id, note) values (1, 'duplicate')")
            c.execute("insert into scratch (id, note) values (3, 'after savepoint')")
        with pytest.raises(RuntimeError), c.transaction():
            c.execute("insert into scratch (id, note) values (4, 'rolled back')")
            raise RuntimeError("rollback")
        c.execute("insert into scratch (id, note) values (5, 'failed')")
        with pytest.raises(pgerr.DivisionByZero):
            c.execute("select 1/0")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(pgerr.InFailedSqlTransaction):
            c.execute("select 1")
        c.rollback()
        assert c.execute("select 1").fetchone() == (1,)
        c.commit()
    with pg.direct() as d:
        assert d.execute("select id, note from scratch order by id").fetchall() == [
            (1, "kept"),
            (3, "after savepoint"),
        ]
    xs = pg.exchanges()
    tags = [x.details.get("command_tag") for x in xs]
    assert "SAVEPOINT" in tags and "ROLLBACK" in tags and "RELEASE" in tags
    failed = [x for x in xs if x.details.get("sqlstate") == "25P02"]
    assert len(failed) == 1 and failed[0].status_code == 400


# --- COPY --------------------------------------------------------------------------------


def test_it_copies_rows_in_and_out(pg: PgEnv) -> None:
    with pg.connect() as c:
        cur = c.cursor()
        with cur.copy("COPY scratch (id, email, note) FROM STDIN") as copy:
            for i in range(50):
                copy.write_row((i, f"c{i}@example.com", f"line {i}\twith tab"))
        with cur.copy("COPY scratch (id, email, note) TO STDOUT") as copy:
            copy.set_types(["int4", "text", "text"])
            out = list(copy.rows())
        with cur.copy(
            "COPY (select id, email, ssn from customers order by id) TO STDOUT (FORMAT csv)"
        ) as copy:
            csv_rows = [bytes(b) for b in copy]  # psycopg parses text and binary only
        c.commit()
    assert sorted(out) == [(i, "[EMAIL]", f"line {i}\twith tab") for i in range(50)]
    assert csv_rows == [b"1,[EMAIL],[US_SSN]\n", b"2,[EMAIL],[US_SSN]\n", b"3,[EMAIL],[US_SSN]\n"]
    with pg.direct() as d:
        assert d.execute("select count(*), min(email) from scratch").fetchone() == (
            50,
            "c0@example.com",
        )
    xs = [x for x in pg.exchanges(5) if x.method != "TRANSACTION"]
    assert xs[0].details["copy"] == {"direction": "in", "format": "text", "rows": 50}
    assert xs[1].details["copy"] == {"direction": "out", "format": "text", "rows": 50}
    assert xs[2].details["copy"] == {"direction": "out", "format": "csv", "rows": 3}
    assert "c0@example.com" not in "".join(x.to_json() for x in xs)


def test_it_copies_binary_in_and_out(pg: PgEnv) -> None:
    with pg.connect() as c:
        cur = c.cursor()
        with cur.copy("COPY scratch (id, email, note) FROM STDIN (FORMAT binary)") as copy:
            copy.set_types(["int4", "text", "text"])
            for i in range(5):
                copy.write_row((i, f"b{i}@example.com", "plain"))
        with cur.copy("COPY scratch (id, note) TO STDOUT (FORMAT binary)") as copy:
            copy.set_types(["int4", "text"])
            out = sorted(copy.rows())
        c.commit()
    assert out == [(i, "plain") for i in range(5)]
    with pg.direct() as d:
        assert d.execute("select email from scratch where id = 3").fetchone() == ("b3@example.com",)


def test_it_aborts_a_copy_in_on_the_clients_error(pg: PgEnv) -> None:
    with pg.connect() as c:
        cur = c.cursor()
        with pytest.raises(ZeroDivisionError), cur.copy("COPY scratch (id) FROM STDIN") as copy:
            copy.write_row((1,))
            raise ZeroDivisionError
        c.rollback()
        assert c.execute("select count(*) from scratch").fetchone() == (0,)
    xs = pg.exchanges()
    copy_x = next(x for x in xs if x.method in ("COPY", "INSERT"))
    assert copy_x.status_code == 400 and copy_x.details["sqlstate"] == "57014"


# --- notifications, notices, errors ------------------------------------------------------


def test_it_masks_notification_payloads(pg: PgEnv) -> None:
    with pg.connect(autocommit=True) as listener, pg.connect(autocommit=True) as sender:
        listener.execute("listen inbox")
        sender.execute("notify inbox, 'new mail from jane.roe@example.com'")
        sender.execute("select pg_notify('inbox', 'ssn 123-45-6789')")
        got = []
        for n in listener.notifies(timeout=5, stop_after=2):
            got.append((n.channel, n.payload))
    assert got == [("inbox", "new mail from [EMAIL]"), ("inbox", "ssn [US_SSN]")]
    pg.assert_nothing_raw()


def test_it_masks_notices(pg: PgEnv) -> None:
    notices: list[tuple[str, str | None]] = []
    with pg.connect(autocommit=True) as c:
        c.add_notice_handler(lambda d: notices.append((d.message_primary, d.message_detail)))
        c.execute(
            "do $$ begin raise notice 'mail %', (select email from customers where id = 1) "
            "using detail = 'card 4111111111111111'; end $$"
        )
        assert c.execute("select notice_pii()").fetchone() == (1,)
    assert notices == [
        ("mail [EMAIL]", "card [CREDIT_CARD]"),
        ("customer [EMAIL] has ssn [US_SSN]", None),
    ]
    pg.assert_nothing_raw()


def test_it_masks_an_error_detail(pg: PgEnv) -> None:
    with pg.connect() as c:
        with pytest.raises(pgerr.UniqueViolation) as e:
            c.execute("insert into people (email) values (%s)", ("jane.roe@example.com",))
        c.rollback()
    assert e.value.diag.message_detail == "Key (email)=([EMAIL]) already exists."
    assert e.value.diag.constraint_name == "people_email_key"
    (x,) = [x for x in pg.exchanges() if x.method == "INSERT"]
    assert x.status_code == 400 and x.details["sqlstate"] == "23505"
    assert x.details["parameters"] == ["[EMAIL]"]
    pg.assert_nothing_raw()


def test_it_masks_an_error_message(pg: PgEnv) -> None:
    with pg.connect() as c, pytest.raises(pgerr.InvalidTextRepresentation) as e:
        c.execute("select (select ssn from customers where id = 1)::int")
    assert str(e.value).splitlines()[0] == 'invalid input syntax for type integer: "[US_SSN]"'


# --- async-ish: cancel, big values -------------------------------------------------------


def test_it_cancels_a_running_statement(pg: PgEnv) -> None:
    with pg.connect() as c:
        timer = threading.Timer(0.5, c.cancel)
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(pgerr.QueryCanceled):
            c.execute("select pg_sleep(20)")
        assert time.monotonic() - t0 < 10
        c.rollback()
        assert c.execute("select 1").fetchone() == (1,)


def test_it_relays_large_values(pg: PgEnv) -> None:
    big = "x" * 3_000_000
    with pg.connect() as c:
        (n,) = c.execute("select length(%s::text)", (big,)).fetchone()  # type: ignore[misc]
        assert n == len(big)
        (v,) = c.execute("select repeat('ab', 1000000)").fetchone()  # type: ignore[misc]
        assert v == "ab" * 1_000_000
        (j,) = c.execute("select %s::jsonb", (Jsonb({"k": ["a@example.com"] * 1000}),)).fetchone()  # type: ignore[misc]
        assert j == {"k": ["[EMAIL]"] * 1000}
    xs = pg.exchanges()
    assert all(len(x.request_body) < 300_000 for x in xs)
    json.dumps([x.details for x in xs])


def test_it_runs_prepared_statements_in_a_pipeline_across_syncs(pg: PgEnv) -> None:
    with pg.connect(autocommit=True, prepare_threshold=0) as c:
        with c.pipeline() as p:
            curs = []
            for i in range(30):
                curs.append(c.execute("select %s::int, email from customers where id = 1", (i,)))
                if i % 5 == 4:
                    p.sync()
        got = [cur.fetchall() for cur in curs]
    assert got == [[(i, "[EMAIL]")] for i in range(30)]
    xs = [x for x in pg.exchanges(30) if x.method == "SELECT"]
    assert len(xs) == 30 and all(x.status_code == 200 for x in xs)


def test_it_relays_an_error_in_the_middle_of_a_result(pg: PgEnv) -> None:
    sql = "select g, 'u' || g || '@example.com', 10 / (5 - g) from generate_series(1, 9) g"
    with pg.connect(autocommit=True) as c:
        with pytest.raises(pgerr.DivisionByZero):
            c.execute(sql)
        rows = []
        with pytest.raises(pgerr.DivisionByZero):
            for row in c.cursor().stream(sql):
                rows.append(row)
        assert c.execute("select 1").fetchone() == (1,)
    assert rows == [(g, "[EMAIL]", 10 // (5 - g)) for g in range(1, 5)]
    xs = [x for x in pg.exchanges() if "generate_series" in x.request_body]
    assert [x.status_code for x in xs] == [400, 400]
    assert xs[1].details["rows"][0] == ["1", "[EMAIL]", "2"]


def test_it_relays_a_copy_in_that_fails_at_the_server(pg: PgEnv) -> None:
    with pg.connect() as c:
        cur = c.cursor()
        with (
            pytest.raises(pgerr.UniqueViolation) as e,
            cur.copy("COPY people (email) FROM STDIN") as copy,
        ):
            for i in range(2000):
                copy.write_row((f"x{i}@example.com",))
            copy.write_row(("jane.roe@example.com",))
        assert e.value.diag.message_detail == "Key (email)=([EMAIL]) already exists."
        c.rollback()
        assert c.execute("select count(*) from people").fetchone() == (1,)
    (x,) = [x for x in pg.exchanges() if x.details.get("copy")]
    assert x.status_code == 400 and x.details["sqlstate"] == "23505"
    pg.assert_nothing_raw()

"""The message relay against message sequences real drivers rarely send (raw frames).

Prepared statements, portals and cursors are named objects of the server session; the
relay keeps its own view of them to know what a ``Bind``, ``Execute``, ``EXECUTE`` or
``FETCH`` runs. These tests check that view cannot be made to differ from the server's:
SQL and protocol share one namespace, failed or skipped messages change nothing,
pipelined messages meet the state their predecessors left, and rows the relay cannot
attribute are never relayed unmasked.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proxy_worker.postgres import protocol as pq
from tests.proxy_worker.postgres.conftest import PgEnv
from tests.proxy_worker.postgres.harness import sql_rule
from tests.proxy_worker.postgres.rawclient import RawClient, errors, rows, tags

NO_DELETE = [sql_rule(1, "No deletes", "deny", statement_kinds=["DELETE"])]


@pytest.fixture
def raw(pg: PgEnv) -> Iterator[RawClient]:
    c = RawClient(pg.gw.pg_port, pg.gw.agent_name, pg.gw.token, "crm", pg.gw.ca_file)
    yield c
    c.close()


def _audit_rows(pg: PgEnv) -> int:
    with pg.direct() as d:
        return d.execute("select count(*) from audit_log").fetchone()[0]  # type: ignore[index]


def _seed_audit(pg: PgEnv) -> None:
    with pg.direct(autocommit=True) as d:
        d.execute("insert into audit_log (what) values ('keep me')")


# --- one namespace for SQL and protocol objects --------------------------------------------


def test_it_refuses_execute_of_a_sql_cursor(pg: PgEnv, raw: RawClient) -> None:
    raw.query("declare cur cursor with hold for select email, ssn from customers")
    raw.send(pq.build_execute("cur"), pq.build_sync())
    got = raw.until_ready()
    assert tags(got) == "EZ"
    assert errors(got) == [
        "0A000 Gatehouse runs the cursor 'cur' only through FETCH, not the Execute message"
    ]
    # FETCH still works, masked.
    assert rows(raw.query("fetch 1 from cur")) == [["[EMAIL]", "[US_SSN]"]]
    pg.assert_nothing_raw()


def test_it_refuses_execute_of_an_unknown_portal(raw: RawClient) -> None:
    raw.send(pq.build_execute("nope"), pq.build_sync())
    got = raw.until_ready()
    assert errors(got) == ['34000 portal "nope" does not exist']
    assert rows(raw.query("select 1")) == [["1"]]


def test_it_describes_again_after_a_portal_is_replaced(pg: PgEnv, raw: RawClient) -> None:
    raw.query("begin")
    raw.send(
        pq.build_parse("", "select 1.5::float8 as f", ()),
        pq.build_bind("P", "", (), (), ()),
        pq.build_describe("P", "P"),
        pq.build_execute("P", 1),
        pq.build_sync(),
    )
    assert rows(raw.until_ready()) == [["1.5"]]
    # The portal is closed and its name reused by a cursor over personal data.
    raw.query('close "P"; declare "P" cursor for select email, ssn from customers')
    raw.send(pq.build_execute("P"), pq.build_sync())
    got = raw.until_ready()
    assert not rows(got)
    assert errors(got)[0].startswith("0A000")
    raw.query("rollback")
    pg.assert_nothing_raw()


def test_it_masks_a_suspended_portal_described_again(pg: PgEnv, raw: RawClient) -> None:
    raw.query("begin")
    raw.send(
        pq.build_parse("", "select id, email from customers order by id", ()),
        pq.build_bind("P", "", (), (), ()),
        pq.build_execute("P", 1),
        pq.build_sync(),
    )
    assert rows(raw.until_ready()) == [["1", "[EMAIL]"]]
    raw.send(pq.build_execute("P", 1), pq.build_sync())
    assert rows(raw.until_ready()) == [["2", "[EMAIL]"]]
    raw.send(pq.build_execute("P", 0), pq.build_sync())
    got = raw.until_ready()
    assert rows(got) == [["3", "[EMAIL]"]]
    raw.query("commit")
    (x,) = [x for x in pg.exchanges(3) if x.method == "SELECT"]
    assert x.details["row_count"] == 3 and x.details["command_tag"] == "SELECT 1"


def test_it_sees_deallocate_then_prepare(pg: PgEnv, raw: RawClient) -> None:
    pg.policy(NO_DELETE)
    _seed_audit(pg)
    raw.send(pq.build_parse("p", "select 1", ()), pq.build_sync())
    raw.until_ready()
    raw.query("deallocate p")
    assert not errors(raw.query("prepare p as delete from audit_log"))
    got = raw.query("execute p")
    assert errors(got) == ["42501 denied by access rule 'No deletes'"]
    raw.send(pq.build_bind("", "p", (), (), ()), pq.build_execute(""), pq.build_sync())
    assert errors(raw.until_ready()) == ["42501 denied by access rule 'No deletes'"]
    assert _audit_rows(pg) == 1


def test_it_sees_deallocate_all(pg: PgEnv, raw: RawClient) -> None:
    pg.policy(NO_DELETE)
    _seed_audit(pg)
    raw.send(pq.build_parse("p", "select 1", ()), pq.build_sync())
    raw.until_ready()
    raw.query("deallocate all")
    raw.query("prepare p as delete from audit_log")
    assert errors(raw.query("execute p")) == ["42501 denied by access rule 'No deletes'"]
    assert _audit_rows(pg) == 1


def test_it_sees_a_protocol_close_of_a_sql_statement(pg: PgEnv, raw: RawClient) -> None:
    pg.policy(NO_DELETE)
    _seed_audit(pg)
    raw.query("prepare p as select 1")
    raw.send(pq.build_close("S", "p"), pq.build_sync())
    assert tags(raw.until_ready()) == "3Z"
    raw.send(pq.build_parse("p", "delete from audit_log", ()), pq.build_sync())
    raw.until_ready()
    assert errors(raw.query("execute p")) == ["42501 denied by access rule 'No deletes'"]
    assert _audit_rows(pg) == 1


# --- failed and skipped messages change nothing ------------------------------------------


def test_it_keeps_a_statement_whose_redefinition_failed(pg: PgEnv, raw: RawClient) -> None:
    pg.policy(NO_DELETE)
    _seed_audit(pg)
    raw.send(pq.build_parse("s", "select email from customers where id = 1", ()), pq.build_sync())
    raw.until_ready()
    # The server refuses a second Parse of the same name and keeps the first statement.
    raw.send(pq.build_parse("s", "select 1", ()), pq.build_sync())
    assert errors(raw.until_ready()) == ['42P05 prepared statement "s" already exists']
    raw.send(
        pq.build_bind("", "s", (), (), ()),
        pq.build_describe("P", ""),
        pq.build_execute(""),
        pq.build_sync(),
    )
    got = raw.until_ready()
    assert rows(got) == [["[EMAIL]"]]
    (x,) = [x for x in pg.exchanges() if x.details.get("command_tag") == "SELECT 1"]
    assert x.request_body == "select email from customers where id = 1"


def test_it_keeps_a_portal_whose_rebinding_failed(pg: PgEnv, raw: RawClient) -> None:
    raw.query("begin")
    raw.query("declare c cursor for select lower(name) as n from customers order by id")
    # Binding a protocol portal of the cursor's name fails: the cursor stays the only "c".
    raw.send(
        pq.build_parse("", "select 1 as x", ()),
        pq.build_bind("c", "", (), (), ()),
        pq.build_sync(),
    )
    assert errors(raw.until_ready()) == ['42P03 cursor "c" already exists']
    raw.query("rollback")
    raw.query("declare c cursor with hold for select lower(name) as n from customers")
    raw.send(pq.build_execute("c"), pq.build_sync())
    got = raw.until_ready()
    assert not rows(got) and errors(got)[0].startswith("0A000")
    assert rows(raw.query("fetch 1 from c")) == [["[REDACTED]"]]


def test_it_forgets_statements_skipped_after_an_error(pg: PgEnv, raw: RawClient) -> None:
    raw.send(
        pq.build_parse("", "select 1/0", ()),
        pq.build_bind("", "", (), (), ()),
        pq.build_execute(""),
        pq.build_parse("later", "select email from customers", ()),
        pq.build_sync(),
    )
    assert errors(raw.until_ready()) == ["22012 division by zero"]
    raw.send(pq.build_bind("", "later", (), (), ()), pq.build_execute(""), pq.build_sync())
    got = raw.until_ready()
    assert errors(got) == ["26000 prepared statement 'later' does not exist"]


# --- pipelined messages meet the state their predecessors left ---------------------------


def test_it_waits_for_pipelined_simple_queries(pg: PgEnv, raw: RawClient) -> None:
    pg.policy(NO_DELETE)
    _seed_audit(pg)
    raw.send(pq.build_parse("q", "select 1", ()), pq.build_sync())
    raw.until_ready()
    raw.send(
        pq.build_query("deallocate q; prepare q as delete from audit_log"),
        pq.build_query("execute q"),
    )
    first, second = raw.until_ready(), raw.until_ready()
    assert not errors(first)
    assert errors(second) == ["42501 denied by access rule 'No deletes'"]
    assert _audit_rows(pg) == 1


def test_it_waits_for_a_pipelined_failed_prepare(pg: PgEnv, raw: RawClient) -> None:
    raw.send(
        pq.build_parse("p", "select lower(name) as n from customers order by id", ()),
        pq.build_sync(),
    )
    raw.until_ready()
    # PREPARE fails (the name exists): the server keeps the first statement.
    raw.send(pq.build_query("prepare p as select 1 as n"), pq.build_query("execute p"))
    first, second = raw.until_ready(), raw.until_ready()
    assert errors(first) == ['42P05 prepared statement "p" already exists']
    assert rows(second) == [["[REDACTED]"]] * 3


def test_it_waits_for_pipelined_syncs(pg: PgEnv, raw: RawClient) -> None:
    pg.policy(NO_DELETE)
    _seed_audit(pg)
    raw.send(pq.build_parse("s", "select 1", ()), pq.build_sync())
    raw.until_ready()
    raw.send(
        pq.build_close("S", "s"),
        pq.build_parse("s", "delete from audit_log", ()),
        pq.build_sync(),
        pq.build_bind("", "s", (), (), ()),
        pq.build_execute(""),
        pq.build_sync(),
    )
    first, second = raw.until_ready(), raw.until_ready()
    assert tags(first) == "31Z"
    assert errors(second) == ["42501 denied by access rule 'No deletes'"]
    assert _audit_rows(pg) == 1


def test_it_keeps_portals_of_later_segments(raw: RawClient) -> None:
    raw.send(
        pq.build_parse("", "select 1", ()),
        pq.build_bind("", "", (), (), ()),
        pq.build_execute(""),
        pq.build_sync(),
        pq.build_parse("", "begin", ()),
        pq.build_bind("", "", (), (), ()),
        pq.build_execute(""),
        pq.build_parse("", "select g from generate_series(1, 3) g", ()),
        pq.build_bind("cur", "", (), (), ()),
        pq.build_execute("cur", 1),
        pq.build_sync(),
        pq.build_execute("cur", 0),
        pq.build_sync(),
    )
    first, second, third = raw.until_ready(), raw.until_ready(), raw.until_ready()
    assert rows(first) == [["1"]]
    assert rows(second) == [["1"]] and "s" in tags(second)
    assert rows(third) == [["2"], ["3"]]
    raw.query("commit")


def test_it_relays_a_pipeline_without_waiting(pg: PgEnv, raw: RawClient) -> None:
    frames = []
    for i in range(50):
        frames += [
            pq.build_parse("", "select $1::int, email from customers where id = 1", ()),
            pq.build_bind("", "", (str(i).encode(),), (), ()),
            pq.build_describe("P", ""),
            pq.build_execute(""),
        ]
    raw.send(*frames, pq.build_sync())
    got = raw.until_ready()
    assert rows(got) == [[str(i), "[EMAIL]"] for i in range(50)]
    assert len(pg.exchanges(50)) == 50


def test_it_records_a_portal_suspended_then_closed_by_sync(pg: PgEnv, raw: RawClient) -> None:
    raw.send(
        pq.build_parse("", "select g from generate_series(1, 5) g", ()),
        pq.build_bind("", "", (), (), ()),
        pq.build_execute("", 2),
        pq.build_sync(),
    )
    got = raw.until_ready()
    assert rows(got) == [["1"], ["2"]] and "s" in tags(got)
    (x,) = pg.exchanges(1)
    assert x.details["portal_suspended"] is True
    assert x.details["row_count"] == 2
    raw.send(pq.build_execute("", 0), pq.build_sync())
    assert errors(raw.until_ready()) == ['34000 portal "" does not exist']


def test_it_masks_rows_a_rule_adds(pg: PgEnv, raw: RawClient) -> None:
    """A rule's ``DO ALSO SELECT`` answers a simple-protocol INSERT with rows of their own
    description (masked); the extended protocol discards them."""
    with pg.direct(autocommit=True) as d:
        d.execute("create table if not exists ruled (id int)")
        d.execute(
            "create or replace rule ruled_leak as on insert to ruled do also "
            "select email from customers"
        )
    try:
        got = raw.query("insert into ruled values (1)")
        assert tags(got) == "TDDDCZ" and rows(got) == [["[EMAIL]"]] * 3
        raw.send(
            pq.build_parse("", "insert into ruled values (2)", ()),
            pq.build_bind("", "", (), (), ()),
            pq.build_describe("P", ""),
            pq.build_execute(""),
            pq.build_sync(),
        )
        assert tags(raw.until_ready()) == "12nCZ"
    finally:
        with pg.direct(autocommit=True) as d:
            d.execute("drop table ruled")
    pg.assert_nothing_raw()

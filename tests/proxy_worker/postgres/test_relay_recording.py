"""What the relay records: one exchange per statement, one session per connection,
nothing unmasked in any field."""

from __future__ import annotations

import re

import psycopg
import pytest
from psycopg import errors as pgerr

from tests.proxy_worker.postgres.conftest import RAW_VALUES, PgEnv
from tests.proxy_worker.postgres.harness import CUSTOMERS, DEFAULT_MASKING, sql_rule


def test_it_records_each_statement_of_a_query(pg: PgEnv) -> None:
    with pg.connect(autocommit=True, application_name="rec-1") as c:
        c.execute("select id, email from customers order by id; select 2 as two; select 3")
    xs = pg.exchanges(3)
    assert [x.details["statement_index"] for x in xs] == [0, 1, 2]
    assert [x.request_body for x in xs] == [
        "select id, email from customers order by id",
        "select 2 as two",
        "select 3",
    ]
    assert [x.details["extended"] for x in xs] == [False] * 3
    first = xs[0]
    assert first.method == "SELECT" and first.status_code == 200 and first.decision == "allowed"
    assert first.details["columns"] == ["id", "email"]
    assert first.details["rows"] == [["1", "[EMAIL]"], ["2", "[EMAIL]"], ["3", "[EMAIL]"]]
    assert first.details["row_count"] == 3 and first.details["rows_truncated"] is False
    assert first.details["command_tag"] == "SELECT 3"
    assert first.details["tables"] == ["customers"]
    assert first.response_body.splitlines()[-1] == "(3 rows)"
    assert "[EMAIL]" in first.response_body
    assert first.protocol == "postgres"
    assert first.url.startswith("postgresql://") and first.url.endswith("/" + pg.db.name)
    assert first.request_headers["application_name"] == "rec-1"
    assert first.request_headers["user"] == pg.gw.agent_name
    assert first.request_headers["database"] == "crm"
    assert first.request_headers["tls"].startswith("TLS")
    assert any(f["type"] == "EMAIL" for f in first.response_findings)


def test_it_keeps_one_session_per_connection(pg: PgEnv) -> None:
    for _ in range(2):
        with pg.connect(autocommit=True) as c:
            c.execute("select 1")
            c.execute("select 2")
    xs = pg.exchanges(4)
    keys = [x.session_key for x in xs]
    assert keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2]
    assert all(re.fullmatch(r"pg:[0-9a-f-]{36}", k) for k in keys)


def test_it_records_extended_statements_with_masked_parameters(pg: PgEnv) -> None:
    with pg.connect(autocommit=True) as c:
        c.execute(
            "select %s::text, %s::int, %s::text",
            ("mail jane.roe@example.com", 7, None),
        )
        c.execute("select %b::text", ("ssn 123-45-6789",))  # a binary parameter
    x, y = pg.exchanges(2)
    assert x.details["extended"] is True
    assert x.details["parameters"] == ["mail [EMAIL]", "7", None]
    assert x.request_body == "select $1::text, $2::int, $3::text"
    assert y.details["parameters"] == ["ssn [US_SSN]"]
    pg.assert_nothing_raw()


def test_it_records_errors_and_refusals(pg: PgEnv) -> None:
    pg.policy([sql_rule(1, "No secrets", "deny", tables=["secrets"])])
    with pg.connect(autocommit=True) as c:
        with pytest.raises(pgerr.UndefinedTable):
            c.execute("select * from nowhere")
        with pytest.raises(pgerr.InsufficientPrivilege):
            c.execute("select * from secrets")
        with pytest.raises(pgerr.SyntaxError):
            c.execute("selec 1")
    bad, denied, unparseable = pg.exchanges(3)
    assert (bad.status_code, bad.details["sqlstate"]) == (400, "42P01")
    assert bad.error == 'relation "nowhere" does not exist'
    assert bad.decision == "allowed"
    assert (denied.status_code, denied.details["sqlstate"], denied.decision) == (
        403,
        "42501",
        "denied",
    )
    assert denied.rule_id == 1
    assert (unparseable.status_code, unparseable.details["sqlstate"]) == (403, "42601")


def test_it_records_nothing_for_an_empty_query(pg: PgEnv) -> None:
    with pg.connect(autocommit=True) as c:
        c.execute("-- nothing")
        c.execute("select 1")
    xs = pg.exchanges(1)
    assert [x.request_body for x in xs] == ["select 1"]


def test_it_records_nothing_unmasked(pg: PgEnv) -> None:
    """Every kind of statement and message with the customers' data in it."""
    name, email, phone, ssn, card, iban = CUSTOMERS[0]
    with pg.connect(autocommit=True) as c:
        c.add_notice_handler(lambda d: None)
        c.execute("select * from customers")
        c.execute("select name, email, phone, ssn, card, iban, note, profile from customers")
        c.execute(f"select '{email}' as e, '{ssn}' as s, '{card}' as k, '{iban}' as i")
        c.execute("select %s, %s, %s, %s", (email, phone, ssn, iban))
        c.execute(f'select 1 as "{email}"')
        c.execute(f"do $$ begin raise notice '%', '{email}'; end $$")
        with pytest.raises(pgerr.UniqueViolation):
            c.execute("insert into people (email) values (%s)", (email,))
        with pytest.raises(pgerr.InvalidTextRepresentation):
            c.execute(f"select '{ssn}'::int")
        with c.cursor().copy("COPY (select email, ssn, card from customers) TO STDOUT") as cp:
            list(cp)
        with c.cursor().copy("COPY scratch (id, email, note) FROM STDIN") as cp:
            cp.write_row((1, email, f"call {phone}"))
        c.execute("listen ch")
        c.execute(f"notify ch, '{email}'")
        cur = c.cursor(binary=True)
        cur.execute("select email, card_number, profile, tags from customers")
    xs = pg.exchanges()
    assert len(xs) >= 12
    pg.assert_nothing_raw(xs)
    for x in xs:
        assert name not in x.to_json() or x.method == "INSERT", x.request_body
    assert set(RAW_VALUES) >= {email, ssn}


def test_it_records_a_connection_it_cannot_open_upstream(pg: PgEnv) -> None:
    pg.policy(target={"port": 1})
    with pytest.raises(psycopg.OperationalError):
        pg.connect()
    (x,) = pg.exchanges(1)
    assert x.status_code == 502 and x.details["sqlstate"].startswith("08")


def test_it_records_the_application_name_the_server_reports(pg: PgEnv) -> None:
    with pg.connect(autocommit=True, application_name="first") as c:
        c.execute("select 1")
        c.execute("set application_name = 'second'")
        c.execute("select 2")
    xs = pg.exchanges(3)
    assert [x.request_headers["application_name"] for x in xs] == ["first", "first", "second"]


def test_a_masking_rule_added_mid_connection_masks_the_next_record_of_the_same_text(
    pg: PgEnv,
) -> None:
    """A policy published while a connection is open applies to its next record: the same
    prepared statement text is recorded raw before the rule exists and masked after."""
    sql = "select 'ACME-4821' as code where %s::int > 0"
    with pg.connect(autocommit=True) as c:
        c.execute(sql, (1,), prepare=True)
        c.execute(sql, (2,), prepare=True)
        codes = {
            "id": 9,
            "name": "Account codes",
            "entity_types": [],
            "field_names": [],
            "custom_pattern": r"ACME-\d{4}",
            "strategy": "redact",
            "direction": "both",
            "target_ids": None,
        }
        pg.policy(masking=[*DEFAULT_MASKING, codes])
        c.execute(sql, (3,), prepare=True)
    xs = [x for x in pg.exchanges(3) if "as code" in x.request_body]
    assert [x.details["parameters"] for x in xs] == [["1"], ["2"], ["3"]]
    assert ["ACME-4821" in x.request_body for x in xs] == [True, True, False]
    assert "ACME-4821" not in xs[2].to_json()


def test_exchange_ids_are_version_4_uuids_unique_in_the_worker() -> None:
    import uuid

    from proxy_worker.postgres.record import new_exchange_id

    ids = [new_exchange_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for x in ids[:100] + ids[-100:]:
        u = uuid.UUID(x)
        assert (u.version, u.variant, str(u)) == (4, uuid.RFC_4122, x)
    assert len({x[:19] for x in ids}) == 1  # one random head per process

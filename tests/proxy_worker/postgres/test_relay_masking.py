"""Result masking against queries written to get personal data past it.

Columns are known by every name they have (the output name, the table column behind
it through views, the columns their expression mentions), and detectors look at every
value, so aliases, views over views, subqueries, CTEs, functions and JSON conversions
all come out masked. The big-result test checks that a 200,000-row stream is complete,
masked row by row, and relayed in bounded memory (the 10-million-row measurement is
``bench/pg_memory.py``).
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.proxy_worker.postgres.conftest import PgEnv


def _all(pg: PgEnv, sql: str) -> list[tuple[object, ...]]:
    with pg.connect(autocommit=True) as c:
        return c.execute(sql).fetchall()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select email as x from customers order by id", [("[EMAIL]",)] * 3),
        ("select lower(name) as n from customers order by id", [("[REDACTED]",)] * 3),
        ("select name || '' as whatever from customers order by id", [("[REDACTED]",)] * 3),
        ("select upper(n) from (select name as n from customers) s", [("[REDACTED]",)] * 3),
        (
            "select * from customer_contacts order by id",
            [
                (1, "[EMAIL]", "[REDACTED]"),
                (2, "[EMAIL]", "[REDACTED]"),
                (3, "[EMAIL]", "[REDACTED]"),
            ],
        ),
        (
            "select * from contact_list order by id",
            [(1, "[EMAIL]"), (2, "[EMAIL]"), (3, "[EMAIL]")],
        ),
        ("select reach as r from contact_list where id = 2", [("[EMAIL]",)]),
        (
            "with t as (select name as a, email as b from customers) "
            "select a as x, b as y from t order by 1",
            [("[REDACTED]", "[EMAIL]")] * 3,
        ),
        (
            "with t(a) as (select lower(name) from customers) select a from t",
            [("[REDACTED]",)] * 3,
        ),
        (
            "select (select name from customers c2 where c2.id = c.id) as q "
            "from customers c order by id",
            [("[REDACTED]",)] * 3,
        ),
        ("select get_email(1)", [("[EMAIL]",)]),
        ("select get_email(id) as v from customers order by id", [("[EMAIL]",)] * 3),
        ("select 'write to ' || email from customers where id = 3", [("write to [EMAIL]",)]),
        (
            "select ssn from customers union all select 'x' order by 1",
            [("[US_SSN]",)] * 3 + [("x",)],
        ),
        ("select string_agg(email, ';') from customers", [("[EMAIL];[EMAIL];[EMAIL]",)]),
        ("select name from people", [("[REDACTED]",)]),
    ],
)
def test_it_masks_hostile_queries(pg: PgEnv, sql: str, expected: list[tuple[object, ...]]) -> None:
    assert _all(pg, sql) == expected
    pg.assert_nothing_raw()


@pytest.mark.parametrize(
    "sql",
    [
        "select c from customers c where id = 1",
        "select c::text from customers c where id = 1",
        "select concat(c) from customers c where id = 1",
        "select format('%s', c) from customers c where id = 1",
        "select row_to_json(c) from customers c where id = 1",
        "select row_to_json(c.*)::text from customers c where id = 1",
        "select row_to_json(c) -> 'name' from customers c where id = 1",
        "select jsonb_build_object('x', row_to_json(c) ->> 'name') from customers c where id = 1",
        "select x from (select c as x from customers c) s where (x).id = 1",
        "with t as (select * from customers) select t::text from t where id = 1",
        "select (select c::text from customers c where id = 1)",
        "select array_agg(c)::text from customers c",
        "select json_agg(c) from customers c",
    ],
)
def test_it_masks_whole_rows(pg: PgEnv, sql: str) -> None:
    """A value holding whole rows is known by every column name of the relations read:
    the field rule on ``name`` masks it as a whole (it cannot be masked field by field:
    ``->> 'name'`` under another key would get through)."""
    ((value,),) = _all(pg, sql)
    assert value == "[REDACTED]"
    pg.assert_nothing_raw()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select (c).name from customers c where id = 1", [("[REDACTED]",)]),
        ("select (c).id from customers c where id = 1", [(1,)]),
        ("select count(*) from customers c", [(3,)]),
        ("select *, 1 as one from customers where id = 1", None),
        ("select json_agg(c.email) from customers c", [(["[EMAIL]"] * 3,)]),
    ],
)
def test_it_does_not_mask_more_than_whole_rows(
    pg: PgEnv, sql: str, expected: list[tuple[object, ...]] | None
) -> None:
    got = _all(pg, sql)
    if expected is not None:
        assert got == expected
    else:
        row = got[0]
        assert row[:3] == (1, "[REDACTED]", "[EMAIL]") and row[-1] == 1


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "COPY (select * from customers where id = 1) TO STDOUT",
            "1\t[REDACTED]\t[EMAIL]\t[PHONE]\t[US_SSN]\t[CREDIT_CARD]\t[IBAN]\t"
            'call [PHONE] or mail [EMAIL]\t\\N\t{"vip":true,"email":"[EMAIL]"}\t\\N\t2024-01-02\n',
        ),
        (
            "COPY (select c.* from public.customers c where id = 2) TO STDOUT (FORMAT csv)",
            "2,[REDACTED],[EMAIL],[PHONE],[US_SSN],[CREDIT_CARD],[IBAN],call [PHONE] or mail "
            '[EMAIL],,"{""vip"":true,""email"":""[EMAIL]""}",,2024-01-02\n',
        ),
        (
            "COPY (select lower(name), c::text from customers c where id = 1) TO STDOUT",
            "[REDACTED]\t[REDACTED]\n",
        ),
        (
            "COPY (select x from (select name as x from customers) s limit 1) TO STDOUT",
            "[REDACTED]\n",
        ),
        ("COPY (select id, email from customers where id = 3) TO STDOUT", "3\t[EMAIL]\n"),
        (
            "COPY (select * from customer_contacts where id = 1) TO STDOUT",
            "1\t[EMAIL]\t[REDACTED]\n",
        ),
    ],
)
def test_it_masks_copy_of_a_query(pg: PgEnv, sql: str, expected: str) -> None:
    with pg.connect(autocommit=True) as c, c.cursor().copy(sql) as copy:
        got = b"".join(bytes(b) for b in copy).decode()
    assert got == expected
    pg.assert_nothing_raw()


def test_it_masks_explain_and_show_output(pg: PgEnv) -> None:
    rows = _all(
        pg, "explain (costs off) select * from customers where email = 'jane.roe@example.com'"
    )
    plan = "\n".join(str(r[0]) for r in rows)
    assert "[EMAIL]" in plan and "jane.roe@example.com" not in plan


def test_it_streams_a_huge_result_masked_in_bounded_memory(pg: PgEnv) -> None:
    n = 200_000
    peak = [pg.worker_rss_kb()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], pg.worker_rss_kb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    count = 0
    try:
        with pg.connect(autocommit=True) as c:
            cur = c.cursor()
            for g, email, note in cur.stream(
                "select g, 'user' || g || '@example.com', "
                "'ssn 123-45-' || lpad((g % 10000)::text, 4, '0') "
                f"from generate_series(1, {n}) g"
            ):
                count += 1
                assert g == count
                assert email == "[EMAIL]", email
                assert note in ("ssn [US_SSN]", "ssn 123-45-0000"), note
            with c.transaction():
                named = c.cursor(name="big")
                named.itersize = 5000
                named.execute(
                    f"select g, 'u' || g || '@example.org' from generate_series(1, {n}) g"
                )
                seen = 0
                for g, email in named:
                    seen += 1
                    assert (g, email) == (seen, "[EMAIL]")
    finally:
        stop.set()
        sampler.join(5)
    assert count == n and seen == n
    assert peak[0] < 300 * 1024, f"worker RSS peaked at {peak[0] // 1024} MB"
    xs = pg.exchanges()
    (big,) = [x for x in xs if "'@example.com'" in x.request_body]
    assert big.details["row_count"] == n
    assert len(big.details["rows"]) == 20 and big.details["rows_truncated"] is True
    assert json.dumps(big.details).count("@example.com") == 0

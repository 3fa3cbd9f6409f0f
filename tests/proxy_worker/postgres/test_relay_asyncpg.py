"""asyncpg through the gateway: binary results and parameters everywhere, prepared
statements, portals fetched in pieces (``PortalSuspended``), COPY and type codecs."""

from __future__ import annotations

import ipaddress
import json
import ssl
import uuid
from decimal import Decimal

import asyncpg
import pytest

from tests.proxy_worker.postgres.conftest import TARGET, PgEnv


async def connect(pg: PgEnv, **kw: object) -> asyncpg.Connection:
    ctx = ssl.create_default_context(cafile=str(pg.gw.ca_file))
    return await asyncpg.connect(
        host="127.0.0.1",
        port=pg.gw.pg_port,
        user=pg.gw.agent_name,
        password=pg.gw.token,
        database=TARGET,
        ssl=ctx,
        **kw,
    )


async def test_it_masks_binary_rows(pg: PgEnv) -> None:
    conn = await connect(pg)
    try:
        rows = await conn.fetch(
            "select id, name, email, card_number, profile, tags, created, note "
            "from customers order by id"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows][0][:4] == (1, "[REDACTED]", "[EMAIL]", None)
    for r in rows:
        assert r["email"] == "[EMAIL]"
        assert r["card_number"] is None
        assert json.loads(r["profile"]) == {"email": "[EMAIL]", "vip": True}
        assert r["tags"] is None
        assert str(r["created"]) == "2024-01-02"
        assert r["note"] == "call [PHONE] or mail [EMAIL]"
    pg.assert_nothing_raw()


async def test_it_serves_prepared_statements(pg: PgEnv) -> None:
    conn = await connect(pg)
    try:
        st = await conn.prepare("select id, email, ssn from customers where id > $1 order by id")
        assert [tuple(r) for r in await st.fetch(1)] == [
            (2, "[EMAIL]", "[US_SSN]"),
            (3, "[EMAIL]", "[US_SSN]"),
        ]
        assert tuple(await st.fetchrow(2)) == (3, "[EMAIL]", "[US_SSN]")
        assert await st.fetchval(0, column=1) == "[EMAIL]"
        assert [a.name for a in st.get_attributes()] == ["id", "email", "ssn"]
        assert await conn.fetchval("select $1::text", "who@example.com") == "[EMAIL]"
    finally:
        await conn.close()
    xs = [x for x in pg.exchanges() if x.method == "SELECT" and "customers" in x.request_body]
    assert [x.details["parameters"] for x in xs] == [["1"], ["2"], ["0"]]
    assert all(x.details["extended"] for x in xs)


async def test_it_iterates_a_cursor_in_pieces(pg: PgEnv) -> None:
    conn = await connect(pg)
    try:
        async with conn.transaction():
            got = [
                (r[0], r[1])
                async for r in conn.cursor(
                    "select g, 'u' || g || '@example.com' from generate_series(1, 250) g",
                    prefetch=40,
                )
            ]
            cur = await conn.cursor("select id, email from customers order by id")
            first = await cur.fetch(2)
            rest = await cur.fetchrow()
    finally:
        await conn.close()
    assert got == [(g, "[EMAIL]") for g in range(1, 251)]
    assert [tuple(r) for r in first] == [(1, "[EMAIL]"), (2, "[EMAIL]")]
    assert tuple(rest) == (3, "[EMAIL]")  # type: ignore[arg-type]
    xs = pg.exchanges()
    (big,) = [x for x in xs if "generate_series" in x.request_body]
    # One statement run in several Executes with a row limit: one exchange.
    assert big.details["row_count"] == 250
    assert big.details["rows_truncated"] is True
    assert big.details["rows"][:2] == [["1", "[EMAIL]"], ["2", "[EMAIL]"]]
    assert "u1@example.com" not in big.to_json()


async def test_it_copies_from_a_query_and_to_a_table(pg: PgEnv, tmp_path: object) -> None:
    import io

    conn = await connect(pg)
    try:
        buf = io.BytesIO()
        await conn.copy_from_query(
            "select id, email, ssn from customers order by id", output=buf, format="csv"
        )
        buf_text = io.BytesIO()
        await conn.copy_from_table("customers", columns=["id", "email"], output=buf_text)
        n = await conn.copy_records_to_table(
            "scratch",
            records=[(i, f"r{i}@example.com", Decimal("1.50")) for i in range(10)],
            columns=["id", "email", "amount"],
        )
        back = await conn.fetch("select id, email, amount from scratch order by id")
    finally:
        await conn.close()
    assert buf.getvalue().decode().splitlines() == [
        "1,[EMAIL],[US_SSN]",
        "2,[EMAIL],[US_SSN]",
        "3,[EMAIL],[US_SSN]",
    ]
    assert buf_text.getvalue().decode().splitlines() == ["1\t[EMAIL]", "2\t[EMAIL]", "3\t[EMAIL]"]
    assert n == "COPY 10"
    assert [tuple(r) for r in back] == [(i, "[EMAIL]", Decimal("1.50")) for i in range(10)]
    with pg.direct() as d:
        assert d.execute("select email from scratch where id = 4").fetchone() == ("r4@example.com",)
    copies = [x for x in pg.exchanges() if "copy" in x.details]
    assert [x.details["copy"]["format"] for x in copies] == ["csv", "text", "binary"]
    assert copies[2].details["copy"] == {"direction": "in", "format": "binary", "rows": 10}
    # asyncpg sends the data before the server's CopyInResponse: still sampled (masked).
    assert copies[2].details["rows"][:2] == [["0", "[EMAIL]", "1.50"], ["1", "[EMAIL]", "1.50"]]
    assert "r4@example.com" not in "".join(x.to_json() for x in copies)


async def test_it_runs_executemany(pg: PgEnv) -> None:
    conn = await connect(pg)
    try:
        await conn.executemany(
            "insert into scratch (id, email, note) values ($1, $2, $3)",
            [(i, f"e{i}@example.com", f"n{i}") for i in range(30)],
        )
        assert await conn.fetchval("select count(*) from scratch") == 30
    finally:
        await conn.close()
    inserts = [x for x in pg.exchanges() if x.method == "INSERT"]
    assert len(inserts) == 30
    assert inserts[7].details["parameters"] == ["7", "[EMAIL]", "n7"]
    assert "e7@example.com" not in "".join(x.to_json() for x in inserts)


async def test_it_keeps_type_codecs(pg: PgEnv) -> None:
    ref = uuid.UUID("8b0b5b0e-3f4b-4a4e-9d2a-0c1d2e3f4a5b")
    conn = await connect(pg)
    try:
        await conn.set_type_codec(
            "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        await conn.execute(
            "insert into scratch (id, amount, addr, ref, doc, note) "
            "values ($1, $2, $3, $4, $5, $6)",
            1,
            Decimal("12345.67"),
            ipaddress.ip_interface("10.1.2.3/32"),
            ref,
            {"k": [1, 2], "who": "x@example.com"},
            "plain",
        )
        row = await conn.fetchrow("select id, amount, addr, ref, doc, note from scratch")
        typed = await conn.fetchrow(
            "select $1::numeric * 2 as n, $2::inet as a, $3::uuid as u, $4::json as j",
            Decimal("0.25"),
            ipaddress.ip_address("192.0.2.1"),
            ref,
            {"a": None},
        )
    finally:
        await conn.close()
    assert row is not None and typed is not None
    assert row["amount"] == Decimal("12345.67")
    # An inet holding an address is personal data by the default rules (IP_ADDRESS).
    assert row["addr"] is None
    assert row["ref"] == ref
    assert row["doc"] == {"k": [1, 2], "who": "[EMAIL]"}
    assert row["note"] == "plain"
    assert typed["n"] == Decimal("0.50")
    assert typed["a"] is None
    assert typed["u"] == ref
    assert typed["j"] == {"a": None}
    with pg.direct() as d:
        assert d.execute("select host(addr), doc->>'who' from scratch").fetchone() == (
            "10.1.2.3",
            "x@example.com",
        )


async def test_it_keeps_transactions_and_errors(pg: PgEnv) -> None:
    conn = await connect(pg)
    try:
        with pytest.raises(asyncpg.UniqueViolationError) as e:
            async with conn.transaction():
                await conn.execute("insert into scratch (id) values (1)")
                await conn.execute("insert into people (email) values ($1)", "jane.roe@example.com")
        assert e.value.detail == "Key (email)=([EMAIL]) already exists."
        assert await conn.fetchval("select count(*) from scratch") == 0
        with pytest.raises(asyncpg.DivisionByZeroError):
            await conn.fetch("select 1 / (g - 3) from generate_series(1, 5) g")
        assert await conn.fetchval("select 7") == 7
    finally:
        await conn.close()
    (div,) = [x for x in pg.exchanges() if "generate_series" in x.request_body]
    assert div.status_code == 400 and div.details["sqlstate"] == "22012"
    pg.assert_nothing_raw()

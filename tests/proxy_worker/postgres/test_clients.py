"""Real clients through the gateway: ``psql``, SQLAlchemy 2 and ``pgbench``.

Every test talks to the real worker process (``conftest.pg``) over TLS with
``sslmode=verify-full`` against the gateway's CA, as agents do; what reaches the client is
checked value by value, and what was recorded in the exchanges.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Integer, String, create_engine, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tests.proxy_worker.postgres.conftest import PgEnv
from tests.proxy_worker.postgres.harness import CUSTOMERS, sql_rule

pytestmark = pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")


def psql(pg: PgEnv, *args: str, stdin: str | None = None, check: bool = True) -> str:
    """Run ``psql`` through the gateway (unaligned, tuples only, stop on error)."""
    p = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", *args],
        env=pg.libpq_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert p.returncode == 0, p.stderr
    return p.stdout + p.stderr if not check else p.stdout


# --- psql --------------------------------------------------------------------------------


def test_it_runs_a_multi_statement_command(pg: PgEnv) -> None:
    out = psql(
        pg,
        "-c",
        "select email from customers where id = 1; select ssn, name from customers "
        "where id = 2; select count(*) from customers",
    )
    assert out.splitlines() == ["[EMAIL]", "[US_SSN]|[REDACTED]", "3"]
    xs = pg.exchanges(3)
    assert [x.details["statement_index"] for x in xs] == [0, 1, 2]
    assert len({x.session_key for x in xs}) == 1
    assert xs[0].session_key.startswith("pg:")
    assert [x.details["row_count"] for x in xs] == [1, 1, 1]
    assert xs[2].details["rows"] == [["3"]]
    assert all(x.request_headers["application_name"] == "psql" for x in xs)
    pg.assert_nothing_raw(xs)


def test_it_copies_out_and_in_with_backslash_copy(pg: PgEnv, tmp_path: Path) -> None:
    out_file = tmp_path / "out.csv"
    psql(pg, "-c", f"\\copy (select id, email, ssn from customers order by id) to '{out_file}' csv")
    assert out_file.read_text().splitlines() == [
        "1,[EMAIL],[US_SSN]",
        "2,[EMAIL],[US_SSN]",
        "3,[EMAIL],[US_SSN]",
    ]
    in_file = tmp_path / "in.txt"
    in_file.write_text("1\tbob@example.com\twrite to bob@example.com\n2\t\\N\tplain\n")
    psql(pg, "-c", f"\\copy scratch (id, email, note) from '{in_file}'")
    with pg.direct() as c:
        rows = c.execute("select id, email, note from scratch order by id").fetchall()
    # COPY FROM data reaches the database as sent (request rules mask only the record).
    assert rows == [(1, "bob@example.com", "write to bob@example.com"), (2, None, "plain")]
    xs = pg.exchanges(2)
    assert xs[0].details["copy"] == {"direction": "out", "format": "csv", "rows": 3}
    assert xs[1].details["copy"] == {"direction": "in", "format": "text", "rows": 2}
    assert xs[1].details["command_tag"] == "COPY 2"
    assert "bob@example.com" not in xs[1].to_json()
    pg.assert_nothing_raw(xs)


def test_it_runs_a_script_with_a_transaction(pg: PgEnv, tmp_path: Path) -> None:
    script = tmp_path / "script.sql"
    script.write_text(
        "BEGIN;\n"
        "INSERT INTO scratch (id, email) VALUES (10, 'a@example.com');\n"
        "UPDATE scratch SET note = 'x' WHERE id = 10;\n"
        "SELECT id, email, note FROM scratch;\n"
        "COMMIT;\n"
    )
    out = psql(pg, "-f", str(script))
    assert out.splitlines() == ["10|[EMAIL]|x"]
    with pg.direct() as c:
        assert c.execute("select id, email, note from scratch").fetchall() == [
            (10, "a@example.com", "x")
        ]
    xs = pg.exchanges(5)
    assert [x.method for x in xs] == ["TRANSACTION", "INSERT", "UPDATE", "SELECT", "TRANSACTION"]
    assert [x.details["command_tag"] for x in xs] == [
        "BEGIN",
        "INSERT 0 1",
        "UPDATE 1",
        "SELECT 1",
        "COMMIT",
    ]
    assert "a@example.com" not in "".join(x.to_json() for x in xs)


def test_it_describes_a_table(pg: PgEnv) -> None:
    env = pg.libpq_env()
    argv = ["psql", "-X", "-c", "\\d customers", "-c", "\\d+ customer_contacts"]
    through = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    direct = subprocess.run(
        [*argv, pg.db.conninfo()],
        env={k: v for k, v in env.items() if not k.startswith("PG")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert through.returncode == 0, through.stderr
    # psql's catalog queries run through the gateway and their answers arrive intact.
    assert through.stdout == direct.stdout
    assert "customers_pkey" in through.stdout and "email AS contact" in through.stdout
    xs = pg.exchanges()
    assert len(xs) >= 5
    assert all(x.status_code == 200 for x in xs)
    assert any("pg_catalog.pg_class" in x.details["tables"] for x in xs)
    assert any("pg_catalog.pg_attribute" in x.details["tables"] for x in xs)


def test_it_sets_variables_with_gset(pg: PgEnv) -> None:
    out = psql(
        pg,
        stdin=(
            "select id as cid, email as mail from customers where id = 2 \\gset\n"
            "\\echo :cid :mail\n"
            "select name from customers where id = :cid;\n"
        ),
    )
    assert out.splitlines() == ["2 [EMAIL]", "[REDACTED]"]
    xs = pg.exchanges(2)
    assert xs[1].request_body == "select name from customers where id = 2"
    assert xs[1].details["rows"] == [["[REDACTED]"]]


def test_it_shows_a_denied_statement_as_psql_error(pg: PgEnv) -> None:
    pg.policy([sql_rule(1, "No secrets", "deny", tables=["secrets"])])
    p = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", "select 1; select * from secrets"],
        env=pg.libpq_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert "denied by access rule 'No secrets'" in p.stderr
    assert "sk-live" not in p.stdout
    (x,) = pg.exchanges(1)
    assert x.status_code == 403 and x.details["sqlstate"] == "42501"


# --- SQLAlchemy 2 ------------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    email: Mapped[str] = mapped_column(String)
    ssn: Mapped[str | None] = mapped_column(String)


class Scratch(Base):
    __tablename__ = "scratch"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str | None] = mapped_column(String)
    note: Mapped[str | None] = mapped_column(String)


def test_it_serves_sqlalchemy_orm(pg: PgEnv) -> None:
    engine = create_engine(pg.url("postgresql+psycopg"))
    try:
        with Session(engine) as s:
            got = s.execute(select(Customer).where(Customer.id == 2)).scalar_one()
            assert (got.id, got.name, got.email, got.ssn) == (
                2,
                "[REDACTED]",
                "[EMAIL]",
                "[US_SSN]",
            )
            s.add(Scratch(id=7, email="orm@example.com", note="n"))
            s.commit()
            s.execute(update(Scratch).where(Scratch.id == 7).values(note="updated"))
            s.commit()
            row = s.execute(select(Scratch.id, Scratch.email, Scratch.note)).one()
            assert tuple(row) == (7, "[EMAIL]", "updated")
            n = s.execute(text("select count(*) from customers where id > :i"), {"i": 1})
            assert n.scalar_one() == 2
            rows = s.execute(text("select email, phone from customers order by id")).all()
            assert [tuple(r) for r in rows] == [("[EMAIL]", "[PHONE]")] * 3
    finally:
        engine.dispose()
    with pg.direct() as c:
        assert c.execute("select id, email, note from scratch").fetchall() == [
            (7, "orm@example.com", "updated")
        ]
    xs = pg.exchanges()
    kinds = [x.method for x in xs]
    # The engine's connect-time queries (server version, isolation level, ...) pass.
    assert kinds.count("SHOW") + kinds.count("SELECT") >= 4
    assert all(x.status_code == 200 for x in xs), [(x.request_body, x.error) for x in xs]
    insert = next(x for x in xs if x.method == "INSERT")
    assert insert.details["extended"] is True
    assert insert.details["parameters"][:2] == ["7", "[EMAIL]"]
    pg.assert_nothing_raw(xs)
    assert "orm@example.com" not in "".join(x.to_json() for x in xs)


# --- pgbench -----------------------------------------------------------------------------


@pytest.fixture
def pgbench_tables(pg: PgEnv) -> PgEnv:
    env = {k: v for k, v in pg.libpq_env().items() if not k.startswith("PG")}
    subprocess.run(
        ["pgbench", "-i", "-s", "1", "-q", pg.db.conninfo()],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return pg


@pytest.mark.skipif(shutil.which("pgbench") is None, reason="pgbench is not installed")
@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_it_runs_pgbench(pgbench_tables: PgEnv, mode: str) -> None:
    pg = pgbench_tables
    for script in (["-S"], []):
        p = subprocess.run(
            ["pgbench", "-n", *script, "-T", "3", "-c", "2", "-j", "1", "-M", mode],
            env=pg.libpq_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        assert "number of failed transactions: 0" in p.stdout, p.stdout
        processed = int(
            next(
                line for line in p.stdout.splitlines() if "transactions actually processed" in line
            )
            .split(":")[1]
            .split("/")[0]
        )
        assert processed > 0
    xs = pg.exchanges()
    assert xs and all(x.status_code == 200 for x in xs)
    assert {x.method for x in xs} >= {"SELECT", "UPDATE", "INSERT", "TRANSACTION"}


def test_customers_are_untouched(pg: PgEnv) -> None:
    """No test above changed the customers the masking tests rely on."""
    with pg.direct() as c:
        rows = c.execute("select name, email from customers order by id").fetchall()
    assert rows == [(c[0], c[1]) for c in CUSTOMERS]

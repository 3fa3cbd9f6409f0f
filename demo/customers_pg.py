"""Demo PostgreSQL database of (fake) customers: the demo's PostgreSQL target.

The same Faker-generated customers as the SQLite database that datasette serves
(:mod:`demo.customers_db`, same seed, same rows), loaded into a database of their own on
the machine's PostgreSQL, plus a role Gatehouse logs in as (with a password: the
target's credential, which the agent never sees)::

    python -m demo.customers_pg [--database gatehouse_demo_customers] [--rows 200]

Tables ``customers`` and ``orders`` as in the SQLite database, and a view
``customer_contacts`` that renames the e-mail column (``email AS contact``), to show
that masking by column name follows views. An existing database is left as it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import psycopg
from psycopg import sql

from demo.customers_db import _customer_rows, _order_rows

DEFAULT_DATABASE = "gatehouse_demo_customers"
DEFAULT_ROLE = "gatehouse_demo_reader"

SCHEMA = """
CREATE TABLE customers (
    id integer PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    phone text NOT NULL,
    ssn text NOT NULL,
    credit_card text NOT NULL,
    iban text NOT NULL,
    address text NOT NULL,
    city text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE orders (
    id integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers(id),
    amount_cents integer NOT NULL,
    status text NOT NULL
);
CREATE INDEX orders_customer_id ON orders(customer_id);
CREATE VIEW customer_contacts AS SELECT id, name, email AS contact, city FROM customers;
"""


def server_params() -> dict[str, str | None]:
    """Connection parameters of the machine's PostgreSQL (``GATEHOUSE_DB_*``)."""
    return {
        "host": os.environ.get("GATEHOUSE_DB_HOST", "127.0.0.1"),
        "port": os.environ.get("GATEHOUSE_DB_PORT", "5432"),
        "user": os.environ.get("GATEHOUSE_DB_USER", "postgres"),
        "password": os.environ.get("GATEHOUSE_DB_PASSWORD") or None,
    }


def build_customers_pg(
    *,
    database: str = DEFAULT_DATABASE,
    role: str = DEFAULT_ROLE,
    password: str,
    rows: int = 200,
    seed: int = 1234,
) -> bool:
    """Create the demo database and its role (idempotent); ``True`` when it was created.

    The role (``role``, password ``password``, updated on every call so it follows the
    demo's secrets) may connect and read and write ``customers`` and ``orders``. The
    database is loaded with ``COPY`` in one transaction, so a half-built database is
    never left behind (a failed load drops it).
    """
    params = server_params()
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        with psycopg.connect(dbname=database, **params) as conn:
            conn.execute(SCHEMA)
            with conn.cursor().copy(
                "COPY customers (id, name, email, phone, ssn, credit_card, iban, address, city, "
                "created_at) FROM STDIN"
            ) as copy:
                for row in _customer_rows(rows, seed):
                    copy.write_row(row)
            with conn.cursor().copy(
                "COPY orders (id, customer_id, amount_cents, status) FROM STDIN"
            ) as copy:
                for row in _order_rows(rows, seed):
                    copy.write_row(row)
            for stmt in (
                "GRANT CONNECT ON DATABASE {db} TO {role}",
                "GRANT USAGE ON SCHEMA public TO {role}",
                "GRANT SELECT, INSERT, UPDATE, DELETE ON customers, orders, customer_contacts "
                "TO {role}",
            ):
                conn.execute(
                    sql.SQL(stmt).format(db=sql.Identifier(database), role=sql.Identifier(role))
                )
    except Exception:
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
        raise
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: ``python -m demo.customers_pg [--database NAME]``."""
    parser = argparse.ArgumentParser(
        prog="python -m demo.customers_pg",
        description="Create the Gatehouse demo customers database on the local PostgreSQL.",
    )
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--role", default=DEFAULT_ROLE)
    parser.add_argument("--password", default=os.environ.get("DEMO_PG_PASSWORD", ""))
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    if not args.password:
        parser.error("--password (or DEMO_PG_PASSWORD) is required")
    created = build_customers_pg(
        database=args.database,
        role=args.role,
        password=args.password,
        rows=args.rows,
        seed=args.seed,
    )
    print(
        f"{args.database}: {'created' if created else 'exists, left unchanged'}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Demo SQLite database of (fake) customers, full of personal data to mask.

The demo serves this database with datasette behind Gatehouse, so that an
agent reading ``/customers/customers.json`` sees names, e-mail addresses,
phone numbers, US social security numbers, credit card numbers and IBANs
that the gateway's masking must catch.  Everything is generated with Faker
from a fixed seed, so two builds with the same arguments hold the same rows.

Build it with::

    python -m demo.customers_db var/demo/customers.db [--rows 200] [--seed 1234]

The file name decides the datasette database name: ``customers.db`` is served
as ``/customers``.  An existing file is left untouched (delete it to rebuild).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import phonenumbers
from faker import Faker
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.us import ssn as stdnum_ssn

from proxy_worker.masking.detectors import card_issuer

__all__ = ["build_customers_db", "main"]

#: Fixed window for ``created_at`` so the output does not depend on today's date.
CREATED_FROM = datetime(2021, 1, 1, tzinfo=UTC)
CREATED_TO = datetime(2025, 6, 30, tzinfo=UTC)

ORDER_STATUSES = ("pending", "paid", "shipped", "delivered", "refunded", "cancelled")

SCHEMA = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    phone TEXT NOT NULL,
    ssn TEXT NOT NULL,
    credit_card TEXT NOT NULL,
    iban TEXT NOT NULL,
    address TEXT NOT NULL,
    city TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    amount_cents INTEGER NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX orders_customer_id ON orders(customer_id);
"""


def _valid(draw: Callable[[], str], is_valid: Callable[[str], bool], what: str) -> str:
    """Draw values until one passes ``is_valid`` (Faker's normally pass at once).

    The retry keeps the database's promise (every card is Luhn-valid, every
    IBAN and SSN valid) even if a future Faker release changes its output;
    it stays deterministic because the draws come from the seeded generator.
    """
    for _ in range(100):
        value = draw()
        if is_valid(value):
            return value
    raise RuntimeError(f"Faker produced no valid {what} in 100 draws")


def _real_phone(value: str) -> bool:
    """A US number that exists in the numbering plan (phonenumbers metadata)."""
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(value, "US"))
    except phonenumbers.NumberParseException:
        return False


def _real_card(value: str) -> bool:
    """Luhn-valid, with an issuer prefix and length of a current card network."""
    return luhn.is_valid(value) and card_issuer(value)


def _customer_rows(rows: int, seed: int) -> list[tuple[object, ...]]:
    """Generate ``rows`` customer tuples in ``SCHEMA`` column order."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    # en_US has no IBAN format of its own (it falls back to GB); use the
    # German provider explicitly so the IBANs are real, checksummed DE ones.
    fake_de = Faker("de_DE")
    fake_de.seed_instance(seed + 1)

    result: list[tuple[object, ...]] = []
    for customer_id in range(1, rows + 1):
        first, last = fake.first_name(), fake.last_name()
        name = f"{first} {last}"
        local = f"{first}.{last}".lower().replace("'", "").replace(" ", "")
        email = f"{local}{customer_id}@{fake.free_email_domain()}"
        # Faker draws area codes and card prefixes that no real number uses (e.g. area
        # code 290, JCB 3521); a real customer table holds numbers that exist, so keep
        # drawing until phonenumbers and the card networks' ranges accept them.
        phone = _valid(fake.phone_number, _real_phone, "phone number")
        ssn = _valid(fake.ssn, stdnum_ssn.is_valid, "SSN")
        card = _valid(fake.credit_card_number, _real_card, "credit card number")
        iban = _valid(fake_de.iban, stdnum_iban.is_valid, "IBAN")
        address = fake.street_address()
        city = fake.city()
        full_address = f"{address}, {city}, {fake.state_abbr()} {fake.zipcode()}"
        created = fake.date_time_between_dates(CREATED_FROM, CREATED_TO, tzinfo=UTC)
        result.append(
            (
                customer_id,
                name,
                email,
                phone,
                ssn,
                card,
                iban,
                full_address.replace("\r\n", ", ").replace("\n", ", "),
                city,
                created.replace(microsecond=0).isoformat(),
            )
        )
    return result


def _order_rows(customers: int, seed: int) -> list[tuple[int, int, int, str]]:
    """Generate a few orders (0 to 3) per customer."""
    fake = Faker("en_US")
    fake.seed_instance(seed + 2)
    orders: list[tuple[int, int, int, str]] = []
    for customer_id in range(1, customers + 1):
        for _ in range(fake.random_int(0, 3)):
            orders.append(
                (
                    len(orders) + 1,
                    customer_id,
                    fake.random_int(199, 49_999),
                    fake.random_element(ORDER_STATUSES),
                )
            )
    return orders


def _write_db(path: Path, rows: int, seed: int) -> None:
    """Create the schema and insert the generated rows into a new file ``path``."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA)
        conn.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _customer_rows(rows, seed),
        )
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", _order_rows(rows, seed))
        conn.commit()
    finally:
        conn.close()


def build_customers_db(path: str | Path, *, rows: int = 200, seed: int = 1234) -> Path:
    """Build the demo database at ``path`` unless a file is already there.

    The database is written to a temporary file in the same directory and
    then moved into place, so a reader (datasette, a concurrent build) never
    sees a half-written file.  If ``path`` exists it is left as it is, even if
    it was built with other ``rows``/``seed`` values.

    Returns the path (as a ``Path``).
    """
    if rows < 0:
        raise ValueError("rows must be >= 0")
    target = Path(path)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()  # let sqlite create a fresh file
        _write_db(tmp, rows, seed)
        try:
            # A hard link fails if the target appeared meanwhile: the first
            # build wins and the existing file is left alone.
            os.link(tmp, target)
        except FileExistsError:
            pass
        except OSError:
            # File systems without hard links: fall back to an atomic rename.
            if not target.exists():
                os.replace(tmp, target)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: ``python -m demo.customers_db PATH [--rows N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m demo.customers_db",
        description="Build the Gatehouse demo customers SQLite database (left alone if it exists).",
    )
    parser.add_argument("path", help="database file to create, e.g. var/demo/customers.db")
    parser.add_argument("--rows", type=int, default=200, help="number of customers (default 200)")
    parser.add_argument("--seed", type=int, default=1234, help="Faker seed (default 1234)")
    args = parser.parse_args(argv)
    existed = Path(args.path).exists()
    target = build_customers_db(args.path, rows=args.rows, seed=args.seed)
    state = "exists, left unchanged" if existed else f"built with {args.rows} customers"
    print(f"{target}: {state}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Result-row masking throughput of the PostgreSQL path (``proxy_worker.postgres.rowmask``).

Usage: ``.venv/bin/python bench/pg_rowmask.py [--rows N] [--batch N] [--repeat N]
[--per-value]``

Prints rows/s and MB/s (DataRow payload bytes) on one core for:

* ``dense``: 5 columns (id int4, name text, email text, ssn text, created date), text
  format, an e-mail and an SSN in every row;
* ``sparse``: the same table, personal data in 1 row of 100;
* ``wide``: 20 columns (ints, dates, names, e-mails, phones, free text), text format;
* ``binary``: the dense table with every column in binary format;
* ``observe``: the dense table with masking off on the wire (count and sample only).

Times are CPU seconds of this process (``time.process_time``), best of ``--repeat``, so
that other load on the machine counts less. ``--per-value`` turns the NUL-joined batch
scanning off (one engine call per value, the reference the batching must equal) for
comparison. The masker has the default detectors (``DEFAULT_ENTITY_TYPES``: EMAIL, PHONE,
CREDIT_CARD, US_SSN, IBAN, IP_ADDRESS and the secret detectors) and a record masker, as
the relay builds them. Whether the C accelerator is loaded is printed first
(``GATEHOUSE_MASKING_ACCEL=0`` turns it off). The goal of issue 13 is 200,000 rows/s per
core for ``dense``.
"""

from __future__ import annotations

import argparse
import random
import struct
import time

from proxy_worker.masking import DEFAULT_ENTITY_TYPES, Masker, MaskingRule, accel
from proxy_worker.postgres import rowmask
from proxy_worker.postgres.protocol import FieldDescription
from proxy_worker.postgres.rowmask import RowMasker

FIRST = ["Jane", "John", "Maria", "Ahmed", "Wei", "Olga", "Luis", "Aiko", "Sam", "Priya"]
LAST = ["Doe", "Smith", "Garcia", "Khan", "Zhang", "Ivanova", "Silva", "Sato", "Lee", "Patel"]
WORDS = [
    "the",
    "order",
    "shipped",
    "late",
    "again",
    "customer",
    "asked",
    "for",
    "a",
    "refund",
    "via",
    "support",
    "ticket",
]


def _payload(values: list[bytes | None]) -> bytes:
    out = [struct.pack(">h", len(values))]
    for v in values:
        if v is None:
            out.append(b"\xff\xff\xff\xff")
        else:
            out.append(struct.pack(">i", len(v)))
            out.append(v)
    return b"".join(out)


def _ssn(rnd: random.Random) -> str:
    return f"{rnd.randint(1, 665):03d}-{rnd.randint(1, 99):02d}-{rnd.randint(1, 9999):04d}"


def _field(name: str, oid: int, fmt: int = 0) -> FieldDescription:
    return FieldDescription(name, 0, 0, oid, -1, -1, fmt)


def five_columns(n: int, pii_every: int, binary: bool) -> tuple[list[FieldDescription], list]:
    rnd = random.Random(13)
    fmt = 1 if binary else 0
    fields = [
        _field("id", 23, fmt),
        _field("name", 25, fmt),
        _field("email", 25, fmt),
        _field("ssn", 25, fmt),
        _field("created", 1082, fmt),
    ]
    rows = []
    for i in range(n):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        pii = i % pii_every == 0
        email = f"{first}.{last}{i}@example.com".lower() if pii else f"{first} {last}"
        ssn = _ssn(rnd) if pii else "n/a"
        day = 8000 + i % 3000
        if binary:
            vals = [
                struct.pack(">i", i + 1),
                f"{first} {last}".encode(),
                email.encode(),
                ssn.encode(),
                struct.pack(">i", day),
            ]
        else:
            vals = [
                str(i + 1).encode(),
                f"{first} {last}".encode(),
                email.encode(),
                ssn.encode(),
                f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}".encode(),
            ]
        rows.append(_payload(vals))
    return fields, rows


def twenty_columns(n: int) -> tuple[list[FieldDescription], list]:
    rnd = random.Random(20)
    spec = [
        ("id", 23),
        ("account_id", 20),
        ("created", 1082),
        ("updated", 1184),
        ("first_name", 25),
        ("last_name", 25),
        ("email", 1043),
        ("phone", 25),
        ("city", 25),
        ("country", 1042),
        ("status", 25),
        ("score", 701),
        ("balance", 1700),
        ("active", 16),
        ("notes", 25),
        ("tags", 25),
        ("ref", 25),
        ("visits", 23),
        ("uuid", 2950),
        ("comment", 25),
    ]
    fields = [_field(name, oid) for name, oid in spec]
    rows = []
    for i in range(n):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        vals = [
            str(i + 1),
            str(1_000_000 + i),
            "2024-03-01",
            "2024-03-01 12:00:00+00",
            first,
            last,
            f"{first}.{last}{i}@example.com".lower(),
            f"+1 650-253-{rnd.randint(0, 9999):04d}",
            "Springfield",
            "US",
            rnd.choice(["new", "active", "closed"]),
            str(rnd.random()),
            f"{rnd.randint(0, 99999)}.{rnd.randint(0, 99):02d}",
            rnd.choice(["t", "f"]),
            " ".join(rnd.choice(WORDS) for _ in range(8)),
            "{a,b}",
            f"ORD-{i:08d}",
            str(rnd.randint(0, 500)),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            rnd.choice(["", "call me", "no comment", "see ticket"]),
        ]
        rows.append(_payload([v.encode() for v in vals]))
    return fields, rows


def run(name: str, fields, rows, masker, record, batch: int, repeat: int, wire: bool) -> None:
    size = sum(len(r) for r in rows)
    best = float("inf")
    for _ in range(repeat):
        rm = RowMasker(
            fields,
            [frozenset({f.name}) for f in fields],
            masker if wire else None,
            record_masker=record,
        )
        t0 = time.process_time()
        for i in range(0, len(rows), batch):
            rm.mask_rows(rows[i : i + batch])
        best = min(best, time.process_time() - t0)
    print(
        f"{name:8s} {len(rows) / best:>12,.0f} rows/s {size / best / 1e6:>8.1f} MB/s"
        f"  ({len(rows)} rows, {size / len(rows):.0f} B/row, batch {batch},"
        f" findings {sum(f['count'] for f in rm.findings())})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--per-value", action="store_true", help="no batched scanning")
    args = ap.parse_args()
    if args.per_value:
        rowmask._BATCH_SAFE = frozenset()  # every _Scanner then scans value by value
    print(
        f"C accelerator: {'on' if accel.AVAILABLE else 'off'};"
        f" scanning: {'per value' if args.per_value else 'batched'}"
    )
    rules = [MaskingRule(1, "default", entity_types=DEFAULT_ENTITY_TYPES)]
    masker = Masker(rules, hash_key=b"bench-key")
    record = Masker(rules, hash_key=b"bench-key")
    n, b, r = args.rows, args.batch, args.repeat
    run("dense", *five_columns(n, 1, False), masker, record, b, r, True)
    run("sparse", *five_columns(n, 100, False), masker, record, b, r, True)
    run("wide", *twenty_columns(n // 4), masker, record, b, r, True)
    run("binary", *five_columns(n, 1, True), masker, record, b, r, True)
    run("observe", *five_columns(n, 1, False), masker, record, b, r, False)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Single-core speed of the PostgreSQL wire codecs (``proxy_worker.postgres.protocol``).

Usage (from the repository root)::

    .venv/bin/python bench/pg_protocol.py [--transactions N] [--chunk BYTES] [--repeat N]

What is measured (``time.perf_counter``, best of ``--repeat`` samples, one core):

* **split**: ``MessageSplitter(allowed_tags=BACKEND_TAGS)`` fed a backend byte stream
  in ``--chunk``-byte reads (8 KiB by default; asyncio's ``StreamReader.read`` returns
  what the socket has, up to the requested size), every message taken with
  ``drain()``, ``next_message()`` or iteration. Two streams, built deterministically:

  - *tpcb-simple*: what the server answers to pgbench's default TPC-B-like script in
    simple-query mode (``-M simple``): per transaction BEGIN, three UPDATEs, one
    SELECT (RowDescription, DataRow), one INSERT, END, each with its CommandComplete
    and ReadyForQuery: 16 messages;
  - *select-prepared*: the ``-S -M prepared`` answers: BindComplete, DataRow,
    CommandComplete, ReadyForQuery: 4 messages per transaction.

  A third figure, *split+inspect*, also decodes what a relay looks at on the tpcb
  stream: ``parse_row_description`` on 'T', ``parse_data_row`` on 'D',
  ``parse_command_complete`` and ``command_tag_rows`` on 'C', ``parse_ready_for_query``
  on 'Z'.
* **parse_row_description**: pgbench's one-column description (``abalance int4``) and
  a 10-column one; *cold* clears the memo before every call (a statement's first
  description), *warm* parses a fresh ``bytes`` object with the same content (the
  memo hit a repeated statement gets, hashing included).
* **data rows**: ``build_data_row`` and ``parse_data_row`` on 10 columns of 12 bytes.

Prints one line per figure: messages (or calls) per second and microseconds each.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy_worker.postgres import protocol as pg  # noqa: E402
from proxy_worker.postgres.protocol import FieldDescription  # noqa: E402

ABALANCE = FieldDescription("abalance", 16397, 3, 23, 4, -1, 0)
WIDE = tuple(
    FieldDescription(f"column_{i}", 16400, i + 1, 25 if i % 2 else 23, -1 if i % 2 else 4, -1, 0)
    for i in range(10)
)


def tpcb_simple(transactions: int) -> tuple[bytes, int]:
    """Backend stream of ``transactions`` TPC-B-like transactions (simple protocol)."""
    row_description = pg.build_row_description([ABALANCE])
    parts = []
    for i in range(transactions):
        ready = pg.build_ready_for_query("T")
        parts += [pg.build_command_complete("BEGIN"), ready]
        parts += [pg.build_command_complete("UPDATE 1"), ready]
        parts += [
            row_description,
            pg.build_data_row([str(i % 5000 - 2500).encode()]),
            pg.build_command_complete("SELECT 1"),
            ready,
        ]
        parts += [pg.build_command_complete("UPDATE 1"), ready] * 2
        parts += [pg.build_command_complete("INSERT 0 1"), ready]
        parts += [pg.build_command_complete("COMMIT"), pg.build_ready_for_query("I")]
    return b"".join(parts), len(parts)


def select_prepared(transactions: int) -> tuple[bytes, int]:
    """Backend stream of ``transactions`` select-only transactions (``-M prepared``)."""
    parts = []
    for i in range(transactions):
        parts += [
            pg.build_bind_complete(),
            pg.build_data_row([str(i % 5000 - 2500).encode()]),
            pg.build_command_complete("SELECT 1"),
            pg.build_ready_for_query("I"),
        ]
    return b"".join(parts), len(parts)


def best(fn, arg, repeat: int) -> float:
    """Best wall time of ``fn(arg)`` over ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - start)
    return min(times)


def best_fresh(make, fn, repeat: int) -> float:
    """Best wall time of ``fn(make())`` over ``repeat`` runs, ``make()`` not timed."""
    times = []
    for _ in range(repeat):
        data = make()
        start = time.perf_counter()
        fn(data)
        times.append(time.perf_counter() - start)
    return min(times)


def split_drain(chunks: list[bytes]) -> int:
    splitter = pg.MessageSplitter(allowed_tags=pg.BACKEND_TAGS)
    count = 0
    for chunk in chunks:
        splitter.feed(chunk)
        count += len(splitter.drain())
    return count


def split_next(chunks: list[bytes]) -> int:
    splitter = pg.MessageSplitter(allowed_tags=pg.BACKEND_TAGS)
    count = 0
    for chunk in chunks:
        splitter.feed(chunk)
        while splitter.next_message() is not None:
            count += 1
    return count


def split_iter(chunks: list[bytes]) -> int:
    splitter = pg.MessageSplitter(allowed_tags=pg.BACKEND_TAGS)
    count = 0
    for chunk in chunks:
        splitter.feed(chunk)
        for _message in splitter:
            count += 1
    return count


def split_inspect(chunks: list[bytes]) -> int:
    splitter = pg.MessageSplitter(allowed_tags=pg.BACKEND_TAGS)
    count = 0
    rows = 0
    t, d, c, z = ord("T"), ord("D"), ord("C"), ord("Z")
    for chunk in chunks:
        splitter.feed(chunk)
        for tag, payload, _raw in splitter.drain():
            count += 1
            if tag == d:
                pg.parse_data_row(payload)
            elif tag == c:
                rows += pg.command_tag_rows(pg.parse_command_complete(payload)) or 0
            elif tag == z:
                pg.parse_ready_for_query(payload)
            elif tag == t:
                pg.parse_row_description(payload)
    return count


def chunked(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def report(label: str, count: int, seconds: float, unit: str = "messages") -> None:
    print(f"{label:<44} {count / seconds:>12,.0f} {unit}/s {seconds / count * 1e6:>8.3f} us each")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transactions", type=int, default=5000)
    parser.add_argument("--chunk", type=int, default=8192, help="bytes per read")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.machine()}, chunk {args.chunk} bytes, best of {args.repeat}"
    )

    for name, build in (("tpcb-simple", tpcb_simple), ("select-prepared", select_prepared)):
        stream, messages = build(args.transactions)
        chunks = chunked(stream, args.chunk)
        print(f"{name}: {messages:,} messages, {len(stream):,} bytes")
        for how, fn in (("drain", split_drain), ("next_message", split_next), ("iter", split_iter)):
            assert fn(chunks) == messages
            report(f"  split ({how})", messages, best(fn, chunks, args.repeat))
        if name == "tpcb-simple":
            assert split_inspect(chunks) == messages
            seconds = best(split_inspect, chunks, args.repeat)
            report("  split+inspect (drain, parse T/D/C/Z)", messages, seconds)

    calls = 20_000
    for label, fields in (("1 column", [ABALANCE]), ("10 columns", WIDE)):
        payload = pg.build_row_description(fields)[5:]

        def fresh(payload=payload):
            """Distinct bytes objects with the same content (their hashes not cached)."""
            return [bytes(bytearray(payload)) for _ in range(calls)]

        def cold(payloads):
            clear = pg._ROW_DESCRIPTION_CACHE.clear
            parse = pg.parse_row_description
            for p in payloads:
                clear()
                parse(p)

        def warm(payloads):
            parse = pg.parse_row_description
            for p in payloads:
                parse(p)

        for kind, fn in (("cold", cold), ("warm", warm)):
            seconds = best_fresh(fresh, fn, args.repeat)
            report(f"parse_row_description {label}, {kind}", calls, seconds, "calls")

    values = [b"value-%06d" % i for i in range(10)]
    row = pg.build_data_row(values)[5:]

    def build_rows(values):
        build = pg.build_data_row
        for _ in range(calls):
            build(values)

    def parse_rows(row):
        parse = pg.parse_data_row
        for _ in range(calls):
            parse(row)

    report("build_data_row 10 columns", calls, best(build_rows, values, args.repeat), "calls")
    report("parse_data_row 10 columns", calls, best(parse_rows, row, args.repeat), "calls")


if __name__ == "__main__":
    main()

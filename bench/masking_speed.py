#!/usr/bin/env python
"""Single-core throughput of ``Masker.mask_body`` on JSON bodies.

Usage (from the repository root)::

    .venv/bin/python bench/masking_speed.py [--repeat N] [--sizes 1K,100K,5M]
        [--presidio-max-runs N] [--no-presidio] [--no-accel | --with-python]

Bodies are generated deterministically with Faker (``Faker.seed(SEED)``,
locale en_US) at the requested sizes (the body is the first list of records
whose JSON encoding reaches the size, so sizes are approximate; the actual
byte count is printed and used for MB/s, 1 MB = 10**6 bytes):

* **dense**: a JSON array of customer records, every record carries an
  e-mail, a phone number, an SSN, a card number, an IBAN, an IPv4 address and a
  note with another e-mail and phone
  next to a name, an address and an id (8 PII values per ~320 bytes);
* **sparse**: a JSON array of chat-style messages (ids, timestamps, model
  name, a few sentences of prose), with one e-mail or phone number in about
  one message in 20.

The masker runs the engine's default detector set (every on-by-default type:
personal data and secrets, ``DEFAULT_ENTITY_TYPES``) with the default phone
regions.

Timing: ``time.perf_counter`` around ``mask_body(body, "application/json")``,
best of ``--repeat`` samples; small bodies are called in a loop so a sample
lasts >= ~0.2 s. Every call uses a *fresh* ``Masker`` (built outside the timed
region) so the engine's per-masker LRU cache of short strings starts cold and
the repeated body does not flatter the figures. The compiled RE2 prefilter is
shared between maskers with the same detectors (as between the worker's
policy snapshots), and the first, untimed call warms it; so is the C
accelerator's memo of what each object key means (secret-like, phone-like,
holding personal data), which depends only on the detectors.

The C accelerator (``proxy_worker.masking.accel``) is used when it is built;
``--no-accel`` measures the pure-Python engine instead, ``--with-python`` adds
its column to the same run; the output says which ran. ``--text`` adds rows for
the same records as text bodies (``dense-csv``: CSV, ``sparse-text``: the
messages' prose, one per line), masked by the text handler.

Presidio (if importable): its six pattern recognizers (no spaCy model,
``nlp_artifacts=None``) run on the same decoded JSON text, best of
``min(--repeat, --presidio-max-runs)`` samples; 5 MB bodies are capped to one
run (they take a long time). Presidio only *detects*; it does not parse JSON
nor replace anything, so its figures favour it slightly.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import presidio_baseline  # noqa: E402 - bench/ is on sys.path when run as a script
from faker import Faker  # noqa: E402

from proxy_worker.masking import DEFAULT_ENTITY_TYPES, Masker, MaskingRule, accel  # noqa: E402

SEED = 20240601
JSON, CSV, TEXT = "application/json", "text/csv", "text/plain"
TYPES = DEFAULT_ENTITY_TYPES


def parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": 1000, "M": 1000 * 1000}
    if s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def _fill(make_record, size: int) -> bytes:
    """JSON array of records, stopping at the first length >= size."""
    parts: list[str] = []
    total = 2
    while total < size:
        r = json.dumps(make_record(), ensure_ascii=False, separators=(",", ":"))
        parts.append(r)
        total += len(r.encode()) + 1
    return ("[" + ",".join(parts) + "]").encode()


def dense_body(size: int) -> bytes:
    fake = Faker("en_US")
    fake.seed_instance(SEED)
    counter = iter(range(10**9))

    def rec():
        return {
            "id": next(counter),
            "name": fake.name(),
            "email": fake.email(),
            "phone": fake.phone_number(),
            "ssn": fake.ssn(),
            "card": fake.credit_card_number(),
            "iban": fake.iban(),
            "ip": fake.ipv4_public(),
            "address": fake.address(),
            "note": f"Contact {fake.email()} or {fake.phone_number()}",
        }

    return _fill(rec, size)


def sparse_body(size: int) -> bytes:
    fake = Faker("en_US")
    fake.seed_instance(SEED + 1)
    counter = iter(range(10**9))

    def rec():
        i = next(counter)
        text = fake.paragraph(nb_sentences=5)
        if i % 20 == 7:
            text += f" You can reach me at {fake.email()}."
        elif i % 20 == 17:
            text += f" My number is {fake.phone_number()}."
        return {
            "id": f"msg_{fake.uuid4()}",
            "created": 1700000000 + i,
            "model": "gpt-4o-mini",
            "role": "user" if i % 2 else "assistant",
            "content": text,
            "usage": {"prompt_tokens": 100 + i % 50, "completion_tokens": 20 + i % 7},
        }

    return _fill(rec, size)


def new_masker(use_accel: bool = True) -> Masker:
    if use_accel:
        return _masker()
    saved = accel.MODULE
    accel.MODULE = None  # the pure-Python engine: no C driver, no C finders
    try:
        return _masker()
    finally:
        accel.MODULE = saved


def _masker() -> Masker:
    return Masker(
        [MaskingRule(id=1, name="default", entity_types=TYPES)],
        hash_key=b"k",
        max_body_bytes=64 * 1024 * 1024,
    )


def as_text(body: bytes) -> bytes:
    """The same records as text: CSV of the dense records (header + one line each),
    the sparse messages' prose one per line."""
    records = json.loads(body)
    if "content" in records[0]:
        return "\n".join(r["content"] for r in records).encode()
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().encode()


def time_gatehouse(
    body: bytes, repeat: int, use_accel: bool = True, content_type: str = "application/json"
) -> tuple[float, int]:
    """Best seconds per call, and number of findings."""
    # calibrate: calls per sample so that a sample lasts ~0.2 s
    t0 = time.perf_counter()
    res = new_masker(use_accel).mask_body(body, content_type)
    one = time.perf_counter() - t0
    loops = max(1, min(2000, int(0.2 / max(one, 1e-6))))
    best = one
    for _ in range(repeat):
        maskers = [new_masker(use_accel) for _ in range(loops)]
        t0 = time.perf_counter()
        for m in maskers:
            m.mask_body(body, content_type)
        best = min(best, (time.perf_counter() - t0) / loops)
    return best, len(res.findings)


def time_presidio(recognizers, text: str, runs: int) -> tuple[float, int]:
    best = float("inf")
    n = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        found = presidio_baseline.analyze(recognizers, text)
        best = min(best, time.perf_counter() - t0)
        n = len(found)
    return best, n


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="samples per case (best is kept)")
    ap.add_argument("--sizes", default="1K,100K,5M")
    ap.add_argument("--presidio-max-runs", type=int, default=3)
    ap.add_argument("--no-presidio", action="store_true")
    ap.add_argument("--no-accel", action="store_true", help="measure the pure-Python engine only")
    ap.add_argument(
        "--text",
        action="store_true",
        help="also the same records as text: dense as CSV (text/csv), sparse as prose",
    )
    ap.add_argument(
        "--with-python",
        action="store_true",
        help="add a column for the pure-Python engine (same bodies, same run)",
    )
    args = ap.parse_args(argv)
    accel_on = accel.AVAILABLE and not args.no_accel

    print(
        f"machine: {cpu_model()}, nproc={os.cpu_count()}, "
        f"Python {platform.python_version()}, one core (single thread)"
    )
    print(
        "engine: "
        + ("C accelerator" if accel_on else "pure Python")
        + (" (and pure Python)" if args.with_python and accel_on else "")
    )
    recs = None
    if not args.no_presidio:
        try:
            recs = presidio_baseline.recognizers()
            from importlib.metadata import version

            print(f"presidio-analyzer {version('presidio-analyzer')} pattern recognizers")
        except ImportError as exc:
            print(f"presidio-analyzer NOT available ({exc}); Presidio columns omitted")
    print()
    head = f"{'body':<11} {'size':>6} {'bytes':>9} | "
    head += f"{'gatehouse MB/s':>14} {'ms/call':>9} {'findings':>8}"
    with_python = args.with_python and accel_on
    if with_python:
        head += f" | {'python MB/s':>11} {'ms/call':>9}"
    if recs is not None:
        head += f" | {'presidio MB/s':>13} {'ms/call':>9} {'results':>7} {'runs':>4}"
    print(head)
    print("-" * len(head))
    kinds = [("dense", dense_body, JSON), ("sparse", sparse_body, JSON)]
    if args.text:
        kinds += [("dense-csv", dense_body, CSV), ("sparse-text", sparse_body, TEXT)]
    for kind, gen, ctype in kinds:
        for label in args.sizes.split(","):
            body = gen(parse_size(label))
            if ctype != JSON:
                body = as_text(body)
            secs, nf = time_gatehouse(body, args.repeat, accel_on, ctype)
            line = (
                f"{kind:<11} {label:>6} {len(body):>9} | {len(body) / secs / 1e6:>14.2f}"
                f" {secs * 1e3:>9.3f} {nf:>8}"
            )
            if with_python:
                psecs, _nf = time_gatehouse(body, args.repeat, False, ctype)
                line += f" | {len(body) / psecs / 1e6:>11.2f} {psecs * 1e3:>9.3f}"
            if recs is not None:
                runs = min(args.repeat, args.presidio_max_runs)
                if len(body) > 1_000_000:
                    runs = 1
                psecs, pn = time_presidio(recs, body.decode(), runs)
                line += f" | {len(body) / psecs / 1e6:>13.2f} {psecs * 1e3:>9.1f} {pn:>7} {runs:>4}"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

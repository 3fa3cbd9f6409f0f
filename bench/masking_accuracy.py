#!/usr/bin/env python
"""Detection accuracy of the Gatehouse masking engine on a labelled corpus.

Usage (from the repository root)::

    .venv/bin/python bench/masking_accuracy.py [CORPUS.json] [--limit N]
        [--phone-regions US,GB,...] [--no-presidio]

``CORPUS.json`` is a corpus in the presidio-research format (default:
``../shared/corpora/presidio_synth_dataset_v2.json``): a JSON list of records
``{"full_text": str, "spans": [{"entity_type", "start_position",
"end_position", "entity_value"}, ...]}``.

For each text the engine's :meth:`Masker.scan` is run (every on-by-default
detector, the engine's default phone regions unless ``--phone-regions`` is
given) and its detections of the six corpus types are compared with the
gold spans:

* per entity type (corpus type mapped to ours, see ``TYPE_MAP``):
  support (gold spans), predictions, precision, recall, F1. A prediction is a
  true positive when it overlaps a gold span of the same (mapped) type; a gold
  span is recalled when some prediction of that type overlaps it.
* "any-type masked recall": fraction of the gold characters of covered types
  that lie inside *some* detection (whatever its type), i.e. how much of the
  PII would actually have been masked.

If ``presidio-analyzer`` is importable, its pattern recognizers (no spaCy
model, ``nlp_artifacts=None``) are scored the same way, side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import presidio_baseline  # noqa: E402 - bench/ is on sys.path when run as a script

from proxy_worker.masking import (  # noqa: E402
    DEFAULT_ENTITY_TYPES,
    DEFAULT_PHONE_REGIONS,
    Masker,
    MaskingRule,
)

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpora" / "presidio_synth_dataset_v2.json"

#: corpus entity type -> Gatehouse entity type (the corpus uses Presidio's names)
TYPE_MAP = presidio_baseline.TYPE_MAP
OUR_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS")


def build_masker(phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS) -> Masker:
    """The engine's default detector set (every on-by-default type, so that
    cross-type priorities are as in production); only the six corpus types
    are scored."""
    return Masker(
        [MaskingRule(id=1, name="default", entity_types=DEFAULT_ENTITY_TYPES)],
        hash_key=b"k",
        phone_regions=phone_regions,
    )


def gatehouse_predict(masker: Masker):
    def predict(text: str) -> list[tuple[int, int, str]]:
        return [
            (d.start, d.end, d.entity_type) for d in masker.scan(text) if d.entity_type in OUR_TYPES
        ]

    return predict


def presidio_predict():
    """A predict function over Presidio's pattern recognizers, or raise ImportError."""
    recs = presidio_baseline.recognizers()
    return lambda text: presidio_baseline.analyze(recs, text)


def overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 < b1 and b0 < a1


def evaluate(records, predict) -> tuple[dict[str, dict[str, float]], float, float]:
    tp_pred: Counter = Counter()  # predictions overlapping a gold span of the type
    n_pred: Counter = Counter()
    hit_gold: Counter = Counter()  # gold spans overlapped by a prediction of the type
    n_gold: Counter = Counter()
    gold_chars = 0
    masked_chars = 0
    t0 = time.perf_counter()
    for rec in records:
        text = rec["full_text"]
        gold = [
            (s["start_position"], s["end_position"], TYPE_MAP[s["entity_type"]])
            for s in rec["spans"]
            if s["entity_type"] in TYPE_MAP
        ]
        pred = predict(text)
        for p0, p1, pt in pred:
            n_pred[pt] += 1
            if any(g2 == pt and overlaps(p0, p1, g0, g1) for g0, g1, g2 in gold):
                tp_pred[pt] += 1
        covered = bytearray(len(text))
        for p0, p1, _ in pred:
            covered[p0:p1] = b"\x01" * (p1 - p0)
        for g0, g1, gt in gold:
            n_gold[gt] += 1
            if any(pt == gt and overlaps(p0, p1, g0, g1) for p0, p1, pt in pred):
                hit_gold[gt] += 1
            gold_chars += g1 - g0
            masked_chars += sum(covered[g0:g1])
    elapsed = time.perf_counter() - t0
    table = {}
    for t in OUR_TYPES:
        p = tp_pred[t] / n_pred[t] if n_pred[t] else float("nan")
        r = hit_gold[t] / n_gold[t] if n_gold[t] else float("nan")
        f = 2 * p * r / (p + r) if n_pred[t] and n_gold[t] and (p + r) else float("nan")
        table[t] = {
            "support": n_gold[t],
            "pred": n_pred[t],
            "fp": n_pred[t] - tp_pred[t],
            "fn": n_gold[t] - hit_gold[t],
            "p": p,
            "r": r,
            "f1": f,
        }
    any_recall = masked_chars / gold_chars if gold_chars else float("nan")
    return table, any_recall, elapsed


def fmt(x: float) -> str:
    return "  n/a" if x != x else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default=str(DEFAULT_CORPUS))
    ap.add_argument("--limit", type=int, default=None, help="only the first N records")
    ap.add_argument(
        "--phone-regions",
        default=",".join(DEFAULT_PHONE_REGIONS),
        help="comma-separated default phone regions (default: the engine default, "
        + ",".join(DEFAULT_PHONE_REGIONS)
        + ")",
    )
    ap.add_argument("--no-presidio", action="store_true", help="skip the Presidio comparison")
    args = ap.parse_args(argv)

    records = json.loads(Path(args.corpus).read_text(encoding="utf-8"))
    if args.limit is not None:
        records = records[: args.limit]
    all_types = Counter(s["entity_type"] for r in records for s in r["spans"])
    print(f"corpus: {args.corpus}  ({len(records)} records, {sum(all_types.values())} gold spans)")

    regions = tuple(r.strip() for r in args.phone_regions.split(",") if r.strip())
    systems = [("gatehouse", gatehouse_predict(build_masker(regions)))]
    print(f"gatehouse phone regions: {','.join(regions) or '(none: +/00 numbers only)'}")
    presidio_note = ""
    if not args.no_presidio:
        try:
            import presidio_analyzer

            systems.append(("presidio", presidio_predict()))
            ver = getattr(presidio_analyzer, "__version__", None)
            if ver is None:
                from importlib.metadata import version

                ver = version("presidio-analyzer")
            presidio_note = f"presidio-analyzer {ver}, pattern recognizers only (no spaCy model)"
        except ImportError as exc:
            presidio_note = f"presidio-analyzer NOT available ({exc}); Presidio columns omitted"
    else:
        presidio_note = "Presidio comparison skipped (--no-presidio)"
    print(presidio_note)
    print()

    results = {name: evaluate(records, fn) for name, fn in systems}

    head = f"{'entity type':<12} {'support':>7}"
    for name, _ in systems:
        head += f" | {name + ' P':>11} {'R':>5} {'F1':>5} {'FP':>4} {'FN':>4}"
    print(head)
    print("-" * len(head))
    for t in OUR_TYPES:
        sup = results[systems[0][0]][0][t]["support"]
        line = f"{t:<12} {sup:>7}"
        for name, _ in systems:
            row = results[name][0][t]
            line += (
                f" | {fmt(row['p']):>11} {fmt(row['r']):>5} {fmt(row['f1']):>5}"
                f" {row['fp']:>4} {row['fn']:>4}"
            )
        print(line)
    print()
    for name, _ in systems:
        _, any_recall, elapsed = results[name]
        print(
            f"{name}: any-type masked recall (gold chars of covered types inside a detection)"
            f" = {fmt(any_recall)}   [scan time {elapsed:.2f} s]"
        )
    print()
    uncovered = sorted((t for t in all_types if t not in TYPE_MAP), key=lambda t: -all_types[t])
    print("not covered (needs an NER model / no built-in detector):")
    print("  " + ", ".join(f"{t} ({all_types[t]})" for t in uncovered))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

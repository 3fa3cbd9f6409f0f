"""Memory of the PostgreSQL path on a 10,000,000-row result (issue 13: "memory bounded").

A real proxy worker (``tests/proxy_worker/postgres/harness.PgGateway``, the harness's
default masking rules) relays::

    SELECT g, 'user' || g || '@example.com' FROM generate_series(1, N) g

to psycopg over TLS (``sslmode=require``, as agents connect), while a thread samples the
worker's ``VmRSS`` (``/proc/<pid>/status``) every ``--interval`` seconds (0.2 s). Phases,
each on a fresh connection:

* ``fast``: the whole result read as fast as the client can, with ``cursor.stream()``
  (libpq single-row mode: one statement, N DataRows relayed through one portal) or, with
  ``--modes cursor``, a named (server-side) cursor fetching ``--itersize`` rows at a time
  (one ``FETCH`` statement per batch). Every row is checked: ``g`` counts 1..N in order
  and the e-mail column is masked (not the original value, no ``@example.com`` left);
* ``slow``: the same query read by a client that sleeps ``--slow-sleep`` seconds after
  every ``--slow-batch`` rows, for ``--slow-seconds``; then the connection is closed
  mid-result. If the worker did not apply backpressure (stop reading the upstream when
  the client's socket is full), it would buffer the rest of the result and its RSS would
  grow with the rows the server produces, not with what the client reads.

Reported per phase: worker RSS before (idle, connected), peak during (sampled, and the
kernel's ``VmHWM`` high-water mark), and after (``--settle`` seconds later); rows read,
rows/s, rows masked; the upstream direct (same query, same client loop) as a reference
rows/s; the load average. ``VmHWM`` is the process's lifetime peak, so it is read before
and after each phase and only a rise is attributed to the phase.

Usage (from the repository root)::

    .venv/bin/python bench/pg_memory.py                      # 10 M rows, stream, slow reader
    .venv/bin/python bench/pg_memory.py --rows 1000000 --modes stream,cursor --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.proxy_worker.postgres.harness import PgGateway, UpstreamDatabase, pg_target  # noqa: E402

QUERY = "SELECT g, 'user' || g || '@example.com' FROM generate_series(1, {n}) g"


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` so far, seconds (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``); -1 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


class Sampler:
    """Samples ``VmRSS`` of ``pid`` every ``interval`` seconds in a thread of its own."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - t0, status_kib(self.pid, "VmRSS")))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max((kib for _t, kib in self.samples), default=-1)


def read_rows(
    conn: psycopg.Connection,
    n: int,
    mode: str,
    itersize: int,
    *,
    check: bool,
    slow: tuple[int, float, float] | None = None,
) -> dict[str, Any]:
    """Read the query's rows; count them, check order and masking when ``check``.

    ``slow`` = (batch, sleep seconds, time limit): sleep after every batch of rows and
    stop after the time limit (the result is then left unread). Returns ``rows``,
    ``seconds``, ``rows_per_s``, ``masked`` (e-mail column differs from the original and
    holds no ``@example.com``), ``out_of_order``, ``sample`` (first row).
    """
    sql = QUERY.format(n=n)
    rows = masked = bad_order = 0
    sample = None
    t0 = time.monotonic()
    if mode == "stream":
        it = conn.cursor().stream(sql)
    else:
        cur = conn.cursor(name="big")
        cur.itersize = itersize
        it = iter(cur.execute(sql))
    for g, email in it:
        rows += 1
        if check:
            if g != rows:
                bad_order += 1
            if (
                email is not None
                and email != f"user{g}@example.com"
                and ("@example.com" not in email)
            ):
                masked += 1
        if sample is None:
            sample = [g, email]
        if slow is not None and rows % slow[0] == 0:
            time.sleep(slow[1])
            if time.monotonic() - t0 > slow[2]:
                break
    seconds = time.monotonic() - t0
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds if seconds else float("nan"),
        "masked": masked,
        "out_of_order": bad_order,
        "sample": sample,
    }


def phase(
    gw: PgGateway,
    pid: int,
    name: str,
    args: argparse.Namespace,
    mode: str,
    slow: tuple[int, float, float] | None = None,
) -> dict[str, Any]:
    """One phase on a fresh connection through the gateway, with RSS sampled."""
    conn = psycopg.connect(gw.dsn("mem", sslmode="require"), autocommit=mode == "stream")
    time.sleep(0.5)
    before = status_kib(pid, "VmRSS")
    hwm0 = status_kib(pid, "VmHWM")
    load = os.getloadavg()[0]
    cpu0 = cpu_seconds(pid)
    with Sampler(pid, args.interval) as s:
        try:
            r = read_rows(conn, args.rows, mode, args.itersize, check=True, slow=slow)
        finally:
            conn.close()  # mid-result for the slow reader: the worker must let go
        time.sleep(args.settle)
    cpu = cpu_seconds(pid) - cpu0
    after = status_kib(pid, "VmRSS")
    hwm1 = status_kib(pid, "VmHWM")
    out = {
        "phase": name,
        "mode": mode,
        **r,
        "rss_before_kib": before,
        "rss_peak_kib": s.peak,
        "rss_after_kib": after,
        "hwm_before_kib": hwm0,
        "hwm_after_kib": hwm1,
        "worker_cpu_s": cpu,
        "rows_per_worker_cpu_s": r["rows"] / cpu if cpu else float("nan"),
        "samples": s.samples,
        "load1": load,
    }
    print(fmt_phase(out), flush=True)
    return out


def fmt_phase(p: dict[str, Any]) -> str:
    hwm = (
        ""
        if p["hwm_after_kib"] == p["hwm_before_kib"]
        else f" (VmHWM now {p['hwm_after_kib'] / 1024:.1f})"
    )
    return (
        f"{p['phase']:14} {p['mode']:6} rows {p['rows']:>10,} in {p['seconds']:6.1f} s "
        f"({p['rows_per_s']:>9,.0f} rows/s)  masked {p['masked']:>10,}  "
        f"RSS MiB before {p['rss_before_kib'] / 1024:.1f} peak {p['rss_peak_kib'] / 1024:.1f}{hwm} "
        f"after {p['rss_after_kib'] / 1024:.1f}  worker CPU {p['worker_cpu_s']:.1f} s  "
        f"load {p['load1']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--modes", default="stream", help="of stream, cursor (comma-separated)")
    parser.add_argument("--itersize", type=int, default=10_000, help="named cursor FETCH size")
    parser.add_argument("--interval", type=float, default=0.2, help="RSS sampling period, s")
    parser.add_argument("--settle", type=float, default=2.0, help="wait before 'after', s")
    parser.add_argument("--slow-batch", type=int, default=1000)
    parser.add_argument("--slow-sleep", type=float, default=0.1)
    parser.add_argument("--slow-seconds", type=float, default=30.0, help="0 = no slow phase")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct reference")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="gh-pgmem-"))
    db = UpstreamDatabase().create()
    gw = PgGateway(tmp)
    results: dict[str, Any] = {"rows": args.rows, "phases": [], "loadavg_start": os.getloadavg()}
    try:
        gw.policy([pg_target(1, "mem", database=db.name, worker_key=gw.worker_key)])
        gw.start()
        pid = gw.proc.pid  # type: ignore[union-attr]
        results["rss_idle_kib"] = status_kib(pid, "VmRSS")
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if not args.no_direct:
            for mode in modes:
                with psycopg.connect(db.conninfo(), autocommit=mode == "stream") as c:
                    r = read_rows(c, args.rows, mode, args.itersize, check=False)
                r["load1"] = os.getloadavg()[0]
                results[f"direct_{mode}"] = r
                print(
                    f"direct         {mode:6} rows {r['rows']:>10,} in {r['seconds']:6.1f} s "
                    f"({r['rows_per_s']:>9,.0f} rows/s)  load {r['load1']:.2f}",
                    flush=True,
                )
        for mode in modes:
            results["phases"].append(phase(gw, pid, "fast", args, mode))
        if args.slow_seconds > 0:
            slow = (args.slow_batch, args.slow_sleep, args.slow_seconds)
            results["phases"].append(phase(gw, pid, "slow reader", args, modes[0], slow))
            # The worker must still serve after the abandoned result.
            with psycopg.connect(gw.dsn("mem", sslmode="require")) as c:
                results["after_abort_ok"] = c.execute("SELECT 1").fetchone() == (1,)
        time.sleep(0.5)
        ex = gw.exchanges()
        results["exchanges"] = [
            {
                "kind": e.method,
                "status": e.status_code,
                "row_count": e.details.get("row_count"),
                "rows_sampled": len(e.details.get("rows") or []),
                "sql": e.request_body[:80],
            }
            for e in ex
        ]
        log = gw.log()
        results["worker_log_errors"] = [
            ln[:200] for ln in log.splitlines() if "Traceback" in ln or " ERROR " in ln
        ]
    finally:
        gw.stop()
        db.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    results["elapsed_s"] = time.monotonic() - t_start
    print()
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


def report(results: dict[str, Any]) -> str:
    """A markdown table of the phases, then what the worker recorded."""
    n = results["rows"]
    lines = [
        f"{n:,}-row result through one worker (idle RSS {results['rss_idle_kib'] / 1024:.1f} MiB);"
        f" whole run {results['elapsed_s']:.0f} s",
        "",
        "| phase | client | rows read | rows/s | masked | RSS before MiB | RSS peak MiB |"
        " VmHWM rise MiB | RSS after MiB | worker CPU s | rows per worker CPU s | load avg |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ("direct_stream", "direct_cursor"):
        if key in results:
            r = results[key]
            lines.append(
                f"| direct (reference) | {key.split('_')[1]} | {r['rows']:,} | "
                f"{r['rows_per_s']:,.0f} | – | – | – | – | – | – | – | {r['load1']:.2f} |"
            )
    for p in results["phases"]:
        rise = max(0, p["hwm_after_kib"] - p["hwm_before_kib"]) / 1024
        lines.append(
            f"| {p['phase']} | {p['mode']} | {p['rows']:,} | {p['rows_per_s']:,.0f} | "
            f"{p['masked']:,} of {p['rows']:,} | {p['rss_before_kib'] / 1024:.1f} | "
            f"{p['rss_peak_kib'] / 1024:.1f} | {rise:.1f} | {p['rss_after_kib'] / 1024:.1f} | "
            f"{p['worker_cpu_s']:.1f} | {p['rows_per_worker_cpu_s']:,.0f} | {p['load1']:.2f} |"
        )
    bad = [p for p in results["phases"] if p["out_of_order"]]
    if bad:
        lines.append(f"\nrows out of order: {[(p['phase'], p['out_of_order']) for p in bad]}")
    if "after_abort_ok" in results:
        lines.append(f"\nworker answers after the abandoned result: {results['after_abort_ok']}")
    lines.append("\nexchanges recorded (grouped by statement):")
    groups: dict[tuple, list[int]] = {}
    for e in results.get("exchanges", []):
        g = groups.setdefault((e["kind"], e["status"], e["sql"][:60]), [0, 0])
        g[0] += 1
        g[1] += e["row_count"] or 0
    for (kind, status, sql), (count, total) in groups.items():
        lines.append(f"* {count} × {kind} {status}, rows {total:,}: {sql}")
    if results.get("worker_log_errors"):
        lines.append(f"\nworker log errors: {results['worker_log_errors'][:5]}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

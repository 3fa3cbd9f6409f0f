"""Proxy benchmark: Gatehouse against the upstream direct, bare mitmproxy and nginx.

One run measures, side by side on the same upstream and the same load generator:

* throughput (requests/s) and latency p50/p99 for a 2 KB and a 100 KB JSON response
  full of personal data, with Gatehouse's default masking rule (e-mail, phone, SSN, card,
  IBAN) on; ``wrk`` (Debian package ``wrk``) drives the load;
* SSE time to first byte (first event of a stream whose events come 50 ms apart);
* scale-out: 1, 2, 4 Gatehouse workers behind HAProxy sharing one Redis (``--scale``);
* CPU seconds of the proxy process per request (``/proc/<pid>/stat`` utime + stime over
  the measured ``wrk`` run divided by its request count): it moves much less with
  machine load than requests/s, and the ratio to bare mitmproxy's is the overhead;
* a low-load row (``--low-connections``, default 1 connection) for the 2 KB response:
  at saturation p50 is queueing (about connections x CPU per request), below it the
  latency a proxy adds is its own work.

Usage (one line; the figures in docs/benchmarks.md came from it)::

    .venv/bin/python bench/proxy_throughput.py --duration 10 --connections 16 --scale 1,2,4

For an A/B of a change, ``--baseline-tree DIR`` also runs a Gatehouse worker from another
checkout (``git worktree add /tmp/base HEAD``) as system ``baseline``, and ``--rounds N``
measures every system N times, interleaved, reporting medians::

    .venv/bin/python bench/proxy_throughput.py --systems mitmproxy,gatehouse,baseline \
        --baseline-tree /tmp/base --sizes 2048 --sse 0 --scale '' --rounds 3

The upstream is ``tests/reliability/upstream.py`` (asyncio, one process). Bare mitmproxy
is ``mitmdump -q --mode reverse:…`` of the same mitmproxy version, no addons. nginx runs
with ``worker_processes 1`` and upstream keep-alive, from a temporary config. Gatehouse
runs its real worker (``python -m proxy_worker``) against a private Redis; it records every
exchange to the Redis stream (nobody ingests during the run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo.stack import free_port  # noqa: E402
from tests.reliability.harness import HAPROXY, NGINX, Gateway, Proc  # noqa: E402

WRK = shutil.which("wrk")
MITMDUMP = str(Path(sys.executable).parent / "mitmdump")
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: ``--systems`` keys -> row names, in measuring order.
SYSTEMS = {
    "direct": "upstream direct",
    "nginx": "nginx",
    "mitmproxy": "bare mitmproxy",
    "gatehouse": "gatehouse",
    "baseline": "baseline",
}


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system, all threads) a process has used so far, in seconds.

    ``nan`` when ``pid`` is ``None`` or the process is gone.
    """
    if pid is None:
        return float("nan")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)": field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def parse_wrk(out: str) -> dict[str, float]:
    """Requests/s, request count, p50 and p99 latency (ms), errors from ``wrk --latency``
    output."""

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": int(total.group(1)) if total else 0,
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
    }


def run_wrk(
    url: str, duration: int, connections: int, headers: dict[str, str], pid: int | None = None
) -> dict:
    """One ``wrk`` run (1 thread: the machine has 2 cores to share with the proxy).

    With ``pid`` (the proxy's process), ``cpu_ms_per_req`` is that process's CPU time
    over the run divided by the requests ``wrk`` completed, in milliseconds.
    """
    argv = [WRK, "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu0
    r = parse_wrk(out)
    r["cpu_ms_per_req"] = cpu * 1000 / r["requests"] if r["requests"] else float("nan")
    return r


def median_run(runs: list[dict]) -> dict:
    """Field-wise median of repeated runs (``rounds`` = how many)."""
    out: dict = {"rounds": len(runs)}
    for key in runs[0]:
        out[key] = statistics.median(r[key] for r in runs)
    return out


async def sse_ttfb(url: str, headers: dict[str, str], n: int) -> dict[str, float]:
    """Median and p99 time (ms) to the first byte of the body of ``n`` SSE streams."""
    times = []
    async with httpx.AsyncClient(timeout=30, headers=headers) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            async with c.stream("GET", url) as r:
                async for chunk in r.aiter_raw():
                    if chunk:
                        times.append((time.perf_counter() - t0) * 1000)
                        break
    times.sort()
    return {"ttfb_p50_ms": statistics.median(times), "ttfb_p99_ms": times[int(0.99 * (n - 1))]}


def nginx_config(tmp: Path, port: int, upstream_port: int) -> Path:
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
  upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location /api/ {{
      proxy_pass http://up/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""
    )
    return conf


def baseline_worker(gw: Gateway, tree: Path) -> Proc:
    """A second Gatehouse worker (name ``base``) on ``gw``, run from the checkout ``tree``."""
    gw.worker_ports.setdefault("base", free_port())
    gw.metrics_ports.setdefault("base", free_port())
    code = (
        f"import sys, runpy; sys.path.insert(0, {str(tree)!r}); "
        "runpy.run_module('proxy_worker', run_name='__main__', alter_sys=True)"
    )
    proc = Proc("base", [sys.executable, "-c", code], gw.worker_env("base"), gw.tmp)
    gw.procs["base"] = proc.start(gw.worker_ports["base"])
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument(
        "--low-connections",
        type=int,
        default=1,
        help="connections of the low-load 2 KB run (0 = skip it)",
    )
    parser.add_argument("--sse", type=int, default=50, help="SSE streams per system (0 = off)")
    parser.add_argument("--scale", default="1,2,4", help="worker counts behind HAProxy ('' = off)")
    parser.add_argument(
        "--sizes", default="2048,102400", help="JSON response sizes in bytes, comma-separated"
    )
    parser.add_argument(
        "--systems",
        default="direct,nginx,mitmproxy,gatehouse",
        help=f"systems to measure, comma-separated, of {','.join(SYSTEMS)}",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="checkout whose proxy_worker runs as system 'baseline' (A/B of a change)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure each system this many times (medians)"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    if not WRK:
        sys.exit("wrk is required: apt-get install wrk")
    wanted = [k.strip() for k in args.systems.split(",") if k.strip()]
    if unknown := [k for k in wanted if k not in SYSTEMS]:
        sys.exit(f"unknown system(s) {unknown}; choose from {list(SYSTEMS)}")
    if "baseline" in wanted and not args.baseline_tree:
        sys.exit("--systems baseline needs --baseline-tree")
    if args.baseline_tree and "baseline" not in wanted:
        wanted.append("baseline")
    tmp = Path(tempfile.mkdtemp(prefix="gh-bench-"))
    gw = Gateway(tmp / "gw", upstream_timeout=60)
    procs: list[Proc] = []
    results: dict = {
        "machine": {"nproc": os.cpu_count(), "loadavg": os.getloadavg()},
        "runs": {},
        "scale": {},
    }
    try:
        gw.start(1)
        up = gw.upstream_port
        #: name -> (base URL, headers, pid of the proxy process or None)
        systems: dict[str, tuple[str, dict[str, str], int | None]] = {}
        if "direct" in wanted:
            systems["upstream direct"] = (
                f"http://127.0.0.1:{up}",
                {},
                gw.procs["upstream"].p.pid,  # type: ignore[union-attr]
            )
        if "nginx" in wanted and NGINX:
            nginx_port = free_port()
            conf = nginx_config(tmp, nginx_port, up)
            nginx = Proc("nginx", [NGINX, "-c", str(conf)], dict(os.environ), tmp).start(nginx_port)
            procs.append(nginx)
            systems["nginx"] = (f"http://127.0.0.1:{nginx_port}/api", {}, None)  # master + worker
        if "mitmproxy" in wanted:
            mitm_port = free_port()
            mitm = Proc(
                "mitmdump",
                [MITMDUMP, "-q", "--mode", f"reverse:http://127.0.0.1:{up}@{mitm_port}"],
                dict(os.environ),
                tmp,
            ).start(mitm_port)
            procs.append(mitm)
            systems["bare mitmproxy"] = (f"http://127.0.0.1:{mitm_port}", {}, mitm.p.pid)  # type: ignore[union-attr]
        if "gatehouse" in wanted:
            w1 = gw.procs["w1"]
            systems["gatehouse"] = (f"{gw.worker_url()}/api", gw.headers(), w1.p.pid)  # type: ignore[union-attr]
        if "baseline" in wanted:
            base = baseline_worker(gw, args.baseline_tree.resolve())
            systems["baseline"] = (f"{gw.worker_url('base')}/api", gw.headers(), base.p.pid)  # type: ignore[union-attr]
        order = [SYSTEMS[k] for k in SYSTEMS if SYSTEMS[k] in systems]
        loads = [
            (f"{int(n) // 1024} KB" if int(n) % 1024 == 0 else f"{n} B", f"/json?size={n}", c)
            for n in args.sizes.split(",")
            if n.strip()
            for c in [args.connections]
        ]
        if args.low_connections and "2048" in args.sizes.split(","):
            loads.insert(1, ("2 KB low load", "/json?size=2048", args.low_connections))
        for size_name, path, conns in loads:
            rounds: dict[str, list[dict]] = {name: [] for name in order}
            for _ in range(args.rounds):
                for name in order:
                    base_url, hdrs, pid = systems[name]
                    # Warm up (connection pools, policy, caches), then measure.
                    run_wrk(base_url + path, 2, conns, hdrs)
                    r = run_wrk(base_url + path, args.duration, conns, hdrs, pid)
                    rounds[name].append(r)
                    print(f"{size_name:14} c{conns:<3} {name:16} {fmt_run(r)}", flush=True)
            results["runs"][size_name] = {
                "connections": conns,
                "systems": {name: median_run(rs) for name, rs in rounds.items()},
                "each": rounds,
            }
        if args.sse:
            sse: dict = {}
            for name in order:
                base_url, hdrs, _pid = systems[name]
                r = asyncio.run(sse_ttfb(base_url + "/sse?events=5&delay=50", hdrs, args.sse))
                sse[name] = r
                print(f"SSE     {name:16} {r}", flush=True)
            results["sse"] = sse
        counts = [int(x) for x in args.scale.split(",") if x.strip()]
        if counts and HAPROXY:
            for i in range(2, max(counts) + 1):
                gw.start_worker(f"w{i}")
            for n in counts:
                lb = gw.start_haproxy([f"w{i}" for i in range(1, n + 1)])
                run_wrk(f"{lb}/api/json?size=2048", 2, args.connections * 2, gw.headers())
                r = run_wrk(
                    f"{lb}/api/json?size=2048", args.duration, args.connections * 2, gw.headers()
                )
                results["scale"][n] = r
                print(f"scale   {n} worker(s) via haproxy {r}", flush=True)
                gw.procs.pop("haproxy").stop()
    finally:
        for p in procs:
            p.stop()
        gw.stop()
    print()
    print(report(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def fmt_run(r: dict) -> str:
    return (
        f"{r['rps']:9.0f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
        f"cpu {r['cpu_ms_per_req']:.3f} ms/req  errors {r['errors']}"
    )


def report(results: dict, args: argparse.Namespace) -> str:
    """Markdown tables of the results, with ratios against bare mitmproxy."""
    lines = []
    for size, block in results["runs"].items():
        runs = block["systems"]
        mitm = runs.get("bare mitmproxy", {})
        rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
        lines += [
            "",
            f"{size} JSON response, wrk -t1 -c{block['connections']} -d{args.duration}s{rounds}",
            "",
            "| system | req/s | p50 ms | p99 ms | errors | CPU ms/req |"
            " req/s vs bare mitmproxy | CPU vs bare mitmproxy | p50 over bare mitmproxy |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in runs.items():
            nan = float("nan")
            ratio = r["rps"] / mitm["rps"] if mitm.get("rps") else nan
            cpu_ratio = r["cpu_ms_per_req"] / mitm.get("cpu_ms_per_req", nan)
            over = r["p50_ms"] - mitm.get("p50_ms", nan)
            # "–": not measured (nginx runs a master and a worker), or no bare mitmproxy.
            cpu_ms = r["cpu_ms_per_req"]
            cpu = "–" if cpu_ms != cpu_ms else f"{cpu_ms:.3f}"
            cpu_vs = "–" if cpu_ratio != cpu_ratio else f"{cpu_ratio:.2f}"
            lines.append(
                f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['errors']:.0f} | {cpu} | {ratio:.2f} | {cpu_vs} | {over:+.2f} ms |"
            )
    if results.get("sse"):
        lines += [
            "",
            "SSE, time to first byte (ms)",
            "",
            "| system | p50 | p99 |",
            "|---|---:|---:|",
        ]
        for name, r in results["sse"].items():
            lines.append(f"| {name} | {r['ttfb_p50_ms']:.1f} | {r['ttfb_p99_ms']:.1f} |")
    if results["scale"]:
        one = results["scale"].get(1, {}).get("rps") or float("nan")
        lines += [
            "",
            f"Scale-out, 2 KB JSON via HAProxy, wrk -t1 -c{args.connections * 2}",
            "",
            "| workers | req/s | p50 ms | p99 ms | errors | vs 1 worker |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for n, r in results["scale"].items():
            lines.append(
                f"| {n} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['errors']} | {r['rps'] / one:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

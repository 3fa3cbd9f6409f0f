"""Proxy benchmark: Gatehouse against the upstream direct, bare mitmproxy and nginx.

One run measures, side by side on the same upstream and the same load generator:

* throughput (requests/s) and latency p50/p99 for a 2 KB and a 100 KB JSON response
  full of personal data, with Gatehouse's default masking rule (e-mail, phone, SSN, card,
  IBAN) on; ``wrk`` (Debian package ``wrk``) drives the load;
* SSE time to first byte (first event of a stream whose events come 50 ms apart);
* scale-out: 1, 2, 4 Gatehouse workers behind HAProxy sharing one Redis (``--scale``).

Usage (one line; the figures in docs/benchmarks.md came from it)::

    .venv/bin/python bench/proxy_throughput.py --duration 10 --connections 16 --scale 1,2,4

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


def parse_wrk(out: str) -> dict[str, float]:
    """Requests/s, p50 and p99 latency (ms), errors from ``wrk --latency`` output."""

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
    }


def run_wrk(url: str, duration: int, connections: int, headers: dict[str, str]) -> dict:
    """One ``wrk`` run (1 thread: the machine has 2 cores to share with the proxy)."""
    argv = [WRK, "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--sse", type=int, default=50, help="SSE streams per system")
    parser.add_argument("--scale", default="1,2,4", help="worker counts behind HAProxy ('' = off)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    if not WRK:
        sys.exit("wrk is required: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="gh-bench-"))
    gw = Gateway(tmp / "gw", upstream_timeout=60)
    procs: list[Proc] = []
    results: dict = {"machine": {"nproc": os.cpu_count()}, "runs": {}, "scale": {}}
    try:
        gw.start(1)
        up = gw.upstream_port
        mitm_port = free_port()
        procs.append(
            Proc(
                "mitmdump",
                [MITMDUMP, "-q", "--mode", f"reverse:http://127.0.0.1:{up}@{mitm_port}"],
                dict(os.environ),
                tmp,
            ).start(mitm_port)
        )
        systems = {
            "upstream direct": (f"http://127.0.0.1:{up}", {}),
            "bare mitmproxy": (f"http://127.0.0.1:{mitm_port}", {}),
            "gatehouse": (f"{gw.worker_url()}/api", gw.headers()),
        }
        if NGINX:
            nginx_port = free_port()
            conf = nginx_config(tmp, nginx_port, up)
            procs.append(
                Proc("nginx", [NGINX, "-c", str(conf)], dict(os.environ), tmp).start(nginx_port)
            )
            systems["nginx"] = (f"http://127.0.0.1:{nginx_port}/api", {})
        order = ["upstream direct", "nginx", "bare mitmproxy", "gatehouse"]
        for size_name, path in (("2 KB", "/json?size=2048"), ("100 KB", "/json?size=102400")):
            for name in order:
                if name not in systems:
                    continue
                base, hdrs = systems[name]
                # Warm up (connection pools, policy, caches), then measure.
                run_wrk(base + path, 2, args.connections, hdrs)
                r = run_wrk(base + path, args.duration, args.connections, hdrs)
                results["runs"].setdefault(size_name, {})[name] = r
                print(f"{size_name:7} {name:16} {r}", flush=True)
        for name in order:
            if name not in systems:
                continue
            base, hdrs = systems[name]
            r = asyncio.run(sse_ttfb(base + "/sse?events=5&delay=50", hdrs, args.sse))
            results["runs"].setdefault("SSE", {})[name] = r
            print(f"SSE     {name:16} {r}", flush=True)
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


def report(results: dict, args: argparse.Namespace) -> str:
    """Markdown tables of the results, with ratios against bare mitmproxy."""
    lines = []
    for size, runs in results["runs"].items():
        if size == "SSE":
            lines += [
                "",
                "SSE, time to first byte (ms)",
                "",
                "| system | p50 | p99 |",
                "|---|---:|---:|",
            ]
            for name, r in runs.items():
                lines.append(f"| {name} | {r['ttfb_p50_ms']:.1f} | {r['ttfb_p99_ms']:.1f} |")
            continue
        mitm = runs.get("bare mitmproxy", {})
        lines += [
            "",
            f"{size} JSON response, wrk -t1 -c{args.connections} -d{args.duration}s",
            "",
            "| system | req/s | p50 ms | p99 ms | errors | req/s vs bare mitmproxy |"
            " p50 over bare mitmproxy |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in runs.items():
            ratio = r["rps"] / mitm["rps"] if mitm.get("rps") else float("nan")
            over = r["p50_ms"] - mitm.get("p50_ms", float("nan"))
            lines.append(
                f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['errors']} | {ratio:.2f} | {over:+.2f} ms |"
            )
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

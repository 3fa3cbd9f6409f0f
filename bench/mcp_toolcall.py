"""MCP tool-call latency and streamed Responses first byte: Gatehouse against direct.

One run measures, side by side and interleaved (so machine load hits both equally):

1. **MCP ``tools/call``**: the latency of one call of a cheap tool (``weather``) on one
   initialized MCP session, made directly to a FastMCP server and through Gatehouse's
   proxy worker (reverse route ``/<slug>/mcp``, credential injected, MCP gate and response
   masking on). Both upstreams of the MCP test harness are measured: FastMCP's default
   (the ``tools/call`` POST is answered as ``text/event-stream``) and ``json_response``
   (answered as ``application/json``). The client is a minimal streamable-HTTP client on
   one keep-alive ``httpx`` connection per session (``initialize``,
   ``notifications/initialized``, then ``tools/call`` with ``Mcp-Session-Id``); a call's
   time is from sending the POST to having parsed its JSON-RPC result. As a reference for
   what any mitmproxy-based hop costs, the same calls also go through bare mitmproxy
   (``mitmdump -q --mode reverse:…``, the same version, no addons; ``--no-mitmproxy``
   leaves it out). Each round makes one call on each of the six sessions, in an order
   that rotates every round. Reported: mean, p50, p90, p99 (ms) of each, the proxied
   minus direct difference of each figure, the median of the paired per-round
   differences, and each proxy process's CPU time (``/proc/<pid>/stat``) per call it
   served over the measured rounds. Goal (issue): at most 1 ms added at p50.
2. **Streamed Responses API** (``POST /v1/responses`` with ``"stream": true``) to the demo
   LLM upstream (:mod:`demo.llm_upstream`, ``?delay_ms=N`` between events), directly and
   through the worker as an HTTP target with the same response masking on (the prompt
   carries an e-mail address that comes back split across ``response.output_text.delta``
   events, so the incremental SSE masker has work). Reported per stream (ms): time to the
   first body byte, to the first ``response.output_text.delta`` event, to the first
   non-empty delta text, and to the end of the stream; direct and gateway alternate.
   The upstream runs with ``TCP_NODELAY``, as shipped (see :func:`start_llm`;
   ``--upstream-nagle`` turns Nagle's algorithm back on, and first bytes are then ~40 ms
   late either way).

The parts are those of the MCP-path tests (:mod:`tests.proxy_worker.mcp.harness`): the
FastMCP upstream processes, a private ``redis-server`` and a real worker
(``python -m proxy_worker``) whose policy snapshot is written to Redis as the control
plane writes it; this script adds the demo LLM upstream process and an HTTP target for
it to that snapshot. Nothing ingests the recorded exchanges during the run.

Run (about 1.5 minutes with the defaults on a 2-core machine)::

    .venv/bin/python bench/mcp_toolcall.py
    .venv/bin/python bench/mcp_toolcall.py --calls 2000 --streams 200 --json /tmp/mcp.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mcp.types import LATEST_PROTOCOL_VERSION  # noqa: E402

from demo.stack import free_port  # noqa: E402
from tests.proxy_worker.mcp.harness import CRM, CRM_JSON, SECRET, SLUGS, McpGateway  # noqa: E402
from tests.reliability.harness import PY, Proc  # noqa: E402

MITMDUMP = str(Path(sys.executable).parent / "mitmdump")

try:
    from bench.approvals_stack import percentile
    from bench.proxy_throughput import cpu_seconds
except ImportError:  # run as a script
    from approvals_stack import percentile  # type: ignore[no-redef]
    from proxy_throughput import cpu_seconds  # type: ignore[no-redef]

#: Target id and slug of the LLM upstream's HTTP target (added to the MCP harness's).
LLM, LLM_SLUG = 90, "llm"
#: The prompt of the streamed Responses calls; the upstream answers "You said: " + it.
PROMPT = "Please write to jane.roe@example.com about order 1182 today"
#: Arguments of the measured tool call.
CITY = "Lisbon"


# -- figures -----------------------------------------------------------------------------


def summary(values_ms: list[float]) -> dict[str, float]:
    """Count, mean, min, p50, p90, p99 and max of ``values_ms`` (milliseconds in, out)."""
    if not values_ms:
        nan = float("nan")
        return {"n": 0, "mean": nan, "min": nan, "p50": nan, "p90": nan, "p99": nan, "max": nan}
    return {
        "n": len(values_ms),
        "mean": statistics.fmean(values_ms),
        "min": min(values_ms),
        "p50": percentile(values_ms, 50),
        "p90": percentile(values_ms, 90),
        "p99": percentile(values_ms, 99),
        "max": max(values_ms),
    }


def added(gateway: dict[str, float], direct: dict[str, float]) -> dict[str, float]:
    """Gateway minus direct for each figure of two :func:`summary` results (ms)."""
    return {k: gateway[k] - direct[k] for k in ("mean", "p50", "p90", "p99")}


# -- a minimal MCP client ----------------------------------------------------------------


def jsonrpc_messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a streamable-HTTP answer (``application/json`` body, or
    the ``data`` of each ``text/event-stream`` event)."""
    ctype = response.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        value = response.json()
        return value if isinstance(value, list) else [value]
    out = []
    text = response.text.replace("\r\n", "\n").replace("\r", "\n")
    for event in text.split("\n\n"):
        data = "\n".join(
            line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:")
        )
        if data:
            out.append(json.loads(data))
    return out


class McpClient:
    """One MCP session over streamable HTTP on one keep-alive ``httpx`` connection."""

    def __init__(self, name: str, url: str, headers: dict[str, str]) -> None:
        self.name = name
        self.url = url
        self.http = httpx.Client(
            headers={
                **headers,
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
            },
            timeout=httpx.Timeout(30),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self.session_id: str | None = None
        self.next_id = 0
        self.errors = 0

    def _post(self, message: dict[str, Any]) -> httpx.Response:
        headers = {"Mcp-Protocol-Version": LATEST_PROTOCOL_VERSION}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        return self.http.post(self.url, content=json.dumps(message), headers=headers)

    def request(self, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], httpx.Response]:
        """Send one JSON-RPC request; its response message and the HTTP response."""
        self.next_id += 1
        r = self._post({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        r.raise_for_status()
        for message in jsonrpc_messages(r):
            if message.get("id") == self.next_id:
                return message, r
        raise RuntimeError(f"{self.name}: no answer to {method} in {r.text[:300]!r}")

    def initialize(self) -> McpClient:
        """``initialize`` and ``notifications/initialized``; keeps the session id."""
        message, r = self.request(
            "initialize",
            {
                "protocolVersion": LATEST_PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "gatehouse-bench", "version": "1"},
            },
        )
        if "result" not in message:
            raise RuntimeError(f"{self.name}: initialize failed: {message}")
        self.session_id = r.headers.get("mcp-session-id")
        if not self.session_id:
            raise RuntimeError(f"{self.name}: no Mcp-Session-Id in the initialize answer")
        note = self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if note.status_code != 202:
            raise RuntimeError(f"{self.name}: notifications/initialized -> {note.status_code}")
        return self

    def call_ms(self, tool: str = "weather", arguments: dict[str, Any] | None = None) -> float:
        """Time of one ``tools/call`` (ms), from sending the POST to a parsed result.

        A JSON-RPC error or an unexpected result counts in :attr:`errors`.
        """
        t0 = time.perf_counter()
        message, _r = self.request("tools/call", {"name": tool, "arguments": arguments or {}})
        elapsed = (time.perf_counter() - t0) * 1000
        content = (message.get("result") or {}).get("content") or [{}]
        if message.get("error") or f"sunny in {CITY}" not in str(content[0].get("text")):
            self.errors += 1
        return elapsed

    def close(self) -> None:
        if self.session_id:
            with contextlib.suppress(httpx.HTTPError):
                self.http.delete(self.url, headers={"Mcp-Session-Id": self.session_id})
        self.http.close()


def start_mitmdump(gw: McpGateway) -> tuple[int, int, Proc]:
    """Bare mitmproxy (``mitmdump -q``, the worker's mitmproxy version, no addons) as a
    reverse proxy in front of each MCP upstream; returns its SSE and JSON ports and the
    process. The client sends the upstream credential itself."""
    sse, js = free_port(), free_port()
    argv = [MITMDUMP, "-q"]
    for up, port in ((gw.sse_port, sse), (gw.json_port, js)):
        argv += ["--mode", f"reverse:http://127.0.0.1:{up}@127.0.0.1:{port}"]
    proc = Proc("mitmdump", argv, dict(os.environ), gw.tmp).start(sse)
    gw.procs["mitmdump"] = proc
    return sse, js, proc


def bench_mcp(
    gw: McpGateway, calls: int, warmup: int, mitm: tuple[int, int, Proc] | None = None
) -> dict[str, Any]:
    """``calls`` measured rounds (after ``warmup``) of one ``weather`` call on each
    session: SSE and json_response upstream, each direct, through the gateway and, with
    ``mitm`` (:func:`start_mitmdump`), through bare mitmproxy.

    Returns per system the :func:`summary` of call times (ms) and errors; per upstream
    the figures added by the gateway (and by bare mitmproxy) over direct (ms) with the
    median of the paired per-round differences (ms); and the CPU time of each proxy
    process per call it served (ms).
    """
    direct_headers = {"Authorization": f"Bearer {SECRET}"}
    ports = {"sse": gw.sse_port, "json": gw.json_port}
    slugs = {"sse": SLUGS[CRM], "json": SLUGS[CRM_JSON]}
    clients: dict[str, McpClient] = {}
    pids: dict[str, int] = {"gateway": gw.procs["worker"].p.pid}  # type: ignore[union-attr]
    for up in ("sse", "json"):
        url = f"http://127.0.0.1:{ports[up]}/mcp"
        clients[f"{up} direct"] = McpClient(f"{up} direct", url, direct_headers)
        if mitm:
            url = f"http://127.0.0.1:{mitm[0] if up == 'sse' else mitm[1]}/mcp"
            clients[f"{up} mitmproxy"] = McpClient(f"{up} mitmproxy", url, direct_headers)
        clients[f"{up} gateway"] = McpClient(f"{up} gateway", gw.url(slugs[up]), gw.headers())
    if mitm:
        pids["mitmproxy"] = mitm[2].p.pid  # type: ignore[union-attr]
    order = list(clients)
    k = len(order)
    times: dict[str, list[float]] = {name: [] for name in order}
    args = {"city": CITY}
    try:
        for c in clients.values():
            c.initialize()
        for i in range(warmup):
            for name in order[i % k :] + order[: i % k]:
                clients[name].call_ms("weather", args)
        for c in clients.values():
            c.errors = 0
        cpu0 = {p: cpu_seconds(pid) for p, pid in pids.items()}
        for i in range(calls):
            for name in order[i % k :] + order[: i % k]:
                times[name].append(clients[name].call_ms("weather", args))
        cpu = {p: cpu_seconds(pid) - cpu0[p] for p, pid in pids.items()}
    finally:
        for c in clients.values():
            c.close()
    systems = {name: {**summary(ts), "errors": clients[name].errors} for name, ts in times.items()}
    out: dict[str, Any] = {
        "systems": systems,
        "cpu_ms_per_call": {
            p: c * 1000 / (2 * calls) if calls else float("nan") for p, c in cpu.items()
        },
        "added": {},
    }
    for up in ("sse", "json"):
        for proxy in pids:
            d, g = times[f"{up} direct"], times[f"{up} {proxy}"]
            out["added"][f"{up} {proxy}"] = {
                **added(systems[f"{up} {proxy}"], systems[f"{up} direct"]),
                "paired_median": statistics.median(b - a for a, b in zip(d, g, strict=True)),
            }
    return out


# -- streamed Responses ------------------------------------------------------------------


def start_llm(gw: McpGateway, nagle: bool = False) -> tuple[str, int]:
    """Start :mod:`demo.llm_upstream` and publish a snapshot with an HTTP target ``llm``
    in front of it (the harness's MCP targets and response masking kept); returns the
    upstream's ``(API key, port)``.

    The demo's handlers set ``TCP_NODELAY`` (as provider front ends and asyncio servers,
    mitmproxy included, do). ``nagle`` turns Nagle's algorithm back on: each small event
    written after the response head then waits for the peer's delayed ACK (about 40 ms on
    Linux), and every first byte is ~40 ms late, direct or not.
    """
    port = free_port()
    key = "sk-bench-" + secrets.token_hex(8)
    env = {**os.environ, "DEMO_LLM_API_KEY": key, "PYTHONUNBUFFERED": "1"}
    opts = ["--host", "127.0.0.1", "--port", str(port), "--quiet"]
    if nagle:
        code = (
            "import sys, demo.llm_upstream as m; m.LLMHandler.disable_nagle_algorithm = False; "
            "sys.exit(m.main(sys.argv[1:]))"
        )
        argv = [PY, "-c", code, *opts]
    else:
        argv = [PY, "-m", "demo.llm_upstream", *opts]
    gw.procs["llm"] = Proc("llm", argv, env, gw.tmp).start(port)
    llm_target = {
        "id": LLM,
        "slug": LLM_SLUG,
        "kind": "http",
        "upstream": f"http://127.0.0.1:{port}",
        "auth_header": "Authorization",
        "auth_scheme": "Bearer",
        "credential": Fernet(gw.worker_key).encrypt(key.encode()).decode(),
        "default_action": "allow",
        "approval_timeout": 30,
        "binary_bodies": "refuse",
    }
    gw.policy(targets=[gw.target(t) for t in SLUGS] + [llm_target])
    return key, port


def stream_once(client: httpx.Client, url: str, body: bytes) -> dict[str, Any]:
    """One streamed ``POST /v1/responses``: times (ms) to the first body byte, the first
    ``response.output_text.delta`` event, the first non-empty delta text and the end of
    the stream, and the answer's text (joined deltas)."""
    t0 = time.perf_counter()
    first_byte = first_delta = first_text = None
    pieces: list[str] = []
    buf = b""
    with client.stream("POST", url, content=body) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            now = time.perf_counter()
            if first_byte is None and chunk:
                first_byte = now
            buf = (buf + chunk).replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                lines = event.split(b"\n")
                data = b"\n".join(x[5:].lstrip(b" ") for x in lines if x.startswith(b"data:"))
                if not data or data == b"[DONE]":
                    continue
                obj = json.loads(data)
                if obj.get("type") != "response.output_text.delta":
                    continue
                if first_delta is None:
                    first_delta = now
                if obj.get("delta"):
                    pieces.append(obj["delta"])
                    if first_text is None:
                        first_text = now
    end = time.perf_counter()

    def ms(t: float | None) -> float:
        return (t - t0) * 1000 if t is not None else float("nan")

    return {
        "first_byte": ms(first_byte),
        "first_delta": ms(first_delta),
        "first_text": ms(first_text),
        "total": ms(end),
        "text": "".join(pieces),
    }


def bench_responses(
    gw: McpGateway, key: str, port: int, streams: int, delay_ms: int
) -> dict[str, Any]:
    """``streams`` streamed Responses calls each way (after 5 warm-up ones), alternating
    direct and gateway; per system the :func:`summary` (ms) of each time of
    :func:`stream_once`, and the answer text of the last stream (masking check)."""
    body = json.dumps(
        {"model": "gatehouse-echo", "input": PROMPT, "stream": True, "store": False}
    ).encode()
    query = f"?delay_ms={delay_ms}" if delay_ms else ""
    systems = {
        "direct": (
            f"http://127.0.0.1:{port}/v1/responses{query}",
            {"Authorization": f"Bearer {key}"},
        ),
        "gateway": (gw.url(LLM_SLUG, "/v1/responses") + query, gw.headers()),
    }
    clients = {
        name: httpx.Client(
            headers={**headers, "Content-Type": "application/json"},
            timeout=httpx.Timeout(60),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        for name, (_url, headers) in systems.items()
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    order = list(systems)
    try:
        for i in range(5 + streams):
            for name in order[i % 2 :] + order[: i % 2]:
                r = stream_once(clients[name], systems[name][0], body)
                if i >= 5:
                    runs[name].append(r)
    finally:
        for c in clients.values():
            c.close()
    out: dict[str, Any] = {"systems": {}, "added_p50": {}}
    for name, rs in runs.items():
        out["systems"][name] = {
            k: summary([r[k] for r in rs]) for k in ("first_byte", "first_delta", "first_text")
        }
        out["systems"][name]["total"] = summary([r["total"] for r in rs])
        out["systems"][name]["text"] = rs[-1]["text"] if rs else ""
    gateway, direct = out["systems"]["gateway"], out["systems"]["direct"]
    for k in ("first_byte", "first_delta", "first_text", "total"):
        out["added_p50"][k] = gateway[k]["p50"] - direct[k]["p50"]
    return out


# -- report ------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    """Markdown tables of the results (ms)."""
    m, args = results["machine"], results["args"]
    lines = [
        f"{m['date']}  nproc {m['nproc']}  loadavg before {m['loadavg_before']}"
        f"  after {m['loadavg_after']}  python {m['python']}",
    ]
    if mcp := results.get("mcp"):
        lines += [
            "",
            f"MCP tools/call `weather`, {args['calls']} rounds after {args['warmup']} warm-up, "
            "one session per row, rows interleaved (ms)",
            "",
            "| system | mean | p50 | p90 | p99 | max | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, s in mcp["systems"].items():
            lines.append(
                f"| {name} | {s['mean']:.3f} | {s['p50']:.3f} | {s['p90']:.3f} | "
                f"{s['p99']:.3f} | {s['max']:.2f} | {s['errors']} |"
            )
        lines += [
            "",
            "Added by the gateway (gateway minus direct, ms)",
            "",
            "| upstream, proxy | mean | p50 | p90 | p99 | median of paired differences |"
            " p50 goal ≤ 1 ms |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for up, a in mcp["added"].items():
            verdict = "met" if a["p50"] <= 1.0 else "**not met**"
            if not up.endswith("gateway"):
                verdict = "(reference)"
            lines.append(
                f"| {up} | {a['mean']:+.3f} | {a['p50']:+.3f} | {a['p90']:+.3f} | "
                f"{a['p99']:+.3f} | {a['paired_median']:+.3f} | {verdict} |"
            )
        cpu = ", ".join(f"{p} {v:.3f} ms" for p, v in mcp["cpu_ms_per_call"].items())
        lines.append(f"\nCPU time of the proxy process per call it served: {cpu}")
    if resp := results.get("responses"):
        lines += [
            "",
            f"Streamed POST /v1/responses, {args['streams']} streams each way, "
            f"{args['delay_ms']} ms between events, upstream "
            f"{'Nagle on' if args['upstream_nagle'] else 'TCP_NODELAY'}, alternating (ms)",
            "",
            "| system | first byte p50 | p90 | first delta p50 | p90 | first text p50 | p90 |"
            " total p50 | p90 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, s in resp["systems"].items():
            cells = " | ".join(
                f"{s[k]['p50']:.2f} | {s[k]['p90']:.2f}"
                for k in ("first_byte", "first_delta", "first_text", "total")
            )
            lines.append(f"| {name} | {cells} |")
        a = resp["added_p50"]
        lines.append(
            f"\nadded at p50: first byte {a['first_byte']:+.2f} ms, first delta "
            f"{a['first_delta']:+.2f} ms, first text {a['first_text']:+.2f} ms, "
            f"total {a['total']:+.2f} ms"
        )
        for name, s in resp["systems"].items():
            lines.append(f"{name} answer: {s['text']!r}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="measured MCP rounds")
    parser.add_argument("--warmup", type=int, default=50, help="MCP warm-up rounds")
    parser.add_argument(
        "--streams", type=int, default=100, help="streamed Responses calls each way (0 = skip)"
    )
    parser.add_argument(
        "--delay-ms", type=int, default=10, help="the LLM upstream's delay between events (ms)"
    )
    parser.add_argument(
        "--upstream-nagle",
        action="store_true",
        help="turn Nagle's algorithm back on in the LLM upstream (first bytes ~40 ms late)",
    )
    parser.add_argument("--no-mcp", action="store_true", help="skip the MCP part")
    parser.add_argument(
        "--no-mitmproxy", action="store_true", help="no bare-mitmproxy rows in the MCP part"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gh-bench-mcp-"))
    gw = McpGateway(tmp / "gw")
    results: dict[str, Any] = {
        "args": vars(args) | {"json": str(args.json) if args.json else None},
        "machine": {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        },
    }
    try:
        gw.start()
        key, llm_port = start_llm(gw, nagle=args.upstream_nagle)
        if not args.no_mcp:
            mitm = None if args.no_mitmproxy else start_mitmdump(gw)
            results["mcp"] = bench_mcp(gw, args.calls, args.warmup, mitm)
            print("MCP done", flush=True)
        if args.streams:
            results["responses"] = bench_responses(gw, key, llm_port, args.streams, args.delay_ms)
            print("Responses done", flush=True)
    except Exception:
        print(gw.log()[-4000:], file=sys.stderr)
        raise
    finally:
        gw.stop()
        results["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

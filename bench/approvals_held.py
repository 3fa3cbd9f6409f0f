#!/usr/bin/env python
"""1,000 requests held at once on one proxy worker.

Usage (from the repository root; PostgreSQL and Redis running)::

    .venv/bin/python bench/approvals_held.py [--held 1000] [--free 100]

Starts one proxy worker and ingest against a private database (``gatehouse_bench_appr``)
and Redis prefix, then:

1. sends ``--held`` wait-mode requests concurrently (one TCP connection each) and waits
   until the worker's heartbeat lists them all as held;
2. while they are held, sends ``--free`` sequential requests that need no approval and
   reports their latency (other traffic keeps flowing);
3. reads the worker's RSS and thread count (``/proc/<pid>/status``) and Redis's
   ``connected_clients`` before and while holding (memory per held request = RSS delta /
   held; no thread or connection per held request);
4. decides every request through the control plane's real action (``do_decide``; even
   numbers approved, odd denied) and checks that each client got the right answer
   (200 from the upstream, or 403 ``approval_denied``) and that only approved ones
   reached the upstream;
5. scans the worker's log for Redis pool errors and tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

try:
    from bench.approvals_stack import percentile, proc_status, start_stack
except ImportError:  # run as a script
    from approvals_stack import percentile, proc_status, start_stack  # type: ignore[no-redef]


def _decide_all(expected: int) -> tuple[int, float]:
    """Approve even, deny odd pending bench requests once ``expected`` rows exist;
    returns (decided, seconds spent deciding)."""
    from django.contrib.auth import get_user_model

    from approvals.actions import do_decide
    from approvals.models import ApprovalRequest

    approver = get_user_model().objects.get(username="approver")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pending = list(ApprovalRequest.objects.filter(status="pending", url__contains="/held/"))
        if len(pending) >= expected:
            break
        time.sleep(0.2)
    t0 = time.perf_counter()
    for req in pending:
        n = int(req.url.rsplit("/held/", 1)[1].split("?")[0])
        do_decide(req, acting_user=approver, verdict="approve" if n % 2 == 0 else "deny")
    return len(pending), time.perf_counter() - t0


async def run(args, env) -> None:
    from controlplane.redis import client, keys
    from proxy_worker.contract import WorkerHeartbeat

    r = client()
    pid = env.stack.procs["proxy"].pid
    auth = {"Authorization": f"Bearer {env.token}"}
    try:
        async with httpx.AsyncClient(headers=auth, timeout=30) as free:
            for j in range(20):  # warm up
                (await free.get(f"{env.proxy_url}/free/warm{j}")).raise_for_status()
            base = proc_status(pid)
            base_clients = r.info("clients")["connected_clients"]

            limits = httpx.Limits(max_connections=args.held + 10, max_keepalive_connections=0)
            async with httpx.AsyncClient(headers=auth, timeout=900, limits=limits) as held:
                t0 = time.perf_counter()
                tasks = [
                    asyncio.create_task(held.get(f"{env.proxy_url}/held/{i}"))
                    for i in range(args.held)
                ]
                hb_key = keys().worker_heartbeat("bench-worker-1")
                count = 0
                last_print = t0
                while time.perf_counter() - t0 < 300:
                    raw = r.get(hb_key)
                    count = len(WorkerHeartbeat.from_json(raw).held) if raw else 0
                    if count >= args.held:
                        break
                    done = sum(t.done() for t in tasks)
                    if done and count + done >= args.held:  # some answered without a hold
                        break
                    await asyncio.sleep(0.25)
                    if time.perf_counter() - last_print >= 10:
                        last_print = time.perf_counter()
                        print(f"  {last_print - t0:5.1f} s: {count} held, {done} answered")
                all_held_s = time.perf_counter() - t0
                during = proc_status(pid)
                during_clients = r.info("clients")["connected_clients"]

                latencies = []
                for j in range(args.free):
                    s = time.perf_counter()
                    resp = await free.get(f"{env.proxy_url}/free/{j}")
                    latencies.append((time.perf_counter() - s) * 1000)
                    assert resp.status_code == 200, resp.text

                decided, decide_s = await asyncio.to_thread(_decide_all, args.held)
                t1 = time.perf_counter()
                results = await asyncio.gather(*tasks, return_exceptions=True)
                drain_s = time.perf_counter() - t1
            after = proc_status(pid)
    finally:
        env.stack.stop()

    correct = wrong = errors = 0
    wrong_answers: list[tuple[int, int, str]] = []
    for i, res in enumerate(results):
        if isinstance(res, BaseException):
            errors += 1
            continue
        want_ok = i % 2 == 0
        denied = res.status_code == 403 and res.json()["error"]["code"] == "approval_denied"
        if (want_ok and res.status_code == 200) or (not want_ok and denied):
            correct += 1
        else:
            wrong += 1
            wrong_answers.append((i, res.status_code, res.text[:200]))
    reached = {p for p in env.upstream.arrivals if p.startswith("/held/")}
    leaked = [p for p in reached if int(p.rsplit("/", 1)[1]) % 2 == 1]
    log = (env.log_dir / "proxy.log").read_text(errors="replace")
    pool_errors = log.count("Too many connections") + log.count("MaxConnectionsError")
    tracebacks = log.count("Traceback")

    rss_delta = during["VmRSS"] - base["VmRSS"]
    print(f"held at once: {count} of {args.held} (all held after {all_held_s:.1f} s)")
    print(
        f"decided: {decided} in {decide_s:.1f} s; answers correct {correct}, wrong {wrong},"
        f" client errors {errors}; all answered {drain_s:.2f} s after the last decision"
    )
    print(f"upstream reached by approved: {len(reached)}; by denied: {len(leaked)}")
    print(
        f"worker RSS: {base['VmRSS'] / 1024:.1f} MiB before, {during['VmRSS'] / 1024:.1f} MiB"
        f" holding, {after['VmRSS'] / 1024:.1f} MiB after;"
        f" {rss_delta / max(1, count):.1f} KiB per held request"
    )
    print(
        f"worker threads: {base['Threads']} before, {during['Threads']} holding,"
        f" {after['Threads']} after"
    )
    print(
        f"redis connected_clients (all processes): {base_clients} before, {during_clients} holding"
    )
    print(
        f"other traffic while holding ({args.free} sequential requests):"
        f" p50 {percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms,"
        f" max {max(latencies):.1f} ms"
    )
    print(f"worker log: {pool_errors} Redis pool errors, {tracebacks} tracebacks")
    for i, status, text in wrong_answers[:10]:
        print(f"  wrong answer to request {i}: HTTP {status} {text}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--held", type=int, default=1000)
    ap.add_argument("--free", type=int, default=100)
    ap.add_argument("--db", default="gatehouse_bench_appr")
    args = ap.parse_args()
    env = start_stack(  # synchronous Django set-up, before the event loop
        ["proxy", "ingest"],
        db_name=args.db,
        prefix="ghbenchappr",
        rules={"/held/*": {"approval_mode": "wait", "approval_timeout": 600}},
    )
    asyncio.run(run(args, env))


if __name__ == "__main__":
    main()

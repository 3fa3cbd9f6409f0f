"""Shared set-up of the approvals benchmarks: a private Gatehouse stack and a recording
upstream.

The benchmark process configures Django for its own database
(``GATEHOUSE_BENCH_DB``, default ``gatehouse_bench_appr``) and Redis prefix
(``ghbenchappr``), migrates, seeds the demo, adds a target ``bench`` in front of an
in-process HTTP server that records the arrival time of each request, and starts the
real processes it needs (``demo.stack.Stack``). Nothing here is used by Gatehouse itself.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PASSWORD = "bench-" + secrets.token_urlsafe(8)


class Recorder(BaseHTTPRequestHandler):
    """Answers 200 JSON and records ``(path, time.time())`` of every request."""

    def _answer(self) -> None:
        self.server.arrivals[self.path] = time.time()
        self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        out = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer  # noqa: N815 - http.server API

    def log_message(self, *args) -> None:
        pass


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def configure_django(db_name: str, prefix: str) -> dict[str, str]:
    """Point this process at the benchmark database and Redis prefix, set up Django,
    create the database, migrate, and return the environment for child processes."""
    env = {
        "GATEHOUSE_DB_NAME": db_name,
        "GATEHOUSE_REDIS_PREFIX": prefix,
        "GATEHOUSE_REDIS_URL": os.environ.get("GATEHOUSE_REDIS_URL", "redis://127.0.0.1:6379/13"),
        "GATEHOUSE_SECRET_KEY": secrets.token_urlsafe(40),
        "GATEHOUSE_FIELD_KEYS": Fernet.generate_key().decode(),
        "GATEHOUSE_WORKER_KEY": Fernet.generate_key().decode(),
        "GATEHOUSE_MASKING_KEY": secrets.token_urlsafe(32),
        "GATEHOUSE_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    from demo.run import ensure_database

    ensure_database(db_name)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def start_stack(
    names: list[str], *, db_name: str, prefix: str, rules: dict[str, dict]
) -> SimpleNamespace:
    """Seed, add target ``bench`` with ``rules`` (path glob -> AccessRule fields), start
    ``names``; returns ``stack``, ``upstream``, ``token``, ``proxy_url``, ``web_url``."""
    env = configure_django(db_name, prefix)
    from django.conf import settings
    from django.core.management import call_command

    from controlplane.models import AccessRule, Target
    from controlplane.redis import client
    from demo.stack import Ports, Stack

    r = client()
    for key in r.scan_iter(f"{settings.REDIS_PREFIX}:*"):
        r.delete(key)
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    upstream.arrivals = {}
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()

    ports = Ports.free()
    tmp = Path(tempfile.mkdtemp(prefix="gh-bench-appr-"))
    token_file = tmp / "token"
    call_command(
        "seed_demo",
        password=PASSWORD,
        datasette_url="http://127.0.0.1:9",
        datasette_token="",
        llm_url="http://127.0.0.1:9",
        llm_key="",
        approval_timeout=120,
        token_file=token_file,
        verbosity=0,
    )
    target, _ = Target.objects.update_or_create(
        slug="bench",
        defaults={
            "name": "Bench upstream",
            "upstream_url": f"http://127.0.0.1:{upstream.server_port}",
            "default_action": "allow",
        },
    )
    AccessRule.objects.filter(target=target).delete()
    for i, (pattern, fields) in enumerate(rules.items()):
        AccessRule.objects.create(
            name=f"bench {pattern}",
            position=1 + i,
            target=target,
            path_pattern=pattern,
            action="approve",
            **fields,
        )
    env.update(
        {
            "GATEHOUSE_SITE_URL": f"http://127.0.0.1:{ports.web}",
            "GATEHOUSE_SPOOL_DIR": str(tmp / "spool"),
            "GATEHOUSE_WORKER_ID": "bench-worker-1",
        }
    )
    stack = Stack(ports=ports, env=env, log_dir=tmp / "log", customers_db=tmp / "none.db")
    try:
        stack.start(names)
    except Exception:
        stack.stop()  # never leave half a stack running
        raise
    import httpx

    token = token_file.read_text().strip()
    proxy_url = f"http://127.0.0.1:{ports.proxy}/bench"
    deadline = time.monotonic() + 20
    auth = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < deadline:  # until the worker has the bench target
        try:
            if httpx.get(f"{proxy_url}/ping", headers=auth).is_success:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return SimpleNamespace(
        stack=stack,
        upstream=upstream,
        token=token,
        proxy_url=proxy_url,
        web_url=f"http://127.0.0.1:{ports.web}",
        log_dir=tmp / "log",
    )


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS`` (KiB) and ``Threads`` of a process, from ``/proc/<pid>/status``."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out

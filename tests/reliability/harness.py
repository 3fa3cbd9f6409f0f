"""Real processes to break: a private Redis, proxy workers, the fault upstream, HAProxy.

Used by the fault tests in this package and by ``bench/proxy_*.py``. Nothing here needs
Django: the policy snapshot is written to Redis exactly as the control plane would
(:mod:`proxy_worker.contract`), so a worker can run against a Redis server that a test
owns and may stop. Every process writes to ``<tmp>/<name>.log``; :func:`all_logs`
reads them back for the leak checks.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from cryptography.fernet import Fernet

from demo.stack import free_port, wait_port
from proxy_worker.contract import PUBLISH_SNAPSHOT_LUA, SCHEMA_VERSION, ExchangeMessage, Keys
from proxy_worker.policy import hash_token

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _sbin(name: str) -> str | None:
    """``name`` on PATH or in /usr/sbin (Debian puts daemons there, off a user's PATH)."""
    path = shutil.which(name) or f"/usr/sbin/{name}"
    return path if Path(path).exists() else None


HAPROXY = _sbin("haproxy")
NGINX = _sbin("nginx")

#: The credential the gateway injects for the test target; must never leak.
UPSTREAM_SECRET = "upstream-secret-" + secrets.token_hex(8)


class Proc:
    """One child process with its log file; killed with its process group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.p: subprocess.Popen | None = None

    def start(self, port: int | None = None, timeout: float = 30.0) -> Proc:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.p = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if port:
            wait_port(port, timeout, self.p, self.name)
        return self

    @property
    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.p is not None
            os.killpg(self.p.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if not self.alive:
            return
        assert self.p is not None
        self.signal(signal.SIGTERM)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the process group and reap it."""
        if self.p is None:
            return
        if self.p.poll() is None:
            self.signal(signal.SIGKILL)
        self.p.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class RedisServer:
    """A private ``redis-server`` on a free port, AOF on, so it can be stopped and restarted
    with its data (as a production Redis with persistence would be)."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = Proc(
            f"redis-{self.port}",
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
            ],
            dict(os.environ),
            tmp,
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc.start(self.port)
        return self

    def stop(self) -> None:
        self.proc.stop()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


class TcpGate:
    """A TCP relay in a thread: ``close()`` cuts every connection and refuses new ones
    (the service looks down), ``open()`` serves again on the same port."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _call(self, coro) -> Any:  # noqa: ANN001
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.close()
            return
        self._writers |= {cw, uw}
        await asyncio.gather(self._pipe(cr, uw), self._pipe(ur, cw))
        self._writers -= {cw, uw}

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def open(self) -> TcpGate:
        self._call(self._open())
        return self

    def close(self) -> None:
        self._call(self._close())

    def shutdown(self) -> None:
        self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# -- the policy a test deployment runs -----------------------------------------------------


def snapshot(
    version: int,
    *,
    upstream_url: str,
    token_hashes: list[str],
    worker_key: bytes,
    extra_rules: list[dict] | None = None,
    masking: bool = True,
) -> dict[str, Any]:
    """A policy document (the shape of ``controlplane.snapshot.compile_snapshot``).

    Targets: ``api`` (the fault upstream, credential injected), ``down`` (a closed port).
    Rules: ``?hold=1`` needs approval (20 s), ``/forbidden*`` is denied. Masking: the
    demo's default rule (e-mail, phone, SSN, card, IBAN, both directions).
    """
    cred = Fernet(worker_key).encrypt(UPSTREAM_SECRET.encode()).decode()
    rules = [
        {
            "id": 1,
            "name": "Held on request",
            "target_id": 1,
            "agent_ids": None,
            "methods": [],
            "path_pattern": "*",
            "query_pattern": "hold=1",
            "body_pattern": None,
            "action": "approve",
            "approval_timeout": 20,
            "reason": "test hold",
        },
        {
            "id": 2,
            "name": "Forbidden",
            "target_id": None,
            "agent_ids": None,
            "methods": [],
            "path_pattern": "/forbidden*",
            "query_pattern": None,
            "body_pattern": None,
            "action": "deny",
            "approval_timeout": None,
            "reason": "test deny",
        },
        *(extra_rules or []),
    ]
    return {
        "v": SCHEMA_VERSION,
        "version": version,
        "generated_at": time.time(),
        "targets": [
            {
                "id": 1,
                "slug": "api",
                "upstream": upstream_url,
                "auth_header": "Authorization",
                "auth_scheme": "Bearer",
                "credential": cred,
                "default_action": "allow",
                "approval_timeout": 20,
            },
            {
                "id": 2,
                "slug": "down",
                "upstream": f"http://127.0.0.1:{free_port()}",
                "auth_header": "Authorization",
                "auth_scheme": "Bearer",
                "credential": None,
                "default_action": "allow",
                "approval_timeout": 20,
            },
        ],
        "agents": [{"id": 1, "name": "agent", "owner": "admin", "token_hashes": token_hashes}],
        "masking_rules": [
            {
                "id": 1,
                "name": "Personal data",
                "entity_types": ["EMAIL", "PHONE", "US_SSN", "CREDIT_CARD", "IBAN"],
                "field_names": [],
                "custom_pattern": None,
                "strategy": "redact",
                "direction": "both",
                "target_ids": None,
            }
        ]
        if masking
        else [],
        "access_rules": rules,
    }


def publish(r: redis.Redis, keys: Keys, doc: dict[str, Any]) -> None:
    """Store and announce a snapshot exactly as ``controlplane.snapshot.publish_snapshot``."""
    r.set(keys.policy_version, doc["version"])
    r.eval(
        PUBLISH_SNAPSHOT_LUA,
        2,
        keys.policy_snapshot,
        keys.policy_updates,
        doc["version"],
        json.dumps(doc, separators=(",", ":")),
    )


@dataclass
class Gateway:
    """A test deployment: private Redis, the fault upstream, N proxy workers, HAProxy."""

    tmp: Path
    redis: RedisServer = field(init=False)
    upstream_port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: "gh_testtest_" + secrets.token_urlsafe(24))
    worker_key: bytes = field(default_factory=Fernet.generate_key)
    masking_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    prefix: str = field(default_factory=lambda: "ghrel" + secrets.token_hex(3))
    upstream_timeout: float = 2.0
    version: int = 0
    procs: dict[str, Proc] = field(default_factory=dict)
    worker_ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    lb_port: int | None = None
    #: Extra environment for the workers (e.g. ``GATEHOUSE_MAX_MASK_BYTES``).
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(self.tmp)
        self.keys = Keys(self.prefix)

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"

    def start(self, workers: int = 1, *, masking: bool = True) -> Gateway:
        """Start Redis, the upstream, publish the policy and start ``workers`` workers."""
        self.redis.start()
        self.procs["upstream"] = Proc(
            "upstream",
            [PY, "-m", "tests.reliability.upstream", "--port", str(self.upstream_port)],
            dict(os.environ),
            self.tmp,
        ).start(self.upstream_port)
        self.publish(masking=masking)
        for i in range(workers):
            self.start_worker(f"w{i + 1}")
        return self

    def publish(self, extra_rules: list[dict] | None = None, masking: bool = True) -> int:
        """Publish the next policy version; returns it."""
        self.version += 1
        doc = snapshot(
            self.version,
            upstream_url=self.upstream_url,
            token_hashes=[hash_token(self.token)],
            worker_key=self.worker_key,
            extra_rules=extra_rules,
            masking=masking,
        )
        publish(self.redis.client(), self.keys, doc)
        return self.version

    def worker_env(self, name: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "GATEHOUSE_REDIS_URL": self.redis.url,
            "GATEHOUSE_REDIS_PREFIX": self.prefix,
            "GATEHOUSE_WORKER_KEY": self.worker_key.decode(),
            "GATEHOUSE_MASKING_KEY": self.masking_key,
            "GATEHOUSE_SPOOL_DIR": str(self.tmp / "spool"),
            "GATEHOUSE_WORKER_ID": name,
            "GATEHOUSE_PROXY_PORT": str(self.worker_ports[name]),
            "GATEHOUSE_METRICS_PORT": str(self.metrics_ports[name]),
            "GATEHOUSE_UPSTREAM_TIMEOUT": str(self.upstream_timeout),
            **self.env,
        }

    def start_worker(self, name: str) -> Proc:
        """Start (or restart, same ports) the worker ``name``."""
        self.worker_ports.setdefault(name, free_port())
        self.metrics_ports.setdefault(name, free_port())
        proc = Proc(name, [PY, "-m", "proxy_worker"], self.worker_env(name), self.tmp)
        self.procs[name] = proc.start(self.worker_ports[name])
        return proc

    def start_ingest(
        self, name: str, *, db_name: str, db_port: int, batch: int = 100, claim_idle_ms: int = 1000
    ) -> Proc:
        """``manage.py ingest`` on this gateway's Redis, into ``db_name`` via ``db_port``."""
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "GATEHOUSE_DB_NAME": db_name,
            "GATEHOUSE_DB_PORT": str(db_port),
            "GATEHOUSE_REDIS_URL": self.redis.url,
            "GATEHOUSE_REDIS_PREFIX": self.prefix,
        }
        argv = [PY, "manage.py", "ingest", "--consumer", name, "--batch", str(batch)]
        argv += ["--block-ms", "200", "--claim-idle-ms", str(claim_idle_ms)]
        self.procs[name] = Proc(name, argv, env, self.tmp).start()
        return self.procs[name]

    def worker_url(self, name: str = "w1") -> str:
        return f"http://127.0.0.1:{self.worker_ports[name]}"

    def start_haproxy(self, workers: list[str], *, h2: bool = False) -> str:
        """HAProxy round-robin over ``workers``; returns its URL.

        ``h2``: the frontend speaks cleartext HTTP/2 (prior knowledge) to clients.
        """
        assert HAPROXY, "haproxy is not installed (apt-get install haproxy)"
        self.lb_port = free_port()
        cfg = self.tmp / "haproxy.cfg"
        servers = [("127.0.0.1", self.worker_ports[w]) for w in workers]
        cfg.write_text(haproxy_config(self.lb_port, servers, h2=h2))
        self.procs["haproxy"] = Proc(
            "haproxy", [HAPROXY, "-db", "-f", str(cfg)], dict(os.environ), self.tmp
        ).start(self.lb_port)
        return f"http://127.0.0.1:{self.lb_port}"

    def received(self) -> list[dict]:
        """What reached the upstream (its ``/_received`` record, read directly)."""
        return httpx.get(f"{self.upstream_url}/_received").json()

    def clear_received(self) -> None:
        httpx.delete(f"{self.upstream_url}/_received")

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    def exchanges(self) -> list[ExchangeMessage]:
        """Every exchange on the stream (what ingest would store)."""
        r = self.redis.client()
        return [
            ExchangeMessage.from_json(fields[b"data"])
            for _, fields in r.xrange(self.keys.exchanges_stream)
        ]

    def stop(self) -> None:
        for name in list(self.procs)[::-1]:
            self.procs[name].stop(5)
        self.redis.stop()


def haproxy_config(port: int, servers: list[tuple[str, int]], *, h2: bool = False) -> str:
    """An HAProxy 2.x config: HTTP mode, round robin, long server timeout (held requests).

    Health checks are TCP connects: an HTTP probe would be recorded as an exchange.
    """
    lines = [
        "global",
        "    maxconn 4096",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 300s",
        "    timeout server 300s",
        "    option http-keep-alive",
        "frontend gatehouse",
        f"    bind 127.0.0.1:{port}" + (" proto h2" if h2 else ""),
        "    default_backend workers",
        "backend workers",
        "    balance roundrobin",
    ]
    for i, (host, p) in enumerate(servers):
        lines.append(f"    server w{i + 1} {host}:{p} check inter 1s fall 2 rise 1")
    return "\n".join(lines) + "\n"


def all_logs(tmp: Path) -> str:
    """Every ``*.log`` under ``tmp`` concatenated (for the secret-leak greps)."""
    return "\n".join(p.read_text(errors="replace") for p in sorted(tmp.rglob("*.log")))


async def load(
    url: str,
    n: int,
    concurrency: int,
    headers: dict[str, str],
    *,
    timeout: float = 30.0,
    stop: threading.Event | None = None,
    retry_refused: float = 0.0,
) -> list[tuple[int, int]]:
    """Send ``n`` GETs (``url`` plus ``&n=<i>``) ``concurrency`` at a time.

    Returns ``[(i, status)]``; status -1: the connection was refused (the request never
    reached a worker); 0: it failed after it was sent (in flight, no answer). With
    ``retry_refused`` (seconds), refused connections are retried for that long, as a
    client may safely do: the request never reached the server.
    """
    results: list[tuple[int, int]] = []
    sem = asyncio.Semaphore(concurrency)
    sep = "&" if "?" in url else "?"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers) as c:

        async def one(i: int) -> None:
            async with sem:
                if stop is not None and stop.is_set():
                    return
                deadline = time.monotonic() + retry_refused
                while True:
                    try:
                        r = await c.get(f"{url}{sep}n={i}")
                        results.append((i, r.status_code))
                    except httpx.ConnectError:
                        if time.monotonic() < deadline:
                            await asyncio.sleep(0.1)
                            continue
                        results.append((i, -1))
                    except httpx.HTTPError:
                        results.append((i, 0))
                    return

        await asyncio.gather(*(one(i) for i in range(n)))
    return results


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.1):  # noqa: ANN001
    """Poll ``predicate`` until truthy; return its value or raise ``AssertionError``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) != 0

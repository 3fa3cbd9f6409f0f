"""Start and stop the Gatehouse processes and the demo upstreams (demo and e2e tests).

Each process runs from this repository with the current interpreter; output goes to
``<log_dir>/<name>.log``. Nothing here is needed in production, where each process is a
service of its own (docker-compose.yml, docs/deployment.md).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(
    port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None, name: str = ""
) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections; raise if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name or 'process'} exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{name or 'process'} did not listen on port {port} in {timeout:g}s")


@dataclass
class Ports:
    """Listening ports of one stack (defaults from the environment, as in README.md)."""

    web: int = int(os.environ.get("GATEHOUSE_WEB_PORT", "8000"))
    proxy: int = int(os.environ.get("GATEHOUSE_PROXY_PORT", "8080"))
    #: Forward-proxy (HTTPS_PROXY) listener of the same worker.
    forward: int = int(os.environ.get("GATEHOUSE_FORWARD_PORT", "8081"))
    #: PostgreSQL listener of the same worker.
    pg: int = int(os.environ.get("GATEHOUSE_PG_PORT", "6432"))
    datasette: int = int(os.environ.get("DEMO_DATASETTE_PORT", "8101"))
    llm: int = int(os.environ.get("DEMO_LLM_PORT", "8102"))
    #: The demo's MCP tool server (FastMCP, streamable HTTP).
    mcp: int = int(os.environ.get("DEMO_MCP_PORT", "8103"))

    @classmethod
    def free(cls) -> Ports:
        """Ports free on 127.0.0.1 right now (for tests that run stacks side by side)."""
        return cls(
            web=free_port(),
            proxy=free_port(),
            forward=free_port(),
            pg=free_port(),
            datasette=free_port(),
            llm=free_port(),
            mcp=free_port(),
        )


@dataclass
class Stack:
    """The processes of one Gatehouse deployment plus the demo upstreams."""

    ports: Ports
    env: dict[str, str]
    log_dir: Path
    customers_db: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def commands(self) -> dict[str, list[str]]:
        """``{process name: argv}`` for every process this stack can start."""
        py = sys.executable
        bindir = Path(py).parent
        return {
            "datasette": [
                str(bindir / "datasette"),
                "serve",
                str(self.customers_db),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.datasette),
                "--plugins-dir",
                str(ROOT / "demo" / "datasette_plugins"),
                "--metadata",
                str(ROOT / "demo" / "datasette_metadata.json"),
            ],
            "llm": [
                py,
                "-m",
                "demo.llm_upstream",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.llm),
                "--quiet",
            ],
            "mcp": [
                py,
                "-m",
                "demo.mcp_upstream",
                "--db",
                str(self.customers_db),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.mcp),
            ],
            "web": [
                py,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.ports.web),
                "controlplane.asgi:application",
            ],
            "proxy": [py, "-m", "proxy_worker"],
            "ingest": [py, "manage.py", "ingest", "--block-ms", "200"],
            "celery-worker": [
                py,
                "-m",
                "celery",
                "-A",
                "controlplane",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                "2",
                "--pool",
                "threads",
            ],
            "celery-beat": [
                py,
                "-m",
                "celery",
                "-A",
                "controlplane",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.log_dir / "celerybeat-schedule"),
            ],
        }

    def listen_port(self, name: str) -> int | None:
        """The TCP port ``name`` listens on, or ``None`` for processes without one."""
        return {
            "datasette": self.ports.datasette,
            "llm": self.ports.llm,
            "mcp": self.ports.mcp,
            "web": self.ports.web,
            "proxy": self.ports.proxy,
        }.get(name)

    def process_env(self) -> dict[str, str]:
        """The environment of every child: ours, the stack's, and its ports."""
        env = {**os.environ, **self.env}
        env.update(
            {
                "GATEHOUSE_PROXY_PORT": str(self.ports.proxy),
                "GATEHOUSE_FORWARD_PORT": str(self.ports.forward),
                "GATEHOUSE_PG_PORT": str(self.ports.pg),
                "GATEHOUSE_FORWARD_PROXY_URL": f"http://127.0.0.1:{self.ports.forward}",
                "GATEHOUSE_WEB_PORT": str(self.ports.web),
                "DEMO_LLM_PORT": str(self.ports.llm),
                "DEMO_MCP_PORT": str(self.ports.mcp),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def start(self, names: list[str], timeout: float = 40.0) -> None:
        """Start ``names`` (keys of :meth:`commands`) and wait for their ports."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmds = self.commands()
        env = self.process_env()
        for name in names:
            log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
            self.procs[name] = subprocess.Popen(
                cmds[name],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for name in names:
            port = self.listen_port(name)
            if port:
                wait_port(port, timeout, self.procs[name], name)

    def check(self) -> list[str]:
        """Names of processes that have exited."""
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def stop(self, names: list[str] | None = None) -> None:
        """Terminate processes (all by default), killing those that linger."""
        for name in list(names or self.procs):
            p = self.procs.get(name)
            if p and p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10
        for name in list(names or self.procs):
            p = self.procs.pop(name, None)
            if p is None:
                continue
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def log(self, name: str) -> str:
        """Everything process ``name`` has written so far (empty if it never ran)."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

"""The whole Gatehouse stack plus the demo upstreams and a demo agent: ``python -m demo.run``.

Run by ``scripts/demo`` (README.md). Steps: secrets (``var/demo.env``, made once and
reused), the database, migrations, the demo seed, every process (web, proxy worker,
ingest, Celery worker and beat, datasette, the OpenAI-compatible upstream), the demo
agent through the proxy port; then it stays up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from cryptography.fernet import Fernet

from demo.stack import ROOT, Ports, Stack

VAR = Path(os.environ.get("GATEHOUSE_VAR_DIR", ROOT / "var"))
DEMO_PASSWORD = os.environ.get("GATEHOUSE_DEMO_PASSWORD", "gatehouse-demo")


def load_or_create_env(path: Path) -> dict[str, str]:
    """Secrets of the demo deployment, generated on first run and kept in ``path`` (0600)."""
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                values[k.strip()] = v.strip()
    wanted = {
        "GATEHOUSE_SECRET_KEY": lambda: secrets.token_urlsafe(50),
        "GATEHOUSE_FIELD_KEYS": lambda: Fernet.generate_key().decode(),
        "GATEHOUSE_WORKER_KEY": lambda: Fernet.generate_key().decode(),
        "GATEHOUSE_MASKING_KEY": lambda: secrets.token_urlsafe(32),
        "DEMO_DATASETTE_TOKEN": lambda: "dstok-" + secrets.token_urlsafe(24),
        "DEMO_LLM_API_KEY": lambda: "sk-demo-" + secrets.token_urlsafe(24),
        "DEMO_MCP_TOKEN": lambda: "mcp-demo-" + secrets.token_urlsafe(24),
        # The password Gatehouse logs in to the demo's PostgreSQL database with (the
        # customers-db target's credential; the agent never sees it).
        "DEMO_PG_PASSWORD": lambda: "pg-demo-" + secrets.token_urlsafe(24),
    }
    missing = [k for k in wanted if k not in values]
    if missing:
        for k in missing:
            values[k] = wanted[k]()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# Gatehouse demo secrets, generated once; delete to regenerate.\n")
            f.writelines(f"{k}={v}\n" for k, v in values.items())
    # Values already in the environment win (so a user can bring their own keys).
    return {k: os.environ.get(k, v) for k, v in values.items()}


def ensure_database(name: str) -> None:
    """Create the PostgreSQL database ``name`` if it does not exist."""
    import psycopg
    from psycopg import sql

    params = {
        "host": os.environ.get("GATEHOUSE_DB_HOST", "127.0.0.1"),
        "port": os.environ.get("GATEHOUSE_DB_PORT", "5432"),
        "user": os.environ.get("GATEHOUSE_DB_USER", "postgres"),
        "password": os.environ.get("GATEHOUSE_DB_PASSWORD", ""),
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**os.environ, **env}, check=True
    )


def auto_approve(web_url: str, delay: float, exclude: set[str] | None = None) -> None:
    """Approve the next pending request as the demo approver, through the web UI."""
    from demo.approver_bot import ApproverBot

    time.sleep(delay)
    bot = ApproverBot(web_url, "approver", DEMO_PASSWORD)
    try:
        approval_id = bot.wait_for_pending(30, exclude=exclude)
        if exclude is not None:
            exclude.add(approval_id)
        r = bot.decide(approval_id, "approve", "approved by demo --auto-approve")
        print(
            f"   (auto-approve: approver approved {approval_id}: HTTP {r.status_code})", flush=True
        )
    finally:
        bot.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Gatehouse demo stack.")
    parser.add_argument(
        "--auto-approve",
        action="store_true",
        help="approve the demo agent's held request after a few seconds",
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="stop after the demo agent instead of staying up"
    )
    args = parser.parse_args(argv)

    env = load_or_create_env(VAR / "demo.env")
    ports = Ports()
    web_url = os.environ.get("GATEHOUSE_SITE_URL", f"http://127.0.0.1:{ports.web}")
    proxy_url = f"http://127.0.0.1:{ports.proxy}"
    env.update(
        {
            "GATEHOUSE_SITE_URL": web_url,
            "GATEHOUSE_SPOOL_DIR": str(VAR / "spool"),
            "DEMO_DATASETTE_URL": f"http://127.0.0.1:{ports.datasette}",
            "DEMO_LLM_URL": f"http://127.0.0.1:{ports.llm}",
            "DEMO_MCP_URL": f"http://127.0.0.1:{ports.mcp}",
        }
    )
    os.environ.update(env)

    from demo.customers_db import build_customers_db
    from demo.customers_pg import DEFAULT_DATABASE, build_customers_pg

    db = build_customers_db(VAR / "demo" / "customers.db")
    if build_customers_pg(database=DEFAULT_DATABASE, password=env["DEMO_PG_PASSWORD"]):
        print(f"created the PostgreSQL database {DEFAULT_DATABASE}", flush=True)
    ensure_database(os.environ.get("GATEHOUSE_DB_NAME", "gatehouse"))
    manage(env, "migrate", "--no-input", "-v", "0")
    token_file = VAR / "demo" / "agent-token"
    manage(env, "seed_demo", "--token-file", str(token_file))

    stack = Stack(ports=ports, env=env, log_dir=VAR / "log", customers_db=db)
    names = ["datasette", "llm", "mcp", "web", "proxy", "ingest", "celery-worker", "celery-beat"]
    print("starting: " + ", ".join(names), flush=True)
    try:
        stack.start(names)
    except Exception as e:
        print(f"could not start the stack: {e}\nlogs: {VAR / 'log'}", file=sys.stderr)
        stack.stop()
        return 1

    banner = f"""
Gatehouse is running.
  web console     {web_url}/
  approvals       {web_url}/approvals/
  sessions        {web_url}/audit/sessions/
  proxy port      {proxy_url}/<target>/...   targets: customers (datasette), llm (OpenAI),
                  crm-tools (MCP, /crm-tools/mcp)
  postgres port   postgresql://demo-agent:<token>@127.0.0.1:{ports.pg}/customers-db?sslmode=verify-full
                  (sslrootcert: {VAR / "ca" / "mitmproxy-ca-cert.pem"})
  demo accounts   admin / approver / approver2 / auditor   password: {DEMO_PASSWORD}
  upstreams       datasette http://127.0.0.1:{ports.datasette}  llm http://127.0.0.1:{ports.llm}
                  mcp http://127.0.0.1:{ports.mcp}/mcp
  logs            {VAR / "log"}
"""
    print(banner, flush=True)

    from demo.agent import run as run_agent
    from demo.agent_pg import run as run_agent_pg
    from demo.agent_sdk import Gateway
    from demo.agent_sdk import run as run_agent_sdk

    decided: set[str] = set()

    def on_held() -> None:
        if args.auto_approve:
            threading.Thread(target=auto_approve, args=(web_url, 2.0, decided), daemon=True).start()
        else:
            print(
                f"   Sign in at {web_url}/approvals/ as 'approver' ({DEMO_PASSWORD}) and "
                "click Approve or Deny.",
                flush=True,
            )

    token = token_file.read_text().strip()
    wait = float(os.environ.get("GATEHOUSE_APPROVAL_TIMEOUT", "120"))
    ca_file = Path(os.environ.get("GATEHOUSE_CA_DIR", str(VAR / "ca"))) / "mitmproxy-ca-cert.pem"
    programs = [
        (
            "httpx + openai SDK",
            lambda: run_agent(proxy_url, token, approval_wait=wait, on_held=on_held),
        ),
        (
            "psycopg",
            lambda: run_agent_pg(
                "127.0.0.1", ports.pg, token, ca_file=ca_file, approval_wait=wait, on_held=on_held
            ),
        ),
        (
            "OpenAI Agents SDK",
            lambda: run_agent_sdk(
                Gateway(
                    proxy_url=proxy_url,
                    token=token,
                    pg=("127.0.0.1", ports.pg, ca_file),
                    forward_url=f"http://127.0.0.1:{ports.forward}",
                    llm_url=env["DEMO_LLM_URL"],
                    mcp_url=env["DEMO_MCP_URL"] + "/mcp",
                ),
                approval_wait=wait,
                on_held=on_held,
            ),
        ),
    ]
    failures = 0
    for label, program in programs:
        try:
            failures += program()
        except Exception:  # one program failing must not leave the stack running
            traceback.print_exc()
            print(f"\nthe {label} part of the demo agent failed (above)", file=sys.stderr)
            failures += 1
        except BaseException:
            stack.stop()
            raise
    print(
        "\ndemo agent finished: "
        + ("all steps as expected." if not failures else f"{failures} step(s) unexpected.")
        + f"\nReplay it as 'auditor' at {web_url}/audit/sessions/",
        flush=True,
    )
    if args.no_wait:
        stack.stop()
        return 1 if failures else 0

    print("\nStaying up; Ctrl-C stops every process.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            dead = stack.check()
            if dead:
                print(f"process exited: {', '.join(dead)}; see {VAR / 'log'}", file=sys.stderr)
                break
    except KeyboardInterrupt:
        pass
    print("stopping …", flush=True)
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

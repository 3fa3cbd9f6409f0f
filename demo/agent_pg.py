"""The demo agent's database steps: psycopg through the gateway's PostgreSQL port.

``python -m demo.agent_pg --host 127.0.0.1 --port 6432 --token-file var/demo/agent-token``

The agent changes nothing but its connection string: user = the agent's name, password
= its Gatehouse token, database = the target's slug, and TLS verified against the
Gatehouse CA (``sslmode=verify-full``). It shows: customer rows with personal data
masked (also through an alias and a view), an ``UPDATE`` without ``WHERE`` refused by an
access rule (SQLSTATE 42501), and a bulk ``SELECT`` held until an approver decides.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg

AGENT = "demo-agent"
TARGET = "customers-db"


def dsn(host: str, port: int, token: str, ca_file: Path | None, *, target: str = TARGET) -> str:
    """The agent's connection string (TLS verified when the CA file is given)."""
    params: dict[str, object] = {
        "host": host,
        "port": port,
        "user": AGENT,
        "password": token,
        "dbname": target,
        "application_name": "gatehouse-demo-agent",
    }
    if ca_file is not None and ca_file.exists():
        params.update(sslmode="verify-full", sslrootcert=str(ca_file))
    else:
        params["sslmode"] = "require"
    return psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]


def _show(title: str, text: str) -> None:
    print(f"\n== {title}\n{text}", flush=True)


def _table(cur: psycopg.Cursor) -> str:
    rows = cur.fetchall()
    names = [d.name for d in cur.description or ()]
    lines = [" | ".join(names)] + [" | ".join("" if v is None else str(v) for v in r) for r in rows]
    return "\n".join(lines)


def run(
    host: str,
    port: int,
    token: str,
    *,
    ca_file: Path | None,
    approval_wait: float,
    on_held: Callable[[], None] | None = None,
    first_step: int = 6,
) -> int:
    """Run the database steps; returns how many did not turn out as expected."""
    failures = 0
    n = first_step
    with psycopg.connect(dsn(host, port, token, ca_file), autocommit=True) as conn:
        cur = conn.execute(
            "SELECT id, name, email, ssn, credit_card FROM customers ORDER BY id LIMIT 3"
        )
        text = _table(cur)
        _show(f"{n}. psycopg through the gateway: three customers (masked on the wire)", text)
        failures += "[EMAIL]" not in text or "[REDACTED]" not in text

        cur = conn.execute(
            "SELECT c.contact AS reach_me, upper(c.name) AS who FROM customer_contacts c "
            "ORDER BY id LIMIT 2"
        )
        text = _table(cur)
        _show(f"{n + 1}. An alias over a view does not hide the e-mail or the name", text)
        failures += "@" in text or "[REDACTED]" not in text

        try:
            conn.execute("UPDATE customers SET email = 'x@example.com'")
            _show(f"{n + 2}. UPDATE without WHERE", "ran (unexpected!)")
            failures += 1
        except psycopg.errors.InsufficientPrivilege as e:
            _show(
                f"{n + 2}. UPDATE without WHERE: refused (SQLSTATE {e.sqlstate})",
                str(e).strip(),
            )

    result: dict[str, object] = {}

    def bulk() -> None:
        try:
            with psycopg.connect(dsn(host, port, token, ca_file)) as c:
                rows = c.execute("SELECT id, email, phone FROM customers").fetchall()
                result["rows"] = rows
        except psycopg.Error as e:
            result["error"] = e

    t = threading.Thread(target=bulk)
    t.start()
    _show(
        f"{n + 3}. SELECT without LIMIT on customers: held until an approver decides",
        f"waiting up to {approval_wait:g} s …",
    )
    if on_held:
        on_held()
    t.join(approval_wait + 30)
    if "rows" in result:
        rows = result["rows"]
        assert isinstance(rows, list)
        sample = "\n".join(" | ".join(str(v) for v in r) for r in rows[:3])
        _show(f"{n + 3}. result: approved, {len(rows)} rows (masked)", sample)
        failures += any("@" in str(r[1]) for r in rows)
    elif "error" in result:
        e = result["error"]
        _show(f"{n + 3}. result: refused", str(e).strip())
    else:
        _show(f"{n + 3}. result", "no answer")
        failures += 1
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("GATEHOUSE_PG_PORT", "6432"))
    )
    parser.add_argument("--token-file", type=Path, default=Path("var/demo/agent-token"))
    parser.add_argument("--ca-file", type=Path, default=Path("var/ca/mitmproxy-ca-cert.pem"))
    parser.add_argument("--approval-wait", type=float, default=130.0)
    args = parser.parse_args(argv)
    token = os.environ.get("GATEHOUSE_AGENT_TOKEN") or args.token_file.read_text().strip()
    failures = run(
        args.host, args.port, token, ca_file=args.ca_file, approval_wait=args.approval_wait
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

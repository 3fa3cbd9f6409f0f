"""The demo's MCP tool server: the ``mcp`` package's own FastMCP over streamable HTTP.

``python -m demo.mcp_upstream --db var/demo/customers.db --port 8103`` serves the MCP
endpoint at ``/mcp`` (stateful sessions, ``Mcp-Session-Id``; answers as SSE, FastMCP's
default) with CRM tools over the demo's customer database (the SQLite file datasette
serves, read-only except for :func:`delete_customer`):

* ``lookup_customer(query)`` — one customer's record (name, e-mail, phone, city, orders),
  found by the first number (customer id) or e-mail address in ``query``;
* ``list_recent_orders(query)`` — the customer's last orders;
* ``delete_customer(query)`` — deletes nothing really (the demo must stay repeatable), but
  says it did; the demo's access rule holds it for approval;
* ``export_all_customers()`` — every customer with personal data; the demo's access rule
  denies it, so Gatehouse hides it from ``tools/list``.

Every request must carry ``Authorization: Bearer $DEMO_MCP_TOKEN``: the credential
Gatehouse injects for the ``crm-tools`` target (the agent never sees it). Tool results
are full of personal data on purpose: Gatehouse masks them on the way back.
"""

from __future__ import annotations

import argparse
import hmac
import os
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp.server.fastmcp import FastMCP
    from starlette.types import ASGIApp, Receive, Scope, Send

#: Environment variable holding the bearer token this server requires.
TOKEN_ENV = "DEMO_MCP_TOKEN"
#: Environment variable giving the default port.
PORT_ENV = "DEMO_MCP_PORT"

_ID = re.compile(r"\b(\d{1,9})\b")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def find_customer(conn: sqlite3.Connection, query: str) -> dict[str, Any] | None:
    """The customer ``query`` names, as a dict of its columns, or None.

    ``query`` is free text (an LLM's tool argument): its first e-mail address is matched
    against ``customers.email``, else its first number against ``customers.id``.
    """
    email = _EMAIL.search(query)
    if email:
        row = conn.execute(
            "SELECT * FROM customers WHERE lower(email) = lower(?)", (email.group(0),)
        ).fetchone()
        if row:
            return dict(row)
    number = _ID.search(query)
    if number:
        row = conn.execute("SELECT * FROM customers WHERE id = ?", (int(number.group(1)),))
        found = row.fetchone()
        if found:
            return dict(found)
    return None


def build(db: Path) -> FastMCP:
    """The FastMCP server with the CRM tools over the SQLite database ``db``."""
    from mcp.server.fastmcp import FastMCP

    server = FastMCP("gatehouse-demo-crm", stateless_http=False)

    @server.tool()
    def lookup_customer(query: str) -> dict[str, Any]:
        """Look up one customer by id or e-mail address: name, contact details, city and
        number of orders."""
        with _connect(db) as conn:
            customer = find_customer(conn, query)
            if customer is None:
                return {"found": False, "query": query}
            orders = conn.execute(
                "SELECT count(*) FROM orders WHERE customer_id = ?", (customer["id"],)
            ).fetchone()[0]
        return {
            "found": True,
            "id": customer["id"],
            "name": customer["name"],
            "email": customer["email"],
            "phone": customer["phone"],
            "city": customer["city"],
            "orders": orders,
        }

    @server.tool()
    def list_recent_orders(query: str, limit: int = 5) -> list[dict[str, Any]]:
        """The customer's most recent orders (id, amount in cents, status)."""
        with _connect(db) as conn:
            customer = find_customer(conn, query)
            if customer is None:
                return []
            rows = conn.execute(
                "SELECT id, amount_cents, status FROM orders WHERE customer_id = ? "
                "ORDER BY id DESC LIMIT ?",
                (customer["id"], max(1, min(int(limit), 50))),
            ).fetchall()
        return [dict(r) for r in rows]

    @server.tool()
    def delete_customer(query: str) -> str:
        """Delete a customer and their orders (needs a security analyst's approval)."""
        with _connect(db) as conn:
            customer = find_customer(conn, query)
        if customer is None:
            return f"no customer matches {query!r}"
        # The demo keeps its data: report the deletion without making it.
        return f"customer {customer['id']} ({customer['email']}) deleted"

    @server.tool()
    def export_all_customers() -> list[dict[str, Any]]:
        """Every customer with every column (Gatehouse denies this tool to agents)."""
        with _connect(db) as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM customers").fetchall()]

    return server


def app(db: Path, token: str) -> ASGIApp:
    """The streamable-HTTP ASGI app of :func:`build`, refusing requests without
    ``Authorization: Bearer <token>`` (401, JSON body)."""
    inner = build(db).streamable_http_app()
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                body = b'{"error": "missing or wrong bearer token"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await inner(scope, receive, send)

    return guarded


def main(argv: list[str] | None = None) -> None:
    """Command line: serve :func:`app` with uvicorn until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="the demo's SQLite database")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get(PORT_ENV, "8103")))
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        parser.error(f"{TOKEN_ENV} is not set (the bearer token this server requires)")
    uvicorn.run(app(args.db, token), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

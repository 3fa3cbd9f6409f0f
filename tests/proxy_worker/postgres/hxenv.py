"""The gateway of the hostile-input, authentication, failure and approval tests.

One worker process (:class:`HxEnv`) serves several PostgreSQL targets on one upstream
database, each set up for one family of tests (slugs ``hx-*``), with access rules scoped
to their target, so the tests share the process without republishing the policy:

========== ==============================================================================
slug       what
========== ==============================================================================
hx         default allow; deny DELETE, deny DO, deny ``copy_program``
hx-plain   one allow rule without conditions; the agent's token is accepted without TLS
hx-allow   allow-list: default deny, allow SELECT on customers
hx-appr    approvals: wait (secrets, customer_contacts), short wait (contact_list),
           defer (INSERT into audit_log), wait on customers with a grant covering it
hx-fast    the function-call protocol allowed for ``pg_catalog.textcat`` only
hx-down    the upstream is a closed port
hx-require upstream ``sslmode=require`` against the machine's server (it has no TLS)
========== ==============================================================================

Tests that need more targets (the private SCRAM/MD5 clusters) add them with
:meth:`HxEnv.publish`; the limiter of bad credentials is per worker and per client
address, so tests presenting bad tokens on purpose connect from their own ``127.0.0.x``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

from demo.stack import free_port
from proxy_worker.contract import ApprovalRequestMessage, ExchangeMessage
from proxy_worker.policy import hash_token
from tests.proxy_worker.postgres.harness import (
    CUSTOMERS,
    PgGateway,
    UpstreamDatabase,
    pg_target,
    sql_rule,
)
from tests.proxy_worker.postgres.rawwire import Wire

#: Raw personal data of the upstream's customers (never to leave the gateway).
RAW_VALUES = [v for row in CUSTOMERS for v in row[1:]]
#: Rows ``audit_log`` holds at the start of every test (refused DELETEs must leave them).
AUDIT_ROWS = 3

T_HX, T_PLAIN, T_ALLOW, T_APPR, T_FAST, T_DOWN, T_REQUIRE = 101, 102, 103, 104, 106, 105, 107
R_NO_DELETE, R_NO_DO, R_NO_COPY_PROGRAM = 201, 202, 203
R_ALLOW_CUSTOMERS = 210
R_WAIT, R_SHORT, R_DEFER, R_GRANTED = 220, 221, 222, 223
R_FASTPATH = 230
R_PLAIN_ALL = 240
GRANT_ID = 77


def base_rules() -> list[dict[str, Any]]:
    return [
        sql_rule(R_NO_DELETE, "No deletes", "deny", target_id=T_HX, statement_kinds=["DELETE"]),
        sql_rule(R_NO_DO, "No DO blocks", "deny", target_id=T_HX, statement_kinds=["DO"]),
        sql_rule(
            R_NO_COPY_PROGRAM,
            "No COPY PROGRAM",
            "deny",
            target_id=T_HX,
            functions=["copy_program"],
        ),
        sql_rule(
            R_ALLOW_CUSTOMERS,
            "Customers only",
            "allow",
            target_id=T_ALLOW,
            statement_kinds=["SELECT"],
            tables=["customers"],
        ),
        sql_rule(
            R_WAIT,
            "Secrets need approval",
            "approve",
            target_id=T_APPR,
            statement_kinds=["SELECT"],
            tables=["secrets", "customer_contacts"],
            approval_timeout=30,
        ),
        sql_rule(
            R_SHORT,
            "Contact list, quick",
            "approve",
            target_id=T_APPR,
            statement_kinds=["SELECT"],
            tables=["contact_list"],
            approval_timeout=1.5,
        ),
        sql_rule(
            R_DEFER,
            "Audit writes deferred",
            "approve",
            target_id=T_APPR,
            statement_kinds=["INSERT"],
            tables=["audit_log"],
            approval_mode="defer",
            approval_timeout=60,
            retry_window=600,
        ),
        sql_rule(
            R_GRANTED,
            "Customers need approval",
            "approve",
            target_id=T_APPR,
            statement_kinds=["SELECT"],
            tables=["customers"],
            approval_timeout=30,
        ),
        sql_rule(
            R_FASTPATH,
            "textcat() by function call",
            "allow",
            target_id=T_FAST,
            statement_kinds=["FASTPATH"],
            functions=["pg_catalog.textcat"],
        ),
        # A rule without conditions (matches every statement on its target).
        sql_rule(R_PLAIN_ALL, "Anything goes", "allow", target_id=T_PLAIN),
    ]


@dataclass
class HxEnv:
    """The shared worker, its upstream database and the helpers the tests use."""

    gw: PgGateway
    db: UpstreamDatabase
    other_token: str = field(
        default_factory=lambda: "gh_pgotherx_" + secrets.token_urlsafe(24)[:32]
    )
    extra_targets: list[dict[str, Any]] = field(default_factory=list)
    extra_agents: list[dict[str, Any]] = field(default_factory=list)
    dirty: bool = False

    # -- policy ---------------------------------------------------------------------------

    def target(self, target_id: int, slug: str, **kw: Any) -> dict[str, Any]:
        kw.setdefault("database", self.db.name)
        return pg_target(target_id, slug, worker_key=self.gw.worker_key, **kw)

    def base_targets(self) -> list[dict[str, Any]]:
        t = self.target
        return [
            t(T_HX, "hx"),
            t(T_PLAIN, "hx-plain", allow_plaintext=True),
            t(T_ALLOW, "hx-allow", default_action="deny"),
            t(T_APPR, "hx-appr"),
            t(T_FAST, "hx-fast"),
            t(T_DOWN, "hx-down", port=free_port()),
            t(T_REQUIRE, "hx-require", sslmode="require"),
        ]

    def base_agents(self) -> list[dict[str, Any]]:
        return [
            {
                "id": 1,
                "name": self.gw.agent_name,
                "owner": "admin",
                "token_hashes": [hash_token(self.gw.token)],
            },
            {
                "id": 2,
                "name": "hx-other",
                "owner": "admin",
                "token_hashes": [hash_token(self.other_token)],
            },
        ]

    def base_grants(self) -> list[dict[str, Any]]:
        return [
            {
                "id": GRANT_ID,
                "agent_id": 1,
                "target_id": T_APPR,
                "method": "SELECT",
                "path_pattern": "*",
                "expires_at": time.time() + 3 * 3600,
                "approval_id": "hx-grant-approval",
                "tables": ["customers"],
            }
        ]

    def publish(
        self,
        *,
        targets: list[dict[str, Any]] | None = None,
        agents: list[dict[str, Any]] | None = None,
    ) -> None:
        """Publish the base policy plus ``targets``/``agents`` (the test's own; marks the
        environment dirty so the next test gets the base policy back)."""
        self.extra_targets = targets or []
        self.extra_agents = agents or []
        self.dirty = bool(self.extra_targets or self.extra_agents)
        self.gw.policy(
            self.base_targets() + self.extra_targets,
            rules=base_rules(),
            grants=self.base_grants(),
            agents=self.base_agents() + self.extra_agents,
        )

    def reset(self) -> None:
        """Before each test: base policy (when a test changed it) and upstream rows."""
        if self.dirty:
            self.publish()
        with psycopg.connect(self.db.conninfo(), autocommit=True) as c:
            c.execute("TRUNCATE audit_log")
            c.execute(
                "INSERT INTO audit_log (what) SELECT 'row ' || g FROM generate_series(1, %s) g",
                (AUDIT_ROWS,),
            )

    # -- clients --------------------------------------------------------------------------

    def dsn(self, slug: str = "hx", **kw: Any) -> str:
        kw.setdefault("connect_timeout", 15)
        return self.gw.dsn(slug, **kw)

    def connect(self, slug: str = "hx", **kw: Any) -> psycopg.Connection[Any]:
        """psycopg through the gateway (verify-full TLS with the Gatehouse CA)."""
        conn_kw = {k: kw.pop(k) for k in ("autocommit",) if k in kw}
        return psycopg.connect(self.dsn(slug, **kw), **conn_kw)

    def direct(self, **kw: Any) -> psycopg.Connection[Any]:
        """Straight to the upstream database (the administrator's side)."""
        return psycopg.connect(self.db.conninfo(), **kw)

    def wire(self, *, source: str | None = None) -> Wire:
        """A raw connection to the gateway's PostgreSQL port (nothing sent yet)."""
        return Wire(self.gw.pg_port, source=source)

    def logged_in(self, slug: str = "hx", **params: str) -> Wire:
        """A raw connection over TLS, logged in as the agent, ready for queries."""
        w = self.wire().tls(self.gw.ca_file)
        msgs = w.login(self.gw.agent_name, self.gw.token, slug, **params)
        assert msgs[-1].tag == "Z", [m.fields() for m in msgs if m.tag == "E"]
        return w

    # -- what the control plane sees ------------------------------------------------------

    def mark(self) -> tuple[int, int]:
        """Lengths of the exchange and approval streams now (see :meth:`exchanges`)."""
        r, k = self.gw.redis, self.gw.keys
        return r.xlen(k.exchanges_stream), r.xlen(k.approvals_stream)

    def exchanges(
        self, mark: tuple[int, int], n: int | None = None, timeout: float = 10
    ) -> list[ExchangeMessage]:
        """Exchanges recorded after ``mark`` (waiting until there are ``n``)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.gw.exchanges()[mark[0] :]
            if n is None or len(out) >= n or time.monotonic() > deadline:
                return out
            time.sleep(0.05)

    def approvals(
        self, mark: tuple[int, int], n: int = 1, timeout: float = 15
    ) -> list[ApprovalRequestMessage]:
        """Approval requests submitted after ``mark`` (waiting until there are ``n``)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.gw.approval_requests(0, 0)[mark[1] :]
            if len(out) >= n or time.monotonic() > deadline:
                return out
            time.sleep(0.05)

    def upstream_activity(self, application_name: str) -> list[tuple[Any, ...]]:
        """``(pid, state, query)`` of the upstream backends with ``application_name``."""
        with self.direct(autocommit=True) as c:
            return c.execute(
                "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = %s",
                (application_name,),
            ).fetchall()

    def assert_worker_alive(self) -> None:
        assert self.gw.proc is not None and self.gw.proc.poll() is None, self.gw.log()[-3000:]
        with self.connect() as c:
            assert c.execute("SELECT 41 + 1").fetchone() == (42,)


def app_name(prefix: str = "hx") -> str:
    """A unique ``application_name`` (to find a test's upstream backend)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"

"""Real parts for the MCP-path tests: FastMCP upstreams, a private Redis, a proxy worker.

* two upstream processes (:mod:`tests.proxy_worker.mcp.upstream`): one answering in SSE
  (FastMCP's default), one with ``json_response``;
* a private ``redis-server`` (:class:`tests.reliability.harness.RedisServer`), so a test
  can stop it;
* a real proxy worker (``python -m proxy_worker``) whose policy snapshot is written to
  Redis exactly as the control plane writes it; approval decisions are given through the
  Redis contract as ``approvals.actions`` gives them (:meth:`McpGateway.decide`).

The snapshot keys written here by hand are those of ``controlplane.snapshot``: targets
with ``kind: "mcp"`` and an ``mcp`` block, access rules with ``mcp_methods``,
``tool_names``, ``argument_path``, ``argument_pattern``. Nothing here imports Django.
"""

from __future__ import annotations

import os
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

from demo.stack import free_port
from proxy_worker.contract import (
    SCHEMA_VERSION,
    ApprovalRequestMessage,
    DecisionMessage,
    ExchangeMessage,
    Keys,
)
from proxy_worker.policy import hash_token
from tests.reliability.harness import PY, Proc, RedisServer, publish

SECRET = "mcp-upstream-secret-" + secrets.token_hex(8)

#: Target ids and slugs of the test deployment.
CRM, CRM_JSON, FLAGGING, BINARY = 1, 2, 3, 4
SLUGS = {CRM: "crm", CRM_JSON: "crmjson", FLAGGING: "flagging", BINARY: "binary"}

#: Response-side masking of the MCP targets: personal data, and a field-name rule.
MASKING = [
    {
        "id": 1,
        "name": "Personal data",
        "entity_types": ["EMAIL", "PHONE", "US_SSN", "CREDIT_CARD", "IBAN"],
        "field_names": [],
        "custom_pattern": None,
        "strategy": "redact",
        "direction": "response",
        "target_ids": None,
    },
    {
        "id": 2,
        "name": "Names",
        "entity_types": [],
        # "name" and "description" also name protocol fields (tools/list entries, a
        # prompt's arguments): field-name rules apply to the data a message carries only.
        "field_names": ["full_name", "name", "description"],
        "custom_pattern": None,
        "strategy": "redact",
        "direction": "response",
        "target_ids": None,
    },
]


def rule(rule_id: int, name: str, action: str, **conditions: Any) -> dict[str, Any]:
    """An access rule as the snapshot carries it (HTTP conditions empty)."""
    return {
        "id": rule_id,
        "name": name,
        "target_id": None,
        "agent_ids": None,
        "agent_group_ids": None,
        "methods": [],
        "path_pattern": "*",
        "query_pattern": None,
        "body_pattern": None,
        "action": action,
        "approval_timeout": 30,
        "reason": f"test {name}",
        "approval_mode": "wait",
        "required_approvals": 1,
        "retry_window": 600,
        "statement_kinds": [],
        "tables": [],
        "functions": [],
        "without_where": False,
        "without_limit": False,
        "parameter_pattern": None,
        "mcp_methods": [],
        "tool_names": [],
        "argument_path": None,
        "argument_pattern": None,
        **conditions,
    }


@dataclass
class McpGateway:
    """FastMCP upstreams, a private Redis and one proxy worker."""

    tmp: Path
    token: str = field(default_factory=lambda: "gh_mcptest_" + secrets.token_urlsafe(24))
    worker_key: bytes = field(default_factory=Fernet.generate_key)
    prefix: str = field(
        default_factory=lambda: (
            os.environ.get("GATEHOUSE_REDIS_PREFIX", "gh") + "mcp" + secrets.token_hex(3)
        )
    )
    port: int = field(default_factory=free_port)
    sse_port: int = field(default_factory=free_port)
    json_port: int = field(default_factory=free_port)
    version: int = 0
    procs: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(self.tmp)
        self.keys = Keys(self.prefix)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> McpGateway:
        self.redis.start()
        env = {**os.environ, "UPSTREAM_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
        for name, port, extra in (
            ("mcp-sse", self.sse_port, []),
            ("mcp-json", self.json_port, ["--json"]),
        ):
            self.procs[name] = Proc(
                name,
                [PY, "-m", "tests.proxy_worker.mcp.upstream", "--port", str(port), *extra],
                env,
                self.tmp,
            ).start(port)
        self.policy()
        self.start_worker()
        return self

    def start_worker(self) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "GATEHOUSE_REDIS_URL": self.redis.url,
            "GATEHOUSE_REDIS_PREFIX": self.prefix,
            "GATEHOUSE_WORKER_KEY": self.worker_key.decode(),
            "GATEHOUSE_MASKING_KEY": "mcp-test-masking-key",
            "GATEHOUSE_SPOOL_DIR": str(self.tmp / "spool"),
            "GATEHOUSE_WORKER_ID": f"mcpworker-{self.prefix}",
            "GATEHOUSE_PROXY_PORT": str(self.port),
            "GATEHOUSE_CA_DIR": str(self.tmp / "ca"),
            "GATEHOUSE_UPSTREAM_TIMEOUT": "20",
            "GATEHOUSE_LOG_LEVEL": "INFO",
        }
        self.procs["worker"] = Proc("worker", [PY, "-m", "proxy_worker"], env, self.tmp).start(
            self.port, timeout=40
        )
        self._wait_version(self.version)

    def stop(self) -> None:
        for name in list(self.procs)[::-1]:
            self.procs[name].stop(5)
        self.redis.stop()

    def log(self) -> str:
        return self.procs["worker"].log() if "worker" in self.procs else ""

    # -- the policy -----------------------------------------------------------------------

    def target(self, target_id: int, **overrides: Any) -> dict[str, Any]:
        port = self.json_port if target_id == CRM_JSON else self.sse_port
        doc = {
            "id": target_id,
            "slug": SLUGS[target_id],
            "kind": "mcp",
            "upstream": f"http://127.0.0.1:{port}",
            "auth_header": "Authorization",
            "auth_scheme": "Bearer",
            "credential": Fernet(self.worker_key).encrypt(SECRET.encode()).decode(),
            "default_action": "allow",
            "approval_timeout": 30,
            "binary_bodies": "pass" if target_id == BINARY else "refuse",
            "mcp": {
                "block_changed_tools": target_id != FLAGGING,
                "allow_server_requests": target_id == FLAGGING,
            },
        }
        doc.update(overrides)
        return doc

    def policy(
        self,
        rules: list[dict[str, Any]] | None = None,
        *,
        masking: list[dict[str, Any]] | None = None,
        grants: list[dict[str, Any]] | None = None,
        targets: list[dict[str, Any]] | None = None,
    ) -> int:
        """Publish the next snapshot and wait until the worker installed it."""
        self.version += 1
        doc = {
            "v": SCHEMA_VERSION,
            "version": self.version,
            "generated_at": time.time(),
            "targets": targets if targets is not None else [self.target(t) for t in SLUGS],
            "agents": [
                {
                    "id": 1,
                    "name": "mcp-agent",
                    "owner": "admin",
                    "token_hashes": [hash_token(self.token)],
                    "group_ids": [],
                }
            ],
            "agent_groups": [],
            "masking_rules": MASKING if masking is None else masking,
            "access_rules": rules or [],
            "grants": grants or [],
            "site_url": "http://gatehouse.test",
        }
        publish(self.redis.client(), self.keys, doc)
        self._wait_version(self.version)
        return self.version

    def _wait_version(self, version: int) -> None:
        if "worker" not in self.procs:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if f"policy version {version} installed" in self.log():
                return
            time.sleep(0.05)
        raise AssertionError(f"worker did not install policy version {version}")

    # -- what an agent needs --------------------------------------------------------------

    def url(self, slug: str = "crm", path: str = "/mcp") -> str:
        return f"http://127.0.0.1:{self.port}/{slug}{path}"

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    @asynccontextmanager
    async def session(self, slug: str = "crm", **callbacks: Any):
        """An initialized ``mcp`` ClientSession through the gateway."""
        from mcp.client.session import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        client = httpx.AsyncClient(headers=self.headers(), timeout=httpx.Timeout(30, read=60))
        async with (
            client,
            streamable_http_client(self.url(slug), http_client=client) as (read, write, _sid),
            ClientSession(read, write, **callbacks) as session,
        ):
            await session.initialize()
            yield session

    def post(self, body: bytes | str, slug: str = "crm", path: str = "/raw", **headers: str):
        """A raw POST through the gateway (JSON-RPC bodies the ``mcp`` client never sends)."""
        data = body.encode() if isinstance(body, str) else body
        return httpx.post(
            self.url(slug, path),
            content=data,
            headers=self.headers(
                **{
                    "Content-Type": "application/json",
                    "Accept": "application/json, text/event-stream",
                    **headers,
                }
            ),
            timeout=30,
        )

    # -- what the control plane and the upstream saw -------------------------------------

    def exchanges(self, n: int | None = None, timeout: float = 10) -> list[ExchangeMessage]:
        """Exchanges recorded so far (waiting until there are ``n``)."""
        r = self.redis.client()
        deadline = time.monotonic() + timeout
        while True:
            entries = r.xrange(self.keys.exchanges_stream)
            out = [ExchangeMessage.from_json(f[b"data"]) for _id, f in entries]
            if n is None or len(out) >= n or time.monotonic() > deadline:
                return out
            time.sleep(0.05)

    def wait_exchange(self, predicate, timeout: float = 10) -> ExchangeMessage:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for x in self.exchanges():
                if predicate(x):
                    return x
            time.sleep(0.05)
        raise AssertionError("no such exchange recorded")

    def clear(self) -> None:
        """Forget recorded exchanges and approval requests, and what the upstreams saw."""
        r = self.redis.client()
        r.delete(self.keys.exchanges_stream, self.keys.approvals_stream)
        for port in (self.sse_port, self.json_port):
            httpx.delete(f"http://127.0.0.1:{port}/_received")

    def approval_requests(self, n: int = 1, timeout: float = 15) -> list[ApprovalRequestMessage]:
        r = self.redis.client()
        deadline = time.monotonic() + timeout
        while True:
            entries = r.xrange(self.keys.approvals_stream)
            out = [ApprovalRequestMessage.from_json(f[b"data"]) for _id, f in entries]
            if len(out) >= n or time.monotonic() > deadline:
                return out
            time.sleep(0.05)

    def decide(self, approval_id: str, verdict: str = "approved", by: str = "approver") -> None:
        """Store and publish a decision exactly as ``approvals.actions`` does."""
        msg = DecisionMessage(
            approval_id=approval_id, verdict=verdict, decided_by=[by], decided_at=time.time()
        )
        r = self.redis.client()
        r.set(self.keys.decision(approval_id), msg.to_json(), ex=3600)
        r.publish(self.keys.decisions_channel, msg.to_json())

    def received(self, port: int | None = None) -> dict[str, list[dict]]:
        """What an upstream received: ``{"messages": [...], "calls": [...]}``."""
        return httpx.get(f"http://127.0.0.1:{port or self.sse_port}/_received").json()

"""Real parts for the PostgreSQL-path tests: an upstream database, a worker, the policy.

* :class:`UpstreamDatabase`: a database of its own on the machine's PostgreSQL (the one
  the test suite uses, ``GATEHOUSE_DB_HOST``/``PORT``), with customers full of personal
  data, a view that renames a column, and a table nobody may read.
* :class:`PrivatePostgres`: a private PostgreSQL cluster (``initdb`` of the installed
  server) that insists on SCRAM-SHA-256 or MD5 passwords and offers TLS, for the login
  and upstream-TLS tests (the machine's server trusts every local connection).
* :class:`PgGateway`: a real proxy worker process (``python -m proxy_worker`` with
  ``GATEHOUSE_PG_PORT``) on the test Redis under a prefix of its own; the policy snapshot
  is written exactly as the control plane writes it (:func:`publish`), and approval
  decisions are given through the Redis contract as the control plane gives them.

Nothing here imports Django.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from cryptography.fernet import Fernet

from demo.stack import free_port, wait_port
from proxy_worker.contract import (
    PUBLISH_SNAPSHOT_LUA,
    SCHEMA_VERSION,
    ApprovalRequestMessage,
    DecisionMessage,
    ExchangeMessage,
    Keys,
)
from proxy_worker.policy import hash_token

ROOT = Path(__file__).resolve().parents[3]
PG_HOST = os.environ.get("GATEHOUSE_DB_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("GATEHOUSE_DB_PORT", "5432"))
PG_USER = os.environ.get("GATEHOUSE_DB_USER", "postgres")
PG_PASSWORD = os.environ.get("GATEHOUSE_DB_PASSWORD", "")
REDIS_URL = os.environ.get("GATEHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")

#: Customers of the upstream database: (name, email, phone, ssn, card, iban).
CUSTOMERS = [
    (
        "Jane Roe",
        "jane.roe@example.com",
        "+1 415 555 0132",
        "123-45-6789",
        "4111111111111111",
        "DE89370400440532013000",
    ),
    (
        "John Doe",
        "john.doe@example.org",
        "+44 20 7946 0958",
        "078-05-1120",
        "5555555555554444",
        "GB82WEST12345698765432",
    ),
    (
        "Ana Lima",
        "ana.lima@example.net",
        "+1 212 555 0199",
        "219-09-9999",
        "378282246310005",
        "FR1420041010050500013M02606",
    ),
]


def admin_conninfo(dbname: str = "postgres") -> str:
    return psycopg.conninfo.make_conninfo(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None, dbname=dbname
    )


@dataclass
class UpstreamDatabase:
    """A fresh database on the machine's PostgreSQL, dropped by :meth:`drop`."""

    name: str = field(default_factory=lambda: f"gh_up_{uuid.uuid4().hex[:10]}")

    def create(self, *, extra_rows: int = 0) -> UpstreamDatabase:
        with psycopg.connect(admin_conninfo(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        with psycopg.connect(self.conninfo(), autocommit=True) as c:
            c.execute(
                """
                CREATE TABLE customers (
                    id serial PRIMARY KEY, name text NOT NULL, email text NOT NULL,
                    phone text, ssn text, card text, iban text, note text,
                    card_number bigint, profile jsonb, tags text[],
                    created date NOT NULL DEFAULT DATE '2024-01-02');
                CREATE VIEW customer_contacts AS SELECT id, email AS contact, name FROM customers;
                CREATE VIEW contact_list AS SELECT id, contact AS reach FROM customer_contacts;
                CREATE TABLE secrets (id int, api_key text);
                INSERT INTO secrets VALUES (1, 'sk-live-0000');
                CREATE TABLE audit_log (id serial, what text);
                CREATE FUNCTION get_email(i int) RETURNS text LANGUAGE sql
                    AS $$ SELECT email FROM customers WHERE id = i $$;
                """
            )
            for n, e, p, s, card, iban in CUSTOMERS:
                c.execute(
                    "INSERT INTO customers (name, email, phone, ssn, card, iban, note, "
                    "card_number, profile, tags) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (
                        n,
                        e,
                        p,
                        s,
                        card,
                        iban,
                        f"call {p} or mail {e}",
                        int(card),
                        json.dumps({"email": e, "vip": True}),
                        [e, "vip"],
                    ),
                )
            if extra_rows:
                c.execute(
                    "INSERT INTO customers (name, email, ssn) SELECT 'n' || g, "
                    "'user' || g || '@example.com', '123-45-6789' FROM generate_series(1, %s) g",
                    (extra_rows,),
                )
        return self

    def conninfo(self) -> str:
        return admin_conninfo(self.name)

    def drop(self) -> None:
        with psycopg.connect(admin_conninfo(), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# --- a private cluster with password authentication and TLS ----------------------------------


def _pg_bindir() -> Path | None:
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / "initdb").exists():
            return base
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PrivatePostgres:
    """A private PostgreSQL cluster on a free port with ``hba`` = ``auth`` for TCP.

    Users: ``scram_user`` (SCRAM-SHA-256 verifier) and ``md5_user`` (MD5 hash; it logs in
    only where ``auth`` is ``md5``), both with
    password :attr:`password`; TLS on with a self-signed certificate (:attr:`ca_pem`).
    Runs as the ``postgres`` system user when the tests run as root (initdb refuses
    root).
    """

    def __init__(self, base: Path, auth: str = "scram-sha-256") -> None:
        self.bindir = _pg_bindir()
        self.port = free_port()
        self.auth = auth
        self.dir = base
        self.password = "pw-" + secrets.token_hex(8)
        self.ca_pem = ""
        self.proc: subprocess.Popen | None = None

    @property
    def available(self) -> bool:
        return self.bindir is not None

    def _run(self, *argv: str) -> str:
        cmd = list(argv)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, cwd="/", text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> PrivatePostgres:
        assert self.bindir is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        data = self.dir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o700)
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        cert, key = self._certificate()
        (data / "server.crt").write_bytes(cert)
        (data / "server.key").write_bytes(key)
        os.chmod(data / "server.key", 0o600)
        if os.geteuid() == 0:
            for f in ("server.crt", "server.key"):
                shutil.chown(data / f, "postgres", "postgres")
        with open(data / "postgresql.conf", "a") as f:
            f.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nssl = on\n"
                f"unix_socket_directories = '{self.dir}'\n"
                f"password_encryption = '{'md5' if self.auth == 'md5' else 'scram-sha-256'}'\n"
            )
        (data / "pg_hba.conf").write_text(
            f"local all postgres trust\nhost all all 127.0.0.1/32 {self.auth}\n"
        )
        if os.geteuid() == 0:
            for f in ("postgresql.conf", "pg_hba.conf"):
                shutil.chown(data / f, "postgres", "postgres")
        argv = [str(self.bindir / "postgres"), "-D", str(data)]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        log = open(self.dir / "postgres.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        wait_port(self.port, 30, self.proc, "private postgres")
        time.sleep(0.3)
        self.psql(
            "SET password_encryption = 'scram-sha-256'",
            f"CREATE USER scram_user PASSWORD '{self.password}'",
            "SET password_encryption = 'md5'",
            f"CREATE USER md5_user PASSWORD '{self.password}'",
            # CREATE DATABASE cannot run in the implicit transaction of a multi-statement -c.
            "CREATE DATABASE app OWNER scram_user",
        )
        return self

    def psql(self, *statements: str, dbname: str = "postgres") -> str:
        """Run ``statements`` as the superuser over the Unix socket (one ``-c`` each, so
        each runs in its own transaction); returns psql's unaligned output."""
        assert self.bindir is not None
        argv = [
            str(self.bindir / "psql"),
            "-h",
            str(self.dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            dbname,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
        ]
        for sql in statements:
            argv += ["-c", sql]
        return self._run(*argv)

    def _certificate(self) -> tuple[bytes, bytes]:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.UTC)
        import ipaddress

        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        self.ca_pem = pem.decode()
        return pem, key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --- policy ------------------------------------------------------------------------------


def pg_target(
    target_id: int,
    slug: str,
    *,
    database: str,
    host: str = PG_HOST,
    port: int = PG_PORT,
    user: str = PG_USER,
    password: str = PG_PASSWORD,
    worker_key: bytes,
    sslmode: str = "prefer",
    ca_pem: str | None = None,
    allow_plaintext: bool = False,
    default_action: str = "allow",
    approval_timeout: float = 20,
    binary_bodies: str = "refuse",
) -> dict[str, Any]:
    """A PostgreSQL target entry of the policy snapshot (password encrypted for workers)."""
    return {
        "id": target_id,
        "slug": slug,
        "kind": "postgres",
        "upstream": f"postgresql://{user}@{host}:{port}/{database}",
        "auth_header": "",
        "auth_scheme": "",
        "credential": Fernet(worker_key).encrypt(password.encode()).decode() if password else None,
        "default_action": default_action,
        "approval_timeout": approval_timeout,
        "binary_bodies": binary_bodies,
        "postgres": {
            "host": host,
            "port": port,
            "database": database,
            "user": user,
            "sslmode": sslmode,
            "ca_pem": ca_pem,
            "allow_plaintext": allow_plaintext,
        },
    }


def sql_rule(rule_id: int, name: str, action: str, **conditions: Any) -> dict[str, Any]:
    """An access rule entry with SQL conditions (``statement_kinds``, ``tables``, ...)."""
    return {
        "id": rule_id,
        "name": name,
        "target_id": conditions.pop("target_id", None),
        "agent_ids": None,
        "agent_group_ids": None,
        "methods": [],
        "path_pattern": "*",
        "query_pattern": None,
        "body_pattern": conditions.pop("body_pattern", None),
        "action": action,
        "approval_timeout": conditions.pop("approval_timeout", None),
        "reason": conditions.pop("reason", f"{name} (test)"),
        "approval_mode": conditions.pop("approval_mode", "wait"),
        "required_approvals": 1,
        "retry_window": conditions.pop("retry_window", 600),
        "statement_kinds": conditions.pop("statement_kinds", []),
        "tables": conditions.pop("tables", []),
        "functions": conditions.pop("functions", []),
        "without_where": conditions.pop("without_where", False),
        "without_limit": conditions.pop("without_limit", False),
        "parameter_pattern": conditions.pop("parameter_pattern", None),
        **conditions,
    }


DEFAULT_MASKING = [
    {
        "id": 1,
        "name": "Personal data",
        "entity_types": ["EMAIL", "PHONE", "US_SSN", "CREDIT_CARD", "IBAN", "IP_ADDRESS"],
        "field_names": [],
        "custom_pattern": None,
        "strategy": "redact",
        "direction": "both",
        "target_ids": None,
    },
    {
        "id": 2,
        "name": "Names",
        "entity_types": [],
        "field_names": ["name"],
        "custom_pattern": None,
        "strategy": "redact",
        "direction": "response",
        "target_ids": None,
    },
]


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
class PgGateway:
    """A proxy worker with its PostgreSQL listener, on the test Redis (prefix of its own)."""

    tmp: Path
    agent_name: str = "agent-pg"
    token: str = field(default_factory=lambda: "gh_pgtestab_" + secrets.token_urlsafe(24)[:32])
    worker_key: bytes = field(default_factory=Fernet.generate_key)
    prefix: str = field(default_factory=lambda: f"ghpg{uuid.uuid4().hex[:8]}")
    pg_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    version: int = 0
    proc: subprocess.Popen | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    #: ``False`` for a second worker on another gateway's prefix: ``stop()`` then leaves
    #: the shared Redis keys (snapshot, streams) to their owner.
    owns_keys: bool = True

    def __post_init__(self) -> None:
        self.keys = Keys(self.prefix)
        self.redis = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
        self.ca_dir = self.tmp / "ca"

    @property
    def ca_file(self) -> Path:
        return self.ca_dir / "mitmproxy-ca-cert.pem"

    def policy(
        self,
        targets: list[dict[str, Any]],
        rules: list[dict[str, Any]] | None = None,
        masking: list[dict[str, Any]] | None = None,
        grants: list[dict[str, Any]] | None = None,
        agents: list[dict[str, Any]] | None = None,
    ) -> None:
        """Publish a new snapshot (the worker swaps it in within a moment)."""
        self.version += 1
        doc = {
            "v": SCHEMA_VERSION,
            "version": self.version,
            "generated_at": time.time(),
            "targets": targets,
            "agents": agents
            if agents is not None
            else [
                {
                    "id": 1,
                    "name": self.agent_name,
                    "owner": "admin",
                    "token_hashes": [hash_token(self.token)],
                }
            ],
            "masking_rules": DEFAULT_MASKING if masking is None else masking,
            "access_rules": rules or [],
            "grants": grants or [],
            "site_url": "http://127.0.0.1:8000",
        }
        publish(self.redis, self.keys, doc)
        self._wait_version(self.version)

    def _wait_version(self, version: int) -> None:
        if self.proc is None:
            return
        deadline = time.monotonic() + 10
        log = self.tmp / "worker.log"
        while time.monotonic() < deadline:
            if log.exists() and f"policy version {version} installed" in log.read_text(
                errors="replace"
            ):
                return
            time.sleep(0.05)
        raise AssertionError(f"worker did not install policy version {version}")

    def start(self) -> PgGateway:
        env = {
            **os.environ,
            "GATEHOUSE_REDIS_URL": REDIS_URL,
            "GATEHOUSE_REDIS_PREFIX": self.prefix,
            "GATEHOUSE_WORKER_KEY": self.worker_key.decode(),
            "GATEHOUSE_MASKING_KEY": "test-masking-key",
            "GATEHOUSE_SPOOL_DIR": str(self.tmp / "spool"),
            "GATEHOUSE_PROXY_PORT": str(self.http_port),
            "GATEHOUSE_PG_PORT": str(self.pg_port),
            "GATEHOUSE_CA_DIR": str(self.ca_dir),
            "GATEHOUSE_WORKER_ID": f"pgworker-{self.prefix}",
            "GATEHOUSE_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        log = open(self.tmp / "worker.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy_worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_port(self.pg_port, 40, self.proc, "proxy worker (postgres)")
        if self.version:
            self._wait_version(self.version)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.owns_keys:
            for key in self.redis.scan_iter(f"{self.prefix}:*"):
                self.redis.delete(key)

    def log(self) -> str:
        p = self.tmp / "worker.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # -- what a client needs ---------------------------------------------------------------

    def dsn(
        self,
        target: str,
        *,
        sslmode: str = "verify-full",
        user: str | None = None,
        password: str | None = None,
        **extra: Any,
    ) -> str:
        """A libpq connection string for ``target`` through the gateway."""
        params: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.pg_port,
            "user": user or self.agent_name,
            "password": self.token if password is None else password,
            "dbname": target,
            "sslmode": sslmode,
            **extra,
        }
        if sslmode in ("verify-ca", "verify-full"):
            params.setdefault("sslrootcert", str(self.ca_file))
        return psycopg.conninfo.make_conninfo(**params)

    # -- what the control plane does -------------------------------------------------------

    def exchanges(self, n: int | None = None, timeout: float = 10) -> list[ExchangeMessage]:
        """Exchanges the worker recorded so far (waiting until there are ``n``)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.redis.xrange(self.keys.exchanges_stream)
            out = [ExchangeMessage.from_json(f[b"data"]) for _id, f in entries]
            if n is None or len(out) >= n or time.monotonic() > deadline:
                return out
            time.sleep(0.05)

    def approval_requests(self, n: int = 1, timeout: float = 15) -> list[ApprovalRequestMessage]:
        deadline = time.monotonic() + timeout
        while True:
            entries = self.redis.xrange(self.keys.approvals_stream)
            out = [ApprovalRequestMessage.from_json(f[b"data"]) for _id, f in entries]
            if len(out) >= n or time.monotonic() > deadline:
                return out
            time.sleep(0.05)

    def decide(self, approval_id: str, verdict: str = "approved", by: str = "approver") -> None:
        """Store and publish a decision exactly as ``approvals.actions`` does."""
        msg = DecisionMessage(
            approval_id=approval_id, verdict=verdict, decided_by=[by], decided_at=time.time()
        )
        self.redis.set(self.keys.decision(approval_id), msg.to_json(), ex=3600)
        self.redis.publish(self.keys.decisions_channel, msg.to_json())

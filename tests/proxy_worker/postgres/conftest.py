"""Real parts shared by the PostgreSQL client tests: one upstream database, one worker.

Starting a worker process and creating a database take seconds, so the package shares
one of each (:func:`pg_shared`); every test gets them through :func:`pg`, which
republishes the default policy (tests publish their own with :meth:`PgEnv.policy`) and
empties the exchange stream, so ``pg.exchanges()`` holds only what that test recorded.
Tests that write create tables of their own (or use ``scratch``), never change
``customers``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from proxy_worker.contract import ExchangeMessage
from tests.proxy_worker.postgres.harness import (
    CUSTOMERS,
    PgGateway,
    UpstreamDatabase,
    pg_target,
)

#: Slug of the target every test connects to.
TARGET = "crm"

#: Raw personal data of the upstream's customers (nothing of it may leave the gateway).
RAW_VALUES = [v for row in CUSTOMERS for v in row[1:]]

EXTRA_SCHEMA = """
CREATE TABLE people (id serial PRIMARY KEY, email text UNIQUE NOT NULL, name text);
INSERT INTO people (email, name) VALUES ('jane.roe@example.com', 'Jane Roe');
CREATE TABLE scratch (id int PRIMARY KEY, email text, amount numeric(12, 2),
                      addr inet, ref uuid, doc json, note text);
CREATE FUNCTION notice_pii() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'customer % has ssn %', 'jane.roe@example.com', '123-45-6789';
    RETURN 1;
END $$;
"""


@dataclass
class PgEnv:
    """What a test needs: the gateway, the upstream database and helpers."""

    gw: PgGateway
    db: UpstreamDatabase

    def target(self, **kw: Any) -> dict[str, Any]:
        """The ``crm`` target entry of the policy (keyword arguments: see ``pg_target``)."""
        return pg_target(1, TARGET, database=self.db.name, worker_key=self.gw.worker_key, **kw)

    def policy(self, rules: list[dict[str, Any]] | None = None, **kw: Any) -> None:
        """Publish the ``crm`` target with ``rules`` (``masking=``/``grants=`` passed on)."""
        target_kw = kw.pop("target", {})
        self.gw.policy([self.target(**target_kw)], rules=rules, **kw)

    def dsn(self, **extra: Any) -> str:
        """A libpq connection string for ``crm`` through the gateway (verify-full TLS)."""
        return self.gw.dsn(TARGET, **extra)

    def url(self, driver: str = "postgresql") -> str:
        """The same as a URL (``postgresql+psycopg`` for SQLAlchemy)."""
        from urllib.parse import quote

        return (
            f"{driver}://{quote(self.gw.agent_name)}:{quote(self.gw.token)}@127.0.0.1:"
            f"{self.gw.pg_port}/{TARGET}?sslmode=verify-full&sslrootcert={self.gw.ca_file}"
        )

    def connect(self, **kw: Any) -> psycopg.Connection[Any]:
        """A psycopg connection through the gateway."""
        return psycopg.connect(self.dsn(), **kw)

    def direct(self, **kw: Any) -> psycopg.Connection[Any]:
        """A psycopg connection straight to the upstream database (no gateway)."""
        return psycopg.connect(self.db.conninfo(), **kw)

    def libpq_env(self) -> dict[str, str]:
        """Environment for ``psql``/``pgbench`` through the gateway."""
        return {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.gw.pg_port),
            "PGUSER": self.gw.agent_name,
            "PGPASSWORD": self.gw.token,
            "PGDATABASE": TARGET,
            "PGSSLMODE": "verify-full",
            "PGSSLROOTCERT": str(self.gw.ca_file),
            "PGCONNECT_TIMEOUT": "10",
        }

    def exchanges(self, n: int | None = None, timeout: float = 10) -> list[ExchangeMessage]:
        """What this test recorded so far (waiting until there are ``n``)."""
        return self.gw.exchanges(n, timeout)

    def worker_rss_kb(self) -> int:
        """The worker process's resident set (``VmRSS``, kilobytes)."""
        assert self.gw.proc is not None
        text = Path(f"/proc/{self.gw.proc.pid}/status").read_text()
        m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
        assert m is not None
        return int(m.group(1))

    def assert_nothing_raw(self, exchanges: list[ExchangeMessage] | None = None) -> None:
        """No raw e-mail, phone, SSN, card or IBAN of the customers in any exchange."""
        for x in self.exchanges() if exchanges is None else exchanges:
            text = x.to_json()
            for raw in RAW_VALUES:
                assert raw not in text, (
                    f"{raw!r} recorded unmasked in {x.method} {x.request_body!r}"
                )


@pytest.fixture(scope="package")
def pg_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgEnv]:
    db = UpstreamDatabase().create()
    with psycopg.connect(db.conninfo(), autocommit=True) as c:
        c.execute(EXTRA_SCHEMA)
    gw = PgGateway(tmp_path_factory.mktemp("pg-gateway"))
    env = PgEnv(gw, db)
    try:
        env.policy()
        gw.start()
        yield env
    finally:
        gw.stop()
        db.drop()


@pytest.fixture
def pg(pg_shared: PgEnv) -> PgEnv:
    """The shared gateway with the default policy and an empty exchange stream."""
    pg_shared.policy()
    pg_shared.gw.redis.delete(pg_shared.gw.keys.exchanges_stream)
    with pg_shared.direct(autocommit=True) as c:
        c.execute("TRUNCATE scratch, audit_log")
    return pg_shared


# --- hostile input, authentication, failures, approvals (see hxenv.py) --------------------


@pytest.fixture(scope="package")
def hx_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One worker for the ``test_hostile/auth/failures/approvals`` tests (targets ``hx-*``)."""
    from tests.proxy_worker.postgres.hxenv import HxEnv

    db = UpstreamDatabase().create()
    gw = PgGateway(
        tmp_path_factory.mktemp("hx-gateway"),
        extra_env={"GATEHOUSE_PG_MAX_MESSAGE": str(256 * 1024)},
    )
    env = HxEnv(gw, db)
    try:
        env.publish()
        gw.start()
        yield env
    finally:
        gw.stop()
        db.drop()


@pytest.fixture
def hx(hx_shared: Any) -> Iterator[Any]:
    """The shared ``hx`` worker with its base policy and ``audit_log`` refilled; after
    the test, its log must hold no traceback (whatever the test did to it)."""
    hx_shared.reset()
    seen = len(hx_shared.gw.log())
    yield hx_shared
    new = hx_shared.gw.log()[seen:]
    assert "Traceback" not in new, new[-4000:]


def _hx_private_postgres(auth: str) -> Iterator[Any]:
    import shutil
    import tempfile

    from tests.proxy_worker.postgres.harness import PrivatePostgres

    # Not under pytest's tmp dir: the cluster runs as the postgres user, which must be
    # able to reach its directory (pytest's are 0700 root).
    base = Path(tempfile.mkdtemp(prefix="gh-hx-pg-"))
    base.chmod(0o755)
    cluster = PrivatePostgres(base / "cluster", auth=auth)
    if not cluster.available:
        pytest.skip("no PostgreSQL server binaries (initdb) installed")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="package")
def hx_scram_pg() -> Iterator[Any]:
    """A private cluster insisting on SCRAM-SHA-256 (TLS on)."""
    yield from _hx_private_postgres("scram-sha-256")


@pytest.fixture(scope="package")
def hx_md5_pg() -> Iterator[Any]:
    """A private cluster insisting on MD5 passwords (TLS on)."""
    yield from _hx_private_postgres("md5")

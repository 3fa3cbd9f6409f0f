"""PostgreSQL path benchmark: ``pgbench`` direct, through PgBouncer and through Gatehouse.

One run measures the same ``pgbench`` workloads, interleaved in ``--rounds`` (medians
reported), against:

* ``direct``: the upstream server, plaintext (``sslmode=disable``);
* ``direct-tls``: the upstream server with ``sslmode=require``, when it has ``ssl = on``
  (the machine's server has it off: ``--upstream private`` starts an ``initdb``'d cluster
  with TLS so that this row exists);
* ``pgbouncer-session`` / ``pgbouncer-tx``: PgBouncer (Debian's package, the field's
  reference proxy) in session and transaction pooling, plaintext on both sides;
* ``pgbouncer-tls``: PgBouncer in transaction pooling with ``client_tls_sslmode =
  require`` (a self-signed certificate), the TLS-terminating reference;
* ``gatehouse``: a real proxy worker (``tests/proxy_worker/postgres/harness.PgGateway``)
  with the harness's default masking rules and a policy like the demo's (UPDATE/DELETE
  without WHERE denied, SELECT on customer tables without LIMIT held for approval); the
  client side requires TLS as agents would (``sslmode=require``); every statement is
  recorded as an exchange to the Redis stream (nobody ingests; the stream is emptied
  after each run so Redis stays small).

Workloads (``--workloads``, ``--clients``, ``--protocols``): ``select`` = ``pgbench -S``
(one ``SELECT abalance ... WHERE aid = :aid``); ``rw`` = a custom script ``BEGIN; SELECT
by key; UPDATE by key; END`` on ``pgbench_accounts``; each at 1 and 8 clients (``-j`` =
min(clients, 2): the machine has 2 cores), each with ``-M simple``, ``-M extended`` and
``-M prepared``. PgBouncer 1.18 (Debian 12) has no prepared-statement support in
transaction pooling, so ``-M prepared`` is skipped for ``pgbouncer-tx``/``pgbouncer-tls``.

Figures per run: TPS (pgbench's, without connection time), p50/p99 latency computed from
pgbench's per-transaction log (``--log``), failed transactions, CPU time of the proxy
process per transaction (``/proc/<pid>/stat`` utime + stime over the measured run divided
by the transactions; PgBouncer is one process, Gatehouse one worker; the direct rows have
none), ratios to ``direct`` and p50 added over ``direct`` (and over ``direct-tls`` when it
was measured), and the 1-minute load average when the run started (the machine is
shared). ``--profile FILE`` then records the worker with py-spy during a select-only run
at 8 clients and prints its top self-time and cumulative-time functions.

Usage (from the repository root; the figures in docs/benchmarks.md came from it)::

    .venv/bin/python bench/pg_pgbench.py --scale 10 --duration 8 --rounds 3
    .venv/bin/python bench/pg_pgbench.py --upstream private --rounds 3   # TLS upstream
    .venv/bin/python bench/pg_pgbench.py --systems gatehouse --workloads select \\
        --clients 8 --protocols simple --rounds 0 --profile /tmp/pg.prof.txt

Needs ``pgbench`` (postgresql-client) and, for the PgBouncer rows, ``pgbouncer``
(``apt-get install -y pgbouncer``; the script installs it when run as root and says so
when it cannot). The upstream database ``gh_pgbench_<random>`` is created with
``pgbench -i -s N`` and dropped at the end.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo.stack import free_port, wait_port  # noqa: E402
from tests.proxy_worker.postgres.harness import (  # noqa: E402
    PgGateway,
    PrivatePostgres,
    pg_target,
    sql_rule,
)

PGBENCH = shutil.which("pgbench")
PY_SPY = str(Path(sys.executable).parent / "py-spy")
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: ``--systems`` keys, in measuring order.
SYSTEMS = [
    "direct",
    "direct-tls",
    "pgbouncer-session",
    "pgbouncer-tx",
    "pgbouncer-tls",
    "gatehouse",
]
#: Systems whose server-side pooling breaks ``-M prepared`` (PgBouncer < 1.21).
NO_PREPARED = {"pgbouncer-tx", "pgbouncer-tls"}
RW_SCRIPT = """\\set aid random(1, {accounts})
\\set delta random(-5000, 5000)
BEGIN;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
END;
"""


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system, all threads) of ``pid`` so far, seconds; ``nan`` if none."""
    if pid is None:
        return float("nan")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)": field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1, nearest rank) of an ascending list; ``nan`` when empty."""
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


# --- the upstream ---------------------------------------------------------------------------


class Upstream:
    """Where the real database is: the machine's server or a private TLS cluster.

    ``host``/``port``/``user`` reach it with trust authentication; :meth:`create` makes
    the pgbench database, :meth:`drop` removes it (and stops a private cluster).
    """

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.private: PrivatePostgres | None = None
        self.host, self.port, self.user = "127.0.0.1", 5432, "postgres"
        if kind == "private":
            self.private = PrivatePostgres(tmp / "private-pg", auth="trust")
            if not self.private.available:
                sys.exit("--upstream private needs the PostgreSQL server package (initdb)")
        self.dbname = f"gh_pgbench_{uuid.uuid4().hex[:8]}"

    def start(self) -> Upstream:
        if self.private is not None:
            self.private.start()
            self.port = self.private.port
        return self

    def conninfo(self, dbname: str | None = None, sslmode: str = "disable") -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=dbname or "postgres",
            sslmode=sslmode,
        )

    def ssl_on(self) -> bool:
        with psycopg.connect(self.conninfo()) as c:
            return c.execute("SHOW ssl").fetchone()[0] == "on"  # type: ignore[index]

    def server_version(self) -> str:
        with psycopg.connect(self.conninfo()) as c:
            return c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]

    def create(self, scale: int) -> float:
        """Create and fill the pgbench database (``pgbench -i -s scale``); seconds taken."""
        t0 = time.monotonic()
        with psycopg.connect(self.conninfo(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.dbname}"')
        env = {**os.environ, "PGSSLMODE": "disable"}
        subprocess.run(
            [
                PGBENCH,
                "-i",
                "-q",
                "-s",
                str(scale),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                self.dbname,
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        return time.monotonic() - t0

    def drop(self) -> None:
        try:
            with psycopg.connect(self.conninfo(), autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        finally:
            if self.private is not None:
                self.private.stop()


# --- PgBouncer ------------------------------------------------------------------------------


def find_pgbouncer(install: bool) -> tuple[str | None, str]:
    """The ``pgbouncer`` binary (installing Debian's package as root if allowed) and why not."""
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found:
        return found, ""
    if not install:
        return None, "pgbouncer is not installed (apt-get install -y pgbouncer)"
    if os.geteuid() != 0:
        return None, "pgbouncer is not installed and this is not root: apt-get install pgbouncer"
    print("installing Debian's pgbouncer package (apt-get install -y pgbouncer) ...", flush=True)
    r = subprocess.run(
        ["apt-get", "install", "-y", "pgbouncer"],
        capture_output=True,
        text=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if r.returncode != 0:
        return None, f"apt-get install pgbouncer failed: {r.stderr.strip()[-300:]}"
    return shutil.which("pgbouncer") or "/usr/sbin/pgbouncer", ""


def self_signed(dirpath: Path) -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1 (PEM ``server.crt``, ``server.key``)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
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
        .sign(key, hashes.SHA256())
    )
    crt, keyfile = dirpath / "server.crt", dirpath / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    os.chmod(keyfile, 0o600)
    return crt, keyfile


class PgBouncer:
    """One PgBouncer child process from a generated ini in a directory of its own.

    ``pool_mode`` is ``session`` or ``transaction``; ``client_tls`` requires TLS from
    clients (self-signed certificate); ``server_sslmode`` is its ``server_tls_sslmode``
    (the same as Gatehouse's upstream ``sslmode``). Trust authentication with an auth file
    listing the upstream user. PgBouncer refuses to run as root: it is started with
    ``-u postgres`` (it drops to that user itself, so the child's pid is PgBouncer's).
    """

    def __init__(
        self,
        binary: str,
        tmp: Path,
        up: Upstream,
        pool_mode: str,
        *,
        client_tls: bool = False,
        server_sslmode: str = "disable",
        pool_size: int = 20,
    ) -> None:
        self.binary, self.up, self.pool_mode = binary, up, pool_mode
        self.dir = tmp
        self.port = free_port()
        self.client_tls = client_tls
        self.server_sslmode = server_sslmode
        self.pool_size = pool_size
        self.proc: subprocess.Popen | None = None

    def start(self) -> PgBouncer:
        self.dir.mkdir(parents=True, exist_ok=True)
        tls = ""
        if self.client_tls:
            crt, key = self_signed(self.dir)
            tls = (
                f"client_tls_sslmode = require\nclient_tls_cert_file = {crt}\n"
                f"client_tls_key_file = {key}\n"
            )
        (self.dir / "userlist.txt").write_text(f'"{self.up.user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"""[databases]
bench = host={self.up.host} port={self.up.port} dbname={self.up.dbname} user={self.up.user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/userlist.txt
pool_mode = {self.pool_mode}
default_pool_size = {self.pool_size}
max_client_conn = 200
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
server_tls_sslmode = {self.server_sslmode}
log_connections = 0
log_disconnections = 0
{tls}"""
        )
        argv = [self.binary, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in [self.dir, *self.dir.iterdir()]:
                os.chown(p, pw.pw_uid, pw.pw_gid)
            argv[1:1] = ["-u", "postgres"]
        out = open(self.dir / "stdout.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd="/")
        wait_port(self.port, 15, self.proc, f"pgbouncer ({self.pool_mode})")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --- Gatehouse ------------------------------------------------------------------------------


def start_gatehouse(tmp: Path, up: Upstream, upstream_sslmode: str) -> PgGateway:
    """A proxy worker with the harness's default masking and a demo-like SQL policy."""
    gw = PgGateway(tmp)
    gw.policy(
        [
            pg_target(
                1,
                "bench",
                database=up.dbname,
                host=up.host,
                port=up.port,
                user=up.user,
                password="",
                worker_key=gw.worker_key,
                sslmode=upstream_sslmode,
            )
        ],
        rules=[
            sql_rule(
                1,
                "No unfiltered writes",
                "deny",
                target_id=1,
                statement_kinds=["UPDATE", "DELETE"],
                without_where=True,
                reason="UPDATE and DELETE without WHERE touch every row.",
            ),
            sql_rule(
                2,
                "Bulk customer reads need approval",
                "approve",
                target_id=1,
                statement_kinds=["SELECT"],
                tables=["customers", "customer_contacts"],
                without_limit=True,
            ),
        ],
    )
    return gw.start()


# --- pgbench --------------------------------------------------------------------------------


def run_pgbench(
    conn: dict[str, Any],
    *,
    workload: str,
    clients: int,
    protocol: str,
    duration: int,
    script: Path,
    logdir: Path | None = None,
    pid: int | None = None,
) -> dict[str, Any]:
    """One ``pgbench`` run; with ``logdir``, latencies from its per-transaction log.

    ``conn``: ``host``, ``port``, ``user``, ``dbname``, ``env`` (PGSSLMODE, PGPASSWORD).
    Returns ``tps``, ``transactions``, ``failed``, ``p50_ms``, ``p99_ms``, ``mean_ms``,
    ``cpu_us_per_txn`` (``pid``'s CPU over the run / transactions), ``load1``; raises
    ``RuntimeError`` with pgbench's stderr when it fails.
    """
    argv = [
        PGBENCH,
        "-n",
        "-T",
        str(duration),
        "-c",
        str(clients),
        "-j",
        str(min(clients, 2)),
        "-M",
        protocol,
        "-h",
        conn["host"],
        "-p",
        str(conn["port"]),
        "-U",
        conn["user"],
    ]
    argv += ["-S"] if workload == "select" else ["-f", str(script)]
    if logdir is not None:
        shutil.rmtree(logdir, ignore_errors=True)
        logdir.mkdir(parents=True)
        argv += ["--log", f"--log-prefix={logdir}/tx"]
    argv.append(conn["dbname"])
    load1 = os.getloadavg()[0]
    cpu0 = cpu_seconds(pid)
    r = subprocess.run(argv, capture_output=True, text=True, env=conn["env"])
    cpu = cpu_seconds(pid) - cpu0
    if r.returncode != 0 or "tps =" not in r.stdout:
        raise RuntimeError(f"pgbench failed ({r.returncode}): {r.stderr.strip()[-600:]}")
    tps = float(re.search(r"tps = ([\d.]+) \(without initial", r.stdout).group(1))  # type: ignore[union-attr]
    done = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    out: dict[str, Any] = {
        "tps": tps,
        "transactions": int(done.group(1)) if done else 0,
        "failed": int(failed.group(1)) if failed else 0,
        "load1": load1,
    }
    lat: list[float] = []
    if logdir is not None:
        for f in logdir.iterdir():
            with open(f) as fh:
                for line in fh:
                    parts = line.split(None, 3)
                    if len(parts) >= 3:
                        lat.append(int(parts[2]) / 1000.0)
        lat.sort()
        shutil.rmtree(logdir, ignore_errors=True)
    out["p50_ms"] = percentile(lat, 0.50)
    out["p99_ms"] = percentile(lat, 0.99)
    out["mean_ms"] = statistics.fmean(lat) if lat else float("nan")
    n = out["transactions"]
    out["cpu_us_per_txn"] = cpu * 1e6 / n if n and cpu == cpu else float("nan")
    return out


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Field-wise median of repeated runs (``rounds`` = how many)."""
    out: dict[str, Any] = {"rounds": len(runs)}
    for key in runs[0]:
        vals = [r[key] for r in runs if r[key] == r[key]]
        out[key] = statistics.median(vals) if vals else float("nan")
    out["load1_range"] = (min(r["load1"] for r in runs), max(r["load1"] for r in runs))
    return out


# --- profile ---------------------------------------------------------------------------------


def summarize_profile(raw: Path, top: int = 25) -> str:
    """Top self-time and cumulative-time functions of a ``py-spy record -f raw`` file.

    Each raw line is ``frame;frame;...;frame COUNT`` (outermost first). Self time is the
    innermost frame; cumulative time counts a function once per sample it appears in.
    Shares are of all samples (idle samples included unless py-spy ran with ``--idle``
    off, which is its default: idle threads are not sampled).
    """
    self_t: collections.Counter[str] = collections.Counter()
    cum_t: collections.Counter[str] = collections.Counter()
    by_file: collections.Counter[str] = collections.Counter()
    by_component: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        names = [re.sub(r":\d+\)$", ")", f) for f in frames]  # drop line numbers
        self_t[names[-1]] += n
        for name in set(names):
            cum_t[name] += n
        by_component[component(frames)] += n
        leaf = names[-1]
        m = re.search(r"\((.*)\)$", leaf)
        by_file[m.group(1) if m else leaf] += n
    lines = [f"{total} samples", "", "top self time (innermost frame):", ""]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in self_t.most_common(top)]
    lines += ["", "top cumulative time (function on the stack):", ""]
    skip = ("runpy", "asyncio/runners.py", "base_events.py", "events.py", "__main__.py")
    cum = [(k, v) for k, v in cum_t.most_common() if not any(s in k for s in skip)]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in cum[:top]]
    lines += ["", "self time by file:", ""]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in by_file.most_common(top)]
    lines += ["", "by component (innermost frame that names one, see COMPONENTS):", ""]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in by_component.most_common()]
    return "\n".join(lines)


def component(frames: list[str]) -> str:
    """The :data:`COMPONENTS` name of one sampled stack (outermost frame first)."""
    for table in (COMPONENTS, GENERIC_COMPONENTS):
        for frame in reversed(frames):
            for name, keys in table:
                if any(k in frame for k in keys):
                    return name
    return "other"


#: Profile components: (name, substrings of a frame). A sample goes to the component of
#: its innermost frame that matches one of these (so the masking engine called while
#: building an exchange counts as recording), else of GENERIC_COMPONENTS.
COMPONENTS = [
    ("recording: build the exchange (record.py)", ("statement_exchange (",)),
    ("recording: queue + XADD to Redis (link.py)", ("ControlPlaneLink.", "redis/")),
    ("SQL analysis (sql.analyze, pglast)", ("analyze (proxy_worker/postgres/sql.py",)),
    ("policy decision", ("Relay._decide_facts", "Policy.evaluate_statement")),
    ("row masking: per-statement plan (_row_masker)", ("Relay._row_masker",)),
    ("row masking: rows (_data_rows)", ("Relay._data_rows",)),
    ("TLS (asyncio sslproto, ssl)", ("asyncio/sslproto.py", "(ssl.py")),
    ("socket I/O (asyncio transports, streams)", ("selector_events.py", "asyncio/streams.py")),
]
GENERIC_COMPONENTS = [
    ("relay logic + protocol codecs", ("proxy_worker/postgres/",)),
    ("event loop (callbacks, tasks, futures)", ("asyncio/", "selectors.py")),
]


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i -s (100,000 rows each)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--clients", default="1,8", help="client counts, comma-separated")
    parser.add_argument("--workloads", default="select,rw", help="of select, rw")
    parser.add_argument("--protocols", default="simple,extended,prepared", help="pgbench -M")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"of {','.join(SYSTEMS)}")
    parser.add_argument(
        "--upstream",
        choices=["machine", "private"],
        default="machine",
        help="the machine's server (127.0.0.1:5432) or a private initdb'd cluster with TLS",
    )
    parser.add_argument(
        "--upstream-sslmode",
        default="prefer",
        help="sslmode of Gatehouse's and PgBouncer's upstream connections (disable/prefer/...)",
    )
    parser.add_argument("--no-install", action="store_true", help="do not apt-get pgbouncer")
    parser.add_argument("--profile", type=Path, help="py-spy raw output file for the worker")
    parser.add_argument("--profile-seconds", type=int, default=15)
    parser.add_argument("--profile-protocol", default="simple")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    if not PGBENCH:
        sys.exit("pgbench is required (Debian package postgresql-client)")
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := [s for s in wanted if s not in SYSTEMS]:
        sys.exit(f"unknown system(s) {unknown}; choose from {SYSTEMS}")
    if args.profile and "gatehouse" not in wanted:
        wanted.append("gatehouse")
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="gh-pgbench-"))
    os.chmod(tmp, 0o755)  # PgBouncer runs as postgres and reads its own subdirectories
    notes: list[str] = []
    up = Upstream(args.upstream, tmp).start()
    bouncers: list[PgBouncer] = []
    gw: PgGateway | None = None
    results: dict[str, Any] = {
        "machine": {"nproc": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "workloads": {},
    }
    try:
        init_s = up.create(args.scale)
        ssl = up.ssl_on()
        results["upstream"] = {
            "kind": args.upstream,
            "server_version": up.server_version(),
            "ssl": ssl,
            "init_seconds": init_s,
        }
        print(
            f"upstream {args.upstream} {up.host}:{up.port} PostgreSQL {up.server_version()} "
            f"ssl={'on' if ssl else 'off'}; pgbench -i -s {args.scale} took {init_s:.1f} s",
            flush=True,
        )
        with psycopg.connect(up.conninfo(up.dbname), autocommit=True) as c:
            c.execute("VACUUM ANALYZE")
        script = tmp / "rw.sql"
        script.write_text(RW_SCRIPT.format(accounts=100_000 * args.scale))
        #: name -> connection parameters and the pid whose CPU is measured
        systems: dict[str, dict[str, Any]] = {}
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if "direct" in wanted:
            systems["direct"] = {
                "host": up.host,
                "port": up.port,
                "user": up.user,
                "dbname": up.dbname,
                "env": {**base_env, "PGSSLMODE": "disable"},
                "pid": None,
            }
        if "direct-tls" in wanted:
            if ssl:
                systems["direct-tls"] = {
                    **systems.get(
                        "direct",
                        {
                            "host": up.host,
                            "port": up.port,
                            "user": up.user,
                            "dbname": up.dbname,
                            "pid": None,
                        },
                    ),
                    "env": {**base_env, "PGSSLMODE": "require"},
                }
            else:
                notes.append(
                    "direct-tls not measured: the upstream server has ssl = off "
                    "(SHOW ssl); run with --upstream private for a TLS upstream"
                )
        if any(s.startswith("pgbouncer") for s in wanted):
            binary, why = find_pgbouncer(not args.no_install)
            if binary is None:
                notes.append(f"PgBouncer rows not measured: {why}")
                print(f"NOTE: {why}", flush=True)
            else:
                ver = subprocess.run([binary, "--version"], capture_output=True, text=True)
                results["pgbouncer_version"] = ver.stdout.splitlines()[0] if ver.stdout else ""
                for name, mode, tls in [
                    ("pgbouncer-session", "session", False),
                    ("pgbouncer-tx", "transaction", False),
                    ("pgbouncer-tls", "transaction", True),
                ]:
                    if name not in wanted:
                        continue
                    b = PgBouncer(
                        binary,
                        tmp / name,
                        up,
                        mode,
                        client_tls=tls,
                        server_sslmode=args.upstream_sslmode,
                    ).start()
                    bouncers.append(b)
                    systems[name] = {
                        "host": "127.0.0.1",
                        "port": b.port,
                        "user": up.user,
                        "dbname": "bench",
                        "env": {**base_env, "PGSSLMODE": "require" if tls else "disable"},
                        "pid": b.proc.pid,  # type: ignore[union-attr]
                    }
        if "gatehouse" in wanted:
            (tmp / "gatehouse").mkdir()
            gw = start_gatehouse(tmp / "gatehouse", up, args.upstream_sslmode)
            systems["gatehouse"] = {
                "host": "127.0.0.1",
                "port": gw.pg_port,
                "user": gw.agent_name,
                "dbname": "bench",
                "env": {**base_env, "PGSSLMODE": "require", "PGPASSWORD": gw.token},
                "pid": gw.proc.pid,  # type: ignore[union-attr]
            }
        order = [s for s in SYSTEMS if s in systems]
        results["systems"] = order
        loads = [
            (w, int(c), p)
            for w in args.workloads.split(",")
            if w.strip()
            for c in args.clients.split(",")
            if c.strip()
            for p in args.protocols.split(",")
            if p.strip()
        ]
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            f"{w} c{c} {p}": {s: [] for s in order} for w, c, p in loads
        }
        for rnd in range(args.rounds):
            for w, c, p in loads:
                key = f"{w} c{c} {p}"
                for s in order:
                    if p == "prepared" and s in NO_PREPARED:
                        continue
                    conn = systems[s]
                    common = dict(workload=w, clients=c, protocol=p, script=script)
                    try:
                        if args.warmup:
                            run_pgbench(conn, duration=args.warmup, **common)
                        r = run_pgbench(
                            conn,
                            duration=args.duration,
                            logdir=tmp / "log",
                            pid=conn["pid"],
                            **common,
                        )
                    except RuntimeError as e:
                        print(f"round {rnd + 1} {key:22} {s:18} ERROR {e}", flush=True)
                        notes.append(f"{key} {s}: {e}")
                        continue
                    finally:
                        if s == "gatehouse" and gw is not None:
                            gw.redis.delete(gw.keys.exchanges_stream)
                    runs[key][s].append(r)
                    print(f"round {rnd + 1} {key:22} {s:18} {fmt_run(r)}", flush=True)
        for key, per in runs.items():
            results["workloads"][key] = {
                "systems": {s: median_run(rs) for s, rs in per.items() if rs},
                "each": per,
            }
        if args.profile and gw is not None:
            results["profile"] = profile(gw, systems["gatehouse"], args, script)
        if gw is not None:
            tail = gw.log()
            errors = [ln for ln in tail.splitlines() if "Traceback" in ln or " ERROR " in ln]
            if errors:
                notes.append(f"worker log: {len(errors)} error lines, first: {errors[0][:200]}")
    finally:
        for b in bouncers:
            b.stop()
        if gw is not None:
            gw.stop()
        up.drop()
    results["notes"] = notes
    results["elapsed_s"] = time.monotonic() - t_start
    results["machine"]["loadavg_end"] = os.getloadavg()
    print()
    print(report(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    shutil.rmtree(tmp, ignore_errors=True)


def profile(
    gw: PgGateway, conn: dict[str, Any], args: argparse.Namespace, script: Path
) -> dict[str, Any]:
    """py-spy (200 Hz, non-blocking, raw) on the worker during ``pgbench -S -c 8``."""
    spy = subprocess.Popen(
        [
            PY_SPY,
            "record",
            "-r",
            "200",
            "--nonblocking",
            "-f",
            "raw",
            "-o",
            str(args.profile),
            "-d",
            str(args.profile_seconds + 1),
            "-p",
            str(conn["pid"]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    try:
        r = run_pgbench(
            conn,
            workload="select",
            clients=8,
            protocol=args.profile_protocol,
            duration=args.profile_seconds,
            script=script,
            logdir=script.parent / "profile-log",
            pid=conn["pid"],
        )
    finally:
        gw.redis.delete(gw.keys.exchanges_stream)
    _out, err = spy.communicate(timeout=60)
    if spy.returncode != 0 or not args.profile.exists():
        return {"error": f"py-spy failed: {err.strip()[-300:]}", "run": r}
    summary = summarize_profile(args.profile)
    print(f"\nprofile: select c8 {args.profile_protocol} under py-spy: {fmt_run(r)}")
    print(summary, flush=True)
    return {"run": r, "summary": summary, "raw": str(args.profile)}


def fmt_run(r: dict[str, Any]) -> str:
    return (
        f"{r['tps']:9.0f} tps  p50 {r['p50_ms']:6.3f} ms  p99 {r['p99_ms']:6.3f} ms  "
        f"cpu {r['cpu_us_per_txn']:7.1f} us/txn  failed {r['failed']}  load {r['load1']:.2f}"
    )


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    """Markdown tables: one per workload, rows = systems, ratios against ``direct``."""
    nan = float("nan")
    up = results.get("upstream", {})
    lines = [
        f"upstream: {up.get('kind')} PostgreSQL {up.get('server_version')}, "
        f"ssl={'on' if up.get('ssl') else 'off'}, pgbench -s {args.scale}; "
        f"Gatehouse/PgBouncer upstream sslmode={args.upstream_sslmode}; "
        f"{results.get('pgbouncer_version', 'no PgBouncer')}; nproc {results['machine']['nproc']}"
        f"; {args.duration} s runs after {args.warmup} s warm-up, median of {args.rounds} "
        f"interleaved rounds; whole run {results['elapsed_s'] / 60:.1f} min",
    ]
    for key, block in results["workloads"].items():
        per = block["systems"]
        if not per:
            continue
        d = per.get("direct", {})
        dt = per.get("direct-tls", {})
        lines += [
            "",
            f"**{key}** (pgbench {'-S' if key.startswith('select') else '-f rw.sql'} "
            f"-c {key.split()[1][1:]} -M {key.split()[2]})",
            "",
            "| system | TPS | p50 ms | p99 ms | failed | proxy CPU µs/txn | TPS vs direct |"
            " p50 added vs direct | p50 added vs direct-tls | load avg |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s, r in per.items():
            ratio = r["tps"] / d["tps"] if d.get("tps") else nan
            added = r["p50_ms"] - d.get("p50_ms", nan)
            added_tls = r["p50_ms"] - dt.get("p50_ms", nan)
            cpu = r["cpu_us_per_txn"]
            lo, hi = r["load1_range"]
            name = f"**{s}**" if s == "gatehouse" else s
            lines.append(
                f"| {name} | {r['tps']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                f"{r['failed']:.0f} | {'–' if cpu != cpu else f'{cpu:.0f}'} | {ratio:.2f} | "
                f"{added * 1000:+.0f} µs | "
                f"{'–' if added_tls != added_tls else f'{added_tls * 1000:+.0f} µs'} | "
                f"{lo:.1f}–{hi:.1f} |"
            )
    goals = goal_lines(results)
    if goals:
        lines += ["", "Goals (issue 13):", "", *goals]
    if results.get("notes"):
        lines += ["", "Notes:", "", *[f"* {n}" for n in results["notes"]]]
    return "\n".join(lines)


def goal_lines(results: dict[str, Any]) -> list[str]:
    """Gatehouse ≥ 0.6× direct TPS on select-only at 8 clients; ≤ 0.5 ms added p50 at 1."""
    out = []
    for key, block in results["workloads"].items():
        per = block["systems"]
        g, d = per.get("gatehouse"), per.get("direct")
        if not g or not d or not key.startswith("select"):
            continue
        if key.startswith("select c8"):
            ratio = g["tps"] / d["tps"]
            verdict = "met" if ratio >= 0.6 else "NOT met"
            extra = ""
            if "direct-tls" in per:
                extra = f"; {g['tps'] / per['direct-tls']['tps']:.2f}× direct-tls"
            out.append(
                f"* {key}: Gatehouse {ratio:.2f}× direct TPS (goal ≥ 0.6×): {verdict}{extra}"
            )
        if key.startswith("select c1"):
            added = g["p50_ms"] - d["p50_ms"]
            verdict = "met" if added <= 0.5 else "NOT met"
            extra = ""
            if "direct-tls" in per:
                extra = f"; vs direct-tls {g['p50_ms'] - per['direct-tls']['p50_ms']:+.3f} ms"
            out.append(
                f"* {key}: Gatehouse adds {added:+.3f} ms at p50 (goal ≤ 0.5 ms): {verdict}{extra}"
            )
    return out


if __name__ == "__main__":
    main()

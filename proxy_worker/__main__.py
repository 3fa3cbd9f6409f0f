"""Run a Gatehouse proxy worker: ``python -m proxy_worker``.

Configuration comes from the environment (documented in README.md):

``GATEHOUSE_PROXY_HOST`` / ``GATEHOUSE_PROXY_PORT``  listen address (127.0.0.1:8080)
``GATEHOUSE_REDIS_URL``                              Redis (redis://127.0.0.1:6379/0)
``GATEHOUSE_REDIS_PREFIX``                           key prefix (gh)
``GATEHOUSE_WORKER_KEY``                             Fernet key for credentials in snapshots
``GATEHOUSE_MASKING_KEY``                            HMAC key for the hash masking strategy
``GATEHOUSE_SPOOL_DIR``                              exchange spool directory (var/spool)
``GATEHOUSE_WORKER_ID``                              worker name (hostname-pid)
``GATEHOUSE_PHONE_REGIONS``                          comma list of ISO 3166 regions for national
                                                     phone formats (masking.DEFAULT_PHONE_REGIONS)
``GATEHOUSE_MAX_MASK_BYTES``                         largest body masked, bytes (10 MiB)
``GATEHOUSE_FORWARD_PORT``                           forward-proxy listener port (empty: off)
``GATEHOUSE_CA_DIR``                                 CA for TLS interception (var/ca), shared
                                                     by every worker; its certificate is
                                                     published to Redis for the console
``GATEHOUSE_UPSTREAM_CA_FILE``                       PEM bundle trusted for upstream TLS
                                                     (replaces the default certifi bundle)
``GATEHOUSE_UPSTREAM_TIMEOUT``                       seconds to wait for an upstream's response
                                                     headers before answering 504 (60)
``GATEHOUSE_METRICS_PORT`` / ``GATEHOUSE_METRICS_HOST``  Prometheus /metrics listener (off;
                                                     127.0.0.1), see proxy_worker/metrics.py
``GATEHOUSE_PG_PORT`` / ``GATEHOUSE_PG_HOST``        PostgreSQL listener (empty: off; host
                                                     defaults to GATEHOUSE_PROXY_HOST), see
                                                     proxy_worker/postgres/
``GATEHOUSE_PG_TLS_CERT`` / ``GATEHOUSE_PG_TLS_KEY``  its TLS certificate and key (PEM files;
                                                     default: issued by the Gatehouse CA for
                                                     ``GATEHOUSE_PG_HOSTNAMES``)
``GATEHOUSE_PG_MAX_MESSAGE``                         largest PostgreSQL message relayed, bytes
                                                     (64 MiB)

``python -m proxy_worker --init-ca`` creates the CA in ``GATEHOUSE_CA_DIR`` and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mitmproxy import options
from mitmproxy.tools.dump import DumpMaster

from proxy_worker import dispatch
from proxy_worker.addons.approval_gate import ApprovalGate
from proxy_worker.addons.credential_injector import CredentialInjector
from proxy_worker.addons.forward_gate import ForwardGate
from proxy_worker.addons.mcp_gate import McpGate
from proxy_worker.addons.policy_gate import PolicyGate
from proxy_worker.addons.recorder import Recorder
from proxy_worker.addons.request_masking import RequestMasking
from proxy_worker.addons.response_masking import ResponseMasking
from proxy_worker.addons.upstream_errors import UpstreamErrors
from proxy_worker.contract import Keys
from proxy_worker.forward import ensure_ca, publish_ca_forever
from proxy_worker.identity import Authenticator, TokenUsage
from proxy_worker.link import ControlPlaneLink
from proxy_worker.masking import DEFAULT_PHONE_REGIONS, accel
from proxy_worker.metrics import Metrics, WorkerMetrics

if TYPE_CHECKING:
    from proxy_worker.postgres.server import PostgresListener

log = logging.getLogger("gatehouse.worker")


def _required(name: str) -> bytes:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"gatehouse proxy worker: {name} is not set (see README.md)")
    return value.encode()


def build_link() -> ControlPlaneLink:
    """A :class:`ControlPlaneLink` configured from the environment."""
    return ControlPlaneLink(
        redis_url=os.environ.get("GATEHOUSE_REDIS_URL", "redis://127.0.0.1:6379/0"),
        keys=Keys.from_env(),
        worker_id=os.environ.get("GATEHOUSE_WORKER_ID") or f"{socket.gethostname()}-{os.getpid()}",
        worker_key=_required("GATEHOUSE_WORKER_KEY"),
        masking_key=_required("GATEHOUSE_MASKING_KEY"),
        spool_dir=Path(os.environ.get("GATEHOUSE_SPOOL_DIR", "var/spool")),
        phone_regions=[
            r.strip()
            for r in os.environ.get(
                "GATEHOUSE_PHONE_REGIONS", ",".join(DEFAULT_PHONE_REGIONS)
            ).split(",")
            if r.strip()
        ],
        max_mask_bytes=int(os.environ.get("GATEHOUSE_MAX_MASK_BYTES", str(10 * 1024 * 1024))),
    )


def build_authenticator(link: ControlPlaneLink) -> Authenticator:
    """The worker's one :class:`Authenticator`: the bad-credential limiter sees failures
    from every listener (reverse, forward, PostgreSQL)."""
    return Authenticator(usage=TokenUsage(link.redis, link.keys.token_last_used))


def addons_for(link: ControlPlaneLink, authenticator: Authenticator | None = None) -> list[object]:
    """The Gatehouse addons in hook order (see docs/architecture.md, "the data path")."""
    authenticator = authenticator or build_authenticator(link)
    return [
        ForwardGate(link, authenticator),
        PolicyGate(link, authenticator),
        McpGate(link),
        RequestMasking(link),
        ApprovalGate(link),
        CredentialInjector(),
        UpstreamErrors(float(os.environ.get("GATEHOUSE_UPSTREAM_TIMEOUT", "60"))),
        ResponseMasking(link),
        Recorder(link),
    ]


async def run() -> None:
    """Start mitmproxy in reverse mode with the Gatehouse addons until SIGINT/SIGTERM."""
    host = os.environ.get("GATEHOUSE_PROXY_HOST", "127.0.0.1")
    port = int(os.environ.get("GATEHOUSE_PROXY_PORT", "8080"))
    forward_port = os.environ.get("GATEHOUSE_FORWARD_PORT", "").strip()
    ca_dir = os.environ.get("GATEHOUSE_CA_DIR", "var/ca")
    link = build_link()
    await link.start()
    # Reverse mode needs a fixed upstream; PolicyGate rewrites every routed request to its
    # target, and anything it does not route is answered by it, so this one is never used.
    modes = [f"reverse:http://127.0.0.1:9@{port}"]
    if forward_port:
        # Forward (HTTPS_PROXY) listener: ForwardGate refuses CONNECTs to non-targets,
        # PolicyGate routes the intercepted requests by host (proxy_worker/forward.py).
        modes.append(f"regular@{int(forward_port)}")
    ensure_ca(ca_dir)
    opts = options.Options(mode=modes, listen_host=host, confdir=ca_dir)
    master = DumpMaster(opts, with_termlog=True, with_dumper=False)
    dispatch.install(master)  # same hooks, same order, without walking ~45 addons per event
    authenticator = build_authenticator(link)
    master.addons.add(*addons_for(link, authenticator))
    metrics = WorkerMetrics(link)
    master.addons.add(Metrics(metrics))  # last: sees the final decision of every flow
    metrics_port = int(os.environ.get("GATEHOUSE_METRICS_PORT") or 0)
    if metrics_port:
        metrics.serve(metrics_port, os.environ.get("GATEHOUSE_METRICS_HOST", "127.0.0.1"))
    # Options declared by addons must be set after the master is built (PITFALLS.md).
    opts.update(
        connection_strategy="lazy",  # never open an upstream for a request we deny or hold
        keep_host_header=False,
        stream_large_bodies=None,  # streamed bodies would bypass masking
        body_size_limit="64m",
        termlog_verbosity="warn",
    )
    if os.environ.get("GATEHOUSE_UPSTREAM_CA_FILE"):
        opts.update(ssl_verify_upstream_trusted_ca=os.environ["GATEHOUSE_UPSTREAM_CA_FILE"])
    ca_task = asyncio.create_task(
        publish_ca_forever(link.redis, link.keys.ca_cert, ca_dir), name="gatehouse-ca"
    )
    pg_listener = await start_postgres(link, authenticator, host, ca_dir)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    log.info("gatehouse proxy worker %s listening on %s:%d", link.worker_id, host, port)
    log.info(
        "masking accelerator: %s",
        "on (C)" if accel.AVAILABLE else "off (pure Python; see docs/masking.md)",
    )
    print(f"gatehouse proxy worker {link.worker_id} listening on http://{host}:{port}", flush=True)
    if forward_port:
        print(f"gatehouse forward proxy on http://{host}:{int(forward_port)}", flush=True)
    try:
        await master.run()
    finally:
        if pg_listener is not None:
            await pg_listener.stop()
        ca_task.cancel()
        metrics.close()
        await link.stop()


async def start_postgres(
    link: ControlPlaneLink, authenticator: Authenticator, host: str, ca_dir: str
) -> PostgresListener | None:
    """Start the PostgreSQL listener when ``GATEHOUSE_PG_PORT`` is set (else ``None``)."""
    port = os.environ.get("GATEHOUSE_PG_PORT", "").strip()
    if not port:
        return None
    from proxy_worker.postgres.server import PostgresListener
    from proxy_worker.postgres.tls import listener_context_from_env

    listener = PostgresListener(
        link,
        authenticator,
        host=os.environ.get("GATEHOUSE_PG_HOST", "").strip() or host,
        port=int(port),
        tls_context=listener_context_from_env(ca_dir),
        max_message=int(os.environ.get("GATEHOUSE_PG_MAX_MESSAGE", str(64 * 1024 * 1024))),
    )
    await listener.start()
    log.info("postgres listener on %s:%s", listener.host, listener.port)
    print(f"gatehouse postgres listener on {listener.host}:{listener.port}", flush=True)
    return listener


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("GATEHOUSE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if sys.argv[1:] == ["--init-ca"]:
        path = ensure_ca(os.environ.get("GATEHOUSE_CA_DIR", "var/ca"))
        print(f"gatehouse CA certificate: {path}")
        return
    asyncio.run(run())


if __name__ == "__main__":
    main()

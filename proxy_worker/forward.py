"""Forward-proxy mode: agents send ``HTTPS_PROXY`` traffic to a second listener.

mitmproxy runs one ``regular`` listener next to the reverse one (``__main__.py``). A
``CONNECT host:port`` (RFC 9110 §9.3.6) is refused before any TLS is intercepted when no
target lives at that host and port: the listener is an egress allow-list
(``addons/forward_gate.py``). Accepted tunnels are intercepted with the Gatehouse CA
(mitmproxy's certificate store in ``GATEHOUSE_CA_DIR``), and each request inside is then
routed by :meth:`proxy_worker.policy.Policy.resolve_forward` (scheme, host, port, longest
base path) through the same addons as reverse mode.

Agent credentials in forward mode, in the order tried: ``Proxy-Authorization`` on the
request (plain-HTTP proxying), the ``Proxy-Authorization`` the client sent with its
``CONNECT`` (remembered per client connection, in memory only), then ``Authorization``.
Each may be ``Bearer <token>`` or ``Basic`` with the token as password (RFC 7617), so
``HTTPS_PROXY=http://agent:gh_...@gateway:8081`` works, as does an SDK's API key set to
the Gatehouse token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from pathlib import Path
from typing import Any

from mitmproxy import connection, http
from mitmproxy.proxy import mode_specs

log = logging.getLogger("gatehouse.forward")

#: mitmproxy's file names in its confdir (``CONF_BASENAME`` = ``mitmproxy``).
CA_CERT_FILE = "mitmproxy-ca-cert.pem"

#: Credential a client presented with its CONNECT, per client connection. Weak keys: an
#: entry disappears with its connection. Never logged, never recorded.
_tunnel_credentials: weakref.WeakKeyDictionary[connection.Client, str] = weakref.WeakKeyDictionary()


def is_forward(flow: http.HTTPFlow) -> bool:
    """Whether ``flow`` came in on the forward (``regular`` mode) listener."""
    return isinstance(flow.client_conn.proxy_mode, mode_specs.RegularMode)


def remember_tunnel_credential(client: connection.Client, credential: str) -> None:
    """Keep the credential of an accepted CONNECT for the requests inside its tunnel."""
    _tunnel_credentials[client] = credential


def tunnel_credential(client: connection.Client) -> str | None:
    """The credential presented with this connection's CONNECT, if any."""
    return _tunnel_credentials.get(client)


def ca_cert_path(confdir: str | Path) -> Path:
    """Where mitmproxy keeps the CA certificate (public part only) in ``confdir``."""
    return Path(confdir).expanduser() / CA_CERT_FILE


def read_ca_cert(confdir: str | Path) -> str | None:
    """The CA certificate PEM from ``confdir``, or ``None`` when it does not exist yet."""
    path = ca_cert_path(confdir)
    with contextlib.suppress(FileNotFoundError):
        pem = path.read_text()
        if "BEGIN CERTIFICATE" in pem:
            return pem
    return None


def ensure_ca(confdir: str | Path) -> Path:
    """Create mitmproxy's CA in ``confdir`` if it is missing; return the certificate's path.

    Workers that share one ``GATEHOUSE_CA_DIR`` share one CA. The first worker to start
    creates it (start one worker first, or create the CA once at deploy time with
    ``python -m proxy_worker --init-ca``, so that two do not race to create it).
    """
    from mitmproxy import certs

    path = Path(confdir).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    certs.CertStore.from_store(path, "mitmproxy", 2048)
    return ca_cert_path(path)


async def publish_ca_forever(
    redis: Any, key: str, confdir: str | Path, every: float = 60.0
) -> None:
    """Keep the CA certificate (public PEM only) at ``key`` in Redis for the web console.

    Rewritten every ``every`` seconds so a flushed or restarted Redis gets it back. Redis
    errors are logged and retried; the private key never leaves ``confdir``.
    """
    while True:
        pem = read_ca_cert(confdir)
        if pem is not None:
            try:
                await redis.set(key, pem)
            except Exception as e:
                log.debug("CA certificate not published: %s", type(e).__name__)
        await asyncio.sleep(every)

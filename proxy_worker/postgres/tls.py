"""TLS for the PostgreSQL listener (agents' side) and for upstream databases.

Agents' side: the listener answers an ``SSLRequest`` with ``S`` and a TLS handshake
(PostgreSQL docs, "SSL Session Encryption"). Its certificate is, in order of preference,
the operator's (``GATEHOUSE_PG_TLS_CERT`` / ``GATEHOUSE_PG_TLS_KEY``, PEM files), or one
issued by the Gatehouse CA (the forward proxy's, in ``GATEHOUSE_CA_DIR``) for the names
in ``GATEHOUSE_PG_HOSTNAMES`` (default ``localhost``, ``127.0.0.1``, ``::1`` and the
host name), so ``sslmode=verify-full sslrootcert=gatehouse-ca.pem`` works out of the box.

Upstream side: libpq's ``sslmode`` semantics (PostgreSQL docs, "SSL Support", table
"SSL Mode Descriptions"): ``disable`` never, ``prefer`` tries TLS and accepts a refusal
(without verification, as libpq does), ``require`` insists without verifying,
``verify-ca`` verifies the chain, ``verify-full`` also the host name. ``ca_pem`` (the
target's CA bundle) replaces the system trust store when given.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

log = logging.getLogger("gatehouse.postgres.tls")

#: sslmode values understood for upstream connections (libpq's names).
SSLMODES = ("disable", "prefer", "require", "verify-ca", "verify-full")

#: File names of the issued server certificate and key inside the CA directory.
SERVER_CERT_FILE = "gatehouse-pg-server.pem"
SERVER_KEY_FILE = "gatehouse-pg-server-key.pem"
#: The CA certificate of mitmproxy's store (the one agents get as ``sslrootcert``).
CA_CERT_FILE = "mitmproxy-ca-cert.pem"
#: An issued certificate this close to its expiry is issued anew at start-up.
RENEW_BEFORE = datetime.timedelta(days=7)


def default_hostnames() -> list[str]:
    """Names the listener's certificate is issued for when none are configured."""
    names = ["localhost", "127.0.0.1", "::1"]
    host = socket.gethostname()
    if host and host not in names:
        names.append(host)
    return names


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def issue_server_certificate(ca_dir: str | Path, hostnames: list[str]) -> tuple[Path, Path]:
    """Issue (or reuse) a server certificate for ``hostnames`` from the Gatehouse CA.

    The CA is mitmproxy's certificate store in ``ca_dir`` (created if missing, as the
    forward listener does). The certificate and its key are written next to it (key
    0600) and reused while they cover the same names, are not about to expire and were
    signed by that CA. Returns ``(cert path, key path)``.
    """
    from mitmproxy import certs

    base = Path(ca_dir).expanduser()
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = base / SERVER_CERT_FILE, base / SERVER_KEY_FILE
    wanted = sorted(set(hostnames))
    if _reusable(cert_path, key_path, base / CA_CERT_FILE, wanted):
        return cert_path, key_path
    store = certs.CertStore.from_store(base, "mitmproxy", 2048)
    entry = store.get_cert(wanted[0], _general_names(wanted), "Gatehouse")
    chain = entry.cert.to_pem()
    key_pem = entry.privatekey.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_bytes(chain)
    return cert_path, key_path


def _reusable(cert_path: Path, key_path: Path, ca_path: Path, wanted: list[str]) -> bool:
    """Whether the certificate issued earlier still serves: it covers exactly ``wanted``,
    is valid for at least :data:`RENEW_BEFORE` more, and was signed by the CA now in the
    directory (a regenerated CA makes every earlier certificate worthless to clients)."""
    if not (cert_path.exists() and key_path.exists() and ca_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = sorted(
            {str(v) for v in san.get_values_for_type(x509.IPAddress)}
            | set(san.get_values_for_type(x509.DNSName))
        )
        if have != sorted({str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in wanted}):
            return False
        now = datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc - RENEW_BEFORE:
            return False
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return True


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def server_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """The listener's TLS context: TLS 1.2 or newer, the given certificate chain and key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    # PostgreSQL 17 clients may offer ALPN "postgresql" (direct SSL); accept it.
    ctx.set_alpn_protocols(["postgresql"])
    return ctx


def listener_context_from_env(ca_dir: str | Path) -> ssl.SSLContext:
    """The listener's TLS context from the environment (see the module docstring)."""
    cert = os.environ.get("GATEHOUSE_PG_TLS_CERT", "").strip()
    key = os.environ.get("GATEHOUSE_PG_TLS_KEY", "").strip()
    if cert and key:
        return server_context(cert, key)
    names = [
        n.strip() for n in os.environ.get("GATEHOUSE_PG_HOSTNAMES", "").split(",") if n.strip()
    ] or default_hostnames()
    cert_path, key_path = issue_server_certificate(ca_dir, names)
    return server_context(cert_path, key_path)


def upstream_context(sslmode: str, ca_pem: str | None) -> ssl.SSLContext | None:
    """The client TLS context for an upstream database, or ``None`` for ``disable``.

    Raises:
        ValueError: unknown ``sslmode`` or a ``ca_pem`` that holds no certificate.
    """
    if sslmode not in SSLMODES:
        raise ValueError(f"unknown sslmode {sslmode!r}")
    if sslmode == "disable":
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if sslmode in ("prefer", "require"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca_pem and ca_pem.strip():
        try:
            ctx.load_verify_locations(cadata=ca_pem)
        except ssl.SSLError as e:
            raise ValueError(f"the target's CA certificates do not load: {e}") from e
    else:
        ctx.load_default_certs()
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = sslmode == "verify-full"
    return ctx

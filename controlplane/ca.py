"""The Gatehouse CA certificate: download and how-to-trust page (forward-proxy mode).

The forward-proxy listener intercepts TLS with certificates signed by the Gatehouse CA
(mitmproxy's store in the workers' shared ``GATEHOUSE_CA_DIR``). Workers publish the CA
*certificate* (public) to Redis (``Keys.ca_cert``); the web process serves it from there,
so it never needs access to the directory holding the CA's private key. On a single host
the file in ``settings.GATEHOUSE_CA_DIR`` is the fallback.
"""

from __future__ import annotations

import contextlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from controlplane.redis import client, keys
from controlplane.roles import ADMIN, APPROVER, AUDITOR, role_required
from proxy_worker.forward import read_ca_cert

CA_FILENAME = "gatehouse-ca.pem"


def current_ca_pem() -> str | None:
    """The CA certificate PEM (Redis first, then the local CA dir), or ``None``."""
    with contextlib.suppress(Exception):  # Redis down: try the file
        raw = client().get(keys().ca_cert)
        if raw:
            pem = raw.decode()
            if "BEGIN CERTIFICATE" in pem:
                return pem
    return read_ca_cert(settings.GATEHOUSE_CA_DIR)


def _describe(pem: str) -> dict[str, str]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    fp = cert.fingerprint(hashes.SHA256()).hex().upper()
    return {
        "subject": cert.subject.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%d"),
        "sha256": ":".join(fp[i : i + 2] for i in range(0, len(fp), 2)),
    }


@role_required(ADMIN, APPROVER, AUDITOR)
@require_GET
def ca_page(request: HttpRequest) -> HttpResponse:
    """How to reach targets through the forward proxy and trust the Gatehouse CA."""
    pem = current_ca_pem()
    return render(
        request,
        "controlplane/ca.html",
        {
            "ca": _describe(pem) if pem else None,
            "ca_filename": CA_FILENAME,
            "proxy_url": settings.GATEHOUSE_FORWARD_PROXY_URL,
        },
    )


@role_required(ADMIN, APPROVER, AUDITOR)
@require_GET
def ca_download(request: HttpRequest) -> HttpResponse:
    """The CA certificate as ``application/x-pem-file``; 404 until a worker published it."""
    pem = current_ca_pem()
    if pem is None:
        raise Http404("no proxy worker has published its CA certificate yet")
    resp = HttpResponse(pem, content_type="application/x-pem-file")
    resp["Content-Disposition"] = f'attachment; filename="{CA_FILENAME}"'
    return resp

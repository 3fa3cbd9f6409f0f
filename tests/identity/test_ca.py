"""The CA page and download (controlplane/ca.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.django_db


def _ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatehouse-test-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def published(redis_client, settings, tmp_path):
    from controlplane.redis import keys

    settings.GATEHOUSE_CA_DIR = str(tmp_path)  # no file fallback
    pem = _ca_pem()
    redis_client.set(keys().ca_cert, pem)
    return pem


def test_it_serves_the_published_certificate_to_every_role(client, users, published):
    for name in ("admin", "approver", "auditor"):
        client.force_login(users[name])
        page = client.get("/ca/")
        assert page.status_code == 200
        assert "gatehouse-test-ca" in page.text
        assert "NODE_EXTRA_CA_CERTS" in page.text and "SSL_CERT_FILE" in page.text
        pem = client.get("/ca/gatehouse-ca.pem")
        assert pem.status_code == 200
        assert pem["Content-Type"] == "application/x-pem-file"
        assert "attachment" in pem["Content-Disposition"]
        assert pem.content.decode() == published


def test_the_fingerprint_on_the_page_is_the_certificates(client, users, published):
    cert = x509.load_pem_x509_certificate(published.encode())
    fp = cert.fingerprint(hashes.SHA256()).hex().upper()
    client.force_login(users["auditor"])
    assert ":".join(fp[i : i + 2] for i in range(0, len(fp), 2)) in client.get("/ca/").text


def test_outsiders_get_403_and_anonymous_users_sign_in(client, users, published):
    assert client.get("/ca/gatehouse-ca.pem").status_code == 302
    client.force_login(users["outsider"])
    assert client.get("/ca/").status_code == 403
    assert client.get("/ca/gatehouse-ca.pem").status_code == 403


def test_without_a_published_certificate_it_says_so(
    client, users, redis_client, settings, tmp_path
):
    settings.GATEHOUSE_CA_DIR = str(tmp_path)
    client.force_login(users["admin"])
    assert "No proxy worker has published" in client.get("/ca/").text
    assert client.get("/ca/gatehouse-ca.pem").status_code == 404


def test_it_falls_back_to_the_local_ca_dir(client, users, redis_client, settings, tmp_path):
    pem = _ca_pem()
    (tmp_path / "mitmproxy-ca-cert.pem").write_text(pem)
    settings.GATEHOUSE_CA_DIR = str(tmp_path)
    client.force_login(users["admin"])
    assert client.get("/ca/gatehouse-ca.pem").content.decode() == pem


def test_only_get_is_allowed(client, users, published):
    client.force_login(users["admin"])
    assert client.post("/ca/").status_code == 405

"""Agents' authentication and TLS on the PostgreSQL port; Gatehouse's own upstream login.

Agents' side: TLS first (the token never crosses the network in the clear), then the
``gh_`` token as a cleartext password; the SQLSTATEs are PostgreSQL's (28P01 wrong
password, 28000 wrong user, 3D000 unknown database, 53300 too many failures). Upstream
side: private clusters (``initdb``, :class:`PrivatePostgres`) that insist on SCRAM-SHA-256
(with channel binding over TLS) or MD5, verified TLS, and the target's password that no
agent ever sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import shutil
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from demo.stack import free_port
from proxy_worker.policy import hash_token
from proxy_worker.postgres import protocol as pq
from tests.proxy_worker.postgres.hxenv import HxEnv, app_name
from tests.proxy_worker.postgres.rawwire import errors

# --- TLS before the password -------------------------------------------------------------------


def test_it_refuses_plaintext_before_asking_for_the_password(hx: HxEnv) -> None:
    for database in ("hx", "no-such-target"):
        w = hx.wire()
        w.startup(user=hx.gw.agent_name, database=database)
        first = w.read()
        # The first answer is the refusal, not AuthenticationCleartextPassword ('R').
        assert first.tag == "E"
        f = first.fields()
        assert (f["S"], f["C"], f["M"]) == (
            "FATAL",
            "28000",
            "Gatehouse requires TLS for this connection",
        )
        assert "sslmode=verify-full" in f["H"]
        assert w.closed()
    # libpq gives up before sending the password (it is never asked for).
    with pytest.raises(psycopg.OperationalError, match="Gatehouse requires TLS"):
        psycopg.connect(hx.dsn("hx", sslmode="disable"))
    # libpq's "allow" tries plaintext first: refused before any password, so libpq
    # retries over TLS and only then sends the token.
    with psycopg.connect(hx.dsn("hx", sslmode="allow")) as c:
        assert c.pgconn.ssl_in_use is True


def test_a_target_allowing_plaintext_accepts_sslmode_disable(hx: HxEnv) -> None:
    mark = hx.mark()
    with psycopg.connect(hx.dsn("hx-plain", sslmode="disable")) as c:
        assert c.pgconn.ssl_in_use is False
        assert c.execute("SELECT email FROM customers ORDER BY id LIMIT 1").fetchone() == (
            "[EMAIL]",
        )
    (x,) = [e for e in hx.exchanges(mark, 2) if e.method == "SELECT"]
    assert x.request_headers["tls"] == "none"
    # Over TLS it works too, and the record says so.
    mark = hx.mark()
    with psycopg.connect(hx.dsn("hx-plain")) as c:
        assert c.pgconn.ssl_in_use is True
        c.execute("SELECT 1")
    (x,) = [e for e in hx.exchanges(mark, 2) if e.method == "SELECT"]
    assert x.request_headers["tls"].startswith("TLSv1.")


# --- tokens ---------------------------------------------------------------------------------


def test_it_refuses_a_wrong_token_with_28p01(hx: HxEnv) -> None:
    w = hx.wire(source="127.0.0.31").tls(hx.gw.ca_file)
    msgs = w.login(hx.gw.agent_name, "gh_wrongwro_" + "x" * 32, "hx")
    (f,) = [m.fields() for m in msgs]
    assert (f["S"], f["C"]) == ("FATAL", "28P01")
    assert f["M"].startswith("password authentication failed for agent 'agent-pg'")
    assert w.closed()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(hx.dsn("hx", password="not-a-token"))
    # An empty password as well.
    w = hx.wire(source="127.0.0.31").tls(hx.gw.ca_file)
    msgs = w.login(hx.gw.agent_name, "", "hx")
    assert errors(msgs)[0][0] == "28P01"


def test_it_refuses_the_token_of_another_agent_with_28000(hx: HxEnv) -> None:
    w = hx.wire().tls(hx.gw.ca_file)
    msgs = w.login(hx.gw.agent_name, hx.other_token, "hx")
    assert errors(msgs) == [("28000", "the token belongs to agent 'hx-other', not 'agent-pg'")]
    assert w.closed()
    with psycopg.connect(hx.dsn("hx", user="hx-other", password=hx.other_token)) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_it_names_an_unknown_target_only_after_authentication(hx: HxEnv) -> None:
    w = hx.wire().tls(hx.gw.ca_file)
    w.startup(user=hx.gw.agent_name, database="no-such-target")
    assert w.read().tag == "R"  # the password is asked for first
    w.send(pq.build_password(hx.gw.token))
    f = w.error_then_close()
    assert (f["C"], f["M"]) == ("3D000", "no PostgreSQL target named 'no-such-target'")
    # Without a valid token nobody learns whether a target exists.
    w = hx.wire(source="127.0.0.32").tls(hx.gw.ca_file)
    msgs = w.login(hx.gw.agent_name, "gh_wrongwro_" + "y" * 32, "no-such-target")
    assert errors(msgs)[0][0] == "28P01"
    # An HTTP target is no PostgreSQL target either (none in this policy: any slug).
    with pytest.raises(psycopg.OperationalError, match="no PostgreSQL target named"):
        psycopg.connect(hx.dsn("missing"))


def test_it_rate_limits_bad_tokens_per_address(hx: HxEnv) -> None:
    source = "127.0.0.77"
    codes = []
    for i in range(11):
        w = hx.wire(source=source).tls(hx.gw.ca_file)
        msgs = w.login(hx.gw.agent_name, f"gh_badtoken_{i:032d}", "hx")
        codes.append(errors(msgs)[0][0])
        w.close()
    assert codes == ["28P01"] * 10 + ["53300"]
    # Now even the right token is refused from that address...
    w = hx.wire(source=source).tls(hx.gw.ca_file)
    msgs = w.login(hx.gw.agent_name, hx.gw.token, "hx")
    ((code, message),) = errors(msgs)
    assert code == "53300"
    assert message.startswith("too many failed authentications from this address; retry in ")
    # ...while other addresses are served.
    hx.assert_worker_alive()


def test_it_offers_only_cleartext_password_over_tls(hx: HxEnv) -> None:
    w = hx.wire().tls(hx.gw.ca_file)
    w.startup(user=hx.gw.agent_name, database="hx")
    r = w.read()
    assert r.tag == "R" and pq.parse_authentication(r.payload) == (3, b"")
    # A SASL answer in place of the password is no password message.
    w.send(pq.build_sasl_initial_response("SCRAM-SHA-256", b"n,,n=x,r=abc"))
    f = w.error_then_close()
    assert (f["S"], f["C"]) == ("FATAL", "08P01")
    assert "password" in f["M"]


# --- the listener's certificate ------------------------------------------------------------------


def test_the_certificate_names_the_local_addresses(hx: HxEnv) -> None:
    pem = (hx.gw.ca_dir / "gatehouse-pg-server.pem").read_bytes()
    cert = x509.load_pem_x509_certificates(pem)[0]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}
    assert "localhost" in san.get_values_for_type(x509.DNSName)


def test_the_listener_certificate_is_reused_only_while_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxy_worker.postgres import tls

    cert_path, _key = tls.issue_server_certificate(tmp_path, ["localhost", "127.0.0.1"])
    first = cert_path.read_bytes()
    tls.issue_server_certificate(tmp_path, ["127.0.0.1", "localhost"])
    assert cert_path.read_bytes() == first  # same names: reused
    tls.issue_server_certificate(tmp_path, ["localhost", "127.0.0.1", "db.internal"])
    second = cert_path.read_bytes()
    assert second != first  # other names: issued anew
    # A regenerated CA: the old certificate would fail every client's verification.
    for f in tmp_path.glob("mitmproxy-ca*"):
        f.unlink()
    tls.issue_server_certificate(tmp_path, ["localhost", "127.0.0.1", "db.internal"])
    third = cert_path.read_bytes()
    assert third != second
    ca = x509.load_pem_x509_certificate((tmp_path / tls.CA_CERT_FILE).read_bytes())
    x509.load_pem_x509_certificates(third)[0].verify_directly_issued_by(ca)
    # Close to its expiry: issued anew.
    monkeypatch.setattr(tls, "RENEW_BEFORE", datetime.timedelta(days=100 * 365))
    tls.issue_server_certificate(tmp_path, ["localhost", "127.0.0.1", "db.internal"])
    assert cert_path.read_bytes() != third


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_verify_full_with_the_gatehouse_ca_succeeds(hx: HxEnv, host: str) -> None:
    with psycopg.connect(hx.dsn("hx", host=host, hostaddr="127.0.0.1")) as c:
        assert c.pgconn.ssl_in_use
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_verify_full_refuses_a_host_name_the_certificate_does_not_name(hx: HxEnv) -> None:
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(hx.dsn("hx", host="db.example.invalid", hostaddr="127.0.0.1"))
    # verify-ca does not check the name, as libpq documents.
    dsn = hx.dsn("hx", host="db.example.invalid", hostaddr="127.0.0.1", sslmode="verify-ca")
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_verify_ca_refuses_another_ca(hx: HxEnv, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(_self_signed("Another CA")[0])
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(hx.dsn("hx", sslmode="verify-ca", sslrootcert=str(other)))


# --- revocation during a connection -----------------------------------------------------------


def test_a_token_revoked_mid_connection_ends_it(hx: HxEnv) -> None:
    token = "gh_revokeme_" + "r" * 32
    agent = {"id": 3, "name": "hx-revoked", "owner": "admin", "token_hashes": [hash_token(token)]}
    hx.publish(agents=[agent])
    name = app_name("hx-revoked")
    conn = psycopg.connect(hx.dsn("hx", user="hx-revoked", password=token), autocommit=True)
    idle = hx.wire().tls(hx.gw.ca_file)
    busy = hx.wire().tls(hx.gw.ca_file)
    try:
        assert idle.login("hx-revoked", token, "hx")[-1].tag == "Z"
        assert busy.login("hx-revoked", token, "hx", application_name=name)[-1].tag == "Z"
        assert conn.execute("SELECT 1").fetchone() == (1,)
        busy.send(pq.build_query("SELECT pg_sleep(30)"))
        deadline = time.monotonic() + 10
        while not any(r[1] == "active" for r in hx.upstream_activity(name)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        hx.publish()  # a new snapshot without the agent's token
        # Every connection of the agent ends at once, idle or busy, without waiting for
        # its next statement: a FATAL 28000, then the end of the connection.
        for w in (idle, busy):
            f = w.error_then_close()
            assert (f["S"], f["C"]) == ("FATAL", "28000")
            assert f["M"] == "the agent's token is no longer valid (revoked or expired)"
        with pytest.raises(psycopg.OperationalError, match="no longer valid"):
            conn.execute("SELECT 2")
        # The statement that was running upstream was cancelled.
        deadline = time.monotonic() + 5
        while any(r[1] == "active" for r in hx.upstream_activity(name)):
            assert time.monotonic() < deadline, "pg_sleep kept running"
            time.sleep(0.05)
    finally:
        conn.close()
        idle.close()
        busy.close()
    # A new connection with that token is refused at the login.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(hx.dsn("hx", user="hx-revoked", password=token))


# --- Gatehouse's own login upstream ---------------------------------------------------------------


def private_target(
    hx: HxEnv,
    pp: Any,
    target_id: int,
    slug: str,
    *,
    user: str = "scram_user",
    sslmode: str = "disable",
    password: str | None = None,
    ca_pem: str | None = None,
    port: int | None = None,
) -> dict[str, Any]:
    return hx.target(
        target_id,
        slug,
        host="127.0.0.1",
        port=port or pp.port,
        user=user,
        password=pp.password if password is None else password,
        database="app",
        sslmode=sslmode,
        ca_pem=ca_pem,
    )


def _self_signed(cn: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def query_through(hx: HxEnv, slug: str, sql: str) -> list[tuple[Any, ...]]:
    with hx.connect(slug, autocommit=True) as c:
        return c.execute(sql).fetchall()


def connect_error(hx: HxEnv, slug: str) -> dict[str, str]:
    """The ErrorResponse an agent gets when Gatehouse cannot log in upstream."""
    w = hx.wire().tls(hx.gw.ca_file)
    msgs = w.login(hx.gw.agent_name, hx.gw.token, slug)
    assert msgs[-1].tag == "E", msgs
    f = msgs[-1].fields()
    assert f["S"] == "FATAL"
    assert w.closed()
    return f


def test_it_logs_in_upstream_with_scram_sha_256(hx: HxEnv, hx_scram_pg: Any) -> None:
    hx.publish(targets=[private_target(hx, hx_scram_pg, 301, "hx-scram")])
    rows = query_through(
        hx, "hx-scram", "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    )
    assert rows == [("scram_user", False)]


def test_it_logs_in_upstream_with_scram_plus_over_tls(hx: HxEnv, hx_scram_pg: Any) -> None:
    hx.publish(targets=[private_target(hx, hx_scram_pg, 302, "hx-scram-tls", sslmode="require")])
    rows = query_through(
        hx, "hx-scram-tls", "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    )
    assert rows == [("scram_user", True)]


def test_channel_binding_defeats_a_tls_man_in_the_middle(hx: HxEnv, hx_scram_pg: Any) -> None:
    """Through a TLS-terminating relay, SCRAM-SHA-256-PLUS binds the relay's certificate,
    which the server does not have: the login fails. (Plain SCRAM over TLS would pass.)"""
    with TlsMitm(hx_scram_pg.port) as mitm:
        hx.publish(
            targets=[
                private_target(hx, hx_scram_pg, 303, "hx-mitm", sslmode="require", port=mitm.port)
            ]
        )
        f = connect_error(hx, "hx-mitm")
        assert mitm.sessions >= 1, (f, mitm.errors)  # the login went through the relay
    assert f["C"] == "08004"
    assert "channel binding" in f["M"]
    assert hx_scram_pg.password not in str(f)


def test_it_refuses_a_response_injected_before_the_upstream_tls_handshake(
    hx: HxEnv, hx_scram_pg: Any
) -> None:
    """A man in the middle appends plaintext after the server's "S" and relays the real
    (verified) TLS session: the injected bytes must not be taken for the server's
    (CVE-2021-23222). Here they say "logged in, ready" before the SCRAM exchange."""
    injected = pq.build_authentication(0) + pq.build_ready_for_query("I")
    with TlsMitm(hx_scram_pg.port, inject=injected) as mitm:
        hx.publish(
            targets=[
                private_target(
                    hx,
                    hx_scram_pg,
                    311,
                    "hx-inject",
                    sslmode="verify-full",
                    ca_pem=hx_scram_pg.ca_pem,
                    port=mitm.port,
                )
            ]
        )
        f = connect_error(hx, "hx-inject")
        assert mitm.sessions >= 1, (f, mitm.errors)
    assert (f["C"], f["M"]) == (
        "08P01",
        "upstream database sent unencrypted data after its SSL response",
    )


def test_it_logs_in_upstream_with_md5(hx: HxEnv, hx_md5_pg: Any) -> None:
    hx.publish(targets=[private_target(hx, hx_md5_pg, 304, "hx-md5", user="md5_user")])
    assert query_through(hx, "hx-md5", "SELECT current_user") == [("md5_user",)]
    # The cluster stores an MD5 hash for that user (so the server asked for MD5).
    stored = hx_md5_pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'md5_user'")
    assert stored.strip().startswith("md5")


def test_a_wrong_stored_password_gives_a_clear_error_without_secrets(
    hx: HxEnv, hx_scram_pg: Any, hx_md5_pg: Any
) -> None:
    wrong = "wrong-" + hx_scram_pg.password[::-1]
    hx.publish(
        targets=[
            private_target(hx, hx_scram_pg, 305, "hx-badpw", password=wrong),
            private_target(hx, hx_md5_pg, 306, "hx-badpw-md5", user="md5_user", password=wrong),
        ]
    )
    mark = hx.mark()
    for slug, user in (("hx-badpw", "scram_user"), ("hx-badpw-md5", "md5_user")):
        f = connect_error(hx, slug)
        assert f["C"] == "08004"
        assert f["M"] == (
            "upstream database refused Gatehouse's login: password authentication failed "
            f'for user "{user}" (SQLSTATE 28P01)'
        )
        for secret in (wrong, hx_scram_pg.password, hx_md5_pg.password):
            assert secret not in str(f)
    xs = hx.exchanges(mark, 2)
    assert [(x.status_code, x.details.get("sqlstate")) for x in xs] == [(502, "08004")] * 2
    for x in xs:
        assert wrong not in x.to_json()
    assert wrong not in hx.gw.log()


def test_upstream_verify_full_with_the_clusters_ca(hx: HxEnv, hx_scram_pg: Any) -> None:
    hx.publish(
        targets=[
            private_target(
                hx, hx_scram_pg, 307, "hx-verify", sslmode="verify-full", ca_pem=hx_scram_pg.ca_pem
            ),
            private_target(
                hx,
                hx_scram_pg,
                308,
                "hx-verify-bad",
                sslmode="verify-full",
                ca_pem=_self_signed("127.0.0.1")[0].decode(),
            ),
            private_target(
                hx, hx_scram_pg, 309, "hx-verify-system", sslmode="verify-ca", ca_pem=None
            ),
        ]
    )
    rows = query_through(
        hx, "hx-verify", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    )
    assert rows == [(True,)]
    for slug in ("hx-verify-bad", "hx-verify-system"):
        f = connect_error(hx, slug)
        assert f["C"] == "08001"
        assert f["M"].startswith("TLS with the upstream database failed:")
        assert "certificate verify failed" in f["M"]


def test_upstream_require_against_a_server_without_tls(hx: HxEnv) -> None:
    f = connect_error(hx, "hx-require")
    assert (f["C"], f["M"]) == (
        "08001",
        "upstream database refused TLS (target requires sslmode=require)",
    )


def test_the_agent_never_sees_the_upstream_password(hx: HxEnv, hx_scram_pg: Any) -> None:
    secret = hx_scram_pg.password
    hx.publish(targets=[private_target(hx, hx_scram_pg, 310, "hx-secret", sslmode="require")])
    mark = hx.mark()
    w = hx.wire().tls(hx.gw.ca_file)
    msgs = w.login(hx.gw.agent_name, hx.gw.token, "hx-secret", application_name=app_name())
    assert msgs[-1].tag == "Z"
    for sql in (
        "SELECT current_user, session_user",
        "SELECT rolpassword FROM pg_authid",  # no privilege: an error
        "SELECT * FROM pg_stat_activity",
        "SHOW ALL",
        "SELECT 1/0",
    ):
        w.query(sql)
    w.send(pq.build_terminate())
    assert w.closed()
    everything = bytes(w.received)
    assert secret.encode() not in everything
    assert b"scram_user" in everything  # the queries did run upstream
    for x in hx.exchanges(mark, 5):
        assert secret not in x.to_json()
    assert secret not in hx.gw.log()


# --- a TLS-terminating relay (for the channel-binding test) ------------------------------------


class TlsMitm:
    """Answers ``SSLRequest`` with its own certificate, opens TLS to the real server and
    relays the bytes: what a man in the middle with a certificate of its own does.

    With ``inject``: passes the real server's answer and TLS session through untouched,
    only appending ``inject`` (plaintext) to the server's "S"."""

    def __init__(self, upstream_port: int, inject: bytes | None = None) -> None:
        self.upstream_port = upstream_port
        self.inject = inject
        self.port = free_port()
        self.sessions = 0
        self.errors: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        cert, key = _self_signed("127.0.0.1")
        self._dir = Path(tempfile.mkdtemp(prefix="hx-mitm-"))
        (self._dir / "c.pem").write_bytes(cert)
        (self._dir / "k.pem").write_bytes(key)
        self._server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_ctx.load_cert_chain(self._dir / "c.pem", self._dir / "k.pem")
        self._client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._client_ctx.check_hostname = False
        self._client_ctx.verify_mode = ssl.CERT_NONE

    def __enter__(self) -> TlsMitm:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        shutil.rmtree(self._dir, ignore_errors=True)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            if await cr.readexactly(8) != pq.build_ssl_request():
                return
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            uw.write(pq.build_ssl_request())
            await uw.drain()
            answer = await ur.readexactly(1)
            if self.inject is not None:
                cw.write(answer + self.inject)
            else:
                cw.write(b"S")
                await cw.drain()
                await cw.start_tls(self._server_ctx)
                assert answer == b"S"
                await uw.start_tls(self._client_ctx, server_hostname="127.0.0.1")
            self.sessions += 1

            async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                with contextlib.suppress(Exception):
                    while data := await r.read(65536):
                        w.write(data)
                        await w.drain()
                with contextlib.suppress(Exception):
                    w.close()

            await asyncio.gather(pump(cr, uw), pump(ur, cw))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, AssertionError) as e:
            self.errors.append(repr(e))
        finally:
            with contextlib.suppress(Exception):
                cw.close()

"""Forward-proxy mode end to end: a real HTTPS upstream on loopback, a real proxy worker
with its forward listener, real clients (httpx with ``proxy=``, curl with ``HTTPS_PROXY``)
trusting the Gatehouse CA; plus agents presenting OpenID Connect JWTs checked against a
real JWKS server, and the bad-token rate limit."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from django.conf import settings
from django.test import override_settings

from demo.echo_upstream import make_server
from demo.stack import Ports, Stack, free_port
from tests.identity.support import JWKSServer, SigningKey, claims, self_signed_cert

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

ISS = "https://agents-idp.example.test"
AUD = "gatehouse-forward-e2e"
CREDENTIAL = "upstream-secret-" + secrets.token_urlsafe(8)


@pytest.fixture(scope="module")
def fwd(django_db_setup, django_db_blocker, tmp_path_factory):
    """Worker (reverse + forward listeners), HTTPS echo upstream, JWKS server, policy."""
    from controlplane.models import (
        AccessRule,
        Agent,
        AgentGroup,
        AgentToken,
        MaskingRule,
        Target,
    )
    from controlplane.redis import client
    from controlplane.snapshot import publish_snapshot

    tmp: Path = tmp_path_factory.mktemp("forward")
    cert_pem, key_pem = self_signed_cert(["localhost", "127.0.0.1"])
    (tmp / "upstream.pem").write_bytes(cert_pem)
    (tmp / "upstream.key").write_bytes(key_pem)
    upstream = make_server("127.0.0.1", 0)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "upstream.pem", tmp / "upstream.key")
    upstream.socket = ctx.wrap_socket(upstream.socket, server_side=True)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    up_port = upstream.server_address[1]

    signing_key = SigningKey()
    jwks = JWKSServer([signing_key]).__enter__()
    oidc = {
        "issuer": ISS,
        "audience": AUD,
        "jwks_url": jwks.url,
        "algorithms": ["RS256"],
        "subject_claim": "sub",
        "groups_claim": "groups",
        "leeway": 5,
    }
    override = override_settings(GATEHOUSE_AGENT_OIDC=oidc)
    override.enable()
    with django_db_blocker.unblock():
        target = Target(
            name="Secure echo",
            slug="secure-echo-fwd",
            upstream_url=f"https://localhost:{up_port}/api",
        )
        target.set_credential(CREDENTIAL)
        target.save()
        blocked = AgentGroup.objects.create(name="fwd-e2e-blocked")
        AgentGroup.objects.create(name="fwd-e2e-claimed")
        agent = Agent.objects.create(name="fwd-e2e-token-agent")
        token_row, token = AgentToken.issue(agent)
        jwt_agent = Agent.objects.create(name="fwd-e2e-jwt-agent", oidc_subject="client-fwd-e2e")
        jwt_agent.groups.add(blocked)
        masking = [
            MaskingRule.objects.create(
                name="fwd-e2e-email", entity_types=["EMAIL"], direction="both"
            ),
            MaskingRule.objects.create(
                name="fwd-e2e-ssn", entity_types=["US_SSN"], direction="response"
            ),
        ]
        for rule in masking:
            rule.targets.add(target)
        rule = AccessRule.objects.create(
            name="fwd-e2e secret for blocked group",
            position=1,
            target=target,
            path_pattern="/secret*",
            action="deny",
            reason="group is blocked",
        )
        rule.agent_groups.add(blocked)
        claimed_rule = AccessRule.objects.create(
            name="fwd-e2e claimed group",
            position=2,
            target=target,
            path_pattern="/claimed*",
            action="deny",
        )
        claimed_rule.agent_groups.add(AgentGroup.objects.get(name="fwd-e2e-claimed"))
        publish_snapshot()

    ports = Ports.free()
    ca_dir = tmp / "ca"
    env = {
        "GATEHOUSE_REDIS_URL": settings.REDIS_URL,
        "GATEHOUSE_REDIS_PREFIX": settings.REDIS_PREFIX,
        "GATEHOUSE_WORKER_KEY": settings.GATEHOUSE_WORKER_KEY,
        "GATEHOUSE_MASKING_KEY": secrets.token_urlsafe(32),
        "GATEHOUSE_SPOOL_DIR": str(tmp / "spool"),
        "GATEHOUSE_CA_DIR": str(ca_dir),
        "GATEHOUSE_UPSTREAM_CA_FILE": str(tmp / "upstream.pem"),
        "GATEHOUSE_WORKER_ID": "fwd-e2e",
    }
    st = Stack(ports=ports, env=env, log_dir=tmp / "log", customers_db=tmp / "none.db")
    try:
        st.start(["proxy"])
        # Both listeners are up once the forward port accepts connections too.
        from demo.stack import wait_port

        wait_port(ports.forward, 20, st.procs["proxy"], "forward listener")
        _wait_policy(ports.proxy, token)
    except Exception:
        print(st.log("proxy")[-4000:])
        st.stop()
        raise
    ns = SimpleNamespace(
        stack=st,
        ports=ports,
        token=token,
        token_row=token_row,
        upstream=upstream,
        up_port=up_port,
        base=f"https://localhost:{up_port}",
        ca=ca_dir / "mitmproxy-ca-cert.pem",
        key=signing_key,
        jwks=jwks,
        proxy=f"http://127.0.0.1:{ports.forward}",
        auth_proxy=f"http://agent:{token}@127.0.0.1:{ports.forward}",
    )
    try:
        yield ns
    finally:
        st.stop()
        upstream.shutdown()
        upstream.server_close()
        jwks.__exit__(None, None, None)
        with django_db_blocker.unblock():
            AccessRule.objects.filter(name__startswith="fwd-e2e").delete()
            MaskingRule.objects.filter(name__startswith="fwd-e2e").delete()
            Agent.objects.filter(name__startswith="fwd-e2e").delete()
            AgentGroup.objects.filter(name__startswith="fwd-e2e").delete()
            Target.objects.filter(slug="secure-echo-fwd").delete()
        override.disable()
        client().delete(f"{settings.REDIS_PREFIX}:tokens:last_used")


def _wait_policy(proxy_port: int, token: str, timeout: float = 20) -> None:
    """Until the worker has loaded a policy that knows our target."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(
            f"http://127.0.0.1:{proxy_port}/secure-echo-fwd/_received",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        if r.status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"worker did not load the policy: {r.status_code} {r.text}")


def _received(fwd, path: str) -> dict:
    """What the upstream itself received for ``path`` (its own record, not the echo that
    comes back through response masking, which hides credentials)."""
    hits = [e for e in fwd.upstream.received_snapshot() if e["path"] == path]
    assert hits, f"the upstream received nothing for {path}"
    return hits[-1]


def _client(fwd, proxy: str | None = None, **kw) -> httpx.Client:
    return httpx.Client(
        proxy=proxy or fwd.auth_proxy,
        verify=ssl.create_default_context(cafile=str(fwd.ca)),
        timeout=20,
        **kw,
    )


def test_httpx_through_the_forward_proxy_masks_both_ways_and_injects_the_credential(fwd):
    with _client(fwd) as c:
        r = c.get(
            f"{fwd.base}/api/echo",
            params={"contact": "jane.doe@example.com"},
            headers={"X-Note": "ssn 123-45-6789"},
        )
    assert r.status_code == 200, r.text
    echo = r.json()
    # The upstream got the target's credential, not the agent's, and no proxy credential.
    got = _received(fwd, "/api/echo")
    assert got["headers"]["authorization"] == f"Bearer {CREDENTIAL}"
    assert "proxy-authorization" not in got["headers"]
    assert fwd.token not in json.dumps(got)
    assert fwd.token not in r.text
    # Request side: the query reached the upstream masked.
    assert echo["args"]["contact"] == ["[EMAIL]"]
    assert echo["path"] == "/api/echo"
    # Response side: what the upstream echoed back was masked on the way out.
    assert "123-45-6789" not in r.text
    assert "[US_SSN]" in echo["headers"]["x-note"]
    # The certificate the client accepted was issued by the Gatehouse CA.
    assert fwd.ca.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_curl_with_https_proxy_and_the_gatehouse_ca(fwd):
    curl = shutil.which("curl")
    if not curl:
        pytest.skip("curl is not installed")
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")}
    env["HTTPS_PROXY"] = fwd.auth_proxy
    out = subprocess.run(
        [curl, "-sS", "--cacert", str(fwd.ca), f"{fwd.base}/api/curl?mail=a.b@example.org"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    echo = json.loads(out.stdout)
    assert _received(fwd, "/api/curl")["headers"]["authorization"] == f"Bearer {CREDENTIAL}"
    assert echo["args"]["mail"] == ["[EMAIL]"]
    # Without the Gatehouse CA, curl refuses the intercepted certificate.
    bad = subprocess.run(
        [curl, "-sS", f"{fwd.base}/api/curl"], env=env, capture_output=True, text=True, timeout=30
    )
    assert bad.returncode != 0


def test_an_sdk_style_token_in_authorization_works_without_proxy_credentials(fwd):
    with _client(fwd, proxy=fwd.proxy) as c:
        r = c.get(f"{fwd.base}/api/sdk", headers={"Authorization": f"Bearer {fwd.token}"})
        assert r.status_code == 200, r.text
        assert _received(fwd, "/api/sdk")["headers"]["authorization"] == f"Bearer {CREDENTIAL}"
        anonymous = c.get(f"{fwd.base}/api/sdk")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "missing_token"


def _raw_connect(port: int, authority: str, extra: str = "") -> tuple[str, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode().split("\r\n")[0], json.loads(body) if body.strip() else {}


def test_a_connect_to_a_host_that_is_not_a_target_is_refused_before_tls(fwd):
    status, body = _raw_connect(fwd.ports.forward, "example.org:443")
    assert " 403 " in status
    assert body["error"]["code"] == "egress_denied"
    # Same host as a target but another port: also not on the allow-list.
    status, body = _raw_connect(fwd.ports.forward, f"localhost:{free_port()}")
    assert " 403 " in status
    with _client(fwd) as c, pytest.raises(httpx.ProxyError):
        c.get("https://example.org/")
    # The refusal is recorded as an exchange for the auditors.
    from controlplane.redis import client, keys

    entries = client().xrevrange(keys().exchanges_stream, count=200)
    recorded = [json.loads(e[1][b"data"]) for e in entries]
    assert any(
        m["method"] == "CONNECT" and m["url"] == "example.org:443" and m["status_code"] == 403
        for m in recorded
    )


def test_curl_cannot_reach_an_unknown_host(fwd):
    curl = shutil.which("curl")
    if not curl:
        pytest.skip("curl is not installed")
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")}
    env["HTTPS_PROXY"] = fwd.auth_proxy
    out = subprocess.run(
        [curl, "-sS", "--cacert", str(fwd.ca), "https://example.org/"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "403" in out.stderr


def test_a_path_outside_the_targets_base_is_refused_inside_the_tunnel(fwd):
    fwd.upstream.clear_received()
    with _client(fwd) as c:
        r = c.get(f"{fwd.base}/admin/users")
        traversal = c.get(f"{fwd.base}/api/%2e%2e/admin")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "egress_denied"
    assert traversal.status_code == 400
    assert fwd.upstream.received_snapshot() == []


def test_a_bad_proxy_token_is_refused_with_407(fwd):
    status, body = _raw_connect(
        fwd.ports.forward,
        f"localhost:{fwd.up_port}",
        "Proxy-Authorization: Bearer gh_AAAAAAAA_" + "A" * 32 + "\r\n",
    )
    assert " 407 " in status
    assert body["error"]["code"] == "unknown_token"


def test_a_jwt_agent_is_identified_and_its_groups_apply(fwd):
    token = fwd.key.sign(claims(ISS, AUD, "client-fwd-e2e"))
    with _client(fwd, proxy=fwd.proxy) as c:
        ok = c.get(f"{fwd.base}/api/hello", headers={"Authorization": f"Bearer {token}"})
        denied = c.get(f"{fwd.base}/api/secret/x", headers={"Authorization": f"Bearer {token}"})
        expired = c.get(
            f"{fwd.base}/api/hello",
            headers={
                "Authorization": "Bearer "
                + fwd.key.sign({**claims(ISS, AUD, "client-fwd-e2e"), "exp": 1})
            },
        )
        token_agent = c.get(
            f"{fwd.base}/api/secret/x", headers={"Authorization": f"Bearer {fwd.token}"}
        )
    assert ok.status_code == 200, ok.text
    assert _received(fwd, "/api/hello")["headers"]["authorization"] == f"Bearer {CREDENTIAL}"
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "denied_by_rule"
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "invalid_jwt"
    assert token_agent.status_code == 200  # not in the blocked group


def test_a_groups_claim_adds_agent_groups_for_the_request(fwd):
    plain = fwd.key.sign(claims(ISS, AUD, "client-fwd-e2e"))
    claimed = fwd.key.sign(claims(ISS, AUD, "client-fwd-e2e", groups=["fwd-e2e-claimed"]))
    # Reverse listener this time: JWTs work there too.
    base = f"http://127.0.0.1:{fwd.ports.proxy}/secure-echo-fwd"
    r1 = httpx.get(f"{base}/claimed", headers={"Authorization": f"Bearer {plain}"})
    r2 = httpx.get(f"{base}/claimed", headers={"Authorization": f"Bearer {claimed}"})
    assert r1.status_code == 200
    assert r2.status_code == 403


def test_repeated_bad_tokens_from_one_address_are_rate_limited(fwd):
    # From 127.0.0.2 so that the other tests' address is not blocked.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    url = f"http://127.0.0.1:{fwd.ports.proxy}/secure-echo-fwd/x"
    with httpx.Client(transport=transport, timeout=10) as c:
        codes = [
            c.get(url, headers={"Authorization": f"Bearer gh_badbadba_{'x' * 32}"}).status_code
            for _ in range(10)
        ]
        limited = c.get(url, headers={"Authorization": f"Bearer {fwd.token}"})
    assert codes == [401] * 10
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 61
    # Another address is not affected.
    ok = httpx.get(url, headers={"Authorization": f"Bearer {fwd.token}"})
    assert ok.status_code == 200


def test_token_use_reaches_last_used_at(fwd):
    from controlplane.models import AgentToken
    from controlplane.redis import client, keys
    from controlplane.token_usage import flush_token_usage_once

    r = client()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not r.hget(keys().token_last_used, fwd.token_row.prefix):
        time.sleep(0.1)
    assert r.hget(keys().token_last_used, fwd.token_row.prefix)
    assert flush_token_usage_once() >= 1
    row = AgentToken.objects.get(pk=fwd.token_row.pk)
    assert row.last_used_at is not None
    assert r.hget(keys().token_last_used, fwd.token_row.prefix) is None


def test_the_worker_publishes_its_ca_certificate_for_the_console(fwd):
    from controlplane.redis import client, keys

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not client().get(keys().ca_cert):
        time.sleep(0.1)
    assert client().get(keys().ca_cert).decode() == fwd.ca.read_text()
    assert "PRIVATE KEY" not in client().get(keys().ca_cert).decode()

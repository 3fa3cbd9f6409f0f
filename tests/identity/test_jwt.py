"""JWT validation against a real JWKS served over loopback HTTP (RFC 7519, RFC 7517)."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from proxy_worker.contract import ContractError
from proxy_worker.identity import (
    AgentOIDCConfig,
    Authenticator,
    FailureLimiter,
    JWTError,
    JWTVerifier,
    looks_like_jwt,
    token_prefix,
)
from proxy_worker.policy import Policy, hash_token
from tests.identity.support import JWKSServer, SigningKey, claims

ISS = "https://idp.example.test"
AUD = "gatehouse-proxy"


@pytest.fixture(scope="module")
def key():
    return SigningKey()


@pytest.fixture
def jwks(key):
    with JWKSServer([key]) as server:
        yield server


@pytest.fixture
def cfg(jwks):
    return AgentOIDCConfig(issuer=ISS, audience=AUD, jwks_url=jwks.url, leeway=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_it_accepts_a_valid_token_and_returns_its_subject(key, cfg):
    v = JWTVerifier()
    out = await v.verify(key.sign(claims(ISS, AUD, "agent-client-1")), cfg)
    assert out.subject == "agent-client-1"
    assert out.claims["iss"] == ISS


async def test_it_caches_the_key_set(key, cfg, jwks):
    v = JWTVerifier()
    for _ in range(5):
        await v.verify(key.sign(claims(ISS, AUD, "a")), cfg)
    assert jwks.fetches == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"exp": 1}, "expired"),
        ({"nbf": 4_000_000_000}, "not valid yet"),
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"aud": "some-other-api"}, "audience"),
        ({"sub": ""}, "'sub'"),
    ],
)
async def test_it_refuses_bad_claims(key, cfg, change, message):
    with pytest.raises(JWTError) as e:
        await JWTVerifier().verify(key.sign({**claims(ISS, AUD, "a"), **change}), cfg)
    assert e.value.code == "invalid_jwt"
    assert message in str(e.value)


async def test_it_requires_exp(key, cfg):
    c = claims(ISS, AUD, "a")
    del c["exp"]
    with pytest.raises(JWTError, match="invalid"):
        await JWTVerifier().verify(key.sign(c), cfg)


async def test_it_refuses_a_token_signed_by_another_key_with_the_same_kid(key, cfg):
    impostor = SigningKey(kid=key.kid)
    with pytest.raises(JWTError, match="InvalidSignatureError"):
        await JWTVerifier().verify(impostor.sign(claims(ISS, AUD, "a")), cfg)


async def test_it_refuses_alg_none_and_hmac_with_the_public_key(key, cfg):
    body = claims(ISS, AUD, "a")
    unsigned = jwt.encode(body, None, algorithm="none", headers={"kid": key.kid})
    with pytest.raises(JWTError, match="not accepted"):
        await JWTVerifier().verify(unsigned, cfg)
    # The classic algorithm confusion: HS256 keyed with the RSA public key's PEM.
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "HS256", "kid": key.kid, "typ": "JWT"}).encode()
    ).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=")
    import hashlib
    import hmac

    sig = hmac.new(key.public_pem(), header + b"." + payload, hashlib.sha256).digest()
    forged = b".".join([header, payload, base64.urlsafe_b64encode(sig).rstrip(b"=")]).decode()
    with pytest.raises(JWTError, match="not accepted"):
        await JWTVerifier().verify(forged, cfg)


async def test_it_refetches_once_for_a_new_kid_then_rate_limits_refetches(key, cfg, jwks):
    clock = Clock()
    v = JWTVerifier(clock=clock)
    await v.verify(key.sign(claims(ISS, AUD, "a")), cfg)
    assert jwks.fetches == 1
    rotated = SigningKey()
    jwks.keys = [key, rotated]
    clock.now += 11  # past the forced-refresh interval
    out = await v.verify(rotated.sign(claims(ISS, AUD, "b")), cfg)
    assert out.subject == "b"
    assert jwks.fetches == 2
    # Random kids right after do not make the gateway fetch again.
    for _ in range(3):
        with pytest.raises(JWTError, match="not in the issuer's JWKS"):
            await v.verify(SigningKey().sign(claims(ISS, AUD, "c")), cfg)
    assert jwks.fetches == 2


async def test_it_refreshes_a_stale_key_set_in_the_background(key, cfg, jwks):
    import asyncio

    clock = Clock()
    v = JWTVerifier(clock=clock)
    await v.verify(key.sign(claims(ISS, AUD, "a")), cfg)
    clock.now += 301  # past max-age=300
    await v.verify(key.sign(claims(ISS, AUD, "a")), cfg)  # served from the old set
    for _ in range(50):
        if jwks.fetches == 2:
            break
        await asyncio.sleep(0.02)
    assert jwks.fetches == 2


async def test_an_unreachable_jwks_is_reported_as_such(key, jwks):
    cfg = AgentOIDCConfig(
        issuer=ISS, audience=AUD, jwks_url="http://127.0.0.1:9/jwks.json", leeway=0
    )
    with pytest.raises(JWTError) as e:
        await JWTVerifier().verify(key.sign(claims(ISS, AUD, "a")), cfg)
    assert e.value.code == "jwks_unavailable"


async def test_a_jwks_error_answer_is_unavailable(key, cfg, jwks):
    jwks.status = 500
    with pytest.raises(JWTError) as e:
        await JWTVerifier().verify(key.sign(claims(ISS, AUD, "a")), cfg)
    assert e.value.code == "jwks_unavailable"


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({"issuer": ISS, "audience": AUD, "jwks_url": "http://idp.example/jwks"}, "https"),
        ({"issuer": ISS, "audience": "", "jwks_url": "https://idp/jwks"}, "required"),
        (
            {"issuer": ISS, "audience": AUD, "jwks_url": "https://i/j", "algorithms": ["HS256"]},
            "not allowed",
        ),
        ({"issuer": ISS, "jwks_url": "https://i/j"}, "audience"),
    ],
)
def test_the_config_refuses_unsafe_settings(doc, error):
    with pytest.raises(ContractError, match=error):
        AgentOIDCConfig.from_document(doc)


def test_the_config_accepts_https_and_loopback_http():
    assert AgentOIDCConfig.from_document(None) is None
    for url in ("https://idp.example/jwks", "http://127.0.0.1:8/jwks", "http://localhost/j"):
        assert AgentOIDCConfig.from_document({"issuer": ISS, "audience": AUD, "jwks_url": url})


def test_credential_shapes():
    assert looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln")
    assert not looks_like_jwt("gh_abcdefgh_" + "x" * 32)
    assert not looks_like_jwt("not a jwt")
    assert token_prefix("gh_AbCdEf12_" + "a" * 32) == "AbCdEf12"
    assert token_prefix("gh_short_x") is None


def test_the_limiter_blocks_after_ten_failures_in_a_minute_and_forgets_them():
    clock = Clock()
    lim = FailureLimiter(max_failures=10, window=60, clock=clock)
    for _ in range(9):
        lim.record_failure("10.0.0.1")
        clock.now += 1
    assert lim.retry_after("10.0.0.1") is None
    lim.record_failure("10.0.0.1")
    retry = lim.retry_after("10.0.0.1")
    assert retry is not None and 50 <= retry <= 60
    assert lim.retry_after("10.0.0.2") is None  # per address
    clock.now += 61
    assert lim.retry_after("10.0.0.1") is None


def test_the_limiter_bounds_its_memory():
    lim = FailureLimiter(max_failures=2, window=60, max_addresses=100, clock=Clock())
    for i in range(1000):
        lim.record_failure(f"10.0.{i // 256}.{i % 256}")
    assert len(lim._failures) == 100


def _policy(cfg: AgentOIDCConfig | None, token: str) -> Policy:
    doc = {
        "v": 1,
        "version": 3,
        "agents": [
            {"id": 1, "name": "tok", "token_hashes": [hash_token(token)]},
            {"id": 2, "name": "jwt", "oidc_subject": "client-2", "group_ids": [7]},
        ],
        "agent_groups": [{"id": 7, "name": "batch"}, {"id": 8, "name": "finance"}],
    }
    if cfg:
        doc["agent_oidc"] = {
            "issuer": cfg.issuer,
            "audience": cfg.audience,
            "jwks_url": cfg.jwks_url,
            "groups_claim": "groups",
            "leeway": 0,
        }
    return Policy.from_document(doc)


async def test_the_authenticator_maps_tokens_and_jwt_subjects_to_agents(key, cfg):
    token = "gh_AbCdEf12_" + "a" * 32
    policy = _policy(cfg, token)
    auth = Authenticator()
    r = await auth.authenticate(policy, [token], "10.0.0.1")
    assert (r.agent.id, r.method) == (1, "token")
    jwt_token = key.sign(claims(ISS, AUD, "client-2", groups=["finance", "unknown"]))
    r = await auth.authenticate(policy, ["not-mine", jwt_token], "10.0.0.1")
    assert (r.agent.id, r.method) == (2, "jwt")
    assert r.agent.group_ids == frozenset({7, 8})  # snapshot group + claimed group
    r = await auth.authenticate(policy, [key.sign(claims(ISS, AUD, "nobody"))], "10.0.0.1")
    assert r.agent is None and r.code == "unknown_agent"


async def test_the_authenticator_ignores_jwts_when_oidc_is_off(key):
    token = "gh_AbCdEf12_" + "a" * 32
    r = await Authenticator().authenticate(
        _policy(None, token), [key.sign(claims(ISS, AUD, "client-2"))], "10.0.0.1"
    )
    assert r.agent is None and r.code == "unknown_token"


async def test_the_authenticator_rate_limits_an_address_even_for_a_good_token(cfg):
    token = "gh_AbCdEf12_" + "a" * 32
    policy = _policy(cfg, token)
    auth = Authenticator(limiter=FailureLimiter(max_failures=10, window=60))
    for _ in range(10):
        r = await auth.authenticate(policy, ["gh_wrongwro_" + "b" * 32], "10.9.9.9")
        assert r.code == "unknown_token"
    r = await auth.authenticate(policy, [token], "10.9.9.9")
    assert r.code == "rate_limited" and r.retry_after > 0
    ok = await auth.authenticate(policy, [token], "10.9.9.10")
    assert ok.agent is not None
    missing = await auth.authenticate(policy, [], "10.9.9.11")
    assert missing.code == "missing_token"

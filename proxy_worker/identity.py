"""Agent identity in the worker: OpenID Connect JWTs, bad-credential rate limiting, token use.

Three pieces, none of which imports Django or blocks the event loop:

* :class:`JWTVerifier` validates an agent's JWT access token (RFC 7519, obtained with the
  OAuth 2.0 client-credentials grant, RFC 6749 §4.4, in the JWT profile of RFC 9068)
  against the issuer's JSON Web Key Set (RFC 7517). Keys are fetched with ``httpx``'s
  async client and cached per JWKS URL: a stale set is refreshed in the background while
  the old keys keep serving; a token signed with an unknown ``kid`` triggers at most one
  awaited refresh per :data:`FORCED_REFRESH_INTERVAL` (so random ``kid`` values cannot
  turn the gateway into a JWKS flooder).
* :class:`FailureLimiter` counts failed authentications per client address in a sliding
  window and answers "blocked for N seconds" past a threshold (in memory, per worker
  process: with K workers behind a load balancer an address gets at most K x the limit).
* :class:`TokenUsage` notes when a Gatehouse token was used, by its visible prefix, in a
  Redis hash that a Celery task folds into ``AgentToken.last_used_at``.

The JWT configuration comes from the policy snapshot (``"agent_oidc"`` block, parsed by
:class:`AgentOIDCConfig`), so every worker uses the control plane's settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import jwt
from jwt.api_jwk import PyJWK

from proxy_worker.contract import ContractError

if TYPE_CHECKING:  # policy.py imports this module
    from proxy_worker.policy import Agent, Policy

log = logging.getLogger("gatehouse.identity")

#: Algorithms an agent JWT may be signed with when the configuration names none.
#: Symmetric (HS*) algorithms and ``none`` are never accepted: a JWKS is public.
DEFAULT_ALGORITHMS = ("RS256", "ES256", "PS256")
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: Seconds between two awaited JWKS refreshes caused by an unknown ``kid``.
FORCED_REFRESH_INTERVAL = 10.0
#: Bounds on how long a fetched key set is fresh (seconds), from ``Cache-Control: max-age``.
MIN_JWKS_TTL, MAX_JWKS_TTL, DEFAULT_JWKS_TTL = 60.0, 3600.0, 300.0
#: Seconds one JWKS fetch may take before the request that waits for it is refused.
JWKS_FETCH_TIMEOUT = 5.0
#: Largest JWKS document read (bytes).
MAX_JWKS_BYTES = 256 * 1024

_JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_TOKEN_PREFIX_RE = re.compile(r"^gh_([A-Za-z0-9]{8})_[A-Za-z0-9]{32}$")


class JWTError(Exception):
    """An agent JWT was refused. ``code`` is stable (``invalid_jwt``, ``jwks_unavailable``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def looks_like_jwt(credential: str) -> bool:
    """Whether ``credential`` has the compact JWS shape ``header.payload.signature`` (RFC 7515)."""
    return bool(_JWT_RE.match(credential)) and not credential.startswith("gh_")


def token_prefix(token: str) -> str | None:
    """The visible 8-character prefix of a Gatehouse token ``gh_<prefix>_<secret>``, or ``None``."""
    m = _TOKEN_PREFIX_RE.match(token)
    return m.group(1) if m else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AgentOIDCConfig:
    """How agents' JWTs are checked: the snapshot's ``agent_oidc`` block.

    Shape: ``{"issuer": str, "audience": str, "jwks_url": str, "algorithms": [str],
    "subject_claim": "sub", "groups_claim": str | null, "leeway": seconds}``. ``issuer``
    must equal the token's ``iss``; ``audience`` must be one of its ``aud``; the JWKS URL
    must be ``https`` (``http`` only on a loopback address, for tests and sidecars).
    """

    issuer: str
    audience: str
    jwks_url: str
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    subject_claim: str = "sub"
    groups_claim: str | None = None
    leeway: float = 30.0

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None) -> AgentOIDCConfig | None:
        """Parse the block; ``None`` when absent. :class:`ContractError` when it is unsafe."""
        if not doc:
            return None
        try:
            cfg = cls(
                issuer=str(doc["issuer"]),
                audience=str(doc["audience"]),
                jwks_url=str(doc["jwks_url"]),
                algorithms=tuple(doc.get("algorithms") or DEFAULT_ALGORITHMS),
                subject_claim=str(doc.get("subject_claim") or "sub"),
                groups_claim=doc.get("groups_claim") or None,
                leeway=float(doc.get("leeway", 30)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ContractError(f"agent_oidc: {e}") from e
        if not (cfg.issuer and cfg.audience and cfg.jwks_url):
            raise ContractError("agent_oidc: issuer, audience and jwks_url are all required")
        bad = [a for a in cfg.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not cfg.algorithms:
            raise ContractError(f"agent_oidc: algorithms not allowed: {bad or 'none given'}")
        parts = urlsplit(cfg.jwks_url)
        loopback = _is_loopback(parts.hostname or "")
        if not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
            raise ContractError("agent_oidc: jwks_url must be https (http only on loopback)")
        return cfg


@dataclass(frozen=True)
class VerifiedJWT:
    """The claims Gatehouse uses from a valid agent JWT."""

    subject: str
    groups: tuple[str, ...]
    claims: dict[str, Any]


@dataclass
class _KeySet:
    keys: dict[str, PyJWK] = field(default_factory=dict)
    anonymous: list[PyJWK] = field(default_factory=list)  # keys published without a kid
    fetched_at: float = float("-inf")
    ttl: float = DEFAULT_JWKS_TTL
    last_forced: float = float("-inf")
    refreshing: asyncio.Task[None] | None = None


def parse_jwks(doc: Any) -> tuple[dict[str, PyJWK], list[PyJWK]]:
    """Usable signing keys of a JWKS document (RFC 7517 §5): ``({kid: key}, [keys without kid])``.

    Keys for encryption (``"use": "enc"``), symmetric keys (``"kty": "oct"``) and keys
    PyJWT cannot load are skipped. Raises :class:`JWTError` when no key is usable.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JWTError("jwks_unavailable", "the JWKS is not a JSON object with a 'keys' list")
    by_kid: dict[str, PyJWK] = {}
    anonymous: list[PyJWK] = []
    for entry in doc["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") == "oct":
            continue
        try:
            key = PyJWK(entry)
        except jwt.PyJWTError:
            continue
        if key.key_id:
            by_kid[key.key_id] = key
        else:
            anonymous.append(key)
    if not by_kid and not anonymous:
        raise JWTError("jwks_unavailable", "the JWKS holds no usable signing key")
    return by_kid, anonymous


def _max_age(cache_control: str | None) -> float:
    for part in (cache_control or "").split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "max-age":
            with contextlib.suppress(ValueError):
                return min(MAX_JWKS_TTL, max(MIN_JWKS_TTL, float(value)))
    return DEFAULT_JWKS_TTL


class JWTVerifier:
    """Validates agent JWTs; caches one key set per JWKS URL.

    ``transport`` is for tests that need an ``httpx`` transport; ``clock`` returns
    monotonic seconds.
    """

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sets: dict[str, _KeySet] = {}
        self._transport = transport
        self._clock = clock

    async def _fetch(self, url: str, ks: _KeySet) -> None:
        try:
            async with httpx.AsyncClient(
                timeout=JWKS_FETCH_TIMEOUT, transport=self._transport, follow_redirects=False
            ) as client:
                resp = await client.get(url, headers={"Accept": "application/json"})
            if resp.status_code != 200:
                raise JWTError("jwks_unavailable", f"JWKS fetch answered {resp.status_code}")
            if len(resp.content) > MAX_JWKS_BYTES:
                raise JWTError("jwks_unavailable", "JWKS document too large")
            keys, anonymous = parse_jwks(json.loads(resp.content))
        except (httpx.HTTPError, ValueError) as e:
            raise JWTError("jwks_unavailable", f"JWKS fetch failed: {type(e).__name__}") from e
        ks.keys, ks.anonymous = keys, anonymous
        ks.fetched_at = self._clock()
        ks.ttl = _max_age(resp.headers.get("cache-control"))
        log.info("JWKS %s loaded: %d keys", url, len(keys) + len(anonymous))

    async def _refresh(self, url: str, ks: _KeySet) -> None:
        """One fetch at a time per URL; concurrent callers wait for the same one."""
        if ks.refreshing is None or ks.refreshing.done():
            ks.refreshing = asyncio.ensure_future(self._fetch(url, ks))
        await asyncio.wait_for(asyncio.shield(ks.refreshing), JWKS_FETCH_TIMEOUT + 1)

    def _background_refresh(self, url: str, ks: _KeySet) -> None:
        if ks.refreshing is not None and not ks.refreshing.done():
            return
        task = ks.refreshing = asyncio.ensure_future(self._fetch(url, ks))

        def _done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.warning("JWKS %s background refresh failed: %s", url, t.exception())

        task.add_done_callback(_done)

    async def _key_for(self, cfg: AgentOIDCConfig, kid: str | None) -> PyJWK:
        ks = self._sets.setdefault(cfg.jwks_url, _KeySet())
        now = self._clock()
        if ks.fetched_at == float("-inf"):
            # Never loaded: wait for the first fetch, but after a failure do not make
            # every request wait again before FORCED_REFRESH_INTERVAL has passed.
            if now - ks.last_forced < FORCED_REFRESH_INTERVAL:
                raise JWTError("jwks_unavailable", "the issuer's JWKS could not be fetched")
            ks.last_forced = now
            try:
                await self._refresh(cfg.jwks_url, ks)
            except (JWTError, TimeoutError) as e:
                log.warning("JWKS %s unavailable: %s", cfg.jwks_url, e)
                raise JWTError("jwks_unavailable", "the issuer's JWKS could not be fetched") from e
        elif now - ks.fetched_at > ks.ttl:
            self._background_refresh(cfg.jwks_url, ks)  # serve the old keys meanwhile
        key = self._pick(ks, kid)
        if key is None and now - ks.last_forced >= FORCED_REFRESH_INTERVAL:
            ks.last_forced = now  # a key rotation at the issuer: fetch once, then retry
            try:
                await self._refresh(cfg.jwks_url, ks)
            except (JWTError, TimeoutError) as e:
                log.warning("JWKS %s refresh failed: %s", cfg.jwks_url, e)
            key = self._pick(ks, kid)
        if key is None:
            raise JWTError("invalid_jwt", "the token's signing key is not in the issuer's JWKS")
        return key

    @staticmethod
    def _pick(ks: _KeySet, kid: str | None) -> PyJWK | None:
        if kid is not None:
            return ks.keys.get(kid)
        candidates = list(ks.keys.values()) + ks.anonymous
        return candidates[0] if len(candidates) == 1 else None

    async def verify(self, token: str, cfg: AgentOIDCConfig) -> VerifiedJWT:
        """Check signature, ``iss``, ``aud``, ``exp`` (required), ``nbf``/``iat`` (when present).

        Raises :class:`JWTError` with code ``invalid_jwt`` for any token problem and
        ``jwks_unavailable`` when the key set cannot be fetched. The returned subject is
        the configured subject claim (``sub`` by default; a string).
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise JWTError("invalid_jwt", "malformed JWT header") from e
        alg = header.get("alg")
        if alg not in cfg.algorithms:
            raise JWTError("invalid_jwt", f"signing algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JWTError("invalid_jwt", "malformed 'kid'")
        key = await self._key_for(cfg, kid)
        if key.algorithm_name != alg:
            raise JWTError("invalid_jwt", "the token's algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway,
                options={"require": ["exp", "iss", "aud"], "verify_sub": False},
            )
        except jwt.ExpiredSignatureError as e:
            raise JWTError("invalid_jwt", "the token has expired") from e
        except jwt.ImmatureSignatureError as e:
            raise JWTError("invalid_jwt", "the token is not valid yet") from e
        except jwt.InvalidAudienceError as e:
            raise JWTError("invalid_jwt", "the token is not for this audience") from e
        except jwt.InvalidIssuerError as e:
            raise JWTError("invalid_jwt", "the token is from another issuer") from e
        except jwt.PyJWTError as e:
            raise JWTError("invalid_jwt", f"the token is invalid ({type(e).__name__})") from e
        subject = claims.get(cfg.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise JWTError("invalid_jwt", f"the token has no {cfg.subject_claim!r} claim")
        groups: tuple[str, ...] = ()
        if cfg.groups_claim:
            raw = claims.get(cfg.groups_claim)
            if isinstance(raw, str):
                groups = tuple(raw.split())
            elif isinstance(raw, list):
                groups = tuple(g for g in raw if isinstance(g, str))
        return VerifiedJWT(subject=subject, groups=groups, claims=claims)


class FailureLimiter:
    """Sliding-window count of failed authentications per client address.

    After ``max_failures`` failures within ``window`` seconds, :meth:`retry_after` returns
    the seconds until the oldest counted failure leaves the window; the address is refused
    until then (a 429 with ``Retry-After``, RFC 6585 §4). At most ``max_addresses`` are
    tracked (least recently failing dropped first), so memory stays bounded under a
    spray from many addresses.
    """

    def __init__(
        self,
        *,
        max_failures: int = 10,
        window: float = 60.0,
        max_addresses: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _prune(self, address: str, now: float) -> deque[float] | None:
        q = self._failures.get(address)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[address]
            return None
        return q

    def retry_after(self, address: str) -> float | None:
        """Seconds this address must wait, or ``None`` when it may try now."""
        now = self._clock()
        q = self._prune(address, now)
        if q is None or len(q) < self.max_failures:
            return None
        return max(1.0, q[-self.max_failures] + self.window - now)

    def record_failure(self, address: str) -> None:
        """Count one failed authentication from ``address``."""
        now = self._clock()
        q = self._prune(address, now)
        if q is None:
            q = self._failures[address] = deque(maxlen=self.max_failures * 2)
        self._failures.move_to_end(address)
        q.append(now)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)


class TokenUsage:
    """Notes Gatehouse token use in the Redis hash ``Keys.token_last_used``.

    Field = token prefix, value = Unix epoch seconds of the last use. Each worker writes a
    given prefix at most once per ``interval`` seconds; the write is a background task
    (``HSET``), never awaited by the request, and a Redis outage only loses precision.
    """

    def __init__(self, redis: Any, key: str, *, interval: float = 60.0) -> None:
        self._redis = redis
        self._key = key
        self._interval = interval
        self._last: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self, token: str) -> None:
        """Record a successful use of ``token`` (only its prefix leaves this function)."""
        prefix = token_prefix(token)
        if prefix is None:
            return
        now = time.time()
        if now - self._last.get(prefix, 0.0) < self._interval:
            return
        self._last[prefix] = now
        if len(self._last) > 100_000:
            self._last.clear()
        task = asyncio.ensure_future(self._write(prefix, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, prefix: str, when: float) -> None:
        try:
            await self._redis.hset(self._key, prefix, repr(when))
        except Exception as e:  # best effort: precision, not correctness, is lost
            log.debug("token last-used not written: %s", type(e).__name__)


@dataclass(frozen=True)
class AuthResult:
    """The outcome of :meth:`Authenticator.authenticate`.

    ``agent`` is set on success. Otherwise ``code`` is one of ``missing_token``,
    ``unknown_token``, ``invalid_jwt``, ``unknown_agent``, ``jwks_unavailable`` or
    ``rate_limited`` (then ``retry_after`` is in seconds); ``message`` is for humans and
    never contains the credential.
    """

    agent: Agent | None = None
    code: str = ""
    message: str = ""
    retry_after: float | None = None
    method: str = ""  # "token" or "jwt" on success


class Authenticator:
    """Identifies the agent behind a request's credentials; one per worker process.

    Shared by the reverse and forward paths so the bad-credential limiter sees every
    failure from an address, whichever listener it came in on.
    """

    def __init__(
        self,
        *,
        verifier: JWTVerifier | None = None,
        limiter: FailureLimiter | None = None,
        usage: TokenUsage | None = None,
    ) -> None:
        self.verifier = verifier or JWTVerifier()
        self.limiter = limiter or FailureLimiter()
        self.usage = usage

    async def authenticate(
        self, policy: Policy, credentials: list[str], client_address: str
    ) -> AuthResult:
        """Try ``credentials`` in order (Gatehouse tokens or JWTs); the first that identifies wins.

        A refused attempt (something presented, nothing identified) counts against
        ``client_address``; past the limit every attempt from it is refused with
        ``rate_limited`` before any credential is looked at.
        """
        retry = self.limiter.retry_after(client_address)
        if retry is not None:
            return AuthResult(
                code="rate_limited",
                message="too many failed authentications from this address",
                retry_after=retry,
            )
        if not credentials:
            return AuthResult(
                code="missing_token",
                message="present a Gatehouse agent token ('Authorization: Bearer gh_...') "
                "or an OpenID Connect access token",
            )
        failure = AuthResult(
            code="unknown_token", message="the token is unknown, expired or revoked"
        )
        for credential in credentials:
            if looks_like_jwt(credential):
                if policy.agent_oidc is None:
                    continue
                try:
                    verified = await self.verifier.verify(credential, policy.agent_oidc)
                except JWTError as e:
                    if e.code == "jwks_unavailable":  # the issuer's fault, not the client's
                        return AuthResult(code=e.code, message=str(e))
                    failure = AuthResult(code=e.code, message=str(e))
                    continue
                agent = policy.identify_subject(verified.subject, verified.groups)
                if agent is not None:
                    return AuthResult(agent=agent, method="jwt")
                failure = AuthResult(
                    code="unknown_agent", message="no active agent has this token's subject"
                )
                continue
            agent = policy.identify(credential)
            if agent is not None:
                if self.usage is not None:
                    self.usage.note(credential)
                return AuthResult(agent=agent, method="token")
        self.limiter.record_failure(client_address)
        return failure

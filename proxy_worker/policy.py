"""The policy snapshot as the worker sees it, and the pure decisions made from it.

A snapshot is one JSON document compiled by the control plane
(``controlplane.snapshot.compile_snapshot``) and read here with :meth:`Policy.from_document`.
Everything in this module is pure: no Redis, no mitmproxy, no Django. The mitmproxy
addons call :meth:`Policy.identify`, :meth:`Policy.resolve_target` and
:meth:`Policy.evaluate`.

Document shape (``v`` is :data:`proxy_worker.contract.SCHEMA_VERSION`)::

    {"v": 1, "version": 7, "generated_at": 1767225600.0,
     "targets": [{"id", "slug", "upstream", "auth_header", "auth_scheme",
                  "credential" (Fernet token or null), "default_action",
                  "approval_timeout"}],
     "agents": [{"id", "name", "owner", "token_hashes": [sha256 hex]}],
     "masking_rules": [{"id", "name", "entity_types", "field_names", "strategy",
                        "direction", "target_ids" (null = every target), "custom_pattern"}],
     "access_rules": [{"id", "name", "target_id" (null = every target),
                       "agent_ids" (null = every agent), "methods" ([] = any),
                       "path_pattern" (glob), "query_pattern", "body_pattern" (regex or null),
                       "action": "allow" | "deny" | "approve", "approval_timeout" (s), "reason"}]}
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, unquote_plus, urlsplit

from proxy_worker.contract import SCHEMA_VERSION, ContractError

Action = Literal["allow", "deny", "approve"]

#: Agent tokens look like ``gh_<8 prefix chars>_<32 secret chars>`` (base62).
TOKEN_PREFIX = "gh_"


def hash_token(token: str) -> str:
    """SHA-256 hex digest of an agent token, as stored and as compiled into snapshots.

    Tokens are 190+ bits of randomness, so a fast unsalted digest is the right tool (as
    for GitHub's and Stripe's API keys): it allows an O(1) lookup on every request, and
    a slow password hash would add nothing against brute force.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def extract_token(authorization: str | None) -> str | None:
    """The Gatehouse token in an ``Authorization``/``Proxy-Authorization`` value.

    Accepts ``Bearer <token>`` (RFC 6750) and ``Basic`` credentials (RFC 7617) whose
    password or user name is the token, so that ``https://user:TOKEN@proxy`` and
    ``HTTPS_PROXY`` URLs work. Returns ``None`` when nothing token-shaped is present.
    """
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        import base64
        import binascii

        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        for candidate in (password, user):
            if candidate.startswith(TOKEN_PREFIX):
                return candidate
        return password or None
    return None


@dataclass(frozen=True)
class Target:
    """An upstream API reachable through the gateway at ``/<slug>/``."""

    id: int
    slug: str
    upstream: str
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    credential: str | None = None
    default_action: Action = "allow"
    approval_timeout: float = 120.0

    def upstream_url(self, path: str) -> str:
        """The upstream URL for a path (starting with ``/``, query included) under this target."""
        return self.upstream.rstrip("/") + path


@dataclass(frozen=True)
class Agent:
    """A non-human identity: one of its tokens must be presented on every request."""

    id: int
    name: str
    owner: str = ""


@dataclass(frozen=True)
class AccessRule:
    """One ordered access rule. The first rule that matches a request decides it.

    ``path_pattern`` is a shell-style glob over the upstream path (``*`` matches any
    characters, ``/`` included); ``query_pattern`` is a regular expression searched in the
    URL-decoded query string; ``body_pattern`` a regular expression searched in the
    request body decoded as UTF-8. An empty ``methods`` tuple matches every method.
    """

    id: int
    name: str
    action: Action
    target_id: int | None = None
    agent_ids: frozenset[int] | None = None
    methods: frozenset[str] = frozenset()
    path_pattern: str = "*"
    query_pattern: str | None = None
    body_pattern: str | None = None
    approval_timeout: float | None = None
    reason: str = ""
    _path_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _query_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _body_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_path_re", re.compile(fnmatch.translate(self.path_pattern or "*"))
        )
        object.__setattr__(
            self, "_query_re", re.compile(self.query_pattern) if self.query_pattern else None
        )
        object.__setattr__(
            self, "_body_re", re.compile(self.body_pattern) if self.body_pattern else None
        )

    def matches(self, request: RequestInfo) -> bool:
        """Whether this rule applies to ``request`` (target, agent, method, path, query, body)."""
        if self.target_id is not None and self.target_id != request.target_id:
            return False
        if self.agent_ids is not None and request.agent_id not in self.agent_ids:
            return False
        if self.methods and request.method.upper() not in self.methods:
            return False
        if not self._path_re.match(request.path):
            return False
        if self._query_re is not None and not self._query_re.search(request.query):
            return False
        return self._body_re is None or bool(self._body_re.search(request.body_text))


@dataclass(frozen=True)
class RequestInfo:
    """What access rules look at: the request after target resolution, before masking.

    ``path`` is the upstream path without the query, percent-decoded; ``query`` is the
    query string percent- and plus-decoded; ``body_text`` is the body as UTF-8 with
    undecodable bytes replaced.
    """

    agent_id: int
    target_id: int
    method: str
    path: str
    query: str
    body_text: str


@dataclass(frozen=True)
class AccessDecision:
    """The result of evaluating the access rules for one request."""

    action: Action
    rule: AccessRule | None
    timeout: float

    @property
    def rule_id(self) -> int | None:
        return self.rule.id if self.rule else None


class PathError(ValueError):
    """A reverse-mode path that cannot be routed safely (traversal, encoded separators)."""


def split_reverse_path(raw_path: str) -> tuple[str, str]:
    """Split ``/<slug>/rest?query`` into ``("slug", "/rest?query")``.

    Raises :class:`PathError` for a missing slug, dot segments (``.``/``..``, also
    percent-encoded) anywhere in the path, and encoded slashes or backslashes in the slug,
    so that no request can be routed to one target by naming another.
    """
    path, sep, query = raw_path.partition("?")
    if not path.startswith("/"):
        raise PathError("path must start with '/'")
    segments = path.split("/")
    for seg in segments:
        decoded = unquote(seg)
        if decoded in (".", "..") or "\\" in decoded:
            raise PathError("dot segments and backslashes are not allowed in the path")
    slug = segments[1] if len(segments) > 1 else ""
    if not slug:
        raise PathError("no target in path: use /<target>/<upstream path>")
    if "%" in slug:
        raise PathError("encoded characters are not allowed in the target name")
    rest = "/" + "/".join(segments[2:])
    return slug, rest + (sep + query if sep else "")


@dataclass
class Policy:
    """An immutable view of one policy snapshot with lookup tables built once."""

    version: int
    targets_by_slug: dict[str, Target]
    targets_by_id: dict[int, Target]
    agents_by_token_hash: dict[str, Agent]
    agents_by_id: dict[int, Agent]
    access_rules: tuple[AccessRule, ...]
    masking_rules: tuple[dict[str, Any], ...]
    raw: dict[str, Any]

    @classmethod
    def empty(cls) -> Policy:
        """A policy that knows no agent and no target: every request is refused."""
        return cls.from_document({"v": SCHEMA_VERSION, "version": 0})

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Policy:
        """Build a policy from a snapshot document; :class:`ContractError` when malformed."""
        if doc.get("v") != SCHEMA_VERSION:
            raise ContractError(f"policy snapshot: unsupported schema version {doc.get('v')!r}")
        try:
            targets = [
                Target(
                    id=int(t["id"]),
                    slug=str(t["slug"]),
                    upstream=str(t["upstream"]),
                    auth_header=t.get("auth_header") or "Authorization",
                    auth_scheme=t.get("auth_scheme") or "",
                    credential=t.get("credential"),
                    default_action=t.get("default_action", "allow"),
                    approval_timeout=float(t.get("approval_timeout", 120)),
                )
                for t in doc.get("targets", [])
            ]
            agents_by_hash: dict[str, Agent] = {}
            agents_by_id: dict[int, Agent] = {}
            for a in doc.get("agents", []):
                agent = Agent(id=int(a["id"]), name=str(a["name"]), owner=a.get("owner", ""))
                agents_by_id[agent.id] = agent
                for h in a.get("token_hashes", []):
                    agents_by_hash[h] = agent
            rules = tuple(
                AccessRule(
                    id=int(r["id"]),
                    name=str(r["name"]),
                    action=r["action"],
                    target_id=r.get("target_id"),
                    agent_ids=frozenset(r["agent_ids"]) if r.get("agent_ids") is not None else None,
                    methods=frozenset(m.upper() for m in r.get("methods") or ()),
                    path_pattern=r.get("path_pattern") or "*",
                    query_pattern=r.get("query_pattern") or None,
                    body_pattern=r.get("body_pattern") or None,
                    approval_timeout=r.get("approval_timeout"),
                    reason=r.get("reason", ""),
                )
                for r in doc.get("access_rules", [])
            )
            for rule in rules:
                if rule.action not in ("allow", "deny", "approve"):
                    raise ContractError(f"access rule {rule.id}: unknown action {rule.action!r}")
        except (KeyError, TypeError, ValueError, re.error) as e:
            raise ContractError(f"policy snapshot: {e}") from e
        return cls(
            version=int(doc.get("version", 0)),
            targets_by_slug={t.slug: t for t in targets},
            targets_by_id={t.id: t for t in targets},
            agents_by_token_hash=agents_by_hash,
            agents_by_id=agents_by_id,
            access_rules=rules,
            masking_rules=tuple(doc.get("masking_rules", [])),
            raw=doc,
        )

    def identify(self, token: str | None) -> Agent | None:
        """The agent holding ``token``, or ``None`` for a missing, unknown or revoked token."""
        if not token:
            return None
        return self.agents_by_token_hash.get(hash_token(token))

    def resolve_target(self, slug: str) -> Target | None:
        """The target registered under ``slug`` (reverse mode), or ``None``."""
        return self.targets_by_slug.get(slug)

    def evaluate(self, request: RequestInfo) -> AccessDecision:
        """Apply the access rules in order; the target's default action when none matches."""
        target = self.targets_by_id[request.target_id]
        for rule in self.access_rules:
            if rule.matches(request):
                timeout = rule.approval_timeout or target.approval_timeout
                return AccessDecision(rule.action, rule, float(timeout))
        return AccessDecision(target.default_action, None, float(target.approval_timeout))


def request_info(
    *, agent_id: int, target_id: int, method: str, upstream_path: str, body: bytes
) -> RequestInfo:
    """Build the :class:`RequestInfo` access rules see from an upstream path with query."""
    parts = urlsplit(upstream_path)
    return RequestInfo(
        agent_id=agent_id,
        target_id=target_id,
        method=method.upper(),
        path=unquote(parts.path),
        query=unquote_plus(parts.query),
        body_text=body.decode("utf-8", errors="replace") if body else "",
    )

"""The policy snapshot as the worker sees it, and the pure decisions made from it.

A snapshot is one JSON document compiled by the control plane
(``controlplane.snapshot.compile_snapshot``) and read here with :meth:`Policy.from_document`.
Everything in this module is pure: no Redis, no mitmproxy, no Django. The mitmproxy
addons call :meth:`Policy.identify`, :meth:`Policy.resolve_target` and
:meth:`Policy.evaluate`; the PostgreSQL listener calls :meth:`Policy.resolve_target`
(``kind="postgres"``) and :meth:`Policy.evaluate_statement`; the MCP gate
(``proxy_worker.addons.mcp_gate``) calls :meth:`Policy.evaluate_mcp_call` once per JSON-RPC
call on a ``kind="mcp"`` target.

Document shape (``v`` is :data:`proxy_worker.contract.SCHEMA_VERSION`)::

    {"v": 1, "version": 7, "generated_at": 1767225600.0,
     "targets": [{"id", "slug",
                  "kind": "http" | "postgres" | "mcp" (absent = "http"; "mcp": an HTTP
                          target whose upstream is an MCP server's streamable HTTP
                          endpoint),
                  "upstream" (http: base URL; mcp: the MCP endpoint URL;
                              postgres: postgresql://user@host:port/db, for display only),
                  "auth_header", "auth_scheme" (http and mcp),
                  "credential" (Fernet token or null; postgres: the upstream password),
                  "default_action", "approval_timeout", "binary_bodies",
                  "postgres" (postgres targets only): {"host", "port" (int),
                      "database", "user",
                      "sslmode": "disable" | "prefer" | "require" | "verify-ca"
                                 | "verify-full" (libpq's meanings),
                      "ca_pem" (PEM CA bundle or null = the system trust store),
                      "allow_plaintext" (bool: accept agent tokens without TLS)},
                  "mcp" (mcp targets only): {
                      "block_changed_tools" (bool: a tool whose description or input
                          schema changes within a session is hidden from tools/list and
                          its calls refused; false: only flagged),
                      "allow_server_requests" (bool: server-initiated requests reach the
                          client; false: refused, JSON-RPC error -32601)}}],
     "agents": [{"id", "name", "owner", "token_hashes": [sha256 hex],
                 "oidc_subject" ("" = none), "group_ids": [agent group id]}],
     "agent_groups": [{"id", "name"}],
     "agent_oidc": null | {"issuer", "audience", "jwks_url", "algorithms",
                           "subject_claim", "groups_claim", "leeway"}
                   (see proxy_worker.identity.AgentOIDCConfig),
     "masking_rules": [{"id", "name", "entity_types", "field_names", "strategy",
                        "direction", "target_ids" (null = every target), "custom_pattern"}],
     "access_rules": [{"id", "name", "target_id" (null = every target),
                       "agent_ids" (null = every agent),
                       "agent_group_ids" (null = none; with agent_ids null too: every agent),
                       HTTP conditions:
                       "methods" ([] = any),
                       "path_pattern" (glob), "query_pattern" (regex or null),
                       SQL conditions (all optional; see AccessRule.matches_statement):
                       "statement_kinds" ([] = any; STATEMENT_KINDS),
                       "tables" ([glob] = any), "functions" ([glob] = any),
                       "without_where" (bool), "without_limit" (bool),
                       "parameter_pattern" (regex or null),
                       MCP conditions (all optional; see Policy.evaluate_mcp_call):
                       "mcp_methods" ([] = any; JSON-RPC methods, e.g. "tools/call"),
                       "tool_names" ([glob] = any; fnmatchcase over tools/call and
                                     prompts/get params.name, resources/read params.uri),
                       "argument_path" (JSONPath over params.arguments, jsonpath-ng
                                        extended syntax, or null),
                       "argument_pattern" (regex or null),
                       every kind:
                       "body_pattern" (regex or null: the body, the SQL text, or the
                                       JSON-RPC message),
                       "action": "allow" | "deny" | "approve", "approval_timeout" (s), "reason",
                       "approval_mode": "wait" | "defer", "required_approvals" (int >= 1),
                       "retry_window" (s)}],
     "grants": [{"id", "agent_id", "target_id",
                 "method" ("" = any; a statement kind for SQL grants, a JSON-RPC
                           method for MCP grants),
                 "path_pattern" (glob; "*" for SQL grants; a tool-name glob for MCP
                                 grants),
                 "tables" ([glob], absent or [] = any; SQL grants only),
                 "expires_at" (Unix epoch s), "approval_id"}],
     "site_url": "https://gatehouse.example.com"}

A rule with an SQL condition never matches an HTTP request; a rule with an HTTP
condition (``methods``, ``path_pattern`` other than ``*``, ``query_pattern``) never
matches an SQL statement; a rule with neither matches both (by target, agent and
``body_pattern``). A rule with an MCP condition (``mcp_methods``, ``tool_names``,
``argument_path``, ``argument_pattern``) never matches an HTTP request or an SQL
statement, and HTTP and SQL conditions never match an MCP call; a rule with none of
them matches MCP calls too (``body_pattern`` over the JSON-RPC message text). Table and
function globs are described in :class:`NameGlobs`.

Grants only lift the approval an ``approve`` rule would ask for (never a ``deny``), and a
grant past ``expires_at`` is ignored by the worker's own clock even before a new
snapshot drops it. A grant with ``tables`` never covers an HTTP request.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import unquote, unquote_plus, urlsplit

from proxy_worker.contract import SCHEMA_VERSION, ApprovalMode, ContractError
from proxy_worker.identity import AgentOIDCConfig

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


#: libpq ``sslmode`` values a PostgreSQL target's upstream connection may use.
SSLMODES = frozenset({"disable", "prefer", "require", "verify-ca", "verify-full"})


@dataclass(frozen=True)
class PostgresUpstream:
    """How the worker reaches a PostgreSQL target's server (snapshot ``targets[].postgres``).

    ``sslmode`` has libpq's meanings (:data:`SSLMODES`); ``ca_pem`` is the PEM bundle
    that verify-ca/verify-full check the server certificate against (``None``: the
    system trust store). ``allow_plaintext`` lets agents present their token on a
    connection to the gateway without TLS. ``password`` is the target's decrypted
    ``credential`` (the upstream password of ``user``), never rendered in ``repr``.
    """

    host: str
    port: int = 5432
    database: str = ""
    user: str = ""
    sslmode: str = "prefer"
    ca_pem: str | None = None
    allow_plaintext: bool = False
    password: str | None = field(default=None, repr=False)


#: Target kinds reached over HTTP: the reverse route ``/<slug>/...`` and forward mode
#: serve both; an ``mcp`` target is an HTTP target whose upstream is an MCP server's
#: streamable HTTP endpoint.
HTTP_KINDS = frozenset({"http", "mcp"})
TARGET_KINDS = frozenset({"http", "postgres", "mcp"})


def is_http_kind(kind: str) -> bool:
    """Whether a target of ``kind`` is served by the HTTP listeners (``http``, ``mcp``)."""
    return kind in HTTP_KINDS


@dataclass(frozen=True)
class McpSettings:
    """An MCP target's settings (snapshot ``targets[].mcp``).

    ``block_changed_tools``: a tool whose description, input schema or annotations
    change within a session is hidden from ``tools/list`` and its calls are refused
    (``False``: only flagged in the record). ``allow_server_requests``: requests the
    server sends the client (``sampling/createMessage``, ``elicitation/create``,
    ``roots/list``, ...) reach it; otherwise the gateway removes them from the stream and
    answers the server itself with JSON-RPC error -32601.
    """

    block_changed_tools: bool = True
    allow_server_requests: bool = False


@dataclass(frozen=True)
class Target:
    """An upstream reachable through the gateway: an HTTP API at ``/<slug>/`` (or by host
    in forward mode), or a PostgreSQL database (``kind="postgres"``, ``postgres`` set)
    that agents name by its slug as the database of their connection."""

    id: int
    slug: str
    upstream: str
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    credential: str | None = None
    default_action: Action = "allow"
    approval_timeout: float = 120.0
    #: ``"http"``, ``"postgres"`` or ``"mcp"`` (:data:`TARGET_KINDS`).
    kind: str = "http"
    postgres: PostgresUpstream | None = None
    #: MCP targets only (``kind="mcp"``); ``None`` for the others.
    mcp: McpSettings | None = None

    def upstream_url(self, path: str) -> str:
        """The upstream URL for a path (starting with ``/``, query included) under this target."""
        return self.upstream.rstrip("/") + path


@dataclass(frozen=True)
class Agent:
    """A non-human identity: one of its tokens (or a JWT for its ``oidc_subject``) must be
    presented on every request. ``group_ids`` are its agent groups."""

    id: int
    name: str
    owner: str = ""
    group_ids: frozenset[int] = frozenset()
    oidc_subject: str = ""


@dataclass(frozen=True)
class AccessRule:
    """One ordered access rule. The first rule that matches a request decides it.

    ``path_pattern`` is a shell-style glob over the upstream path (``*`` matches any
    characters, ``/`` included); ``query_pattern`` is a regular expression searched in the
    URL-decoded query string; ``body_pattern`` a regular expression searched in the
    request body decoded as UTF-8 (for SQL statements: in the SQL text). An empty
    ``methods`` tuple matches every method.

    SQL conditions (:meth:`matches_statement`; all optional, each set one must hold).
    For ``deny`` and ``approve`` rules they read as "any": ``statement_kinds`` shares a
    kind with :attr:`SqlFacts.kinds`; some relation matches some ``tables`` glob; some
    function matches some ``functions`` glob. For ``allow`` rules they read as "only":
    every kind of the statement is in ``statement_kinds``, it touches at least one relation
    and every relation matches a ``tables`` glob, and every function matches a
    ``functions`` glob (so an allow rule for SELECT
    on ``customers`` does not pass ``WITH d AS (DELETE ...) SELECT`` or a join with
    ``secrets``). For both:
    ``without_where`` needs :attr:`SqlFacts.unfiltered_write`, ``without_limit``
    :attr:`SqlFacts.unbounded_select`; ``parameter_pattern`` is searched in each bound
    parameter value. Name globs follow :class:`NameGlobs`. A rule with an SQL condition
    never matches an HTTP request, and a rule with an HTTP condition (``methods``,
    ``path_pattern`` other than ``*``, ``query_pattern``) never matches a statement.
    """

    id: int
    name: str
    action: Action
    target_id: int | None = None
    agent_ids: frozenset[int] | None = None
    #: Agents in any of these groups match too (``None`` and ``agent_ids`` ``None``: all).
    agent_group_ids: frozenset[int] | None = None
    methods: frozenset[str] = frozenset()
    path_pattern: str = "*"
    query_pattern: str | None = None
    body_pattern: str | None = None
    approval_timeout: float | None = None
    reason: str = ""
    #: ``approve`` rules: ``wait`` holds the request, ``defer`` answers at once and lets an
    #: identical retry pass once within ``retry_window`` seconds of the approval.
    approval_mode: ApprovalMode = "wait"
    required_approvals: int = 1
    retry_window: float = 600.0
    #: SQL conditions (see above); upper-case kinds, name globs as written.
    statement_kinds: frozenset[str] = frozenset()
    tables: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    without_where: bool = False
    without_limit: bool = False
    parameter_pattern: str | None = None
    #: MCP conditions (see :meth:`matches_mcp`): JSON-RPC methods, name globs
    #: (case-sensitive), a JSONPath over ``params.arguments`` and a regex.
    mcp_methods: frozenset[str] = frozenset()
    tool_names: tuple[str, ...] = ()
    argument_path: str | None = None
    argument_pattern: str | None = None
    _path_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _query_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _body_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _param_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _tables: NameGlobs | None = field(init=False, repr=False, compare=False)
    _functions: NameGlobs | None = field(init=False, repr=False, compare=False)
    _has_sql: bool = field(init=False, repr=False, compare=False)
    _has_http: bool = field(init=False, repr=False, compare=False)
    _has_mcp: bool = field(init=False, repr=False, compare=False)
    #: Whether :meth:`matches` / :meth:`matches_statement` can never be true (a condition
    #: of another protocol is set): one flag for each hot path.
    _not_http: bool = field(init=False, repr=False, compare=False)
    _not_sql: bool = field(init=False, repr=False, compare=False)
    _tool_res: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _arg_path: Any = field(init=False, repr=False, compare=False)
    _arg_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

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
        object.__setattr__(
            self,
            "_param_re",
            re.compile(self.parameter_pattern) if self.parameter_pattern else None,
        )
        object.__setattr__(self, "_tables", NameGlobs(self.tables) if self.tables else None)
        object.__setattr__(
            self, "_functions", NameGlobs(self.functions) if self.functions else None
        )
        object.__setattr__(
            self,
            "_has_sql",
            bool(
                self.statement_kinds
                or self.tables
                or self.functions
                or self.without_where
                or self.without_limit
                or self.parameter_pattern
            ),
        )
        object.__setattr__(
            self,
            "_has_http",
            bool(self.methods or self.path_pattern not in ("", "*") or self.query_pattern),
        )
        object.__setattr__(
            self,
            "_has_mcp",
            bool(
                self.mcp_methods or self.tool_names or self.argument_path or self.argument_pattern
            ),
        )
        object.__setattr__(self, "_not_http", self._has_sql or self._has_mcp)
        object.__setattr__(self, "_not_sql", self._has_http or self._has_mcp)
        object.__setattr__(
            self,
            "_tool_res",
            tuple(re.compile(fnmatch.translate(g)) for g in self.tool_names if g),
        )
        object.__setattr__(
            self,
            "_arg_path",
            _json_path(self.argument_path) if self.argument_path else None,
        )
        object.__setattr__(
            self,
            "_arg_re",
            re.compile(self.argument_pattern) if self.argument_pattern else None,
        )

    @property
    def has_sql_conditions(self) -> bool:
        """Whether any SQL condition is set (then no HTTP request matches the rule)."""
        return self._has_sql

    @property
    def has_http_conditions(self) -> bool:
        """Whether any HTTP-only condition is set (then no SQL statement matches the rule)."""
        return self._has_http

    @property
    def has_mcp_conditions(self) -> bool:
        """Whether any MCP condition is set (then no HTTP request or SQL statement matches)."""
        return self._has_mcp

    def matches(self, request: RequestInfo) -> bool:
        """Whether this rule applies to ``request`` (target, agent, method, path, query, body)."""
        if self._not_http or (self.target_id is not None and self.target_id != request.target_id):
            return False
        if (self.agent_ids is not None or self.agent_group_ids is not None) and not (
            (self.agent_ids is not None and request.agent_id in self.agent_ids)
            or (
                self.agent_group_ids is not None
                and not self.agent_group_ids.isdisjoint(request.agent_group_ids)
            )
        ):
            return False
        if self.methods and request.method.upper() not in self.methods:
            return False
        if not self._path_re.match(request.path):
            return False
        if self._query_re is not None and not self._query_re.search(request.query):
            return False
        return self._body_re is None or bool(self._body_re.search(request.body_text))

    def matches_statement(self, request: StatementRequest) -> bool:
        """Whether this rule applies to one SQL statement (target, agent, SQL conditions,
        ``body_pattern`` over the SQL text); never when it has an HTTP-only condition."""
        if self._not_sql or (self.target_id is not None and self.target_id != request.target_id):
            return False
        if (self.agent_ids is not None or self.agent_group_ids is not None) and not (
            (self.agent_ids is not None and request.agent_id in self.agent_ids)
            or (
                self.agent_group_ids is not None
                and not self.agent_group_ids.isdisjoint(request.agent_group_ids)
            )
        ):
            return False
        facts = request.facts
        if self.action == "allow":
            # An allow rule reads as "only": every effect, every relation and every
            # function of the statement must be covered, or ``WITH d AS (DELETE ...)
            # SELECT ...`` would pass an allow rule for SELECT and ``... JOIN secrets``
            # one for the customers table.
            if self.statement_kinds and not facts.kinds <= self.statement_kinds:
                return False
            # ... and a rule on tables allows statements on tables only: "SELECT on
            # customers" does not allow ``SELECT pg_read_file(...)``.
            if self._tables is not None and not (
                facts.relations and self._tables.all_match(facts.relations)
            ):
                return False
            if self._functions is not None and not self._functions.all_match(facts.functions):
                return False
        else:
            # Deny and approval rules read as "any": one matching effect, relation or
            # function is enough (the worst effect anywhere counts).
            if (
                self.statement_kinds
                and facts.kind not in self.statement_kinds
                and self.statement_kinds.isdisjoint(facts.kinds)
            ):
                return False
            if self._tables is not None and not self._tables.any_matches(facts.relations):
                return False
            if self._functions is not None and not self._functions.any_matches(facts.functions):
                return False
        if self.without_where and not facts.unfiltered_write:
            return False
        if self.without_limit and not facts.unbounded_select:
            return False
        if self._param_re is not None:
            search = self._param_re.search
            if not any(v is not None and search(v) for v in request.parameters):
                return False
        return self._body_re is None or bool(self._body_re.search(request.sql))

    def matches_mcp(self, call: McpCall) -> bool:
        """Whether this rule applies to one MCP call (target, agent, MCP conditions,
        ``body_pattern`` over the JSON-RPC message text); never when it has an HTTP-only
        or an SQL condition.

        ``mcp_methods`` holds the call's JSON-RPC method; ``tool_names`` globs
        (``fnmatchcase``) match :attr:`McpCall.name`. Argument conditions:
        ``argument_path`` (JSONPath over the arguments) must find a value, and with
        ``argument_pattern`` the text of a found value (strings as they are, other JSON
        values as compact JSON) must match it (``re.search``); a pattern without a path
        is searched in every string leaf of the arguments. Deny and approval rules read
        "any" (one matching value is enough); allow rules read "only": every value the
        path finds (every string leaf, for a pattern alone) must match, and there must be
        at least one, so an allow rule for ``$.email`` matching ``@example\\.com$`` does
        not pass a call that adds a second address elsewhere.
        """
        if (
            self._has_http
            or self._has_sql
            or (self.target_id is not None and self.target_id != call.target_id)
        ):
            return False
        if (self.agent_ids is not None or self.agent_group_ids is not None) and not (
            (self.agent_ids is not None and call.agent_id in self.agent_ids)
            or (
                self.agent_group_ids is not None
                and not self.agent_group_ids.isdisjoint(call.agent_group_ids)
            )
        ):
            return False
        if self.mcp_methods and call.method not in self.mcp_methods:
            return False
        if self._tool_res and not any(r.match(call.name) for r in self._tool_res):
            return False
        if self._arg_path is not None or self._arg_re is not None:
            if self._arg_path is not None:
                try:
                    values = [m.value for m in self._arg_path.find(call.arguments)]
                except Exception:  # a path that cannot walk these arguments finds nothing
                    values = []
                texts = [v if isinstance(v, str) else _compact_json(v) for v in values]
            else:
                texts = list(_string_leaves(call.arguments))
            if self._arg_re is None:
                if not texts:
                    return False
            else:
                search = self._arg_re.search
                if self.action == "allow":
                    if not texts or not all(search(t) for t in texts):
                        return False
                elif not any(search(t) for t in texts):
                    return False
        return self._body_re is None or bool(self._body_re.search(call.text))


@functools.lru_cache(maxsize=512)
def _json_path(expr: str) -> Any:
    """A parsed JSONPath (jsonpath-ng extended syntax, as masking rules use);
    ``ValueError`` when it does not parse (a :class:`ContractError` for snapshots)."""
    from jsonpath_ng.ext import parse

    try:
        return parse(expr)
    except Exception as e:  # jsonpath-ng raises its own exception classes
        raise ValueError(f"invalid JSONPath {expr!r}: {e}") from None


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _string_leaves(value: Any, depth: int = 0) -> Any:
    """Every string value inside a JSON value (object keys excluded), depth first."""
    if isinstance(value, str):
        yield value
    elif depth > 64:
        return
    elif isinstance(value, dict):
        for v in value.values():
            yield from _string_leaves(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _string_leaves(v, depth + 1)


class NameGlobs:
    """Shell-style globs over table or function names, compared case-insensitively.

    * A glob with a dot (``public.customers``, ``pg_catalog.*``) matches a qualified
      name ``schema.name`` as a whole (``db.schema.name`` is also tried as
      ``schema.name``).
    * A glob without a dot (``customers``, ``secret_*``) matches the name part of any
      name, qualified or not: ``customers`` matches ``public.customers``.
    * An unqualified name (``customers``) matches a dotted glob when the glob's name
      part (after its last dot) matches: ``public.customers`` matches ``customers``, and
      ``pg_catalog.*`` matches every unqualified name. The worker cannot know the
      client's ``search_path``, so an unqualified name may be any schema's: this is the
      fail-safe reading for deny and approve rules (write ``pg_catalog.pg_*`` rather
      than ``pg_catalog.*`` to leave ordinary tables alone).

    ``*`` and ``?`` match dots too (``fnmatch``), so ``*`` alone matches every name.
    """

    __slots__ = ("_full", "_part", "globs")

    def __init__(self, globs: tuple[str, ...] | list[str]) -> None:
        self.globs = tuple(g.strip().lower() for g in globs if g and g.strip())
        dotted: list[re.Pattern[str]] = []  # dotted globs, over "schema.name"
        name_parts: list[re.Pattern[str]] = []  # their name parts
        bare: list[re.Pattern[str]] = []  # globs without a dot, over a name part
        for g in self.globs:
            if "." in g:
                dotted.append(re.compile(fnmatch.translate(g)))
                name_parts.append(re.compile(fnmatch.translate(g.rpartition(".")[2])))
            else:
                bare.append(re.compile(fnmatch.translate(g)))
        #: For qualified names: (dotted globs, bare globs over the name part).
        self._full = (tuple(dotted), tuple(bare))
        #: For unqualified names: bare globs and the dotted globs' name parts.
        self._part = tuple(bare + name_parts)

    def matches(self, name: str) -> bool:
        """Whether ``name`` (``schema.name`` or bare ``name``) matches one of the globs."""
        name = name.lower()
        if "." in name:
            dotted, bare = self._full
            parts = name.split(".")
            if any(r.match(parts[-1]) for r in bare):
                return True
            # ``catalog.schema.name`` (the catalog can only be the current database)
            # is judged as ``schema.name`` too.
            two = ".".join(parts[-2:])
            return any(r.match(name) or r.match(two) for r in dotted)
        return any(r.match(name) for r in self._part)

    def any_matches(self, names: frozenset[str] | tuple[str, ...]) -> bool:
        """Whether some name of ``names`` matches one of the globs."""
        return any(self.matches(n) for n in names)

    def all_match(self, names: frozenset[str] | tuple[str, ...]) -> bool:
        """Whether every name of ``names`` matches one of the globs (``True`` for none)."""
        return all(self.matches(n) for n in names)


@dataclass(frozen=True)
class Grant:
    """A time-boxed approval: ``agent_id`` may send ``method`` (empty = any) requests whose
    upstream path matches ``path_pattern`` (glob, as access rules) to ``target_id`` until
    ``expires_at`` (Unix epoch seconds) without asking again.

    SQL grants (PostgreSQL targets) have ``tables`` (name globs, :class:`NameGlobs`) and
    a ``method`` that is a statement kind (or empty); ``path_pattern`` is ``*``. A grant
    with ``tables`` never covers an HTTP request, and one with a ``path_pattern`` other
    than ``*`` never covers a statement.
    """

    id: int
    agent_id: int
    target_id: int
    method: str
    path_pattern: str
    expires_at: float
    approval_id: str | None = None
    tables: tuple[str, ...] = ()
    _path_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _tables: NameGlobs | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_path_re", re.compile(fnmatch.translate(self.path_pattern or "*"))
        )
        object.__setattr__(self, "_tables", NameGlobs(self.tables) if self.tables else None)

    def matches(self, request: RequestInfo, now: float) -> bool:
        """Whether this grant covers ``request`` at ``now`` (Unix epoch seconds)."""
        return (
            now < self.expires_at
            and self.agent_id == request.agent_id
            and self.target_id == request.target_id
            and (not self.method or self.method == request.method.upper())
            and self._tables is None
            and bool(self._path_re.match(request.path))
        )

    def matches_statement(self, request: StatementRequest, now: float) -> bool:
        """Whether this grant covers one SQL statement at ``now`` (Unix epoch seconds).

        Agent and target match, not expired, ``method`` empty or the statement's worst
        kind, and with ``tables`` set: the statement touches at least one relation and
        every relation it touches matches one of them (a statement without relations,
        such as ``DO`` or ``SELECT pg_sleep(1)``, is not "on" any table, so a table grant
        does not cover it).
        """
        if not (
            now < self.expires_at
            and self.agent_id == request.agent_id
            and self.target_id == request.target_id
            and self.path_pattern in ("", "*")
            and (not self.method or self.method == request.facts.kind)
        ):
            return False
        relations = request.facts.relations
        return self._tables is None or (bool(relations) and self._tables.all_match(relations))

    def matches_mcp(self, call: McpCall, now: float) -> bool:
        """Whether this grant covers one MCP call at ``now`` (Unix epoch seconds).

        MCP grants: ``method`` is a JSON-RPC method (``tools/call``; compared without
        regard to case, as snapshots carry grant methods upper-cased) or empty for any,
        ``path_pattern`` a glob over the tool name (resource URI, prompt name), matched
        case-sensitively; a grant with ``tables`` never covers a call.
        """
        return (
            now < self.expires_at
            and self.agent_id == call.agent_id
            and self.target_id == call.target_id
            and self._tables is None
            and (not self.method or self.method.lower() == call.method.lower())
            and bool(self._path_re.match(call.name))
        )


#: Statement kinds of SQL access rules (``AccessRule.statement_kinds``), most severe first:
#: the order that picks :attr:`SqlFacts.kind`, the worst effect of a statement.
#: ``FASTPATH`` is the legacy function-call message (``F``) of the wire protocol.
STATEMENT_SEVERITY: tuple[str, ...] = (
    "DDL",
    "GRANT",
    "LOAD",
    "DO",
    "TRUNCATE",
    "DELETE",
    "MERGE",
    "UPDATE",
    "INSERT",
    "CALL",
    "FASTPATH",
    "COPY",
    "LOCK",
    "MAINTENANCE",
    "SELECT",
    "EXECUTE",
    "CURSOR",
    "PREPARE",
    "EXPLAIN",
    "LISTEN",
    "SET",
    "SHOW",
    "TRANSACTION",
    "UTILITY",
)
STATEMENT_KINDS = frozenset(STATEMENT_SEVERITY)
_SEVERITY_RANK = {k: i for i, k in enumerate(STATEMENT_SEVERITY)}


def worst_kind(kinds: frozenset[str] | set[str] | tuple[str, ...]) -> str:
    """The most severe of ``kinds`` by :data:`STATEMENT_SEVERITY` (``UTILITY`` for none)."""
    return min(kinds, key=lambda k: _SEVERITY_RANK.get(k, len(_SEVERITY_RANK)), default="UTILITY")


@dataclass(frozen=True)
class SqlFacts:
    """What access rules see of one SQL statement: the worst effect anywhere in it.

    Produced by :mod:`proxy_worker.postgres.sql` from PostgreSQL's own parse tree
    (pglast), so ``WITH d AS (DELETE ...) SELECT ...`` and ``EXPLAIN ANALYZE DELETE ...``
    count as deletes.

    Attributes:
        kind: the worst kind of :attr:`kinds` (:func:`worst_kind`).
        kinds: every effect kind found anywhere in the statement
            (:data:`STATEMENT_KINDS`).
        relations: relations touched, ``"schema.name"`` or bare ``"name"`` as written,
            lower-cased; CTE names are not relations.
        functions: functions called, ``"schema.name"`` or bare ``"name"``, lower-cased.
        unfiltered_write: an ``UPDATE`` or ``DELETE`` without ``WHERE`` anywhere, or a
            ``TRUNCATE``.
        unbounded_select: a query (of a ``SELECT``, ``DECLARE`` or ``COPY (query)``)
            without ``LIMIT``/``FETCH FIRST`` at its top level, or ``FETCH ALL``.
    """

    kind: str
    kinds: frozenset[str]
    relations: frozenset[str] = frozenset()
    functions: frozenset[str] = frozenset()
    unfiltered_write: bool = False
    unbounded_select: bool = False


@dataclass(frozen=True)
class StatementRequest:
    """What access rules look at for one SQL statement on a PostgreSQL target.

    ``sql`` is the statement text as the agent sent it (before masking); ``parameters``
    the bound values as text (``None`` for NULL; binary values as the relay renders them);
    ``fingerprint`` is :func:`statement_fingerprint` (computed by
    :meth:`Policy.evaluate_statement` for ``approve`` outcomes when empty).
    """

    agent_id: int
    target_id: int
    facts: SqlFacts
    sql: str
    parameters: tuple[str | None, ...] = ()
    fingerprint: str = ""
    agent_group_ids: frozenset[int] = frozenset()


def statement_fingerprint(
    *, agent_id: int, target_id: int, sql: str, parameters: tuple[str | None, ...] | list = ()
) -> str:
    """SHA-256 hex digest identifying a statement for defer mode's "identical retry".

    Covers the agent, the target, the SQL text exactly as sent and each bound parameter
    (length-prefixed, so no two parameter lists share a digest; NULL differs from the
    empty string), taken before masking, like :func:`request_fingerprint` (whose digests
    it cannot collide with: the input starts with a different tag).
    """
    h = hashlib.sha256(b"gatehouse-sql\x00")
    for part in (str(agent_id), str(target_id)):
        h.update(part.encode("ascii"))
        h.update(b"\x00")
    h.update(hashlib.sha256(sql.encode("utf-8", errors="surrogateescape")).digest())
    h.update(len(parameters).to_bytes(4, "big"))
    for value in parameters:
        if value is None:
            h.update(b"N")
            continue
        data = value.encode("utf-8", errors="surrogateescape")
        h.update(b"V" + len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


#: JSON-RPC methods access rules decide on an MCP target (one decision per call); the
#: other messages (``initialize``, ``tools/list``, notifications, ...) are the protocol's
#: plumbing and pass (lists filtered).
MCP_CALL_METHODS = frozenset({"tools/call", "resources/read", "prompts/get"})


@dataclass(frozen=True)
class McpCall:
    """What access rules look at for one JSON-RPC call on an MCP target.

    ``method`` is the JSON-RPC method (``tools/call``, ``resources/read``,
    ``prompts/get``); ``name`` the tool name (tools/call, prompts/get ``params.name``) or
    the resource URI (resources/read ``params.uri``); ``arguments`` is
    ``params.arguments`` (a JSON value, ``{}`` when absent), before masking; ``text``
    the JSON-RPC message as compact JSON (what ``body_pattern`` searches);
    ``fingerprint`` is :func:`mcp_call_fingerprint` (computed by
    :meth:`Policy.evaluate_mcp_call` for ``approve`` outcomes when empty).
    """

    agent_id: int
    target_id: int
    method: str
    name: str
    arguments: Any = field(default_factory=dict)
    text: str = ""
    agent_group_ids: frozenset[int] = frozenset()
    fingerprint: str = ""


def mcp_call_fingerprint(
    *, agent_id: int, target_id: int, method: str, name: str, arguments: Any
) -> str:
    """SHA-256 hex digest identifying an MCP call for defer mode's "identical retry".

    Covers the agent, the target, the JSON-RPC method, the name and the arguments as
    canonical JSON (sorted keys), taken before masking; not the JSON-RPC id, which a
    client changes on every retry. Tagged so it never collides with
    :func:`request_fingerprint` or :func:`statement_fingerprint` digests.
    """
    h = hashlib.sha256(b"gatehouse-mcp\x00")
    for part in (str(agent_id), str(target_id), method, name):
        h.update(part.encode("utf-8", errors="surrogateescape"))
        h.update(b"\x00")
    h.update(hashlib.sha256(_compact_json(arguments).encode("utf-8", "surrogatepass")).digest())
    return h.hexdigest()


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
    #: :func:`request_fingerprint` of the request as received (before masking); what an
    #: "identical retry" of a deferred request must repeat.
    fingerprint: str = ""
    #: The agent's groups (snapshot membership plus, for JWT agents, the groups claim).
    agent_group_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class AccessDecision:
    """The result of evaluating the access rules for one request.

    ``grant`` is the active grant that lifts an ``approve`` decision (the action stays
    ``approve`` so the approval gate records it as approved by grant); ``fingerprint``
    is copied from the :class:`RequestInfo`.
    """

    action: Action
    rule: AccessRule | None
    timeout: float
    grant: Grant | None = None
    fingerprint: str = ""

    @property
    def rule_id(self) -> int | None:
        return self.rule.id if self.rule else None

    @property
    def approval_mode(self) -> ApprovalMode:
        return self.rule.approval_mode if self.rule else "wait"

    @property
    def required_approvals(self) -> int:
        return max(1, self.rule.required_approvals) if self.rule else 1

    @property
    def retry_window(self) -> float:
        return self.rule.retry_window if self.rule else 600.0


class PathError(ValueError):
    """A reverse-mode path that cannot be routed safely (traversal, encoded separators)."""


def _fully_unquoted(segment: str, rounds: int = 3) -> str:
    """Percent-decode ``segment`` until it stops changing (at most ``rounds`` times), so
    double encodings such as ``%252e%252e`` are judged by what an upstream may finally
    see (RFC 3986 section 2.4 warns against decoding twice; some servers do anyway)."""
    for _ in range(rounds):
        decoded = unquote(segment)
        if decoded == segment:
            break
        segment = decoded
    return segment


def split_reverse_path(raw_path: str) -> tuple[str, str]:
    """Split ``/<slug>/rest?query`` into ``("slug", "/rest?query")``.

    Raises :class:`PathError` for a missing slug, dot segments (``.``/``..``, also
    percent-encoded, double-encoded, or behind an encoded slash such as ``..%2f``)
    anywhere in the path, and encoded slashes or backslashes in the slug,
    so that no request can be routed to one target by naming another.
    """
    path, sep, query = raw_path.partition("?")
    if not path.startswith("/"):
        raise PathError("path must start with '/'")
    segments = path.split("/")
    if "%" not in path:  # nothing to decode: each segment is what an upstream sees
        if "\\" in path or "." in segments or ".." in segments:
            raise PathError("dot segments and backslashes are not allowed in the path")
    else:
        for seg in segments:
            decoded = _fully_unquoted(seg)
            if "\\" in decoded or any(part in (".", "..") for part in decoded.split("/")):
                # Also inside a segment: ``..%2f`` becomes ``../`` at an upstream that
                # decodes encoded slashes before normalising, which would step around
                # path rules.
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
    grants: tuple[Grant, ...] = ()
    #: The control plane's public base URL (approval page links in deferred answers).
    site_url: str = ""
    #: How agents' OpenID Connect JWTs are validated; ``None``: JWTs are not accepted.
    agent_oidc: AgentOIDCConfig | None = None
    #: Agent group name -> id (JWT groups claims name groups).
    agent_group_ids_by_name: dict[str, int] = field(default_factory=dict)
    #: Built from the above in ``__post_init__``.
    agents_by_oidc_subject: dict[str, Agent] = field(init=False, repr=False)
    forward_targets: dict[tuple[str, int], list[tuple[str, str, Target]]] = field(
        init=False, repr=False
    )

    def __post_init__(self) -> None:
        self.agents_by_oidc_subject = {
            a.oidc_subject: a for a in self.agents_by_id.values() if a.oidc_subject
        }
        index: dict[tuple[str, int], list[tuple[str, str, Target]]] = {}
        for t in self.targets_by_id.values():
            if not is_http_kind(t.kind):  # PostgreSQL targets are not on the HTTP egress list
                continue
            origin = upstream_origin(t.upstream)
            if origin is None:
                continue
            scheme, host, port, base = origin
            index.setdefault((host, port), []).append((scheme, base, t))
        for entries in index.values():  # longest base path first
            entries.sort(key=lambda e: len(e[1]), reverse=True)
        self.forward_targets = index

    @classmethod
    def empty(cls) -> Policy:
        """A policy that knows no agent and no target: every request is refused."""
        return cls.from_document({"v": SCHEMA_VERSION, "version": 0})

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Policy:
        """Build a policy from a snapshot document; :class:`ContractError` when malformed.

        Any shape error anywhere in the document (a ``null`` where a list belongs, a
        string where a mapping belongs) is a :class:`ContractError`, never another
        exception: workers keep their last good policy on a ``ContractError``.
        """
        if not isinstance(doc, dict):
            raise ContractError("policy snapshot: not a JSON object")
        try:
            return cls._from_document(doc)
        except ContractError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, re.error) as e:
            raise ContractError(f"policy snapshot: {type(e).__name__}: {e}") from e

    @classmethod
    def _from_document(cls, doc: dict[str, Any]) -> Policy:
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
                    kind=str(t.get("kind") or "http"),
                    postgres=_postgres_upstream(t),
                    mcp=_mcp_settings(t),
                )
                for t in doc.get("targets", [])
            ]
            for target in targets:
                if target.kind not in TARGET_KINDS:
                    raise ContractError(f"target {target.slug}: unknown kind {target.kind!r}")
            agents_by_hash: dict[str, Agent] = {}
            agents_by_id: dict[int, Agent] = {}
            for a in doc.get("agents", []):
                agent = Agent(
                    id=int(a["id"]),
                    name=str(a["name"]),
                    owner=a.get("owner", ""),
                    group_ids=frozenset(int(g) for g in a.get("group_ids") or ()),
                    oidc_subject=str(a.get("oidc_subject") or ""),
                )
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
                    agent_group_ids=frozenset(r["agent_group_ids"])
                    if r.get("agent_group_ids") is not None
                    else None,
                    methods=frozenset(m.upper() for m in r.get("methods") or ()),
                    path_pattern=r.get("path_pattern") or "*",
                    query_pattern=r.get("query_pattern") or None,
                    body_pattern=r.get("body_pattern") or None,
                    approval_timeout=r.get("approval_timeout"),
                    reason=r.get("reason", ""),
                    approval_mode=r.get("approval_mode") or "wait",
                    required_approvals=int(r.get("required_approvals") or 1),
                    retry_window=float(r.get("retry_window") or 600),
                    statement_kinds=frozenset(
                        str(k).upper() for k in r.get("statement_kinds") or ()
                    ),
                    tables=tuple(str(g) for g in r.get("tables") or ()),
                    functions=tuple(str(g) for g in r.get("functions") or ()),
                    without_where=bool(r.get("without_where")),
                    without_limit=bool(r.get("without_limit")),
                    parameter_pattern=r.get("parameter_pattern") or None,
                    mcp_methods=frozenset(str(m) for m in r.get("mcp_methods") or ()),
                    tool_names=tuple(str(g) for g in r.get("tool_names") or ()),
                    argument_path=r.get("argument_path") or None,
                    argument_pattern=r.get("argument_pattern") or None,
                )
                for r in doc.get("access_rules", [])
            )
            for rule in rules:
                if rule.action not in ("allow", "deny", "approve"):
                    raise ContractError(f"access rule {rule.id}: unknown action {rule.action!r}")
                if rule.approval_mode not in ("wait", "defer"):
                    raise ContractError(
                        f"access rule {rule.id}: unknown approval mode {rule.approval_mode!r}"
                    )
                unknown = rule.statement_kinds - STATEMENT_KINDS
                if unknown:
                    raise ContractError(
                        f"access rule {rule.id}: unknown statement kinds {sorted(unknown)}"
                    )
            grants = tuple(
                Grant(
                    id=int(g["id"]),
                    agent_id=int(g["agent_id"]),
                    target_id=int(g["target_id"]),
                    method=str(g.get("method") or "").upper(),
                    path_pattern=str(g.get("path_pattern") or "*"),
                    expires_at=float(g["expires_at"]),
                    approval_id=g.get("approval_id"),
                    tables=tuple(str(t) for t in g.get("tables") or ()),
                )
                for g in doc.get("grants", [])
            )
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
            grants=grants,
            site_url=str(doc.get("site_url") or "").rstrip("/"),
            agent_oidc=AgentOIDCConfig.from_document(doc.get("agent_oidc")),
            agent_group_ids_by_name={
                str(g["name"]): int(g["id"]) for g in doc.get("agent_groups") or ()
            },
        )

    def identify(self, token: str | None) -> Agent | None:
        """The agent holding ``token``, or ``None`` for a missing, unknown or revoked token."""
        if not token:
            return None
        return self.agents_by_token_hash.get(hash_token(token))

    def resolve_target(self, slug: str, kind: str | None = None) -> Target | None:
        """The target registered under ``slug``, or ``None``.

        ``kind`` (``"http"``, ``"postgres"``) limits the answer to targets of that kind:
        the HTTP reverse listener asks for ``http``, which MCP targets are too
        (:func:`is_http_kind`; a PostgreSQL target's slug is an unknown target there),
        the PostgreSQL listener for ``postgres`` (the database name of the agent's
        connection is the slug).
        """
        target = self.targets_by_slug.get(slug)
        if target is None or kind is None:
            return target
        if target.kind != kind and not (kind == "http" and target.kind == "mcp"):
            return None
        return target

    def identify_subject(self, subject: str, claim_groups: tuple[str, ...] = ()) -> Agent | None:
        """The agent whose ``oidc_subject`` is ``subject`` (a validated JWT's), or ``None``.

        Groups named in the token's groups claim that exist in the snapshot are added to
        the agent's own groups for this request.
        """
        agent = self.agents_by_oidc_subject.get(subject)
        if agent is None or not claim_groups:
            return agent
        by_name = self.agent_group_ids_by_name
        extra = {by_name[g] for g in claim_groups if g in by_name}
        return replace(agent, group_ids=agent.group_ids | extra) if extra else agent

    def allows_host(self, host: str, port: int) -> bool:
        """Whether some target lives at ``host:port`` (forward mode's egress allow-list)."""
        return (host.lower().rstrip("."), port) in self.forward_targets

    def resolve_forward(
        self, scheme: str, host: str, port: int, raw_path: str
    ) -> tuple[Target, str] | None:
        """The target serving an absolute URL (forward mode) and the upstream path under it.

        Matches scheme, host (case-insensitive) and port exactly, and the longest target
        base path that is a whole-segment prefix of the path. Returns
        ``(target, "/rest?query")`` or ``None`` (not on the allow-list). Raises
        :class:`PathError` for dot segments or backslashes, which an upstream could
        normalise out of the target's base path.
        """
        entries = self.forward_targets.get((host.lower().rstrip("."), port))
        if not entries:
            return None
        path, sep, query = raw_path.partition("?")
        if not path.startswith("/"):
            raise PathError("path must start with '/'")
        for seg in path.split("/"):
            decoded = unquote(seg)
            if decoded in (".", "..") or "\\" in decoded:
                raise PathError("dot segments and backslashes are not allowed in the path")
        for t_scheme, base, target in entries:
            if t_scheme != scheme.lower():
                continue
            if not base or path == base or path.startswith(base + "/"):
                rest = path[len(base) :] or "/"
                return target, rest + (sep + query if sep else "")
        return None

    def evaluate(self, request: RequestInfo, now: float | None = None) -> AccessDecision:
        """Apply the access rules in order; the target's default action when none matches.

        An ``approve`` outcome carries the first grant active at ``now`` (Unix epoch
        seconds, default the current time) that covers the request, if any.

        On an MCP target the HTTP requests that carry JSON-RPC messages (and the
        session's GET stream and DELETE) are allowed here: the access rules decide each
        call inside them (:meth:`evaluate_mcp_call`, applied by the MCP gate), so the
        target's default action and its rules never refuse ``initialize`` or a
        notification as an HTTP request.
        """
        target = self.targets_by_id[request.target_id]
        if target.kind == "mcp":
            return AccessDecision("allow", None, float(target.approval_timeout))
        decision = AccessDecision(
            target.default_action,
            None,
            float(target.approval_timeout),
            fingerprint=request.fingerprint,
        )
        for rule in self.access_rules:
            if rule.matches(request):
                timeout = rule.approval_timeout or target.approval_timeout
                decision = AccessDecision(
                    rule.action, rule, float(timeout), fingerprint=request.fingerprint
                )
                break
        if decision.action == "approve" and self.grants:
            grant = self.matching_grant(request, time.time() if now is None else now)
            if grant is not None:
                decision = replace(decision, grant=grant)
        return decision

    def matching_grant(self, request: RequestInfo, now: float) -> Grant | None:
        """The first grant active at ``now`` that covers ``request``, or ``None``."""
        for grant in self.grants:
            if grant.matches(request, now):
                return grant
        return None

    def evaluate_statement(
        self, request: StatementRequest, now: float | None = None
    ) -> AccessDecision:
        """Apply the access rules in order to one SQL statement; the target's default
        action when none matches (:meth:`AccessRule.matches_statement`).

        An ``approve`` outcome carries the statement's fingerprint (``request.fingerprint``,
        else :func:`statement_fingerprint`) and the first grant active at ``now`` (Unix
        epoch seconds, default the current time) that covers the statement, if any.
        Raises ``KeyError`` for a ``target_id`` the policy does not know.
        """
        target = self.targets_by_id[request.target_id]
        decision = AccessDecision(
            target.default_action,
            None,
            float(target.approval_timeout),
            fingerprint=request.fingerprint,
        )
        for rule in self.access_rules:
            if rule.matches_statement(request):
                timeout = rule.approval_timeout or target.approval_timeout
                decision = AccessDecision(
                    rule.action, rule, float(timeout), fingerprint=request.fingerprint
                )
                break
        if decision.action != "approve":
            return decision
        if not decision.fingerprint:
            fp = statement_fingerprint(
                agent_id=request.agent_id,
                target_id=request.target_id,
                sql=request.sql,
                parameters=request.parameters,
            )
            decision = replace(decision, fingerprint=fp)
        if self.grants:
            grant = self.matching_statement_grant(request, time.time() if now is None else now)
            if grant is not None:
                decision = replace(decision, grant=grant)
        return decision

    def matching_statement_grant(self, request: StatementRequest, now: float) -> Grant | None:
        """The first grant active at ``now`` that covers the statement, or ``None``."""
        for grant in self.grants:
            if grant.matches_statement(request, now):
                return grant
        return None

    def evaluate_mcp_call(self, call: McpCall, now: float | None = None) -> AccessDecision:
        """Apply the access rules in order to one MCP call; the target's default action
        when none matches (:meth:`AccessRule.matches_mcp`).

        An ``approve`` outcome carries the call's fingerprint (``call.fingerprint``, else
        :func:`mcp_call_fingerprint`) and the first grant active at ``now`` (Unix epoch
        seconds, default the current time) that covers the call, if any
        (:meth:`Grant.matches_mcp`). Raises ``KeyError`` for a ``target_id`` the policy
        does not know.
        """
        target = self.targets_by_id[call.target_id]
        decision = AccessDecision(
            target.default_action,
            None,
            float(target.approval_timeout),
            fingerprint=call.fingerprint,
        )
        for rule in self.access_rules:
            if rule.matches_mcp(call):
                timeout = rule.approval_timeout or target.approval_timeout
                decision = AccessDecision(
                    rule.action, rule, float(timeout), fingerprint=call.fingerprint
                )
                break
        if decision.action != "approve":
            return decision
        if not decision.fingerprint:
            fp = mcp_call_fingerprint(
                agent_id=call.agent_id,
                target_id=call.target_id,
                method=call.method,
                name=call.name,
                arguments=call.arguments,
            )
            decision = replace(decision, fingerprint=fp)
        if self.grants:
            at = time.time() if now is None else now
            grant = next((g for g in self.grants if g.matches_mcp(call, at)), None)
            if grant is not None:
                decision = replace(decision, grant=grant)
        return decision


def _mcp_settings(t: dict[str, Any]) -> McpSettings | None:
    """The ``mcp`` block of a snapshot target (``None`` for other kinds; defaults when an
    MCP target has none: changed tools blocked, server requests refused)."""
    if (t.get("kind") or "http") != "mcp":
        return None
    m = t.get("mcp")
    if m is None:
        return McpSettings()
    if not isinstance(m, dict):
        raise ContractError(f"target {t.get('slug')}: the mcp block must be an object")
    return McpSettings(
        block_changed_tools=bool(m.get("block_changed_tools", True)),
        allow_server_requests=bool(m.get("allow_server_requests", False)),
    )


def _postgres_upstream(t: dict[str, Any]) -> PostgresUpstream | None:
    """The ``postgres`` block of a snapshot target (``None`` for HTTP targets).

    Raises :class:`ContractError` for a PostgreSQL target without the block, an
    unknown ``sslmode`` or a port out of range.
    """
    if (t.get("kind") or "http") != "postgres":
        return None
    pg = t.get("postgres")
    if not isinstance(pg, dict):
        raise ContractError(f"target {t.get('slug')}: a postgres target needs a postgres block")
    port = int(pg.get("port") or 5432)
    sslmode = str(pg.get("sslmode") or "prefer")
    if sslmode not in SSLMODES:
        raise ContractError(f"target {t.get('slug')}: unknown sslmode {sslmode!r}")
    if not 0 < port < 65536:
        raise ContractError(f"target {t.get('slug')}: port {port} out of range")
    return PostgresUpstream(
        host=str(pg["host"]),
        port=port,
        database=str(pg["database"]),
        user=str(pg["user"]),
        sslmode=sslmode,
        ca_pem=pg.get("ca_pem") or None,
        allow_plaintext=bool(pg.get("allow_plaintext")),
        password=t.get("credential"),
    )


def upstream_origin(upstream: str) -> tuple[str, str, int, str] | None:
    """``(scheme, host, port, base path)`` of a target's upstream URL, or ``None``.

    Host is lower-cased without a trailing dot; the port defaults to 80/443 by scheme;
    the base path has no trailing slash (``""`` for the root).
    """
    parts = urlsplit(upstream)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port, parts.path.rstrip("/")


#: A path (query included) ``urlsplit`` takes apart at its first ``?`` and nothing else:
#: printable ASCII without ``#``, starting with one ``/``.
_PLAIN_RELATIVE = re.compile(r"/(?!/)[!-\"$-~]*")


def request_info(
    *,
    agent_id: int,
    target_id: int,
    method: str,
    upstream_path: str,
    body: bytes,
    agent_group_ids: frozenset[int] = frozenset(),
    fingerprint: bool = True,
) -> RequestInfo:
    """Build the :class:`RequestInfo` access rules see from an upstream path with query.

    ``fingerprint=False`` leaves :attr:`RequestInfo.fingerprint` empty (no digest of the
    body): for callers that add it to the decision only when it is needed (an ``approve``
    outcome, see :func:`with_fingerprint`).
    """
    if _PLAIN_RELATIVE.fullmatch(upstream_path):
        # What ``urlsplit`` gives for it, without its general-case work: no scheme, no
        # authority (no ``//`` start), no fragment, nothing stripped.
        path, _, query = upstream_path.partition("?")
    else:
        parts = urlsplit(upstream_path)
        path, query = parts.path, parts.query
    return RequestInfo(
        agent_group_ids=agent_group_ids,
        agent_id=agent_id,
        target_id=target_id,
        method=method.upper(),
        path=unquote(path),
        query=unquote_plus(query),
        body_text=body.decode("utf-8", errors="replace") if body else "",
        fingerprint=request_fingerprint(
            agent_id=agent_id,
            target_id=target_id,
            method=method,
            upstream_path=upstream_path,
            body=body,
        )
        if fingerprint
        else "",
    )


def with_fingerprint(
    decision: AccessDecision,
    *,
    agent_id: int,
    target_id: int,
    method: str,
    upstream_path: str,
    body: bytes,
) -> AccessDecision:
    """``decision`` carrying the :func:`request_fingerprint` of the request when it is an
    ``approve`` outcome (what defer mode needs), unchanged otherwise."""
    if decision.action != "approve" or decision.fingerprint:
        return decision
    fp = request_fingerprint(
        agent_id=agent_id,
        target_id=target_id,
        method=method,
        upstream_path=upstream_path,
        body=body,
    )
    return replace(decision, fingerprint=fp)


def request_fingerprint(
    *, agent_id: int, target_id: int, method: str, upstream_path: str, body: bytes
) -> str:
    """SHA-256 hex digest identifying a request for defer mode's "identical retry".

    Covers the agent, the target, the method (case-insensitive), the upstream path and
    query exactly as sent (percent-encoding included, so ``a=b%26c`` and ``a=b&c``
    differ) and the SHA-256 of the raw body. It is taken before masking: two requests
    that mask alike (two different e-mail addresses become ``[EMAIL]``) still differ.
    """
    h = hashlib.sha256()
    for part in (str(agent_id), str(target_id), method.upper(), upstream_path):
        h.update(part.encode("utf-8", errors="surrogateescape"))
        h.update(b"\x00")
    h.update(hashlib.sha256(body or b"").digest())
    return h.hexdigest()

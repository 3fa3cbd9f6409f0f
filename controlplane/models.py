"""Policy models: targets, agents and their tokens, masking rules, access rules."""

from __future__ import annotations

import re
import secrets
import string
from urllib.parse import quote

from cryptography import x509
from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from controlplane.crypto import encrypt_field
from proxy_worker.policy import STATEMENT_KINDS, STATEMENT_SEVERITY, TOKEN_PREFIX, hash_token

ACTION_CHOICES = [("allow", "Allow"), ("deny", "Deny"), ("approve", "Require approval")]
APPROVAL_MODE_CHOICES = [
    ("wait", "Wait: hold the request until it is decided or expires"),
    ("defer", "Defer: answer at once; an identical retry passes once after approval"),
]
BINARY_BODY_CHOICES = [("refuse", "Refuse"), ("pass", "Pass unmasked")]

slug_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9-]{0,62}$",
    "lower-case letters, digits and dashes; it becomes the first path segment",
)


def validate_regex(value: str) -> None:
    """Reject a pattern Python's ``re`` cannot compile, with the compiler's message."""
    try:
        re.compile(value)
    except re.error as e:
        raise ValidationError(f"not a valid regular expression: {e}") from e


def validate_ca_pem(value: str) -> None:
    """Reject text that is not one or more PEM X.509 certificates (RFC 7468 ``CERTIFICATE``
    blocks), with the parser's message."""
    if not value.strip():
        return
    try:
        certs = x509.load_pem_x509_certificates(value.encode("utf-8"))
    except (ValueError, UnicodeEncodeError) as e:
        raise ValidationError(
            f"not a PEM certificate bundle (-----BEGIN CERTIFICATE----- blocks): {e}"
        ) from e
    if not certs:
        raise ValidationError("no certificate in the bundle")


#: What a PostgreSQL host may look like: a DNS name, an IPv4 address or a bare IPv6
#: address (a ``%zone`` suffix allowed); no scheme, port, path or user.
pg_host_validator = RegexValidator(
    r"^[A-Za-z0-9._:%-]{1,255}$", "a host name or IP address, without port or scheme"
)
#: PostgreSQL database and role names: PostgreSQL keeps at most 63 bytes of an identifier
#: (NAMEDATALEN - 1); no control characters.
pg_identifier_validator = RegexValidator(
    r"^[^\x00-\x1f\x7f]{1,63}$", "a PostgreSQL name: 1 to 63 characters, no control characters"
)

TARGET_KIND_CHOICES = [
    ("http", "HTTP API"),
    ("postgres", "PostgreSQL database"),
    ("mcp", "MCP server (streamable HTTP)"),
]
#: Target kinds reached over HTTP (the reverse route ``/<slug>/…``, forward mode): an MCP
#: server is an HTTP target whose upstream is the server's base URL (agents post to
#: ``/<slug>/mcp``).
HTTP_TARGET_KINDS = frozenset({"http", "mcp"})
#: libpq's ``sslmode`` values and meanings (PostgreSQL docs, libpq, "SSL Support");
#: the worker's list is :data:`proxy_worker.policy.SSLMODES`.
SSLMODE_CHOICES = [
    ("disable", "disable: no TLS"),
    ("prefer", "prefer: TLS when the server offers it, certificate not verified"),
    ("require", "require: always TLS, certificate not verified"),
    ("verify-ca", "verify-ca: always TLS, certificate signed by a trusted CA"),
    ("verify-full", "verify-full: always TLS, trusted CA and the host name matches"),
]


def postgres_url(host: str, port: int, database: str, user: str = "") -> str:
    """``postgresql://user@host:port/database`` (RFC 3986 percent-encoding of user and
    database, brackets around an IPv6 host), as libpq's connection URIs write it."""
    netloc = f"[{host}]" if ":" in host else host
    who = f"{quote(user, safe='')}@" if user else ""
    return f"postgresql://{who}{netloc}:{port}/{quote(database, safe='')}"


class Target(models.Model):
    """An upstream reached through the gateway: an HTTP API (``kind="http"``, at
    ``/<slug>/`` in reverse mode or by host in forward mode), an MCP server
    (``kind="mcp"``: an HTTP target whose ``upstream_url`` is the server's streamable
    HTTP endpoint; the gateway reads the JSON-RPC calls in it) or a PostgreSQL database
    (``kind="postgres"``: agents connect to the PostgreSQL listener with the slug as the
    database name).

    The credential is write-only: stored encrypted (:mod:`controlplane.crypto`),
    compiled into the snapshot encrypted for workers, and never rendered back. For HTTP
    and MCP targets it is injected as ``<auth_header>: <auth_scheme> <credential>``; for
    PostgreSQL targets it is the password of ``pg_user`` on the upstream.

    Fields of the other kinds (``upstream_url``, ``auth_header``, ``auth_scheme`` on a
    PostgreSQL target, the ``pg_*`` fields on an HTTP target, the ``mcp_*`` fields on
    anything but an MCP server) are kept but not used.
    """

    name = models.CharField(max_length=100)
    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    kind = models.CharField(
        max_length=10,
        choices=TARGET_KIND_CHOICES,
        default="http",
        help_text="An HTTP API; an MCP server (streamable HTTP: the gateway reads the "
        "tool calls in it); or a PostgreSQL database agents reach with a PostgreSQL "
        "client (the slug is the database name they connect to)",
    )
    upstream_url = models.URLField(
        blank=True,
        help_text="HTTP targets: base URL of the upstream, e.g. https://api.example.com; "
        "MCP servers: the server's base URL, e.g. https://tools.example.com (agents then "
        "post to /<slug>/mcp)",
    )
    auth_header = models.CharField(max_length=100, default="Authorization", blank=True)
    auth_scheme = models.CharField(
        max_length=30,
        default="Bearer",
        blank=True,
        help_text="Prefix before the credential, e.g. Bearer; empty for none",
    )
    pg_host = models.CharField(
        "host",
        max_length=255,
        blank=True,
        validators=[pg_host_validator],
        help_text="Host name or IP address of the PostgreSQL server",
    )
    pg_port = models.PositiveIntegerField(
        "port", default=5432, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    pg_database = models.CharField(
        "database",
        max_length=63,
        blank=True,
        validators=[pg_identifier_validator],
        help_text="Database name on the upstream server",
    )
    pg_user = models.CharField(
        "user",
        max_length=63,
        blank=True,
        validators=[pg_identifier_validator],
        help_text="Role Gatehouse logs in as upstream (give it only the privileges agents need)",
    )
    pg_sslmode = models.CharField(
        "TLS mode (sslmode)",
        max_length=11,
        choices=SSLMODE_CHOICES,
        default="prefer",
        help_text="As libpq's sslmode. verify-ca and verify-full check the server "
        "certificate against the CA bundle below, or the system trust store when it is empty",
    )
    pg_ca_pem = models.TextField(
        "CA certificates (PEM)",
        blank=True,
        validators=[validate_ca_pem],
        help_text="PEM bundle of the CA(s) that sign the server certificate (verify-ca, "
        "verify-full); empty = the system trust store",
    )
    pg_allow_plaintext = models.BooleanField(
        "accept agent tokens without TLS",
        default=False,
        help_text="Let agents log in to the gateway over a connection without TLS (their "
        "token then crosses the network in clear text); leave off outside a trusted network",
    )
    mcp_block_changed_tools = models.BooleanField(
        "block tools that change",
        default=True,
        help_text="A tool whose description or input schema changes within a session is "
        "left out of tools/list answers and its calls are refused; off: only flagged in "
        "the record",
    )
    mcp_allow_server_requests = models.BooleanField(
        "let the server send requests to the agent",
        default=False,
        help_text="Server-initiated requests (sampling/createMessage, elicitation/create, "
        "roots/list, …) reach the agent; off: the gateway refuses them for it "
        "(JSON-RPC error -32601)",
    )
    credential_encrypted = models.TextField(blank=True, editable=False)
    default_action = models.CharField(
        max_length=10,
        choices=ACTION_CHOICES,
        default="allow",
        help_text="What happens when no access rule matches",
    )
    approval_timeout = models.PositiveIntegerField(
        default=120, help_text="Seconds a held request waits for a decision"
    )
    approver_group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    binary_bodies = models.CharField(
        max_length=10,
        choices=BINARY_BODY_CHOICES,
        default="refuse",
        help_text="Bodies that cannot be scanned for personal data (images, archives, "
        "unknown encodings): refuse them (fail closed) or pass them unmasked",
    )
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Days recorded exchanges of this target are kept; empty = forever",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.kind == "postgres":
            for name, what in (
                ("pg_host", "host"),
                ("pg_database", "database"),
                ("pg_user", "user"),
            ):
                if not getattr(self, name):
                    errors[name] = f"a PostgreSQL target needs a {what}"
            if self.pg_ca_pem.strip() and self.pg_sslmode not in ("verify-ca", "verify-full"):
                errors["pg_ca_pem"] = (
                    f"a CA bundle is only used with verify-ca or verify-full (sslmode is "
                    f"{self.pg_sslmode}): choose one of them or remove the bundle"
                )
        elif not self.upstream_url:
            errors["upstream_url"] = (
                "an MCP server needs an upstream URL: its base URL, e.g. "
                "https://tools.example.com (agents then post to /<slug>/mcp)"
                if self.kind == "mcp"
                else "an HTTP target needs an upstream URL"
            )
        if errors:
            raise ValidationError(errors)

    @property
    def is_http_kind(self) -> bool:
        """Whether agents reach this target over HTTP (an HTTP API or an MCP server)."""
        return self.kind in HTTP_TARGET_KINDS

    @property
    def upstream_display(self) -> str:
        """Where the target leads: ``postgresql://user@host:port/database`` or the URL."""
        if self.kind == "postgres":
            return postgres_url(self.pg_host, self.pg_port, self.pg_database, self.pg_user)
        return self.upstream_url

    def set_credential(self, plaintext: str) -> None:
        """Store ``plaintext`` encrypted (empty string clears it). Call ``save()`` after."""
        self.credential_encrypted = encrypt_field(plaintext) if plaintext else ""

    @property
    def has_credential(self) -> bool:
        return bool(self.credential_encrypted)


class AgentGroup(models.Model):
    """A named set of agents; access and masking rules can name groups instead of agents.

    Agents presenting an OpenID Connect JWT can also be placed in groups by a claim
    (see ``Agent.oidc_subject``).
    """

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    """A non-human identity (an AI agent, script or CI job) with tokens and an owner."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    groups = models.ManyToManyField(AgentGroup, blank=True, related_name="agents")
    oidc_subject = models.CharField(
        max_length=255,
        blank=True,
        help_text="The 'sub' claim (client id) of this agent's OpenID Connect JWTs; "
        "empty = token authentication only",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agents",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["oidc_subject"],
                condition=~models.Q(oidc_subject=""),
                name="agent_unique_oidc_subject",
            )
        ]

    def __str__(self) -> str:
        return self.name


_TOKEN_ALPHABET = string.ascii_letters + string.digits


class AgentTokenQuerySet(models.QuerySet["AgentToken"]):
    def usable(self) -> AgentTokenQuerySet:
        """Tokens that are neither revoked nor expired, of active agents."""
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, agent__is_active=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class AgentToken(models.Model):
    """A bearer token of an agent: ``gh_<prefix>_<secret>``, stored as a SHA-256 digest.

    The plaintext exists only in the return value of :meth:`issue`: it is shown once.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tokens")
    prefix = models.CharField(max_length=8, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = AgentTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}{self.prefix}_…"

    @classmethod
    def issue(cls, agent: Agent, *, expires_at=None) -> tuple[AgentToken, str]:
        """Create a token for ``agent``; returns ``(row, plaintext)``. 190 bits of entropy."""
        prefix = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(8))
        secret = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(32))
        plaintext = f"{TOKEN_PREFIX}{prefix}_{secret}"
        row = cls.objects.create(
            agent=agent, prefix=prefix, token_hash=hash_token(plaintext), expires_at=expires_at
        )
        return row, plaintext


ENTITY_TYPE_CHOICES = [
    ("EMAIL", "E-mail address"),
    ("PHONE", "Phone number"),
    ("CREDIT_CARD", "Payment card number"),
    ("US_SSN", "US Social Security number"),
    ("IBAN", "IBAN"),
    ("IP_ADDRESS", "IP address"),
]
STRATEGY_CHOICES = [
    ("redact", "Redact to a typed placeholder, e.g. [EMAIL]"),
    ("hash", "Keyed hash, e.g. [EMAIL:3f9a1c2b] (equal values stay joinable)"),
    ("partial", "Partial, e.g. ****1234"),
    ("drop", "Drop the JSON field (field-name rules)"),
]
DIRECTION_CHOICES = [("request", "Requests"), ("response", "Responses"), ("both", "Both")]


class MaskingRule(models.Model):
    """Which personal data to mask, how, in which direction, on which targets."""

    name = models.CharField(max_length=100, unique=True)
    entity_types = ArrayField(
        models.CharField(max_length=40),
        blank=True,
        default=list,
        help_text="Detector names, comma-separated, e.g. EMAIL, PHONE, CREDIT_CARD "
        "(every name the masking engine knows is listed on the rule preview page)",
    )
    field_names = ArrayField(
        models.CharField(max_length=100),
        blank=True,
        default=list,
        help_text="JSON/form field names masked whole (case-insensitive)",
    )
    json_paths = ArrayField(
        models.CharField(max_length=300),
        blank=True,
        default=list,
        help_text="JSONPath expressions masked whole, e.g. $.customers[*].address",
    )
    deny_list = ArrayField(
        models.CharField(max_length=200),
        blank=True,
        default=list,
        help_text="Words or phrases always masked (a dictionary detector), case-insensitive",
    )
    custom_pattern = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_regex],
        help_text="Optional extra regular expression",
    )
    strategy = models.CharField(max_length=10, choices=STRATEGY_CHOICES, default="redact")
    direction = models.CharField(max_length=10, choices=DIRECTION_CHOICES, default="both")
    targets = models.ManyToManyField(
        Target, blank=True, related_name="masking_rules", help_text="None selected = every target"
    )
    agent_groups = models.ManyToManyField(
        AgentGroup,
        blank=True,
        related_name="masking_rules",
        help_text="None selected = every agent",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from proxy_worker.masking import ENTITY_TYPES

        known = set(ENTITY_TYPES)
        unknown = [t for t in self.entity_types if t not in known]
        if unknown:
            raise ValidationError({"entity_types": f"unknown entity types: {', '.join(unknown)}"})
        if not (
            self.entity_types
            or self.field_names
            or self.json_paths
            or self.deny_list
            or self.custom_pattern
        ):
            raise ValidationError(
                "a masking rule needs entity types, field names, JSON paths, "
                "a deny list or a pattern"
            )


class AccessRule(models.Model):
    """An ordered rule: the first active rule matching a request decides it.

    Conditions are HTTP-only (``methods``, ``path_pattern`` other than ``*``,
    ``query_pattern``: HTTP targets), SQL-only
    (``statement_kinds``, ``tables``, ``functions``, ``without_where``, ``without_limit``,
    ``parameter_pattern``: PostgreSQL targets) or MCP-only (``mcp_methods``,
    ``tool_names``, ``argument_path``, ``argument_pattern``: the JSON-RPC calls sent to an
    MCP server), never two of these; ``body_pattern`` applies to all (the request body,
    the SQL text, or the JSON-RPC message). A rule with none of them matches every kind.
    The worker's matching is :class:`proxy_worker.policy.AccessRule`.
    """

    name = models.CharField(max_length=100, unique=True)
    position = models.PositiveIntegerField(default=100, help_text="Lower runs first")
    target = models.ForeignKey(
        Target,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="access_rules",
        help_text="Empty = every target",
    )
    agents = models.ManyToManyField(
        Agent, blank=True, related_name="access_rules", help_text="None selected = every agent"
    )
    agent_groups = models.ManyToManyField(
        AgentGroup,
        blank=True,
        related_name="access_rules",
        help_text="Agents of these groups also match; none selected (and no agents) = every agent",
    )
    methods = ArrayField(
        models.CharField(max_length=10),
        blank=True,
        default=list,
        help_text="HTTP methods, comma-separated; empty = any",
    )
    path_pattern = models.CharField(
        max_length=500, default="*", help_text="Glob over the upstream path, e.g. /customers/*"
    )
    query_pattern = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_regex],
        help_text="Regex searched in the decoded query string",
    )
    body_pattern = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_regex],
        help_text="Regex searched in the request body (HTTP), the SQL text (PostgreSQL) or "
        "the JSON-RPC message (MCP)",
    )
    statement_kinds = ArrayField(
        models.CharField(max_length=12),
        blank=True,
        default=list,
        help_text="SQL: statements with any of these effects anywhere in them (a DELETE in "
        "a WITH clause counts); none = any",
    )
    tables = ArrayField(
        models.CharField(max_length=200),
        blank=True,
        default=list,
        help_text="SQL: globs over the relations touched, comma-separated, e.g. "
        "public.customers, secret_*, pg_catalog.pg_*; a glob without a dot matches the "
        "table name in any schema; empty = any",
    )
    functions = ArrayField(
        models.CharField(max_length=200),
        blank=True,
        default=list,
        help_text="SQL: globs over the functions called, e.g. pg_read_file, dblink*; empty = any",
    )
    without_where = models.BooleanField(
        "only writes without WHERE",
        default=False,
        help_text="SQL: only UPDATE or DELETE without a WHERE clause, and TRUNCATE",
    )
    without_limit = models.BooleanField(
        "only queries without LIMIT",
        default=False,
        help_text="SQL: only queries whose result has no LIMIT or FETCH FIRST",
    )
    parameter_pattern = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_regex],
        help_text="SQL: regex searched in each bound parameter value (as text)",
    )
    mcp_methods = ArrayField(
        models.CharField(max_length=64),
        blank=True,
        default=list,
        help_text="MCP: JSON-RPC methods, e.g. tools/call, resources/read, prompts/get; "
        "empty = any",
    )
    tool_names = ArrayField(
        models.CharField(max_length=300),
        blank=True,
        default=list,
        help_text="MCP: globs over the tool name (tools/call), the resource URI "
        "(resources/read) or the prompt name (prompts/get), case-sensitive, e.g. "
        "delete_*, file:///etc/*; empty = any",
    )
    argument_path = models.CharField(
        max_length=300,
        blank=True,
        help_text="MCP: JSONPath over the call's arguments, e.g. $.customer.email; the rule "
        "matches when it finds a value (that the argument pattern matches, if one is set)",
    )
    argument_pattern = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_regex],
        help_text="MCP: regex searched in the values the argument path finds (other JSON "
        "values as compact JSON); without a path, in every string of the arguments",
    )
    action = models.CharField(max_length=10, choices=ACTION_CHOICES)
    approval_timeout = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds to wait for approval; empty = target's"
    )
    approver_group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who may approve; empty = the target's, else the 'approver' group",
    )
    approval_mode = models.CharField(max_length=10, choices=APPROVAL_MODE_CHOICES, default="wait")
    required_approvals = models.PositiveSmallIntegerField(
        default=1, help_text="Distinct approvers needed; one deny ends the request"
    )
    retry_window = models.PositiveIntegerField(
        default=600,
        help_text="Defer mode: seconds after approval in which one identical retry passes",
    )
    notify_webhook_url = models.URLField(
        blank=True, help_text="JSON webhook called for each new approval request"
    )
    notify_slack_url = models.URLField(
        blank=True, help_text="Slack-compatible incoming webhook for new approval requests"
    )
    notify_email = models.BooleanField(
        default=False, help_text="E-mail the approver group's members on new requests"
    )
    reason = models.CharField(
        max_length=300, blank=True, help_text="Shown to approvers and in deny answers"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def http_conditions(self) -> list[str]:
        """Names of the HTTP-only conditions this rule sets."""
        set_ = {
            "methods": bool(self.methods),
            "path_pattern": self.path_pattern not in ("", "*"),
            "query_pattern": bool(self.query_pattern),
        }
        return [name for name in HTTP_RULE_FIELDS if set_[name]]

    @property
    def sql_conditions(self) -> list[str]:
        """Names of the SQL conditions this rule sets."""
        return [name for name in SQL_RULE_FIELDS if getattr(self, name)]

    @property
    def mcp_conditions(self) -> list[str]:
        """Names of the MCP conditions this rule sets."""
        return [name for name in MCP_RULE_FIELDS if getattr(self, name)]

    @property
    def mcp_summary(self) -> str:
        """The MCP conditions in one line for lists (``""`` for none)."""
        parts = []
        if self.mcp_methods:
            parts.append(", ".join(self.mcp_methods))
        if self.tool_names:
            parts.append("tools " + ", ".join(self.tool_names))
        if self.argument_path and self.argument_pattern:
            parts.append(f"arguments {self.argument_path} ~ /{self.argument_pattern}/")
        elif self.argument_path:
            parts.append(f"arguments {self.argument_path}")
        elif self.argument_pattern:
            parts.append(f"arguments /{self.argument_pattern}/")
        return " · ".join(parts)

    @property
    def sql_summary(self) -> str:
        """The SQL conditions in one line for lists (``""`` for none)."""
        parts = []
        if self.statement_kinds:
            parts.append(", ".join(self.statement_kinds))
        if self.tables:
            parts.append("tables " + ", ".join(self.tables))
        if self.functions:
            parts.append("functions " + ", ".join(self.functions))
        if self.without_where:
            parts.append("without WHERE")
        if self.without_limit:
            parts.append("without LIMIT")
        if self.parameter_pattern:
            parts.append(f"parameters /{self.parameter_pattern}/")
        return " · ".join(parts)

    def clean(self) -> None:
        self.methods = [m.upper().strip() for m in self.methods if m.strip()]
        self.statement_kinds = list(
            dict.fromkeys(k.upper().strip() for k in self.statement_kinds if k.strip())
        )
        self.tables = [g.strip().lower() for g in self.tables if g.strip()]
        self.functions = [g.strip().lower() for g in self.functions if g.strip()]
        # JSON-RPC methods and tool names are case-sensitive: kept as written.
        self.mcp_methods = list(dict.fromkeys(m.strip() for m in self.mcp_methods if m.strip()))
        self.tool_names = list(dict.fromkeys(g.strip() for g in self.tool_names if g.strip()))
        self.argument_path = (self.argument_path or "").strip()
        errors: dict[str, list[str]] = {}
        unknown = [k for k in self.statement_kinds if k not in STATEMENT_KINDS]
        if unknown:
            errors.setdefault("statement_kinds", []).append(
                f"unknown statement kinds: {', '.join(unknown)} "
                f"(known: {', '.join(STATEMENT_SEVERITY)})"
            )
        for name in ("tables", "functions"):
            bad = [g for g in getattr(self, name) if not _NAME_GLOB.fullmatch(g)]
            if bad:
                errors.setdefault(name, []).append(
                    f"not a name glob: {', '.join(bad)} (letters, digits, _ $ . * ? [ ] "
                    "and -, no spaces or quotes)"
                )
        bad = [m for m in self.mcp_methods if not MCP_METHOD_SHAPE.fullmatch(m)]
        if bad:
            errors.setdefault("mcp_methods", []).append(
                f"not a JSON-RPC method name: {', '.join(bad)} (e.g. "
                f"{', '.join(MCP_METHODS[:4])}: lower-case first, parts separated by /)"
            )
        bad = [g for g in self.tool_names if not _TOOL_GLOB.fullmatch(g)]
        if bad:
            errors.setdefault("tool_names", []).append(
                f"not a tool name or URI glob: {', '.join(bad)} (no spaces, commas or "
                "control characters)"
            )
        if self.argument_path:
            from proxy_worker.masking import MaskingConfigError, compile_json_path

            try:
                compile_json_path(self.argument_path)
            except MaskingConfigError as e:
                errors.setdefault("argument_path", []).append(
                    f"not a JSONPath expression (e.g. $.customer.email, $.items[*].id): {e}"
                )
        self._check_condition_kinds(errors)
        if errors:
            raise ValidationError(errors)

    def _check_condition_kinds(self, errors: dict[str, list[str]]) -> None:
        """HTTP, SQL and MCP conditions apply to different requests: each only on rules
        whose target is of its kind (or every target), and never two kinds together."""
        http, sql, mcp = self.http_conditions, self.sql_conditions, self.mcp_conditions
        target = self.target  # None for "every target"; import assigns an unsaved one
        kind = target.kind if target is not None else None

        def add(names: list[str], message: str) -> None:
            for name in names:
                errors.setdefault(name, []).append(message)

        def labels(names: list[str]) -> str:
            return ", ".join(_RULE_FIELD_LABELS[n] for n in names)

        if target is not None and kind == "postgres":
            add(
                http,
                f"an HTTP condition, but target {target.slug!r} is a PostgreSQL database: "
                "use statement kinds, tables or functions",
            )
            add(
                mcp,
                f"an MCP condition, but target {target.slug!r} is a PostgreSQL database: "
                "use statement kinds, tables or functions",
            )
        elif target is not None and kind == "mcp":
            # The gateway lets every HTTP request to an MCP endpoint through and decides
            # each JSON-RPC call in it: an HTTP condition there would never match.
            add(
                http,
                f"an HTTP condition, but target {target.slug!r} is an MCP server: its calls "
                "are decided by MCP conditions (MCP methods, tool names, arguments)",
            )
            add(sql, f"an SQL condition, but target {target.slug!r} is an MCP server")
        elif target is not None:
            add(sql, f"an SQL condition, but target {target.slug!r} is an HTTP API")
            add(
                mcp,
                f"an MCP condition, but target {target.slug!r} is an HTTP API, not an MCP "
                "server: make the target's kind MCP server, or use HTTP conditions",
            )
        if target is None and http and sql:
            add(
                sql,
                f"SQL conditions cannot be combined with HTTP conditions ({labels(http)}): "
                "a request is one or the other; make two rules",
            )
        if mcp and http and target is None:
            add(
                mcp,
                f"MCP conditions cannot be combined with HTTP conditions ({labels(http)}): "
                "an MCP call is not an HTTP request; make two rules",
            )
        if mcp and sql and target is None:
            add(
                mcp,
                f"MCP conditions cannot be combined with SQL conditions ({labels(sql)}): "
                "a call is one or the other; make two rules",
            )


#: AccessRule conditions that only HTTP requests have, those only SQL statements have, and
#: those only MCP calls have.
HTTP_RULE_FIELDS = ("methods", "path_pattern", "query_pattern")
SQL_RULE_FIELDS = (
    "statement_kinds",
    "tables",
    "functions",
    "without_where",
    "without_limit",
    "parameter_pattern",
)
MCP_RULE_FIELDS = ("mcp_methods", "tool_names", "argument_path", "argument_pattern")
_RULE_FIELD_LABELS = {
    "methods": "methods",
    "path_pattern": "path pattern",
    "query_pattern": "query pattern",
    "statement_kinds": "statement kinds",
    "tables": "tables",
    "functions": "functions",
    "without_where": "without WHERE",
    "without_limit": "without LIMIT",
    "parameter_pattern": "parameter pattern",
}
#: The JSON-RPC methods an MCP client sends (MCP 2025-06-18), the calls rules usually name
#: first. Rules accept any method of this shape (:data:`MCP_METHOD_SHAPE`), so methods of
#: later protocol versions can be named too.
MCP_METHODS = (
    "tools/call",
    "resources/read",
    "prompts/get",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "completion/complete",
    "logging/setLevel",
    "initialize",
    "ping",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
)
#: A JSON-RPC method name as MCP writes them: ``initialize``, ``tools/call``,
#: ``logging/setLevel``, ``notifications/roots/list_changed``.
MCP_METHOD_SHAPE = re.compile(r"[a-z][a-zA-Z_]*(?:/[a-zA-Z_]+)*")
#: A tool name, resource URI or prompt name glob: anything without white space, commas
#: (they separate globs in the console) or control characters.
_TOOL_GLOB = re.compile(r"[^\s,\x00-\x1f\x7f]{1,300}")
#: A table or function name glob: identifier characters, dots and fnmatch wildcards.
_NAME_GLOB = re.compile(r"[\w$.*?\[\]!-]+")

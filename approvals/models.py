"""Approval requests (held or deferred by a worker), the decisions humans make on them,
and the time-boxed grants an approval can leave behind."""

from __future__ import annotations

import glob
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from audit.models import METHOD_MAX_LENGTH
from controlplane.models import AccessRule, Agent, Target


class ApprovalRequest(models.Model):
    """A request that an access rule sent for approval.

    The primary key is the approval id the worker generated. Everything stored here was
    masked by the worker before it left the data path; credentials are not in ``headers``.
    ``abandoned``: a wait-mode request whose worker stopped holding it (died, restarted)
    before a decision; see ``approvals.tasks.abandon_orphaned_requests``.

    ``protocol`` is ``http`` or ``postgres``: one SQL statement, ``method`` holding its
    worst statement kind, ``body`` the formatted masked SQL and ``details`` its facts
    (``statement_kind``, ``statement_kinds``, ``tables``, ``functions``, masked
    ``parameters``, ``sql_fingerprint``; see
    :class:`proxy_worker.contract.ApprovalRequestMessage`); or ``mcp``: one JSON-RPC call
    to an MCP server (``method`` ``tools/call``, ``resources/read``, …; ``body`` the masked
    JSON-RPC request; ``details`` ``jsonrpc_method``, ``tool`` (tool name, resource URI or
    prompt name) and the masked ``arguments``); ``details`` is ``{}`` for HTTP.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        EXPIRED = "expired"
        ABANDONED = "abandoned"

    class Mode(models.TextChoices):
        WAIT = "wait"
        DEFER = "defer"

    id = models.UUIDField(primary_key=True)
    agent = models.ForeignKey(Agent, null=True, on_delete=models.SET_NULL, related_name="+")
    target = models.ForeignKey(Target, null=True, on_delete=models.SET_NULL, related_name="+")
    rule = models.ForeignKey(AccessRule, null=True, on_delete=models.SET_NULL, related_name="+")
    worker_id = models.CharField(max_length=200)
    protocol = models.CharField(
        max_length=16,
        choices=[("http", "HTTP"), ("postgres", "PostgreSQL"), ("mcp", "MCP")],
        default="http",
    )
    method = models.CharField(max_length=METHOD_MAX_LENGTH)
    url = models.TextField()
    headers = models.JSONField(default=dict)
    body = models.TextField(blank=True)
    body_truncated = models.BooleanField(default=False)
    details = models.JSONField(default=dict, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    required_approvals = models.PositiveSmallIntegerField(default=1)
    mode = models.CharField(max_length=5, choices=Mode.choices, default=Mode.WAIT)
    #: Defer mode: seconds after the approval in which the one identical retry may pass.
    retry_window = models.PositiveIntegerField(default=0)
    requested_at = models.DateTimeField()
    deadline = models.DateTimeField(db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"{self.method} {self.url} ({self.status})"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING and self.deadline > timezone.now()

    @property
    def seconds_left(self) -> int:
        return max(0, int((self.deadline - timezone.now()).total_seconds()))

    @property
    def upstream_path(self) -> str:
        """The percent-decoded upstream path (what access rules and grants match)."""
        return unquote(urlsplit(self.url).path) or "/"

    @property
    def exact_path_pattern(self) -> str:
        """A grant path pattern matching exactly this request's path (glob-escaped)."""
        return glob.escape(self.upstream_path)

    @property
    def is_sql(self) -> bool:
        """Whether this request is one PostgreSQL statement."""
        return self.protocol == "postgres"

    @property
    def is_mcp(self) -> bool:
        """Whether this request is one JSON-RPC call to an MCP server."""
        return self.protocol == "mcp"

    @property
    def mcp_method(self) -> str:
        """The JSON-RPC method of an MCP call (``details.jsonrpc_method``, else ``method``)."""
        value = (self.details or {}).get("jsonrpc_method")
        return str(value) if value else self.method

    @property
    def tool(self) -> str:
        """The MCP tool name (resource URI, prompt name) the call names; ``""`` if none."""
        value = (self.details or {}).get("tool")
        return "" if value is None else str(value)

    @property
    def arguments_text(self) -> str:
        """The call's masked arguments as indented JSON (``""`` when none were recorded)."""
        from audit.mcp import pretty

        value = (self.details or {}).get("arguments")
        return "" if value is None else pretty(value)

    @property
    def arguments_preview(self) -> str:
        """The call's masked arguments as one line of JSON, cut for queue rows."""
        from audit.mcp import arguments_preview

        return arguments_preview(self.details, 200)

    @property
    def exact_tool_pattern(self) -> str:
        """A grant pattern matching exactly this call's tool (glob-escaped)."""
        return glob.escape(self.tool)

    def _detail_list(self, key: str) -> list[str]:
        value: Any = (self.details or {}).get(key)
        return [str(v) for v in value] if isinstance(value, list) else []

    @property
    def statement_kind(self) -> str:
        """The statement's worst kind (``details.statement_kind``, else ``method``)."""
        kind = (self.details or {}).get("statement_kind")
        return str(kind) if kind else self.method.upper()

    @property
    def statement_kinds(self) -> list[str]:
        """Every effect kind found in the statement (at least :attr:`statement_kind`)."""
        return self._detail_list("statement_kinds") or [self.statement_kind]

    @property
    def tables(self) -> list[str]:
        """Relations the statement touches (``schema.name`` or ``name``, lower case)."""
        return self._detail_list("tables")

    @property
    def functions(self) -> list[str]:
        """Functions the statement calls."""
        return self._detail_list("functions")

    @property
    def parameters(self) -> list[str | None]:
        """Bound parameter values as masked text (``None`` = NULL), extended protocol."""
        value: Any = (self.details or {}).get("parameters")
        if not isinstance(value, list):
            return []
        return [None if v is None else str(v) for v in value]

    @property
    def exact_tables(self) -> list[str]:
        """Grant table globs matching exactly this statement's relations (glob-escaped)."""
        return [glob.escape(t) for t in self.tables]

    @property
    def sql_first_line(self) -> str:
        """The first non-empty line of the (formatted, masked) SQL, for queue rows."""
        return next((line.strip() for line in (self.body or "").splitlines() if line.strip()), "")


class Decision(models.Model):
    """One person's verdict on an approval request, with who, when and why."""

    class Verdict(models.TextChoices):
        APPROVE = "approve"
        DENY = "deny"

    approval_request = models.ForeignKey(
        ApprovalRequest, on_delete=models.CASCADE, related_name="decisions"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approval_decisions"
    )
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    comment = models.TextField(blank=True)
    #: "Approve with grant": how long the grant should last and what it should cover.
    grant_minutes = models.PositiveIntegerField(null=True, blank=True)
    grant_path_pattern = models.CharField(max_length=500, blank=True)
    #: SQL requests: the table globs the grant should cover (empty = the statement's).
    grant_tables = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["approval_request", "user"], name="one_decision_per_user"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.verdict}"


class GrantQuerySet(models.QuerySet["Grant"]):
    def active(self) -> GrantQuerySet:
        """Grants neither revoked nor past their expiry."""
        return self.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())


class Grant(models.Model):
    """A time-boxed approval: ``agent`` may send ``method`` requests whose upstream path
    matches ``path_pattern`` (a glob, as access rules) to ``target`` until ``expires_at``
    without asking again. Compiled into the policy snapshot while active; a new snapshot
    is published whenever a grant is created, revoked or deleted.

    For SQL statements (PostgreSQL targets) ``method`` is a statement kind (``DELETE``;
    empty = any kind), ``path_pattern`` is ``*`` and ``tables`` lists name globs
    (``public.orders``, ``order_*``; empty = any relation): the grant covers a statement
    of that kind every relation of which matches one of them. HTTP grants leave
    ``tables`` empty; workers ignore it for HTTP requests.

    For MCP calls (MCP server targets) ``method`` is the JSON-RPC method
    (``tools/call``) and ``path_pattern`` a glob over the tool name (resource URI,
    prompt name), case-sensitive.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="+")
    method = models.CharField(
        max_length=METHOD_MAX_LENGTH,
        blank=True,
        help_text="Empty = any method; a statement kind for SQL grants, a JSON-RPC method "
        "for MCP grants",
    )
    path_pattern = models.CharField(max_length=500)
    tables = ArrayField(
        models.CharField(max_length=200),
        default=list,
        blank=True,
        help_text="SQL grants: relation name globs; empty = any relation",
    )
    approval_request = models.ForeignKey(
        ApprovalRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="grants"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    objects = GrantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        if self.tables:
            return f"{self.agent} {self.method or '*'} {self.target} {','.join(self.tables)}"
        return f"{self.agent} {self.method or '*'} {self.target}{self.path_pattern}"

    @property
    def is_sql(self) -> bool:
        """A grant for SQL statements: it names tables, or its target is a PostgreSQL one
        (``Target.kind``; read defensively, the field is newer than this model)."""
        return bool(self.tables) or getattr(self.target, "kind", "http") == "postgres"

    @property
    def is_mcp(self) -> bool:
        """A grant for MCP calls: its target is an MCP server (``method`` is a JSON-RPC
        method, ``path_pattern`` a tool-name glob)."""
        return getattr(self.target, "kind", "http") == "mcp"

    @property
    def status(self) -> str:
        """``revoked``, ``expired`` or ``active`` (by the current time)."""
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "active"

    @property
    def seconds_left(self) -> int:
        return max(0, int((self.expires_at - timezone.now()).total_seconds()))

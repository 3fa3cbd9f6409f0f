"""Recorded sessions and exchanges (masked), the audit hash chain, and export jobs.

Exchanges arrive already masked from the workers' stream (see :mod:`audit.ingest`).
Every exchange and every control-plane change is appended to the hash chain
(:class:`ChainRecord`, see :mod:`audit.chain` for the record format and how it is
verified); retention purges delete exchange rows but never chain records.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models.expressions import RawSQL

from controlplane.models import AccessRule, Agent, Target

#: Characters of each body (and of the URL) that full-text search indexes. A tsvector
#: is limited to 1 MB (PostgreSQL "Text Search Types"): bounding the input keeps a large
#: recorded body from failing the ingest transaction.
SEARCH_TEXT_LIMIT = 100_000


#: Separators PostgreSQL's default text-search parser keeps inside one token: it reads
#: ``/customers/orders.json`` as a single ``url_path`` lexeme (and skips ``<…>`` as an
#: HTML tag), so a word of a URL would not be found. In the URL they are translated to
#: spaces before parsing; bodies are parsed as they are (``translate`` over whole bodies
#: cost more than the rest of the ingest together), so a path or an address inside a
#: body is one lexeme there, which :func:`audit.forms.search_query` also searches for.
SEARCH_SEPARATORS = "/.-_:@?=&+#~<>"


def _text_sql(column: str) -> str:
    return f"left(coalesce({column}, ''), {SEARCH_TEXT_LIMIT})"


#: The stored generated ``search_vector`` column: ``simple`` configuration (no stemming,
#: no stop words: placeholders, identifiers and any language are matched as written)
#: over the URL (split at :data:`SEARCH_SEPARATORS`) and both bodies. Every function
#: used is immutable, as a generated column requires.
SEARCH_DOCUMENT_SQL = (
    "to_tsvector('simple'::regconfig, "
    f"translate({_text_sql('url')}, '{SEARCH_SEPARATORS}', '{' ' * len(SEARCH_SEPARATORS)}')"
    f" || ' ' || {_text_sql('request_body')} || ' ' || {_text_sql('response_body')})"
)

#: ``Exchange.protocol``: what was recorded (:mod:`proxy_worker.contract`, ``protocol``).
PROTOCOL_CHOICES = [("http", "HTTP"), ("postgres", "PostgreSQL"), ("mcp", "MCP")]
#: Characters of ``Exchange.method`` (and of approval requests' and grants'): HTTP
#: methods, SQL statement kinds and JSON-RPC method names
#: (``notifications/roots/list_changed``).
METHOD_MAX_LENGTH = 64

DECISION_CHOICES = [
    ("allowed", "Allowed"),
    ("denied", "Denied"),
    ("approved", "Approved"),
    ("approval_denied", "Approval denied"),
    ("expired", "Approval expired"),
    ("error", "Error"),
]


class Session(models.Model):
    """Consecutive exchanges of one agent with one target.

    Grouped by the agent's ``X-Gatehouse-Session`` header when it sends one (``key``),
    otherwise by an idle gap (``GATEHOUSE_SESSION_IDLE_SECONDS``, default 300 s).
    A session under legal hold (``legal_hold_at`` set) is never purged by retention.
    """

    agent = models.ForeignKey(Agent, null=True, on_delete=models.SET_NULL, related_name="+")
    target = models.ForeignKey(Target, null=True, on_delete=models.SET_NULL, related_name="+")
    key = models.CharField(max_length=200, blank=True, help_text="Agent-supplied session id")
    started_at = models.DateTimeField(db_index=True)
    last_activity_at = models.DateTimeField()
    exchange_count = models.PositiveIntegerField(default=0)
    legal_hold_at = models.DateTimeField(null=True, blank=True)
    legal_hold_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    legal_hold_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-last_activity_at"]
        indexes = [models.Index(fields=["agent", "target", "key", "-last_activity_at"])]

    def __str__(self) -> str:
        return f"session {self.pk}"

    @property
    def on_legal_hold(self) -> bool:
        return self.legal_hold_at is not None


class Exchange(models.Model):
    """One request and its answer as the worker recorded it: masked, no credentials.

    ``protocol`` is ``http``, ``postgres`` (one SQL statement: ``method`` holds its
    statement kind, ``request_body`` the masked SQL, ``response_body`` a psql-style
    rendering of the sampled rows) or ``mcp`` (one JSON-RPC request or notification
    sent to an MCP server, or a server-initiated request the gateway refused: ``method``
    holds the JSON-RPC method, ``request_body`` and ``response_body`` the masked JSON-RPC
    messages); ``details`` holds the protocol's structured facts (for ``postgres``:
    kinds, tables, parameters, columns, sampled rows, command tag, error; for ``mcp``:
    tool, masked arguments and result, error, drift and hidden tools; shapes in
    :class:`proxy_worker.contract.ExchangeMessage`), ``{}`` for HTTP.
    ``finding_types`` is the sorted set of entity types the masking engine reported in
    either direction (derived at ingest, for the entity-type filter); ``search_vector``
    is a stored generated column (:data:`SEARCH_DOCUMENT_SQL`) with a GIN index.
    """

    id = models.UUIDField(primary_key=True, help_text="The worker's exchange id")
    session = models.ForeignKey(
        Session, null=True, on_delete=models.SET_NULL, related_name="exchanges", db_index=False
    )
    # The (session, started_at), (agent, -started_at) and (target, -started_at)
    # indexes below serve these foreign keys too.
    # Recorded evidence never changes: deleting an agent, target or rule later must not
    # rewrite these ids (SET_NULL would, and break the hash chain), so they are kept as
    # recorded, without a database constraint. A deleted object reads as missing
    # (``DoesNotExist``; ``None`` through ``select_related``); the chain's change records
    # say what it was.
    agent = models.ForeignKey(
        Agent,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        db_index=False,
    )
    target = models.ForeignKey(
        Target,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        db_index=False,
    )
    rule = models.ForeignKey(
        AccessRule,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    approval_id = models.UUIDField(null=True, blank=True, db_index=True)
    worker_id = models.CharField(max_length=200)
    client_address = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(db_index=True)
    protocol = models.CharField(max_length=16, choices=PROTOCOL_CHOICES, default="http")
    method = models.CharField(max_length=METHOD_MAX_LENGTH)
    url = models.TextField()
    request_headers = models.JSONField(default=dict)
    request_body = models.TextField(blank=True)
    status_code = models.PositiveSmallIntegerField()
    response_headers = models.JSONField(default=dict)
    response_body = models.TextField(blank=True)
    decision = models.CharField(max_length=20, choices=DECISION_CHOICES, db_index=True)
    error = models.CharField(max_length=300, blank=True)
    request_findings = models.JSONField(default=list)
    response_findings = models.JSONField(default=list)
    finding_types = ArrayField(models.CharField(max_length=40), default=list, blank=True)
    timings = models.JSONField(default=dict)
    body_truncated = models.BooleanField(default=False)
    details = models.JSONField(default=dict, blank=True)
    stream_entry_id = models.CharField(max_length=40, blank=True)
    ingested_at = models.DateTimeField(auto_now_add=True)
    search_vector = models.GeneratedField(
        expression=RawSQL(SEARCH_DOCUMENT_SQL, ()),  # noqa: S611 (a constant, no input)
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["started_at"]
        indexes = [
            GinIndex(fields=["search_vector"], name="audit_exchange_search"),
            GinIndex(fields=["finding_types"], name="audit_exchange_types"),
            models.Index(fields=["target", "-started_at"], name="audit_exch_target_time"),
            models.Index(fields=["agent", "-started_at"], name="audit_exch_agent_time"),
            models.Index(fields=["session", "started_at"], name="audit_exch_session_time"),
            models.Index(fields=["protocol", "-started_at"], name="audit_exch_protocol_time"),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.url} -> {self.status_code}"

    @property
    def is_sql(self) -> bool:
        """Whether this exchange is one PostgreSQL statement."""
        return self.protocol == "postgres"

    @property
    def is_mcp(self) -> bool:
        """Whether this exchange is one JSON-RPC message of an MCP session."""
        return self.protocol == "mcp"


class IngestError(models.Model):
    """A stream entry ingest could not read: kept (already masked) instead of dropped."""

    stream = models.CharField(max_length=100)
    entry_id = models.CharField(max_length=40)
    error = models.TextField()
    raw = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream", "entry_id"], name="one_error_per_entry")
        ]

    def __str__(self) -> str:
        return f"{self.stream} {self.entry_id}"


CHAIN_KIND_CHOICES = [
    ("exchange", "Exchange recorded"),
    ("change", "Control-plane change"),
    ("purge", "Retention purge"),
    ("hold", "Legal hold placed or lifted"),
    ("anchor", "Signed anchor"),
]


class ChainHead(models.Model):
    """The single row (``pk=1``) holding the newest chain record's ``seq`` and ``hash``.

    Appenders lock it (``SELECT … FOR UPDATE``) for the length of their transaction,
    which serialises every append; ``seq=0`` with the genesis hash means "empty".
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"chain head {self.seq}"


class ChainRecord(models.Model):
    """One link of the tamper-evident chain (format and hashing: :mod:`audit.chain`).

    ``hash`` = SHA-256 over the RFC 8785 canonical JSON of ``seq``, ``kind``, ``at``,
    ``payload`` and ``prev_hash``. ``exchange_id`` repeats ``payload["exchange_id"]``
    of exchange records (not a foreign key: the record outlives a purged exchange).
    """

    seq = models.BigIntegerField(primary_key=True)
    kind = models.CharField(max_length=10, choices=CHAIN_KIND_CHOICES)
    at = models.DateTimeField()
    exchange_id = models.UUIDField(null=True, blank=True, unique=True)
    payload = models.JSONField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["kind", "seq"], name="audit_chain_kind_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind}"


class AuditJob(models.Model):
    """A background job of an auditor: an evidence export or a chain verification.

    ``params`` holds the export's scope (``{"session": id}`` or the search form's
    cleaned query string); ``progress``/``total`` count exchanges (or chain records).
    ``file_name`` is relative to ``GATEHOUSE_EXPORT_DIR``; ``result`` holds the
    verification outcome or the export's record count.
    """

    class Kind(models.TextChoices):
        EXPORT = "export"
        VERIFY = "verify"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        #: An export whose file was deleted after ``GATEHOUSE_EXPORT_TTL_HOURS``.
        EXPIRED = "expired"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    fmt = models.CharField(max_length=10, blank=True, help_text="har, jsonl or csv")
    params = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveBigIntegerField(default=0)
    total = models.PositiveBigIntegerField(default=0)
    file_name = models.CharField(max_length=200, blank=True)
    result = models.JSONField(default=dict)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} ({self.status})"

    @property
    def percent(self) -> int:
        return (
            100
            if self.status == self.Status.DONE
            else int(100 * self.progress / max(self.total, 1))
        )

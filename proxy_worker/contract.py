"""The Redis contract between the proxy worker (data path) and the control plane.

This module is the single written definition of every Redis key, channel and stream the
two sides share, and of the messages that travel on them. Both sides import it; neither
side builds a key name or a message by hand. It imports nothing from Django or
mitmproxy.

Keys and channels (``{p}`` is the deployment prefix, ``GATEHOUSE_REDIS_PREFIX``,
default ``gh``):

=============================  ======================  ================================
name                           type                    written by -> read by
=============================  ======================  ================================
``{p}:policy:snapshot``        string (JSON)           control plane -> workers
``{p}:policy:version``         string (int counter)    control plane -> workers (poll)
``{p}:policy:updates``         pub/sub channel         control plane -> workers
``{p}:approvals``              stream                  workers -> ingest
``{p}:decision:<approval id>`` string (JSON), TTL      control plane -> workers
``{p}:decisions``              pub/sub channel         control plane -> workers
``{p}:exchanges``              stream, group ingest    workers -> ingest
``{p}:defer:<agent>:<digest>`` string (approval id)    workers <-> workers (defer mode)
``{p}:redeemed:<approval id>`` string (worker id), TTL workers (defer mode, exactly once)
``{p}:worker:<worker id>``     string (JSON), TTL      workers -> approvals sweep
``{p}:tokens:last_used``       hash prefix -> epoch s  workers -> celery (last-used)
``{p}:ca:cert``                string (PEM)            workers -> web (CA download)
``{p}:mcp:tools:<t>:<sess>``   hash, TTL 24 h          workers <-> workers (MCP drift)
=============================  ======================  ================================

Every message carries ``"v"``, the schema version (:data:`SCHEMA_VERSION`). A reader
rejects a message whose major version it does not know with :class:`ContractError`
rather than guessing.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Literal

SCHEMA_VERSION = 1

#: Stream entries are capped approximately (``XADD MAXLEN ~``) so a stalled ingest
#: cannot exhaust Redis memory. Entries past the cap are the oldest *acknowledged*
#: ones in normal operation; size it well above the worst ingest backlog you expect.
STREAM_MAXLEN = 1_000_000

#: How long a decision key lives after it is written (seconds). Workers only need it
#: while a request is held; the database keeps the decision forever.
DECISION_TTL_SECONDS = 24 * 3600

#: How long an MCP session's tool fingerprints (``Keys.mcp_tools``) live after the last
#: write (seconds).
MCP_TOOLS_TTL_SECONDS = 24 * 3600

#: Consumer group that ingest uses on the exchanges and approvals streams.
INGEST_GROUP = "ingest"

Verdict = Literal["approved", "denied", "expired"]
ApprovalMode = Literal["wait", "defer"]

#: A worker refreshes its heartbeat key this often (seconds) ...
HEARTBEAT_INTERVAL_SECONDS = 2.0
#: ... and the key expires this long after the last refresh: a worker silent for this
#: long is dead, and the approvals sweep marks the requests it held ``abandoned``.
HEARTBEAT_TTL_SECONDS = 10
ExchangeDecision = Literal["allowed", "denied", "approved", "approval_denied", "expired", "error"]

#: What an exchange or an approval request records (the ``protocol`` field): an HTTP
#: request (the default, and what every message written before the field existed is) or
#: one PostgreSQL statement; ``"mcp"`` is reserved for later. The control plane shows a
#: protocol it does not know with its fields as recorded.
PROTOCOL_HTTP = "http"
PROTOCOL_POSTGRES = "postgres"

#: At most this many sampled result rows travel in a PostgreSQL exchange's
#: ``details["rows"]`` (``rows_truncated`` says when the statement returned more).
SQL_SAMPLE_ROWS = 20


class ContractError(ValueError):
    """A message on a Gatehouse Redis key or stream does not match this contract."""


@dataclass(frozen=True)
class Keys:
    """Key, channel and stream names for one deployment prefix.

    >>> Keys("gh").decision("42")
    'gh:decision:42'
    """

    prefix: str = "gh"

    @classmethod
    def from_env(cls) -> Keys:
        """Keys for the prefix in ``GATEHOUSE_REDIS_PREFIX`` (default ``gh``)."""
        return cls(os.environ.get("GATEHOUSE_REDIS_PREFIX", "gh"))

    @property
    def policy_snapshot(self) -> str:
        return f"{self.prefix}:policy:snapshot"

    @property
    def policy_version(self) -> str:
        return f"{self.prefix}:policy:version"

    @property
    def policy_updates(self) -> str:
        return f"{self.prefix}:policy:updates"

    @property
    def approvals_stream(self) -> str:
        return f"{self.prefix}:approvals"

    @property
    def decisions_channel(self) -> str:
        return f"{self.prefix}:decisions"

    @property
    def pg_cancel_channel(self) -> str:
        """Pub/sub channel of PostgreSQL cancel requests a worker could not match to one of
        its own connections. Payload: JSON ``{"worker_id": str, "process_id": int,
        "secret": hex str}`` (the ``CancelRequest``'s key, PostgreSQL docs "Canceling
        Requests in Progress"); every worker listens and the one holding the key cancels."""
        return f"{self.prefix}:pg-cancel"

    @property
    def exchanges_stream(self) -> str:
        return f"{self.prefix}:exchanges"

    @property
    def token_last_used(self) -> str:
        """Hash: Gatehouse token prefix -> Unix epoch seconds of its last use (as text)."""
        return f"{self.prefix}:tokens:last_used"

    @property
    def ca_cert(self) -> str:
        """String: the PEM certificate of the CA the forward listener signs with (public)."""
        return f"{self.prefix}:ca:cert"

    def decision(self, approval_id: str) -> str:
        return f"{self.prefix}:decision:{approval_id}"

    def defer_index(self, agent_id: int, fingerprint: str) -> str:
        """The approval id of the deferred request ``agent_id`` made with ``fingerprint``."""
        return f"{self.prefix}:defer:{agent_id}:{fingerprint}"

    def redeemed(self, approval_id: str) -> str:
        """Set (``NX``) when the one retry an approved deferred request allows has passed."""
        return f"{self.prefix}:redeemed:{approval_id}"

    def worker_heartbeat(self, worker_id: str) -> str:
        """A :class:`WorkerHeartbeat` refreshed by a live worker, expiring when it dies."""
        return f"{self.prefix}:worker:{worker_id}"

    def mcp_tools(self, target_id: int, session: str) -> str:
        """Hash: the tool definitions an MCP session saw first, so that every worker
        judges drift alike (:mod:`proxy_worker.addons.mcp_gate`).

        ``session`` is the ``Mcp-Session-Id`` as a key part
        (:func:`proxy_worker.mcp.session_slot`). Fields: ``fp:<tool name>`` = the
        :func:`proxy_worker.mcp.tool_fingerprint` first seen in the session (set with
        ``HSETNX``, never overwritten); ``changed:<tool name>`` = ``"1"`` once a later
        ``tools/list`` showed another fingerprint (the tool stays changed for the rest of
        the session). Expires :data:`MCP_TOOLS_TTL_SECONDS` after the last write.
        """
        return f"{self.prefix}:mcp:tools:{target_id}:{session}"


def _check_version(data: dict[str, Any], what: str) -> None:
    v = data.get("v")
    if v != SCHEMA_VERSION:
        raise ContractError(f"{what}: unsupported schema version {v!r} (expected {SCHEMA_VERSION})")


def _from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    _check_version(data, what)
    names = {f.name for f in fields(cls)}
    missing = [
        f.name
        for f in fields(cls)
        if f.name not in data and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise ContractError(f"{what}: missing fields {missing}")
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as e:
        raise ContractError(f"{what}: {e}") from e


def _check_protocol(msg: Any, what: str) -> None:
    if not isinstance(msg.protocol, str) or not msg.protocol:
        raise ContractError(f"{what}: protocol must be a non-empty string")
    if not isinstance(msg.details, dict):
        raise ContractError(f"{what}: details must be a JSON object")


def loads_json(raw: bytes | str, what: str) -> dict[str, Any]:
    """Parse one JSON object from Redis, raising :class:`ContractError` when it is not one."""
    try:
        data = json.loads(raw)
    except (ValueError, TypeError) as e:
        raise ContractError(f"{what}: not JSON ({e})") from e
    if not isinstance(data, dict):
        raise ContractError(f"{what}: expected a JSON object")
    return data


@dataclass(frozen=True)
class ApprovalRequestMessage:
    """A request held (or deferred) by a worker, waiting for a human decision.

    Sent on the approvals stream as one field ``data`` holding this object as JSON.
    Everything in it is already masked: ``url`` has its query masked, ``body`` is the
    masked request body as text (at most :data:`PREVIEW_LIMIT` characters), and
    ``headers`` has credentials removed. Times are Unix epoch seconds (float, UTC).

    ``protocol`` is ``"http"`` (default; messages without the field are HTTP requests)
    or ``"postgres"``: one SQL statement held on a PostgreSQL connection. Then
    ``method`` is the statement's worst kind (``DELETE``), ``url`` is
    ``postgresql://<upstream host>:<port>/<database>``, ``body`` is the statement
    formatted with ``pglast.prettify`` and then masked, ``headers`` are the connection
    facts (``application_name``, ``tls``, ``client_encoding``, ``database`` = target
    slug, ``user`` = agent name) and ``details`` is::

        {"statement_kind": str, "statement_kinds": [str], "tables": [str],
         "functions": [str], "parameters": [masked text | None],
         "sql_fingerprint": str}

    (kinds from the shared vocabulary, ``proxy_worker.policy.STATEMENT_SEVERITY``;
    relations and functions ``"schema.name"`` or bare ``"name"``, lower-cased).
    ``details`` is ``{}`` for HTTP requests.
    """

    approval_id: str
    worker_id: str
    agent_id: int
    target_id: int
    rule_id: int | None  # None when the target's default action asked for approval
    method: str
    url: str
    headers: dict[str, str]
    body: str
    body_truncated: bool
    requested_at: float
    deadline: float
    reason: str = ""
    #: ``wait``: the worker holds the request until ``deadline``; ``defer``: it answered
    #: at once and an identical retry passes once within ``retry_window`` s of approval.
    mode: ApprovalMode = "wait"
    #: Distinct approvers needed (the rule's threshold when the worker saw it).
    required_approvals: int = 1
    retry_window: float = 0.0
    protocol: str = PROTOCOL_HTTP
    details: dict[str, Any] = field(default_factory=dict)
    v: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> ApprovalRequestMessage:
        msg = _from_dict(cls, loads_json(raw, "approval request"), "approval request")
        _check_protocol(msg, "approval request")
        return msg


#: Masked request bodies in approval messages are cut to this many characters.
PREVIEW_LIMIT = 64 * 1024


@dataclass(frozen=True)
class DecisionMessage:
    """The outcome of an approval request, stored at ``Keys.decision(id)``.

    ``decided_by`` lists the usernames whose decisions produced the verdict (empty for
    ``expired``). ``decided_at`` is Unix epoch seconds (UTC).
    """

    approval_id: str
    verdict: Verdict
    decided_by: list[str]
    decided_at: float
    comment: str = ""
    v: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> DecisionMessage:
        msg = _from_dict(cls, loads_json(raw, "decision"), "decision")
        if msg.verdict not in ("approved", "denied", "expired"):
            raise ContractError(f"decision: unknown verdict {msg.verdict!r}")
        return msg


#: ``json.dumps(..., separators=(",", ":"))`` without cycle checks, built once.
_COMPACT = json.JSONEncoder(separators=(",", ":"), check_circular=False)


@dataclass(frozen=True)
class ExchangeMessage:
    """One finished exchange as recorded by a worker (already masked).

    Sent on the exchanges stream as one field ``data`` holding this object as JSON.
    ``exchange_id`` is a UUID made by the worker; ingest is idempotent on it.
    Times are Unix epoch seconds (float, UTC); ``timings`` holds milliseconds
    (``total``, ``upstream``, ``approval_wait``, ``masking``). ``findings`` is the
    masking engine's summary (``[{"type", "location", "count"}]``), never values.
    ``agent_id``/``target_id`` are ``None`` when the request was refused before the
    agent or the target was known.

    ``protocol`` is ``"http"`` (default; messages without the field are HTTP exchanges,
    and ``details`` is then ``{}``) or ``"postgres"``: one SQL statement of a PostgreSQL
    connection. For a statement:

    * ``method`` is its worst statement kind (``SELECT``, ``DELETE``, …, the shared
      vocabulary of ``proxy_worker.policy.STATEMENT_SEVERITY``); ``url`` is
      ``postgresql://<upstream host>:<port>/<database>``;
    * ``request_body`` is the masked SQL text as sent; ``response_body`` a psql-style
      text rendering of the sampled masked rows (or of the error);
    * ``status_code``: 200 completed, 400 the server answered an error, 403 refused by
      Gatehouse (rule, approval, unparseable), 502 upstream failure;
    * ``request_headers`` are the connection facts (``application_name``, ``tls``,
      ``client_encoding``, ``database`` = target slug, ``user`` = agent name);
      ``response_headers`` is ``{}``; ``session_key`` is ``pg:<connection uuid>``;
    * ``details`` (every key optional; readers default a missing one)::

        {"statement_kind": str, "statement_kinds": [str],
         "tables": [str], "functions": [str],        # "schema.name" or "name", lower case
         "parameters": [masked text | None],         # bound values, extended protocol
         "columns": [str],                            # result column names
         "rows": [[masked text | None]],              # at most SQL_SAMPLE_ROWS rows
         "rows_truncated": bool,                      # more rows than sampled
         "row_count": int | None,                     # from the command tag
         "command_tag": str,                          # "SELECT 3", "INSERT 0 3"
         "sqlstate": str, "error": str,               # the server's (or Gatehouse's) error
         "extended": bool,                            # Parse/Bind/Execute, not Query
         "statement_index": int,                      # position in a multi-statement Query
         "portal_suspended": bool,                    # Execute row limit reached
         "copy": {"direction": "in" | "out", "format": "text" | "csv" | "binary",
                  "rows": int}}                       # COPY statements only
    """

    exchange_id: str
    worker_id: str
    started_at: float
    agent_id: int | None
    target_id: int | None
    session_key: str
    client_address: str
    method: str
    url: str
    request_headers: dict[str, str]
    request_body: str
    status_code: int
    response_headers: dict[str, str]
    response_body: str
    decision: ExchangeDecision
    rule_id: int | None = None
    approval_id: str | None = None
    error: str = ""
    request_findings: list[dict[str, Any]] = field(default_factory=list)
    response_findings: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    body_truncated: bool = False
    protocol: str = PROTOCOL_HTTP
    details: dict[str, Any] = field(default_factory=dict)
    v: int = SCHEMA_VERSION

    def to_json(self) -> str:
        # Every field holds plain JSON values (no nested dataclass), so the instance
        # dict serialises exactly like ``asdict`` (field order kept) without deep-copying
        # headers and findings first (once per exchange, on the proxy's hot path). The
        # values are fresh trees of plain data (no cycles): the encoder skips cycle
        # checks, which changes nothing in the output.
        return _COMPACT.encode(self.__dict__)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ExchangeMessage:
        msg = _from_dict(cls, loads_json(raw, "exchange"), "exchange")
        _check_protocol(msg, "exchange")
        return msg


#: Recorded (masked) bodies are cut to this many characters in exchange messages.
RECORD_BODY_LIMIT = 256 * 1024


@dataclass(frozen=True)
class WorkerHeartbeat:
    """What a live worker stores at ``Keys.worker_heartbeat(worker_id)`` (TTL
    :data:`HEARTBEAT_TTL_SECONDS`, refreshed every :data:`HEARTBEAT_INTERVAL_SECONDS`).

    ``held`` lists the approval ids of the wait-mode requests it holds right now; ``at``
    is when that list was taken (Unix epoch seconds). A pending wait-mode request whose
    worker has no heartbeat, or whose worker's heartbeat (taken after the request was
    made) does not list it, is held by nobody.
    """

    worker_id: str
    at: float
    held: list[str]
    v: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> WorkerHeartbeat:
        return _from_dict(cls, loads_json(raw, "worker heartbeat"), "worker heartbeat")


#: Lua: let the one retry of an approved deferred request pass, exactly once.
#: KEYS[1] decision key, KEYS[2] redeemed marker, KEYS[3] defer index.
#: ARGV[1] retry window (s), ARGV[2] redeeming worker id, ARGV[3] approval id.
#: Returns 1 redeemed now; 0 no decision yet; -1 already redeemed; -2 the window after
#: the approval has passed (Redis ``TIME``); -3 the verdict is not ``approved``;
#: -4 unreadable decision. On 1 the defer index is deleted if it still names this id, so
#: a later identical request asks again.
REDEEM_DEFERRED_LUA = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, d = pcall(cjson.decode, raw)
if not ok or type(d) ~= 'table' then return -4 end
if d['verdict'] ~= 'approved' then return -3 end
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
if t > tonumber(d['decided_at']) + tonumber(ARGV[1]) then return -2 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', math.ceil(tonumber(ARGV[1])) + 60) then
  if redis.call('GET', KEYS[3]) == ARGV[3] then redis.call('DEL', KEYS[3]) end
  return 1
end
return -1
"""

#: Lua: delete KEYS[1] only if its value is ARGV[1] (compare-and-delete). Returns 1/0.
DELETE_IF_EQUALS_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


#: Lua: store a snapshot only if its version is newer than the stored one, then publish.
#: KEYS[1] snapshot key, KEYS[2] updates channel; ARGV[1] version, ARGV[2] document.
#: Returns 1 when stored, 0 when a newer snapshot was already there.
PUBLISH_SNAPSHOT_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, doc = pcall(cjson.decode, cur)
  if ok and doc['version'] and tonumber(doc['version']) >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
"""

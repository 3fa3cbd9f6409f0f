"""The tamper-evident audit chain: append, anchor, verify.

Record format
-------------
Every :class:`~audit.models.ChainRecord` has a gap-free ``seq`` (1, 2, …), a ``kind``
(``exchange``, ``change``, ``purge``, ``hold``, ``anchor``), a UTC time ``at``, a JSON
``payload`` and the ``prev_hash`` of record ``seq - 1`` (64 zeros for record 1). Its
``hash`` is::

    SHA-256( JCS({"seq": seq, "kind": kind, "at": at, "payload": payload,
                  "prev_hash": prev_hash}) )                       (lower-case hex)

where JCS is the JSON Canonicalization Scheme of RFC 8785 (the ``rfc8785`` package)
and ``at`` is ISO 8601 with microseconds and ``+00:00``. Changing any field of any
record breaks that record's hash; removing or reordering records breaks ``prev_hash``
of the next one; truncating the tail disagrees with :class:`~audit.models.ChainHead`
and with the last signed anchor.

Payloads
--------
* ``exchange``: ``{"exchange_id", "session_id", "digest"}``; ``digest`` is SHA-256
  over the JCS of :func:`exchange_evidence` (every recorded field; bodies enter as
  their own SHA-256, so the row proves its bodies without copying them into the chain);
  ``session_id`` is the session ingest filed it under. ``protocol`` and ``details``
  (PostgreSQL statements) are covered too, but enter the evidence only when they differ
  from what every exchange recorded before they existed (``"http"`` and ``{}``), so
  the digests of those records are unchanged.
* ``change``: ``{"actor", "action", "model", "object_id", "object", "old", "new",
  "secrets_changed"}`` — who changed which target, agent, token, rule or grant and
  the changed values. Credential fields (:data:`SECRET_FIELDS`) never appear: their
  names are listed in ``secrets_changed`` when they changed.
* ``purge``: ``{"actor", "target_id", "cutoff", "count", "exchange_ids"}`` — a
  retention purge deleted these exchange rows. Their ``exchange`` records stay, so
  the chain still verifies: a missing exchange row is accepted only when a purge
  record names it.
* ``hold``: ``{"actor", "session_id", "on", "reason"}``.
* ``anchor``: ``{"head_seq", "head_hash", "signed_at", "alg": "Ed25519", "key_id",
  "signature"}``; the signature (base64) is over the JCS of ``{"head_seq",
  "head_hash", "signed_at"}`` with the key in ``GATEHOUSE_AUDIT_SIGNING_KEY``.

Concurrency
-----------
Appenders lock the single :class:`~audit.models.ChainHead` row (``SELECT … FOR
UPDATE``) inside their transaction, so appends are serialised and a rolled-back
transaction leaves no record. Audit code takes that lock *first* in its transactions
(ingest, purge, hold) so lock order is always head → rows; control-plane saves lock
their own row first and the head second, and no audit transaction locks their rows.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

GENESIS_HASH = "0" * 64

#: Field names whose values are credentials or credential digests: a change record
#: names them in ``secrets_changed`` and never carries their value.
SECRET_FIELDS = frozenset(
    {"credential_encrypted", "token_hash", "password", "secret", "client_secret", "key"}
)
#: Bookkeeping fields left out of change records.
IGNORED_FIELDS = frozenset({"updated_at", "last_used_at", "last_login"})


_INT_LIMIT = 2**53 - 1
_encode_str = json.encoder.encode_basestring  # the C encoder: JCS escaping (see below)


def _jcs(obj: Any, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(_encode_str(obj))
    elif isinstance(obj, int):
        if not -_INT_LIMIT <= obj <= _INT_LIMIT:
            raise rfc8785.IntegerDomainError(obj)
        out.append(str(obj))
    elif isinstance(obj, float):
        out.append(rfc8785.dumps(obj).decode())
    elif isinstance(obj, dict):
        out.append("{")
        for i, key in enumerate(sorted(obj, key=lambda k: k.encode("utf-16-be"))):
            if not isinstance(key, str):
                raise rfc8785.CanonicalizationError(f"object key {key!r} is not a string")
            if i:
                out.append(",")
            out.append(_encode_str(key))
            out.append(":")
            _jcs(obj[key], out)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, item in enumerate(obj):
            if i:
                out.append(",")
            _jcs(item, out)
        out.append("]")
    else:
        raise rfc8785.CanonicalizationError(f"unsupported type {type(obj).__name__}")


def canonical(obj: Any) -> bytes:
    """RFC 8785 (JCS) serialisation of ``obj`` (UTF-8 bytes).

    Byte-for-byte what the reference ``rfc8785`` package produces (a test checks it on
    generated values), about twice as fast on exchange documents: strings go
    through the standard library's C JSON string encoder, whose escaping is exactly
    JCS's (RFC 8785 §3.2.2.2: ``\\b \\t \\n \\f \\r \\" \\\\`` short forms, other
    controls as lower-case ``\\u00xx``, everything else literal); members are sorted
    by their UTF-16 code units (§3.2.3); floats use ``rfc8785``'s ECMAScript number
    formatting (§3.2.2.3). Raises ``rfc8785.CanonicalizationError`` for values JSON
    cannot carry exactly (NaN, infinities, integers beyond ±2**53−1, lone surrogates).
    """
    out: list[str] = []
    _jcs(obj, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as e:
        raise rfc8785.CanonicalizationError("input contains non-UTF-8 code points") from e


_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(value: Any) -> Any:
    """``value`` (parsed JSON) with what ``jsonb`` and :func:`canonical` cannot carry
    replaced: NUL characters and lone surrogates become U+FFFD. Applied to recorded
    ``details`` at ingest, before the digest, so one odd value cannot stop a batch."""
    if isinstance(value, str):
        if "\x00" in value or _SURROGATE.search(value):
            return _SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))
        return value
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, dict):
        return {str(storable(k)): storable(v) for k, v in value.items()}
    return value


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def iso(dt: datetime) -> str:
    """``dt`` as ISO 8601 in UTC with microseconds, e.g. ``2026-01-01T00:00:00.000000+00:00``."""
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


# --- exchanges -------------------------------------------------------------------------


def exchange_document(x: Any) -> dict[str, Any]:
    """Every recorded field of an exchange as JSON-safe values (bodies included).

    ``x`` is an :class:`~audit.models.Exchange` (or anything with its attributes).
    This is the ``exchange`` object of JSON Lines exports; ``protocol`` and
    ``details`` are always present (``"http"``/``{}`` for HTTP exchanges).
    """
    return {
        "id": str(x.id),
        "session_id": x.session_id,
        "agent_id": x.agent_id,
        "target_id": x.target_id,
        "rule_id": x.rule_id,
        "approval_id": str(x.approval_id) if x.approval_id else None,
        "worker_id": x.worker_id,
        "client_address": x.client_address,
        "started_at": iso(x.started_at),
        "method": x.method,
        "url": x.url,
        "request_headers": x.request_headers,
        "request_body": x.request_body,
        "status_code": x.status_code,
        "response_headers": x.response_headers,
        "response_body": x.response_body,
        "decision": x.decision,
        "error": x.error,
        "request_findings": x.request_findings,
        "response_findings": x.response_findings,
        "timings": x.timings,
        "body_truncated": x.body_truncated,
        "protocol": getattr(x, "protocol", LEGACY_PROTOCOL),
        "details": getattr(x, "details", None) or {},
    }


#: ``protocol`` of every exchange recorded before the field existed (HTTP).
LEGACY_PROTOCOL = "http"


def exchange_evidence(doc: dict[str, Any]) -> dict[str, Any]:
    """The hashed form of :func:`exchange_document`: bodies replaced by their SHA-256,
    without ``session_id`` (ingest assigns the session under the chain lock; the chain
    record's payload carries it, so the digest can be computed before the lock).

    ``protocol`` and ``details`` are kept only when the exchange is not what records
    from before these fields were (``protocol`` ``"http"`` and empty ``details``), so
    old digests (and exports without the keys) verify unchanged while a PostgreSQL
    statement's protocol and details are covered. Dropping them is unambiguous: a
    record whose values differ from that pair always has both in its evidence.
    """
    out = dict(doc)
    out.pop("session_id", None)
    protocol = out.pop("protocol", LEGACY_PROTOCOL)
    details = out.pop("details", None)
    if protocol != LEGACY_PROTOCOL or (details is not None and details != {}):
        out["protocol"] = protocol
        out["details"] = details if details is not None else {}
    out["request_body"] = {"sha256": sha256_hex(doc["request_body"])}
    out["response_body"] = {"sha256": sha256_hex(doc["response_body"])}
    return out


def exchange_digest(x: Any) -> str:
    """SHA-256 (hex) over the JCS of :func:`exchange_evidence` of ``x``."""
    return sha256_hex(canonical(exchange_evidence(exchange_document(x))))


def digest_of_document(doc: dict[str, Any]) -> str:
    """:func:`exchange_digest` of an exported ``exchange`` object (for offline checks)."""
    return sha256_hex(canonical(exchange_evidence(doc)))


# --- records ---------------------------------------------------------------------------


def record_hash(seq: int, kind: str, at: datetime | str, payload: Any, prev_hash: str) -> str:
    """The ``hash`` of a chain record (see the module docstring)."""
    body = {
        "seq": seq,
        "kind": kind,
        "at": at if isinstance(at, str) else iso(at),
        "payload": payload,
        "prev_hash": prev_hash,
    }
    return sha256_hex(canonical(body))


def record_document(r: Any) -> dict[str, Any]:
    """A chain record as exported (enough to recompute its hash with :func:`record_hash`)."""
    return {
        "seq": r.seq,
        "kind": r.kind,
        "at": iso(r.at),
        "payload": r.payload,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    }


def _json_safe(value: Any) -> Any:
    """Model values (datetimes, UUIDs, decimals…) as plain JSON values."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


@dataclass
class Appender:
    """Appends records under the chain-head lock; use :func:`appending`.

    ``add`` computes each hash at once (so callers may read ``seq``/``hash`` back);
    ``flush`` writes the pending records (bulk) and moves the head.
    """

    seq: int
    hash: str
    pending: list = field(default_factory=list)

    def add(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        at: datetime | None = None,
        exchange_id: Any = None,
        plain: bool = False,
    ):
        """Queue one record; ``plain=True`` skips converting ``payload`` to plain JSON
        values (the caller built it from strings and numbers only)."""
        from audit.models import ChainRecord

        at = at or timezone.now()
        if not plain:
            payload = _json_safe(payload)
        seq = self.seq + 1
        h = record_hash(seq, kind, at, payload, self.hash)
        rec = ChainRecord(
            seq=seq,
            kind=kind,
            at=at,
            exchange_id=exchange_id,
            payload=payload,
            prev_hash=self.hash,
            hash=h,
        )
        self.pending.append(rec)
        self.seq, self.hash = seq, h
        return rec

    def flush(self) -> None:
        from audit.models import ChainHead, ChainRecord

        if not self.pending:
            return
        copy_rows(ChainRecord, RECORD_COLUMNS, self.pending)
        ChainHead.objects.filter(pk=1).update(seq=self.seq, hash=self.hash)
        self.pending = []


RECORD_COLUMNS = ["seq", "kind", "at", "exchange_id", "payload", "prev_hash", "hash"]


def copy_rows(model: Any, columns: list[str], rows: Iterable[Any]) -> int:
    """Insert ``rows`` (objects with the ``columns`` attributes) into ``model``'s table
    with PostgreSQL ``COPY … FROM STDIN``, on Django's connection (so inside the
    caller's transaction). JSON fields are sent as ``jsonb``. Returns the row count.

    Several times faster than ``bulk_create`` for ingest batches: no SQL text to build
    and parse per row. No model signals, no ``ON CONFLICT``: callers dedupe first.
    A row without one of the attributes gets that field's default when the field has
    one (rows built before a column was added), else ``AttributeError``.
    """
    from django.db import connection
    from psycopg.types.json import Jsonb

    fields = {f.attname: f for f in model._meta.concrete_fields}
    is_json = [fields[c].get_internal_type() == "JSONField" for c in columns]
    table = connection.ops.quote_name(model._meta.db_table)
    cols = ", ".join(connection.ops.quote_name(c) for c in columns)

    def value(row: Any, c: str) -> Any:
        try:
            return getattr(row, c)
        except AttributeError:
            if not fields[c].has_default():
                raise
            return fields[c].get_default()

    n = 0
    with connection.cursor() as cur, cur.cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(
                [
                    Jsonb(value(row, c)) if j else value(row, c)
                    for c, j in zip(columns, is_json, strict=True)
                ]
            )
            n += 1
    return n


def lock_head() -> Appender:
    """Lock the chain head (inside a transaction) and return an :class:`Appender` at it."""
    from audit.models import ChainHead

    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("the chain head can only be locked inside transaction.atomic")
    head = ChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:  # first use on a database migrated without the data step
        ChainHead.objects.get_or_create(pk=1, defaults={"seq": 0, "hash": GENESIS_HASH})
        head = ChainHead.objects.select_for_update().get(pk=1)
    return Appender(seq=head.seq, hash=head.hash)


@contextlib.contextmanager
def appending() -> Iterator[Appender]:
    """``with appending() as chain: chain.add(...)``: one atomic, serialised append."""
    with transaction.atomic():
        app = lock_head()
        yield app
        app.flush()


# --- actors and control-plane changes --------------------------------------------------

#: The acting user (or a ``"system:<component>"`` string) of the current request or job;
#: set by :class:`audit.middleware.AuditActorMiddleware` and :func:`acting_as`.
current_actor: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "gatehouse_audit_actor", default=None
)


@contextlib.contextmanager
def acting_as(actor: Any) -> Iterator[None]:
    """Attribute chain records written inside the block to ``actor``."""
    token = current_actor.set(actor)
    try:
        yield
    finally:
        current_actor.reset(token)


def describe_actor(actor: Any = None) -> dict[str, Any]:
    """``{"user_id": int | None, "username": str}`` for a user, a string or ``None``.

    ``None`` falls back to :data:`current_actor`; with neither, ``"system"``.
    """
    actor = actor if actor is not None else current_actor.get()
    if callable(actor) and not hasattr(actor, "is_authenticated"):
        actor = actor()  # a lazy getter set by the middleware
    if actor is None:
        return {"user_id": None, "username": "system"}
    if isinstance(actor, str):
        return {"user_id": None, "username": actor}
    if getattr(actor, "is_authenticated", False):
        return {"user_id": actor.pk, "username": actor.get_username()}
    return {"user_id": None, "username": "anonymous"}


def model_values(obj: Any) -> dict[str, Any]:
    """Concrete field values of a model instance (``attname`` keys), JSON-safe."""
    return _json_safe(
        {
            f.attname: f.value_from_object(obj)
            for f in obj._meta.concrete_fields
            if f.attname not in IGNORED_FIELDS
        }
    )


def change_payload(
    actor: Any, action: str, obj: Any, old: dict[str, Any] | None, new: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The ``change`` payload, or ``None`` when an update changed nothing recorded.

    ``old``/``new`` are full value maps (:func:`model_values`) or ``None`` (create,
    delete); an update keeps only the fields that differ. Secret fields are removed and
    listed in ``secrets_changed`` when their value differs (or is set on create).
    """
    old = dict(old or {})
    new = dict(new or {})
    secrets = sorted(
        k
        for k in set(old) | set(new)
        if k in SECRET_FIELDS and (old.get(k) or None) != (new.get(k) or None)
    )
    for k in SECRET_FIELDS:
        old.pop(k, None)
        new.pop(k, None)
    if action == "update":
        keys = [k for k in new if old.get(k) != new.get(k)]
        old = {k: old.get(k) for k in keys}
        new = {k: new[k] for k in keys}
        if not keys and not secrets:
            return None
    meta = obj._meta
    return {
        "actor": describe_actor(actor),
        "action": action,
        "model": f"{meta.app_label}.{meta.model_name}",
        "object_id": str(obj.pk),
        "object": str(obj)[:200],
        "old": old,
        "new": new,
        "secrets_changed": secrets,
    }


def record_change(
    actor: Any, action: str, obj: Any, old: dict[str, Any] | None, new: dict[str, Any] | None
):
    """Append a ``change`` record: ``actor`` did ``action`` on ``obj`` (old → new values).

    ``action`` is ``create``, ``update``, ``delete`` or ``m2m:<field>:<add|remove|clear>``.
    Call it inside the transaction that makes the change (signals do): the record is
    committed or rolled back with it. Returns the record, or ``None`` if nothing changed.
    """
    payload = change_payload(actor, action, obj, old, new)
    if payload is None:
        return None
    with appending() as chain:
        return chain.add("change", payload)


# --- anchors ---------------------------------------------------------------------------


def signing_key() -> Ed25519PrivateKey | None:
    """The Ed25519 key from ``GATEHOUSE_AUDIT_SIGNING_KEY`` (base64 of the 32-byte seed)."""
    raw = settings.GATEHOUSE_AUDIT_SIGNING_KEY
    if not raw:
        return None
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(raw))


def verify_key() -> Ed25519PublicKey | None:
    """The public key that checks anchors: ``GATEHOUSE_AUDIT_VERIFY_KEY`` (base64 of the
    32 raw bytes) if set, else derived from the signing key."""
    raw = settings.GATEHOUSE_AUDIT_VERIFY_KEY
    if raw:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(raw))
    key = signing_key()
    return key.public_key() if key else None


def key_id(pub: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw public key."""
    return sha256_hex(pub.public_bytes(Encoding.Raw, PublicFormat.Raw))[:16]


def anchor():
    """Append a signed ``anchor`` over the current head; ``None`` without a key or when
    the newest record already is an anchor (nothing new to sign)."""
    key = signing_key()
    if key is None:
        return None
    with appending() as chain:
        from audit.models import ChainRecord

        if chain.seq == 0 or ChainRecord.objects.filter(seq=chain.seq, kind="anchor").exists():
            return None
        signed_at = iso(timezone.now())
        message = {"head_seq": chain.seq, "head_hash": chain.hash, "signed_at": signed_at}
        sig = key.sign(canonical(message))
        return chain.add(
            "anchor",
            {
                **message,
                "alg": "Ed25519",
                "key_id": key_id(key.public_key()),
                "signature": base64.b64encode(sig).decode(),
            },
        )


def check_anchor(payload: dict[str, Any], pub: Ed25519PublicKey | None) -> str | None:
    """Why an anchor payload does not verify, or ``None`` when its signature is good."""
    if pub is None:
        return "no verification key configured"
    message = {k: payload.get(k) for k in ("head_seq", "head_hash", "signed_at")}
    try:
        pub.verify(base64.b64decode(payload.get("signature", "")), canonical(message))
    except (InvalidSignature, ValueError):
        return "anchor signature does not verify"
    return None


# --- verification ----------------------------------------------------------------------


@dataclass
class VerifyResult:
    """Outcome of :func:`verify_chain`.

    ``first_bad_seq`` is the first record that fails (``None`` when ``ok``);
    ``problems`` lists ``(seq, reason)`` of the first failures (at most 20).
    """

    ok: bool = True
    records: int = 0
    exchanges: int = 0
    purged: int = 0
    anchors: int = 0
    head_seq: int = 0
    last_anchor_seq: int | None = None
    first_bad_seq: int | None = None
    problems: list[tuple[int | None, str]] = field(default_factory=list)

    def fail(self, seq: int | None, reason: str) -> None:
        if self.ok or (seq is not None and self.first_bad_seq is None):
            self.first_bad_seq = seq
        self.ok = False
        if len(self.problems) < 20:
            self.problems.append((seq, reason))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "exchanges": self.exchanges,
            "purged": self.purged,
            "anchors": self.anchors,
            "head_seq": self.head_seq,
            "last_anchor_seq": self.last_anchor_seq,
            "first_bad_seq": self.first_bad_seq,
            "problems": [list(p) for p in self.problems],
        }


def _purged_ids() -> set[str]:
    from audit.models import ChainRecord

    out: set[str] = set()
    for payload in ChainRecord.objects.filter(kind="purge").values_list("payload", flat=True):
        out.update(payload.get("exchange_ids", []))
    return out


def verify_chain(
    *, chunk: int = 5000, progress: Callable[[int, int], None] | None = None
) -> VerifyResult:
    """Recompute every record's hash and link, every exchange digest, every anchor.

    Reads the chain in ``seq`` order, ``chunk`` records at a time (bounded memory);
    ``progress(done, total)`` is called after each chunk. Checks, in order: ``seq`` has
    no gap, ``prev_hash`` is the previous ``hash``, ``hash`` matches the content, an
    exchange record's row exists (or a purge record names it) and has the recorded
    digest, anchors are signed by the configured key over the record before them, the
    head row matches the last record, and no exchange row lacks a record.
    """
    from audit.models import ChainHead, ChainRecord, Exchange

    result = VerifyResult()
    pub = verify_key()
    total = ChainRecord.objects.count()
    purged: set[str] | None = None
    prev_seq, prev_hash = 0, GENESIS_HASH
    while True:
        batch = list(ChainRecord.objects.filter(seq__gt=prev_seq).order_by("seq")[:chunk])
        if not batch:
            break
        ids = [r.exchange_id for r in batch if r.kind == "exchange" and r.exchange_id]
        rows = {x.id: x for x in Exchange.objects.filter(id__in=ids)}
        for r in batch:
            result.records += 1
            if r.seq != prev_seq + 1:
                result.fail(prev_seq + 1, f"record {prev_seq + 1} is missing")
            if r.prev_hash != prev_hash:
                result.fail(r.seq, "prev_hash does not match the previous record's hash")
            if record_hash(r.seq, r.kind, r.at, r.payload, r.prev_hash) != r.hash:
                result.fail(r.seq, "hash does not match the record's content")
            if r.kind == "exchange":
                result.exchanges += 1
                xid = r.payload.get("exchange_id") if isinstance(r.payload, dict) else None
                if str(r.exchange_id) != xid:
                    result.fail(r.seq, "exchange_id column differs from the hashed payload")
                x = rows.get(r.exchange_id)
                if x is None:
                    if purged is None:
                        purged = _purged_ids()
                    if xid in purged:
                        result.purged += 1
                    else:
                        result.fail(r.seq, f"exchange {xid} was deleted without a purge record")
                elif exchange_digest(x) != r.payload.get("digest"):
                    result.fail(r.seq, f"exchange {xid} differs from its recorded digest")
                elif x.session_id != r.payload.get("session_id"):
                    result.fail(r.seq, f"exchange {xid} was moved to another session")
            elif r.kind == "anchor":
                result.anchors += 1
                p = r.payload
                if p.get("head_seq") != r.seq - 1 or p.get("head_hash") != r.prev_hash:
                    result.fail(r.seq, "anchor does not sign the record before it")
                reason = check_anchor(p, pub)
                if reason:
                    result.fail(r.seq, reason)
                else:
                    result.last_anchor_seq = r.seq
            prev_seq, prev_hash = r.seq, r.hash
        if progress:
            progress(result.records, total)
    result.head_seq = prev_seq
    head = ChainHead.objects.filter(pk=1).first()
    if head is not None and (head.seq, head.hash) != (prev_seq, prev_hash):
        result.fail(
            min(head.seq, prev_seq) + 1,
            f"chain head says record {head.seq} but the chain ends at {prev_seq}",
        )
    # NOT EXISTS (an anti-join), not NOT IN: exchange_id is nullable, and PostgreSQL
    # cannot turn NOT IN over a nullable column into an anti-join (quadratic on 1M rows).
    orphan = (
        Exchange.objects.filter(~Exists(ChainRecord.objects.filter(exchange_id=OuterRef("id"))))
        .values_list("id", flat=True)
        .first()
    )
    if orphan is not None:
        result.fail(None, f"exchange {orphan} has no chain record")
    return result


def verify_evidence(lines: Iterable[str]) -> list[str]:
    """Check a JSON Lines evidence export offline; returns the problems (empty = good).

    For each ``exchange`` line: its digest recomputed from the exported fields equals
    the chain record's ``payload.digest``, and the record's hash recomputes. Records
    are linked where consecutive ``seq`` values were exported; the footer's ``head``
    anchor signature is checked with the configured verification key. (Links between
    non-consecutive records need the full chain: ``manage.py audit_verify``.)
    """
    problems: list[str] = []
    pub = verify_key()
    prev: dict[str, Any] | None = None
    for n, line in enumerate(lines, 1):
        item = json.loads(line)
        if item.get("type") == "exchange":
            rec = item["chain"]
            if rec is None:
                problems.append(f"line {n}: exchange has no chain record")
                continue
            if digest_of_document(item["exchange"]) != rec["payload"].get("digest") or item[
                "exchange"
            ].get("session_id") != rec["payload"].get("session_id"):
                problems.append(f"line {n}: exchange differs from its recorded digest")
            if (
                record_hash(rec["seq"], rec["kind"], rec["at"], rec["payload"], rec["prev_hash"])
                != rec["hash"]
            ):
                problems.append(f"line {n}: chain record hash does not recompute")
            if prev and prev["seq"] + 1 == rec["seq"] and prev["hash"] != rec["prev_hash"]:
                problems.append(f"line {n}: chain link to the previous record is broken")
            prev = rec
        elif item.get("type") == "footer" and item.get("anchor"):
            a = item["anchor"]
            if record_hash(a["seq"], a["kind"], a["at"], a["payload"], a["prev_hash"]) != a["hash"]:
                problems.append(f"line {n}: anchor record hash does not recompute")
            reason = check_anchor(a["payload"], pub)
            if reason:
                problems.append(f"line {n}: {reason}")
    return problems

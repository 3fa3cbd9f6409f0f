"""Exchange records of SQL statements (one :class:`~proxy_worker.contract.ExchangeMessage`
per statement, one recorded session per connection).

What is recorded is masked: the statement text and the bound parameters with the
target's request-side rules (for PostgreSQL targets those mask the *record* and what
approvers see, never what is sent upstream: rewriting literals would change what a
statement does) and then every default detector those rules did not cover; result rows
as the relay masked them on the wire, then the same record-side pass (done by
:class:`~proxy_worker.postgres.rowmask.RowMasker` on its sample). Shape of ``details``:
see :class:`~proxy_worker.contract.ExchangeMessage`.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from proxy_worker.contract import RECORD_BODY_LIMIT, ExchangeMessage
from proxy_worker.masking import summarise
from proxy_worker.policy import Target

if TYPE_CHECKING:
    from proxy_worker.postgres.relay import Relay
    from proxy_worker.postgres.state import StatementRecord

#: Rows kept per statement in its record (``details.rows``), after masking.
SAMPLE_ROWS = 20
#: Characters of one recorded value (longer ones are cut, with an ellipsis).
VALUE_LIMIT = 2000


_ID_PREFIX = int.from_bytes(os.urandom(8)) << 64
_ID_COUNTER = itertools.count(1)


def new_exchange_id() -> str:
    """A fresh exchange id: a UUID (version 4 layout, RFC 9562) made of 60 random bits
    drawn once per process and a counter, so it costs no system call per statement.
    Unique within a process by the counter and across processes by the random part."""
    n = _ID_PREFIX | (next(_ID_COUNTER) & 0xFFFF_FFFF_FFFF_FFFF)
    # Version 4 (bits 48-51 = 0100) and the RFC variant (bits 64-65 = 10).
    n = (n & ~(0xF << 76)) | (0x4 << 76)
    n = (n & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=n))


def upstream_url(target: Target) -> str:
    """``postgresql://user@host:port/database`` of a PostgreSQL target (no password)."""
    pg = target.postgres
    if pg is None:
        return target.upstream
    host = f"[{pg.host}]" if ":" in pg.host else pg.host
    return f"postgresql://{pg.user}@{host}:{pg.port}/{pg.database}"


def connection_facts(relay: Relay) -> dict[str, str]:
    """What is recorded about the connection (``request_headers`` of its exchanges)."""
    facts = {
        "user": relay.agent.name if relay.agent else "",
        "database": relay.target.slug if relay.target else "",
        # The server reports it (ParameterStatus) at start-up and after every SET.
        "application_name": relay.server_params.get(
            "application_name", relay.client_params.get("application_name", "")
        ),
        "client_encoding": relay.server_params.get("client_encoding", ""),
        "tls": relay.tls or "none",
        "server_version": relay.server_params.get("server_version", ""),
        "connection": relay.connection_id,
    }
    return {k: v for k, v in facts.items() if v}


def mask_for_record(relay: Relay, text: str, direction: str) -> str:
    """``text`` masked with the target's rules for ``direction`` and then every default
    detector they do not cover (never raises: unmaskable text is withheld)."""
    if not text:
        return text
    masker = relay._masker(direction)
    try:
        if masker is not None and masker.enabled:
            text, _ = masker.mask_text(text, location="sql")
        extra = relay._record_masker(masker)
        if extra is not None:
            text, _ = extra.mask_text(text, location="sql")
    except Exception:
        return "[text withheld: it could not be masked]"
    return text


def _render_rows(columns: list[str], rows: list[list[str | None]], row_count: int | None) -> str:
    """A psql-style aligned table of the sampled rows (what search indexes)."""
    if not columns:
        return ""
    cells = [[("" if v is None else v.replace("\n", "\\n")) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, v in enumerate(row[: len(widths)]):
            widths[i] = max(widths[i], len(v))
    lines = [" " + " | ".join(c.center(w) for c, w in zip(columns, widths, strict=False))]
    lines.append("-" + "-+-".join("-" * w for w in widths) + "-")
    for row in cells:
        lines.append(" " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)))
    n = row_count if row_count is not None else len(rows)
    lines.append(f"({n} row{'s' if n != 1 else ''})")
    return "\n".join(lines)


def _cut(v: str | None) -> str | None:
    if v is None or len(v) <= VALUE_LIMIT:
        return v
    return v[:VALUE_LIMIT] + "…"


def statement_exchange(relay: Relay, r: StatementRecord) -> ExchangeMessage:
    """The exchange record of one finished (or refused, or cut off) statement."""
    from proxy_worker.postgres import protocol as pq

    a = r.analysis
    facts = a.facts if a is not None else None
    sql = mask_for_record(relay, r.sql, "request")
    params = [
        None if p is None else _cut(mask_for_record(relay, p, "request")) for p in r.parameters
    ]
    details: dict[str, Any] = {
        "statement_kind": r.kind,
        "statement_kinds": sorted(facts.kinds) if facts else [r.kind],
        "tables": sorted(facts.relations) if facts else [],
        "functions": sorted(facts.functions) if facts else [],
        "parameters": params,
        "extended": r.extended,
        "statement_index": r.statement_index,
    }
    response_body = ""
    findings: list[dict[str, Any]] = []
    rm = r.row_masker
    if rm is not None:
        # Names are the agent's aliases as often as column names: masked like its SQL.
        columns = [mask_for_record(relay, f.name, "request") for f in rm.fields]
        sample = [[_cut(v) for v in row] for row in rm.sample[:SAMPLE_ROWS]]
        details["columns"] = columns
        details["rows"] = sample
        details["rows_truncated"] = rm.row_count > len(sample)
        details["row_count"] = rm.row_count
        response_body = _render_rows(columns, sample, rm.row_count)
        findings = rm.findings()
    cm = r.copy_masker
    if cm is not None and r.copy is not None:
        # The server's count when it gave one (COPY FROM data is only sampled).
        tag_rows = pq.command_tag_rows(r.command_tag) if r.command_tag[:4] == "COPY" else None
        r.copy["rows"] = tag_rows if tag_rows is not None else cm.row_count
        details["copy"] = dict(r.copy)
        if cm.sample:
            cols = [mask_for_record(relay, c.name, "request") for c in cm.columns]
            width = max((len(x) for x in cm.sample), default=0)
            cols += [f"column{i + 1}" for i in range(len(cols), width)]
            details["columns"] = cols
            sample = cm.sample[:SAMPLE_ROWS]
            if r.copy.get("direction") == "in":
                sample = [
                    [None if v is None else mask_for_record(relay, v, "request") for v in row]
                    for row in sample
                ]
            details["rows"] = [[_cut(v) for v in row] for row in sample]
            details["rows_truncated"] = cm.row_count > len(details["rows"])
            response_body = _render_rows(cols, details["rows"], cm.row_count)
        findings = findings or cm.findings()
    if r.command_tag:
        details["command_tag"] = r.command_tag
        n = pq.command_tag_rows(r.command_tag)
        # A portal run in several Executes: the tag counts the last one's rows only.
        if n is not None and (rm is None or rm.row_count <= n):
            details["row_count"] = n
    if r.portal_suspended:
        details["portal_suspended"] = True
    if r.sqlstate:
        details["sqlstate"] = r.sqlstate
    if r.error:
        details["error"] = r.error
        err = f"ERROR:  {r.error}" + (f"\n(SQLSTATE {r.sqlstate})" if r.sqlstate else "")
        response_body = (response_body + "\n" + err).strip() if response_body else err
    elif r.command_tag and not response_body:
        response_body = r.command_tag
    if r.grant_id is not None:
        details["grant_id"] = r.grant_id
    timings = {"total": round((time.perf_counter() - r.started_perf) * 1000, 3)}
    if r.approval_wait_ms:
        timings["approval_wait"] = r.approval_wait_ms
    decision = r.decision
    if decision == "allowed" and r.status >= 500:
        decision = "error"
    request_findings: list[dict[str, Any]] = []
    return ExchangeMessage(
        exchange_id=new_exchange_id(),
        worker_id=relay.link.worker_id,
        started_at=r.started_at,
        agent_id=relay.agent.id if relay.agent else None,
        target_id=relay.target.id if relay.target else None,
        session_key=f"pg:{relay.connection_id}",
        client_address=relay.client_address,
        method=r.kind,
        url=upstream_url(relay.target) if relay.target else "",
        request_headers=connection_facts(relay),
        request_body=sql[:RECORD_BODY_LIMIT],
        status_code=r.status,
        response_headers={},
        response_body=response_body[:RECORD_BODY_LIMIT],
        decision=decision,  # type: ignore[arg-type]
        rule_id=r.rule_id,
        approval_id=r.approval_id,
        error=(r.error or "")[:300],
        request_findings=request_findings,
        response_findings=summarise_findings(findings),
        timings=timings,
        body_truncated=len(sql) > RECORD_BODY_LIMIT or len(response_body) > RECORD_BODY_LIMIT,
        protocol="postgres",
        details=details,
    )


def summarise_findings(findings: Any) -> list[dict[str, Any]]:
    """Findings as the contract stores them (already summarised dicts pass through)."""
    if not findings:
        return []
    if isinstance(findings[0], dict):
        return list(findings)
    return summarise(findings)

"""Evidence exports of recorded exchanges: HAR 1.2, JSON Lines with chain proof, CSV.

Writers take an iterable of :class:`ExportItem` (an exchange with its chain record and
its approvers) and a text file; :func:`iter_items` builds them from a queryset in
chunks so memory stays bounded whatever the export's size.

* **HAR 1.2** (http://www.softwareishard.com/blog/har-12-spec/, the W3C draft "HTTP
  Archive (HAR) format"): one page per session, one entry per exchange; bodies are the
  recorded (masked) text. Gatehouse facts travel in the custom ``_gatehouse`` field of
  each entry (custom fields start with an underscore, as the spec requires). Opens in
  browser developer tools and in mitmproxy (``mitmproxy.io.har``). HAR describes HTTP
  only: PostgreSQL statements are left out and counted in ``log.comment``. An MCP
  message the agent sent is an entry of its own (one per JSON-RPC call, as recorded:
  the calls of one batched POST, or of one answered over SSE, become one ``POST`` each,
  with the call's JSON-RPC request and response as bodies and ``_gatehouse.mcp``
  naming the method and tool); a server-initiated request the gateway refused was
  never an HTTP request of the agent: left out and counted in ``log.comment``.
* **JSON Lines** (https://jsonlines.org/): a ``header`` line, one ``exchange`` line per
  exchange with every recorded field (``protocol`` and ``details`` included), its chain
  record and its digest, and a ``footer`` line with the latest signed anchor and the
  verification key; :func:`audit.chain.verify_evidence` checks such a file.
* **CSV** (RFC 4180): one summary row per exchange (``protocol`` and ``tool`` last, added
  after the other columns; ``method`` holds a SQL statement's kind or an MCP message's
  JSON-RPC method, ``tool`` the MCP tool name, resource URI or prompt name). Cells that
  a spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or
  CR) are prefixed with ``'`` (OWASP "CSV injection"): recorded text is untrusted.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.db.models import QuerySet
from django.utils import timezone

from approvals.models import Decision
from audit.chain import exchange_document, iso, key_id, record_document, verify_key
from audit.models import ChainHead, ChainRecord, Exchange

FORMATS = {
    "har": ("application/json", "har"),
    "jsonl": ("application/x-ndjson", "jsonl"),
    "csv": ("text/csv", "csv"),
}


@dataclass
class ExportItem:
    exchange: Exchange
    record: ChainRecord | None
    approvers: list[dict[str, str]] = field(default_factory=list)


def iter_items(
    qs: QuerySet[Exchange],
    *,
    chunk: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> Iterator[ExportItem]:
    """Exchanges of ``qs`` (oldest first) with their chain records and approvers.

    ``progress(n)`` is called after each chunk with the number yielded so far.
    """
    qs = qs.select_related("agent", "target", "rule").order_by("started_at", "id")
    done = 0
    buf: list[Exchange] = []

    def flush() -> Iterator[ExportItem]:
        records = {
            r.exchange_id: r
            for r in ChainRecord.objects.filter(exchange_id__in=[x.id for x in buf])
        }
        approvals = [x.approval_id for x in buf if x.approval_id]
        approvers: dict[Any, list[dict[str, str]]] = {}
        for d in Decision.objects.filter(approval_request_id__in=approvals).select_related("user"):
            approvers.setdefault(d.approval_request_id, []).append(
                {"user": d.user.get_username(), "verdict": d.verdict, "at": iso(d.created_at)}
            )
        for x in buf:
            yield ExportItem(x, records.get(x.id), approvers.get(x.approval_id, []))

    for x in qs.iterator(chunk_size=chunk):
        buf.append(x)
        if len(buf) >= chunk:
            yield from flush()
            done += len(buf)
            buf = []
            if progress:
                progress(done)
    if buf:
        yield from flush()
        done += len(buf)
        if progress:
            progress(done)


def _header(headers: dict[str, Any], name: str) -> str:
    for k, v in (headers or {}).items():
        if k.lower() == name:
            return str(v)
    return ""


def _har_headers(headers: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": str(k), "value": str(v)} for k, v in (headers or {}).items()]


def _status_text(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


def facts(item: ExportItem) -> dict[str, Any]:
    """Gatehouse facts of an exchange (names, decision, chain position) for HAR and JSONL."""
    x = item.exchange
    return {
        "exchange_id": str(x.id),
        "session_id": x.session_id,
        "agent": x.agent.name if x.agent else None,
        "target": x.target.slug if x.target else None,
        "decision": x.decision,
        "error": x.error,
        "rule": x.rule.name if x.rule else None,
        "approval_id": str(x.approval_id) if x.approval_id else None,
        "approvers": item.approvers,
        "request_findings": x.request_findings,
        "response_findings": x.response_findings,
        "timings_ms": x.timings,
        "body_truncated": x.body_truncated,
        "protocol": x.protocol,
        "chain": {"seq": item.record.seq, "hash": item.record.hash} if item.record else None,
    }


#: HTTP methods (RFC 9110 and PATCH): an MCP exchange whose ``method`` is one (a body
#: that did not parse) keeps it in HAR; a JSON-RPC method stands for its POST.
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def _mcp_details(x: Exchange) -> dict[str, Any]:
    return x.details if x.protocol == "mcp" and isinstance(x.details, dict) else {}


def in_har(x: Exchange) -> bool:
    """Whether HAR can hold ``x``: an HTTP exchange, or an MCP message the agent sent
    (not a server-initiated request the gateway refused)."""
    if x.protocol == "http":
        return True
    return x.protocol == "mcp" and _mcp_details(x).get("server_request") is not True


def har_entry(item: ExportItem) -> dict[str, Any]:
    """One HAR 1.2 ``entry``. ``time`` is the recorded total (ms) and equals the sum of
    the non-negative ``timings`` (``wait`` carries it all: phases were not recorded).

    An MCP message is the ``POST`` of its JSON-RPC request to the endpoint (``method``
    in the record is the JSON-RPC method, not an HTTP one), bodies typed
    ``application/json`` (the response as the JSON-RPC message, not its SSE framing)."""
    x = item.exchange
    mcp = x.protocol == "mcp"
    total = float((x.timings or {}).get("total") or 0.0)
    req_body = x.request_body or ""
    resp_body = x.response_body or ""
    request: dict[str, Any] = {
        "method": "POST" if mcp and x.method not in _HTTP_METHODS else x.method,
        "url": x.url,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": _har_headers(x.request_headers),
        "queryString": [
            {"name": k, "value": v}
            for k, v in parse_qsl(urlsplit(x.url).query, keep_blank_values=True)
        ],
        "headersSize": -1,
        "bodySize": len(req_body.encode()),
    }
    if req_body:
        request["postData"] = {
            "mimeType": _header(x.request_headers, "content-type")
            or ("application/json" if mcp else ""),
            "params": [],
            "text": req_body,
        }
    gatehouse = facts(item)
    comment = f"Gatehouse decision: {x.decision}"
    if mcp:
        d = _mcp_details(x)
        gatehouse["mcp"] = {
            k: d.get(k) for k in ("jsonrpc_method", "jsonrpc_id", "tool", "batch_index", "is_error")
        }
        name = d.get("tool") or ""
        comment = f"MCP {d.get('jsonrpc_method') or x.method} {name}".rstrip() + f"; {comment}"
    return {
        "pageref": f"session-{x.session_id or 'none'}",
        "startedDateTime": iso(x.started_at),
        "time": total,
        "request": request,
        "response": {
            "status": x.status_code,
            "statusText": _status_text(x.status_code),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": _har_headers(x.response_headers),
            "content": {
                "size": len(resp_body.encode()),
                "mimeType": (
                    "application/json"
                    if mcp
                    else _header(x.response_headers, "content-type") or "text/plain"
                ),
                "text": resp_body,
                "comment": "masked by Gatehouse" if x.response_findings else "",
            },
            "redirectURL": _header(x.response_headers, "location"),
            "headersSize": -1,
            "bodySize": len(resp_body.encode()),
        },
        "cache": {},
        "timings": {
            "blocked": -1,
            "dns": -1,
            "connect": -1,
            "ssl": -1,
            "send": 0,
            "wait": total,
            "receive": 0,
        },
        "comment": comment,
        "_gatehouse": gatehouse,
    }


def har_comment(title: str, skipped: int, server_requests: int = 0) -> str:
    """``log.comment`` of a HAR export: the title, and how many PostgreSQL statements
    and refused MCP server requests were left out (HAR has no place for them)."""
    parts = []
    if skipped:
        parts.append(f"{skipped} PostgreSQL statement{'' if skipped == 1 else 's'}")
    if server_requests:
        n = server_requests
        parts.append(f"{n} refused MCP server request{'' if n == 1 else 's'}")
    if not parts:
        return title
    return (
        f"{title}; {' and '.join(parts)} not representable in HAR; "
        "export JSON Lines for every exchange"
    )


def write_har(items: Iterable[ExportItem], out: IO[str], *, title: str) -> int:
    """Write a HAR 1.2 document; returns the number of entries.

    Entries are streamed; pages (one per session) are collected on the way and
    written after the entries, with ``log.comment`` (JSON object member order is free).
    HAR 1.2 describes HTTP requests only: PostgreSQL statements and the MCP server
    requests the gateway refused are not entries; ``log.comment`` counts them
    (:func:`har_comment`). MCP calls are entries (:func:`har_entry`).
    """
    out.write('{"log":{"version":"1.2","creator":{"name":"Gatehouse","version":"0.1.0"},')
    out.write('"entries":[')
    pages: dict[str, dict[str, Any]] = {}
    n = 0
    skipped = 0
    server_requests = 0
    for item in items:
        if not in_har(item.exchange):
            if item.exchange.protocol == "mcp":
                server_requests += 1
            else:
                skipped += 1
            continue
        entry = har_entry(item)
        ref = entry["pageref"]
        if ref not in pages:
            x = item.exchange
            pages[ref] = {
                "startedDateTime": entry["startedDateTime"],
                "id": ref,
                "title": f"Gatehouse session {x.session_id or '-'}"
                f" ({x.agent.name if x.agent else '?'} → {x.target.slug if x.target else '?'})",
                "pageTimings": {"onContentLoad": -1, "onLoad": -1},
            }
        out.write(("," if n else "") + json.dumps(entry, ensure_ascii=False))
        n += 1
    out.write('],"pages":' + json.dumps(list(pages.values()), ensure_ascii=False))
    comment = har_comment(title, skipped, server_requests)
    out.write(',"comment":' + json.dumps(comment, ensure_ascii=False) + "}}")
    return n


def _public_key() -> tuple[str | None, str | None]:
    pub = verify_key()
    if pub is None:
        return None, None
    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode(), key_id(pub)


def write_jsonl(
    items: Iterable[ExportItem], out: IO[str], *, scope: dict[str, Any], by: str
) -> int:
    """Write JSON Lines evidence (header, exchanges with chain proof, footer); returns count."""
    head = ChainHead.objects.filter(pk=1).first()
    out.write(
        json.dumps(
            {
                "type": "header",
                "format": "gatehouse-evidence",
                "version": 1,
                "generated_at": iso(timezone.now()),
                "generated_by": by,
                "scope": scope,
                "chain_head": {"seq": head.seq, "hash": head.hash} if head else None,
                "canonicalization": "RFC 8785 (JCS); hashes are SHA-256, lower-case hex",
            }
        )
        + "\n"
    )
    n = 0
    for item in items:
        line = {
            "type": "exchange",
            "exchange": exchange_document(item.exchange),
            "facts": facts(item),
            "stream_entry_id": item.exchange.stream_entry_id,
            "ingested_at": iso(item.exchange.ingested_at),
            "chain": record_document(item.record) if item.record else None,
        }
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        n += 1
    anchor = ChainRecord.objects.filter(kind="anchor").order_by("-seq").first()
    public, kid = _public_key()
    out.write(
        json.dumps(
            {
                "type": "footer",
                "count": n,
                "anchor": record_document(anchor) if anchor else None,
                "verification_key": {"alg": "Ed25519", "public_key": public, "key_id": kid},
            }
        )
        + "\n"
    )
    return n


CSV_COLUMNS = [
    "started_at",
    "exchange_id",
    "session_id",
    "agent",
    "target",
    "method",
    "url",
    "status_code",
    "decision",
    "rule",
    "approval_id",
    "approvers",
    "masked_types",
    "findings",
    "total_ms",
    "chain_seq",
    "chain_hash",
    "protocol",
    "tool",
]


def csv_safe(value: Any) -> str:
    """``value`` as a CSV cell a spreadsheet will not evaluate as a formula."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def write_csv(items: Iterable[ExportItem], out: IO[str]) -> int:
    """Write the CSV summary (header row + one row per exchange); returns the count."""
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    n = 0
    for item in items:
        x = item.exchange
        findings = (x.request_findings or []) + (x.response_findings or [])
        w.writerow(
            [
                csv_safe(v)
                for v in (
                    iso(x.started_at),
                    x.id,
                    x.session_id,
                    x.agent.name if x.agent else "",
                    x.target.slug if x.target else "",
                    x.method,
                    x.url,
                    x.status_code,
                    x.decision,
                    x.rule.name if x.rule else "",
                    x.approval_id or "",
                    " ".join(f"{a['user']}:{a['verdict']}" for a in item.approvers),
                    " ".join(x.finding_types or []),
                    "; ".join(
                        f"{f.get('type')}x{f.get('count')}@{f.get('location')}"
                        for f in findings
                        if isinstance(f, dict)
                    ),
                    (x.timings or {}).get("total", ""),
                    item.record.seq if item.record else "",
                    item.record.hash if item.record else "",
                    x.protocol,
                    _mcp_details(x).get("tool") or "",
                )
            ]
        )
        n += 1
    return n

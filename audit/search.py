"""Fetching one page of search results fast, whatever the planner believes.

A filtered full-text query ordered by time with a ``LIMIT`` has two good plans: walk the
``started_at`` index from the newest row and filter (best when many rows match), or
collect the matching rows from the GIN and B-tree indexes as a bitmap and sort them
(best when few match). PostgreSQL picks between them from row estimates that assume
independent conditions; when conditions are correlated (a word that never occurs in
denied answers, say) it walks the index through most of the table. So a page is first
fetched with the planner's plan under a short ``statement_timeout``
(:data:`PLANNER_BUDGET_MS`); if that runs out, the matching ids are collected through a
``MATERIALIZED`` CTE (which forces the bitmap plan), sorted, and the page's rows loaded
by id. Either way the result is the same rows in the same order.
"""

from __future__ import annotations

from django.db import OperationalError, connection, transaction
from django.db.models import QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Substr

from audit.models import Exchange

#: Time the planner's own plan gets before the bitmap plan is used instead (ms).
PLANNER_BUDGET_MS = 60
#: ``work_mem`` for the bitmap plan, so its bitmaps stay exact (not lossy) on large tables.
BITMAP_WORK_MEM = "32MB"

_LIGHT = ("request_body", "response_body", "request_headers", "response_headers", "details")
#: Characters of a SQL statement's text a result row shows (``sql_head``).
SQL_HEAD_CHARS = 160


def fetch_page(qs: QuerySet[Exchange], offset: int, limit: int) -> list[Exchange]:
    """Rows ``offset`` to ``offset + limit`` of ``qs`` (ordered newest first: ``qs`` must be
    ordered by ``-started_at, -id``), with agent and target, bodies and headers deferred.
    Each row gets ``sql_head``: the start of its SQL text for PostgreSQL statements,
    and ``mcp_method`` and ``mcp_tool``: the JSON-RPC method and the tool (resource,
    prompt) of MCP messages (read by id for the page's statements and messages only),
    ``""`` otherwise."""
    rows = _fetch(qs, offset, limit)
    sql_ids = [x.id for x in rows if x.protocol == "postgres"]
    heads = (
        dict(
            Exchange.objects.filter(id__in=sql_ids)
            .annotate(head=Substr("request_body", 1, SQL_HEAD_CHARS))
            .values_list("id", "head")
        )
        if sql_ids
        else {}
    )
    mcp_ids = [x.id for x in rows if x.protocol == "mcp"]
    calls = {
        i: (m, t)
        for i, m, t in (
            Exchange.objects.filter(id__in=mcp_ids)
            .annotate(
                m=KeyTextTransform("jsonrpc_method", "details"),
                t=KeyTextTransform("tool", "details"),
            )
            .values_list("id", "m", "t")
            if mcp_ids
            else []
        )
    }
    for x in rows:
        x.sql_head = heads.get(x.id, "")
        method, tool = calls.get(x.id, ("", ""))
        x.mcp_method, x.mcp_tool = method or "", tool or ""
    return rows


def _fetch(qs: QuerySet[Exchange], offset: int, limit: int) -> list[Exchange]:
    page = qs.select_related("agent", "target").defer(*_LIGHT)
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(
                "SELECT set_config('statement_timeout', %s, true)", [f"{PLANNER_BUDGET_MS}"]
            )
        try:
            with transaction.atomic():
                rows = list(page[offset : offset + limit])
            with connection.cursor() as cur:
                cur.execute("SELECT set_config('statement_timeout', '0', true)")
            return rows
        except OperationalError as e:
            if getattr(e.__cause__, "sqlstate", None) != "57014":  # query_canceled
                raise
        with connection.cursor() as cur:
            cur.execute("SELECT set_config('statement_timeout', '0', true)")
            cur.execute("SELECT set_config('work_mem', %s, true)", [BITMAP_WORK_MEM])
            sql, params = qs.order_by().values("id", "started_at").query.sql_with_params()
            cur.execute(
                f"WITH m AS MATERIALIZED ({sql}) SELECT id FROM m "  # noqa: S608 (Django's SQL)
                "ORDER BY started_at DESC, id DESC LIMIT %s OFFSET %s",
                [*params, limit, offset],
            )
            ids = [r[0] for r in cur.fetchall()]
        by_id = {
            x.id: x
            for x in Exchange.objects.filter(id__in=ids)
            .select_related("agent", "target")
            .defer(*_LIGHT)
        }
        return [by_id[i] for i in ids if i in by_id]

"""Catalog lookups on a target's database: which real columns a result column comes from.

A field-name masking rule (``email``) must not be dodged by an alias
(``SELECT email AS x``), a view that renames (``CREATE VIEW v AS SELECT email AS
contact ...``) or a subquery. PostgreSQL's ``RowDescription`` names, for every result
column that is a plain column reference, the table OID and attribute number it comes
from (PostgreSQL docs, "Message Formats": RowDescription); for subqueries and CTEs the
server resolves this to the base table itself. This module turns those numbers into
names — the column's own name and, for a view's column, every column its defining
expression references (recursively through views over views, by parsing
``pg_get_viewdef`` with :mod:`.sql`) — on a connection of Gatehouse's own to the
target (logged in like the relay's, ``application_name`` ``gatehouse-catalog``).

Answers are cached per target (LRU, :data:`CACHE_SIZE` entries, :data:`CACHE_TTL`
seconds) and dropped when a DDL statement completes on any connection to the target.
Queries interpolate only integers (OIDs, attribute numbers) and quoted identifiers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any

from proxy_worker.policy import PostgresUpstream
from proxy_worker.postgres import protocol as pq
from proxy_worker.postgres import sql as sqlmod
from proxy_worker.postgres.upstream import UpstreamError, UpstreamSession, connect

log = logging.getLogger("gatehouse.postgres.catalog")

CACHE_SIZE = 20_000
CACHE_TTL = 300.0
#: How deep views over views are followed.
MAX_VIEW_DEPTH = 6
QUERY_TIMEOUT = 10.0


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (PostgreSQL ``quote_ident`` rules)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as a standard-conforming SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


class Catalog:
    """Catalog answers for one target, from one lazily opened connection (serialised)."""

    def __init__(self, pg: PostgresUpstream, *, max_message: int = pq.DEFAULT_MAX_MESSAGE) -> None:
        self.pg = pg
        self.max_message = max_message
        self._session: UpstreamSession | None = None
        self._lock = asyncio.Lock()
        self._origins: OrderedDict[tuple[int, int], tuple[float, frozenset[str]]] = OrderedDict()
        self._tables: OrderedDict[str, tuple[float, list[tuple[str, int]] | None]] = OrderedDict()
        self._functions: dict[int, str | None] = {}

    def invalidate(self) -> None:
        """Forget every cached answer (after DDL)."""
        self._origins.clear()
        self._tables.clear()
        self._functions.clear()

    async def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # ------------------------------------------------------------------ queries

    async def _query(self, text: str) -> list[list[str | None]]:
        """Run one simple query; rows as text. Raises :class:`UpstreamError`."""
        async with self._lock:
            for attempt in (1, 2):
                if self._session is None:
                    self._session = await connect(
                        self.pg,
                        {"application_name": "gatehouse-catalog", "client_encoding": "UTF8"},
                        max_message=self.max_message,
                    )
                try:
                    async with asyncio.timeout(QUERY_TIMEOUT):
                        return await self._run(self._session, text)
                except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as e:
                    self._session.close()
                    self._session = None
                    if attempt == 2:
                        raise UpstreamError("08006", f"catalog query failed: {e}") from e
        raise AssertionError("unreachable")

    @staticmethod
    async def _run(session: UpstreamSession, text: str) -> list[list[str | None]]:
        session.writer.write(pq.build_query(text))
        await session.writer.drain()
        rows: list[list[str | None]] = []
        error: dict[str, str] | None = None
        while True:
            tag, payload, _raw = await session.messages.read()
            if tag == 68:
                rows.append(
                    [None if v is None else bytes(v).decode() for v in pq.parse_data_row(payload)]
                )
            elif tag == 69:
                error = pq.parse_error_fields(payload)
            elif tag == 90:
                break
        if error is not None:
            raise UpstreamError(
                "58000", f"catalog query failed: {error.get('M', '?')} (SQLSTATE {error.get('C')})"
            )
        return rows

    # ------------------------------------------------------------------ column origins

    async def origins(self, pairs: set[tuple[int, int]]) -> dict[tuple[int, int], frozenset[str]]:
        """Names each ``(table OID, attribute number)`` is known by (lower-cased).

        The column's own name, and for a view's (or materialised view's) column the
        columns its expression references, followed through views recursively.
        Raises :class:`UpstreamError` when the catalog cannot be read.
        """
        now = time.monotonic()
        out: dict[tuple[int, int], frozenset[str]] = {}
        missing = []
        for p in pairs:
            hit = self._origins.get(p)
            if hit is not None and now - hit[0] < CACHE_TTL:
                out[p] = hit[1]
                self._origins.move_to_end(p)
            else:
                missing.append(p)
        if missing:
            found = await self._resolve(missing, depth=0)
            for p in missing:
                names = found.get(p, frozenset())
                out[p] = names
                self._origins[p] = (now, names)
            while len(self._origins) > CACHE_SIZE:
                self._origins.popitem(last=False)
        return out

    async def _resolve(
        self, pairs: list[tuple[int, int]], depth: int
    ) -> dict[tuple[int, int], frozenset[str]]:
        values = ",".join(f"({int(o)}::oid,{int(a)}::int2)" for o, a in pairs if o > 0 and a > 0)
        if not values:
            return {}
        rows = await self._query(
            "SELECT a.attrelid::int8, a.attnum, a.attname, c.relkind, "  # noqa: S608 (integers and quoted literals only)
            "CASE WHEN c.relkind IN ('v','m') THEN pg_catalog.pg_get_viewdef(c.oid) END "
            "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
            f"WHERE (a.attrelid, a.attnum) IN ({values})"
        )
        out: dict[tuple[int, int], frozenset[str]] = {}
        for oid, attnum, attname, _relkind, viewdef in rows:
            key = (int(oid or 0), int(attnum or 0))
            names = {str(attname).lower()}
            if viewdef and depth < MAX_VIEW_DEPTH:
                names |= await self._view_column_names(
                    int(oid or 0), int(attnum or 0), viewdef, depth
                )
            out[key] = frozenset(names)
        return out

    async def _view_column_names(
        self, view_oid: int, attnum: int, viewdef: str, depth: int
    ) -> set[str]:
        try:
            analyses = sqlmod.analyze(viewdef)
        except sqlmod.SqlAnalysisError:
            return set()
        if not analyses:
            return set()
        a = analyses[0]
        refs = a.output_refs
        if refs is not None and 0 < attnum <= len(refs):
            names = set(refs[attnum - 1])
        else:
            names = set(a.all_refs)
        # Columns of views the definition reads from are followed the same way.
        inner = await self._view_relations(view_oid)
        if inner and names:
            pairs = await self._columns_by_name(inner, names)
            if pairs:
                deeper = await self._resolve(pairs, depth + 1)
                for v in deeper.values():
                    names |= v
        return names

    async def _view_relations(self, view_oid: int) -> list[int]:
        """OIDs of the views and materialised views a view's rewrite rule depends on."""
        rows = await self._query(
            "SELECT DISTINCT d.refobjid::int8 FROM pg_catalog.pg_rewrite r "  # noqa: S608 (integers and quoted literals only)
            "JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass "
            "AND d.objid = r.oid "
            "JOIN pg_catalog.pg_class c ON c.oid = d.refobjid AND c.relkind IN ('v','m') "
            f"WHERE r.ev_class = {int(view_oid)}::oid AND d.refobjid <> {int(view_oid)}::oid"
        )
        return [int(r[0] or 0) for r in rows]

    async def _columns_by_name(self, rel_oids: list[int], names: set[str]) -> list[tuple[int, int]]:
        rels = ",".join(f"{int(o)}::oid" for o in rel_oids)
        lits = ",".join(quote_literal(n) for n in sorted(names))
        rows = await self._query(
            "SELECT attrelid::int8, attnum FROM pg_catalog.pg_attribute "  # noqa: S608 (integers and quoted literals only)
            f"WHERE attrelid IN ({rels}) AND lower(attname) IN ({lits}) AND attnum > 0"
        )
        return [(int(r[0] or 0), int(r[1] or 0)) for r in rows]

    # ------------------------------------------------------------------ COPY, functions

    async def table_columns(self, relation: str) -> list[tuple[str, int]] | None:
        """``[(column name, type OID)]`` of a table named as in a ``COPY`` statement
        (``name`` or ``schema.name``), in column order; ``None`` when it does not exist.

        Unqualified names resolve with the search path of the target's user on
        Gatehouse's own connection (documented in docs/postgres.md).
        """
        now = time.monotonic()
        hit = self._tables.get(relation)
        if hit is not None and now - hit[0] < CACHE_TTL:
            return hit[1]
        parts = relation.split(".")
        qualified = ".".join(quote_ident(p) for p in parts)
        rows = await self._query(
            "SELECT attname, atttypid::int8 FROM pg_catalog.pg_attribute "  # noqa: S608 (integers and quoted literals only)
            f"WHERE attrelid = pg_catalog.to_regclass({quote_literal(qualified)}) "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
        cols = [(str(r[0]).lower(), int(r[1] or 0)) for r in rows] or None
        self._tables[relation] = (now, cols)
        while len(self._tables) > 2048:
            self._tables.popitem(last=False)
        return cols

    async def function_name(self, oid: int) -> str | None:
        """``schema.name`` of the function with ``oid`` (``FunctionCall`` messages)."""
        if oid in self._functions:
            return self._functions[oid]
        rows = await self._query(
            "SELECT n.nspname || '.' || p.proname FROM pg_catalog.pg_proc p "  # noqa: S608 (integers and quoted literals only)
            "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
            f"WHERE p.oid = {int(oid)}::oid"
        )
        name = str(rows[0][0]).lower() if rows and rows[0][0] else None
        if len(self._functions) < 10_000:
            self._functions[oid] = name
        return name


def catalog_key(pg: PostgresUpstream) -> tuple[Any, ...]:
    """What identifies one catalog connection (a changed target gets a new one)."""
    return (pg.host, pg.port, pg.database, pg.user, pg.sslmode, pg.ca_pem, pg.password)


async def close_all(catalogs: dict[Any, Catalog]) -> None:
    for c in list(catalogs.values()):
        with contextlib.suppress(Exception):
            await c.close()

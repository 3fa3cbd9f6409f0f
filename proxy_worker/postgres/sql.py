"""SQL statement analysis for PostgreSQL targets, with PostgreSQL's own grammar (pure).

Every statement an agent sends (a simple ``Query`` message may hold several, a ``Parse``
message holds one) is parsed by pglast (libpg_query: the PostgreSQL 18 parser itself) and
reduced to what the SQL-aware access rules and the result masking need: the
:class:`~proxy_worker.policy.SqlFacts` of each statement, the column names behind each
result column, the ``COPY`` format, and the prepared-statement / cursor bookkeeping of
the connection. The tree is read as the JSON that libpg_query prints
(``pglast.parser.parse_sql_json``), walked as plain dicts and lists, which is several
times cheaper than pglast's Python node objects. Nothing here does I/O or imports
Django, mitmproxy or Redis.

Statement kinds
===============

``facts.kinds`` holds every effect found *anywhere* in the statement (writable CTEs,
``EXPLAIN ANALYZE``, sub-selects, ``CREATE SCHEMA`` elements, ...); ``facts.kind`` is the
worst of them by :data:`proxy_worker.policy.STATEMENT_SEVERITY`.

==============  ============================================================================
kind            statements
==============  ============================================================================
``SELECT``      ``SELECT``, ``VALUES``, ``TABLE t`` (also nested: ``INSERT ... SELECT``,
                sub-queries; but the ``VALUES`` list of ``INSERT ... VALUES`` reads
                nothing); also added by ``COPY t TO``, ``CREATE TABLE AS`` / ``SELECT
                INTO`` / ``CREATE MATERIALIZED VIEW`` (unless ``WITH NO DATA``) and
                ``REFRESH MATERIALIZED VIEW``
``INSERT``      ``INSERT``; ``COPY t FROM``; a ``MERGE ... THEN INSERT``
``UPDATE``      ``UPDATE``; ``INSERT ... ON CONFLICT DO UPDATE``; ``MERGE ... THEN UPDATE``
``DELETE``      ``DELETE``; ``TRUNCATE``; ``MERGE ... THEN DELETE``
``MERGE``       ``MERGE`` (plus the kinds of its ``WHEN`` actions)
``TRUNCATE``    ``TRUNCATE`` (with ``DELETE``, and ``unfiltered_write``)
``COPY``        every ``COPY`` (plus ``SELECT``/``INSERT`` or the inner query's kinds)
``DDL``         ``CREATE``/``ALTER``/``DROP`` of any object, ``COMMENT``, ``SECURITY
                LABEL``, renames, ``IMPORT FOREIGN SCHEMA``, ``CREATE TABLE AS``, ``SELECT
                INTO``, materialized views, ``ALTER SYSTEM``, ``CREATE/DROP DATABASE``, ...
``GRANT``       ``GRANT``/``REVOKE`` (privileges and roles), ``ALTER DEFAULT PRIVILEGES``;
                with ``DDL``: ``CREATE/ALTER/DROP ROLE|USER|GROUP``, ``REASSIGN OWNED``,
                ``DROP OWNED``, ``ALTER ... OWNER TO``; with ``SET``: ``SET ROLE``, ``SET
                SESSION AUTHORIZATION`` and their ``RESET`` forms (they change privileges)
``TRANSACTION`` ``BEGIN``/``START``, ``COMMIT``/``END``, ``ROLLBACK``/``ABORT``,
                ``SAVEPOINT``, ``RELEASE``, ``ROLLBACK TO``, two-phase commit statements
``SET``         ``SET``, ``RESET``, ``SET TRANSACTION``, ``SET CONSTRAINTS``
``SHOW``        ``SHOW``
``CALL``        ``CALL proc(...)`` (the procedure is in ``facts.functions``)
``DO``          ``DO`` (the code block is a string: it cannot be analysed)
``EXPLAIN``     ``EXPLAIN``; the explained statement's kinds count only with ``ANALYZE``
                (which executes it); its relations and functions always count
``PREPARE``     ``PREPARE name AS ...`` (not executed: relations and functions of the
                inner statement, kinds ``{PREPARE}``)
``EXECUTE``     ``EXECUTE name(...)``: the facts of the prepared statement plus ``EXECUTE``
``CURSOR``      ``DECLARE`` (plus the query's kinds), ``FETCH``/``MOVE`` (plus the cursor
                query's kinds), ``CLOSE``
``LOCK``        ``LOCK TABLE``; ``SELECT ... FOR UPDATE/SHARE`` (with ``SELECT``)
``LISTEN``      ``LISTEN``, ``UNLISTEN``, ``NOTIFY``
``MAINTENANCE`` ``VACUUM``, ``ANALYZE``, ``CLUSTER``, ``REINDEX``, ``CHECKPOINT``
``LOAD``        ``LOAD 'library'``
``UTILITY``     ``DISCARD``, ``DEALLOCATE``
==============  ============================================================================

A statement type not in this table (new grammar) raises :class:`SqlAnalysisError`: the
relay denies what it cannot classify. Statements that are stored rather than run (the
query of ``CREATE VIEW``, a ``CREATE FUNCTION ... BEGIN ATOMIC`` body, ``CREATE RULE``
actions, the inner statement of ``PREPARE``, ``EXPLAIN`` without ``ANALYZE``, ``CREATE
TABLE AS ... WITH NO DATA``, expressions inside other DDL) add their relations and
functions but not their kinds, nor ``unfiltered_write``.

Facts
=====

* ``relations``: every ``RangeVar`` anywhere (``FROM``, joins, sub-queries, DML targets,
  ``USING``, ``COPY``, ``TRUNCATE``, ``LOCK``, ``VACUUM``, ``GRANT ... ON``, DDL targets
  including ``DROP``/``COMMENT``/``SECURITY LABEL`` name lists of tables, views, sequences,
  indexes and of their columns, triggers, policies, rules and constraints), as
  ``"schema.name"`` or ``"name"`` (a catalog prefix is dropped), lower-cased. An
  unqualified name that refers to a CTE in scope is not a relation (PostgreSQL's scoping:
  a ``WITH RECURSIVE`` name is visible in all its CTEs, a plain ``WITH`` name only in the
  later ones and the statement body; a DML target or ``INTO`` table is never a CTE).
* ``functions``: every function call (``FuncCall``: select list, ``WHERE``, ``FROM``
  functions such as ``dblink(...)``, defaults and checks in DDL, ``CALL``), plus trigger
  and event-trigger functions, as ``"schema.name"`` or ``"name"``, lower-cased. SQL-syntax
  forms appear as the grammar names them (``pg_catalog.extract``, ``pg_catalog.overlay``).
  Operators and ``CURRENT_USER``-style keywords are not functions.
  **Server-side COPY**: ``COPY ... TO/FROM PROGRAM`` adds the pseudo-function
  ``copy_program`` and ``COPY ... TO/FROM 'file'`` adds ``copy_file``, so a rule with
  ``functions: ["copy_program", "copy_file"]`` targets them (the kinds stay ``COPY`` +
  ``SELECT``/``INSERT``; :attr:`CopyInfo.endpoint` says which).
* ``unfiltered_write``: an executed ``UPDATE``/``DELETE`` without ``WHERE`` anywhere
  (CTEs, ``EXPLAIN ANALYZE``, a prepared statement run by ``EXECUTE``), or ``TRUNCATE``;
  ``WHERE CURRENT OF cursor`` is a filter.
* ``unbounded_select``: the statement sends the client rows of a query that has no
  effective ``LIMIT``/``FETCH FIRST`` (``LIMIT ALL`` and ``LIMIT NULL`` are none) at its top
  level: a top-level ``SELECT``/``VALUES``/``TABLE``, the query of ``DECLARE`` or ``COPY
  (query) TO``, and ``COPY table TO`` (the whole table). A query only counts when it reads
  something: it has a ``FROM`` item or mentions a relation anywhere (so ``SELECT 1`` and
  ``SELECT now()`` do not count, ``SELECT ARRAY(SELECT email FROM users)`` does). For a set
  operation the outer ``LIMIT`` bounds it, otherwise it is bounded when every leg is. A
  ``LIMIT $1`` counts as a limit. ``FETCH ALL`` (or ``FORWARD/BACKWARD ALL``) from a cursor
  whose query is unbounded is unbounded; ``SELECT INTO`` and ``EXPLAIN ANALYZE`` send no
  rows and do not count.

Result columns
==============

:attr:`StatementAnalysis.output_refs` gives, per result column, the lower-cased column
names its expression mentions (last field of every column reference, plus composite
field names as in ``(addr).street``), widened through sub-queries in ``FROM`` and CTEs:
``SELECT x FROM (SELECT email AS x FROM users) s`` gives ``({"x", "email"},)``. It is
``None`` when the columns cannot be aligned by position: a ``*``/``t.*`` anywhere in an
output expression (also ``row_to_json(t.*)``), or a whole-row reference (a column
reference whose name is a relation or alias of the query, as in ``SELECT u FROM users
u``), also when it reaches the output through a sub-query or CTE column
(``SELECT x FROM (SELECT u AS x FROM users u) s``); :attr:`StatementAnalysis.has_star`
is then true. Views and functions cannot be seen through: ``SELECT x FROM v`` gives
``({"x"},)`` whatever ``v.x`` is made of (the relay's catalog lookups and the masking
detectors cover those).

Connection state
================

``EXECUTE``, ``FETCH`` and ``MOVE`` depend on the connection's prepared statements and
cursors, which the relay passes in (:func:`analyze`); ``PREPARE``/``DECLARE``/
``DEALLOCATE``/``CLOSE``/``DISCARD ALL`` earlier in the same text are applied to a local
copy, so ``PREPARE p AS ...; EXECUTE p`` in one ``Query`` works. ``CLOSE ALL`` and
``DEALLOCATE ALL`` report the name ``"ALL"`` (so does a statement or cursor literally
named ``"ALL"``: forgetting too much only makes a later ``EXECUTE``/``FETCH`` fail
closed). The parse and the state-free part of the analysis are cached by SQL text
(:func:`functools.lru_cache`, texts up to 8 KiB characters); the state-dependent part is
resolved on every call. Text with a NUL character is refused: PostgreSQL would read only
up to it, and so would the parser, leaving the rest unseen.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pglast import ast as _ast
from pglast import parser as _parser

from proxy_worker.policy import SqlFacts, worst_kind

__all__ = [
    "STATEMENT_TYPES",
    "CopyInfo",
    "SqlAnalysisError",
    "StatementAnalysis",
    "analyze",
    "format_sql",
    "placeholder_count",
]


class SqlAnalysisError(ValueError):
    """The SQL cannot be parsed or classified: the relay denies it (fail closed).

    ``str()`` is a message for the agent, e.g. ``syntax error at or near "SELEC"
    (position 1)`` or ``EXECUTE of unknown prepared statement "p1"``. ``position`` is the
    1-based character position in the analysed text when the parser gave one, else None.
    """

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class CopyInfo:
    """How a ``COPY`` statement moves rows (PostgreSQL documentation, "COPY").

    Attributes:
        direction: ``"in"`` (``FROM STDIN``/file/program) or ``"out"`` (``TO``).
        format: ``"text"``, ``"csv"`` or ``"binary"``.
        relation: ``"schema.name"``/``"name"`` (lower-cased) of ``COPY table``, None for
            ``COPY (query) TO``.
        columns: the explicit column list, lower-cased; None means all columns.
        endpoint: ``"stdio"`` (rows go through the connection as ``CopyData``),
            ``"file"`` (a server-side file) or ``"program"`` (a server-side program).
        delimiter: the field delimiter (default tab for text, ``,`` for csv).
        null: the NULL marker (default ``\\N`` for text, empty for csv).
        quote: the csv quote character (default ``"``).
        escape: the csv escape character (default: the quote character).
        header: the ``HEADER`` option (``MATCH`` counts as true).
        query_output_refs: for ``COPY (query) TO``, the
            :attr:`StatementAnalysis.output_refs` of the query; None otherwise or when
            the query has a ``*``.
        encoding: the ``ENCODING`` option (the encoding of the copied data), None when
            absent (the client encoding applies).
        query_relation: for ``COPY (SELECT * FROM rel ...) TO`` (one plain star over one
            table or view), ``rel`` (named as :attr:`relation`): the output columns are
            its columns, in order. None otherwise.
        query_whole_row: for ``COPY (query) TO``, :attr:`StatementAnalysis.whole_row`
            of the query.
    """

    direction: str
    format: str
    relation: str | None
    columns: tuple[str, ...] | None
    endpoint: str
    delimiter: str
    null: str
    quote: str
    escape: str
    header: bool
    query_output_refs: tuple[frozenset[str], ...] | None = None
    encoding: str | None = None
    query_relation: str | None = None
    query_whole_row: bool = False


@dataclass(frozen=True)
class StatementAnalysis:
    """One analysed statement.

    Attributes:
        sql: the statement's own text (a slice of the input without the trailing ``;``
            and surrounding whitespace).
        facts: what access rules see (:class:`~proxy_worker.policy.SqlFacts`).
        output_refs: for a statement that returns rows (``SELECT``/``VALUES``/``TABLE``,
            DML with ``RETURNING``, ``FETCH`` from a cursor, ``EXECUTE`` of a prepared
            query), one frozenset per result column of the lower-cased column names its
            expression mentions (see the module docstring); for set operations column
            *i* is the union over all legs. None when the statement returns no rows (or
            only non-table rows: ``EXPLAIN``, ``SHOW``, ``CALL``, ``COPY``) or the
            columns cannot be aligned (:attr:`has_star`).
        all_refs: every column name mentioned anywhere (column references, composite
            fields, ``INSERT``/``UPDATE`` target columns, ``COPY`` column lists),
            lower-cased, stars excluded.
        has_star: a ``*``/``t.*`` or whole-row reference in the result column list.
        whole_row: a result column may hold a whole row folded into one value
            (``t::text``, ``row_to_json(t)``, ``concat(t.*)``, a sub-query column made of
            rows): its name and references say nothing of what it holds, so the relay
            gives such columns the names of every column of the relations read. Implies
            :attr:`has_star`.
        param_count: the highest ``$n`` placeholder used (0 if none); for ``PREPARE``
            0 (the inner statement's placeholders are its own parameters, see
            :attr:`prepared`).
        copy: the :class:`CopyInfo` of a ``COPY`` statement, else None.
        prepares: the name of ``PREPARE name AS ...``.
        prepared: the analysis of the statement this one stands for: for ``PREPARE``
            the inner statement, for ``DECLARE`` the cursor's query, for ``EXECUTE`` the
            prepared statement it runs, for ``FETCH``/``MOVE`` the cursor's query.
        executes: the name of ``EXECUTE name``.
        declares: the name of ``DECLARE name CURSOR FOR ...``.
        fetches: the cursor name of ``FETCH``/``MOVE``.
        closes: the cursor name of ``CLOSE`` (``"ALL"`` for ``CLOSE ALL``).
        deallocates: the name of ``DEALLOCATE`` (``"ALL"`` for ``DEALLOCATE ALL``).
        discards_all: ``DISCARD ALL`` (drops all prepared statements and cursors).
        transaction: for transaction statements, one of ``"begin"``, ``"commit"``,
            ``"rollback"``, ``"savepoint"``, ``"release"``, ``"rollback_to"``,
            ``"prepare"``, ``"commit_prepared"``, ``"rollback_prepared"``.
    """

    sql: str
    facts: SqlFacts
    output_refs: tuple[frozenset[str], ...] | None = None
    all_refs: frozenset[str] = frozenset()
    has_star: bool = False
    whole_row: bool = False
    param_count: int = 0
    copy: CopyInfo | None = None
    prepares: str | None = None
    prepared: StatementAnalysis | None = None
    executes: str | None = None
    declares: str | None = None
    fetches: str | None = None
    closes: str | None = None
    deallocates: str | None = None
    discards_all: bool = False
    transaction: str | None = None


# --- node type tables ------------------------------------------------------------------

_DDL = frozenset(
    {
        "AlterCollationStmt", "AlterDatabaseRefreshCollStmt", "AlterDatabaseSetStmt",
        "AlterDatabaseStmt", "AlterDomainStmt", "AlterEnumStmt", "AlterEventTrigStmt",
        "AlterExtensionContentsStmt", "AlterExtensionStmt", "AlterFdwStmt",
        "AlterForeignServerStmt", "AlterFunctionStmt", "AlterObjectDependsStmt",
        "AlterObjectSchemaStmt", "AlterOpFamilyStmt", "AlterOperatorStmt", "AlterPolicyStmt",
        "AlterPublicationStmt", "AlterSeqStmt", "AlterStatsStmt", "AlterSubscriptionStmt",
        "AlterSystemStmt", "AlterTSConfigurationStmt", "AlterTSDictionaryStmt",
        "AlterTableMoveAllStmt", "AlterTableSpaceOptionsStmt", "AlterTableStmt", "AlterTypeStmt",
        "AlterUserMappingStmt", "CommentStmt", "CompositeTypeStmt", "CreateAmStmt",
        "CreateCastStmt", "CreateConversionStmt", "CreateDomainStmt", "CreateEnumStmt",
        "CreateEventTrigStmt", "CreateExtensionStmt", "CreateFdwStmt", "CreateForeignServerStmt",
        "CreateForeignTableStmt", "CreateFunctionStmt", "CreateOpClassStmt", "CreateOpFamilyStmt",
        "CreatePLangStmt", "CreatePolicyStmt", "CreatePublicationStmt", "CreateRangeStmt",
        "CreateSeqStmt", "CreateStatsStmt", "CreateStmt", "CreateSubscriptionStmt",
        "CreateTableSpaceStmt", "CreateTransformStmt", "CreateTrigStmt", "CreateUserMappingStmt",
        "CreatedbStmt", "DefineStmt", "DropStmt", "DropSubscriptionStmt", "DropTableSpaceStmt",
        "DropUserMappingStmt", "DropdbStmt", "ImportForeignSchemaStmt", "IndexStmt", "RenameStmt",
        "ReplicaIdentityStmt", "RuleStmt", "SecLabelStmt", "ViewStmt", "CreateSchemaStmt",
    }
)

#: statements whose kinds are fixed; their sub-trees are walked for relations/functions.
_FIXED: dict[str, frozenset[str]] = {
    **{t: frozenset({"DDL"}) for t in _DDL},
    **{
        t: frozenset({"DDL", "GRANT"})
        for t in (
            "CreateRoleStmt",
            "AlterRoleStmt",
            "AlterRoleSetStmt",
            "DropRoleStmt",
            "ReassignOwnedStmt",
            "DropOwnedStmt",
            "AlterOwnerStmt",
        )
    },
    **{
        t: frozenset({"GRANT"})
        for t in ("GrantStmt", "GrantRoleStmt", "AlterDefaultPrivilegesStmt")
    },
    "TransactionStmt": frozenset({"TRANSACTION"}),
    "VariableShowStmt": frozenset({"SHOW"}),
    "ConstraintsSetStmt": frozenset({"SET"}),
    "CallStmt": frozenset({"CALL"}),
    "DoStmt": frozenset({"DO"}),
    "LockStmt": frozenset({"LOCK"}),
    "ListenStmt": frozenset({"LISTEN"}),
    "UnlistenStmt": frozenset({"LISTEN"}),
    "NotifyStmt": frozenset({"LISTEN"}),
    "VacuumStmt": frozenset({"MAINTENANCE"}),
    "ClusterStmt": frozenset({"MAINTENANCE"}),
    "ReindexStmt": frozenset({"MAINTENANCE"}),
    "CheckPointStmt": frozenset({"MAINTENANCE"}),
    "LoadStmt": frozenset({"LOAD"}),
    "DiscardStmt": frozenset({"UTILITY"}),
    "DeallocateStmt": frozenset({"UTILITY"}),
    "ClosePortalStmt": frozenset({"CURSOR"}),
}

#: fixed-kind statements whose nested statements do run (``CREATE SCHEMA`` elements).
_RUNS_CHILDREN = frozenset({"CreateSchemaStmt"})

#: statements with their own handler in :class:`_Walk`.
_SPECIAL = frozenset(
    {
        "SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "TruncateStmt",
        "CopyStmt", "ExplainStmt", "PrepareStmt", "ExecuteStmt", "DeclareCursorStmt", "FetchStmt",
        "VariableSetStmt", "CreateTableAsStmt", "RefreshMatViewStmt",
    }
)

#: every statement type :func:`analyze` accepts at the top level.
STATEMENT_TYPES: frozenset[str] = frozenset(_FIXED) | _SPECIAL

#: statement nodes that only occur nested (a SQL function's ``RETURN``), harmless there.
_NESTED_ONLY = frozenset({"ReturnStmt"})

#: node types whose sub-trees hold nothing of interest (constants, names, types, roles).
_LEAVES = frozenset(
    {"String", "Integer", "Float", "Boolean", "BitString", "A_Const", "A_Star", "TypeName",
     "RoleSpec", "AccessPriv"}
)

_ROLE_SETTINGS = frozenset({"role", "session_authorization"})

_TRANSACTIONS = {
    "TRANS_STMT_BEGIN": "begin",
    "TRANS_STMT_START": "begin",
    "TRANS_STMT_COMMIT": "commit",
    "TRANS_STMT_ROLLBACK": "rollback",
    "TRANS_STMT_SAVEPOINT": "savepoint",
    "TRANS_STMT_RELEASE": "release",
    "TRANS_STMT_ROLLBACK_TO": "rollback_to",
    "TRANS_STMT_PREPARE": "prepare",
    "TRANS_STMT_COMMIT_PREPARED": "commit_prepared",
    "TRANS_STMT_ROLLBACK_PREPARED": "rollback_prepared",
}

_MERGE_COMMANDS = {"CMD_INSERT": "INSERT", "CMD_UPDATE": "UPDATE", "CMD_DELETE": "DELETE"}

#: object types whose name lists (DROP, COMMENT, SECURITY LABEL) name a relation ...
_RELATION_OBJECTS = frozenset(
    {"OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_SEQUENCE", "OBJECT_INDEX",
     "OBJECT_FOREIGN_TABLE"}
)
#: ... or a relation followed by a member name.
_RELATION_MEMBER_OBJECTS = frozenset(
    {"OBJECT_COLUMN", "OBJECT_TRIGGER", "OBJECT_POLICY", "OBJECT_RULE",
     "OBJECT_TABCONSTRAINT"}
)

_FETCH_ALL = 9223372036854775807  # FETCH_ALL = LONG_MAX in PostgreSQL's parsenodes.h


def _inline_fields() -> dict[str, dict[str, str]]:
    """Fields that libpg_query's JSON prints as a bare struct (``RangeVar *relation``).

    Fields typed ``Node *``/``List *`` carry ``{"Type": {...}}`` wrappers; fields typed as
    a concrete node pointer do not, so their type comes from pglast's slot metadata:
    ``{"DeleteStmt": {"relation": "RangeVar", ...}, ...}``.
    """
    classes = {
        name: cls
        for name, cls in vars(_ast).items()
        if isinstance(cls, type) and issubclass(cls, _ast.Node)
    }
    out: dict[str, dict[str, str]] = {}
    for name, cls in classes.items():
        slots = cls.__dict__.get("__slots__")
        if not isinstance(slots, dict):
            continue
        fields = {}
        for field, info in slots.items():
            c_type = getattr(info, "c_type", "")
            target = c_type[:-1]
            if c_type.endswith("*") and target in classes and target not in ("Node", "Expr"):
                fields[field] = target
        if fields:
            out[name] = fields
    return out


_INLINE = _inline_fields()
_NO_FIELDS: dict[str, str] = {}
_NO_SCOPE: frozenset[str] = frozenset()


# --- small helpers ---------------------------------------------------------------------


def _qualified(parts: list[str]) -> str:
    """``["db", "s", "t"]`` -> ``"s.t"``; ``["t"]`` -> ``"t"`` (lower-cased)."""
    return ".".join(parts[-2:]).lower()


def _names(items: Any) -> list[str]:
    """The ``sval`` of each ``String`` node of a name list (others skipped)."""
    out = []
    for item in items or ():
        s = item.get("String") if type(item) is dict else None
        if s is not None:
            out.append(s.get("sval", ""))
    return out


def _tagged(node: Any) -> tuple[str, dict]:
    """``{"SelectStmt": {...}}`` -> ``("SelectStmt", {...})`` (``("", {})`` otherwise)."""
    if type(node) is dict and len(node) == 1:
        ((typ, body),) = node.items()
        if type(body) is dict:
            return typ, body
    return "", {}


def _defelem_value(elem: dict) -> Any:
    """A ``DefElem``'s argument as Python: str, int, bool, ``"*"``, None when absent."""
    arg = elem.get("arg")
    if not arg:
        return None
    typ, body = _tagged(arg)
    if typ == "String":
        return body.get("sval", "")
    if typ == "Integer":
        return body.get("ival", 0)
    if typ == "Boolean":
        return bool(body.get("boolval", False))
    if typ == "Float":
        return body.get("fval", "")
    if typ == "A_Star":
        return "*"
    return arg


def _truthy(value: Any, *, missing: bool = True) -> bool:
    """PostgreSQL's ``defGetBoolean``; values it would reject count as true (fail safe)."""
    if value is None:
        return missing
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "off", "0", "no", "f", "n")
    return True


def _options(body: dict) -> dict[str, Any]:
    """``{defname: value}`` of a statement's ``options`` list of ``DefElem``."""
    out = {}
    for item in body.get("options") or ():
        typ, elem = _tagged(item)
        if typ == "DefElem":
            out[elem.get("defname", "").lower()] = _defelem_value(elem)
    return out


def _is_null_const(node: Any) -> bool:
    """``NULL`` / ``ALL`` / ``NULL::int`` as a ``LIMIT`` value."""
    typ, body = _tagged(node)
    if typ == "TypeCast":
        typ, body = _tagged(body.get("arg"))
    return typ == "A_Const" and bool(body.get("isnull"))


def _mentions_relation(node: Any) -> bool:
    """Whether a sub-tree holds a table reference (a ``RangeVar``) anywhere."""
    if type(node) is dict:
        if "RangeVar" in node or "relname" in node:
            return True
        return any(_mentions_relation(v) for v in node.values() if type(v) in (dict, list))
    if type(node) is list:
        return any(_mentions_relation(v) for v in node)
    return False


# --- the facts walk --------------------------------------------------------------------


class _Walk:
    """One pass over a statement's tree collecting :class:`SqlFacts` material.

    ``executed`` is false inside sub-trees that are stored, not run (view queries,
    function bodies, ``EXPLAIN`` without ``ANALYZE``): kinds and ``unfiltered_write`` are
    not recorded there. ``executes`` lists ``(name, executed)`` of nested ``EXECUTE``s,
    resolved against the connection's prepared statements later.
    """

    __slots__ = ("kinds", "relations", "functions", "refs", "params", "unfiltered",
                 "executes", "executed")

    def __init__(self) -> None:
        self.kinds: set[str] = set()
        self.relations: set[str] = set()
        self.functions: set[str] = set()
        self.refs: set[str] = set()
        self.params = 0
        self.unfiltered = False
        self.executes: list[tuple[str, bool]] = []
        self.executed = True

    # generic traversal

    def node(self, node: dict, scope: frozenset[str]) -> None:
        """Visit a wrapped node ``{"Type": {...}}``.

        An untyped struct is walked the same way: its keys are lower-case field names,
        which match no handler, so only their dict values are descended into.
        """
        for typ, body in node.items():
            if type(body) is dict:
                self.visit(typ, body, scope)

    def visit(self, typ: str, body: dict, scope: frozenset[str]) -> None:
        """Visit a node of type ``typ`` whose fields are ``body``."""
        handler = _HANDLERS.get(typ)
        if handler is not None:
            handler(self, body, scope)
        elif typ.endswith("Stmt") and typ[:1].isupper() and typ not in _NESTED_ONLY:
            raise SqlAnalysisError(f"statement type {typ} is not supported")
        else:
            self.fields(typ, body, scope)

    def fields(
        self, typ: str, body: dict, scope: frozenset[str], skip: tuple[str, ...] = ()
    ) -> None:
        """Visit every child of a node (typed struct fields by :data:`_INLINE`)."""
        if type(body) is not dict:
            return
        inline = _INLINE.get(typ, _NO_FIELDS)
        visit = self.visit
        for key, value in body.items():
            vtype = type(value)
            if vtype is dict:
                if key in skip:
                    continue
                target = inline.get(key)
                if target is not None:
                    visit(target, value, scope)
                else:
                    for t, b in value.items():
                        if type(b) is dict:
                            visit(t, b, scope)
            elif vtype is list:
                if key in skip:
                    continue
                for item in value:
                    if type(item) is dict:
                        for t, b in item.items():
                            if type(b) is dict:
                                visit(t, b, scope)

    def kind(self, kind: str) -> None:
        if self.executed:
            self.kinds.add(kind)

    def stored(self, typ: str, node: Any, scope: frozenset[str]) -> None:
        """Visit a sub-tree that is stored, not executed (no kinds recorded)."""
        if not node:
            return
        saved, self.executed = self.executed, False
        try:
            if typ:
                self.visit(typ, node, scope)
            elif type(node) is dict:
                self.node(node, scope)
            elif type(node) is list:
                for item in node:
                    if type(item) is dict and item:
                        self.node(item, scope)
        finally:
            self.executed = saved

    def target(self, rangevar: Any) -> None:
        """A DML/``INTO``/DDL target table: never a CTE reference."""
        if type(rangevar) is dict and rangevar:
            self.rangevar(rangevar, _NO_SCOPE)

    def with_scope(self, body: dict, scope: frozenset[str]) -> frozenset[str]:
        """Walk a ``WITH`` clause's CTEs; return the scope for the statement body."""
        wc = body.get("withClause")
        if not wc:
            return scope
        ctes = [c.get("CommonTableExpr") or {} for c in wc.get("ctes") or ()]
        names = [c.get("ctename", "") for c in ctes]
        if wc.get("recursive"):
            inner = scope | frozenset(names)
            for cte in ctes:
                self.fields("CommonTableExpr", cte, inner)
        else:
            for i, cte in enumerate(ctes):
                self.fields("CommonTableExpr", cte, scope | frozenset(names[:i]))
        return scope | frozenset(names)

    def object_names(self, objtype: str, obj: Any) -> None:
        """Relations named by a DROP/COMMENT/SECURITY LABEL object name list."""
        if objtype in _RELATION_OBJECTS:
            parts = _names(_tagged(obj)[1].get("items"))
        elif objtype in _RELATION_MEMBER_OBJECTS:
            parts = _names(_tagged(obj)[1].get("items"))[:-1]
        else:
            return
        if parts:
            self.relations.add(_qualified(parts))

    # node handlers

    def rangevar(self, body: dict, scope: frozenset[str]) -> None:
        name = body.get("relname", "")
        schema = body.get("schemaname")
        if schema:
            self.relations.add(f"{schema}.{name}".lower())
        elif name not in scope:
            self.relations.add(name.lower())

    def funccall(self, body: dict, scope: frozenset[str]) -> None:
        parts = _names(body.get("funcname"))
        if parts:
            self.functions.add(_qualified(parts))
        self.fields("FuncCall", body, scope, ("funcname",))

    def columnref(self, body: dict, scope: frozenset[str]) -> None:
        fields = body.get("fields") or ()
        if fields:
            s = fields[-1].get("String")
            if s is not None:
                self.refs.add(s.get("sval", "").lower())

    def indirection(self, body: dict, scope: frozenset[str]) -> None:
        for item in body.get("indirection") or ():
            s = item.get("String")
            if s is not None:
                self.refs.add(s.get("sval", "").lower())
        self.fields("A_Indirection", body, scope)

    def target_names(self, targets: Any) -> None:
        """``INSERT (cols)`` / ``UPDATE SET col = ...`` column names into ``refs``."""
        for item in targets or ():
            typ, rt = _tagged(item)
            if typ == "ResTarget" and rt.get("name"):
                self.refs.add(rt["name"].lower())

    def select(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("SELECT")
        inner = self.with_scope(body, scope)
        into = body.get("intoClause")
        if into:
            self.visit("IntoClause", into, inner)
        self.fields("SelectStmt", body, inner, ("withClause", "intoClause"))

    def into(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("DDL")
        self.target(body.get("rel"))
        self.fields("IntoClause", body, scope, ("rel",))

    def locking(self, body: dict, scope: frozenset[str]) -> None:
        # ``FOR UPDATE OF a`` names FROM items (aliases), not relations.
        self.kind("LOCK")

    def insert(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("INSERT")
        inner = self.with_scope(body, scope)
        self.target(body.get("relation"))
        self.target_names(body.get("cols"))
        source = body.get("selectStmt")
        styp, sbody = _tagged(source)
        if styp == "SelectStmt" and "valuesLists" in sbody:
            # INSERT ... VALUES reads nothing: no SELECT kind for the VALUES list itself.
            self.fields("SelectStmt", sbody, inner)
        elif source:
            self.node(source, inner)
        conflict = body.get("onConflictClause")
        if conflict:
            if conflict.get("action") == "ONCONFLICT_UPDATE":
                self.kind("UPDATE")
            self.target_names(conflict.get("targetList"))
        self.fields("InsertStmt", body, inner, ("withClause", "relation", "selectStmt"))

    def update(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("UPDATE")
        if not body.get("whereClause") and self.executed:
            self.unfiltered = True
        inner = self.with_scope(body, scope)
        self.target(body.get("relation"))
        self.target_names(body.get("targetList"))
        self.fields("UpdateStmt", body, inner, ("withClause", "relation"))

    def delete(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("DELETE")
        if not body.get("whereClause") and self.executed:
            self.unfiltered = True
        inner = self.with_scope(body, scope)
        self.target(body.get("relation"))
        self.fields("DeleteStmt", body, inner, ("withClause", "relation"))

    def merge(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("MERGE")
        inner = self.with_scope(body, scope)
        self.target(body.get("relation"))
        self.fields("MergeStmt", body, inner, ("withClause", "relation"))

    def merge_when(self, body: dict, scope: frozenset[str]) -> None:
        kind = _MERGE_COMMANDS.get(body.get("commandType", ""))
        if kind:
            self.kind(kind)
        self.target_names(body.get("targetList"))
        self.fields("MergeWhenClause", body, scope)

    def truncate(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("TRUNCATE")
        self.kind("DELETE")
        if self.executed:
            self.unfiltered = True
        for item in body.get("relations") or ():
            self.target(_tagged(item)[1])

    def copy(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("COPY")
        relation = body.get("relation")
        if relation:
            self.target(relation)
            self.kind("INSERT" if body.get("is_from") else "SELECT")
        for name in _names(body.get("attlist")):
            self.refs.add(name.lower())
        self.fields("CopyStmt", body, scope, ("relation", "attlist", "options"))

    def explain(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("EXPLAIN")
        opts = _options(body)
        analyze = _truthy(opts["analyze"]) if "analyze" in opts else False
        if "analyse" in opts:
            analyze = analyze or _truthy(opts["analyse"])
        if analyze:
            self.fields("ExplainStmt", body, scope, ("options",))
        else:
            self.stored("", body.get("query"), scope)

    def create_table_as(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("DDL")
        into = body.get("into") or {}
        self.target(into.get("rel"))
        if into.get("skipData"):
            self.stored("", body.get("query"), scope)
        else:
            self.fields("CreateTableAsStmt", body, scope, ("into",))

    def refresh(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("DDL")
        if not body.get("skipData"):
            self.kind("SELECT")
        self.target(body.get("relation"))

    def prepare(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("PREPARE")
        self.stored("", body.get("query"), scope)

    def execute(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("EXECUTE")
        self.executes.append((body.get("name", ""), self.executed))
        self.fields("ExecuteStmt", body, scope)

    def declare(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("CURSOR")
        self.fields("DeclareCursorStmt", body, scope)

    def fetch(self, body: dict, scope: frozenset[str]) -> None:
        raise SqlAnalysisError("FETCH/MOVE cannot be nested in another statement")

    def variable_set(self, body: dict, scope: frozenset[str]) -> None:
        self.kind("SET")
        if (body.get("name") or "").lower() in _ROLE_SETTINGS:
            self.kind("GRANT")
        self.fields("VariableSetStmt", body, scope)

    def fixed(self, typ: str, body: dict, scope: frozenset[str]) -> None:
        """A statement of :data:`_FIXED` kinds; nested statements there are stored."""
        for kind in _FIXED[typ]:
            self.kind(kind)
        if typ == "DropStmt":
            objtype = body.get("removeType", "")
            for obj in body.get("objects") or ():
                self.object_names(objtype, obj)
        elif typ in ("CommentStmt", "SecLabelStmt"):
            self.object_names(body.get("objtype", ""), body.get("object"))
        elif typ in ("CreateTrigStmt", "CreateEventTrigStmt"):
            parts = _names(body.get("funcname"))
            if parts:
                self.functions.add(_qualified(parts))
        elif typ == "RenameStmt" and body.get("renameType") == "OBJECT_ROLE":
            self.kind("GRANT")
        elif typ == "AlterTableStmt" and any(
            _tagged(cmd)[1].get("subtype") == "AT_ChangeOwner" for cmd in body.get("cmds") or ()
        ):
            self.kind("GRANT")  # ALTER TABLE ... OWNER TO
        if typ in _RUNS_CHILDREN or not self.executed or "DDL" not in _FIXED[typ]:
            self.fields(typ, body, scope)
        else:
            self.stored_fields(typ, body, scope)

    def stored_fields(self, typ: str, body: dict, scope: frozenset[str]) -> None:
        saved, self.executed = self.executed, False
        try:
            self.fields(typ, body, scope)
        finally:
            self.executed = saved


def _leaf(walk: _Walk, body: dict, scope: frozenset[str]) -> None:
    """Constants, names, types and roles hold nothing of interest."""


def _param(walk: _Walk, body: dict, scope: frozenset[str]) -> None:
    walk.params = max(walk.params, body.get("number", 0))


def _fixed_handler(typ: str) -> Any:
    def handler(walk: _Walk, body: dict, scope: frozenset[str]) -> None:
        walk.fixed(typ, body, scope)

    return handler


_HANDLERS: dict[str, Any] = {
    **{t: _leaf for t in _LEAVES},
    **{t: _fixed_handler(t) for t in _FIXED},
    "ParamRef": _param,
    "RangeVar": _Walk.rangevar,
    "FuncCall": _Walk.funccall,
    "ColumnRef": _Walk.columnref,
    "A_Indirection": _Walk.indirection,
    "SelectStmt": _Walk.select,
    "IntoClause": _Walk.into,
    "LockingClause": _Walk.locking,
    "InsertStmt": _Walk.insert,
    "UpdateStmt": _Walk.update,
    "DeleteStmt": _Walk.delete,
    "MergeStmt": _Walk.merge,
    "MergeWhenClause": _Walk.merge_when,
    "TruncateStmt": _Walk.truncate,
    "CopyStmt": _Walk.copy,
    "ExplainStmt": _Walk.explain,
    "CreateTableAsStmt": _Walk.create_table_as,
    "RefreshMatViewStmt": _Walk.refresh,
    "PrepareStmt": _Walk.prepare,
    "ExecuteStmt": _Walk.execute,
    "DeclareCursorStmt": _Walk.declare,
    "FetchStmt": _Walk.fetch,
    "VariableSetStmt": _Walk.variable_set,
}


# --- result columns ----------------------------------------------------------------------


class _Refs:
    """Column names, stars and range names inside one output expression."""

    __slots__ = ("names", "star", "ranges")

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.star = False
        self.ranges: set[str] = set()

    def scan(self, node: Any) -> None:
        if type(node) is list:
            for item in node:
                self.scan(item)
            return
        if type(node) is not dict:
            return
        for key, value in node.items():
            if key == "ColumnRef":
                fields = value.get("fields") or ()
                if fields:
                    last = fields[-1]
                    s = last.get("String")
                    if s is not None:
                        self.names.add(s.get("sval", "").lower())
                    elif "A_Star" in last:
                        self.star = True
            elif key == "A_Star":
                self.star = True
            elif key == "A_Indirection":
                for item in value.get("indirection") or ():
                    s = item.get("String")
                    if s is not None:
                        self.names.add(s.get("sval", "").lower())
                self.scan(value)
            elif key == "RangeVar":
                self.ranges.add(value.get("relname", "").lower())
                self.scan(value)
            elif key == "alias" and type(value) is dict:
                self.ranges.add(value.get("aliasname", "").lower())
            elif type(value) in (dict, list):
                self.scan(value)


#: marks a derived column that carries a whole row (or a star folded into one value).
_WHOLE_ROW = "*"

#: positional result columns: ``[(name, refs), ...]``; None = not alignable.
_Columns = list[tuple[str, frozenset[str]]]


@dataclass
class _Source:
    """What a CTE or ``FROM`` sub-query exposes: positional columns (None with a ``*``)
    and ``{column name: refs}`` for widening references to it."""

    columns: _Columns | None
    names: dict[str, frozenset[str]]


def _rename(source: _Source, colnames: list[str]) -> _Source:
    """Apply an alias column list ``AS s(a, b)`` / ``WITH d(a, b)``."""
    if not colnames:
        return source
    colnames = [c.lower() for c in colnames]
    if source.columns is not None:
        cols = [
            (colnames[i] if i < len(colnames) else name, refs)
            for i, (name, refs) in enumerate(source.columns)
        ]
        return _Source(cols, _merge_names(cols))
    everything = frozenset().union(*source.names.values()) if source.names else frozenset()
    names = dict(source.names)
    for c in colnames:
        names[c] = everything | {c}
    return _Source(None, names)


def _merge_names(cols: _Columns) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for name, refs in cols:
        out[name] = out.get(name, frozenset()) | refs
    return out


def _default_name(val: Any) -> str:
    """PostgreSQL's column name for an unnamed output expression (FigureColname, roughly)."""
    typ, body = _tagged(val)
    if typ == "ColumnRef":
        parts = _names(body.get("fields"))
        return parts[-1].lower() if parts else "?column?"
    if typ == "FuncCall":
        parts = _names(body.get("funcname"))
        return parts[-1].lower() if parts else "?column?"
    if typ == "TypeCast":
        return _default_name(body.get("arg"))
    if typ == "A_Indirection":
        parts = _names(body.get("indirection"))
        return parts[-1].lower() if parts else _default_name(body.get("arg"))
    return "?column?"


def _expr_refs(val: Any) -> tuple[set[str], bool, set[str]]:
    """``(column names, has a star, range names inside)`` of an output expression."""
    typ, body = _tagged(val)
    if typ == "ColumnRef":  # the common case, without the generic scan
        fields = body.get("fields") or ()
        s = fields[-1].get("String") if fields else None
        if s is not None:
            return {s.get("sval", "").lower()}, False, set()
    r = _Refs()
    r.scan(val)
    return r.names, r.star, r.ranges


def _target_columns(
    targets: Any, fmap: dict[str, frozenset[str]], ranges: set[str]
) -> _Columns | None:
    """Result columns of a target/``RETURNING`` list; None on a star or whole-row ref."""
    cols: _Columns = []
    for item in targets or ():
        typ, rt = _tagged(item)
        if typ != "ResTarget":
            return None
        val = rt.get("val")
        names, star, inner_ranges = _expr_refs(val)
        if star or not names.isdisjoint(ranges) or not names.isdisjoint(inner_ranges):
            return None
        refs = names
        if fmap:
            refs = set(names)
            for name in names:
                more = fmap.get(name)
                if more:
                    refs |= more
        if _WHOLE_ROW in refs:
            return None
        name = rt.get("name")
        cols.append((name.lower() if name else _default_name(val), frozenset(refs)))
    return cols


def _from_item(
    node: Any,
    env: dict[str, _Source],
    fmap: dict[str, frozenset[str]],
    ranges: set[str],
) -> None:
    """Add one ``FROM`` item's exposed names to ``fmap`` and its range names to ``ranges``."""
    typ, body = _tagged(node)
    alias = body.get("alias")
    colnames: list[str] = []
    if alias:
        if alias.get("aliasname"):
            ranges.add(alias["aliasname"].lower())
        colnames = _names(alias.get("colnames"))
    source = None
    if typ == "RangeVar":
        name = body.get("relname", "")
        ranges.add(name.lower())
        if not body.get("schemaname") and name in env:
            source = _rename(env[name], colnames)
    elif typ == "RangeSubselect":
        styp, sbody = _tagged(body.get("subquery"))
        source = _rename(_source(styp, sbody, env), colnames)
    elif typ == "JoinExpr":
        _from_item(body.get("larg"), env, fmap, ranges)
        _from_item(body.get("rarg"), env, fmap, ranges)
    elif typ == "RangeFunction":
        for fn in body.get("functions") or ():
            for part in _tagged(fn)[1].get("items") or ():
                ftyp, fbody = _tagged(part)
                if ftyp == "FuncCall":
                    names = _names(fbody.get("funcname"))
                    if names:
                        ranges.add(names[-1].lower())
    elif typ == "RangeTableSample":
        _from_item(body.get("relation"), env, fmap, ranges)
    if source is not None:
        for name, refs in source.names.items():
            fmap[name] = fmap.get(name, frozenset()) | refs


def _from_map(
    items: Any, env: dict[str, _Source]
) -> tuple[dict[str, frozenset[str]], set[str]]:
    """``{name: refs}`` exposed by derived tables/CTEs of a ``FROM`` list, and the range
    names (relations and aliases) it defines."""
    fmap: dict[str, frozenset[str]] = {}
    ranges: set[str] = set()
    for item in items or ():
        _from_item(item, env, fmap, ranges)
    return fmap, ranges


def _with_env(body: dict, env: dict[str, _Source]) -> dict[str, _Source]:
    """The CTE sources visible in a statement's body."""
    wc = body.get("withClause")
    if not wc:
        return env
    env = dict(env)
    for item in wc.get("ctes") or ():
        cte = item.get("CommonTableExpr") or {}
        qtyp, qbody = _tagged(cte.get("ctequery"))
        env[cte.get("ctename", "")] = _rename(
            _source(qtyp, qbody, env), _names(cte.get("aliascolnames"))
        )
    return env


def _columns(typ: str, body: dict, env: dict[str, _Source]) -> _Columns | None:
    """Positional result columns of a row-returning node (``[]`` when it returns none)."""
    if typ == "SelectStmt":
        env = _with_env(body, env)
        if body.get("op", "SETOP_NONE") != "SETOP_NONE":
            left = _columns("SelectStmt", body.get("larg") or {}, env)
            right = _columns("SelectStmt", body.get("rarg") or {}, env)
            if left is None or right is None or len(left) != len(right):
                return None
            return [(ln, lr | rr) for (ln, lr), (_, rr) in zip(left, right, strict=True)]
        if "valuesLists" in body:
            cols: _Columns = []
            for row in body["valuesLists"]:
                items = _tagged(row)[1].get("items") or ()
                for i, val in enumerate(items):
                    r = _Refs()
                    r.scan(val)
                    if r.star:
                        return None
                    if i < len(cols):
                        cols[i] = (cols[i][0], cols[i][1] | r.names)
                    else:
                        cols.append((f"column{i + 1}", frozenset(r.names)))
            return cols
        fmap, ranges = _from_map(body.get("fromClause"), env)
        return _target_columns(body.get("targetList"), fmap, ranges)
    if typ in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
        returning = (body.get("returningClause") or {}).get("exprs")
        if not returning:
            return []
        env = _with_env(body, env)
        sources = (
            body.get("fromClause")
            or body.get("usingClause")
            or ([body["sourceRelation"]] if body.get("sourceRelation") else [])
        )
        fmap, ranges = _from_map(sources, env)
        rel = body.get("relation") or {}
        ranges.update({rel.get("relname", "").lower(), "old", "new"})
        alias = (rel.get("alias") or {}).get("aliasname")
        if alias:
            ranges.add(alias.lower())
        return _target_columns(returning, fmap, ranges)
    return None


def _source(typ: str, body: dict, env: dict[str, _Source]) -> _Source:
    """What a CTE query or ``FROM`` sub-query exposes to the enclosing query."""
    cols = _columns(typ, body, env)
    if cols is not None:
        return _Source(cols, _merge_names(cols))
    names: dict[str, frozenset[str]] = {}
    if typ == "SelectStmt":
        inner_env = _with_env(body, env)
        if body.get("op", "SETOP_NONE") != "SETOP_NONE":
            for leg in ("larg", "rarg"):
                leg_source = _source("SelectStmt", body.get(leg) or {}, inner_env)
                for name, refs in leg_source.names.items():
                    names[name] = names.get(name, frozenset()) | refs
        else:
            # ``SELECT *, lower(x) AS y FROM (...)``: the inner names pass through; a
            # column made from a whole row (``SELECT u AS x FROM users u``) is marked
            # :data:`_WHOLE_ROW` so that a query over it cannot be aligned either.
            fmap, ranges = _from_map(body.get("fromClause"), inner_env)
            names.update(fmap)
            for item in body.get("targetList") or ():
                rt = _tagged(item)[1]
                val = rt.get("val")
                found, star, inner_ranges = _expr_refs(val)
                refs = set(found)
                for n in found:
                    refs |= fmap.get(n, frozenset())
                if not found.isdisjoint(ranges) or not found.isdisjoint(inner_ranges):
                    refs.add(_WHOLE_ROW)
                elif star and not _is_plain_star(val):
                    refs.add(_WHOLE_ROW)  # row_to_json(t.*), (t).*: every column in one
                if rt.get("name") or not star:
                    key = (rt.get("name") or _default_name(val)).lower()
                    names[key] = names.get(key, frozenset()) | refs
    return _Source(None, names)


def _is_plain_star(val: Any) -> bool:
    """``*`` or ``t.*`` as a whole output item (its columns keep their own names)."""
    typ, body = _tagged(val)
    if typ != "ColumnRef":
        return False
    fields = body.get("fields") or ()
    return bool(fields) and "A_Star" in fields[-1]


def _returning_scope(
    typ: str, body: dict, env: dict[str, _Source]
) -> tuple[Any, dict[str, frozenset[str]], set[str], dict[str, _Source]] | None:
    """``(output items, names exposed by FROM, range names, CTEs)`` of a plain
    ``SELECT`` or of DML with ``RETURNING`` (None for anything else)."""
    if typ == "SelectStmt":
        env = _with_env(body, env)
        fmap, ranges = _from_map(body.get("fromClause"), env)
        return body.get("targetList"), fmap, ranges, env
    if typ in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
        returning = (body.get("returningClause") or {}).get("exprs")
        if not returning:
            return None
        env = _with_env(body, env)
        sources = (
            body.get("fromClause")
            or body.get("usingClause")
            or ([body["sourceRelation"]] if body.get("sourceRelation") else [])
        )
        fmap, ranges = _from_map(sources, env)
        rel = body.get("relation") or {}
        ranges.update({rel.get("relname", "").lower(), "old", "new"})
        alias = (rel.get("alias") or {}).get("aliasname")
        if alias:
            ranges.add(alias.lower())
        return returning, fmap, ranges, env
    return None


def _whole_row_output(typ: str, body: dict, env: dict[str, _Source]) -> bool:
    """Whether a result column may hold a whole row folded into one value (``t::text``,
    ``row_to_json(t)``, ``concat(t.*)``, directly or through a sub-query or CTE column):
    then no column name says what it holds (see :attr:`StatementAnalysis.whole_row`)."""
    if typ == "SelectStmt" and body.get("op", "SETOP_NONE") != "SETOP_NONE":
        env = _with_env(body, env)
        return any(
            _whole_row_output("SelectStmt", body.get(leg) or {}, env) for leg in ("larg", "rarg")
        )
    if typ == "SelectStmt" and "valuesLists" in body:
        env = _with_env(body, env)
        return any(
            _holds_whole_row(val, {}, set(), env)
            for row in body["valuesLists"]
            for val in _tagged(row)[1].get("items") or ()
        )
    scope = _returning_scope(typ, body, env)
    if scope is None:
        return False
    items, fmap, ranges, env = scope
    for item in items or ():
        val = _tagged(item)[1].get("val")
        if _is_plain_star(val):
            # Its columns keep their names, but a sub-query column may itself be a row.
            if any(_WHOLE_ROW in refs for refs in fmap.values()):
                return True
        elif _holds_whole_row(val, fmap, ranges, env):
            return True
    return False


def _holds_whole_row(
    node: Any,
    fmap: dict[str, frozenset[str]],
    ranges: set[str],
    env: dict[str, _Source],
    selected: bool = False,
) -> bool:
    """Whether an expression mentions a whole row: a star inside it, a reference to a
    range (``t``) or to a sub-query column made of rows, unless a field of it is
    selected (``(t).name``: that field only); scalar and array sub-queries count by their
    own output. ``count(*)`` does not count."""
    if type(node) is list:
        return any(_holds_whole_row(n, fmap, ranges, env) for n in node)
    if type(node) is not dict:
        return False
    for key, value in node.items():
        if key == "ColumnRef":
            fields = value.get("fields") or ()
            if not fields:
                continue
            last = fields[-1]
            if "A_Star" in last:
                return True
            name = (last.get("String") or {}).get("sval", "").lower()
            if not selected and (name in ranges or _WHOLE_ROW in fmap.get(name, ())):
                return True
        elif key == "A_Star":
            return True
        elif key == "A_Indirection":
            ind = value.get("indirection") or []
            if any(type(i) is dict and "A_Star" in i for i in ind):
                return True
            first_field = bool(ind) and type(ind[0]) is dict and "String" in ind[0]
            if _holds_whole_row(value.get("arg"), fmap, ranges, env, first_field):
                return True
            if _holds_whole_row(ind, fmap, ranges, env):
                return True
        elif key == "SubLink":
            if value.get("subLinkType") in ("EXPR_SUBLINK", "ARRAY_SUBLINK", "MULTIEXPR_SUBLINK"):
                styp, sbody = _tagged(value.get("subselect"))
                if styp and _whole_row_output(styp, sbody, env):
                    return True
            if _holds_whole_row(value.get("testexpr"), fmap, ranges, env):
                return True
        elif type(value) in (dict, list) and _holds_whole_row(value, fmap, ranges, env):
            return True
    return False


def _star_relation(typ: str, body: dict) -> str | None:
    """For ``SELECT * FROM rel ...`` (one plain ``*``/``rel.*`` over one table or view,
    no set operation, no CTE of that name): ``rel`` as :class:`CopyInfo` names
    relations; otherwise None."""
    if typ != "SelectStmt" or body.get("op", "SETOP_NONE") != "SETOP_NONE":
        return None
    if "valuesLists" in body:
        return None
    targets = body.get("targetList") or ()
    froms = body.get("fromClause") or ()
    if len(targets) != 1 or len(froms) != 1:
        return None
    if not _is_plain_star(_tagged(targets[0])[1].get("val")):
        return None
    ftyp, rv = _tagged(froms[0])
    if ftyp != "RangeVar" or not rv.get("relname"):
        return None
    relname = rv["relname"].lower()
    if not rv.get("schemaname") and relname in _with_env(body, {}):
        return None
    return f"{rv['schemaname']}.{relname}".lower() if rv.get("schemaname") else relname


def _bounded(body: dict) -> bool:
    """Whether a top-level query is limited (or reads nothing)."""
    limit = body.get("limitCount")
    if limit is not None and not _is_null_const(limit):
        return True
    if body.get("op", "SETOP_NONE") != "SETOP_NONE":
        return _bounded(body.get("larg") or {}) and _bounded(body.get("rarg") or {})
    return not body.get("fromClause") and not _mentions_relation(body)


# --- statement assembly ------------------------------------------------------------------


@dataclass(frozen=True)
class _Pending:
    """A statement whose analysis needs the connection's prepared statements/cursors."""

    base: StatementAnalysis
    executes: tuple[tuple[str, bool], ...] = ()
    top_execute: bool = False
    fetch_all: bool = False
    is_move: bool = False


_Item = StatementAnalysis | _Pending


def _copy_endpoint(body: dict, sql: str) -> str:
    """``"stdio"``, ``"file"`` or ``"program"`` for a ``CopyStmt`` of text ``sql``.

    libpg_query's JSON leaves out an empty file name, so ``COPY t FROM ''`` would look
    like ``FROM STDIN``: without a file name the token after the top-level ``FROM``/``TO``
    must be ``STDIN``/``STDOUT``, else it is a (server-side) file.
    """
    if body.get("is_program"):
        return "program"
    if body.get("filename") is not None:
        return "file"
    try:
        tokens = _parser.scan(sql)
    except Exception:  # noqa: BLE001 - it parsed; fail towards the server-side reading
        return "file"
    depth = 0
    for i, tok in enumerate(tokens):
        if tok.name == "ASCII_40":
            depth += 1
        elif tok.name == "ASCII_41":
            depth -= 1
        elif depth == 0 and tok.name in ("FROM", "TO"):
            after = tokens[i + 1].name if i + 1 < len(tokens) else ""
            return "stdio" if after in ("STDIN", "STDOUT") else "file"
    return "file"


def _copy_info(
    body: dict, env: dict[str, _Source], sql: str
) -> tuple[CopyInfo, bool, bool]:
    """``(CopyInfo, unbounded_select, has_star)`` of a ``CopyStmt`` of text ``sql``."""
    opts = _options(body)
    fmt = str(opts.get("format") or "text").lower()
    csv = fmt == "csv"
    quote = opts.get("quote")
    quote = quote if isinstance(quote, str) else '"'
    escape = opts.get("escape")
    escape = escape if isinstance(escape, str) else quote
    delimiter = opts.get("delimiter")
    null = opts.get("null")
    relation = body.get("relation")
    relname = None
    if relation:
        relname = (
            f"{relation['schemaname']}.{relation.get('relname', '')}"
            if relation.get("schemaname")
            else relation.get("relname", "")
        ).lower()
    attlist = _names(body.get("attlist"))
    is_from = bool(body.get("is_from"))
    endpoint = _copy_endpoint(body, sql)
    query_refs = None
    unbounded = False
    has_star = False
    star_relation = None
    whole_row = False
    qtyp, qbody = _tagged(body.get("query"))
    if qtyp:
        cols = _columns(qtyp, qbody, env)
        if cols is None:
            has_star = True
            star_relation = _star_relation(qtyp, qbody)
            whole_row = _whole_row_output(qtyp, qbody, env)
        else:
            query_refs = tuple(refs for _, refs in cols)
        if qtyp == "SelectStmt":
            unbounded = not _bounded(qbody)
    elif relation and not is_from:
        unbounded = True  # COPY table TO: the whole table
    header = opts.get("header")
    encoding = opts.get("encoding")
    info = CopyInfo(
        direction="in" if is_from else "out",
        format=fmt,
        relation=relname,
        columns=tuple(a.lower() for a in attlist) if attlist else None,
        endpoint=endpoint,
        delimiter=delimiter if isinstance(delimiter, str) else ("," if csv else "\t"),
        null=null if isinstance(null, str) else ("" if csv else "\\N"),
        quote=quote,
        escape=escape,
        header=("header" in opts) and _truthy(header),
        query_output_refs=query_refs,
        encoding=encoding if isinstance(encoding, str) else None,
        query_relation=star_relation,
        query_whole_row=whole_row,
    )
    return info, unbounded, has_star


def _inner_text(sql: str, opener: str, after: str | None = None) -> str:
    """The text after the first top-level keyword ``opener`` (after ``after``, if given):
    ``PREPARE p(int) AS <here>``, ``DECLARE c CURSOR FOR <here>``. The whole text when
    the scanner cannot find it."""
    try:
        tokens = _parser.scan(sql)
    except Exception:  # noqa: BLE001 - scanning only serves display text
        return sql
    seen = after is None
    depth = 0
    for tok in tokens:
        if tok.name == "ASCII_40":
            depth += 1
        elif tok.name == "ASCII_41":
            depth -= 1
        elif depth == 0 and not seen and tok.name == after:
            seen = True
        elif depth == 0 and seen and tok.name == opener:
            return sql[tok.end + 1 :].strip()
    return sql


def _statement(typ: str, body: dict, sql: str) -> _Item:
    """Analyse one top-level statement node; :class:`_Pending` when state is needed."""
    if typ not in STATEMENT_TYPES:
        raise SqlAnalysisError(f"statement type {typ or 'unknown'} is not supported")

    if typ == "PrepareStmt":
        qtyp, qbody = _tagged(body.get("query"))
        inner = _statement(qtyp, qbody, _inner_text(sql, "AS"))
        if isinstance(inner, _Pending):  # the grammar allows no EXECUTE here
            raise SqlAnalysisError("PREPARE of a statement that needs connection state")
        f = inner.facts
        facts = SqlFacts(
            kind="PREPARE",
            kinds=frozenset({"PREPARE"}),
            relations=f.relations,
            functions=f.functions,
        )
        return StatementAnalysis(
            sql=sql,
            facts=facts,
            all_refs=inner.all_refs,
            prepares=body.get("name", ""),
            prepared=inner,
        )

    if typ == "DeclareCursorStmt":
        qtyp, qbody = _tagged(body.get("query"))
        inner = _statement(qtyp, qbody, _inner_text(sql, "FOR", after="CURSOR"))
        if isinstance(inner, _Pending):
            raise SqlAnalysisError("DECLARE of a statement that needs connection state")
        f = inner.facts
        kinds = f.kinds | {"CURSOR"}
        facts = SqlFacts(
            kind=worst_kind(kinds),
            kinds=kinds,
            relations=f.relations,
            functions=f.functions,
            unfiltered_write=f.unfiltered_write,
            unbounded_select=f.unbounded_select,
        )
        return StatementAnalysis(
            sql=sql,
            facts=facts,
            all_refs=inner.all_refs,
            param_count=inner.param_count,
            declares=body.get("portalname", ""),
            prepared=inner,
        )

    if typ == "FetchStmt":
        base = StatementAnalysis(
            sql=sql,
            facts=SqlFacts(kind="CURSOR", kinds=frozenset({"CURSOR"})),
            fetches=body.get("portalname", ""),
        )
        return _Pending(
            base,
            fetch_all=body.get("howMany", 0) == _FETCH_ALL
            and body.get("direction", "FETCH_FORWARD") in ("FETCH_FORWARD", "FETCH_BACKWARD"),
            is_move=bool(body.get("ismove")),
        )

    w = _Walk()
    w.visit(typ, body, _NO_SCOPE)
    output_refs = None
    has_star = False
    whole_row = False
    unbounded = False
    copy = None
    if typ == "SelectStmt" and not body.get("intoClause"):
        cols = _columns(typ, body, {})
        if cols is None:
            has_star = True
            whole_row = _whole_row_output(typ, body, {})
        else:
            output_refs = tuple(refs for _, refs in cols)
        unbounded = not _bounded(body)
    elif typ in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt") and body.get(
        "returningClause"
    ):
        cols = _columns(typ, body, {})
        if cols is None:
            has_star = True
            whole_row = _whole_row_output(typ, body, {})
        else:
            output_refs = tuple(refs for _, refs in cols)
    elif typ == "CopyStmt":
        copy, unbounded, has_star = _copy_info(body, {}, sql)
        if copy.endpoint != "stdio":  # server-side COPY: see the module docstring
            w.functions.add("copy_program" if copy.endpoint == "program" else "copy_file")

    kinds = frozenset(w.kinds)
    facts = SqlFacts(
        kind=worst_kind(kinds),
        kinds=kinds,
        relations=frozenset(w.relations),
        functions=frozenset(w.functions),
        unfiltered_write=w.unfiltered,
        unbounded_select=unbounded,
    )
    closes = deallocates = transaction = None
    if typ == "ClosePortalStmt":
        closes = body.get("portalname") or "ALL"
    elif typ == "DeallocateStmt":
        deallocates = "ALL" if body.get("isall") or not body.get("name") else body["name"]
    elif typ == "TransactionStmt":
        transaction = _TRANSACTIONS.get(body.get("kind", ""))
    analysis = StatementAnalysis(
        sql=sql,
        facts=facts,
        output_refs=output_refs,
        all_refs=frozenset(w.refs),
        has_star=has_star,
        whole_row=whole_row,
        param_count=w.params,
        copy=copy,
        executes=body.get("name", "") if typ == "ExecuteStmt" else None,
        closes=closes,
        deallocates=deallocates,
        discards_all=typ == "DiscardStmt" and body.get("target") == "DISCARD_ALL",
        transaction=transaction,
    )
    if w.executes:
        return _Pending(analysis, tuple(w.executes), top_execute=typ == "ExecuteStmt")
    return analysis


def _parse_json(sql: str) -> dict:
    """libpg_query's JSON parse tree of ``sql`` (raises :class:`SqlAnalysisError`)."""
    try:
        return json.loads(_parser.parse_sql_json(sql))
    except _parser.ParseError as exc:
        message = exc.args[0] if exc.args else str(exc)
        index = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        if index is None and "at end of input" in str(message):
            index = len(sql)  # PostgreSQL points just past the text
        if index is None:
            raise SqlAnalysisError(str(message)) from None
        raise SqlAnalysisError(f"{message} (position {index + 1})", index + 1) from None


def _items_uncached(sql: str) -> tuple[_Item, ...]:
    if "\x00" in sql:
        # PostgreSQL reads a query as a C string; the parser would stop at the NUL too,
        # but what follows must not ride along unseen.
        raise SqlAnalysisError("SQL text contains a NUL character")
    try:
        tree = _parse_json(sql)
        stmts = tree.get("stmts") or ()
        if not stmts:
            return ()
        raw = sql if sql.isascii() else sql.encode("utf-8")  # locations count UTF-8 bytes
        items = []
        for stmt in stmts:
            start = stmt.get("stmt_location", 0)
            length = stmt.get("stmt_len", 0)
            chunk = raw[start : start + length] if length else raw[start:]
            text = chunk if isinstance(chunk, str) else chunk.decode("utf-8", "replace")
            typ, body = _tagged(stmt.get("stmt"))
            items.append(_statement(typ, body, text.strip()))
    except RecursionError:
        raise SqlAnalysisError("statement is too deeply nested to analyse") from None
    return tuple(items)


_CACHE_MAX_SQL = 8192  # characters; longer texts (bulk INSERTs) are not cached


@lru_cache(maxsize=2048)
def _items_cached(sql: str) -> tuple[_Item, ...]:
    return _items_uncached(sql)


def _items(sql: str) -> tuple[_Item, ...]:
    return _items_cached(sql) if len(sql) <= _CACHE_MAX_SQL else _items_uncached(sql)


def _replace(a: StatementAnalysis, **changes: Any) -> StatementAnalysis:
    """:func:`dataclasses.replace` without re-running the frozen ``__init__`` (5x faster;
    this runs for every ``EXECUTE``/``FETCH``). ``changes`` must name fields."""
    out = object.__new__(StatementAnalysis)
    out.__dict__.update(a.__dict__)
    out.__dict__.update(changes)
    return out


def _unwrap(a: StatementAnalysis) -> StatementAnalysis:
    """The statement a stored PREPARE/DECLARE analysis stands for."""
    if (a.prepares or a.declares) and a.prepared is not None:
        return a.prepared
    return a


def _resolve(
    item: _Pending,
    prepared: Mapping[str, StatementAnalysis],
    cursors: Mapping[str, StatementAnalysis],
) -> StatementAnalysis:
    base = item.base
    if base.fetches is not None:
        name = base.fetches
        cursor = cursors.get(name)
        if cursor is None:
            verb = "MOVE in" if item.is_move else "FETCH from"
            raise SqlAnalysisError(f'{verb} unknown cursor "{name}"')
        query = _unwrap(cursor)
        f = cursor.facts
        kinds = f.kinds | {"CURSOR"}
        facts = SqlFacts(
            kind=worst_kind(kinds),
            kinds=kinds,
            relations=f.relations,
            functions=f.functions,
            unfiltered_write=f.unfiltered_write,
            unbounded_select=(not item.is_move) and item.fetch_all and f.unbounded_select,
        )
        return _replace(
            base,
            facts=facts,
            output_refs=None if item.is_move else query.output_refs,
            has_star=False if item.is_move else query.has_star,
            whole_row=False if item.is_move else query.whole_row,
            all_refs=cursor.all_refs,
            prepared=query,
        )

    f = base.facts
    kinds, relations, functions = f.kinds, f.relations, f.functions
    refs = base.all_refs
    unfiltered = f.unfiltered_write
    target: StatementAnalysis | None = None
    for name, executed in item.executes:
        stored = prepared.get(name)
        if stored is None:
            raise SqlAnalysisError(f'EXECUTE of unknown prepared statement "{name}"')
        inner = _unwrap(stored)
        relations = relations | inner.facts.relations
        functions = functions | inner.facts.functions
        refs = refs | inner.all_refs
        if executed:
            kinds = kinds | inner.facts.kinds
            unfiltered = unfiltered or inner.facts.unfiltered_write
        target = inner
    top = target if item.top_execute else None
    facts = SqlFacts(
        kind=worst_kind(kinds),
        kinds=kinds,
        relations=relations,
        functions=functions,
        unfiltered_write=unfiltered,
        unbounded_select=top.facts.unbounded_select if top is not None else f.unbounded_select,
    )
    if top is not None:
        return _replace(
            base,
            facts=facts,
            all_refs=refs,
            output_refs=top.output_refs,
            has_star=top.has_star,
            whole_row=top.whole_row,
            prepared=top,
        )
    return _replace(base, facts=facts, all_refs=refs)


_EMPTY: Mapping[str, StatementAnalysis] = {}


def analyze(
    sql: str,
    *,
    prepared: Mapping[str, StatementAnalysis] | None = None,
    cursors: Mapping[str, StatementAnalysis] | None = None,
) -> list[StatementAnalysis]:
    """Analyse every statement of a ``Query``/``Parse`` message's SQL text.

    Args:
        sql: the SQL text (one or more statements separated by ``;``).
        prepared: the connection's prepared statements by name (SQL ``PREPARE`` and
            protocol ``Parse`` share one namespace); a value may be the ``PREPARE``
            analysis or the analysis of the prepared statement itself.
        cursors: the connection's cursors (and named portals) by name; a value may be
            the ``DECLARE`` analysis or the analysis of the cursor's query.

    Returns:
        One :class:`StatementAnalysis` per statement, in order; ``[]`` for empty,
        whitespace-only or comment-only text. Earlier ``PREPARE``/``DECLARE``/
        ``DEALLOCATE``/``CLOSE``/``DISCARD ALL`` statements of the same text apply to
        later ones (on a copy: the caller's maps are not changed).

    Raises:
        SqlAnalysisError: a syntax error (message with the 1-based position), a NUL
            character, a statement type this module does not classify, or ``EXECUTE``/
            ``FETCH``/``MOVE`` naming an unknown prepared statement or cursor.
    """
    items = _items(sql)
    if not items:
        return []
    prep: Mapping[str, StatementAnalysis] = prepared if prepared is not None else _EMPTY
    curs: Mapping[str, StatementAnalysis] = cursors if cursors is not None else _EMPTY
    out = []
    for item in items:
        a = _resolve(item, prep, curs) if isinstance(item, _Pending) else item
        out.append(a)
        if a.prepares is not None:
            prep = {**prep, a.prepares: a}
        elif a.deallocates is not None:
            prep = {} if a.deallocates == "ALL" else {
                k: v for k, v in prep.items() if k != a.deallocates
            }
        elif a.declares is not None:
            curs = {**curs, a.declares: a}
        elif a.closes is not None:
            curs = {} if a.closes == "ALL" else {
                k: v for k, v in curs.items() if k != a.closes
            }
        elif a.discards_all:
            prep, curs = {}, {}
    return out


def placeholder_count(sql: str) -> int:
    """The highest ``$n`` placeholder in ``sql`` (0 if none), for checking a ``Bind``.

    Needs no connection state. Raises :class:`SqlAnalysisError` like :func:`analyze`.
    """
    return max(
        ((i.base if isinstance(i, _Pending) else i).param_count for i in _items(sql)),
        default=0,
    )


def format_sql(sql: str) -> str:
    """``sql`` pretty-printed by ``pglast.prettify`` (for approvers); ``sql`` unchanged
    when that fails. Never raises."""
    try:
        from pglast import prettify

        return prettify(sql)
    except Exception:  # noqa: BLE001 - display only; the raw text is a fine fallback
        return sql

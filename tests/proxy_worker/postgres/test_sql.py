"""SQL statement analysis (``proxy_worker.postgres.sql``).

Kinds, relations, functions and the write/limit flags of every statement family; the
hostile cases (a DELETE hidden after a SELECT, in a writable CTE, under EXPLAIN ANALYZE,
behind comments and dollar quotes, inside a prepared statement or a cursor); result
column references (aliases, sub-queries, CTEs, set operations, RETURNING, stars and
whole-row references); COPY options; prepared statements and cursors with the
connection's maps; fail-closed errors; and generated CTE nests whose worst kind must
never be lower than the writes inside them.
"""

from __future__ import annotations

import dataclasses

import pglast.ast
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from proxy_worker.policy import STATEMENT_KINDS, STATEMENT_SEVERITY, worst_kind
from proxy_worker.postgres import sql as sqlmod
from proxy_worker.postgres.sql import (
    CopyInfo,
    SqlAnalysisError,
    StatementAnalysis,
    analyze,
    format_sql,
    placeholder_count,
)

RANK = {k: i for i, k in enumerate(STATEMENT_SEVERITY)}


def one(sql: str, **kw) -> StatementAnalysis:
    """The analysis of a text holding exactly one statement."""
    out = analyze(sql, **kw)
    assert len(out) == 1, out
    return out[0]


def refs(*columns: set[str] | tuple[str, ...]) -> tuple[frozenset[str], ...]:
    return tuple(frozenset(c) for c in columns)


@pytest.fixture
def fresh_cache():
    sqlmod._items_cached.cache_clear()
    yield
    sqlmod._items_cached.cache_clear()


# -- kinds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "kinds"),
    [
        # reads
        ("SELECT 1", {"SELECT"}),
        ("VALUES (1), (2)", {"SELECT"}),
        ("TABLE t", {"SELECT"}),
        ("SELECT a FROM t FOR UPDATE", {"SELECT", "LOCK"}),
        ("SELECT a FROM t FOR SHARE OF t NOWAIT", {"SELECT", "LOCK"}),
        ("SELECT a FROM (SELECT a FROM t FOR KEY SHARE) s", {"SELECT", "LOCK"}),
        ("SELECT * INTO newtable FROM t", {"SELECT", "DDL"}),
        # writes
        ("INSERT INTO t VALUES (1)", {"INSERT"}),
        ("INSERT INTO t SELECT * FROM u", {"INSERT", "SELECT"}),
        ("INSERT INTO t VALUES ((SELECT max(a) FROM u))", {"INSERT", "SELECT"}),
        ("INSERT INTO t (a) VALUES (1) ON CONFLICT DO NOTHING", {"INSERT"}),
        ("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", {"INSERT", "UPDATE"}),
        ("UPDATE t SET a = 1 WHERE id = 2", {"UPDATE"}),
        ("UPDATE t SET a = u.a FROM u WHERE t.id = u.id", {"UPDATE"}),
        ("DELETE FROM t WHERE id = 1", {"DELETE"}),
        ("DELETE FROM t USING u WHERE t.id = u.id", {"DELETE"}),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a "
            "WHEN NOT MATCHED THEN INSERT (id) VALUES (s.id)",
            {"MERGE", "UPDATE", "INSERT"},
        ),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE "
            "WHEN NOT MATCHED BY SOURCE THEN DO NOTHING",
            {"MERGE", "DELETE"},
        ),
        ("TRUNCATE t", {"TRUNCATE", "DELETE"}),
        ("TRUNCATE TABLE a, s.b RESTART IDENTITY CASCADE", {"TRUNCATE", "DELETE"}),
        # the worst effect anywhere counts
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", {"SELECT", "DELETE"}),
        ("WITH u AS (UPDATE t SET a = 1 RETURNING a) SELECT a FROM u", {"SELECT", "UPDATE"}),
        (
            "WITH i AS (INSERT INTO t VALUES (1) RETURNING id) "
            "DELETE FROM u WHERE id IN (SELECT id FROM i)",
            {"INSERT", "DELETE", "SELECT"},
        ),
        ("EXPLAIN ANALYZE DELETE FROM t", {"EXPLAIN", "DELETE"}),
        ("EXPLAIN ANALYSE DELETE FROM t", {"EXPLAIN", "DELETE"}),
        ("EXPLAIN (ANALYZE) DELETE FROM t", {"EXPLAIN", "DELETE"}),
        ("EXPLAIN (ANALYZE true) DELETE FROM t", {"EXPLAIN", "DELETE"}),
        ("EXPLAIN (ANALYZE on, BUFFERS) DELETE FROM t", {"EXPLAIN", "DELETE"}),
        ("EXPLAIN (ANALYZE 1) UPDATE t SET a = 1", {"EXPLAIN", "UPDATE"}),
        ("EXPLAIN (FORMAT json, ANALYZE TRUE) INSERT INTO t VALUES (1)", {"EXPLAIN", "INSERT"}),
        ("EXPLAIN DELETE FROM t", {"EXPLAIN"}),
        ("EXPLAIN (ANALYZE false) DELETE FROM t", {"EXPLAIN"}),
        ("EXPLAIN (ANALYZE off) DELETE FROM t", {"EXPLAIN"}),
        ("EXPLAIN (ANALYZE 0) DELETE FROM t", {"EXPLAIN"}),
        ("EXPLAIN (VERBOSE, COSTS off) SELECT * FROM t", {"EXPLAIN"}),
        ("EXPLAIN ANALYZE SELECT * FROM t", {"EXPLAIN", "SELECT"}),
        # COPY
        ("COPY t TO STDOUT", {"COPY", "SELECT"}),
        ("COPY t FROM STDIN", {"COPY", "INSERT"}),
        ("COPY (SELECT a FROM t) TO STDOUT", {"COPY", "SELECT"}),
        ("COPY (DELETE FROM t RETURNING a) TO STDOUT", {"COPY", "DELETE"}),
        ("COPY t FROM PROGRAM 'curl http://x'", {"COPY", "INSERT"}),
        ("COPY t TO '/tmp/t.csv' CSV", {"COPY", "SELECT"}),
        # DDL
        ("CREATE TABLE t (id int PRIMARY KEY, c text)", {"DDL"}),
        ("CREATE TABLE x AS SELECT * FROM t", {"DDL", "SELECT"}),
        ("CREATE TABLE x AS SELECT * FROM t WITH NO DATA", {"DDL"}),
        ("CREATE MATERIALIZED VIEW mv AS SELECT * FROM t", {"DDL", "SELECT"}),
        ("CREATE MATERIALIZED VIEW mv AS SELECT * FROM t WITH NO DATA", {"DDL"}),
        ("REFRESH MATERIALIZED VIEW mv", {"DDL", "SELECT"}),
        ("REFRESH MATERIALIZED VIEW CONCURRENTLY s.mv", {"DDL", "SELECT"}),
        ("CREATE VIEW v AS SELECT a FROM t", {"DDL"}),
        ("CREATE OR REPLACE VIEW v AS WITH d AS (DELETE FROM t RETURNING *) SELECT 1", {"DDL"}),
        ("ALTER TABLE t ADD COLUMN c int", {"DDL"}),
        ("ALTER TABLE t RENAME TO u", {"DDL"}),
        ("ALTER TABLE s.t SET SCHEMA u", {"DDL"}),
        ("DROP TABLE IF EXISTS t CASCADE", {"DDL"}),
        ("DROP VIEW v", {"DDL"}),
        ("DROP FUNCTION f(int)", {"DDL"}),
        ("COMMENT ON TABLE t IS 'x'", {"DDL"}),
        ("SECURITY LABEL ON TABLE t IS 'secret'", {"DDL"}),
        ("CREATE EXTENSION dblink", {"DDL"}),
        ("ALTER EXTENSION dblink UPDATE", {"DDL"}),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", {"DDL"}),
        ("CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END", {"DDL"}),
        ("CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql RETURN a + 1", {"DDL"}),
        ("CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN DELETE FROM t; END $$", {"DDL"}),
        ("CREATE TRIGGER trg AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", {"DDL"}),
        ("CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION f()", {"DDL"}),
        ("CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u", {"DDL"}),
        ("CREATE POLICY p ON t USING (owner = current_user)", {"DDL"}),
        ("ALTER POLICY p ON t USING (true)", {"DDL"}),
        ("CREATE INDEX CONCURRENTLY i ON t (c)", {"DDL"}),
        ("CREATE UNIQUE INDEX i ON t USING btree (lower(c))", {"DDL"}),
        ("CREATE SCHEMA s", {"DDL"}),
        ("CREATE SCHEMA s CREATE TABLE t (a int) GRANT SELECT ON t TO bob", {"DDL", "GRANT"}),
        ("CREATE SEQUENCE s START 10", {"DDL"}),
        ("ALTER SEQUENCE s RESTART", {"DDL"}),
        ("CREATE TYPE mood AS ENUM ('sad', 'ok')", {"DDL"}),
        ("CREATE TYPE pair AS (a int, b int)", {"DDL"}),
        ("CREATE DOMAIN posint AS int CHECK (VALUE > 0)", {"DDL"}),
        ("CREATE SERVER srv FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'x')", {"DDL"}),
        ("CREATE USER MAPPING FOR bob SERVER srv OPTIONS (user 'u', password 'p')", {"DDL"}),
        ("IMPORT FOREIGN SCHEMA public FROM SERVER srv INTO local", {"DDL"}),
        ("CREATE FOREIGN TABLE ft (a int) SERVER srv", {"DDL"}),
        ("CREATE DATABASE d", {"DDL"}),
        ("DROP DATABASE d", {"DDL"}),
        ("ALTER DATABASE d SET work_mem = '1GB'", {"DDL"}),
        ("ALTER SYSTEM SET work_mem = '1GB'", {"DDL"}),
        ("CREATE PUBLICATION p FOR ALL TABLES", {"DDL"}),
        ("CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p", {"DDL"}),
        ("CREATE TABLESPACE ts LOCATION '/data'", {"DDL"}),
        ("CREATE STATISTICS st ON a, b FROM t", {"DDL"}),
        ("CREATE AGGREGATE agg (int) (sfunc = int4pl, stype = int)", {"DDL"}),
        ("CREATE CAST (text AS int) WITH INOUT", {"DDL"}),
        ("ALTER TABLE t REPLICA IDENTITY FULL", {"DDL"}),
        # privileges
        ("GRANT SELECT ON t TO bob", {"GRANT"}),
        ("REVOKE ALL ON t FROM bob", {"GRANT"}),
        ("GRANT admin TO bob", {"GRANT"}),
        ("REVOKE admin FROM bob", {"GRANT"}),
        ("GRANT SELECT ON ALL TABLES IN SCHEMA public TO bob", {"GRANT"}),
        ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", {"GRANT"}),
        ("CREATE ROLE bob LOGIN PASSWORD 'x'", {"DDL", "GRANT"}),
        ("CREATE USER bob", {"DDL", "GRANT"}),
        ("CREATE GROUP g", {"DDL", "GRANT"}),
        ("ALTER ROLE bob SUPERUSER", {"DDL", "GRANT"}),
        ("ALTER USER bob SET search_path = a", {"DDL", "GRANT"}),
        ("ALTER ROLE bob RENAME TO rob", {"DDL", "GRANT"}),
        ("DROP ROLE bob", {"DDL", "GRANT"}),
        ("DROP USER IF EXISTS bob", {"DDL", "GRANT"}),
        ("REASSIGN OWNED BY a TO b", {"DDL", "GRANT"}),
        ("DROP OWNED BY a", {"DDL", "GRANT"}),
        ("ALTER FUNCTION f() OWNER TO bob", {"DDL", "GRANT"}),
        ("ALTER TABLE t OWNER TO bob", {"DDL", "GRANT"}),
        ("SET ROLE admin", {"SET", "GRANT"}),
        ("SET LOCAL ROLE admin", {"SET", "GRANT"}),
        ("RESET ROLE", {"SET", "GRANT"}),
        ("SET SESSION AUTHORIZATION bob", {"SET", "GRANT"}),
        ("SET SESSION AUTHORIZATION DEFAULT", {"SET", "GRANT"}),
        # sessions and transactions
        ("BEGIN", {"TRANSACTION"}),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", {"TRANSACTION"}),
        ("COMMIT", {"TRANSACTION"}),
        ("END", {"TRANSACTION"}),
        ("ROLLBACK", {"TRANSACTION"}),
        ("ABORT", {"TRANSACTION"}),
        ("SAVEPOINT a", {"TRANSACTION"}),
        ("RELEASE SAVEPOINT a", {"TRANSACTION"}),
        ("ROLLBACK TO SAVEPOINT a", {"TRANSACTION"}),
        ("PREPARE TRANSACTION 'x'", {"TRANSACTION"}),
        ("COMMIT PREPARED 'x'", {"TRANSACTION"}),
        ("ROLLBACK PREPARED 'x'", {"TRANSACTION"}),
        ("SET search_path = a, b", {"SET"}),
        ("SET LOCAL statement_timeout TO 1000", {"SET"}),
        ("SET TIME ZONE 'UTC'", {"SET"}),
        ("SET TRANSACTION READ ONLY", {"SET"}),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", {"SET"}),
        ("SET CONSTRAINTS ALL DEFERRED", {"SET"}),
        ("RESET ALL", {"SET"}),
        ("RESET search_path", {"SET"}),
        ("SHOW search_path", {"SHOW"}),
        ("SHOW ALL", {"SHOW"}),
        ("SHOW TRANSACTION ISOLATION LEVEL", {"SHOW"}),
        # code, procedures, sessions
        ("CALL p(1)", {"CALL"}),
        ("DO $$ BEGIN PERFORM 1; END $$", {"DO"}),
        ("DO LANGUAGE plpgsql 'BEGIN NULL; END'", {"DO"}),
        ("PREPARE p AS SELECT 1", {"PREPARE"}),
        ("PREPARE p (int) AS DELETE FROM t WHERE id = $1", {"PREPARE"}),
        ("DEALLOCATE p", {"UTILITY"}),
        ("DEALLOCATE PREPARE ALL", {"UTILITY"}),
        ("DECLARE c CURSOR FOR SELECT * FROM t", {"CURSOR", "SELECT"}),
        ("DECLARE c BINARY NO SCROLL CURSOR WITH HOLD FOR SELECT 1", {"CURSOR", "SELECT"}),
        ("CLOSE c", {"CURSOR"}),
        ("CLOSE ALL", {"CURSOR"}),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", {"LOCK"}),
        ("LOCK t, u", {"LOCK"}),
        ("LISTEN ch", {"LISTEN"}),
        ("UNLISTEN *", {"LISTEN"}),
        ("NOTIFY ch, 'payload'", {"LISTEN"}),
        ("SELECT pg_notify('ch', 'x')", {"SELECT"}),
        ("VACUUM", {"MAINTENANCE"}),
        ("VACUUM (FULL, ANALYZE) t", {"MAINTENANCE"}),
        ("ANALYZE t (a)", {"MAINTENANCE"}),
        ("CLUSTER t USING i", {"MAINTENANCE"}),
        ("REINDEX TABLE t", {"MAINTENANCE"}),
        ("REINDEX DATABASE d", {"MAINTENANCE"}),
        ("CHECKPOINT", {"MAINTENANCE"}),
        ("LOAD 'auto_explain'", {"LOAD"}),
        ("DISCARD ALL", {"UTILITY"}),
        ("DISCARD PLANS", {"UTILITY"}),
        ("DISCARD TEMP", {"UTILITY"}),
    ],
)
def test_it_classifies_statement_kinds(sql, kinds):
    a = one(sql)
    assert a.facts.kinds == frozenset(kinds)
    assert a.facts.kind == worst_kind(frozenset(kinds))
    assert a.facts.kinds <= STATEMENT_KINDS


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "DELETE"),
        ("EXPLAIN ANALYZE DELETE FROM t", "DELETE"),
        ("EXPLAIN DELETE FROM t", "EXPLAIN"),
        ("SELECT a FROM t FOR UPDATE", "LOCK"),
        ("TRUNCATE t", "TRUNCATE"),
        ("SELECT * INTO n FROM t", "DDL"),
        ("SET ROLE admin", "GRANT"),
        ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", "DELETE"),
        ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 1", "UPDATE"),
    ],
)
def test_it_reports_the_worst_kind(sql, kind):
    assert one(sql).facts.kind == kind


def test_it_separates_every_statement_of_a_query():
    first, second = analyze("SELECT 1; DELETE FROM t")
    assert (first.sql, first.facts.kind) == ("SELECT 1", "SELECT")
    assert (second.sql, second.facts.kind) == ("DELETE FROM t", "DELETE")
    assert second.facts.unfiltered_write


@pytest.mark.parametrize(
    ("sql", "texts"),
    [
        ("SELECT $$; DELETE FROM t$$", ["SELECT $$; DELETE FROM t$$"]),
        ("SELECT $tag$ ; DROP TABLE t; $tag$", ["SELECT $tag$ ; DROP TABLE t; $tag$"]),
        ("SELECT 1 /* ; DELETE FROM t */", ["SELECT 1 /* ; DELETE FROM t */"]),
        ("SELECT 1 -- ; DELETE FROM t", ["SELECT 1 -- ; DELETE FROM t"]),
        ("SELECT ';DELETE FROM t'", ["SELECT ';DELETE FROM t'"]),
        ('SELECT 1 AS ";DELETE FROM t"', ['SELECT 1 AS ";DELETE FROM t"']),
        ("SELECT E'\\'; DELETE FROM t'", ["SELECT E'\\'; DELETE FROM t'"]),
        ("SELECT 1 /* nested /* ; */ DELETE */", ["SELECT 1 /* nested /* ; */ DELETE */"]),
        ("SELECT 1;;  ; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("  SELECT 1  ;\n\tSELECT 2  ", ["SELECT 1", "SELECT 2"]),
        (
            "SELECT 'é'; DELETE FROM tü WHERE a = 'ß'",
            ["SELECT 'é'", "DELETE FROM tü WHERE a = 'ß'"],
        ),
        ("SELECT '日本'; SELECT 2", ["SELECT '日本'", "SELECT 2"]),
    ],
)
def test_it_cuts_statements_by_the_grammar(sql, texts):
    assert [a.sql for a in analyze(sql)] == texts


def test_it_sees_the_delete_behind_a_comment_with_a_semicolon():
    kinds = [a.facts.kind for a in analyze("SELECT 1 /* ; */; DELETE FROM t -- ;")]
    assert kinds == ["SELECT", "DELETE"]


def test_it_keeps_dollar_quoted_text_inside_one_select():
    a = one("SELECT $$; DELETE FROM t$$")
    assert a.facts.kinds == {"SELECT"}
    assert a.facts.relations == frozenset()


@pytest.mark.parametrize(
    "sql", ["", "   ", "\n\t", ";", ";;", "-- nothing", "/* x */", " -- a\n /* b */ ;"]
)
def test_it_returns_nothing_for_empty_text(sql):
    assert analyze(sql) == []


# -- relations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "relations"),
    [
        ("SELECT * FROM t", {"t"}),
        ("SELECT * FROM public.t", {"public.t"}),
        ("SELECT * FROM db.s.t", {"s.t"}),
        ('SELECT * FROM "MyTable"', {"mytable"}),
        ('SELECT * FROM "S"."T" AS x', {"s.t"}),
        ("SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN c USING (id)", {"a", "b", "c"}),
        ("SELECT * FROM a, LATERAL (SELECT * FROM b WHERE b.x = a.x) s", {"a", "b"}),
        ("SELECT (SELECT max(x) FROM b) FROM a WHERE EXISTS (SELECT 1 FROM c)", {"a", "b", "c"}),
        ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", {"t"}),
        ("SELECT * FROM ONLY t", {"t"}),
        ("INSERT INTO t (a) SELECT a FROM u", {"t", "u"}),
        ("UPDATE s.t SET a = u.a FROM u WHERE s.t.id = u.id", {"s.t", "u"}),
        ("DELETE FROM t USING u, v WHERE t.id = u.id", {"t", "u", "v"}),
        ("MERGE INTO t USING (SELECT * FROM s) src ON true WHEN MATCHED THEN DELETE", {"t", "s"}),
        ("COPY s.t TO STDOUT", {"s.t"}),
        ("COPY (SELECT * FROM a JOIN b USING (id)) TO STDOUT", {"a", "b"}),
        ("TRUNCATE a, s.b", {"a", "s.b"}),
        ("LOCK TABLE a, b", {"a", "b"}),
        ("VACUUM ANALYZE a, s.b (c)", {"a", "s.b"}),
        ("CLUSTER t", {"t"}),
        ("REINDEX INDEX s.i", {"s.i"}),
        ("DROP TABLE s.t, u", {"s.t", "u"}),
        ("DROP VIEW IF EXISTS v", {"v"}),
        ("DROP MATERIALIZED VIEW mv", {"mv"}),
        ("DROP SEQUENCE s.seq", {"s.seq"}),
        ("DROP INDEX s.i", {"s.i"}),
        ("DROP FOREIGN TABLE ft", {"ft"}),
        ("DROP TRIGGER trg ON s.t", {"s.t"}),
        ("DROP POLICY p ON t", {"t"}),
        ("DROP RULE r ON t", {"t"}),
        ("DROP FUNCTION f(int)", set()),
        ("COMMENT ON TABLE s.t IS 'x'", {"s.t"}),
        ("COMMENT ON COLUMN s.t.c IS 'x'", {"s.t"}),
        ("COMMENT ON CONSTRAINT c ON t IS 'x'", {"t"}),
        ("SECURITY LABEL ON TABLE t IS 'x'", {"t"}),
        ("ALTER TABLE t ADD COLUMN c int", {"t"}),
        ("ALTER TABLE t RENAME COLUMN a TO b", {"t"}),
        ("ALTER TABLE s.t SET SCHEMA u", {"s.t"}),
        ("CREATE INDEX i ON s.t (c)", {"s.t"}),
        ("CREATE TABLE t (id int REFERENCES other (id), LIKE tmpl)", {"t", "other", "tmpl"}),
        ("CREATE TABLE x AS SELECT * FROM t", {"x", "t"}),
        ("SELECT * INTO x FROM t", {"x", "t"}),
        ("CREATE VIEW v AS SELECT * FROM t", {"v", "t"}),
        ("CREATE TRIGGER trg AFTER INSERT ON t EXECUTE FUNCTION f()", {"t"}),
        ("CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u", {"t", "u"}),
        ("CREATE POLICY p ON t USING (EXISTS (SELECT 1 FROM acl))", {"t", "acl"}),
        ("GRANT SELECT, UPDATE ON t, s.u TO bob", {"t", "s.u"}),
        ("REVOKE ALL ON TABLE t FROM bob", {"t"}),
        ("EXPLAIN DELETE FROM t", {"t"}),
        ("EXPLAIN ANALYZE SELECT * FROM t", {"t"}),
        ("PREPARE p AS SELECT * FROM t", {"t"}),
        ("DECLARE c CURSOR FOR SELECT * FROM t", {"t"}),
        ("REFRESH MATERIALIZED VIEW s.mv", {"s.mv"}),
        ("SELECT 1", set()),
        ("SELECT * FROM generate_series(1, 3)", set()),
    ],
)
def test_it_finds_relations(sql, relations):
    assert one(sql).facts.relations == frozenset(relations)


@pytest.mark.parametrize(
    ("sql", "relations"),
    [
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", {"t"}),
        ("WITH x AS (SELECT * FROM t) SELECT * FROM x JOIN u USING (id)", {"t", "u"}),
        # a plain WITH name is not visible inside its own definition: that t is the table
        ("WITH t AS (SELECT * FROM t) SELECT * FROM t", {"t"}),
        # ... but a recursive one is
        ("WITH RECURSIVE t AS (SELECT 1 UNION ALL SELECT * FROM t) SELECT * FROM t", set()),
        ("WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b", set()),
        ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", {"b"}),
        # a qualified name is never a CTE
        ("WITH t AS (SELECT 1) SELECT * FROM public.t", {"public.t"}),
        # DML and INTO targets are never CTEs
        ("WITH t AS (SELECT 1) DELETE FROM t", {"t"}),
        ("WITH t AS (SELECT 1) INSERT INTO t SELECT * FROM t", {"t"}),
        ("WITH t AS (SELECT 1) UPDATE t SET a = 1", {"t"}),
        (
            "WITH src AS (SELECT 1 AS id) MERGE INTO t USING src ON true WHEN MATCHED THEN DELETE",
            {"t"},
        ),
        ("WITH t AS (SELECT 1) SELECT * INTO t FROM t", {"t"}),
        ("WITH x AS (SELECT 1) DELETE FROM t USING x", {"t"}),
        # CTE scope ends with its statement
        ("SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x", {"x"}),
        ("SELECT (WITH x AS (SELECT 1) SELECT * FROM x) FROM x", {"x"}),
        # quoted names are case-sensitive in PostgreSQL's CTE scoping
        ('WITH "X" AS (SELECT 1) SELECT * FROM x', {"x"}),
        ('WITH "X" AS (SELECT 1) SELECT * FROM "X"', set()),
        ("WITH x AS (SELECT 1) SELECT * FROM x, (SELECT * FROM x) s", set()),
    ],
)
def test_it_excludes_cte_names_from_relations(sql, relations):
    assert one(sql).facts.relations == frozenset(relations)


# -- functions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "functions"),
    [
        ("SELECT pg_read_file('/etc/passwd')", {"pg_read_file"}),
        ("SELECT pg_catalog.pg_read_file('/etc/passwd')", {"pg_catalog.pg_read_file"}),
        ("SELECT * FROM dblink('host=x', 'select 1') AS d(a int)", {"dblink"}),
        ("SELECT * FROM public.dblink('c', 'q') AS d(a int)", {"public.dblink"}),
        ("SELECT lower(upper(trim(x))) FROM t", {"lower", "upper", "pg_catalog.btrim"}),
        ("SELECT a FROM t WHERE b IN (SELECT f(c) FROM u)", {"f"}),
        (
            "SELECT count(*), sum(a) FILTER (WHERE g(a)) OVER (ORDER BY h(b)) FROM t",
            {"count", "sum", "g", "h"},
        ),
        ("SELECT extract(year FROM now())", {"pg_catalog.extract", "now"}),
        ("SELECT overlay('abc' PLACING 'x' FROM 2)", {"pg_catalog.overlay"}),
        ("SELECT s.f(1), db.s.g(2)", {"s.f", "s.g"}),
        ('SELECT "MyFunc"(1)', {"myfunc"}),
        ("SELECT current_user, 1 + 2", set()),
        ("SELECT * FROM t, LATERAL unnest(t.arr) AS u(x)", {"unnest"}),
        ("SELECT * FROM ROWS FROM (f(1), g(2)) AS x(a, b)", {"f", "g"}),
        ("SELECT lo_import('/etc/passwd')", {"lo_import"}),
        ("UPDATE t SET a = f(b) WHERE g(c) RETURNING h(a)", {"f", "g", "h"}),
        ("INSERT INTO t VALUES (f(1)) ON CONFLICT (a) DO UPDATE SET b = g(2)", {"f", "g"}),
        ("CALL p(1, f(2))", {"p", "f"}),
        ("CALL s.p()", {"s.p"}),
        (
            "CREATE TABLE t (a int DEFAULT nextval('s'), b text CHECK (length(b) < 5))",
            {"nextval", "length"},
        ),
        ("ALTER TABLE t ADD COLUMN c int DEFAULT f()", {"f"}),
        ("CREATE TRIGGER trg AFTER INSERT ON t EXECUTE FUNCTION s.trg_fn()", {"s.trg_fn"}),
        ("CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION evt()", {"evt"}),
        ("CREATE INDEX i ON t (lower(c))", {"lower"}),
        ("EXPLAIN SELECT pg_sleep(10)", {"pg_sleep"}),
        ("PREPARE p AS SELECT pg_read_file($1)", {"pg_read_file"}),
        ("COPY (SELECT f(a) FROM t) TO STDOUT", {"f"}),
        ("COPY t FROM PROGRAM 'curl x'", {"copy_program"}),
        ("COPY t TO PROGRAM 'gzip > /tmp/x'", {"copy_program"}),
        ("COPY t FROM '/etc/passwd'", {"copy_file"}),
        ("COPY (SELECT f(1)) TO '/tmp/x'", {"f", "copy_file"}),
        ("COPY t TO STDOUT", set()),
        ("COPY t FROM ''", {"copy_file"}),
        ("SELECT set_config('role', 'admin', false)", {"set_config"}),
    ],
)
def test_it_finds_functions(sql, functions):
    assert one(sql).facts.functions == frozenset(functions)


# -- flags ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "unfiltered"),
    [
        ("UPDATE t SET a = 1", True),
        ("DELETE FROM t", True),
        ("TRUNCATE t", True),
        ("UPDATE t SET a = 1 WHERE id = 1", False),
        ("DELETE FROM t WHERE true", False),
        ("UPDATE t SET a = 1 WHERE CURRENT OF c", False),
        ("DELETE FROM t WHERE CURRENT OF c", False),
        ("DELETE FROM t USING u", True),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", True),
        ("WITH d AS (DELETE FROM t WHERE a = 1 RETURNING *) SELECT * FROM d", False),
        ("WITH u AS (UPDATE t SET a = 1 RETURNING *) DELETE FROM v WHERE id = 1", True),
        ("EXPLAIN ANALYZE DELETE FROM t", True),
        ("EXPLAIN DELETE FROM t", False),
        ("EXPLAIN ANALYZE UPDATE t SET a = 1 WHERE id = 1", False),
        ("CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END", False),
        ("CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM u", False),
        ("PREPARE p AS DELETE FROM t", False),
        ("COPY (DELETE FROM t RETURNING *) TO STDOUT", True),
        ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2", False),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", False),
        ("SELECT * FROM t", False),
    ],
)
def test_it_flags_unfiltered_writes(sql, unfiltered):
    assert one(sql).facts.unfiltered_write is unfiltered


@pytest.mark.parametrize(
    ("sql", "unbounded"),
    [
        ("SELECT * FROM t", True),
        ("SELECT a FROM t WHERE a = 1", True),
        ("TABLE t", True),
        ("SELECT * FROM t LIMIT 10", False),
        ("SELECT * FROM t LIMIT $1", False),
        ("SELECT * FROM t ORDER BY a FETCH FIRST 5 ROWS ONLY", False),
        ("SELECT * FROM t ORDER BY a FETCH FIRST 5 ROWS WITH TIES", False),
        ("SELECT * FROM t OFFSET 10 LIMIT 5", False),
        ("SELECT * FROM t LIMIT ALL", True),
        ("SELECT * FROM t LIMIT NULL", True),
        ("SELECT * FROM t LIMIT NULL::int", True),
        ("SELECT * FROM t OFFSET 10", True),
        ("SELECT * FROM generate_series(1, 1000000)", True),
        ("SELECT count(*) FROM t", True),
        ("SELECT ARRAY(SELECT email FROM users)", True),
        ("SELECT 1", False),
        ("SELECT now(), version()", False),
        ("VALUES (1), (2)", False),
        ("SELECT 1 UNION SELECT 2", False),
        ("SELECT a FROM t UNION SELECT a FROM u", True),
        ("SELECT a FROM t UNION SELECT a FROM u LIMIT 5", False),
        ("(SELECT a FROM t LIMIT 1) UNION ALL (SELECT a FROM u LIMIT 1)", False),
        ("(SELECT a FROM t LIMIT 1) UNION ALL (SELECT a FROM u)", True),
        ("SELECT 1 UNION SELECT a FROM u", True),
        ("SELECT * FROM (SELECT * FROM t LIMIT 5) s", True),
        ("SELECT * FROM t WHERE id IN (SELECT id FROM u LIMIT 1)", True),
        ("WITH x AS (SELECT * FROM t) SELECT * FROM x LIMIT 3", False),
        ("SELECT * INTO n FROM t", False),
        ("EXPLAIN ANALYZE SELECT * FROM t", False),
        ("DELETE FROM t RETURNING *", False),
        ("INSERT INTO t SELECT * FROM u", False),
        ("CREATE TABLE n AS SELECT * FROM t", False),
        ("DECLARE c CURSOR FOR SELECT * FROM t", True),
        ("DECLARE c CURSOR FOR SELECT * FROM t LIMIT 10", False),
        ("COPY (SELECT * FROM t) TO STDOUT", True),
        ("COPY (SELECT * FROM t LIMIT 10) TO STDOUT", False),
        ("COPY t TO STDOUT", True),
        ("COPY t (a, b) TO STDOUT", True),
        ("COPY t FROM STDIN", False),
    ],
)
def test_it_flags_unbounded_selects(sql, unbounded):
    assert one(sql).facts.unbounded_select is unbounded


# -- result columns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "output"),
    [
        ("select email as x from users", refs({"email"})),
        ("SELECT email FROM users", refs({"email"})),
        ("SELECT u.email, u.name AS n FROM users u", refs({"email"}, {"name"})),
        ("SELECT lower(a.name) || b.mail FROM a, b", refs({"name", "mail"})),
        ("SELECT 1, 'x', now()", refs(set(), set(), set())),
        ("SELECT $1::text", refs(set())),
        ('SELECT "Email" FROM t', refs({"email"})),
        ("SELECT CASE WHEN a > 0 THEN email ELSE phone END FROM t", refs({"a", "email", "phone"})),
        ("SELECT coalesce(email, alt_email) FROM t", refs({"email", "alt_email"})),
        ("SELECT (addr).street FROM t", refs({"addr", "street"})),
        ("SELECT arr[1] FROM t", refs({"arr"})),
        ("SELECT email::text FROM t", refs({"email"})),
        ("SELECT count(*) FROM t", refs(set())),
        ("SELECT count(email) FROM t", refs({"email"})),
        ("SELECT (SELECT email FROM u LIMIT 1) AS x", refs({"email"})),
        ("SELECT EXISTS (SELECT 1 FROM u WHERE u.email = 'x')", refs({"email"})),
        # set operations: the union over all legs, by position
        ("SELECT a FROM t UNION SELECT b FROM u", refs({"a", "b"})),
        (
            "SELECT a, b FROM t UNION ALL SELECT c, d FROM u EXCEPT SELECT e, f FROM v",
            refs({"a", "c", "e"}, {"b", "d", "f"}),
        ),
        ("SELECT a FROM t INTERSECT SELECT 1", refs({"a"})),
        ("VALUES (1, f(2)), (x, 'y')", refs({"x"}, set())),
        # widened through derived tables and CTEs
        ("SELECT x FROM (SELECT email AS x FROM users) s", refs({"x", "email"})),
        ("SELECT s.x FROM (SELECT email AS x FROM users) s", refs({"x", "email"})),
        ("SELECT y FROM (SELECT email FROM users) s(y)", refs({"y", "email"})),
        ("WITH c AS (SELECT email AS e FROM users) SELECT lower(e) FROM c", refs({"e", "email"})),
        ("WITH c(z) AS (SELECT email FROM users) SELECT z FROM c", refs({"z", "email"})),
        (
            "WITH a AS (SELECT email AS e FROM u), b AS (SELECT e AS f FROM a) SELECT f FROM b",
            refs({"f", "e", "email"}),
        ),
        ("SELECT e FROM (SELECT * FROM (SELECT email AS e FROM u) a) b", refs({"e", "email"})),
        ("SELECT z FROM (SELECT * FROM (SELECT email AS e FROM u) a) b(z)", refs({"z", "email"})),
        (
            "SELECT x FROM (SELECT email AS x FROM u UNION SELECT phone FROM v) s",
            refs({"x", "email", "phone"}),
        ),
        (
            "SELECT x FROM (SELECT email AS x FROM u) s JOIN (SELECT 1 AS y) t ON true",
            refs({"x", "email"}),
        ),
        ("SELECT e FROM (SELECT *, email AS e FROM users u) s", refs({"e", "email"})),
        ("SELECT name FROM (SELECT * FROM users) s", refs({"name"})),
        ("WITH d AS (DELETE FROM u RETURNING email AS x) SELECT x FROM d", refs({"x", "email"})),
        # RETURNING
        ("INSERT INTO t (a) VALUES (1) RETURNING id, lower(email)", refs({"id"}, {"email"})),
        ("UPDATE t SET a = 1 WHERE id = 1 RETURNING a, b AS x", refs({"a"}, {"b"})),
        ("DELETE FROM t USING u WHERE t.id = u.id RETURNING t.email", refs({"email"})),
        (
            "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 1 RETURNING old.b, new.b",
            refs({"b"}, {"b"}),
        ),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE "
            "RETURNING merge_action(), t.id",
            refs(set(), {"id"}),
        ),
        # no rows
        ("DELETE FROM t WHERE id = 1", None),
        ("INSERT INTO t VALUES (1)", None),
        ("SELECT * INTO n FROM t", None),
        ("SELECT email INTO n FROM t", None),
        ("EXPLAIN SELECT email FROM t", None),
        ("EXPLAIN ANALYZE SELECT email FROM t", None),
        ("SHOW search_path", None),
        ("CALL p()", None),
        ("COPY (SELECT email FROM t) TO STDOUT", None),
        ("DECLARE c CURSOR FOR SELECT email FROM t", None),
        ("PREPARE p AS SELECT email FROM t", None),
        ("CREATE TABLE n AS SELECT email FROM t", None),
    ],
)
def test_it_gives_output_refs(sql, output):
    a = one(sql)
    assert a.output_refs == output
    assert a.has_star is False


@pytest.mark.parametrize(
    "sql",
    [
        "select * from v",
        "SELECT t.* FROM t",
        "SELECT a, * FROM t",
        "TABLE t",
        "SELECT (t).* FROM t",
        "SELECT (t.composite).* FROM t",
        "SELECT row_to_json(t.*) FROM t",
        "SELECT to_jsonb(t.*)::text FROM t",
        "SELECT (SELECT array_agg(u.*) FROM u) FROM t",
        "SELECT a FROM t UNION SELECT * FROM u",
        "SELECT * FROM t UNION SELECT a FROM u",
        "DELETE FROM t RETURNING *",
        "UPDATE t SET a = 1 RETURNING t.*",
        "INSERT INTO t VALUES (1) RETURNING *",
        "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE RETURNING t.*",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        # whole-row references carry every column of the row
        "SELECT u FROM users u",
        "SELECT users FROM users",
        "SELECT row_to_json(u) FROM users u",
        "SELECT to_json(u)::text FROM (SELECT * FROM users) u",
        "SELECT hstore(c) FROM customers c",
        "SELECT (u).email FROM users u",
        "SELECT (SELECT row_to_json(x) FROM users x LIMIT 1)",
        "SELECT f FROM f()",
        "DELETE FROM users u WHERE id = 1 RETURNING u",
        "UPDATE users SET a = 1 WHERE id = 1 RETURNING old",
        # ... also when renamed through a derived table or a CTE
        "SELECT x FROM (SELECT u AS x FROM users u) s",
        "SELECT s.u FROM (SELECT u FROM users u) s",
        "WITH c AS (SELECT u AS x FROM users u) SELECT lower(x::text) FROM c",
        "WITH c AS (SELECT row_to_json(u.*) AS j FROM users u) SELECT j FROM c",
        "SELECT j FROM (SELECT *, row_to_json(u) AS j FROM users u) s",
        "SELECT y FROM (SELECT * FROM (SELECT u AS x FROM users u) a) b(y)",
    ],
)
def test_it_refuses_to_align_stars_and_whole_rows(sql):
    a = one(sql)
    assert a.output_refs is None
    assert a.has_star is True


@pytest.mark.parametrize(
    ("sql", "all_refs"),
    [
        ("SELECT email AS x FROM users WHERE id = 1 ORDER BY created", {"email", "id", "created"}),
        ("SELECT * FROM t", set()),
        ("SELECT t.* FROM t WHERE t.secret = 'x'", {"secret"}),
        ('SELECT "Email" FROM t', {"email"}),
        ("SELECT (addr).street FROM t", {"addr", "street"}),
        ("INSERT INTO t (a, b) VALUES (1, 2)", {"a", "b"}),
        ("UPDATE t SET email = 'x' WHERE id = 1", {"email", "id"}),
        ("UPDATE t SET (a, b) = (1, 2)", {"a", "b"}),
        (
            "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = excluded.c",
            {"a", "b", "c"},
        ),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.b",
            {"id", "a", "b"},
        ),
        ("COPY t (Email, phone) TO STDOUT", {"email", "phone"}),
        ("SELECT 1 FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.ssn = t.ssn)", {"ssn"}),
    ],
)
def test_it_collects_every_column_name(sql, all_refs):
    assert one(sql).all_refs == frozenset(all_refs)


@pytest.mark.parametrize(
    ("sql", "count"),
    [
        ("SELECT 1", 0),
        ("SELECT $1", 1),
        ("SELECT $1, $2, $10", 10),
        ("SELECT * FROM t WHERE a = $3 AND b IN (SELECT c FROM u WHERE d = $1)", 3),
        ("INSERT INTO t VALUES ($1, $2) RETURNING $4", 4),
        ("UPDATE t SET a = $2 WHERE id = $1", 2),
        ("SELECT * FROM t LIMIT $1 OFFSET $2", 2),
        ("SELECT '$5', $$ $6 $$", 0),
        ("EXECUTE p($2)", 2),
    ],
)
def test_it_counts_placeholders(sql, count):
    prepared = {"p": one("PREPARE p AS SELECT $1")}
    assert one(sql, prepared=prepared).param_count == count
    assert placeholder_count(sql) == count


def test_placeholder_count_needs_no_connection_state():
    assert placeholder_count("EXECUTE unknown($3); SELECT $1") == 3
    assert placeholder_count("") == 0
    with pytest.raises(SqlAnalysisError):
        placeholder_count("SELEC $1")


# -- COPY -----------------------------------------------------------------------------------


TEXT = {
    "format": "text",
    "delimiter": "\t",
    "null": "\\N",
    "quote": '"',
    "escape": '"',
    "header": False,
}
CSV = {"format": "csv", "delimiter": ",", "null": "", "quote": '"', "escape": '"', "header": False}


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("COPY t TO STDOUT", {**TEXT, "direction": "out", "relation": "t", "endpoint": "stdio"}),
        ("COPY t FROM STDIN", {**TEXT, "direction": "in", "relation": "t", "endpoint": "stdio"}),
        (
            "COPY s.t (a, B) FROM STDIN",
            {**TEXT, "direction": "in", "relation": "s.t", "columns": ("a", "b")},
        ),
        ('COPY t ("Mixed") TO STDOUT', {**TEXT, "columns": ("mixed",)}),
        ("COPY t TO STDOUT (FORMAT csv)", {**CSV, "direction": "out"}),
        ("COPY t TO STDOUT (FORMAT 'csv')", CSV),
        ("COPY t TO STDOUT (FORMAT CSV, HEADER)", {**CSV, "header": True}),
        ("COPY t TO STDOUT (FORMAT csv, HEADER true)", {**CSV, "header": True}),
        ("COPY t TO STDOUT (FORMAT csv, HEADER on)", {**CSV, "header": True}),
        ("COPY t TO STDOUT (FORMAT csv, HEADER 1)", {**CSV, "header": True}),
        ("COPY t TO STDOUT (FORMAT csv, HEADER false)", {**CSV, "header": False}),
        ("COPY t TO STDOUT (FORMAT csv, HEADER off)", {**CSV, "header": False}),
        ("COPY t TO STDOUT (FORMAT csv, HEADER 0)", {**CSV, "header": False}),
        (
            "COPY t FROM STDIN (FORMAT csv, HEADER match)",
            {**CSV, "header": True, "direction": "in"},
        ),
        ("COPY t FROM STDIN (FORMAT binary)", {"format": "binary", "direction": "in"}),
        ("COPY BINARY t TO STDOUT", {"format": "binary"}),
        ("COPY t TO STDOUT WITH BINARY", {"format": "binary"}),
        ("COPY t TO STDOUT (DELIMITER '|')", {**TEXT, "delimiter": "|"}),
        ("COPY t TO STDOUT (NULL 'NULL')", {**TEXT, "null": "NULL"}),
        (
            "COPY t TO STDOUT (FORMAT csv, DELIMITER ';', NULL 'NA', QUOTE '''', ESCAPE '\\')",
            {**CSV, "delimiter": ";", "null": "NA", "quote": "'", "escape": "\\"},
        ),
        ("COPY t TO STDOUT (FORMAT csv, QUOTE '|')", {**CSV, "quote": "|", "escape": "|"}),
        ("COPY t TO STDOUT WITH CSV HEADER", {**CSV, "header": True}),
        ("COPY t TO STDOUT CSV", CSV),
        (
            "COPY t TO STDOUT WITH CSV HEADER QUOTE AS '''' ESCAPE AS '\\'",
            {**CSV, "header": True, "quote": "'", "escape": "\\"},
        ),
        (
            "COPY t TO STDOUT WITH DELIMITER AS '|' NULL AS ''",
            {**TEXT, "delimiter": "|", "null": ""},
        ),
        ("COPY t TO STDOUT WITH CSV FORCE QUOTE *", CSV),
        ("COPY t FROM STDIN (FORMAT csv, FORCE_NOT_NULL (a))", CSV),
        ("COPY t TO STDOUT (ENCODING 'LATIN1')", {**TEXT, "encoding": "LATIN1"}),
        ("COPY t TO STDOUT", {"encoding": None}),
        ("COPY t FROM '/tmp/x.csv' (FORMAT csv)", {**CSV, "direction": "in", "endpoint": "file"}),
        ("COPY t TO '/tmp/x'", {"direction": "out", "endpoint": "file"}),
        ("COPY t FROM PROGRAM 'curl x'", {"direction": "in", "endpoint": "program"}),
        ("COPY t TO PROGRAM 'gzip'", {"direction": "out", "endpoint": "program"}),
        # the JSON leaves an empty file name out: it must not pass for STDIN
        ("COPY t FROM ''", {"direction": "in", "endpoint": "file"}),
        ("COPY (SELECT 1 FROM x) TO ''", {"direction": "out", "endpoint": "file"}),
        ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", {"endpoint": "stdio"}),
        ("COPY (SELECT 1 FROM x) TO STDOUT", {"endpoint": "stdio"}),
        ("COPY (SELECT 1) TO STDOUT", {"relation": None, "columns": None}),
    ],
)
def test_it_reads_copy_options(sql, expected):
    info = one(sql).copy
    assert isinstance(info, CopyInfo)
    for field, value in expected.items():
        assert getattr(info, field) == value, field


@pytest.mark.parametrize(
    ("sql", "query_refs", "has_star"),
    [
        (
            "COPY (SELECT email AS e, lower(name) FROM users) TO STDOUT",
            refs({"email"}, {"name"}),
            False,
        ),
        ("COPY (SELECT * FROM users) TO STDOUT", None, True),
        ("COPY (DELETE FROM t WHERE a = 1 RETURNING email) TO STDOUT", refs({"email"}), False),
        ("COPY users TO STDOUT", None, False),
        ("COPY users (email) TO STDOUT", None, False),
    ],
)
def test_it_gives_the_copy_query_columns(sql, query_refs, has_star):
    a = one(sql)
    assert a.copy.query_output_refs == query_refs
    assert a.has_star is has_star
    assert a.output_refs is None  # COPY sends CopyData, not DataRows


def test_non_copy_statements_have_no_copy_info():
    assert one("SELECT 1").copy is None


# -- prepared statements ----------------------------------------------------------------------


def test_it_analyses_the_inner_statement_of_prepare():
    a = one("PREPARE p (int) AS SELECT email FROM users WHERE id = $1 AND f(2)")
    assert a.prepares == "p"
    assert a.facts.kinds == {"PREPARE"}
    assert a.facts.relations == {"users"}
    assert a.facts.functions == {"f"}
    assert a.param_count == 0
    inner = a.prepared
    assert inner is not None
    assert inner.sql == "SELECT email FROM users WHERE id = $1 AND f(2)"
    assert inner.facts.kinds == {"SELECT"}
    assert inner.output_refs == refs({"email"})
    assert inner.param_count == 1


def test_execute_carries_the_prepared_statements_facts():
    prepared = {"p": one("PREPARE p AS DELETE FROM t RETURNING email")}
    a = one("EXECUTE p(f(1))", prepared=prepared)
    assert a.executes == "p"
    assert a.facts.kinds == {"EXECUTE", "DELETE"}
    assert a.facts.kind == "DELETE"
    assert a.facts.relations == {"t"}
    assert a.facts.functions == {"f"}
    assert a.facts.unfiltered_write
    assert a.output_refs == refs({"email"})
    assert a.prepared is prepared["p"].prepared
    # an ordinary frozen dataclass value: comparable, hashable, replaceable
    assert dataclasses.replace(a) == a
    assert hash(a) == hash(dataclasses.replace(a))
    assert isinstance(a.facts.kinds, frozenset) and isinstance(a.all_refs, frozenset)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.sql = "x"


def test_execute_accepts_the_inner_analysis_as_stored_value():
    # A protocol-level Parse stores the statement's own analysis under its name.
    (parsed,) = analyze("SELECT * FROM users LIMIT 5")
    a = one("EXECUTE s1", prepared={"s1": parsed})
    assert a.facts.kinds == {"EXECUTE", "SELECT"}
    assert a.has_star and a.output_refs is None
    assert not a.facts.unbounded_select
    (unbounded,) = analyze("SELECT name FROM users")
    b = one("EXECUTE s2", prepared={"s2": unbounded})
    assert b.facts.unbounded_select
    assert b.output_refs == refs({"name"})


def test_execute_of_an_unknown_prepared_statement_fails_closed():
    with pytest.raises(SqlAnalysisError, match='EXECUTE of unknown prepared statement "p1"'):
        analyze("EXECUTE p1")
    with pytest.raises(SqlAnalysisError, match='"p1"'):
        analyze("EXECUTE p1(1)", prepared={"p2": one("PREPARE p2 AS SELECT 1")})


@pytest.mark.parametrize(
    ("sql", "kinds", "unfiltered"),
    [
        ("EXPLAIN ANALYZE EXECUTE p", {"EXPLAIN", "EXECUTE", "DELETE"}, True),
        ("EXPLAIN EXECUTE p", {"EXPLAIN"}, False),
        ("CREATE TABLE x AS EXECUTE p", {"DDL", "EXECUTE", "DELETE"}, True),
        ("CREATE TABLE x AS EXECUTE p WITH NO DATA", {"DDL"}, False),
    ],
)
def test_nested_execute_resolves_the_prepared_statement(sql, kinds, unfiltered):
    prepared = {"p": one("PREPARE p AS DELETE FROM t RETURNING id")}
    a = one(sql, prepared=prepared)
    assert a.facts.kinds == frozenset(kinds)
    assert "t" in a.facts.relations
    assert a.facts.unfiltered_write is unfiltered
    with pytest.raises(SqlAnalysisError, match="unknown prepared statement"):
        analyze(sql)


def test_prepare_then_execute_in_one_query():
    prep, execute = analyze("PREPARE q AS UPDATE t SET a = 1; EXECUTE q")
    assert prep.prepares == "q"
    assert execute.facts.kinds == {"EXECUTE", "UPDATE"}
    assert execute.facts.unfiltered_write


def test_deallocate_in_one_query_forgets_the_statement():
    prepared = {"p": one("PREPARE p AS SELECT 1")}
    assert analyze("EXECUTE p", prepared=prepared)[0].facts.kinds == {"EXECUTE", "SELECT"}
    with pytest.raises(SqlAnalysisError):
        analyze("DEALLOCATE p; EXECUTE p", prepared=prepared)
    with pytest.raises(SqlAnalysisError):
        analyze("DEALLOCATE ALL; EXECUTE p", prepared=prepared)
    with pytest.raises(SqlAnalysisError):
        analyze("DISCARD ALL; EXECUTE p", prepared=prepared)
    assert "p" in prepared  # the caller's map is not changed


def test_results_that_depend_on_state_are_not_cached():
    sql = "EXECUTE pp"
    a = one(sql, prepared={"pp": one("PREPARE pp AS SELECT 1")})
    b = one(sql, prepared={"pp": one("PREPARE pp AS DELETE FROM t")})
    assert a.facts.kind == "SELECT"
    assert b.facts.kind == "DELETE"
    with pytest.raises(SqlAnalysisError):
        analyze(sql)


# -- cursors ------------------------------------------------------------------------------------


def test_declare_carries_the_query_facts():
    a = one("DECLARE c CURSOR WITH HOLD FOR SELECT email, f(name) FROM users")
    assert a.declares == "c"
    assert a.facts.kinds == {"CURSOR", "SELECT"}
    assert a.facts.relations == {"users"}
    assert a.facts.functions == {"f"}
    assert a.facts.unbounded_select
    assert a.output_refs is None
    assert a.prepared is not None
    assert a.prepared.sql == "SELECT email, f(name) FROM users"
    assert a.prepared.output_refs == refs({"email"}, {"name"})


@pytest.mark.parametrize(
    ("sql", "unbounded", "rows"),
    [
        ("FETCH ALL FROM c", True, True),
        ("FETCH ALL IN c", True, True),
        ("FETCH FORWARD ALL FROM c", True, True),
        ("FETCH BACKWARD ALL FROM c", True, True),
        ("FETCH 10 FROM c", False, True),
        ("FETCH c", False, True),
        ("FETCH NEXT FROM c", False, True),
        ("FETCH PRIOR FROM c", False, True),
        ("FETCH ABSOLUTE 3 FROM c", False, True),
        ("FETCH RELATIVE -1 FROM c", False, True),
        ("FETCH LAST FROM c", False, True),
        ("FETCH FORWARD 5 c", False, True),
        ("MOVE ALL IN c", False, False),
        ("MOVE FORWARD 3 FROM c", False, False),
    ],
)
def test_fetch_carries_the_cursor_query(sql, unbounded, rows):
    cursors = {"c": one("DECLARE c CURSOR FOR SELECT email AS e FROM users")}
    a = one(sql, cursors=cursors)
    assert a.fetches == "c"
    assert a.facts.kinds == {"CURSOR", "SELECT"}
    assert a.facts.relations == {"users"}
    assert a.facts.unbounded_select is unbounded
    assert a.output_refs == (refs({"email"}) if rows else None)


def test_fetch_all_from_a_limited_cursor_is_bounded():
    cursors = {"c": one("DECLARE c CURSOR FOR SELECT email FROM users LIMIT 10")}
    assert not one("FETCH ALL FROM c", cursors=cursors).facts.unbounded_select


def test_fetch_from_a_star_cursor_is_not_aligned():
    cursors = {"c": one("DECLARE c CURSOR FOR SELECT * FROM users")}
    a = one("FETCH 5 FROM c", cursors=cursors)
    assert a.output_refs is None and a.has_star


def test_fetch_accepts_a_portal_analysis_as_cursor():
    # A named protocol portal is a cursor too: the relay may store the statement itself.
    (portal,) = analyze("DELETE FROM t WHERE id = $1 RETURNING email")
    a = one("FETCH 1 FROM p", cursors={"p": portal})
    assert a.facts.kinds == {"CURSOR", "DELETE"}
    assert a.output_refs == refs({"email"})


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("FETCH ALL FROM nope", 'FETCH from unknown cursor "nope"'),
        ("MOVE 1 IN nope", 'MOVE in unknown cursor "nope"'),
    ],
)
def test_fetch_from_an_unknown_cursor_fails_closed(sql, message):
    with pytest.raises(SqlAnalysisError, match=message):
        analyze(sql)


def test_declare_fetch_close_in_one_query():
    declare, fetch, close = analyze("DECLARE c CURSOR FOR SELECT a FROM t; FETCH 5 FROM c; CLOSE c")
    assert declare.declares == "c"
    assert fetch.output_refs == refs({"a"})
    assert close.closes == "c"
    with pytest.raises(SqlAnalysisError):
        analyze("DECLARE c CURSOR FOR SELECT 1; CLOSE c; FETCH c")
    with pytest.raises(SqlAnalysisError):
        analyze("CLOSE ALL; FETCH c", cursors={"c": declare})


# -- bookkeeping fields -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "field", "value"),
    [
        ("CLOSE c", "closes", "c"),
        ("CLOSE ALL", "closes", "ALL"),
        ("DEALLOCATE p", "deallocates", "p"),
        ("DEALLOCATE PREPARE p", "deallocates", "p"),
        ("DEALLOCATE ALL", "deallocates", "ALL"),
        ("DISCARD ALL", "discards_all", True),
        ("DISCARD PLANS", "discards_all", False),
        ("PREPARE Mixed AS SELECT 1", "prepares", "mixed"),
        ('PREPARE "Mixed" AS SELECT 1', "prepares", "Mixed"),
        ('DECLARE "C" CURSOR FOR SELECT 1', "declares", "C"),
        ("BEGIN", "transaction", "begin"),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", "transaction", "begin"),
        ("START TRANSACTION", "transaction", "begin"),
        ("COMMIT", "transaction", "commit"),
        ("COMMIT AND CHAIN", "transaction", "commit"),
        ("END", "transaction", "commit"),
        ("ROLLBACK", "transaction", "rollback"),
        ("ABORT", "transaction", "rollback"),
        ("SAVEPOINT s1", "transaction", "savepoint"),
        ("RELEASE s1", "transaction", "release"),
        ("ROLLBACK TO s1", "transaction", "rollback_to"),
        ("PREPARE TRANSACTION 'g'", "transaction", "prepare"),
        ("COMMIT PREPARED 'g'", "transaction", "commit_prepared"),
        ("ROLLBACK PREPARED 'g'", "transaction", "rollback_prepared"),
        ("SELECT 1", "transaction", None),
    ],
)
def test_it_reports_session_bookkeeping(sql, field, value):
    assert getattr(one(sql), field) == value


# -- failing closed ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "message", "position"),
    [
        ("SELEC 1", 'syntax error at or near "SELEC" (position 1)', 1),
        ("SELECT 1; SELEC 2", 'syntax error at or near "SELEC" (position 11)', 11),
        ("SELECT 'é' ; SELEC 1", 'syntax error at or near "SELEC" (position 14)', 14),
        ("SELECT 'unterminated", "unterminated quoted string", 8),
        ("SELECT 1 FROM", "syntax error at end of input", 14),
        ("DELETE t", 'syntax error at or near "t"', 8),
        ("SELECT $$ unterminated", "unterminated dollar-quoted string", 8),
        (
            "SELECT 1 FETCH FIRST 3 ROWS WITH TIES",
            "WITH TIES cannot be specified without ORDER BY",
            None,
        ),
    ],
)
def test_unparseable_sql_fails_closed_with_a_position(sql, message, position):
    with pytest.raises(SqlAnalysisError) as info:
        analyze(sql)
    assert message in str(info.value)
    if position is not None:
        assert info.value.position == position
        assert f"(position {position})" in str(info.value)


def test_a_nul_character_fails_closed():
    # The parser reads a C string: what follows the NUL must not ride along unseen.
    with pytest.raises(SqlAnalysisError, match="NUL"):
        analyze("SELECT 1\x00; DELETE FROM t")


def test_an_unknown_statement_node_fails_closed(monkeypatch, fresh_cache):
    tree = {"stmts": [{"stmt": {"FrobnicateStmt": {}}}]}
    monkeypatch.setattr(sqlmod, "_parse_json", lambda text: tree)
    with pytest.raises(SqlAnalysisError, match="FrobnicateStmt is not supported"):
        analyze("FROBNICATE")


def test_an_unknown_nested_statement_node_fails_closed(monkeypatch, fresh_cache):
    tree = {
        "stmts": [
            {
                "stmt": {
                    "SelectStmt": {
                        "withClause": {
                            "ctes": [
                                {
                                    "CommonTableExpr": {
                                        "ctename": "x",
                                        "ctequery": {"FrobnicateStmt": {}},
                                    }
                                }
                            ]
                        },
                        "op": "SETOP_NONE",
                    }
                }
            }
        ]
    }
    monkeypatch.setattr(sqlmod, "_parse_json", lambda text: tree)
    with pytest.raises(SqlAnalysisError, match="FrobnicateStmt"):
        analyze("WITH x AS (FROBNICATE) SELECT 1")


def test_every_statement_type_of_the_grammar_is_classified():
    grammar = {
        name
        for name, cls in vars(pglast.ast).items()
        if isinstance(cls, type) and issubclass(cls, pglast.ast.Node) and name.endswith("Stmt")
    }
    # never produced at the top of a raw parse tree of SQL text
    not_statements = {"RawStmt", "SetOperationStmt", "PLAssignStmt", "ReturnStmt"}
    assert grammar - not_statements == sqlmod.STATEMENT_TYPES


def test_a_deeply_nested_statement_fails_closed_or_is_analysed():
    for depth in (50, 500, 5000):
        sql = "SELECT " + "(" * depth + "1" + ")" * depth
        try:
            result = analyze(sql)
        except SqlAnalysisError:
            continue
        assert result[0].facts.kind == "SELECT"


def test_it_fails_closed_on_deep_subqueries():
    depth = 300
    sql = "SELECT * FROM " + "(SELECT * FROM " * depth + "t" + ") s" * depth
    try:
        (a,) = analyze(sql)
    except SqlAnalysisError:
        return
    assert a.facts.relations == {"t"}


@settings(max_examples=300, deadline=None)
@given(hs.text(max_size=60))
def test_arbitrary_text_yields_analyses_or_sql_analysis_error(text):
    try:
        out = analyze(text)
    except SqlAnalysisError:
        return
    for a in out:
        assert a.facts.kind in STATEMENT_KINDS


_tokens = hs.sampled_from(
    [
        "SELECT",
        "DELETE",
        "FROM",
        "t",
        "WITH",
        "AS",
        "(",
        ")",
        ";",
        "$$",
        "'",
        "/*",
        "*/",
        "--",
        "\n",
        "1",
        ",",
        "*",
        "WHERE",
        "RETURNING",
        "UPDATE",
        "SET",
        "a",
        "=",
        "EXPLAIN",
        "ANALYZE",
        "INSERT",
        "INTO",
        "VALUES",
        "COPY",
        "STDOUT",
        "TO",
        "$1",
        "E'\\''",
    ]
)


@settings(max_examples=300, deadline=None)
@given(hs.lists(_tokens, max_size=20))
def test_sql_like_token_soup_yields_analyses_or_sql_analysis_error(tokens):
    try:
        out = analyze(" ".join(tokens))
    except SqlAnalysisError:
        return
    for a in out:
        assert a.facts.kind == worst_kind(a.facts.kinds)


# -- generated CTE nests -------------------------------------------------------------------------


@hs.composite
def _statements(draw, depth=0):
    """``(sql, kinds, unfiltered, relations)`` of a generated statement, possibly with a
    ``WITH`` of generated statements (SELECT/DELETE/UPDATE/INSERT)."""
    table = f"t{draw(hs.integers(0, 5))}"
    kind = draw(hs.sampled_from(["SELECT", "DELETE", "UPDATE", "INSERT"]))
    filtered = draw(hs.booleans())
    where = " WHERE a = 1" if filtered else ""
    if kind == "SELECT":
        body = f"SELECT a FROM {table}{where}"
        kinds, unfiltered = {"SELECT"}, False
    elif kind == "DELETE":
        body = f"DELETE FROM {table}{where} RETURNING a"
        kinds, unfiltered = {"DELETE"}, not filtered
    elif kind == "UPDATE":
        body = f"UPDATE {table} SET a = 2{where} RETURNING a"
        kinds, unfiltered = {"UPDATE"}, not filtered
    else:
        body = f"INSERT INTO {table} (a) VALUES (1) RETURNING a"
        kinds, unfiltered = {"INSERT"}, False
    relations = {table}
    if depth < 2 and draw(hs.booleans()):
        inner = draw(hs.lists(_statements(depth + 1), min_size=1, max_size=3))
        ctes = ", ".join(f"c{depth}_{i} AS ({s})" for i, (s, _, _, _) in enumerate(inner))
        body = f"WITH {ctes} {body}"
        for _, k, u, r in inner:
            kinds |= k
            unfiltered = unfiltered or u
            relations |= r
    return body, kinds, unfiltered, relations


@settings(max_examples=200, deadline=None)
@given(_statements(), hs.sampled_from(["", "EXPLAIN ANALYZE ", "EXPLAIN "]))
def test_the_worst_kind_is_never_lower_than_the_inner_writes(statement, prefix):
    sql, kinds, unfiltered, relations = statement
    a = one(prefix + sql)
    if prefix == "EXPLAIN ":
        assert a.facts.kinds == {"EXPLAIN"}
        assert not a.facts.unfiltered_write
    else:
        assert a.facts.kinds >= kinds
        assert RANK[a.facts.kind] <= min(RANK[k] for k in kinds)
        assert a.facts.unfiltered_write is unfiltered
    assert a.facts.relations == frozenset(relations)


@settings(max_examples=100, deadline=None)
@given(_statements())
def test_a_write_hidden_after_a_select_is_its_own_statement(statement):
    sql, kinds, _, _ = statement
    first, second = analyze(f"SELECT 1; {sql}")
    assert first.facts.kinds == {"SELECT"}
    assert second.facts.kinds >= kinds


# -- caching and formatting -------------------------------------------------------------------


def test_it_caches_state_free_analyses_by_text():
    sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"
    assert analyze(sql)[0] is analyze(sql)[0]
    assert analyze(sql)[0].sql == "SELECT abalance FROM pgbench_accounts WHERE aid = 12345"


def test_long_texts_are_analysed_without_the_cache():
    values = ", ".join(f"({i}, 'x{i}')" for i in range(2000))
    sql = f"INSERT INTO t (a, b) VALUES {values}; DELETE FROM t"
    assert len(sql) > sqlmod._CACHE_MAX_SQL
    insert, delete = analyze(sql)
    assert insert.facts.kinds == {"INSERT"}
    assert delete.facts.unfiltered_write


def test_format_sql_pretty_prints_and_never_raises():
    assert format_sql("select a,b from t where x=1") == "SELECT a\n     , b\nFROM t\nWHERE x = 1"
    assert format_sql("selec 1") == "selec 1"
    assert format_sql("") == ""
    assert format_sql("SELECT 1\x00") in ("SELECT 1\x00", "SELECT 1")


# -- whole rows in result columns (the relay masks them with every column's name) ------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT c FROM customers c",
        "SELECT c::text FROM customers c",
        "SELECT row_to_json(c) -> 'name' FROM customers c",
        "SELECT concat(c.*) FROM customers c",
        "SELECT (c).* FROM customers c",
        "SELECT x FROM (SELECT c AS x FROM customers c) s",
        "SELECT * FROM (SELECT c AS x FROM customers c) s",
        "WITH t AS (SELECT * FROM customers) SELECT t FROM t",
        "SELECT (SELECT c::text FROM customers c LIMIT 1)",
        "SELECT array_agg(c) FROM customers c",
        "SELECT 1 UNION ALL SELECT c FROM customers c",
        "DELETE FROM customers c WHERE id = 1 RETURNING c",
    ],
)
def test_it_sees_whole_rows_in_result_columns(sql):
    (a,) = analyze(sql)
    assert a.has_star and a.whole_row


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM customers",
        "SELECT c.*, 1 FROM customers c",
        "SELECT count(*) FROM customers",
        "SELECT (c).name FROM customers c",
        "SELECT (x).name FROM (SELECT c AS x FROM customers c) s",
        "SELECT exists(SELECT c FROM customers c)",
        "SELECT name FROM customers",
    ],
)
def test_it_sees_no_whole_row_where_there_is_none(sql):
    (a,) = analyze(sql)
    assert not a.whole_row


def test_fetch_and_execute_carry_whole_row():
    (declare,) = analyze("DECLARE c CURSOR FOR SELECT c::text FROM customers c")
    (fetch,) = analyze("FETCH 10 FROM c", cursors={"c": declare})
    assert fetch.whole_row
    (prep,) = analyze("PREPARE p AS SELECT t FROM customers t")
    (execute,) = analyze("EXECUTE p", prepared={"p": prep})
    assert execute.whole_row


@pytest.mark.parametrize(
    ("sql", "relation", "whole_row"),
    [
        ("COPY (SELECT * FROM customers WHERE id = 1) TO STDOUT", "customers", False),
        ("COPY (SELECT c.* FROM public.customers c) TO STDOUT", "public.customers", False),
        ("COPY (SELECT *, 1 FROM customers) TO STDOUT", None, False),
        ("COPY (SELECT * FROM a, b) TO STDOUT", None, False),
        ("COPY (WITH customers AS (SELECT 1) SELECT * FROM customers) TO STDOUT", None, False),
        ("COPY (SELECT c::text FROM customers c) TO STDOUT", None, True),
        ("COPY (SELECT id FROM customers) TO STDOUT", None, False),
    ],
)
def test_it_names_the_relation_of_a_copy_of_select_star(sql, relation, whole_row):
    (a,) = analyze(sql)
    assert a.copy is not None
    assert a.copy.query_relation == relation
    assert a.copy.query_whole_row is whole_row

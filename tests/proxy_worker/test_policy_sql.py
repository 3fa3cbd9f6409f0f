"""Pure policy decisions for SQL statements on PostgreSQL targets: rule conditions, name
globs, first match, defaults, grants, fingerprints, and the routing that keeps HTTP and
PostgreSQL targets apart. ``SqlFacts`` are built by hand (the parser is tested on its own)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mitmproxy.proxy import mode_specs
from mitmproxy.test import taddons, tflow

from proxy_worker.contract import SCHEMA_VERSION, ContractError
from proxy_worker.policy import (
    STATEMENT_KINDS,
    NameGlobs,
    Policy,
    PostgresUpstream,
    SqlFacts,
    StatementRequest,
    request_fingerprint,
    request_info,
    statement_fingerprint,
    worst_kind,
)

NOW = 1_700_000_000.0
PG = 1  # the PostgreSQL target
WEB = 2  # an HTTP target
AGENT = 7


def facts(*kinds: str, relations=(), functions=(), unfiltered=False, unbounded=False):
    kinds = kinds or ("SELECT",)
    return SqlFacts(
        kind=worst_kind(frozenset(kinds)),
        kinds=frozenset(kinds),
        relations=frozenset(relations),
        functions=frozenset(functions),
        unfiltered_write=unfiltered,
        unbounded_select=unbounded,
    )


def stmt(f: SqlFacts, sql="SELECT 1", params=(), agent=AGENT, target=PG, groups=frozenset()):
    return StatementRequest(
        agent_id=agent,
        target_id=target,
        facts=f,
        sql=sql,
        parameters=tuple(params),
        agent_group_ids=frozenset(groups),
    )


def target_docs():
    return [
        {
            "id": PG,
            "slug": "orders",
            "kind": "postgres",
            "upstream": "postgresql://app@db.internal:5432/orders",
            "credential": "db-password",
            "default_action": "allow",
            "approval_timeout": 60,
            "postgres": {
                "host": "db.internal",
                "port": 5432,
                "database": "orders",
                "user": "app",
                "sslmode": "verify-full",
                "ca_pem": None,
                "allow_plaintext": False,
            },
        },
        {
            "id": WEB,
            "slug": "web",
            "upstream": "http://db.internal:8080",
            "default_action": "allow",
        },
    ]


def policy(rules=(), grants=(), default="allow") -> Policy:
    targets = target_docs()
    targets[0]["default_action"] = default
    rules = [{"id": 100 + i, "name": f"r{i}", **r} for i, r in enumerate(rules)]
    return Policy.from_document(
        {
            "v": SCHEMA_VERSION,
            "version": 1,
            "targets": targets,
            "agents": [{"id": AGENT, "name": "bot", "token_hashes": [], "group_ids": [3]}],
            "access_rules": rules,
            "grants": list(grants),
        }
    )


def decide(rule: dict, request: StatementRequest) -> str | None:
    """The name of the rule deciding ``request`` under a policy of ``rule`` alone."""
    d = policy([{"action": "deny", **rule}]).evaluate_statement(request, now=NOW)
    return d.rule.name if d.rule else None


# -- targets ------------------------------------------------------------------------------


def test_a_postgres_target_carries_its_upstream_and_password():
    p = policy()
    t = p.resolve_target("orders", kind="postgres")
    assert t is not None and t.kind == "postgres"
    assert t.postgres == PostgresUpstream(
        host="db.internal",
        port=5432,
        database="orders",
        user="app",
        sslmode="verify-full",
        ca_pem=None,
        allow_plaintext=False,
        password="db-password",
    )
    assert "db-password" not in repr(t.postgres)
    assert p.resolve_target("web").kind == "http" and p.resolve_target("web").postgres is None


def test_http_and_postgres_listeners_see_only_their_targets():
    p = policy()
    assert p.resolve_target("orders") is not None  # no kind asked: any
    assert p.resolve_target("orders", kind="http") is None
    assert p.resolve_target("web", kind="postgres") is None
    assert p.resolve_target("web", kind="http").slug == "web"
    # Forward mode: a PostgreSQL target is no HTTP egress destination.
    assert p.allows_host("db.internal", 8080)
    assert not p.allows_host("db.internal", 5432)
    assert list(p.forward_targets) == [("db.internal", 8080)]


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "ftp"},
        {"postgres": None},
        {"postgres": "db.internal"},
        {"postgres": {"host": "h", "database": "d", "user": "u", "sslmode": "sometimes"}},
        {"postgres": {"host": "h", "database": "d", "user": "u", "port": 70000}},
        {"postgres": {"database": "d", "user": "u"}},
    ],
)
def test_malformed_postgres_targets_are_refused(change):
    targets = target_docs()
    targets[0].update(change)
    with pytest.raises(ContractError):
        Policy.from_document({"v": SCHEMA_VERSION, "version": 1, "targets": targets})


def test_unknown_statement_kinds_in_a_rule_are_refused():
    with pytest.raises(ContractError):
        policy([{"action": "deny", "statement_kinds": ["SELECT", "EXPLODE"]}])


# -- rule conditions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule_kinds, f, hit",
    [
        (["DELETE"], facts("DELETE"), True),
        (["delete"], facts("DELETE"), True),  # upper-cased when read
        (["DELETE"], facts("SELECT"), False),
        # The worst kind is not the only one: a DELETE in a CTE of a SELECT counts.
        (["DELETE"], facts("SELECT", "DELETE"), True),
        (["SELECT"], facts("SELECT", "DELETE"), True),
        (["UPDATE", "DELETE"], facts("INSERT"), False),
        ([], facts("DDL"), True),  # [] = any kind
    ],
)
def test_statement_kinds_intersect_the_facts_kinds(rule_kinds, f, hit):
    assert (decide({"statement_kinds": rule_kinds}, stmt(f)) is not None) is hit


def allows(rule: dict, request: StatementRequest) -> bool:
    """Whether an allow rule alone (target default: deny) lets ``request`` through."""
    d = policy([{"action": "allow", **rule}], default="deny").evaluate_statement(request, now=NOW)
    return d.action == "allow"


@pytest.mark.parametrize(
    "rule, f, allowed",
    [
        # Allow rules read as "only": every effect must be allowed ...
        ({"statement_kinds": ["SELECT"]}, facts("SELECT"), True),
        ({"statement_kinds": ["SELECT"]}, facts("SELECT", "DELETE"), False),
        ({"statement_kinds": ["SELECT"]}, facts("SELECT", "LOCK"), False),
        ({"statement_kinds": ["SELECT", "LOCK"]}, facts("SELECT", "LOCK"), True),
        # ... every relation covered ...
        ({"tables": ["customers"]}, facts(relations=["public.customers"]), True),
        ({"tables": ["customers"]}, facts(relations=["customers", "secrets"]), False),
        # A rule on tables allows statements on tables only (not SELECT pg_read_file()).
        ({"tables": ["customers"]}, facts(relations=[], functions=["pg_read_file"]), False),
        # ... and every function.
        ({"functions": ["lower"]}, facts(functions=["lower", "pg_read_file"]), False),
        ({"functions": ["lower", "upper"]}, facts(functions=["upper"]), True),
    ],
)
def test_allow_rules_must_cover_every_effect_relation_and_function(rule, f, allowed):
    assert allows(rule, stmt(f)) is allowed


@pytest.mark.parametrize(
    "globs, relations, hit",
    [
        # Dotted globs match schema.name as a whole.
        (["public.customers"], ["public.customers"], True),
        (["public.customers"], ["billing.customers"], False),
        (["pg_catalog.*"], ["pg_catalog.pg_authid"], True),
        (["pg_catalog.*"], ["public.pg_authid"], False),
        (["*.secret_*"], ["hr.secret_salaries"], True),
        # Bare globs match the name part in any schema.
        (["customers"], ["public.customers"], True),
        (["customers"], ["customers"], True),
        (["secret_*"], ["hr.secret_salaries"], True),
        (["secret_*"], ["secret_store.accounts"], False),  # a schema is not a name
        # Unqualified relations match a dotted glob by its name part (fail-safe).
        (["public.customers"], ["customers"], True),
        (["billing.customers"], ["customers"], True),
        (["pg_catalog.pg_*"], ["pg_authid"], True),
        (["pg_catalog.pg_*"], ["orders"], False),
        (["pg_catalog.*"], ["orders"], True),  # documented: "*" as name part matches all
        # Case-insensitive, on either side.
        (["Public.Customers"], ["public.customers"], True),
        (["public.customers"], ["PUBLIC.CUSTOMERS"], True),
        # catalog.schema.name is also judged as schema.name.
        (["public.customers"], ["orders.public.customers"], True),
        # Some relation, some glob.
        (["audit.*", "public.customers"], ["public.orders", "public.customers"], True),
        (["audit.*"], ["public.orders", "public.customers"], False),
        (["*"], ["anything.at_all"], True),
        # A statement without relations never matches a rule with tables.
        (["*"], [], False),
        # fnmatch character classes.
        (["public.t[0-9]"], ["public.t7"], True),
        (["public.t[!0-9]"], ["public.t7"], False),
    ],
)
def test_table_globs(globs, relations, hit):
    f = facts("SELECT", relations=relations)
    assert (decide({"tables": globs}, stmt(f)) is not None) is hit


@pytest.mark.parametrize(
    "globs, functions, hit",
    [
        (["pg_read_file"], ["pg_read_file"], True),
        (["pg_read_file"], ["pg_catalog.pg_read_file"], True),
        (["pg_catalog.pg_sleep"], ["pg_sleep"], True),  # unqualified: by name part
        (["pg_catalog.pg_sleep"], ["public.pg_sleep"], False),
        (["dblink*"], ["dblink_exec"], True),
        (["dblink*"], ["lower"], False),
        (["lo_*"], [], False),
    ],
)
def test_function_globs(globs, functions, hit):
    f = facts("SELECT", functions=functions)
    assert (decide({"functions": globs}, stmt(f)) is not None) is hit


@pytest.mark.parametrize(
    "rule, f, hit",
    [
        ({"without_where": True}, facts("DELETE", unfiltered=True), True),
        ({"without_where": True}, facts("DELETE"), False),
        ({"without_where": True}, facts("TRUNCATE", unfiltered=True), True),
        ({"without_limit": True}, facts("SELECT", unbounded=True), True),
        ({"without_limit": True}, facts("SELECT"), False),
        # Every condition set must hold.
        (
            {"statement_kinds": ["DELETE"], "without_where": True},
            facts("UPDATE", unfiltered=True),
            False,
        ),
        (
            {"statement_kinds": ["SELECT"], "tables": ["public.*"], "without_limit": True},
            facts("SELECT", relations=["public.orders"], unbounded=True),
            True,
        ),
        (
            {"statement_kinds": ["SELECT"], "tables": ["public.*"], "without_limit": True},
            facts("SELECT", relations=["public.orders"]),
            False,
        ),
    ],
)
def test_without_where_without_limit_and_combinations(rule, f, hit):
    assert (decide(rule, stmt(f)) is not None) is hit


@pytest.mark.parametrize(
    "pattern, params, hit",
    [
        (r"@example\.com$", ["ann@example.com"], True),
        (r"@example\.com$", ["42", None, "bob@example.com"], True),
        (r"@example\.com$", ["ann@example.org"], False),
        (r"@example\.com$", [None], False),  # NULL is no text
        (r"^$", [""], True),  # the empty string is text
        (r"^$", [None], False),
        (r".", [], False),  # no parameters: nothing to search
    ],
)
def test_parameter_pattern_searches_each_bound_value(pattern, params, hit):
    assert (decide({"parameter_pattern": pattern}, stmt(facts(), params=params)) is not None) is hit


@pytest.mark.parametrize(
    "sql, hit",
    [
        ("SELECT * FROM pg_shadow", True),
        ("select passwd from PG_SHADOW", True),
        ("SELECT 1", False),
    ],
)
def test_body_pattern_searches_the_sql_text(sql, hit):
    assert (decide({"body_pattern": "(?i)pg_shadow"}, stmt(facts(), sql=sql)) is not None) is hit


@pytest.mark.parametrize(
    "rule",
    [
        {"methods": ["GET"]},
        {"path_pattern": "/x*"},
        {"query_pattern": "sql="},
        # Mixed (the control plane refuses these; the worker is strict too).
        {"methods": ["POST"], "statement_kinds": ["SELECT"]},
    ],
)
def test_http_only_rules_never_match_statements(rule):
    assert decide(rule, stmt(facts("SELECT"))) is None


@pytest.mark.parametrize(
    "rule",
    [
        {"statement_kinds": ["SELECT"]},
        {"tables": ["*"]},
        {"functions": ["*"]},
        {"without_where": True},
        {"without_limit": True},
        {"parameter_pattern": "."},
    ],
)
def test_sql_rules_never_match_http_requests(rule):
    p = policy([{"action": "deny", **rule}])
    d = p.evaluate(
        request_info(agent_id=AGENT, target_id=WEB, method="GET", upstream_path="/", body=b"x")
    )
    assert d.rule is None and d.action == "allow"


def test_rules_without_http_or_sql_conditions_match_both():
    p = policy([{"action": "deny", "body_pattern": "secret"}])
    sql = p.evaluate_statement(stmt(facts(), sql="SELECT 'secret'"), now=NOW)
    http = p.evaluate(
        request_info(
            agent_id=AGENT, target_id=WEB, method="POST", upstream_path="/", body=b"secret"
        )
    )
    assert sql.rule_id == http.rule_id == 100


@pytest.mark.parametrize(
    "rule, hit",
    [
        ({"target_id": PG}, True),
        ({"target_id": WEB}, False),
        ({"target_id": None}, True),
        ({"agent_ids": [AGENT]}, True),
        ({"agent_ids": [99]}, False),
        ({"agent_group_ids": [3]}, True),  # the request's groups
        ({"agent_group_ids": [4]}, False),
        ({"agent_ids": [99], "agent_group_ids": [3]}, True),
    ],
)
def test_target_agent_and_group_scoping(rule, hit):
    request = stmt(facts("DELETE"), groups={3})
    assert (decide({"statement_kinds": ["DELETE"], **rule}, request) is not None) is hit


def test_first_matching_rule_wins_and_the_default_applies_otherwise():
    p = policy(
        [
            {"action": "allow", "statement_kinds": ["SELECT"], "tables": ["public.reports"]},
            {
                "action": "approve",
                "statement_kinds": ["SELECT"],
                "without_limit": True,
                "approval_timeout": 30,
            },
            {"action": "deny", "statement_kinds": ["DELETE", "UPDATE"]},
        ],
        default="deny",
    )
    reports = facts("SELECT", relations=["public.reports"], unbounded=True)
    assert p.evaluate_statement(stmt(reports), now=NOW).rule_id == 100
    unbounded = facts("SELECT", relations=["public.orders"], unbounded=True)
    d = p.evaluate_statement(stmt(unbounded), now=NOW)
    assert (d.action, d.rule_id, d.timeout) == ("approve", 101, 30)
    d = p.evaluate_statement(stmt(facts("SELECT", relations=["public.orders"])), now=NOW)
    assert (d.action, d.rule, d.timeout) == ("deny", None, 60)  # the target's default
    assert p.evaluate_statement(stmt(facts("UPDATE")), now=NOW).rule_id == 102


# -- grants -------------------------------------------------------------------------------


def grant(**kw):
    return {
        "id": 1,
        "agent_id": AGENT,
        "target_id": PG,
        "method": "",
        "path_pattern": "*",
        "expires_at": NOW + 60,
        "approval_id": "a1",
        **kw,
    }


APPROVE_DELETES = {"action": "approve", "statement_kinds": ["DELETE", "SELECT", "DO"]}


@pytest.mark.parametrize(
    "g, f, covered",
    [
        (grant(), facts("DELETE", relations=["public.orders"]), True),
        (grant(method="DELETE"), facts("DELETE", relations=["public.orders"]), True),
        # The method is the statement's worst kind.
        (grant(method="SELECT"), facts("SELECT", "DELETE", relations=["public.orders"]), False),
        (grant(method="DELETE"), facts("SELECT"), False),
        (grant(tables=["public.orders"]), facts("DELETE", relations=["public.orders"]), True),
        (grant(tables=["orders"]), facts("DELETE", relations=["public.orders"]), True),
        # Every relation must be covered.
        (
            grant(tables=["public.orders"]),
            facts("DELETE", relations=["public.orders", "public.customers"]),
            False,
        ),
        (
            grant(tables=["public.orders", "public.customers"]),
            facts("DELETE", relations=["public.orders", "public.customers"]),
            True,
        ),
        # A table grant does not cover statements on no table (DO blocks, SELECT f()).
        (grant(tables=["public.*"]), facts("DO"), False),
        (grant(), facts("DO"), True),
        # Expired, another agent, another target, an HTTP grant.
        (grant(expires_at=NOW - 1), facts("DELETE"), False),
        (grant(expires_at=NOW), facts("DELETE"), False),
        (grant(agent_id=99), facts("DELETE"), False),
        (grant(target_id=WEB), facts("DELETE"), False),
        (grant(path_pattern="/orders/*"), facts("DELETE"), False),
    ],
)
def test_grants_lift_approvals_of_the_statements_they_cover(g, f, covered):
    p = policy([APPROVE_DELETES], grants=[g])
    d = p.evaluate_statement(stmt(f), now=NOW)
    assert d.action == "approve"
    assert (d.grant is not None) is covered


def test_grants_never_lift_a_deny_and_use_the_clock_by_default():
    p = policy([{"action": "deny", "statement_kinds": ["DELETE"]}], grants=[grant()])
    assert p.evaluate_statement(stmt(facts("DELETE")), now=NOW).grant is None
    p = policy([APPROVE_DELETES], grants=[grant(expires_at=NOW)])
    assert p.evaluate_statement(stmt(facts("DELETE"))).grant is None  # NOW is in the past


def test_sql_and_http_grants_stay_on_their_side():
    sql_grant = grant(id=1, target_id=WEB, tables=["*"])
    http_grant = grant(id=2, path_pattern="/x")
    p = policy(
        [APPROVE_DELETES, {"action": "approve", "target_id": WEB, "methods": ["GET"]}],
        grants=[sql_grant, http_grant],
    )
    d = p.evaluate(
        request_info(agent_id=AGENT, target_id=WEB, method="GET", upstream_path="/x", body=b""),
        now=NOW,
    )
    assert d.action == "approve" and d.grant is None  # a grant with tables is not HTTP's
    d = p.evaluate_statement(stmt(facts("DELETE", relations=["t"])), now=NOW)
    assert d.grant is None  # nor is a grant with a path pattern SQL's


# -- fingerprints -------------------------------------------------------------------------


def fp(sql="SELECT $1", params=("a",), agent=AGENT, target=PG):
    return statement_fingerprint(agent_id=agent, target_id=target, sql=sql, parameters=params)


def test_statement_fingerprints_tell_statements_apart():
    base = fp()
    assert len(base) == 64 and base == fp()
    variants = [
        fp(sql="SELECT $1 "),
        fp(params=("b",)),
        fp(params=("a", None)),
        fp(params=(None,)),
        fp(params=("",)),
        fp(params=()),
        fp(agent=8),
        fp(target=2),
    ]
    assert len({base, *variants}) == len(variants) + 1
    # NULL differs from the empty string; parameter boundaries count.
    assert fp(params=(None,)) != fp(params=("",))
    assert fp(params=("ab", "c")) != fp(params=("a", "bc"))
    # Never equal to an HTTP request's digest of the same parts.
    assert fp(sql="", params=()) != request_fingerprint(
        agent_id=AGENT, target_id=PG, method="", upstream_path="", body=b""
    )


def test_approve_outcomes_carry_the_fingerprint():
    p = policy([APPROVE_DELETES])
    request = stmt(facts("DELETE"), sql="DELETE FROM t WHERE id = $1", params=("5",))
    d = p.evaluate_statement(request, now=NOW)
    assert d.fingerprint == fp(sql="DELETE FROM t WHERE id = $1", params=("5",))
    given = StatementRequest(AGENT, PG, facts("DELETE"), "x", fingerprint="f" * 64)
    assert p.evaluate_statement(given, now=NOW).fingerprint == "f" * 64
    assert p.evaluate_statement(stmt(facts("INSERT")), now=NOW).fingerprint == ""


# -- NameGlobs and the shared vocabulary ----------------------------------------------------


def test_name_globs_any_and_all():
    g = NameGlobs(["public.orders", " Audit_* ", ""])
    assert g.globs == ("public.orders", "audit_*")
    assert g.any_matches(frozenset({"x", "orders"})) and not g.any_matches(frozenset({"x"}))
    assert g.all_match(frozenset({"public.orders", "hr.audit_log"}))
    assert not g.all_match(frozenset({"public.orders", "hr.salaries"}))
    assert g.all_match(frozenset())


def test_statement_kinds_are_the_shared_vocabulary():
    assert "FASTPATH" in STATEMENT_KINDS and len(STATEMENT_KINDS) == 24
    assert worst_kind(frozenset({"SELECT", "DELETE", "SET"})) == "DELETE"
    assert worst_kind(frozenset()) == "UTILITY"


# -- the HTTP listener refuses PostgreSQL targets -------------------------------------------


class _Authenticator:
    """Identifies every request as the test agent (PolicyGate's authenticator seam)."""

    def __init__(self, agent):
        self.agent = agent

    async def authenticate(self, policy, presented, address):
        return SimpleNamespace(agent=self.agent, code="", message="", retry_after=None)


@pytest.mark.parametrize("path, status", [("/orders/x", 404), ("/web/x", None)])
async def test_reverse_mode_treats_a_postgres_slug_as_an_unknown_target(path, status):
    from proxy_worker.addons.policy_gate import PolicyGate

    p = policy()
    link = SimpleNamespace(state=SimpleNamespace(policy=p))
    gate = PolicyGate(link, authenticator=_Authenticator(p.agents_by_id[AGENT]))
    with taddons.context():
        flow = tflow.tflow()
        flow.client_conn.proxy_mode = mode_specs.ProxyMode.parse("reverse:http://127.0.0.1:9")
        flow.request.path = path
        flow.request.headers["Authorization"] = "Bearer gh_whatever_token_value"
        await gate.request(flow)
    if status is None:
        assert flow.response is None and flow.request.host == "db.internal"
        assert flow.request.port == 8080
    else:
        assert flow.response.status_code == status
        assert b"unknown_target" in flow.response.content

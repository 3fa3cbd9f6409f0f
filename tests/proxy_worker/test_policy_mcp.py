"""Access rules, grants and routing for MCP targets (``proxy_worker.policy``, pure).

MCP conditions (methods, tool-name globs, JSONPath + regex over the arguments) and how
they read for allow rules ("only") and deny/approve rules ("any"); protocol isolation
(MCP rules never match HTTP requests or SQL statements, HTTP and SQL rules never match
MCP calls, rules without protocol conditions match all three); MCP grants; the target
kind, its settings, and routing in reverse and forward mode.
"""

from __future__ import annotations

import pytest

from proxy_worker.contract import SCHEMA_VERSION, ContractError
from proxy_worker.policy import (
    AccessRule,
    Grant,
    McpCall,
    McpSettings,
    Policy,
    SqlFacts,
    StatementRequest,
    is_http_kind,
    mcp_call_fingerprint,
    request_fingerprint,
    request_info,
    statement_fingerprint,
)

NOW = 1_800_000_000.0


def doc(rules=(), grants=(), targets=None, **extra):  # noqa: ANN001, ANN201
    return {
        "v": SCHEMA_VERSION,
        "version": 3,
        "targets": targets
        if targets is not None
        else [
            {
                "id": 1,
                "slug": "tools",
                "kind": "mcp",
                "upstream": "https://mcp.example.com/v1",
                "mcp": {"block_changed_tools": False, "allow_server_requests": True},
            },
            {"id": 2, "slug": "api", "upstream": "https://api.example.com"},
            {
                "id": 3,
                "slug": "db",
                "kind": "postgres",
                "upstream": "postgresql://db",
                "postgres": {"host": "db", "database": "app", "user": "u"},
            },
        ],
        "agents": [{"id": 7, "name": "bot", "token_hashes": [], "group_ids": [4]}],
        "access_rules": list(rules),
        "grants": list(grants),
        **extra,
    }


def call(name="lookup_customer", arguments=None, method="tools/call", **kw):  # noqa: ANN001, ANN201
    return McpCall(
        agent_id=kw.pop("agent_id", 7),
        target_id=kw.pop("target_id", 1),
        method=method,
        name=name,
        arguments={} if arguments is None else arguments,
        **kw,
    )


def decide(rules, c=None, **kw) -> str:  # noqa: ANN001
    policy = Policy.from_document(doc(rules, **kw))
    return policy.evaluate_mcp_call(c or call(), now=NOW).action


# -- targets and routing ----------------------------------------------------------------


def test_an_mcp_target_has_its_settings_and_defaults():
    policy = Policy.from_document(doc())
    t = policy.targets_by_id[1]
    assert t.kind == "mcp"
    assert t.mcp == McpSettings(block_changed_tools=False, allow_server_requests=True)
    assert policy.targets_by_id[2].mcp is None
    bare = Policy.from_document(
        doc(targets=[{"id": 1, "slug": "m", "kind": "mcp", "upstream": "http://m"}])
    )
    assert bare.targets_by_id[1].mcp == McpSettings(True, False)


@pytest.mark.parametrize("block", ["yes please", ["x"], 3])
def test_a_malformed_mcp_block_is_a_contract_error(block):
    target = {"id": 1, "slug": "m", "kind": "mcp", "upstream": "http://m", "mcp": block}
    with pytest.raises(ContractError):
        Policy.from_document(doc(targets=[target]))


def test_an_unknown_kind_is_still_refused():
    with pytest.raises(ContractError, match="unknown kind"):
        Policy.from_document(doc(targets=[{"id": 1, "slug": "m", "kind": "grpc", "upstream": "x"}]))


def test_reverse_and_forward_routing_serve_mcp_targets_as_http():
    policy = Policy.from_document(doc())
    assert is_http_kind("http") and is_http_kind("mcp") and not is_http_kind("postgres")
    assert policy.resolve_target("tools", kind="http").id == 1
    assert policy.resolve_target("tools", kind="postgres") is None
    assert policy.resolve_target("db", kind="http") is None
    assert policy.resolve_target("tools").id == 1
    assert policy.allows_host("mcp.example.com", 443)
    target, rest = policy.resolve_forward("https", "mcp.example.com", 443, "/v1/mcp?x=1")
    assert target.id == 1 and rest == "/mcp?x=1"


def test_http_requests_of_an_mcp_target_are_allowed_and_decided_per_call():
    rules = [{"id": 1, "name": "all", "action": "deny"}]
    policy = Policy.from_document(
        doc(
            rules,
            targets=[
                {
                    "id": 1,
                    "slug": "tools",
                    "kind": "mcp",
                    "upstream": "https://m",
                    "default_action": "deny",
                }
            ],
        )
    )
    info = request_info(agent_id=7, target_id=1, method="POST", upstream_path="/mcp", body=b"{}")
    assert policy.evaluate(info).action == "allow"
    assert policy.evaluate_mcp_call(call()).action == "deny"


# -- MCP conditions --------------------------------------------------------------------------


def r(rule_id=1, action="deny", **conditions):  # noqa: ANN001, ANN201
    return {"id": rule_id, "name": f"rule {rule_id}", "action": action, **conditions}


@pytest.mark.parametrize(
    ("conditions", "c", "matches"),
    [
        ({"tool_names": ["delete_*"]}, call("delete_customer"), True),
        ({"tool_names": ["delete_*"]}, call("Delete_customer"), False),  # case-sensitive
        ({"tool_names": ["delete_*", "drop"]}, call("drop"), True),
        ({"tool_names": ["lookup_?ustomer"]}, call("lookup_customer"), True),
        ({"mcp_methods": ["resources/read"]}, call("file:///a", method="resources/read"), True),
        ({"mcp_methods": ["resources/read"]}, call("x"), False),
        (
            {"mcp_methods": ["prompts/get"], "tool_names": ["greet"]},
            call("greet", method="prompts/get"),
            True,
        ),
        ({"tool_names": ["customers://*"]}, call("customers://7", method="resources/read"), True),
        # JSONPath + regex over the arguments
        (
            {"argument_path": "$.email", "argument_pattern": r"@rival\.com$"},
            call(arguments={"email": "a@rival.com"}),
            True,
        ),
        (
            {"argument_path": "$.email", "argument_pattern": r"@rival\.com$"},
            call(arguments={"email": "a@example.com"}),
            False,
        ),
        ({"argument_path": "$.email", "argument_pattern": "x"}, call(arguments={}), False),
        (
            {"argument_path": "$.limit", "argument_pattern": "^[0-9]{4,}$"},
            call(arguments={"limit": 10000}),
            True,
        ),  # non-strings as compact JSON
        (
            {"argument_path": "$.filter", "argument_pattern": '"all":true'},
            call(arguments={"filter": {"all": True}}),
            True,
        ),
        (
            {"argument_path": "$..email", "argument_pattern": "rival"},
            call(arguments={"to": [{"email": "a@x"}, {"email": "b@rival"}]}),
            True,
        ),
        ({"argument_path": "$.dry_run"}, call(arguments={"dry_run": False}), True),
        ({"argument_path": "$.dry_run"}, call(arguments={}), False),
        ({"argument_pattern": "DROP TABLE"}, call(arguments={"q": {"sql": "DROP TABLE x"}}), True),
        ({"argument_pattern": "DROP TABLE"}, call(arguments={"DROP TABLE": 1}), False),  # keys
        ({"argument_pattern": "^42$"}, call(arguments={"n": 42}), False),  # strings only
        ({"body_pattern": "secret"}, call(arguments={"q": "secret"}, text='{"q":"secret"}'), True),
        ({"body_pattern": "secret"}, call(arguments={"q": "secret"}, text=""), False),
    ],
)
def test_mcp_conditions_for_deny_rules(conditions, c, matches):
    assert decide([r(**conditions)], c) == ("deny" if matches else "allow")


@pytest.mark.parametrize(
    ("arguments", "allowed"),
    [
        ({"email": "a@example.com"}, True),
        ({"email": "a@rival.com"}, False),
        ({}, False),  # an allow rule needs something to match
    ],
)
def test_allow_rules_read_argument_conditions_as_only(arguments, allowed):
    rules = [r(1, "allow", argument_path="$..email", argument_pattern=r"@example\.com$")]
    policy = Policy.from_document(
        doc(
            rules,
            targets=[
                {
                    "id": 1,
                    "slug": "t",
                    "kind": "mcp",
                    "upstream": "http://m",
                    "default_action": "deny",
                }
            ],
        )
    )
    assert policy.evaluate_mcp_call(call(arguments=arguments)).action == (
        "allow" if allowed else "deny"
    )
    # Every value the path finds must match: one more address elsewhere is not allowed.
    two = {"email": "a@example.com", "cc": {"email": "b@rival.com"}}
    assert policy.evaluate_mcp_call(call(arguments=two)).action == "deny"


def test_an_allow_pattern_without_a_path_needs_every_string_to_match():
    rules = [r(1, "allow", argument_pattern=r"^[a-z]+$")]
    policy = Policy.from_document(
        doc(
            rules,
            targets=[
                {
                    "id": 1,
                    "slug": "t",
                    "kind": "mcp",
                    "upstream": "http://m",
                    "default_action": "deny",
                }
            ],
        )
    )
    assert policy.evaluate_mcp_call(call(arguments={"a": "abc", "b": ["def"]})).action == "allow"
    assert policy.evaluate_mcp_call(call(arguments={"a": "abc", "b": ["d f"]})).action == "deny"


def test_rules_apply_in_order_and_the_target_default_otherwise():
    rules = [r(1, "allow", tool_names=["delete_draft"]), r(2, "deny", tool_names=["delete_*"])]
    assert decide(rules, call("delete_draft")) == "allow"
    assert decide(rules, call("delete_customer")) == "deny"
    assert decide(rules, call("weather")) == "allow"


def test_rules_match_by_target_agent_and_group():
    assert decide([r(target_id=2, tool_names=["*"])]) == "allow"
    assert decide([r(target_id=1, tool_names=["*"])]) == "deny"
    assert decide([r(agent_ids=[8], tool_names=["*"])]) == "allow"
    assert (
        decide([r(agent_group_ids=[4], tool_names=["*"])], call(agent_group_ids=frozenset({4})))
        == "deny"
    )
    assert (
        decide([r(agent_group_ids=[5], tool_names=["*"])], call(agent_group_ids=frozenset({4})))
        == "allow"
    )


def test_a_bad_jsonpath_is_a_contract_error():
    with pytest.raises(ContractError):
        Policy.from_document(doc([r(argument_path="$[?(@.a ==")]))


# -- protocol isolation -------------------------------------------------------------------------


HTTP = request_info(agent_id=7, target_id=1, method="POST", upstream_path="/x", body=b"x")
SQL = StatementRequest(
    agent_id=7, target_id=1, facts=SqlFacts("DELETE", frozenset({"DELETE"})), sql="x"
)


@pytest.mark.parametrize(
    "conditions",
    [
        {"mcp_methods": ["tools/call"]},
        {"tool_names": ["*"]},
        {"argument_path": "$"},
        {"argument_pattern": "."},
    ],
)
def test_mcp_rules_never_match_http_requests_or_statements(conditions):
    rule = AccessRule(
        id=1,
        name="m",
        action="deny",
        **{
            k: (frozenset(v) if k == "mcp_methods" else tuple(v) if k == "tool_names" else v)
            for k, v in conditions.items()
        },
    )
    assert rule.has_mcp_conditions
    assert not rule.matches(HTTP)
    assert not rule.matches_statement(SQL)


@pytest.mark.parametrize(
    "rule",
    [
        AccessRule(id=1, name="h", action="deny", methods=frozenset({"POST"})),
        AccessRule(id=1, name="h", action="deny", path_pattern="/mcp"),
        AccessRule(id=1, name="h", action="deny", query_pattern="x"),
        AccessRule(id=1, name="s", action="deny", statement_kinds=frozenset({"DELETE"})),
        AccessRule(id=1, name="s", action="deny", tables=("customers",)),
        AccessRule(id=1, name="s", action="deny", without_where=True),
        AccessRule(id=1, name="s", action="deny", parameter_pattern="x"),
    ],
)
def test_http_and_sql_rules_never_match_mcp_calls(rule):
    assert not rule.matches_mcp(call(arguments={"x": "x"}, text="x"))


def test_a_rule_without_protocol_conditions_matches_all_three():
    rule = AccessRule(id=1, name="any", action="deny", body_pattern="x")
    assert rule.matches(HTTP)
    assert rule.matches_statement(SQL)
    assert rule.matches_mcp(call(text='{"x":1}'))


# -- grants and fingerprints --------------------------------------------------------------


def grant(**kw):  # noqa: ANN201
    return {
        "id": 9,
        "agent_id": 7,
        "target_id": 1,
        "method": "tools/call",
        "path_pattern": "export_*",
        "expires_at": NOW + 60,
        "approval_id": "a",
        **kw,
    }


@pytest.mark.parametrize(
    ("g", "c", "covered"),
    [
        (grant(), call("export_customers"), True),
        (grant(), call("export_customers", method="prompts/get"), False),
        (grant(method=""), call("export_customers", method="prompts/get"), True),
        (grant(), call("delete_customers"), False),
        (grant(path_pattern="Export_*"), call("export_customers"), False),  # case-sensitive
        (grant(expires_at=NOW - 1), call("export_customers"), False),
        (grant(agent_id=8), call("export_customers"), False),
        (grant(target_id=2), call("export_customers"), False),
        (grant(tables=["customers"]), call("export_customers"), False),
    ],
)
def test_mcp_grants_lift_approvals(g, c, covered):
    rules = [r(1, "approve", tool_names=["*"])]
    policy = Policy.from_document(doc(rules, grants=[g]))
    d = policy.evaluate_mcp_call(c, now=NOW)
    assert d.action == "approve"
    assert (d.grant is not None) == covered


def test_a_grant_never_lifts_a_deny():
    policy = Policy.from_document(doc([r(1, "deny", tool_names=["*"])], grants=[grant()]))
    d = policy.evaluate_mcp_call(call("export_customers"), now=NOW)
    assert d.action == "deny" and d.grant is None


def test_mcp_grants_do_not_cover_http_requests_and_http_grants_not_calls():
    g = Grant(id=1, agent_id=7, target_id=1, method="", path_pattern="*", expires_at=NOW + 9)
    assert g.matches_mcp(call(), NOW)
    http_grant = Grant(
        id=1, agent_id=7, target_id=1, method="POST", path_pattern="/mcp", expires_at=NOW + 9
    )
    assert not http_grant.matches_mcp(call("/mcp"), NOW)


def test_approve_outcomes_carry_a_fingerprint_without_the_jsonrpc_id():
    policy = Policy.from_document(doc([r(1, "approve", tool_names=["*"])]))
    a = policy.evaluate_mcp_call(call(arguments={"b": 1, "a": [1, 2]}, text='{"id":1}'))
    b = policy.evaluate_mcp_call(call(arguments={"a": [1, 2], "b": 1}, text='{"id":2}'))
    assert a.fingerprint and a.fingerprint == b.fingerprint  # key order and id do not count
    other = policy.evaluate_mcp_call(call(arguments={"a": [2, 1], "b": 1}))
    assert other.fingerprint != a.fingerprint
    assert policy.evaluate_mcp_call(call("weather"), now=NOW).fingerprint != a.fingerprint
    assert Policy.from_document(doc()).evaluate_mcp_call(call()).fingerprint == ""


def test_fingerprints_of_the_three_protocols_never_collide():
    fp = mcp_call_fingerprint(agent_id=1, target_id=1, method="POST", name="/x", arguments={})
    assert fp != request_fingerprint(
        agent_id=1, target_id=1, method="POST", upstream_path="/x", body=b""
    )
    assert fp != statement_fingerprint(agent_id=1, target_id=1, sql="/x")

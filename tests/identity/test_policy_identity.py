"""Pure policy decisions added for identity: agent groups in access rules, forward routing."""

from __future__ import annotations

import pytest

from proxy_worker.policy import PathError, Policy, request_info


def _policy(**extra) -> Policy:
    return Policy.from_document(
        {
            "v": 1,
            "version": 1,
            "targets": [
                {"id": 1, "slug": "api", "upstream": "https://API.example.com/v1/"},
                {"id": 2, "slug": "root", "upstream": "https://api.example.com"},
                {"id": 3, "slug": "local", "upstream": "http://127.0.0.1:8101"},
                {"id": 4, "slug": "other", "upstream": "https://other.example:8443/base"},
            ],
            "agents": [
                {"id": 10, "name": "in-group", "group_ids": [5]},
                {"id": 11, "name": "named"},
                {"id": 12, "name": "neither"},
            ],
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("agent", "groups", "expected"),
    [(10, {5}, "deny"), (11, set(), "deny"), (12, set(), "allow"), (12, {6}, "allow")],
)
def test_it_matches_rules_naming_agent_groups_or_agents(agent, groups, expected):
    policy = _policy(
        access_rules=[
            {"id": 1, "name": "g", "action": "deny", "agent_ids": [11], "agent_group_ids": [5]}
        ]
    )
    info = request_info(
        agent_id=agent,
        target_id=1,
        method="GET",
        upstream_path="/x",
        body=b"",
        agent_group_ids=frozenset(groups),
    )
    assert policy.evaluate(info).action == expected


def test_a_rule_naming_only_groups_does_not_match_everyone():
    policy = _policy(
        access_rules=[{"id": 1, "name": "g", "action": "deny", "agent_group_ids": [5]}]
    )
    info = request_info(agent_id=12, target_id=1, method="GET", upstream_path="/", body=b"")
    assert policy.evaluate(info).action == "allow"


@pytest.mark.parametrize(
    ("scheme", "host", "port", "path", "slug", "rest"),
    [
        ("https", "api.example.com", 443, "/v1/chat?x=1", "api", "/chat?x=1"),
        ("https", "API.EXAMPLE.COM.", 443, "/v1", "api", "/"),
        ("https", "api.example.com", 443, "/v10/chat", "root", "/v10/chat"),
        ("https", "api.example.com", 443, "/", "root", "/"),
        ("http", "127.0.0.1", 8101, "/db.json", "local", "/db.json"),
        ("https", "other.example", 8443, "/base/a", "other", "/a"),
    ],
)
def test_forward_mode_routes_by_scheme_host_port_and_longest_base(
    scheme, host, port, path, slug, rest
):
    target, upstream_path = _policy().resolve_forward(scheme, host, port, path)
    assert (target.slug, upstream_path) == (slug, rest)


@pytest.mark.parametrize(
    ("scheme", "host", "port", "path"),
    [
        ("http", "api.example.com", 443, "/v1"),  # scheme differs
        ("https", "api.example.com", 8443, "/v1"),  # port differs
        ("https", "evil.example", 443, "/v1"),  # not a target
        ("https", "other.example", 8443, "/basement"),  # outside the base path
        ("https", "other.example", 8443, "/"),
    ],
)
def test_forward_mode_denies_what_is_not_a_target(scheme, host, port, path):
    assert _policy().resolve_forward(scheme, host, port, path) is None


@pytest.mark.parametrize("path", ["/base/../admin", "/base/%2e%2e/admin", "/base/a\\b"])
def test_forward_mode_refuses_paths_an_upstream_could_normalise(path):
    with pytest.raises(PathError):
        _policy().resolve_forward("https", "other.example", 8443, path)


def test_the_allow_list_knows_hosts_and_ports():
    p = _policy()
    assert p.allows_host("api.example.com", 443)
    assert p.allows_host("Other.Example", 8443)
    assert not p.allows_host("other.example", 443)
    assert not p.allows_host("example.com", 443)

"""Pure policy decisions: tokens, reverse-mode paths, access rules."""

from __future__ import annotations

import base64

import pytest

from proxy_worker.contract import SCHEMA_VERSION, ContractError
from proxy_worker.policy import (
    PathError,
    Policy,
    extract_token,
    hash_token,
    request_info,
    split_reverse_path,
)

TOKEN = "gh_abcdefgh_0123456789abcdefghijklmnopqrstuv"


def doc(**kw):
    base = {
        "v": SCHEMA_VERSION,
        "version": 3,
        "targets": [
            {
                "id": 1,
                "slug": "customers",
                "upstream": "http://up:81/base",
                "default_action": "allow",
                "approval_timeout": 60,
            },
            {"id": 2, "slug": "closed", "upstream": "http://up:82", "default_action": "deny"},
        ],
        "agents": [{"id": 7, "name": "bot", "owner": "ann", "token_hashes": [hash_token(TOKEN)]}],
        "access_rules": [
            {
                "id": 10,
                "name": "no schema",
                "target_id": 1,
                "query_pattern": "(?i)sqlite_master",
                "action": "deny",
            },
            {
                "id": 11,
                "name": "writes",
                "target_id": 1,
                "methods": ["post", "DELETE"],
                "action": "deny",
            },
            {
                "id": 12,
                "name": "bulk",
                "target_id": 1,
                "path_pattern": "/customers.json",
                "query_pattern": r"(?i)(^|&)sql=(?![^&]*\blimit\b)",
                "action": "approve",
                "approval_timeout": 30,
            },
            {"id": 13, "name": "secret body", "body_pattern": "password", "action": "deny"},
            {"id": 14, "name": "other agents", "agent_ids": [99], "action": "deny"},
        ],
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    "header, expected",
    [
        (f"Bearer {TOKEN}", TOKEN),
        (f"bearer   {TOKEN}", TOKEN),
        ("Basic " + base64.b64encode(f"agent:{TOKEN}".encode()).decode(), TOKEN),
        ("Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode(), TOKEN),
        ("Basic !!!notbase64", None),
        ("Digest abc", None),
        ("", None),
        (None, None),
    ],
)
def test_it_extracts_tokens(header, expected):
    assert extract_token(header) == expected


def test_it_identifies_agents_by_token_digest():
    p = Policy.from_document(doc())
    assert p.identify(TOKEN).name == "bot"
    assert p.identify(TOKEN + "x") is None
    assert p.identify(None) is None


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/customers/a/b?x=1", ("customers", "/a/b?x=1")),
        ("/customers", ("customers", "/")),
        ("/customers/", ("customers", "/")),
        ("/llm/v1/chat/completions", ("llm", "/v1/chat/completions")),
    ],
)
def test_it_splits_reverse_paths(path, expected):
    assert split_reverse_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "//x",
        "/customers/../llm/x",
        "/customers/%2e%2e/llm",
        "/cust%2Fomers/x",
        "/customers/a/./b",
        "/customers/a%5c..",
        "relative",
    ],
)
def test_it_refuses_path_tricks(path):
    with pytest.raises(PathError):
        split_reverse_path(path)


def _eval(p, method="GET", path="/", body=b"", agent=7, target=1):
    return p.evaluate(
        request_info(agent_id=agent, target_id=target, method=method, upstream_path=path, body=body)
    )


@pytest.mark.parametrize(
    "method, path, body, action, rule",
    [
        ("GET", "/customers/customers.json?_size=3", b"", "allow", None),
        ("GET", "/customers.json?sql=select+name+from+sqlite_master", b"", "deny", 10),
        ("GET", "/customers.json?sql=SELECT%20name%20FROM%20SQLITE_MASTER", b"", "deny", 10),
        ("POST", "/customers/x", b"", "deny", 11),
        ("delete", "/customers/x", b"", "deny", 11),
        ("GET", "/customers.json?sql=select+*+from+customers", b"", "approve", 12),
        ("GET", "/customers.json?sql=select+*+from+customers&_shape=array", b"", "approve", 12),
        ("GET", "/customers.json?sql=select+*+from+customers+limit+5", b"", "allow", None),
        (
            "GET",
            "/customers.json?_shape=array&sql=select+*+from+customers+LIMIT+5",
            b"",
            "allow",
            None,
        ),
        ("PUT", "/x", b'{"password": "p"}', "allow", None),  # PUT not in 'writes'; body rule next
    ],
)
def test_it_applies_rules_in_order(method, path, body, action, rule):
    p = Policy.from_document(doc())
    d = _eval(p, method, path, body)
    if method == "PUT":
        assert (d.action, d.rule_id) == ("deny", 13)
    else:
        assert (d.action, d.rule_id) == (action, rule)


def test_it_uses_the_rule_timeout_else_the_targets():
    p = Policy.from_document(doc())
    assert _eval(p, path="/customers.json?sql=select+1").timeout == 30
    assert _eval(p, path="/other").timeout == 60


def test_it_falls_back_to_the_targets_default_action():
    p = Policy.from_document(doc())
    assert _eval(p, target=2).action == "deny"
    assert _eval(p, target=2).rule is None


def test_it_limits_rules_to_their_agents():
    p = Policy.from_document(doc())
    assert _eval(p, path="/a", agent=99).rule_id == 14
    assert _eval(p, path="/a", agent=7).action == "allow"


@pytest.mark.parametrize(
    "bad",
    [
        {"v": SCHEMA_VERSION + 1},
        doc(targets=[{"slug": "no-id"}]),
        doc(access_rules=[{"id": 1, "name": "x", "action": "explode"}]),
        doc(access_rules=[{"id": 1, "name": "x", "action": "deny", "query_pattern": "("}]),
    ],
)
def test_it_refuses_malformed_snapshots(bad):
    with pytest.raises(ContractError):
        Policy.from_document(bad)


def test_an_empty_policy_knows_nothing():
    p = Policy.empty()
    assert p.version == 0 and p.identify(TOKEN) is None and p.resolve_target("customers") is None


def test_a_target_builds_upstream_urls():
    p = Policy.from_document(doc())
    assert p.resolve_target("customers").upstream_url("/x?y=1") == "http://up:81/base/x?y=1"

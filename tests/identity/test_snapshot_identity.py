"""What the snapshot tells workers about agent identity (controlplane/snapshot.py)."""

from __future__ import annotations

import pytest

from controlplane.models import AccessRule, Agent, AgentGroup, Target
from controlplane.snapshot import compile_snapshot
from proxy_worker.policy import Policy

pytestmark = pytest.mark.django_db


def test_agents_carry_their_subject_and_groups_and_rules_their_groups(settings):
    settings.GATEHOUSE_AGENT_OIDC = {
        "issuer": "https://idp.example",
        "audience": "gh-proxy",
        "jwks_url": "https://idp.example/jwks",
        "algorithms": ["RS256", "ES256"],
        "subject_claim": "sub",
        "groups_claim": "groups",
        "leeway": 10,
    }
    group = AgentGroup.objects.create(name="batch")
    agent = Agent.objects.create(name="etl", oidc_subject="client-etl")
    agent.groups.add(group)
    target = Target.objects.create(name="T", slug="t", upstream_url="https://t.example")
    rule = AccessRule.objects.create(name="r", target=target, action="deny")
    rule.agent_groups.add(group)
    doc = compile_snapshot(7)
    [a] = [a for a in doc["agents"] if a["id"] == agent.id]
    assert a["oidc_subject"] == "client-etl"
    assert a["group_ids"] == [group.id]
    assert {"id": group.id, "name": "batch"} in doc["agent_groups"]
    [r] = [r for r in doc["access_rules"] if r["id"] == rule.id]
    assert r["agent_group_ids"] == [group.id]
    assert doc["agent_oidc"]["issuer"] == "https://idp.example"
    # The worker reads it back.
    policy = Policy.from_document(doc)
    assert policy.identify_subject("client-etl").group_ids == frozenset({group.id})
    assert policy.agent_oidc.algorithms == ("RS256", "ES256")


def test_without_agent_oidc_settings_the_block_is_null(settings):
    settings.GATEHOUSE_AGENT_OIDC = {**settings.GATEHOUSE_AGENT_OIDC, "issuer": ""}
    assert compile_snapshot(1)["agent_oidc"] is None
    assert Policy.from_document(compile_snapshot(1)).agent_oidc is None

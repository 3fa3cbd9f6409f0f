"""Policy as code: export → import round trip, line-accurate errors, dry run, prune."""

from __future__ import annotations

import io
import textwrap

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.models import AccessRule, Agent, AgentGroup, AgentToken, MaskingRule, Target
from controlplane.policy_yaml import export_yaml, plan_import

pytestmark = pytest.mark.django_db


def test_export_has_every_section_and_no_secret(policy):
    text = export_yaml()
    assert "upstream-secret-credential" not in text
    assert policy.token not in text
    assert AgentToken.objects.get(agent=policy.agent).token_hash not in text
    doc = yaml.safe_load(text)
    assert doc["version"] == 1
    assert [t["slug"] for t in doc["targets"]] == ["customers"]
    assert "credential" not in doc["targets"][0]
    assert doc["agents"][0] == {
        "name": "agent-1",
        "description": "",
        "owner": "admin",
        "is_active": True,
        "groups": [],
        "oidc_subject": "",
    }
    assert [r["name"] for r in doc["access_rules"]] == ["no schema", "bulk"]
    assert doc["masking_rules"][0]["entity_types"] == ["EMAIL", "US_SSN"]


def test_round_trip_is_a_no_op(policy):
    plan = plan_import(export_yaml())
    assert plan.ok, plan.issues
    assert [c for c in plan.changes if c.op != "keep"] == []
    assert plan.diff() == "No changes."


def test_import_creates_updates_and_keeps_credentials(policy):
    doc = yaml.safe_load(export_yaml())
    doc["approver_groups"] = ["payments-approvers"]
    doc["agent_groups"] = [{"name": "ci", "description": "CI jobs"}]
    doc["agents"][0]["groups"] = ["ci"]
    doc["targets"][0]["default_action"] = "deny"
    doc["targets"][0]["approver_group"] = "payments-approvers"
    doc["access_rules"].append(
        {
            "name": "ci may read",
            "position": 1,
            "target": "customers",
            "agent_groups": ["ci"],
            "methods": ["get"],
            "path_pattern": "/customers/*",
            "action": "approve",
            "approval_mode": "defer",
            "required_approvals": 2,
        }
    )
    plan = plan_import(yaml.safe_dump(doc))
    assert plan.ok, plan.issues
    ops = {(c.section, c.key): c for c in plan.changes}
    assert ops[("targets", "customers")].op == "update"
    assert ops[("targets", "customers")].fields["default_action"] == ("allow", "deny")
    assert ops[("access_rules", "ci may read")].op == "create"
    assert ops[("approver_groups", "payments-approvers")].op == "create"
    # Nothing written before apply.
    assert not AccessRule.objects.filter(name="ci may read").exists()
    plan.apply()
    target = Target.objects.get(slug="customers")
    assert target.default_action == "deny"
    assert target.approver_group.name == "payments-approvers"
    assert target.has_credential  # import never touches the stored credential
    rule = AccessRule.objects.get(name="ci may read")
    assert rule.methods == ["GET"]  # model clean() normalises
    assert rule.approval_mode == "defer" and rule.required_approvals == 2
    assert [g.name for g in rule.agent_groups.all()] == ["ci"]
    assert [g.name for g in Agent.objects.get(name="agent-1").groups.all()] == ["ci"]
    # And exporting again gives back what was imported.
    assert plan_import(export_yaml()).diff() == "No changes."


def test_errors_carry_line_and_field_and_nothing_is_applied(policy):
    text = textwrap.dedent(
        """\
        version: 1
        targets:
          - slug: customers
            name: Customers
            upstream_url: not a url
          - slug: Bad Slug
            name: x
            upstream_url: http://x.example
            credential: s3cret
        masking_rules:
          - name: m
            entity_types: [EMAIL, NOT_A_DETECTOR]
            targets: [nowhere]
        access_rules:
          - name: r
            action: explode
            agents: [ghost]
        """
    )
    plan = plan_import(text)
    assert not plan.ok
    found = {(i.line, i.where) for i in plan.issues}
    assert (5, "targets[0].upstream_url") in found
    assert (6, "targets[1].slug") in found
    assert (9, "targets[1].credential") in found
    assert (12, "masking_rules[0].entity_types") in found
    assert (13, "masking_rules[0].targets[0]") in found
    assert (16, "access_rules[0].action") in found
    assert (17, "access_rules[0].agents[0]") in found
    secret_issue = next(i for i in plan.issues if i.where == "targets[1].credential")
    assert "never imported" in secret_issue.message
    with pytest.raises(ValueError):
        plan.apply()
    assert Target.objects.get(slug="customers").upstream_url == "http://127.0.0.1:9"
    assert not MaskingRule.objects.filter(name="m").exists()


@pytest.mark.parametrize(
    "text, where",
    [
        ("version: 1\ntargets: [\n", "document"),
        ("- just\n- a list\n", "document"),
        ("version: 2\n", "version"),
        ("version: 1\nwidgets: []\n", "widgets"),
        (
            "version: 1\ntargets:\n  - slug: a\n    name: a\n    upstream_url: http://a.test\n"
            "  - slug: a\n    name: b\n    upstream_url: http://b.test\n",
            "targets[1].slug",
        ),
    ],
)
def test_malformed_documents_are_refused(db, text, where):
    plan = plan_import(text)
    assert not plan.ok
    assert where in {i.where for i in plan.issues}


def test_prune_deletes_what_the_file_does_not_name(policy):
    doc = yaml.safe_load(export_yaml())
    doc["access_rules"] = [r for r in doc["access_rules"] if r["name"] != "bulk"]
    kept = plan_import(yaml.safe_dump(doc))
    assert any(c.op == "keep" and c.key == "bulk" for c in kept.changes)
    kept.apply()
    assert AccessRule.objects.filter(name="bulk").exists()
    pruned = plan_import(yaml.safe_dump(doc), prune=True)
    assert "- access_rules/bulk" in pruned.diff()
    pruned.apply()
    assert not AccessRule.objects.filter(name="bulk").exists()


def test_commands_dry_run_then_apply(policy, tmp_path):
    path = tmp_path / "policy.yaml"
    call_command("policy_export", output=str(path))
    doc = yaml.safe_load(path.read_text())
    doc["agent_groups"] = [{"name": "nightly", "description": ""}]
    path.write_text(yaml.safe_dump(doc))
    out = io.StringIO()
    call_command("policy_import", str(path), dry_run=True, stdout=out)
    assert "+ agent_groups/nightly" in out.getvalue()
    assert "Dry run" in out.getvalue()
    assert not AgentGroup.objects.filter(name="nightly").exists()
    call_command("policy_import", str(path), stdout=io.StringIO())
    assert AgentGroup.objects.filter(name="nightly").exists()
    path.write_text("version: 1\ntargets:\n  - slug: x\n")
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("policy_import", str(path), stderr=err)
    assert "line 3" in err.getvalue()

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


# -- PostgreSQL targets and SQL rules -----------------------------------------------------


def _ca_pem() -> str:
    from tests.controlplane.test_models import ca_pem

    return ca_pem()


@pytest.fixture
def pg_policy(policy):
    pg = Target(
        name="Orders",
        slug="orders",
        kind="postgres",
        pg_host="db.internal",
        pg_database="orders",
        pg_user="app",
        pg_sslmode="verify-full",
        pg_ca_pem=_ca_pem(),
    )
    pg.set_credential("db-password")
    pg.save()
    AccessRule.objects.create(
        name="no unfiltered writes",
        position=30,
        target=pg,
        statement_kinds=["DELETE", "UPDATE"],
        tables=["public.*"],
        without_where=True,
        parameter_pattern="@example\\.com",
        action="deny",
    )
    return pg


def test_postgres_targets_and_sql_rules_export_and_round_trip(pg_policy):
    text = export_yaml()
    assert "db-password" not in text
    assert "ca_pem: |" in text  # the PEM bundle as a literal block
    doc = yaml.safe_load(text)
    targets = {t["slug"]: t for t in doc["targets"]}
    assert targets["customers"]["kind"] == "http" and "postgres" not in targets["customers"]
    assert targets["orders"]["kind"] == "postgres"
    assert targets["orders"]["postgres"] == {
        "host": "db.internal",
        "port": 5432,
        "database": "orders",
        "user": "app",
        "sslmode": "verify-full",
        "ca_pem": pg_policy.pg_ca_pem,
        "allow_plaintext": False,
    }
    rule = next(r for r in doc["access_rules"] if r["name"] == "no unfiltered writes")
    assert {k: rule[k] for k in ("statement_kinds", "tables", "without_where")} == {
        "statement_kinds": ["DELETE", "UPDATE"],
        "tables": ["public.*"],
        "without_where": True,
    }
    assert rule["parameter_pattern"] == "@example\\.com" and rule["without_limit"] is False
    plan = plan_import(text)
    assert plan.ok, plan.issues
    assert plan.diff() == "No changes."


def test_import_creates_a_postgres_target_and_its_rules_at_once(policy):
    text = textwrap.dedent(
        """\
        version: 1
        targets:
          - slug: warehouse
            name: Warehouse
            kind: postgres
            postgres:
              host: wh.internal
              database: dwh
              user: reader
              sslmode: require
        access_rules:
          - name: approve big reads
            target: warehouse
            statement_kinds: [select]
            without_limit: true
            action: approve
          - name: no catalog functions
            target: warehouse
            functions: [pg_read_file, "dblink*"]
            action: deny
        """
    )
    plan = plan_import(text)
    assert plan.ok, plan.issues
    create = next(c for c in plan.changes if c.key == "warehouse")
    assert create.op == "create" and create.fields["postgres"][1]["host"] == "wh.internal"
    plan.apply()
    t = Target.objects.get(slug="warehouse")
    assert (t.kind, t.pg_host, t.pg_port, t.pg_sslmode) == (
        "postgres",
        "wh.internal",
        5432,
        "require",
    )
    assert not t.has_credential  # the password is set in the console, never in the file
    rule = AccessRule.objects.get(name="approve big reads")
    assert rule.target == t and rule.statement_kinds == ["SELECT"] and rule.without_limit
    assert AccessRule.objects.get(name="no catalog functions").functions == [
        "pg_read_file",
        "dblink*",
    ]
    # Changing one field of the block is shown field by field.
    doc = yaml.safe_load(export_yaml())
    next(x for x in doc["targets"] if x["slug"] == "warehouse")["postgres"]["port"] = 6432
    plan = plan_import(yaml.safe_dump(doc))
    assert plan.ok, plan.issues
    (change,) = [c for c in plan.changes if c.op == "update"]
    assert change.fields == {"postgres.port": (5432, 6432)}
    assert "postgres.port: 5432 -> 6432" in plan.diff()


def test_sql_errors_carry_line_and_field(policy):
    text = textwrap.dedent(
        """\
        version: 1
        targets:
          - slug: warehouse
            name: Warehouse
            kind: postgres
            postgres:
              host: wh.internal
              database: dwh
              password: hunter2
          - slug: web
            name: Web
            upstream_url: https://web.example
            postgres: {host: x}
          - slug: broken
            name: Broken
            kind: postgres
            postgres:
              host: db
              database: d
              user: u
              ca_pem: not a certificate
              sslmode: verify-ca
        access_rules:
          - name: kinds
            target: warehouse
            statement_kinds: [SELECT, EXPLODE]
            action: deny
          - name: regex
            target: warehouse
            parameter_pattern: "(unclosed"
            action: deny
          - name: mixed
            methods: [GET]
            tables: [public.*]
            action: deny
          - name: http condition on a database
            target: warehouse
            path_pattern: /x/*
            action: deny
          - name: sql condition on an api
            target: customers
            without_limit: true
            action: deny
        """
    )
    plan = plan_import(text)
    assert not plan.ok
    found = {(i.line, i.where): i.message for i in plan.issues}
    assert "never imported" in found[(9, "targets[0].postgres.password")]
    assert "needs a user" in found[(6, "targets[0].postgres.user")]
    assert "only for kind: postgres" in found[(13, "targets[1].postgres")]
    assert "not a PEM certificate bundle" in found[(21, "targets[2].postgres.ca_pem")]
    assert "EXPLODE" in found[(26, "access_rules[0].statement_kinds")]
    assert "regular expression" in found[(30, "access_rules[1].parameter_pattern")]
    assert "cannot be combined" in found[(34, "access_rules[2].tables")]
    assert "PostgreSQL database" in found[(38, "access_rules[3].path_pattern")]
    assert "HTTP API" in found[(42, "access_rules[4].without_limit")]
    assert not Target.objects.filter(slug="warehouse").exists()


def test_rules_are_checked_against_the_kind_the_document_gives_their_target(policy):
    doc = yaml.safe_load(export_yaml())
    (target,) = doc["targets"]
    target["kind"] = "postgres"
    target["upstream_url"] = ""
    target["postgres"] = {"host": "db", "database": "d", "user": "u"}
    plan = plan_import(yaml.safe_dump(doc))
    wheres = {i.where for i in plan.issues}
    # The existing rules have HTTP conditions: on a database they would never match.
    assert wheres == {"access_rules[0].query_pattern", "access_rules[1].path_pattern"}

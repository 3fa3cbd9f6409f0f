"""The admin console: role gate, write-only credentials, tokens shown once, ordering,
approver groups, policy import with a dry run, and the snapshot that follows a change."""

from __future__ import annotations

import json

import pytest
import yaml
from django.contrib.auth.models import Group
from django.urls import reverse

from controlplane.models import AccessRule, Agent, AgentToken, MaskingRule, Target
from proxy_worker.policy import hash_token

pytestmark = pytest.mark.django_db

TARGET_FORM = {
    "name": "CRM",
    "slug": "crm",
    "upstream_url": "https://crm.example.com",
    "auth_header": "Authorization",
    "auth_scheme": "Bearer",
    "credential": "s3cr3t-upstream",
    "default_action": "allow",
    "approval_timeout": "120",
    "binary_bodies": "refuse",
    "retention_days": "30",
}


@pytest.fixture
def admin_client(client, users):
    client.force_login(users["admin"])
    return client


@pytest.mark.parametrize(
    "url",
    [
        reverse("console:index"),
        reverse("console:list", args=["targets"]),
        reverse("console:create", args=["access-rules"]),
        reverse("console:policy"),
        reverse("console:policy_export"),
    ],
)
def test_only_admins_enter(client, users, url):
    assert client.get(url).status_code == 302  # anonymous: to sign-in
    for name in ("approver", "auditor", "outsider"):
        client.force_login(users[name])
        assert client.get(url).status_code == 403, name
    client.force_login(users["admin"])
    assert client.get(url).status_code == 200


def test_non_admin_posts_are_refused(client, policy, users):
    client.force_login(users["approver"])
    r = client.post(reverse("console:delete", args=["targets", policy.target.pk]))
    assert r.status_code == 403
    assert Target.objects.filter(pk=policy.target.pk).exists()
    r = client.post(reverse("console:issue_token", args=[policy.agent.pk]))
    assert r.status_code == 403


def test_csrf_is_enforced(users):
    from django.test import Client

    c = Client(enforce_csrf_checks=True)
    c.force_login(users["admin"])
    r = c.post(reverse("console:create", args=["targets"]), TARGET_FORM)
    assert r.status_code == 403
    assert not Target.objects.filter(slug="crm").exists()


def test_unknown_section_is_404(admin_client):
    assert admin_client.get("/console/widgets/").status_code == 404


def test_target_credential_is_write_only(
    admin_client, redis_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        r = admin_client.post(reverse("console:create", args=["targets"]), TARGET_FORM)
    assert r.status_code == 302, r.content
    target = Target.objects.get(slug="crm")
    assert target.retention_days == 30
    assert target.has_credential and "s3cr3t-upstream" not in target.credential_encrypted
    page = admin_client.get(reverse("console:edit", args=["targets", target.pk]))
    assert b"s3cr3t-upstream" not in page.content
    listing = admin_client.get(reverse("console:list", args=["targets"]))
    assert b"crm.example.com" in listing.content and b"s3cr3t" not in listing.content
    # Blank keeps the stored credential; the change reaches the published snapshot.
    stored = target.credential_encrypted
    form = {**TARGET_FORM, "credential": "", "name": "CRM renamed"}
    with django_capture_on_commit_callbacks(execute=True):
        r = admin_client.post(reverse("console:edit", args=["targets", target.pk]), form)
    assert r.status_code == 302
    target.refresh_from_db()
    assert target.name == "CRM renamed" and target.credential_encrypted == stored
    from controlplane.redis import keys

    snapshot = json.loads(redis_client.get(keys().policy_snapshot))
    assert [(t["slug"], t["credential"] is not None) for t in snapshot["targets"]] == [
        ("crm", True)
    ]
    assert "s3cr3t-upstream" not in json.dumps(snapshot)


def test_invalid_form_over_htmx_answers_422_with_errors(admin_client):
    r = admin_client.post(
        reverse("console:create", args=["targets"]),
        {**TARGET_FORM, "slug": "Not A Slug", "upstream_url": "ftp:/x"},
        HTTP_HX_REQUEST="true",
    )
    assert r.status_code == 422
    body = r.content.decode()
    assert "lower-case letters" in body and "Enter a valid URL" in body
    assert "<html" not in body  # a fragment for hx-target
    ok = admin_client.post(
        reverse("console:create", args=["targets"]), TARGET_FORM, HTTP_HX_REQUEST="true"
    )
    assert ok.status_code == 200 and ok["HX-Redirect"] == reverse("console:list", args=["targets"])


def test_token_is_shown_once_and_revocable(admin_client, policy):
    r = admin_client.post(
        reverse("console:issue_token", args=[policy.agent.pk]), {"expires_in_days": "30"}
    )
    assert r.status_code == 200
    assert r["Cache-Control"] == "no-store"
    token = r.context["plaintext"]
    row = AgentToken.objects.get(token_hash=hash_token(token))
    assert row.expires_at is not None
    page = admin_client.get(reverse("console:edit", args=["agents", policy.agent.pk]))
    assert token.encode() not in page.content
    assert row.prefix.encode() in page.content
    r = admin_client.post(reverse("console:revoke_token", args=[row.pk]))
    assert r.status_code == 302
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert not AgentToken.objects.usable().filter(pk=row.pk).exists()


def test_access_rules_move_up_and_down(admin_client, policy):
    first, second = policy.deny_rule, policy.approve_rule
    r = admin_client.post(
        reverse("console:move_rule", args=[second.pk, "up"]), HTTP_HX_REQUEST="true"
    )
    assert r.status_code == 200
    assert list(AccessRule.objects.order_by("position").values_list("name", flat=True)) == [
        second.name,
        first.name,
    ]
    body = r.content.decode()
    assert body.index(second.name) < body.index(first.name)
    admin_client.post(reverse("console:move_rule", args=[second.pk, "down"]))
    assert list(AccessRule.objects.order_by("position").values_list("pk", flat=True)) == [
        first.pk,
        second.pk,
    ]
    assert (
        admin_client.post(reverse("console:move_rule", args=[first.pk, "sideways"])).status_code
        == 404
    )


def test_masking_rule_and_access_rule_forms(admin_client, policy):
    r = admin_client.post(
        reverse("console:create", args=["masking-rules"]),
        {
            "name": "addresses",
            "entity_types": "email, phone",
            "field_names": "address, street",
            "json_paths": "$.customers[*].address\n$.owner.name",
            "deny_list": "Project Nightingale",
            "custom_pattern": "",
            "strategy": "hash",
            "direction": "response",
            "targets": [policy.target.pk],
            "is_active": "on",
        },
    )
    assert r.status_code == 302, r.content
    rule = MaskingRule.objects.get(name="addresses")
    assert rule.entity_types == ["EMAIL", "PHONE"]
    assert rule.json_paths == ["$.customers[*].address", "$.owner.name"]
    bad = admin_client.post(
        reverse("console:create", args=["access-rules"]),
        {
            "name": "x",
            "position": "1",
            "path_pattern": "*",
            "action": "approve",
            "approval_mode": "wait",
            "required_approvals": "0",
            "retry_window": "600",
            "query_pattern": "(unclosed",
        },
    )
    assert bad.status_code == 422
    assert "not a valid regular expression" in bad.content.decode()
    assert "at least one approval" in bad.content.decode()


def test_approver_groups_with_members(admin_client, users):
    r = admin_client.post(
        reverse("console:create", args=["approver-groups"]),
        {"name": "payments-approvers", "members": [users["approver"].pk, users["approver2"].pk]},
    )
    assert r.status_code == 302
    group = Group.objects.get(name="payments-approvers")
    assert set(group.user_set.values_list("username", flat=True)) == {"approver", "approver2"}
    r = admin_client.post(reverse("console:create", args=["approver-groups"]), {"name": "auditor"})
    assert r.status_code == 422 and b"is a role" in r.content
    listing = admin_client.get(reverse("console:list", args=["approver-groups"]))
    assert b"payments-approvers" in listing.content and b"auditor" not in listing.content


def test_delete_asks_nothing_of_the_server_but_post(admin_client, policy):
    url = reverse("console:delete", args=["access-rules", policy.deny_rule.pk])
    assert admin_client.get(url).status_code == 405
    assert admin_client.post(url).status_code == 302
    assert not AccessRule.objects.filter(pk=policy.deny_rule.pk).exists()


def test_policy_export_and_import_through_the_page(admin_client, policy):
    r = admin_client.get(reverse("console:policy_export"))
    assert r.status_code == 200 and "attachment" in r["Content-Disposition"]
    text = r.content.decode()
    assert "upstream-secret-credential" not in text and policy.token not in text
    doc = yaml.safe_load(text)
    doc["agents"].append({"name": "nightly-report", "owner": "admin"})
    new_text = yaml.safe_dump(doc)
    dry = admin_client.post(reverse("console:policy"), {"document": new_text})
    assert dry.status_code == 200
    assert "+ agents/nightly-report" in dry.content.decode()
    assert not Agent.objects.filter(name="nightly-report").exists()
    applied = admin_client.post(reverse("console:policy"), {"document": new_text, "apply": "True"})
    assert applied.status_code == 302
    assert Agent.objects.filter(name="nightly-report").exists()
    bad = admin_client.post(
        reverse("console:policy"),
        {"document": "version: 1\nagents:\n  - name: x\n    owner: ghost\n"},
    )
    assert "line 4" in bad.content.decode() and "ghost" in bad.content.decode()


# -- PostgreSQL targets and SQL access rules ----------------------------------------------

PG_FORM = {
    "name": "Orders",
    "slug": "orders",
    "kind": "postgres",
    "upstream_url": "",
    "auth_header": "Authorization",
    "auth_scheme": "Bearer",
    "pg_host": "db.internal",
    "pg_port": "6543",
    "pg_database": "orders_prod",
    "pg_user": "gatehouse_agent",
    "pg_sslmode": "verify-full",
    "pg_ca_pem": "",
    "credential": "db-s3cr3t-password",
    "default_action": "deny",
    "approval_timeout": "120",
    "binary_bodies": "refuse",
    "retention_days": "",
}


def sql_rule_form(target, **kw):
    return {
        "name": "no unfiltered writes",
        "position": "5",
        "target": target.pk,
        "path_pattern": "*",
        "statement_kinds": ["DELETE", "UPDATE", "TRUNCATE"],
        "tables": "public.*, Secret_*",
        "functions": "",
        "without_where": "on",
        "parameter_pattern": "",
        "action": "deny",
        "reason": "add a WHERE",
        "approval_mode": "wait",
        "required_approvals": "1",
        "retry_window": "600",
        "is_active": "on",
        **kw,
    }


@pytest.fixture
def pg_target(db):
    t = Target(
        name="Orders",
        slug="orders",
        kind="postgres",
        pg_host="db.internal",
        pg_database="orders",
        pg_user="app",
    )
    t.set_credential("db-password")
    t.save()
    return t


def test_a_postgres_target_is_created_and_edited(
    admin_client, redis_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        r = admin_client.post(reverse("console:create", args=["targets"]), PG_FORM)
    assert r.status_code == 302, r.content
    t = Target.objects.get(slug="orders")
    assert (t.kind, t.pg_host, t.pg_port, t.pg_database, t.pg_user, t.pg_sslmode) == (
        "postgres",
        "db.internal",
        6543,
        "orders_prod",
        "gatehouse_agent",
        "verify-full",
    )
    assert t.has_credential and "db-s3cr3t" not in t.credential_encrypted
    page = admin_client.get(reverse("console:edit", args=["targets", t.pk])).content.decode()
    assert "db-s3cr3t-password" not in page
    assert '<label for="id_credential">Database password:</label>' in page
    listing = admin_client.get(reverse("console:list", args=["targets"])).content.decode()
    assert "PostgreSQL database" in listing
    assert "postgresql://gatehouse_agent@db.internal:6543/orders_prod" in listing
    assert "db-s3cr3t" not in listing
    # The published snapshot carries the postgres block; the password only encrypted.
    from controlplane.redis import keys

    snapshot = json.loads(redis_client.get(keys().policy_snapshot))
    (entry,) = snapshot["targets"]
    assert entry["kind"] == "postgres" and entry["postgres"]["port"] == 6543
    assert "db-s3cr3t-password" not in json.dumps(snapshot)
    # Edit: a blank password keeps the stored one; the CA bundle is validated.
    stored = t.credential_encrypted
    bad = admin_client.post(
        reverse("console:edit", args=["targets", t.pk]),
        {**PG_FORM, "credential": "", "pg_ca_pem": "not a certificate"},
        HTTP_HX_REQUEST="true",
    )
    assert bad.status_code == 422 and "not a PEM certificate bundle" in bad.content.decode()
    r = admin_client.post(
        reverse("console:edit", args=["targets", t.pk]),
        {**PG_FORM, "credential": "", "pg_sslmode": "require", "pg_allow_plaintext": "on"},
    )
    assert r.status_code == 302
    t.refresh_from_db()
    assert t.credential_encrypted == stored
    assert t.pg_sslmode == "require" and t.pg_allow_plaintext


def test_the_target_form_works_without_javascript(admin_client):
    page = admin_client.get(reverse("console:create", args=["targets"])).content.decode()
    # Every fieldset is in the page and none is hidden: the script only hides.
    assert '<fieldset class="console-form" data-kind="http mcp">' in page
    assert '<fieldset class="console-form" data-kind="mcp">' in page
    assert '<fieldset class="console-form" data-kind="postgres">' in page
    assert " hidden" not in page and "<script>" not in page
    assert "/static/controlplane/kinds.js" in page
    # The server checks what the kind needs, whatever the script showed.
    r = admin_client.post(
        reverse("console:create", args=["targets"]),
        {**PG_FORM, "pg_host": "", "pg_user": ""},
        HTTP_HX_REQUEST="true",
    )
    assert r.status_code == 422
    body = r.content.decode()
    assert "a PostgreSQL target needs a host" in body and "a PostgreSQL target needs a user" in body
    # The fieldset holding the errors is marked, so the script keeps it visible.
    assert '<fieldset class="console-form" data-kind="postgres" data-errors>' in body
    r = admin_client.post(
        reverse("console:create", args=["targets"]), {**TARGET_FORM, "upstream_url": ""}
    )
    assert r.status_code == 422 and "an HTTP target needs an upstream URL" in r.content.decode()
    # Posts without the kind (older scripts) still create HTTP targets.
    assert "kind" not in TARGET_FORM
    r = admin_client.post(reverse("console:create", args=["targets"]), TARGET_FORM)
    assert r.status_code == 302
    assert Target.objects.get(slug="crm").kind == "http"


def test_the_kind_script_is_a_static_file():
    from pathlib import Path

    from django.conf import settings

    script = Path(settings.BASE_DIR) / "static" / "controlplane" / "kinds.js"
    text = script.read_text()
    assert "data-kind-switch" in text and "htmx:afterSettle" in text


def test_a_sql_access_rule_is_created_and_listed(admin_client, pg_target, policy):
    form = admin_client.get(reverse("console:create", args=["access-rules"])).content.decode()
    assert f'<option value="{pg_target.pk}" data-kind="postgres">orders</option>' in form
    assert f'<option value="{policy.target.pk}" data-kind="http">customers</option>' in form
    assert 'value="TRUNCATE"' in form and 'data-kind="postgres">' in form
    r = admin_client.post(
        reverse("console:create", args=["access-rules"]), sql_rule_form(pg_target)
    )
    assert r.status_code == 302, r.content
    rule = AccessRule.objects.get(name="no unfiltered writes")
    assert rule.statement_kinds == ["DELETE", "UPDATE", "TRUNCATE"]
    assert rule.tables == ["public.*", "secret_*"]
    assert rule.without_where and not rule.without_limit
    listing = admin_client.get(reverse("console:list", args=["access-rules"])).content.decode()
    assert "DELETE, UPDATE, TRUNCATE · tables public.*, secret_* · without WHERE" in listing
    edit = admin_client.post(
        reverse("console:edit", args=["access-rules", rule.pk]),
        sql_rule_form(pg_target, without_where="", without_limit="on", statement_kinds=["SELECT"]),
    )
    assert edit.status_code == 302
    rule.refresh_from_db()
    assert rule.statement_kinds == ["SELECT"] and rule.without_limit and not rule.without_where


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"methods": "GET"}, "methods", "is a PostgreSQL database"),
        ({"path_pattern": "/x"}, "path_pattern", "is a PostgreSQL database"),
        ({"statement_kinds": ["EXPLODE"]}, "statement_kinds", "Select a valid choice"),
        ({"parameter_pattern": "(x"}, "parameter_pattern", "not a valid regular expression"),
        ({"tables": "bad name"}, "tables", "not a name glob"),
    ],
)
def test_bad_sql_rules_come_back_with_field_errors(admin_client, pg_target, change, field, message):
    r = admin_client.post(
        reverse("console:create", args=["access-rules"]),
        sql_rule_form(pg_target, **change),
        HTTP_HX_REQUEST="true",
    )
    assert r.status_code == 422
    assert message in str(r.context["form"].errors[field])
    assert not AccessRule.objects.filter(name="no unfiltered writes").exists()


def test_sql_conditions_on_an_http_target_or_mixed_are_refused(admin_client, policy):
    r = admin_client.post(
        reverse("console:create", args=["access-rules"]), sql_rule_form(policy.target)
    )
    assert r.status_code == 422
    assert "is an HTTP API" in str(r.context["form"].errors["statement_kinds"])
    mixed = {**sql_rule_form(policy.target), "target": "", "methods": "GET"}
    r = admin_client.post(reverse("console:create", args=["access-rules"]), mixed)
    assert r.status_code == 422
    assert "cannot be combined with HTTP conditions" in str(r.context["form"].errors["tables"])


@pytest.mark.parametrize("kind", ["targets", "access-rules"])
def test_only_admins_create_postgres_targets_and_sql_rules(client, users, pg_target, kind):
    data = PG_FORM if kind == "targets" else sql_rule_form(pg_target)
    for name in ("approver", "auditor", "outsider"):
        client.force_login(users[name])
        assert client.post(reverse("console:create", args=[kind]), data).status_code == 403
        assert client.get(reverse("console:edit", args=[kind, pg_target.pk])).status_code == 403
    assert not Target.objects.filter(pg_database="orders_prod").exists()
    assert not AccessRule.objects.exists()


def test_create_and_edit_answer_405_to_other_methods(admin_client, pg_target):
    for method in ("put", "patch", "delete"):
        call = getattr(admin_client, method)
        assert call(reverse("console:create", args=["targets"])).status_code == 405
        assert call(reverse("console:edit", args=["targets", pg_target.pk])).status_code == 405

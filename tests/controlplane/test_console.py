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

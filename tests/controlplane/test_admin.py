"""Registration through Django admin: role gate, write-only credentials, tokens shown once."""

from __future__ import annotations

import pytest
from django.urls import reverse

from controlplane.models import Agent, AgentToken, Target
from proxy_worker.policy import hash_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, users):
    users["admin"].is_staff = True
    users["admin"].save()
    client.force_login(users["admin"])
    return client


def test_staff_without_the_admin_role_cannot_enter(client, users):
    users["auditor"].is_staff = True
    users["auditor"].save()
    client.force_login(users["auditor"])
    r = client.get(reverse("admin:index"))
    assert r.status_code == 302 and "login" in r["Location"]


def test_it_creates_a_target_with_a_write_only_credential(admin_client):
    r = admin_client.post(
        reverse("admin:controlplane_target_add"),
        {
            "name": "CRM",
            "slug": "crm",
            "upstream_url": "https://crm.example.com",
            "auth_header": "Authorization",
            "auth_scheme": "Bearer",
            "credential": "s3cr3t-upstream",
            "default_action": "allow",
            "approval_timeout": "120",
            "binary_bodies": "refuse",
        },
    )
    assert r.status_code == 302, r.content
    target = Target.objects.get(slug="crm")
    assert target.has_credential and "s3cr3t-upstream" not in target.credential_encrypted
    page = admin_client.get(reverse("admin:controlplane_target_change", args=[target.pk]))
    assert b"s3cr3t-upstream" not in page.content
    # Saving without a credential keeps the stored one.
    stored = target.credential_encrypted
    admin_client.post(
        reverse("admin:controlplane_target_change", args=[target.pk]),
        {
            "name": "CRM 2",
            "slug": "crm",
            "upstream_url": "https://crm.example.com",
            "auth_header": "Authorization",
            "auth_scheme": "Bearer",
            "credential": "",
            "default_action": "allow",
            "approval_timeout": "120",
            "binary_bodies": "refuse",
        },
    )
    target.refresh_from_db()
    assert target.name == "CRM 2" and target.credential_encrypted == stored


def test_it_issues_a_token_shown_once_and_stored_hashed(admin_client, users):
    agent = Agent.objects.create(name="bot", owner=users["admin"])
    r = admin_client.post(
        reverse("admin:controlplane_agent_changelist"),
        {
            "action": "issue_token",
            "_selected_action": [agent.pk],
        },
    )
    assert r.status_code == 200 and "no-store" in r["Cache-Control"]
    token = r.context["issued"][0][1]
    assert token.startswith("gh_") and token in r.content.decode()
    row = AgentToken.objects.get(agent=agent)
    assert row.token_hash == hash_token(token) and token not in str(row.__dict__)
    page = admin_client.get(reverse("admin:controlplane_agent_change", args=[agent.pk]))
    assert token not in page.content.decode()


def test_it_creates_a_postgres_target_and_shows_the_sql_rule_form(admin_client):
    r = admin_client.post(
        reverse("admin:controlplane_target_add"),
        {
            "name": "Orders",
            "slug": "orders",
            "kind": "postgres",
            "pg_host": "db.internal",
            "pg_port": "5432",
            "pg_database": "orders",
            "pg_user": "app",
            "pg_sslmode": "verify-full",
            "credential": "db-s3cr3t",
            "default_action": "allow",
            "approval_timeout": "120",
            "binary_bodies": "refuse",
        },
    )
    assert r.status_code == 302, r.content
    target = Target.objects.get(slug="orders")
    assert target.kind == "postgres" and target.has_credential
    listing = admin_client.get(reverse("admin:controlplane_target_changelist")).content.decode()
    assert "postgresql://app@db.internal:5432/orders" in listing and "db-s3cr3t" not in listing
    page = admin_client.get(reverse("admin:controlplane_accessrule_add")).content.decode()
    assert 'name="statement_kinds"' in page and 'data-kind="postgres"' in page

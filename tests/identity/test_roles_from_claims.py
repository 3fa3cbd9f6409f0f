"""Group claims -> Gatehouse roles, and the social-account adapter that applies them."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from controlplane.oidc import (
    agent_oidc_config,
    apply_roles,
    claim_values,
    login_claims,
    parse_role_map,
    roles_from_claims,
)

role_map = parse_role_map("gh-admins=admin, secops=approver, secops=auditor, audit=auditor")


def test_it_parses_a_role_map():
    assert role_map == {
        "gh-admins": frozenset({"admin"}),
        "secops": frozenset({"approver", "auditor"}),
        "audit": frozenset({"auditor"}),
    }
    assert parse_role_map("") == {}
    assert parse_role_map("team=lead=admin") == {"team=lead": frozenset({"admin"})}


@pytest.mark.parametrize("raw", ["admins", "=admin", "x=root"])
def test_it_refuses_a_bad_role_map(raw):
    with pytest.raises(ImproperlyConfigured):
        parse_role_map(raw)


@pytest.mark.parametrize(
    ("claims", "name", "values"),
    [
        ({"groups": ["a", "b", 3]}, "groups", ["a", "b"]),
        ({"groups": "a b,c"}, "groups", ["a", "b", "c"]),
        ({"realm_access": {"roles": ["x"]}}, "realm_access.roles", ["x"]),
        ({"groups": None}, "groups", []),
        ({}, "groups", []),
        ({"realm_access": "x"}, "realm_access.roles", []),
    ],
)
def test_it_reads_claim_values(claims, name, values):
    assert claim_values(claims, name) == values


def test_it_maps_groups_to_roles():
    assert roles_from_claims({"groups": ["secops", "other"]}, "groups", role_map) == {
        "approver",
        "auditor",
    }
    assert roles_from_claims({"groups": ["other"]}, "groups", role_map) == frozenset()


def test_userinfo_overrides_id_token_claims():
    data = {"id_token": {"groups": ["a"], "sub": "1"}, "userinfo": {"groups": ["b"]}}
    assert login_claims(data) == {"groups": ["b"], "sub": "1"}
    assert login_claims({"groups": ["legacy"]}) == {"groups": ["legacy"]}


@pytest.mark.django_db
def test_apply_roles_sets_exactly_the_mapped_roles_and_keeps_other_groups():
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user("sso-user")
    user.groups.add(Group.objects.get_or_create(name="approver")[0])
    user.groups.add(Group.objects.get_or_create(name="unrelated-team")[0])
    apply_roles(user, frozenset({"admin", "auditor"}))
    user.refresh_from_db()
    assert set(user.groups.values_list("name", flat=True)) == {
        "admin",
        "auditor",
        "unrelated-team",
    }
    assert user.is_staff
    apply_roles(user, frozenset())
    user.refresh_from_db()
    assert set(user.groups.values_list("name", flat=True)) == {"unrelated-team"}
    assert not user.is_staff


def test_agent_oidc_is_off_without_an_issuer(settings):
    settings.GATEHOUSE_AGENT_OIDC = {**settings.GATEHOUSE_AGENT_OIDC, "issuer": ""}
    assert agent_oidc_config() is None


def test_agent_oidc_settings_are_validated(settings):
    base = {
        "issuer": "https://idp.example",
        "audience": "gh",
        "jwks_url": "https://idp.example/jwks",
        "algorithms": ["RS256"],
        "subject_claim": "sub",
        "groups_claim": "",
        "leeway": 30,
    }
    settings.GATEHOUSE_AGENT_OIDC = base
    assert agent_oidc_config()["groups_claim"] is None
    settings.GATEHOUSE_AGENT_OIDC = {**base, "jwks_url": "http://idp.example/jwks"}
    with pytest.raises(ImproperlyConfigured, match="https"):
        agent_oidc_config()
    settings.GATEHOUSE_AGENT_OIDC = {**base, "algorithms": ["HS256"]}
    with pytest.raises(ImproperlyConfigured):
        agent_oidc_config()

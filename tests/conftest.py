"""Shared fixtures: the real Redis (a test database and key prefix) and demo users."""

from __future__ import annotations

import pytest
from django.conf import settings


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing():
    """Hash test users' passwords with :class:`tests.hashers.FastPBKDF2PasswordHasher`
    first (the stock hashers stay listed, so existing hashes still verify)."""
    from django.test.utils import override_settings

    with override_settings(
        PASSWORD_HASHERS=["tests.hashers.FastPBKDF2PasswordHasher", *settings.PASSWORD_HASHERS]
    ):
        yield


@pytest.fixture
def redis_client():
    """The control plane's Redis client, with this deployment's test keys cleared."""
    from controlplane.redis import client

    r = client()
    for key in r.scan_iter(f"{settings.REDIS_PREFIX}:*"):
        r.delete(key)
    yield r
    for key in r.scan_iter(f"{settings.REDIS_PREFIX}:*"):
        r.delete(key)


@pytest.fixture
def users(db):
    """One user per role plus an outsider with no role: ``{"admin": User, ...}``."""
    from django.contrib.auth.models import Group, User

    out = {}
    for name, role in [
        ("admin", "admin"),
        ("approver", "approver"),
        ("approver2", "approver"),
        ("auditor", "auditor"),
        ("outsider", None),
    ]:
        user = User.objects.create_user(name, password="pw-" + name)
        if role:
            user.groups.add(Group.objects.get_or_create(name=role)[0])
        out[name] = user
    return out


@pytest.fixture
def policy(db, users):
    """A target with a credential, an agent owned by ``admin`` with a token, and rules.

    Returns a namespace with ``target``, ``agent``, ``token`` (plaintext), ``deny_rule``
    and ``approve_rule``.
    """
    from types import SimpleNamespace

    from controlplane.models import AccessRule, Agent, AgentToken, MaskingRule, Target

    target = Target(name="Customers", slug="customers", upstream_url="http://127.0.0.1:9")
    target.set_credential("upstream-secret-credential")
    target.save()
    agent = Agent.objects.create(name="agent-1", owner=users["admin"])
    _, token = AgentToken.issue(agent)
    MaskingRule.objects.create(name="pii", entity_types=["EMAIL", "US_SSN"])
    deny = AccessRule.objects.create(
        name="no schema",
        position=10,
        target=target,
        query_pattern="sqlite_master",
        action="deny",
        reason="no schema discovery",
    )
    approve = AccessRule.objects.create(
        name="bulk",
        position=20,
        target=target,
        path_pattern="/export*",
        action="approve",
        approval_timeout=30,
    )
    return SimpleNamespace(
        target=target, agent=agent, token=token, deny_rule=deny, approve_rule=approve
    )

"""Compiling and publishing the policy snapshot (real PostgreSQL and Redis)."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.fernet import Fernet
from django.conf import settings

from controlplane.models import AgentToken, Target
from controlplane.redis import keys
from controlplane.snapshot import compile_snapshot, publish_snapshot
from proxy_worker.contract import SCHEMA_VERSION
from proxy_worker.policy import Policy, hash_token

pytestmark = pytest.mark.django_db


def test_it_compiles_without_plaintext_secrets(policy):
    doc = compile_snapshot(5)
    raw = json.dumps(doc)
    assert doc["v"] == SCHEMA_VERSION and doc["version"] == 5
    assert "upstream-secret-credential" not in raw
    assert policy.token not in raw
    (target,) = doc["targets"]
    worker = Fernet(settings.GATEHOUSE_WORKER_KEY)
    assert worker.decrypt(target["credential"].encode()) == b"upstream-secret-credential"
    (agent,) = doc["agents"]
    assert agent["token_hashes"] == [hash_token(policy.token)]
    assert [r["name"] for r in doc["access_rules"]] == ["no schema", "bulk"]
    Policy.from_document({**doc, "targets": []})  # the worker can read it


def test_it_stores_credentials_encrypted_at_rest(policy):
    stored = Target.objects.values_list("credential_encrypted", flat=True).get()
    assert stored and "upstream-secret-credential" not in stored


def test_it_leaves_revoked_and_expired_tokens_out(policy):
    from django.utils import timezone

    AgentToken.objects.update(revoked_at=timezone.now())
    assert compile_snapshot(1)["agents"][0]["token_hashes"] == []


def test_it_publishes_newer_versions_only(policy, redis_client):
    k = keys()
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(k.policy_updates)
    v1 = publish_snapshot()
    v2 = publish_snapshot()
    assert v2 == v1 + 1
    assert json.loads(redis_client.get(k.policy_snapshot))["version"] == v2
    got: list[int] = []
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        m = pubsub.get_message(timeout=0.5)  # None for the subscribe confirmation
        if m:
            got.append(int(m["data"]))
    assert got == [v1, v2]
    # A slower publisher holding an older version cannot overwrite the newer snapshot.
    from proxy_worker.contract import PUBLISH_SNAPSHOT_LUA

    stale = json.dumps({"v": SCHEMA_VERSION, "version": v1})
    assert (
        redis_client.eval(PUBLISH_SNAPSHOT_LUA, 2, k.policy_snapshot, k.policy_updates, v1, stale)
        == 0
    )
    assert json.loads(redis_client.get(k.policy_snapshot))["version"] == v2


@pytest.mark.django_db(transaction=True)
def test_it_publishes_after_each_committed_change(users, redis_client):
    from django.db import transaction

    k = keys()
    with transaction.atomic():
        t = Target.objects.create(name="A", slug="a", upstream_url="http://127.0.0.1:1")
        Target.objects.create(name="B", slug="b", upstream_url="http://127.0.0.1:2")
        assert redis_client.get(k.policy_snapshot) is None  # not before the commit
    doc = json.loads(redis_client.get(k.policy_snapshot))
    assert {x["slug"] for x in doc["targets"]} == {"a", "b"}
    assert int(redis_client.get(k.policy_version)) == 1  # one publish per transaction
    t.delete()
    doc = json.loads(redis_client.get(k.policy_snapshot))
    assert {x["slug"] for x in doc["targets"]} == {"b"}


def test_postgres_targets_and_sql_rules_are_compiled(policy):
    from controlplane.models import AccessRule
    from proxy_worker.policy import SqlFacts, StatementRequest

    pg = Target(
        name="Orders",
        slug="orders",
        kind="postgres",
        pg_host="db.internal",
        pg_port=6543,
        pg_database="orders",
        pg_user="app",
        pg_sslmode="verify-full",
        pg_ca_pem="",
        pg_allow_plaintext=True,
    )
    pg.set_credential("db-password")
    pg.save()
    AccessRule.objects.create(
        name="no unfiltered deletes",
        position=5,
        target=pg,
        statement_kinds=["DELETE", "TRUNCATE"],
        tables=["public.*"],
        functions=["pg_sleep"],
        without_where=True,
        without_limit=False,
        parameter_pattern="@example\\.com",
        action="deny",
    )
    doc = compile_snapshot(9)
    by_slug = {t["slug"]: t for t in doc["targets"]}
    entry = by_slug["orders"]
    assert set(entry) == {
        "id",
        "slug",
        "kind",
        "upstream",
        "auth_header",
        "auth_scheme",
        "credential",
        "default_action",
        "approval_timeout",
        "binary_bodies",
        "postgres",
    }
    assert entry["kind"] == "postgres"
    assert entry["upstream"] == "postgresql://app@db.internal:6543/orders"
    assert entry["postgres"] == {
        "host": "db.internal",
        "port": 6543,
        "database": "orders",
        "user": "app",
        "sslmode": "verify-full",
        "ca_pem": None,
        "allow_plaintext": True,
    }
    assert "db-password" not in json.dumps(doc)
    http = by_slug["customers"]
    assert http["kind"] == "http" and "postgres" not in http
    assert http["upstream"] == "http://127.0.0.1:9"
    rules = {r["name"]: r for r in doc["access_rules"]}
    sql = rules["no unfiltered deletes"]
    assert {k: sql[k] for k in SQL_KEYS} == {
        "statement_kinds": ["DELETE", "TRUNCATE"],
        "tables": ["public.*"],
        "functions": ["pg_sleep"],
        "without_where": True,
        "without_limit": False,
        "parameter_pattern": "@example\\.com",
    }
    assert {k: rules["bulk"][k] for k in SQL_KEYS} == {
        "statement_kinds": [],
        "tables": [],
        "functions": [],
        "without_where": False,
        "without_limit": False,
        "parameter_pattern": None,
    }
    # The worker reads it (the link decrypts credentials first).
    worker = Fernet(settings.GATEHOUSE_WORKER_KEY)
    for t in doc["targets"]:
        t["credential"] = worker.decrypt(t["credential"].encode()).decode()
    p = Policy.from_document(doc)
    target = p.resolve_target("orders", kind="postgres")
    assert target.postgres.password == "db-password" and target.postgres.port == 6543
    assert p.resolve_target("orders", kind="http") is None
    facts = SqlFacts(
        kind="DELETE",
        kinds=frozenset({"DELETE"}),
        relations=frozenset({"public.orders"}),
        functions=frozenset({"pg_sleep"}),
        unfiltered_write=True,
    )
    request = StatementRequest(
        agent_id=policy.agent.id,
        target_id=target.id,
        facts=facts,
        sql="DELETE FROM orders WHERE pg_sleep(1) IS NULL AND email = $1",
        parameters=("ann@example.com",),
    )
    assert p.evaluate_statement(request).rule.name == "no unfiltered deletes"


SQL_KEYS = (
    "statement_kinds",
    "tables",
    "functions",
    "without_where",
    "without_limit",
    "parameter_pattern",
)

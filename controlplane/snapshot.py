"""Compile the policy into one versioned snapshot and publish it to the workers.

:func:`compile_snapshot` reads targets, agents (token digests only), masking rules,
access rules and active grants into the document described in :mod:`proxy_worker.policy`.
:func:`publish_snapshot` stores it at ``Keys.policy_snapshot`` and announces the new
version on ``Keys.policy_updates`` (atomically, newer versions only). Every committed
change to a policy model schedules a publish (:func:`schedule_publish`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from django.conf import settings
from django.db import transaction

from controlplane.crypto import decrypt_field, encrypt_for_worker
from controlplane.models import AccessRule, Agent, AgentGroup, AgentToken, MaskingRule, Target
from controlplane.oidc import agent_oidc_config
from controlplane.redis import client, keys
from proxy_worker.contract import PUBLISH_SNAPSHOT_LUA, SCHEMA_VERSION

log = logging.getLogger("gatehouse.snapshot")


def compile_snapshot(version: int) -> dict[str, Any]:
    """The policy document for ``version``. Credentials are encrypted for workers."""
    targets = []
    for t in Target.objects.order_by("id"):
        entry: dict[str, Any] = {
            "id": t.id,
            "slug": t.slug,
            "kind": t.kind,
            "upstream": t.upstream_display,
            "auth_header": t.auth_header,
            "auth_scheme": t.auth_scheme,
            "credential": encrypt_for_worker(decrypt_field(t.credential_encrypted))
            if t.credential_encrypted
            else None,
            "default_action": t.default_action,
            "approval_timeout": t.approval_timeout,
            "binary_bodies": t.binary_bodies,
        }
        if t.kind == "postgres":
            entry["postgres"] = {
                "host": t.pg_host,
                "port": t.pg_port,
                "database": t.pg_database,
                "user": t.pg_user,
                "sslmode": t.pg_sslmode,
                "ca_pem": t.pg_ca_pem.strip() or None,
                "allow_plaintext": t.pg_allow_plaintext,
            }
        elif t.kind == "mcp":
            entry["mcp"] = {
                "block_changed_tools": t.mcp_block_changed_tools,
                "allow_server_requests": t.mcp_allow_server_requests,
            }
        targets.append(entry)
    hashes: dict[int, list[str]] = {}
    for agent_id, h in AgentToken.objects.usable().values_list("agent_id", "token_hash"):
        hashes.setdefault(agent_id, []).append(h)
    agents = [
        {
            "id": a.id,
            "name": a.name,
            "owner": a.owner.get_username() if a.owner else "",
            "token_hashes": hashes.get(a.id, []),
            "oidc_subject": a.oidc_subject,
            "group_ids": sorted(g.id for g in a.groups.all()),
        }
        for a in Agent.objects.filter(is_active=True)
        .select_related("owner")
        .prefetch_related("groups")
        .order_by("id")
    ]
    masking = [
        {
            "id": r.id,
            "name": r.name,
            "entity_types": list(r.entity_types),
            "field_names": list(r.field_names),
            "custom_pattern": r.custom_pattern or None,
            "json_paths": list(r.json_paths),
            "deny_list": list(r.deny_list),
            "strategy": r.strategy,
            "direction": r.direction,
            "target_ids": [t.id for t in r.targets.all()] or None,
            "agent_group_ids": [g.id for g in r.agent_groups.all()] or None,
        }
        for r in MaskingRule.objects.filter(is_active=True).prefetch_related(
            "targets", "agent_groups"
        )
    ]
    access = [
        {
            "id": r.id,
            "name": r.name,
            "target_id": r.target_id,
            "agent_ids": [a.id for a in r.agents.all()] or None,
            "agent_group_ids": [g.id for g in r.agent_groups.all()] or None,
            "methods": list(r.methods),
            "path_pattern": r.path_pattern,
            "query_pattern": r.query_pattern or None,
            "body_pattern": r.body_pattern or None,
            "action": r.action,
            "approval_timeout": r.approval_timeout,
            "reason": r.reason,
            "approval_mode": r.approval_mode,
            "required_approvals": r.required_approvals,
            "retry_window": r.retry_window,
            "statement_kinds": list(r.statement_kinds),
            "tables": list(r.tables),
            "functions": list(r.functions),
            "without_where": r.without_where,
            "without_limit": r.without_limit,
            "parameter_pattern": r.parameter_pattern or None,
            "mcp_methods": list(r.mcp_methods),
            "tool_names": list(r.tool_names),
            "argument_path": r.argument_path or None,
            "argument_pattern": r.argument_pattern or None,
        }
        for r in AccessRule.objects.filter(is_active=True).prefetch_related(
            "agents", "agent_groups"
        )
    ]
    return {
        "v": SCHEMA_VERSION,
        "version": version,
        "generated_at": time.time(),
        "targets": targets,
        "agents": agents,
        "agent_groups": [{"id": g.id, "name": g.name} for g in AgentGroup.objects.order_by("id")],
        "agent_oidc": agent_oidc_config(),
        "masking_rules": masking,
        "access_rules": access,
        "grants": compile_grants(),
        "site_url": settings.SITE_URL,
    }


def compile_grants() -> list[dict[str, Any]]:
    """Active grants (not revoked, not expired) in the snapshot's ``grants`` shape.

    Workers also ignore a grant past ``expires_at`` by their own clock, so a grant
    expires on time even before a newer snapshot drops it. ``tables`` (relation name
    globs, empty = any) scopes SQL grants, whose ``method`` is a statement kind; an MCP
    grant's ``method`` is a JSON-RPC method and its ``path_pattern`` a tool-name glob.
    """
    from approvals.models import Grant

    return [
        {
            "id": g.id,
            "agent_id": g.agent_id,
            "target_id": g.target_id,
            "method": g.method,
            "path_pattern": g.path_pattern,
            "tables": list(g.tables),
            "expires_at": g.expires_at.timestamp(),
            "approval_id": str(g.approval_request_id) if g.approval_request_id else None,
        }
        for g in Grant.objects.active().order_by("id")
    ]


def publish_snapshot() -> int:
    """Compile and publish a new snapshot; returns its version.

    The version comes from ``INCR`` on ``Keys.policy_version``, so concurrent publishers
    never reuse one, and the Lua script keeps a slower publisher from overwriting a newer
    snapshot. Raises ``redis.RedisError`` when Redis is unreachable.
    """
    r = client()
    k = keys()
    version = int(r.incr(k.policy_version))
    doc = compile_snapshot(version)
    stored = r.eval(
        PUBLISH_SNAPSHOT_LUA,
        2,
        k.policy_snapshot,
        k.policy_updates,
        version,
        json.dumps(doc, separators=(",", ":")),
    )
    log.info("policy version %d %s", version, "published" if stored else "superseded")
    return version


def _publish_after_commit() -> None:
    try:
        publish_snapshot()
    except Exception:
        # The beat task republishes every minute, and workers keep their last good policy.
        log.exception("could not publish the policy snapshot")


def schedule_publish() -> None:
    """Publish once after the current transaction commits (once per transaction)."""
    conn = transaction.get_connection()
    if not conn.in_atomic_block:
        _publish_after_commit()
        return
    # One publish per transaction, however many rows changed in it.
    if any(entry[1] is _publish_after_commit for entry in conn.run_on_commit):
        return
    transaction.on_commit(_publish_after_commit)

"""Append a ``change`` record to the audit chain for every control-plane change.

Covers targets, agents, agent groups, agent tokens, masking rules, access rules, their
many-to-many links, approval grants and decisions (when the approvals app defines
them), and role membership (``User.groups``). The record is written in the same
transaction as the change when the caller runs one (Django admin does; a save in
autocommit mode is followed by its record in a transaction of its own), with the actor
from :data:`audit.chain.current_actor`. Credential fields appear only by name in
``secrets_changed`` (:data:`audit.chain.SECRET_FIELDS`).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from audit.chain import lock_head, model_values, record_change

#: ``app_label.ModelName`` of every model whose changes are chained. Models that do not
#: exist (yet) in this deployment are skipped.
CHAINED_MODELS = (
    "controlplane.Target",
    "controlplane.Agent",
    "controlplane.AgentGroup",
    "controlplane.AgentToken",
    "controlplane.MaskingRule",
    "controlplane.AccessRule",
    "approvals.Grant",
    "approvals.Decision",
)


def _lock_first() -> None:
    """Inside a transaction, take the chain-head lock before the change locks its rows,
    so every transaction that appends takes the head first (no lock-order deadlock
    with ingest, which holds the head while inserting rows that reference targets)."""
    if transaction.get_connection().in_atomic_block:
        lock_head()


def _pre_save(sender, instance, raw=False, **kwargs) -> None:
    if not raw:
        _lock_first()
    if raw or instance.pk is None or instance._state.adding:
        instance._audit_old = None
        return
    old = sender._default_manager.filter(pk=instance.pk).first()
    instance._audit_old = model_values(old) if old is not None else None


def _post_save(sender, instance, created, raw=False, **kwargs) -> None:
    if raw:
        return
    old = getattr(instance, "_audit_old", None)
    action = "create" if created or old is None else "update"
    record_change(None, action, instance, old, model_values(instance))
    instance._audit_old = model_values(instance)


def _pre_delete(sender, instance, **kwargs) -> None:
    _lock_first()


def _post_delete(sender, instance, **kwargs) -> None:
    record_change(None, "delete", instance, model_values(instance), None)


def _m2m(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    name = next(
        (
            f.name
            for f in type(instance)._meta.get_fields()
            if getattr(getattr(f, "remote_field", None), "through", None) is sender
        ),
        sender.__name__,
    )
    values: dict[str, Any] = {
        "field": name,
        "model": f"{model._meta.app_label}.{model._meta.model_name}",
        "pks": sorted(pk_set or []),
    }
    verb = action.removeprefix("post_")
    record_change(
        None,
        f"m2m:{name}:{verb}",
        instance,
        values if verb != "add" else None,
        values if verb == "add" else None,
    )


def connect() -> None:
    """Connect the handlers (called once from :meth:`audit.apps.AuditConfig.ready`)."""
    for label in CHAINED_MODELS:
        try:
            model = apps.get_model(label)
        except LookupError:
            continue
        uid = f"audit-chain-{label}"
        pre_save.connect(_pre_save, sender=model, dispatch_uid=f"{uid}-pre")
        post_save.connect(_post_save, sender=model, dispatch_uid=f"{uid}-post")
        pre_delete.connect(_pre_delete, sender=model, dispatch_uid=f"{uid}-pre-delete")
        post_delete.connect(_post_delete, sender=model, dispatch_uid=f"{uid}-delete")
        for f in model._meta.many_to_many:
            through = f.remote_field.through
            m2m_changed.connect(_m2m, sender=through, dispatch_uid=f"{uid}-{f.name}")
    user_groups = get_user_model().groups.through
    m2m_changed.connect(_m2m, sender=user_groups, dispatch_uid="audit-chain-user-groups")

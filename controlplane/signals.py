"""Publish a new policy snapshot after every committed change to a policy model."""

from __future__ import annotations

from django.db.models.signals import m2m_changed, post_delete, post_save

from controlplane.models import AccessRule, Agent, AgentGroup, AgentToken, MaskingRule, Target
from controlplane.snapshot import schedule_publish

POLICY_MODELS = (Target, Agent, AgentGroup, AgentToken, MaskingRule, AccessRule)


def _changed(sender, **kwargs) -> None:
    if kwargs.get("raw"):  # loaddata
        return
    schedule_publish()


for model in POLICY_MODELS:
    post_save.connect(_changed, sender=model, dispatch_uid=f"publish-{model.__name__}-save")
    post_delete.connect(_changed, sender=model, dispatch_uid=f"publish-{model.__name__}-delete")
for through in (
    MaskingRule.targets.through,
    MaskingRule.agent_groups.through,
    AccessRule.agents.through,
    AccessRule.agent_groups.through,
    Agent.groups.through,
):
    m2m_changed.connect(_changed, sender=through, dispatch_uid=f"publish-{through.__name__}")

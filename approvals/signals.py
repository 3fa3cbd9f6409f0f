"""Publish a new policy snapshot after every committed change to a grant."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save

from approvals.models import Grant
from controlplane.snapshot import schedule_publish


def _grant_changed(sender, **kwargs) -> None:
    if kwargs.get("raw"):  # loaddata
        return
    schedule_publish()


post_save.connect(_grant_changed, sender=Grant, dispatch_uid="publish-Grant-save")
post_delete.connect(_grant_changed, sender=Grant, dispatch_uid="publish-Grant-delete")

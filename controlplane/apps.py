from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class ControlplaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Policy"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from controlplane import signals  # noqa: F401
        from controlplane.roles import ensure_roles

        post_migrate.connect(ensure_roles, sender=self, dispatch_uid="gatehouse-roles")


class GatehouseAdminConfig(AdminConfig):
    """Django admin with :class:`controlplane.admin_site.GatehouseAdminSite` as the site."""

    default_site = "controlplane.admin_site.GatehouseAdminSite"

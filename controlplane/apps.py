from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class ControlplaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Policy"

    def ready(self) -> None:
        from controlplane import signals  # noqa: F401


class GatehouseAdminConfig(AdminConfig):
    """Django admin with :class:`controlplane.admin_site.GatehouseAdminSite` as the site."""

    default_site = "controlplane.admin_site.GatehouseAdminSite"

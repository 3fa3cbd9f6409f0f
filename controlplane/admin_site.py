"""Django admin restricted to the ``admin`` role (staff status alone is not enough)."""

from __future__ import annotations

from django.contrib import admin

from controlplane.roles import ADMIN, has_role


class GatehouseAdminSite(admin.AdminSite):
    site_header = "Gatehouse administration"
    site_title = "Gatehouse"
    index_title = "Policy"

    def has_permission(self, request) -> bool:
        user = request.user
        return bool(user.is_active and user.is_staff and has_role(user, ADMIN))

"""Read-only Django admin views of approval requests and decisions."""

from __future__ import annotations

from django.contrib import admin

from approvals.models import ApprovalRequest, Decision, Grant


class DecisionInline(admin.TabularInline):
    model = Decision
    extra = 0
    can_delete = False
    readonly_fields = ["user", "verdict", "comment", "grant_minutes", "created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(admin.ModelAdmin):
    list_display = ["id", "protocol", "method", "url", "agent", "target", "status", "requested_at"]
    list_filter = ["status", "protocol", "target"]
    inlines = [DecisionInline]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Grant)
class GrantAdmin(admin.ModelAdmin):
    """Grants are made by approving with a grant and revoked on the grants page; the
    admin only lists them."""

    list_display = [
        "id",
        "agent",
        "target",
        "method",
        "path_pattern",
        "tables",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["target"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False

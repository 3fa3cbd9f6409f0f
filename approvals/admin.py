"""Read-only Django admin views of approval requests and decisions."""

from __future__ import annotations

from django.contrib import admin

from approvals.models import ApprovalRequest, Decision


class DecisionInline(admin.TabularInline):
    model = Decision
    extra = 0
    can_delete = False
    readonly_fields = ["user", "verdict", "comment", "created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(admin.ModelAdmin):
    list_display = ["id", "method", "url", "agent", "target", "status", "requested_at"]
    list_filter = ["status", "target"]
    inlines = [DecisionInline]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False

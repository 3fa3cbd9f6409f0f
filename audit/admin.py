"""Read-only Django admin listing of exchanges (the replay UI is the auditor's tool)."""

from __future__ import annotations

from django.contrib import admin

from audit.models import Exchange, IngestError, Session


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Session)
class SessionAdmin(ReadOnlyAdmin):
    list_display = ["id", "agent", "target", "started_at", "last_activity_at", "exchange_count"]


@admin.register(Exchange)
class ExchangeAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "agent",
        "target",
        "protocol",
        "method",
        "url",
        "status_code",
        "decision",
    ]
    list_filter = ["decision", "protocol", "target"]


@admin.register(IngestError)
class IngestErrorAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "stream", "entry_id", "error"]

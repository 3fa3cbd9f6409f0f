"""Registration UI for admins (Django admin): targets, agents and tokens, rules."""

from __future__ import annotations

from django.contrib import admin
from django.db import transaction
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from controlplane.forms import AccessRuleForm, TargetForm
from controlplane.models import AccessRule, Agent, AgentGroup, AgentToken, MaskingRule, Target


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    form = TargetForm
    list_display = ["slug", "name", "kind", "upstream_display", "default_action", "has_credential"]
    list_filter = ["kind"]
    search_fields = ["slug", "name", "upstream_url", "pg_host", "pg_database"]

    @admin.display(description="upstream")
    def upstream_display(self, obj: Target) -> str:
        return obj.upstream_display

    @admin.display(boolean=True, description="credential")
    def has_credential(self, obj: Target) -> bool:
        return obj.has_credential


class AgentTokenInline(admin.TabularInline):
    model = AgentToken
    extra = 0
    can_delete = False
    fields = ["prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # tokens are issued with the "Issue a new token" action: shown once


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "description"]
    inlines = [AgentTokenInline]
    actions = ["issue_token", "revoke_tokens"]

    @admin.action(description="Issue a new token (shown once)")
    def issue_token(self, request: HttpRequest, queryset):
        issued = []
        with transaction.atomic():
            for agent in queryset:
                _, plaintext = AgentToken.issue(agent)
                issued.append((agent, plaintext))
        response = TemplateResponse(
            request,
            "controlplane/token_issued.html",
            {
                **self.admin_site.each_context(request),
                "issued": issued,
                "title": "New agent tokens",
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke all tokens")
    def revoke_tokens(self, request: HttpRequest, queryset) -> None:
        n = 0
        for token in AgentToken.objects.filter(agent__in=queryset, revoked_at__isnull=True):
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            n += 1
        self.message_user(request, f"Revoked {n} tokens.")


@admin.register(MaskingRule)
class MaskingRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "strategy", "direction", "is_active"]
    list_filter = ["direction", "strategy", "is_active"]
    filter_horizontal = ["targets", "agent_groups"]


@admin.register(AccessRule)
class AccessRuleAdmin(admin.ModelAdmin):
    form = AccessRuleForm
    list_display = [
        "name",
        "position",
        "action",
        "target",
        "path_pattern",
        "statement_kinds",
        "tool_names",
        "is_active",
    ]
    list_editable = ["position"]
    list_filter = ["action", "target", "is_active"]
    filter_horizontal = ["agents", "agent_groups"]


@admin.register(AgentGroup)
class AgentGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "description"]
    search_fields = ["name"]

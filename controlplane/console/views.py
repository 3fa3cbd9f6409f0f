"""The admin console: Gatehouse's own pages for the policy (admin role only).

One generic set of views (:class:`Resource` list, create, edit, delete) serves targets,
agents, agent groups, masking rules, access rules and approver groups; agents add token
issue and revoke, access rules add up/down ordering, and the policy page exports and
imports YAML with a dry-run diff (:mod:`controlplane.policy_yaml`).

Forms post with htmx (``hx-post``) and fall back to plain posts. Every view is wrapped in
``role_required(ADMIN)``; every change commits in one transaction, so the proxy gets one
new policy snapshot (:mod:`controlplane.snapshot`) within a second. Credentials are
write-only and tokens are shown once with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.db.models import ProtectedError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from controlplane import forms as cforms
from controlplane.models import AccessRule, Agent, AgentGroup, AgentToken, MaskingRule, Target
from controlplane.policy_yaml import export_yaml, plan_import
from controlplane.roles import ADMIN, ROLES, role_required


@dataclass(frozen=True)
class Resource:
    """A kind of policy object the console manages.

    ``columns`` are ``(heading, attribute or callable)`` pairs for the list page.
    """

    slug: str
    title: str
    singular: str
    model: type[models.Model]
    form: type[forms.ModelForm]
    columns: tuple[tuple[str, object], ...]
    help: str = ""

    def queryset(self):
        if self.model is Group:
            return cforms.approver_groups().order_by("name")
        if self.model is AccessRule:
            return AccessRule.objects.select_related("target").order_by("position", "id")
        return self.model.objects.all()

    def url(self, action: str = "list", pk: int | None = None) -> str:
        if pk is None:
            return reverse(f"console:{action}", args=[self.slug])
        return reverse(f"console:{action}", args=[self.slug, pk])


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _http_cell(rule: AccessRule, value: str) -> str:
    """An HTTP condition of a rule, "—" for SQL and MCP rules (they never match HTTP
    requests)."""
    return "—" if rule.sql_conditions or rule.mcp_conditions else value


def _sql_cell(rule: AccessRule) -> str:
    """A rule's SQL conditions; "any" when it has none (it matches statements too), "—"
    when it has HTTP or MCP conditions (it never matches a statement)."""
    if rule.sql_conditions:
        return rule.sql_summary
    return "—" if rule.http_conditions or rule.mcp_conditions else "any"


def _mcp_cell(rule: AccessRule) -> str:
    """A rule's MCP conditions; "any" when it has none (it matches MCP calls too), "—"
    when it has HTTP or SQL conditions (it never matches an MCP call)."""
    if rule.mcp_conditions:
        return rule.mcp_summary
    return "—" if rule.http_conditions or rule.sql_conditions else "any"


RESOURCES: dict[str, Resource] = {
    r.slug: r
    for r in (
        Resource(
            "targets",
            "Targets",
            "target",
            Target,
            cforms.TargetForm,
            (
                ("Slug", "slug"),
                ("Name", "name"),
                ("Kind", lambda t: t.get_kind_display()),
                ("Upstream", "upstream_display"),
                ("Default", "default_action"),
                ("Credential", lambda t: "set" if t.has_credential else "none"),
                ("Retention (days)", lambda t: t.retention_days or "forever"),
            ),
            "Upstream APIs and MCP servers agents reach through the proxy, at /<slug>/ or by "
            "host, and PostgreSQL databases they reach with a PostgreSQL client "
            "(database = slug).",
        ),
        Resource(
            "agents",
            "Agents",
            "agent",
            Agent,
            cforms.AgentForm,
            (
                ("Name", "name"),
                ("Owner", "owner"),
                ("Active", lambda a: _yes(a.is_active)),
                ("Groups", lambda a: ", ".join(g.name for g in a.groups.all()) or "—"),
                ("Usable tokens", lambda a: AgentToken.objects.usable().filter(agent=a).count()),
            ),
            "Non-human identities: AI agents, scripts, CI jobs.",
        ),
        Resource(
            "agent-groups",
            "Agent groups",
            "agent group",
            AgentGroup,
            cforms.AgentGroupForm,
            (("Name", "name"), ("Description", "description")),
            "Access and masking rules can name groups instead of single agents.",
        ),
        Resource(
            "masking-rules",
            "Masking rules",
            "masking rule",
            MaskingRule,
            cforms.MaskingRuleForm,
            (
                ("Name", "name"),
                ("Detectors", lambda r: ", ".join(r.entity_types) or "—"),
                ("Strategy", "strategy"),
                ("Direction", "direction"),
                ("Targets", lambda r: ", ".join(t.slug for t in r.targets.all()) or "all"),
                ("Active", lambda r: _yes(r.is_active)),
            ),
            "What personal data is masked, how, in which direction and on which targets.",
        ),
        Resource(
            "access-rules",
            "Access rules",
            "access rule",
            AccessRule,
            cforms.AccessRuleForm,
            (
                ("#", "position"),
                ("Name", "name"),
                ("Target", lambda r: r.target.slug if r.target else "all"),
                ("Methods", lambda r: _http_cell(r, ", ".join(r.methods) or "any")),
                ("Path", lambda r: _http_cell(r, r.path_pattern)),
                ("SQL", _sql_cell),
                ("MCP", _mcp_cell),
                ("Action", "action"),
                ("Active", lambda r: _yes(r.is_active)),
            ),
            "Ordered: the first active rule that matches a request decides it.",
        ),
        Resource(
            "approver-groups",
            "Approver groups",
            "approver group",
            Group,
            cforms.ApproverGroupForm,
            (
                ("Name", "name"),
                ("Members", lambda g: ", ".join(u.get_username() for u in g.user_set.all())),
            ),
            "People who may approve the requests of the rules and targets naming the group.",
        ),
    )
}


def _resource(slug: str) -> Resource:
    try:
        return RESOURCES[slug]
    except KeyError:
        raise Http404("no such console section") from None


def _cell(obj, spec) -> object:
    value = spec(obj) if callable(spec) else getattr(obj, spec)
    return "—" if value in (None, "") else value


def _table(res: Resource) -> dict[str, object]:
    """Template context of a resource's table: headings and one dict per row."""
    rows = []
    for obj in res.queryset():
        row = {
            "obj": obj,
            "cells": [_cell(obj, spec) for _, spec in res.columns],
            "edit_url": res.url("edit", obj.pk),
        }
        if res.model is AccessRule:
            row["up_url"] = reverse("console:move_rule", args=[obj.pk, "up"])
            row["down_url"] = reverse("console:move_rule", args=[obj.pk, "down"])
        rows.append(row)
    return {
        "res": res,
        "rows": rows,
        "headings": [h for h, _ in res.columns],
        "create_url": res.url("create"),
        "list_url": res.url(),
        "ordered": res.model is AccessRule,
    }


def _object(res: Resource, pk: int):
    return get_object_or_404(res.queryset(), pk=pk)


@role_required(ADMIN)
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """The console's landing page: every section with its object count."""
    sections = [(r, r.url(), r.queryset().count()) for r in RESOURCES.values()]
    return render(request, "controlplane/console/index.html", {"sections": sections})


@role_required(ADMIN)
@require_GET
def object_list(request: HttpRequest, kind: str) -> HttpResponse:
    """The objects of one resource as a table, with edit links (and ordering for rules)."""
    return render(request, "controlplane/console/list.html", _table(_resource(kind)))


def _save_form(request: HttpRequest, res: Resource, instance=None) -> HttpResponse:
    form = res.form(request.POST or None, request.FILES or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            obj = form.save()
        messages.success(request, f"Saved {res.singular} “{obj}”.")
        url = res.url("edit", obj.pk) if res.model is Agent else res.url()
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    context = {
        "res": res,
        "form": form,
        "object": instance,
        "action_url": res.url("edit", instance.pk) if instance else res.url("create"),
        "delete_url": res.url("delete", instance.pk) if instance else None,
        "list_url": res.url(),
    }
    if instance is not None and res.model is Agent:
        context["tokens"] = instance.tokens.all()
        context["token_form"] = cforms.TokenIssueForm()
    status = 422 if request.method == "POST" else 200
    template = (
        "controlplane/console/_form.html" if request.htmx else "controlplane/console/form.html"
    )
    return render(request, template, context, status=status)


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def create(request: HttpRequest, kind: str) -> HttpResponse:
    """A blank form for a new object; POST validates and saves (422 with errors)."""
    return _save_form(request, _resource(kind))


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def edit(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    """The form of one object; POST validates and saves (422 with errors)."""
    res = _resource(kind)
    return _save_form(request, res, _object(res, pk))


@role_required(ADMIN)
@require_POST
def delete(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    """Delete one object (the page asks for confirmation before posting)."""
    res = _resource(kind)
    obj = _object(res, pk)
    label = str(obj)
    try:
        with transaction.atomic():
            obj.delete()
    except ProtectedError:
        messages.error(request, f"“{label}” is still in use and was not deleted.")
    else:
        messages.success(request, f"Deleted {res.singular} “{label}”.")
    return HttpResponseClientRedirect(res.url()) if request.htmx else redirect(res.url())


@role_required(ADMIN)
@require_POST
def move_rule(request: HttpRequest, pk: int, direction: str) -> HttpResponse:
    """Swap an access rule with its neighbour (``direction`` is ``up`` or ``down``).

    Positions are renumbered 10, 20, 30, … in one transaction, so equal positions
    left by earlier edits are resolved deterministically. Answers the re-rendered table.
    """
    if direction not in ("up", "down"):
        raise Http404("direction is up or down")
    with transaction.atomic():
        rules = list(AccessRule.objects.select_for_update().order_by("position", "id"))
        index_of = {r.pk: i for i, r in enumerate(rules)}
        if pk not in index_of:
            raise Http404("no such access rule")
        i = index_of[pk]
        j = i - 1 if direction == "up" else i + 1
        if 0 <= j < len(rules):
            rules[i], rules[j] = rules[j], rules[i]
        for n, rule in enumerate(rules, start=1):
            if rule.position != n * 10:
                rule.position = n * 10
                rule.save(update_fields=["position"])
    res = RESOURCES["access-rules"]
    if request.htmx:
        return render(request, "controlplane/console/_table.html", _table(res))
    return redirect(res.url())


@role_required(ADMIN)
@require_POST
def issue_token(request: HttpRequest, pk: int) -> HttpResponse:
    """Issue a token for agent ``pk`` and show it once (``Cache-Control: no-store``)."""
    agent = get_object_or_404(Agent, pk=pk)
    form = cforms.TokenIssueForm(request.POST)
    if not form.is_valid():
        messages.error(
            request,
            "Token not issued: " + "; ".join(m for errs in form.errors.values() for m in errs),
        )
        return redirect(RESOURCES["agents"].url("edit", pk))
    days = form.cleaned_data.get("expires_in_days")
    expires_at = timezone.now() + timedelta(days=days) if days else None
    with transaction.atomic():
        token, plaintext = AgentToken.issue(agent, expires_at=expires_at)
    response = render(
        request,
        "controlplane/console/token_issued.html",
        {"agent": agent, "token": token, "plaintext": plaintext},
    )
    response["Cache-Control"] = "no-store"
    return response


@role_required(ADMIN)
@require_POST
def revoke_token(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke one token at once (the next snapshot drops its digest)."""
    token = get_object_or_404(AgentToken, pk=pk)
    if token.revoked_at is None:
        with transaction.atomic():
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
        messages.success(request, f"Revoked token {token}.")
    url = RESOURCES["agents"].url("edit", token.agent_id)
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@role_required(ADMIN)
@require_GET
def policy_export(request: HttpRequest) -> HttpResponse:
    """The whole policy as a YAML download (no credentials, no tokens)."""
    response = HttpResponse(export_yaml(), content_type="application/yaml; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="gatehouse-policy-{stamp}.yaml"'
    return response


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def policy_import(request: HttpRequest) -> HttpResponse:
    """Validate a pasted or uploaded YAML policy and show its diff (a dry run); a second
    post with ``apply`` set writes it in one transaction."""
    form = cforms.PolicyImportForm(request.POST or None, request.FILES or None)
    context: dict[str, object] = {"form": form, "role_names": ROLES}
    if request.method == "POST" and form.is_valid():
        plan = plan_import(form.cleaned_data["document"], prune=form.cleaned_data["prune"])
        context["plan"] = plan
        if plan.ok and form.cleaned_data.get("apply"):
            applied = plan.apply()
            messages.success(request, f"Policy imported: {len(applied)} change(s) applied.")
            url = reverse("console:policy")
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
        if plan.ok:
            # Re-post the same document (not an upload) to apply after review.
            context["confirm"] = cforms.PolicyImportForm(
                initial={
                    "document": form.cleaned_data["document"],
                    "prune": form.cleaned_data["prune"],
                    "apply": True,
                }
            )
    template = (
        "controlplane/console/_import.html" if request.htmx else "controlplane/console/policy.html"
    )
    return render(request, template, context)

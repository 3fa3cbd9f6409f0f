"""The approver's pages: the live queue, one request, decide, history, grants."""

from __future__ import annotations

import uuid

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from approvals.actions import do_decide, do_revoke_grant
from approvals.forms import GRANT_DURATIONS, DecideForm, HistoryForm
from approvals.models import ApprovalRequest, Decision, Grant
from approvals.permissions import (
    approvals_of,
    can_view,
    can_view_grant,
    decide_refusal,
    grant_visible_q,
    visible_q,
)
from audit.psql import parameter_lines, statement_lines
from controlplane.roles import APPROVER, role_required
from controlplane.text import pretty_json

#: Rows per history page.
HISTORY_PAGE_SIZE = 50


def visible_requests(user) -> QuerySet[ApprovalRequest]:
    """Approval requests ``user`` may see, with what a row renders fetched up front."""
    return (
        ApprovalRequest.objects.filter(visible_q(user))
        .select_related("agent__owner", "target__approver_group", "rule__approver_group")
        .prefetch_related(Prefetch("decisions", queryset=Decision.objects.select_related("user")))
    )


def _get_request_for_user(request: HttpRequest, approval_id: uuid.UUID) -> ApprovalRequest:
    """The approval request if the user may see it: 404 when there is none, 403 when it
    belongs to an approver group the user is not in (ids are random UUIDs)."""
    req = visible_requests(request.user).filter(pk=approval_id).first()
    if req is None:
        if ApprovalRequest.objects.filter(pk=approval_id).exists():
            raise PermissionDenied("you are not in this request's approver group")
        raise Http404("no such approval request")
    if not can_view(request.user, req):
        raise PermissionDenied("you are not in this request's approver group")
    return req


def row_context(req: ApprovalRequest, user) -> dict[str, object]:
    """Template context of one queue row (``approvals/_row.html``)."""
    approvals = approvals_of(req)
    return {
        "req": req,
        "refusal": decide_refusal(user, req),
        "approvals": len(approvals),
        "approvers": [d.user.get_username() for d in approvals],
        "grant_durations": GRANT_DURATIONS,
    }


def pending_rows(user) -> list[dict[str, object]]:
    """Row contexts of the pending requests ``user`` may see, soonest deadline first."""
    pending = visible_requests(user).filter(status=ApprovalRequest.Status.PENDING)
    return [row_context(r, user) for r in pending.order_by("deadline")]


@role_required(APPROVER)
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    """Pending requests (live over the WebSocket) and the latest settled ones."""
    recent = visible_requests(request.user).exclude(status=ApprovalRequest.Status.PENDING)
    return render(
        request,
        "approvals/queue.html",
        {"rows": pending_rows(request.user), "recent": recent.order_by("-requested_at")[:20]},
    )


@role_required(APPROVER)
@require_GET
def detail(request: HttpRequest, approval_id: uuid.UUID) -> HttpResponse:
    """One request: masked request (for a SQL statement: the formatted masked SQL, its
    kinds, tables, functions and masked parameters; for an MCP call: the method, the tool
    and the masked arguments as indented JSON), rule and reason, agent and owner,
    decisions so far, earlier decisions on the same agent, and grants this approval left."""
    req = _get_request_for_user(request, approval_id)
    ctx = row_context(req, request.user)
    ctx["body"] = req.body if req.is_sql else pretty_json(req.body)
    if req.is_sql:
        facts = req.headers if isinstance(req.headers, dict) else {}
        ctx["sql_lines"] = statement_lines(
            (req.body or "").strip("\n"),
            str(facts.get("user") or (req.agent.name if req.agent else "")),
            str(facts.get("database") or (req.target.slug if req.target else "")),
        )
        ctx["sql_parameters"] = parameter_lines(req.parameters)
    ctx["decisions"] = req.decisions.all()
    ctx["agent_history"] = (
        Decision.objects.filter(visible_q(request.user, "approval_request__"))
        .filter(approval_request__agent_id=req.agent_id)
        .exclude(approval_request=req)
        .select_related("user", "approval_request")
        .order_by("-created_at")[:20]
        if req.agent_id
        else []
    )
    ctx["grants"] = req.grants.select_related("created_by", "revoked_by")
    return render(request, "approvals/detail.html", ctx)


@role_required(APPROVER)
@require_POST
def decide(request: HttpRequest, approval_id: uuid.UUID) -> HttpResponse:
    """Approve, deny or approve with a grant (:class:`~approvals.forms.DecideForm`; for a
    SQL statement the grant covers its kind and the table globs given, for an MCP call
    its JSON-RPC method and the tool-name glob given).

    400 for an invalid form, 403 when the user may not decide (not in the group, owns
    the agent, already decided, request settled or expired), 404 for an unknown id.
    Answers the updated row to htmx, else redirects to the detail page.
    """
    req = _get_request_for_user(request, approval_id)
    form = DecideForm(request.POST, req=req)
    if not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        return HttpResponse(f"invalid decision: {errors}", status=400, content_type="text/plain")
    refusal = decide_refusal(request.user, req)
    if refusal:
        raise PermissionDenied(refusal)
    data = form.cleaned_data
    do_decide(
        req,
        acting_user=request.user,
        verdict="deny" if data["verdict"] == "deny" else "approve",
        comment=data["comment"],
        grant_minutes=data["grant_minutes"],
        grant_path_pattern=data["grant_path_pattern"],
        grant_tables=data["grant_tables"],
    )
    if request.htmx:
        req = _get_request_for_user(request, approval_id)
        return render(request, "approvals/_row.html", row_context(req, request.user))
    return redirect("approvals:detail", approval_id=req.id)


@role_required(APPROVER)
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    """Every request the user may see, newest first, filtered by :class:`HistoryForm`."""
    form = HistoryForm(request.GET or None)
    qs = visible_requests(request.user).order_by("-requested_at")
    if form.is_bound and form.is_valid():
        qs = form.apply(qs)
    elif form.is_bound:
        qs = qs.none()
    page = Paginator(qs, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "approvals/history.html",
        {"form": form, "page": page, "query": params.urlencode()},
    )


@role_required(APPROVER)
@require_GET
def grants(request: HttpRequest) -> HttpResponse:
    """Active grants the user may see (revocable), then the latest expired or revoked."""
    visible = Grant.objects.filter(grant_visible_q(request.user)).select_related(
        "agent", "target", "created_by", "revoked_by", "approval_request"
    )
    active = visible.active().order_by("expires_at")
    ended = visible.exclude(pk__in=active.values("pk")).order_by("-created_at")[:50]
    return render(request, "approvals/grants.html", {"active": active, "ended": ended})


@role_required(APPROVER)
@require_POST
def revoke_grant(request: HttpRequest, grant_id: int) -> HttpResponse:
    """Revoke a grant at once (workers get a new snapshot); 404 when there is no such
    grant, 403 when it belongs to an approver group the user is not in."""
    grant = (
        Grant.objects.select_related(
            "target__approver_group",
            "approval_request__rule__approver_group",
            "approval_request__target__approver_group",
        )
        .filter(pk=grant_id)
        .first()
    )
    if grant is None:
        raise Http404("no such grant")
    if not can_view_grant(request.user, grant):
        raise PermissionDenied("you are not in this grant's approver group")
    do_revoke_grant(grant, acting_user=request.user)
    return redirect("approvals:grants")

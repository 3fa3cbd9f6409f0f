"""The approver's pages: the live queue, one request, and the decide action."""

from __future__ import annotations

import uuid

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from approvals.actions import do_decide
from approvals.models import ApprovalRequest, Decision
from approvals.permissions import can_view, decide_refusal
from controlplane.roles import APPROVER, role_required
from controlplane.text import pretty_json


def _get_request_for_user(request: HttpRequest, approval_id: uuid.UUID) -> ApprovalRequest:
    """The approval request if the user may see it; 404 otherwise (ids are not disclosed)."""
    try:
        req = ApprovalRequest.objects.select_related(
            "agent__owner", "target__approver_group", "rule__approver_group"
        ).get(pk=approval_id)
    except ApprovalRequest.DoesNotExist:
        raise Http404("no such approval request") from None
    if not can_view(request.user, req):
        raise Http404("no such approval request")
    return req


def row_context(req: ApprovalRequest, user) -> dict[str, object]:
    """Template context of one queue row (``approvals/_row.html``)."""
    return {"req": req, "refusal": decide_refusal(user, req)}


def _visible():
    return ApprovalRequest.objects.select_related(
        "agent__owner", "target__approver_group", "rule__approver_group"
    )


def pending_rows(user) -> list[dict[str, object]]:
    """Row contexts of the pending requests ``user`` may see, soonest deadline first."""
    pending = _visible().filter(status=ApprovalRequest.Status.PENDING).order_by("deadline")
    return [row_context(r, user) for r in pending if can_view(user, r)]


@role_required(APPROVER)
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    """Pending requests (live over the WebSocket) and the latest settled ones."""
    recent = [
        r
        for r in _visible().exclude(status=ApprovalRequest.Status.PENDING)[:20]
        if can_view(request.user, r)
    ]
    return render(
        request, "approvals/queue.html", {"rows": pending_rows(request.user), "recent": recent}
    )


@role_required(APPROVER)
@require_GET
def detail(request: HttpRequest, approval_id: uuid.UUID) -> HttpResponse:
    """One request: masked request, rule and reason, agent and owner, decisions."""
    req = _get_request_for_user(request, approval_id)
    ctx = row_context(req, request.user)
    ctx["body"] = pretty_json(req.body)
    ctx["decisions"] = req.decisions.select_related("user")
    return render(request, "approvals/detail.html", ctx)


@role_required(APPROVER)
@require_POST
def decide(request: HttpRequest, approval_id: uuid.UUID) -> HttpResponse:
    """Approve or deny (form field ``verdict``, optional ``comment``); 403 when not allowed."""
    req = _get_request_for_user(request, approval_id)
    verdict = request.POST.get("verdict", "")
    if verdict not in Decision.Verdict.values:
        return HttpResponse("verdict must be 'approve' or 'deny'", status=400)
    refusal = decide_refusal(request.user, req)
    if refusal:
        raise PermissionDenied(refusal)
    req = do_decide(
        req,
        acting_user=request.user,
        verdict=verdict,
        comment=request.POST.get("comment", "")[:2000],
    )
    if request.htmx:
        return render(request, "approvals/_row.html", row_context(req, request.user))
    return redirect("approvals:detail", approval_id=req.id)

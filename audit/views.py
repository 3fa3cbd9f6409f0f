"""The auditor's pages: sessions and the step-by-step replay of one session."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from approvals.models import ApprovalRequest
from audit.models import Exchange, Session
from controlplane.roles import AUDITOR, role_required
from controlplane.text import pretty_json


@role_required(AUDITOR)
@require_GET
def sessions(request: HttpRequest) -> HttpResponse:
    """Recorded sessions, newest activity first, 50 per page."""
    qs = Session.objects.select_related("agent", "target").order_by("-last_activity_at")
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    return render(request, "audit/sessions.html", {"page": page})


@role_required(AUDITOR)
@require_GET
def session_detail(request: HttpRequest, session_id: int) -> HttpResponse:
    """Replay one session: a timeline of its exchanges and each exchange in full.

    ``?step=N`` (1-based) selects the exchange shown; the keyboard moves between steps.
    """
    session = get_object_or_404(
        Session.objects.select_related("agent__owner", "target"), pk=session_id
    )
    exchanges = list(
        Exchange.objects.filter(session=session).select_related("rule").order_by("started_at")
    )
    try:
        step = min(max(int(request.GET.get("step", "1")), 1), max(len(exchanges), 1))
    except ValueError:
        step = 1
    current = exchanges[step - 1] if exchanges else None
    approval = None
    if current and current.approval_id:
        approval = (
            ApprovalRequest.objects.filter(pk=current.approval_id)
            .prefetch_related("decisions__user")
            .first()
        )
    t0 = exchanges[0].started_at if exchanges else None
    timeline = [
        {"n": i + 1, "x": x, "offset": (x.started_at - t0).total_seconds() if t0 else 0.0}
        for i, x in enumerate(exchanges)
    ]
    return render(
        request,
        "audit/session_detail.html",
        {
            "session": session,
            "timeline": timeline,
            "step": step,
            "current": current,
            "approval": approval,
            "request_body": pretty_json(current.request_body) if current else "",
            "response_body": pretty_json(current.response_body) if current else "",
            "prev_step": step - 1 if step > 1 else None,
            "next_step": step + 1 if step < len(exchanges) else None,
        },
    )

"""The auditor's pages: sessions, replay, search, evidence exports, chain verification.

Every view requires the ``auditor`` role. Recorded bytes are rendered autoescaped (or
through the ``masked`` filter, which escapes first); nothing recorded reaches a page
unescaped. Export and verification jobs are visible to the auditor who started them
only (404 for anyone else).
"""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Case, OuterRef, Subquery, TextField, Value, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Substr
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from approvals.models import ApprovalRequest
from audit import exports, jobs
from audit.chain import appending, describe_actor
from audit.forms import SearchForm
from audit.mcp import tool_call
from audit.models import AuditJob, ChainHead, ChainRecord, Exchange, Session
from audit.psql import transcript
from audit.search import fetch_page
from controlplane.roles import AUDITOR, role_required
from controlplane.text import pretty_json

SEARCH_PAGE_SIZE = 50
PLAY_SPEEDS = (1, 4, 16)
#: Characters of a statement's SQL shown in the replay timeline.
SQL_HEAD_CHARS = 80


def _get_job_for_user(request: HttpRequest, job_id: int) -> AuditJob:
    """The job if ``request.user`` started it, else 404 (jobs are private)."""
    job = AuditJob.objects.filter(pk=job_id, created_by=request.user).first()
    if job is None:
        raise Http404("no such job")
    return job


def decision_text(x: Exchange, approval: ApprovalRequest | None) -> str:
    """One line saying what Gatehouse decided on ``x``: ``denied by rule …``, ``held for
    approval … · approved by ann, bob``, ``error: …`` (plain text, escaped by the page)."""
    rule = f"rule “{x.rule.name}”" if x.rule else "the target's default"
    parts: list[str] = []
    if x.decision == "denied":
        parts.append(f"denied by {rule}" if x.rule_id or not x.error else f"denied: {x.error}")
    elif x.decision == "error":
        parts.append(f"error: {x.error}" if x.error else "error")
    elif x.decision == "allowed":
        parts.append("allowed")
    if x.approval_id:
        parts.append(f"held for approval {x.approval_id}")
    if x.decision in ("approved", "approval_denied", "expired"):
        verdict = {"approved": "approved", "approval_denied": "denied", "expired": "expired"}
        who = [
            d.user.get_username()
            for d in (approval.decisions.all() if approval else [])
            if (d.verdict == "approve") == (x.decision == "approved")
        ]
        text = verdict[x.decision]
        if who and x.decision != "expired":
            text += " by " + ", ".join(who)
        elif x.decision == "approved" and not x.approval_id:
            text += " by a grant"
        parts.append(text)
    return " · ".join(parts) or x.decision


@role_required(AUDITOR)
@require_GET
def sessions(request: HttpRequest) -> HttpResponse:
    """Recorded sessions, newest activity first, 50 per page, with the protocol of each
    (that of its first exchange: a session is one agent on one target)."""
    first = Exchange.objects.filter(session=OuterRef("pk")).order_by("started_at", "id")
    qs = (
        Session.objects.select_related("agent", "target")
        .annotate(protocol=Subquery(first.values("protocol")[:1]))
        .order_by("-last_activity_at")
    )
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    return render(request, "audit/sessions.html", {"page": page})


@role_required(AUDITOR)
@require_GET
def session_detail(request: HttpRequest, session_id: int) -> HttpResponse:
    """Replay one session: a timeline of its exchanges and each exchange in full.

    ``?step=N`` (1-based) or ``?exchange=<uuid>`` selects the exchange shown; ``?play=S``
    (1, 4 or 16) makes the player advance by itself at S times the recorded pace.
    A PostgreSQL statement is shown as a psql session shows it (:mod:`audit.psql`):
    prompt and SQL, bound parameters, the sampled rows as an aligned table, the command
    tag or the error. An MCP message is shown as a tool call (:mod:`audit.mcp`): method
    and tool, the masked arguments, the result's text blocks (other content summarised)
    or the error, with badges for approvals, drift, hidden tools and refused server
    requests; the JSON-RPC messages as recorded below it.
    """
    session = get_object_or_404(
        Session.objects.select_related("agent__owner", "target", "legal_hold_by"), pk=session_id
    )
    exchanges = list(
        Exchange.objects.filter(session=session)
        .select_related("rule")
        .defer("request_body", "response_body", "request_headers", "response_headers", "details")
        .annotate(
            sql_head=Case(
                When(protocol="postgres", then=Substr("request_body", 1, SQL_HEAD_CHARS)),
                default=Value(""),
            ),
            mcp_tool=Case(
                When(protocol="mcp", then=KeyTextTransform("tool", "details")),
                default=Value(""),
                output_field=TextField(),
            ),
            mcp_method=Case(
                When(protocol="mcp", then=KeyTextTransform("jsonrpc_method", "details")),
                default=Value(""),
                output_field=TextField(),
            ),
        )
        .order_by("started_at", "id")
    )
    step = 1
    wanted = request.GET.get("exchange")
    if wanted:
        step = next((i + 1 for i, x in enumerate(exchanges) if str(x.id) == wanted), 1)
    else:
        try:
            step = min(max(int(request.GET.get("step", "1")), 1), max(len(exchanges), 1))
        except ValueError:
            step = 1
    current = (
        Exchange.objects.select_related("rule").get(pk=exchanges[step - 1].pk)
        if exchanges
        else None
    )
    approval = None
    if current and current.approval_id:
        approval = (
            ApprovalRequest.objects.filter(pk=current.approval_id)
            .prefetch_related("decisions__user")
            .first()
        )
    record = ChainRecord.objects.filter(exchange_id=current.id).first() if current else None
    t0 = exchanges[0].started_at if exchanges else None
    timeline = [
        {"n": i + 1, "x": x, "offset": (x.started_at - t0).total_seconds() if t0 else 0.0}
        for i, x in enumerate(exchanges)
    ]
    try:
        play = int(request.GET.get("play", "0"))
    except ValueError:
        play = 0
    psql = None
    if current is not None and current.is_sql:
        facts = current.request_headers if isinstance(current.request_headers, dict) else {}
        psql = transcript(
            sql=current.request_body,
            details=current.details,
            agent=str(facts.get("user") or (session.agent.name if session.agent else "")),
            target=str(facts.get("database") or (session.target.slug if session.target else "")),
            status_code=current.status_code,
            error=current.error,
        )
    mcp = None
    if current is not None and current.is_mcp:
        mcp = tool_call(current.details, method=current.method, decision=current.decision)
    return render(
        request,
        "audit/session_detail.html",
        {
            "session": session,
            "timeline": timeline,
            "step": step,
            "current": current,
            "record": record,
            "approval": approval,
            "approval_wait": (
                (approval.decided_at - approval.requested_at).total_seconds()
                if approval and approval.decided_at
                else None
            ),
            "psql": psql,
            "mcp": mcp,
            "decision_text": decision_text(current, approval) if current else "",
            "request_body": pretty_json(current.request_body) if current and not psql else "",
            "response_body": pretty_json(current.response_body) if current and not psql else "",
            "prev_step": step - 1 if step > 1 else None,
            "next_step": step + 1 if step < len(exchanges) else None,
            "play": play if play in PLAY_SPEEDS else 0,
            "speeds": PLAY_SPEEDS,
            "formats": list(exports.FORMATS),
        },
    )


@role_required(AUDITOR)
@require_POST
def legal_hold(request: HttpRequest, session_id: int) -> HttpResponse:
    """Place (``on=1``) or lift (``on=0``) a legal hold on a session; recorded in the chain.

    A hold preserves evidence (retention skips the session); it changes no recorded byte.
    """
    on = request.POST.get("on") == "1"
    reason = request.POST.get("reason", "").strip()[:300]
    if on and not reason:
        messages.error(request, "A legal hold needs a reason.")
        return redirect("audit:session", session_id=session_id)
    with appending() as chain:  # head lock first, then the session row
        session = get_object_or_404(Session.objects.select_for_update(), pk=session_id)
        session.legal_hold_at = timezone.now() if on else None
        session.legal_hold_by = request.user if on else None
        session.legal_hold_reason = reason if on else ""
        session.save(update_fields=["legal_hold_at", "legal_hold_by", "legal_hold_reason"])
        chain.add(
            "hold",
            {
                "actor": describe_actor(request.user),
                "session_id": session.pk,
                "on": on,
                "reason": reason,
            },
        )
    messages.success(request, "Legal hold placed." if on else "Legal hold lifted.")
    return redirect("audit:session", session_id=session_id)


@role_required(AUDITOR)
@require_GET
def search(request: HttpRequest) -> HttpResponse:
    """Search exchanges: filters and full-text words, newest first, 50 per page.

    Pages are fetched with one extra row to know whether a next page exists (no
    ``COUNT`` over a large match, which would dominate the query's time).
    """
    form = SearchForm(request.GET or None)
    rows: list[Exchange] = []
    has_next = False
    try:
        page = max(int(request.GET.get("page", "1")), 1)
    except ValueError:
        page = 1
    if form.is_bound and form.is_valid():
        rows = fetch_page(form.queryset(), (page - 1) * SEARCH_PAGE_SIZE, SEARCH_PAGE_SIZE + 1)
        has_next = len(rows) > SEARCH_PAGE_SIZE
        rows = rows[:SEARCH_PAGE_SIZE]
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "audit/search.html",
        {
            "form": form,
            "rows": rows,
            "page": page,
            "has_next": has_next,
            "query": query.urlencode(),
            "formats": list(exports.FORMATS),
            "export_params": form.params() if form.is_bound and form.is_valid() else {},
        },
    )


@role_required(AUDITOR)
@require_POST
def export(request: HttpRequest) -> HttpResponse:
    """Start an evidence export of a session (``session``) or of a search (its filters)."""
    fmt = request.POST.get("format", "")
    if fmt not in exports.FORMATS:
        return HttpResponseBadRequest("unknown format")
    if request.POST.get("session"):
        session = get_object_or_404(Session, pk=_int_or_404(request.POST["session"]))
        params: dict = {"session": session.pk}
    else:
        form = SearchForm(request.POST)
        if not form.is_valid():
            return HttpResponseBadRequest("invalid search filters")
        params = {"search": form.params()}
    with transaction.atomic():
        job = jobs.start_export(request.user, fmt, params)
    return redirect("audit:job", job_id=job.pk)


def _int_or_404(value: str) -> int:
    try:
        return int(value)
    except ValueError as e:
        raise Http404("bad id") from e


@role_required(AUDITOR)
@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    """A job's progress; htmx requests get the fragment that polls itself until done."""
    job = _get_job_for_user(request, job_id)
    template = "audit/job_status.html" if request.htmx else "audit/job.html"
    return render(
        request, template, {"job": job, "ttl_hours": settings.GATEHOUSE_EXPORT_TTL_HOURS}
    )


@role_required(AUDITOR)
@require_GET
def job_download(request: HttpRequest, job_id: int) -> HttpResponse:
    """The finished export file of the requesting auditor's job, as an attachment
    (410 once the file expired, see :func:`audit.jobs.expire_exports`)."""
    job = _get_job_for_user(request, job_id)
    if job.kind == AuditJob.Kind.EXPORT and job.status == AuditJob.Status.EXPIRED:
        return HttpResponse(
            "This export expired and its file was deleted; start the export again.",
            status=410,
            content_type="text/plain; charset=utf-8",
        )
    if job.kind != AuditJob.Kind.EXPORT or job.status != AuditJob.Status.DONE:
        raise Http404("no file")
    base = jobs.export_dir().resolve()
    path = (base / job.file_name).resolve()
    if base not in path.parents or not path.is_file():
        raise Http404("file gone")
    content_type, ext = exports.FORMATS[job.fmt]
    return FileResponse(
        open(path, "rb"),  # noqa: SIM115 (FileResponse closes it)
        as_attachment=True,
        filename=f"gatehouse-{job.file_name}",
        content_type=content_type,
    )


@role_required(AUDITOR)
@require_http_methods(["GET", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    """The chain's state and the auditor's latest verification; POST verifies again."""
    if request.method == "POST":
        with transaction.atomic():
            job = jobs.start_verify(request.user)
        return redirect(reverse("audit:verify") + f"?job={job.pk}")
    job = None
    if request.GET.get("job"):
        job = _get_job_for_user(request, _int_or_404(request.GET["job"]))
    return render(
        request,
        "audit/verify.html",
        {
            "head": ChainHead.objects.filter(pk=1).first(),
            "anchor": ChainRecord.objects.filter(kind="anchor").order_by("-seq").first(),
            "job": job,
            "signing": bool(settings.GATEHOUSE_AUDIT_SIGNING_KEY),
        },
    )


@role_required(AUDITOR)
@require_GET
def chain_record(request: HttpRequest, seq: int) -> HttpResponse:
    """One chain record (where verification pointed), with its neighbours' links."""
    record = get_object_or_404(ChainRecord, seq=seq)
    exchange = None
    if record.exchange_id:
        exchange = Exchange.objects.filter(pk=record.exchange_id).only("id", "session_id").first()
    return render(
        request,
        "audit/chain_record.html",
        {
            "record": record,
            "exchange": exchange,
            "payload_json": json.dumps(record.payload, indent=2, ensure_ascii=False),
        },
    )

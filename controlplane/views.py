"""Landing page and health check."""

from __future__ import annotations

import contextlib

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from controlplane.redis import client
from controlplane.roles import ADMIN, AUDITOR, has_role


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Role-aware landing page: links to what the signed-in user may do; auditors and
    admins also get the audit dashboard (``?range=24h|7d|30d``)."""
    context = {}
    if has_role(request.user, ADMIN, AUDITOR):
        from audit.dashboard import dashboard_data

        context["dashboard"] = dashboard_data(request.GET.get("range"))
    return render(request, "controlplane/home.html", context)


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness and dependencies: ``{"database": bool, "redis": bool}``; 503 if one is down."""
    status = {"database": False, "redis": False}
    with contextlib.suppress(Exception):  # an outage is reported in the body
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
        status["database"] = True
    with contextlib.suppress(Exception):
        status["redis"] = bool(client().ping())
    return JsonResponse(status, status=200 if all(status.values()) else 503)

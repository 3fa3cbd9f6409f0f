"""Top-level URL map."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from controlplane import ca, metrics, preview, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("console/masking/preview/", preview.masking_preview, name="masking_preview"),
    path("console/", include("controlplane.console.urls")),
    path("approvals/", include("approvals.urls")),
    path("audit/", include("audit.urls")),
    path("ca/", ca.ca_page, name="ca"),
    path("ca/gatehouse-ca.pem", ca.ca_download, name="ca_download"),
]

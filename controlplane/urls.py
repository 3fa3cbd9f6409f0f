"""Top-level URL map."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from controlplane import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("approvals/", include("approvals.urls")),
    path("audit/", include("audit.urls")),
]

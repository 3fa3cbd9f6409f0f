"""URL map of the admin console (mounted at ``/console/``; every view needs the admin role)."""

from __future__ import annotations

from django.urls import path

from controlplane.console import views

app_name = "console"

urlpatterns = [
    path("", views.index, name="index"),
    path("policy/", views.policy_import, name="policy"),
    path("policy/export.yaml", views.policy_export, name="policy_export"),
    path("agents/<int:pk>/tokens/", views.issue_token, name="issue_token"),
    path("tokens/<int:pk>/revoke/", views.revoke_token, name="revoke_token"),
    path("access-rules/<int:pk>/move/<str:direction>/", views.move_rule, name="move_rule"),
    path("<slug:kind>/", views.object_list, name="list"),
    path("<slug:kind>/new/", views.create, name="create"),
    path("<slug:kind>/<int:pk>/", views.edit, name="edit"),
    path("<slug:kind>/<int:pk>/delete/", views.delete, name="delete"),
]

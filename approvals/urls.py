from __future__ import annotations

from django.urls import path

from approvals import views

app_name = "approvals"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("history/", views.history, name="history"),
    path("grants/", views.grants, name="grants"),
    path("grants/<int:grant_id>/revoke", views.revoke_grant, name="revoke_grant"),
    path("<uuid:approval_id>/", views.detail, name="detail"),
    path("<uuid:approval_id>/decide", views.decide, name="decide"),
]

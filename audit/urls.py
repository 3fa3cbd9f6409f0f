from __future__ import annotations

from django.urls import path

from audit import views

app_name = "audit"
urlpatterns = [
    path("sessions/", views.sessions, name="sessions"),
    path("sessions/<int:session_id>/", views.session_detail, name="session"),
    path("sessions/<int:session_id>/hold", views.legal_hold, name="legal_hold"),
    path("search/", views.search, name="search"),
    path("exports/", views.export, name="export"),
    path("jobs/<int:job_id>/", views.job_detail, name="job"),
    path("jobs/<int:job_id>/download", views.job_download, name="job_download"),
    path("chain/", views.verify, name="verify"),
    path("chain/<int:seq>/", views.chain_record, name="chain_record"),
]

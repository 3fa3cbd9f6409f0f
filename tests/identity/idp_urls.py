"""URLs of the test identity provider (see ``idp_settings``)."""

from django.urls import include, path

urlpatterns = [
    path("", include("allauth.idp.urls")),
    path("accounts/", include("allauth.urls")),
]

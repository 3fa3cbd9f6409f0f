"""Settings of a throw-away OpenID Connect identity provider for end-to-end tests.

It is allauth's own provider (``allauth.idp.oidc``) in a separate Django process with an
SQLite database, so Gatehouse signs people in against a real IdP, over real HTTP, with
real tokens. Configured by the test through the environment:

``IDP_DB``            SQLite file
``IDP_PRIVATE_KEY``   RSA private key (PEM) signing ID tokens and JWT access tokens
``IDP_AUDIENCE``      ``aud`` of client-credentials access tokens (the Gatehouse proxy)

Cookies have their own names: the IdP and Gatehouse both run on 127.0.0.1, and browsers
share cookies across ports of one host.
"""

from __future__ import annotations

import os

SECRET_KEY = "idp-test-only-" + "x" * 40
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "allauth",
    "allauth.account",
    "allauth.idp.oidc",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]
ROOT_URLCONF = "tests.identity.idp_urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("IDP_DB", ":memory:"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTHENTICATION_BACKENDS = ["allauth.account.auth_backends.AuthenticationBackend"]
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_RATE_LIMITS = False
LOGIN_URL = "/accounts/login/"
SESSION_COOKIE_NAME = "idp_sessionid"
CSRF_COOKIE_NAME = "idp_csrftoken"
USE_TZ = True
IDP_OIDC_PRIVATE_KEY = os.environ.get("IDP_PRIVATE_KEY", "")
IDP_OIDC_ACCESS_TOKEN_FORMAT = "jwt"
IDP_OIDC_ADAPTER = "tests.identity.idp_adapter.GroupsOIDCAdapter"
IDP_AUDIENCE = os.environ.get("IDP_AUDIENCE", "gatehouse-proxy")

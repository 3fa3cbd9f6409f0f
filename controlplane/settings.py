"""Gatehouse settings: one environment-driven module (see README.md for every variable).

Secrets may be given directly or through ``<NAME>_FILE`` (a path whose content is the
value), as with Docker secrets.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    """``$NAME``, or the content of the file named by ``$NAME_FILE``, or ``default``."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


def envbool(name: str, default: str = "False") -> bool:
    return env(name, default).strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: str) -> int:
    return int(env(name, default))


DEBUG = envbool("GATEHOUSE_DEBUG", "False")
#: Under pytest (which sets PYTEST_VERSION) defaults keep tests off the demo's Redis
#: database and key prefix, and fixed test-only keys stand in for the secrets.
TESTING = bool(os.environ.get("PYTEST_VERSION"))
SECRET_KEY = env("GATEHOUSE_SECRET_KEY")
if not SECRET_KEY:
    if DEBUG or TESTING:
        SECRET_KEY = "insecure-development-key-do-not-use-in-production"
    else:
        raise RuntimeError("GATEHOUSE_SECRET_KEY is not set (see README.md)")

SITE_URL = env("GATEHOUSE_SITE_URL", "http://127.0.0.1:8000").rstrip("/")
ALLOWED_HOSTS = [
    h.strip() for h in env("GATEHOUSE_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
]
CSRF_TRUSTED_ORIGINS = [SITE_URL]

INSTALLED_APPS = [
    "daphne",
    "controlplane.apps.GatehouseAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.mfa",
    "django_htmx",
    "channels",
    "controlplane.apps.ControlplaneConfig",
    "approvals",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "audit.middleware.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.csp",
                "controlplane.context_processors.roles",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": env("GATEHOUSE_DB_NAME", "gatehouse"),
        "USER": env("GATEHOUSE_DB_USER", "postgres"),
        "PASSWORD": env("GATEHOUSE_DB_PASSWORD"),
        "HOST": env("GATEHOUSE_DB_HOST", "127.0.0.1"),
        "PORT": env("GATEHOUSE_DB_PORT", "5432"),
        "CONN_MAX_AGE": 0,
        "TEST": {"NAME": env("GATEHOUSE_TEST_DB_NAME", "test_gatehouse")},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env(
    "GATEHOUSE_REDIS_URL", "redis://127.0.0.1:6379/14" if TESTING else "redis://127.0.0.1:6379/0"
)
REDIS_PREFIX = env("GATEHOUSE_REDIS_PREFIX", "ghtest" if TESTING else "gh")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # channels-redis 4.3 with redis-py 8: no socket timeout on the blocking reads
            # of consumers (PITFALLS.md, channels_redis issue #422).
            "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
            "prefix": f"{REDIS_PREFIX}:channels",
        },
    }
}

CELERY_BROKER_URL = env("GATEHOUSE_CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "expire-approval-requests": {
        "task": "approvals.tasks.expire_approval_requests",
        "schedule": timedelta(seconds=5),
    },
    "abandon-approval-requests": {
        # Wait-mode requests whose worker died (no heartbeat) become "abandoned".
        "task": "approvals.tasks.abandon_orphaned_requests",
        "schedule": timedelta(seconds=5),
    },
    "republish-policy": {
        # Belt and braces: workers also poll, and every change publishes on commit.
        "task": "controlplane.tasks.republish_policy",
        "schedule": timedelta(minutes=1),
    },
    "audit-anchor-chain": {
        "task": "audit.tasks.anchor_chain",
        "schedule": timedelta(seconds=envint("GATEHOUSE_AUDIT_ANCHOR_SECONDS", "300")),
    },
    "audit-purge-expired": {
        "task": "audit.tasks.purge_expired",
        "schedule": timedelta(seconds=envint("GATEHOUSE_RETENTION_SWEEP_SECONDS", "3600")),
    },
    "audit-expire-exports": {
        "task": "audit.tasks.expire_exports",
        "schedule": timedelta(minutes=15),
    },
    "token-last-used": {
        # Workers note token use in Redis; this folds it into AgentToken.last_used_at.
        "task": "controlplane.token_usage.flush_token_usage",
        "schedule": timedelta(seconds=60),
    },
}
CELERY_IMPORTS = ("controlplane.token_usage",)

# E-mail (approval notifications). Django's test runner swaps in the locmem backend.
EMAIL_BACKEND = env("GATEHOUSE_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("GATEHOUSE_EMAIL_HOST", "localhost")
EMAIL_PORT = envint("GATEHOUSE_EMAIL_PORT", "25")
EMAIL_HOST_USER = env("GATEHOUSE_EMAIL_USER")
EMAIL_HOST_PASSWORD = env("GATEHOUSE_EMAIL_PASSWORD")
EMAIL_USE_TLS = envbool("GATEHOUSE_EMAIL_STARTTLS", "False")
EMAIL_USE_SSL = envbool("GATEHOUSE_EMAIL_SSL", "False")
EMAIL_TIMEOUT = envint("GATEHOUSE_EMAIL_TIMEOUT", "10")
DEFAULT_FROM_EMAIL = env("GATEHOUSE_FROM_EMAIL", "gatehouse@localhost")

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_ADAPTER = "controlplane.auth.NoSignupAccountAdapter"
LOGIN_REDIRECT_URL = "/"
LOGIN_URL = "/accounts/login/"
ACCOUNT_LOGOUT_REDIRECT_URL = "/accounts/login/"

# People: generic OpenID Connect sign-in (allauth "openid_connect" provider, PKCE) and
# optional TOTP. Roles come from a group claim on every SSO sign-in (controlplane/oidc.py):
# GATEHOUSE_OIDC_ROLE_MAP is "idp-group=role,..." with role admin, approver or auditor.
GATEHOUSE_OIDC = {
    "server_url": env("GATEHOUSE_OIDC_SERVER_URL").rstrip("/"),
    "provider_id": env("GATEHOUSE_OIDC_PROVIDER_ID", "sso"),
    "name": env("GATEHOUSE_OIDC_NAME", "Single sign-on"),
    "client_id": env("GATEHOUSE_OIDC_CLIENT_ID"),
    "secret": env("GATEHOUSE_OIDC_CLIENT_SECRET"),
    "scopes": env("GATEHOUSE_OIDC_SCOPES", "openid profile email").split(),
    "roles_claim": env("GATEHOUSE_OIDC_ROLES_CLAIM", "groups"),
    "role_map": {},
    "auto_signup": envbool("GATEHOUSE_OIDC_AUTO_SIGNUP", "True"),
}
if env("GATEHOUSE_OIDC_ROLE_MAP"):
    from controlplane.oidc import parse_role_map  # noqa: E402

    GATEHOUSE_OIDC["role_map"] = parse_role_map(env("GATEHOUSE_OIDC_ROLE_MAP"))
SOCIALACCOUNT_ADAPTER = "controlplane.adapters.GatehouseSocialAccountAdapter"
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False  # never sign in to a local account by e-mail
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_ONLY = False
SOCIALACCOUNT_PROVIDERS = {
    "openid_connect": {
        "OAUTH_PKCE_ENABLED": True,
        "SCOPE": GATEHOUSE_OIDC["scopes"],
        "APPS": [
            {
                "provider_id": GATEHOUSE_OIDC["provider_id"],
                "name": GATEHOUSE_OIDC["name"],
                "client_id": GATEHOUSE_OIDC["client_id"],
                "secret": GATEHOUSE_OIDC["secret"],
                "settings": {"server_url": GATEHOUSE_OIDC["server_url"]},
            }
        ]
        if GATEHOUSE_OIDC["server_url"]
        else [],
    }
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = env("GATEHOUSE_MFA_ISSUER", "Gatehouse")

# Agents: OpenID Connect JWT access tokens (client-credentials grant), validated by the
# proxy workers against the issuer's JWKS; compiled into the policy snapshot.
GATEHOUSE_AGENT_OIDC = {
    "issuer": env("GATEHOUSE_AGENT_OIDC_ISSUER"),
    "audience": env("GATEHOUSE_AGENT_OIDC_AUDIENCE"),
    "jwks_url": env("GATEHOUSE_AGENT_OIDC_JWKS_URL"),
    "algorithms": env("GATEHOUSE_AGENT_OIDC_ALGORITHMS", "RS256,ES256,PS256").split(","),
    "subject_claim": env("GATEHOUSE_AGENT_OIDC_SUBJECT_CLAIM", "sub"),
    "groups_claim": env("GATEHOUSE_AGENT_OIDC_GROUPS_CLAIM"),
    "leeway": envint("GATEHOUSE_AGENT_OIDC_LEEWAY", "30"),
}
# The forward-proxy listener as agents reach it (shown on the CA page), and where a
# worker on this host keeps its CA (fallback when Redis has no published certificate).
GATEHOUSE_FORWARD_PROXY_URL = env("GATEHOUSE_FORWARD_PROXY_URL", "http://127.0.0.1:8081")
GATEHOUSE_CA_DIR = env("GATEHOUSE_CA_DIR", str(BASE_DIR / "var" / "ca"))

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# collectstatic target (Docker image); without it WhiteNoise serves from the finders.
STATIC_ROOT = Path(env("GATEHOUSE_STATIC_ROOT")) if env("GATEHOUSE_STATIC_ROOT") else None
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Security headers. Recorded payloads are untrusted: no inline script anywhere.
from django.utils.csp import CSP  # noqa: E402

SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
    "base-uri": [CSP.NONE],
    "object-src": [CSP.NONE],
}
if GATEHOUSE_OIDC["server_url"]:
    # The SSO button posts a form that redirects to the identity provider; browsers apply
    # form-action to that redirect, so the provider's origin must be allowed.
    from urllib.parse import urlsplit as _urlsplit  # noqa: E402

    _idp = _urlsplit(GATEHOUSE_OIDC["server_url"])
    SECURE_CSP["form-action"] = [CSP.SELF, f"{_idp.scheme}://{_idp.netloc}"]
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = envbool("GATEHOUSE_SECURE_COOKIES", "False")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = envint("GATEHOUSE_HSTS_SECONDS", "0")
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("GATEHOUSE_HSTS_INCLUDE_SUBDOMAINS", "False")
SECURE_HSTS_PRELOAD = envbool("GATEHOUSE_HSTS_PRELOAD", "False")
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SECURE_SSL_REDIRECT = envbool("GATEHOUSE_SSL_REDIRECT", "False")
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]  # probes and scrapers on plain HTTP
# Behind a TLS-terminating load balancer that sets X-Forwarded-Proto (HSTS needs it).
if envbool("GATEHOUSE_TRUST_X_FORWARDED_PROTO", "False"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True  # htmx sends the token from the page (hx-headers), not a cookie
# /metrics: Prometheus scrapers send "Authorization: Bearer <token>" (controlplane/metrics.py).
GATEHOUSE_METRICS_TOKEN = env("GATEHOUSE_METRICS_TOKEN")

# Gatehouse keys. FIELD_KEYS: comma-separated Fernet keys, newest first (MultiFernet:
# encrypt with the first, decrypt with any: prepend a key, run `manage.py
# rotate_credentials`, then drop the old key).
_TEST_FIELD_KEY = "dGVzdC1vbmx5LWZpZWxkLWtleS0wMDAwMDAwMDAwMDA="  # test-only, never deployed
_TEST_WORKER_KEY = "dGVzdC1vbmx5LXdvcmtlci1rZXktMDAwMDAwMDAwMDA="
GATEHOUSE_FIELD_KEYS = [
    k.strip()
    for k in env("GATEHOUSE_FIELD_KEYS", _TEST_FIELD_KEY if TESTING else "").split(",")
    if k.strip()
]
GATEHOUSE_WORKER_KEY = env("GATEHOUSE_WORKER_KEY", _TEST_WORKER_KEY if TESTING else "")
GATEHOUSE_APPROVAL_TIMEOUT = envint("GATEHOUSE_APPROVAL_TIMEOUT", "120")
GATEHOUSE_SESSION_IDLE_SECONDS = envint("GATEHOUSE_SESSION_IDLE_SECONDS", "300")
# Audit chain anchors: Ed25519 private key (base64 of the 32-byte seed); without it no
# anchor is signed. VERIFY_KEY (base64 of the 32-byte public key) lets a verifier check
# anchors without the private key.
_TEST_AUDIT_SIGNING_KEY = "dGVzdC1vbmx5LWF1ZGl0LXNpZ25pbmcta2V5LTAwMDA="  # test-only
GATEHOUSE_AUDIT_SIGNING_KEY = env(
    "GATEHOUSE_AUDIT_SIGNING_KEY", _TEST_AUDIT_SIGNING_KEY if TESTING else ""
)
GATEHOUSE_AUDIT_VERIFY_KEY = env("GATEHOUSE_AUDIT_VERIFY_KEY")
# Evidence exports are written here; exports of more exchanges than SYNC_LIMIT run as
# Celery jobs, smaller ones at once. Retention purges delete RETENTION_BATCH exchanges
# per transaction.
GATEHOUSE_EXPORT_DIR = Path(env("GATEHOUSE_EXPORT_DIR", str(BASE_DIR / "var" / "exports")))
GATEHOUSE_EXPORT_SYNC_LIMIT = envint("GATEHOUSE_EXPORT_SYNC_LIMIT", "2000")
# Export files hold masked evidence in bulk: they are deleted this long after they were
# written (the job stays, marked "expired"); 0 keeps them.
GATEHOUSE_EXPORT_TTL_HOURS = envint("GATEHOUSE_EXPORT_TTL_HOURS", "24")
GATEHOUSE_RETENTION_BATCH = envint("GATEHOUSE_RETENTION_BATCH", "1000")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("GATEHOUSE_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

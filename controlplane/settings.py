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
    "republish-policy": {
        # Belt and braces: workers also poll, and every change publishes on commit.
        "task": "controlplane.tasks.republish_policy",
        "schedule": timedelta(minutes=1),
    },
}

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
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = envbool("GATEHOUSE_SECURE_COOKIES", "False")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = envint("GATEHOUSE_HSTS_SECONDS", "0")

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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("GATEHOUSE_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

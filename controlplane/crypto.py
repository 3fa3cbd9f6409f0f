"""Encryption of secrets at rest and in the policy snapshot (``cryptography`` Fernet).

* Target credentials in the database: :func:`encrypt_field` / :func:`decrypt_field` with
  ``GATEHOUSE_FIELD_KEYS`` through :class:`~cryptography.fernet.MultiFernet` (encrypt with
  the first key, decrypt with any: rotate by prepending a new key and running
  ``manage.py rotate_credentials``, then dropping the old key).
* Credentials in the snapshot: :func:`encrypt_for_worker` with ``GATEHOUSE_WORKER_KEY``,
  the one key proxy workers hold. The database key never leaves the control plane.

Fernet is AES-128-CBC with HMAC-SHA256 (https://github.com/fernet/spec).
"""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def _field_fernet() -> MultiFernet:
    keys = settings.GATEHOUSE_FIELD_KEYS
    if not keys:
        raise ImproperlyConfigured("GATEHOUSE_FIELD_KEYS is not set (see README.md)")
    return MultiFernet([Fernet(k) for k in keys])


@cache
def _worker_fernet() -> Fernet:
    if not settings.GATEHOUSE_WORKER_KEY:
        raise ImproperlyConfigured("GATEHOUSE_WORKER_KEY is not set (see README.md)")
    return Fernet(settings.GATEHOUSE_WORKER_KEY)


def encrypt_field(plaintext: str) -> str:
    """Encrypt a secret for storage; returns a Fernet token (URL-safe base64 text)."""
    return _field_fernet().encrypt(plaintext.encode()).decode()


def decrypt_field(token: str) -> str:
    """Decrypt a stored secret; raises :class:`cryptography.fernet.InvalidToken`."""
    return _field_fernet().decrypt(token.encode()).decode()


def rotate_field(token: str) -> str:
    """Re-encrypt a stored secret with the newest field key (``rotate_credentials``).

    Raises :class:`cryptography.fernet.InvalidToken` when no configured key decrypts it.
    """
    return _field_fernet().rotate(token.encode()).decode()


def encrypt_for_worker(plaintext: str) -> str:
    """Encrypt a secret for the policy snapshot, readable only with the worker key."""
    return _worker_fernet().encrypt(plaintext.encode()).decode()


__all__ = ["InvalidToken", "decrypt_field", "encrypt_field", "encrypt_for_worker", "rotate_field"]

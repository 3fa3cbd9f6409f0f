"""A fast password hasher for the test suite only.

Django's default PBKDF2 (1,200,000 iterations in Django 6) costs about half a second a
hash on the CI machine, and fixtures create and log in several users per test. This
subclass keeps the algorithm and the encoded format (``pbkdf2_sha256$<iterations>$…``)
and only lowers the work factor, so hashes it makes still verify with the stock
``PBKDF2PasswordHasher`` (which reads the iteration count from the hash) in the
processes the end-to-end tests start. Django's own advice for tests: "Speeding up the
tests" in the testing documentation. Never used outside ``tests/``.
"""

from __future__ import annotations

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """PBKDF2-SHA256 with 1,000 iterations (tests only)."""

    iterations = 1_000

"""The whole stack (tests/e2e/conftest.py), started once for the security package."""

from __future__ import annotations

from tests.e2e.conftest import agent_http, browser, sign_in, stack  # noqa: F401 - fixtures

"""Datasette plugin: only the Gatehouse gateway may read the demo database.

Loaded with ``datasette ... --plugins-dir demo/datasette_plugins``.  A request
carrying ``Authorization: Bearer <token>`` where ``<token>`` equals the
environment variable ``DEMO_DATASETTE_TOKEN`` is given the actor
``{"id": "gatehouse"}``; every other request stays anonymous.  Together with
``demo/datasette_metadata.json`` (top-level ``"allow": {"id": "gatehouse"}``)
this makes datasette answer 403 to anything that did not come through the
gateway, which injects the token: the agent itself never holds it.

The token is read from the environment on every request, and an unset or
empty ``DEMO_DATASETTE_TOKEN`` authenticates nobody.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from datasette import hookimpl

#: Environment variable holding the shared secret the gateway injects.
TOKEN_ENV = "DEMO_DATASETTE_TOKEN"
#: The actor given to requests that carry the right token.
GATEHOUSE_ACTOR: dict[str, str] = {"id": "gatehouse"}


def _bearer_token(authorization: str) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` value, or None."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def actor_for_authorization(
    authorization: str | None, expected: str | None
) -> dict[str, str] | None:
    """Pure decision used by the hook: the actor for this header value, or None."""
    if not authorization or not expected:
        return None
    token = _bearer_token(authorization)
    if token is None:
        return None
    # Compare bytes: compare_digest refuses non-ASCII str.
    if hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8")):
        return dict(GATEHOUSE_ACTOR)
    return None


@hookimpl
def actor_from_request(datasette: Any, request: Any) -> dict[str, str] | None:
    """Datasette hook: authenticate the gateway by its injected bearer token."""
    return actor_for_authorization(request.headers.get("authorization"), os.environ.get(TOKEN_ENV))

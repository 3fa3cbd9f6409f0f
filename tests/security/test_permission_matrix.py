"""The permission matrix in docs/security.md, asserted against every URL and socket route.

The test reads the two tables of ``docs/security.md`` (HTTP and WebSocket), walks the
whole Django URL resolver (recursively, so routes added by any app are included) and the
Channels routes under ``controlplane.asgi.application``, and requests each route as every
role. It fails when

* a route exists that the matrix does not list (a new view must be classified),
* the matrix lists a route that no longer exists,
* an answer differs from the matrix: anonymous users must be sent to sign-in, users
  without the role must get 403, holders of the role must not get 403.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
ROLES = ("admin", "approver", "auditor", "no role", "anonymous")
USERS = {"admin": "admin", "approver": "approver", "auditor": "auditor", "no role": "outsider"}
CELLS = {"allow", "403", "login", "401", "public", "model"}


@dataclass(frozen=True)
class Row:
    route: str
    methods: tuple[str, ...]
    expect: dict[str, str]  # role -> cell

    def matches(self, route: str) -> bool:
        if self.route.endswith("*"):
            return route.startswith(self.route[:-1])
        return route == self.route


def _table(name: str) -> list[list[str]]:
    text = DOC.read_text()
    m = re.search(rf"<!-- matrix:{name}:start -->(.*?)<!-- matrix:{name}:end -->", text, re.S)
    assert m, f"docs/security.md has no {name} matrix"
    rows = []
    for line in m.group(1).strip().splitlines()[2:]:  # skip header and separator
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        cells[0] = cells[0].strip("`")
        rows.append(cells)
    return rows


def http_matrix() -> list[Row]:
    out = []
    for cells in _table("http"):
        route, methods, *expect = cells[:7]
        row = Row(
            route=route,
            methods=tuple(m.strip() for m in methods.split(",")),
            expect=dict(zip(ROLES, expect, strict=True)),
        )
        assert set(row.expect.values()) <= CELLS, row
        out.append(row)
    return out


def ws_matrix() -> list[Row]:
    out = []
    for cells in _table("ws"):
        route, *expect = cells[:6]
        out.append(Row(route=route, methods=(), expect=dict(zip(ROLES, expect, strict=True))))
    return out


def row_for(rows: list[Row], route: str) -> Row | None:
    """The exact row for ``route``, else the longest wildcard row that covers it."""
    exact = [r for r in rows if r.route == route]
    if exact:
        return exact[0]
    wild = sorted(
        (r for r in rows if r.route.endswith("*") and r.matches(route)),
        key=lambda r: len(r.route),
        reverse=True,
    )
    return wild[0] if wild else None


# -- walking the URL resolver ------------------------------------------------------------

SAMPLES = {
    "int": "999999",
    "uuid": str(uuid.UUID(int=0xFEED)),
    "slug": "nothing-here",
    "str": "nothing-here",
    "path": "nothing/here",
}


def all_routes() -> list[tuple[str, str]]:
    """``[(route string, sample URL)]`` for every URL pattern, nested resolvers included."""

    def walk(res: URLResolver, route: str, url: str):
        for p in res.url_patterns:
            piece = str(p.pattern)
            sample = _sample(p, piece)
            if isinstance(p, URLResolver):
                yield from walk(p, route + piece, url + sample)
            else:
                assert isinstance(p, URLPattern)
                yield route + piece, "/" + url + sample

    return list(walk(get_resolver(), "", ""))


def _sample(p, piece: str) -> str:
    """A concrete path piece for a pattern: converters get sample values; regexes (Django
    admin's ``re_path``) get the first alternative of each group, or ``x``."""
    if not piece.startswith("^") and not piece.endswith("$"):
        return re.sub(r"<(?:(\w+):)?\w+>", lambda m: SAMPLES.get(m.group(1) or "str", "x"), piece)
    body = piece.lstrip("^").rstrip("$")
    body = re.sub(
        r"\(\?P<\w+>([^()]*)\)",
        lambda m: m.group(1).split("|")[0] if "|" in m.group(1) else "x",
        body,
    )
    return body.replace("\\", "")


def _is_login_redirect(resp) -> bool:
    if resp.status_code not in (301, 302):
        return False
    path = urlsplit(resp["Location"]).path
    return path in (settings.LOGIN_URL, reverse("admin:login"))


@pytest.fixture
def clients(users):
    """``{role: () -> Client}``: a fresh client per request, so that a sign-out route
    visited on the way does not change what the next request sees."""
    from django.test import Client

    users["admin"].is_staff = True  # Django admin also needs staff status
    users["admin"].save()

    def make(username: str | None):
        def client() -> Client:
            c = Client(raise_request_exception=False)
            if username:
                c.force_login(users[username])
            return c

        return client

    return {"anonymous": make(None), **{role: make(name) for role, name in USERS.items()}}


def test_every_url_is_in_the_matrix_and_every_row_is_a_url():
    rows = http_matrix()
    routes = all_routes()
    missing = sorted({r for r, _ in routes if row_for(rows, r) is None})
    assert not missing, f"routes missing from docs/security.md's matrix: {missing}"
    stale = [row.route for row in rows if not any(row.matches(r) for r, _ in routes)]
    assert not stale, f"matrix rows without a route: {stale}"


def test_every_sample_url_resolves_to_its_route():
    for route, url in all_routes():
        try:
            resolve(urlsplit(url).path)
        except Exception as e:  # pragma: no cover - reported below
            pytest.fail(f"cannot build a URL for route {route!r} (tried {url!r}): {e}")


@pytest.mark.django_db
def test_every_route_answers_every_role_as_the_matrix_says(clients, redis_client):
    rows = http_matrix()
    failures = []
    for route, url in all_routes():
        row = row_for(rows, route)
        assert row is not None, route
        for method in row.methods:
            for role in ROLES:
                expected = row.expect[role]
                c = clients[role]()
                resp = c.get(url) if method == "GET" else c.post(url, {})
                got = resp.status_code
                ok = {
                    "allow": got != 403 and not _is_login_redirect(resp) and got < 500,
                    "403": got == 403,
                    "login": _is_login_redirect(resp),
                    "401": got == 401,
                    "public": got != 403 and got < 500,
                    "model": not _is_login_redirect(resp) and got < 500,
                }[expected]
                if not ok:
                    where = resp.get("Location", "")
                    failures.append(f"{method} {url} as {role}: {got} {where} (matrix: {expected})")
    assert not failures, "\n".join(failures)


# -- Channels routes ----------------------------------------------------------------------


def ws_routes() -> list[tuple[str, object]]:
    """``[(route string, application)]`` of every WebSocket route, through the middleware."""
    from channels.routing import URLRouter

    from controlplane.asgi import application

    app = application.application_mapping["websocket"]
    while not isinstance(app, URLRouter):
        app = getattr(app, "application", None) or app.inner

    def walk(router: URLRouter, prefix: str):
        for r in router.routes:
            piece = str(r.pattern)
            if isinstance(r.callback, URLRouter):
                yield from walk(r.callback, prefix + piece)
            else:
                yield prefix + piece, router

    return list(walk(app, ""))


def test_every_socket_route_is_in_the_matrix():
    rows = ws_matrix()
    routes = [r for r, _ in ws_routes()]
    assert routes, "no WebSocket routes found under controlplane.asgi.application"
    missing = [r for r in routes if row_for(rows, r) is None]
    assert not missing, f"socket routes missing from docs/security.md's matrix: {missing}"
    stale = [row.route for row in rows if row.route not in routes]
    assert not stale, f"socket matrix rows without a route: {stale}"


@pytest.mark.django_db(transaction=True)
async def test_every_socket_route_admits_only_the_roles_in_the_matrix(users, redis_client):
    from channels.testing import WebsocketCommunicator
    from django.contrib.auth.models import AnonymousUser

    rows = ws_matrix()
    failures = []
    for route, router in ws_routes():
        row = row_for(rows, route)
        url = "/" + re.sub(r"<(?:(\w+):)?\w+>", lambda m: SAMPLES.get(m.group(1) or "str"), route)
        for role in ROLES:
            user = AnonymousUser() if role == "anonymous" else users[USERS[role]]
            comm = WebsocketCommunicator(router, url)
            comm.scope["user"] = user
            connected, code = await comm.connect(timeout=5)
            await comm.disconnect()
            expected = row.expect[role]
            if (expected == "allow") != connected:
                failures.append(
                    f"{url} as {role}: connected={connected} code={code} (matrix: {expected})"
                )
            if expected == "403" and code != 4403:
                failures.append(f"{url} as {role}: closed with {code}, expected 4403")
    assert not failures, "\n".join(failures)

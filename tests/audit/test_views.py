"""The auditor's session list and replay page."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import Exchange, Session

pytestmark = pytest.mark.django_db

XSS = '<script>alert(1)</script><img src=x onerror="alert(2)">'


@pytest.fixture
def session(policy):
    now = timezone.now()
    s = Session.objects.create(
        agent=policy.agent,
        target=policy.target,
        started_at=now,
        last_activity_at=now,
        exchange_count=2,
    )
    for i, body in enumerate(['{"email": "[EMAIL]"}', XSS]):
        Exchange.objects.create(
            id=uuid.uuid4(),
            session=s,
            agent=policy.agent,
            target=policy.target,
            rule=policy.deny_rule if i else None,
            worker_id="w",
            started_at=now,
            method="GET",
            url=f"http://u/x{i}?q={XSS}",
            status_code=200 if not i else 403,
            response_body=body,
            decision="allowed" if not i else "denied",
            response_headers={"x-evil": XSS},
            response_findings=[{"type": "EMAIL", "location": "$.email", "count": 1}],
        )
    return s


def test_it_lists_sessions_for_auditors(client, users, session):
    client.force_login(users["auditor"])
    r = client.get(reverse("audit:sessions"))
    assert r.status_code == 200
    assert reverse("audit:session", args=[session.id]) in r.content.decode()


@pytest.mark.parametrize("who", ["approver", "outsider", "admin"])
def test_it_refuses_other_roles(client, users, session, who):
    client.force_login(users[who])
    assert client.get(reverse("audit:sessions")).status_code == 403
    assert client.get(reverse("audit:session", args=[session.id])).status_code == 403


def test_it_sends_anonymous_users_to_sign_in(client, session):
    r = client.get(reverse("audit:session", args=[session.id]))
    assert r.status_code == 302 and "/accounts/login/" in r["Location"]


def test_it_replays_step_by_step(client, users, session):
    client.force_login(users["auditor"])
    first = client.get(reverse("audit:session", args=[session.id])).content.decode()
    assert "Exchange 1 of 2" in first and "[EMAIL]" in first and 'id="next-step"' in first
    second = client.get(reverse("audit:session", args=[session.id]) + "?step=2").content.decode()
    assert "Exchange 2 of 2" in second and "no schema" in second and 'id="prev-step"' in second


def test_it_renders_recorded_bytes_inert(client, users, session):
    client.force_login(users["auditor"])
    html = client.get(reverse("audit:session", args=[session.id]) + "?step=2").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert 'onerror="alert(2)"' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_it_sets_security_headers(client, users, session):
    client.force_login(users["auditor"])
    r = client.get(reverse("audit:sessions"))
    assert "script-src 'self'" in r["Content-Security-Policy"]
    assert r["X-Frame-Options"] == "DENY"
    assert r["X-Content-Type-Options"] == "nosniff"


def test_it_405s_posts(client, users, session):
    client.force_login(users["auditor"])
    assert client.post(reverse("audit:sessions")).status_code == 405

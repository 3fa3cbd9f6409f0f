"""The auditor's session list and replay page."""

from __future__ import annotations

import uuid
from datetime import timedelta

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
    for i, body in enumerate(['{"email": "[EMAIL]", "phone": "[PHONE:3f9a1c2b]"}', XSS]):
        Exchange.objects.create(
            id=uuid.uuid4(),
            session=s,
            agent=policy.agent,
            target=policy.target,
            rule=policy.deny_rule if i else None,
            worker_id="w",
            started_at=now + timedelta(seconds=i * 2.5),
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


def test_it_highlights_masked_placeholders_with_their_type(client, users, session):
    client.force_login(users["auditor"])
    html = client.get(reverse("audit:session", args=[session.id])).content.decode()
    assert '<mark class="masked" data-type="EMAIL" title="masked EMAIL">[EMAIL]</mark>' in html
    assert 'data-type="PHONE"' in html and "[PHONE:3f9a1c2b]</mark>" in html
    assert "keyed hash" in html


def test_the_masked_filter_escapes_before_it_marks():
    from audit.templatetags.audit_tags import masked

    out = masked('<b onclick="x">[EMAIL]</b>[<script>]')
    assert out == (
        "&lt;b onclick=&quot;x&quot;&gt;"
        '<mark class="masked" data-type="EMAIL" title="masked EMAIL">[EMAIL]</mark>'
        "&lt;/b&gt;[&lt;script&gt;]"
    )


def test_the_player_has_a_timeline_with_relative_times_and_speeds(client, users, session):
    client.force_login(users["auditor"])
    url = reverse("audit:session", args=[session.id])
    html = client.get(url + "?play=4").content.decode()
    assert 'data-play="4"' in html and 'data-offset="2.500"' in html and "+2.50 s" in html
    for speed in (1, 4, 16):
        assert f"play={speed}" in html
    assert 'id="pause"' in html and "/static/audit/replay.js" in html
    assert 'data-play="0"' in client.get(url + "?play=3").content.decode()


def test_it_selects_an_exchange_by_id(client, users, session):
    client.force_login(users["auditor"])
    second = session.exchanges.order_by("started_at").last()
    html = client.get(
        reverse("audit:session", args=[session.id]) + f"?exchange={second.id}"
    ).content.decode()
    assert "Exchange 2 of 2" in html and "no schema" in html


def test_the_replay_shows_the_approval_with_its_approvers(client, users, session, policy):
    from django.utils import timezone

    from approvals.models import ApprovalRequest, Decision

    now = timezone.now()
    req = ApprovalRequest.objects.create(
        id=uuid.uuid4(),
        worker_id="w",
        method="GET",
        url="x",
        requested_at=now - timedelta(seconds=7),
        decided_at=now,
        deadline=now,
        status="approved",
    )
    Decision.objects.create(approval_request=req, user=users["approver"], verdict="approve")
    x = session.exchanges.order_by("started_at").first()
    Exchange.objects.filter(pk=x.pk).update(
        approval_id=req.id, decision="approved", timings={"total": 7012.5, "approval_wait": 7000}
    )
    client.force_login(users["auditor"])
    html = client.get(reverse("audit:session", args=[session.id])).content.decode()
    assert "after 7.0 s" in html and "approve by <strong>approver</strong>" in html
    assert "approval_wait 7000.0 ms" in html

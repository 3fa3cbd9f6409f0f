"""The landing-page dashboard: charts data for auditors and admins, over a chosen range."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import ApprovalRequest
from audit.dashboard import dashboard_data
from tests.audit.conftest import make_exchange

pytestmark = pytest.mark.django_db


@pytest.fixture
def traffic(policy, ingest):
    now = time.time()
    ingest(
        make_exchange(policy, at=now - 60),
        make_exchange(policy, at=now - 50),
        make_exchange(policy, at=now - 40, decision="denied", response_findings=[]),
        make_exchange(policy, at=now - 3 * 86400),
    )
    t = timezone.now()
    for wait in (2, 20, 400):
        ApprovalRequest.objects.create(
            id=uuid.uuid4(),
            worker_id="w",
            method="GET",
            url="x",
            requested_at=t - timedelta(seconds=wait + 10),
            decided_at=t - timedelta(seconds=10),
            deadline=t,
            status="approved",
        )


def test_it_aggregates_the_range(traffic, policy):
    d = dashboard_data("24h")
    assert d["total"] == 3
    assert sum(d["over_time"]["series"]["allowed"]) == 2
    assert sum(d["over_time"]["series"]["denied"]) == 1
    assert len(d["over_time"]["labels"]) in (24, 25)
    assert dict(zip(d["entity_types"]["labels"], d["entity_types"]["values"], strict=True)) == {
        "EMAIL": 2,
        "PHONE": 2,
    }
    assert d["approval_wait"]["values"] == [1, 1, 0, 0, 1]
    assert d["approval_wait"]["median_s"] == 20.0
    assert d["top_agents"] == {"labels": ["agent-1"], "values": [3]}
    assert d["top_targets"] == {"labels": ["customers"], "values": [3]}
    week = dashboard_data("7d")
    assert week["total"] == 4 and week["over_time"]["bucket"] == "day"
    assert dashboard_data("bogus")["range"] == "24h"


@pytest.mark.parametrize("who", ["auditor", "admin"])
def test_auditors_and_admins_see_charts(client, users, traffic, who):
    client.force_login(users[who])
    r = client.get("/", {"range": "7d"})
    html = r.content.decode()
    assert r.status_code == 200
    assert '<script id="dashboard-data" type="application/json">' in html
    assert "/static/vendor/chart.umd.min.js" in html and "/static/audit/dashboard.js" in html
    data = html.split('<script id="dashboard-data" type="application/json">')[1].split("</script>")[
        0
    ]
    assert json.loads(data)["total"] == 4
    assert "<script>" not in html  # nothing inline: the CSP forbids it


def test_approvers_get_no_dashboard(client, users, traffic):
    client.force_login(users["approver"])
    html = client.get("/").content.decode()
    assert "dashboard-data" not in html

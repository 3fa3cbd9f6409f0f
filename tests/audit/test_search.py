"""The search page: filters, full-text search over URLs and masked bodies, pagination."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from approvals.models import ApprovalRequest, Decision
from audit.forms import SearchForm
from controlplane.models import Agent, Target
from tests.audit.conftest import make_exchange

pytestmark = pytest.mark.django_db


@pytest.fixture
def corpus(policy, ingest, users):
    """Six exchanges with distinct URLs, bodies, decisions, findings and times."""
    other_agent = Agent.objects.create(name="agent-2")
    other_target = Target.objects.create(name="LLM", slug="llm", upstream_url="http://127.0.0.1:9")
    now = time.time()
    approval = ApprovalRequest.objects.create(
        id="6f1c2b7e-0000-4000-8000-0000000000aa",
        worker_id="w",
        method="GET",
        url="x",
        requested_at=datetime.now(UTC),
        deadline=datetime.now(UTC),
        status="approved",
    )
    Decision.objects.create(approval_request=approval, user=users["approver2"], verdict="approve")
    msgs = {
        "orders": make_exchange(policy, at=now - 50, url="http://u/customers/orders.json?_size=5"),
        "invoice": make_exchange(
            policy,
            at=now - 40,
            url="http://u/billing",
            response_body='{"note": "quarterly invoice for [EMAIL:3f9a1c2b]"}',
            response_findings=[{"type": "EMAIL", "location": "$.note", "count": 1}],
        ),
        "denied": make_exchange(
            policy,
            at=now - 30,
            url="http://u/db?sql=select+name+from+sqlite_master",
            status_code=403,
            response_body='{"error":"denied"}',
            response_findings=[],
            decision="denied",
        ),
        "approved": make_exchange(
            policy,
            at=now - 20,
            url="http://u/export/all",
            decision="approved",
            approval_id=str(approval.id),
            response_findings=[{"type": "IBAN", "location": "$.iban", "count": 2}],
        ),
        "llm": make_exchange(
            policy,
            at=now - 10,
            agent_id=other_agent.id,
            target_id=other_target.id,
            url="http://u/v1/chat/completions",
            request_body='{"messages": [{"content": "summarise the contract"}]}',
            response_findings=[],
        ),
        "old": make_exchange(policy, at=now - 10 * 86400, url="http://u/customers/archive"),
    }
    ingest(*msgs.values())
    return msgs, other_agent, other_target


def _ids(client, **params) -> list[str]:
    r = client.get(reverse("audit:search"), params)
    assert r.status_code == 200
    html = r.content.decode()
    return [part.split('"')[0] for part in html.split("?exchange=")[1:]]


@pytest.fixture
def auditor(client, users):
    client.force_login(users["auditor"])
    return client


def test_full_text_finds_words_of_urls_and_bodies(auditor, corpus):
    msgs, *_ = corpus
    assert _ids(auditor, q="orders") == [msgs["orders"].exchange_id]
    assert _ids(auditor, q="orders.json") == [msgs["orders"].exchange_id]
    assert _ids(auditor, q="sqlite_master") == [msgs["denied"].exchange_id]
    assert _ids(auditor, q="quarterly invoice") == [msgs["invoice"].exchange_id]
    assert _ids(auditor, q='"contract summarise"') == []
    assert _ids(auditor, q='"summarise the contract"') == [msgs["llm"].exchange_id]
    assert set(_ids(auditor, q="customers")) == {
        msgs["orders"].exchange_id,
        msgs["old"].exchange_id,
    }
    assert _ids(auditor, q="nowhere-to-be-found") == []


def test_filters_combine(auditor, corpus):
    msgs, other_agent, other_target = corpus
    assert _ids(auditor, entity_type="IBAN") == [msgs["approved"].exchange_id]
    assert set(_ids(auditor, entity_type="EMAIL")) >= {msgs["invoice"].exchange_id}
    assert _ids(auditor, decision="denied") == [msgs["denied"].exchange_id]
    assert _ids(auditor, status="403") == [msgs["denied"].exchange_id]
    assert _ids(auditor, agent=other_agent.pk) == [msgs["llm"].exchange_id]
    assert _ids(auditor, target=other_target.pk) == [msgs["llm"].exchange_id]
    assert _ids(auditor, approver="approver2") == [msgs["approved"].exchange_id]
    masked = set(_ids(auditor, decision="masked"))
    assert msgs["invoice"].exchange_id in masked and msgs["denied"].exchange_id not in masked
    assert msgs["llm"].exchange_id not in masked
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    recent = _ids(auditor, start=since)
    assert msgs["old"].exchange_id not in recent and len(recent) == 5
    assert _ids(auditor, start=since, q="customers") == [msgs["orders"].exchange_id]


def test_results_are_newest_first_and_paginated(auditor, corpus, monkeypatch):
    msgs, *_ = corpus
    from audit import views

    monkeypatch.setattr(views, "SEARCH_PAGE_SIZE", 2)
    first = auditor.get(reverse("audit:search"), {"target": msgs and corpus[0]["orders"].target_id})
    html = first.content.decode()
    assert 'id="next-page"' in html
    page1 = _ids(auditor, target=corpus[0]["orders"].target_id)
    page3 = _ids(auditor, target=corpus[0]["orders"].target_id, page=3)
    assert page1 == [msgs["approved"].exchange_id, msgs["denied"].exchange_id]
    assert page3 == [msgs["old"].exchange_id]


def test_invalid_filters_show_errors(auditor, corpus):
    r = auditor.get(
        reverse("audit:search"), {"status": "42", "start": "2026-02-01", "end": "2026-01-01"}
    )
    assert r.status_code == 200
    html = r.content.decode()
    assert "?exchange=" not in html and "is after" in html


def test_search_renders_recorded_bytes_inert(auditor, policy, ingest):
    ingest(make_exchange(policy, url='http://u/x?q=<script>alert(1)</script>"><img src=x>'))
    html = auditor.get(reverse("audit:search"), {"q": "alert"}).content.decode()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


def test_search_uses_the_indexes(policy, ingest, django_assert_max_num_queries):
    form = SearchForm({"q": "orders", "entity_type": "EMAIL"})
    assert form.is_valid()
    sql = str(form.queryset().query)
    assert "@@" in sql and "finding_types" in sql and "simple" in sql


@pytest.mark.parametrize("who", ["approver", "admin", "outsider"])
def test_other_roles_get_403(client, users, who):
    client.force_login(users[who])
    assert client.get(reverse("audit:search")).status_code == 403


def test_it_405s_posts(auditor):
    assert auditor.post(reverse("audit:search")).status_code == 405


def test_the_approver_choice_lists_people_who_decided(corpus):
    names = [u.username for u in SearchForm().fields["approver"].queryset]
    assert names == ["approver2"]
    assert User.objects.filter(groups=Group.objects.get(name="approver")).count() == 2


def test_a_slow_plan_falls_back_to_the_bitmap_plan_with_the_same_rows(corpus, monkeypatch):
    from audit import search

    form = SearchForm({"q": "customers"})
    assert form.is_valid()
    qs = form.queryset()
    expected = [x.id for x in qs]
    # Every row costs 20 ms in the planner's plan: the 1 ms budget runs out.
    slow = qs.extra(where=["pg_sleep(0.02) IS NOT NULL"])  # noqa: S610
    monkeypatch.setattr(search, "PLANNER_BUDGET_MS", 1)
    rows = search.fetch_page(slow, 0, 10)
    assert [x.id for x in rows] == expected and rows[0].agent.name == "agent-1"
    assert [x.id for x in search.fetch_page(slow, 1, 10)] == expected[1:]
    monkeypatch.setattr(search, "PLANNER_BUDGET_MS", 60_000)
    assert [x.id for x in search.fetch_page(qs, 0, 10)] == expected

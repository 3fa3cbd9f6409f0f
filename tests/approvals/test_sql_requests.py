"""SQL statements held for approval: pages, decisions, grants scoped to statement kind and
tables, the snapshot, notifications, and the unchanged permission checks."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django.core import mail
from django.urls import reverse

from approvals import tasks
from approvals.actions import do_decide
from approvals.forms import DecideForm, parse_table_globs
from approvals.models import Grant
from controlplane.redis import keys
from controlplane.snapshot import compile_grants
from tests.approvals.conftest import SQL_BODY

pytestmark = pytest.mark.django_db


def _login(client, user):
    client.force_login(user)
    return client


def test_the_detail_page_shows_the_statement(client, users, policy, make_sql_request):
    req = make_sql_request()
    html = _login(client, users["approver"]).get(reverse("approvals:detail", args=[req.id]))
    assert html.status_code == 200
    page = html.content.decode()
    assert "Masked SQL statement" in page and "/static/approvals/sql.css" in page
    assert '<span class="psql-prompt">agent-1@crm=&gt; </span>DELETE FROM public.orders' in page
    assert '<span class="psql-prompt">agent-1@crm-&gt; </span>WHERE customer_id = $1' in page
    assert '<mark class="masked" data-type="EMAIL" title="masked EMAIL">[EMAIL]</mark>' in page
    assert '<strong class="sql-kind">DELETE</strong>' in page
    assert "all effects: DELETE, SELECT" in page
    assert '<dd class="tables" id="sql-tables"><code>public.orders</code></dd>' in page
    assert "<code>lower</code>" in page
    assert "<li>$1 = &#x27;42&#x27;</li>" in page and "<li>$2 = NULL</li>" in page
    assert "bulk" in page and "bulk export" in page  # the rule and its reason
    assert "<dt>Target</dt><dd>crm · <code>postgresql://db.internal:5432/crm</code></dd>" in page
    assert "agent-1" in page
    assert "Masked request" not in page


def test_the_queue_row_shows_kind_first_line_and_tables(client, users, make_sql_request):
    req = make_sql_request(details={"tables": ["public.orders", "public.items"]})
    page = _login(client, users["approver"]).get(reverse("approvals:queue")).content.decode()
    assert f'id="approval-{req.id}"' in page
    assert '<span class="method sql-kind">DELETE</span>' in page
    assert 'class="sql-first-line">DELETE FROM public.orders</a>' in page
    assert "on <code>public.orders</code>, <code>public.items</code>" in page
    assert 'name="grant_tables" value="public.orders, public.items"' in page
    assert 'name="grant_path_pattern"' not in page


def test_history_and_recent_rows_name_the_statement(client, users, make_sql_request):
    req = make_sql_request()
    do_decide(req, acting_user=users["approver"], verdict="deny")
    c = _login(client, users["approver2"])
    assert "DELETE DELETE FROM public.orders" in c.get(reverse("approvals:queue")).content.decode()
    history = c.get(reverse("approvals:history")).content.decode()
    assert "DELETE DELETE FROM public.orders" in history


# Transactional: the snapshot is published on commit.
@pytest.mark.django_db(transaction=True)
def test_approve_with_grant_scopes_the_grant_to_kind_and_tables(
    client, users, policy, pg_target, make_sql_request, redis_client
):
    req = make_sql_request()
    r = _login(client, users["approver"]).post(
        reverse("approvals:decide", args=[req.id]),
        {"verdict": "grant", "grant_minutes": "15", "grant_tables": ""},
    )
    assert r.status_code == 302
    grant = Grant.objects.get()
    assert (grant.agent, grant.target, grant.method, grant.path_pattern, grant.tables) == (
        policy.agent,
        pg_target,
        "DELETE",
        "*",
        ["public.orders"],
    )
    assert grant.is_sql
    (compiled,) = compile_grants()
    assert compiled["tables"] == ["public.orders"] and compiled["method"] == "DELETE"
    doc = json.loads(redis_client.get(keys().policy_snapshot))
    assert doc["grants"][0]["tables"] == ["public.orders"]
    page = client.get(reverse("approvals:grants")).content.decode()
    assert '<span class="grant-tables"><code>public.orders</code></span>' in page
    detail = client.get(reverse("approvals:detail", args=[req.id])).content.decode()
    assert "DELETE statements on <code>public.orders</code>" in detail


def test_the_approver_may_edit_the_table_globs(client, users, make_sql_request):
    req = make_sql_request()
    r = _login(client, users["approver"]).post(
        reverse("approvals:decide", args=[req.id]),
        {"verdict": "grant", "grant_minutes": "5", "grant_tables": "Public.Orders, public.order_*"},
        HTTP_HX_REQUEST="true",
    )
    assert r.status_code == 200 and 'data-status="approved"' in r.content.decode()
    assert Grant.objects.get().tables == ["public.orders", "public.order_*"]


@pytest.mark.parametrize(
    "tables, error",
    [
        ("public.orders other..x", "is not a table glob"),
        ("a.b.c", "is not a table glob"),
        ("bad\x01name", "is not a table glob"),
        (", ".join(f"t{i}" for i in range(51)), "at most 50"),
    ],
)
def test_invalid_table_globs_are_refused(client, users, make_sql_request, tables, error):
    req = make_sql_request()
    r = _login(client, users["approver"]).post(
        reverse("approvals:decide", args=[req.id]),
        {"verdict": "grant", "grant_minutes": "5", "grant_tables": tables},
    )
    assert r.status_code == 400 and error in r.content.decode()
    req.refresh_from_db()
    assert req.status == "pending" and not Grant.objects.exists()


def test_a_statement_without_tables_needs_explicit_globs(client, users, make_sql_request):
    req = make_sql_request(details={"tables": [], "statement_kind": "DO"}, method="DO")
    c = _login(client, users["approver"])
    url = reverse("approvals:decide", args=[req.id])
    r = c.post(url, {"verdict": "grant", "grant_minutes": "5", "grant_tables": ""})
    assert r.status_code == 400 and "names no table" in r.content.decode()
    r = c.post(url, {"verdict": "grant", "grant_minutes": "5", "grant_tables": "*"})
    assert r.status_code == 302
    grant = Grant.objects.get()
    assert (grant.method, grant.tables) == ("DO", ["*"])


def test_approvers_who_disagree_on_tables_get_the_statements_own(users, make_sql_request):
    req = make_sql_request(required_approvals=2, details={"tables": ["public.orders[1]"]})
    do_decide(
        req,
        acting_user=users["approver"],
        verdict="approve",
        grant_minutes=60,
        grant_tables=["public.*"],
    )
    do_decide(
        req,
        acting_user=users["approver2"],
        verdict="approve",
        grant_minutes=5,
        grant_tables=["public.orders*"],
    )
    grant = Grant.objects.get()
    assert grant.tables == ["public.orders[[]1]"]  # glob-escaped: exactly that relation


def test_http_grants_compile_with_no_tables(users, make_request):
    req = make_request()
    do_decide(req, acting_user=users["approver"], verdict="approve", grant_minutes=5)
    (compiled,) = compile_grants()
    assert compiled["tables"] == [] and compiled["method"] == "GET"
    assert not Grant.objects.get().is_sql


def test_the_decide_form_ignores_tables_for_http_requests(make_request):
    form = DecideForm(
        {"verdict": "grant", "grant_minutes": "5", "grant_tables": "x"}, req=make_request()
    )
    assert form.is_valid() and form.cleaned_data["grant_tables"] == []


def test_table_globs_are_parsed_lower_cased_and_deduplicated():
    assert parse_table_globs(" A.b,c  a.B\n[x]_* ") == ["a.b", "c", "[x]_*"]
    assert parse_table_globs("") == []


# --- permissions (unchanged: one query filter, visible_q) ----------------------------------


@pytest.mark.parametrize("who", ["auditor", "outsider", "admin"])
def test_users_without_the_approver_role_get_403(client, users, make_sql_request, who):
    req = make_sql_request()
    c = _login(client, users[who])
    assert c.get(reverse("approvals:detail", args=[req.id])).status_code == 403
    r = c.post(
        reverse("approvals:decide", args=[req.id]),
        {"verdict": "grant", "grant_minutes": "5", "grant_tables": "*"},
    )
    assert r.status_code == 403
    req.refresh_from_db()
    assert req.status == "pending" and not Grant.objects.exists()


def test_an_approver_outside_the_group_gets_403(
    client, users, policy, payments_group, make_sql_request
):
    policy.approve_rule.approver_group = payments_group
    policy.approve_rule.save()
    req = make_sql_request()
    c = _login(client, users["approver2"])
    assert c.get(reverse("approvals:detail", args=[req.id])).status_code == 403
    assert f"approval-{req.id}" not in c.get(reverse("approvals:queue")).content.decode()
    r = c.post(reverse("approvals:decide", args=[req.id]), {"verdict": "approve"})
    assert r.status_code == 403


def test_the_agents_owner_may_not_decide(client, users, make_sql_request):
    req = make_sql_request()  # the agent is owned by admin; give admin the approver role
    from django.contrib.auth.models import Group

    users["admin"].groups.add(Group.objects.get(name="approver"))
    r = _login(client, users["admin"]).post(
        reverse("approvals:decide", args=[req.id]), {"verdict": "approve"}
    )
    assert r.status_code == 403


# --- notifications ----------------------------------------------------------------------------


def test_notifications_quote_the_sql(users, policy, make_sql_request):
    from approvals.notifications import email_message, slack_payload, webhook_payload

    req = make_sql_request()
    hook = webhook_payload(req)
    assert hook["protocol"] == "postgres" and hook["method"] == "DELETE"
    assert hook["sql"] == {
        "preview": SQL_BODY,
        "statement_kind": "DELETE",
        "statement_kinds": ["DELETE", "SELECT"],
        "tables": ["public.orders"],
        "functions": ["lower"],
    }
    slack = slack_payload(req)
    summary = slack["blocks"][0]["text"]["text"]
    assert "to run a *DELETE* statement on *crm* (tables public.orders)" in summary
    assert "DELETE FROM public.orders" in slack["blocks"][1]["text"]["text"]
    assert slack["text"].startswith("Approval needed: DELETE on public.orders: DELETE FROM")
    subject, body = email_message(req)
    assert (
        subject == "[Gatehouse] Approval needed: DELETE on public.orders: DELETE FROM public.orders"
    )
    assert "Statement: DELETE on target crm" in body and "Tables: public.orders" in body
    assert "Masked SQL:\n" + SQL_BODY in body
    assert "$1 = '42'\n$2 = NULL" in body


def test_slack_escapes_sql(users, make_sql_request):
    from approvals.notifications import slack_payload

    req = make_sql_request(body="select '<!channel>' ``` & 1", details={"tables": ["<t>"]})
    text = json.dumps(slack_payload(req))
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "&lt;t&gt;" in text


def test_a_held_statement_is_sent_to_every_channel(users, policy, make_sql_request):
    rule = policy.approve_rule
    rule.notify_email = True
    rule.save()
    users["approver"].email = "ann@example.com"
    users["approver"].save()
    req = make_sql_request()
    with mock.patch.object(
        tasks.send_approval_email, "delay", lambda *a: tasks.send_approval_email.apply(args=a)
    ):
        assert tasks.notify_approval_request.apply(args=[str(req.id)]).get() == ["email"]
    assert "DELETE FROM public.orders" in mail.outbox[0].body


def test_details_jsonb_cannot_hold_are_stored_replaced(make_sql_request):
    req = make_sql_request(details={"parameters": ["a\x00b", "\udc80"]})
    req.refresh_from_db()
    assert req.parameters == ["a\ufffdb", "\ufffd"]

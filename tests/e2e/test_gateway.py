"""End to end: real clients through the real proxy to real upstreams, recorded masked."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from demo.approver_bot import ApproverBot
from tests.e2e.conftest import wait_for

# django_db (not transactional) makes pytest-django create the test database; the stack
# fixture commits its data outside the test transactions and flushes at the end.
pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

PROMPT = (
    "Write to Jane Roe at jane.roe@example.com or +1 415 555 2671; "
    "her card is 4111 1111 1111 1111 and SSN 123-45-6789."
)
RAW_VALUES = ["jane.roe@example.com", "4111 1111 1111 1111", "123-45-6789", "555 2671"]


def _llm(stack, **kw):
    return openai.OpenAI(base_url=f"{stack.proxy_url}/llm/v1", api_key=stack.token, **kw)


def test_it_masks_personal_data_in_responses(stack, agent_http):
    r = agent_http.get(
        "/customers/customers/customers.json", params={"_shape": "array", "_size": "20"}
    )
    assert r.status_code == 200
    rows = r.json()  # still valid JSON
    assert len(rows) == 20 and set(rows[0]) >= {"email", "phone", "ssn", "credit_card", "name"}
    text = r.text
    for row in stack.pii_rows[:20]:
        assert not [value for value in row if value in text]
    assert all(row["email"] == "[EMAIL]" and row["ssn"] == "[US_SSN]" for row in rows)
    assert all(row["credit_card"] == "[CREDIT_CARD]" and row["iban"] == "[IBAN]" for row in rows)
    assert all(row["phone"].startswith("[PHONE]") for row in rows)  # an extension may follow


def test_it_decodes_compressed_responses_before_masking(stack, agent_http):
    for enc in ("gzip", "br"):
        r = agent_http.get(
            "/customers/customers/customers.json",
            params={"_shape": "array", "_size": "5"},
            headers={"Accept-Encoding": enc},
        )
        assert r.status_code == 200 and "[EMAIL]" in r.text
        assert stack.pii_rows[0][0] not in r.text


@pytest.mark.parametrize(
    "headers, status, code",
    [
        ({}, 401, "missing_token"),
        ({"Authorization": "Bearer gh_unknown_tokenvalue"}, 401, "unknown_token"),
    ],
)
def test_it_refuses_unidentified_agents(stack, headers, status, code):
    r = httpx.get(f"{stack.proxy_url}/customers/customers/customers.json", headers=headers)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code
    assert r.headers["content-type"] == "application/json"


def test_it_404s_unknown_targets_and_path_tricks(stack, agent_http):
    assert agent_http.get("/nope/x").json()["error"]["code"] == "unknown_target"
    r = agent_http.get("/customers/%2e%2e/llm/v1/models")
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_path"


def test_it_injects_the_credential_and_masks_the_prompt(stack):
    httpx.delete(f"{stack.llm_url}/_received")
    reply = _llm(stack).chat.completions.create(
        model="gatehouse-echo", messages=[{"role": "user", "content": PROMPT}]
    )
    content = reply.choices[0].message.content
    assert "[EMAIL]" in content and "[CREDIT_CARD]" in content and "[US_SSN]" in content
    assert not any(v in content for v in RAW_VALUES)
    (received,) = httpx.get(f"{stack.llm_url}/_received").json()
    assert received["headers"]["authorization"] == f"Bearer {stack.llm_key}"
    assert stack.token not in json.dumps(received)
    assert "jane.roe@example.com" not in received["body"]


def test_it_masks_streamed_completions_split_across_deltas(stack):
    stream = _llm(stack).chat.completions.create(
        model="gatehouse-echo", stream=True, messages=[{"role": "user", "content": PROMPT}]
    )
    deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    text = "".join(deltas)
    assert text.startswith("You said:")
    assert "[EMAIL]" in text and not any(v in text for v in RAW_VALUES)


def test_it_denies_by_rule_and_nothing_reaches_upstream(stack, agent_http):
    httpx.delete(f"{stack.llm_url}/_received")
    r = agent_http.get("/llm/v1/files")
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "denied_by_rule" and err["rule"]["name"] == "No file uploads"
    assert httpx.get(f"{stack.llm_url}/_received").json() == []
    r = agent_http.get(
        "/customers/customers.json", params={"sql": "select name from sqlite_master"}
    )
    assert r.status_code == 403 and r.json()["error"]["rule"]["name"] == "No schema discovery"


def _held(agent_http, params, out):
    out["r"] = agent_http.get("/customers/customers.json", params=params)


@pytest.mark.parametrize("verdict", ["approve", "deny"])
def test_a_held_request_waits_for_the_decision(stack, agent_http, verdict):
    out: dict = {}
    bot = ApproverBot(stack.web_url, "approver", stack.password)
    before = set(bot.pending_ids())
    t = threading.Thread(
        target=_held,
        args=(
            agent_http,
            {
                "sql": f"select email, ssn from customers where id > {len(before)}",
                "_shape": "array",
            },
            out,
        ),
    )
    t.start()
    approval_id = bot.wait_for_pending(10, exclude=before)
    # Other traffic flows while the request is held.
    assert agent_http.get("/llm/v1/models").status_code == 200
    assert t.is_alive()
    r = bot.decide(approval_id, verdict, comment=f"e2e {verdict}")
    assert r.status_code == 302
    t.join(15)
    resp = out["r"]
    assert resp.headers["x-gatehouse-approval-id"] == approval_id
    if verdict == "approve":
        assert resp.status_code == 200
        assert resp.json() and all(row["email"] == "[EMAIL]" for row in resp.json())
    else:
        assert resp.status_code == 403
        err = resp.json()["error"]
        assert err["code"] == "approval_denied" and err["decided_by"] == ["approver"]
    bot.close()


def test_a_held_request_expires_with_a_clear_error(stack, agent_http):
    r = agent_http.get("/customers/customers/orders.json", params={"_size": "max"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "approval_expired"
    assert r.headers["x-gatehouse-approval-id"]


def test_everything_is_recorded_masked(stack, agent_http, django_db_blocker):
    from audit.models import Exchange, Session

    agent_http.get(
        "/customers/customers/customers.json",
        params={"_shape": "array", "_size": "3"},
        headers={"X-Gatehouse-Session": "recorded-check"},
    )
    with django_db_blocker.unblock():
        session = wait_for(lambda: Session.objects.filter(key="recorded-check").first())
        assert session.exchange_count == 1
        wait_for(lambda: Exchange.objects.filter(decision="denied").exists())
        dump = json.dumps(
            [
                {k: v for k, v in x.__dict__.items() if not k.startswith("_")}
                for x in Exchange.objects.all()
            ],
            default=str,
        )
        assert Exchange.objects.filter(decision="approved").exists()
        assert Exchange.objects.filter(decision="approval_denied").exists()
        assert Exchange.objects.filter(decision="expired").exists()
    for row in stack.pii_rows:
        assert not [value for value in row if value in dump]
    for secret in (stack.token, stack.llm_key, stack.datasette_token, *RAW_VALUES):
        assert secret not in dump
    assert "[EMAIL]" in dump

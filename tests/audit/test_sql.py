"""PostgreSQL statements in the audit trail: ingest, hash chain, replay as a psql session,
search filters."""

from __future__ import annotations

import json
import time

import pytest
from django.db import connection
from django.urls import reverse

from audit import chain
from audit.chain import exchange_digest, verify_chain
from audit.ingest import EXCHANGE_COLUMNS, Ingestor
from audit.models import ChainRecord, Exchange, IngestError, Session
from audit.psql import aligned_table, formatted_sql, parameter_lines, rows_footer, transcript
from controlplane.redis import keys
from tests.audit.conftest import make_exchange, make_statement

pytestmark = pytest.mark.django_db


# --- ingest ------------------------------------------------------------------------------


def test_ingest_stores_a_statement_with_its_protocol_and_details(policy, pg_target, ingest):
    msg = make_statement(policy, target=pg_target)
    ingest(msg)
    x = Exchange.objects.get(pk=msg.exchange_id)
    assert x.protocol == "postgres" and x.is_sql and x.method == "SELECT"
    assert x.details == msg.details
    assert x.details["rows"][0] == ["1", "[EMAIL]", None]
    assert x.target == pg_target and x.session.key == msg.session_key
    assert {"protocol", "details"} <= set(EXCHANGE_COLUMNS)
    assert ChainRecord.objects.get(exchange_id=x.id).payload["digest"] == exchange_digest(x)


def test_ingest_reads_messages_without_the_new_fields_as_http(policy, ingest, redis_client):
    msg = make_exchange(policy)
    data = json.loads(msg.to_json())
    del data["protocol"], data["details"]  # written by a worker from before the fields
    redis_client.xadd(keys().exchanges_stream, {"data": json.dumps(data)})
    ingest()
    x = Exchange.objects.get(pk=msg.exchange_id)
    assert (x.protocol, x.details) == ("http", {})


def test_ingest_keeps_a_message_whose_details_are_not_an_object(policy, ingest, redis_client):
    data = json.loads(make_statement(policy).to_json())
    data["details"] = ["not", "an", "object"]
    redis_client.xadd(keys().exchanges_stream, {"data": json.dumps(data)})
    ingest()
    assert not Exchange.objects.exists()
    assert "details must be a JSON object" in IngestError.objects.get().error


def test_ingest_stores_values_jsonb_cannot_hold(policy, ingest):
    msg = make_statement(policy, details={"rows": [["a\x00b", "\ud800x"]], "error": "\x00"})
    ingest(msg)
    x = Exchange.objects.get(pk=msg.exchange_id)
    assert x.details["rows"] == [["a\ufffdb", "\ufffdx"]]
    assert verify_chain().ok


def test_ingest_stores_a_statement_held_for_approval_from_the_stream(
    policy, pg_target, redis_client
):
    import uuid

    from approvals.models import ApprovalRequest
    from proxy_worker.contract import ApprovalRequestMessage

    ing = Ingestor(consumer="test", block_ms=10)
    ing.ensure_groups()
    now = time.time()
    msg = ApprovalRequestMessage(
        approval_id=str(uuid.uuid4()),
        worker_id="w1",
        agent_id=policy.agent.id,
        target_id=pg_target.id,
        rule_id=policy.approve_rule.id,
        method="DELETE",
        url="postgresql://db.internal:5432/crm",
        headers={"database": "crm", "user": policy.agent.name, "tls": "TLSv1.3"},
        body="DELETE FROM public.orders\nWHERE customer_id = $1",
        body_truncated=False,
        requested_at=now,
        deadline=now + 60,
        reason="deletes need a human",
        protocol="postgres",
        details={
            "statement_kind": "DELETE",
            "statement_kinds": ["DELETE"],
            "tables": ["public.orders"],
            "functions": [],
            "parameters": ["[EMAIL]"],
            "sql_fingerprint": "ab" * 32,
        },
    )
    redis_client.xadd(keys().approvals_stream, {"data": msg.to_json()})
    while ing.step(block=False):
        pass
    req = ApprovalRequest.objects.get(pk=msg.approval_id)
    assert req.protocol == "postgres" and req.is_sql
    assert req.details == msg.details
    assert (req.statement_kind, req.tables, req.parameters) == (
        "DELETE",
        ["public.orders"],
        ["[EMAIL]"],
    )


# --- hash chain ----------------------------------------------------------------------------


def _seq(exchange_id) -> int:
    return ChainRecord.objects.get(exchange_id=exchange_id).seq


def test_an_http_record_hashes_as_before_the_new_fields(policy, ingest):
    """Digests of exchanges recorded before ``protocol``/``details`` existed do not move:
    the evidence of an HTTP exchange with no details is exactly the old one."""
    msg = make_exchange(policy)
    ingest(msg)
    x = Exchange.objects.get(pk=msg.exchange_id)
    doc = chain.exchange_document(x)
    assert (doc["protocol"], doc["details"]) == ("http", {})
    old_doc = {k: v for k, v in doc.items() if k not in ("protocol", "details")}
    evidence = chain.exchange_evidence(doc)
    assert "protocol" not in evidence and "details" not in evidence
    assert chain.exchange_evidence(old_doc) == evidence
    assert exchange_digest(x) == chain.digest_of_document(old_doc)
    assert ChainRecord.objects.get(exchange_id=x.id).payload["digest"] == exchange_digest(x)
    assert verify_chain().ok


def test_old_and_new_records_verify_side_by_side(policy, pg_target, ingest):
    t0 = time.time() - 10
    ingest(
        make_exchange(policy, at=t0),
        make_statement(policy, at=t0 + 1, target=pg_target),
        make_exchange(policy, at=t0 + 2),
    )
    result = verify_chain()
    assert result.ok and result.exchanges == 3, result.problems


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_exchange SET details = jsonb_set(details, '{rows,0,1}', "
        "'\"ana@example.com\"') WHERE id = %s",
        "UPDATE audit_exchange SET details = details - 'tables' WHERE id = %s",
        "UPDATE audit_exchange SET details = '{}'::jsonb WHERE id = %s",
        "UPDATE audit_exchange SET protocol = 'http' WHERE id = %s",
    ],
)
def test_altering_a_statements_details_or_protocol_breaks_verification(
    policy, pg_target, ingest, sql
):
    t0 = time.time() - 10
    msgs = [make_statement(policy, at=t0 + i, target=pg_target) for i in range(3)]
    ingest(*msgs)
    victim = msgs[1].exchange_id
    with connection.cursor() as cur:
        cur.execute(sql, [victim])
    result = verify_chain()
    assert not result.ok
    assert result.first_bad_seq == _seq(victim)
    assert "differs from its recorded digest" in result.problems[0][1]


def test_giving_an_http_record_details_breaks_verification(policy, ingest):
    msg = make_exchange(policy)
    ingest(msg)
    with connection.cursor() as cur:
        cur.execute(
            'UPDATE audit_exchange SET details = \'{"note": "x"}\'::jsonb WHERE id = %s',
            [msg.exchange_id],
        )
    assert verify_chain().first_bad_seq == _seq(msg.exchange_id)


# --- psql rendering (pure) -------------------------------------------------------------------


def test_the_table_is_psql_aligned():
    table = aligned_table(
        ["id", "email", "note"], [["1", "[EMAIL]", None], ["22", "b", "two\nlines"]]
    )
    assert table.split("\n") == [
        " id |  email  | note",
        "----+---------+-------",
        "  1 | [EMAIL] |",
        " 22 | b       | two  +",
        "    |         | lines",
    ]
    assert rows_footer(1) == "(1 row)" and rows_footer(3) == "(3 rows)"
    assert aligned_table([], []) == ""
    # Wide characters take two columns; short rows are padded with NULLs.
    assert aligned_table(["名"], [["日本"], []]).split("\n") == ["  名", "------", " 日本", ""]


def test_parameters_read_as_sql_literals():
    assert parameter_lines(["it's", None, "[EMAIL]"]) == [
        "$1 = 'it''s'",
        "$2 = NULL",
        "$3 = '[EMAIL]'",
    ]


def test_long_statements_are_formatted_and_short_ones_kept():
    assert formatted_sql("select 1") == "select 1"
    long = "select id, email, name from public.customers where email like '%x%' " + (
        "and id > 1 " * 5
    )
    assert formatted_sql(long).startswith("SELECT id\n")
    assert formatted_sql("select from from where " * 10) == ("select from from where " * 10).strip()


def test_a_transcript_of_an_error_names_the_sqlstate():
    t = transcript(
        sql="select * from nope",
        details={"error": 'relation "nope" does not exist', "sqlstate": "42P01"},
        agent="bot",
        target="crm",
        status_code=400,
    )
    assert [(k, p, x) for k, p, x in t.lines] == [
        ("sql", "bot@crm=> ", "select * from nope"),
        ("error", "", 'ERROR:  relation "nope" does not exist'),
        ("error", "", "SQLSTATE: 42P01"),
    ]


def test_a_transcript_of_a_write_shows_its_command_tag():
    t = transcript(
        sql="insert into t values (1), (2), (3)",
        details={"command_tag": "INSERT 0 3", "statement_kind": "INSERT"},
        agent="bot",
        target="crm",
        status_code=200,
    )
    assert t.lines[-1] == ("tag", "", "INSERT 0 3") and t.kinds == ["INSERT"]


def test_a_transcript_survives_malformed_details():
    t = transcript(
        sql="",
        details={"columns": "id", "rows": "x", "row_count": "many", "parameters": {}},
        agent="",
        target="",
        status_code=200,
    )
    assert t.lines == [("sql", "?@?=> ", "")]


# --- replay page ------------------------------------------------------------------------------


@pytest.fixture
def pg_session(policy, pg_target, ingest, users):
    """One connection's statements: a SELECT (3 rows, 2 sampled), an INSERT with bound
    parameters (extended protocol), an error, a statement denied by a rule."""
    t0 = time.time() - 60
    msgs = [
        make_statement(policy, at=t0, target=pg_target),
        make_statement(
            policy,
            at=t0 + 1.5,
            target=pg_target,
            method="INSERT",
            request_body="insert into public.orders (customer_id, note) values ($1, $2)",
            response_body="INSERT 0 3",
            response_findings=[],
            details={
                "statement_kind": "INSERT",
                "statement_kinds": ["INSERT"],
                "tables": ["public.orders"],
                "parameters": ["42", "[EMAIL]"],
                "columns": [],
                "rows": [],
                "rows_truncated": False,
                "row_count": 3,
                "command_tag": "INSERT 0 3",
                "extended": True,
            },
        ),
        make_statement(
            policy,
            at=t0 + 2,
            target=pg_target,
            request_body="select * from nope",
            status_code=400,
            response_body='ERROR:  relation "nope" does not exist',
            response_findings=[],
            details={
                "tables": ["nope"],
                "columns": [],
                "rows": [],
                "rows_truncated": False,
                "row_count": None,
                "command_tag": "",
                "sqlstate": "42P01",
                "error": 'relation "nope" does not exist',
            },
        ),
        make_statement(
            policy,
            at=t0 + 3,
            target=pg_target,
            method="DDL",
            request_body="drop table public.customers",
            status_code=403,
            decision="denied",
            rule_id=policy.deny_rule.id,
            response_body="ERROR:  denied by Gatehouse",
            response_findings=[],
            details={
                "statement_kind": "DDL",
                "statement_kinds": ["DDL"],
                "columns": [],
                "rows": [],
                "command_tag": "",
                "sqlstate": "42501",
                "error": "denied by Gatehouse rule “no schema”",
            },
        ),
    ]
    ingest(*msgs)
    return Session.objects.get(key=msgs[0].session_key), msgs


def _page(client, session, step: int) -> str:
    r = client.get(reverse("audit:session", args=[session.id]) + f"?step={step}")
    assert r.status_code == 200
    return r.content.decode()


def test_the_replay_reads_like_a_psql_session(client, users, pg_session):
    session, _ = pg_session
    client.force_login(users["auditor"])
    html = _page(client, session, 1)
    assert 'id="psql"' in html and "/static/audit/psql.css" in html
    assert '<span class="psql-prompt">agent-1@crm=&gt; </span>' in html
    assert "select id, email, note from public.customers" in html
    assert " id |" in html and "----+-" in html
    assert '<mark class="masked" data-type="EMAIL" title="masked EMAIL">[EMAIL]</mark>' in html
    assert "  2 | " in html and "| vip" in html
    assert "(3 rows)" in html and "only the first 2 rows were recorded" in html
    assert "public.customers</code>" in html and "simple query" in html
    assert "4.2 ms" in html or "4.3 ms" in html
    assert 'id="request-body"' not in html  # one-line SQL: the prompt shows it as recorded
    # Timeline entries name the statement kind and the start of the SQL.
    assert '<span class="sql-kind">INSERT</span>' in html
    assert "insert into public.orders (customer_id, note)" in html


def test_the_replay_shows_parameters_command_tags_errors_and_decisions(client, users, pg_session):
    session, _ = pg_session
    client.force_login(users["auditor"])
    insert = _page(client, session, 2)
    assert "$1 = &#x27;42&#x27;" in insert and "[EMAIL]</mark>&#x27;" in insert
    assert '<span class="psql-tag">INSERT 0 3</span>' in insert
    assert "extended query (Parse/Bind/Execute)" in insert
    assert "(3 rows)" not in insert
    error = _page(client, session, 3)
    assert "ERROR:  relation &quot;nope&quot; does not exist" in error
    assert "SQLSTATE: 42P01" in error
    denied = _page(client, session, 4)
    assert 'id="decision-badge">denied by rule “no schema”</span>' in denied
    assert "SQLSTATE: 42501" in denied


def test_the_replay_names_who_approved_a_held_statement(
    client, users, policy, pg_target, ingest, make_approval
):
    req = make_approval()
    msg = make_statement(
        policy, target=pg_target, decision="approved", approval_id=str(req.id), method="DELETE"
    )
    ingest(msg)
    client.force_login(users["auditor"])
    html = _page(client, Session.objects.get(), 1)
    assert f"held for approval {req.id} · approved by approver" in html


@pytest.fixture
def make_approval(policy, users):
    """An approved approval request (real actions), returned."""
    import uuid

    from approvals.actions import do_create_approval_request, do_decide
    from proxy_worker.contract import ApprovalRequestMessage

    def make():
        now = time.time()
        req, _ = do_create_approval_request(
            ApprovalRequestMessage(
                approval_id=str(uuid.uuid4()),
                worker_id="w1",
                agent_id=policy.agent.id,
                target_id=policy.target.id,
                rule_id=policy.approve_rule.id,
                method="DELETE",
                url="postgresql://db.internal:5432/crm",
                headers={},
                body="DELETE FROM t",
                body_truncated=False,
                requested_at=now,
                deadline=now + 60,
                protocol="postgres",
                details={"statement_kind": "DELETE", "tables": ["t"]},
            )
        )
        return do_decide(req, acting_user=users["approver"], verdict="approve")

    return make


def test_a_long_statement_is_formatted_with_the_recorded_text_beside(client, users, policy, ingest):
    sql = (
        "select c.id, c.email, o.total from public.customers c join public.orders o "
        "on o.customer_id = c.id where o.total > 100 -- big ones\norder by o.total desc"
    )
    ingest(make_statement(policy, request_body=sql))
    client.force_login(users["auditor"])
    html = _page(client, Session.objects.get(), 1)
    assert '<span class="psql-prompt">agent-1@customers=&gt; </span>SELECT c.id' in html
    assert '<span class="psql-prompt">agent-1@customers-&gt; </span>' in html
    assert "SQL as recorded" in html and "-- big ones" in html


def test_http_exchanges_still_replay_with_their_bodies(client, users, policy, ingest):
    ingest(make_exchange(policy))
    client.force_login(users["auditor"])
    html = _page(client, Session.objects.get(), 1)
    assert 'id="psql"' not in html and 'id="response-body"' in html
    assert "GET http://127.0.0.1:9/customers/orders.json" in html


def test_the_player_steps_through_statements(client, users, pg_session):
    session, _ = pg_session
    client.force_login(users["auditor"])
    html = client.get(reverse("audit:session", args=[session.id]) + "?play=4").content.decode()
    assert 'data-play="4"' in html and 'data-offset="1.500"' in html
    assert 'id="next-step"' in html and "/static/audit/replay.js" in html


def test_the_session_list_shows_the_protocol(client, users, pg_session, policy, ingest):
    ingest(make_exchange(policy))
    client.force_login(users["auditor"])
    html = client.get(reverse("audit:sessions")).content.decode()
    assert '<td class="protocol">PostgreSQL</td>' in html
    assert '<td class="protocol">HTTP</td>' in html


# --- search -------------------------------------------------------------------------------------


def test_search_filters_by_protocol_and_statement_kind(client, users, pg_session, policy, ingest):
    ingest(make_exchange(policy, url="http://u/orders"))
    client.force_login(users["auditor"])
    url = reverse("audit:search")

    def found(**params) -> int:
        r = client.get(url, params)
        assert r.status_code == 200
        return r.content.decode().count(">Replay</a>")

    assert found(protocol="postgres") == 4
    assert found(protocol="http") == 1
    assert found(statement_kind="INSERT") == 1
    assert found(statement_kind="SELECT", protocol="http") == 0
    assert found(q="public.orders") == 1  # the SQL text is searched like a body
    assert found(q="nope") == 1
    html = client.get(url, {"statement_kind": "INSERT"}).content.decode()
    assert '<td class="protocol">PostgreSQL</td>' in html
    assert '<span class="sql-kind">INSERT</span> insert into public.orders' in html
    assert client.get(url, {"statement_kind": "NOPE"}).status_code == 200
    assert "Select a valid choice" in client.get(url, {"protocol": "ftp"}).content.decode()

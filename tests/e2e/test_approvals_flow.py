"""End to end approvals through the real proxy: wait, two-approver threshold, defer and
retry across two workers, grants (issue, use, revoke), expiry, abandoned requests.

A local upstream in this process records what reaches it (so "exactly once" is
counted where it matters). The rules and target are created here, outside the test
transactions, and the running workers pick them up from the published snapshot.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import pytest

from demo.approver_bot import ApproverBot
from demo.stack import Ports, Stack
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

SLUG = "appr-flow"


class _Upstream(BaseHTTPRequestHandler):
    def _answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        self.server.received.append(
            {"method": self.command, "path": self.path, "body": body.decode(), "at": time.time()}
        )
        out = json.dumps({"ok": True, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer  # noqa: N815 - http.server API

    def log_message(self, *args):
        pass


def run_committed(django_db_blocker, fn):
    """Run ``fn`` on a fresh connection in autocommit (outside the test's transaction),
    so its writes and ``on_commit`` callbacks really happen; returns its result."""
    out: dict = {}

    def target():
        from django.db import connection

        with django_db_blocker.unblock():
            try:
                out["value"] = fn()
            except BaseException as e:  # re-raised in the test thread
                out["error"] = e
            finally:
                connection.close()

    t = threading.Thread(target=target)
    t.start()
    t.join(60)
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture(scope="module")
def flow_env(stack, django_db_blocker):
    """A target ``appr-flow`` in front of a recording upstream, with one rule per mode."""
    from controlplane.models import AccessRule, Target

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    upstream.received = []
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    rules = {
        # path glob: (mode, required approvals, timeout s)
        "/wait*": ("wait", 1, 20),
        "/two*": ("wait", 2, 30),
        "/defer*": ("defer", 1, 60),
        "/grant*": ("wait", 1, 20),
        "/expire*": ("wait", 1, 2),
        "/orphan*": ("wait", 1, 60),
    }
    with django_db_blocker.unblock():
        target = Target.objects.create(
            name="Approvals e2e",
            slug=SLUG,
            upstream_url=f"http://127.0.0.1:{upstream.server_port}",
            approval_timeout=20,
        )
        for i, (pattern, (mode, n, timeout)) in enumerate(rules.items()):
            AccessRule.objects.create(
                name=f"e2e approvals {pattern}",
                position=1 + i,
                target=target,
                path_pattern=pattern,
                action="approve",
                approval_mode=mode,
                required_approvals=n,
                approval_timeout=timeout,
                retry_window=30,
                reason=f"e2e {mode} x{n}",
            )
    client = httpx.Client(
        base_url=f"{stack.proxy_url}/{SLUG}",
        timeout=60,
        headers={"Authorization": f"Bearer {stack.token}"},
    )
    # The workers load the new snapshot from the pub/sub message.
    wait_for(lambda: client.get("/ping").status_code == 200, timeout=15)
    bots = SimpleNamespace(
        one=ApproverBot(stack.web_url, "approver", stack.password),
        two=ApproverBot(stack.web_url, "approver2", stack.password),
    )
    yield SimpleNamespace(upstream=upstream, client=client, bots=bots, target=target)
    client.close()
    bots.one.close()
    bots.two.close()
    upstream.shutdown()
    with django_db_blocker.unblock():
        AccessRule.objects.filter(target=target).delete()
        target.delete()


def _in_thread(fn, *args, **kw):
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", fn(*args, **kw)))
    t.start()
    return t, out


def _reached(env, path_prefix):
    return [r for r in env.upstream.received if r["path"].startswith(path_prefix)]


def test_wait_mode_holds_then_forwards(flow_env):
    env = flow_env
    before = set(env.bots.one.pending_ids())
    t, out = _in_thread(env.client.get, "/wait/orders", params={"n": "1"})
    approval_id = env.bots.one.wait_for_pending(10, exclude=before)
    time.sleep(0.3)
    assert t.is_alive() and not _reached(env, "/wait/orders")
    assert env.bots.one.decide(approval_id, "approve", "e2e wait").status_code == 302
    t.join(15)
    r = out["r"]
    assert r.status_code == 200 and r.json()["path"] == "/wait/orders?n=1"
    assert r.headers["x-gatehouse-approval-id"] == approval_id
    assert len(_reached(env, "/wait/orders")) == 1


def test_two_distinct_approvers_are_needed(flow_env, django_db_blocker):
    from approvals.models import ApprovalRequest

    env = flow_env
    before = set(env.bots.one.pending_ids())
    t, out = _in_thread(env.client.post, "/two/transfer", json={"amount": 10})
    approval_id = env.bots.one.wait_for_pending(10, exclude=before)
    assert env.bots.one.decide(approval_id, "approve", "first").status_code == 302
    # The same person cannot make up the second approval.
    assert env.bots.one.decide(approval_id, "approve", "again").status_code == 403
    time.sleep(1.0)
    assert t.is_alive() and not _reached(env, "/two/transfer")
    with django_db_blocker.unblock():
        assert ApprovalRequest.objects.get(pk=approval_id).status == "pending"
    page = env.bots.two.http.get(f"/approvals/{approval_id}/").text
    assert "1 of 2" in page
    assert env.bots.two.decide(approval_id, "approve", "second").status_code == 302
    t.join(15)
    r = out["r"]
    assert r.status_code == 200 and r.headers["x-gatehouse-approval-id"] == approval_id
    assert len(_reached(env, "/two/transfer")) == 1
    with django_db_blocker.unblock():
        req = ApprovalRequest.objects.get(pk=approval_id)
        assert req.status == "approved"
        assert sorted(d.user.username for d in req.decisions.all()) == ["approver", "approver2"]


def test_a_deny_answers_who_decided(flow_env):
    env = flow_env
    before = set(env.bots.one.pending_ids())
    t, out = _in_thread(env.client.get, "/two/denied")
    approval_id = env.bots.one.wait_for_pending(10, exclude=before)
    env.bots.two.decide(approval_id, "deny", "not on a Friday")
    t.join(15)
    r = out["r"]
    err = r.json()["error"]
    assert r.status_code == 403 and err["code"] == "approval_denied"
    assert err["decided_by"] == ["approver2"] and err["comment"] == "not on a Friday"
    assert r.headers["x-gatehouse-approval-id"] == approval_id
    assert not _reached(env, "/two/denied")


@pytest.fixture(scope="module")
def second_worker(stack, flow_env, tmp_path_factory):
    """A second proxy worker process sharing Redis with the stack's."""
    ports = Ports.free()
    env = {**stack.stack.env, "GATEHOUSE_WORKER_ID": "e2e-approvals-worker-2"}
    tmp = tmp_path_factory.mktemp("worker2")
    env["GATEHOUSE_SPOOL_DIR"] = str(tmp / "spool")
    st = Stack(ports=ports, env=env, log_dir=tmp / "log", customers_db=stack.stack.customers_db)
    st.start(["proxy"])
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{ports.proxy}/{SLUG}",
        timeout=60,
        headers={"Authorization": f"Bearer {stack.token}"},
    )
    wait_for(lambda: client.get("/ping").status_code == 200, timeout=15)
    yield SimpleNamespace(stack=st, client=client)
    client.close()
    st.stop()


def test_defer_then_one_identical_retry_passes_on_any_worker(flow_env, second_worker):
    env, other = flow_env, second_worker.client
    params, body = {"q": "all"}, {"rows": 5}
    r = env.client.post("/defer/export", params=params, json=body)
    assert r.status_code == 403
    err = r.json()["error"]
    approval_id = err["approval_id"]
    assert err["code"] == "approval_pending"
    assert r.headers["x-gatehouse-approval-id"] == approval_id
    assert 1 <= int(r.headers["retry-after"]) <= 5
    assert r.headers["x-gatehouse-approval-url"].endswith(f"/approvals/{approval_id}/")
    assert err["approval_url"] == r.headers["x-gatehouse-approval-url"]
    # A retry before the decision, through the other worker: the same request.
    r = other.post("/defer/export", params=params, json=body)
    assert r.json()["error"]["approval_id"] == approval_id
    env.bots.one.wait_for_pending(10)
    assert approval_id in env.bots.one.pending_ids()  # one row, however many retries
    assert env.bots.one.decide(approval_id, "approve", "once").status_code == 302
    # A different body is not the approved request.
    r = other.post("/defer/export", params=params, json={"rows": 6})
    assert r.status_code == 403 and r.json()["error"]["approval_id"] != approval_id
    # Identical retries race on both workers: exactly one passes.
    results: list = []
    threads = [
        threading.Thread(
            target=lambda c=c: results.append(c.post("/defer/export", params=params, json=body))
        )
        for c in (env.client, other, env.client, other)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    ok = [r for r in results if r.status_code == 200]
    assert len(ok) == 1 and ok[0].headers["x-gatehouse-approval-id"] == approval_id
    reached = [r for r in _reached(env, "/defer/export") if r["body"] == '{"rows":5}']
    assert len(reached) == 1
    refused = [r.json()["error"] for r in results if r.status_code != 200]
    assert {e["code"] for e in refused} == {"approval_pending"}
    assert approval_id not in {e["approval_id"] for e in refused}


def test_a_grant_lets_matching_requests_pass_until_revoked(flow_env, django_db_blocker):
    from approvals.models import Grant

    env = flow_env
    before = set(env.bots.one.pending_ids())
    t, out = _in_thread(env.client.get, "/grant/reports/1")
    approval_id = env.bots.one.wait_for_pending(10, exclude=before)
    r = env.bots.one.decide(
        approval_id, "grant", "for the batch", grant_minutes=5, grant_path_pattern="/grant/*"
    )
    assert r.status_code == 302
    t.join(15)
    assert out["r"].status_code == 200
    with django_db_blocker.unblock():
        grant = Grant.objects.get(approval_request_id=approval_id)
    assert grant.path_pattern == "/grant/*" and grant.method == "GET"
    assert grant.id in env.bots.one.active_grant_ids()

    # Matching requests pass at once (the workers got the grant in a new snapshot).
    def granted():
        r = env.client.get("/grant/reports/2", timeout=3)
        return r if r.status_code == 200 else None

    r = wait_for(granted, timeout=10)
    assert r.headers["x-gatehouse-grant-id"] == str(grant.id)
    r = env.client.get("/grant/reports/3", timeout=3)
    assert r.status_code == 200
    # Other methods are not covered.
    before = set(env.bots.one.pending_ids())
    t, out = _in_thread(env.client.post, "/grant/reports/4", json={})
    held = env.bots.one.wait_for_pending(10, exclude=before)
    env.bots.one.decide(held, "deny", "not granted")
    t.join(15)
    assert out["r"].status_code == 403

    assert env.bots.one.revoke_grant(grant.id).status_code == 302
    assert grant.id not in env.bots.one.active_grant_ids()
    before = set(env.bots.one.pending_ids())
    t, out = _in_thread(env.client.get, "/grant/reports/5")
    held = env.bots.one.wait_for_pending(10, exclude=before)  # asks again
    env.bots.one.decide(held, "deny", "revoked")
    t.join(15)
    assert out["r"].status_code == 403
    assert not _reached(env, "/grant/reports/5")


def test_expiry_answers_the_agent_and_the_sweep_marks_the_row(flow_env, django_db_blocker):
    from approvals.models import ApprovalRequest
    from approvals.tasks import expire_approval_requests

    env = flow_env
    t0 = time.monotonic()
    r = env.client.get("/expire/now")
    assert 1.5 < time.monotonic() - t0 < 8
    err = r.json()["error"]
    assert r.status_code == 403 and err["code"] == "approval_expired"
    approval_id = r.headers["x-gatehouse-approval-id"]
    assert err["approval_id"] == approval_id
    with django_db_blocker.unblock():
        wait_for(lambda: ApprovalRequest.objects.filter(pk=approval_id).exists())
    run_committed(django_db_blocker, expire_approval_requests)
    with django_db_blocker.unblock():
        assert ApprovalRequest.objects.get(pk=approval_id).status == "expired"
    # The approver can no longer decide it.
    assert env.bots.one.decide(approval_id, "approve").status_code == 403


def test_requests_of_a_dead_worker_are_abandoned(flow_env, second_worker, django_db_blocker):
    from approvals.models import ApprovalRequest
    from approvals.tasks import abandon_orphaned_requests
    from proxy_worker.contract import HEARTBEAT_TTL_SECONDS

    env = flow_env
    before = set(env.bots.one.pending_ids())
    t, out = _in_thread(
        lambda: _swallow(
            second_worker.client.get, "/orphan/held", timeout=HEARTBEAT_TTL_SECONDS + 30
        )
    )
    approval_id = env.bots.one.wait_for_pending(10, exclude=before)
    time.sleep(3.5)  # past the sweep's grace period, worker still alive
    assert run_committed(django_db_blocker, abandon_orphaned_requests) == 0
    second_worker.stack.procs["proxy"].kill()  # no clean shutdown: the heartbeat lingers
    second_worker.stack.procs["proxy"].wait()
    t.join(10)

    def swept():
        run_committed(django_db_blocker, abandon_orphaned_requests)
        with django_db_blocker.unblock():
            return ApprovalRequest.objects.get(pk=approval_id).status == "abandoned"

    wait_for(swept, timeout=HEARTBEAT_TTL_SECONDS + 10, interval=1.0)
    assert approval_id not in env.bots.one.pending_ids()


def _swallow(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except httpx.HTTPError as e:
        return e

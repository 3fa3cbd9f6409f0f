"""Notifications: a real local HTTP server receives the webhooks; e-mail goes to the
locmem outbox. Tasks run eagerly (``apply``), retries included."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.core import mail

from approvals import tasks
from approvals.actions import do_decide

pytestmark = pytest.mark.django_db


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        server = self.server
        server.received.append(
            {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
        )
        status = server.statuses.pop(0) if server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    """A local HTTP server; ``.statuses`` scripts the next answers, ``.received`` logs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received, server.statuses = [], []
    server.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def channels(policy, receiver):
    rule = policy.approve_rule
    rule.notify_webhook_url = f"{receiver.url}/hook"
    rule.notify_slack_url = f"{receiver.url}/slack"
    rule.notify_email = True
    rule.save()
    return rule


def _run_fanout(approval_id):
    """Run notify_approval_request with its channel tasks applied eagerly."""
    with (
        mock.patch.object(
            tasks.send_approval_webhook,
            "delay",
            lambda *a: tasks.send_approval_webhook.apply(args=a).get(),
        ),
        mock.patch.object(
            tasks.send_approval_email,
            "delay",
            lambda *a: tasks.send_approval_email.apply(args=a).get(),
        ),
    ):
        return tasks.notify_approval_request.apply(args=[approval_id]).get()


def test_a_new_request_queues_one_notification_task_after_commit(
    channels, make_request, django_capture_on_commit_callbacks
):
    with (
        mock.patch.object(tasks.notify_approval_request, "delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        req = make_request()
    delay.assert_called_once_with(str(req.id))


def test_no_task_without_channels(policy, make_request, django_capture_on_commit_callbacks):
    with (
        mock.patch.object(tasks.notify_approval_request, "delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        make_request()
    delay.assert_not_called()


def test_a_broker_outage_does_not_break_ingest(
    channels, make_request, django_capture_on_commit_callbacks
):
    with (
        mock.patch.object(
            tasks.notify_approval_request, "delay", side_effect=ConnectionError("broker down")
        ),
        django_capture_on_commit_callbacks(execute=True),
    ):
        req = make_request()
    assert req.status == "pending"


def test_it_sends_webhook_slack_and_email(users, policy, channels, receiver, make_request):
    users["approver"].email = "ann@example.com"
    users["approver"].save()
    users["approver2"].email = "bob@example.com"
    users["approver2"].save()
    users["auditor"].email = "aud@example.com"  # not an approver
    users["auditor"].save()
    policy.agent.owner = users["approver2"]  # owners are not asked
    policy.agent.save()
    req = make_request(body='{"to": "[EMAIL]", "amount": 12}', required_approvals=2)

    assert _run_fanout(str(req.id)) == ["webhook", "slack", "email"]

    by_path = {r["path"]: r for r in receiver.received}
    hook = by_path["/hook"]["json"]
    assert hook["event"] == "approval.requested" and hook["approval_id"] == str(req.id)
    assert hook["approval_url"].endswith(f"/approvals/{req.id}/")
    assert hook["agent"] == {"id": policy.agent.id, "name": "agent-1", "owner": "approver2"}
    assert hook["body_preview"] == '{"to": "[EMAIL]", "amount": 12}'
    assert hook["required_approvals"] == 2 and hook["mode"] == "wait"
    assert by_path["/hook"]["headers"]["Content-Type"] == "application/json"
    slack = by_path["/slack"]["json"]
    assert f"/approvals/{req.id}/" in slack["text"]
    texts = json.dumps(slack["blocks"])
    assert "[EMAIL]" in texts and "*Approval needed*" in texts
    assert slack["blocks"][-1]["elements"][0]["url"] == hook["approval_url"]

    assert [m.to for m in mail.outbox] == [["ann@example.com"]]
    assert str(req.id) in mail.outbox[0].body and "[EMAIL]" in mail.outbox[0].body


def test_it_retries_transient_failures_with_backoff(channels, receiver, make_request):
    req = make_request()
    receiver.statuses = [503, 500]
    status = tasks.send_approval_webhook.apply(args=[str(req.id), "webhook"]).get()
    assert status == 200 and len(receiver.received) == 3
    assert tasks.send_approval_webhook.retry_backoff == 2
    assert tasks.send_approval_webhook.max_retries == 5


def test_it_does_not_retry_a_refusal(channels, receiver, make_request):
    req = make_request()
    receiver.statuses = [404]
    assert tasks.send_approval_webhook.apply(args=[str(req.id), "webhook"]).get() is None
    assert len(receiver.received) == 1


def test_it_gives_up_after_the_last_retry(channels, receiver, make_request):
    req = make_request()
    receiver.statuses = [500] * 10
    result = tasks.send_approval_webhook.apply(args=[str(req.id), "webhook"])
    assert result.failed()
    assert len(receiver.received) == 6  # the first attempt and 5 retries


def test_nothing_is_sent_once_decided(users, channels, receiver, make_request):
    req = make_request()
    do_decide(req, acting_user=users["approver"], verdict="deny")
    assert _run_fanout(str(req.id)) == []
    assert receiver.received == [] and mail.outbox == []


def test_an_unreachable_endpoint_is_retried(policy, make_request):
    rule = policy.approve_rule
    rule.notify_webhook_url = "http://127.0.0.1:9/never"  # discard port: refused
    rule.save()
    req = make_request()
    result = tasks.send_approval_webhook.apply(args=[str(req.id), "webhook"])
    assert result.failed() and "RetryableNotifyError" in repr(result.result)


def test_email_recipients_need_the_role_and_an_address(users, policy, make_request):
    inactive = User.objects.create_user("gone", email="gone@example.com", is_active=False)
    inactive.groups.add(*users["approver"].groups.all())
    users["approver"].email = "ann@example.com"
    users["approver"].save()
    from approvals.notifications import email_recipients

    assert email_recipients(make_request()) == ["ann@example.com"]

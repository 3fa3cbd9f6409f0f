"""Agent tokens and injected credentials never appear in logs, recordings or error pages.

After traffic that exercises every answer the gateway gives (allowed, masked, denied,
unknown token, unknown target, bad path, held and expired, upstream error), every
process log of the stack, every row of every database table and every Redis key of the
deployment are searched for the secrets in plain text.
"""

from __future__ import annotations

import httpx
import pytest
from django.apps import apps
from django.conf import settings
from django.core import serializers

from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.security, pytest.mark.django_db]


def _secrets(stack) -> dict[str, str]:
    return {
        "agent token": stack.token,
        "agent token secret part": stack.token.rsplit("_", 1)[-1],
        "llm credential": stack.llm_key,
        "datasette credential": stack.datasette_token,
    }


def _traffic(stack) -> list[httpx.Response]:
    auth = {"Authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=stack.proxy_url, timeout=30) as c:
        return [
            c.get("/customers/customers/customers.json", params={"_size": "2"}, headers=auth),
            c.post(
                "/llm/v1/chat/completions",
                headers=auth,
                json={"model": "gatehouse-echo", "messages": [{"role": "user", "content": "hi"}]},
            ),
            c.get("/llm/v1/files", headers=auth),  # denied by rule
            c.get("/nope/x", headers=auth),  # unknown target
            c.get("/customers/%2e%2e/llm/v1/models", headers=auth),  # bad path
            c.get("/llm/v1/models", headers={"Authorization": f"Bearer {stack.token}x"}),
            c.get("/llm/v1/models", headers={"Proxy-Authorization": f"Bearer {stack.token}"}),
            c.get("/customers/customers/orders.json", params={"_size": "max"}, headers=auth),
            c.get(
                "/llm/v1/models",
                headers={**auth, "X-Api-Key": stack.token, "Cookie": f"t={stack.token}"},
            ),
        ]


def test_no_secret_in_error_pages_recordings_logs_or_redis(stack, django_db_blocker):
    from audit.models import Exchange

    answers = _traffic(stack)
    secrets = _secrets(stack)
    for r in answers:
        text = r.text + str(r.headers)
        leaked = [name for name, value in secrets.items() if value in text]
        assert not leaked, (r.request.url, r.status_code, leaked)
    with django_db_blocker.unblock():
        wait_for(lambda: Exchange.objects.filter(url__contains="orders.json").exists(), 15)
        wait_for(lambda: Exchange.objects.filter(status_code=404).exists(), 15)
        dump = "\n".join(
            serializers.serialize("json", model.objects.all())
            for model in apps.get_models()
            if model._meta.app_label in ("audit", "approvals", "controlplane", "auth")
        )
    assert "[REDACTED]" in dump  # the credential headers were recorded, redacted
    # The upstream never saw the agent's token, wherever the agent repeated it.
    received = httpx.get(f"{stack.llm_url}/_received", timeout=10).text
    assert stack.token not in received
    assert "x-api-key" not in received.lower()
    leaked = [name for name, value in secrets.items() if value in dump]
    assert not leaked, f"in the database: {leaked}"

    logs = "\n".join(
        p.read_text(errors="replace") for p in sorted(stack.stack.log_dir.glob("*.log"))
    )
    assert "gatehouse proxy worker" in logs  # the logs were found
    leaked = [name for name, value in secrets.items() if value in logs]
    assert not leaked, f"in the process logs: {leaked}"

    from controlplane.redis import client

    r = client()
    values = []
    for key in r.scan_iter(f"{settings.REDIS_PREFIX}:*"):
        kind = r.type(key)
        if kind == b"string":
            values.append(r.get(key) or b"")
        elif kind == b"stream":
            values += [str(f).encode() for _, f in r.xrange(key)]
        elif kind == b"hash":
            values.append(str(r.hgetall(key)).encode())
    blob = b"\n".join(values).decode(errors="replace")
    leaked = [name for name, value in secrets.items() if value in blob]
    assert not leaked, f"in Redis: {leaked}"

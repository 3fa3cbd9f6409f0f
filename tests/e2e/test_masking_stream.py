"""End to end: a streamed chat completion whose secrets are split across SSE deltas is
masked by the real proxy on the response side, event by event, and recorded masked."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from demo.llm_upstream import split_into_pieces
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

GITHUB = "ghp_" + "Zq81LmV9xKp4TnW7aB3cD5eF6gH8jK0LmN2p"
AWS = "AKIAIOSFODNN7EXAMPLE"
ITIN = "912-70-1234"
IP = "203.0.113.77"
PROMPT = f"Deploy with {GITHUB} and {AWS} from host {IP}; my ITIN is {ITIN}. Thanks."
SECRETS = [GITHUB, AWS, IP, ITIN, GITHUB[4:20], "IOSFODNN7"]
RULE = "Secrets in replies (e2e)"


@pytest.fixture(scope="module")
def reply_rule(stack, django_db_blocker):
    """A response-only rule for types the seed's request rule does not cover, so the
    secrets reach the echo upstream and come back split across deltas."""
    from controlplane.models import MaskingRule

    with django_db_blocker.unblock():
        MaskingRule.objects.create(
            name=RULE,
            entity_types=["GITHUB_TOKEN", "AWS_ACCESS_KEY", "IP_ADDRESS", "US_ITIN"],
            strategy="redact",
            direction="response",
        )

    def active():
        r = httpx.post(
            f"{stack.proxy_url}/llm/v1/chat/completions",
            headers={"Authorization": f"Bearer {stack.token}"},
            json={"model": "gatehouse-echo", "messages": [{"role": "user", "content": IP}]},
            timeout=30,
        )
        return r.status_code == 200 and "[IP_ADDRESS]" in r.text

    wait_for(active, timeout=20)
    yield
    with django_db_blocker.unblock():
        MaskingRule.objects.filter(name=RULE).delete()


def test_secrets_split_across_deltas_are_masked(stack, reply_rule):
    httpx.delete(f"{stack.llm_url}/_received")
    client = openai.OpenAI(base_url=f"{stack.proxy_url}/llm/v1", api_key=stack.token)
    stream = client.chat.completions.create(
        model="gatehouse-echo", stream=True, messages=[{"role": "user", "content": PROMPT}]
    )
    deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    text = "".join(deltas)
    # The upstream streamed 3-6 character deltas, so every value was split apart ...
    received = httpx.get(f"{stack.llm_url}/_received").json()
    assert GITHUB in received[-1]["body"]  # not masked on the way in (response-only rule)
    # ... and the proxy still masked each one on the way out.
    assert text == (
        "You said: Deploy with [GITHUB_TOKEN] and [AWS_ACCESS_KEY] from host "
        "[IP_ADDRESS]; my ITIN is [US_ITIN]. Thanks."
    )
    # The upstream's 3-6 character pieces split every value; the proxy re-cut the
    # deltas at safe points and no delta carries a fragment of a value.
    pieces = split_into_pieces("You said: " + PROMPT)
    assert not any(v in p for v in (GITHUB, AWS, IP, ITIN) for p in pieces)
    assert len([d for d in deltas if d]) > 5
    assert not any(s in d for s in SECRETS for d in deltas)


def test_raw_event_stream_stays_valid_and_never_carries_a_fragment(stack, reply_rule):
    body = {
        "model": "gatehouse-echo",
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    with httpx.stream(
        "POST",
        f"{stack.proxy_url}/llm/v1/chat/completions",
        headers={"Authorization": f"Bearer {stack.token}", "Accept-Encoding": "gzip"},
        json=body,
        timeout=60,
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(r.iter_bytes())
    events = [e for e in raw.decode().split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        assert e.startswith("data: ")
        json.loads(e[len("data: ") :])  # every event is still valid JSON
    for s in SECRETS:
        assert s not in raw.decode()


def test_the_recorded_exchange_is_masked(stack, reply_rule, django_db_blocker):
    from audit.models import Exchange

    client = openai.OpenAI(base_url=f"{stack.proxy_url}/llm/v1", api_key=stack.token)
    marker = "record-check-7f3a"
    list(
        client.chat.completions.create(
            model="gatehouse-echo",
            stream=True,
            messages=[{"role": "user", "content": f"{marker} {PROMPT}"}],
        )
    )

    def recorded():
        with django_db_blocker.unblock():
            ex = (
                Exchange.objects.filter(response_body__contains=marker)
                .order_by("-started_at")
                .first()
            )
            return ex and (ex.response_body, ex.response_findings)

    response_body, findings = wait_for(recorded, timeout=20)
    assert "[GITHUB_TOKEN]" in response_body
    assert not any(s in response_body for s in SECRETS)
    types = {f["type"] for f in findings}
    assert {"GITHUB_TOKEN", "AWS_ACCESS_KEY", "IP_ADDRESS", "US_ITIN"} <= types
    assert not any(s in json.dumps(findings) for s in SECRETS)

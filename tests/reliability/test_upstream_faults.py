"""Upstream down, slow, resetting or lying: JSON 502/504 answers, recorded, nothing leaked."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.reliability.harness import UPSTREAM_SECRET, wait_until
from tests.reliability.upstream import RAW_PII

pytestmark = pytest.mark.reliability


def _recorded(gateway, path: str):
    """The exchange recorded for the upstream path ``path`` (waits for it)."""
    return wait_until(
        lambda: next((x for x in gateway.exchanges() if x.url.endswith(path)), None), 10
    )


def _get(gateway, path: str, **kw) -> httpx.Response:
    return httpx.get(gateway.worker_url() + path, headers=gateway.headers(), timeout=15, **kw)


@pytest.mark.parametrize(
    "path, status, code",
    [
        ("/down/anything", 502, "upstream_unreachable"),
        ("/api/reset", 502, "upstream_error"),
        ("/api/close", 502, "upstream_error"),
        ("/api/garbage", 502, "upstream_error"),
        ("/api/midreset", 502, "upstream_error"),
        ("/api/slow?delay=5", 504, "upstream_timeout"),
    ],
)
def test_it_answers_upstream_failures_with_json_and_records_them(gateway, path, status, code):
    t0 = time.monotonic()
    r = _get(gateway, path)
    elapsed = time.monotonic() - t0
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["code"] == code
    # Never the upstream's address, never a byte of a half-received upstream body.
    assert gateway.upstream_url not in r.text and "127.0.0.1" not in r.text
    assert not any(v in r.text for v in RAW_PII)
    if code == "upstream_timeout":
        assert 0.9 <= elapsed < 4, elapsed  # GATEHOUSE_UPSTREAM_TIMEOUT=1
    x = _recorded(gateway, path.split("/", 2)[2])
    assert (x.status_code, x.decision, x.error) == (status, "error", code)
    assert code in x.response_body


def test_the_connection_stays_usable_after_an_upstream_failure(gateway):
    with httpx.Client(base_url=gateway.worker_url(), headers=gateway.headers()) as c:
        assert c.get("/api/reset").status_code == 502
        assert c.get("/down/x").status_code == 502
        r = c.get("/api/json")
        assert r.status_code == 200 and "[EMAIL]" in r.text


def test_it_rewrites_upstream_urls_in_location_and_link(gateway):
    r = _get(gateway, "/api/redirect", follow_redirects=False)
    assert r.status_code == 302
    assert r.headers["location"] == "/api/next?page=2"
    assert r.headers["content-location"] == "/api/json"
    link = r.headers["link"]
    assert '</api/json?page=2>; rel="next"' in link
    assert "<https://docs.example.org/api>" in link  # foreign links are kept
    assert gateway.upstream_url not in str(r.headers)
    x = _recorded(gateway, "/redirect")
    assert gateway.upstream_url not in str(x.response_headers)


def test_upstream_failures_are_counted_in_the_worker_metrics(gateway):
    _get(gateway, "/down/counted")
    text = httpx.get(f"http://127.0.0.1:{gateway.metrics_ports['w1']}/metrics").text
    assert 'gatehouse_proxy_upstream_errors_total{code="upstream_unreachable",target="down"}' in (
        text
    )
    assert 'gatehouse_proxy_requests_total{decision="error",status_class="5xx",target="down"}' in (
        text
    )


def test_nothing_crashed_and_no_secret_was_logged(gateway):
    _get(gateway, "/api/reset")
    log = gateway.procs["w1"].log()
    assert "mitmproxy has crashed" not in log
    assert UPSTREAM_SECRET not in log and gateway.token not in log
    assert all(UPSTREAM_SECRET not in x.to_json() for x in gateway.exchanges())

"""UpstreamErrors' pure parts: error classification, URL rewriting, scrubbing, upgrades."""

from __future__ import annotations

import json

import pytest
from mitmproxy import http
from mitmproxy.proxy.layers.http import ErrorCode
from mitmproxy.test import tflow

from proxy_worker.addons.upstream_errors import (
    classify_upstream_error,
    json_error_page,
    refuse_upgrade,
    rewrite_link_header,
    rewrite_response_headers,
    rewrite_upstream_url,
    scrub_credential,
)
from proxy_worker.policy import Target

UP = "http://10.0.0.5:8000/v1"


@pytest.mark.parametrize(
    "code, message, timed_out, status, err",
    [
        (
            ErrorCode.CONNECT_FAILED,
            "[Errno 111] Connect call failed ('10.0.0.5', 8000)",
            False,
            502,
            "upstream_unreachable",
        ),
        (ErrorCode.GENERIC_SERVER_ERROR, "server closed connection", False, 502, "upstream_error"),
        (ErrorCode.GENERIC_SERVER_ERROR, "server closed connection", True, 504, "upstream_timeout"),
        (ErrorCode.CONNECT_FAILED, "connection cancelled", True, 504, "upstream_timeout"),
        (ErrorCode.RESPONSE_TOO_LARGE, "too large", False, 502, "upstream_response_too_large"),
        (ErrorCode.RESPONSE_VALIDATION_FAILED, "bad", False, 502, "upstream_error"),
    ],
)
def test_it_classifies_upstream_failures_without_naming_the_upstream(
    code, message, timed_out, status, err
):
    got_status, got_code, text = classify_upstream_error(code, message, timed_out)
    assert (got_status, got_code) == (status, err)
    assert "10.0.0.5" not in text


@pytest.mark.parametrize(
    "value, expected",
    [
        ("http://10.0.0.5:8000/v1/items?page=2", "/api/items?page=2"),
        ("HTTP://10.0.0.5:8000/v1", "/api/"),
        ("//10.0.0.5:8000/v1/x#frag", "/api/x#frag"),
        ("/v1/items", "/api/items"),
        ("http://10.0.0.5:8000/admin", None),  # outside the target: dropped
        ("/admin", None),
        ("http://user@10.0.0.5:8000/v1/x", "/api/x"),
        ("http://10.0.0.5:8000@evil.example/", None),  # upstream hidden in user info
        ("https://docs.example.org/x", "https://docs.example.org/x"),
        ("items/2", "items/2"),  # relative: already under the gateway path
        ("mailto:a@example.org", "mailto:a@example.org"),
        ("http://10.0.0.5:99999/v1", None),  # unparseable port
    ],
)
def test_it_rewrites_upstream_urls(value, expected):
    assert rewrite_upstream_url(value, UP, "api") == expected


def test_it_rewrites_link_headers_and_drops_leaking_values():
    value = (
        '<http://10.0.0.5:8000/v1/items?page=3>; rel="next", '
        '<http://10.0.0.5:8000/internal>; rel="debug", <https://x.example/h>; rel=help'
    )
    assert rewrite_link_header(value, UP, "api") == (
        '</api/items?page=3>; rel="next", <https://x.example/h>; rel=help'
    )
    assert rewrite_link_header("<http://10.0.0.5:8000/internal>", UP, "api") is None


def test_it_rewrites_response_headers_in_place():
    target = Target(id=1, slug="api", upstream=UP)
    headers = http.Headers(
        location="http://10.0.0.5:8000/v1/next", link="<http://10.0.0.5:8000/x>; rel=a"
    )
    assert rewrite_response_headers(headers, target) == 2
    assert headers["location"] == "/api/next" and "link" not in headers


def test_the_html_error_page_becomes_json():
    raw = json_error_page(502, "Connect call failed ('10.0.0.5', 8000)")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"application/json" in head
    assert json.loads(body)["error"]["code"] == "upstream_error"
    assert b"10.0.0.5" not in raw
    body400 = json_error_page(400, "Bad HTTP request line").partition(b"\r\n\r\n")[2]
    assert json.loads(body400)["error"] == {
        "code": "bad_request",
        "message": "Bad HTTP request line",
    }


def test_it_scrubs_a_reflected_credential():
    resp = http.Response.make(
        200,
        b'{"headers": {"authorization": "Bearer s3cret-value-123"}}',
        {"X-Echo": "s3cret-value-123"},
    )
    assert scrub_credential(resp, "s3cret-value-123") == 2
    assert b"s3cret" not in resp.content and resp.headers["X-Echo"] == "[REDACTED]"
    gz = http.Response.make(200, b"", {})
    gz.content = b"token=s3cret-value-123"
    gz.encode("gzip")
    assert scrub_credential(gz, "s3cret-value-123") == 1
    assert b"s3cret" not in gz.content


def test_it_refuses_websocket_upgrades_and_strips_others():
    f = tflow.tflow()
    f.request.headers["Upgrade"] = "websocket"
    f.request.headers["Connection"] = "Upgrade"
    assert refuse_upgrade(f)
    assert f.response.status_code == 501
    assert json.loads(f.response.content)["error"]["code"] == "upgrade_not_supported"
    g = tflow.tflow()
    g.request.headers["Upgrade"] = "h2c"
    g.request.headers["Connection"] = "Upgrade, HTTP2-Settings"
    assert not refuse_upgrade(g)
    assert "upgrade" not in g.request.headers
    assert g.request.headers["connection"] == "HTTP2-Settings"

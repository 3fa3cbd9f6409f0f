"""Property-based fuzzing (hypothesis) of the parsing and masking code on the data path.

Properties: parsers either answer or raise their documented error (never anything
else, which mitmproxy would log and forward: fail open); path splitting never routes
one target's request to another; masking never lets a planted value through, whatever
surrounds it, however a stream is chunked; upstream URL rewriting never leaks the
upstream's origin.
"""

from __future__ import annotations

import contextlib
import json
import string
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from proxy_worker.addons.upstream_errors import rewrite_link_header, rewrite_upstream_url
from proxy_worker.contract import SCHEMA_VERSION, ContractError
from proxy_worker.masking import Masker, MaskingError, MaskingRule
from proxy_worker.policy import (
    PathError,
    Policy,
    extract_token,
    request_info,
    split_reverse_path,
)

pytestmark = pytest.mark.reliability

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EMAIL = "jane.roe@example.com"
SSN = "123-45-6789"
MASKER = Masker(
    [MaskingRule(id=1, name="pii", entity_types=("EMAIL", "US_SSN", "PHONE", "CREDIT_CARD"))],
    hash_key=b"fuzz-key",
    max_body_bytes=1 << 20,
)

path_chars = st.sampled_from(list(string.ascii_letters + string.digits + "/.%-_~\\?&=;:@+ "))
path_tokens = st.sampled_from(
    ["/", "..", ".", "%2e", "%2E", "%2f", "%2F", "%5c", "%25", "api", "down", "%", "?", "//"]
)
paths = st.lists(st.one_of(path_chars, path_tokens), max_size=30).map("".join)


# -- routing ---------------------------------------------------------------------------------


@FUZZ
@given(paths)
def test_split_reverse_path_routes_only_clean_paths(raw):
    try:
        slug, rest = split_reverse_path(raw)
    except PathError:
        return
    path = raw.partition("?")[0]
    assert path.startswith("/" + slug)
    assert slug and "/" not in slug and "%" not in slug and "\\" not in slug
    assert slug not in (".", "..")
    assert rest.startswith("/")
    for seg in rest.partition("?")[0].split("/"):
        assert unquote(seg) not in (".", "..") and "\\" not in unquote(seg)


@FUZZ
@given(
    st.sampled_from(["..", "%2e%2e", "%2E%2e", ".%2e", "%2e.", "."]),
    st.sampled_from(["/api/{}/down/x", "/{}/api/x", "/api/x/{}", "/api/{}"]),
)
def test_dot_segments_are_always_refused(dots, shape):
    with pytest.raises(PathError):
        split_reverse_path(shape.format(dots))


@FUZZ
@given(st.text(max_size=200))
def test_extract_token_never_raises(value):
    token = extract_token(value)
    assert token is None or isinstance(token, str)


@FUZZ
@given(paths, st.binary(max_size=300), st.sampled_from(["GET", "post", "DELETE", "x"]))
def test_request_info_never_raises(path, body, method):
    info = request_info(agent_id=1, target_id=1, method=method, upstream_path=path, body=body)
    assert info.method == method.upper()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
snapshot_keys = st.sampled_from(
    ["targets", "agents", "access_rules", "masking_rules", "version", "id", "slug", "upstream"]
)


@FUZZ
@given(
    st.dictionaries(
        snapshot_keys,
        st.one_of(
            json_values,
            st.lists(st.dictionaries(snapshot_keys | st.text(max_size=8), json_values), max_size=3),
        ),
        max_size=6,
    )
)
def test_a_malformed_snapshot_is_a_contract_error_never_a_crash(doc):
    doc = {"v": SCHEMA_VERSION, **doc}
    with contextlib.suppress(ContractError):
        Policy.from_document(doc)


# -- masking ---------------------------------------------------------------------------------

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "text/plain",
    "text/html",
    "application/x-www-form-urlencoded",
    "application/x-ndjson",
    "text/event-stream",
    None,
    "application/xml",
]


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from(CONTENT_TYPES))
def test_mask_body_answers_or_raises_a_masking_error(body, ctype):
    try:
        result = MASKER.mask_body(body, ctype)
    except MaskingError:
        return
    assert isinstance(result.body, bytes)


def _plant(value, secret: str, where: int):
    """Put ``secret`` somewhere in a JSON value (replacing one string or appending)."""
    if isinstance(value, dict):
        if value:
            key = sorted(value)[where % len(value)]
            return {**value, key: _plant(value[key], secret, where // 2)}
        return {"k": secret}
    if isinstance(value, list):
        if value:
            i = where % len(value)
            return value[:i] + [_plant(value[i], secret, where // 2)] + value[i + 1 :]
        return [secret]
    return secret


@FUZZ
@given(json_values, st.integers(0, 1000), st.sampled_from([EMAIL, SSN]))
def test_a_planted_value_never_survives_json_masking(doc, where, secret):
    body = json.dumps(_plant(doc, secret, where)).encode()
    result = MASKER.mask_body(body, "application/json")
    assert secret.encode() not in result.body
    json.loads(result.body)  # still valid JSON


@FUZZ
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200),
    st.text(alphabet=" ,;:()<>[]\"'\t\n", min_size=1, max_size=3),
    st.sampled_from(["text/plain", "text/html", None, "application/json"]),
    st.sampled_from([EMAIL, SSN]),
)
def test_a_planted_value_never_survives_text_masking(text, sep, ctype, secret):
    assume(secret not in text)
    body = (text + sep + secret + sep + text).encode()
    try:
        result = MASKER.mask_body(body, ctype)
    except MaskingError:
        return  # refused: nothing goes through
    assert secret.encode() not in result.body


@FUZZ
@given(st.lists(st.integers(1, 40), min_size=1, max_size=40), st.sampled_from([EMAIL, SSN]))
def test_sse_masking_catches_a_value_split_across_any_chunks(cuts, secret):
    events = "".join(
        f"data: {json.dumps({'i': i, 'text': f'contact {secret} now'})}\n\n" for i in range(3)
    ).encode()
    stream = MASKER.sse_stream()
    out = b""
    pos = 0
    for cut in cuts:
        out += stream.feed(events[pos : pos + cut])
        pos += cut
        if pos >= len(events):
            break
    out += stream.feed(events[pos:]) + stream.finish()
    assert secret.encode() not in out
    assert out.count(b"data:") == 3


@FUZZ
@given(st.text(max_size=60), st.sampled_from([EMAIL, SSN]))
def test_query_masking_catches_planted_values(noise, secret):
    pairs = [("q", noise), ("who", secret), (quote(noise), f"{noise} {secret}")]
    masked, _ = MASKER.mask_query(pairs)
    assert all(secret not in v for _, v in masked)


# -- upstream URL rewriting ----------------------------------------------------------------

UPSTREAM = "http://10.9.8.7:8443/base"


@FUZZ
@given(
    st.sampled_from(["http://10.9.8.7:8443", "HTTP://10.9.8.7:8443", "//10.9.8.7:8443", ""]),
    paths,
)
def test_urls_on_the_upstream_become_gateway_paths_or_are_dropped(origin, path):
    out = rewrite_upstream_url(origin + path, UPSTREAM, "api")
    if origin or (path.startswith("/") and not path.startswith("//")):  # //host: foreign
        assert out is None or out.startswith("/api/"), out


@FUZZ
@given(st.sampled_from(["https://other.example", "mailto:x@example.org"]), paths)
def test_foreign_urls_are_kept(origin, path):
    url = origin + path
    out = rewrite_upstream_url(url, UPSTREAM, "api")
    assert out in (url.strip(), None)


@FUZZ
@given(st.lists(st.tuples(paths, st.sampled_from(['rel="next"', "rel=prev", ""])), max_size=4))
def test_rewritten_link_headers_never_name_the_upstream(links):
    value = ", ".join(f"<http://10.9.8.7:8443/base{p}>; {rel}" for p, rel in links)
    out = rewrite_link_header(value, UPSTREAM, "api")
    assert out is None or "10.9.8.7" not in out

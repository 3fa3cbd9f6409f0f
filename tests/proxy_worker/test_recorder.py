"""The Recorder never stores a default entity type, whatever the target's rules cover."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from mitmproxy.test import tflow, tutils

from proxy_worker.addons.recorder import Recorder
from proxy_worker.contract import Keys
from proxy_worker.flowstate import state_of
from proxy_worker.link import RECORD_ENTITY_TYPES, ControlPlaneLink
from proxy_worker.masking import EMAIL, Masker, MaskingRule
from proxy_worker.recording import remask_url

SSN = "078-05-1120"  # the well-known (invalid for issue) SSN still passes area/group rules
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture
def link(tmp_path):
    return ControlPlaneLink(
        redis_url="redis://127.0.0.1:1/0",  # never contacted here
        keys=Keys("ghtest-recorder"),
        worker_id="w-test",
        worker_key=Fernet.generate_key(),
        masking_key=b"k" * 32,
        spool_dir=tmp_path / "spool",
    )


def test_record_masker_for_covers_exactly_the_missing_types(link):
    assert link.record_masker_for(frozenset(RECORD_ENTITY_TYPES)) is None
    extra = link.record_masker_for(frozenset({EMAIL}))
    assert extra is not None
    assert EMAIL not in extra.entity_types
    assert set(extra.entity_types) == set(RECORD_ENTITY_TYPES) - {EMAIL}
    assert link.record_masker_for(frozenset({EMAIL})) is extra  # cached


def test_a_target_rule_for_emails_only_still_records_no_ssn_or_key(link):
    email_only = Masker([MaskingRule(id=1, name="e", entity_types=[EMAIL])], hash_key=b"k")
    body = json.dumps({"email": "ann@example.com", "ssn": SSN, "note": f"key {AWS_KEY}"})
    masked = email_only.mask_body(body.encode(), "application/json").body
    assert SSN.encode() in masked and AWS_KEY.encode() in masked  # the wire keeps them

    flow = tflow.tflow(
        req=tutils.treq(
            path=f"/v1/x?ssn={SSN}",
            content=body.encode(),
            headers=[(b"content-type", b"application/json")],
        ),
        resp=tutils.tresp(content=body.encode(), headers=[(b"content-type", b"application/json")]),
    )
    st = state_of(flow)
    st.request_record = masked
    st.request_url_record = f"http://upstream.test/v1/x?ssn={SSN}"
    st.request_covered = frozenset(email_only.entity_types)
    st.response_record = masked
    st.response_covered = frozenset(email_only.entity_types)

    recorder = Recorder(link)
    url, request_body = recorder._request_record(flow, st)
    response_body = recorder._response_record(flow, st)
    for recorded in (url.encode(), request_body, response_body):
        assert SSN.encode() not in recorded
        assert AWS_KEY.encode() not in recorded
    assert b"[EMAIL]" in request_body and json.loads(request_body)["ssn"] == "[US_SSN]"


def test_remask_url_keeps_scheme_host_and_masks_path_and_query(link):
    extra = link.record_masker_for(frozenset())
    out = remask_url(extra, f"https://api.test/users/ann@example.com?ssn={SSN}&page=2")
    assert out.startswith("https://api.test/users/")
    assert "ann@example.com" not in out and SSN not in out and "page=2" in out


def test_recorded_headers_are_masked_and_credentials_redacted(link):
    from proxy_worker.recording import safe_headers

    flow = tflow.tflow(
        req=tutils.treq(
            headers=[
                (b"x-note", b"ssn " + SSN.encode()),
                (b"authorization", b"Bearer gh_secret"),
                (b"x-trace", b"abc"),
            ]
        )
    )
    out = safe_headers(flow.request.headers, None, link.record_masker)
    assert out["x-note"] == "ssn [US_SSN]"
    assert out["authorization"] == "[REDACTED]"
    assert out["x-trace"] == "abc"

"""The "Test a masking rule" page: admin only, htmx-submitted, nothing saved, escaped."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from controlplane.models import MaskingRule

pytestmark = pytest.mark.django_db

URL = "/console/masking/preview/"


def form_data(**over) -> dict:
    data = {
        "body": '{"email": "jane.doe@example.com", "note": "card 4111 1111 1111 1111"}',
        "content_type": "application/json",
        "entity_types": ["EMAIL", "CREDIT_CARD"],
        "field_names": "",
        "json_paths": "",
        "deny_list": "",
        "custom_pattern": "",
        "strategy": "redact",
        "phone_regions": "US,GB",
    }
    data.update(over)
    return data


@pytest.fixture
def admin(client, users):
    client.force_login(users["admin"])
    return client


def test_it_is_mounted_under_the_console():
    assert reverse("masking_preview") == URL


def test_it_shows_the_form_to_admins(admin):
    r = admin.get(URL)
    assert r.status_code == 200
    assert b"Test a masking rule" in r.content
    assert b'hx-post="/console/masking/preview/"' in r.content
    assert b"IN_AADHAAR (opt-in)" in r.content


@pytest.mark.parametrize("role", ["approver", "auditor", "outsider"])
def test_it_forbids_other_roles(client, users, role):
    client.force_login(users[role])
    assert client.get(URL).status_code == 403
    assert client.post(URL, form_data()).status_code == 403


def test_it_redirects_anonymous_users_to_sign_in(client):
    r = client.get(URL)
    assert r.status_code == 302 and "login" in r["Location"]


def test_it_rejects_other_methods(admin):
    assert admin.put(URL).status_code == 405


def test_it_masks_the_sample_and_lists_findings(admin):
    r = admin.post(URL, form_data())
    assert r.status_code == 200
    html = r.content.decode()
    assert "jane.doe@example.com" not in html.split('id="preview-result"')[1]
    assert "[EMAIL]" in html and "[CREDIT_CARD]" in html
    assert "<code>$.email</code>" in html and "<code>$.note</code>" in html
    assert MaskingRule.objects.count() == 0  # nothing saved


def test_htmx_post_returns_only_the_result(admin):
    r = admin.post(URL, form_data(), HTTP_HX_REQUEST="true")
    assert r.status_code == 200
    html = r.content.decode()
    assert html.lstrip().startswith('<section id="preview-result"')
    assert "<form" not in html and "[EMAIL]" in html


def test_rule_fields_are_applied(admin):
    r = admin.post(
        URL,
        form_data(
            body='{"customers": [{"address": "1 Main St"}], "ssn": "x", "t": "Falcon"}',
            entity_types=[],
            field_names="ssn",
            json_paths="$.customers[*].address",
            deny_list="falcon",
            strategy="hash",
        ),
        HTTP_HX_REQUEST="true",
    )
    html = r.content.decode()
    assert "1 Main St" not in html and "Falcon" not in html
    assert html.count("[REDACTED:") == 2 and "[PREVIEW:" in html


def test_output_is_escaped(admin):
    r = admin.post(
        URL,
        form_data(body="<script>alert(1)</script> jane@example.com", content_type="text/html"),
        HTTP_HX_REQUEST="true",
    )
    html = r.content.decode()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; [EMAIL]" in html


def test_invalid_rules_and_unmaskable_samples_are_explained(admin):
    r = admin.post(URL, form_data(custom_pattern="("), HTTP_HX_REQUEST="true")
    assert b"The rule is invalid" in r.content
    r = admin.post(URL, form_data(content_type="image/png"), HTTP_HX_REQUEST="true")
    assert b"cannot be masked" in r.content
    r = admin.post(URL, form_data(entity_types=[]), HTTP_HX_REQUEST="true")
    assert b"masks nothing" in r.content
    r = admin.post(URL, form_data(body="x" * (300 * 1024)), HTTP_HX_REQUEST="true")
    assert b"larger than" in r.content


def test_csrf_is_enforced(users):
    c = Client(enforce_csrf_checks=True)
    c.force_login(users["admin"])
    assert c.post(URL, form_data()).status_code == 403
    page = c.get(URL)
    token = page.context["csrf_token"]
    assert c.post(URL, form_data(csrfmiddlewaretoken=str(token))).status_code == 200

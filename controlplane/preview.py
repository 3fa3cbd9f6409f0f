"""The "Test a masking rule" page: an admin pastes a sample body, sets the rule's fields
and sees the masked result and the findings, before saving anything.

It runs the same engine the proxy uses (:mod:`proxy_worker.masking`), in the web
process, on a body of at most :data:`MAX_PREVIEW_BYTES`. Nothing is saved and nothing is
sent to the workers. The hash strategy uses a preview-only key derived from
``SECRET_KEY``, so preview tokens never match the tokens in recorded exchanges.
"""

from __future__ import annotations

import hashlib

from django import forms
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from controlplane.roles import ADMIN, role_required
from proxy_worker.masking import (
    DEFAULT_ENTITY_TYPES,
    DEFAULT_PHONE_REGIONS,
    ENTITY_TYPES,
    REGIONAL_ENTITY_TYPES,
    STRATEGIES,
    Masker,
    MaskingConfigError,
    MaskingError,
    MaskingRule,
    summarise,
)

#: Largest sample body the preview masks (bytes, UTF-8).
MAX_PREVIEW_BYTES = 256 * 1024

CONTENT_TYPES = (
    "application/json",
    "application/x-ndjson",
    "application/x-www-form-urlencoded",
    "text/plain",
    "text/event-stream",
)

SAMPLE_BODY = (
    '{"customer": {"name": "Jane Doe", "email": "jane.doe@example.com", '
    '"phone": "+1 650-253-0000", "card": "4111 1111 1111 1111"}, '
    '"note": "call me at 030 901820, key sk_live_4eC39HqLyjWDarjtT1zdp7dc"}'
)


def _lines(value: str) -> tuple[str, ...]:
    """Non-blank lines (commas also separate field names)."""
    return tuple(p.strip() for p in value.replace("\r", "").split("\n") if p.strip())


class MaskingPreviewForm(forms.Form):
    """A sample body and the fields of one masking rule (as in ``MaskingRule``)."""

    body = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "false"}),
        initial=SAMPLE_BODY,
        help_text=f"At most {MAX_PREVIEW_BYTES // 1024} KiB.",
    )
    content_type = forms.CharField(
        initial="application/json",
        max_length=200,
        help_text="Content-Type header of the sample, e.g. " + ", ".join(CONTENT_TYPES),
    )
    entity_types = forms.MultipleChoiceField(
        choices=[(t, f"{t} (opt-in)" if t in REGIONAL_ENTITY_TYPES else t) for t in ENTITY_TYPES],
        initial=list(DEFAULT_ENTITY_TYPES),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    field_names = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="JSON/form field names masked whole, one per line or comma-separated.",
    )
    json_paths = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="JSONPath expressions masked whole, one per line, e.g. $.customers[*].address",
    )
    deny_list = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Words or phrases always masked, one per line.",
    )
    custom_pattern = forms.CharField(required=False, max_length=500)
    strategy = forms.ChoiceField(choices=[(s, s) for s in STRATEGIES], initial="redact")
    phone_regions = forms.CharField(
        required=False,
        initial=",".join(DEFAULT_PHONE_REGIONS),
        help_text="Regions for national phone formats (the workers' GATEHOUSE_PHONE_REGIONS).",
    )

    def clean_body(self) -> str:
        body = self.cleaned_data["body"]
        if len(body.encode("utf-8")) > MAX_PREVIEW_BYTES:
            raise forms.ValidationError(f"The sample is larger than {MAX_PREVIEW_BYTES} bytes.")
        return body

    def rule(self) -> MaskingRule:
        """The rule described by the form (call after ``is_valid()``)."""
        d = self.cleaned_data
        return MaskingRule(
            id=0,
            name="preview",
            entity_types=tuple(d["entity_types"]),
            field_names=tuple(
                p.strip() for line in _lines(d["field_names"]) for p in line.split(",") if p.strip()
            ),
            strategy=d["strategy"],
            custom_pattern=d["custom_pattern"] or None,
            json_paths=_lines(d["json_paths"]),
            deny_list=_lines(d["deny_list"]),
        )

    def regions(self) -> tuple[str, ...]:
        raw = self.cleaned_data.get("phone_regions") or ""
        return tuple(r.strip().upper() for r in raw.split(",") if r.strip())


def _preview_key() -> bytes:
    return hashlib.sha256(b"gatehouse-masking-preview:" + settings.SECRET_KEY.encode()).digest()


@require_http_methods(["GET", "POST"])
@role_required(ADMIN)
def masking_preview(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST (htmx or plain): the masked sample and its findings."""
    result = None
    if request.method == "POST":
        form = MaskingPreviewForm(request.POST)
        if form.is_valid():
            result = _run(form)
    else:
        form = MaskingPreviewForm()
    template = "controlplane/masking_preview.html"
    if getattr(request, "htmx", False):
        template += "#result"  # only the result section (a Django template partial)
    return render(request, template, {"form": form, "result": result})


def _run(form: MaskingPreviewForm) -> dict:
    """Mask the sample; returns the template's ``result`` (``error`` or output)."""
    try:
        masker = Masker(
            [form.rule()],
            hash_key=_preview_key(),
            phone_regions=form.regions(),
            max_body_bytes=MAX_PREVIEW_BYTES,
        )
        if not masker.enabled:
            return {"error": "This rule masks nothing: choose entity types or add fields."}
        r = masker.mask_body(
            form.cleaned_data["body"].encode("utf-8"), form.cleaned_data["content_type"]
        )
    except MaskingConfigError as e:
        return {"error": f"The rule is invalid: {e}"}
    except MaskingError as e:
        return {"error": f"The sample cannot be masked (the proxy would refuse it): {e}"}
    return {
        "body": r.body.decode("utf-8", "replace"),
        "handler": r.handler,
        "findings": summarise(r.findings),
        "count": len(r.findings),
    }

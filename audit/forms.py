"""The auditor's search form: filters and full-text search over recorded exchanges."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.postgres.search import SearchQuery
from django.db.models import QuerySet

from approvals.models import Decision
from audit.models import PROTOCOL_CHOICES, Exchange
from controlplane.models import Agent, Target
from proxy_worker.masking import ENTITY_TYPES
from proxy_worker.policy import STATEMENT_SEVERITY

DECISION_FILTERS = [
    ("", "any"),
    ("allowed", "allowed"),
    ("masked", "masked (allowed or approved, with findings)"),
    ("denied", "denied by a rule"),
    ("approved", "approved"),
    ("approval_denied", "approval denied"),
    ("expired", "approval expired"),
    ("error", "error"),
]

_DT_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]
_WORD = re.compile(r"[^\W_]+")


def search_query(text: str) -> SearchQuery | None:
    """A ``simple``-configuration query for ``text``; ``None`` if it has no word.

    The indexed document (:data:`audit.models.SEARCH_DOCUMENT_SQL`) splits the URL at
    every separator but parses bodies as they are, so the query matches either form:
    ``orders.json`` finds a URL containing ``orders`` and ``json`` *or* a body holding
    the token ``orders.json``. All words must occur; text in double quotes must occur
    as a phrase (adjacent words in that order).
    """
    text = text.strip()
    phrase = len(text) > 1 and text.startswith('"') and text.endswith('"')
    words = _WORD.findall(text)
    if not words:
        return None
    kind = "phrase" if phrase else "plain"
    split = SearchQuery(" ".join(words), config="simple", search_type=kind)
    raw = text.strip('"')
    if raw == " ".join(words):
        return split
    return split | SearchQuery(raw, config="simple", search_type=kind)


class DateTimeLocalInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self) -> None:
        super().__init__(format="%Y-%m-%dT%H:%M")


class SearchForm(forms.Form):
    """Every field is optional; :meth:`queryset` applies the ones given (all must match).

    Times are UTC. ``decision=masked`` means allowed or approved exchanges in which the
    masking engine found something. ``statement_kind`` keeps PostgreSQL statements whose
    worst kind (recorded in ``method``) is the one chosen; ``tool`` keeps MCP messages
    whose tool name (resource URI, prompt name) is exactly the one given.
    """

    q = forms.CharField(
        required=False,
        max_length=200,
        label="Words",
        help_text='In the URL, the masked bodies or the masked SQL; "quoted words" as a phrase',
    )
    start = forms.DateTimeField(
        required=False, input_formats=_DT_FORMATS, widget=DateTimeLocalInput(), label="From"
    )
    end = forms.DateTimeField(
        required=False, input_formats=_DT_FORMATS, widget=DateTimeLocalInput(), label="To"
    )
    agent = forms.ModelChoiceField(Agent.objects.order_by("name"), required=False)
    target = forms.ModelChoiceField(Target.objects.order_by("slug"), required=False)
    protocol = forms.ChoiceField(choices=[("", "any"), *PROTOCOL_CHOICES], required=False)
    statement_kind = forms.ChoiceField(
        choices=[("", "any"), *((k, k) for k in sorted(STATEMENT_SEVERITY))],
        required=False,
        label="Statement kind",
    )
    tool = forms.CharField(
        required=False,
        max_length=300,
        label="MCP tool",
        help_text="An MCP tool name (or resource URI, prompt name), exactly",
    )
    decision = forms.ChoiceField(choices=DECISION_FILTERS, required=False)
    status = forms.IntegerField(required=False, min_value=100, max_value=599, label="Status")
    approver = forms.ModelChoiceField(
        get_user_model().objects.filter(approval_decisions__isnull=False).distinct(),
        required=False,
        to_field_name="username",
    )
    entity_type = forms.ChoiceField(
        choices=[("", "any")] + [(t, t) for t in ENTITY_TYPES],
        required=False,
        label="Masked type",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end and start > end:
            raise forms.ValidationError("'From' is after 'To'.")
        return data

    def params(self) -> dict[str, str]:
        """The submitted filters as strings (to store with an export job)."""
        return {k: str(v) for k, v in self.data.items() if k in self.fields and v not in ("", None)}

    def queryset(self) -> QuerySet[Exchange]:
        """Matching exchanges, newest first. Call after ``is_valid()``."""
        d = self.cleaned_data
        qs = Exchange.objects.all()
        query = search_query(d.get("q") or "")
        if query is not None:
            qs = qs.filter(search_vector=query)
        if d.get("start"):
            qs = qs.filter(started_at__gte=d["start"])
        if d.get("end"):
            qs = qs.filter(started_at__lte=d["end"])
        if d.get("agent"):
            qs = qs.filter(agent=d["agent"])
        if d.get("target"):
            qs = qs.filter(target=d["target"])
        if d.get("protocol"):
            qs = qs.filter(protocol=d["protocol"])
        if d.get("statement_kind"):
            qs = qs.filter(protocol="postgres", method=d["statement_kind"])
        if d.get("tool"):
            qs = qs.filter(protocol="mcp", details__tool=d["tool"])
        decision = d.get("decision")
        if decision == "masked":
            qs = qs.filter(decision__in=["allowed", "approved"]).exclude(finding_types=[])
        elif decision:
            qs = qs.filter(decision=decision)
        if d.get("status") is not None:
            qs = qs.filter(status_code=d["status"])
        if d.get("approver"):
            decided = Decision.objects.filter(user=d["approver"]).values("approval_request_id")
            qs = qs.filter(approval_id__in=decided)
        if d.get("entity_type"):
            qs = qs.filter(finding_types__contains=[d["entity_type"]])
        return qs.order_by("-started_at", "-id")

    def has_filters(self) -> bool:
        return any(v not in (None, "") for v in getattr(self, "cleaned_data", {}).values())

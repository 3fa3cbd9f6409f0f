"""Forms of the approver's pages: the decision, and the history filters."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from approvals.actions import GRANT_MAX_MINUTES
from approvals.models import ApprovalRequest
from controlplane.models import Agent, Target
from controlplane.roles import APPROVER

#: Grant durations offered on "Approve with grant" (minutes, label).
GRANT_DURATIONS = [
    (5, "5 minutes"),
    (15, "15 minutes"),
    (60, "1 hour"),
    (240, "4 hours"),
    (480, "8 hours"),
    (GRANT_MAX_MINUTES, "24 hours"),
]


class DecideForm(forms.Form):
    """``verdict``: ``approve``, ``deny`` or ``grant`` (approve and leave a grant of
    ``grant_minutes`` for requests matching ``grant_path_pattern``, a glob starting with
    ``/``; empty = exactly this request's path)."""

    verdict = forms.ChoiceField(
        choices=[("approve", "Approve"), ("deny", "Deny"), ("grant", "Approve with grant")]
    )
    comment = forms.CharField(required=False, max_length=2000)
    grant_minutes = forms.TypedChoiceField(
        choices=GRANT_DURATIONS, coerce=int, required=False, empty_value=None
    )
    grant_path_pattern = forms.CharField(required=False, max_length=500, strip=True)

    def clean(self) -> dict:
        data = super().clean()
        if data.get("verdict") == "grant":
            if not data.get("grant_minutes"):
                self.add_error("grant_minutes", "choose how long the grant lasts")
            pattern = data.get("grant_path_pattern") or ""
            if pattern and not pattern.startswith("/"):
                self.add_error("grant_path_pattern", "a path pattern starts with '/'")
        else:
            data["grant_minutes"] = None
            data["grant_path_pattern"] = ""
        return data


class HistoryForm(forms.Form):
    """Filters of the history page; every field is optional (GET parameters)."""

    status = forms.ChoiceField(
        choices=[("", "Any status"), *ApprovalRequest.Status.choices], required=False
    )
    target = forms.ModelChoiceField(
        Target.objects.order_by("slug"), required=False, empty_label="Any target"
    )
    agent = forms.ModelChoiceField(
        Agent.objects.order_by("name"), required=False, empty_label="Any agent"
    )
    approver = forms.ModelChoiceField(
        get_user_model().objects.filter(groups__name=APPROVER).distinct().order_by("username"),
        required=False,
        empty_label="Any approver",
    )
    since = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    until = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )

    def clean(self) -> dict:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", "must be after 'since'")
        return data

    def apply(self, qs: QuerySet[ApprovalRequest]) -> QuerySet[ApprovalRequest]:
        """``qs`` narrowed by the valid filters (call after ``is_valid()``)."""
        data = self.cleaned_data
        if data.get("status"):
            qs = qs.filter(status=data["status"])
        if data.get("target"):
            qs = qs.filter(target=data["target"])
        if data.get("agent"):
            qs = qs.filter(agent=data["agent"])
        if data.get("approver"):
            qs = qs.filter(decisions__user=data["approver"]).distinct()
        if data.get("since"):
            qs = qs.filter(requested_at__gte=data["since"])
        if data.get("until"):
            qs = qs.filter(requested_at__lte=data["until"])
        return qs

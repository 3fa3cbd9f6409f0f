"""Forms of the approver's pages: the decision, and the history filters."""

from __future__ import annotations

import re
from typing import Any

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


#: At most this many table globs in one grant.
GRANT_TABLES_MAX = 50
#: One relation name glob (``public.orders``, ``order_*``, ``pg_catalog.*``,
#: ``[[]weird]``): one or two dot-separated parts, each non-empty, of glob characters and
#: what unquoted or quoted identifiers hold, no white space, comma or control character.
_TABLE_PART = r"[^\s.,\x00-\x1f\x7f]{1,100}"
TABLE_GLOB = re.compile(rf"{_TABLE_PART}(?:\.{_TABLE_PART})?")


#: A grant's tool name (resource URI, prompt name) glob, as access rules' ``tool_names``.
TOOL_GLOB = re.compile(r"[^\s,\x00-\x1f\x7f]{1,300}")


def parse_table_globs(text: str) -> list[str]:
    """Table globs from an approver's input (separated by commas or white space),
    lower-cased (workers compare names in lower case) and deduplicated in order.

    Raises ``forms.ValidationError`` naming the first glob that is not a relation
    name glob (:data:`TABLE_GLOB`), or when there are more than :data:`GRANT_TABLES_MAX`.
    """
    out: list[str] = []
    for raw in re.split(r"[\s,]+", text.strip()):
        if not raw:
            continue
        glob = raw.lower()
        if not TABLE_GLOB.fullmatch(glob):
            raise forms.ValidationError(
                f"{raw[:60]!r} is not a table glob (schema.name or name, with * ? [...])"
            )
        if glob not in out:
            out.append(glob)
    if len(out) > GRANT_TABLES_MAX:
        raise forms.ValidationError(f"at most {GRANT_TABLES_MAX} table globs")
    return out


class DecideForm(forms.Form):
    """``verdict``: ``approve``, ``deny`` or ``grant`` (approve and leave a grant of
    ``grant_minutes``). The grant covers, for HTTP requests, paths matching
    ``grant_path_pattern`` (a glob starting with ``/``; empty = exactly this request's
    path); for SQL statements (``req`` given and ``req.is_sql``), the statement's kind
    on relations matching ``grant_tables`` (globs separated by commas or spaces; empty =
    exactly the statement's tables; ``*`` = any table); for MCP calls (``req.is_mcp``),
    calls of the same JSON-RPC method whose tool name matches ``grant_path_pattern`` (a
    case-sensitive glob; empty = exactly this call's tool). ``cleaned_data["grant_tables"]``
    is a list.
    """

    verdict = forms.ChoiceField(
        choices=[("approve", "Approve"), ("deny", "Deny"), ("grant", "Approve with grant")]
    )
    comment = forms.CharField(required=False, max_length=2000)
    grant_minutes = forms.TypedChoiceField(
        choices=GRANT_DURATIONS, coerce=int, required=False, empty_value=None
    )
    grant_path_pattern = forms.CharField(required=False, max_length=500, strip=True)
    grant_tables = forms.CharField(required=False, max_length=5000, strip=True)

    def __init__(self, *args: Any, req: ApprovalRequest | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.req = req

    def clean_grant_tables(self) -> list[str]:
        return parse_table_globs(self.cleaned_data.get("grant_tables") or "")

    def clean(self) -> dict:
        data = super().clean()
        sql = self.req is not None and self.req.is_sql
        if data.get("verdict") == "grant":
            if not data.get("grant_minutes"):
                self.add_error("grant_minutes", "choose how long the grant lasts")
            pattern = data.get("grant_path_pattern") or ""
            if sql:
                data["grant_path_pattern"] = ""
                if "grant_tables" in data and not data["grant_tables"] and not self.req.tables:
                    self.add_error(
                        "grant_tables",
                        "this statement names no table: list the tables the grant covers "
                        "(* for any table)",
                    )
            elif self.req is not None and self.req.is_mcp:
                if pattern and not TOOL_GLOB.fullmatch(pattern):
                    self.add_error(
                        "grant_path_pattern",
                        "a tool name glob has no spaces, commas or control characters",
                    )
                elif not pattern and not self.req.tool:
                    self.add_error(
                        "grant_path_pattern",
                        "this call names no tool: give the tool names the grant covers (* for any)",
                    )
            elif pattern and not pattern.startswith("/"):
                self.add_error("grant_path_pattern", "a path pattern starts with '/'")
            if not sql:
                data["grant_tables"] = []
        else:
            data["grant_minutes"] = None
            data["grant_path_pattern"] = ""
            data["grant_tables"] = []
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

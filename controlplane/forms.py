"""Forms for the policy models, shared by the console and Django admin.

Credentials are write-only: the credential field never renders a value back, and
leaving it blank keeps the stored one.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from controlplane.models import AccessRule, Agent, AgentGroup, MaskingRule, Target
from controlplane.roles import ROLES


class CommaListField(forms.CharField):
    """A list of strings entered as comma-separated text (``"GET, POST"`` → list)."""

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(value)
        return value

    def to_python(self, value) -> list[str]:
        text = super().to_python(value) or ""
        return [part.strip() for part in text.split(",") if part.strip()]


class LineListField(forms.CharField):
    """A list of strings entered one per line (for values that may contain commas)."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return "\n".join(value)
        return value

    def to_python(self, value) -> list[str]:
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]


def approver_groups():
    """Groups that can approve: every Django group except the built-in role groups
    (``approver`` itself stays selectable: it is the default approver group)."""
    return Group.objects.exclude(name__in=[r for r in ROLES if r != "approver"])


class TargetForm(forms.ModelForm):
    """Target form with a write-only credential: never rendered back, blank keeps it."""

    credential = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Injected upstream on every request. Write-only: leave blank to keep the "
        "stored one.",
    )
    clear_credential = forms.BooleanField(required=False, label="Remove the stored credential")

    class Meta:
        model = Target
        fields = [
            "name",
            "slug",
            "upstream_url",
            "auth_header",
            "auth_scheme",
            "credential",
            "clear_credential",
            "default_action",
            "approval_timeout",
            "approver_group",
            "binary_bodies",
            "retention_days",
        ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["approver_group"].queryset = approver_groups()

    def save(self, commit: bool = True) -> Target:
        target = super().save(commit=False)
        if self.cleaned_data.get("clear_credential"):
            target.set_credential("")
        elif self.cleaned_data.get("credential"):
            target.set_credential(self.cleaned_data["credential"])
        if commit:
            target.save()
        return target


class AgentForm(forms.ModelForm):
    """An agent (tokens are issued separately and shown once)."""

    class Meta:
        model = Agent
        fields = ["name", "description", "owner", "is_active", "groups", "oidc_subject"]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "groups": forms.CheckboxSelectMultiple,
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = get_user_model().objects.filter(is_active=True)


class AgentGroupForm(forms.ModelForm):
    class Meta:
        model = AgentGroup
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class TokenIssueForm(forms.Form):
    """Options for a new agent token."""

    expires_in_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=3650,
        help_text="Days until the token stops working; empty = no expiry (not recommended)",
    )


class MaskingRuleForm(forms.ModelForm):
    entity_types = CommaListField(
        required=False,
        help_text=MaskingRule._meta.get_field("entity_types").help_text,
    )
    field_names = CommaListField(
        required=False, help_text=MaskingRule._meta.get_field("field_names").help_text
    )
    json_paths = LineListField(
        required=False, help_text="One JSONPath per line, e.g. $.customers[*].address"
    )
    deny_list = LineListField(
        required=False, help_text="One word or phrase per line, always masked"
    )

    class Meta:
        model = MaskingRule
        fields = [
            "name",
            "entity_types",
            "field_names",
            "json_paths",
            "deny_list",
            "custom_pattern",
            "strategy",
            "direction",
            "targets",
            "agent_groups",
            "is_active",
        ]
        widgets = {
            "targets": forms.CheckboxSelectMultiple,
            "agent_groups": forms.CheckboxSelectMultiple,
        }

    def clean_entity_types(self) -> list[str]:
        return [t.upper() for t in self.cleaned_data["entity_types"]]


class AccessRuleForm(forms.ModelForm):
    methods = CommaListField(required=False, help_text="e.g. GET, POST; empty = any")

    class Meta:
        model = AccessRule
        fields = [
            "name",
            "position",
            "target",
            "agents",
            "agent_groups",
            "methods",
            "path_pattern",
            "query_pattern",
            "body_pattern",
            "action",
            "reason",
            "approval_mode",
            "required_approvals",
            "approval_timeout",
            "retry_window",
            "approver_group",
            "notify_webhook_url",
            "notify_slack_url",
            "notify_email",
            "is_active",
        ]
        widgets = {
            "agents": forms.CheckboxSelectMultiple,
            "agent_groups": forms.CheckboxSelectMultiple,
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["approver_group"].queryset = approver_groups()

    def clean_required_approvals(self) -> int:
        n = self.cleaned_data["required_approvals"]
        if n < 1:
            raise forms.ValidationError("at least one approval is required")
        return n


class ApproverGroupForm(forms.ModelForm):
    """A Django group whose members may approve the rules and targets that name it."""

    members = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.filter(is_active=True),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = Group
        fields = ["name"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["members"].initial = self.instance.user_set.all()

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if name in ROLES and name != "approver":
            raise forms.ValidationError(f"{name!r} is a role, not an approver group")
        return name

    def save(self, commit: bool = True) -> Group:
        group = super().save(commit=commit)
        if commit:
            group.user_set.set(self.cleaned_data["members"])
        return group


class PolicyImportForm(forms.Form):
    """A policy YAML document to validate, diff and (on confirm) apply."""

    document = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 18, "spellcheck": "false"}),
        required=False,
        help_text="Paste the YAML, or upload a file below",
    )
    upload = forms.FileField(required=False)
    prune = forms.BooleanField(
        required=False, help_text="Delete objects that the document does not name"
    )
    apply = forms.BooleanField(required=False, widget=forms.HiddenInput)

    MAX_BYTES = 2 * 1024 * 1024

    def clean(self):
        data = super().clean()
        upload = data.get("upload")
        if upload:
            if upload.size > self.MAX_BYTES:
                raise forms.ValidationError("the file is larger than 2 MiB")
            try:
                data["document"] = upload.read().decode("utf-8")
            except UnicodeDecodeError as e:
                raise forms.ValidationError("the file is not UTF-8 text") from e
        if not data.get("document", "").strip():
            raise forms.ValidationError("paste a policy document or upload a file")
        return data

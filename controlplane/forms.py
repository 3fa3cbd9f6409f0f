"""Forms for the policy models, shared by the console and Django admin.

Credentials are write-only: the credential field never renders a value back, and
leaving it blank keeps the stored one.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from controlplane.models import MCP_METHODS, AccessRule, Agent, AgentGroup, MaskingRule, Target
from controlplane.roles import ROLES
from proxy_worker.policy import STATEMENT_SEVERITY


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


class Fieldset:
    """A group of a form's fields rendered as one ``<fieldset>``.

    ``kind`` (``"http"``, ``"postgres"``, ``"mcp"``, several separated by spaces, or
    ``""`` for always) becomes ``data-kind`` on the fieldset:
    ``static/controlplane/kinds.js`` shows only the fieldsets of the selected kind (and
    every fieldset holding an error). Without JavaScript every fieldset shows and the
    server validates the same way.
    """

    def __init__(self, legend: str, fields: list, kind: str = "", hint: str = "") -> None:
        self.legend = legend
        self.fields = fields
        self.kind = kind
        self.hint = hint

    @property
    def has_errors(self) -> bool:
        return any(f.errors for f in self.fields)


class FieldsetsMixin(forms.BaseForm):
    """Forms rendered as fieldsets (``_form.html``): ``fieldset_layout`` lists
    ``(legend, kind, field names, hint)``; fields it does not name go in a last fieldset
    without legend."""

    fieldset_layout: tuple[tuple[str, str, tuple[str, ...], str], ...] = ()

    def fieldsets(self) -> list[Fieldset]:
        named: set[str] = set()
        out = []
        for legend, kind, names, hint in self.fieldset_layout:
            present = [n for n in names if n in self.fields]
            named.update(present)
            out.append(Fieldset(legend, [self[n] for n in present], kind, hint))
        rest = [self[n] for n in self.fields if n not in named]
        if rest:
            out.append(Fieldset("", rest))
        return out


class KindSelect(forms.Select):
    """A select of targets whose options carry ``data-kind`` (the target's kind), so that
    the access rule form can show the conditions that apply to the chosen target."""

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            option["attrs"]["data-kind"] = instance.kind
        return option


def approver_groups():
    """Groups that can approve: every Django group except the built-in role groups
    (``approver`` itself stays selectable: it is the default approver group)."""
    return Group.objects.exclude(name__in=[r for r in ROLES if r != "approver"])


class TargetForm(FieldsetsMixin, forms.ModelForm):
    """Target form with a write-only credential: never rendered back, blank keeps it.

    The HTTP, MCP and PostgreSQL fields are in fieldsets of their kind (an MCP server
    also has the HTTP upstream fields: it is reached over HTTP); the credential is
    labelled "Database password" for PostgreSQL targets (the kind posted, else the
    stored one; the script relabels it when the kind changes).
    """

    CREDENTIAL_LABELS = {"http": "Credential", "mcp": "Credential", "postgres": "Database password"}

    credential = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(
            render_value=False,
            attrs={
                "autocomplete": "new-password",
                "data-label-http": CREDENTIAL_LABELS["http"],
                "data-label-mcp": CREDENTIAL_LABELS["mcp"],
                "data-label-postgres": CREDENTIAL_LABELS["postgres"],
            },
        ),
        help_text="HTTP and MCP: injected upstream on every request. PostgreSQL: the "
        "password of the upstream user. Write-only: leave blank to keep the stored one.",
    )
    clear_credential = forms.BooleanField(required=False, label="Remove the stored credential")

    fieldset_layout = (
        ("", "", ("name", "slug", "kind"), ""),
        ("HTTP upstream", "http mcp", ("upstream_url", "auth_header", "auth_scheme"), ""),
        (
            "MCP server",
            "mcp",
            ("mcp_block_changed_tools", "mcp_allow_server_requests"),
            "The upstream URL is the server's MCP endpoint (streamable HTTP). The gateway "
            "reads each JSON-RPC call: access rules by tool and arguments, tool results "
            "masked, tools/list answers without the tools this agent may not call.",
        ),
        (
            "PostgreSQL upstream",
            "postgres",
            (
                "pg_host",
                "pg_port",
                "pg_database",
                "pg_user",
                "pg_sslmode",
                "pg_ca_pem",
                "pg_allow_plaintext",
            ),
            "Agents connect with postgresql://<agent>:<token>@<gateway>:6432/<slug>; "
            "the gateway logs in upstream as this user.",
        ),
        ("Credential", "", ("credential", "clear_credential"), ""),
    )

    class Meta:
        model = Target
        fields = [
            "name",
            "slug",
            "kind",
            "upstream_url",
            "auth_header",
            "auth_scheme",
            "pg_host",
            "pg_port",
            "pg_database",
            "pg_user",
            "pg_sslmode",
            "pg_ca_pem",
            "pg_allow_plaintext",
            "mcp_block_changed_tools",
            "mcp_allow_server_requests",
            "credential",
            "clear_credential",
            "default_action",
            "approval_timeout",
            "approver_group",
            "binary_bodies",
            "retention_days",
        ]
        widgets = {
            "kind": forms.Select(attrs={"data-kind-switch": "target"}),
            "pg_port": forms.NumberInput(attrs={"min": 1, "max": 65535}),
            "pg_ca_pem": forms.Textarea(
                attrs={
                    "rows": 4,
                    "spellcheck": "false",
                    "placeholder": "-----BEGIN CERTIFICATE-----",
                }
            ),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["approver_group"].queryset = approver_groups()
        # A post without the kind, port or TLS mode (an older client, a script) keeps the
        # stored value; for a new target the model's default ("http", 5432, "prefer").
        for name in ("kind", "pg_port", "pg_sslmode"):
            self.fields[name].required = False
        kind = self.data.get("kind") if self.is_bound else None
        if kind not in self.CREDENTIAL_LABELS:
            kind = self.instance.kind
        self.fields["credential"].label = self.CREDENTIAL_LABELS.get(kind, "Credential")

    def clean_kind(self) -> str:
        return self.cleaned_data.get("kind") or self.instance.kind or "http"

    def clean_pg_port(self) -> int:
        return self.cleaned_data.get("pg_port") or self.instance.pg_port or 5432

    def clean_pg_sslmode(self) -> str:
        return self.cleaned_data.get("pg_sslmode") or self.instance.pg_sslmode or "prefer"

    def clean(self):
        data = super().clean()
        if data.get("kind") != "mcp":
            # The MCP fieldset is hidden for other kinds, and an unticked checkbox posts
            # nothing: keep the stored settings (a new target: the model's defaults), so
            # a target switched to MCP later still blocks changed tools unless told not to.
            for name in ("mcp_block_changed_tools", "mcp_allow_server_requests"):
                data[name] = getattr(self.instance, name)
        return data

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


#: Statement kind choices, most severe first, with what each covers.
STATEMENT_KIND_HELP = {
    "DDL": "CREATE, ALTER, DROP, …",
    "GRANT": "GRANT, REVOKE, …",
    "LOAD": "LOAD a shared library",
    "DO": "anonymous code blocks",
    "TRUNCATE": "TRUNCATE",
    "DELETE": "DELETE",
    "MERGE": "MERGE",
    "UPDATE": "UPDATE",
    "INSERT": "INSERT",
    "CALL": "CALL a procedure",
    "FASTPATH": "the legacy function-call message",
    "COPY": "COPY to or from the client",
    "LOCK": "LOCK TABLE",
    "MAINTENANCE": "VACUUM, ANALYZE, REINDEX, …",
    "SELECT": "queries",
    "EXECUTE": "EXECUTE a prepared statement",
    "CURSOR": "DECLARE, FETCH, CLOSE, …",
    "PREPARE": "PREPARE, DEALLOCATE, …",
    "EXPLAIN": "EXPLAIN",
    "LISTEN": "LISTEN, NOTIFY, …",
    "SET": "SET, RESET, …",
    "SHOW": "SHOW",
    "TRANSACTION": "BEGIN, COMMIT, ROLLBACK, …",
    "UTILITY": "anything else",
}


def _kind_label(kind: str) -> str:
    what = STATEMENT_KIND_HELP.get(kind, kind)
    return kind if what == kind else f"{kind} ({what})"


class AccessRuleForm(FieldsetsMixin, forms.ModelForm):
    """An access rule: HTTP conditions for HTTP targets, SQL conditions for PostgreSQL
    targets, MCP conditions for MCP servers (in fieldsets of their kind; the model refuses
    mixing them)."""

    methods = CommaListField(required=False, help_text="e.g. GET, POST; empty = any")
    mcp_methods = CommaListField(
        required=False,
        label="MCP methods",
        help_text="JSON-RPC methods, comma-separated, e.g. "
        f"{', '.join(MCP_METHODS[:3])}; empty = any",
        widget=forms.TextInput(attrs={"spellcheck": "false"}),
    )
    tool_names = CommaListField(
        required=False,
        help_text=AccessRule._meta.get_field("tool_names").help_text,
        widget=forms.TextInput(attrs={"spellcheck": "false"}),
    )
    statement_kinds = forms.MultipleChoiceField(
        required=False,
        choices=[(k, _kind_label(k)) for k in STATEMENT_SEVERITY],
        widget=forms.CheckboxSelectMultiple(attrs={"class": "statement-kinds"}),
        help_text=AccessRule._meta.get_field("statement_kinds").help_text,
    )
    tables = CommaListField(
        required=False, help_text=AccessRule._meta.get_field("tables").help_text
    )
    functions = CommaListField(
        required=False, help_text=AccessRule._meta.get_field("functions").help_text
    )

    fieldset_layout = (
        ("", "", ("name", "position", "target", "agents", "agent_groups"), ""),
        (
            "HTTP conditions",
            "http",
            ("methods", "path_pattern", "query_pattern"),
            "For HTTP targets.",
        ),
        (
            "SQL conditions",
            "postgres",
            (
                "statement_kinds",
                "tables",
                "functions",
                "without_where",
                "without_limit",
                "parameter_pattern",
            ),
            "For PostgreSQL targets. Every condition set must hold; a rule cannot have "
            "both HTTP and SQL conditions.",
        ),
        (
            "MCP conditions",
            "mcp",
            ("mcp_methods", "tool_names", "argument_path", "argument_pattern"),
            "For MCP servers: each JSON-RPC call (a tool call, a resource read, …). Every "
            "condition set must hold; a rule cannot have both MCP and HTTP or SQL conditions.",
        ),
        ("Body", "", ("body_pattern",), ""),
    )

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
            "statement_kinds",
            "tables",
            "functions",
            "without_where",
            "without_limit",
            "parameter_pattern",
            "mcp_methods",
            "tool_names",
            "argument_path",
            "argument_pattern",
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
            "target": KindSelect(attrs={"data-kind-switch": "rule"}),
            "argument_path": forms.TextInput(
                attrs={"placeholder": "$.customer.email", "spellcheck": "false"}
            ),
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

"""MCP servers in the control plane: target and access-rule validation, the console and
admin forms, the compiled snapshot, and policy as code."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.urls import reverse

from controlplane.models import MCP_METHOD_SHAPE, MCP_METHODS, AccessRule, Target
from controlplane.policy_yaml import export_yaml, plan_import
from controlplane.snapshot import compile_snapshot

pytestmark = pytest.mark.django_db


def errors_of(obj) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as e:
        obj.full_clean()
    return e.value.message_dict


def mcp_target(**kw) -> Target:
    return Target(
        **{"name": "Tools", "slug": "tools", "kind": "mcp", "upstream_url": "https://t.example/mcp"}
        | kw
    )


@pytest.fixture
def targets(db):
    web = Target.objects.create(name="Web", slug="web", upstream_url="https://web.example")
    tools = mcp_target()
    tools.save()
    pg = Target.objects.create(
        name="Orders",
        slug="orders",
        kind="postgres",
        pg_host="db.internal",
        pg_database="orders",
        pg_user="app",
    )
    return web, tools, pg


def rule(**kw) -> AccessRule:
    return AccessRule(**{"name": "r", "action": "deny", **kw})


# --- targets ------------------------------------------------------------------------------


def test_an_mcp_target_needs_its_endpoint_url_and_defaults_to_safe_settings():
    errors = errors_of(mcp_target(upstream_url=""))
    assert errors["upstream_url"] == [
        "an MCP server needs an upstream URL: its base URL, e.g. https://tools.example.com "
        "(agents then post to /<slug>/mcp)"
    ]
    t = mcp_target()
    t.full_clean()
    assert t.mcp_block_changed_tools is True and t.mcp_allow_server_requests is False
    assert t.is_http_kind and t.upstream_display == "https://t.example/mcp"
    assert t.get_kind_display() == "MCP server (streamable HTTP)"
    assert not Target(kind="postgres").is_http_kind and Target(kind="http").is_http_kind


# --- access rules ---------------------------------------------------------------------------


def test_mcp_conditions_are_normalised_but_keep_their_case(targets):
    _, tools, _ = targets
    r = rule(
        target=tools,
        mcp_methods=[" tools/call", "tools/call", "resources/read "],
        tool_names=[" Lookup_*", "Lookup_*", "file:///etc/*"],
        argument_path=" $.customer.email ",
        argument_pattern=r"@example\.com$",
    )
    r.full_clean()
    assert r.mcp_methods == ["tools/call", "resources/read"]
    assert r.tool_names == ["Lookup_*", "file:///etc/*"]
    assert r.argument_path == "$.customer.email"
    assert r.mcp_conditions == ["mcp_methods", "tool_names", "argument_path", "argument_pattern"]
    assert r.http_conditions == [] and r.sql_conditions == []
    assert r.mcp_summary == (
        "tools/call, resources/read · tools Lookup_*, file:///etc/* · "
        r"arguments $.customer.email ~ /@example\.com$/"
    )
    assert rule(argument_pattern="x").mcp_summary == "arguments /x/"
    assert rule(argument_path="$.a").mcp_summary == "arguments $.a"


def test_the_known_methods_have_the_method_shape():
    assert all(MCP_METHOD_SHAPE.fullmatch(m) for m in MCP_METHODS)
    assert MCP_METHODS[:3] == ("tools/call", "resources/read", "prompts/get")


@pytest.mark.parametrize(
    "method",
    ["initialize", "ping", "logging/setLevel", "notifications/roots/list_changed", "x/y"],
)
def test_any_method_of_the_json_rpc_shape_is_accepted(targets, method):
    rule(target=targets[1], mcp_methods=[method]).full_clean()


@pytest.mark.parametrize(
    "method", ["Tools/call", "tools call", "tools//call", "/tools", "tools/", "tools/call()"]
)
def test_methods_of_another_shape_are_refused(targets, method):
    (message,) = errors_of(rule(target=targets[1], mcp_methods=[method]))["mcp_methods"]
    assert message.startswith(f"not a JSON-RPC method name: {method} (e.g. tools/call")


@pytest.mark.parametrize("glob", ["two words", "a,b", "tab\there", "nul\x00"])
def test_bad_tool_globs_are_refused(targets, glob):
    errors = errors_of(rule(target=targets[1], tool_names=[glob]))
    assert "not a tool name or URI glob" in errors["tool_names"][0]


@pytest.mark.parametrize("path", ["$[", "$.a[?(@.b", "$$", "$.a b"])
def test_a_bad_argument_path_is_refused_with_the_parsers_message(targets, path):
    (message,) = errors_of(rule(target=targets[1], argument_path=path))["argument_path"]
    assert message.startswith("not a JSONPath expression (e.g. $.customer.email")
    assert "Parse error" in message


def test_a_bad_argument_pattern_is_refused(targets):
    errors = errors_of(rule(target=targets[1], argument_pattern="(unclosed"))
    assert "not a valid regular expression" in errors["argument_pattern"][0]


@pytest.mark.parametrize(
    "mcp",
    [
        {"mcp_methods": ["tools/call"]},
        {"tool_names": ["x"]},
        {"argument_path": "$.a"},
        {"argument_pattern": "x"},
    ],
)
def test_mcp_conditions_only_on_mcp_servers(targets, mcp):
    web, tools, pg = targets
    (field,) = mcp
    errors = errors_of(rule(target=web, **mcp))
    assert set(errors) == {field}
    assert errors[field] == [
        "an MCP condition, but target 'web' is an HTTP API, not an MCP server: make the "
        "target's kind MCP server, or use HTTP conditions"
    ]
    errors = errors_of(rule(target=pg, **mcp))
    assert set(errors) == {field}
    assert "target 'orders' is a PostgreSQL database" in errors[field][0]
    rule(target=tools, **mcp).full_clean()
    rule(**mcp).full_clean()  # every target: it applies to the MCP calls among them


@pytest.mark.parametrize(
    "http", [{"methods": ["POST"]}, {"path_pattern": "/x"}, {"query_pattern": "q"}]
)
def test_mcp_and_http_conditions_do_not_mix(targets, http):
    _, tools, _ = targets
    (field,) = http
    errors = errors_of(rule(tool_names=["lookup_*"], **http))
    assert set(errors) == {"tool_names"}
    assert errors["tool_names"][0].startswith(
        "MCP conditions cannot be combined with HTTP conditions ("
    )
    # The gateway decides each call on an MCP server, never its HTTP requests: an HTTP
    # condition there would never match.
    for extra in ({}, {"tool_names": ["lookup_*"]}):
        errors = errors_of(rule(target=tools, **http, **extra))
        assert set(errors) == {field}
        assert errors[field] == [
            "an HTTP condition, but target 'tools' is an MCP server: its calls are decided by "
            "MCP conditions (MCP methods, tool names, arguments)"
        ]
    rule(target=tools, path_pattern="*").full_clean()  # "*" is no condition


def test_mcp_and_sql_conditions_do_not_mix(targets):
    _, tools, _ = targets
    errors = errors_of(rule(tool_names=["x"], tables=["t"]))
    assert set(errors) == {"tool_names"}
    assert errors["tool_names"] == [
        "MCP conditions cannot be combined with SQL conditions (tables): a call is one or "
        "the other; make two rules"
    ]
    errors = errors_of(rule(target=tools, statement_kinds=["DELETE"]))
    assert errors["statement_kinds"] == ["an SQL condition, but target 'tools' is an MCP server"]
    rule(target=tools, body_pattern="refund").full_clean()  # body_pattern applies to all


# --- console -------------------------------------------------------------------------------

MCP_FORM = {
    "name": "Tool server",
    "slug": "tools",
    "kind": "mcp",
    "upstream_url": "https://tools.internal/mcp",
    "auth_header": "Authorization",
    "auth_scheme": "Bearer",
    "credential": "mcp-s3cr3t-token",
    "mcp_allow_server_requests": "on",
    "default_action": "allow",
    "approval_timeout": "120",
    "binary_bodies": "refuse",
    "retention_days": "",
}


def mcp_rule_form(target, **kw):
    """The console's access-rule form data of an MCP rule on ``target`` (``target_pk``
    overrides the posted target: ``""`` for every target)."""
    return {
        "name": "refunds need a human",
        "position": "5",
        "target": kw.pop("target_pk", target.pk if target else ""),
        "path_pattern": "*",
        "mcp_methods": "tools/call",
        "tool_names": "refund_*, Lookup_Customer",
        "argument_path": "$.amount",
        "argument_pattern": "^[0-9]{4,}",
        "action": "approve",
        "reason": "large refunds",
        "approval_mode": "wait",
        "required_approvals": "1",
        "retry_window": "600",
        "is_active": "on",
        **kw,
    }


@pytest.fixture
def admin_client(client, users):
    client.force_login(users["admin"])
    return client


def test_an_mcp_target_is_created_listed_and_published(
    admin_client, redis_client, django_capture_on_commit_callbacks
):
    page = admin_client.get(reverse("console:create", args=["targets"])).content.decode()
    assert '<option value="mcp">MCP server (streamable HTTP)</option>' in page
    assert '<fieldset class="console-form" data-kind="mcp">' in page
    assert 'name="mcp_block_changed_tools"' in page and 'data-label-mcp="Credential"' in page
    with django_capture_on_commit_callbacks(execute=True):
        r = admin_client.post(reverse("console:create", args=["targets"]), MCP_FORM)
    assert r.status_code == 302, r.content
    t = Target.objects.get(slug="tools")
    assert (t.kind, t.upstream_url) == ("mcp", "https://tools.internal/mcp")
    # An unticked box is off: block_changed_tools was not posted.
    assert (t.mcp_block_changed_tools, t.mcp_allow_server_requests) == (False, True)
    assert t.has_credential and "mcp-s3cr3t" not in t.credential_encrypted
    listing = admin_client.get(reverse("console:list", args=["targets"])).content.decode()
    assert "MCP server (streamable HTTP)" in listing and "https://tools.internal/mcp" in listing
    from controlplane.redis import keys

    snapshot = json.loads(redis_client.get(keys().policy_snapshot))
    (entry,) = snapshot["targets"]
    assert entry["kind"] == "mcp"
    assert entry["mcp"] == {"block_changed_tools": False, "allow_server_requests": True}
    assert "mcp-s3cr3t-token" not in json.dumps(snapshot)
    edit = admin_client.get(reverse("console:edit", args=["targets", t.pk])).content.decode()
    assert "mcp-s3cr3t-token" not in edit
    assert '<label for="id_credential">Credential:</label>' in edit


def test_an_mcp_target_without_url_comes_back_with_the_error(admin_client):
    r = admin_client.post(
        reverse("console:create", args=["targets"]),
        {**MCP_FORM, "upstream_url": ""},
        HTTP_HX_REQUEST="true",
    )
    assert r.status_code == 422
    body = r.content.decode()
    assert "an MCP server needs an upstream URL" in body
    # The HTTP upstream fieldset is the MCP server's too; it holds the error.
    assert '<fieldset class="console-form" data-kind="http mcp" data-errors>' in body
    assert not Target.objects.filter(slug="tools").exists()


def test_saving_an_http_target_keeps_the_hidden_mcp_settings(admin_client, policy):
    from tests.controlplane.test_console import TARGET_FORM

    r = admin_client.post(
        reverse("console:edit", args=["targets", policy.target.pk]),
        {**TARGET_FORM, "slug": "customers", "kind": "http"},
    )
    assert r.status_code == 302, r.content
    policy.target.refresh_from_db()
    assert policy.target.mcp_block_changed_tools is True  # not turned off by the hidden box
    assert policy.target.mcp_allow_server_requests is False


def test_an_mcp_access_rule_is_created_and_listed(admin_client, targets):
    _, tools, _ = targets
    form = admin_client.get(reverse("console:create", args=["access-rules"])).content.decode()
    assert f'<option value="{tools.pk}" data-kind="mcp">tools</option>' in form
    assert '<fieldset class="console-form" data-kind="mcp">' in form
    assert 'name="tool_names"' in form and 'name="argument_path"' in form
    r = admin_client.post(reverse("console:create", args=["access-rules"]), mcp_rule_form(tools))
    assert r.status_code == 302, r.content
    rule = AccessRule.objects.get(name="refunds need a human")
    assert rule.mcp_methods == ["tools/call"]
    assert rule.tool_names == ["refund_*", "Lookup_Customer"]
    assert (rule.argument_path, rule.argument_pattern) == ("$.amount", "^[0-9]{4,}")
    listing = admin_client.get(reverse("console:list", args=["access-rules"])).content.decode()
    assert "tools/call · tools refund_*, Lookup_Customer · arguments $.amount ~ /^[0-9]{4,}/" in (
        listing
    )
    assert '<th scope="col">MCP</th>' in listing
    edit = admin_client.post(
        reverse("console:edit", args=["access-rules", rule.pk]),
        mcp_rule_form(tools, tool_names="", argument_path="", mcp_methods="resources/read"),
    )
    assert edit.status_code == 302
    rule.refresh_from_db()
    assert rule.mcp_methods == ["resources/read"] and rule.tool_names == []


def test_the_lists_say_which_rules_apply_to_mcp_calls(admin_client, targets):
    web, tools, pg = targets
    AccessRule.objects.create(name="http", target=web, methods=["GET"], action="deny")
    AccessRule.objects.create(name="sql", target=pg, tables=["t"], action="deny")
    AccessRule.objects.create(name="any", body_pattern="x", action="deny")
    AccessRule.objects.create(name="mcp", target=tools, tool_names=["t_*"], action="deny")
    from controlplane.console.views import RESOURCES, _table

    rows = {r["obj"].name: r["cells"] for r in _table(RESOURCES["access-rules"])["rows"]}
    headings = _table(RESOURCES["access-rules"])["headings"]
    col = {h: i for i, h in enumerate(headings)}
    assert [rows[n][col["MCP"]] for n in ("http", "sql", "any", "mcp")] == [
        "—",
        "—",
        "any",
        "tools t_*",
    ]
    assert rows["mcp"][col["SQL"]] == "—" and rows["mcp"][col["Methods"]] == "—"


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"mcp_methods": "Tools/Call"}, "mcp_methods", "not a JSON-RPC method name"),
        ({"tool_names": "two words"}, "tool_names", "not a tool name or URI glob"),
        ({"argument_path": "$["}, "argument_path", "not a JSONPath expression"),
        ({"argument_pattern": "(x"}, "argument_pattern", "not a valid regular expression"),
        ({"methods": "POST"}, "methods", "is an MCP server: its calls are decided by MCP"),
        ({"target_pk": "", "methods": "POST"}, "mcp_methods", "cannot be combined with HTTP"),
    ],
)
def test_bad_mcp_rules_come_back_with_field_errors(admin_client, targets, change, field, message):
    r = admin_client.post(
        reverse("console:create", args=["access-rules"]),
        mcp_rule_form(targets[1], **change),
        HTTP_HX_REQUEST="true",
    )
    assert r.status_code == 422
    assert message in str(r.context["form"].errors[field])
    assert not AccessRule.objects.filter(name="refunds need a human").exists()


def test_mcp_conditions_on_an_http_target_are_refused(admin_client, targets):
    web, _, _ = targets
    r = admin_client.post(reverse("console:create", args=["access-rules"]), mcp_rule_form(web))
    assert r.status_code == 422
    assert "is an HTTP API, not an MCP server" in str(r.context["form"].errors["tool_names"])


@pytest.mark.parametrize("kind", ["targets", "access-rules"])
def test_only_admins_create_mcp_targets_and_rules(client, users, targets, kind):
    _, tools, _ = targets
    data = MCP_FORM if kind == "targets" else mcp_rule_form(tools)
    for name in ("approver", "auditor", "outsider"):
        client.force_login(users[name])
        assert client.post(reverse("console:create", args=[kind]), data).status_code == 403
        assert client.get(reverse("console:edit", args=[kind, tools.pk])).status_code == 403
    assert not Target.objects.filter(upstream_url="https://tools.internal/mcp").exists()
    assert not AccessRule.objects.exists()


def test_mcp_forms_answer_405_to_other_methods(admin_client, targets):
    _, tools, _ = targets
    for method in ("put", "patch", "delete"):
        call = getattr(admin_client, method)
        assert call(reverse("console:edit", args=["targets", tools.pk])).status_code == 405
        assert call(reverse("console:create", args=["access-rules"])).status_code == 405


def test_the_kind_script_reads_several_kinds_per_fieldset():
    from pathlib import Path

    from django.conf import settings

    text = (Path(settings.BASE_DIR) / "static" / "controlplane" / "kinds.js").read_text()
    assert "fieldset.dataset.kind.split(" in text and "indexOf(kind)" in text


def test_the_admin_creates_an_mcp_target_and_shows_the_mcp_rule_fields(admin_client, users):
    users["admin"].is_staff = True  # Django admin needs staff status and the admin role
    users["admin"].save()
    r = admin_client.post(
        reverse("admin:controlplane_target_add"),
        {**MCP_FORM, "mcp_block_changed_tools": "on", "pg_port": "5432", "pg_sslmode": "prefer"},
    )
    assert r.status_code == 302, r.content
    t = Target.objects.get(slug="tools")
    assert t.kind == "mcp" and t.mcp_block_changed_tools and t.has_credential
    listing = admin_client.get(reverse("admin:controlplane_target_changelist")).content.decode()
    assert "https://tools.internal/mcp" in listing and "mcp-s3cr3t" not in listing
    page = admin_client.get(reverse("admin:controlplane_accessrule_add")).content.decode()
    assert 'name="tool_names"' in page and 'name="argument_pattern"' in page
    assert f'data-kind="mcp">{t.slug}</option>' in page


# --- snapshot ------------------------------------------------------------------------------


def test_mcp_targets_and_rules_are_compiled(targets):
    web, tools, _ = targets
    tools.mcp_allow_server_requests = True
    tools.save()
    AccessRule.objects.create(
        name="refunds",
        target=tools,
        mcp_methods=["tools/call"],
        tool_names=["refund_*"],
        argument_path="$.amount",
        argument_pattern="^[0-9]{4,}",
        action="approve",
    )
    AccessRule.objects.create(name="web", target=web, methods=["GET"], action="deny")
    doc = compile_snapshot(1)
    by_slug = {t["slug"]: t for t in doc["targets"]}
    assert by_slug["tools"]["kind"] == "mcp"
    assert by_slug["tools"]["upstream"] == "https://t.example/mcp"
    assert by_slug["tools"]["mcp"] == {"block_changed_tools": True, "allow_server_requests": True}
    assert "mcp" not in by_slug["web"] and "mcp" not in by_slug["orders"]
    rules = {r["name"]: r for r in doc["access_rules"]}
    assert {k: rules["refunds"][k] for k in ("mcp_methods", "tool_names")} == {
        "mcp_methods": ["tools/call"],
        "tool_names": ["refund_*"],
    }
    assert (rules["refunds"]["argument_path"], rules["refunds"]["argument_pattern"]) == (
        "$.amount",
        "^[0-9]{4,}",
    )
    assert {k: rules["web"][k] for k in ("mcp_methods", "tool_names", "argument_path")} == {
        "mcp_methods": [],
        "tool_names": [],
        "argument_path": None,
    }
    assert rules["web"]["argument_pattern"] is None
    json.dumps(doc)  # the whole document is JSON


def test_the_workers_policy_reads_the_compiled_mcp_snapshot(targets):
    from proxy_worker.policy import Policy

    AccessRule.objects.create(name="r", target=targets[1], tool_names=["x"], action="deny")
    policy = Policy.from_document(compile_snapshot(1))
    assert policy.resolve_target("tools") is not None


# --- policy as code ------------------------------------------------------------------------


@pytest.fixture
def mcp_policy(policy):
    tools = mcp_target(mcp_block_changed_tools=False)
    tools.set_credential("mcp-token")
    tools.save()
    AccessRule.objects.create(
        name="refunds need a human",
        position=30,
        target=tools,
        mcp_methods=["tools/call"],
        tool_names=["refund_*"],
        argument_path="$.amount",
        argument_pattern="^[0-9]{4,}",
        action="approve",
    )
    return tools


def test_mcp_targets_and_rules_export_and_round_trip(mcp_policy):
    text = export_yaml()
    assert "mcp-token" not in text
    doc = yaml.safe_load(text)
    targets = {t["slug"]: t for t in doc["targets"]}
    assert targets["customers"]["kind"] == "http" and "mcp" not in targets["customers"]
    assert targets["tools"]["kind"] == "mcp"
    assert targets["tools"]["upstream_url"] == "https://t.example/mcp"
    assert targets["tools"]["mcp"] == {"block_changed_tools": False, "allow_server_requests": False}
    assert "postgres" not in targets["tools"]
    rule = next(r for r in doc["access_rules"] if r["name"] == "refunds need a human")
    assert {k: rule[k] for k in ("mcp_methods", "tool_names", "argument_path")} == {
        "mcp_methods": ["tools/call"],
        "tool_names": ["refund_*"],
        "argument_path": "$.amount",
    }
    assert rule["argument_pattern"] == "^[0-9]{4,}"
    other = next(r for r in doc["access_rules"] if r["name"] == "bulk")
    assert other["mcp_methods"] == [] and other["argument_path"] == ""
    plan = plan_import(text)
    assert plan.ok, plan.issues
    assert plan.diff() == "No changes."


def test_import_creates_an_mcp_target_and_its_rules_at_once(policy):
    text = textwrap.dedent(
        """\
        version: 1
        targets:
          - slug: tools
            name: Tool server
            kind: mcp
            upstream_url: https://tools.internal/mcp
            mcp: {allow_server_requests: true}
        access_rules:
          - name: no deletes
            target: tools
            mcp_methods: [tools/call]
            tool_names: [delete_*, Drop_Table]
            action: deny
          - name: secrets need a human
            target: tools
            mcp_methods: resources/read
            tool_names: ["file:///etc/*"]
            action: approve
          - name: emails in arguments
            argument_pattern: "@example\\\\.com"
            action: approve
        """
    )
    plan = plan_import(text)
    assert plan.ok, plan.issues
    create = next(c for c in plan.changes if c.key == "tools")
    assert create.op == "create"
    assert create.fields["mcp"][1] == {"block_changed_tools": True, "allow_server_requests": True}
    plan.apply()
    t = Target.objects.get(slug="tools")
    assert (t.kind, t.mcp_block_changed_tools, t.mcp_allow_server_requests) == ("mcp", True, True)
    assert AccessRule.objects.get(name="no deletes").tool_names == ["delete_*", "Drop_Table"]
    assert AccessRule.objects.get(name="secrets need a human").mcp_methods == ["resources/read"]
    assert AccessRule.objects.get(name="emails in arguments").argument_pattern == r"@example\.com"
    # One setting of the block changed is shown field by field.
    doc = yaml.safe_load(export_yaml())
    next(x for x in doc["targets"] if x["slug"] == "tools")["mcp"]["block_changed_tools"] = False
    plan = plan_import(yaml.safe_dump(doc))
    assert plan.ok, plan.issues
    (change,) = [c for c in plan.changes if c.op == "update"]
    assert change.fields == {"mcp.block_changed_tools": (True, False)}


def test_mcp_errors_carry_line_and_field(policy):
    text = textwrap.dedent(
        """\
        version: 1
        targets:
          - slug: tools
            name: Tools
            kind: mcp
            mcp:
              block_changed_tools: sometimes
              token: abc
          - slug: web
            name: Web
            upstream_url: https://web.example
            mcp: {allow_server_requests: true}
          - slug: nourl
            name: No URL
            kind: mcp
        access_rules:
          - name: method
            target: tools
            mcp_methods: [Tools/Call]
            action: deny
          - name: path
            target: tools
            argument_path: "$["
            action: deny
          - name: regex
            target: tools
            argument_pattern: "(unclosed"
            action: deny
          - name: on an api
            target: customers
            tool_names: [x]
            action: deny
          - name: mixed
            methods: [POST]
            tool_names: [x]
            action: deny
        """
    )
    plan = plan_import(text)
    assert not plan.ok
    found = {(i.line, i.where): i.message for i in plan.issues}
    assert "True or False" in found[(7, "targets[0].mcp.block_changed_tools")]
    assert "never imported" in found[(8, "targets[0].mcp.token")]
    assert "an MCP server needs an upstream URL" in found[(3, "targets[0].upstream_url")]
    assert "only for kind: mcp" in found[(12, "targets[1].mcp")]
    assert "an MCP server needs an upstream URL" in found[(13, "targets[2].upstream_url")]
    assert "JSON-RPC method" in found[(19, "access_rules[0].mcp_methods")]
    assert "JSONPath" in found[(23, "access_rules[1].argument_path")]
    assert "regular expression" in found[(27, "access_rules[2].argument_pattern")]
    assert "not an MCP server" in found[(31, "access_rules[3].tool_names")]
    assert "cannot be combined with HTTP" in found[(35, "access_rules[4].tool_names")]
    assert not Target.objects.filter(slug="tools").exists()


def test_the_kinds_are_the_workers_vocabulary():
    from controlplane.models import HTTP_TARGET_KINDS, TARGET_KIND_CHOICES
    from proxy_worker.policy import HTTP_KINDS, MCP_CALL_METHODS, TARGET_KINDS

    assert {value for value, _ in TARGET_KIND_CHOICES} == TARGET_KINDS
    assert HTTP_TARGET_KINDS == HTTP_KINDS
    assert set(MCP_METHODS) >= MCP_CALL_METHODS

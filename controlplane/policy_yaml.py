"""Policy as code: export the whole policy as YAML, validate and import it with a diff.

The document (``version: 1``) has one list per kind, in dependency order::

    version: 1
    approver_groups: [payments-approvers]
    targets:         [{slug, name, kind, upstream_url, auth_header, auth_scheme,
                       default_action, approval_timeout, approver_group, binary_bodies,
                       retention_days,
                       postgres: {host, port, database, user, sslmode, ca_pem,
                                  allow_plaintext},
                       mcp: {block_changed_tools, allow_server_requests}}]
    agent_groups:    [{name, description}]
    agents:          [{name, description, owner, is_active, groups, oidc_subject}]
    masking_rules:   [{name, entity_types, field_names, json_paths, deny_list,
                       custom_pattern, strategy, direction, targets, agent_groups,
                       is_active}]
    access_rules:    [{name, position, target, agents, agent_groups, methods,
                       path_pattern, query_pattern, statement_kinds, tables, functions,
                       without_where, without_limit, parameter_pattern, mcp_methods,
                       tool_names, argument_path, argument_pattern, body_pattern, action,
                       approval_mode, required_approvals, retry_window, approval_timeout,
                       approver_group, notify_webhook_url, notify_slack_url, notify_email,
                       reason, is_active}]

Targets have ``kind: http`` (an HTTP API at ``upstream_url``), ``kind: mcp`` (an MCP
server whose streamable HTTP endpoint is ``upstream_url``) or ``kind: postgres`` (a
PostgreSQL database); a PostgreSQL target has a ``postgres:`` block and an MCP server an
``mcp:`` block, each exported for targets of its kind only::

    - slug: orders
      name: Orders database
      kind: postgres
      postgres: {host: db.internal, port: 5432, database: orders, user: gatehouse_agent,
                 sslmode: verify-full, ca_pem: "", allow_plaintext: false}

    - slug: tools
      name: Tool server
      kind: mcp
      upstream_url: https://tools.internal/mcp
      mcp: {block_changed_tools: true, allow_server_requests: false}

``sslmode`` takes libpq's values (disable, prefer, require, verify-ca, verify-full);
``ca_pem`` is a PEM CA bundle (empty: the system trust store). The database password,
like every credential, is not in the file.

Access rules have HTTP conditions (``methods``, ``path_pattern``, ``query_pattern``),
SQL conditions (``statement_kinds`` from ``proxy_worker.policy.STATEMENT_KINDS``,
``tables`` and ``functions`` globs, ``without_where``, ``without_limit``,
``parameter_pattern``) or MCP conditions (``mcp_methods`` JSON-RPC methods,
``tool_names`` globs, ``argument_path`` JSONPath and ``argument_pattern`` regex over
the call's arguments), never two kinds; ``body_pattern`` applies to all (the request
body, the SQL text, or the JSON-RPC message)::

    - name: no unfiltered deletes
      target: orders
      statement_kinds: [DELETE, UPDATE, TRUNCATE]
      without_where: true
      action: deny
    - name: refunds need a human
      target: tools
      mcp_methods: [tools/call]
      tool_names: [refund_*]
      argument_path: $.amount
      argument_pattern: ^[0-9]{4,}
      action: approve

Objects are keyed by their natural key (target ``slug``, every other kind ``name``);
references use those keys. Secrets never appear: targets carry no credential and agents
no token; importing never changes a stored credential or token. People (the members of
approver groups, agent owners) are managed by the identity provider or the console; the
file only names them.

:func:`plan_import` parses and validates a document without writing anything and
returns a :class:`Plan` (errors with line and field, or the list of changes);
:meth:`Plan.apply` writes it in one transaction, so the proxy sees one new policy
snapshot. Objects missing from the file are kept unless ``prune=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models, transaction

from controlplane.models import AccessRule, Agent, AgentGroup, MaskingRule, Target
from controlplane.roles import ROLES

DOCUMENT_VERSION = 1


@dataclass(frozen=True)
class Block:
    """A nested mapping of an entry (``postgres:``, ``mcp:`` of a target): document key ->
    model field.

    Exported, and accepted on import, only for objects whose ``kind`` field is ``kind``.
    """

    name: str
    fields: tuple[tuple[str, str], ...]
    kind: str

    def applies(self, obj: models.Model) -> bool:
        return getattr(obj, "kind", None) == self.kind


@dataclass(frozen=True)
class Kind:
    """One section of the document: its model, natural key and exported fields."""

    section: str
    model: type[models.Model]
    key: str
    fields: tuple[str, ...]
    #: field -> (kind section or "groups"/"users", natural key attr); FK or M2M.
    refs: dict[str, tuple[str, str]]
    m2m: tuple[str, ...] = ()
    blocks: tuple[Block, ...] = ()

    def where_of(self, model_field: str) -> tuple[str, ...]:
        """The document path (below the entry) of a model field: ``("postgres", "host")``
        for ``pg_host``, ``(name,)`` for a plain field."""
        for block in self.blocks:
            for key, name in block.fields:
                if name == model_field:
                    return (block.name, key)
        return (model_field,)


POSTGRES_BLOCK = Block(
    "postgres",
    (
        ("host", "pg_host"),
        ("port", "pg_port"),
        ("database", "pg_database"),
        ("user", "pg_user"),
        ("sslmode", "pg_sslmode"),
        ("ca_pem", "pg_ca_pem"),
        ("allow_plaintext", "pg_allow_plaintext"),
    ),
    kind="postgres",
)
MCP_BLOCK = Block(
    "mcp",
    (
        ("block_changed_tools", "mcp_block_changed_tools"),
        ("allow_server_requests", "mcp_allow_server_requests"),
    ),
    kind="mcp",
)


KINDS: tuple[Kind, ...] = (
    Kind(
        "targets",
        Target,
        "slug",
        (
            "slug",
            "name",
            "kind",
            "upstream_url",
            "auth_header",
            "auth_scheme",
            "default_action",
            "approval_timeout",
            "approver_group",
            "binary_bodies",
            "retention_days",
        ),
        {"approver_group": ("approver_groups", "name")},
        blocks=(POSTGRES_BLOCK, MCP_BLOCK),
    ),
    Kind("agent_groups", AgentGroup, "name", ("name", "description"), {}),
    Kind(
        "agents",
        Agent,
        "name",
        ("name", "description", "owner", "is_active", "groups", "oidc_subject"),
        {"owner": ("users", "username"), "groups": ("agent_groups", "name")},
        m2m=("groups",),
    ),
    Kind(
        "masking_rules",
        MaskingRule,
        "name",
        (
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
        ),
        {"targets": ("targets", "slug"), "agent_groups": ("agent_groups", "name")},
        m2m=("targets", "agent_groups"),
    ),
    Kind(
        "access_rules",
        AccessRule,
        "name",
        (
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
            "approval_mode",
            "required_approvals",
            "retry_window",
            "approval_timeout",
            "approver_group",
            "notify_webhook_url",
            "notify_slack_url",
            "notify_email",
            "reason",
            "is_active",
        ),
        {
            "target": ("targets", "slug"),
            "agents": ("agents", "name"),
            "agent_groups": ("agent_groups", "name"),
            "approver_group": ("approver_groups", "name"),
        },
        m2m=("agents", "agent_groups"),
    ),
)
KIND_BY_SECTION = {k.section: k for k in KINDS}
SECTIONS = ("version", "approver_groups", *KIND_BY_SECTION)


# --------------------------------------------------------------------------- export


def _ref_value(obj: models.Model | None, attr: str) -> str | None:
    return None if obj is None else getattr(obj, attr)


def serialise(kind: Kind, obj: models.Model, m2m_values: dict[str, list[str]] | None = None):
    """The exported mapping of ``obj`` (references by natural key, lists sorted).

    ``m2m_values`` overrides many-to-many fields (for unsaved objects during import).
    """
    out: dict[str, Any] = {}
    for name in kind.fields:
        if name in kind.m2m:
            if m2m_values is not None and name in m2m_values:
                out[name] = sorted(m2m_values[name])
            elif obj.pk is None:
                out[name] = []
            else:
                attr = kind.refs[name][1]
                out[name] = sorted(getattr(o, attr) for o in getattr(obj, name).all())
        elif name in kind.refs:
            out[name] = _ref_value(getattr(obj, name), kind.refs[name][1])
        else:
            value = getattr(obj, name)
            out[name] = list(value) if isinstance(value, list | tuple) else value
    for block in kind.blocks:
        if block.applies(obj):
            out[block.name] = {key: getattr(obj, f) for key, f in block.fields}
    return out


def _approver_group_names() -> list[str]:
    used = set(
        Target.objects.exclude(approver_group=None).values_list("approver_group__name", flat=True)
    ) | set(
        AccessRule.objects.exclude(approver_group=None).values_list(
            "approver_group__name", flat=True
        )
    )
    others = Group.objects.exclude(name__in=ROLES).values_list("name", flat=True)
    return sorted(used | set(others))


def export_policy() -> dict[str, Any]:
    """The whole policy as a plain dict (see the module docstring for the shape)."""
    doc: dict[str, Any] = {"version": DOCUMENT_VERSION, "approver_groups": _approver_group_names()}
    for kind in KINDS:
        qs = kind.model.objects.all().order_by(kind.key)
        if kind.section == "access_rules":
            qs = AccessRule.objects.order_by("position", "name")
        doc[kind.section] = [serialise(kind, o) for o in qs]
    return doc


def export_yaml() -> str:
    """:func:`export_policy` as YAML text (UTF-8, keys in document order)."""
    header = (
        "# Gatehouse policy (no secrets: target credentials and agent tokens are not "
        "exported).\n# Import: python manage.py policy_import FILE [--dry-run] [--prune]\n"
    )
    return header + yaml.dump(
        export_policy(),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
    )


class _Dumper(yaml.SafeDumper):
    """``SafeDumper`` writing multi-line strings (PEM bundles, descriptions) as literal
    blocks (``|``); PyYAML falls back to quoting when a string cannot be one."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


# --------------------------------------------------------------------------- import


@dataclass(frozen=True)
class ImportIssue:
    """A problem in the document: 1-based ``line`` (0 if unknown), dotted ``where``."""

    line: int
    where: str
    message: str

    def __str__(self) -> str:
        loc = f"line {self.line}: " if self.line else ""
        return f"{loc}{self.where}: {self.message}"


@dataclass(frozen=True)
class Change:
    """One planned change. ``op`` is create, update or delete (or keep: absent, not pruned).

    ``fields`` maps a field name to ``(old, new)``; for create, old is None.
    """

    section: str
    key: str
    op: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def __str__(self) -> str:
        sign = {"create": "+", "update": "~", "delete": "-", "keep": "="}[self.op]
        head = f"{sign} {self.section}/{self.key}"
        if self.op == "keep":
            return f"{head} (not in the file: kept; --prune deletes it)"
        lines = [head]
        for name, (old, new) in self.fields.items():
            lines.append(
                f"    {name}: {old!r} -> {new!r}" if self.op == "update" else f"    {name}: {new!r}"
            )
        return "\n".join(lines)


class DocumentError(Exception):
    """The YAML text cannot be parsed; ``issues`` says where."""

    def __init__(self, issues: list[ImportIssue]):
        super().__init__("; ".join(map(str, issues)))
        self.issues = issues


def _load_with_lines(text: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML safely; also map each value's path (tuple of keys/indexes) to its line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        data = loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        raise DocumentError([ImportIssue(line, "document", str(e).splitlines()[0])]) from e
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {}

    def walk(n: yaml.Node, path: tuple) -> None:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                walk(v, (*path, k.value))
                lines[(*path, k.value)] = k.start_mark.line + 1  # the key's line
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*path, i))

    walk(node, ())
    return data, lines


@dataclass
class _Item:
    kind: Kind
    index: int
    data: dict[str, Any]
    instance: models.Model
    m2m: dict[str, list[str]]
    exists: bool


@dataclass
class Plan:
    """The outcome of :func:`plan_import`: ``issues`` (nothing may be applied if any)
    or ``changes`` to apply."""

    issues: list[ImportIssue]
    changes: list[Change]
    prune: bool
    _items: list[_Item] = field(default_factory=list, repr=False)
    _groups: list[str] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not self.issues

    def diff(self) -> str:
        """Human-readable diff, one block per changed object."""
        if self.issues:
            return "\n".join(map(str, self.issues))
        shown = [c for c in self.changes if c.op != "keep" or not self.prune]
        if not any(c.op != "keep" for c in shown):
            return "No changes."
        return "\n".join(str(c) for c in shown)

    @transaction.atomic
    def apply(self) -> list[Change]:
        """Write the plan in one transaction; returns the applied changes.

        Raises ``ValueError`` if the plan has issues.
        """
        if self.issues:
            raise ValueError("the policy document has errors; nothing was applied")
        for name in self._groups:
            Group.objects.get_or_create(name=name)
        saved: dict[str, dict[str, models.Model]] = {k.section: {} for k in KINDS}
        for item in self._items:
            kind = item.kind
            inst = item.instance
            for name, (section, attr) in kind.refs.items():
                if name in kind.m2m:
                    continue
                value = item.data.get(name, serialise(kind, inst)[name])
                setattr(inst, name, _resolve(section, attr, value, saved))
            inst.save()
            saved[kind.section][getattr(inst, kind.key)] = inst
            for name in kind.m2m:
                section, attr = kind.refs[name]
                getattr(inst, name).set([_resolve(section, attr, v, saved) for v in item.m2m[name]])
        if self.prune:
            for change in reversed(self.changes):
                if change.op == "delete":
                    kind = KIND_BY_SECTION[change.section]
                    kind.model.objects.filter(**{kind.key: change.key}).delete()
        return [c for c in self.changes if c.op != "keep"]


def _resolve(section: str, attr: str, value: Any, saved: dict[str, dict[str, Any]]):
    if value is None:
        return None
    if section == "users":
        return get_user_model().objects.get(**{get_user_model().USERNAME_FIELD: value})
    if section == "approver_groups":
        return Group.objects.get(name=value)
    if value in saved.get(section, {}):
        return saved[section][value]
    kind = KIND_BY_SECTION[section]
    return kind.model.objects.get(**{kind.key: value})


def _field_names(model: type[models.Model]) -> set[str]:
    return {f.name for f in model._meta.get_fields()}


def _secret_hint(name: str) -> str:
    secret = {"credential", "token", "tokens", "password"}
    return " (secrets are never imported)" if name in secret else ""


def _planned_ref(
    section: str, value: Any, planned: dict[str, dict[str, models.Model]]
) -> models.Model | None:
    """The object ``value`` names in ``section``: the one planned by this document, else
    the stored one, else ``None``."""
    if value is None:
        return None
    if value in planned.get(section, {}):
        return planned[section][value]
    kind = KIND_BY_SECTION[section]
    return kind.model.objects.filter(**{kind.key: value}).first()


def _apply_block(kind: Kind, block: Block, entry: dict, inst: models.Model, path: tuple, err):
    """Set the model fields of ``entry[block.name]`` (a mapping) on ``inst``; report a
    block that is not a mapping, unknown keys, and a block on an object of another kind."""
    if entry.get(block.name) is None:
        return
    value = entry[block.name]
    where = (*path, block.name)
    if not isinstance(value, dict):
        err(where, "must be a mapping")
        return
    if not block.applies(inst):
        err(where, f"only for kind: {block.kind} (this one is {getattr(inst, 'kind', '?')})")
        return
    fields = dict(block.fields)
    for key, sub in value.items():
        name = fields.get(key)
        if name is None:
            err((*where, key), f"unknown field{_secret_hint(key)}; expected {', '.join(fields)}")
            continue
        f = kind.model._meta.get_field(name)
        if sub is None and not f.null:
            sub = f.get_default()
        setattr(inst, name, sub)


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Changed fields, in document order; a nested block (``postgres``) is compared key by
    key (``postgres.host``)."""
    out: dict[str, tuple[Any, Any]] = {}
    for k in [*after, *(k for k in before if k not in after)]:
        old, new = before.get(k), after.get(k)
        if isinstance(old, dict) or isinstance(new, dict):
            old, new = old or {}, new or {}
            for sub in [*new, *(s for s in old if s not in new)]:
                if old.get(sub) != new.get(sub):
                    out[f"{k}.{sub}"] = (old.get(sub), new.get(sub))
        elif old != new:
            out[k] = (old, new)
    return out


def plan_import(text: str, *, prune: bool = False) -> Plan:
    """Parse and validate ``text`` against the database; write nothing.

    Every problem is reported at once with its 1-based line and dotted path, e.g.
    ``line 12: targets[0].upstream_url: Enter a valid URL.`` Unknown sections and keys,
    duplicate keys, references to undefined objects, and every model validation error
    (``full_clean``) are issues.
    """
    try:
        data, lines = _load_with_lines(text)
    except DocumentError as e:
        return Plan(issues=e.issues, changes=[], prune=prune)
    issues: list[ImportIssue] = []

    def err(path: tuple, message: str) -> None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        line = 0
        for n in range(len(path), -1, -1):
            if path[:n] in lines:
                line = lines[path[:n]]
                break
        issues.append(ImportIssue(line, where or "document", message))

    if not isinstance(data, dict):
        err((), "the document must be a mapping with version, targets, agents, … sections")
        return Plan(issues=issues, changes=[], prune=prune)
    if data.get("version") != DOCUMENT_VERSION:
        err(("version",), f"must be {DOCUMENT_VERSION}")
    for section in data:
        if section not in SECTIONS:
            err((section,), f"unknown section; expected one of {', '.join(SECTIONS)}")

    groups = data.get("approver_groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        err(("approver_groups",), "must be a list of group names")
        groups = []
    if set(groups) & set(ROLES):
        err(("approver_groups",), f"role groups ({', '.join(ROLES)}) are built in")
    known: dict[str, set[str]] = {
        "approver_groups": set(groups) | set(Group.objects.values_list("name", flat=True)),
        "users": set(
            get_user_model().objects.values_list(get_user_model().USERNAME_FIELD, flat=True)
        ),
    }
    items: list[_Item] = []
    changes: list[Change] = []
    #: section -> natural key -> the (possibly unsaved) instance planned for it.
    planned: dict[str, dict[str, models.Model]] = {}
    for kind in KINDS:
        entries = data.get(kind.section)
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            err((kind.section,), "must be a list")
            entries = []
        existing = {getattr(o, kind.key): o for o in kind.model.objects.all()}
        seen: set[str] = set()
        model_fields = _field_names(kind.model)
        for i, entry in enumerate(entries):
            path = (kind.section, i)
            if not isinstance(entry, dict):
                err(path, "must be a mapping")
                continue
            key = entry.get(kind.key)
            if not isinstance(key, str) or not key:
                err(path, f"needs a '{kind.key}'")
                continue
            if key in seen:
                err((*path, kind.key), f"duplicate {kind.key} {key!r}")
                continue
            seen.add(key)
            block_names = {b.name for b in kind.blocks}
            for name in entry:
                if name not in kind.fields and name not in block_names:
                    err((*path, name), f"unknown field{_secret_hint(name)}")
            inst = existing.get(key)
            exists = inst is not None
            if inst is None:
                inst = kind.model()
            before = serialise(kind, inst) if exists else None
            m2m: dict[str, list[str]] = {}
            for name in kind.fields:
                if name not in model_fields:
                    continue
                if name in kind.refs:
                    section, _attr = kind.refs[name]
                    if name in kind.m2m:
                        value = entry.get(name, before[name] if before else [])
                        if value is None:
                            value = []
                        if not isinstance(value, list):
                            err((*path, name), "must be a list of names")
                            value = []
                        for j, ref in enumerate(value):
                            if ref not in known.get(section, set()) and not (
                                section in KIND_BY_SECTION
                                and KIND_BY_SECTION[section]
                                .model.objects.filter(**{KIND_BY_SECTION[section].key: ref})
                                .exists()
                            ):
                                err((*path, name, j), f"no {section[:-1]} named {ref!r}")
                        m2m[name] = [str(v) for v in value]
                    else:
                        value = entry.get(name, before[name] if before else None)
                        if (
                            value is not None
                            and value not in known.get(section, set())
                            and not (
                                section in KIND_BY_SECTION
                                and KIND_BY_SECTION[section]
                                .model.objects.filter(**{KIND_BY_SECTION[section].key: value})
                                .exists()
                            )
                        ):
                            err((*path, name), f"no {section.rstrip('s')} named {value!r}")
                        elif section in KIND_BY_SECTION:
                            # What clean() sees of the referenced object is the planned one
                            # (an access rule is checked against its target's planned kind).
                            ref = _planned_ref(section, value, planned)
                            if ref is not None or value is None:
                                setattr(inst, name, ref)
                    continue
                if name in entry:
                    value = entry[name]
                    f = kind.model._meta.get_field(name)
                    is_list = f.get_internal_type() == "ArrayField"
                    if value is None and not f.null:
                        value = [] if is_list else ""
                    if is_list:
                        if isinstance(value, str):
                            value = [value]
                        if not isinstance(value, list):
                            err((*path, name), "must be a list")
                            continue
                    setattr(inst, name, value)
            for block in kind.blocks:
                _apply_block(kind, block, entry, inst, path, err)
            try:
                inst.full_clean(exclude=list(kind.refs), validate_unique=False)
            except ValidationError as e:
                for fname, messages in e.message_dict.items():
                    target = (*path, *kind.where_of(fname)) if fname != "__all__" else path
                    for m in messages:
                        err(target, m)
            after = serialise(kind, inst, m2m)
            for name in kind.refs:
                if name not in kind.m2m:
                    after[name] = entry.get(name, before[name] if before else None)
            if kind.section == "targets":
                known.setdefault("targets", set()).add(key)
            known.setdefault(kind.section, set()).add(key)
            planned.setdefault(kind.section, {})[key] = inst
            items.append(_Item(kind, i, entry, inst, m2m, exists))
            if before is None:
                changes.append(
                    Change(kind.section, key, "create", {k: (None, v) for k, v in after.items()})
                )
            else:
                delta = _delta(before, after)
                if delta:
                    changes.append(Change(kind.section, key, "update", delta))
        for key in sorted(set(existing) - seen):
            changes.append(Change(kind.section, key, "delete" if prune else "keep"))
    missing_groups = [g for g in groups if not Group.objects.filter(name=g).exists()]
    for g in missing_groups:
        changes.insert(0, Change("approver_groups", g, "create", {"name": (None, g)}))
    return Plan(
        issues=issues,
        changes=[] if issues else changes,
        prune=prune,
        _items=[] if issues else items,
        _groups=missing_groups,
    )

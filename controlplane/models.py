"""Policy models: targets, agents and their tokens, masking rules, access rules."""

from __future__ import annotations

import re
import secrets
import string

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from controlplane.crypto import encrypt_field
from proxy_worker.policy import TOKEN_PREFIX, hash_token

ACTION_CHOICES = [("allow", "Allow"), ("deny", "Deny"), ("approve", "Require approval")]
APPROVAL_MODE_CHOICES = [
    ("wait", "Wait: hold the request until it is decided or expires"),
    ("defer", "Defer: answer at once; an identical retry passes once after approval"),
]
BINARY_BODY_CHOICES = [("refuse", "Refuse"), ("pass", "Pass unmasked")]

slug_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9-]{0,62}$",
    "lower-case letters, digits and dashes; it becomes the first path segment",
)


def validate_regex(value: str) -> None:
    """Reject a pattern Python's ``re`` cannot compile, with the compiler's message."""
    try:
        re.compile(value)
    except re.error as e:
        raise ValidationError(f"not a valid regular expression: {e}") from e


class Target(models.Model):
    """An upstream API reached through the gateway at ``/<slug>/`` (reverse mode).

    The credential Gatehouse injects is write-only: stored encrypted
    (:mod:`controlplane.crypto`), compiled into the snapshot encrypted for workers, and
    never rendered back.
    """

    name = models.CharField(max_length=100)
    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    upstream_url = models.URLField(
        help_text="Base URL of the upstream, e.g. https://api.example.com"
    )
    auth_header = models.CharField(max_length=100, default="Authorization", blank=True)
    auth_scheme = models.CharField(
        max_length=30,
        default="Bearer",
        blank=True,
        help_text="Prefix before the credential, e.g. Bearer; empty for none",
    )
    credential_encrypted = models.TextField(blank=True, editable=False)
    default_action = models.CharField(
        max_length=10,
        choices=ACTION_CHOICES,
        default="allow",
        help_text="What happens when no access rule matches",
    )
    approval_timeout = models.PositiveIntegerField(
        default=120, help_text="Seconds a held request waits for a decision"
    )
    approver_group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    binary_bodies = models.CharField(
        max_length=10,
        choices=BINARY_BODY_CHOICES,
        default="refuse",
        help_text="Bodies that cannot be scanned for personal data (images, archives, "
        "unknown encodings): refuse them (fail closed) or pass them unmasked",
    )
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Days recorded exchanges of this target are kept; empty = forever",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def set_credential(self, plaintext: str) -> None:
        """Store ``plaintext`` encrypted (empty string clears it). Call ``save()`` after."""
        self.credential_encrypted = encrypt_field(plaintext) if plaintext else ""

    @property
    def has_credential(self) -> bool:
        return bool(self.credential_encrypted)


class AgentGroup(models.Model):
    """A named set of agents; access and masking rules can name groups instead of agents.

    Agents presenting an OpenID Connect JWT can also be placed in groups by a claim
    (see ``Agent.oidc_subject``).
    """

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    """A non-human identity (an AI agent, script or CI job) with tokens and an owner."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    groups = models.ManyToManyField(AgentGroup, blank=True, related_name="agents")
    oidc_subject = models.CharField(
        max_length=255,
        blank=True,
        help_text="The 'sub' claim (client id) of this agent's OpenID Connect JWTs; "
        "empty = token authentication only",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agents",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["oidc_subject"],
                condition=~models.Q(oidc_subject=""),
                name="agent_unique_oidc_subject",
            )
        ]

    def __str__(self) -> str:
        return self.name


_TOKEN_ALPHABET = string.ascii_letters + string.digits


class AgentTokenQuerySet(models.QuerySet["AgentToken"]):
    def usable(self) -> AgentTokenQuerySet:
        """Tokens that are neither revoked nor expired, of active agents."""
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, agent__is_active=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class AgentToken(models.Model):
    """A bearer token of an agent: ``gh_<prefix>_<secret>``, stored as a SHA-256 digest.

    The plaintext exists only in the return value of :meth:`issue`: it is shown once.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tokens")
    prefix = models.CharField(max_length=8, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = AgentTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}{self.prefix}_…"

    @classmethod
    def issue(cls, agent: Agent, *, expires_at=None) -> tuple[AgentToken, str]:
        """Create a token for ``agent``; returns ``(row, plaintext)``. 190 bits of entropy."""
        prefix = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(8))
        secret = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(32))
        plaintext = f"{TOKEN_PREFIX}{prefix}_{secret}"
        row = cls.objects.create(
            agent=agent, prefix=prefix, token_hash=hash_token(plaintext), expires_at=expires_at
        )
        return row, plaintext


ENTITY_TYPE_CHOICES = [
    ("EMAIL", "E-mail address"),
    ("PHONE", "Phone number"),
    ("CREDIT_CARD", "Payment card number"),
    ("US_SSN", "US Social Security number"),
    ("IBAN", "IBAN"),
    ("IP_ADDRESS", "IP address"),
]
STRATEGY_CHOICES = [
    ("redact", "Redact to a typed placeholder, e.g. [EMAIL]"),
    ("hash", "Keyed hash, e.g. [EMAIL:3f9a1c2b] (equal values stay joinable)"),
    ("partial", "Partial, e.g. ****1234"),
    ("drop", "Drop the JSON field (field-name rules)"),
]
DIRECTION_CHOICES = [("request", "Requests"), ("response", "Responses"), ("both", "Both")]


class MaskingRule(models.Model):
    """Which personal data to mask, how, in which direction, on which targets."""

    name = models.CharField(max_length=100, unique=True)
    entity_types = ArrayField(
        models.CharField(max_length=40),
        blank=True,
        default=list,
        help_text="Detector names, comma-separated, e.g. EMAIL, PHONE, CREDIT_CARD "
        "(every name the masking engine knows is listed on the rule preview page)",
    )
    field_names = ArrayField(
        models.CharField(max_length=100),
        blank=True,
        default=list,
        help_text="JSON/form field names masked whole (case-insensitive)",
    )
    json_paths = ArrayField(
        models.CharField(max_length=300),
        blank=True,
        default=list,
        help_text="JSONPath expressions masked whole, e.g. $.customers[*].address",
    )
    deny_list = ArrayField(
        models.CharField(max_length=200),
        blank=True,
        default=list,
        help_text="Words or phrases always masked (a dictionary detector), case-insensitive",
    )
    custom_pattern = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_regex],
        help_text="Optional extra regular expression",
    )
    strategy = models.CharField(max_length=10, choices=STRATEGY_CHOICES, default="redact")
    direction = models.CharField(max_length=10, choices=DIRECTION_CHOICES, default="both")
    targets = models.ManyToManyField(
        Target, blank=True, related_name="masking_rules", help_text="None selected = every target"
    )
    agent_groups = models.ManyToManyField(
        AgentGroup,
        blank=True,
        related_name="masking_rules",
        help_text="None selected = every agent",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from proxy_worker.masking import ENTITY_TYPES

        known = set(ENTITY_TYPES)
        unknown = [t for t in self.entity_types if t not in known]
        if unknown:
            raise ValidationError({"entity_types": f"unknown entity types: {', '.join(unknown)}"})
        if not (
            self.entity_types
            or self.field_names
            or self.json_paths
            or self.deny_list
            or self.custom_pattern
        ):
            raise ValidationError(
                "a masking rule needs entity types, field names, JSON paths, "
                "a deny list or a pattern"
            )


class AccessRule(models.Model):
    """An ordered rule: the first active rule matching a request decides it."""

    name = models.CharField(max_length=100, unique=True)
    position = models.PositiveIntegerField(default=100, help_text="Lower runs first")
    target = models.ForeignKey(
        Target,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="access_rules",
        help_text="Empty = every target",
    )
    agents = models.ManyToManyField(
        Agent, blank=True, related_name="access_rules", help_text="None selected = every agent"
    )
    agent_groups = models.ManyToManyField(
        AgentGroup,
        blank=True,
        related_name="access_rules",
        help_text="Agents of these groups also match; none selected (and no agents) = every agent",
    )
    methods = ArrayField(
        models.CharField(max_length=10),
        blank=True,
        default=list,
        help_text="HTTP methods, comma-separated; empty = any",
    )
    path_pattern = models.CharField(
        max_length=500, default="*", help_text="Glob over the upstream path, e.g. /customers/*"
    )
    query_pattern = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_regex],
        help_text="Regex searched in the decoded query string",
    )
    body_pattern = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_regex],
        help_text="Regex searched in the request body",
    )
    action = models.CharField(max_length=10, choices=ACTION_CHOICES)
    approval_timeout = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds to wait for approval; empty = target's"
    )
    approver_group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who may approve; empty = the target's, else the 'approver' group",
    )
    approval_mode = models.CharField(max_length=10, choices=APPROVAL_MODE_CHOICES, default="wait")
    required_approvals = models.PositiveSmallIntegerField(
        default=1, help_text="Distinct approvers needed; one deny ends the request"
    )
    retry_window = models.PositiveIntegerField(
        default=600,
        help_text="Defer mode: seconds after approval in which one identical retry passes",
    )
    notify_webhook_url = models.URLField(
        blank=True, help_text="JSON webhook called for each new approval request"
    )
    notify_slack_url = models.URLField(
        blank=True, help_text="Slack-compatible incoming webhook for new approval requests"
    )
    notify_email = models.BooleanField(
        default=False, help_text="E-mail the approver group's members on new requests"
    )
    reason = models.CharField(
        max_length=300, blank=True, help_text="Shown to approvers and in deny answers"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        self.methods = [m.upper().strip() for m in self.methods if m.strip()]

"""Who may see and decide an approval request, and see or revoke a grant.

The rule: a request belongs to one approver group, the rule's, else the target's, else
the ``approver`` role group itself. Only users holding the ``approver`` role *and* in
that group see it (pages, history, WebSocket pushes) or decide on it. Nobody decides on
requests of an agent they own, and each user decides at most once per request.
"""

from __future__ import annotations

from django.db.models import Q

from approvals.models import ApprovalRequest, Grant
from controlplane.roles import APPROVER, has_role


def group_names(user) -> frozenset[str]:
    """Names of all Django groups of ``user`` (cached on the user object)."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    cached = getattr(user, "_gatehouse_group_names", None)
    if cached is None:
        cached = frozenset(user.groups.values_list("name", flat=True))
        user._gatehouse_group_names = cached
    return cached


def approver_group_name(req: ApprovalRequest) -> str:
    """The group whose members may decide: the rule's, else the target's, else ``approver``."""
    if req.rule_id and req.rule and req.rule.approver_group_id:
        return req.rule.approver_group.name
    if req.target_id and req.target and req.target.approver_group_id:
        return req.target.approver_group.name
    return APPROVER


def visible_q(user, prefix: str = "") -> Q:
    """A filter on approval requests (under ``prefix``, e.g. ``"approval_request__"``)
    that keeps exactly those :func:`can_view` allows; matches nothing for non-approvers."""
    if not has_role(user, APPROVER):
        return Q(pk__in=[])
    names = list(group_names(user))
    return (
        Q(**{f"{prefix}rule__approver_group__name__in": names})
        | Q(
            **{
                f"{prefix}rule__approver_group__isnull": True,
                f"{prefix}target__approver_group__name__in": names,
            }
        )
        | Q(
            **{
                f"{prefix}rule__approver_group__isnull": True,
                f"{prefix}target__approver_group__isnull": True,
            }
        )
    )


def can_view(user, req: ApprovalRequest) -> bool:
    """Approvers in the request's approver group (and holding the approver role)."""
    if not has_role(user, APPROVER):
        return False
    return approver_group_name(req) in group_names(user)


def approvals_of(req: ApprovalRequest) -> list:
    """The approving decisions on ``req`` (uses prefetched ``decisions`` when present)."""
    return [d for d in req.decisions.all() if d.verdict == "approve"]


def decide_refusal(user, req: ApprovalRequest) -> str | None:
    """Why ``user`` may not decide ``req`` now, or ``None`` when they may."""
    if not can_view(user, req):
        return "you are not an approver for this target"
    if req.agent_id and req.agent and req.agent.owner_id == user.id:
        return "you own this agent: another approver must decide"
    if req.status != ApprovalRequest.Status.PENDING:
        return f"this request is already {req.status}"
    if not req.is_pending:
        return "this request has expired"
    if any(d.user_id == user.id for d in req.decisions.all()):
        return "you have already decided on this request"
    return None


def can_view_grant(user, grant: Grant) -> bool:
    """Whoever may see the approval request a grant came from (for a grant whose request
    was deleted: approvers of the target's group, else every approver)."""
    if grant.approval_request_id and grant.approval_request:
        return can_view(user, grant.approval_request)
    if not has_role(user, APPROVER):
        return False
    group = grant.target.approver_group.name if grant.target.approver_group_id else APPROVER
    return group in group_names(user)


def grant_visible_q(user) -> Q:
    """A filter on grants that keeps exactly those :func:`can_view_grant` allows."""
    if not has_role(user, APPROVER):
        return Q(pk__in=[])
    names = list(group_names(user))
    orphan = Q(approval_request__isnull=True) & (
        Q(target__approver_group__name__in=names) | Q(target__approver_group__isnull=True)
    )
    return (Q(approval_request__isnull=False) & visible_q(user, "approval_request__")) | orphan

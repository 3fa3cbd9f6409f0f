"""Who may see and decide an approval request."""

from __future__ import annotations

from approvals.models import ApprovalRequest
from controlplane.roles import APPROVER, has_role


def approver_group_name(req: ApprovalRequest) -> str:
    """The group whose members may decide: the rule's, else the target's, else ``approver``."""
    if req.rule_id and req.rule and req.rule.approver_group_id:
        return req.rule.approver_group.name
    if req.target_id and req.target and req.target.approver_group_id:
        return req.target.approver_group.name
    return APPROVER


def can_view(user, req: ApprovalRequest) -> bool:
    """Approvers in the request's approver group (and holding the approver role)."""
    if not has_role(user, APPROVER):
        return False
    group = approver_group_name(req)
    return group == APPROVER or user.groups.filter(name=group).exists()


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
    if req.decisions.filter(user=user).exists():
        return "you have already decided on this request"
    return None

"""Live approval queue over WebSocket (htmx ``ws`` extension, out-of-band swaps)."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from approvals.actions import QUEUE_GROUP
from approvals.permissions import can_view
from approvals.views import pending_rows, row_context, visible_requests
from controlplane.roles import APPROVER, has_role

#: Close code for "not allowed" (4000-4999 are free for applications, RFC 6455 §7.4.2).
CLOSE_FORBIDDEN = 4403


class ApprovalQueueConsumer(AsyncWebsocketConsumer):
    """Pushes each new or changed approval request to approvers who may see it.

    Anonymous users and users without the approver role are refused in ``connect``.
    Messages carry only an id; the row is read from the database through the same
    visibility filter as the pages and rendered for this user, so a socket only ever
    receives rows of requests in its user's approver groups and never trusts the group
    message's content.
    """

    async def connect(self) -> None:
        user = self.scope.get("user")
        allowed = await database_sync_to_async(
            lambda: bool(user and user.is_authenticated and has_role(user, APPROVER))
        )()
        if not allowed:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(QUEUE_GROUP, self.channel_name)
        await self.accept()
        # Render the current state on every (re)connect: group messages are best effort.
        await self.send(text_data=await database_sync_to_async(self._render_queue)())

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(QUEUE_GROUP, self.channel_name)

    async def approval_changed(self, event: dict) -> None:
        html = await database_sync_to_async(self._render)(
            event["approval_id"], bool(event.get("created"))
        )
        if html:
            await self.send(text_data=html)

    def _render_queue(self) -> str:
        return render_to_string("approvals/_queue.html", {"rows": pending_rows(self.scope["user"])})

    def _render(self, approval_id: str, created: bool) -> str | None:
        user = self.scope["user"]
        # Only rows this user may see are ever rendered for (and sent to) this socket.
        req = visible_requests(user).filter(pk=approval_id).first()
        if req is None or not can_view(user, req):
            return None
        return render_to_string(
            "approvals/_oob.html", {**row_context(req, user), "created": created}
        )

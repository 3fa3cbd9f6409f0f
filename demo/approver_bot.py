"""A scripted approver: signs in to the web UI like a person and decides through the
real decision endpoint (used by ``demo.run --auto-approve`` and the end-to-end tests)."""

from __future__ import annotations

import re
import time

import httpx

_ROW = re.compile(r'id="approval-([0-9a-f-]{36})"[^>]*data-status="pending"')
_GRANT = re.compile(r'id="grant-(\d+)" data-status="active"')


class ApproverBot:
    """An httpx session signed in to the Gatehouse web UI as one user."""

    def __init__(self, web_url: str, username: str, password: str) -> None:
        self.http = httpx.Client(
            base_url=web_url.rstrip("/"),
            follow_redirects=True,
            timeout=10,
            headers={"Referer": web_url},
        )
        page = self.http.get("/accounts/login/")
        page.raise_for_status()
        r = self.http.post(
            "/accounts/login/",
            data={
                "login": username,
                "password": password,
                "csrfmiddlewaretoken": self.http.cookies["csrftoken"],
            },
        )
        if "/accounts/login/" in str(r.url):
            raise RuntimeError(f"could not sign in as {username!r}")

    def pending_ids(self) -> list[str]:
        """Ids of the pending requests on this user's queue page."""
        r = self.http.get("/approvals/")
        r.raise_for_status()
        return _ROW.findall(r.text)

    def wait_for_pending(self, timeout: float = 15.0, exclude: set[str] | None = None) -> str:
        """The id of a pending request (not in ``exclude``) once one shows up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = [i for i in self.pending_ids() if i not in (exclude or set())]
            if ids:
                return ids[0]
            time.sleep(0.2)
        raise TimeoutError("no pending approval request appeared")

    def decide(
        self,
        approval_id: str,
        verdict: str,
        comment: str = "",
        *,
        grant_minutes: int | None = None,
        grant_path_pattern: str = "",
    ) -> httpx.Response:
        """POST the decision form with CSRF. ``verdict`` is ``approve``, ``deny`` or
        ``grant`` (approve with a grant of ``grant_minutes`` over ``grant_path_pattern``,
        empty = the request's exact path). 302 on success, 403/404/400 otherwise."""
        data = {"verdict": verdict, "comment": comment}
        if grant_minutes:
            data["grant_minutes"] = str(grant_minutes)
            data["grant_path_pattern"] = grant_path_pattern
        return self.http.post(
            f"/approvals/{approval_id}/decide",
            data=data,
            headers={"X-CSRFToken": self.http.cookies["csrftoken"]},
            follow_redirects=False,
        )

    def revoke_grant(self, grant_id: int) -> httpx.Response:
        """POST the grant's revoke form (302 on success, 404 when not visible)."""
        return self.http.post(
            f"/approvals/grants/{grant_id}/revoke",
            headers={"X-CSRFToken": self.http.cookies["csrftoken"]},
            follow_redirects=False,
        )

    def active_grant_ids(self) -> list[int]:
        """Ids of the active grants on this user's grants page."""
        r = self.http.get("/approvals/grants/")
        r.raise_for_status()
        return [int(i) for i in _GRANT.findall(r.text)]

    def close(self) -> None:
        self.http.close()

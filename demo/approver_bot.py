"""A scripted approver: signs in to the web UI like a person and decides through the
real decision endpoint (used by ``demo.run --auto-approve`` and the end-to-end tests)."""

from __future__ import annotations

import re
import time

import httpx

_ROW = re.compile(r'id="approval-([0-9a-f-]{36})"[^>]*data-status="pending"')


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

    def decide(self, approval_id: str, verdict: str, comment: str = "") -> httpx.Response:
        """POST the decision form (``verdict`` is ``approve`` or ``deny``) with CSRF."""
        return self.http.post(
            f"/approvals/{approval_id}/decide",
            data={"verdict": verdict, "comment": comment},
            headers={"X-CSRFToken": self.http.cookies["csrftoken"]},
            follow_redirects=False,
        )

    def close(self) -> None:
        self.http.close()

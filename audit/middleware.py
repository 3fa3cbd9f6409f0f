"""Makes the request's user the actor of chain records written during the request."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from audit.chain import current_actor


class AuditActorMiddleware:
    """Sets :data:`audit.chain.current_actor` to ``request.user`` for the request.

    Must come after ``AuthenticationMiddleware``. The user stays lazy: the variable holds
    a getter, called only when a chain record is written.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # A getter, not the lazy ``request.user`` itself: asgiref compares context values
        # when it restores a context, and comparing a lazy user loads it from the
        # database inside the event loop (SynchronousOnlyOperation under daphne).
        token = current_actor.set(lambda: getattr(request, "user", None))
        try:
            return self.get_response(request)
        finally:
            current_actor.reset(token)

"""The control plane's Redis client and contract keys (one pool per process)."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings

from proxy_worker.contract import Keys


@cache
def client() -> redis.Redis:
    """A synchronous Redis client for the control plane (short commands only)."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=3)


def keys() -> Keys:
    """Contract key names for this deployment's prefix."""
    return Keys(settings.REDIS_PREFIX)

"""Fold the workers' token-use notes into ``AgentToken.last_used_at`` (a Celery beat task).

Workers write ``HSET Keys.token_last_used <token prefix> <epoch seconds>`` at most once a
minute per token (:class:`proxy_worker.identity.TokenUsage`); no token, only its visible
prefix, travels. :func:`flush_token_usage` reads the hash, moves each token's
``last_used_at`` forward (never back), and removes the fields it stored unless a worker
rewrote them meanwhile (compare-and-delete in Lua), so no newer note is lost.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from celery import shared_task
from django.db.models import Q

from controlplane.models import AgentToken
from controlplane.redis import client, keys

log = logging.getLogger("gatehouse.token_usage")

#: KEYS[1] the hash; ARGV pairs (field, value): delete each field still holding value.
_HDEL_IF_EQUAL_LUA = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
"""


def flush_token_usage_once() -> int:
    """Apply the pending notes; returns how many tokens had their ``last_used_at`` moved."""
    r = client()
    key = keys().token_last_used
    raw: dict[bytes, bytes] = r.hgetall(key)
    if not raw:
        return 0
    updated = 0
    for field, value in raw.items():
        try:
            prefix = field.decode()
            when = datetime.fromtimestamp(float(value), tz=UTC)
        except (UnicodeDecodeError, ValueError, OverflowError):
            continue
        updated += (
            AgentToken.objects.filter(prefix=prefix)
            .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=when))
            .update(last_used_at=when)
        )
    args: list[bytes] = []
    for field, value in raw.items():
        args += [field, value]
    r.eval(_HDEL_IF_EQUAL_LUA, 1, key, *args)
    return updated


@shared_task
def flush_token_usage() -> int:
    """Celery entry point of :func:`flush_token_usage_once` (beat: every minute)."""
    return flush_token_usage_once()

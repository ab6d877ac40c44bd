"""A Beat scheduler that runs the schedule only while it holds a Redis lock.

Two Beat processes (a deploy overlap, a mistake in scaling) would otherwise both fire every
periodic task. Each tick renews a lease in Redis; a Beat that does not hold the lease only waits,
and takes over within one lease period if the holder dies.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import redis
from celery.beat import PersistentScheduler

logger = logging.getLogger(__name__)

LOCK_KEY = "connector:beat:lock"
LEASE_SECONDS = 30
# Followers check this often whether the leader is gone.
FOLLOWER_SLEEP = 5.0

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class LockedScheduler(PersistentScheduler):  # type: ignore[misc]
    """PersistentScheduler that ticks only while holding the Redis lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
        self._redis = redis.Redis.from_url(url, socket_timeout=5)
        self._identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew = self._redis.register_script(_RENEW)
        self._leading = False

    def _hold_lease(self) -> bool:
        lease_ms = LEASE_SECONDS * 1000
        try:
            if self._redis.set(LOCK_KEY, self._identity, nx=True, px=lease_ms):
                return True
            return bool(self._renew(keys=[LOCK_KEY], args=[self._identity, lease_ms]))
        except redis.RedisError:
            logger.warning("beat.lock-unavailable: not scheduling until Redis answers")
            return False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Run due entries if we lead; otherwise wait and try to take over later."""
        leading = self._hold_lease()
        if leading != self._leading:
            logger.info(
                "beat.%s identity=%s", "leading" if leading else "following", self._identity
            )
            self._leading = leading
        if not leading:
            return FOLLOWER_SLEEP
        interval: float = super().tick(*args, **kwargs)
        # Renew well before the lease runs out, however long the next entry is away.
        return min(interval, LEASE_SECONDS / 3)

    def close(self) -> None:
        """Give the lease up at shutdown so another Beat can take over at once."""
        try:
            if self._redis.get(LOCK_KEY) == self._identity.encode():
                self._redis.delete(LOCK_KEY)
        except redis.RedisError:
            pass
        super().close()

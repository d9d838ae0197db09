"""Client-side rate limit: a token bucket of MoEngage users, one per execution environment.

MoEngage limits a workspace to a number of users a minute across all callers. Each execution environment
gets rate / maximum concurrency of the event source mapping, so steady load stays under the limit and
causes no 429s. The bucket holds a few seconds of that share, which bounds the burst after a pause.
"""

from __future__ import annotations

import time
from collections.abc import Callable

BURST_SECONDS = 3.0


class TokenBucket:
    def __init__(
        self,
        rate_per_second: float,
        capacity: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        self.rate = rate_per_second
        self.capacity = max(1.0, capacity if capacity is not None else rate_per_second * BURST_SECONDS)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()

    @classmethod
    def for_share(cls, users_per_minute: int, max_concurrency: int) -> TokenBucket:
        return cls(users_per_minute / max_concurrency / 60.0)

    @property
    def max_acquire(self) -> int:
        """The most users one request may carry (a larger request could never get its tokens)."""
        return int(self.capacity)

    def available(self) -> float:
        self._refill()
        return self._tokens

    def acquire(self, users: int, max_wait_seconds: float) -> bool:
        """Take `users` tokens, sleeping until they are there; False (nothing taken) if that takes too long."""
        if users <= 0:
            return True
        if users > self.capacity:
            raise ValueError(f"cannot acquire {users} tokens from a bucket of {self.capacity:g}")
        self._refill()
        missing = users - self._tokens
        if missing > 0:
            wait = missing / self.rate
            if wait > max_wait_seconds:
                return False
            self._sleep(wait)
            self._refill()
        self._tokens = max(0.0, self._tokens - users)  # max(): float rounding after the sleep
        return True

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

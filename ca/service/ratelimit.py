"""Per-identity rate limiting: a token bucket per key, with an injected clock.

Sans-I/O: :meth:`RateLimiter.check` either returns or raises
:class:`RateLimitedError`. The number of buckets is bounded; when full, the
bucket idle the longest is dropped (it would have refilled anyway).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from ca.service.errors import RateLimitedError

__all__ = ["RateLimiter"]


class RateLimiter:
    """``rate`` requests per second per key, bursting up to ``burst``."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self._clock, self._max_keys = rate, float(burst), clock, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def check(self, key: str) -> None:
        """Take one token from ``key``'s bucket or raise :class:`RateLimitedError`."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        if not allowed:
            wait = (1.0 - tokens) / self.rate
            raise RateLimitedError(f"rate limit exceeded for {key}; retry in {wait:.2f}s")

"""Rate limiting: token buckets per app and per advertiser, shared by every sender thread.

Each bucket holds one token and gains one every ``1 / qps`` seconds (plus a 2% margin,
so that arrival jitter at the server does not turn ``qps`` evenly spaced requests into
``qps + 1`` in one second). A request takes a token from the app bucket and from its
advertiser's bucket at the same moment, so neither rate is ever exceeded however many
requests are in flight. A bucket of capacity one never bursts: TikTok counts requests
per second, and a burst allowance would let two seconds' worth land in one.

``slow_down`` empties a bucket for the rest of the current second: what a rate-limit
answer asks for, instead of hammering.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimiter"]

MARGIN = 1.02


@dataclass
class _Bucket:
    interval: float  # seconds per token; 0 = unlimited
    next_free: float = 0.0


class RateLimiter:
    def __init__(
        self,
        *,
        qps: float,
        per_key_qps: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._app = _Bucket(MARGIN / qps if qps > 0 else 0.0)
        self._key_interval = MARGIN / per_key_qps if per_key_qps > 0 else 0.0
        self._keys: dict[str, _Bucket] = {}
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    def _bucket(self, key: str | None) -> _Bucket:
        if key is None:
            return self._app
        return self._keys.setdefault(key, _Bucket(self._key_interval))

    def acquire(self, key: str | None = None) -> None:
        """Wait until a request for ``key`` (an advertiser) may go, and take its tokens."""
        with self._lock:
            buckets = (self._app, self._bucket(key)) if key is not None else (self._app,)
            now = self._clock()
            start = max(now, *(b.next_free for b in buckets))
            for bucket in buckets:
                bucket.next_free = start + bucket.interval
        if start > now:
            self._sleep(start - now)

    def slow_down(self, key: str | None = None) -> None:
        """No request from this bucket (``key``'s, or the app's) until the next second."""
        with self._lock:
            bucket = self._bucket(key)
            bucket.next_free = max(bucket.next_free, math.floor(self._clock()) + 1.0)

"""Rate limiting per app and per advertiser, paced by when requests actually leave.

A bucket lets one request go every ``1.02 / qps`` seconds, counted from the moment the
previous request was let go: ``acquire`` reads the clock, and only if that time is far
enough from the last send does it take the slot and return, all under one lock;
otherwise it sleeps and looks again. A sleep that wakes late (a loaded machine) then
only delays the next request; it can never bring two requests closer together. So any
one-second window holds at most ``qps`` sends (at most ``ceil(qps)`` for a fractional
``qps``), which is how TikTok counts. (Booking a slot and sleeping until it, as an
earlier version did, breaks this: after a late wake-up the next slot is already due and
two requests leave at once.)

The sends are spaced evenly, never in bursts: a burst leaves no room for jitter. The 2%
margin is that room: requests take varying times to reach TikTok after they leave
(network, connection set-up), and at exactly ``1 / qps`` apart a request that travels
slower than the one ``qps`` sends later would land ``qps + 1`` in one of TikTok's
seconds; 2% gives 20 ms of slack per second.

A request goes when both the app's bucket and its advertiser's allow it, and takes
both slots at the same moment, so neither rate is exceeded however many requests are
in flight. ``slow_down`` holds a bucket back for the rest of the current second: what a
rate-limit answer asks for, instead of hammering. ``qps`` 0 means no limit.
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
    interval: float  # seconds between two sends; 0 = unlimited
    last_sent: float = -math.inf
    not_before: float = -math.inf  # set by slow_down

    def ready_at(self) -> float:
        return max(self.last_sent + self.interval, self.not_before)


class RateLimiter:
    """Thread-safe; ``clock`` and ``sleep`` are injectable for tests."""

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
        """Wait until a request for ``key`` (an advertiser) may go, and record it as sent."""
        while True:
            with self._lock:
                buckets = (self._app, self._bucket(key)) if key is not None else (self._app,)
                now = self._clock()
                ready = max(bucket.ready_at() for bucket in buckets)
                if ready <= now:
                    for bucket in buckets:
                        bucket.last_sent = now
                    return
            self._sleep(ready - now)  # outside the lock; the time is checked again after

    def slow_down(self, key: str | None = None) -> None:
        """No request from this bucket (``key``'s, or the app's) until the next second."""
        with self._lock:
            bucket = self._bucket(key)
            bucket.not_before = max(bucket.not_before, math.floor(self._clock()) + 1.0)

"""Fake clocks for tests of pacing and retries, and the one real timeout tests may use.

No test may depend on how fast the machine is: several suites can share its two cores.
Time that a test measures comes from a fake clock here; a real timeout only keeps a
broken build from hanging the suite (``HANG_GUARD``), and is never what is checked.
"""

from __future__ import annotations

import threading

# Seconds to wait for something that happens at once when the code works (a reply from a
# server in this process, a thread reaching a barrier): only so that a bug fails the test
# instead of hanging it. Long enough for a machine running three suites at once.
HANG_GUARD = 60.0


class FakeClock:
    """Time that passes only when someone sleeps (or the test moves ``now``); it keeps
    every sleep in ``sleeps``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class ThreadsClock:
    """A fake clock shared by several threads (a sync's senders), on which time passes
    only when a thread sleeps, and takes no time between a thread's steps.

    Each thread stands at its own time: the time it last read, or that its last sleep
    ended at (the time it read, plus the sleep). The shared time ``now`` is the latest a
    thread stands at; reading the clock moves the reader up to it. Two threads that sleep
    at once do not add their sleeps up (as one ``FakeClock`` would), and a thread that
    another one's sleep overtook still knows when it woke: ``thread_now``, what a sender
    records as the moment its request left.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()
        self._mine = threading.local()

    def __call__(self) -> float:
        with self._lock:
            self._mine.now = self.now
            return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        with self._lock:
            self._mine.now = self._stands_at() + seconds
            self.now = max(self.now, self._mine.now)

    def thread_now(self) -> float:
        """The time the calling thread stands at."""
        with self._lock:
            return self._stands_at()

    def _stands_at(self) -> float:
        now: float = getattr(self._mine, "now", self.now)
        return now

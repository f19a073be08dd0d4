"""A fake monotonic clock for tests of pacing and retries."""

from __future__ import annotations


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

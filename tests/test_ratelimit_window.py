"""The rate limiter paces by when requests actually leave, whatever the scheduler does.

On a loaded machine a thread's ``sleep`` returns late. The limiter must still let no
more than ``qps`` requests go in any sliding one-second window, counted at the moment
each ``acquire`` returns. The clocks here are fake: a ``sleep`` that wakes late is a
clock that moves on by more than was asked for; with several threads, time stands
still while any thread runs and moves only when every thread sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from destination.kit.ratelimit import RateLimiter
from tests.clock import HANG_GUARD, FakeClock


def most_in_one_second(times: Sequence[float]) -> int:
    """The most sends in any half-open one-second window ``[t, t + 1)``."""
    ordered = sorted(times)
    return max(
        (sum(1 for u in ordered if start <= u < start + 1.0) for start in ordered), default=0
    )


class LateClock(FakeClock):
    """A clock whose ``sleep`` wakes late: the n-th sleep by ``lateness[n % len]`` more."""

    def __init__(self, lateness: Sequence[float]) -> None:
        super().__init__()
        self._lateness = itertools.cycle(lateness)

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds + next(self._lateness))


def sends(limiter: RateLimiter, clock: FakeClock, keys: Sequence[str | None]) -> list[float]:
    """Acquire for each key in turn at once; the times each request was let go."""
    sent: list[float] = []
    for key in keys:
        limiter.acquire(key)
        sent.append(clock())
    return sent


def test_a_sleep_that_wakes_late_is_not_followed_at_once_by_the_next_request() -> None:
    """The first wait overslept by almost an interval; the next sends must not catch up."""
    clock = LateClock([0.09, 0.0, 0.0, 0.0])
    limiter = RateLimiter(qps=10, clock=clock, sleep=clock.sleep)

    sent = sends(limiter, clock, [None] * 40)

    assert most_in_one_second(sent) <= 10
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 0.1


@pytest.mark.parametrize("qps", [1, 3, 10, 50])
@pytest.mark.parametrize("seed", range(5))
def test_no_second_holds_more_than_qps_sends_when_sleeps_wake_late(qps: int, seed: int) -> None:
    draw = random.Random(seed)
    clock = LateClock([draw.choice([0.0, 0.0, 0.3 / qps, 0.9 / qps, 2.0 / qps]) for _ in range(97)])
    limiter = RateLimiter(qps=qps, clock=clock, sleep=clock.sleep)

    sent = sends(limiter, clock, [None] * (4 * qps + 7))

    assert most_in_one_second(sent) <= qps


@settings(max_examples=200, deadline=None)
@given(
    qps=st.integers(1, 30),
    per_key_qps=st.integers(0, 30),
    lateness=st.lists(st.floats(0.0, 1.5), min_size=1, max_size=20),
    keys=st.lists(st.sampled_from([None, "adv-1", "adv-2"]), max_size=80),
)
def test_late_wake_ups_never_put_more_than_qps_sends_in_a_second(
    qps: int, per_key_qps: int, lateness: list[float], keys: list[str | None]
) -> None:
    clock = LateClock(lateness)
    limiter = RateLimiter(qps=qps, per_key_qps=per_key_qps, clock=clock, sleep=clock.sleep)

    sent = sends(limiter, clock, keys)

    assert most_in_one_second(sent) <= qps
    if per_key_qps:
        for key in {k for k in keys if k is not None}:
            mine = [t for t, k in zip(sent, keys, strict=True) if k == key]
            assert most_in_one_second(mine) <= per_key_qps, key


def test_fractional_qps_spaces_sends_by_its_interval() -> None:
    clock = LateClock([0.3, 0.0])
    limiter = RateLimiter(qps=0.5, clock=clock, sleep=clock.sleep)

    sent = sends(limiter, clock, [None] * 6)

    assert all(b - a >= 2.0 for a, b in itertools.pairwise(sent))


def test_qps_zero_never_waits() -> None:
    clock = LateClock([5.0])
    limiter = RateLimiter(qps=0, per_key_qps=0, clock=clock, sleep=clock.sleep)

    sent = sends(limiter, clock, [None, "a", "a", None] * 25)

    assert clock.sleeps == []
    assert set(sent) == {clock.now}


def test_on_time_sleeps_keep_the_full_rate() -> None:
    """Pacing by send times costs nothing when the scheduler is punctual."""
    clock = LateClock([0.0])
    limiter = RateLimiter(qps=10, clock=clock, sleep=clock.sleep)

    sent = sends(limiter, clock, [None] * 31)

    assert sent[-1] - sent[0] == pytest.approx(30 * 1.02 / 10)


def test_slow_down_still_holds_the_bucket_until_the_next_second() -> None:
    clock = LateClock([0.0])
    clock.now = 100.25
    limiter = RateLimiter(qps=10, per_key_qps=5, clock=clock, sleep=clock.sleep)
    limiter.acquire("a")

    limiter.slow_down("a")
    limiter.acquire("b")  # another advertiser is not held back
    assert clock.now < 101.0
    limiter.acquire("a")

    assert clock.now >= 101.0


# --- several threads ---------------------------------------------------------------------


class SimulatedTime:
    """Shared time for a fixed set of threads, as a simulation: it stands still while any
    thread runs (so a thread reads the same time the limiter saw when it let it go) and
    moves on only when every thread sleeps or is done. Then the sleeper due first wakes,
    ``late()`` seconds after it asked to (a loaded machine)."""

    def __init__(self, threads: int, late: Callable[[], float]) -> None:
        self.now = 1000.0
        self._late = late
        self._running = threads
        self._due: list[tuple[float, int]] = []  # (wake-up time, sleeper) as a heap
        self._woken: set[int] = set()
        self._tickets = itertools.count()
        self._changed = threading.Condition()

    def __call__(self) -> float:
        with self._changed:
            return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        with self._changed:
            ticket = next(self._tickets)
            heapq.heappush(self._due, (self.now + seconds, ticket))
            self._running -= 1
            self._move_on()
            while ticket not in self._woken:
                # a guard against a hang, not a timing assertion
                assert self._changed.wait(HANG_GUARD), "the simulated threads deadlocked"
            self._woken.discard(ticket)

    def done(self) -> None:
        with self._changed:
            self._running -= 1
            self._move_on()

    def _move_on(self) -> None:
        if self._running == 0 and self._due:
            due, ticket = heapq.heappop(self._due)
            self.now = max(self.now, due + self._late())
            self._running += 1
            self._woken.add(ticket)
            self._changed.notify_all()


@pytest.mark.parametrize("seed", range(4))
def test_threads_whose_sleeps_wake_late_stay_within_the_limits(seed: int) -> None:
    qps, per_key_qps, threads, each = 10, 4, 6, 25
    draw = random.Random(seed)
    draw_lock = threading.Lock()

    def late() -> float:
        with draw_lock:
            return draw.choice([0.0, 0.0, 0.02, 0.08, 0.25])

    time = SimulatedTime(threads, late)
    limiter = RateLimiter(qps=qps, per_key_qps=per_key_qps, clock=time, sleep=time.sleep)
    sent: list[tuple[float, str]] = []
    sent_lock = threading.Lock()
    failures: list[BaseException] = []

    def sender(index: int) -> None:
        try:
            for n in range(each):
                key = f"adv-{(index + n) % 3}"
                limiter.acquire(key)
                with sent_lock:
                    sent.append((time(), key))
        except BaseException as exc:  # reported by the test below
            failures.append(exc)
        finally:
            time.done()

    workers = [threading.Thread(target=sender, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert failures == []
    assert len(sent) == threads * each
    assert most_in_one_second([t for t, _ in sent]) <= qps
    for key in {k for _, k in sent}:
        assert most_in_one_second([t for t, k in sent if k == key]) <= per_key_qps, key

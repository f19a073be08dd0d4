"""The sync pipeline: events in, batches out, one result per event.

Each input line comes routed (``runner.route``: per matching subscription, a ``Step``
with the event's digest or why it is rejected); the pipeline places each step
(``Subscription.place``: count, create the audience, ...) and puts the prepared item in
the batch of its group. A full batch is handed to a pool of sender threads
(``concurrency`` batches in flight at most; the rate limiter in the API client keeps
them under the QPS); what is left is sent at the end of input. Answers are taken in by
the main thread only, so the counts, the output files and the checkpoint have one
writer. A source may listen (``Listener``): it hears of every finished line with the
items its subscriptions accepted and of every answered batch (a warehouse query records
what TikTok holds), words a rejected line's record itself, and may name a line before
which every earlier one must be answered (removals before the additions that follow).

Order is kept per user: when an item's keys (a user's hashed identifiers) wait in the
open batch of its ``conflicts`` group (a removal from the audience it adds to, or the
reverse), that batch is sent first; and a batch does not go out while a batch of its
``conflicts`` group is in flight. Changes to different users commute, so a stream that
mixes adds and removals for one audience still travels in full batches.

An event is finished when every subscription it fed has answered: delivered if all
accepted it, otherwise rejected with every reason. A stop (TikTok refused the token,
refused the run's first requests all the same way, or stayed unavailable through every
retry) finishes what is in flight, then rejects (bad token, bad settings) or defers to
the retry file (TikTok down) every event not delivered, read or not:
``received == delivered + rejected + deferred`` however the run ends.
"""

from __future__ import annotations

import itertools
import logging
import queue
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from destination.errors import (
    ApiUnavailableError,
    AuthenticationError,
    MisconfiguredError,
    PayloadError,
)
from destination.gc_tuning import few_collections
from destination.kit.action import Action, Outcome, Prepared, Subscription
from destination.kit.batching import Batch, Batcher
from destination.runner.checkpoint import Progress
from destination.runner.outputs import OutputFile, rejected_record
from destination.runner.reader import Line
from destination.runner.route import RoutedLine

__all__ = ["STOP_REASONS", "Accepted", "Listener", "Pipeline", "Tally"]

log = logging.getLogger(__name__)

# reason code of a stop -> the exception that causes it
STOP_REASONS: dict[str, type[Exception]] = {
    "auth": AuthenticationError,
    "api_unavailable": ApiUnavailableError,
    "configuration": MisconfiguredError,
}


@dataclass
class Tally:
    """Counts derived from the per-event results as they are finished."""

    received: int = 0
    delivered: int = 0
    rejected: int = 0
    deferred: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    delivered_by_subscription: Counter[str] = field(default_factory=Counter)
    stopped: dict[str, str] | None = None  # {reason, message} when the run stopped early

    def to_json(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "delivered": self.delivered,
            "rejected": self.rejected,
            "deferred": self.deferred,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "delivered_by_subscription": dict(sorted(self.delivered_by_subscription.items())),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Tally:
        return cls(
            received=int(document["received"]),
            delivered=int(document["delivered"]),
            rejected=int(document["rejected"]),
            deferred=int(document["deferred"]),
            rejected_by_reason=Counter(document["rejected_by_reason"]),
            delivered_by_subscription=Counter(document["delivered_by_subscription"]),
        )


class _Failure(NamedTuple):
    """Why one subscription (none: ``""``, for the whole event) did not take an event."""

    subscription: str
    reason: str
    message: str


class _Event:
    """An event being placed or waiting for answers (one per input line in flight). It
    keeps its line's number and bytes, not its steps: they hold the digests, which take
    more memory than the bytes."""

    __slots__ = ("accepted", "data", "error", "failures", "items", "number", "raw", "waiting")

    def __init__(
        self, line: RoutedLine, waiting: int, failures: list[_Failure] | None = None
    ) -> None:
        self.number = line.number
        self.data = line.data
        self.error = line.error
        self.raw = line.raw
        self.waiting = waiting
        self.failures: list[_Failure] = failures or []
        self.accepted: list[str] = []
        self.items: list[Any] = []  # what was sent for each of ``accepted``, when kept

    def line(self) -> Line:
        """Its line as the reader gives it (what the rejected file is written from)."""
        return Line(self.number, None, self.raw, self.error, self.data.rstrip(b"\r\n"))


class _Item(NamedTuple):
    """One item of a batch: the event it came from, the subscription's name, what to send."""

    event: _Event
    subscription: str
    item: Any


class _Stop(Exception):
    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(message)


class Listener(Protocol):
    """What a source may want to hear of its lines (see ``runner.source.Feedback``)."""

    def finished(self, number: int, delivered: bool, accepted: Sequence[Accepted]) -> None: ...

    def rejected_view(self, number: int) -> dict[str, Any] | None: ...

    def barrier(self) -> int | None: ...

    def answered(self) -> None: ...


class Accepted(NamedTuple):
    """One subscription that accepted an event, and the item it sent for it."""

    subscription: str
    item: Any


class Pipeline:
    """Places, batches and sends routed lines; ``listener`` (optional) hears of every
    finished line with what was sent for it, may replace a rejected line's event in the
    rejected file, and may name a line before which everything must be answered."""

    def __init__(
        self,
        subscriptions: Sequence[Subscription],
        *,
        batch_size: int,
        rejected: OutputFile,
        retry: OutputFile,
        concurrency: int = 1,
        tally: Tally | None = None,
        progress: Progress | None = None,
        on_progress: Callable[[Pipeline], None] | None = None,
        listener: Listener | None = None,
    ) -> None:
        self._subscriptions = subscriptions
        self._listener = listener
        self._barrier = listener.barrier() if listener is not None else None
        self._batcher: Batcher[_Item] = Batcher(batch_size)
        self._performers: dict[Hashable, Action] = {}
        self._conflicts: dict[Hashable, Hashable] = {}
        self._open_keys: dict[Hashable, set[Hashable]] = {}  # keys waiting, per open group
        self._rejected = rejected
        self._retry = retry
        self._concurrency = max(1, concurrency)
        self._ready: list[Batch[_Item]] = []  # full batches waiting to be sent, in order
        self._in_flight: dict[Future[list[Outcome]], Batch[_Item]] = {}
        self._answered: queue.SimpleQueue[Future[list[Outcome]]] = queue.SimpleQueue()
        self._current: _Event | None = None  # the event being routed
        self._on_progress = on_progress
        self.tally = tally or Tally()
        self.progress = progress or Progress()

    def run(self, lines: Iterable[RoutedLine]) -> Tally:
        """Place, batch and send every routed line; the tally when all are answered."""
        source = iter(lines)
        with (
            few_collections(),
            ThreadPoolExecutor(self._concurrency, thread_name_prefix="sender") as pool,
        ):
            is_finished, ready, answered = self.progress.is_finished, self._ready, self._answered
            try:
                for line in source:
                    if is_finished(line.number):
                        continue  # done by the run this one resumes
                    if line.number == self._barrier:
                        try:
                            self._answer_all(pool)
                        except _Stop:  # the barrier line was read, not taken: with the rest
                            source = itertools.chain([line], source)
                            raise
                    self._take(line)
                    if ready:
                        self._send_ready(pool)
                    if not answered.empty():
                        self._collect(block=False)
                self._answer_all(pool)
            except _Stop as stop:
                self._stop(stop, source)
        return self.tally

    def _answer_all(self, pool: ThreadPoolExecutor) -> None:
        """Send every open batch and wait until all are answered."""
        for batch in self._batcher.drain():
            self._make_ready(batch)
        self._send_ready(pool)
        while self._in_flight:
            self._collect(block=True)

    # -- per event --------------------------------------------------------------------

    def _take(self, line: RoutedLine) -> None:
        steps = line.steps
        if line.error:
            failure = _Failure("", "invalid_json", f"line {line.number} is {line.error}")
            self._finish(_Event(line, 0, [failure]))
            return
        if not steps:
            failure = _Failure("", "no_subscription", "no subscription matches this event")
            self._finish(_Event(line, 0, [failure]))
            return
        event = self._current = _Event(line, len(steps))
        self.progress.started(line.number)
        subscriptions = self._subscriptions
        for step in steps:
            subscription = subscriptions[step.subscription]
            try:
                prepared = subscription.place(step)
            except PayloadError as exc:
                self._answer(event, subscription.name, Outcome.rejected(exc.reason, str(exc)))
                continue
            except _STOP_ERRORS as exc:
                raise _stop_for(exc) from exc
            self._add(event, subscription, prepared)
        self._current = None

    def _add(self, event: _Event, subscription: Subscription, prepared: Prepared) -> None:
        """Put one prepared item in the batch of its group."""
        self._performers.setdefault(prepared.group, subscription.action)
        if prepared.conflicts is not None:
            self._conflicts.setdefault(prepared.group, prepared.conflicts)
            waiting = self._open_keys.get(prepared.conflicts)
            if waiting and not waiting.isdisjoint(prepared.keys):
                self._make_ready(self._batcher.take(prepared.conflicts))
        keys = self._open_keys.get(prepared.group)
        if keys is None:
            keys = self._open_keys[prepared.group] = set()
        keys.update(prepared.keys)
        full = self._batcher.add(prepared.group, _Item(event, subscription.name, prepared.item))
        if full is not None:
            self._make_ready(full)

    def _answer(self, event: _Event, subscription: str, outcome: Outcome, item: Any = None) -> None:
        if outcome.ok:
            event.accepted.append(subscription)
            if self._listener is not None:
                event.items.append(item)
        else:
            event.failures.append(_Failure(subscription, outcome.reason, outcome.message))
        event.waiting -= 1
        if event.waiting == 0:
            self._finish(event)

    def _finish(self, event: _Event) -> None:
        self.progress.finished(event.number)
        tally = self.tally
        tally.received += 1  # counted when finished, so a resumed run never counts it twice
        listener = self._listener
        view = None  # the listener's record of a rejected line, asked before it forgets it
        if listener is not None:
            if event.failures:
                view = listener.rejected_view(event.number)
            accepted = [Accepted(*a) for a in zip(event.accepted, event.items, strict=True)]
            listener.finished(event.number, not event.failures, accepted)
        if not event.failures:
            tally.delivered += 1
            for name in event.accepted:
                tally.delivered_by_subscription[name] += 1
            return
        reason = event.failures[0].reason
        if reason == "api_unavailable" and self._retry.path is not None and not event.error:
            tally.deferred += 1
            self._retry.write_line(event.data.rstrip(b"\r\n"))
            return
        tally.rejected += 1
        tally.rejected_by_reason[reason] += 1
        message = "; ".join(
            f"{f.subscription}: {f.message}" if f.subscription else f.message
            for f in event.failures
        )
        if view is None:
            self._rejected.write(rejected_record(event.line(), reason, message))
        else:
            self._rejected.write(
                {"line": event.number, "reason": reason, "message": message, **view}
            )

    # -- sending ------------------------------------------------------------------------

    def _make_ready(self, batch: Batch[_Item]) -> None:
        self._open_keys.pop(batch.group, None)
        self._ready.append(batch)

    def _send_ready(self, pool: ThreadPoolExecutor) -> None:
        """Send the ready batches in order; one that meets a stop stays ready."""
        while self._ready:
            self._submit(pool, self._ready[0])
            self._ready.pop(0)

    def _submit(self, pool: ThreadPoolExecutor, batch: Batch[_Item]) -> None:
        conflict = self._conflicts.get(batch.group)
        while any(b.group == conflict for b in self._in_flight.values()):
            self._collect(block=True)
        while len(self._in_flight) >= self._concurrency:
            self._collect(block=True)
        action = self._performers[batch.group]
        future = pool.submit(action.perform_batch, batch.group, [i.item for i in batch.items])
        self._in_flight[future] = batch
        future.add_done_callback(self._answered.put)

    def _collect(self, *, block: bool) -> None:
        """Take in the answers that arrived (waiting for one when ``block``).

        Called after every event, so the common case (nothing arrived) costs one check.
        """
        if block and self._in_flight:
            self._settle(self._answered.get())
        while not self._answered.empty():
            self._settle(self._answered.get())

    def _settle(self, future: Future[list[Outcome]]) -> None:
        batch = self._in_flight.pop(future, None)
        if batch is None:  # settled by a stop already
            return
        try:
            outcomes = future.result()
        except _STOP_ERRORS as exc:
            self._in_flight[future] = batch  # answered by _stop, with the rest
            raise _stop_for(exc) from exc
        if len(outcomes) != len(batch.items):
            raise AssertionError(f"{len(outcomes)} outcomes for {len(batch.items)} items")
        for item, outcome in zip(batch.items, outcomes, strict=True):
            self._answer(item.event, item.subscription, outcome, item.item)
        if self._listener is not None:
            self._listener.answered()
        if self._on_progress is not None:
            self._on_progress(self)

    # -- stopping -----------------------------------------------------------------------

    def _stop(self, stop: _Stop, rest: Iterator[RoutedLine]) -> None:
        """Finish what is in flight, then reject or defer everything not delivered."""
        self.tally.stopped = {"reason": stop.reason, "message": stop.message}
        log.info("stopping: %s", stop.message)
        unanswered: list[_Event] = []
        for future, batch in list(self._in_flight.items()):
            del self._in_flight[future]
            try:
                outcomes = future.result()
            except Exception:
                unanswered += [item.event for item in batch.items]
                continue
            for item, outcome in zip(batch.items, outcomes, strict=True):
                self._answer(item.event, item.subscription, outcome, item.item)
        unanswered += [item.event for batch in self._ready for item in batch.items]
        self._ready.clear()
        unanswered += [item.event for batch in self._batcher.drain() for item in batch.items]
        if self._current is not None:
            unanswered.append(self._current)
        not_sent = f"not sent: {stop.message}"
        for event in {id(e): e for e in unanswered}.values():
            if event.waiting > 0:
                event.failures.insert(0, _Failure("", stop.reason, not_sent))
                event.waiting = 0
                self._finish(event)
        for line in rest:
            if self.progress.is_finished(line.number):
                continue
            if line.error:
                failure = _Failure("", "invalid_json", f"line {line.number} is {line.error}")
            else:
                failure = _Failure("", stop.reason, not_sent)
            self._finish(_Event(line, 0, [failure]))


_STOP_ERRORS = tuple(STOP_REASONS.values())


def _stop_for(exc: Exception) -> _Stop:
    reason = next(r for r, cls in STOP_REASONS.items() if isinstance(exc, cls))
    return _Stop(reason, str(exc))

"""The sync pipeline: events in, batches out, one result per event.

For each input line: match the subscriptions, route the event through each matching one
(map, drop empties, validate, prepare), and put the prepared item in the batch of its
group. A full batch is handed to a pool of sender threads (``concurrency`` batches in
flight at most; the rate limiter in the API client keeps them under the QPS); what is
left is sent at the end of input. Answers are taken in by the main thread only, so the
counts, the output files and the checkpoint have one writer.

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

import logging
import queue
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

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

__all__ = ["STOP_REASONS", "Pipeline", "Routed", "Steps", "Tally"]

log = logging.getLogger(__name__)

# reason code of a stop -> the exception that causes it
STOP_REASONS: dict[str, type[Exception]] = {
    "auth": AuthenticationError,
    "api_unavailable": ApiUnavailableError,
    "configuration": MisconfiguredError,
}


# an event routed elsewhere (by ``Subscription.digest``, in a worker process): per
# matching subscription, the payload's fields as bits, the digest, or [reason, message]
Steps = list[tuple[Subscription, int, Any, Sequence[str] | None]]
# a line and, when it was routed elsewhere, its steps (the line then keeps no event)
Routed = tuple[Line, Steps | None]


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


class _Event:
    """An event being routed or waiting for answers (one per input line in flight)."""

    __slots__ = ("accepted", "failures", "line", "waiting")

    def __init__(
        self, line: Line, waiting: int, failures: list[tuple[str, str, str]] | None = None
    ) -> None:
        self.line = line
        self.waiting = waiting
        self.failures: list[tuple[str, str, str]] = failures or []  # (subscription, reason, msg)
        self.accepted: list[str] = []


# one item of a batch: the event it came from, the subscription's name, what to send
_Item = tuple[_Event, str, Any]


class _Stop(Exception):
    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(message)


class Pipeline:
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
    ) -> None:
        self._subscriptions = subscriptions
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

    def run(self, lines: Iterable[Line]) -> Tally:
        """Route each line here, then batch and send."""
        return self.run_routed((line, None) for line in lines)

    def run_routed(self, lines: Iterable[Routed]) -> Tally:
        """Batch and send lines routed elsewhere (or here, for those without steps)."""
        source = iter(lines)
        with (
            few_collections(),
            ThreadPoolExecutor(self._concurrency, thread_name_prefix="sender") as pool,
        ):
            is_finished, ready, answered = self.progress.is_finished, self._ready, self._answered
            try:
                for line, steps in source:
                    if is_finished(line.number):
                        continue  # done by the run this one resumes
                    self._take(line, steps)
                    if ready:
                        self._send_ready(pool)
                    if not answered.empty():
                        self._collect(block=False)
                for batch in self._batcher.drain():
                    self._make_ready(batch)
                self._send_ready(pool)
                while self._in_flight:
                    self._collect(block=True)
            except _Stop as stop:
                self._stop(stop, source)
        return self.tally

    # -- per event --------------------------------------------------------------------

    def _take(self, line: Line, steps: Steps | None) -> None:
        if line.error:
            self._finish(
                _Event(line, 0, [("", "invalid_json", f"line {line.number} is {line.error}")])
            )
            return
        if steps is None:
            assert line.event is not None
            parsed = line.event
            matched = [s for s in self._subscriptions if s.condition.matches(parsed)]
            count = len(matched)
        else:
            count = len(steps)
        if not count:
            self._finish(
                _Event(line, 0, [("", "no_subscription", "no subscription matches this event")])
            )
            return
        # kept until answered: the line's bytes, not the parsed event (a tenth of the memory)
        kept = line if line.event is None else Line(line.number, None, data=line.data)
        event = self._current = _Event(kept, count)
        self.progress.started(line.number)
        if steps is None:
            for subscription in matched:
                self._attempt(event, subscription, subscription.route, parsed)
        else:
            for subscription, *rest in steps:
                self._attempt(event, subscription, _place, subscription, *rest)
        self._current = None

    def _attempt(
        self,
        event: _Event,
        subscription: Subscription,
        prepare: Callable[..., Prepared],
        *args: Any,
    ) -> None:
        """Prepare one event for one subscription: batch it, or answer why not."""
        try:
            prepared = prepare(*args)
        except PayloadError as exc:
            self._answer(event, subscription.name, Outcome.rejected(exc.reason, str(exc)))
            return
        except _STOP_ERRORS as exc:
            raise _stop_for(exc) from exc
        self._add(event, subscription, prepared)

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
        full = self._batcher.add(prepared.group, (event, subscription.name, prepared.item))
        if full is not None:
            self._make_ready(full)

    def _answer(self, event: _Event, subscription: str, outcome: Outcome) -> None:
        if outcome.ok:
            event.accepted.append(subscription)
        else:
            event.failures.append((subscription, outcome.reason, outcome.message))
        event.waiting -= 1
        if event.waiting == 0:
            self._finish(event)

    def _finish(self, event: _Event) -> None:
        self.progress.finished(event.line.number)
        tally = self.tally
        tally.received += 1  # counted when finished, so a resumed run never counts it twice
        if not event.failures:
            tally.delivered += 1
            for name in event.accepted:
                tally.delivered_by_subscription[name] += 1
            return
        reason = event.failures[0][1]
        if reason == "api_unavailable" and self._retry.path is not None and not event.line.error:
            tally.deferred += 1
            self._retry.write_line(event.line.data)
            return
        tally.rejected += 1
        tally.rejected_by_reason[reason] += 1
        message = "; ".join(f"{s}: {m}" if s else m for s, _, m in event.failures)
        self._rejected.write(rejected_record(event.line, reason, message))

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
        future = pool.submit(action.perform_batch, batch.group, [i[2] for i in batch.items])
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
        for (event, name, _), outcome in zip(batch.items, outcomes, strict=True):
            self._answer(event, name, outcome)
        if self._on_progress is not None:
            self._on_progress(self)

    # -- stopping -----------------------------------------------------------------------

    def _stop(self, stop: _Stop, rest: Iterator[Routed]) -> None:
        """Finish what is in flight, then reject or defer everything not delivered."""
        self.tally.stopped = {"reason": stop.reason, "message": stop.message}
        log.info("stopping: %s", stop.message)
        unanswered: list[_Event] = []
        for future, batch in list(self._in_flight.items()):
            del self._in_flight[future]
            try:
                outcomes = future.result()
            except Exception:
                unanswered += [item[0] for item in batch.items]
                continue
            for (event, name, _), outcome in zip(batch.items, outcomes, strict=True):
                self._answer(event, name, outcome)
        unanswered += [item[0] for batch in self._ready for item in batch.items]
        self._ready.clear()
        unanswered += [item[0] for batch in self._batcher.drain() for item in batch.items]
        if self._current is not None:
            unanswered.append(self._current)
        not_sent = f"not sent: {stop.message}"
        for event in {id(e): e for e in unanswered}.values():
            if event.waiting > 0:
                event.failures.insert(0, ("", stop.reason, not_sent))
                event.waiting = 0
                self._finish(event)
        for line, _ in rest:
            if self.progress.is_finished(line.number):
                continue
            if line.error:
                failure = ("", "invalid_json", f"line {line.number} is {line.error}")
            else:
                failure = ("", stop.reason, not_sent)
            self._finish(_Event(line, 0, [failure]))


def _place(
    subscription: Subscription, mask: int, digest: Any, error: Sequence[str] | None
) -> Prepared:
    """The main-process half of routing an event a worker digested."""
    subscription.account(mask)
    if error is not None:
        raise PayloadError(error[1], reason=error[0])
    return subscription.place(digest)


_STOP_ERRORS = tuple(STOP_REASONS.values())


def _stop_for(exc: Exception) -> _Stop:
    reason = next(r for r, cls in STOP_REASONS.items() if isinstance(exc, cls))
    return _Stop(reason, str(exc))

"""The sync pipeline: events in, batches out, one result per event.

For each input line: match the subscriptions, route the event through each matching one
(map, drop empties, validate, prepare), and put the prepared item in the batch of its
group. A full batch is sent at once; the rest is sent at the end of input. An item whose
``conflicts`` group is open (adding a user while removals for the same audience wait)
first sends that group, so changes to one audience reach TikTok in input order.

An event is finished when every subscription it fed has answered: delivered if all
accepted it, otherwise rejected with every reason. A stop (bad credentials, TikTok down
past every retry) rejects what was not delivered, read or not, with the stop's reason, so
``received == delivered + rejected`` holds however the run ends.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from destination.errors import ApiUnavailableError, AuthenticationError, PayloadError
from destination.kit.action import Action, Outcome, Subscription
from destination.kit.batching import Batch, Batcher
from destination.runner.reader import Line
from destination.runner.rejected import RejectedSink

__all__ = ["Pipeline", "Tally"]

log = logging.getLogger(__name__)


@dataclass
class Tally:
    """Counts derived from the per-event results as they are finished."""

    received: int = 0
    delivered: int = 0
    rejected: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    delivered_by_subscription: Counter[str] = field(default_factory=Counter)
    stopped: dict[str, str] | None = None  # {reason, message} when the run stopped early


@dataclass
class _Event:
    line: Line
    waiting: int
    failures: list[tuple[str, str, str]] = field(
        default_factory=list
    )  # (subscription, reason, msg)
    accepted: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Item:
    event: _Event
    subscription: str
    payload: Any


class Pipeline:
    def __init__(
        self,
        subscriptions: Sequence[Subscription],
        *,
        batch_size: int,
        rejected: RejectedSink,
    ) -> None:
        self._subscriptions = subscriptions
        self._batcher: Batcher[_Item] = Batcher(batch_size)
        self._performers: dict[Hashable, Action] = {}
        self._rejected = rejected
        self._current: _Event | None = None  # the event being routed
        self._in_flight: list[_Item] = []  # the batch being sent
        self.tally = Tally()

    def run(self, lines: Iterable[Line]) -> Tally:
        source = iter(lines)
        try:
            for line in source:
                self._take(line)
            for batch in self._batcher.drain():
                self._send(batch)
        except (AuthenticationError, ApiUnavailableError) as exc:
            reason = "auth" if isinstance(exc, AuthenticationError) else "api_unavailable"
            self._stop(reason, str(exc), source)
        return self.tally

    # -- per event --------------------------------------------------------------------

    def _take(self, line: Line) -> None:
        self.tally.received += 1
        if line.event is None:
            self._finish(
                _Event(line, 0, [("", "invalid_json", f"line {line.number} is {line.error}")])
            )
            return
        matched = [s for s in self._subscriptions if s.condition.matches(line.event)]
        if not matched:
            self._finish(
                _Event(line, 0, [("", "no_subscription", "no subscription matches this event")])
            )
            return
        event = self._current = _Event(line, len(matched))
        for subscription in matched:
            try:
                prepared = subscription.route(line.event)
            except PayloadError as exc:
                self._answer(event, subscription.name, Outcome.rejected(exc.reason, str(exc)))
                continue
            self._performers.setdefault(prepared.group, subscription.action)
            if prepared.conflicts is not None and self._batcher.is_open(prepared.conflicts):
                self._send(self._batcher.take(prepared.conflicts))
            full = self._batcher.add(prepared.group, _Item(event, subscription.name, prepared.item))
            if full is not None:
                self._send(full)
        self._current = None

    def _send(self, batch: Batch[_Item]) -> None:
        action = self._performers[batch.group]
        self._in_flight = batch.items
        outcomes = action.perform_batch(batch.group, [item.payload for item in batch.items])
        self._in_flight = []
        if len(outcomes) != len(batch.items):
            raise AssertionError(
                f"{action.key} answered {len(outcomes)} outcomes for {len(batch.items)} items"
            )
        for item, outcome in zip(batch.items, outcomes, strict=True):
            self._answer(item.event, item.subscription, outcome)

    def _answer(self, event: _Event, subscription: str, outcome: Outcome) -> None:
        if outcome.ok:
            event.accepted.append(subscription)
        else:
            event.failures.append((subscription, outcome.reason, outcome.message))
        event.waiting -= 1
        if event.waiting == 0:
            self._finish(event)

    def _finish(self, event: _Event) -> None:
        if not event.failures:
            self.tally.delivered += 1
            self.tally.delivered_by_subscription.update(event.accepted)
            return
        self.tally.rejected += 1
        reason = event.failures[0][1]
        self.tally.rejected_by_reason[reason] += 1
        message = "; ".join(f"{s}: {m}" if s else m for s, _, m in event.failures)
        self._rejected.write(event.line, reason, message)

    # -- stopping -----------------------------------------------------------------------

    def _stop(self, reason: str, message: str, rest: Iterable[Line]) -> None:
        """Reject everything not yet delivered with the stop's reason; nothing is lost."""
        self.tally.stopped = {"reason": reason, "message": message}
        log.info("stopping: %s", message)
        # Unanswered events sit in the batch being sent, in open batches, or are the one
        # being routed (creating its audience can meet the stop too).
        unanswered = [item.event for item in self._in_flight]
        unanswered += [item.event for batch in self._batcher.drain() for item in batch.items]
        if self._current is not None:
            unanswered.append(self._current)
        for event in {id(e): e for e in unanswered}.values():
            if event.waiting > 0:
                self._reject_all(event, reason, message)
        for line in rest:
            self.tally.received += 1
            self._finish(_Event(line, 0, [("", reason, f"not sent: {message}")]))

    def _reject_all(self, event: _Event, reason: str, message: str) -> None:
        event.failures.append(("", reason, f"not sent: {message}"))
        event.waiting = 0
        self._finish(event)

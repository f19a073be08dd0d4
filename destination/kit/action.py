"""Actions and the one route every event takes: map, drop empties, validate, prepare.

An ``Action`` declares its fields (see ``kit.fields``) and two steps of its own:

- ``prepare(payload)`` turns one validated payload into a ``Prepared`` item (for TikTok:
  normalized and hashed identifiers) with the ``group`` it must be sent with, or raises
  ``PayloadError`` for that event alone;
- optionally, ``prepare`` in two steps: ``digest(payload)`` does the pure, costly part
  (its result must pickle: it may run in a worker process) and ``place(digest)`` the
  rest in the main process (what needs the run's state, such as creating an audience),
  with ``prepare(payload) == place(digest(payload))``;
- ``perform_batch(group, items)`` sends one batch and answers one ``Outcome`` per item, in
  order. There is no single-event path: one event is a batch of one.

A ``Subscription`` binds an action to a condition and a compiled mapping; ``route`` is
the per-event half of the pipeline. Nothing here knows about TikTok.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from destination.errors import MappingError, PayloadError
from destination.kit.fields import Field, default_mapping, payload_schema
from destination.kit.mapping import CompiledMapping, compile_mapping
from destination.kit.schema import PayloadValidator, PayloadValidators, json_pointer
from destination.kit.subscriptions import Condition, parse_subscription

__all__ = [
    "Action",
    "Outcome",
    "Prepared",
    "Subscription",
    "TwoStepAction",
    "bind_subscription",
]


class Prepared(NamedTuple):
    """One event made ready for sending: ``item`` goes in the batch for ``group``.

    Items of one group must be interchangeable for the action that sends them.
    ``conflicts`` names the group whose changes do not commute with this one's (removals
    from the audience this item adds to) and ``keys`` identify what the item changes (a
    user's hashed identifiers): when the open batch of ``conflicts`` holds one of these
    keys, that batch is sent first, so the changes to one user keep their order.
    """

    group: Hashable
    item: Any
    conflicts: Hashable | None = None
    keys: frozenset[Hashable] = frozenset()


@dataclass(frozen=True)
class Outcome:
    """What happened to one item of a batch. ``reason`` is a short code when not ok."""

    ok: bool
    reason: str = ""
    message: str = ""

    @classmethod
    def delivered(cls) -> Outcome:
        return _DELIVERED  # one shared value: outcomes are immutable

    @classmethod
    def rejected(cls, reason: str, message: str) -> Outcome:
        return cls(ok=False, reason=reason, message=message)


_DELIVERED = Outcome(ok=True)


class Action(Protocol):
    """What the framework needs of an action."""

    @property
    def key(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def fields(self) -> Sequence[Field]: ...

    def prepare(self, payload: Mapping[str, Any]) -> Prepared: ...

    def perform_batch(self, group: Hashable, items: Sequence[Any]) -> list[Outcome]: ...


@runtime_checkable
class TwoStepAction(Protocol):
    """An action whose ``prepare`` is ``place(digest(payload))``; ``digest`` is pure."""

    def digest(self, payload: Mapping[str, Any]) -> Any: ...

    def place(self, digest: Any) -> Prepared: ...


@dataclass(eq=False)
class Subscription:
    """An action fed by the events that match ``condition``, through ``mapping``.

    ``routed`` counts the events it took and ``seen`` names the fields that had a value;
    ``mapped_from_event`` names the fields the mapping file maps its own way from the
    event (not the field's default mapping, not a literal), so such a mapping that points
    nowhere can be reported. A default mapping finding nothing is normal: not every user
    has a phone.
    """

    name: str
    action: Action
    condition: Condition
    mapping: CompiledMapping
    validator: PayloadValidator = field(repr=False)
    mapped_from_event: tuple[str, ...] = ()
    routed: int = 0
    # the payloads' field names (routed here) and fields as bits (digested elsewhere):
    # a few distinct ones per run, so ``seen`` costs a set insertion per event
    _shapes: set[tuple[str, ...]] = field(init=False, repr=False, default_factory=set)
    _masks: set[int] = field(init=False, repr=False, default_factory=set)
    _two_step: bool = field(init=False, repr=False, default=False)
    _bits: dict[str, int] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._two_step = isinstance(self.action, TwoStepAction)
        self._bits = {f.name: 1 << i for i, f in enumerate(self.action.fields)}

    def route(self, event: Mapping[str, Any]) -> Prepared:
        """Map, drop empty values, validate and prepare one event; ``PayloadError`` if bad."""
        payload = self.mapping.payload(event)
        self.routed += 1
        self._shapes.add(tuple(payload))
        problems = self.validator.problems(payload)
        if problems:
            raise PayloadError("; ".join(problems))
        return self.action.prepare(payload)

    # -- the route in two steps: ``digest`` may run in a worker process ----------------

    def digest(self, event: Mapping[str, Any]) -> tuple[int, Any, tuple[str, str] | None]:
        """The pure part of ``route``: ``(fields, digest, None)``, or ``(fields, None,
        (reason, message))`` for a bad payload. ``fields`` (the payload's fields as bits)
        is for ``account``; this subscription's own counters are left alone."""
        payload = self.mapping.payload(event)
        bits = self._bits
        mask = 0
        for name in payload:
            mask |= bits.get(name, 0)
        try:
            problems = self.validator.problems(payload)
            if problems:
                raise PayloadError("; ".join(problems))
            if self._two_step:
                return mask, self.action.digest(payload), None  # type: ignore[attr-defined]
        except PayloadError as exc:
            return mask, None, (exc.reason, str(exc))
        return mask, payload, None

    def account(self, mask: int) -> None:
        """Count one event routed by ``digest`` elsewhere, as ``route`` counts its own."""
        self.routed += 1
        self._masks.add(mask)

    @property
    def seen(self) -> frozenset[str]:
        """The fields that had a value in at least one event this subscription took."""
        names = {name for shape in self._shapes for name in shape}
        names.update(n for n, bit in self._bits.items() if any(m & bit for m in self._masks))
        return frozenset(names)

    def place(self, digest: Any) -> Prepared:
        """The rest of ``route`` for a digest made by ``digest``; ``PayloadError`` if bad."""
        if self._two_step:
            return self.action.place(digest)  # type: ignore[attr-defined, no-any-return]
        return self.action.prepare(digest)


def bind_subscription(
    *,
    name: str,
    action: Action,
    subscribe: str,
    mapping: Mapping[str, Any],
    source: str,
    pointer: str,
    validators: PayloadValidators | None = None,
) -> Subscription:
    """Compile a subscription from its mapping-file entry (``pointer`` locates it).

    Fields the mapping leaves out keep their default mapping; a mapping key that is not
    a field of the action is a ``MappingError``. Subscriptions bound with the same
    ``validators`` share the payload validator of their schema (without: a new one).
    """
    known = {f.name for f in action.fields}
    for key in mapping:
        if key not in known:
            raise MappingError(
                source,
                pointer + json_pointer(["mapping", key]),
                f"a field of {action.key}: one of {', '.join(sorted(known))}",
            )
    defaults = default_mapping(action.fields)
    merged = {**defaults, **mapping}
    return Subscription(
        mapped_from_event=tuple(
            k
            for k, v in mapping.items()
            if isinstance(v, dict) and "@literal" not in v and v != defaults.get(k)
        ),
        name=name,
        action=action,
        condition=parse_subscription(subscribe, source=source, pointer=f"{pointer}/subscribe"),
        mapping=compile_mapping(merged, source=source, pointer=f"{pointer}/mapping"),
        validator=(validators or PayloadValidators()).get(
            payload_schema(action.fields, title=action.title)
        ),
    )

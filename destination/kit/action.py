"""Actions and the one route every event takes: map, drop empties, validate, digest, place.

An ``Action`` declares its fields (see ``kit.fields``) and two steps of its own:

- ``prepare(payload)`` turns one validated payload into a ``Prepared`` item (for TikTok:
  normalized and hashed identifiers) with the ``group`` it must be sent with, or raises
  ``PayloadError`` for that event alone;
- optionally, ``prepare`` in two steps (``TwoStepAction``): ``digest(payload)`` does the
  pure, costly part and ``place(digest)`` the rest (what needs the run's state, such as
  creating an audience), with ``prepare(payload) == place(digest(payload))``;
- ``perform_batch(group, items)`` sends one batch and answers one ``Outcome`` per item, in
  order. There is no single-event path: one event is a batch of one.

A ``Subscription`` binds an action to a condition and a compiled mapping. Routing an
event to it has two halves, whichever process runs the first: ``step`` (map, drop
empties, validate, digest) is pure and gives a ``Step``, which may be made in a worker
process and travel as JSON, so a digest must be a JSON value (objects, arrays, text,
numbers, true, false, null); ``place`` (in the process that sends) counts the event and
places the digest. An action without ``digest`` has its payload as digest and ``prepare``
as ``place``. Nothing here knows about TikTok.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from destination.errors import MappingError, PayloadError
from destination.kit.fields import Field, default_mapping, payload_schema
from destination.kit.mapping import CompiledMapping, compile_mapping, reads_event
from destination.kit.schema import PayloadValidator, PayloadValidators, json_pointer
from destination.kit.sql import CompiledDigest, NotCompiled, PayloadSql, Scope, payload_sql
from destination.kit.subscriptions import Condition, parse_subscription

__all__ = [
    "Action",
    "ActionSpec",
    "CompilableAction",
    "CompiledStep",
    "Outcome",
    "Prepared",
    "Rejection",
    "Step",
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


class ActionSpec(Protocol):
    """What is known of an action before a run: its key, title and fields."""

    @property
    def key(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def fields(self) -> Sequence[Field]: ...


class Action(ActionSpec, Protocol):
    """What the framework needs of an action in a run."""

    def prepare(self, payload: Mapping[str, Any]) -> Prepared: ...

    def perform_batch(self, group: Hashable, items: Sequence[Any]) -> list[Outcome]: ...


@runtime_checkable
class TwoStepAction(Protocol):
    """An action whose ``prepare`` is ``place(digest(payload))``; ``digest`` is pure and
    gives a JSON value (it may be made in a worker process)."""

    def digest(self, payload: Mapping[str, Any]) -> Any: ...

    def place(self, digest: Any) -> Prepared: ...


@runtime_checkable
class CompilableAction(Protocol):
    """An action whose digest the compiled route can make in SQL (``kit.sql``): from
    the payload's fields in SQL, the digest's JSON text (``NotCompiled`` if not); what
    it computes more than once it binds in ``scope``."""

    def compile_digest(self, payload: PayloadSql, scope: Scope) -> CompiledDigest: ...


class CompiledStep(NamedTuple):
    """A subscription in SQL: ``matches`` (boolean), ``shape`` (the present payload
    fields' names joined by commas), ``digest`` (its JSON text, where ``unsure`` is
    false: then the line takes the Python route) and the digest's ``finish``."""

    matches: str
    shape: str
    digest: str
    unsure: str
    finish: Callable[[Any], Any] | None


class Rejection(NamedTuple):
    """Why one event cannot go to one subscription: a short ``reason`` code and a message
    (without personal data)."""

    reason: str
    message: str


class Step(NamedTuple):
    """One event routed to one subscription, up to its digest: what ``Subscription.step``
    makes (anywhere) and ``Subscription.place`` takes (where the batches are).

    ``subscription`` is its index in the run's list of subscriptions, ``fields`` the
    payload's fields that had a value, and either ``digest`` (a JSON value) or
    ``rejection`` is set.
    """

    subscription: int
    fields: tuple[str, ...]
    digest: Any
    rejection: Rejection | None


@dataclass(eq=False)
class Subscription:
    """An action fed by the events that match ``condition``, through ``mapping``.

    ``routed`` counts the events placed here and ``seen`` names the fields that had a
    value; ``mapped_from_event`` names the fields the mapping file maps its own way from
    the event (not the field's default mapping, not a literal), so such a mapping that
    points nowhere can be reported. A default mapping finding nothing is normal: not
    every user has a phone.
    """

    name: str
    action: Action
    condition: Condition
    mapping: CompiledMapping
    validator: PayloadValidator = field(repr=False)
    mapped_from_event: tuple[str, ...] = ()
    mapping_json: Mapping[str, Any] = field(default_factory=dict, repr=False)  # as written
    routed: int = 0
    # the payloads' field names: a few distinct ones per run, so ``seen`` costs a set
    # insertion per event
    _shapes: set[tuple[str, ...]] = field(init=False, repr=False, default_factory=set)
    _digest: Callable[[dict[str, Any]], Any] = field(init=False, repr=False)
    _place: Callable[[Any], Prepared] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        action = self.action
        if isinstance(action, TwoStepAction):
            self._digest, self._place = action.digest, action.place
        else:
            self._digest, self._place = _payload_as_is, action.prepare

    def step(self, index: int, event: Mapping[str, Any]) -> Step:
        """The pure half of routing ``event`` here, this subscription being the run's
        ``index``-th: map, drop empty values, validate and digest. It counts nothing, so
        it may run in any process; a bad payload gives a step with its rejection."""
        payload = self.mapping.payload(event)
        fields = tuple(payload)
        try:
            problems = self.validator.problems(payload)
            if problems:
                raise PayloadError("; ".join(problems))
            return Step(index, fields, self._digest(payload), None)
        except PayloadError as exc:
            return Step(index, fields, None, Rejection(exc.reason, str(exc)))

    def place(self, step: Step) -> Prepared:
        """The other half, where the batches are: count the event, then place its digest
        (for TikTok: find or create the audience). ``PayloadError`` if it is rejected."""
        self.routed += 1
        self._shapes.add(step.fields)
        rejection = step.rejection
        if rejection is not None:
            raise PayloadError(rejection.message, reason=rejection.reason)
        return self._place(step.digest)

    def compile(self, scope: Scope) -> CompiledStep:
        """This subscription in SQL over the values ``scope`` reads (the compiled route);
        ``NotCompiled`` when the condition, the mapping or the action's digest is beyond
        it."""
        action = self.action
        if not isinstance(action, CompilableAction):
            raise NotCompiled(f"the action {action.key} (its digest is not compiled)")
        matches = scope.let(self.condition.to_sql(scope))
        payload = payload_sql(self.mapping_json, action.fields, scope)
        digest = action.compile_digest(payload, scope)
        unsure = " OR ".join(payload.unsure) or "FALSE"
        return CompiledStep(matches, payload.shape, digest.json, unsure, digest.finish)

    @property
    def seen(self) -> frozenset[str]:
        """The fields that had a value in at least one event placed here."""
        return frozenset(name for shape in self._shapes for name in shape)


def _payload_as_is(payload: dict[str, Any]) -> dict[str, Any]:
    """The digest of an action in one step: its payload (JSON already)."""
    return payload


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
        mapping_json=merged,
        mapped_from_event=tuple(
            k for k, v in mapping.items() if reads_event(v) and v != defaults.get(k)
        ),
        name=name,
        action=action,
        condition=parse_subscription(subscribe, source=source, pointer=f"{pointer}/subscribe"),
        mapping=compile_mapping(merged, source=source, pointer=f"{pointer}/mapping"),
        validator=(validators or PayloadValidators()).get(
            payload_schema(action.fields, title=action.title)
        ),
    )

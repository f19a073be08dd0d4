"""One route per event: the same typed result inline and in worker processes.

Subscriptions here are built from the kit alone (no destination package): what the
runner's route, its encoding between processes and the worker pool need of a
destination is a list of subscriptions and a picklable recipe for them.
"""

from __future__ import annotations

import ast
import contextlib
import io
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from destination.errors import PayloadError
from destination.kit.action import (
    Outcome,
    Prepared,
    Rejection,
    Step,
    Subscription,
    bind_subscription,
)
from destination.kit.fields import Field
from destination.runner.reader import RawLine
from destination.runner.route import RoutedLine, decode_routed, encode_routed
from destination.runner.workers import route_lines, routed

ROOT = Path(__file__).resolve().parent.parent

FIELDS = (
    Field("name", "string", "a name", required=True, default={"@path": "$.properties.name"}),
    Field("count", "integer", "how many", default={"@path": "$.properties.count"}),
    Field("extra", "object", "anything", default={"@path": "$.properties.extra"}),
)


class Digesting:
    """A two-step action: ``digest`` makes a JSON value, ``place`` keeps what it got."""

    key = "digesting"
    title = "Digesting"
    fields: Sequence[Field] = FIELDS

    def __init__(self) -> None:
        self.placed: list[Any] = []

    def prepare(self, payload: Mapping[str, Any]) -> Prepared:
        return self.place(self.digest(payload))

    def digest(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        if payload["name"] == "refused":
            raise PayloadError("this name is refused", reason="refused")
        return {"name": payload["name"], "extra": payload.get("extra")}

    def place(self, digest: dict[str, Any]) -> Prepared:
        self.placed.append(digest)
        return Prepared(group="digested", item=digest)

    def perform_batch(self, group: Hashable, items: Sequence[Any]) -> list[Outcome]:
        return [Outcome.delivered() for _ in items]


class Plain:
    """A one-step action: its payload is what travels between processes."""

    key = "plain"
    title = "Plain"
    fields: Sequence[Field] = FIELDS

    def prepare(self, payload: Mapping[str, Any]) -> Prepared:
        return Prepared(group="plain", item=dict(payload))

    def perform_batch(self, group: Hashable, items: Sequence[Any]) -> list[Outcome]:
        return [Outcome.delivered() for _ in items]


@dataclass(frozen=True)
class KitRecipe:
    """A ``WorkerRecipe`` for the subscriptions of these tests (picklable: a worker
    process imports this module and calls it)."""

    def subscriptions(self) -> list[Subscription]:
        return [
            bind_subscription(
                name="digesting",
                action=Digesting(),
                subscribe='type = "track"',
                mapping={},
                source="kit.json",
                pointer="/subscriptions/0",
            ),
            bind_subscription(
                name="plain",
                action=Plain(),
                subscribe='event = "Both"',
                mapping={"count": {"@path": "$.properties.n"}},
                source="kit.json",
                pointer="/subscriptions/1",
            ),
        ]


def track(event: str = "Seen", **properties: Any) -> bytes:
    return orjson.dumps({"type": "track", "event": event, "properties": properties}) + b"\n"


LINES = [
    track(name='Zoë 🎯 "quoted"\n\ttabbed \\ back', count=3, extra={"n": [1, 2.5, None, True]}),
    track(name="big", count=18446744073709551615, extra={"small": -9223372036854775808}),
    track(name="tiny", extra={"subnormal": 1.5e-320}),
    track(count="three"),  # invalid: no name, a count that is no integer
    track(name="refused"),  # the action's digest refuses it
    track("Both", name="two", n=7),  # both subscriptions
    b'{"type": "identify", "event": "Both", "properties": {"name": "plain only"}}\r\n',
    b'{"type": "identify"}\n',  # no subscription
    b"{not json\n",
    b"[1, 2]\n",
    b'{"type": "track", "event": "\xff\xfe not UTF-8"}\n',
    track(name="last line, no line end")[:-1],
]


def numbered(lines: Sequence[bytes]) -> list[RawLine]:
    return [RawLine(number, data) for number, data in enumerate(lines, 1)]


def test_a_routed_line_is_typed_per_matching_subscription() -> None:
    routed_lines = route_lines(KitRecipe().subscriptions(), numbered(LINES))
    first, refused, both, identify, nothing, not_json = (
        routed_lines[i] for i in (0, 4, 5, 6, 7, 8)
    )

    assert first == RoutedLine(
        1,
        LINES[0],
        (
            Step(
                0,
                ("name", "count", "extra"),
                {"name": 'Zoë 🎯 "quoted"\n\ttabbed \\ back', "extra": {"n": [1, 2.5, None, True]}},
                None,
            ),
        ),
        "",
        "",
    )
    assert refused.steps == (
        Step(0, ("name",), None, Rejection("refused", "this name is refused")),
    )
    assert [step.subscription for step in both.steps] == [0, 1]
    assert both.steps[1].digest == {"name": "two", "count": 7}  # a one-step action's payload
    assert [step.subscription for step in identify.steps] == [1]
    assert nothing.steps == () and not nothing.error
    assert not_json.steps == ()
    assert not_json.error.startswith("not valid JSON") and not_json.raw == "{not json"


def test_routed_lines_come_back_equal_through_their_encoding() -> None:
    lines = numbered(LINES)
    here = route_lines(KitRecipe().subscriptions(), lines)
    document = encode_routed(here)

    assert decode_routed(document, lines) == here
    assert LINES[0] not in document  # the lines' bytes stay with the process that read them
    assert any(line.steps and line.steps[0].rejection for line in here)
    assert any(line.error for line in here)


def test_a_worker_routes_every_line_as_the_main_process_does() -> None:
    long = b'{"long": "' + b"x" * 300 + b'"}\n'
    data = b"".join(LINES[:-1] * 300) + b"\n" * 3 + long + LINES[-1]
    subscriptions = KitRecipe().subscriptions()

    def every_line(workers: int) -> list[RoutedLine]:
        with io.BytesIO(data) as stream:
            return list(
                routed(
                    stream,
                    max_bytes=200,
                    workers=workers,
                    recipe=KitRecipe(),
                    subscriptions=subscriptions,
                    skip=lambda number: number % 7 == 3,
                )
            )

    here, in_a_worker = every_line(0), every_line(1)
    assert in_a_worker == here
    read = len(LINES[:-1]) * 300
    blank = range(read + 1, read + 4)
    assert [line.number for line in here] == [
        n for n in range(1, read + 6) if n % 7 != 3 and n not in blank
    ]
    assert here[-2].error.startswith("longer than 200 bytes")
    assert here[-1].steps[0].digest == {"name": "last line, no line end", "extra": None}


def test_placing_counts_the_fields_alike_wherever_the_line_was_routed() -> None:
    lines = numbered(LINES)
    inline, decoded = KitRecipe().subscriptions(), KitRecipe().subscriptions()
    here = route_lines(inline, lines)
    there = decode_routed(encode_routed(route_lines(KitRecipe().subscriptions(), lines)), lines)

    for subscriptions, routed_lines in ((inline, here), (decoded, there)):
        for line in routed_lines:
            for step in line.steps:
                with contextlib.suppress(PayloadError):  # counted all the same
                    subscriptions[step.subscription].place(step)
    for one, other in zip(inline, decoded, strict=True):
        assert (one.routed, one.seen) == (other.routed, other.seen)
    assert inline[0].routed == 7  # rejected steps count too
    assert inline[0].seen == {"name", "count", "extra"}
    assert inline[1].seen == {"name", "count"}


def test_place_counts_a_rejected_step_and_raises_its_rejection() -> None:
    (subscription, _) = KitRecipe().subscriptions()
    step = subscription.step(0, {"type": "track", "properties": {"count": "x"}})

    assert step.digest is None and step.rejection is not None
    assert step.rejection.reason == "invalid"
    with pytest.raises(PayloadError) as caught:
        subscription.place(step)
    assert caught.value.reason == "invalid"
    assert str(caught.value) == step.rejection.message
    assert "missing required field name" in str(caught.value)
    assert subscription.routed == 1
    assert subscription.seen == {"count"}


def test_step_counts_nothing_so_it_can_run_in_any_process() -> None:
    (subscription, _) = KitRecipe().subscriptions()
    subscription.step(0, {"type": "track", "properties": {"name": "x"}})
    assert subscription.routed == 0 and subscription.seen == frozenset()


# JSON values a worker may meet: what orjson reads from an input line (integers of 64
# bits, finite floats, text without lone surrogates)
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=20,
)


@given(name=_text, extra=st.dictionaries(_text, _json, max_size=4), event=_text)
def test_any_json_digest_comes_back_equal(name: str, extra: dict[str, Any], event: str) -> None:
    lines = [(1, track(event, name=name, extra=extra, n=1))]
    here = route_lines(KitRecipe().subscriptions(), lines)
    assert decode_routed(encode_routed(here), lines) == here


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "module",
    ["kit/action.py", "runner/route.py", "runner/pipeline.py", "runner/workers.py"],
)
def test_the_route_and_the_workers_know_no_destination(module: str) -> None:
    imported = _imports(ROOT / "destination" / module)
    assert not {name for name in imported if name.startswith("destination.tiktok")}

"""The destination kit without TikTok: fields, payload validation, the route, batching."""

from __future__ import annotations

import gc
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import pytest

from destination.errors import MappingError, PayloadError
from destination.gc_tuning import FEW_COLLECTIONS, few_collections
from destination.kit.action import Outcome, Prepared, bind_subscription
from destination.kit.batching import Batcher
from destination.kit.fields import Field, default_mapping, payload_schema
from destination.kit.mapping import compile_mapping
from destination.kit.schema import PayloadValidator, json_pointer

FIELDS = (
    Field("email", "string", "an email", default={"@path": "$.traits.email"}, personal_data=True),
    Field("count", "integer", "how many"),
    Field("name", "string", "a name", required=True, default={"@path": "$.properties.name"}),
    Field("kind", "string", "a kind", choices=("a", "b")),
)


class Recorder:
    """A minimal action that keeps what it was asked to prepare."""

    key = "record"
    title = "Record"
    fields: Sequence[Field] = FIELDS

    def __init__(self) -> None:
        self.prepared: list[Mapping[str, Any]] = []

    def prepare(self, payload: Mapping[str, Any]) -> Prepared:
        self.prepared.append(payload)
        return Prepared(group=payload.get("kind", "a"), item=dict(payload))

    def perform_batch(self, group: Hashable, items: Sequence[Any]) -> list[Outcome]:
        return [Outcome.delivered() for _ in items]


def _bind(mapping: Mapping[str, Any], subscribe: str = "all") -> tuple[Any, Recorder]:
    action = Recorder()
    subscription = bind_subscription(
        name="rec",
        action=action,
        subscribe=subscribe,
        mapping=mapping,
        source="f.json",
        pointer="/subscriptions/2",
    )
    return subscription, action


def test_payload_schema_is_derived_from_the_fields() -> None:
    schema = payload_schema(FIELDS, title="Record")
    assert schema["required"] == ["name"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["email"] == {
        "type": "string",
        "description": "an email",
        "x-personal-data": True,
    }
    assert schema["properties"]["kind"]["enum"] == ["a", "b"]


def test_default_mapping_holds_only_fields_with_a_default() -> None:
    assert default_mapping(FIELDS) == {
        "email": {"@path": "$.traits.email"},
        "name": {"@path": "$.properties.name"},
    }


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"a": None, "b": "", "c": "  ", "d": 0, "e": False, "f": "x"},
            {"d": 0, "e": False, "f": "x"},
        ),
        ({}, {}),
        ({"list": []}, {"list": []}),
    ],
)
def test_a_payload_leaves_out_null_and_blank_values_only(
    payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    mapping = compile_mapping({key: {"@path": f"$.{key}"} for key in payload})
    assert mapping.payload(payload) == expected
    assert mapping.apply(payload) == payload


def test_route_maps_with_defaults_drops_empties_and_prepares() -> None:
    subscription, action = _bind({"count": {"@path": "$.properties.n"}})
    event = {"traits": {"email": "a@b.co"}, "properties": {"name": "x", "n": 3, "kind": None}}
    prepared = subscription.place(subscription.step(0, event))
    assert prepared.item == {"email": "a@b.co", "name": "x", "count": 3}
    assert action.prepared == [{"email": "a@b.co", "name": "x", "count": 3}]


def test_route_rejects_invalid_payload_without_quoting_values() -> None:
    subscription, action = _bind({"count": {"@path": "$.properties.n"}})
    event = {"traits": {"email": "secret@example.com"}, "properties": {"n": "three"}}
    step = subscription.step(0, event)
    with pytest.raises(PayloadError) as caught:
        subscription.place(step)
    message = str(caught.value)
    assert "missing required field name" in message
    assert "count must be of type integer" in message
    assert "three" not in message and "secret@example.com" not in message
    assert action.prepared == []


def test_payload_validator_reports_enum_with_choices() -> None:
    problems = PayloadValidator(payload_schema(FIELDS, title="R")).problems(
        {"name": "n", "kind": "z"}
    )
    assert problems == ["kind must be one of a, b"]


def test_unknown_mapping_key_is_a_mapping_error_with_pointer() -> None:
    with pytest.raises(MappingError) as caught:
        _bind({"emial": "x"})
    assert caught.value.pointer == "/subscriptions/2/mapping/emial"
    assert "one of count, email, kind, name" in caught.value.expected


def test_subscription_condition_error_points_at_subscribe() -> None:
    with pytest.raises(MappingError) as caught:
        _bind({}, subscribe="event = ")
    assert caught.value.pointer == "/subscriptions/2/subscribe"


@pytest.mark.parametrize(
    ("parts", "pointer"),
    [((), ""), (("a", 0), "/a/0"), (("a/b", "m~n"), "/a~1b/m~0n")],
)
def test_json_pointer_escapes_per_rfc_6901(parts: tuple[str | int, ...], pointer: str) -> None:
    assert json_pointer(parts) == pointer


@pytest.mark.parametrize("size", [1, 10, 1000])
def test_batcher_hands_over_full_batches_and_drains_the_rest(size: int) -> None:
    batcher: Batcher[int] = Batcher(size)
    sent: list[tuple[Hashable, list[int]]] = []
    for i in range(2500):
        full = batcher.add(i % 2, i)
        if full is not None:
            assert len(full.items) == size
            sent.append((full.group, full.items))
    sent.extend((b.group, b.items) for b in batcher.drain())
    assert batcher.held == 0
    assert sorted(i for _, items in sent for i in items) == list(range(2500))
    assert all(len(items) <= size for _, items in sent)
    for group in (0, 1):
        in_group = [i for g, items in sent if g == group for i in items]
        assert in_group == sorted(in_group)  # order kept within a group


def test_batcher_caps_what_it_holds_by_sending_the_largest_batch() -> None:
    batcher: Batcher[int] = Batcher(100, max_held=5)
    results = [batcher.add(g, g) for g in (1, 1, 1, 2, 3)]
    assert results == [None] * 5
    early = batcher.add(4, 4)
    assert early is not None and early.group == 1 and early.items == [1, 1, 1]
    assert batcher.held == 3


def test_batcher_take_and_is_open() -> None:
    batcher: Batcher[str] = Batcher(10)
    batcher.add("g", "x")
    assert batcher.is_open("g") and not batcher.is_open("h")
    assert batcher.take("g").items == ["x"]
    assert not batcher.is_open("g")
    with pytest.raises(ValueError):
        Batcher(0)


def test_few_collections_holds_inside_the_block_and_restores_the_thresholds_after() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), few_collections():
        assert gc.get_threshold() == FEW_COLLECTIONS != before
        raise RuntimeError("the thresholds come back all the same")
    assert gc.get_threshold() == before


def test_fields_mapped_from_the_event_are_those_whose_mapping_reads_it() -> None:
    """The summary warns about a field mapped its own way that was empty in every event:
    that needs to know which mappings read the event. A constant never does; a
    ``@literal`` holding a ``@path`` does (Segment resolves directives inside it)."""
    subscription, _ = _bind(
        {
            "email": {"@literal": {"@path": "$.traits.mail"}},
            "kind": {"@literal": "a"},
            "count": {"@if": {"exists": {"@path": "$.n"}, "then": 1, "else": 0}},
            "name": {"@path": "$.properties.name"},  # the default mapping: not its own way
        }
    )
    assert subscription.mapped_from_event == ("email", "count")

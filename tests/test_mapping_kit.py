"""The mapping kit, driven by fixtures: one JSON file per case (a new case is a new file).

- ``fixtures/mapping-kit/valid/*.json``: ``{"description", "mapping", "event", "expected"}``;
  the compiled mapping applied to the event gives ``expected`` and leaves the event alone.
- ``fixtures/mapping-kit/invalid/*.json``: ``{"description", "mapping", "pointer",
  "error_contains"}``; compiling raises ``MappingError`` at ``pointer``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from destination.errors import MappingError
from destination.kit.mapping import compile_mapping

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mapping-kit"
VALID = sorted((FIXTURES / "valid").glob("*.json"))
INVALID = sorted((FIXTURES / "invalid").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return case


@pytest.mark.parametrize("path", VALID, ids=[p.name for p in VALID])
def test_valid_mapping(path: Path) -> None:
    case = _load(path)
    event = case["event"]
    untouched = copy.deepcopy(event)

    result = compile_mapping(case["mapping"]).apply(event)

    assert result == case["expected"], case["description"]
    assert event == untouched, "apply() mutated the event"


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_mapping(path: Path) -> None:
    case = _load(path)

    with pytest.raises(MappingError) as caught:
        compile_mapping(case["mapping"], source="case.json", pointer="")

    error = caught.value
    assert error.source == "case.json"
    assert error.pointer == case["pointer"], error.expected
    assert case["error_contains"] in error.expected


def test_fixtures_are_present() -> None:
    assert len(VALID) >= 22
    assert len(INVALID) >= 14


def test_pointer_prefix_locates_the_mapping_in_its_file() -> None:
    with pytest.raises(MappingError) as caught:
        compile_mapping(
            {"email": {"@path": "$.context..email"}},
            source="mappings/x.json",
            pointer="/subscriptions/0/mapping",
        )
    assert caught.value.source == "mappings/x.json"
    assert caught.value.pointer == "/subscriptions/0/mapping/email/@path"
    assert str(caught.value).startswith("mappings/x.json: at /subscriptions/0/mapping/email/@path:")


def test_results_are_independent_of_each_other_the_event_and_the_mapping() -> None:
    mapping = {
        "meta": {"@literal": {"tags": ["a"], "nested": {"n": 1}}},
        "traits": {"@path": "$.traits"},
        "items": {"@arrayPath": [{"@path": "$.items"}]},
        "merged": {"@merge": {"objects": [{"@path": "$.traits"}, {"@literal": {"k": [1]}}]}},
        "fixed": {"list": [1, 2]},
    }
    event = {"traits": {"plan": "pro", "seats": [1]}, "items": [{"id": 1}]}
    untouched = copy.deepcopy(event)
    compiled = compile_mapping(mapping)

    first = compiled.apply(event)
    second_expected = copy.deepcopy(first)
    first["meta"]["tags"].append("b")
    first["meta"]["nested"]["n"] = 2
    first["traits"]["seats"].append(2)
    first["items"][0]["id"] = 99
    first["merged"]["k"].append(2)
    first["fixed"]["list"].clear()

    assert compiled.apply(event) == second_expected
    assert event == untouched
    assert mapping["meta"] == {"@literal": {"tags": ["a"], "nested": {"n": 1}}}


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"context": "a string"},
        {"context": ["a", "list"], "properties": "text", "traits": 3},
        {"context": {"traits": ["not", "an", "object"]}, "properties": {"products": {"id": 1}}},
        {"context": {"traits": {"email": {"nested": True}}}, "properties": None},
        {"properties": {"products": [None, 1, "x", [2], {"id": None}]}, "userId": 12},
        {"context": {"traits": {"email": 5}}, "properties": {"name": ["a", {"b": None}]}},
    ],
    ids=lambda event: json.dumps(event)[:40],
)
def test_apply_never_raises_on_odd_events(event: dict[str, Any]) -> None:
    compiled = compile_mapping(
        {
            "@excludeWhenNull": True,
            "email": {
                "@if": {
                    "exists": {"@path": "$.context.traits.email"},
                    "then": {"@path": "$.context.traits.email"},
                    "else": {"@path": "$.properties.email"},
                }
            },
            "blank": {"@if": {"blank": {"@path": "$.userId"}, "then": 1, "else": 2}},
            "label": {"@template": "{{properties.name}} {{context.traits.email}} {{userId}}"},
            "lower": {"@case": {"operator": "lower", "value": {"@path": "$.context.traits.email"}}},
            "clean": {
                "@replace": {
                    "pattern": "E",
                    "value": {"@path": "$.properties.name"},
                    "ignorecase": True,
                }
            },
            "items": {
                "@arrayPath": [
                    {"@path": "$.properties.products"},
                    {
                        "id": {"@path": "$.id"},
                        "first": {"@path": "$[0]"},
                        "t": {"@template": "{{id}}"},
                    },
                ]
            },
            "merged": {"@merge": {"objects": [{"@path": "$.context"}, {"@path": "$.properties"}]}},
        }
    )
    untouched = copy.deepcopy(event)

    result = compiled.apply(event)

    assert isinstance(result, dict)
    assert event == untouched

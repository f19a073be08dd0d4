"""Segment compatibility of the mapping kit where a fixture cannot say it: limits, the
missing-value marker never leaking, computed paths, Liquid's sandbox and the schema.

The fixtures in ``fixtures/mapping-kit`` hold the cases; these are the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from destination.errors import MappingError
from destination.kit import liquid as liquid_module
from destination.kit.mapping import compile_mapping

ROOT = Path(__file__).resolve().parent.parent


def _no_marker(value: Any) -> bool:
    """True when ``value`` is plain JSON data all the way down."""
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list):
        return all(_no_marker(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _no_marker(item) for key, item in value.items())
    return False


EVERY_DIRECTIVE: dict[str, Any] = {
    "path": {"@path": "$.a.b"},
    "computed": {"@path": {"@path": "$.which"}},
    "template": {"@template": "{{a.b}}{{{nope}}}"},
    "literal": {"@literal": {"x": {"@path": "$.nope"}}},
    "if": {"@if": {"blank": {"@path": "$.nope"}, "then": 1}},
    "case": {"@case": {"operator": "upper", "value": {"@path": "$.nope"}}},
    "replace": {"@replace": {"pattern": "a", "value": {"@path": "$.nope"}}},
    "array": {"@arrayPath": ["$.items", {"id": {"@path": "$.id"}}]},
    "merge": {"@merge": {"objects": [{"k": {"@path": "$.nope"}}, {"@path": "$.a"}]}},
    "json": {"@json": {"mode": "encode", "value": {"@path": "$.nope"}}},
    "flatten": {"@flatten": {"value": {"@path": "$.nope"}, "separator": "."}},
    "transform": {"@transform": {"apply": {"q": {"@path": "$.nope"}}, "mapping": {"@path": "$.q"}}},
    "exclude": {"@excludeWhenNull": {"@path": "$.nope"}},
    "liquid": {"@liquid": "{{ nope }}"},
    "list": [{"@path": "$.nope"}, {"@if": {"exists": {"@path": "$.nope"}, "then": 1}}],
}


@pytest.mark.parametrize(
    "event",
    [{}, {"a": None, "items": "text", "which": 3}, {"a": {"b": [1]}, "items": [None, 2, {}]}],
)
def test_missing_values_never_leak_out_of_apply_or_payload(event: dict[str, Any]) -> None:
    compiled = compile_mapping(EVERY_DIRECTIVE)

    applied = compiled.apply(event)
    payload = compiled.payload(event)

    assert _no_marker(applied), applied
    assert _no_marker(payload), payload
    json.dumps(applied)  # plain JSON, nothing else
    assert applied["list"] == [None, None]
    assert "path" not in payload or event.get("a")


def test_payload_leaves_a_missing_field_out() -> None:
    compiled = compile_mapping({"email": {"@path": "$.email"}, "id": {"@path": "$.id"}})

    assert compiled.payload({"id": "u"}) == {"id": "u"}
    assert compiled.apply({"id": "u"}) == {"id": "u"}


def test_a_computed_path_is_parsed_once_per_distinct_text_and_bad_ones_find_nothing() -> None:
    compiled = compile_mapping({"v": {"@path": {"@path": "$.which"}}})

    assert compiled.apply({"which": "a.b", "a": {"b": 1}}) == {"v": 1}
    assert compiled.apply({"which": "$.a[0]", "a": ["x"]}) == {"v": "x"}
    assert compiled.apply({"which": "a..b", "a": {"b": 1}}) == {}  # does not parse
    assert compiled.apply({"which": ["a"], "a": 1}) == {}  # not a string


def test_a_computed_template_that_does_not_parse_gives_nothing() -> None:
    compiled = compile_mapping({"t": {"@template": {"@path": "$.t"}}})

    assert compiled.apply({"t": "{{x}}!", "x": 2}) == {"t": "2!"}
    assert compiled.apply({"t": "{{x"}) == {}


@pytest.mark.parametrize("key", ["pattern", "replacement", "pattern2", "replacement2"])
def test_replace_accepts_exactly_ten_characters(key: str) -> None:
    args = {"pattern": "a", "value": {"@path": "$.v"}, key: "0123456789"}
    compile_mapping({"x": {"@replace": args}})

    with pytest.raises(MappingError) as caught:
        compile_mapping({"x": {"@replace": {**args, key: "0123456789+"}}})
    assert caught.value.pointer == f"/x/@replace/{key}"


def test_replace_keeps_null_objects_and_arrays_as_they_are() -> None:
    compiled = compile_mapping(
        {
            key: {"@replace": {"pattern": "a", "replacement": "b", "value": {"@path": f"$.{key}"}}}
            for key in ("null", "object", "array", "float")
        }
    )

    result = compiled.apply({"null": None, "object": {"a": 1}, "array": ["a"], "float": 1.5})

    assert result == {"null": None, "object": {"a": 1}, "array": ["a"], "float": "1.5"}


def test_liquid_template_size_limit_is_segments() -> None:
    limit = liquid_module.MAX_TEMPLATE_LENGTH
    assert limit == 1000
    compile_mapping({"x": {"@liquid": "a" * limit}})

    with pytest.raises(MappingError) as caught:
        compile_mapping({"x": {"@liquid": "a" * (limit + 1)}})
    assert caught.value.pointer == "/x/@liquid"
    assert "at most 1000 characters" in caught.value.expected


def test_liquid_output_past_the_limit_leaves_the_field_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # the real cap is Segment's 100 MB; a small one shows what reaching it does
    monkeypatch.setattr(liquid_module._ENVIRONMENT, "output_stream_limit", 20)
    compiled = compile_mapping({"x": {"@liquid": "{{ s }}{{ s }}"}, "y": 1})

    assert compiled.apply({"s": "0123456789+"}) == {"y": 1}
    assert compiled.apply({"s": "01234"}) == {"x": "0123401234", "y": 1}


def test_liquid_captured_values_are_capped_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(liquid_module._ENVIRONMENT, "local_namespace_limit", 200)
    doubling = "".join("{% capture s %}{{ s }}{{ s }}{% endcapture %}" for _ in range(12))
    compiled = compile_mapping({"x": {"@liquid": doubling + "{{ s | size }}"}})

    assert compiled.apply({"s": "ab"}) == {}


@pytest.mark.parametrize(
    "template", ["{% include 'x' %}", "{% render 'x' %}", "{% tablerow i in a %}{% endtablerow %}"]
)
def test_liquid_refuses_tags_that_load_or_loop(template: str) -> None:
    with pytest.raises(MappingError) as caught:
        compile_mapping({"x": {"@liquid": template}})
    assert caught.value.pointer == "/x/@liquid"
    assert "unexpected tag" in caught.value.expected


def test_liquid_unknown_filters_are_refused_when_compiled() -> None:
    with pytest.raises(MappingError) as caught:
        compile_mapping({"x": {"@liquid": "{{ a | no_such_filter }}"}})
    assert "no_such_filter" in caught.value.expected


def test_liquid_sees_no_python_objects() -> None:
    compiled = compile_mapping({"x": {"@liquid": "{{ a.__class__ }}{{ a.keys }}|"}})

    assert compiled.apply({"a": {"k": 1}}) == {"x": "|"}


def test_the_mapping_file_schema_accepts_the_segment_forms() -> None:
    schema = json.loads((ROOT / "schemas" / "mapping-file.schema.json").read_text("utf-8"))
    document = {
        "destination": "tiktok-audiences",
        "mode": "native",
        "subscriptions": [
            {
                "name": "Add",
                "action": "addToAudience",
                "subscribe": 'event = "Audience Entered"',
                "mapping": {
                    "email": {"@excludeWhenNull": {"@path": "context.traits.email"}},
                    "phone": {"@path": "$.context.traits.phone", "_metadata": {"label": "P"}},
                    "external_audience_id": {"@liquid": "{{ properties.audience_key }}"},
                },
            }
        ],
    }

    jsonschema.validate(document, schema)
    compile_mapping(document["subscriptions"][0]["mapping"])

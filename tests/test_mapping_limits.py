"""Limits of mapping files: how deep they may nest, and what 10,000 subscriptions cost.

A node's depth is the number of steps in its JSON pointer from the file's root (for
``compile_mapping``, from the root its ``pointer`` argument names): at most
``MAX_DEPTH`` (64). Deeper is a ``MappingError`` (exit 3) naming the file and where the
limit was crossed, never a ``RecursionError`` (exit 1), however deep the file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

import destination.kit.mapping
import destination.kit.schema
from destination.backends import DryRunBackend
from destination.cli import main
from destination.errors import MappingError
from destination.kit.mapping import MAX_DEPTH, compile_mapping
from destination.settings import Secret, Settings
from destination.tiktok.actions import Context
from destination.tiktok.api import TikTokApi
from destination.tiktok.audiences import AudienceRegistry
from destination.tiktok.destination import bind, load_mapping_file, template

ROOT = Path(__file__).resolve().parent.parent
DEMO_EVENTS = ROOT / "fixtures" / "demo" / "native-events.ndjson"
MAPPING_POINTER = "/subscriptions/0/mapping"  # 3 steps from the file's root


def nested(levels: int, leaf: Any = "x") -> Any:
    """``leaf`` under ``levels`` objects ``{"a": ...}``, built without recursion."""
    node = leaf
    for _ in range(levels):
        node = {"a": node}
    return node


def deep_text(levels: int) -> str:
    """The JSON text of ``nested(levels)``, without asking json to recurse."""
    return '{"a": ' * levels + '"x"' + "}" * levels


def pointer_depth(pointer: str) -> int:
    return pointer.count("/")


def write_file(tmp_path: Path, email_mapping_text: str) -> Path:
    """The native template, its first subscription mapping email from the given JSON
    text (spliced in as text: json.dumps recurses too)."""
    document = template("native", {"advertiser_id": "7000000000000000001"})
    document["subscriptions"][0]["mapping"]["email"] = "SPLICE"
    path = tmp_path / "deep.json"
    text = json.dumps(document, indent=2).replace('"SPLICE"', email_mapping_text)
    path.write_text(text, "utf-8")
    return path


def run_sync(mapping: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    argv = ["sync", "--mapping", str(mapping), "--events", str(DEMO_EVENTS), "--dry-run"]
    code = main(argv, stdout=io.StringIO())
    return code, capsys.readouterr().err


# ------------------------------------------------------------------ compile_mapping


def test_a_mapping_as_deep_as_the_limit_compiles() -> None:
    mapping = {"email": {"@literal": nested(MAX_DEPTH - 2)}}  # the leaf: 64 steps down

    assert compile_mapping(mapping).apply({})["email"] == nested(MAX_DEPTH - 2)


def test_one_level_past_the_limit_names_the_pointer_where_it_was_crossed() -> None:
    mapping = {"email": nested(MAX_DEPTH)}  # the leaf: 65 steps down

    with pytest.raises(MappingError) as caught:
        compile_mapping(mapping, source="m.json")

    error = caught.value
    assert error.source == "m.json"
    assert error.pointer == "/email" + "/a" * MAX_DEPTH
    assert pointer_depth(error.pointer) == MAX_DEPTH + 1
    assert f"at most {MAX_DEPTH} levels" in error.expected


def test_depth_counts_from_the_file_root_named_by_the_pointer() -> None:
    fits = {"email": nested(MAX_DEPTH - 4)}  # 3 + 1 + 60 = 64 steps
    too_deep = {"email": nested(MAX_DEPTH - 3)}

    compile_mapping(fits, pointer=MAPPING_POINTER)
    with pytest.raises(MappingError) as caught:
        compile_mapping(too_deep, pointer=MAPPING_POINTER)
    assert pointer_depth(caught.value.pointer) == MAX_DEPTH + 1
    assert caught.value.pointer.startswith(MAPPING_POINTER + "/email/a/a")


@pytest.mark.parametrize("levels", [1_000, 100_000])
def test_a_mapping_nested_thousands_deep_is_a_mapping_error_not_a_recursion_error(
    levels: int,
) -> None:
    with pytest.raises(MappingError) as caught:
        compile_mapping({"email": nested(levels)})
    assert pointer_depth(caught.value.pointer) == MAX_DEPTH + 1


def test_a_literal_is_held_to_the_limit_too() -> None:
    """``@literal`` values are copied for every event: deep ones would recurse then."""
    with pytest.raises(MappingError) as caught:
        compile_mapping({"email": {"@literal": nested(1_000)}})
    assert caught.value.pointer.startswith("/email/@literal/a/a")


def test_arrays_count_as_levels() -> None:
    node: Any = "x"
    for _ in range(MAX_DEPTH):
        node = [node]

    with pytest.raises(MappingError) as caught:
        compile_mapping({"email": node})
    assert caught.value.pointer == "/email" + "/0" * MAX_DEPTH


def test_a_jsonpath_may_have_as_many_steps_as_the_limit() -> None:
    event = nested(MAX_DEPTH, leaf="deep")

    resolved = compile_mapping({"email": {"@path": "$" + ".a" * MAX_DEPTH}}).apply(event)

    assert resolved == {"email": "deep"}


def test_a_longer_jsonpath_is_a_mapping_error() -> None:
    """Python cannot even compile the lookup of a path of a few hundred steps."""
    with pytest.raises(MappingError) as caught:
        compile_mapping({"email": {"@path": "$" + ".a" * 300}}, source="m.json")

    assert caught.value.pointer == "/email/@path"
    assert f"at most {MAX_DEPTH} steps" in caught.value.expected


# ------------------------------------------------------------------- mapping files


@pytest.mark.parametrize("levels", [100, 1_000, 100_000])
def test_a_deeply_nested_mapping_file_exits_3_naming_the_file_and_the_limit(
    levels: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_file(tmp_path, deep_text(levels))

    code, err = run_sync(path, capsys)

    assert code == 3, err
    (line,) = [line for line in err.splitlines() if line.startswith("tiktok-audiences: error:")]
    assert line.startswith(f"tiktok-audiences: error: {path}: at ")
    assert f"at most {MAX_DEPTH} levels" in line


def test_a_file_json_can_read_names_the_pointer_past_the_limit(tmp_path: Path) -> None:
    path = write_file(tmp_path, deep_text(100))

    with pytest.raises(MappingError) as caught:
        load_mapping_file(path)

    error = caught.value
    assert error.source == str(path)
    assert error.pointer == MAPPING_POINTER + "/email" + "/a" * (MAX_DEPTH - 3)


def test_a_file_too_deep_for_json_itself_names_the_line_and_column(tmp_path: Path) -> None:
    path = write_file(tmp_path, deep_text(100_000))
    text = path.read_text("utf-8")
    line = text[: text.index('{"a": {"a"')].count("\n") + 1

    with pytest.raises(MappingError) as caught:
        load_mapping_file(path)

    assert caught.value.source == str(path)
    assert f"deeper than {MAX_DEPTH} levels at line {line}, column " in caught.value.expected


def test_brackets_inside_strings_do_not_count_as_levels(tmp_path: Path) -> None:
    path = write_file(tmp_path, json.dumps({"@literal": "[{" * 1_000}))

    assert load_mapping_file(path).source == str(path)


def test_the_whole_file_is_held_to_the_limit_before_its_schema_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Settings are not mapping values, but the schema's messages quote (repr) what they
    find, and repr recurses too."""
    document = template("native", {"advertiser_id": "7000000000000000001"})
    document["settings"]["batch_size"] = nested(100)
    path = tmp_path / "deep-settings.json"
    path.write_text(json.dumps(document), "utf-8")

    code, err = run_sync(path, capsys)

    assert code == 3, err
    assert f"{path}: at /settings/batch_size/a/a" in err
    assert f"at most {MAX_DEPTH} levels" in err


# --------------------------------------------------------- many subscriptions


def _context(tmp_path: Path) -> Context:
    return Context(
        settings=Settings(),
        api=TikTokApi(DryRunBackend(), Secret("unused")),
        registry=AudienceRegistry(tmp_path / "a.json", namespace="test", create=None),
    )


def _many_subscriptions(tmp_path: Path, copies: int) -> Path:
    document = template("native", {"advertiser_id": "7000000000000000001"})
    document["subscriptions"] = [
        {**entry, "name": f"{entry['name']} {copy}"}
        for copy in range(copies)
        for entry in document["subscriptions"]
    ]
    path = tmp_path / "many.json"
    path.write_text(json.dumps(document), "utf-8")
    return path


def test_subscriptions_of_one_action_share_one_payload_validator(tmp_path: Path) -> None:
    subscriptions = bind(load_mapping_file(_many_subscriptions(tmp_path, 3)), _context(tmp_path))

    by_action: dict[str, set[int]] = {}
    for subscription in subscriptions:
        by_action.setdefault(subscription.action.key, set()).add(id(subscription.validator))
    assert len(subscriptions) == 6
    assert {key: len(ids) for key, ids in by_action.items()} == {
        "addToAudience": 1,
        "removeFromAudience": 1,
    }


def test_binding_generates_path_code_per_path_length_not_per_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed: list[str] = []

    def counting_exec(source: str, namespace: dict[str, Any]) -> None:
        executed.append(source)
        exec(source, namespace)

    monkeypatch.setattr(destination.kit.mapping, "exec", counting_exec, raising=False)
    mapping_file = load_mapping_file(_many_subscriptions(tmp_path, 50))
    paths = {
        value["@path"]
        for entry in mapping_file.subscriptions
        for value in _values(entry.get("mapping", {}))
        if isinstance(value, dict) and isinstance(value.get("@path"), str)
    }

    assert len(bind(mapping_file, _context(tmp_path))) == 100
    lengths = {path.count(".") for path in paths}
    assert len(executed) <= len(lengths) < len(paths)


def _values(node: Any) -> list[Any]:
    """``node`` and every value inside it (mapping files here are shallow)."""
    found = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        found.extend(_values(child))
    return found


def test_binding_compiles_each_action_schema_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[str] = []
    real = destination.kit.schema.fastjsonschema.compile

    def counting(schema: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        compiled.append(schema["title"])
        return real(schema, *args, **kwargs)

    monkeypatch.setattr(destination.kit.schema.fastjsonschema, "compile", counting)
    mapping_file = load_mapping_file(_many_subscriptions(tmp_path, 50))

    assert len(bind(mapping_file, _context(tmp_path))) == 100
    assert sorted(compiled) == ["Add to Audience", "Remove from Audience"]

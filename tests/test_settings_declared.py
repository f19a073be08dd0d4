"""Settings declared once (issue 15): the declarations give the mapping-file schema's
settings part, the resolver, the README's settings table and the error messages.

The schema part and the README table are generated files checked here. After changing a
declaration, rewrite both with::

    REGENERATE=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_settings_declared.py

then review the diff (the tests still fail if the rewritten text does not match).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from destination.backends import check_base_url
from destination.cli import main
from destination.errors import ConfigurationError
from destination.kit.settings import Setting, markdown_table, merge_settings, resolve, schema_of
from destination.runner.settings import RUNNER_SETTINGS, with_runner_settings
from destination.settings import DECLARED, ENVIRONMENT, Settings, resolve_settings
from destination.tiktok.settings import TIKTOK_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schemas" / "mapping-file.schema.json"
README = ROOT / "README.md"
TABLE_HEADER = "| setting | environment | flag | default | meaning |"
REGENERATE = os.environ.get("REGENERATE") == "1"


# --- the TikTok tool's declarations -----------------------------------------------------


def test_settings_has_one_field_per_declared_setting_and_the_token() -> None:
    declared = [s.name for s in DECLARED]

    assert len(set(declared)) == len(declared)
    assert {f.name for f in dataclasses.fields(Settings)} == {*declared, "access_token"}


def test_settings_defaults_are_the_declared_ones(isolated_environment: Path) -> None:
    settings = Settings()

    for declared in DECLARED:
        expected = declared.default_from(os.environ) if declared.default_from else declared.default
        assert getattr(settings, declared.name) == expected, declared.name
    assert settings.audience_state == isolated_environment / "tiktok-audiences" / "audiences.json"


def test_the_runner_declares_its_knobs_and_tiktok_the_rest() -> None:
    runner = {s.name for s in RUNNER_SETTINGS}
    tiktok = {s.name for s in TIKTOK_SETTINGS}

    assert runner == {"batch_size", "concurrency", "workers", "route", "max_event_bytes"}
    assert {"base_url", "qps", "max_attempts", "timeout_seconds", "audience_state"} <= tiktok
    assert not runner & tiktok
    assert [s.name for s in DECLARED] == [s.name for s in (*RUNNER_SETTINGS, *TIKTOK_SETTINGS)]


def test_a_destination_declaring_a_runner_setting_is_refused() -> None:
    again = Setting("workers", "integer", "Threads.", default=1)

    with pytest.raises(ValueError, match="'workers' is declared twice"):
        with_runner_settings([again])


def test_two_settings_read_from_one_environment_variable_are_refused() -> None:
    first = Setting("a", "string", "A.", env="SAME")
    second = Setting("b", "string", "B.", env="SAME")

    with pytest.raises(ValueError, match="SAME is declared twice"):
        merge_settings([first], [second])


def test_the_environment_map_comes_from_the_declarations() -> None:
    assert {s.name: s.env for s in DECLARED if s.env is not None} == ENVIRONMENT


def test_every_declared_flag_is_a_sync_flag(capsys: pytest.CaptureFixture[str]) -> None:
    main(["sync", "--help"], stdout=io.StringIO())
    help_text = capsys.readouterr().out

    flags = [s.flag for s in DECLARED if s.flag is not None]
    assert flags  # the table's flag column is not empty
    for flag in flags:
        assert re.search(rf"(^|\s){flag}\b", help_text), flag


def test_the_base_url_is_judged_by_the_url_parser_that_connects() -> None:
    (base_url,) = [s for s in TIKTOK_SETTINGS if s.name == "base_url"]

    assert base_url.check is check_base_url


def test_a_nan_from_a_mapping_file_is_refused_naming_the_file() -> None:
    # json.loads reads NaN, and NaN passes every range of the file's schema
    file_settings = json.loads('{"qps": NaN}')

    with pytest.raises(ConfigurationError) as caught:
        resolve_settings(file_settings, environ={}, overrides={}, need_token=False)

    assert str(caught.value) == (
        "invalid settings: qps must be 0 or a number from 0.1 to 1000, got 'nan' "
        "(from the mapping file)"
    )


# --- generated files ------------------------------------------------------------------


def test_the_mapping_file_schema_settings_part_is_the_declared_one() -> None:
    document = json.loads(SCHEMA_FILE.read_text("utf-8"))
    expected = schema_of(DECLARED)
    if REGENERATE and document["$defs"]["settings"] != expected:
        document["$defs"]["settings"] = expected
        SCHEMA_FILE.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8")
        document = json.loads(SCHEMA_FILE.read_text("utf-8"))

    assert document["$defs"]["settings"] == expected, "run with REGENERATE=1 (module docstring)"


def test_the_readme_settings_table_is_the_declared_one() -> None:
    text = README.read_text("utf-8")
    table = _generated_table(text)
    expected = markdown_table(DECLARED)
    if REGENERATE and table != expected:
        README.write_text(text.replace(table, expected, 1), "utf-8")
        table = _generated_table(README.read_text("utf-8"))

    assert table == expected, "run with REGENERATE=1 (module docstring)"


def _generated_table(text: str) -> str:
    """The README's table that starts with ``TABLE_HEADER``, up to its last row."""
    start = text.index(TABLE_HEADER + "\n")
    end = text.find("\n\n", start)
    return text[start : len(text) if end < 0 else end + 1]


# --- the kit's machinery, on declarations of its own -------------------------------------


def _checked_url(value: Any) -> str:
    if "@" in str(value):
        raise ConfigurationError("url has user info (shown as ***)")
    return str(value).rstrip("/")


TOY = (
    Setting("size", "integer", "Items per batch.", default=10, env="TOY_SIZE", flag="--size",
            minimum=1, maximum=100),
    Setting("rate", "number", "Calls per second; 0: no limit.", default=1.0, env="TOY_RATE",
            minimum=0.5, maximum=50, also=(0,)),
    Setting("procs", "integer", "Processes.", default="auto", env="TOY_PROCS", minimum=0,
            maximum=8, also=("auto",)),
    Setting("wait", "number", "Seconds to wait.", default=5.0, above=0, maximum=60,
            env="TOY_WAIT"),
    Setting("state", "path", "Where to keep state.", env="TOY_STATE",
            default_from=lambda environ: Path(environ.get("TOY_HOME", "/home")) / "state.json",
            default_text="`$TOY_HOME/state.json`"),
    Setting("name", "string", "A name; `a|b` is fine.", env="TOY_NAME", pattern="^[a-z]+$",
            nullable=True, convert=lambda v: v.upper() if isinstance(v, str) else v),
    Setting("loud", "boolean", "Shout.", default=False, env="TOY_LOUD"),
    Setting("style", "string", "How it looks.", default="plain", choices=("plain", "fancy")),
    Setting("url", "string", "Where to send.", default="https://x.example", env="TOY_URL",
            flag="--url", pattern="^https://", check=_checked_url),
)  # fmt: skip


def toy(
    file_values: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    problems: tuple[str, ...] = (),
) -> dict[str, Any]:
    return resolve(
        TOY, file_values or {}, environ=environ or {}, flags=flags or {}, problems=problems
    )


def toy_problems(**sources: Any) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        toy(**sources)
    text = str(caught.value)
    assert text.startswith("invalid settings: ")
    return text.removeprefix("invalid settings: ").split("; ")


def test_defaults_fill_what_no_source_gives() -> None:
    values = toy(environ={"TOY_HOME": "/srv"})

    assert values == {
        "size": 10,
        "rate": 1.0,
        "procs": "auto",
        "wait": 5.0,
        "state": Path("/srv/state.json"),
        "name": None,
        "loud": False,
        "style": "plain",
        "url": "https://x.example",
    }


def test_flags_win_over_the_environment_which_wins_over_the_file() -> None:
    file_values = {"size": 20, "rate": 2, "procs": 1}
    environ = {"TOY_SIZE": "30", "TOY_RATE": "3"}

    values = toy(file_values, environ, {"size": 40, "rate": None})

    assert (values["size"], values["rate"], values["procs"]) == (40, 3.0, 1)


@pytest.mark.parametrize(
    ("variable", "raw", "name", "expected"),
    [
        ("TOY_SIZE", " 7 ", "size", 7),
        ("TOY_RATE", "2.5", "rate", 2.5),
        ("TOY_RATE", "0", "rate", 0.0),
        ("TOY_PROCS", "auto", "procs", "auto"),
        ("TOY_PROCS", "3", "procs", 3),
        ("TOY_STATE", "/tmp/s.json", "state", Path("/tmp/s.json")),
        ("TOY_NAME", "abc", "name", "ABC"),
        ("TOY_LOUD", "true", "loud", True),
        ("TOY_LOUD", "FALSE", "loud", False),
        ("TOY_LOUD", "1", "loud", True),
        ("TOY_LOUD", "0", "loud", False),
        ("TOY_URL", "https://y.example/", "url", "https://y.example"),
    ],
)
def test_environment_text_is_read_as_the_declared_type(
    variable: str, raw: str, name: str, expected: Any
) -> None:
    value = toy(environ={variable: raw})[name]

    assert value == expected
    assert type(value) is type(expected)


def test_a_blank_variable_is_not_a_value() -> None:
    assert toy({"size": 20}, {"TOY_SIZE": "  ", "TOY_NAME": ""})["size"] == 20


def test_a_path_expands_the_home_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))

    assert toy({"state": "~/s.json"})["state"] == tmp_path / "s.json"


@pytest.mark.parametrize(
    ("variable", "raw", "problem"),
    [
        ("TOY_SIZE", "lots", "TOY_SIZE='lots' is not a number"),
        ("TOY_SIZE", "1.5", "TOY_SIZE='1.5' is not a number"),
        ("TOY_RATE", "nan", "TOY_RATE='nan' is not a number"),
        ("TOY_RATE", "-inf", "TOY_RATE='-inf' is not a number"),
        ("TOY_PROCS", "many", "TOY_PROCS='many' is not a number"),
        ("TOY_LOUD", "maybe", "TOY_LOUD='maybe' is not true or false"),
    ],
)
def test_environment_text_that_is_not_of_the_type_is_refused(
    variable: str, raw: str, problem: str
) -> None:
    assert toy_problems(environ={variable: raw}) == [problem]


@pytest.mark.parametrize(
    ("sources", "problem"),
    [
        ({"flags": {"size": 0}}, "size must be a whole number from 1 to 100, got 0 (from --size)"),
        ({"environ": {"TOY_SIZE": "101"}},
         "size must be a whole number from 1 to 100, got 101 (from TOY_SIZE)"),
        ({"file_values": {"size": True}},
         "size must be a whole number from 1 to 100, got True (from the mapping file)"),
        ({"environ": {"TOY_RATE": "0.1"}},
         "rate must be 0 or a number from 0.5 to 50, got 0.1 (from TOY_RATE)"),
        ({"flags": {"procs": 9}},
         'procs must be "auto" or a whole number from 0 to 8, got 9 (from the overrides)'),
        ({"environ": {"TOY_WAIT": "0"}},
         "wait must be a number above 0 and at most 60, got 0.0 (from TOY_WAIT)"),
        ({"file_values": {"wait": math.nan}},
         "wait must be a number above 0 and at most 60, got 'nan' (from the mapping file)"),
        ({"environ": {"TOY_NAME": "a1"}},
         "name must be text matching ^[a-z]+$, got 'a1' (from TOY_NAME)"),
        ({"file_values": {"style": "odd"}},
         'style must be one of "plain", "fancy", got \'odd\' (from the mapping file)'),
        ({"file_values": {"loud": "yes"}},
         "loud must be true or false, got 'yes' (from the mapping file)"),
        ({"file_values": {"state": ""}},
         "state must be a file path, got '' (from the mapping file)"),
        ({"file_values": {"colour": "red"}}, "'colour' is not a setting (from the mapping file)"),
    ],
)  # fmt: skip
def test_a_value_out_of_its_declaration_is_refused_naming_where_it_came_from(
    sources: dict[str, Any], problem: str
) -> None:
    assert toy_problems(**sources) == [problem]


def test_a_check_judges_in_place_of_the_schema_and_its_message_names_the_source() -> None:
    # the schema's pattern would quote the value; the check words its own message
    problems = toy_problems(flags={"url": "http://u:pw@x.example"})

    assert problems == ["url has user info (shown as ***) (from --url)"]
    assert toy(flags={"url": "http://x.example/"})["url"] == "http://x.example"


def test_every_problem_is_reported_together_the_callers_too() -> None:
    problems = toy_problems(
        file_values={"style": "odd"},
        environ={"TOY_SIZE": "lots", "TOY_RATE": "-1"},
        flags={"procs": -1},
        problems=("no token",),
    )

    assert problems == [
        "TOY_SIZE='lots' is not a number",
        "no token",
        'procs must be "auto" or a whole number from 0 to 8, got -1 (from the overrides)',
        "rate must be 0 or a number from 0.5 to 50, got -1.0 (from TOY_RATE)",
        'style must be one of "plain", "fancy", got \'odd\' (from the mapping file)',
    ]


def test_resolving_leaves_its_sources_as_they_were() -> None:
    file_values = {"size": 20, "state": "~/s.json"}
    flags = {"size": 30}

    toy(file_values, {"TOY_SIZE": "5"}, flags)

    assert file_values == {"size": 20, "state": "~/s.json"}
    assert flags == {"size": 30}


def test_the_schema_declares_each_setting_with_its_range_default_and_description() -> None:
    schema = schema_of(TOY)

    Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert list(schema["properties"]) == [s.name for s in TOY]
    assert schema["properties"]["size"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 10,
        "description": "Items per batch. Overridden by TOY_SIZE and --size.",
    }
    assert schema["properties"]["procs"]["anyOf"] == [
        {"const": "auto"},
        {"type": "integer", "minimum": 0, "maximum": 8},
    ]
    assert schema["properties"]["wait"]["exclusiveMinimum"] == 0
    assert schema["properties"]["name"]["type"] == ["string", "null"]
    assert schema["properties"]["style"]["enum"] == ["plain", "fancy"]
    assert "default" not in schema["properties"]["state"]  # computed when resolving
    assert schema["properties"]["state"]["description"] == (
        "Where to keep state. Default: `$TOY_HOME/state.json`. Overridden by TOY_STATE."
    )
    assert schema["properties"]["style"]["description"] == "How it looks."


def test_the_schema_accepts_and_refuses_file_values_as_the_resolver_does() -> None:
    validator = Draft202012Validator(schema_of(TOY))

    assert validator.is_valid({"size": 100, "rate": 0, "procs": "auto", "name": None})
    for wrong in ({"size": 0}, {"rate": 0.1}, {"procs": "all"}, {"wait": 0}, {"colour": 1}):
        assert not validator.is_valid(wrong), wrong


def test_the_markdown_table_has_a_row_per_setting() -> None:
    lines = markdown_table(TOY).splitlines()

    assert lines[:2] == [
        "| setting | environment | flag | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    assert lines[2] == (
        "| `size` | `TOY_SIZE` | `--size` | 10 | Items per batch. A whole number from 1 to 100. |"
    )
    assert lines[3] == (
        "| `rate` | `TOY_RATE` | — | 1 | Calls per second; 0: no limit. "
        "0 or a number from 0.5 to 50. |"
    )
    assert lines[4].startswith('| `procs` | `TOY_PROCS` | — | `"auto"` | Processes. ')
    assert (
        lines[6] == "| `state` | `TOY_STATE` | — | `$TOY_HOME/state.json` | Where to keep state. |"
    )
    assert lines[7] == r"| `name` | `TOY_NAME` | — | — | A name; `a\|b` is fine. |"
    assert lines[8] == "| `loud` | `TOY_LOUD` | — | false | Shout. |"
    assert lines[9] == "| `style` | — | — | `plain` | How it looks. |"
    assert len(lines) == 2 + len(TOY)

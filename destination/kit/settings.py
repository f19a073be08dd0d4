"""Settings declared once: each declaration gives what everything else is derived from.

A ``Setting`` names its type and range, default, environment variable and command-line
flag, and says what it is for. From a list of declarations come:

- ``schema_of(declared)``: the JSON Schema of a mapping file's ``settings`` object;
- ``resolve(declared, ...)``: the values of a run, flags over environment over file, every
  problem reported together in one ``ConfigurationError``, each naming where its value
  came from;
- ``markdown_table(declared)``: the README's settings table.

Lists declared apart (the runner's, a destination's) are joined with ``merge_settings``,
which refuses a name or an environment variable declared twice. Nothing here knows TikTok.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator

from destination.errors import ConfigurationError

__all__ = [
    "Secret",
    "Setting",
    "SettingType",
    "markdown_table",
    "merge_settings",
    "resolve",
    "schema_of",
]

SettingType = Literal["string", "integer", "number", "boolean", "path"]

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_FROM_FILE = "the mapping file"
_FROM_OVERRIDES = "the overrides"  # a value passed in for a setting that has no flag


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Setting:
    """One setting of a run.

    ``description`` is the README's meaning and the schema's description (Markdown that
    reads as plain text). ``default`` is used when no source gives a value (None: no
    value); ``default_from`` computes it from the environment instead, and
    ``default_text`` then says in the docs what it is. ``env`` and ``flag`` name the
    environment variable and the ``sync`` flag that override the mapping file.

    The range: ``minimum``, ``maximum`` and ``above`` (an exclusive minimum) for numbers,
    ``also`` for values allowed besides them (0 for "no limit", ``"auto"``), ``choices``,
    ``pattern`` and ``nullable`` for text. A ``path`` is text in a file and a ``Path`` in
    the resolved values.

    ``check`` judges a value in place of the range (which still checks mapping files on
    loading) and returns the value kept, or raises ``ConfigurationError`` in its own words:
    for rules a schema cannot say, and values a message must not quote whole (a URL's
    password). ``convert`` turns an accepted value into the form every module reads.
    """

    name: str
    type: SettingType
    description: str
    default: Any = None
    default_from: Callable[[Mapping[str, str]], Any] | None = None
    default_text: str | None = None
    env: str | None = None
    flag: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    also: tuple[str | int, ...] = ()
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    nullable: bool = False
    check: Callable[[Any], Any] | None = None
    convert: Callable[[Any], Any] | None = None


def merge_settings(*groups: Sequence[Setting]) -> tuple[Setting, ...]:
    """The declarations of every group, in order; a name or an environment variable
    declared twice is a ``ValueError`` (one would silently shadow the other)."""
    merged = tuple(s for group in groups for s in group)
    for key in ("name", "env", "flag"):
        seen: set[str] = set()
        for setting in merged:
            value = getattr(setting, key)
            if value is None:
                continue
            if value in seen:
                shown = repr(value) if key == "name" else value
                raise ValueError(f"the setting {key} {shown} is declared twice")
            seen.add(value)
    return merged


# --- the JSON Schema ---------------------------------------------------------------------


def schema_of(declared: Sequence[Setting]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a mapping file's ``settings`` object."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {s.name: _property(s) for s in declared},
    }


def _property(setting: Setting) -> dict[str, Any]:
    prop = _range(setting)
    if setting.also:
        prop = {"anyOf": [*({"const": value} for value in setting.also), prop]}
    description = setting.description
    if setting.default is not None and setting.default_from is None:
        prop["default"] = setting.default
    elif setting.default_text is not None:  # computed: said in words
        description += f" Default: {setting.default_text}."
    overridden = " and ".join(x for x in (setting.env, setting.flag) if x is not None)
    if overridden:
        description += f" Overridden by {overridden}."
    prop["description"] = description
    return prop


def _range(setting: Setting) -> dict[str, Any]:
    """The value's own schema: its type and range, without ``also`` or the description."""
    if setting.choices:
        return {"enum": list(setting.choices)}
    kind = "string" if setting.type == "path" else setting.type
    prop: dict[str, Any] = {"type": [kind, "null"] if setting.nullable else kind}
    if setting.type == "path":
        prop["minLength"] = 1
    if setting.pattern is not None:
        prop["pattern"] = setting.pattern
    for keyword, bound in (
        ("minimum", setting.minimum),
        ("exclusiveMinimum", setting.above),
        ("maximum", setting.maximum),
    ):
        if bound is not None:
            prop[keyword] = bound
    return prop


# --- the resolver ------------------------------------------------------------------------


def resolve(
    declared: Sequence[Setting],
    file_values: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    flags: Mapping[str, Any],
    problems: Iterable[str] = (),
) -> dict[str, Any]:
    """Every declared setting's value: a flag's (None: not given) over the environment's
    (blank: not given) over the file's over the default.

    Values given are held to their declaration whatever their source (a mapping file's
    were checked on loading, but a NaN passes every JSON Schema range). All problems,
    ``problems`` found by the caller included (a secret, say), are raised together as one
    ``ConfigurationError``; each names where its value came from.
    """
    by_name = {s.name: s for s in declared}
    found: list[str] = []
    given: dict[str, tuple[Any, str]] = {}  # name -> (value, where it came from)
    for name, value in file_values.items():
        given[name] = (value, _FROM_FILE)
    for setting in declared:
        raw = environ.get(setting.env, "").strip() if setting.env else ""
        if raw:
            try:
                given[setting.name] = (_from_text(setting, raw), str(setting.env))
            except ValueError:
                words = "true or false" if setting.type == "boolean" else "a number"
                found.append(f"{setting.env}={raw!r} is not {words}")
    for name, value in flags.items():
        if value is not None:
            flag = by_name[name].flag if name in by_name else None
            given[name] = (value, flag or _FROM_OVERRIDES)
    found += problems

    values: dict[str, Any] = {}
    wrong: dict[str, str] = {}
    for name, (value, source) in given.items():
        if name not in by_name:
            wrong[name] = f"{name!r} is not a setting (from {source})"
            continue
        try:
            values[name] = _accepted(by_name[name], value)
        except ConfigurationError as exc:
            wrong[name] = f"{exc} (from {source})"
    found += [wrong[name] for name in sorted(wrong)]
    if found:
        raise ConfigurationError("invalid settings: " + "; ".join(found))
    for setting in declared:
        if setting.name not in values:
            values[setting.name] = (
                setting.default_from(environ) if setting.default_from else setting.default
            )
    return {s.name: values[s.name] for s in declared}


def _from_text(setting: Setting, raw: str) -> Any:
    """An environment variable's text as the setting's type; ``ValueError`` if it is not."""
    if raw in setting.also:
        return raw
    if setting.type == "integer":
        return int(raw)
    if setting.type == "number":
        number = float(raw)
        if not math.isfinite(number):  # float() reads "nan" and "inf"
            raise ValueError(raw)
        return number
    if setting.type == "boolean":
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ValueError(raw)
    if setting.type == "path":
        return Path(raw)
    return raw


def _accepted(setting: Setting, value: Any) -> Any:
    """The value kept for ``setting``; a ``ConfigurationError`` saying what it must be."""
    if setting.check is not None:
        value = setting.check(value)
    else:
        document = str(value) if isinstance(value, Path) else value
        # NaN compares false with every bound, so no JSON Schema range refuses it
        finite = not isinstance(value, float) or math.isfinite(value)
        if not finite or not Draft202012Validator(_property(setting)).is_valid(document):
            shown = document if finite else str(value)  # JSON has no NaN: say it plainly
            raise ConfigurationError(f"{setting.name} must be {_expected(setting)}, got {shown!r}")
    if setting.type == "path":
        value = Path(value).expanduser()
    return value if setting.convert is None else setting.convert(value)


def _expected(setting: Setting) -> str:
    """What a setting's value must be, in words: "a whole number from 1 to 10000"."""
    words = [_json_text(value) for value in setting.also]
    if setting.choices:
        words.append("one of " + ", ".join(_json_text(c) for c in setting.choices))
    elif setting.type in ("integer", "number"):
        kind = "a whole number" if setting.type == "integer" else "a number"
        if setting.above is not None:
            low = f" above {_number_text(setting.above)}"
            high = (
                "" if setting.maximum is None else f" and at most {_number_text(setting.maximum)}"
            )
        else:
            low = "" if setting.minimum is None else f" from {_number_text(setting.minimum)}"
            high = "" if setting.maximum is None else f" to {_number_text(setting.maximum)}"
        words.append(kind + low + high)
    elif setting.pattern is not None:
        words.append(f"text matching {setting.pattern}")
    else:
        words.append({"boolean": "true or false", "path": "a file path"}.get(setting.type, "text"))
    return " or ".join(words)


def _json_text(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def _number_text(number: float) -> str:
    """``1000`` for 1000.0, ``0.1`` for 0.1: bounds as a person writes them."""
    return str(int(number)) if float(number).is_integer() else str(number)


# --- the README table --------------------------------------------------------------------


def markdown_table(declared: Sequence[Setting]) -> str:
    """The settings as a Markdown table (setting, environment, flag, default, meaning),
    one row each in declaration order, ending with a line break."""
    rows = [
        "| setting | environment | flag | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in declared:
        meaning = s.description
        if s.type in ("integer", "number") and not s.choices:
            said = _expected(s)
            meaning += f" {said[0].upper()}{said[1:]}."
        cells = [
            f"`{s.name}`",
            "—" if s.env is None else f"`{s.env}`",
            "—" if s.flag is None else f"`{s.flag}`",
            _default_text(s),
            meaning,
        ]
        rows.append("| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def _default_text(setting: Setting) -> str:
    if setting.default_text is not None:
        return setting.default_text
    value = setting.default
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number_text(value)
    if setting.type == "string":
        return f"`{value}`"
    return f"`{_json_text(value)}`"  # a string among numbers ("auto"): as in JSON

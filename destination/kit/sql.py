"""The kit's half of the compiled route: subscriptions and mappings as DuckDB SQL.

The compiled route (``runner.compiled``) turns a run's subscriptions into one query over
the input's lines. Here the kit compiles what it owns: a condition (``Condition.to_sql``)
and a mapping (``payload_sql``) become SQL expressions over the JSON values the line
holds at the paths they read (``Scope``); each destination compiles its own digest
from the payload fields (``kit.action.CompilableAction``).

Results must be exactly the Python route's. An expression either decides a line the way
the Python route would, or adds a condition to ``unsure``: a line for which any such
condition holds goes through the Python route instead (a value that is not a string where
a string is expected, text outside printable ASCII, where Python's Unicode rules and
DuckDB's could differ, a payload the schema refuses, whose messages come from the
validator). What cannot be compiled at all (a directive or operator not covered here)
raises ``NotCompiled`` with the reason, and the run takes the Python route.

A value in SQL is a ``SqlValue``: ``kind`` is DuckDB's JSON type name of the value (NULL
when the path finds nothing: the mapping kit's missing) and ``text`` its text (a string's
unescaped characters, ``true``/``false`` for a boolean).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from destination.kit.fields import Field
from destination.kit.mapping import parse_path, parse_template

__all__ = [
    "CompiledDigest",
    "NotCompiled",
    "PayloadField",
    "PayloadSql",
    "Scope",
    "SqlValue",
    "payload_sql",
    "sql_string",
    "strip",
]

# A regular expression finding a character outside ASCII text (printable characters and
# the whitespace Python's ``str.strip`` and ``\\s`` know among ASCII: tab to carriage
# return, the separators 0x1c-0x1f, space): where the two routes' Unicode rules differ.
NOT_ASCII_TEXT = "[^\\x09-\\x0d\\x1c-\\x7e]"
# Python's ``str.strip()`` of ASCII text, in SQL
_WHITESPACE = (
    "concat(' ', " + ", ".join(f"chr({c})" for c in (9, 10, 11, 12, 13, 28, 29, 30, 31)) + ")"
)


def strip(text: str) -> str:
    """``text.strip()`` in SQL, for ASCII text."""
    return f"trim({text}, {_WHITESPACE})"


class NotCompiled(Exception):
    """A mapping file the compiled route cannot express; the message says what."""


class SqlValue(NamedTuple):
    """A JSON value in SQL: ``kind`` its DuckDB JSON type name (NULL: missing), ``text``
    its text (a string's characters; ``true``/``false`` for a boolean)."""

    kind: str
    text: str


def sql_string(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _json_path(keys: Sequence[str]) -> str:
    """DuckDB's JSON path of object ``keys`` (each quoted, so any printable key works)."""
    return "$" + "".join('."' + key.replace('"', '\\"') + '"' for key in keys)


_BOUND = re.compile(r"__v(\d+)\b")
_PLAIN = re.compile(r"__v\d+|'[^']*'|[A-Z]+|-?[0-9]+")  # a name or a literal: not bound


@dataclass
class Scope:
    """What a compiled query reads and computes per line.

    ``value`` names the object paths it reads, numbered as first asked for: the query
    extracts all of them in one parse of the line, their JSON type names into the list
    column ``kinds`` and their texts into ``texts`` (1-based, as SQL lists are).
    ``let`` binds an expression to a column computed once per line (an expression that
    uses it many times costs it once), in layers: a column is computed in the layer
    after the last of those it uses."""

    _paths: dict[tuple[str, ...], int] = field(default_factory=dict)
    _bound: dict[str, str] = field(default_factory=dict)  # expression -> its column
    # the bound columns __v1, __v2, ... in order: (layer, expression)
    _columns: list[tuple[int, str]] = field(default_factory=list)

    def value(self, keys: Sequence[str]) -> SqlValue:
        """The value at ``keys`` (object keys from the line's root)."""
        for key in keys:
            if not key or any(not " " <= c <= "~" for c in key) or "\\" in key:
                raise NotCompiled(f"the key {key!r} (only printable ASCII keys are compiled)")
            if key.isdigit():
                raise NotCompiled(f"the key {key!r} (a number may index a list)")
        if not keys:
            raise NotCompiled("a path to the whole event")
        index = self._paths.setdefault(tuple(keys), len(self._paths) + 1)
        # kinds[1] is the root's type: the paths' come after it
        return SqlValue(self.let(f"kinds[{index + 1}]"), self.let(f"texts[{index}]"))

    def let(self, expression: str) -> str:
        """A column holding ``expression`` (a name or a literal is its own column)."""
        if _PLAIN.fullmatch(expression):
            return expression
        name = self._bound.get(expression)
        if name is None:
            used = [self._columns[int(n) - 1][0] for n in _BOUND.findall(expression)]
            self._columns.append((1 + max(used, default=0), expression))
            name = self._bound[expression] = f"__v{len(self._columns)}"
        return name

    def layers(self) -> list[list[tuple[str, str]]]:
        """The bound columns as (name, expression), layer after layer."""
        layers: list[list[tuple[str, str]]] = [
            [] for _ in range(max((level for level, _ in self._columns), default=0))
        ]
        for number, (level, expression) in enumerate(self._columns, 1):
            layers[level - 1].append((f"__v{number}", expression))
        return layers

    def paths(self) -> list[str]:
        """The JSON paths, in their numbers' order."""
        return [_json_path(keys) for keys in self._paths]

    def objects(self) -> list[str]:
        """The JSON paths of every object the paths go through, the root included: a
        key twice in one of them is read differently by DuckDB (the first) and by the
        Python route (the last), so such a line takes the Python route."""
        prefixes = {keys[:end] for keys in self._paths for end in range(len(keys))}
        return [_json_path(keys) for keys in sorted(prefixes, key=lambda k: (len(k), k))]


class PayloadField(NamedTuple):
    """A payload field in SQL: ``present`` holds when the field has a value (the Python
    route leaves out missing, null and blank values), ``text`` is its text then."""

    present: str
    text: str


@dataclass(frozen=True)
class PayloadSql:
    """A mapping compiled: its payload fields (those the mapping maps, in its order),
    the SQL list of the present fields' names, and the conditions that send a line to
    the Python route (any one holding)."""

    fields: dict[str, PayloadField]
    shape: str
    unsure: tuple[str, ...]


class CompiledDigest(NamedTuple):
    """An action's digest in SQL (``CompilableAction.compile_digest``): ``json`` gives the
    digest's JSON text, and ``finish`` (if any) completes the parsed digest in Python
    (what SQL left for the Python normalizers), giving exactly what ``digest`` would
    have."""

    json: str
    finish: Callable[[Any], Any] | None = None


def payload_sql(mapping: Mapping[str, Any], declared: Sequence[Field], scope: Scope) -> PayloadSql:
    """The payload ``mapping`` makes (a subscription's whole mapping, defaults merged),
    checked against the fields ``declared``, in SQL."""
    by_name = {f.name: f for f in declared}
    compiler = _Compiler(scope)
    fields: dict[str, PayloadField] = {}
    if "@excludeWhenNull" in mapping:
        raise NotCompiled("@excludeWhenNull")
    texts: list[str] = []  # the string fields' texts, checked for ASCII text at once
    for name, node in mapping.items():
        value = compiler.value(node)
        declaration = by_name[name]
        present = scope.let(
            f"({value.kind} IS NOT NULL AND {value.kind} <> 'NULL' AND "
            f"NOT coalesce({value.kind} = 'VARCHAR' AND {strip(value.text)} = '', FALSE))"
        )
        compiler.unsure.append(_refused(declaration, present, value))
        if declaration.type == "string":
            texts.append(value.text)
        fields[name] = PayloadField(present, value.text)
    if texts:
        compiler.unsure.append(
            f"coalesce(regexp_matches(concat_ws('', {', '.join(texts)}), '{NOT_ASCII_TEXT}'), "
            "FALSE)"
        )
    for declaration in declared:
        if declaration.required:
            if declaration.name not in fields:
                raise NotCompiled(f"the required field {declaration.name} is not mapped")
            compiler.unsure.append(f"NOT {fields[declaration.name].present}")
    names = ", ".join(
        f"CASE WHEN {f.present} THEN {sql_string(name)} END" for name, f in fields.items()
    )
    shape = f"array_to_string([{names}], ',')" if fields else "''"
    return PayloadSql(fields, shape, tuple(compiler.unsure))


def _refused(declaration: Field, present: str, value: SqlValue) -> str:
    """When a present value is one the payload schema refuses (or that holds text the
    two routes might read differently): then the Python route words the problem."""
    if declaration.type == "boolean":
        return f"coalesce({present} AND {value.kind} <> 'BOOLEAN', FALSE)"
    if declaration.type != "string":
        raise NotCompiled(f"the {declaration.type} field {declaration.name}")
    checks = [f"{value.kind} <> 'VARCHAR'"]
    if declaration.choices:
        checks.append(f"{value.text} NOT IN ({', '.join(map(sql_string, declaration.choices))})")
    if declaration.min_length is not None:
        checks.append(f"length({value.text}) < {declaration.min_length}")
    if declaration.max_length is not None:
        checks.append(f"length({value.text}) > {declaration.max_length}")
    return f"coalesce({present} AND ({' OR '.join(checks)}), FALSE)"


class _Compiler:
    """Mapping values to ``SqlValue``s; ``unsure`` collects the conditions under which
    a line needs the Python route."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self.unsure: list[str] = []

    def value(self, node: Any) -> SqlValue:
        kind, text = self._value(node)
        return SqlValue(self._scope.let(kind), self._scope.let(text))

    def _value(self, node: Any) -> SqlValue:
        if isinstance(node, bool):
            return SqlValue("'BOOLEAN'", "'true'" if node else "'false'")
        if node is None:
            return SqlValue("'NULL'", "NULL")
        if isinstance(node, str):
            return SqlValue("'VARCHAR'", sql_string(node))
        if not isinstance(node, dict):
            raise NotCompiled(f"the value {type(node).__name__} {node!r:.40}")
        directives = [key for key in node if key.startswith("@")]
        if len(directives) != 1:
            raise NotCompiled("an object that is not a directive")
        directive = directives[0]
        argument = node[directive]
        if directive == "@path":
            return self._path(argument)
        if directive == "@literal":
            return self.value(argument)
        if directive == "@if":
            return self._if(argument)
        if directive == "@template":
            return self._template(argument)
        if directive == "@case":
            return self._case(argument)
        if directive == "@replace":
            return self._replace(argument)
        raise NotCompiled(f"the directive {directive}")

    def _path(self, argument: Any) -> SqlValue:
        if not isinstance(argument, str):
            raise NotCompiled("a path computed by a directive")
        steps = parse_path(argument)
        return self._scope.value([key for key, _ in steps])

    def _if(self, argument: Mapping[str, Any]) -> SqlValue:
        missing = SqlValue("NULL", "NULL")
        then = self.value(argument["then"]) if "then" in argument else missing
        otherwise = self.value(argument["else"]) if "else" in argument else missing
        if "exists" in argument:
            subject = self.value(argument["exists"])
            test = f"coalesce({subject.kind} <> 'NULL', FALSE)"
        else:
            subject = self.value(argument["blank"])
            # blank: missing, null, ""; a number, boolean or array is left to Python
            self.unsure.append(
                f"coalesce({subject.kind} NOT IN ('NULL', 'VARCHAR', 'OBJECT'), FALSE)"
            )
            test = (
                f"NOT ({subject.kind} IS NULL OR {subject.kind} = 'NULL' OR "
                f"coalesce({subject.kind} = 'VARCHAR' AND {subject.text} = '', FALSE))"
            )
        return SqlValue(
            f"CASE WHEN {test} THEN {then.kind} ELSE {otherwise.kind} END",
            f"CASE WHEN {test} THEN {then.text} ELSE {otherwise.text} END",
        )

    def _template(self, argument: Any) -> SqlValue:
        if not isinstance(argument, str):
            raise NotCompiled("a template computed by a directive")
        pieces, tail = parse_template(argument)
        parts: list[str] = []
        for literal, steps in pieces:
            value = self._scope.value([key for key, _ in steps])
            # numbers are written as JavaScript writes them; objects as JSON: Python's
            self.unsure.append(
                f"coalesce({value.kind} NOT IN ('NULL', 'VARCHAR', 'BOOLEAN'), FALSE)"
            )
            if literal:
                parts.append(sql_string(literal))
            parts.append(f"coalesce(CASE WHEN {value.kind} <> 'NULL' THEN {value.text} END, '')")
        if tail:
            parts.append(sql_string(tail))
        return SqlValue("'VARCHAR'", "concat(" + ", ".join(parts or ["''"]) + ")")

    def _case(self, argument: Mapping[str, Any]) -> SqlValue:
        value = self.value(argument["value"])
        change = "lower" if argument["operator"] == "lower" else "upper"
        # Unicode case rules may differ between the two: only ASCII text is compiled
        self.unsure.append(
            f"coalesce({value.kind} = 'VARCHAR' AND "
            f"regexp_matches({value.text}, '{NOT_ASCII_TEXT}'), FALSE)"
        )
        return SqlValue(
            value.kind,
            f"CASE WHEN {value.kind} = 'VARCHAR' THEN {change}({value.text}) ELSE {value.text} END",
        )

    def _replace(self, argument: Mapping[str, Any]) -> SqlValue:
        if argument.get("ignorecase", False):
            raise NotCompiled("@replace with ignorecase")
        replace_all = argument.get("global", True)
        value = self.value(argument["value"])
        # numbers become text as JavaScript writes them: Python's
        self.unsure.append(
            f"coalesce({value.kind} IN ('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT'), FALSE)"
        )
        text = f"{value.text}"
        pairs = [(argument["pattern"], argument.get("replacement", ""))]
        if argument.get("pattern2"):
            pairs.append((argument["pattern2"], argument.get("replacement2", "")))
        for pattern, replacement in pairs:
            old, new = sql_string(pattern), sql_string(replacement)
            if replace_all:
                text = f"replace({text}, {old}, {new})"
            else:
                text = (
                    f"(CASE WHEN strpos({text}, {old}) > 0 THEN "
                    f"concat(substr({text}, 1, strpos({text}, {old}) - 1), {new}, "
                    f"substr({text}, strpos({text}, {old}) + {len(pattern)})) "
                    f"ELSE {text} END)"
                )
        textual = f"{value.kind} IN ('VARCHAR', 'BOOLEAN')"
        return SqlValue(
            f"CASE WHEN {textual} THEN 'VARCHAR' ELSE {value.kind} END",
            f"CASE WHEN {textual} THEN {text} ELSE {value.text} END",
        )

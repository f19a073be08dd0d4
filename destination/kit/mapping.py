"""The mapping kit: compile a JSON mapping once, apply it to many events cheaply.

A mapping is a JSON object binding each action field to data in a Segment-spec event,
with Segment's actions mapping-kit semantics (differences are listed in the README).
``compile_mapping`` turns it into closures; ``CompiledMapping.apply(event)`` runs them.
A mapping value is resolved recursively:

- a JSON literal (string, number, boolean, null) is itself;
- an array resolves each item; a plain object resolves each value and keeps its keys;
- an object with exactly one key starting with ``@`` (and optionally ``_metadata``,
  ignored) is a directive:

  ``@path``        ``"$.context.traits.email"``, ``"context.traits.email"``, ``""`` (the
                   root): names joined by dots (spaces allowed), ``['name']``, ``[0]``
  ``@template``    ``"{{properties.name}} <{{{traits.email}}}>"``: paths from the root;
                   null is "", objects and arrays are compact JSON
  ``@literal``     any value, resolved (directives inside it are applied)
  ``@if``          ``{"exists" | "blank": X, "then": A, "else": B}``; ``blank`` takes
                   ``then`` when X is not blank (JavaScript's ``X != ''``)
  ``@case``        ``{"operator": "lower" | "upper", "value": X}``
  ``@replace``     ``{"pattern", "replacement", "pattern2", "replacement2", "value",
                   "ignorecase", "global"}``: plain substring replacement
  ``@arrayPath``   ``[source, shape]``: each item of the source list reshaped, with the
                   item as the root of ``shape``
  ``@merge``       ``{"objects": [...], "direction": "right" | "left"}``: shallow merge
  ``@json``        ``{"mode": "encode" | "decode", "value": X}``
  ``@flatten``     ``{"value": X, "separator": ".", "omitArrays": false}``
  ``@transform``   ``{"apply": mapping, "mapping": mapping}``: the second applied to
                   the result of the first
  ``@excludeWhenNull`` ``X``: left out when X is null, else X without its null keys
  ``@liquid``      a Liquid template (``destination.kit.liquid``)

- ``"@excludeWhenNull": true`` beside other keys of a plain object drops its keys that
  resolve to null (this project's flag form).

A path or a template may be a directive itself; it is then resolved, parsed and applied
on each event (parsed once per distinct text). Anything a path does not find is missing,
Segment's ``undefined``: an object leaves the key out, an array holds null.

A mapping nests at most ``MAX_DEPTH`` levels (its JSON pointers have at most that many
steps from the file's root), checked without recursion before anything else: compiling
and applying recurse once per level.

Every mistake is a ``MappingError`` raised by ``compile_mapping``, naming the JSON
pointer of the offending node: a bad value at that value, a wrong set of keys (unknown
directive, extra or missing key) at the object holding them. ``apply`` never raises
whatever the event holds, never mutates it, and returns containers shared with neither
the event nor the mapping.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from destination.errors import MappingError
from destination.kit.schema import json_pointer

__all__ = [
    "MAX_DEPTH",
    "CompiledMapping",
    "check_depth",
    "compile_mapping",
    "parse_path",
    "parse_template",
    "reads_event",
]

# the directives that read the event (the others combine or reshape what they are given)
_READERS = frozenset({"@path", "@template", "@arrayPath", "@liquid"})


def reads_event(value: Any) -> bool:
    """Whether a mapping value reads the event anywhere inside it (``@literal`` resolves
    the directives it holds too): a value that does not is a constant."""
    if isinstance(value, dict):
        return any(k in _READERS or reads_event(v) for k, v in value.items())
    if isinstance(value, list):
        return any(reads_event(v) for v in value)
    return False


Resolver: TypeAlias = Callable[[Any], Any]
"""A compiled mapping value: takes the root (the event, or an ``@arrayPath`` item)."""

Steps: TypeAlias = tuple[tuple[str, int | None], ...]
"""A compiled path: per step, the object key and the list index (if a number) it follows."""


class _Missing:
    """Segment's ``undefined``: what a path that finds nothing gives. Falsy, so that a
    chain of ``(value or {}).get(key, _MISSING)`` walks through it."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()
_EXCLUDE_WHEN_NULL: Final = "@excludeWhenNull"
_METADATA: Final = "_metadata"  # Segment's editor notes beside a directive; ignored

# Tuples, not unions: isinstance is faster with them, and dict is tried before the ABC.
_OBJECT: Final = (dict, Mapping)
_CONTAINER: Final = (dict, list, Mapping)
_SCALAR: Final = (str, int, float)
_IMMUTABLE: Final = frozenset({str, int, float, bool, _Missing})  # returned as they are
_EMPTY: Final[Mapping[str, Any]] = {}  # never written to
_PATH_STEP: Final = re.compile(r"""\.([^.\[\]'"*]+)|\[(\d+)\]|\[(['"])(.*?)\3\]""")
_PLACEHOLDER: Final = re.compile(r"\{\{\{([^{}]*)\}\}\}|\{\{([^{}]*)\}\}")
_MAX_INDEX_DIGITS: Final = 18  # no list is longer; int() refuses past 4,300 digits
MAX_PATTERN_LENGTH: Final = 10
"""Segment's limit on ``@replace`` patterns and replacements, in characters."""
_RUNTIME_CACHE: Final = 1024  # distinct paths or templates computed by directives, kept parsed
MAX_DEPTH: Final = 64
"""Most steps in a JSON pointer of a mapping file (of a mapping, from the root its pointer
names). Real mappings use a handful; the limit keeps every recursive step (compiling,
copying literals, JSON Schema checks, error messages) far from Python's recursion limit."""


@dataclass(frozen=True, slots=True)
class _Site:
    """Where a node sits: its file and its JSON pointer, for error messages."""

    source: str
    pointer: str

    def child(self, key: str | int) -> _Site:
        return _Site(self.source, self.pointer + json_pointer([key]))

    def error(self, expected: str) -> MappingError:
        return MappingError(self.source, self.pointer, expected)


# the top-level fields of a compiled object: (key, resolver), in the mapping's order
Fields = tuple[tuple[str, Resolver], ...]


class CompiledMapping:
    """A mapping compiled by ``compile_mapping``; ``apply`` it to any number of events."""

    __slots__ = ("_fields", "_resolve")

    def __init__(self, fields: Fields, exclude_when_null: bool) -> None:
        self._fields = fields
        self._resolve = _object_resolver(fields, exclude_when_null)

    def apply(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The mapped fields of ``event`` (left untouched), as new objects; a field
        whose value is missing is left out."""
        return self._resolve(event)

    def payload(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """``apply`` without the fields whose value is None or a blank string (an action's
        payload), in one pass: a third cheaper than dropping them afterwards."""
        out: dict[str, Any] = {}
        for key, field in self._fields:
            value = field(event)
            if (
                value is not None
                and value is not _MISSING
                and (not isinstance(value, str) or value.strip())
            ):
                out[key] = value
        return out


def compile_mapping(
    mapping: Mapping[str, Any], *, source: str = "<mapping>", pointer: str = ""
) -> CompiledMapping:
    """Compile ``mapping`` (found at ``pointer`` in ``source``) or raise ``MappingError``."""
    site = _Site(source, pointer)
    node: object = mapping
    check_depth(node, source=source, pointer=pointer)
    if not isinstance(node, Mapping):
        raise site.error(f"a mapping: an object of action fields, got {_got(node)}")
    directive = _directive_of(node, site)
    if directive is not None and directive != _EXCLUDE_WHEN_NULL:
        raise site.error(
            f"an object of action fields, got the directive {directive!r} as the whole "
            "mapping (use it as the value of a field)"
        )
    # a mapping of the flag alone is a plain object with no fields
    return CompiledMapping(*_compile_fields(node, site))


def check_depth(node: Any, *, source: str, pointer: str = "") -> None:
    """``MappingError`` at the first node (in document order) more than ``MAX_DEPTH``
    steps from the root, counting the steps ``pointer`` already has.

    Iterative, so a document of any depth is checked; only containers are visited, and
    a node's pointer is spelled out only for the error.
    """
    # (container, its depth, its path below ``node`` as a chain (parent's path, key))
    stack: list[tuple[Any, int, tuple[Any, Any] | None]] = [(node, pointer.count("/"), None)]
    while stack:
        value, depth, path = stack.pop()
        items: list[tuple[Any, Any]]
        if isinstance(value, Mapping):
            items = list(value.items())
        elif isinstance(value, list):
            items = list(enumerate(value))
        else:
            continue  # a scalar root
        if items and depth >= MAX_DEPTH:
            keys: list[Any] = [items[0][0]]
            while path is not None:
                path, key = path
                keys.append(key)
            raise MappingError(
                source,
                pointer + json_pointer(reversed(keys)),
                f"a value at most {MAX_DEPTH} levels deep (a JSON pointer of at most "
                f"{MAX_DEPTH} steps), got one nested deeper",
            )
        for key, child in reversed(items):  # popped in document order
            if isinstance(child, _CONTAINER):
                stack.append((child, depth + 1, (path, key)))


def _compile(node: Any, site: _Site) -> Resolver:
    """The one recursive step: any mapping value to its resolver."""
    if node is None or isinstance(node, str | bool | int | float):
        return _constant(node)
    if isinstance(node, list):
        return _compile_array(node, site)
    if isinstance(node, Mapping):
        directive = _directive_of(node, site)
        if directive is None:
            return _compile_object(node, site)
        return _DIRECTIVES[directive](node[directive], site.child(directive))
    raise site.error(f"a JSON value, got {_got(node)}")


def _directive_of(node: Mapping[Any, Any], site: _Site) -> str | None:
    """The directive ``node`` is, or None for a plain object; MappingError if neither.

    As in Segment, a directive object has one ``@`` key and may have ``_metadata``
    beside it. An ``@excludeWhenNull`` key beside other plain keys is the flag form.
    """
    directives: list[str] = []
    for key in node:
        if not isinstance(key, str):
            raise site.error(f"an object with string keys, got the key {key!r}")
        if key.startswith("@"):
            directives.append(key)
    if not directives:
        return None
    for key in directives:
        if key not in _DIRECTIVES:
            raise site.error(
                f"a known directive ({', '.join(_DIRECTIVES)}), got the unknown directive {key!r}"
            )
    plain = [key for key in node if not key.startswith("@") and key != _METADATA]
    if directives == [_EXCLUDE_WHEN_NULL] and plain:
        return None
    directive = next((key for key in directives if key != _EXCLUDE_WHEN_NULL), directives[0])
    extra = [repr(key) for key in node if key not in (directive, _METADATA)]
    if extra:
        raise site.error(
            f"a directive object with exactly one key (and optionally {_METADATA!r}), "
            f"got {directive!r} with the extra keys {', '.join(extra)}"
        )
    return directive


def _is_directive(node: Any, site: _Site) -> bool:
    return isinstance(node, Mapping) and _directive_of(node, site) is not None


def _constant(value: Any) -> Resolver:
    def resolve(_root: Any) -> Any:
        return value

    return resolve


def _compile_array(node: list[Any], site: _Site) -> Resolver:
    items = tuple(_compile(value, site.child(i)) for i, value in enumerate(node))

    def resolve(root: Any) -> Any:
        return [None if (value := item(root)) is _MISSING else value for item in items]

    return resolve


def _compile_object(node: Mapping[str, Any], site: _Site) -> Callable[[Any], dict[str, Any]]:
    """A plain object (its directive keys already ruled out), with its optional flag."""
    return _object_resolver(*_compile_fields(node, site))


def _compile_fields(node: Mapping[str, Any], site: _Site) -> tuple[Fields, bool]:
    """A plain object's fields, compiled, and its ``@excludeWhenNull`` flag."""
    exclude_when_null = False
    compiled: list[tuple[str, Resolver]] = []
    for key, value in node.items():
        if key == _EXCLUDE_WHEN_NULL:
            if not isinstance(value, bool):
                raise site.child(key).error(f"true or false, got {_got(value)}")
            exclude_when_null = value
        else:
            compiled.append((key, _compile(value, site.child(key))))
    return tuple(compiled), exclude_when_null


def _object_resolver(fields: Fields, exclude_when_null: bool) -> Callable[[Any], dict[str, Any]]:
    if not exclude_when_null:

        def resolve_all(root: Any) -> dict[str, Any]:
            return {key: value for key, field in fields if (value := field(root)) is not _MISSING}

        return resolve_all

    def resolve_non_null(root: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, field in fields:
            value = field(root)
            if value is not None and value is not _MISSING:
                out[key] = value
        return out

    return resolve_non_null


# --- helpers used while applying ---------------------------------------------------


def _walk(root: Any, steps: Steps) -> Any:
    """The value at ``steps`` under ``root``; missing as soon as a step does not fit."""
    value = root
    for key, index in steps:
        if isinstance(value, _OBJECT):
            value = value.get(key, _MISSING)
        elif isinstance(value, list) and index is not None and index < len(value):
            value = value[index]
        else:
            return _MISSING
    return value


def _fresh(value: Any) -> Any:
    """``value`` with its objects and arrays copied (deeply), so callers may mutate it."""
    if value is None or isinstance(value, _SCALAR):
        return value
    if isinstance(value, _OBJECT):
        return {key: _fresh(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_fresh(item) for item in value]
    return value


def _number_text(value: int | float) -> str:
    """A number as JavaScript's ``String()`` writes it (``1.0`` is ``"1"``), as Segment
    does in templates and ``@replace``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value) if math.isfinite(value) else json.dumps(value)


def _render(value: Any) -> str:
    """How a value reads inside a template."""
    if value is None or value is _MISSING:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number_text(value)
    return json.dumps(value, separators=(",", ":"), skipkeys=True, default=str)


def _is_blank(value: Any) -> bool:
    """Segment's ``blank``: undefined, null, or JavaScript's ``value == ''``: the empty
    string, 0, false, and an array whose items all join to "" (``[]``, ``[null]``)."""
    if value is None or value is _MISSING:
        return True
    if isinstance(value, str):
        return not value
    if isinstance(value, int | float):  # booleans included: false is 0
        return value == 0
    if isinstance(value, list):
        return all(
            item is None or item == "" or (isinstance(item, list) and _is_blank(item))
            for item in value
        )
    return False


def _clean_nulls(value: Any) -> Any:
    """``@excludeWhenNull``'s result: an object without its null keys, at any depth of
    objects (arrays are left as they are)."""
    if not isinstance(value, _OBJECT):
        return value
    return {key: _clean_nulls(item) for key, item in value.items() if item is not None}


def _flatten_into(
    out: dict[str, Any], value: Any, prefix: str, separator: str, keep_arrays: bool
) -> None:
    """Segment's ``flattenObject``: leaves keyed by their keys joined with ``separator``
    (an empty prefix adds no separator, as in Segment)."""
    items: Any
    if isinstance(value, _OBJECT):
        items = value.items()
    elif isinstance(value, list) and not keep_arrays:
        items = ((str(index), item) for index, item in enumerate(value))
    else:
        if value is not _MISSING:
            out[prefix] = _fresh(value)
        return
    for key, item in items:
        _flatten_into(
            out, item, f"{prefix}{separator}{key}" if prefix else key, separator, keep_arrays
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# --- helpers used while compiling --------------------------------------------------


def _got(value: Any) -> str:
    """A short description of a mapping value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def _arguments(
    arg: Any,
    site: _Site,
    directive: str,
    *,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
) -> Mapping[str, Any]:
    """``arg`` checked to be an object with these keys (values are checked by callers)."""
    keys = ", ".join(repr(key) for key in required)
    if optional:
        keys += (" and " if required else "") + "optional " + ", ".join(map(repr, optional))
    shape = f"the arguments of {directive}: an object with the keys {keys}"
    if not isinstance(arg, Mapping):
        raise site.error(f"{shape}; got {_got(arg)}")
    unknown = [repr(key) for key in arg if key not in required + optional]
    if unknown:
        raise site.error(f"{shape}; got the unknown keys {', '.join(unknown)}")
    missing = [repr(key) for key in required if key not in arg]
    if missing:
        raise site.error(f"{shape}; the keys {', '.join(missing)} are missing")
    return arg


def _boolean(args: Mapping[str, Any], key: str, *, default: bool, site: _Site) -> bool:
    flag = args.get(key, default)
    if not isinstance(flag, bool):
        raise site.child(key).error(f"true or false, got {_got(flag)}")
    return flag


def _short_string(args: Mapping[str, Any], key: str, *, minimum: int, site: _Site) -> str:
    """A ``@replace`` pattern or replacement: a string within Segment's length limits."""
    text = args.get(key, "")
    if not isinstance(text, str) or not minimum <= len(text) <= MAX_PATTERN_LENGTH:
        shape = "a non-empty string" if minimum else "a string"
        raise site.child(key).error(
            f"{shape} of at most {MAX_PATTERN_LENGTH} characters (Segment's limit), "
            f"got {_got(text)}"
        )
    return text


_PATH_SHAPE: Final = (
    "a path: names joined by '.', ['name'] or [0], with or without a leading '$.', "
    "e.g. '$.context.traits.email'"
)


class _PathError(ValueError):
    """A path that does not parse; the message says where."""


def parse_path(path: str) -> Steps:
    """Segment's path grammar (its ``get``): an optional ``$.``, then names joined by
    dots (any characters but ``.[]'"*``, spaces included), ``[0]`` or ``['name']``.
    ``""``, ``"$"`` and ``"$."`` are the root. A name made of digits also indexes a list,
    as in JavaScript."""
    if path in ("", "$", "$."):
        return ()
    if path.startswith(("$.", "$[")):
        rest, offset = path[1:], 1
    else:  # the first name has no leading dot
        rest, offset = "." + path, -1
    steps: list[tuple[str, int | None]] = []
    position = 0
    while position < len(rest):
        match = _PATH_STEP.match(rest, position)
        if match is None:
            raise _PathError(f"{_got(path)}, invalid at character {position + offset}")
        name, index, _quote, quoted = match.groups()
        key = index if index is not None else name if name is not None else quoted
        if key.isascii() and key.isdigit():
            if len(key) > _MAX_INDEX_DIGITS:
                raise _PathError(f"the index at character {position + offset} is too large")
            steps.append((key, int(key)))
        else:
            steps.append((key, None))
        position = match.end()
        if len(steps) > MAX_DEPTH:
            raise _PathError(f"at most {MAX_DEPTH} steps; this one has more")
    return tuple(steps)


def _dynamic(inner: Resolver, parse: Callable[[str], Resolver | None]) -> Resolver:
    """A directive whose text argument (a path, a template) is itself computed: resolved,
    parsed (``parse`` caches) and applied on each event. Anything but a string that
    parses gives missing (Segment throws)."""

    def resolve(root: Any) -> Any:
        text = inner(root)
        compiled = parse(text) if isinstance(text, str) else None
        return _MISSING if compiled is None else compiled(root)

    return resolve


def _text_or_directive(
    arg: Any,
    site: _Site,
    shape: str,
    compile_text: Callable[[str, _Site], Resolver],
    parse: Callable[[str], Resolver | None],
) -> Resolver:
    """A directive argument that Segment takes as a string or a directive (validated
    as ``validateDirectiveOrString``)."""
    if isinstance(arg, str):
        return compile_text(arg, site)
    if _is_directive(arg, site):
        return _dynamic(_compile(arg, site), parse)
    raise site.error(f"{shape} or a directive giving one, got {_got(arg)}")


# --- directives: argument (at ``site``) to resolver ---------------------------------


def _compile_path(arg: Any, site: _Site) -> Resolver:
    return _text_or_directive(arg, site, _PATH_SHAPE, _compile_path_text, _runtime_path)


def _compile_path_text(path: str, site: _Site) -> Resolver:
    try:
        steps = parse_path(path)
    except _PathError as error:
        raise site.error(f"{_PATH_SHAPE}; got {error}") from None
    return _path_resolver(steps)


@functools.lru_cache(maxsize=_RUNTIME_CACHE)
def _runtime_path(path: str) -> Resolver | None:
    try:
        return _path_resolver(parse_path(path))
    except _PathError:
        return None


def _path_resolver(steps: Steps) -> Resolver:
    if steps and all(index is None for _, index in steps):
        return _key_path(steps)

    def resolve(root: Any) -> Any:
        return _fresh(_walk(root, steps))

    return resolve


def _key_path(steps: Steps) -> Resolver:
    """A path of object keys only, as one expression: ``.get`` chained, no loop.

    ``(value or {}).get(key)`` is what ``_walk`` does for every falsy value (None,
    missing, "", 0, false, [] and {} all lead to missing: the last ``get`` says so) and
    for objects; any other value has no ``get`` (a string, a number, a non-empty list):
    then ``_walk`` itself decides, on the rare event that has one. The result is copied
    by ``_fresh`` unless immutable.
    """
    return _key_path_maker(len(steps))(steps, *(key for key, _ in steps))


@functools.cache
def _key_path_maker(length: int) -> Callable[..., Resolver]:
    """What makes ``_key_path`` resolvers of ``length`` keys, from the steps and keys.

    The code is generated and compiled once per length (at most ``MAX_DEPTH``), not per
    path: compiling is the costly part, and a file with thousands of subscriptions has
    thousands of paths of a few lengths. The keys are arguments, never source text.
    """
    keys = [f"key{i}" for i in range(length)]
    chain = "root"
    for key in keys[:-1]:  # None for a missing key: the next step treats it as missing
        chain = f"({chain} or empty).get({key})"
    chain = f"({chain} or empty).get({keys[-1]}, missing)"
    source = (
        f"def make(steps, {', '.join(keys)}, empty=_EMPTY, missing=_MISSING):\n"
        "    def resolve(root):\n"
        "        try:\n"
        f"            value = {chain}\n"
        "        except AttributeError:\n"
        "            return _fresh(_walk(root, steps))\n"
        "        return value if value is None or type(value) in _IMMUTABLE else _fresh(value)\n"
        "    return resolve\n"
    )
    namespace: dict[str, Any] = {
        "_EMPTY": _EMPTY,
        "_MISSING": _MISSING,
        "_IMMUTABLE": _IMMUTABLE,
        "_fresh": _fresh,
        "_walk": _walk,
    }
    exec(source, namespace)  # noqa: S102 (the source is built here from argument names)
    make: Callable[..., Resolver] = namespace["make"]
    return make


_TEMPLATE_SHAPE: Final = "a template string with {{path}} or {{{path}}} placeholders"


def _compile_template(arg: Any, site: _Site) -> Resolver:
    return _text_or_directive(arg, site, _TEMPLATE_SHAPE, _compile_template_text, _runtime_template)


def _compile_template_text(text: str, site: _Site) -> Resolver:
    try:
        return _template_resolver(text)
    except _PathError as error:
        raise site.error(f"{_TEMPLATE_SHAPE}; {error}") from None


@functools.lru_cache(maxsize=_RUNTIME_CACHE)
def _runtime_template(text: str) -> Resolver | None:
    try:
        return _template_resolver(text)
    except _PathError:
        return None


def parse_template(text: str) -> tuple[tuple[tuple[str, Steps], ...], str]:
    """A template's pieces: per placeholder, the text before it and its path, then the
    text after the last one. ``ValueError`` (a ``_PathError``) for a template that does
    not parse."""
    literals: list[str] = []
    paths: list[Steps] = []
    position = 0
    while (start := text.find("{{", position)) >= 0:
        match = _PLACEHOLDER.match(text, start)
        if match is None and text.find("}}", start + 2) < 0:
            raise _PathError(f"the '{{{{' at character {start} is never closed")
        expression = "" if match is None else (match.group(1) or match.group(2) or "").strip()
        try:
            if not expression or expression.startswith("$"):
                raise _PathError(expression)
            steps = parse_path(expression)
        except _PathError:
            raise _PathError(
                f"the placeholder at character {start} must be a dotted path from "
                f"the event root such as 'properties.name', got {expression!r}"
            ) from None
        assert match is not None  # an empty expression was refused above
        literals.append(text[position:start])
        paths.append(steps)
        position = match.end()
    return tuple(zip(literals, paths, strict=True)), text[position:]


def _template_resolver(text: str) -> Resolver:
    """Segment's ``render``: ``{{path}}`` and ``{{{path}}}`` (the same: nothing is
    escaped) replaced by the value at the path, in one pass (a value that holds braces
    is not rendered again)."""
    pieces, tail = parse_template(text)
    if not pieces:
        return _constant(text)

    def resolve(root: Any) -> Any:
        out: list[str] = []
        for literal, steps in pieces:
            out.append(literal)
            out.append(_render(_walk(root, steps)))
        out.append(tail)
        return "".join(out)

    return resolve


def _compile_literal(arg: Any, site: _Site) -> Resolver:
    """Segment resolves a literal like any value: directives inside it apply."""
    return _compile(arg, site)


def _compile_if(arg: Any, site: _Site) -> Resolver:
    args = _arguments(arg, site, "@if", required=(), optional=("exists", "blank", "then", "else"))
    tests = [key for key in ("exists", "blank") if key in args]
    if len(tests) != 1:
        raise site.error(
            "the arguments of @if: exactly one of 'exists' or 'blank', with optional "
            f"'then' and 'else'; got {' and '.join(map(repr, tests)) or 'neither'}"
        )
    test = tests[0]
    subject = _compile(args[test], site.child(test))
    missing = _constant(_MISSING)  # a branch left out leaves the field out
    then = _compile(args["then"], site.child("then")) if "then" in args else missing
    otherwise = _compile(args["else"], site.child("else")) if "else" in args else missing

    if test == "exists":  # the common test, inlined: no call per event to decide

        def resolve_exists(root: Any) -> Any:
            value = subject(root)
            return then(root) if value is not None and value is not _MISSING else otherwise(root)

        return resolve_exists

    def resolve(root: Any) -> Any:
        return otherwise(root) if _is_blank(subject(root)) else then(root)

    return resolve


def _compile_case(arg: Any, site: _Site) -> Resolver:
    args = _arguments(arg, site, "@case", required=("operator", "value"))
    operator = args["operator"]
    if operator not in ("lower", "upper"):
        raise site.child("operator").error(f"'lower' or 'upper', got {_got(operator)}")
    change = str.lower if operator == "lower" else str.upper
    value = _compile(args["value"], site.child("value"))

    def resolve(root: Any) -> Any:
        text = value(root)
        return change(text) if isinstance(text, str) else text

    return resolve


def _compile_replace(arg: Any, site: _Site) -> Resolver:
    args = _arguments(
        arg,
        site,
        "@replace",
        required=("pattern", "value"),
        optional=("replacement", "pattern2", "replacement2", "ignorecase", "global"),
    )
    pairs = [
        (
            _short_string(args, "pattern", minimum=1, site=site),
            _short_string(args, "replacement", minimum=0, site=site),
        )
    ]
    pattern2 = _short_string(args, "pattern2", minimum=0, site=site)
    replacement2 = _short_string(args, "replacement2", minimum=0, site=site)
    if pattern2:  # an empty second pattern is skipped, as in Segment
        pairs.append((pattern2, replacement2))
    ignorecase = _boolean(args, "ignorecase", default=False, site=site)
    replace_all = _boolean(args, "global", default=True, site=site)
    if not isinstance(args["value"], str) and not _is_directive(args["value"], site):
        raise site.child("value").error(
            f"a string or a directive (Segment's rule), got {_got(args['value'])}"
        )
    value = _compile(args["value"], site.child("value"))
    swaps = tuple(
        _replacer(pattern, replacement, ignorecase, replace_all) for pattern, replacement in pairs
    )

    def resolve(root: Any) -> Any:
        text = value(root)
        if isinstance(text, bool):  # Segment replaces in booleans and numbers as text
            text = "true" if text else "false"
        elif isinstance(text, int | float):
            text = _number_text(text)
        elif not isinstance(text, str):
            return text
        for swap in swaps:
            text = swap(text)
        return text

    return resolve


def _replacer(
    pattern: str, replacement: str, ignorecase: bool, replace_all: bool
) -> Callable[[str], str]:
    """Plain-text replacement of ``pattern`` (never a regular expression)."""
    if ignorecase:
        regex = re.compile(re.escape(pattern), re.IGNORECASE)
        template = replacement.replace("\\", "\\\\")  # a literal re.sub replacement
        count = 0 if replace_all else 1

        def swap_ignoring_case(text: str) -> str:
            return regex.sub(template, text, count=count)

        return swap_ignoring_case

    limit = -1 if replace_all else 1

    def swap(text: str) -> str:
        return text.replace(pattern, replacement, limit)

    return swap


def _compile_array_path(arg: Any, site: _Site) -> Resolver:
    if not isinstance(arg, list) or len(arg) not in (1, 2):
        raise site.error(f"an array [source] or [source, shape], got {_got(arg)}")
    first, first_site = arg[0], site.child(0)
    if isinstance(first, str):
        source = _compile_path_text(first, first_site)
    elif _is_directive(first, first_site):  # the directive gives the source itself
        source = _compile(first, first_site)
    else:
        raise first_site.error(f"{_PATH_SHAPE}, or a directive, got {_got(first)}")
    shape = _compile(arg[1], site.child(1)) if len(arg) == 2 else None
    if not (len(arg) == 2 and isinstance(arg[1], Mapping) and arg[1]):
        # Segment uses a shape only if it is a non-empty object (or a directive)
        return source
    assert shape is not None

    def resolve(root: Any) -> Any:
        items = source(root)
        if isinstance(items, list):
            return [None if (item := shape(one)) is _MISSING else item for one in items]
        if isinstance(items, _OBJECT):
            return [None if (item := shape(items)) is _MISSING else item]
        return items

    return resolve


def _compile_merge(arg: Any, site: _Site) -> Resolver:
    args = _arguments(arg, site, "@merge", required=("objects",), optional=("direction",))
    objects = args["objects"]
    objects_site = site.child("objects")
    if not isinstance(objects, list):
        raise objects_site.error(f"an array of objects, got {_got(objects)}")
    direction = args.get("direction", "right")
    if direction not in ("right", "left"):
        raise site.child("direction").error(f"'right' or 'left', got {_got(direction)}")
    parts: list[Resolver] = []
    for i, item in enumerate(objects):
        if not isinstance(item, Mapping):
            raise objects_site.child(i).error(
                f"an object or a directive giving one, got {_got(item)}"
            )
        parts.append(_compile(item, objects_site.child(i)))
    if direction == "left":  # earlier objects win: apply them last
        parts.reverse()
    ordered = tuple(parts)

    def resolve(root: Any) -> Any:
        merged: dict[str, Any] = {}
        for part in ordered:
            value = part(root)
            if isinstance(value, _OBJECT):  # a directive giving anything else adds nothing
                merged.update(value)
        return merged

    return resolve


def _compile_json(arg: Any, site: _Site) -> Resolver:
    args = _arguments(arg, site, "@json", required=("mode", "value"))
    mode = args["mode"]
    if mode not in ("encode", "decode"):
        raise site.child("mode").error(f"'encode' or 'decode', got {_got(mode)}")
    raw = args["value"]
    if raw is None or (isinstance(raw, str | int | float) and not raw):
        raise site.child("value").error(
            f'a value Segment accepts (not null, false, 0 or ""), got {_got(raw)}'
        )
    value = _compile(raw, site.child("value"))

    if mode == "encode":

        def encode(root: Any) -> Any:
            data = value(root)
            if data is _MISSING:
                return _MISSING
            return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

        return encode

    def decode(root: Any) -> Any:
        data = value(root)
        if not isinstance(data, str):
            return data
        try:
            return json.loads(data, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            return data  # not JSON: the string itself, as in Segment

    return decode


def _compile_flatten(arg: Any, site: _Site) -> Resolver:
    args = _arguments(
        arg, site, "@flatten", required=("value", "separator"), optional=("omitArrays",)
    )
    separator = args["separator"]
    if not isinstance(separator, str) or not separator:
        raise site.child("separator").error(f"a non-empty string, got {_got(separator)}")
    keep_arrays = _boolean(args, "omitArrays", default=False, site=site)
    value = _compile(args["value"], site.child("value"))

    def resolve(root: Any) -> Any:
        out: dict[str, Any] = {}
        _flatten_into(out, value(root), "", separator, keep_arrays)
        return out

    return resolve


def _compile_transform(arg: Any, site: _Site) -> Resolver:
    args = _arguments(arg, site, "@transform", required=("apply", "mapping"))
    for key in ("apply", "mapping"):
        if not isinstance(args[key], Mapping):
            raise site.child(key).error(
                f"an object or a directive (a mapping), got {_got(args[key])}"
            )
    first = _compile(args["apply"], site.child("apply"))
    then = _compile(args["mapping"], site.child("mapping"))

    def resolve(root: Any) -> Any:
        return then(first(root))

    return resolve


def _compile_exclude_when_null(arg: Any, site: _Site) -> Resolver:
    value = _compile(arg, site)

    def resolve(root: Any) -> Any:
        result = value(root)
        return _MISSING if result is None else _clean_nulls(result)

    return resolve


def _compile_liquid(arg: Any, site: _Site) -> Resolver:
    if not isinstance(arg, str):
        raise site.error(f"a Liquid template string, got {_got(arg)}")
    if not arg:
        return _constant("")
    from destination.kit.liquid import LiquidTemplateError, compile_liquid  # noqa: PLC0415

    try:
        render = compile_liquid(arg)
    except LiquidTemplateError as error:
        raise site.error(str(error)) from None

    def resolve(root: Any) -> Any:
        text = render(root)
        return _MISSING if text is None else text

    return resolve


_DIRECTIVES: Final[dict[str, Callable[[Any, _Site], Resolver]]] = {
    "@path": _compile_path,
    "@template": _compile_template,
    "@literal": _compile_literal,
    "@if": _compile_if,
    "@case": _compile_case,
    "@replace": _compile_replace,
    "@arrayPath": _compile_array_path,
    "@merge": _compile_merge,
    "@json": _compile_json,
    "@flatten": _compile_flatten,
    "@transform": _compile_transform,
    _EXCLUDE_WHEN_NULL: _compile_exclude_when_null,
    "@liquid": _compile_liquid,
}
"""The directive registry: name to the function compiling its argument."""

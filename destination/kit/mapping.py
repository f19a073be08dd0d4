"""The mapping kit: compile a JSON mapping once, apply it to many events cheaply.

A mapping is a JSON object binding each action field to data in a Segment-spec event.
``compile_mapping`` turns it into closures; ``CompiledMapping.apply(event)`` runs them.
A mapping value is resolved recursively:

- a JSON literal (string, number, boolean, null) is itself;
- an array resolves each item; a plain object resolves each value and keeps its keys;
- an object with exactly one key starting with ``@`` is a directive:

  ``@path``        ``"$.context.traits.email"``: JSONPath subset (``$``, ``.name``,
                   ``['name']``, ``[0]``); anything missing is null
  ``@template``    ``"{{properties.name}} <{{traits.email}}>"``: dotted paths from the
                   event root; null is "", non-strings are compact JSON
  ``@literal``     any JSON, returned as is (not resolved)
  ``@if``          ``{"exists" | "blank": X, "then": A, "else": B}``
  ``@case``        ``{"operator": "lower" | "upper", "value": X}``
  ``@replace``     ``{"pattern", "replacement", "value", "ignorecase", "global"}``: plain
                   substring replacement
  ``@arrayPath``   ``[source, shape]``: each item of the source list reshaped, with the
                   item as the root of ``shape``
  ``@merge``       ``{"objects": [...], "direction": "right" | "left"}``: shallow merge

- ``"@excludeWhenNull": true`` inside a plain object drops its keys that resolve to null.

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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from destination.errors import MappingError
from destination.kit.schema import json_pointer

__all__ = ["MAX_DEPTH", "CompiledMapping", "check_depth", "compile_mapping"]

Resolver: TypeAlias = Callable[[Any], Any]
"""A compiled mapping value: takes the root (the event, or an ``@arrayPath`` item)."""

Steps: TypeAlias = tuple[tuple[str | None, int | None], ...]
"""A compiled path: per step, the object key and/or the list index it may follow."""

_EXCLUDE_WHEN_NULL: Final = "@excludeWhenNull"

# Tuples, not unions: isinstance is faster with them, and dict is tried before the ABC.
_OBJECT: Final = (dict, Mapping)
_CONTAINER: Final = (dict, list, Mapping)
_SCALAR: Final = (str, int, float)
_IMMUTABLE: Final = frozenset({str, int, float, bool})  # exact types: returned as they are
_EMPTY: Final[Mapping[str, Any]] = {}  # never written to
_JSONPATH_STEP: Final = re.compile(r"""\.([^.\[\]'"\s]+)|\[(\d+)\]|\[(['"])(.*?)\3\]""")
_TEMPLATE_SEGMENT: Final = re.compile(r"[^.{}\s]+")
_MAX_INDEX_DIGITS: Final = 18  # no list is longer; int() refuses past 4,300 digits
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
        """The mapped fields of ``event`` (left untouched), as new objects."""
        return self._resolve(event)

    def payload(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """``apply`` without the fields whose value is None or a blank string (an action's
        payload), in one pass: a third cheaper than dropping them afterwards."""
        out: dict[str, Any] = {}
        for key, field in self._fields:
            value = field(event)
            if value is not None and (not isinstance(value, str) or value.strip()):
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
    if directive is not None:
        raise site.error(
            f"an object of action fields, got the directive {directive!r} as the whole "
            "mapping (use it as the value of a field)"
        )
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
    """The directive ``node`` is, or None for a plain object; MappingError if neither."""
    directives: list[str] = []
    for key in node:
        if not isinstance(key, str):
            raise site.error(f"an object with string keys, got the key {key!r}")
        if key.startswith("@") and key != _EXCLUDE_WHEN_NULL:
            directives.append(key)
    if not directives:
        return None
    for key in directives:
        if key not in _DIRECTIVES:
            raise site.error(
                f"a known directive ({', '.join(_DIRECTIVES)} or the {_EXCLUDE_WHEN_NULL} "
                f"flag), got the unknown directive {key!r}"
            )
    if len(node) > 1:
        extra = ", ".join(repr(key) for key in node if key != directives[0])
        raise site.error(
            f"a directive object with exactly one key, got {directives[0]!r} "
            f"with the extra keys {extra}"
        )
    return directives[0]


def _constant(value: Any) -> Resolver:
    def resolve(_root: Any) -> Any:
        return value

    return resolve


def _compile_array(node: list[Any], site: _Site) -> Resolver:
    items = tuple(_compile(value, site.child(i)) for i, value in enumerate(node))

    def resolve(root: Any) -> Any:
        return [item(root) for item in items]

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
            return {key: field(root) for key, field in fields}

        return resolve_all

    def resolve_non_null(root: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, field in fields:
            value = field(root)
            if value is not None:
                out[key] = value
        return out

    return resolve_non_null


# --- helpers used while applying ---------------------------------------------------


def _walk(root: Any, steps: Steps) -> Any:
    """The value at ``steps`` under ``root``; None as soon as a step does not fit."""
    value = root
    for key, index in steps:
        if isinstance(value, _OBJECT):
            if key is None:
                return None
            value = value.get(key)
        elif isinstance(value, list) and index is not None and index < len(value):
            value = value[index]
        else:
            return None
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


def _render(value: Any) -> str:
    """How a value reads inside a template."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), skipkeys=True, default=str)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _exists(value: Any) -> bool:
    return value is not None


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


def _parse_jsonpath(path: str, site: _Site) -> Steps:
    shape = "a JSONPath: '$' then steps '.name', ['name'] or [0], e.g. '$.context.traits.email'"
    if not path.startswith("$"):
        raise site.error(f"{shape}; got {_got(path)}, which does not start with '$'")
    steps: list[tuple[str | None, int | None]] = []
    position = 1
    while position < len(path):
        match = _JSONPATH_STEP.match(path, position)
        if match is None:
            raise site.error(f"{shape}; got {_got(path)}, invalid at character {position}")
        name, index, _quote, quoted = match.groups()
        if index is not None:
            if len(index) > _MAX_INDEX_DIGITS:
                raise site.error(f"{shape}; the index at character {position} is too large")
            steps.append((None, int(index)))
        else:
            steps.append((name if name is not None else quoted, None))
        position = match.end()
        if len(steps) > MAX_DEPTH:
            raise site.error(f"{shape}, of at most {MAX_DEPTH} steps; this one has more")
    return tuple(steps)


# --- directives: argument (at ``site``) to resolver ---------------------------------


def _compile_path(arg: Any, site: _Site) -> Resolver:
    if not isinstance(arg, str):
        raise site.error(f"a JSONPath string starting with '$', got {_got(arg)}")
    steps = _parse_jsonpath(arg, site)
    if steps and all(index is None for _, index in steps):
        return _key_path(steps)

    def resolve(root: Any) -> Any:
        return _fresh(_walk(root, steps))

    return resolve


def _key_path(steps: Steps) -> Resolver:
    """A path of object keys only, as one expression: ``.get`` chained, no loop.

    ``(value or {}).get(key)`` is what ``_walk`` does for every falsy value (None, "", 0,
    false, [] and {} all lead to None) and for objects; any other value has no ``get``
    (a string, a number, a non-empty list): then ``_walk`` itself decides, on the rare
    event that has one. The result is copied by ``_fresh`` unless immutable.
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
    for key in keys:
        chain = f"({chain} or _EMPTY).get({key})"
    source = (
        f"def make(steps, {', '.join(keys)}):\n"
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
        "_IMMUTABLE": _IMMUTABLE,
        "_fresh": _fresh,
        "_walk": _walk,
    }
    exec(source, namespace)  # noqa: S102 (the source is built here from argument names)
    make: Callable[..., Resolver] = namespace["make"]
    return make


def _compile_template(arg: Any, site: _Site) -> Resolver:
    shape = "a template string with {{dotted.path}} placeholders"
    if not isinstance(arg, str):
        raise site.error(f"{shape}, got {_got(arg)}")
    literals: list[str] = []
    paths: list[Steps] = []
    position = 0
    while (start := arg.find("{{", position)) >= 0:
        end = arg.find("}}", start + 2)
        if end < 0:
            raise site.error(f"{shape}; the '{{{{' at character {start} is never closed")
        expression = arg[start + 2 : end].strip()
        segments = expression.split(".")
        if expression.startswith("$") or not all(
            _TEMPLATE_SEGMENT.fullmatch(segment) for segment in segments
        ):
            raise site.error(
                f"{shape}; the placeholder at character {start} must be a dotted path from "
                f"the event root such as 'properties.name', got {expression!r}"
            )
        literals.append(arg[position:start])
        if any(s.isdecimal() and len(s) > _MAX_INDEX_DIGITS for s in segments):
            raise site.error(f"{shape}; the index in the placeholder at {start} is too large")
        paths.append(
            tuple((segment, int(segment) if segment.isdecimal() else None) for segment in segments)
        )
        position = end + 2
    if not paths:
        return _constant(arg)
    pieces = tuple(zip(literals, paths, strict=True))
    tail = arg[position:]

    def resolve(root: Any) -> Any:
        out: list[str] = []
        for literal, steps in pieces:
            out.append(literal)
            out.append(_render(_walk(root, steps)))
        out.append(tail)
        return "".join(out)

    return resolve


def _compile_literal(arg: Any, _site: _Site) -> Resolver:
    if not isinstance(arg, Mapping | list):
        return _constant(arg)

    def resolve(_root: Any) -> Any:
        return _fresh(arg)

    return resolve


def _compile_if(arg: Any, site: _Site) -> Resolver:
    args = _arguments(arg, site, "@if", required=(), optional=("exists", "blank", "then", "else"))
    tests = [key for key in ("exists", "blank") if key in args]
    if len(tests) != 1:
        raise site.error(
            "the arguments of @if: exactly one of 'exists' or 'blank', with optional "
            f"'then' and 'else'; got {' and '.join(map(repr, tests)) or 'neither'}"
        )
    test = tests[0]
    holds = _exists if test == "exists" else _is_blank
    subject = _compile(args[test], site.child(test))
    then = _compile(args.get("then"), site.child("then"))
    otherwise = _compile(args.get("else"), site.child("else"))

    def resolve(root: Any) -> Any:
        return then(root) if holds(subject(root)) else otherwise(root)

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
        optional=("replacement", "ignorecase", "global"),
    )
    pattern = args["pattern"]
    if not isinstance(pattern, str) or not pattern:
        raise site.child("pattern").error(f"a non-empty string, got {_got(pattern)}")
    replacement = args.get("replacement", "")
    if not isinstance(replacement, str):
        raise site.child("replacement").error(f"a string, got {_got(replacement)}")
    ignorecase = _boolean(args, "ignorecase", default=False, site=site)
    replace_all = _boolean(args, "global", default=True, site=site)
    value = _compile(args["value"], site.child("value"))

    if ignorecase:
        regex = re.compile(re.escape(pattern), re.IGNORECASE)
        template = replacement.replace("\\", "\\\\")  # a literal re.sub replacement
        count = 0 if replace_all else 1

        def swap(text: str) -> str:
            return regex.sub(template, text, count=count)

    else:
        count = -1 if replace_all else 1

        def swap(text: str) -> str:
            return text.replace(pattern, replacement, count)

    def resolve(root: Any) -> Any:
        text = value(root)
        return swap(text) if isinstance(text, str) else text

    return resolve


def _compile_array_path(arg: Any, site: _Site) -> Resolver:
    if not isinstance(arg, list) or len(arg) not in (1, 2):
        raise site.error(f"an array [source] or [source, shape], got {_got(arg)}")
    source = _compile(arg[0], site.child(0))
    shape = _compile(arg[1], site.child(1)) if len(arg) == 2 else None

    def resolve(root: Any) -> Any:
        items = source(root)
        if isinstance(items, Mapping):
            items = [items]
        elif not isinstance(items, list):
            return None
        return items if shape is None else [shape(item) for item in items]

    return resolve


def _compile_merge(arg: Any, site: _Site) -> Resolver:
    args = _arguments(arg, site, "@merge", required=("objects",), optional=("direction",))
    objects = args["objects"]
    if not isinstance(objects, list) or not objects:
        raise site.child("objects").error(f"a non-empty array of objects, got {_got(objects)}")
    direction = args.get("direction", "right")
    if direction not in ("right", "left"):
        raise site.child("direction").error(f"'right' or 'left', got {_got(direction)}")
    objects_site = site.child("objects")
    parts = tuple(_compile(item, objects_site.child(i)) for i, item in enumerate(objects))
    if direction == "left":  # earlier objects win: apply them last
        parts = parts[::-1]

    def resolve(root: Any) -> Any:
        merged: dict[str, Any] = {}
        for part in parts:
            value = part(root)
            if isinstance(value, Mapping):
                merged.update(value)
        return merged

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
}
"""The directive registry: name to the function compiling its argument."""

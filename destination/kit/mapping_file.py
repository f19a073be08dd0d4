"""Mapping files: read, checked against their destination's schema, and bound.

A mapping file names its destination (``"destination"``), gives settings and lists
subscriptions; each destination adds its own top-level keys (TikTok's ``mode``). It is
read and checked whole before anything else happens: at most ``MAX_DEPTH`` levels deep,
then against the JSON Schema its destination declares. Every problem is a
``MappingError`` naming the file, the JSON pointer and what was expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from destination.errors import MappingError
from destination.kit.action import Action, Subscription, bind_subscription
from destination.kit.destination import MappingFile
from destination.kit.mapping import MAX_DEPTH, check_depth
from destination.kit.schema import DocumentValidator, PayloadValidators

__all__ = ["bind", "read_mapping_file"]

# what counts when finding how deep a text nests: strings (skipped whole) and brackets
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_COMMON_KEYS = frozenset({"$schema", "destination", "settings", "subscriptions"})


def read_mapping_file(
    path: Path,
    schema_of: Callable[[str, str], Mapping[str, Any]],
    *,
    source_schema: Mapping[str, Any] | None = None,
    default_subscriptions: Callable[[str], list[dict[str, Any]]] | None = None,
) -> MappingFile:
    """Read and check a mapping file. ``schema_of(name, source)`` gives the JSON Schema of
    the destination the file names (a ``MappingError`` if there is no such destination).

    A ``source`` object (rows of a warehouse query instead of events) is checked against
    ``source_schema``, not the destination's; a file with one may leave out its
    subscriptions, which are then ``default_subscriptions(name)``."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise MappingError(source, "", "an existing mapping file (no such file)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(source, "", f"a readable UTF-8 file ({exc})") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MappingError(
            source, "", f"valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError:  # too deep for the JSON reader itself (about 1,000 levels)
        raise MappingError(source, "", _too_deep(text)) from None
    check_depth(document, source=source)  # before the schema check, which recurses
    if not isinstance(document, dict):
        raise MappingError(source, "", "a JSON object (a mapping file)")
    name = document.get("destination")
    if not isinstance(name, str):
        raise MappingError(source, "/destination", "the name of a destination (a string)")
    warehouse = document.pop("source", None)
    if warehouse is not None:
        if source_schema is None:
            raise MappingError(source, "/source", "no source key: this command reads events")
        wrapped = {"type": "object", "properties": {"source": source_schema}}
        DocumentValidator(wrapped).check({"source": warehouse}, source=source)
        if "subscriptions" not in document and default_subscriptions is not None:
            document["subscriptions"] = default_subscriptions(name)
    DocumentValidator(schema_of(name, source)).check(document, source=source)
    return MappingFile(
        source=source,
        destination=name,
        settings=dict(document.get("settings", {})),
        subscriptions=list(document["subscriptions"]),
        options={k: v for k, v in document.items() if k not in _COMMON_KEYS},
        warehouse=warehouse,
    )


def _too_deep(text: str) -> str:
    """What a JSON text nested too deeply to parse should be, and where it goes deeper:
    the position of the bracket opening level ``MAX_DEPTH + 1``."""
    depth = 0
    for token in _STRING_OR_BRACKET.finditer(text):
        if token[0] in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, token.start()) + 1
                column = token.start() - text.rfind("\n", 0, token.start())
                return (
                    f"a file nested at most {MAX_DEPTH} levels deep; it goes deeper than "
                    f"{MAX_DEPTH} levels at line {line}, column {column}"
                )
        elif token[0] in "]}":
            depth -= 1
    return f"a file nested at most {MAX_DEPTH} levels deep; it is too deep to read"


def bind(mapping_file: MappingFile, action_for: Callable[[str], Action]) -> list[Subscription]:
    """The enabled subscriptions, compiled; every one is checked, disabled ones too, and
    mapping errors name the file and pointer. ``action_for(key)`` makes the run's action
    of that key. Subscriptions of one action share one payload validator (building one is
    costly; files may hold thousands)."""
    validators = PayloadValidators()
    bound = [
        bind_subscription(
            name=entry["name"],
            action=action_for(entry["action"]),
            subscribe=entry["subscribe"],
            mapping=entry.get("mapping", {}),
            source=mapping_file.source,
            pointer=f"/subscriptions/{index}",
            validators=validators,
        )
        for index, entry in enumerate(mapping_file.subscriptions)
    ]
    return [
        b for b, e in zip(bound, mapping_file.subscriptions, strict=True) if e.get("enabled", True)
    ]

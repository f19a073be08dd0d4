"""The TikTok Audiences destination: its mapping files, checked and bound to actions.

``load_mapping_file`` reads and checks a file (nested at most ``MAX_DEPTH`` levels, then
against ``schemas/mapping-file.schema.json``) before anything else happens; ``bind``
turns its subscriptions into compiled ones whose actions share one run ``Context``;
``template`` derives a complete mapping file for a mode from the field declarations (the
shipped ``mappings/segment-*.json`` are exactly that).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from destination.errors import MappingError
from destination.kit.action import Subscription, bind_subscription
from destination.kit.fields import default_mapping
from destination.kit.mapping import MAX_DEPTH, check_depth
from destination.kit.schema import DocumentValidator, PayloadValidators
from destination.resources import load_schema
from destination.tiktok.actions import Context, build_action
from destination.tiktok.fields import CATALOGUE, Mode

__all__ = ["MappingFile", "bind", "load_mapping_file", "template"]

SCHEMA_FILE = "mapping-file.schema.json"
# what counts when finding how deep a text nests: strings (skipped whole) and brackets
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


@dataclass(frozen=True)
class MappingFile:
    source: str
    mode: Mode
    settings: dict[str, Any]
    subscriptions: list[dict[str, Any]]


def load_mapping_file(path: Path) -> MappingFile:
    """Read and check a mapping file; any problem is a ``MappingError`` naming it."""
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
    DocumentValidator(load_schema(SCHEMA_FILE)).check(document, source=source)
    return MappingFile(
        source=source,
        mode=document["mode"],
        settings=dict(document.get("settings", {})),
        subscriptions=list(document["subscriptions"]),
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


def bind(mapping_file: MappingFile, context: Context) -> list[Subscription]:
    """The enabled subscriptions, compiled; every one is checked, disabled ones too, and
    mapping errors name the file and pointer. Subscriptions of one action share one
    payload validator (building one is costly; files may hold thousands)."""
    validators = PayloadValidators()
    bound = [
        bind_subscription(
            name=entry["name"],
            action=build_action(entry["action"], context),
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


def template(mode: Mode, settings: dict[str, Any]) -> dict[str, Any]:
    """A complete mapping file for ``mode`` with every action's default subscription."""
    return {
        "$schema": f"../schemas/{SCHEMA_FILE}",
        "destination": "tiktok-audiences",
        "mode": mode,
        "settings": settings,
        "subscriptions": [
            {
                "name": info.title,
                "action": info.key,
                "subscribe": info.default_subscribe,
                "enabled": True,
                "mapping": default_mapping(info.fields),
            }
            for info in CATALOGUE.values()
            if info.mode == mode
        ],
    }

"""Field declarations: the one source of an action's payload schema, default mapping and docs.

An action lists its ``Field`` objects once. From that list come:

- ``payload_schema(fields)``: the JSON Schema every mapped payload is validated against;
- ``default_mapping(fields)``: the mapping used for a field the mapping file leaves out;

Nothing here knows about TikTok.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Field", "FieldType", "default_mapping", "payload_schema"]

FieldType = Literal["string", "boolean", "integer", "number", "object", "array"]


@dataclass(frozen=True)
class Field:
    """One input of an action.

    ``default`` is a mapping value (a literal or a directive such as
    ``{"@path": "$.context.traits.email"}``); ``None`` means "not mapped unless the
    mapping file says so". ``personal_data`` marks values that must be hashed before they
    leave the process and must never be logged.
    """

    name: str
    type: FieldType
    description: str
    required: bool = False
    default: Any = None
    personal_data: bool = False
    choices: tuple[str, ...] = ()
    min_length: int | None = None
    max_length: int | None = None


def payload_schema(fields: Sequence[Field], *, title: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a payload mapped for these fields."""
    properties: dict[str, Any] = {}
    for f in fields:
        prop: dict[str, Any] = {"type": f.type, "description": f.description}
        if f.choices:
            prop["enum"] = list(f.choices)
        if f.min_length is not None:
            prop["minLength"] = f.min_length
        if f.max_length is not None:
            prop["maxLength"] = f.max_length
        if f.personal_data:
            prop["x-personal-data"] = True
        properties[f.name] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": properties,
        "required": [f.name for f in fields if f.required],
        "additionalProperties": False,
    }


def default_mapping(fields: Sequence[Field]) -> dict[str, Any]:
    """The mapping each field gets when a mapping file does not mention it."""
    return {f.name: copy.deepcopy(f.default) for f in fields if f.default is not None}

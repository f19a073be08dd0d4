"""Reads NDJSON events one line at a time, never the whole input at once.

Each non-blank line becomes a ``Line``: its 1-based number and either the event (a JSON
object) or why it could not be read. Blank lines are not events and are skipped.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Line", "read_ndjson"]


@dataclass(frozen=True)
class Line:
    number: int
    event: dict[str, Any] | None
    raw: str = ""
    error: str = ""


def read_ndjson(lines: Iterable[bytes]) -> Iterator[Line]:
    for number, chunk in enumerate(lines, start=1):
        data = chunk.removeprefix(codecs.BOM_UTF8) if number == 1 else chunk
        if not data.strip():
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            yield Line(
                number, None, data.decode("utf-8", "replace").rstrip("\r\n"), "not UTF-8 text"
            )
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Line(
                number, None, text.rstrip("\r\n"), f"not valid JSON ({exc.msg}, column {exc.colno})"
            )
            continue
        if not isinstance(value, dict):
            yield Line(
                number, None, text.rstrip("\r\n"), f"not a JSON object (a {type(value).__name__})"
            )
            continue
        yield Line(number, value)

"""Reads NDJSON events one line at a time, never more than one line in memory.

Each non-blank line becomes a ``Line``: its 1-based number and either the event (a JSON
object) or why it could not be read. Blank lines are not events and are skipped. A line
longer than ``max_bytes`` is not parsed (nor held whole in memory): it becomes a line
with an error, and reading goes on at the next line.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

import orjson

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Line",
    "LineStream",
    "RawLine",
    "parse_line",
    "read_lines",
    "read_ndjson",
]

DEFAULT_MAX_BYTES = 1 << 20
_RAW_KEPT = 2000  # characters of an unreadable line kept for the rejected file


class LineStream(Protocol):
    """What the reader reads from: a binary file, or anything with its ``readline``."""

    def readline(self, size: int = -1, /) -> bytes: ...


class RawLine(NamedTuple):
    """A non-blank line as read: its 1-based number and its bytes (line end included),
    not parsed yet."""

    number: int
    data: bytes


class Line(NamedTuple):
    """One input line: ``data`` is its bytes (without the line end; empty for a line too
    long to keep), ``event`` the JSON object in it, or ``error`` why there is none and
    ``raw`` the start of its text. (A named tuple: one is made per event, at half the
    cost of a frozen dataclass.)"""

    number: int
    event: dict[str, Any] | None
    raw: str = ""
    error: str = ""
    data: bytes = b""


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").rstrip("\r\n")[:_RAW_KEPT]


def _why_not_json(data: bytes) -> str:
    """A precise reason for a line orjson refused (slow; rejected lines only).

    orjson is strict where the standard library is lenient (NaN, Infinity, surrogates,
    numbers beyond 64 bits), so its verdict stands and the standard library only words
    it, falling back to orjson's own kind of refusal.
    """
    try:
        json.loads(data.decode("utf-8").rstrip("\r\n"))  # else a column past the end
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg}, column {exc.colno})"
    except RecursionError:
        return "nested too deeply"
    except ValueError:
        return "not valid JSON (a number is too long)"
    return "not valid JSON (NaN, Infinity, a lone surrogate, or a number beyond 64 bits)"


def read_ndjson(stream: LineStream, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[Line]:
    for item in read_lines(stream, max_bytes=max_bytes):
        yield item if isinstance(item, Line) else parse_line(item.number, item.data)


def read_lines(
    stream: LineStream, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[Line | RawLine]:
    """The non-blank lines as ``(number, bytes)`` for ``parse_line``, unparsed; a line too
    long is a ``Line`` with its error already."""
    number = 0
    while True:
        # the first line may start with a byte order mark, which does not count
        data = stream.readline(max_bytes + 1 + (len(codecs.BOM_UTF8) if number == 0 else 0))
        if not data:
            return
        number += 1
        if number == 1:
            data = data.removeprefix(codecs.BOM_UTF8)
        if len(data) - data.endswith(b"\n") > max_bytes:
            size = len(data)
            while data and not data.endswith(b"\n"):  # skip the rest of the long line
                data = stream.readline(1 << 16)
                size += len(data)
            yield Line(number, None, "", f"longer than {max_bytes} bytes ({size} bytes)")
            continue
        if not data.strip():
            continue
        yield RawLine(number, data)


def parse_line(number: int, data: bytes) -> Line:
    """One non-blank line (its line end included or not) as a ``Line``."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Line(number, None, _text(data), _why_not_json(data), data.rstrip(b"\r\n"))
    if not isinstance(value, dict):
        why = f"not a JSON object (a {type(value).__name__})"
        return Line(number, None, _text(data), why, data.rstrip(b"\r\n"))
    return Line(number, value, data=data.rstrip(b"\r\n"))

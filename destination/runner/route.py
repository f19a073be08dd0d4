"""One route per event: an input line in, a ``RoutedLine`` out, wherever it runs.

``route_line`` parses a line, matches the subscriptions and takes each matching one's
pure half of the route (``Subscription.step``: map, drop empties, validate, digest). It
runs in the main process (no workers, or a chunk the workers are behind on) and in the
worker processes alike; the pipeline then takes every ``RoutedLine`` the same way
(``Subscription.place``: count, create audiences, batch).

Between processes, a chunk of routed lines travels as one JSON document made by
``encode_routed`` and read by ``decode_routed``. The lines' bytes stay in the main
process (it read them), so only what the route found travels. Everything in a step
came from JSON or is text, and building objects from JSON (orjson) costs about half
what unpickling them does, on the process that bounds the run.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from destination.kit.action import Rejection, Step, Subscription
from destination.runner.reader import Line, RawLine, parse_line

__all__ = ["RoutedLine", "decode_routed", "encode_routed", "route_line", "unread"]


class RoutedLine(NamedTuple):
    """One input line, routed: its ``number`` and ``data`` (its bytes as read, line end
    included; not the parsed event, which would take ten times the memory while the line
    waits for answers), a ``Step`` per matching subscription in the subscriptions' order
    (none: no subscription matched), and for a line that holds no JSON object, why
    (``error``) and the start of its text (``raw``)."""

    number: int
    data: bytes
    steps: tuple[Step, ...]
    error: str
    raw: str


def unread(line: Line) -> RoutedLine:
    """A line the reader could not hand over (too long): never routed."""
    return RoutedLine(line.number, line.data, (), line.error, line.raw)


def route_line(subscriptions: Sequence[Subscription], number: int, data: bytes) -> RoutedLine:
    """Parse line ``number`` (its bytes, line end or not) and route it to every matching
    subscription: the pure part of the route, the same in every process."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        event = None
    if type(event) is not dict:  # parse_line words why (rare: not parsed twice otherwise)
        line = parse_line(number, data)
        return RoutedLine(number, data, (), line.error, line.raw)
    steps = [s.step(i, event) for i, s in enumerate(subscriptions) if s.condition.matches(event)]
    return RoutedLine(number, data, tuple(steps), "", "")


# The document: [shapes, results]. ``shapes`` lists each distinct tuple of field names
# once; ``results`` has per line {"raw": ..., "error": ...} for a line that holds no JSON
# object, else per step [subscription, shape's index, digest, [reason, message] or null].


def encode_routed(routed: Sequence[RoutedLine]) -> bytes:
    """What the route found for each of ``routed``, as JSON for ``decode_routed`` (the
    lines' numbers and bytes are left out: the reader of the document has them)."""
    # each new shape gets the next index
    shapes: defaultdict[tuple[str, ...], int] = defaultdict(itertools.count().__next__)
    results: list[Any] = []
    for line in routed:
        if line.error:
            results.append({"raw": line.raw, "error": line.error})
            continue
        steps = []
        for index, fields, digest, rejection in line.steps:
            why = None if rejection is None else tuple(rejection)
            steps.append((index, shapes[fields], digest, why))
        results.append(steps)
    return orjson.dumps((list(shapes), results))


def decode_routed(document: bytes, lines: Sequence[RawLine]) -> list[RoutedLine]:
    """The ``RoutedLine``s of ``encode_routed``'s ``document``, given the lines it was
    made from as ``read_lines`` gives them (number and bytes), in the same order."""
    shape_lists, results = orjson.loads(document)
    shapes = [tuple(names) for names in shape_lists]  # one tuple per shape, shared
    routed: list[RoutedLine] = []
    for (number, data), result in zip(lines, results, strict=True):
        if type(result) is dict:
            routed.append(RoutedLine(number, data, (), result["error"], result["raw"]))
            continue
        steps = []
        for index, shape, digest, why in result:
            rejection = None if why is None else Rejection(*why)
            steps.append(Step(index, shapes[shape], digest, rejection))
        routed.append(RoutedLine(number, data, tuple(steps), "", ""))
    return routed

"""The compiled route: a run's subscriptions as one DuckDB query over the input's lines.

``compile_route`` asks each subscription for its SQL (``Subscription.compile``: the
kit's condition and payload, the destination's digest) and joins them into one query;
``NotCompiled`` says why a run cannot take this route. ``CompiledRoute.routed`` then
gives the same ``RoutedLine`` for every line that ``runner.route.route_line`` would,
in input order, for the pipeline to take as it takes any other:

- a thread of its own reads the lines with the reader's rules (numbers, blank lines, the
  byte order mark, ``max_event_bytes``) and runs the query on each chunk of
  ``CHUNK_LINES`` of them, an in-memory Arrow table of their text, while the pipeline
  places and sends in the main thread (at most ``_AHEAD`` answered chunks wait for it);
- the query parses each line once per kind of question (the JSON types of the paths
  read, their texts, the keys of the objects on the way), matches the subscriptions,
  maps, checks and hashes, and answers per line either its routed steps as JSON text or
  nothing: the Python route then routes that line itself (a line that is no JSON object,
  one DuckDB's JSON reader would read otherwise than orjson, a value the compiled rules
  leave to Python: ``kit.sql``); a digest's ``finish`` completes what the destination
  left to Python (TikTok: phones).

One query per chunk, not one streamed over the whole input: streamed from Python, DuckDB
read 100k+ lines ahead of its answers, and a chunk bounds the memory (it grows with
``CHUNK_LINES``) at the price of planning the query again (~10 ms: the query is a view
bound once per run, but DuckDB optimizes it for every chunk). The route gives the
Python route's results but is slower than it today (``benchmarks/RESULTS.md``), so
``route: "auto"`` does not take it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import NamedTuple

import orjson

from destination.errors import DestinationError
from destination.kit.action import CompiledStep, Step, Subscription
from destination.kit.sql import NotCompiled, Scope, sql_string
from destination.runner.reader import Line, LineStream, read_lines
from destination.runner.route import RoutedLine, route_line, unread

__all__ = ["BATCH_LINES", "CHUNK_LINES", "CompiledRoute", "compile_route"]

log = logging.getLogger(__name__)

CHUNK_LINES = 4096  # lines per query: DuckDB plans each (~10 ms); memory grows with it
CHUNK_BYTES = 8 << 20  # ... and at most this much text per query
LONG_LINE = 64 << 10  # a longer line takes the Python route (DuckDB's JSON functions
# hold several times a line's size: a few 1 MiB lines in one chunk ran it out of memory)
BATCH_LINES = 2048  # lines per Arrow batch of a chunk: DuckDB's threads share them
# DuckDB's threads: a second one made the route 4% faster for 13% more CPU and 20 MB
THREADS = 1
MEMORY_LIMIT = "96MB"  # DuckDB's own limit (what it holds besides is not counted)
SWITCH_SECONDS = 0.0005  # the GIL's switch interval while the route runs
_AHEAD = 1  # answered chunks waiting for the pipeline, at most

# Lines DuckDB's JSON reader takes where orjson refuses them (NaN, Infinity, trailing
# commas, exponents that overflow, numbers too long), read by the Python route, which
# words the refusal: each pattern may also match inside a string (rare), which costs
# only the Python route for that line.
_VALUE = r"\s*-?(?:[nN][aA]|[iI][nN]|[0-9][0-9.]*[eE][-+]?[0-9]{3}|[0-9]{200})"
_LENIENT = (  # each starts with a character RE2 looks for first: a fifth of one pattern's time
    ":" + _VALUE,
    "," + _VALUE,
    r"\[" + _VALUE,
    r",\s*[}\]]",
)
_MAX_NESTING = 1000  # orjson refuses more than 1024 levels: longer lines are counted


class _Batch(NamedTuple):
    """Lines read, in order (a ``Line`` for one too long to route), and per line sent to
    DuckDB, its answer (``None``: the Python route)."""

    lines: list[Line | tuple[int, bytes]]
    answers: list[str | None]


class CompiledRoute:
    """A compiled run: ``routed`` routes a stream of lines through one DuckDB query."""

    def __init__(
        self, subscriptions: Sequence[Subscription], query: str, steps: Sequence[CompiledStep]
    ) -> None:
        self._subscriptions = subscriptions
        self._query = query
        self._finishes = [step.finish for step in steps]
        self._shapes: dict[str, tuple[str, ...]] = {"": ()}

    def routed(
        self,
        stream: LineStream,
        *,
        max_bytes: int,
        skip: Callable[[int], bool],
    ) -> Generator[RoutedLine, None, None]:
        """Every line of ``stream`` routed, in input order, but those ``skip`` names."""
        batches: queue.Queue[_Batch | BaseException | None] = queue.Queue(_AHEAD)
        stop = threading.Event()
        runner = threading.Thread(
            target=functools.partial(
                self._run, stream, batches, stop, max_bytes=max_bytes, skip=skip
            ),
            name="compiled-route",
            daemon=True,
        )
        # the route's thread reads lines in Python between queries; at the default switch
        # interval (5 ms) it waited that long for the GIL, the pipeline holding it
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_SECONDS)
        runner.start()
        try:
            while (batch := batches.get()) is not None:
                if isinstance(batch, BaseException):
                    raise batch
                yield from self._lines(batch)
        finally:
            stop.set()
            with contextlib.suppress(queue.Empty):
                while True:  # let the thread see the stop if it waits to put a batch
                    batches.get_nowait()
            runner.join()
            sys.setswitchinterval(switch_interval)

    def _lines(self, batch: _Batch) -> Iterator[RoutedLine]:
        answers = iter(batch.answers)
        subscriptions, finishes, shapes = self._subscriptions, self._finishes, self._shapes
        loads = orjson.loads
        for item in batch.lines:
            if isinstance(item, Line):
                yield unread(item)
                continue
            number, data = item
            answer = next(answers)
            if answer is None:
                yield route_line(subscriptions, number, data)
                continue
            steps = []
            for index, shape, digest in loads(answer):
                fields = shapes.get(shape)
                if fields is None:
                    fields = shapes[shape] = tuple(shape.split(","))
                finish = finishes[index]
                steps.append(
                    Step(index, fields, digest if finish is None else finish(digest), None)
                )
            yield RoutedLine(number, data, tuple(steps), "", "")

    def _run(
        self,
        stream: LineStream,
        batches: queue.Queue[_Batch | BaseException | None],
        stop: threading.Event,
        *,
        max_bytes: int,
        skip: Callable[[int], bool],
    ) -> None:
        """The thread: read, query, hand over answered batches in order."""
        import duckdb  # noqa: PLC0415 (a run on the Python route does not load DuckDB)
        import pyarrow as pa  # noqa: PLC0415

        try:
            with duckdb.connect(config={"threads": THREADS, "memory_limit": MEMORY_LIMIT}) as db:
                # a view bound once: preparing the query text again for every chunk held
                # the GIL ~15 ms (DuckDB 2.0 parses and binds it in Python)
                db.register("input_lines", pa.table({"number": [0], "line": [""]}))
                db.execute(f"CREATE TEMP VIEW routed_lines AS {self._query}")
                db.unregister("input_lines")
                for lines, numbers, texts in _chunks(stream, max_bytes, skip, stop):
                    answers: list[str | None] = []
                    if numbers:
                        table = pa.Table.from_batches(
                            pa.table({"number": numbers, "line": texts}).to_batches(BATCH_LINES)
                        )
                        db.register("input_lines", table)
                        result = db.sql("SELECT number, routed FROM routed_lines").to_arrow_table()
                        db.unregister("input_lines")
                        if result.column("number").to_pylist() != numbers:  # never seen
                            raise AssertionError("the compiled route's answers came out of order")
                        answers = result.column("routed").to_pylist()
                    if not _put(batches, _Batch(lines, answers), stop):
                        return
            _put(batches, None, stop)
        except duckdb.Error as exc:  # its messages may quote the input: only the kind
            failed = DestinationError(
                f"the compiled route's query failed in DuckDB ({type(exc).__name__}); "
                'route "python" routes the same input without it'
            )
            _put(batches, failed, stop)
        except BaseException as exc:  # handed to the pipeline's thread, which raises it
            _put(batches, exc, stop)


def _chunks(
    stream: LineStream, max_bytes: int, skip: Callable[[int], bool], stop: threading.Event
) -> Iterator[tuple[list[Line | tuple[int, bytes]], list[int], list[str | None]]]:
    """The lines of ``stream`` in chunks of ``CHUNK_LINES`` lines or ``CHUNK_BYTES`` of
    text to route (those ``skip`` names left out): as read, and the numbers and texts of
    those that go to DuckDB (a line that is not UTF-8 or longer than ``LONG_LINE`` goes
    as NULL: the Python route routes it)."""
    lines: list[Line | tuple[int, bytes]] = []
    numbers: list[int] = []
    texts: list[str | None] = []
    size = 0
    for item in read_lines(stream, max_bytes=max_bytes):
        if stop.is_set():
            return
        if isinstance(item, Line):  # too long: never parsed
            if not skip(item.number):
                lines.append(item)
            continue
        number, data = item
        if skip(number):
            continue
        lines.append((number, data))
        numbers.append(number)
        text = None
        if len(data) <= LONG_LINE:
            with contextlib.suppress(UnicodeDecodeError):
                text = data.decode()
                size += len(data)
        texts.append(text)
        if len(numbers) >= CHUNK_LINES or size >= CHUNK_BYTES:
            yield lines, numbers, texts
            lines, numbers, texts, size = [], [], [], 0
    if lines:
        yield lines, numbers, texts


def _put(
    batches: queue.Queue[_Batch | BaseException | None],
    item: _Batch | BaseException | None,
    stop: threading.Event,
) -> bool:
    """Hand ``item`` over, waiting for room; False once the reader stopped listening."""
    while not stop.is_set():
        with contextlib.suppress(queue.Full):
            batches.put(item, timeout=0.1)
            return True
    return False


def compile_route(subscriptions: Sequence[Subscription]) -> CompiledRoute:
    """The query routing every line through ``subscriptions``; ``NotCompiled`` (why)
    when one of them is beyond the compiled route, ``ConfigurationError`` for a setting
    the destination refuses (as the Python route would on the first event)."""
    if not subscriptions:
        raise NotCompiled("a run without subscriptions")
    scope = Scope()
    steps = [s.compile(scope) for s in subscriptions]
    unsure = " OR ".join(f"({step.matches} AND ({step.unsure}))" for step in steps)
    entries = ", ".join(
        f"CASE WHEN {step.matches} "
        f"THEN concat('[{i},\"', {step.shape}, '\",', {step.digest}, ']') END"
        for i, step in enumerate(steps)
    )
    listed = scope.paths()
    lenient = " OR ".join(f"regexp_matches(line, {sql_string(p)})" for p in _LENIENT)
    kinds = f"TRY(json_type(line, {_list(['$', *listed])}))"
    texts = f"json_extract_string(line, {_list(listed)})" if listed else "NULL::VARCHAR[]"
    objects = _list(scope.objects() or ["$"])
    bound = scope.layers()
    layers = "".join(
        f"), layer_{level} AS (\n  SELECT *,\n    {_columns(layer)}\n  FROM layer_{level - 1}\n"  # noqa: S608
        for level, layer in enumerate(bound, 1)
    )
    # every text in it is a literal made by ``sql_string``
    query = f"""
WITH parsed AS (
  SELECT number, line,
    CASE WHEN line IS NULL OR {lenient} OR contains(line, chr(0))
           OR (length(line) > {2 * _MAX_NESTING}
               AND length(line) - length(replace(replace(line, '[', ''), '{{', ''))
                   > {_MAX_NESTING})
         THEN NULL
         ELSE {kinds} END AS kinds
  FROM input_lines
), layer_0 AS (
  SELECT number, kinds[1] AS root, kinds,
    CASE WHEN kinds[1] = 'OBJECT' THEN {texts} END AS texts,
    CASE WHEN kinds[1] = 'OBJECT' THEN
      list_bool_or(list_transform(json_keys(line, {objects}),
                                  lambda k: len(k) <> len(list_distinct(k))))
    END AS twice
  FROM parsed
{layers})
SELECT number,
  CASE WHEN root IS DISTINCT FROM 'OBJECT' OR coalesce(twice, FALSE) OR {unsure} THEN NULL
       ELSE concat('[', concat_ws(',', {entries}), ']') END AS routed
FROM layer_{len(bound)}
"""  # noqa: S608
    log.debug("compiled route: %d subscriptions, %d paths", len(steps), len(listed))
    return CompiledRoute(subscriptions, query, steps)


def _columns(layer: Sequence[tuple[str, str]]) -> str:
    return ",\n    ".join(f"{expression} AS {name}" for name, expression in layer)


def _list(items: Sequence[str]) -> str:
    return "[" + ", ".join(sql_string(item) for item in items) + "]"

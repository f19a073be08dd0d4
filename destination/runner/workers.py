"""The pure part of the event route in worker processes (the ``workers`` setting).

The main process reads the input with the reader's rules (line numbers, blank lines,
``max_event_bytes``, the byte order mark), leaves out the lines a resumed run finished
already, and hands the rest to the workers in chunks of raw lines. A worker parses each
line, matches the subscriptions and runs ``Subscription.digest`` (map, drop empties,
validate, normalize and hash the identifiers) for each one that matches. The main
process takes the chunks' results strictly in input order, at most a few chunks ahead
(memory stays flat), and does everything else as without workers: creating audiences,
batching, sending, counting, the output files and the checkpoint. When the workers fall
behind (the oldest chunk not back yet with ``ahead`` chunks out), the main process
routes the next chunk itself rather than wait: with one worker on two cores, the two
processes then share the routing.

A chunk's results travel back as one JSON document (orjson): everything in them came
from JSON or is text, and building the main process's objects from JSON costs about half
what unpickling them does, on the process that bounds the run.

Workers are started fresh (``spawn``), not forked, so no copy of the main process's
memory, and with it the access token, ever reaches them; they compile the subscriptions
from the destination's ``WorkerRecipe`` (the mapping file and the settings, without
the token). A worker that dies ends the
run like a crash (resume with ``--state``); workers of a main process that was killed
end within a second. Starting them costs about 0.3 s each, so workers pay off on large
inputs only. (As with any ``spawn``, a script calling ``run_sync`` with workers needs an
``if __name__ == "__main__":`` guard; the CLI has one.)
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import orjson

from destination.errors import DestinationError
from destination.gc_tuning import FEW_COLLECTIONS
from destination.kit.action import Subscription
from destination.kit.destination import WorkerRecipe
from destination.runner.pipeline import Routed
from destination.runner.reader import Line, LineStream, parse_line, read_lines

__all__ = ["CHUNK_LINES", "init_worker", "route_chunk", "route_lines", "routed_lines"]

CHUNK_LINES = 512
SWITCH_SECONDS = 0.0002  # the GIL's switch interval while workers run (see routed_lines)
START_METHOD = "spawn"

# one line's result from a worker, as JSON: {"raw": text, "error": why} for a line that is
# no JSON object, else per matching subscription [its index, fields as bits, digest,
# [reason, message] or null]
# (a tuple where it was made, a list once it came through JSON: typed as a Sequence)
LineResult = dict[str, str] | list[Sequence[Any]]

_subscriptions: list[Subscription] = []  # in a worker: compiled by init_worker


def init_worker(recipe: WorkerRecipe) -> None:
    """Compile the subscriptions in a worker process, from the destination's recipe
    (which never holds a secret)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    gc.set_threshold(*FEW_COLLECTIONS)  # for good: this process only routes events
    _exit_with_parent(os.getppid())
    _subscriptions[:] = recipe.subscriptions()


def _exit_with_parent(parent: int) -> None:
    """End this worker when the main process is gone (killed: it cannot stop the pool),
    instead of it waiting for work forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def route_chunk(chunk: Sequence[tuple[int, bytes]]) -> bytes:
    """Parse, match and digest a chunk of raw lines (in a worker process): a JSON array
    with a ``LineResult`` per line."""
    return orjson.dumps(route_lines(_subscriptions, chunk))


def route_lines(
    subscriptions: Sequence[Subscription], chunk: Sequence[tuple[int, bytes]]
) -> list[LineResult]:
    """Parse, match and digest a chunk of raw lines (what ``route_chunk`` does, before the
    JSON), wherever it runs: a ``LineResult`` per line."""
    results: list[LineResult] = []
    for number, data in chunk:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            event = None
        if type(event) is not dict:  # parse_line words why (rare: no Line otherwise)
            line = parse_line(number, data)
            results.append({"raw": line.raw, "error": line.error})
            continue
        results.append(
            [
                (index, *subscription.digest(event))
                for index, subscription in enumerate(subscriptions)
                if subscription.condition.matches(event)
            ]
        )
    return results


def routed_lines(
    stream: LineStream,
    *,
    max_bytes: int,
    workers: int,
    recipe: WorkerRecipe,
    subscriptions: Sequence[Subscription],
    skip: Callable[[int], bool],
) -> Generator[Routed, None, None]:
    """The input's lines, routed by ``workers`` processes, in input order.

    ``subscriptions`` are the main process's (the same list the workers compile);
    lines for which ``skip(number)`` holds are neither sent nor yielded.
    """
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(START_METHOD),
        initializer=init_worker,
        initargs=(recipe,),
    )
    # The pool's threads move chunks through pipes, giving up the GIL at every write and
    # read; at the default interval (5 ms) each took that long to get it back from a main
    # thread busy routing, and the workers sat idle.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_SECONDS)
    ahead = 2 * workers + 2
    # per chunk in flight, in input order: its worker's answer to come, or its results
    # routed here
    pending: deque[tuple[list[Line | tuple[int, bytes]], Future[bytes] | list[LineResult]]]
    pending = deque()

    def ready() -> bool:
        answer = pending[0][1]
        return isinstance(answer, list) or answer.done()

    def submit(chunk: list[Line | tuple[int, bytes]]) -> None:
        raw = [item for item in chunk if not isinstance(item, Line)]
        if len(pending) >= ahead and not ready():
            # The workers are behind: route this chunk here rather than wait for them (the
            # same digests: the same subscriptions, compiled the same way).
            pending.append((chunk, route_lines(subscriptions, raw)))
        else:
            pending.append((chunk, pool.submit(route_chunk, raw)))

    def results() -> Iterator[Routed]:
        chunk, answer = pending.popleft()
        routed: list[LineResult] = (
            answer if isinstance(answer, list) else orjson.loads(answer.result())
        )
        answers = iter(routed)
        for item in chunk:
            if isinstance(item, Line):  # too long: never sent
                yield item, None
                continue
            number, data = item
            result = next(answers)
            if isinstance(result, dict):
                yield Line(number, None, result["raw"], result["error"], data.rstrip(b"\r\n")), None
                continue
            yield (
                Line(number, None, data=data.rstrip(b"\r\n")),
                [(subscriptions[i], mask, digest, err) for i, mask, digest, err in result],
            )

    try:
        chunk: list[Line | tuple[int, bytes]] = []
        for item in read_lines(stream, max_bytes=max_bytes):
            if skip(item.number if isinstance(item, Line) else item[0]):
                continue  # finished by the run this one resumes
            chunk.append(item)
            if len(chunk) >= CHUNK_LINES:
                submit(chunk)
                chunk = []
                # the oldest chunk's results once ready; at twice ``ahead`` in flight, wait
                while len(pending) >= 2 * ahead or (len(pending) >= ahead and ready()):
                    yield from results()
        if chunk:
            submit(chunk)
        while pending:
            yield from results()
    except BrokenProcessPool as exc:
        raise DestinationError(
            "a worker process ended unexpectedly (killed, or out of memory?): rerun "
            "(with --state DIR, the run resumes where it stopped)"
        ) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        sys.setswitchinterval(switch_interval)

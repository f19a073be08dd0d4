"""The input's lines, routed: in the main process, or in worker processes (``workers``).

``routed`` is the runner's one way to route: it reads the input with the reader's rules
(line numbers, blank lines, ``max_event_bytes``, the byte order mark), leaves out the
lines a resumed run finished already, and gives every other line as a ``RoutedLine``
(``runner.route``), in input order. With ``workers`` 0 it routes each line as it reads
it. Otherwise it hands the lines to the workers in chunks; a worker runs the same
``route_line`` on each and sends the chunk back through ``encode_routed`` /
``decode_routed``. At most a few chunks are out at once (memory stays flat). When the
workers fall behind (the oldest chunk not back yet with ``ahead`` chunks out), the main
process routes the next chunk itself rather than wait: with one worker on two cores,
the two processes then share the routing. Either way the pipeline does the rest in the
main process: creating audiences, batching, sending, counting, the output files and the
checkpoint.

Workers are started fresh (``spawn``), not forked, so no copy of the main process's
memory, and with it the access token, ever reaches them; they compile the subscriptions
from the destination's ``WorkerRecipe``, which holds no secret. A worker that dies ends
the run like a crash (resume with ``--state``); workers of a main process that was killed
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
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

from destination.errors import DestinationError
from destination.gc_tuning import FEW_COLLECTIONS
from destination.kit.action import Subscription
from destination.kit.destination import WorkerRecipe
from destination.runner.reader import Line, LineStream, RawLine, read_lines
from destination.runner.route import RoutedLine, decode_routed, encode_routed, route_line, unread

__all__ = ["CHUNK_LINES", "init_worker", "route_chunk", "route_lines", "routed"]

CHUNK_LINES = 512
SWITCH_SECONDS = 0.0002  # the GIL's switch interval while workers run (see _routed_by)
START_METHOD = "spawn"

_subscriptions: list[Subscription] = []  # in a worker: compiled by init_worker


def init_worker(recipe: WorkerRecipe) -> None:
    """Compile the subscriptions in a worker process, from the destination's recipe
    (which never holds a secret), then make the process a worker. In that order: a
    recipe the destination refuses leaves the process as it was."""
    subscriptions = recipe.subscriptions()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    gc.set_threshold(*FEW_COLLECTIONS)  # for good: this process only routes events
    _exit_with_parent(os.getppid())
    _subscriptions[:] = subscriptions


def _exit_with_parent(parent: int) -> None:
    """End this worker when the main process is gone (killed: it cannot stop the pool),
    instead of it waiting for work forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def route_chunk(chunk: Sequence[RawLine]) -> bytes:
    """Route a chunk of raw lines in a worker process: ``encode_routed``'s document."""
    return encode_routed(route_lines(_subscriptions, chunk))


def route_lines(
    subscriptions: Sequence[Subscription], chunk: Sequence[RawLine]
) -> list[RoutedLine]:
    """Route a chunk of raw lines (``read_lines``' numbers and bytes), wherever it runs."""
    return [route_line(subscriptions, number, data) for number, data in chunk]


def routed(
    stream: LineStream,
    *,
    max_bytes: int,
    workers: int,
    recipe: WorkerRecipe,
    subscriptions: Sequence[Subscription],
    skip: Callable[[int], bool],
) -> Generator[RoutedLine, None, None]:
    """Every line of ``stream`` routed, in input order: here when ``workers`` is 0,
    else mostly by ``workers`` processes built from ``recipe``.

    ``subscriptions`` are the main process's (those ``recipe`` gives, in the same order);
    lines for which ``skip(number)`` holds are neither routed nor yielded. Close the
    generator when done with it (the worker processes stop then).
    """
    lines = read_lines(stream, max_bytes=max_bytes)
    if workers <= 0:
        return _routed_here(lines, subscriptions, skip)
    return _routed_by(workers, lines, recipe, subscriptions, skip)


def _routed_here(
    lines: Iterable[Line | RawLine],
    subscriptions: Sequence[Subscription],
    skip: Callable[[int], bool],
) -> Generator[RoutedLine, None, None]:
    for item in lines:
        if isinstance(item, Line):  # too long: never parsed
            if not skip(item.number):
                yield unread(item)
            continue
        number, data = item
        if not skip(number):
            yield route_line(subscriptions, number, data)


class _Chunk(NamedTuple):
    """Lines out for routing: as read (a ``Line`` for one too long to route), those
    routed (``raw``), and how they come back (a worker's document, or routed here)."""

    lines: list[Line | RawLine]
    raw: list[RawLine]
    answer: Future[bytes] | list[RoutedLine]


def _routed_by(
    workers: int,
    lines: Iterable[Line | RawLine],
    recipe: WorkerRecipe,
    subscriptions: Sequence[Subscription],
    skip: Callable[[int], bool],
) -> Generator[RoutedLine, None, None]:
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
    pending: deque[_Chunk] = deque()  # in input order

    def ready() -> bool:
        answer = pending[0].answer
        return isinstance(answer, list) or answer.done()

    def submit(chunk: list[Line | RawLine]) -> None:
        raw = [item for item in chunk if not isinstance(item, Line)]
        if len(pending) >= ahead and not ready():
            # The workers are behind: route this chunk here rather than wait for them (the
            # same route: the same subscriptions, compiled the same way).
            pending.append(_Chunk(chunk, raw, route_lines(subscriptions, raw)))
        else:
            pending.append(_Chunk(chunk, raw, pool.submit(route_chunk, raw)))

    def results() -> Iterator[RoutedLine]:
        oldest = pending.popleft()
        answer = oldest.answer
        answers = iter(
            answer if isinstance(answer, list) else decode_routed(answer.result(), oldest.raw)
        )
        for item in oldest.lines:
            yield unread(item) if isinstance(item, Line) else next(answers)

    try:
        chunk: list[Line | RawLine] = []
        for item in lines:
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

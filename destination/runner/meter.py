"""Progress of a long run: how far the input is read, how many events are finished.

A thread samples the run every ``interval`` seconds, so the event route pays nothing for
it: the input's position is read from its file descriptor (or a warehouse source's
``progress()``: changes read of the plan's) and the count from the
pipeline's tally (one integer, written by the main thread only). What is done with a
sample is the caller's: the CLI draws a progress bar on a terminal (``TerminalBar``)
or, with ``-v``, logs a line now and then (``LogLines``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Never, Protocol

from tqdm import tqdm

__all__ = ["LogLines", "Sample", "Show", "TerminalBar", "watching"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One look at a run: input bytes read (of ``total_bytes``, when the size is known),
    events finished, and seconds since the run began reading."""

    bytes_read: int
    total_bytes: int | None
    events: int
    seconds: float
    unit: str = "B"  # what ``bytes_read`` counts: bytes, or a source's own ("changes")

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left, from the share of the input read so far (None if unknown)."""
        if not self.total_bytes or not self.bytes_read or self.seconds <= 0:
            return None
        left = max(0, self.total_bytes - self.bytes_read)
        return left * self.seconds / self.bytes_read


class Show(Protocol):
    """Takes the samples of a run, then its end."""

    def sample(self, sample: Sample) -> None: ...

    def close(self) -> None: ...


@contextlib.contextmanager
def watching(
    show: Show | None,
    *,
    stream: IO[bytes] | object,
    events: Callable[[], int],
    interval: float,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[None]:
    """Sample the run in a thread while the body runs; a last sample at its end."""
    if show is None:
        yield
        return
    read_so_far = _reading(stream)
    unit = str(getattr(stream, "unit", "B"))
    start = clock()
    stop = threading.Event()

    def take() -> None:
        read, total = read_so_far()
        show.sample(Sample(read, total, events(), clock() - start, unit))

    def loop() -> None:
        while not stop.wait(interval):
            take()

    thread = threading.Thread(target=loop, name="progress", daemon=True)
    thread.start()
    try:
        yield
        take()
    finally:
        stop.set()
        thread.join()
        show.close()


def _reading(stream: object) -> Callable[[], tuple[int, int | None]]:
    """How much of the input was read, of how much: a stream's ``progress()`` when it has
    one (a warehouse source counts changes), else its file position and size."""
    progress: Callable[[], tuple[int, int | None]] | None = getattr(stream, "progress", None)
    if progress is not None:
        return progress
    fd, total = _position_of(stream)

    def position() -> tuple[int, int | None]:
        if fd is None:
            return 0, total
        with contextlib.suppress(OSError):
            return os.lseek(fd, 0, os.SEEK_CUR), total
        return 0, total

    return position


def _position_of(stream: object) -> tuple[int | None, int | None]:
    """The stream's file descriptor and size, when it is a regular file."""
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        info = os.fstat(fd)
        os.lseek(fd, 0, os.SEEK_CUR)
    except (AttributeError, OSError, ValueError):
        return None, None
    return fd, info.st_size if info.st_size > 0 else None


class TerminalBar:
    """A progress bar on a terminal (tqdm): share of the input read, events, rate, ETA."""

    def __init__(self, out: IO[str]) -> None:
        self._bar: tqdm[Never] | None = None
        self._out = out

    def sample(self, sample: Sample) -> None:
        bar = self._bar
        if bar is None:
            bar = self._bar = tqdm(
                total=sample.total_bytes,
                unit=sample.unit if sample.unit == "B" else f" {sample.unit}",
                unit_scale=sample.unit == "B",
                file=self._out,
                dynamic_ncols=True,
                leave=False,
                desc="sync",
            )
        bar.update(sample.bytes_read - bar.n)
        bar.set_postfix_str(
            f"{sample.events:,} events, {sample.events_per_second:,.0f}/s", refresh=True
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class LogLines:
    """A log line per sample (``-v`` without a terminal): read share, events, rate, ETA."""

    def sample(self, sample: Sample) -> None:
        read = ""
        if sample.total_bytes:
            read = f"{100 * sample.bytes_read / sample.total_bytes:.0f}% read, "
        eta = sample.eta_seconds
        left = "" if eta is None else f", about {_duration(eta)} left"
        log.info(
            "progress: %s%s events finished (%s/s)%s",
            read,
            f"{sample.events:,}",
            f"{sample.events_per_second:,.0f}",
            left,
        )

    def close(self) -> None:
        """Nothing to close: lines were logged as they came."""


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"

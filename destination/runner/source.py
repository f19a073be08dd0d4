"""Where events come from: a ``Source`` hands the runner lines with stable numbers.

A line's number is its position: checkpoints record which numbers are finished and the
rejected file names them, so a source must number the same input the same way every
time. ``NdjsonSource`` reads an NDJSON file or standard input; a warehouse query
(``destination.warehouse``) is the other kind. A source also says what identifies its
input for a checkpoint, which files it reads (no output may be one of them), how large
it is, when that is known, and whether it listens to what happens to its lines.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

from destination.errors import ConfigurationError, InputError
from destination.runner.checkpoint import fingerprint
from destination.runner.pipeline import Listener
from destination.runner.prefix import InputPrefix, PrefixReader

__all__ = ["NdjsonSource", "Opened", "Source"]


class Opened(Protocol):
    """An open source: its lines (``readline``), and what a checkpoint records of it."""

    def readline(self, size: int = -1, /) -> bytes: ...

    def position(self) -> dict[str, Any] | None:
        """What identifies the input read so far (None: ``fingerprint`` says it all)."""
        ...

    @property
    def raw(self) -> object:
        """The underlying stream (its file position shows progress)."""
        ...


class Source(Protocol):
    def fingerprint(self, mapping: Path) -> dict[str, Any]:
        """What a checkpoint of this input and mapping file belongs to."""
        ...

    def paths(self) -> Mapping[str, Path]:
        """The files it reads, named for messages."""
        ...

    def size(self) -> int | None:
        """Its size in bytes, when known before reading."""
        ...

    def open(
        self, *, resume: dict[str, Any] | None, hold_from_line: int, where: str
    ) -> contextlib.AbstractContextManager[Opened]:
        """Open it. ``resume`` is None on a first run; when resuming, what ``position``
        gave the checkpoint (empty if it gave nothing). ``hold_from_line`` is the first line
        the checkpoint did not finish, ``where`` the state directory (for messages)."""
        ...

    def listener(self) -> Listener | None:
        """What hears of each finished line and answered batch, if anything does."""
        ...


class _Plain:
    """A file's lines as they are: its fingerprint identifies it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.readline = stream.readline

    def position(self) -> dict[str, Any] | None:
        return None

    @property
    def raw(self) -> object:
        return self._stream


class _Digested:
    """Standard input through a ``PrefixReader``: what was read is its identity."""

    def __init__(self, stream: IO[bytes], reader: PrefixReader) -> None:
        self._stream = stream
        self._reader = reader
        self.readline = reader.readline

    def position(self) -> dict[str, Any] | None:
        read = self._reader.read_so_far()
        return {"size": read.size, "sha256": read.sha256}

    @property
    def raw(self) -> object:
        return self._stream


class NdjsonSource:
    """NDJSON events from a file, or from standard input (``events == "-"``).

    Standard input is identified by what was read of it (``runner.prefix``): only when a
    checkpoint is kept (``digest``), since hashing every byte is work a run without one
    does not need.
    """

    def __init__(self, events: str, *, stdin: IO[bytes] | None = None, digest: bool = False):
        self._events = events
        self._stdin = stdin
        self._digest = digest

    def fingerprint(self, mapping: Path) -> dict[str, Any]:
        if self._events != "-" and not Path(self._events).is_file():
            raise InputError(f"events file {self._events} does not exist")
        return fingerprint(self._events, mapping)

    def paths(self) -> Mapping[str, Path]:
        if self._events != "-":
            return {"--events": Path(self._events)}
        # what standard input is on the file system, if anything
        with contextlib.suppress(OSError, ValueError, AttributeError):
            return {"standard input": Path(f"/proc/self/fd/{self._stdin_stream().fileno()}")}
        return {}

    def size(self) -> int | None:
        if self._events == "-":
            return None
        try:
            return os.stat(self._events).st_size
        except OSError:
            return None

    def listener(self) -> Listener | None:
        return None  # what was delivered is counted and written by the runner alone

    def _stdin_stream(self) -> IO[bytes]:
        return self._stdin if self._stdin is not None else sys.stdin.buffer

    @contextlib.contextmanager
    def open(
        self, *, resume: dict[str, Any] | None, hold_from_line: int, where: str
    ) -> Iterator[Opened]:
        if self._events == "-":
            stream = self._stdin_stream()
            if not self._digest:
                yield _Plain(stream)
                return
            expected = None
            if resume is not None:  # a resumed run: the checkpoint recorded what was read
                if not resume:
                    raise _missing_position(where)
                expected = InputPrefix(int(resume["size"]), str(resume["sha256"]))
            reader = PrefixReader(
                stream, expected=expected, hold_from_line=hold_from_line, where=where
            )
            yield _Digested(stream, reader)
            return
        try:
            handle = open(self._events, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError as exc:
            raise InputError(f"events file {self._events} does not exist") from exc
        except OSError as exc:
            raise InputError(f"cannot read events file {self._events}: {exc.strerror}") from exc
        with handle:
            yield _Plain(handle)


def _missing_position(where: str) -> ConfigurationError:
    """A checkpoint of standard input that does not record what was read of it."""
    return ConfigurationError(
        f"the checkpoint in {where} does not record what was read from standard input (an "
        "older version wrote it), so this input cannot be checked against it; use another "
        "--state directory to start over"
    )

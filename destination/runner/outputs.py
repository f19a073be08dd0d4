"""The run's output files: the rejected file and the retry file, one JSON line each.

**Rejected file**: one line per event that will not be delivered as it is: its line
number, a short ``reason`` code, a ``message`` (never with tokens or quoted personal
data) and the original ``event`` (or the ``raw`` text of a line that was not a JSON
object), so the events can be fixed and fed to ``sync`` again.

**Retry file**: the events that could not be delivered because TikTok stayed
unavailable, as plain NDJSON input lines: ``sync --events`` takes the file as it is.

Both hold personal data from the input, so they are created readable by their owner
only. On a resumed run they are cut back to the length the checkpoint recorded and
written on from there, so no line is written twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

import orjson

from destination.errors import ConfigurationError
from destination.runner.reader import Line

__all__ = ["OutputFile", "rejected_record"]


class OutputFile:
    """An append-only NDJSON file (or nothing, when ``path`` is None)."""

    def __init__(self, path: Path | None, *, what: str) -> None:
        self.path = path
        self._what = what
        self._handle: IO[bytes] | None = None

    def open(self, *, resume_at: int | None) -> None:
        """Create (or, when resuming, cut back to ``resume_at`` bytes and reopen) the file."""
        if self.path is None:
            return
        try:
            flags = os.O_WRONLY | os.O_CREAT | (0 if resume_at is not None else os.O_TRUNC)
            fd = os.open(self.path, flags, 0o600)
            os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
            if resume_at is not None:
                os.ftruncate(fd, resume_at)
                os.lseek(fd, resume_at, os.SEEK_SET)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write the {self._what} {self.path}: {exc.strerror}"
            ) from exc
        self._handle = os.fdopen(fd, "wb")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def write(self, record: dict[str, Any]) -> None:
        if self._handle is not None:
            try:
                text = orjson.dumps(record)
            except TypeError:  # a value orjson will not write (a lone surrogate): escape it
                text = json.dumps(record, separators=(",", ":")).encode("ascii")
            self._handle.write(text + b"\n")

    def write_line(self, data: bytes) -> None:
        """Write an input line back as it was read."""
        if self._handle is not None:
            self._handle.write(data + b"\n")

    def durable_length(self) -> int:
        """Flush to disk and return the file's length (0 when there is no file)."""
        if self._handle is None:
            return 0
        self._handle.flush()
        os.fsync(self._handle.fileno())
        return self._handle.tell()


def rejected_record(line: Line, reason: str, message: str) -> dict[str, Any]:
    """The rejected file's record; the event is read again from the line's bytes (what
    the run keeps of an event in flight, since bytes take far less memory than a dict)."""
    record: dict[str, Any] = {"line": line.number, "reason": reason, "message": message}
    event = line.event
    if event is None and line.data and not line.error:
        event = orjson.loads(line.data)
    if event is not None:
        record["event"] = event
    else:
        record["raw"] = line.raw
    return record

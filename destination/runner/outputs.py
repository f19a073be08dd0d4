"""The run's output files: the rejected file and the retry file, one JSON line each.

**Rejected file**: one line per event that will not be delivered as it is: its line
number, a short ``reason`` code, a ``message`` (never with tokens or quoted personal
data) and the original ``event`` (or the ``raw`` text of a line that was not a JSON
object), so the events can be fixed and fed to ``sync`` again.

**Retry file**: the events that could not be delivered because TikTok stayed
unavailable, as plain NDJSON input lines: ``sync --events`` takes the file as it is.

Both hold personal data from the input, so they are readable by their owner only: a
file this run creates is made so, and so is an existing file of the same user; a device
such as ``/dev/null``, a pipe or another user's file keeps its mode. On a resumed run
they are cut back to the length the checkpoint recorded and written on from there, so
no line is written twice.

An output that cannot be written (a full disk, a read-only file system) is an
``OutputError``; ``refuse_clashes`` keeps an output from being one of the run's inputs or
another output (by resolved path and by inode), since opening it would destroy that file.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from destination.errors import ConfigurationError, OutputError
from destination.runner.reader import Line

__all__ = ["OutputFile", "refuse_clashes", "rejected_record"]

log = logging.getLogger(__name__)


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
            try:  # created here: private from the start
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                flags = os.O_WRONLY | (0 if resume_at is not None else os.O_TRUNC)
                fd = os.open(self.path, flags)
                self._make_private(fd)
            if resume_at is not None and stat.S_ISREG(os.fstat(fd).st_mode):
                os.ftruncate(fd, resume_at)
                os.lseek(fd, resume_at, os.SEEK_SET)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write the {self._what} {self.path}: {exc.strerror}"
            ) from exc
        self._handle = os.fdopen(fd, "wb")

    def _make_private(self, fd: int) -> None:
        """An existing file of this user's is made private; anything else (a device such
        as /dev/null, a pipe, another user's file) keeps its mode, with a warning if
        others can read what is written there."""
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return
        if info.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
        elif info.st_mode & 0o077:
            log.warning(
                "the %s %s belongs to another user and is readable by others (mode %o); "
                "it will hold events from your input",
                self._what,
                self.path,
                stat.S_IMODE(info.st_mode),
            )

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError as exc:
                raise self._failed(exc) from exc

    def _failed(self, exc: OSError) -> OutputError:
        return OutputError(f"cannot write the {self._what} {self.path}: {exc.strerror}")

    def write(self, record: dict[str, Any]) -> None:
        if self._handle is not None:
            try:
                text = orjson.dumps(record)
            except TypeError:  # a value orjson will not write (a lone surrogate): escape it
                text = json.dumps(record, separators=(",", ":")).encode("ascii")
            self.write_line(text)

    def write_line(self, data: bytes) -> None:
        """Write an input line back as it was read."""
        if self._handle is not None:
            try:
                self._handle.write(data + b"\n")
            except OSError as exc:
                raise self._failed(exc) from exc

    def durable_length(self) -> int:
        """Flush to disk and return the file's length (0 when there is no file)."""
        if self._handle is None:
            return 0
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            return self._handle.tell()
        except OSError as exc:
            raise self._failed(exc) from exc


def _identity(path: Path) -> tuple[Path, tuple[int, int] | None]:
    """A path as the file system sees it: resolved, and its device and inode if it exists."""
    try:
        info = path.stat()
    except OSError:
        return path.resolve(), None
    return path.resolve(), (info.st_dev, info.st_ino)


def refuse_clashes(inputs: Mapping[str, Path], outputs: Mapping[str, Path | None]) -> None:
    """Refuse an output that is an input or another output (same resolved path or inode).

    Keys name the files in the message (``--events``, ``--rejected`` ...). Devices
    (``/dev/null``) may be given as several outputs: writing them destroys nothing.
    """
    seen: list[tuple[str, Path, tuple[int, int] | None, bool]] = []
    for name, path in inputs.items():
        seen.append((name, *_identity(path), False))
    problems = []
    for name, output in outputs.items():
        if output is None:
            continue
        resolved, inode = _identity(output)
        device = output.exists() and not output.is_file() and not output.is_dir()
        for other, other_path, other_inode, other_is_output in seen:
            same = resolved == other_path or (inode is not None and inode == other_inode)
            if same and not (device and other_is_output):
                what = "an output" if other_is_output else "an input"
                problems.append(f"{name} {output} is the same file as {other} ({what})")
        seen.append((name, resolved, inode, True))
    if problems:
        raise ConfigurationError(
            "; ".join(problems) + ": writing it would destroy that file; name another file"
        )


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

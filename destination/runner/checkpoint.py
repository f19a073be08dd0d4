"""Checkpoints: how far the input has been delivered, so a killed run resumes.

After each batch TikTok answered, the run records (atomically: a temporary file, fsync,
rename) which input lines are finished, the run's counts so far and the lengths of the
rejected and retry files. A line is finished when its event was delivered, rejected or
deferred. Lines finish out of order (batches of different audiences fill at different
speeds), so the record is: every line before ``next_line`` is finished, and so is every
line up to ``read_up_to`` except those listed in ``open``.

A resumed run skips finished lines without sending them again, cuts the output files
back to the recorded lengths (dropping what was written after the checkpoint: those
events are done again) and starts its counts from the recorded ones.

What cannot be known: a batch TikTok carried out whose answer arrived after the last
checkpoint (or never, the process being killed) is sent again on resume. Adding or
removing the same users twice leaves the audience the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from destination.errors import ConfigurationError, OutputError
from destination.files import replace_file

__all__ = ["Checkpoint", "Progress", "fingerprint", "locked_state"]

VERSION = 1
FILE_NAME = "checkpoint.json"
LOCK_NAME = "lock"


@contextlib.contextmanager
def locked_state(directory: Path) -> Iterator[None]:
    """Hold the state directory for one run: checked writable, and locked (``flock``).

    Both before the first call to TikTok: a second sync on the same directory would send
    everything again, and a directory that cannot take the checkpoint would be found only
    after the first batch was sent. The lock goes with the process, however it ends.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=FILE_NAME, suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
        handle = open(directory / LOCK_NAME, "a+")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise OutputError(
            f"the state directory {directory} cannot be written: {exc.strerror}"
        ) from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            raise ConfigurationError(
                f"the state directory {directory} is in use by another sync"
                + (f" (process {holder})" if holder.isdigit() else "")
                + ": wait for it to end, or use another --state directory"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def fingerprint(events: str, mapping: Path) -> dict[str, Any]:
    """What a checkpoint belongs to: the input (size and first MiB) and the mapping file.

    Standard input cannot be looked at beforehand: its checkpoints record what was read
    of it instead (``Checkpoint.source_state``), checked as the resumed run reads."""
    digest = hashlib.sha256(mapping.read_bytes()).hexdigest()
    if events == "-":
        return {"events": "-", "mapping_sha256": digest}
    path = Path(events)
    with path.open("rb") as handle:
        head = hashlib.sha256(handle.read(1 << 20)).hexdigest()
    return {
        "events": str(path.resolve()),
        "events_size": path.stat().st_size,
        "events_head_sha256": head,
        "mapping_sha256": digest,
    }


@dataclass
class Progress:
    """Which lines are finished: all before ``next_line``, and read ones not ``open``."""

    next_line: int = 1
    read_up_to: int = 0
    open: set[int] = field(default_factory=set)

    def is_finished(self, number: int) -> bool:
        return number < self.next_line or (number <= self.read_up_to and number not in self.open)

    def started(self, number: int) -> None:
        self.open.add(number)
        self.read_up_to = max(self.read_up_to, number)

    def finished(self, number: int) -> None:
        """A line is done: answered, or finished at once (nothing to send)."""
        self.open.discard(number)
        self.read_up_to = max(self.read_up_to, number)

    def compact(self) -> None:
        self.next_line = min(self.open) if self.open else self.read_up_to + 1


@dataclass
class Checkpoint:
    """The saved state of one run (see the module docstring)."""

    fingerprint: dict[str, Any]
    progress: Progress = field(default_factory=Progress)
    tally: dict[str, Any] = field(default_factory=dict)  # the pipeline's Tally, as JSON
    rejected_length: int = 0
    retry_length: int = 0
    complete: bool = False
    # what the source said identifies the input read so far (standard input: how many
    # bytes and their digest, see ``runner.prefix``); None when the fingerprint does
    source_state: dict[str, Any] | None = None

    @classmethod
    def load(cls, directory: Path, expected: dict[str, Any]) -> Checkpoint | None:
        """The checkpoint in ``directory`` for this input and mapping, or None if none."""
        path = directory / FILE_NAME
        try:
            document = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"the checkpoint {path} cannot be read ({exc}); move it away to start over"
            ) from exc
        if not isinstance(document, dict) or document.get("version") != VERSION:
            raise ConfigurationError(f"the checkpoint {path} is not one this version writes")
        if document.get("fingerprint") != expected:
            raise ConfigurationError(
                f"the checkpoint in {directory} belongs to another input or mapping file "
                "(or the input changed); use another --state directory to start over"
            )
        try:
            progress = document["progress"]
            source_state = document.get("source_state")
            return cls(
                fingerprint=expected,
                progress=Progress(
                    next_line=int(progress["next_line"]),
                    read_up_to=int(progress["read_up_to"]),
                    open=set(progress["open"]),
                ),
                tally=dict(document["tally"]),
                rejected_length=int(document["rejected_length"]),
                retry_length=int(document["retry_length"]),
                complete=bool(document["complete"]),
                source_state=None if source_state is None else dict(source_state),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"the checkpoint {path} is incomplete ({exc!r}); move it away to start over"
            ) from exc

    def save(self, directory: Path) -> None:
        self.progress.compact()
        document = {
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "progress": {
                "next_line": self.progress.next_line,
                "read_up_to": self.progress.read_up_to,
                "open": sorted(self.progress.open),
            },
            "tally": self.tally,
            "rejected_length": self.rejected_length,
            "retry_length": self.retry_length,
            "complete": self.complete,
        }
        if self.source_state is not None:
            document["source_state"] = self.source_state
        try:
            directory.mkdir(parents=True, exist_ok=True)
            replace_file(directory / FILE_NAME, json.dumps(document, sort_keys=True))
        except OSError as exc:
            raise OutputError(
                f"cannot write the checkpoint in {directory}: {exc.strerror}"
            ) from exc

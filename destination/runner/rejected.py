"""The rejected file: one JSON line per event that was not delivered, with its reason.

Each line holds the event's line number, a short ``reason`` code, a ``message`` (never
with tokens or quoted personal data) and the original event (or the raw text of a line
that was not a JSON object), so the file can be fixed and fed to ``sync`` again. The
file holds personal data from the input, so it is created readable by its owner only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from destination.errors import ConfigurationError
from destination.runner.reader import Line

__all__ = ["RejectedSink"]


class RejectedSink:
    """Writes rejected events to a file, or only counts them when there is no file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def __enter__(self) -> RejectedSink:
        if self.path is not None:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot write the rejected file {self.path}: {exc.strerror}"
                ) from exc
            self._handle = os.fdopen(fd, "w", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def write(self, line: Line, reason: str, message: str) -> None:
        if self._handle is None:
            return
        record: dict[str, Any] = {"line": line.number, "reason": reason, "message": message}
        if line.event is not None:
            record["event"] = line.event
        else:
            record["raw"] = line.raw
        self._handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")

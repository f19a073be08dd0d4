"""Identifying standard input for checkpoints: the SHA-256 of what was read of it.

A file is identified before reading (its path, size and first MiB); standard input can
only be identified by what it carries. So a run with ``--state`` and ``--events -`` reads
through a ``PrefixReader``, which hashes every byte it takes from the stream, and each
checkpoint records ``InputPrefix(size, sha256)``: how many bytes had been read and their
digest. Every line the checkpoint calls finished lies within those bytes.

On resume, the reader is given that prefix. Lines before the first unfinished one are
handed out at once (the pipeline skips them: finished lines are never sent); from the
first unfinished line on, the reader reads ahead to the end of the recorded prefix into
a spool (memory, then a temporary file) and compares digests before handing out any of
it. Another input (day 2's events piped to day 1's state directory) is refused with
``ConfigurationError`` before a single one of its lines is sent or counted; the same
input resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from typing import IO

from destination.errors import ConfigurationError

__all__ = ["InputPrefix", "PrefixReader"]

_SPOOL_IN_MEMORY = 16 << 20  # bytes kept in memory while checking, before a temp file
_READ_AHEAD = 1 << 16


@dataclass(frozen=True)
class InputPrefix:
    """The first ``size`` bytes of an input, by their SHA-256 (lowercase hex)."""

    size: int
    sha256: str


class PrefixReader:
    """``readline`` over a stream, hashing all it reads; checks a recorded prefix.

    ``expected`` is the prefix a checkpoint recorded (None on a first run), and
    ``hold_from_line`` the first line that checkpoint did not finish: from it on, nothing
    is handed out before the prefix is checked. ``where`` names the state directory in
    the error.
    """

    def __init__(
        self,
        stream: IO[bytes],
        *,
        expected: InputPrefix | None = None,
        hold_from_line: int = 1,
        where: str = "",
    ) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self._size = 0  # bytes read from the stream (and hashed)
        self._expected = expected
        self._hold_from = hold_from_line
        self._where = where
        self._line = 1  # the line the next byte handed out belongs to
        self._spool: IO[bytes] | None = None

    def read_so_far(self) -> InputPrefix:
        """What has been read from the stream: every line handed out lies within it."""
        return InputPrefix(self._size, self._hash.hexdigest())

    def readline(self, limit: int = -1) -> bytes:
        if self._expected is not None and self._line >= self._hold_from:
            self._check_ahead()
        data = b""
        if self._spool is not None:
            data = self._spool.readline(limit)
            if not data.endswith(b"\n") and (limit < 0 or len(data) < limit):
                # the spool is used up (its last line may go on in the stream)
                self._spool.close()
                self._spool = None
                if not data.endswith(b"\n"):
                    data += self._read(-1 if limit < 0 else limit - len(data))
        else:
            data = self._read(limit)
        self._line += data.count(b"\n")
        return data

    def _read(self, limit: int) -> bytes:
        data = self._stream.readline(limit)
        self._take(data)
        if not data and self._expected is not None:
            self._mismatch(f"it ended after {self._size} bytes")
        return data

    def _take(self, data: bytes) -> None:
        """Hash ``data``; when it crosses the end of the expected prefix, compare there."""
        expected = self._expected
        if expected is not None and self._size + len(data) >= expected.size:
            cut = expected.size - self._size
            self._hash.update(data[:cut])
            self._size += cut
            data = data[cut:]
            self._expected = None
            if self._hash.hexdigest() != expected.sha256:
                self._mismatch(f"its first {expected.size} bytes differ")
        self._hash.update(data)
        self._size += len(data)

    def _check_ahead(self) -> None:
        """Read to the end of the expected prefix into the spool, checking it."""
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            while self._expected is not None:
                data = self._stream.read(_READ_AHEAD)
                self._take(data)
                if not data and self._expected is not None:
                    self._mismatch(f"it ended after {self._size} bytes")
                spool.write(data)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        self._spool = spool

    def _mismatch(self, how: str) -> None:
        self._expected = None
        raise ConfigurationError(
            f"standard input is not the input the checkpoint in {self._where} belongs to "
            f"({how}); feed the same input to resume, or use another --state directory "
            "to start over"
        )

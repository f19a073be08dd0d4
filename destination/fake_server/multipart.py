"""A multipart/form-data request body (RFC 7578) read as it arrives, for the fake's server.

TikTok takes customer files as multipart uploads (``dmp/custom_audience/file/upload/``).
``read_form`` reads such a body from the connection in chunks: its plain fields are kept
as text, each file part is written to a temporary file as it comes, so a large upload
never sits in memory. The caller hands the fields and the files' paths to the fake as an
``ApiRequest`` (the in-process path hands paths too) and calls ``Form.remove`` after.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = ["Form", "MultipartError", "Readable", "boundary_of", "read_form"]

_CHUNK = 64 * 1024
_MAX_HEAD = 16 * 1024  # the headers of one part
_MAX_FIELD = 1024 * 1024  # one plain field's value
_MAX_PARTS = 100
_BOUNDARY = re.compile(r'boundary="?([0-9A-Za-z\'()+_,./:=? -]{1,70})"?\s*(?:;|$)', re.I)
_PARAM = re.compile(r'\b(name|filename)="([^"]*)"', re.I)


class Readable(Protocol):
    """Where the body comes from: the connection's ``rfile``."""

    def read(self, size: int, /) -> bytes: ...


class MultipartError(ValueError):
    """The body is not a well-formed multipart/form-data body; says where it is not."""


@dataclass
class Form:
    """What a multipart body held: fields by name, files by name as (file name, path)."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, Path]] = field(default_factory=dict)

    def remove(self) -> None:
        """Delete the files spooled for this form (harmless if already gone)."""
        for _, path in self.files.values():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def boundary_of(content_type: str) -> str | None:
    """The boundary of a ``multipart/form-data`` Content-Type, or None if it is not one."""
    kind, _, parameters = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    found = _BOUNDARY.search(parameters)
    return found.group(1).rstrip() if found else None


class _Reader:
    """At most ``length`` bytes of ``stream``, buffered, read ``_CHUNK`` at a time."""

    def __init__(self, stream: Readable, length: int) -> None:
        self._stream = stream
        self._left = length
        self.buffer = bytearray()

    def more(self) -> bool:
        """Read another chunk into ``buffer``; False once the body is all read."""
        if self._left == 0:
            return False
        chunk = self._stream.read(min(_CHUNK, self._left))
        if not chunk:
            raise MultipartError("the body ended before its Content-Length")
        self._left -= len(chunk)
        self.buffer += chunk
        return True

    def take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            if not self.more():
                raise MultipartError("the body ended before its closing boundary")
        taken = bytes(self.buffer[:count])
        del self.buffer[:count]
        return taken

    def until(self, marker: bytes, limit: int) -> bytes:
        """The bytes before ``marker`` (consumed with it), at most ``limit`` of them."""
        while (index := self.buffer.find(marker)) < 0:
            if len(self.buffer) > limit + len(marker) or not self.more():
                raise MultipartError("a part's headers are missing or too long")
        taken = bytes(self.buffer[:index])
        del self.buffer[: index + len(marker)]
        return taken


def read_form(stream: Readable, length: int, boundary: str, directory: Path | None = None) -> Form:
    """Read a multipart body of ``length`` bytes; its files go to ``directory`` (the
    system's temporary folder by default). ``MultipartError`` if it is malformed (any file
    spooled so far is removed)."""
    reader = _Reader(stream, length)
    form = Form()
    try:
        reader.until(b"--" + boundary.encode("ascii"), _MAX_HEAD)  # no preamble expected
        delimiter = b"\r\n--" + boundary.encode("ascii")
        while True:
            ending = reader.take(2)
            if ending == b"--":
                return form
            if ending != b"\r\n":
                raise MultipartError("a boundary line is not followed by CRLF or --")
            if len(form.fields) + len(form.files) == _MAX_PARTS:
                raise MultipartError(f"more than {_MAX_PARTS} parts")
            name, filename = _disposition(reader.until(b"\r\n\r\n", _MAX_HEAD))
            if name in form.fields or name in form.files:
                raise MultipartError(f"the part {name!r} comes twice")
            if filename is None:
                value = _copy_until(reader, delimiter, None)
                form.fields[name] = value.decode("utf-8", errors="replace")
            else:
                handle, spooled = tempfile.mkstemp(prefix="fake-upload-", dir=directory)
                form.files[name] = (filename, Path(spooled))
                with os.fdopen(handle, "wb") as sink:
                    _copy_until(reader, delimiter, sink)
    except BaseException:
        form.remove()
        raise


def _disposition(head: bytes) -> tuple[str, str | None]:
    """A part's field name and file name (None for a plain field)."""
    for line in head.decode("utf-8", errors="replace").split("\r\n"):
        header, _, value = line.partition(":")
        if header.strip().lower() == "content-disposition":
            params = {key.lower(): text for key, text in _PARAM.findall(value)}
            if "name" not in params:
                break
            return params["name"], params.get("filename")
    raise MultipartError("a part has no Content-Disposition with a name")


def _copy_until(reader: _Reader, delimiter: bytes, sink: BinaryIO | None) -> bytes:
    """Consume a part's content up to ``delimiter``: written to ``sink``, or returned (a
    plain field, at most ``_MAX_FIELD`` bytes) when there is no sink."""
    kept = bytearray()
    while (index := reader.buffer.find(delimiter)) < 0:
        safe = len(reader.buffer) - len(delimiter) + 1  # the rest may begin the delimiter
        if safe > 0:
            _emit(bytes(reader.buffer[:safe]), sink, kept)
            del reader.buffer[:safe]
        if not reader.more():
            raise MultipartError("the body ended before its closing boundary")
    _emit(bytes(reader.buffer[:index]), sink, kept)
    del reader.buffer[: index + len(delimiter)]
    return bytes(kept)


def _emit(data: bytes, sink: BinaryIO | None, kept: bytearray) -> None:
    if sink is not None:
        sink.write(data)
        return
    kept += data
    if len(kept) > _MAX_FIELD:
        raise MultipartError(f"a field is longer than {_MAX_FIELD} bytes")

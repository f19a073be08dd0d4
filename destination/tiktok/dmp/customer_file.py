"""A customer file audience's file, made ready for upload: read, normalized, hashed.

The definition names a CSV file (a header line, then one person a line, the columns its
``columns`` name) or a TXT file (no header, one value a line, of the one kind its
``columns`` names: email or phone). Each person goes through ``user_identifiers``, the
sync's own normalizers with the run's settings (phone format and default region, email
options), so a file and a sync hash a person alike and TikTok matches them as one.

The upload file is a UTF-8 CSV: a header naming the id types present (``EMAIL_SHA256``,
``PHONE_SHA256``, ``IDFA_SHA256``, ``AAID_SHA256``, in that order), then one line per
person with lowercase hex hashes, an empty cell where the person has none. Which types
are present is known only at the end, so each person is first written with all four
cells to a scratch file, which is then copied without the empty types while its MD5 is
computed. Both passes go row by row: memory does not grow with the file.

Counts say how many rows were read and written, and why any row was left out (no usable
identifier) or any identifier dropped: reasons only, never the values (personal data).
"""

from __future__ import annotations

import csv
import hashlib
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from destination.errors import InputError, MappingError
from destination.tiktok.actions import user_identifiers
from destination.tiktok.dmp.definitions import Definition
from destination.tiktok.normalize import ID_TYPES, IdType
from destination.tiktok.settings import Settings

__all__ = ["CustomerFile", "prepare_customer_file"]

#: The definition's ``columns`` keys that are a person's fields for ``user_identifiers``.
FIELDS = ("email", "phone", "advertising_id", "device_type")
NO_IDENTIFIER = "no email, phone or advertising id"


@dataclass(frozen=True)
class CustomerFile:
    """The upload file of a customer file definition and what went into it.

    ``path`` is the file (in the caller's work folder, which the caller removes), ``md5``
    its MD5 as lowercase hex (TikTok's ``file_signature``); ``read`` rows were read and
    ``written`` written; ``skipped_reasons`` says why the others had no usable identifier
    and ``dropped`` why identifiers were left out of rows written with others (reason ->
    count).
    """

    path: Path
    md5: str
    id_types: tuple[IdType, ...]
    read: int
    written: int
    skipped_reasons: Mapping[str, int]
    dropped: Mapping[str, int]

    @property
    def skipped(self) -> int:
        """Rows left out: none of their identifiers was usable."""
        return self.read - self.written


def prepare_customer_file(
    definition: Definition, source: Path, settings: Settings, *, work: Path
) -> CustomerFile:
    """Normalize and hash ``source`` (``definition``'s file) into an upload file in
    ``work``.

    Raises ``MappingError`` (naming the definition, the JSON pointer and the file) when
    the CSV's header lacks a column the definition names, and ``InputError`` when the file
    cannot be read, is not UTF-8 text, or has no row with a usable identifier.
    """
    spec = definition.spec
    columns: Mapping[str, str] = spec["columns"]
    descriptor, scratch_name = tempfile.mkstemp(prefix=f"{source.stem}-", suffix=".rows", dir=work)
    scratch = Path(scratch_name)
    present: set[str] = set()
    skipped: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    read = 0
    try:
        with open(descriptor, "w", encoding="ascii", newline="") as rows_out:
            for person in _people(definition, source, columns, str(spec.get("delimiter", ","))):
                read += 1
                ids, why = user_identifiers(person, settings)
                if not ids:
                    skipped["; ".join(why) or NO_IDENTIFIER] += 1
                    continue
                dropped.update(why)
                present.update(ids)
                rows_out.write(",".join(ids.get(t, "") for t in ID_TYPES) + "\n")
        if not present:
            reasons = "; ".join(f"{n} rows: {why}" for why, n in skipped.most_common())
            raise InputError(
                f"{source}: no row has a usable identifier, nothing to upload "
                f"({read} rows read{': ' + reasons if reasons else ''})"
            )
        id_types = tuple(t for t in ID_TYPES if t in present)
        path, md5 = _write_upload(scratch, id_types, source, work)
    finally:
        scratch.unlink(missing_ok=True)
    return CustomerFile(
        path=path,
        md5=md5,
        id_types=id_types,
        read=read,
        written=read - skipped.total(),
        skipped_reasons=dict(skipped),
        dropped=dict(dropped),
    )


def _write_upload(
    scratch: Path, id_types: tuple[IdType, ...], source: Path, work: Path
) -> tuple[Path, str]:
    """The upload file made from the scratch rows (all four cells) keeping ``id_types``'
    cells, and its MD5."""
    keep = [ID_TYPES.index(t) for t in id_types]
    digest = hashlib.md5(usedforsecurity=False)
    descriptor, name = tempfile.mkstemp(prefix=f"{source.stem}-", suffix=".csv", dir=work)
    with open(descriptor, "wb") as upload, scratch.open("rb") as rows_in:

        def put(line: bytes) -> None:
            digest.update(line)
            upload.write(line)

        put(",".join(id_types).encode("ascii") + b"\n")
        for row in rows_in:
            cells = row.rstrip(b"\n").split(b",")
            put(b",".join(cells[i] for i in keep) + b"\n")
    return Path(name), digest.hexdigest()


def _people(
    definition: Definition, source: Path, columns: Mapping[str, str], delimiter: str
) -> Iterator[dict[str, Any]]:
    """Each person of ``source`` as the fields ``user_identifiers`` reads (a blank cell is
    no value), one at a time."""
    try:
        handle = source.open("r", encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"{source}: cannot be read ({exc.strerror})") from None
    with handle:
        try:
            if source.suffix.lower() == ".txt":
                [kind] = columns
                yield from _txt_people(handle, kind)
            else:
                yield from _csv_people(definition, source, handle, columns, delimiter)
        except UnicodeDecodeError:
            raise InputError(f"{source}: is not UTF-8 text") from None
        except csv.Error as exc:
            raise InputError(f"{source}: is not a readable CSV file ({exc})") from None


def _txt_people(handle: IO[str], kind: str) -> Iterator[dict[str, Any]]:
    for line in handle:
        value = line.strip()
        if value:
            yield {kind: value}


def _csv_people(
    definition: Definition,
    source: Path,
    handle: IO[str],
    columns: Mapping[str, str],
    delimiter: str,
) -> Iterator[dict[str, Any]]:
    reader = csv.reader(handle, delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise MappingError(
            str(definition.path),
            "/customer_file/path",
            f"a CSV file with a header line; {source} is empty",
        )
    names = [name.strip() for name in header]
    positions: dict[str, int] = {}
    for kind in FIELDS:
        if kind not in columns:
            continue
        if columns[kind] not in names:
            # the header is not quoted: a file without one would show its first person
            raise MappingError(
                str(definition.path),
                f"/customer_file/columns/{kind}",
                f"a column {columns[kind]!r} in the header line of {source}, which has "
                f"{len(names)} columns and none of that name (is the first line a header?)",
            )
        if (count := names.count(columns[kind])) > 1:
            # which one holds the people's values cannot be told: reading either may hash
            # the wrong one
            raise MappingError(
                str(definition.path),
                f"/customer_file/columns/{kind}",
                f"one column {columns[kind]!r} in the header line of {source}, which has "
                f"{count} columns named {columns[kind]!r}",
            )
        positions[kind] = names.index(columns[kind])
    for row in reader:
        if row:  # a blank line is no row
            yield {
                kind: cell
                for kind, at in positions.items()
                if at < len(row) and (cell := row[at].strip())
            }

"""A mapping file's ``source`` object, read into a typed ``SourceSpec``.

The object was checked against ``schemas/warehouse-source.schema.json`` when the file was
read (``kit.mapping_file``); what a schema cannot say (a URL's scheme) is checked here,
with the same kind of message: the file, the JSON pointer and what was expected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from destination.errors import MappingError

if TYPE_CHECKING:  # SQLAlchemy is imported by a warehouse run only (~14 MB, 0.14 s)
    from sqlalchemy.engine import URL

__all__ = ["SOURCE_SCHEMA_FILE", "SourceSpec", "SyncMode", "read_spec"]

SOURCE_SCHEMA_FILE = "warehouse-source.schema.json"
SyncMode = Literal["add", "mirror", "remove"]


@dataclass(frozen=True)
class SourceSpec:
    """What rows to read and how to sync them. ``url``'s password is never shown: use
    ``shown_url`` in messages."""

    url: URL
    query: str  # a table is ``select * from`` it
    primary_key: tuple[str, ...]
    sync_mode: SyncMode
    state_schema: str | None
    max_removal_fraction: float
    mapping: str  # the mapping file, for messages

    @property
    def engine(self) -> str:
        """The engine's name: the URL's scheme without its driver (``postgresql``)."""
        return self.url.get_backend_name()

    @property
    def shown_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    @property
    def query_fingerprint(self) -> str:
        """Identifies the query text (the summary's ``source.query``)."""
        return hashlib.sha256(self.query.encode()).hexdigest()[:16]


def read_spec(document: dict[str, Any], *, mapping: str) -> SourceSpec:
    """The ``source`` object of mapping file ``mapping``, already schema-checked."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415 (see above)
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

    try:
        url = make_url(document["url"])
    except (ArgumentError, ValueError) as exc:
        raise MappingError(
            mapping, "/source/url", f"a database URL such as duckdb:///file.duckdb ({exc})"
        ) from None
    query = document.get("query") or f"select * from {document['table']}"
    key = document["primary_key"]
    return SourceSpec(
        url=url,
        query=query.strip().rstrip(";"),
        primary_key=(key,) if isinstance(key, str) else tuple(key),
        sync_mode=document.get("sync_mode", "mirror"),
        state_schema=document.get("state_schema"),
        max_removal_fraction=float(document.get("max_removal_fraction", 0.5)),
        mapping=mapping,
    )

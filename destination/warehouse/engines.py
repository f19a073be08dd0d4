"""The database engines a warehouse sync reads from and diffs in, behind one interface.

An ``Engine`` runs SQL with ``:name`` parameters, streams a result in batches of rows on
a connection of its own (so the snapshot can be written while changes are read), and
knows its ``Dialect``: the SQL templates that differ between engines. Fingerprints and
keys are computed by each engine's own functions through those templates; a test checks
each against known digests (transpilers get them wrong: bytes vs hex, upper vs lower).

- ``duckdb:///path.duckdb`` (or ``duckdb:///:memory:``): the embedded default;
- ``postgresql://...``: through SQLAlchemy and psycopg;
- any other URL with a SQLAlchemy dialect (its driver installed): read row by row
  (``SqlAlchemyRows``), the diff in the local DuckDB;
- ``spark://...``: Spark SQL (``destination.warehouse.spark``, the ``spark`` extra).

Failing to reach the database is an ``InputError`` (exit 6); a query the engine refuses
is a ``MappingError`` on ``/source/query`` (exit 3). Neither shows the URL's password.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from destination.errors import ConfigurationError, InputError, MappingError
from destination.warehouse.spec import SourceSpec

__all__ = [
    "DUCKDB",
    "POSTGRESQL",
    "Dialect",
    "DuckDBEngine",
    "Engine",
    "PostgresEngine",
    "QueryRefused",
    "Recorded",
    "RowSource",
    "SqlAlchemyRows",
    "first_line",
    "key_text",
    "open_engine",
    "split_key",
]

Params = Mapping[str, Any]


@dataclass(frozen=True)
class Dialect:
    """What differs between engines, as SQL templates (``{}``: an expression).

    ``md5`` gives the lowercase hex MD5 of a text; ``text`` casts a value to text;
    ``row_json`` is the JSON text of the row of relation alias ``q``; ``char`` makes a
    character from its code (the key's separator and escape: see ``key``);
    ``quote`` quotes an identifier; ``text_type`` is the type of text. ``changes`` names
    the table of the run's changes, which ``temporary`` (a template of ``{select}``)
    creates: it lives as long as the connection.
    """

    name: str
    md5: str
    text: str
    row_json: str
    char: str
    quote: Callable[[str], str]
    text_type: str
    changes: str
    temporary: str

    def key(self, columns: Sequence[str]) -> str:
        """A row's key as text: one column as text; several joined by the unit separator
        (U+001F), each escaped first (a backslash before a backslash or a separator), so
        that no two keys read alike (``key_text`` does the same in Python, ``split_key``
        reads it back)."""
        parts = [self.text.format(f"q.{self.quote(c)}") for c in columns]
        if len(parts) == 1:
            return parts[0]
        separator, escape = self.char.format(ord(KEY_SEPARATOR)), self.char.format(ord(ESCAPE))
        escaped = [
            f"replace(replace({p}, {escape}, concat({escape}, {escape})), {separator}, "
            f"concat({escape}, {separator}))"
            for p in parts
        ]
        return f"concat_ws({separator}, {', '.join(escaped)})"

    def current(self, query: str, columns: Sequence[str], tag: str) -> str:
        """The query's rows as ``(pk, fp, row)``: key, fingerprint of the row under the
        settings ``tag`` (a new tag changes every fingerprint), and the row as JSON."""
        row = self.row_json
        fingerprint = self.md5.format(f"concat({_literal(tag)}, {row})")
        return (
            f"select {self.key(columns)} as pk, {fingerprint} as fp, {row} as row "
            f"from ({query}) as q"
        )


KEY_SEPARATOR = "\x1f"  # between the columns of a composite key (US, the unit separator)
ESCAPE = "\\"  # before a separator or an escape inside one of them


def key_text(values: Sequence[object]) -> str:
    """What ``Dialect.key`` makes of a row's key columns, in Python."""
    if len(values) == 1:
        return str(values[0])
    return KEY_SEPARATOR.join(
        str(v).replace(ESCAPE, ESCAPE * 2).replace(KEY_SEPARATOR, ESCAPE + KEY_SEPARATOR)
        for v in values
    )


def split_key(pk: str, count: int) -> list[str]:
    """The ``count`` column values of a key ``key_text`` or ``Dialect.key`` made."""
    if count == 1:
        return [pk]
    values, current, escaped = [], [], False
    for ch in pk:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == ESCAPE:
            escaped = True
        elif ch == KEY_SEPARATOR:
            values.append("".join(current))
            current = []
        else:
            current.append(ch)
    values.append("".join(current))
    return values


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _double_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


DUCKDB = Dialect(
    name="duckdb",
    md5="md5({})",
    text="cast({} as varchar)",
    row_json="cast(to_json(q) as varchar)",
    char="chr({})",
    quote=_double_quote,
    text_type="varchar",
    changes="wh_work.wh_changes",
    temporary="create table wh_work.wh_changes as {select}",
)
POSTGRESQL = Dialect(
    name="postgresql",
    md5="md5({})",
    text="cast({} as text)",
    row_json="cast(row_to_json(q) as text)",
    char="chr({})",
    quote=_double_quote,
    text_type="text",
    changes="wh_changes",
    temporary="create temporary table wh_changes as {select}",
)


class RowSource(Protocol):
    """A database a warehouse sync reads the query's rows from."""

    def columns(self, sql: str) -> list[str]:
        """The column names of ``sql``'s result (``QueryRefused`` if the engine refuses
        it)."""
        ...

    def stream(
        self, sql: str, params: Params | None = None, *, size: int
    ) -> Iterator[Sequence[Any]]:
        """A result row by row, fetched ``size`` at a time."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Engine(RowSource, Protocol):
    """A database a warehouse sync also diffs in and keeps a snapshot in: its SQL
    templates are known (``dialect``) and tested."""

    @property
    def dialect(self) -> Dialect: ...

    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        """A small result, whole."""
        ...

    def execute(self, sql: str, params: Params | None = None) -> None: ...

    def create_snapshot(self, table: str) -> None:
        """Create the snapshot ``table`` (a qualified name) and its schema, if missing:
        ``target``, ``pk``, ``fp``, ``replay`` (text), what a target's audience holds."""
        ...

    def snapshot_select(self, table: str) -> str:
        """SQL for the ``pk, fp, replay`` rows of target ``:target`` in ``table``."""
        ...

    def claim_snapshot(self, table: str, target: str) -> bool:
        """Ready ``table`` for a run that will write ``target``'s snapshot (never called
        by a dry run); False when another run holds it."""
        ...

    def record(self, table: str, target: str, drop: Sequence[str], put: Sequence[Recorded]) -> None:
        """In one transaction, on a connection other than the streams': the keys ``drop``
        and those of ``put`` leave the target's snapshot, then ``put`` enter it."""
        ...


class Recorded(NamedTuple):
    """A row the destination accepted: its key, fingerprint and replay fields (JSON)."""

    pk: str
    fp: str
    replay: str


class DuckDBEngine:
    """DuckDB, embedded. ``wh_work`` (in memory, spilling to ``temp_directory``) holds the
    run's changes; a DuckDB source file is attached read-only as ``wh_source`` and made
    the default catalog, so the query reads its tables unqualified."""

    dialect = DUCKDB

    def __init__(
        self,
        *,
        memory_limit: str,
        temp_directory: Path | None,
        attach: Mapping[str, tuple[Path | str, bool]] = {},
        use: str | None = None,
    ) -> None:
        import duckdb  # noqa: PLC0415 (only a warehouse sync needs it)

        config: dict[str, Any] = {"memory_limit": memory_limit}
        if temp_directory is not None:
            config["temp_directory"] = str(temp_directory)
        self._error = duckdb.Error
        self._out_of_memory = duckdb.OutOfMemoryException
        self._limits = f"{memory_limit}, spilling to {temp_directory}"
        self._connection = duckdb.connect(":memory:", config=config)
        self._connection.execute("attach ':memory:' as wh_work")
        for alias, (path, read_only) in attach.items():
            mode = " (read_only)" if read_only else ""
            try:
                self._connection.execute(f"attach {_literal(str(path))} as {alias}{mode}")
            except duckdb.Error as exc:
                self._connection.close()  # the caller never gets the engine to close
                raise InputError(f"cannot open the DuckDB file {path}: {first_line(exc)}") from None
        if use is not None:
            self._connection.execute(f"use {use}")

    def columns(self, sql: str) -> list[str]:
        try:
            relation = self._connection.sql(f"select * from ({sql}) as q limit 0")
        except self._error as exc:
            raise self._refused(exc) from None
        return list(relation.columns)

    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        try:
            return self._connection.execute(*_dollar(sql, params)).fetchall()
        except self._error as exc:
            raise self._refused(exc) from None

    def execute(self, sql: str, params: Params | None = None) -> None:
        try:
            self._connection.execute(*_dollar(sql, params))
        except self._error as exc:
            raise self._refused(exc) from None

    def stream(
        self, sql: str, params: Params | None = None, *, size: int
    ) -> Iterator[Sequence[Any]]:
        cursor = self._connection.cursor()
        try:
            cursor.execute(*_dollar(sql, params))
            while batch := cursor.fetchmany(size):
                yield from batch
        except self._error as exc:
            raise self._refused(exc) from None
        finally:
            cursor.close()

    def _refused(self, exc: Exception) -> Exception:
        """What DuckDB's error means: the machine's limits, or a statement it refused."""
        if isinstance(exc, self._out_of_memory):
            return ConfigurationError(
                f"DuckDB ran out of memory ({self._limits}): {first_line(exc)}; free disk "
                "space there, or keep the snapshot in the source database (state_schema)"
            )
        return QueryRefused(first_line(exc))

    def create_snapshot(self, table: str) -> None:
        schema = table.rsplit(".", 1)[0]
        self.execute(f"create schema if not exists {schema}")
        self.execute(
            f"create table if not exists {table} "
            "(target varchar not null, pk varchar not null, fp varchar not null, replay varchar)"
        )

    def snapshot_select(self, table: str) -> str:
        return f"select pk, fp, replay from {table} where target = :target"

    def claim_snapshot(self, table: str, target: str) -> bool:
        # a local snapshot is held by the state directory's lock, one in a DuckDB source
        # file by DuckDB's own lock of the file (one writing process at a time)
        del table, target
        return True

    def record(self, table: str, target: str, drop: Sequence[str], put: Sequence[Recorded]) -> None:
        import pyarrow  # noqa: PLC0415

        keys = [*drop, *(r.pk for r in put)]
        rows = pyarrow.table(
            {
                "target": pyarrow.array([target] * len(put), pyarrow.string()),
                "pk": pyarrow.array([r.pk for r in put], pyarrow.string()),
                "fp": pyarrow.array([r.fp for r in put], pyarrow.string()),
                "replay": pyarrow.array([r.replay for r in put], pyarrow.string()),
            }
        )
        cursor = self._writer()
        cursor.execute("begin transaction")
        try:
            if keys:
                cursor.execute(
                    f"delete from {table} where target = $target and pk in (select unnest($keys))",
                    {"target": target, "keys": keys},
                )
            if put:
                cursor.register("wh_put", rows)
                cursor.execute(f"insert into {table} select * from wh_put")
                cursor.unregister("wh_put")
            cursor.execute("commit")
        except BaseException as exc:
            cursor.execute("rollback")
            if isinstance(exc, self._error):
                raise InputError(f"cannot record the sync in {table}: {first_line(exc)}") from None
            raise

    def load(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Append rows of text to ``table`` (another engine's rows), as one Arrow table."""
        import pyarrow  # noqa: PLC0415

        batch = pyarrow.table(
            {
                name: pyarrow.array([row[i] for row in rows], pyarrow.string())
                for i, name in enumerate(columns)
            }
        )
        self._connection.register("wh_batch", batch)
        try:
            self._connection.execute(f"insert into {table} select * from wh_batch")
        except self._error as exc:  # out of memory, or nowhere to spill
            raise self._refused(exc) from None
        finally:
            self._connection.unregister("wh_batch")

    _writing: Any = None

    def _writer(self) -> Any:
        if self._writing is None:
            self._writing = self._connection.cursor()
        return self._writing

    def close(self) -> None:
        if self._writing is not None:
            self._writing.close()
        self._connection.close()


class SqlAlchemyRows:
    """Any engine with a SQLAlchemy dialect, read row by row: only ``select * from
    (query)`` runs there (keys, fingerprints and JSON are made in Python, the diff in
    the local DuckDB), so no engine-specific SQL is needed."""

    def __init__(self, spec: SourceSpec) -> None:
        import sqlalchemy  # noqa: PLC0415

        self._sa = sqlalchemy
        self._password = spec.url.password
        self._shown = spec.shown_url
        url = spec.url
        if spec.engine == "postgresql" and url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        try:
            self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        except (ImportError, sqlalchemy.exc.ArgumentError) as exc:
            raise InputError(
                f"cannot use {self._shown}: {self._scrub(first_line(exc))} (is the engine's "
                "SQLAlchemy dialect installed?)"
            ) from None
        self._main = self._connect()

    def _scrub(self, text: str) -> str:
        return text.replace(str(self._password), "***") if self._password else text

    def _connect(self) -> Any:
        try:
            connection = self._engine.connect()
        except self._sa.exc.SQLAlchemyError as exc:
            raise InputError(
                f"cannot reach the database at {self._shown}: "
                f"{self._scrub(first_line(getattr(exc, 'orig', None) or exc))}"
            ) from None
        return connection

    def _run(self, connection: Any, sql: str, params: Params | None) -> Any:
        try:
            return connection.execute(self._sa.text(_colons(sql, params)), dict(params or {}))
        except self._sa.exc.DBAPIError as exc:
            connection.rollback()
            if exc.connection_invalidated:
                raise InputError(
                    f"lost the database at {self._shown}: {self._scrub(first_line(exc.orig))}"
                ) from None
            raise QueryRefused(self._scrub(first_line(exc.orig))) from None

    def columns(self, sql: str) -> list[str]:
        result = self._run(self._main, f"select * from ({sql}) as q limit 0", None)
        names = list(result.keys())
        self._main.commit()
        return names

    def stream(
        self, sql: str, params: Params | None = None, *, size: int
    ) -> Iterator[Sequence[Any]]:
        # the main connection holds the run's temporary table: stream on it, server-side
        connection = self._main.execution_options(stream_results=True, yield_per=size)
        result = self._run(connection, sql, params)
        try:
            yield from result
        finally:
            result.close()
            self._main.commit()

    _writing: Any = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._writing is not None:
                self._writing.close()
            self._main.close()
        self._engine.dispose()


class PostgresEngine(SqlAlchemyRows):
    """PostgreSQL through SQLAlchemy and psycopg: its templates are tested, so the diff
    and the snapshot may live there (``state_schema``)."""

    dialect = POSTGRESQL

    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        rows = [tuple(r) for r in self._run(self._main, sql, params)]
        self._main.commit()
        return rows

    def execute(self, sql: str, params: Params | None = None) -> None:
        self._run(self._main, sql, params)
        self._main.commit()

    def claim_snapshot(self, table: str, target: str) -> bool:
        """PostgreSQL's advisory lock of the target for this session (it goes with the
        connection): no directory is locked when the snapshot lives here."""
        del table
        name = f"tiktok-audiences:{target}"
        [(taken,)] = self.rows("select pg_try_advisory_lock(hashtext(:name))", {"name": name})
        return bool(taken)

    def create_snapshot(self, table: str) -> None:
        schema = table.rsplit(".", 1)[0]
        text = self.dialect.text_type
        self.execute(f"create schema if not exists {schema}")
        self.execute(
            f"create table if not exists {table} (target {text} not null, pk {text} not null, "
            f"fp {text} not null, replay {text}, primary key (target, pk))"
        )

    def snapshot_select(self, table: str) -> str:
        return f"select pk, fp, replay from {table} where target = :target"

    def record(self, table: str, target: str, drop: Sequence[str], put: Sequence[Recorded]) -> None:
        keys = [*drop, *(r.pk for r in put)]
        connection = self._writer()
        text = self._sa.text
        try:
            with connection.begin():
                if keys:
                    connection.execute(
                        text(f"delete from {table} where target = :target and pk = :pk"),
                        [{"target": target, "pk": k} for k in keys],
                    )
                if put:
                    connection.execute(
                        text(
                            f"insert into {table} (target, pk, fp, replay) "
                            "values (:target, :pk, :fp, :replay)"
                        ),
                        [{"target": target, **r._asdict()} for r in put],
                    )
        except self._sa.exc.DBAPIError as exc:
            raise InputError(
                f"cannot record the sync in {table} at {self._shown}: "
                f"{self._scrub(first_line(exc.orig))}"
            ) from None

    def _writer(self) -> Any:
        if self._writing is None:
            self._writing = self._connect()
        return self._writing


class QueryRefused(Exception):
    """The engine refused a statement; its first line says why (no password in it)."""


def open_engine(spec: SourceSpec) -> Engine | RowSource:
    """The source's engine, connected (not for a DuckDB URL: see ``DuckDBEngine``)."""
    if spec.engine == "spark":
        from destination.warehouse.spark import SparkEngine  # noqa: PLC0415

        return SparkEngine(spec)
    if spec.engine == "postgresql":
        return PostgresEngine(spec)
    return SqlAlchemyRows(spec)


def refused(spec: SourceSpec, exc: QueryRefused) -> MappingError:
    """The query the engine refused, as a mapping error on ``/source/query``."""
    return MappingError(
        spec.mapping, "/source/query", f"a query {spec.engine} can run; it said: {exc}"
    )


# ``:name`` as SQLAlchemy's ``text`` reads a bind parameter (``::`` casts are not)
_NAMED = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def _dollar(sql: str, params: Params | None) -> tuple[str, dict[str, Any]]:
    """``:name`` parameters as DuckDB's ``$name``, with only the parameters ``sql`` uses
    (DuckDB refuses any other). Only names in ``params`` are parameters: any other
    ``:word`` is the user's query's text (``'tier :gold'``) and stays as written."""
    given = params or {}
    used = {m for m in _NAMED.findall(sql) if m in given}
    text = _NAMED.sub(lambda m: f"${m[1]}" if m[1] in given else m[0], sql)
    return text, {k: v for k, v in given.items() if k in used}


def _colons(sql: str, params: Params | None) -> str:
    """``sql`` for SQLAlchemy's ``text``: a ``:word`` that names no parameter in
    ``params`` is the user's query's text, escaped so that it is not taken for one."""
    given = params or {}
    return _NAMED.sub(lambda m: m[0] if m[1] in given else "\\" + m[0], sql)


def first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

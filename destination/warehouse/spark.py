"""Spark SQL, in local mode, as a warehouse engine (the ``spark`` extra: pyspark, Java 17+).

The URL is ``spark://local[N]?warehouse=DIR``: the host is Spark's local master
(``local``, ``local[N]`` for N cores, ``local[*]`` for all; ``spark://?warehouse=DIR``
is ``local[*]``), and ``warehouse`` the folder that is the catalog. Spark runs in this
process's JVM on loopback only (driver bound to 127.0.0.1, no web UI); a cluster master
is refused.

The catalog is Spark's in-memory one, rebuilt from ``DIR`` at every start: each folder
``DIR/SCHEMA/TABLE`` holding Parquet files is registered as the external table
``SCHEMA.TABLE`` (what ``df.write.parquet("DIR/shop/customers")`` or any Parquet writer
leaves there; unpartitioned), so the query reads ``shop.customers``. A query may also read
files anywhere by path (``select * from parquet.`/data/customers```). Neither a Hive
metastore (a Derby database one process at a time, seconds more at each start) nor Delta
is needed: what persists from run to run is Parquet files under ``DIR``.

With ``state_schema`` S, the snapshot is the table ``S.tiktok_audiences_snapshot`` in
``DIR/S/tiktok_audiences_snapshot``. Parquet tables cannot delete or update, so the
snapshot is an append-only log: each ``record`` appends, in one insert (one job whose
files appear at its commit, or not at all), an entry per key it drops (``gone``) or puts,
numbered by ``version`` after every earlier entry; a key's latest entry is what the
target holds. One run at a time per snapshot (two would number entries alike).

The log grows by an entry per change and a file per answered batch, and every diff reads
all of it, so a real run (never a dry run) compacts it before its diff once it holds more
than twice as many entries as live keys (all targets') or more than ``COMPACT_FILES``
files: the latest entry of each live key, version kept (later entries still sort after),
is written whole into the hidden folder ``_compacted`` of the log's own (Spark reads no
name starting with ``_``), its files are renamed into the log, then the old files are
deleted oldest first (by their last version). A table cannot move to another folder
here (the catalog is rebuilt from folder names at each start), but no move is needed:
each step leaves a log that reads exactly the same. The new files only repeat live
entries. A key's drop is in a file whose last version is above that of every file with
an older entry of the key (a record numbers its entries after all present; a compacted
file holds only entries that were their key's latest), so those go before the drop does.
A killed compaction is redone by the next run, which first deletes what it left staged.

The run's changes are a Parquet table of a work database in a temporary folder of the
run, written once by the diff: a cached view would be recomputed when the snapshot it
was computed from changes under it, as it does while the changes are read.

Without ``state_schema`` the query's rows are streamed into the local DuckDB
(``Engine.stream``), a partition at a time. A query Spark refuses (parse or analysis
error, a failing cast) is ``QueryRefused`` with Spark's first line; no pyspark or no Java
is an ``InputError``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from destination.errors import InputError, MappingError, OutputError
from destination.warehouse.engines import Dialect, Params, QueryRefused, Recorded, first_line
from destination.warehouse.spec import SourceSpec

__all__ = ["COMPACT_FILES", "SPARK", "SparkEngine"]

log = logging.getLogger(__name__)


def _backtick(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


WORK = "tiktok_audiences_work"  # the run's database, in its temporary folder

SPARK = Dialect(
    name="spark",
    md5="md5({})",  # lowercase hex
    text="cast({} as string)",
    # nulls kept, as the other engines' JSON does (Spark's default drops them)
    row_json="to_json(struct(q.*), map('ignoreNullFields', 'false'))",
    char="char({})",
    quote=_backtick,
    text_type="string",
    changes=f"{WORK}.wh_changes",
    temporary=f"create table {WORK}.wh_changes using parquet as {{select}}",
)

_MASTER = re.compile(r"local(\[(\d+|\*)\])?")
# Spark's own log lines: errors only (its default is every INFO line on stderr). Spark's
# loggers are configured by name, or Spark would set them to WARN and say so on stderr.
_LOG4J = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = stderr
logger.spark.name = org.apache.spark
logger.spark.level = error
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = spark %p %c{1}: %m%n
"""
_SETTINGS = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.catalogImplementation": "in-memory",
}
_SNAPSHOT_COLUMNS = (
    "target string, pk string, fp string, replay string, version bigint, gone boolean"
)
COMPACT_FILES = 64  # a snapshot log in more Parquet files than this is compacted
_STAGING = "_compacted"  # the compacted log's files, written whole before any is used


class SparkEngine:
    """Spark SQL through pyspark: a session of its own over the process's Spark (started
    here, and stopped by ``close``, unless one already runs in the process)."""

    dialect = SPARK

    def __init__(self, spec: SourceSpec) -> None:
        master = _master(spec)
        self._warehouse = _warehouse(spec)
        try:
            from pyspark import SparkContext  # noqa: PLC0415 (the spark extra)
            from pyspark.errors import PySparkException  # noqa: PLC0415
            from pyspark.sql import SparkSession  # noqa: PLC0415
        except ImportError:
            raise InputError(
                f"{spec.shown_url} needs pyspark: pip install 'tiktok-audiences[spark]'"
            ) from None
        self._refused: type[Exception] = PySparkException
        self._work = Path(tempfile.mkdtemp(prefix="tiktok-audiences-spark-"))
        self._started = SparkContext._active_spark_context is None
        try:
            shared = self._start(SparkSession, master)
        except Exception as exc:
            shutil.rmtree(self._work, ignore_errors=True)
            raise InputError(
                f"cannot start Spark for {spec.shown_url} (it needs Java 17 or later: "
                f"java on PATH or JAVA_HOME): {first_line(exc)}"
            ) from None
        self._spark: Any = shared.newSession()  # temporary views and settings of its own
        self._quiet()
        self._version: int | None = None  # the snapshot's last entry, once read
        try:
            self.execute(f"drop database if exists {WORK} cascade")
            self.execute(f"create database {WORK} location {_path(self._work / 'work')}")
            self._register()
        except BaseException:
            self.close()  # the caller never gets the engine to close
            raise

    def _start(self, session: Any, master: str) -> Any:
        """The process's Spark session, started if none runs; Spark's Ctrl-C handler
        (it holds the context, stopped by ``close``) gives way to the process's own."""
        log4j = self._work / "log4j2.properties"
        log4j.write_text(_LOG4J, encoding="utf-8")
        builder = session.builder.master(master).appName("tiktok-audiences")
        settings = {
            **_SETTINGS,
            "spark.sql.warehouse.dir": str(self._warehouse),
            "spark.local.dir": str(self._work / "local"),
            "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={log4j}",
        }
        for name, value in settings.items():
            builder = builder.config(name, value)
        main = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGINT) if main else None
        try:
            return builder.getOrCreate()
        finally:
            if handler is not None:
                signal.signal(signal.SIGINT, handler)

    @staticmethod
    def _quiet() -> None:
        """PySpark logs each refused query with its Java stack on stderr; the refusal
        reaches the user once, as ``QueryRefused``."""
        from pyspark.logger import PySparkLogger  # noqa: PLC0415

        for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
            PySparkLogger.getLogger(name).disabled = True

    def _register(self) -> None:
        """Each ``DIR/SCHEMA/TABLE`` folder of Parquet files as table ``SCHEMA.TABLE``
        (the in-memory catalog starts empty; a table already known stays as it is)."""
        for schema in sorted(self._warehouse.iterdir()):
            if not schema.is_dir() or schema.name.startswith((".", "_")):
                continue
            tables = [
                t for t in sorted(schema.iterdir()) if t.is_dir() and any(t.glob("*.parquet"))
            ]
            if not tables:
                continue
            self.execute(
                f"create database if not exists {_backtick(schema.name)} location {_path(schema)}"
            )
            for table in tables:
                self.execute(
                    f"create table if not exists {_backtick(schema.name)}.{_backtick(table.name)} "
                    f"using parquet location {_path(table)}"
                )

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except self._refused as exc:
            raise QueryRefused(first_line(exc)) from None

    def _sql(self, sql: str, params: Params | None) -> Any:
        """``sql`` as a DataFrame (a statement runs now); ``:name`` markers bound by Spark."""
        return self._spark.sql(sql, args=dict(params) if params else None)

    def columns(self, sql: str) -> list[str]:
        with self._guard():
            return list(self._sql(sql, None).columns)

    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        with self._guard():
            return [tuple(row) for row in self._sql(sql, params).collect()]

    def execute(self, sql: str, params: Params | None = None) -> None:
        with self._guard():
            self._sql(sql, params)

    def stream(
        self, sql: str, params: Params | None = None, *, size: int
    ) -> Iterator[Sequence[Any]]:
        del size  # Spark hands the driver one partition at a time
        with self._guard():
            yield from self._sql(sql, params).toLocalIterator(prefetchPartitions=True)

    def create_snapshot(self, table: str) -> None:
        schema, name = table.rsplit(".", 1)
        folder = self._warehouse / schema
        self.execute(f"create database if not exists {schema} location {_path(folder)}")
        self.execute(
            f"create table if not exists {table} ({_SNAPSHOT_COLUMNS}) using parquet "
            f"location {_path(folder / name)}"
        )

    def claim_snapshot(self, table: str, target: str) -> bool:
        """Compact the log before the run's diff reads it; nothing locks it (one run at a
        time per snapshot is the user's to keep)."""
        del target
        self.compact_snapshot(table)
        return True

    def compact_snapshot(self, table: str) -> bool:
        """Rewrite the snapshot log ``table`` as its live entries if it has grown (see the
        module's docstring); True if it did. A failure is an ``OutputError`` after which
        the log reads as before."""
        folder = self._warehouse.joinpath(*table.rsplit(".", 1))
        staging = folder / _STAGING
        try:
            shutil.rmtree(staging, ignore_errors=True)  # what a killed compaction staged
            with self._guard():
                # the files Spark reads, each with its last version (-1: no entry)
                files = {
                    unquote(path.rsplit("/", 1)[-1]): -1
                    for path in self._spark.table(table).inputFiles()
                }
                last = f"select _metadata.file_name, max(version) from {table} group by 1"
                files.update({name: int(version) for name, version in self.rows(last)})
                [(entries, live)] = self.rows(
                    "select coalesce(sum(n), 0), count_if(not gone) from (select count(*) as n,"
                    f" max_by(gone, version) as gone from {table} group by target, pk) as k"
                )
                if entries <= 2 * live and len(files) <= COMPACT_FILES:
                    return False
                latest = (
                    "select *, row_number() over (partition by target, pk order by version "
                    f"desc) as n from {table}"
                )
                kept = f"select target, pk, fp, replay, version, gone from ({latest}) as e"
                self._sql(f"{kept} where n = 1 and not gone", None).write.parquet(str(staging))
            _move_in(staging, folder)
            _remove(folder, sorted(files, key=files.__getitem__))
            shutil.rmtree(staging)
            self.execute(f"refresh table {table}")
        except (OSError, QueryRefused) as exc:
            raise OutputError(
                f"cannot compact the snapshot log {folder} (it reads as before; the next run "
                f"compacts it): {first_line(exc)}"
            ) from None
        log.info(
            "compacted the snapshot log %s: %d entries in %d files to its %d live keys",
            table,
            entries,
            len(files),
            live,
        )
        return True

    def snapshot_select(self, table: str) -> str:
        latest = (
            "select pk, fp, replay, gone, "
            "row_number() over (partition by pk order by version desc) as n "
            f"from {table} where target = :target"
        )
        return f"select pk, fp, replay from ({latest}) as e where n = 1 and not gone"

    def record(self, table: str, target: str, drop: Sequence[str], put: Sequence[Recorded]) -> None:
        with self._guard():
            if self._version is None:
                self._version = int(
                    self.rows(f"select coalesce(max(version), 0) from {table}")[0][0]
                )
            first = self._version + 1
            entries: list[tuple[str, str, str, str | None, int, bool]]
            entries = [(target, pk, "", None, first + i, True) for i, pk in enumerate(drop)]
            first += len(drop)  # a key dropped and put again: the put comes after
            entries += [(target, r.pk, r.fp, r.replay, first + i, False) for i, r in enumerate(put)]
            if not entries:
                return
            frame = self._spark.createDataFrame(entries, schema=_SNAPSHOT_COLUMNS)
            frame.coalesce(1).write.insertInto(table)
            self._version = first + len(put) - 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._started:
                self._spark.stop()
        shutil.rmtree(self._work, ignore_errors=True)


def _master(spec: SourceSpec) -> str:
    master = spec.url.host or "local[*]"
    if not _MASTER.fullmatch(master):
        raise MappingError(
            spec.mapping,
            "/source/url",
            f"Spark in local mode: spark://local[N]?warehouse=DIR (not the master {master})",
        )
    return master


def _warehouse(spec: SourceSpec) -> Path:
    folder = spec.url.query.get("warehouse")
    if not isinstance(folder, str) or not folder:
        raise MappingError(
            spec.mapping,
            "/source/url",
            "a Spark URL with its warehouse folder: spark://local[N]?warehouse=DIR",
        )
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise InputError(f"the Spark warehouse folder {path} does not exist")
    return path


def _move_in(staging: Path, folder: Path) -> None:
    """The compacted files into the log's folder, each by a rename (its checksum first:
    Hadoop checks a file against the ``.crc`` beside it, if any)."""
    for data in sorted(staging.glob("*.parquet")):
        checksum = staging / f".{data.name}.crc"
        if checksum.exists():
            checksum.replace(folder / checksum.name)
        data.replace(folder / data.name)


def _remove(folder: Path, names: Sequence[str]) -> None:
    """The log's files ``names``, in this order (each with its checksum)."""
    for name in names:
        (folder / name).unlink(missing_ok=True)
        (folder / f".{name}.crc").unlink(missing_ok=True)


def _path(path: Path) -> str:
    """A folder as a Spark string literal (backslashes are escapes there)."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"

"""A warehouse query as the runner's ``Source``: its changes as events, its answers kept.

``WarehouseSource.prepare`` connects, checks the query (its columns, its primary key:
present, never null, never twice) and diffs it against the snapshot of the target
audience (``snapshot``), all before any call to the destination. The runner then reads
the changes as NDJSON lines: first every removal ("Row Removed": rows that left, carrying
the replay fields recorded for them, and the old side of changed rows), then, once every
removal is answered (the pipeline's barrier), every addition ("Row Added": the row's
columns). As the destination answers, the source records what it accepted, one
transaction per answered batch, so a killed run resends at most the batches in flight
and a rejected row is tried again next run.

The snapshot lives in a DuckDB file under ``--state`` (a DuckDB source is attached to it
and diffed in place; another engine's rows are streamed into it as Arrow batches of
text), or with ``state_schema`` in the source database itself, where the diff is one
query and only changed rows leave it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from destination.errors import ConfigurationError, InputError, MappingError
from destination.kit.destination import MirroredSession
from destination.runner.pipeline import Accepted
from destination.warehouse import snapshot
from destination.warehouse.engines import (
    DuckDBEngine,
    Engine,
    QueryRefused,
    Recorded,
    RowSource,
    key_text,
    open_engine,
    refused,
    split_key,
)
from destination.warehouse.spec import SourceSpec

__all__ = ["RESERVED_COLUMNS", "STATE_FILE", "WarehouseSource"]

log = logging.getLogger(__name__)

STATE_FILE = "warehouse.duckdb"
RESERVED_COLUMNS = ("event", "context")  # what every row's event sets itself
MEMORY_LIMIT = "160MB"  # DuckDB's: beyond it, the diff spills to the state directory
FETCH_ROWS = 10_000


class _Line(NamedTuple):
    """What the source remembers of a line until it is finished."""

    kind: str  # added, changed, removed, listed
    removal: bool  # the line removes (else it adds)
    pk: str
    fp: str


class WarehouseSource:
    """The changes of a warehouse query, for one target of a mirroring session."""

    def __init__(
        self,
        spec: SourceSpec,
        session: MirroredSession,
        *,
        state: Path | None,
        dry_run: bool,
    ) -> None:
        self._spec = spec
        self._session = session
        self._state = state
        self._dry_run = dry_run
        self._target = session.mirror_target()
        self._tag = session.identity_tag()
        self._held = contextlib.ExitStack()
        self._engine: Engine | None = None  # where the snapshot and the diff are
        self._table = ""
        self._snapshot = ""  # SQL of the target's snapshot rows
        self._plan: snapshot.Plan | None = None
        self._lines: dict[int, _Line] = {}
        self._failed_removals: set[str] = set()
        self._drop: list[str] = []
        self._put: list[Recorded] = []
        self._recorded = 0  # snapshot rows written or dropped by this run
        self._null_keys = 0  # rows without a key, met while staging another engine's rows

    # -- before any call ----------------------------------------------------------------

    def prepare(self) -> snapshot.Plan:
        """Connect, check the query and diff it: the plan of the run."""
        spec = self._spec
        if spec.state_schema is None and self._state is None:
            raise ConfigurationError(
                f"{spec.mapping}: a warehouse sync keeps what the audience holds in --state "
                "DIR (or, with source.state_schema, in the source database): give --state"
            )
        try:
            self._plan = self._prepare()
        except QueryRefused as exc:
            self.close()
            raise refused(spec, exc) from None
        except BaseException:
            self.close()
            raise
        return self._plan

    def _prepare(self) -> snapshot.Plan:
        spec = self._spec
        source, diff_engine = self._engines()
        self._engine = diff_engine
        columns = source.columns(spec.query)
        self._check_columns(columns)
        if isinstance(source, Engine):
            self._check_keys(source)
            current = source.dialect.current(spec.query, spec.primary_key, self._tag)
            if source is not diff_engine:  # rows of another engine, into the local DuckDB
                assert isinstance(diff_engine, DuckDBEngine)
                current = self._stage(source.stream(current, size=FETCH_ROWS), diff_engine)
        else:  # an engine without tested templates: rows made into keys here
            assert isinstance(diff_engine, DuckDBEngine)
            current = self._stage(self._keyed(source, columns), diff_engine)
            self._check_keys(diff_engine, query="select pk from wh_work.wh_current", staged=True)
        if spec.state_schema is not None:
            self._table = f"{spec.state_schema}.{snapshot.TABLE}"
            if spec.engine == "duckdb":
                self._table = f"wh_source.{self._table}"
        else:
            self._table = f"wh_state.main.{snapshot.TABLE}"
        snapshot_sql = self._snapshot = self._snapshot_sql(diff_engine)
        params = {"target": self._target}
        if spec.sync_mode == "remove":
            return snapshot.listed(diff_engine, current=current)
        return snapshot.diff(
            diff_engine,
            current=current,
            snapshot=snapshot_sql,
            removals=spec.sync_mode == "mirror",
            params=params,
        )

    def _engines(self) -> tuple[Engine | RowSource, Engine]:
        """The source's engine and the one the diff runs in (the same, or the state
        directory's DuckDB)."""
        spec = self._spec
        local = spec.state_schema is None
        temp = self._temp_directory()
        if spec.engine == "duckdb":
            attach: dict[str, tuple[Path | str, bool]] = {}
            database = spec.url.database or ":memory:"
            if database != ":memory:":
                if not Path(database).is_file():
                    raise InputError(f"the DuckDB file {database} does not exist")
                # read-only unless the snapshot lives in it
                attach["wh_source"] = (database, local or self._dry_run)
            if local:
                attach["wh_state"] = self._state_file()
            engine = DuckDBEngine(
                memory_limit=MEMORY_LIMIT,
                temp_directory=temp,
                attach=attach,
                use="wh_source" if "wh_source" in attach else None,
            )
            self._held.callback(engine.close)
            return engine, engine
        source = open_engine(spec)
        self._held.callback(source.close)
        if not local:
            if not isinstance(source, Engine):
                raise MappingError(
                    spec.mapping,
                    "/source/state_schema",
                    f"no state_schema on {spec.engine}: the snapshot can live in DuckDB, "
                    "PostgreSQL or Spark; leave it out to keep it under --state",
                )
            return source, source
        state = DuckDBEngine(
            memory_limit=MEMORY_LIMIT,
            temp_directory=temp,
            attach={"wh_state": self._state_file()},
        )
        self._held.callback(state.close)
        return source, state

    def _state_file(self) -> tuple[Path | str, bool]:
        """The local snapshot file; a dry run on a first sync reads an empty one."""
        assert self._state is not None
        path = self._state / STATE_FILE
        if self._dry_run and not path.exists():
            return ":memory:", False
        return path, self._dry_run

    def _temp_directory(self) -> Path:
        """Where DuckDB spills beyond its memory limit: the state directory, else a
        temporary directory of the run."""
        if self._state is not None and not self._dry_run:
            path = self._state / "duckdb.tmp"
            path.mkdir(parents=True, exist_ok=True)
            return path
        return Path(self._held.enter_context(tempfile.TemporaryDirectory(prefix="wh-")))

    def _snapshot_sql(self, engine: Engine) -> str:
        """SQL of the target's snapshot; created if missing and claimed for this run
        (``Engine.claim_snapshot``), except by a dry run, which reads a missing one as
        empty and changes nothing."""
        try:
            engine.rows(f"select count(*) from {self._table} where 1 = 0")
        except QueryRefused:
            if self._dry_run:
                text = engine.dialect.text_type
                return (
                    f"select cast(null as {text}) as pk, cast(null as {text}) as fp, "
                    f"cast(null as {text}) as replay where 1 = 0"
                )
            engine.create_snapshot(self._table)
        if not self._dry_run and not engine.claim_snapshot(self._table, self._target):
            raise ConfigurationError(
                f"{self._spec.mapping}: another sync of this audience ({self._target}) is "
                "running against its snapshot; wait for it"
            )
        return engine.snapshot_select(self._table)

    def _check_columns(self, columns: Sequence[str]) -> None:
        spec = self._spec
        missing = [c for c in spec.primary_key if c not in columns]
        if missing:
            raise MappingError(
                spec.mapping,
                "/source/primary_key",
                f"columns of the query ({', '.join(columns)}); {', '.join(missing)} is not",
            )
        reserved = [c for c in columns if c in RESERVED_COLUMNS]
        if reserved:
            raise MappingError(
                spec.mapping,
                "/source/query",
                f"a query without the columns {' and '.join(RESERVED_COLUMNS)}, which each "
                f"row's event sets (rename {', '.join(reserved)} with AS)",
            )
        if len(set(columns)) != len(columns):
            raise MappingError(
                spec.mapping, "/source/query", "a query whose columns differ in name"
            )

    def _check_keys(self, source: Engine, *, query: str = "", staged: bool = False) -> None:
        """No row without its key, no key twice: stop before any call, naming them. On
        ``staged`` rows (``query`` gives their ``pk``) rows without a key were counted
        while staging."""
        spec = self._spec
        if staged:
            count = self._null_keys
            key = "q.pk"
        else:
            query = spec.query
            quoted = [source.dialect.quote(c) for c in spec.primary_key]
            nulls = " or ".join(f"q.{c} is null" for c in quoted)
            count = source.rows(f"select count(*) from ({query}) as q where {nulls}")[0][0]
            key = source.dialect.key(spec.primary_key)
        if count:
            raise MappingError(
                spec.mapping,
                "/source/primary_key",
                f"a key every row has; {count} rows have none (null)",
            )
        twice = source.rows(
            f"select {key}, count(*) from ({query}) as q group by {key} "
            "having count(*) > 1 order by 1 limit 10"
        )
        if twice:
            shown = ", ".join(f"{self._shown_key(str(k))} ({n} rows)" for k, n in twice)
            raise MappingError(
                spec.mapping,
                "/source/primary_key",
                f"a key no two rows share; these are duplicated: {shown}",
            )

    def _keyed(self, source: RowSource, columns: Sequence[str]) -> Iterator[Sequence[Any]]:
        """The query's rows as ``(pk, fp, row)`` made here: the key's columns as text
        joined by the unit separator, the row as JSON (values JSON cannot hold, such as
        decimals, as text), the fingerprint the MD5 of the settings tag and that JSON."""
        spec = self._spec
        at = [columns.index(c) for c in spec.primary_key]
        for values in source.stream(f"select * from ({spec.query}) as q", size=FETCH_ROWS):
            key = [values[i] for i in at]
            if any(v is None for v in key):
                self._null_keys += 1
                continue
            row = orjson.dumps(dict(zip(columns, values, strict=True)), default=str).decode()
            # a change detector like the engines' md5(), not a protection
            fingerprint = hashlib.md5((self._tag + row).encode(), usedforsecurity=False).hexdigest()
            yield key_text(key), fingerprint, row

    def _stage(self, rows: Iterator[Sequence[Any]], local: DuckDBEngine) -> str:
        """Stream ``rows`` (key, fingerprint, row) of another engine into the local
        DuckDB, in batches; the SQL of the staged rows."""
        local.execute("create table wh_work.wh_current (pk varchar, fp varchar, row varchar)")
        batch: list[Sequence[Any]] = []
        read = 0
        for row in rows:
            batch.append(row)
            if len(batch) >= FETCH_ROWS:
                local.load("wh_work.wh_current", ("pk", "fp", "row"), batch)
                read += len(batch)
                batch = []
        if batch:
            local.load("wh_work.wh_current", ("pk", "fp", "row"), batch)
            read += len(batch)
        log.info("read %d rows from %s", read, self._spec.shown_url)
        return "select pk, fp, row from wh_work.wh_current"

    # -- the runner's Source ------------------------------------------------------------

    def fingerprint(self, mapping: Path) -> dict[str, Any]:
        return {"warehouse": self._target, "query": self._spec.query_fingerprint}

    def paths(self) -> Mapping[str, Path]:
        spec = self._spec
        files: dict[str, Path] = {}
        if spec.engine == "duckdb" and spec.url.database not in (None, "", ":memory:"):
            files["the DuckDB source"] = Path(str(spec.url.database))
        if self._state is not None and spec.state_schema is None:
            files["the warehouse snapshot"] = self._state / STATE_FILE
        return files

    def size(self) -> int | None:
        return None

    @contextlib.contextmanager
    def open(
        self, *, resume: dict[str, Any] | None, hold_from_line: int, where: str
    ) -> Iterator[_Changes]:
        del resume, hold_from_line, where  # the snapshot is this source's checkpoint
        plan = self._plan
        total = None if plan is None else self._line_count(plan)
        yield _Changes(self._events(), total)
        self._record()

    def listener(self) -> WarehouseSource:
        return self

    def _events(self) -> Iterator[bytes]:
        assert self._engine is not None
        number = 0
        if self._spec.sync_mode == "remove":
            phases: list[tuple[Sequence[str], bool]] = [(("listed",), True)]
        elif self._spec.sync_mode == "mirror":
            phases = [(("removed", "changed"), True), (("added", "changed"), False)]
        else:
            phases = [(("added", "changed"), False)]
        for kinds, removal in phases:
            recorded = self._snapshot if removal and self._spec.sync_mode == "mirror" else None
            changes = snapshot.read_changes(
                self._engine,
                kinds,
                snapshot=recorded,
                params={"target": self._target},
                size=FETCH_ROWS,
            )
            for change in changes:
                number += 1
                self._lines[number] = _Line(change.kind, removal, change.pk, change.fp)
                yield orjson.dumps(self._event(change, removal)) + b"\n"

    def _event(self, change: snapshot.Change, removal: bool) -> dict[str, Any]:
        key = self._primary_key(change.pk)
        context = {"warehouse": {"change": change.kind, "primary_key": key}}
        if removal and change.kind != "listed":  # a row as recorded: its replay fields
            fields = orjson.loads(change.replay) if change.replay else {}
            return {**fields, "event": "Row Removed", "context": context}
        row = orjson.loads(change.row) if change.row else {}
        return {**row, "event": "Row Removed" if removal else "Row Added", "context": context}

    def _primary_key(self, pk: str) -> dict[str, str]:
        names = self._spec.primary_key
        return dict(zip(names, split_key(pk, len(names)), strict=False))

    def _shown_key(self, pk: str) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._primary_key(pk).items())

    # -- the pipeline's Listener ---------------------------------------------------------

    def _line_count(self, plan: snapshot.Plan) -> int:
        """The events the plan makes: a changed row is a removal and an addition in
        mirror mode."""
        if self._spec.sync_mode == "mirror":
            return plan.added + plan.removed + 2 * plan.changed
        return plan.removed if self._spec.sync_mode == "remove" else plan.added + plan.changed

    def barrier(self) -> int | None:
        plan = self._plan
        if plan is None or self._spec.sync_mode != "mirror":
            return None
        removals = plan.removed + plan.changed
        return removals + 1 if removals and plan.added + plan.changed else None

    def finished(self, number: int, delivered: bool, accepted: Sequence[Accepted]) -> None:
        line = self._lines.pop(number, None)
        if line is None:
            return
        if line.removal:
            if delivered:  # not held any more; a changed row's addition records it anew
                self._drop.append(line.pk)
            elif line.kind == "changed":  # the old identifiers may still be held: keep it
                self._failed_removals.add(line.pk)
            return
        if not delivered or line.pk in self._failed_removals:
            return
        replay: dict[str, Any] = {}
        for subscription, item in accepted:
            replay = {**(self._session.replay_fields(subscription, item) or {}), **replay}
        self._put.append(Recorded(line.pk, line.fp, orjson.dumps(replay).decode()))

    def rejected_view(self, number: int) -> dict[str, Any] | None:
        line = self._lines.get(number)
        if line is None:
            return None
        return {
            "primary_key": self._primary_key(line.pk),
            "change": line.kind,
            "action": "remove" if line.removal else "add",
        }

    def answered(self) -> None:
        self._record()

    def _record(self) -> None:
        """Commit what the destination accepted since the last commit."""
        if not (self._drop or self._put) or self._dry_run:
            return
        assert self._engine is not None
        self._engine.record(self._table, self._target, self._drop, self._put)
        self._recorded += len(self._drop) + len(self._put)
        self._drop, self._put = [], []

    # -- after ----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        plan = self._plan
        spec = self._spec
        counts = (
            {}
            if plan is None
            else {
                "added": plan.added,
                "removed": plan.removed,
                "changed": plan.changed,
                "unchanged": plan.unchanged,
            }
        )
        return {
            **counts,
            "source": {
                "engine": spec.engine,
                "query": spec.query_fingerprint,
                "sync_mode": spec.sync_mode,
                "state": "in the source database" if spec.state_schema else "local",
                "held_before": None if plan is None else plan.held,
                "recorded": self._recorded,
                "samples": {} if plan is None else plan.samples,
            },
        }

    def close(self) -> None:
        self._held.close()


class _Changes:
    """The changes as an ``Opened``: NDJSON lines, one ``readline`` at a time; its
    ``raw`` tells the progress meter how many of the plan's changes were read."""

    unit = "changes"

    def __init__(self, lines: Iterator[bytes], total: int | None) -> None:
        self._lines = lines
        self._total = total
        self._read = 0

    def readline(self, size: int = -1, /) -> bytes:
        del size  # a line longer than the limit is the runner's to reject
        line = next(self._lines, b"")
        self._read += bool(line)
        return line

    def position(self) -> dict[str, Any] | None:
        return None

    def progress(self) -> tuple[int, int | None]:
        return self._read, self._total

    @property
    def raw(self) -> _Changes:
        return self

"""What a target audience holds, and the diff of a query's rows against it, as SQL.

The snapshot has one row per primary key the destination accepted: the key (text), the
fingerprint of the row as read (MD5 of the settings tag and the row's JSON, by the
engine's own functions) and the replay fields (what reaches the same person again:
TikTok's accepted hashes). The diff is one statement in the engine that holds the
snapshot, leaving only the changed rows in a table of the run: each with its kind
(``added``, ``removed``, ``changed``) and, for the rows that were held, the replay fields.
Nothing of the table passes through Python but those changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from destination.warehouse.engines import Engine

__all__ = ["TABLE", "Change", "Plan", "diff", "listed", "read_changes"]

TABLE = "tiktok_audiences_snapshot"
SAMPLES = 5  # primary keys shown per kind in a plan


@dataclass(frozen=True)
class Plan:
    """The diff's counts (rows), a few keys of each kind, and the rows held before."""

    added: int
    removed: int
    changed: int
    unchanged: int
    held: int
    samples: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One changed row: its kind, key, fingerprint and row (JSON text; empty and None for
    a row that left) and the replay fields recorded for it (JSON text, None for a new
    row)."""

    kind: str
    pk: str
    fp: str
    row: str | None
    replay: str | None


def diff(
    engine: Engine,
    *,
    current: str,
    snapshot: str,
    removals: bool,
    params: dict[str, Any],
) -> Plan:
    """Diff ``current`` (SQL of ``pk, fp, row``) against ``snapshot`` (SQL of the target's
    ``pk, fp, replay``) into the run's changes table, and count. Without ``removals``
    (``add`` mode) rows that left are counted but not kept as changes."""
    kinds = (
        "case when s.pk is null then 'added' when c.pk is null then 'removed' else 'changed' end"
    )
    left = "" if removals else " and c.pk is not null"
    # the join carries keys and fingerprints only: the replay fields (a few hundred bytes a
    # row) are joined to the few changed rows as they are read (``read_changes``)
    select = (
        f"with c as ({current}), s as (select s0.pk, s0.fp from ({snapshot}) as s0) "
        f"select {kinds} as kind, coalesce(c.pk, s.pk) as pk, c.fp as fp, c.row as row "
        "from c full outer join s on c.pk = s.pk "
        f"where (s.pk is null or c.pk is null or c.fp <> s.fp){left}"
    )
    engine.execute(engine.dialect.temporary.format(select=select), params)
    counts = dict(engine.rows(f"select kind, count(*) from {engine.dialect.changes} group by kind"))
    held = engine.rows(f"select count(*) from ({snapshot}) as s", params)[0][0]
    samples: dict[str, list[str]] = {}
    for kind in counts:
        rows = engine.rows(
            f"select pk from {engine.dialect.changes} where kind = :kind "
            f"order by pk limit {SAMPLES}",
            {"kind": kind},
        )
        samples[str(kind)] = [str(r[0]) for r in rows]
    removed = int(counts.get("removed", 0))
    changed = int(counts.get("changed", 0))
    if not removals:  # rows that left, counted to know the unchanged ones
        removed = int(engine.rows(_left_count(current, snapshot), params)[0][0])
    return Plan(
        added=int(counts.get("added", 0)),
        removed=removed if removals else 0,
        changed=changed,
        unchanged=int(held) - removed - changed,
        held=int(held),
        samples=samples,
    )


def _left_count(current: str, snapshot: str) -> str:
    return (
        f"with c as ({current}), s as ({snapshot}) "
        "select count(*) from s left join c on c.pk = s.pk where c.pk is null"
    )


def listed(engine: Engine, *, current: str) -> Plan:
    """``remove`` mode: every row the query returns is a change (kind ``listed``)."""
    select = f"select 'listed' as kind, c.pk as pk, c.fp as fp, c.row as row from ({current}) as c"
    engine.execute(engine.dialect.temporary.format(select=select))
    count = int(engine.rows(f"select count(*) from {engine.dialect.changes}")[0][0])
    rows = engine.rows(f"select pk from {engine.dialect.changes} order by pk limit {SAMPLES}")
    return Plan(0, count, 0, 0, 0, {"listed": [str(r[0]) for r in rows]})


def read_changes(
    engine: Engine,
    kinds: Sequence[str],
    *,
    snapshot: str | None,
    params: dict[str, Any],
    size: int,
) -> Iterator[Change]:
    """The changes of ``kinds``, streamed; with ``snapshot`` (its SQL, as for ``diff``),
    each with the replay fields recorded for its key."""
    names = ", ".join(f"'{k}'" for k in kinds)
    changes = engine.dialect.changes
    if snapshot is None:
        sql = f"select c.kind, c.pk, c.fp, c.row, null as replay from {changes} as c"
        params = {}
    else:
        sql = (
            f"select c.kind, c.pk, c.fp, c.row, s.replay from {changes} as c "
            f"left join ({snapshot}) as s on s.pk = c.pk"
        )
    sql += f" where c.kind in ({names})"
    for kind, pk, fp, row, replay in engine.stream(sql, params, size=size):
        yield Change(str(kind), str(pk), fp or "", row, replay)

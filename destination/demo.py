"""``tiktok-audiences demo``: a whole sync against the embedded fake TikTok, no account.

Starts the fake server on a free loopback port, syncs the sample events of
``fixtures/demo`` through the shipped native and legacy mapping files over real HTTP,
mirrors the active customers of ``fixtures/demo/customers.duckdb`` into an audience
twice with a change in between (the second run sends only the change), and prints each
summary and what the fake TikTok now holds per audience.

Its files (rejected events, the audience state) live in a temporary folder deleted at
the end: each run starts from a fresh fake TikTok, so kept files would only describe
audiences that no longer exist. The report therefore shows the rejected events inline
and names no path in that folder.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from destination.fake_server import FakeTikTok, serve_in_thread
from destination.resources import data_dir
from destination.runner.sync import SyncOptions, run_sync
from destination.tiktok.dmp.commands import audiences_apply, audiences_plan
from destination.tiktok.dmp.plan import KINDS
from destination.tiktok.manage import ManageOptions

__all__ = [
    "DEMO_ADVERTISER_ID",
    "DEMO_APP_ID",
    "DEMO_APP_SECRET",
    "DEMO_TOKEN",
    "demo_fake",
    "run_demo",
]

DEMO_ADVERTISER_ID = "7000000000000000001"
DEMO_TOKEN = "demo-access-token"  # noqa: S105 (accepted by the fake server only)
# A developer app the fake server knows, to try `auth login` against it by hand.
DEMO_APP_ID = "7100000000000000001"
DEMO_APP_SECRET = "demo-app-secret"  # noqa: S105 (accepted by the fake server only)
DEMO_LEGACY_AUDIENCE = "Newsletter subscribers"
DEMO_PARTNER_ID = "7000000000000000002"  # the same Business Center: audiences are shared with it
DEMO_WAREHOUSE_AUDIENCE = "Active customers (warehouse)"
CREATE_AUDIENCE = "Create Audience"  # the legacy mapping file's subscription name
TEMPORARY_FILE = "<a temporary file, deleted after the demo: its lines are shown below>"


class DemoClock:
    """The fake's clock: this machine's, plus days the demo lets pass (audiences take
    24-48 hours to fill at TikTok, and so at the fake)."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped


def demo_fake(
    *, keep_requests: int | None = None, clock: Callable[[], float] = time.monotonic
) -> FakeTikTok:
    """A fake TikTok with the demo advertiser, token, app and the legacy demo audience,
    and a second advertiser of the same Business Center (audiences are shared with it).

    The audience gets the fake's first id, ``1800000000000000001``: the one the shipped
    ``mappings/segment-legacy.json`` names. ``keep_requests`` as in ``FakeTikTok``.
    """
    fake = FakeTikTok(keep_requests=keep_requests, clock=clock)
    fake.add_advertiser(DEMO_ADVERTISER_ID, name="Demo advertiser")
    fake.add_advertiser(DEMO_PARTNER_ID, name="Demo agency")
    fake.add_token(DEMO_TOKEN, advertiser_ids=[DEMO_ADVERTISER_ID])
    fake.add_app(DEMO_APP_ID, DEMO_APP_SECRET, [DEMO_ADVERTISER_ID], name="Demo app")
    fake.add_audience(DEMO_ADVERTISER_ID, DEMO_LEGACY_AUDIENCE)
    return fake


def run_demo(out: IO[str], *, work_dir: Path | None = None) -> int:
    """Run the demo, writing a readable report to ``out``; 0 when every summary adds up."""
    clock = DemoClock()
    fake = demo_fake(clock=clock)
    fixtures = data_dir("fixtures") / "demo"
    mappings = data_dir("mappings")
    ok = True
    with (
        tempfile.TemporaryDirectory(prefix="tiktok-audiences-demo-") as tmp,
        serve_in_thread(fake) as server,
    ):
        work = work_dir or Path(tmp)
        environ = {
            "TIKTOK_ACCESS_TOKEN": DEMO_TOKEN,
            "TIKTOK_API_BASE_URL": server.base_url,
            "TIKTOK_AUDIENCE_STATE": str(work / "audiences.json"),
        }
        out.write(f"Fake TikTok Marketing API listening on {server.base_url}\n")
        for mode in ("native", "legacy"):
            rejected = work / f"{mode}-rejected.ndjson"
            summary = run_sync(
                SyncOptions(
                    mapping=mappings / f"segment-{mode}.json",
                    events=str(fixtures / f"{mode}-events.ndjson"),
                    rejected=rejected,
                ),
                environ=environ,
            )
            ok = ok and summary["received"] == summary["delivered"] + summary["rejected"]
            if work_dir is None:
                summary["rejected_file"] = TEMPORARY_FILE
            out.write(f"\n== {mode} instance: mappings/segment-{mode}.json\n")
            out.write(json.dumps(summary, indent=2) + "\n")
            note = _creations_note(summary)
            if note:
                out.write(note + "\n")
            for line in rejected.read_text("utf-8").splitlines():
                record = json.loads(line)
                out.write(
                    f"  rejected line {record['line']}: {record['reason']}: {record['message']}\n"
                )
        ok = _warehouse_part(fake, fixtures, work, environ, out) and ok
        _audiences_part(clock, work, environ, out)
        out.write("\n== what the fake TikTok now holds\n")
        for audience in fake.audiences():
            counts = ", ".join(
                f"{id_type} {len(hashes)}" for id_type, hashes in sorted(audience.members.items())
            )
            out.write(
                f"  {audience.audience_id}  {audience.name!r} (advertiser "
                f"{audience.advertiser_id}): {counts or 'no members'}\n"
            )
        out.write(f"\n{len(fake.requests)} requests reached the fake server.\n")
    return 0 if ok else 1


def _warehouse_part(
    fake: FakeTikTok, fixtures: Path, work: Path, environ: dict[str, str], out: IO[str]
) -> bool:
    """A warehouse query mirrored into a new audience twice, a change in between: the
    second run sends only the change. Runs on a copy of ``customers.duckdb``."""
    import duckdb  # noqa: PLC0415 (the rest of the demo does not need it)

    database = work / "customers.duckdb"
    shutil.copyfile(fixtures / "customers.duckdb", database)
    audience_id = fake.add_audience(DEMO_ADVERTISER_ID, DEMO_WAREHOUSE_AUDIENCE)
    document = json.loads((data_dir("mappings") / "warehouse-duckdb.json").read_text("utf-8"))
    document["settings"]["audience_id"] = audience_id
    document["source"]["url"] = f"duckdb:///{database}"
    mapping = work / "warehouse-duckdb.json"
    mapping.write_text(json.dumps(document), "utf-8")
    ok = True
    changes = (
        "update customers set email = 'ada@new.example.com' where id = 1",
        "update customers set active = false where id = 2",
        "insert into customers values (8, 'margaret@example.com', null, null, null, true)",
    )
    for run, step in enumerate(("first run: every active customer", "second run: the changes")):
        if run == 1:
            with duckdb.connect(str(database)) as connection:
                for statement in changes:
                    connection.execute(statement)
            out.write("\n   changed in the warehouse:\n")
            out.writelines(f"     {statement}\n" for statement in changes)
        rejected = work / f"warehouse-rejected-{run}.ndjson"
        summary = run_sync(
            SyncOptions(mapping=mapping, events=None, rejected=rejected, state=work / "state"),
            environ=environ,
        )
        ok = ok and summary["received"] == summary["delivered"] + summary["rejected"]
        out.write(
            f"\n== warehouse, {step}: mappings/warehouse-duckdb.json on fixtures/demo/"
            "customers.duckdb (mirror mode)\n"
        )
        shown = {k: summary[k] for k in _WAREHOUSE_KEYS}
        out.write(json.dumps(shown, indent=2) + "\n")
        for line in rejected.read_text("utf-8").splitlines():
            record = json.loads(line)
            out.write(
                f"  rejected row {record['primary_key']}: {record['reason']}: {record['message']}\n"
            )
    return ok


def _audiences_part(clock: DemoClock, work: Path, environ: dict[str, str], out: IO[str]) -> None:
    """Audiences as code: plan, apply, two days later apply again (the lookalike waited
    for its source to fill), then plan again: nothing left to do."""
    definitions = work / "audiences"
    shutil.copytree(data_dir("fixtures") / "audiences", definitions)
    out.write(
        "\n== audiences as code: fixtures/audiences (one definition per type) -> "
        "plan, apply, apply again two days later, plan\n"
    )
    commands = {"TIKTOK_ADVERTISER_ID": DEMO_ADVERTISER_ID, **environ}

    def run(step: str, command: Callable[[ManageOptions], None]) -> dict[str, Any]:
        said = io.StringIO()
        printed = io.StringIO()
        command(ManageOptions(environ=commands, out=printed, err=said))
        lines = printed.getvalue().splitlines()
        out.write(f"\n-- {step}\n")
        out.writelines(f"   {line}\n" for line in [*lines[:-1], *said.getvalue().splitlines()])
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    run("plan", lambda o: audiences_plan(o, definitions, prune=False))
    run("apply", lambda o: audiences_apply(o, definitions, prune=False))
    clock.skipped += 2 * 24 * 3600  # the fake's audiences fill in 24-48 hours
    run("two days later: apply again", lambda o: audiences_apply(o, definitions, prune=False))
    last = run("plan again", lambda o: audiences_plan(o, definitions, prune=False))
    changes = sum(last[kind] for kind in KINDS if kind != "unchanged")
    out.write(f"   {changes} changes left, {last['unchanged']} audiences unchanged\n")


# what the demo shows of a warehouse sync's summary
_WAREHOUSE_KEYS = (
    "added",
    "removed",
    "changed",
    "unchanged",
    "received",
    "delivered",
    "rejected",
    "requests",
    "source",
)


def _creations_note(summary: dict[str, Any]) -> str | None:
    """Why "Create Audience: 2" may stand beside one created audience, or None.

    ``delivered_by_subscription`` counts events: a Create Audience event naming an
    audience that exists (the legacy demo sends one twice) finds it and creates nothing.
    """
    events = summary["delivered_by_subscription"].get(CREATE_AUDIENCE, 0)
    created = sum(1 for audience in summary["audiences"] if audience["created"])
    if events <= created:
        return None
    return (
        f"  note: delivered_by_subscription counts events, not audiences: {events} "
        f"{CREATE_AUDIENCE} events, {created} audience{'' if created == 1 else 's'} "
        "created (an event naming an existing audience finds it, creating nothing)"
    )

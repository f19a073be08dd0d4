"""The ``workers`` setting: the same results, requests and files with or without workers.

Every comparison runs one input with ``workers`` 0 (all in the main process), 1 and 2
against a fresh fake TikTok, and asserts the summaries, the rejected files and the
requests (bodies, in order: concurrency 1) are equal.
"""

from __future__ import annotations

import codecs
import gc
import itertools
import json
import multiprocessing
import os
import pickle
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from destination.backends import ApiRequest, Backend
from destination.cli import main
from destination.demo import DEMO_ADVERTISER_ID, DEMO_TOKEN, demo_fake
from destination.errors import ConfigurationError, DestinationError
from destination.fake_server import FakeTikTok
from destination.gc_tuning import FEW_COLLECTIONS
from destination.runner import workers as workers_module
from destination.runner.run import workers_for
from destination.runner.source import NdjsonSource
from destination.runner.sync import SyncOptions, run_sync
from destination.settings import (
    AUTO_WORKERS_MIN_BYTES,
    Secret,
    Settings,
    resolve_settings,
)
from destination.tiktok.destination import load_mapping_file
from destination.tiktok.plugin import TikTokRecipe
from tests.clock import HANG_GUARD
from tests.fake_backends import AfterRequests, CrashAfter
from tests.test_sync import write_mapping

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
DEMO = ROOT / "fixtures" / "demo"
ADVERTISER = DEMO_ADVERTISER_ID


@dataclass
class Result:
    summary: dict[str, Any]
    rejected: str
    requests: list[tuple[str, str, Any]]


def run(
    tmp_path: Path,
    name: str,
    *,
    mapping: Path,
    events: Path,
    workers: int,
    backend: Backend | None = None,
    fake: FakeTikTok | None = None,
    dry_run: bool = False,
    state: Path | None = None,
    retry: bool = False,
) -> Result:
    """One sync in a directory of its own (audience state, rejected file)."""
    work = tmp_path / f"{name}-w{workers}"
    work.mkdir(exist_ok=True)
    fake = fake or demo_fake()
    audience_state = work / "audiences.json"
    summary = run_sync(
        SyncOptions(
            mapping=mapping,
            events=str(events),
            rejected=work / "rejected.ndjson",
            state=state,
            retry=work / "retry.ndjson" if retry else None,
            dry_run=dry_run,
            overrides={"audience_state": audience_state, "workers": workers},
        ),
        environ={"TIKTOK_ACCESS_TOKEN": DEMO_TOKEN, "TIKTOK_AUDIENCE_STATE": str(audience_state)},
        backend=None if dry_run else backend or fake,
    )
    assert summary["received"] == summary["delivered"] + summary["rejected"] + summary["deferred"]
    for key in ("rejected_file", "retry_file"):
        summary.pop(key)
    if retry:
        summary["retry_lines"] = (work / "retry.ndjson").read_bytes().count(b"\n")
        summary["retry_text"] = (work / "retry.ndjson").read_text("utf-8")
    return Result(
        summary,
        (work / "rejected.ndjson").read_text("utf-8"),
        [(r.method, r.path, r.json) for r in fake.requests],
    )


def same_with_workers(
    tmp_path: Path, name: str, counts: tuple[int, ...] = (1, 2), **kwargs: Any
) -> Result:
    """Run with workers 0 and each of ``counts``; all must be equal. The first result."""
    reference = run(tmp_path, name, workers=0, **kwargs)
    for workers in counts:
        result = run(tmp_path, name, workers=workers, **kwargs)
        assert result.summary == reference.summary, workers
        assert result.rejected == reference.rejected, workers
        assert result.requests == reference.requests, workers
    return reference


@pytest.mark.parametrize("mode", ["native", "legacy"])
def test_the_demo_fixtures_give_the_same_results_with_workers(tmp_path: Path, mode: str) -> None:
    mapping = write_mapping(tmp_path, mode)
    result = same_with_workers(
        tmp_path, mode, mapping=mapping, events=DEMO / f"{mode}-events.ndjson"
    )
    assert result.summary["delivered"] > 0
    assert result.requests


def test_values_of_every_json_kind_come_back_from_the_workers_unchanged(tmp_path: Path) -> None:
    # a worker hands its chunk's results back as JSON: text beyond ASCII, numbers of every
    # size, nested values and messages quoting them must arrive as the main process's own
    def create(name: Any) -> bytes:
        event = {"type": "track", "event": "Create Audience", "properties": {"audience_name": name}}
        return json.dumps(event, ensure_ascii=False).encode("utf-8")

    def entered(traits: dict[str, Any]) -> bytes:
        event = {"type": "track", "event": "Audience Entered", "context": {"traits": traits}}
        return json.dumps(event).encode("utf-8")

    lines = [
        create('Ünïcødé 🎯 "quoted"\n\ttabbed \\ back'),
        create(18446744073709551615),
        create(-9223372036854775808),
        create(1.5e-320),
        create({"nested": [1, 2.5, None, True, "x"]}),
        create(""),
        entered({"email": "JOSÉ.Ñandú@Example.com", "phone": "+49 30 901820"}),
        entered({"email": "ok@example.com", "phone": 14155552671}),
        entered({"email": ["a@b.co"], "phone": {"n": 1}}),
        b'"just a string"',
        b"[1, 2]",
        b'{"type": "track", "event": "\xff\xfe not UTF-8"}',
        b'{"type": "track", "event": "Audience Entered", "context": {"traits": {"email": ',
    ]
    events = tmp_path / "kinds.ndjson"
    events.write_bytes(b"\n".join(lines) + b"\n")
    result = same_with_workers(
        tmp_path, "kinds", counts=(1,), mapping=write_mapping(tmp_path, "legacy"), events=events
    )
    assert result.summary["received"] == len(lines)
    assert result.summary["delivered_by_subscription"] == {"Create Audience": 1, "Add Users": 1}
    assert result.summary["rejected_by_reason"] == {"invalid": 7, "invalid_json": 4}
    assert f"line 13 is not valid JSON (Expecting value, column {len(lines[-1]) + 1})" in (
        result.rejected
    )
    assert "Ünïcødé 🎯" in "".join(str(r[2]) for r in result.requests)


def user_event(user: int, *, entered: bool, **traits: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Audience Entered" if entered else "Audience Exited",
        "userId": f"u{user}",
        "properties": {},
        "context": {
            "personas": {
                "computation_class": "audience",
                "computation_key": f"aud_{user % 3}",
                "audience_settings": {"advertiserId": ADVERTISER},
            },
            "traits": traits or {"email": f"user{user}@example.com"},
        },
    }


def mixed_input(path: Path, n: int = 2500, seed: int = 7) -> Path:
    """Valid events (adds and removals flipping per user) among every kind of bad line."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    for i in range(n):
        user = rng.randrange(200)
        kind = rng.random()
        event: Any
        if kind < 0.03:
            lines.append(b"{not json")
            continue
        if kind < 0.04:
            lines.append(b"")  # blank: not an event
            continue
        if kind < 0.05:
            lines.append(b"[1, 2]")
            continue
        if kind < 0.06:
            lines.append(b'{"long": "' + b"x" * 1100 + b'"}')  # over max_event_bytes
            continue
        if kind < 0.10:
            event = {"type": "identify", "userId": f"u{user}", "traits": {"email": "a@b.co"}}
        elif kind < 0.13:
            event = user_event(user, entered=True, name="no identifiers")
        elif kind < 0.16:
            event = user_event(user, entered=True, email="not an email", phone="+14155550100")
        elif kind < 0.18:
            event = user_event(user, entered=False, email="also not an email")
        elif kind < 0.20:
            event = user_event(user, entered=True)
            del event["context"]["personas"]["audience_settings"]["advertiserId"]
        else:
            event = user_event(user, entered=rng.random() < 0.6)
        lines.append(json.dumps(event).encode("utf-8") + (b"\r" if i % 97 == 0 else b""))
    path.write_bytes(codecs.BOM_UTF8 + b"\n".join(lines) + b"\n")
    return path


def test_a_larger_mixed_input_gives_the_same_results_with_workers(tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, "native", batch_size=40, max_event_bytes=1024)
    events = mixed_input(tmp_path / "mixed.ndjson")
    result = same_with_workers(tmp_path, "mixed", mapping=mapping, events=events)
    reasons = result.summary["rejected_by_reason"]
    assert {"invalid_json", "no_subscription", "no_identifier", "no_advertiser"} <= set(reasons)
    assert result.summary["dropped_identifiers"]
    paths = Counter(path for _, path, _ in result.requests)
    assert paths["segment/mapping/"] > 20


def test_a_dry_run_gives_the_same_results_with_workers(tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, "native", batch_size=40, max_event_bytes=1024)
    events = mixed_input(tmp_path / "mixed.ndjson", n=1200, seed=3)
    result = same_with_workers(
        tmp_path, "dry", counts=(2,), mapping=mapping, events=events, dry_run=True
    )
    assert result.summary["dry_run"] is True
    assert result.summary["requests"] > 0
    assert result.requests == []


def test_the_unmapped_field_warning_is_the_same_with_workers(tmp_path: Path) -> None:
    document = json.loads((MAPPINGS / "segment-native.json").read_text("utf-8"))
    document["settings"].update({"qps": 0, "concurrency": 1})
    for subscription in document["subscriptions"]:
        subscription.setdefault("mapping", {})["phone"] = {"@path": "$.nowhere.phone"}
    mapping = tmp_path / "nowhere.json"
    mapping.write_text(json.dumps(document), "utf-8")
    events = tmp_path / "events.ndjson"
    events.write_text(
        "\n".join(json.dumps(user_event(i, entered=i % 4 != 0)) for i in range(30)) + "\n"
    )
    result = same_with_workers(tmp_path, "warn", counts=(1,), mapping=mapping, events=events)
    assert any("field phone was empty" in w for w in result.summary["warnings"])


def accepted_hashes(fake: FakeTikTok) -> Counter[tuple[str, str]]:
    seen: Counter[tuple[str, str]] = Counter()
    for request in fake.accepted:
        if request.path == "segment/mapping/":
            for row in request.json["batch_data"]:
                seen.update((request.json["action"], e["id"]) for e in row if e)
    return seen


def test_a_run_with_workers_resumes_after_a_crash(tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, "native", batch_size=30, max_event_bytes=1024)
    events = mixed_input(tmp_path / "mixed.ndjson", n=1500, seed=11)
    reference = run(tmp_path, "whole", mapping=mapping, events=events, workers=0)

    fake = demo_fake()
    state = tmp_path / "state"
    with pytest.raises(SystemExit):
        run(
            tmp_path,
            "crash",
            mapping=mapping,
            events=events,
            workers=1,
            backend=CrashAfter(fake, 6),
            fake=fake,
            state=state,
        )
    resumed = run(
        tmp_path, "crash", mapping=mapping, events=events, workers=1, fake=fake, state=state
    )

    assert resumed.summary["resumed"] is True
    for key in ("received", "delivered", "rejected", "rejected_by_reason"):
        assert resumed.summary[key] == reference.summary[key], key
    assert resumed.rejected == reference.rejected
    # every change reached TikTok; a batch in flight at the crash may be sent again
    assert set(accepted_hashes(fake)) == set(accepted_hashes(demo_fake_after(reference)))


def demo_fake_after(result: Result) -> FakeTikTok:
    """A fake that took ``result``'s requests (for comparing what was accepted)."""
    fake = demo_fake()
    for method, path, body in result.requests:
        fake.send(ApiRequest(method, path, json=body, headers={"Access-Token": DEMO_TOKEN}))
    return fake


# what a stop may shift between two runs (see assert_same_up_to_the_stop)
_STOP_VOLATILE = frozenset(
    {
        "rejected",
        "deferred",
        "rejected_by_reason",
        "dropped_identifiers",
        "retry_lines",
        "retry_text",
    }
)


def _line_numbers(rejected: str) -> list[int]:
    return sorted(json.loads(record)["line"] for record in rejected.splitlines())


def assert_same_up_to_the_stop(one: Result, other: Result) -> None:
    """Two runs that stopped on the same failure agree on everything but this: the main
    process sees the stop when the failed batch's answer arrives, and an event it took in
    the meantime that is bad on its own (no identifier, no advertiser) is rejected for
    that instead of for the stop (rejected, not deferred, when TikTok is down). How many
    such events there are depends on timing, with or without workers. Every event is
    still accounted for, the same requests were sent and the same events delivered."""
    stable = {k: v for k, v in one.summary.items() if k not in _STOP_VOLATILE}
    assert stable == {k: v for k, v in other.summary.items() if k not in _STOP_VOLATILE}
    for result in (one, other):
        summary = result.summary
        assert summary["rejected"] == sum(summary["rejected_by_reason"].values())
    total = one.summary["rejected"] + one.summary["deferred"]
    assert total == other.summary["rejected"] + other.summary["deferred"]
    if one.summary["deferred"] == other.summary["deferred"]:
        assert _line_numbers(one.rejected) == _line_numbers(other.rejected)
    assert one.requests == other.requests


def stopped_runs(
    tmp_path: Path,
    name: str,
    mapping: Path,
    events: Path,
    after: int,
    trigger: Callable[[FakeTikTok], None],
    *,
    retry: bool = False,
) -> tuple[Result, Result]:
    """The same input without and with one worker; ``trigger`` changes the fake after
    ``after`` requests (so that the run stops)."""
    results = []
    for workers in (0, 1):
        fake = demo_fake()
        backend = AfterRequests(fake, after, trigger)
        results.append(
            run(
                tmp_path,
                name,
                mapping=mapping,
                events=events,
                workers=workers,
                backend=backend,
                fake=fake,
                retry=retry,
            )
        )
    return results[0], results[1]


# The worker's n-th chunk waits until the main process has routed GATES[n] chunks itself:
# the worker is behind at the moments the test needs it to be, however fast either process
# runs. The main process leaves a file ``routed-<count>`` in GATE_FOLDER at each chunk.
GATE_FOLDER = "TEST_WORKERS_GATE_FOLDER"
GATES = {1: 4, 2: 5}
_chunks_in_this_worker = itertools.count(1)


def _gated_route_chunk(chunk: Any) -> bytes:
    """``route_chunk`` in a worker process, held back by ``GATES``."""
    gate = GATES.get(next(_chunks_in_this_worker))
    if gate is not None:
        routed = Path(os.environ[GATE_FOLDER]) / f"routed-{gate}"
        guard = time.monotonic() + HANG_GUARD
        while not routed.exists():  # a file between processes: looked at, not waited on
            assert time.monotonic() < guard, f"the main process never routed {gate} chunks"
            time.sleep(0.005)
    return workers_module.route_chunk(chunk)


def test_the_main_process_routes_chunks_itself_while_the_workers_are_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one worker, 4 chunks may be out; the main process routes the 5th to 8th while
    the worker holds the 1st (``GATES``), waits at 8 out, and routes the next one too when
    the 2nd is still not back."""
    mapping = write_mapping(tmp_path, "native", batch_size=40, max_event_bytes=1024)
    events = mixed_input(tmp_path / "mixed.ndjson", n=1500, seed=5)
    reference = run(tmp_path, "behind", mapping=mapping, events=events, workers=0)

    routed_here: list[int] = []
    route_lines = workers_module.route_lines
    gates = tmp_path / "gates"
    gates.mkdir()

    def counting(subscriptions: Any, chunk: Any) -> Any:
        results = route_lines(subscriptions, chunk)
        routed_here.append(len(chunk))
        (gates / f"routed-{len(routed_here)}").touch()
        return results

    monkeypatch.setenv(GATE_FOLDER, str(gates))  # the workers start after this: they see it
    monkeypatch.setattr(workers_module, "CHUNK_LINES", 40)
    monkeypatch.setattr(workers_module, "route_chunk", _gated_route_chunk)
    monkeypatch.setattr(workers_module, "route_lines", counting)
    switch_interval = sys.getswitchinterval()
    result = run(tmp_path, "behind", mapping=mapping, events=events, workers=1)

    assert sys.getswitchinterval() == switch_interval  # set for the run only

    assert len(routed_here) >= 5
    assert sum(routed_here) <= 1500 - 4 * 40  # the worker always has the first chunks
    assert result.summary == reference.summary
    assert result.rejected == reference.rejected
    assert result.requests == reference.requests


def test_an_auth_stop_with_workers_loses_nothing(tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, "native", batch_size=25, max_event_bytes=1024)
    events = mixed_input(tmp_path / "mixed.ndjson", n=2000, seed=5)
    without, with_one = stopped_runs(
        tmp_path, "auth", mapping, events, 5, lambda f: f.revoke_token(DEMO_TOKEN)
    )
    assert with_one.summary["stopped"]["reason"] == "auth"
    assert with_one.summary["rejected_by_reason"]["auth"] > 1000
    assert_same_up_to_the_stop(with_one, without)


def test_tiktok_staying_down_with_workers_defers_the_same_events(tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, "native", batch_size=25, max_event_bytes=1024)
    events = mixed_input(tmp_path / "mixed.ndjson", n=1200, seed=9)
    without, with_one = stopped_runs(
        tmp_path, "down", mapping, events, 6, lambda f: f.fail_next(50000, times=1000), retry=True
    )
    assert with_one.summary["stopped"]["reason"] == "api_unavailable"
    assert with_one.summary["deferred"] > 500
    assert with_one.summary["retry_lines"] == with_one.summary["deferred"]
    assert_same_up_to_the_stop(with_one, without)


def test_worker_processes_never_get_the_access_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given: list[tuple[Any, ...]] = []

    class Recording(ProcessPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            given.append(kwargs["initargs"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(workers_module, "ProcessPoolExecutor", Recording)
    mapping = write_mapping(tmp_path, "legacy")
    result = run(
        tmp_path, "token", mapping=mapping, events=DEMO / "legacy-events.ndjson", workers=1
    )

    assert result.summary["delivered"] > 0
    assert len(given) == 1
    (recipe,) = given[0]
    assert isinstance(recipe, TikTokRecipe)
    assert recipe.settings.access_token is None
    assert DEMO_TOKEN not in repr(given)
    assert DEMO_TOKEN.encode() not in pickle.dumps(recipe)  # what crosses to the worker
    # and a worker refuses a recipe whose settings carry one, before it changes anything
    # of the process (Ctrl-C ignored would be inherited by every later subprocess)
    before = signal.getsignal(signal.SIGINT), gc.get_threshold()
    with pytest.raises(ValueError, match="access token"):
        workers_module.init_worker(
            TikTokRecipe(load_mapping_file(mapping), Settings(access_token=Secret(DEMO_TOKEN)))
        )
    assert (signal.getsignal(signal.SIGINT), gc.get_threshold()) == before


def test_worker_processes_run_the_garbage_collector_seldom(tmp_path: Path) -> None:
    mapping_file = load_mapping_file(write_mapping(tmp_path, "legacy"))
    with ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context(workers_module.START_METHOD),
        initializer=workers_module.init_worker,
        initargs=(TikTokRecipe(mapping_file, Settings()),),
    ) as pool:
        assert pool.submit(gc.get_threshold).result() == FEW_COLLECTIONS


def _die(chunk: Any) -> Any:
    os._exit(3)  # in a worker process: as if killed


def test_a_worker_that_dies_ends_the_run_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers_module, "route_chunk", _die)
    mapping = write_mapping(tmp_path, "legacy")
    with pytest.raises(DestinationError, match="worker process ended unexpectedly"):
        run(tmp_path, "dies", mapping=mapping, events=DEMO / "legacy-events.ndjson", workers=1)


def test_the_workers_setting_comes_from_the_file_the_environment_or_the_flag() -> None:
    def resolve(environ: dict[str, str], **overrides: Any) -> Settings:
        return resolve_settings(
            {"workers": 1}, environ=environ, overrides=overrides, need_token=False
        )

    assert Settings().workers == "auto"
    assert resolve({}).workers == 1
    assert resolve({"TIKTOK_WORKERS": "2"}).workers == 2
    assert resolve({"TIKTOK_WORKERS": "auto"}).workers == "auto"
    assert resolve({"TIKTOK_WORKERS": "2"}, workers=3).workers == 3
    assert resolve({"TIKTOK_WORKERS": "2"}, workers="auto").workers == "auto"
    with pytest.raises(ConfigurationError, match='workers must be "auto" or a whole number'):
        resolve({}, workers=-1)
    with pytest.raises(ConfigurationError, match='workers must be "auto" or a whole number'):
        resolve({}, workers=True)
    with pytest.raises(ConfigurationError, match="TIKTOK_WORKERS='many' is not a number"):
        resolve({"TIKTOK_WORKERS": "many"})


def test_auto_workers_start_one_for_a_large_file_on_two_cpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = tmp_path / "small.ndjson"
    small.write_bytes(b"{}\n")
    large = tmp_path / "large.ndjson"
    with large.open("wb") as handle:  # sparse: the size is all that is looked at
        handle.truncate(AUTO_WORKERS_MIN_BYTES)

    def auto_workers(setting: int | str, events: str) -> int:
        return workers_for(setting, NdjsonSource(events).size())

    auto = Settings().workers
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert auto_workers(auto, str(large)) == 1
    assert auto_workers(auto, str(small)) == 0
    assert auto_workers(auto, "-") == 0  # standard input: the size is unknown
    assert auto_workers(auto, str(tmp_path / "missing.ndjson")) == 0
    assert auto_workers(3, str(small)) == 3  # a number is taken as it is
    assert auto_workers(0, str(large)) == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert auto_workers(auto, str(large)) == 0


def test_the_workers_flag_takes_auto_or_a_number(tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, "legacy")
    events = str(DEMO / "legacy-events.ndjson")
    for value in ("auto", "0"):
        code = main(
            [
                "sync",
                "--mapping",
                str(mapping),
                "--events",
                events,
                "--dry-run",
                "--workers",
                value,
                "--audience-state",
                str(tmp_path / f"a-{value}.json"),
            ]
        )
        assert code == 0, value
    refused = main(["sync", "--mapping", str(mapping), "--events", events, "--workers", "many"])
    assert refused == 2  # a usage error

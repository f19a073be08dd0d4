"""The audience registry creates each (advertiser, key) audience once, across runs and races.

``destination/tiktok/audiences.py`` is TikTok's missing idempotency: TikTok lets two
audiences share a name, so the registry remembers in a state file which audience id it
created for which key, under an exclusive lock. These tests give it plain callables as
``create`` and read the state file it writes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from destination.errors import ConfigurationError, PermanentError
from destination.tiktok.audiences import AudienceRegistry
from tests.clock import HANG_GUARD

NAMESPACE = "https://business-api.tiktok.com"
ADVERTISER = "7000000000000000001"
OTHER_ADVERTISER = "7000000000000000002"


class CountingCreate:
    """A ``create`` callable that hands out ids ``aud-1``, ``aud-2``, ... and keeps its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, advertiser_id: str, name: str) -> str:
        self.calls.append((advertiser_id, name))
        return f"aud-{len(self.calls)}"


def never_create(advertiser_id: str, name: str) -> str:
    raise AssertionError(f"create was called for {advertiser_id}/{name}")


def registry(path: Path, create: Callable[[str, str], str] | None) -> AudienceRegistry:
    return AudienceRegistry(path, namespace=NAMESPACE, create=create)


def test_creates_an_audience_once_per_advertiser_and_key(tmp_path: Path) -> None:
    create = CountingCreate()
    audiences = registry(tmp_path / "audiences.json", create)

    first = audiences.resolve(ADVERTISER, "vip", "vip")
    again = audiences.resolve(ADVERTISER, "vip", "vip")
    other_key = audiences.resolve(ADVERTISER, "churned", "churned")
    other_advertiser = audiences.resolve(OTHER_ADVERTISER, "vip", "vip")

    assert first == again == "aud-1"
    assert other_key == "aud-2"
    assert other_advertiser == "aud-3"
    assert create.calls == [
        (ADVERTISER, "vip"),
        (ADVERTISER, "churned"),
        (OTHER_ADVERTISER, "vip"),
    ]
    assert [(a.advertiser_id, a.key, a.audience_id, a.created) for a in audiences.resolved] == [
        (ADVERTISER, "vip", "aud-1", True),
        (ADVERTISER, "churned", "aud-2", True),
        (OTHER_ADVERTISER, "vip", "aud-3", True),
    ]


def test_persists_each_created_audience_in_the_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audiences.json"  # the folder does not exist yet
    registry(path, CountingCreate()).resolve(ADVERTISER, "vip", "VIP customers")

    document = json.loads(path.read_text("utf-8"))
    assert document["version"] == 1
    entry = document["audiences"][NAMESPACE][ADVERTISER]["vip"]
    assert entry["audience_id"] == "aud-1"
    assert entry["name"] == "VIP customers"
    assert isinstance(entry["created_at"], int)


def test_a_second_registry_on_the_same_file_reuses_the_audience(tmp_path: Path) -> None:
    path = tmp_path / "audiences.json"
    registry(path, CountingCreate()).resolve(ADVERTISER, "vip", "vip")

    later = registry(path, never_create)

    assert later.resolve(ADVERTISER, "vip", "vip") == "aud-1"
    assert [a.created for a in later.resolved] == [False]


def test_audiences_of_another_api_base_url_are_kept_apart(tmp_path: Path) -> None:
    path = tmp_path / "audiences.json"
    registry(path, CountingCreate()).resolve(ADVERTISER, "vip", "vip")
    sandbox_create = CountingCreate()
    sandbox = AudienceRegistry(
        path, namespace="https://sandbox-ads.tiktok.com", create=sandbox_create
    )

    sandbox.resolve(ADVERTISER, "vip", "vip")

    assert sandbox_create.calls == [(ADVERTISER, "vip")]
    document = json.loads(path.read_text("utf-8"))
    assert set(document["audiences"]) == {NAMESPACE, "https://sandbox-ads.tiktok.com"}


# --------------------------------------------------------------------------- races


def _resolve_in_child(
    path: Path,
    counter: multiprocessing.sharedctypes.Synchronized[int],
    barrier: threading.Barrier,
    out: Path,
) -> None:
    def create(advertiser_id: str, name: str) -> str:
        with counter.get_lock():
            counter.value += 1
        time.sleep(0.05)  # widen the window in which the other process could also create
        return f"aud-of-pid-{os.getpid()}"

    audiences = registry(path, create)
    barrier.wait(timeout=HANG_GUARD)
    out.write_text(audiences.resolve(ADVERTISER, "vip", "vip"), "utf-8")


def test_two_processes_racing_on_one_state_file_create_one_audience(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    counter = context.Value("i", 0)
    barrier = context.Barrier(2)
    path = tmp_path / "audiences.json"
    outs = [tmp_path / f"result-{i}.txt" for i in range(2)]
    processes = [
        context.Process(target=_resolve_in_child, args=(path, counter, barrier, out))
        for out in outs
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=HANG_GUARD)

    assert [p.exitcode for p in processes] == [0, 0]
    assert counter.value == 1
    ids = {out.read_text("utf-8") for out in outs}
    assert len(ids) == 1
    document = json.loads(path.read_text("utf-8"))
    assert document["audiences"][NAMESPACE][ADVERTISER]["vip"]["audience_id"] in ids


def test_two_threads_with_their_own_registries_create_one_audience(tmp_path: Path) -> None:
    path = tmp_path / "audiences.json"
    calls: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)
    results: dict[int, str] = {}

    def create(advertiser_id: str, name: str) -> str:
        with lock:
            calls.append(name)
        time.sleep(0.05)
        return f"aud-{threading.get_ident()}"

    def work(index: int) -> None:
        audiences = registry(path, create)
        barrier.wait(timeout=HANG_GUARD)
        results[index] = audiences.resolve(ADVERTISER, "vip", "vip")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANG_GUARD)

    assert calls == ["vip"]
    assert len(set(results.values())) == 1
    assert len(results) == 2


# ------------------------------------------------------------------- broken state


def test_a_state_file_that_is_not_json_is_a_configuration_error_naming_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audiences.json"
    path.write_text('{"version": 1, "audiences": {', "utf-8")
    create = CountingCreate()

    with pytest.raises(ConfigurationError) as caught:
        registry(path, create).resolve(ADVERTISER, "vip", "vip")

    assert str(path) in str(caught.value)
    assert create.calls == []
    assert path.read_text("utf-8") == '{"version": 1, "audiences": {'  # left for the user


@pytest.mark.parametrize(
    "document",
    [
        {"version": 1, "audiences": {NAMESPACE: {ADVERTISER: "not an object"}}},
        {"version": 1, "audiences": {NAMESPACE: ["not", "an", "object"]}},
    ],
    ids=["advertiser-entry-is-a-string", "namespace-entry-is-a-list"],
)
def test_a_state_file_of_the_wrong_shape_is_a_configuration_error_naming_it(
    tmp_path: Path, document: object
) -> None:
    path = tmp_path / "audiences.json"
    path.write_text(json.dumps(document), "utf-8")

    with pytest.raises(ConfigurationError, match=str(path)):
        registry(path, CountingCreate()).resolve(ADVERTISER, "vip", "vip")


@pytest.mark.parametrize(
    "document",
    [{"version": 1, "audiences": ["not", "an", "object"]}, ["not", "an", "object"]],
    ids=["audiences-is-a-list", "document-is-a-list"],
)
def test_a_state_file_of_the_wrong_shape_is_never_overwritten(
    tmp_path: Path, document: object
) -> None:
    path = tmp_path / "audiences.json"
    path.write_text(json.dumps(document), "utf-8")
    create = CountingCreate()

    with pytest.raises(ConfigurationError, match=str(path)):
        registry(path, create).resolve(ADVERTISER, "vip", "vip")

    assert create.calls == []
    assert json.loads(path.read_text("utf-8")) == document


def test_a_state_file_path_that_cannot_be_created_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", "utf-8")
    path = blocker / "audiences.json"  # its folder would have to be a file

    with pytest.raises(ConfigurationError, match="audience state file"):
        registry(path, CountingCreate()).resolve(ADVERTISER, "vip", "vip")


# ------------------------------------------------------------------------ dry run


def test_dry_run_gives_a_placeholder_id_and_writes_no_state(tmp_path: Path) -> None:
    path = tmp_path / "audiences.json"
    audiences = registry(path, None)

    audience_id = audiences.resolve(ADVERTISER, "vip", "vip")

    assert audience_id == "dry-run:vip"
    assert not path.exists()
    assert [(a.audience_id, a.created) for a in audiences.resolved] == [("dry-run:vip", False)]


def test_dry_run_uses_an_audience_already_in_the_state_file(tmp_path: Path) -> None:
    path = tmp_path / "audiences.json"
    registry(path, CountingCreate()).resolve(ADVERTISER, "vip", "vip")
    before = path.read_bytes()

    assert registry(path, None).resolve(ADVERTISER, "vip", "vip") == "aud-1"
    assert path.read_bytes() == before


def test_dry_run_creates_no_file_at_all(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    registry(state_dir / "audiences.json", None).resolve(ADVERTISER, "vip", "vip")

    assert not state_dir.exists()


# ------------------------------------------------------------------ failed creates


def test_a_refused_create_is_raised_again_for_the_key_without_asking_twice(
    tmp_path: Path,
) -> None:
    calls: list[str] = []

    def create(advertiser_id: str, name: str) -> str:
        calls.append(name)
        if name == "too-many":
            raise PermanentError("create audience: limit of 400 audiences reached", code=40002)
        return "aud-ok"

    path = tmp_path / "audiences.json"
    audiences = registry(path, create)

    with pytest.raises(PermanentError) as first:
        audiences.resolve(ADVERTISER, "too-many", "too-many")
    with pytest.raises(PermanentError) as second:
        audiences.resolve(ADVERTISER, "too-many", "too-many")
    other = audiences.resolve(ADVERTISER, "fine", "fine")

    assert second.value is first.value
    assert calls == ["too-many", "fine"]
    assert other == "aud-ok"
    document = json.loads(path.read_text("utf-8"))
    assert set(document["audiences"][NAMESPACE][ADVERTISER]) == {"fine"}

"""``tiktok-audiences audiences list | get | delete`` (issue 17), and the fake's delete.

The commands run in-process (``main(argv, stdout=...)``) against the fake TikTok served
over real HTTP on loopback; ``run_cli`` checks in every run that the access token shows
up in neither stdout nor stderr. Standard input is replaced in each test, so whether a
terminal is there to confirm a delete is the test's choice.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from destination.backends import ApiRequest, ApiResponse
from destination.cli import main
from destination.demo import DEMO_ADVERTISER_ID, demo_fake
from destination.fake_server import FakeTikTok, serve_in_thread
from destination.kit.settings import Secret
from destination.tiktok.auth.store import TokenEntry, TokenStore, default_token_store

TOKEN = "manage-secret-token-71c3aa"
OTHER_ADVERTISER = "9900000000000000002"


@dataclass
class Served:
    fake: FakeTikTok
    base_url: str


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The demo fake on loopback (plus a second advertiser TOKEN may not touch); the
    environment points at it with TOKEN; standard input is no terminal."""
    fake = demo_fake()
    fake.add_advertiser(OTHER_ADVERTISER, name="Someone else")
    fake.add_token(TOKEN, advertiser_ids=[DEMO_ADVERTISER_ID])
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
        monkeypatch.setenv("TIKTOK_ADVERTISER_ID", DEMO_ADVERTISER_ID)
        yield Served(fake, server.base_url)


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str

    @property
    def last_json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.stdout.splitlines()[-1])
        return document


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> CliRun:
    out = io.StringIO()
    code = main(list(argv), stdout=out)
    run = CliRun(code, out.getvalue(), capsys.readouterr().err)
    assert TOKEN not in run.stdout
    assert TOKEN not in run.stderr
    return run


def paths(fake: FakeTikTok) -> list[str]:
    return [request.path.strip("/") for request in fake.requests]


class Terminal(io.StringIO):
    """Standard input on a terminal, where the user types ``answer``."""

    def isatty(self) -> bool:
        return True


# --------------------------------------------------------------------------- list


def test_list_prints_a_table_and_every_page_as_json_last(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    made = [served.fake.add_audience(DEMO_ADVERTISER_ID, f"vip {i}") for i in range(205)]
    run = run_cli(capsys, "audiences", "list")
    assert run.code == 0, run.stderr
    listed = run.last_json["audiences"]
    assert len(listed) == 206  # the demo's own audience, then the 205 made here
    assert [a["audience_id"] for a in listed][1:] == made
    assert paths(served.fake).count("dmp/custom_audience/list") == 3  # 100 a page
    header, *rows = run.stdout.splitlines()[:-1]
    heading = ["ID", "NAME", "TYPE", "SIZE", "VALID", "EXPIRING", "SHARED", "TARGETABLE"]
    assert header.split() == heading
    assert len(rows) == 206
    # valid, but TikTok targets an ad group with it from 1,000 users on
    assert rows[-1].split() == [made[-1], "vip", "204", "Partner", "0", "yes", "no", "no", "no"]


def test_list_of_an_advertiser_the_token_may_not_manage_exits_2_with_tiktoks_message(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_cli(capsys, "audiences", "list", "--advertiser-id", OTHER_ADVERTISER)
    assert run.code == 2
    assert f"No permission to operate advertiser {OTHER_ADVERTISER}" in run.stderr


# ---------------------------------------------------------------------------- get


def test_get_prints_the_details_of_each_id_as_json(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    first = served.fake.add_audience(DEMO_ADVERTISER_ID, "first")
    second = served.fake.add_audience(DEMO_ADVERTISER_ID, "second")
    run = run_cli(capsys, "audiences", "get", second, first)
    assert run.code == 0, run.stderr
    found = json.loads(run.stdout)["audiences"]
    assert [a["audience_details"]["audience_id"] for a in found] == [second, first]
    assert [a["audience_details"]["name"] for a in found] == ["second", "first"]
    (request,) = [r for r in served.fake.requests if r.path.strip("/").endswith("/get")]
    assert json.loads(request.params["custom_audience_ids"]) == [second, first]


def test_get_of_an_unknown_id_exits_2_with_tiktoks_message(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_cli(capsys, "audiences", "get", "1234")
    assert run.code == 2
    assert "Audience 1234 does not exist" in run.stderr


# ------------------------------------------------------------------------- delete


def test_delete_with_yes_deletes_and_prints_what_was_deleted(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = served.fake.add_audience(DEMO_ADVERTISER_ID, "kept")
    gone = [served.fake.add_audience(DEMO_ADVERTISER_ID, f"gone {i}") for i in range(2)]
    run = run_cli(capsys, "audiences", "delete", *gone, "--yes")
    assert run.code == 0, run.stderr
    assert run.last_json == {"deleted": gone}
    assert all(f"deleted audience {a}" in run.stdout for a in gone)
    deleted = {a.audience_id for a in served.fake.audiences(DEMO_ADVERTISER_ID) if a.deleted}
    assert deleted == set(gone)
    assert kept not in deleted


def test_delete_sends_at_most_100_ids_a_request(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = [served.fake.add_audience(DEMO_ADVERTISER_ID, f"gone {i}") for i in range(150)]
    run = run_cli(capsys, "audiences", "delete", *gone, "--yes")
    assert run.code == 0, run.stderr
    sent = [r.json["custom_audience_ids"] for r in served.fake.requests if r.method == "POST"]
    assert [len(ids) for ids in sent] == [100, 50]
    assert run.last_json == {"deleted": gone}


def test_delete_without_yes_and_without_a_terminal_refuses_before_any_request(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    audience = served.fake.add_audience(DEMO_ADVERTISER_ID, "kept")
    run = run_cli(capsys, "audiences", "delete", audience)
    assert run.code == 2
    assert "--yes" in run.stderr
    assert served.fake.requests == []
    assert not any(a.deleted for a in served.fake.audiences())


def test_delete_on_a_terminal_asks_first_and_deletes_on_yes(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    audience = served.fake.add_audience(DEMO_ADVERTISER_ID, "old campaign")
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    run = run_cli(capsys, "audiences", "delete", audience)
    assert run.code == 0, run.stderr
    assert "old campaign" in run.stderr and "[y/N]" in run.stderr
    assert run.last_json == {"deleted": [audience]}


def test_delete_on_a_terminal_answered_no_deletes_nothing(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    audience = served.fake.add_audience(DEMO_ADVERTISER_ID, "kept")
    monkeypatch.setattr("sys.stdin", Terminal("\n"))
    run = run_cli(capsys, "audiences", "delete", audience)
    assert run.code == 0, run.stderr
    assert run.last_json == {"deleted": []}
    assert not any(a.deleted for a in served.fake.audiences())
    assert "dmp/custom_audience/delete" not in paths(served.fake)


def test_delete_of_another_advertisers_audience_exits_2_with_tiktoks_message(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = served.fake.add_audience(DEMO_ADVERTISER_ID, "mine")
    theirs = served.fake.add_audience(OTHER_ADVERTISER, "theirs")
    run = run_cli(capsys, "audiences", "delete", mine, theirs, "--yes")
    assert run.code == 2
    assert f"No permission to operate audience {theirs}" in run.stderr
    assert not any(a.deleted for a in served.fake.audiences())  # all or nothing


def test_an_audience_id_that_is_not_a_number_exits_2_before_any_request(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_cli(capsys, "audiences", "delete", "12ab", "--yes")
    assert run.code == 2
    assert "12ab" in run.stderr
    assert served.fake.requests == []


# ---------------------------------------------------------------- token, advertiser


def test_no_token_exits_2_and_says_how_to_get_one(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIKTOK_ACCESS_TOKEN")
    run = run_cli(capsys, "audiences", "list")
    assert run.code == 2
    assert "auth login" in run.stderr and "TIKTOK_ACCESS_TOKEN" in run.stderr
    assert served.fake.requests == []


def test_a_revoked_token_exits_4(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    served.fake.revoke_token(TOKEN)
    run = run_cli(capsys, "audiences", "list")
    assert run.code == 4
    assert "re-authorize" in run.stderr


def test_the_advertiser_comes_from_the_variable_else_the_stored_tokens_only_one(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIKTOK_ACCESS_TOKEN")
    monkeypatch.delenv("TIKTOK_ADVERTISER_ID")
    store = TokenStore(default_token_store(os.environ))
    store.save(
        TokenEntry(
            app_id="123",
            access_token=Secret(TOKEN),
            advertiser_ids=(DEMO_ADVERTISER_ID,),
            scopes=(30, 31),
            created_at="2026-01-01T00:00:00Z",
            base_url=served.base_url,
        )
    )
    run = run_cli(capsys, "audiences", "list")
    assert run.code == 0, run.stderr
    (request,) = served.fake.requests
    assert request.params["advertiser_id"] == DEMO_ADVERTISER_ID
    monkeypatch.setenv("TIKTOK_ADVERTISER_ID", OTHER_ADVERTISER)
    run = run_cli(capsys, "audiences", "list")
    assert run.code == 2
    assert served.fake.requests[-1].params["advertiser_id"] == OTHER_ADVERTISER


def test_without_an_advertiser_to_go_by_it_exits_2_asking_for_one(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIKTOK_ADVERTISER_ID")
    run = run_cli(capsys, "audiences", "list")  # TIKTOK_ACCESS_TOKEN: its advertisers unknown
    assert run.code == 2
    assert "--advertiser-id" in run.stderr and "TIKTOK_ADVERTISER_ID" in run.stderr
    assert served.fake.requests == []


# ------------------------------------------------------------ the fake's delete endpoint


def post_delete(fake: FakeTikTok, body: dict[str, Any]) -> ApiResponse:
    headers = {"Access-Token": TOKEN}
    return fake.send(ApiRequest("POST", "dmp/custom_audience/delete/", json=body, headers=headers))


def code_of(response: ApiResponse) -> int:
    assert isinstance(response.body, dict)
    code = response.body["code"]
    assert isinstance(code, int)
    return code


@pytest.fixture
def fake() -> FakeTikTok:
    fake = demo_fake()
    fake.add_advertiser(OTHER_ADVERTISER)
    fake.add_token(TOKEN, advertiser_ids=[DEMO_ADVERTISER_ID])
    return fake


def test_fake_delete_removes_owned_audiences(fake: FakeTikTok) -> None:
    ids = [fake.add_audience(DEMO_ADVERTISER_ID, f"a{i}") for i in range(2)]
    reply = post_delete(fake, {"advertiser_id": DEMO_ADVERTISER_ID, "custom_audience_ids": ids})
    assert code_of(reply) == 0
    assert {a.audience_id for a in fake.audiences() if a.deleted} == set(ids)
    again = post_delete(fake, {"advertiser_id": DEMO_ADVERTISER_ID, "custom_audience_ids": ids})
    assert code_of(again) == 40007  # gone is gone


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"advertiser_id": OTHER_ADVERTISER, "custom_audience_ids": ["OWN"]}, 40001),
        ({"advertiser_id": DEMO_ADVERTISER_ID, "custom_audience_ids": ["THEIRS"]}, 40001),
        ({"advertiser_id": DEMO_ADVERTISER_ID, "custom_audience_ids": ["OWN", "404"]}, 40007),
        ({"advertiser_id": DEMO_ADVERTISER_ID, "custom_audience_ids": []}, 40002),
        ({"advertiser_id": DEMO_ADVERTISER_ID, "custom_audience_ids": ["OWN"] * 101}, 40011),
        ({"advertiser_id": DEMO_ADVERTISER_ID, "custom_audience_ids": "OWN"}, 40002),
        ({"custom_audience_ids": ["OWN"]}, 40002),
    ],
)
def test_fake_delete_refuses_as_tiktok_does_and_deletes_nothing(
    fake: FakeTikTok, body: dict[str, Any], expected: int
) -> None:
    own = fake.add_audience(DEMO_ADVERTISER_ID, "own")
    theirs = fake.add_audience(OTHER_ADVERTISER, "theirs")
    names = {"OWN": own, "THEIRS": theirs}
    ids = body.get("custom_audience_ids")
    if isinstance(ids, list):
        body = {**body, "custom_audience_ids": [names.get(i, i) for i in ids]}
    elif isinstance(ids, str):
        body = {**body, "custom_audience_ids": names[ids]}
    assert code_of(post_delete(fake, body)) == expected
    assert not any(a.deleted for a in fake.audiences())


def test_fake_delete_needs_the_write_scope(fake: FakeTikTok) -> None:
    audience = fake.add_audience(DEMO_ADVERTISER_ID, "own")
    fake.add_token(TOKEN, advertiser_ids=[DEMO_ADVERTISER_ID], scopes=[30])
    reply = post_delete(
        fake, {"advertiser_id": DEMO_ADVERTISER_ID, "custom_audience_ids": [audience]}
    )
    assert code_of(reply) == 40001
    assert not any(a.deleted for a in fake.audiences())


def test_list_says_which_audiences_can_target_an_ad_group(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    big = served.fake.add_audience(DEMO_ADVERTISER_ID, "big")  # holds its members at once
    hashes = [f"{n:064x}" for n in range(1500)]
    for start in range(0, len(hashes), 1000):  # TikTok's batch limit
        served.fake.send(
            ApiRequest(
                "POST",
                "segment/mapping/",
                json={
                    "advertiser_ids": [DEMO_ADVERTISER_ID],
                    "action": "add",
                    "id_schema": ["EMAIL_SHA256"],
                    "batch_data": [
                        [{"id": h, "audience_ids": [big]}] for h in hashes[start : start + 1000]
                    ],
                },
                headers={"Access-Token": TOKEN},
            )
        )
    run = run_cli(capsys, "audiences", "list")
    [row] = [line for line in run.stdout.splitlines() if line.startswith(big)]
    assert row.split()[-1] == "yes" and "1500" in row.split()

"""Audiences as code from the command line against the fake TikTok on loopback: plan,
apply, a second apply that changes nothing, changes, shares, prune, import, ad groups,
the limits, and secrets never in the output."""

from __future__ import annotations

import fcntl
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from destination.backends import ApiRequest
from destination.cli import main
from destination.demo import run_demo
from destination.fake_server import FakeTikTok, serve_in_thread
from tests.clock import FakeClock

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "audiences"
OWNER = "7000000000000000001"
PARTNER = "7000000000000000002"  # the same Business Center
TOKEN = "audiences-code-secret-token-5f1d"
DAY = 24 * 3600.0


@dataclass
class Served:
    fake: FakeTikTok
    clock: FakeClock
    definitions: Path


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Served]:
    clock = FakeClock(start=1_700_000_000.0)
    fake = FakeTikTok(clock=clock)
    fake.add_advertiser(OWNER, name="Owner", business_center_id="bc-1")
    fake.add_advertiser(PARTNER, name="Agency", business_center_id="bc-1")
    fake.add_token(TOKEN, advertiser_ids=[OWNER])
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    definitions = tmp_path / "audiences"
    shutil.copytree(FIXTURES, definitions)
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
        monkeypatch.setenv("TIKTOK_ADVERTISER_ID", OWNER)
        yield Served(fake, clock, definitions)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def last(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.stdout.splitlines()[-1])
        return document


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> Run:
    out = io.StringIO()
    code = main([str(a) for a in argv], stdout=out)
    run = Run(code, out.getvalue(), capsys.readouterr().err)
    assert TOKEN not in run.stdout and TOKEN not in run.stderr
    return run


def posts(fake: FakeTikTok) -> list[str]:
    return [r.path for r in fake.requests if r.method == "POST"]


def definition(served: Served, key: str) -> tuple[Path, dict[str, Any]]:
    for path in served.definitions.glob("*.json"):
        document = json.loads(path.read_text("utf-8"))
        if document.get("key") == key:
            return path, document
    raise AssertionError(f"no fixture has the key {key}")


def rewrite(served: Served, key: str, change: Any) -> None:
    path, document = definition(served, key)
    change(document)
    path.write_text(json.dumps(document), "utf-8")


def keys_of(served: Served, kind: str) -> list[str]:
    return sorted(
        json.loads(p.read_text("utf-8"))["key"]
        for p in served.definitions.glob("*.json")
        if json.loads(p.read_text("utf-8"))["type"] == kind
    )


def apply_all(served: Served, capsys: pytest.CaptureFixture[str]) -> Run:
    """Apply, wait two days on the fake's clock (audiences fill), apply again (lookalikes
    whose source had to fill first)."""
    first = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert first.code == 0, first.stderr
    served.clock.now += 2 * DAY
    second = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert second.code == 0, second.stderr
    return second


def test_plan_lists_every_definition_to_create_and_sends_nothing(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    run = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    assert run.code == 0, run.stderr
    files = list(served.definitions.glob("*.json"))
    assert run.last["create"] == len(files)
    assert run.last["share"] >= 1  # a fixture is shared with the partner advertiser
    assert run.last["update"] == run.last["delete"] == run.last["unchanged"] == 0
    assert posts(served.fake) == []
    assert "KIND" in run.stdout.splitlines()[0]


def test_apply_creates_every_type_then_plan_shows_no_change_and_apply_sends_nothing(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    first = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert first.code == 0, first.stderr
    # the lookalike waits for its source to hold 100 users (audiences fill in 24-48 h)
    assert first.last["deferred"] == keys_of(served, "lookalike")
    assert "lookalike" in first.stderr
    served.clock.now += 2 * DAY
    second = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert second.code == 0 and second.last["applied"] == {"create": 1, "share": 1}

    types = {a.audience_id: a for a in served.fake.audiences(OWNER)}
    state = json.loads((served.definitions.parent / "audiences.state.json").read_text())
    assert set(state["audiences"]) == {
        json.loads(p.read_text())["key"] for p in served.definitions.glob("*.json")
    }
    assert all(h["audience_id"] in types for h in state["audiences"].values())

    plan = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    assert plan.last["unchanged"] == len(state["audiences"])
    assert sum(plan.last[k] for k in ("create", "update", "share", "unshare", "delete")) == 0
    before = posts(served.fake)
    again = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert again.code == 0 and again.last["applied"] == {}
    assert posts(served.fake) == before  # a second apply changes nothing


def test_a_changed_customer_file_is_sent_with_its_explicit_action_and_replace_waits_a_day(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    [key] = keys_of(served, "customer_file")
    path, document = definition(served, key)
    csv = path.parent / document["customer_file"]["path"]
    # TikTok refuses an update that leaves an audience under 1,000 users: a larger file
    rows = [f"big{n:04d}@example.com,,," for n in range(1200)]
    csv.write_text("email,phone,advertising_id,device_type\n" + "\n".join(rows) + "\n")
    apply_all(served, capsys)
    csv.write_text(csv.read_text("utf-8") + _extra_row(csv), "utf-8")
    rewrite(served, key, lambda d: d["customer_file"].update(action="replace"))

    plan = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    [item] = [i for i in plan.last["items"] if i["kind"] == "update"]
    assert item["key"] == key and "replace" in item["detail"]
    run = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert run.code == 0, run.stderr
    [update] = [r for r in served.fake.requests if r.path.endswith("custom_audience/update/")]
    assert update.json["action"] == "REPLACE"  # never TikTok's default left implicit

    csv.write_text(csv.read_text("utf-8") + _extra_row(csv, 2), "utf-8")
    blocked = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    [item] = [i for i in blocked.last["items"] if i["kind"] == "update"]
    assert "one replace a day" in item["blocked"] and "try again in 23 h" in item["blocked"]
    refused = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert refused.code == 2 and "nothing applied" in refused.stderr


def _extra_row(csv: Path, n: int = 1) -> str:
    header = csv.read_text("utf-8").splitlines()[0].split(",")
    cells = [f"extra{n}@example.com" if "mail" in h.lower() else "" for h in header]
    return ",".join(cells) + "\n"


def test_share_with_changes_become_share_and_unshare(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_all(served, capsys)
    shared = [
        json.loads(p.read_text())
        for p in served.definitions.glob("*.json")
        if json.loads(p.read_text()).get("share_with")
    ]
    key = shared[0]["key"]
    rewrite(served, key, lambda d: d.update(share_with=[]))
    plan = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    [item] = plan.last["items"]
    assert (item["kind"], item["key"], item["advertiser_ids"]) == ("unshare", key, [PARTNER])
    assert cli(capsys, "audiences", "apply", "--dir", served.definitions).code == 0
    assert any(r.path.endswith("share/cancel/") for r in served.fake.requests)


def test_prune_deletes_only_what_the_state_knows_and_not_while_applied_to_an_ad_group(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_all(served, capsys)
    untouched = served.fake.add_audience(OWNER, "made by hand")
    [key] = keys_of(served, "app_activity")
    path, _ = definition(served, key)
    state = json.loads((served.definitions.parent / "audiences.state.json").read_text())
    audience_id = state["audiences"][key]["audience_id"]
    path.unlink()

    kept = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    assert kept.last["delete"] == 0 and "--prune" in kept.stderr

    served.fake.set_target_size(audience_id, 5000)
    served.clock.now += 3 * DAY
    adgroup = served.fake.add_adgroup(OWNER)
    link = cli(
        capsys,
        "audiences",
        "apply-to-adgroup",
        key,
        "--dir",
        served.definitions,
        "--adgroup-id",
        adgroup,
    )
    assert link.code == 0, link.stderr
    pruned = cli(capsys, "audiences", "plan", "--dir", served.definitions, "--prune")
    [item] = [i for i in pruned.last["items"] if i["kind"] == "delete"]
    assert item["adgroups"] == [adgroup] and "disconnect" in item["blocked"]
    assert cli(capsys, "audiences", "apply", "--dir", served.definitions, "--prune").code == 2

    unlink = cli(capsys, "audiences", "disconnect", audience_id, "--adgroup-id", adgroup)
    assert unlink.code == 0, unlink.stderr
    run = cli(capsys, "audiences", "apply", "--dir", served.definitions, "--prune")
    assert run.code == 0 and run.last["applied"] == {"delete": 1}
    alive = {a.audience_id for a in served.fake.audiences(OWNER) if not a.deleted}
    assert audience_id not in alive and untouched in alive


def test_applying_an_audience_tiktok_cannot_target_yet_warns_with_its_size(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "audiences", "apply", "--dir", served.definitions)
    [key] = keys_of(served, "app_activity")
    adgroup = served.fake.add_adgroup(OWNER)
    run = cli(
        capsys,
        "audiences",
        "apply-to-adgroup",
        key,
        "--dir",
        served.definitions,
        "--adgroup-id",
        adgroup,
        "--exclude",
    )
    assert "holds 0 users" in run.stderr and "1,000" in run.stderr
    assert run.last["usage"] == "exclude"


def test_the_400_audience_limit_stops_the_plan(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    for n in range(399):
        served.fake.add_audience(OWNER, f"existing {n}")
    run = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    assert run.code == 2 and "TikTok allows 400" in run.stderr
    assert posts(served.fake) == []


def test_import_adopts_an_audience_and_a_shared_one_cannot_be_edited(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    [key] = keys_of(served, "partner")
    existing = served.fake.add_audience(OWNER, "Sync-filled audience")
    run = cli(capsys, "audiences", "import", "--dir", served.definitions, key, existing)
    assert run.code == 0 and run.last["audience_id"] == existing
    plan = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    assert key not in [i["key"] for i in plan.last["items"] if i["kind"] == "create"]

    # an audience the partner advertiser owns and shares with us: we may only apply it
    theirs = served.fake.add_audience(PARTNER, "their audience")
    served.fake.add_token("partner-token", advertiser_ids=[PARTNER])
    body = {"advertiser_id": PARTNER, "custom_audience_ids": [theirs]}
    shared = served.fake.send(
        ApiRequest(
            "POST",
            "dmp/custom_audience/share/",
            json={**body, "shared_advertiser_ids": [OWNER]},
            headers={"Access-Token": "partner-token"},
        )
    )
    assert shared.body is not None and shared.body["code"] == 0, shared.text
    state_file = served.definitions.parent / "audiences.state.json"
    state = json.loads(state_file.read_text())
    state["audiences"][key]["audience_id"] = theirs
    state_file.write_text(json.dumps(state))
    rewrite(served, key, lambda d: d.update(share_with=[PARTNER]))
    blocked = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    [item] = [i for i in blocked.last["items"] if i["key"] == key]
    assert "recipient can only apply it" in item["blocked"]


def test_a_bad_definition_exits_3_naming_the_file_and_pointer_before_any_call(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    [key] = keys_of(served, "engagement")[:1]
    rewrite(served, key, lambda d: d["engagement"]["rules"][0].update(lookback_days=365))
    run = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    assert run.code == 3 and "/engagement/rules/0/lookback_days" in run.stderr
    assert served.fake.requests == []


def test_a_redefined_rule_audience_is_made_again_and_the_old_one_deleted(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_all(served, capsys)
    [key] = keys_of(served, "app_activity")
    state_file = served.definitions.parent / "audiences.state.json"
    old = json.loads(state_file.read_text())["audiences"][key]["audience_id"]
    rewrite(served, key, lambda d: d["app_activity"]["rules"][0].update(lookback_days=7))
    run = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert run.code == 0 and run.last["applied"] == {"update": 1}
    new = json.loads(state_file.read_text())["audiences"][key]["audience_id"]
    assert new != old
    alive = {a.audience_id for a in served.fake.audiences(OWNER) if not a.deleted}
    assert new in alive and old not in alive


def test_the_demo_plans_applies_and_plans_again_with_nothing_left() -> None:
    out = io.StringIO()
    assert run_demo(out) == 0
    part = out.getvalue().split("== audiences as code")[1].split("== what the fake")[0]
    assert "-- plan\n" in part and "-- apply\n" in part and "-- plan again\n" in part
    assert "0 changes left, 6 audiences unchanged" in part
    assert "TikTok makes a lookalike from 100 on" in part  # it waited for its source


def test_a_lookalike_of_an_audience_shared_with_us_is_blocked_before_any_call(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    theirs = served.fake.add_audience(PARTNER, "their customers")
    served.fake.add_token("partner-token", advertiser_ids=[PARTNER])
    shared = served.fake.send(
        ApiRequest(
            "POST",
            "dmp/custom_audience/share/",
            json={
                "advertiser_id": PARTNER,
                "custom_audience_ids": [theirs],
                "shared_advertiser_ids": [OWNER],
            },
            headers={"Access-Token": "partner-token"},
        )
    )
    assert shared.body is not None and shared.body["code"] == 0, shared.text
    [key] = keys_of(served, "lookalike")
    rewrite(served, key, lambda d: d["lookalike"].update(source=theirs))
    before = posts(served.fake)
    plan = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    [item] = [i for i in plan.last["items"] if i["key"] == key and i["kind"] == "create"]
    assert "a recipient cannot make a lookalike of it" in item["blocked"]
    run = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert run.code == 2 and "nothing applied" in run.stderr
    assert posts(served.fake) == before


def test_the_state_file_holds_no_secret(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    apply_all(served, capsys)
    text = (served.definitions.parent / "audiences.state.json").read_text("utf-8")
    assert TOKEN not in text and "@example.com" not in text


def test_renaming_a_customer_file_audience_is_blocked_not_sent_as_a_file_update(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_all(served, capsys)
    [key] = keys_of(served, "customer_file")
    rewrite(served, key, lambda d: d.update(name="Customers, renamed"))
    plan = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    [item] = [i for i in plan.last["items"] if i["key"] == key]
    assert item["kind"] == "update" and "renaming a customer file" in item["blocked"]
    before = posts(served.fake)
    assert cli(capsys, "audiences", "apply", "--dir", served.definitions).code == 2
    assert posts(served.fake) == before


def test_a_second_apply_of_one_folder_at_once_is_refused(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = served.definitions.parent / "audiences.state.json.lock"
    with lock.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another apply, in the middle
        run = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert run.code == 2 and "in use by another apply" in run.stderr
    assert posts(served.fake) == []
    assert cli(capsys, "audiences", "apply", "--dir", served.definitions).code == 0

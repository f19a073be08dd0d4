"""Review of audiences as code (issue 17): the cases plan / apply / import got wrong, each
against the fake TikTok on loopback, as tests/test_audiences_code.py drives them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from destination.backends import ApiRequest
from tests import test_audiences_code as code
from tests.test_audiences_code import DAY, OWNER, TOKEN, Served, apply_all, cli, keys_of, rewrite

served = code.served  # the same fixture: the fake on loopback, the fixtures copied


def state_of(served: Served) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (served.definitions.parent / "audiences.state.json").read_text("utf-8")
    )
    return document


def alive(served: Served) -> dict[str, Any]:
    return {a.audience_id: a for a in served.fake.audiences(OWNER) if not a.deleted}


def add_lookalike_of(served: Served, key: str, source: str) -> None:
    """A lookalike definition whose key sorts before its source's (apply's order)."""
    document = {
        "key": key,
        "name": f"Like {source}",
        "type": "lookalike",
        "lookalike": {
            "source": source,
            "size": "narrow",
            "os": "all",
            "locations": ["6252001"],
            "include_source": False,
        },
    }
    (served.definitions / f"{key}.json").write_text(json.dumps(document), "utf-8")


def test_a_lookalike_follows_its_source_when_the_source_is_made_again(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    [source] = keys_of(served, "app_activity")
    add_lookalike_of(served, "a-like-cart", source)
    apply_all(served, capsys)
    old_source = state_of(served)["audiences"][source]["audience_id"]

    rewrite(served, source, lambda d: d["app_activity"]["rules"][0].update(lookback_days=7))
    plan = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    remade = {i["key"] for i in plan.last["items"] if i["kind"] == "update"}
    assert remade == {source, "a-like-cart"}  # the lookalike's source id changes
    apply_all(served, capsys)  # the new source fills before the lookalike is made from it

    state = state_of(served)["audiences"]
    new_source = state[source]["audience_id"]
    assert new_source != old_source
    assert state["a-like-cart"]["audience_id"] in alive(served)
    made = [r.json for r in served.fake.requests if r.path.endswith("lookalike/create/")]
    assert made[-1]["custom_audience_name"] == f"Like {source}"
    assert made[-1]["lookalike_spec"]["source_audience_id"] == new_source
    again = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    assert again.last["update"] == again.last["create"] == 0


def test_a_lookalike_waiting_for_a_remade_source_is_not_shared_on_its_gone_audience(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_all(served, capsys)
    [lookalike] = keys_of(served, "lookalike")
    [source] = keys_of(served, "customer_file")
    state = state_of(served)["audiences"]
    # someone deleted both in Ads Manager
    gone = [state[key]["audience_id"] for key in (lookalike, source)]
    body = {"advertiser_id": OWNER, "custom_audience_ids": gone}
    request = ApiRequest(
        "POST", "dmp/custom_audience/delete/", json=body, headers={"Access-Token": TOKEN}
    )
    answer = served.fake.send(request)
    assert answer.body is not None and answer.body["code"] == 0, answer.text

    run = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert run.code == 0, run.stderr
    assert lookalike in run.last["deferred"]  # its new source is still filling
    served.clock.now += 2 * DAY
    again = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert again.code == 0, again.stderr
    assert again.last["applied"] == {"create": 1, "share": 1}


def test_an_old_audience_left_by_a_failed_delete_is_deleted_by_the_next_apply(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_all(served, capsys)
    [key] = keys_of(served, "app_activity")
    old = state_of(served)["audiences"][key]["audience_id"]
    rewrite(served, key, lambda d: d["app_activity"]["rules"][0].update(lookback_days=7))
    served.fake.fail_next(40002, path="dmp/custom_audience/delete/", message="busy")
    failed = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert failed.code == 2, failed.stderr
    assert old in alive(served)

    plan = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    [item] = plan.last["items"]
    assert (item["kind"], item["key"], item["audience_id"]) == ("delete", key, old)
    run = cli(capsys, "audiences", "apply", "--dir", served.definitions)
    assert run.code == 0 and run.last["applied"] == {"delete": 1}
    assert old not in alive(served)
    assert key in state_of(served)["audiences"]  # the new audience is still known
    assert cli(capsys, "audiences", "plan", "--dir", served.definitions).last["items"] == []


@pytest.mark.parametrize(
    "audiences",
    [{"video-ad-completers": {"type": "engagement"}}, None],
    ids=["a-key-without-its-audience-id", "no-audiences"],
)
def test_a_damaged_state_file_exits_2_with_a_message(
    served: Served, capsys: pytest.CaptureFixture[str], audiences: Any
) -> None:
    document: dict[str, Any] = {"version": 1, "advertiser_id": OWNER}
    if audiences is not None:
        document["audiences"] = audiences
    path = served.definitions.parent / "audiences.state.json"
    path.write_text(json.dumps(document), "utf-8")
    run = cli(capsys, "audiences", "plan", "--dir", served.definitions)
    assert run.code == 2 and str(path) in run.stderr and "Traceback" not in run.stderr


def test_import_refuses_an_audience_of_another_type(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    [key] = keys_of(served, "customer_file")
    partner = served.fake.add_audience(OWNER, "a sync's partner audience")
    run = cli(capsys, "audiences", "import", "--dir", served.definitions, key, partner)
    assert run.code == 2 and "Partner" in run.stderr and "customer_file" in run.stderr
    assert not (served.definitions.parent / "audiences.state.json").exists()


def test_pruning_an_audience_tiktok_deleted_already_frees_no_room_under_the_limit(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_all(served, capsys)
    [key] = keys_of(served, "partner")
    gone = state_of(served)["audiences"][key]["audience_id"]
    body = {"advertiser_id": OWNER, "custom_audience_ids": [gone]}
    request = ApiRequest(
        "POST", "dmp/custom_audience/delete/", json=body, headers={"Access-Token": TOKEN}
    )
    answer = served.fake.send(request)
    assert answer.body is not None and answer.body["code"] == 0, answer.text
    (served.definitions / f"{key}.json").unlink()
    add_lookalike_of(served, "another-lookalike", keys_of(served, "customer_file")[0])
    for n in range(400 - len(alive(served))):
        served.fake.add_audience(OWNER, f"existing {n}")
    run = cli(capsys, "audiences", "plan", "--dir", served.definitions, "--prune")
    assert run.code == 2 and "TikTok allows 400" in run.stderr

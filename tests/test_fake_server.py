"""The fake TikTok checks requests like TikTok, keeps state, and speaks real HTTP too."""

from __future__ import annotations

import copy
import hashlib
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from destination.backends import ApiRequest, ApiResponse
from destination.errors import RetryableError
from destination.fake_server import (
    FakeAudience,
    FakeTikTok,
    RunningServer,
    serve_forever,
    serve_in_thread,
)
from destination.tiktok.api import tiktok_backend
from tests.clock import HANG_GUARD

TOKEN = "tok-main"
OTHER_TOKEN = "tok-other"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


ALICE = sha("alice@example.com")
BOB = sha("bob@example.com")
PHONE = sha("+14155550100")


def post(fake: FakeTikTok, path: str, body: Any, token: str | None = TOKEN) -> ApiResponse:
    headers = {} if token is None else {"Access-Token": token}
    return fake.send(ApiRequest("POST", path, json=body, headers=headers))


def get(
    fake: FakeTikTok, path: str, params: dict[str, str], token: str | None = TOKEN
) -> ApiResponse:
    headers = {} if token is None else {"Access-Token": token}
    return fake.send(ApiRequest("GET", path, params=params, headers=headers))


def code(response: ApiResponse) -> int:
    assert response.body is not None, response.text
    result = response.body["code"]
    assert isinstance(result, int)
    return result


def message(response: ApiResponse) -> str:
    assert response.body is not None
    result = response.body["message"]
    assert isinstance(result, str)
    return result


def create(fake: FakeTikTok, name: str, advertiser_id: str = "adv-1") -> str:
    response = post(
        fake,
        "segment/audience/",
        {"advertiser_id": advertiser_id, "action": "create", "custom_audience_name": name},
    )
    assert code(response) == 0, response.body
    assert response.body is not None
    audience_id = response.body["data"]["audience_id"]
    assert isinstance(audience_id, str)
    return audience_id


def mapping_body(audience_id: str, action: str = "add", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "advertiser_ids": ["adv-1"],
        "action": action,
        "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
        "batch_data": [
            [
                {"id": ALICE, "audience_ids": [audience_id]},
                {"id": PHONE, "audience_ids": [audience_id]},
            ],
            [{"id": BOB, "audience_ids": [audience_id]}, {}],
        ],
    }
    body.update(overrides)
    return body


def make_fake(**kwargs: Any) -> FakeTikTok:
    fake = FakeTikTok(**kwargs)
    fake.add_advertiser("adv-1", "Shop one", business_center_id="bc-1")
    fake.add_advertiser("adv-2", "Shop two", business_center_id="bc-1")
    fake.add_advertiser("adv-3", "Elsewhere", business_center_id="bc-2")
    fake.add_advertiser("adv-9", "Not ours", business_center_id="bc-1")
    fake.add_token(TOKEN, ["adv-1", "adv-2", "adv-3"])
    fake.add_token(OTHER_TOKEN, ["adv-9"])
    return fake


@pytest.fixture
def fake() -> FakeTikTok:
    return make_fake()


@pytest.fixture
def audience(fake: FakeTikTok) -> str:
    return create(fake, "Newsletter subscribers")


# --------------------------------------------------------------------------- envelope


def test_success_answers_tiktok_envelope_with_http_200(fake: FakeTikTok) -> None:
    response = post(
        fake,
        "segment/audience/",
        {"advertiser_id": "adv-1", "action": "create", "custom_audience_name": "Buyers"},
    )
    assert response.status == 200
    assert response.body == {
        "code": 0,
        "message": "OK",
        "request_id": response.body["request_id"],
        "data": {"audience_id": "1800000000000000001"},
    }
    assert isinstance(response.body["request_id"], str)
    assert response.body["request_id"]


def test_api_errors_come_with_http_200_and_empty_data(fake: FakeTikTok) -> None:
    response = post(fake, "segment/audience/", {"advertiser_id": "adv-1", "action": "nope"})
    assert response.status == 200
    assert response.body is not None
    assert response.body["code"] == 40002
    assert response.body["data"] == {}


def test_ids_and_request_ids_are_deterministic() -> None:
    def run() -> tuple[list[str], list[str]]:
        fake = make_fake()
        ids = [create(fake, f"audience {n}") for n in range(3)]
        responses = [get(fake, "user/info/", {}) for _ in range(2)]
        request_ids = [r.body["request_id"] for r in responses if r.body is not None]
        return ids, request_ids

    first, second = run(), run()
    assert first == second
    assert first[0] == ["1800000000000000001", "1800000000000000002", "1800000000000000003"]
    assert all(len(i) == 19 and i.isdigit() for i in first[0])
    assert len(set(first[1])) == 2


def test_path_works_with_or_without_slashes(fake: FakeTikTok) -> None:
    for path in ("user/info/", "user/info", "/user/info/"):
        assert code(get(fake, path, {})) == 0


# ------------------------------------------------------------------------------ auth


def test_missing_token_is_40104(fake: FakeTikTok) -> None:
    response = get(fake, "user/info/", {}, token=None)
    assert code(response) == 40104
    assert message(response) == "Access token is null"


def test_empty_token_is_40104(fake: FakeTikTok) -> None:
    assert code(get(fake, "user/info/", {}, token="")) == 40104


@pytest.mark.parametrize("token", ["nope", f"Bearer {TOKEN}", f"bearer {TOKEN}"])
def test_unknown_or_bearer_token_is_40105(fake: FakeTikTok, token: str) -> None:
    response = get(fake, "user/info/", {}, token=token)
    assert code(response) == 40105
    assert message(response) == "Access token is invalid"


def test_token_header_name_is_case_insensitive(fake: FakeTikTok) -> None:
    request = ApiRequest("GET", "user/info/", headers={"access-token": TOKEN})
    assert code(fake.send(request)) == 0


def test_revoked_token_is_40105(fake: FakeTikTok) -> None:
    assert code(get(fake, "user/info/", {})) == 0
    fake.revoke_token(TOKEN)
    assert code(get(fake, "user/info/", {})) == 40105


def test_user_info_probe(fake: FakeTikTok) -> None:
    response = get(fake, "user/info/", {})
    assert response.body is not None
    data = response.body["data"]
    assert data["display_name"] == "fake user"
    assert data["email"] == "fake@example.invalid"
    assert isinstance(data["id"], str)


def test_token_without_write_scope_cannot_create(fake: FakeTikTok) -> None:
    fake.add_token("read-only", ["adv-1"], scopes=(30,))
    response = post(
        fake,
        "segment/audience/",
        {"advertiser_id": "adv-1", "action": "create", "custom_audience_name": "x"},
        token="read-only",
    )
    assert code(response) == 40001
    assert fake.audiences() == []


def test_unknown_path_is_http_404(fake: FakeTikTok) -> None:
    response = get(fake, "no/such/thing/", {})
    assert response.status == 404
    assert code(response) == 40000
    assert message(response) == "path not found"


def test_wrong_method_is_refused(fake: FakeTikTok) -> None:
    response = get(fake, "segment/mapping/", {})
    assert response.status == 405
    assert code(response) == 40000


def test_tokens_are_not_in_recorded_request_repr(fake: FakeTikTok) -> None:
    get(fake, "user/info/", {})
    assert TOKEN not in repr(fake.requests)


# ------------------------------------------------------------------ segment/audience


def test_create_stores_a_partner_audience(fake: FakeTikTok) -> None:
    audience_id = create(fake, "Buyers")
    assert fake.audiences() == [
        FakeAudience(
            audience_id=audience_id, advertiser_id="adv-1", name="Buyers", members={}, deleted=False
        )
    ]
    assert fake.audiences("adv-2") == []


def test_long_names_are_cut_to_67_plus_ellipsis(fake: FakeTikTok) -> None:
    create(fake, "x" * 71)
    create(fake, "y" * 70)
    names = [a.name for a in fake.audiences()]
    assert names == ["x" * 67 + "...", "y" * 70]


@pytest.mark.parametrize("name", ["", "   ", None, 5])
def test_create_without_a_name_is_40002(fake: FakeTikTok, name: Any) -> None:
    body = {"advertiser_id": "adv-1", "action": "create", "custom_audience_name": name}
    assert code(post(fake, "segment/audience/", body)) == 40002
    assert fake.audiences() == []


def test_create_for_an_advertiser_not_in_the_token_is_40001(fake: FakeTikTok) -> None:
    body = {"advertiser_id": "adv-9", "action": "create", "custom_audience_name": "x"}
    response = post(fake, "segment/audience/", body)
    assert code(response) == 40001
    assert message(response) == "No permission to operate advertiser adv-9"
    assert fake.audiences() == []


def test_audience_limit_per_advertiser() -> None:
    fake = make_fake(max_audiences_per_advertiser=2)
    first = create(fake, "one")
    create(fake, "two")
    body = {"advertiser_id": "adv-1", "action": "create", "custom_audience_name": "three"}
    response = post(fake, "segment/audience/", body)
    assert code(response) == 40002
    assert "limit of 2 custom audiences" in message(response)
    assert len(fake.audiences()) == 2
    # Other advertisers have their own count; deleting frees a place.
    create(fake, "elsewhere", advertiser_id="adv-2")
    delete = {"advertiser_id": "adv-1", "action": "delete", "delete_audience_id": first}
    assert code(post(fake, "segment/audience/", delete)) == 0
    create(fake, "three")


def test_default_limit_message_names_400() -> None:
    fake = make_fake()
    for n in range(400):
        fake.add_audience("adv-1", f"a{n}")
    body = {"advertiser_id": "adv-1", "action": "create", "custom_audience_name": "401st"}
    response = post(fake, "segment/audience/", body)
    assert code(response) == 40002
    assert "400" in message(response)


def test_delete_marks_the_audience_deleted(fake: FakeTikTok, audience: str) -> None:
    body = {"advertiser_id": "adv-1", "action": "delete", "delete_audience_id": audience}
    assert code(post(fake, "segment/audience/", body)) == 0
    (snapshot,) = fake.audiences()
    assert snapshot.deleted
    # Deleted is gone: deleting again, or writing to it, says it does not exist.
    assert code(post(fake, "segment/audience/", body)) == 40007
    assert code(post(fake, "segment/mapping/", mapping_body(audience))) == 40007


def test_delete_of_an_unknown_audience_is_40007(fake: FakeTikTok) -> None:
    body = {"advertiser_id": "adv-1", "action": "delete", "delete_audience_id": "123"}
    response = post(fake, "segment/audience/", body)
    assert code(response) == 40007
    assert message(response) == "Audience 123 does not exist"


def test_delete_of_another_advertisers_audience_is_40001(fake: FakeTikTok) -> None:
    audience_id = create(fake, "two's", advertiser_id="adv-2")
    body = {"advertiser_id": "adv-1", "action": "delete", "delete_audience_id": audience_id}
    assert code(post(fake, "segment/audience/", body)) == 40001
    assert not fake.audiences()[0].deleted


def test_unknown_audience_action_is_40002(fake: FakeTikTok) -> None:
    body = {"advertiser_id": "adv-1", "action": "rename", "custom_audience_name": "x"}
    assert code(post(fake, "segment/audience/", body)) == 40002


@pytest.mark.parametrize("body", [None, [], "not json", 3, {"action": "create"}])
def test_audience_body_must_be_an_object_with_advertiser(fake: FakeTikTok, body: Any) -> None:
    assert code(post(fake, "segment/audience/", body)) == 40002


def test_non_object_body_says_invalid_json(fake: FakeTikTok) -> None:
    assert "Invalid JSON body" in message(post(fake, "segment/audience/", "{oops"))


# ------------------------------------------------------------------- segment/mapping


def test_add_then_delete_membership(fake: FakeTikTok, audience: str) -> None:
    response = post(fake, "segment/mapping/", mapping_body(audience))
    assert response.body == {
        "code": 0,
        "message": "OK",
        "request_id": response.body["request_id"] if response.body else "",
        "data": {},
    }
    assert fake.members(audience) == {"EMAIL_SHA256": {ALICE, BOB}, "PHONE_SHA256": {PHONE}}
    (snapshot,) = fake.audiences()
    assert snapshot.members == {
        "EMAIL_SHA256": frozenset({ALICE, BOB}),
        "PHONE_SHA256": frozenset({PHONE}),
    }

    removal = mapping_body(
        audience,
        action="delete",
        batch_data=[[{"id": ALICE, "audience_ids": [audience]}, {}]],
    )
    assert code(post(fake, "segment/mapping/", removal)) == 0
    assert fake.members(audience) == {"EMAIL_SHA256": {BOB}, "PHONE_SHA256": {PHONE}}

    assert code(post(fake, "segment/mapping/", mapping_body(audience, action="delete"))) == 0
    assert fake.members(audience) == {}


def test_adding_twice_keeps_one_member(fake: FakeTikTok, audience: str) -> None:
    post(fake, "segment/mapping/", mapping_body(audience))
    post(fake, "segment/mapping/", mapping_body(audience))
    assert fake.members(audience)["EMAIL_SHA256"] == {ALICE, BOB}


def test_one_entry_can_name_several_audiences(fake: FakeTikTok, audience: str) -> None:
    second = create(fake, "second", advertiser_id="adv-2")
    body = mapping_body(
        audience,
        advertiser_ids=["adv-1", "adv-2"],
        id_schema=["EMAIL_SHA256"],
        batch_data=[[{"id": ALICE, "audience_ids": [audience, second]}]],
    )
    assert code(post(fake, "segment/mapping/", body)) == 0
    assert fake.members(audience) == {"EMAIL_SHA256": {ALICE}}
    assert fake.members(second) == {"EMAIL_SHA256": {ALICE}}


def test_md5_identifiers_take_32_hex_characters(fake: FakeTikTok, audience: str) -> None:
    idfa = md5("6d92078a-8246-4ba4-ae5b-76104861e7dc")
    body = mapping_body(
        audience,
        id_schema=["IDFA_MD5", "AAID_SHA256"],
        batch_data=[[{"id": idfa, "audience_ids": [audience]}, {}]],
    )
    assert code(post(fake, "segment/mapping/", body)) == 0
    assert fake.members(audience) == {"IDFA_MD5": {idfa}}


def _replace_entry(body: dict[str, Any], row: int, slot: int, entry: Any) -> dict[str, Any]:
    body["batch_data"][row][slot] = entry
    return body


# Each case: (what is wrong, mutate a valid body, expected code, fragment of the message)
MappingCase = tuple[str, Callable[[dict[str, Any], str], Any], int, str]
MAPPING_CASES: list[MappingCase] = [
    ("body is a list", lambda b, a: [b], 40002, "Invalid JSON body"),
    ("body is raw text", lambda b, a: "{not json", 40002, "Invalid JSON body"),
    ("missing action", lambda b, a: {k: v for k, v in b.items() if k != "action"}, 40002, "action"),
    (
        "missing batch_data",
        lambda b, a: {k: v for k, v in b.items() if k != "batch_data"},
        40002,
        "batch_data",
    ),
    ("advertiser_ids empty", lambda b, a: {**b, "advertiser_ids": []}, 40002, "advertiser_ids"),
    (
        "advertiser_ids a string",
        lambda b, a: {**b, "advertiser_ids": "adv-1"},
        40002,
        "advertiser_ids",
    ),
    (
        "advertiser_ids holds a number",
        lambda b, a: {**b, "advertiser_ids": [1]},
        40002,
        "advertiser_ids",
    ),
    (
        "advertiser not in token",
        lambda b, a: {**b, "advertiser_ids": ["adv-1", "adv-9"]},
        40001,
        "No permission to operate advertiser adv-9",
    ),
    ("unknown advertiser", lambda b, a: {**b, "advertiser_ids": ["adv-404"]}, 40001, "adv-404"),
    (
        "two business centers",
        lambda b, a: {**b, "advertiser_ids": ["adv-1", "adv-3"]},
        40002,
        "Business Center",
    ),
    ("bad action", lambda b, a: {**b, "action": "replace"}, 40002, "action"),
    ("id_schema empty", lambda b, a: {**b, "id_schema": []}, 40002, "id_schema"),
    ("id_schema not a list", lambda b, a: {**b, "id_schema": "EMAIL_SHA256"}, 40002, "id_schema"),
    (
        "unknown id type",
        lambda b, a: {**b, "id_schema": ["EMAIL", "PHONE_SHA256"]},
        40002,
        "id_schema[0]",
    ),
    (
        "lowercase id type",
        lambda b, a: {**b, "id_schema": ["email_sha256", "PHONE_SHA256"]},
        40002,
        "id_schema[0]",
    ),
    (
        "duplicate id type",
        lambda b, a: {**b, "id_schema": ["EMAIL_SHA256", "EMAIL_SHA256"]},
        40002,
        "twice",
    ),
    ("batch_data empty", lambda b, a: {**b, "batch_data": []}, 40002, "batch_data"),
    ("batch_data an object", lambda b, a: {**b, "batch_data": {}}, 40002, "batch_data"),
    (
        "row not a list",
        lambda b, a: {**b, "batch_data": [b["batch_data"][0], "x"]},
        40002,
        "batch_data[1]",
    ),
    (
        "row too short",
        lambda b, a: {**b, "batch_data": [b["batch_data"][0], [{"id": BOB, "audience_ids": [a]}]]},
        40002,
        "batch_data[1] has 1 entries but id_schema has 2",
    ),
    (
        "row too long",
        lambda b, a: {**b, "batch_data": [b["batch_data"][0] + [{}]]},
        40002,
        "batch_data[0] has 3 entries but id_schema has 2",
    ),
    (
        "row of empty entries",
        lambda b, a: {**b, "batch_data": [b["batch_data"][0], [{}, {}]]},
        40002,
        "batch_data[1]",
    ),
    ("entry not an object", lambda b, a: _replace_entry(b, 1, 1, "x"), 40002, "batch_data[1][1]"),
    (
        "entry without id",
        lambda b, a: _replace_entry(b, 1, 1, {"audience_ids": [a]}),
        40002,
        "batch_data[1][1].id",
    ),
    (
        "entry without audience_ids",
        lambda b, a: _replace_entry(b, 1, 1, {"id": PHONE}),
        40002,
        "batch_data[1][1].audience_ids",
    ),
    (
        "audience_ids empty",
        lambda b, a: _replace_entry(b, 1, 1, {"id": PHONE, "audience_ids": []}),
        40002,
        "audience_ids",
    ),
    (
        "audience id a number",
        lambda b, a: _replace_entry(b, 1, 1, {"id": PHONE, "audience_ids": [int(a)]}),
        40002,
        "audience_ids",
    ),
    (
        "uppercase hash",
        lambda b, a: _replace_entry(b, 1, 0, {"id": BOB.upper(), "audience_ids": [a]}),
        40002,
        "64 lowercase hex",
    ),
    (
        "unhashed email",
        lambda b, a: _replace_entry(b, 1, 0, {"id": "bob@example.com", "audience_ids": [a]}),
        40002,
        "batch_data[1][0].id",
    ),
    (
        "md5 in a sha256 slot",
        lambda b, a: _replace_entry(b, 1, 0, {"id": md5("bob"), "audience_ids": [a]}),
        40002,
        "64 lowercase hex",
    ),
    (
        "sha256 in an md5 slot",
        lambda b, a: {**b, "id_schema": ["EMAIL_SHA256", "IDFA_MD5"]},
        40002,
        "32 lowercase hex",
    ),
    (
        "unknown audience",
        lambda b, a: _replace_entry(b, 1, 0, {"id": BOB, "audience_ids": ["1899999999999999999"]}),
        40007,
        "Audience 1899999999999999999 does not exist",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected_code", "fragment"),
    [pytest.param(m, c, f, id=name) for name, m, c, f in MAPPING_CASES],
)
def test_mapping_validation_rejects_and_changes_nothing(
    fake: FakeTikTok,
    audience: str,
    mutate: Callable[[dict[str, Any], str], Any],
    expected_code: int,
    fragment: str,
) -> None:
    # The bad part sits after a valid first row: nothing of that row may be stored.
    body = mutate(copy.deepcopy(mapping_body(audience)), audience)
    response = post(fake, "segment/mapping/", body)
    assert code(response) == expected_code, response.body
    assert fragment in message(response)
    assert response.body is not None
    assert response.body["data"] == {}
    assert fake.members(audience) == {}


def test_unhashed_value_is_not_echoed_in_the_error(fake: FakeTikTok, audience: str) -> None:
    body = mapping_body(
        audience, batch_data=[[{"id": "alice@example.com", "audience_ids": [audience]}, {}]]
    )
    response = post(fake, "segment/mapping/", body)
    assert code(response) == 40002
    assert "alice" not in json.dumps(response.body)


def test_audience_of_an_advertiser_not_in_the_request_is_40001(
    fake: FakeTikTok, audience: str
) -> None:
    other = create(fake, "adv-2's", advertiser_id="adv-2")
    body = mapping_body(audience)
    body["batch_data"][1][0]["audience_ids"] = [other]
    response = post(fake, "segment/mapping/", body)
    assert code(response) == 40001
    assert fake.members(audience) == {}
    assert fake.members(other) == {}


def test_extra_keys_are_ignored(fake: FakeTikTok, audience: str) -> None:
    body = mapping_body(audience, note="ignored")
    body["batch_data"][1][0]["extra"] = True
    assert code(post(fake, "segment/mapping/", body)) == 0
    assert fake.members(audience)["EMAIL_SHA256"] == {ALICE, BOB}


def test_batch_size_limit_is_40011() -> None:
    fake = make_fake(max_batch_users=3)
    audience_id = fake.add_audience("adv-1", "small batches")
    row = [{"id": ALICE, "audience_ids": [audience_id]}]
    body = mapping_body(audience_id, id_schema=["EMAIL_SHA256"], batch_data=[row] * 3)
    assert code(post(fake, "segment/mapping/", body)) == 0
    body["batch_data"] = [row] * 4
    response = post(fake, "segment/mapping/", body)
    assert code(response) == 40011
    assert "Too many users in one request" in message(response)


def test_fresh_audience_rejects_writes_until_it_has_settled() -> None:
    now = [1000.0]
    fake = make_fake(clock=lambda: now[0], fresh_audience_seconds=90.0)
    audience_id = create(fake, "brand new")
    now[0] += 89.0
    response = post(fake, "segment/mapping/", mapping_body(audience_id))
    assert code(response) == 40002
    assert "audience is still being processed" in message(response)
    assert fake.members(audience_id) == {}
    now[0] += 1.0
    assert code(post(fake, "segment/mapping/", mapping_body(audience_id))) == 0
    assert fake.members(audience_id)["EMAIL_SHA256"] == {ALICE, BOB}


def test_seeded_audiences_are_settled_unless_asked_fresh() -> None:
    fake = make_fake(clock=lambda: 0.0, fresh_audience_seconds=90.0)
    settled = fake.add_audience("adv-1", "seeded")
    fresh = fake.add_audience("adv-1", "seeded fresh", fresh=True)
    assert code(post(fake, "segment/mapping/", mapping_body(settled))) == 0
    assert code(post(fake, "segment/mapping/", mapping_body(fresh))) == 40002


# ------------------------------------------------------------------------ DMP reads


def test_list_pages_through_non_deleted_audiences(fake: FakeTikTok) -> None:
    ids = [create(fake, f"audience {n}") for n in range(3)]
    create(fake, "other advertiser", advertiser_id="adv-2")
    post(fake, "segment/mapping/", mapping_body(ids[0]))
    post(
        fake,
        "segment/audience/",
        {"advertiser_id": "adv-1", "action": "delete", "delete_audience_id": ids[2]},
    )

    response = get(fake, "dmp/custom_audience/list/", {"advertiser_id": "adv-1"})
    assert response.body is not None
    data = response.body["data"]
    assert [a["audience_id"] for a in data["list"]] == ids[:2]
    assert data["page_info"] == {"page": 1, "page_size": 10, "total_number": 2, "total_page": 1}
    first = data["list"][0]
    assert first["name"] == "audience 0"
    assert first["type"] == "Partner"
    assert first["calculate_type"] == "MULTIPLE_TYPES"
    assert first["cover_num"] == 3
    assert first["is_valid"] is True
    assert isinstance(first["create_time"], str)

    page2 = get(
        fake, "dmp/custom_audience/list/", {"advertiser_id": "adv-1", "page": "2", "page_size": "1"}
    )
    assert page2.body is not None
    assert [a["audience_id"] for a in page2.body["data"]["list"]] == [ids[1]]
    assert page2.body["data"]["page_info"]["total_page"] == 2


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, 40002),
        ({"advertiser_id": "adv-9"}, 40001),
        ({"advertiser_id": "adv-1", "page_size": "101"}, 40002),
        ({"advertiser_id": "adv-1", "page_size": "0"}, 40002),
        ({"advertiser_id": "adv-1", "page": "0"}, 40002),
        ({"advertiser_id": "adv-1", "page": "one"}, 40002),
    ],
)
def test_list_checks_its_parameters(
    fake: FakeTikTok, params: dict[str, str], expected: int
) -> None:
    assert code(get(fake, "dmp/custom_audience/list/", params)) == expected


def test_list_accepts_page_size_100(fake: FakeTikTok) -> None:
    params = {"advertiser_id": "adv-1", "page_size": "100"}
    assert code(get(fake, "dmp/custom_audience/list/", params)) == 0


def test_get_returns_details_for_json_encoded_ids(fake: FakeTikTok, audience: str) -> None:
    post(fake, "segment/mapping/", mapping_body(audience))
    params = {"advertiser_id": "adv-1", "custom_audience_ids": json.dumps([audience])}
    response = get(fake, "dmp/custom_audience/get/", params)
    assert code(response) == 0
    assert response.body is not None
    (item,) = response.body["data"]["list"]
    assert item["audience_history"] == []
    details = item["audience_details"]
    assert details["audience_id"] == audience
    assert details["owner_id"] == "adv-1"
    assert details["shared"] is False
    assert details["type"] == "Partner"
    assert details["cover_num"] == 3


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ("not json", 40002),
        ("[]", 40002),
        ('"123"', 40002),
        ("[123]", 40002),
        (json.dumps([str(n) for n in range(101)]), 40002),
        ('["1899999999999999999"]', 40007),
    ],
)
def test_get_checks_its_ids(fake: FakeTikTok, ids: str, expected: int) -> None:
    params = {"advertiser_id": "adv-1", "custom_audience_ids": ids}
    assert code(get(fake, "dmp/custom_audience/get/", params)) == expected


def test_get_of_a_deleted_audience_is_40007(fake: FakeTikTok, audience: str) -> None:
    body = {"advertiser_id": "adv-1", "action": "delete", "delete_audience_id": audience}
    post(fake, "segment/audience/", body)
    params = {"advertiser_id": "adv-1", "custom_audience_ids": json.dumps([audience])}
    assert code(get(fake, "dmp/custom_audience/get/", params)) == 40007


# ------------------------------------------------------------------ scripted failures


def test_fail_next_answers_scripted_codes_then_recovers(fake: FakeTikTok, audience: str) -> None:
    fake.fail_next(40100, times=2, message="Too many requests")
    for _ in range(2):
        response = post(fake, "segment/mapping/", mapping_body(audience))
        assert response.status == 200
        assert code(response) == 40100
        assert message(response) == "Too many requests"
        assert fake.members(audience) == {}
    assert code(post(fake, "segment/mapping/", mapping_body(audience))) == 0
    assert len(fake.requests) == 4  # create + 3 mapping calls, the failed ones too


def test_fail_next_with_http_status(fake: FakeTikTok) -> None:
    fake.fail_next(40100, http_status=429)
    response = get(fake, "user/info/", {})
    assert response.status == 429
    assert code(response) == 40100


def test_fail_next_path_filter_leaves_other_paths_alone(fake: FakeTikTok, audience: str) -> None:
    fake.fail_next(50000, path="segment/mapping/")
    assert code(get(fake, "user/info/", {})) == 0
    assert code(post(fake, "segment/mapping", mapping_body(audience))) == 50000
    assert code(post(fake, "segment/mapping/", mapping_body(audience))) == 0


def test_fail_next_html_502_has_no_json(fake: FakeTikTok) -> None:
    fake.fail_next(0, http_status=502)
    response = get(fake, "user/info/", {})
    assert response.status == 502
    assert response.body is None
    assert "Bad Gateway" in response.text
    assert code(get(fake, "user/info/", {})) == 0


def test_fail_next_refuses_nonsense() -> None:
    fake = make_fake()
    with pytest.raises(ValueError):
        fake.fail_next(0)
    with pytest.raises(ValueError):
        fake.fail_next(40100, times=0)


# ------------------------------------------------------------------------ bookkeeping


def test_requests_are_recorded_in_order_as_copies(fake: FakeTikTok, audience: str) -> None:
    body = mapping_body(audience)
    post(fake, "segment/mapping/", body)
    body["action"] = "delete"  # the caller changing its dict later must not rewrite history
    recorded = fake.requests
    assert [r.path for r in recorded] == ["segment/audience/", "segment/mapping/"]
    assert recorded[1].json["action"] == "add"
    recorded.clear()
    assert len(fake.requests) == 2


def test_keep_requests_keeps_the_latest_only_and_the_audiences_whole() -> None:
    fake = make_fake(keep_requests=2)
    audience = create(fake, "Newsletter subscribers")
    post(fake, "segment/mapping/", mapping_body(audience))
    post(fake, "segment/mapping/", {"advertiser_ids": ["adv-1"]})  # refused: 40002
    post(fake, "segment/mapping/", {"advertiser_ids": ["adv-2"]})  # refused: 40002
    assert [r.json["advertiser_ids"] for r in fake.requests] == [["adv-1"], ["adv-2"]]
    assert len(fake.received_at) == 2
    assert [r.path for r in fake.accepted] == ["segment/audience/", "segment/mapping/"]
    # what was carried out stays carried out, kept or not
    assert fake.members(audience)["EMAIL_SHA256"] == {ALICE, BOB}
    with pytest.raises(ValueError):
        FakeTikTok(keep_requests=-1)


def test_members_returns_a_copy(fake: FakeTikTok, audience: str) -> None:
    post(fake, "segment/mapping/", mapping_body(audience))
    fake.members(audience)["EMAIL_SHA256"].clear()
    assert fake.members(audience)["EMAIL_SHA256"] == {ALICE, BOB}


def test_setup_errors_are_loud() -> None:
    fake = FakeTikTok()
    with pytest.raises(ValueError):
        fake.add_token("t", ["adv-unknown"])
    fake.add_advertiser("adv-1")
    with pytest.raises(ValueError):
        fake.add_advertiser("adv-1")
    with pytest.raises(ValueError):
        fake.add_token("Bearer t", ["adv-1"])
    with pytest.raises(KeyError):
        fake.revoke_token("never-added")


def test_send_is_thread_safe(fake: FakeTikTok, audience: str) -> None:
    hashes = [sha(f"user{n}@example.com") for n in range(200)]

    def worker(chunk: list[str]) -> None:
        for value in chunk:
            body = mapping_body(
                audience,
                id_schema=["EMAIL_SHA256"],
                batch_data=[[{"id": value, "audience_ids": [audience]}]],
            )
            assert code(post(fake, "segment/mapping/", body)) == 0

    threads = [threading.Thread(target=worker, args=(hashes[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fake.members(audience)["EMAIL_SHA256"] == set(hashes)
    request_ids = [r.path for r in fake.requests]
    assert len(request_ids) == 201


# ------------------------------------------------------------------------- over HTTP


@pytest.fixture
def server(fake: FakeTikTok) -> Iterator[RunningServer]:
    with serve_in_thread(fake) as running:
        yield running


def test_http_success_envelope(fake: FakeTikTok, server: RunningServer) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
    backend = tiktok_backend(server.base_url)
    request = ApiRequest(
        "POST",
        "segment/audience/",
        json={"advertiser_id": "adv-1", "action": "create", "custom_audience_name": "Buyers"},
        headers={"Access-Token": TOKEN},
    )
    response = backend.send(request)
    assert response.status == 200
    assert response.body is not None
    assert response.body["code"] == 0
    audience_id = response.body["data"]["audience_id"]
    assert [a.audience_id for a in fake.audiences()] == [audience_id]

    mapping = ApiRequest(
        "POST", "segment/mapping/", json=mapping_body(audience_id), headers={"Access-Token": TOKEN}
    )
    assert backend.send(mapping).body["code"] == 0
    assert fake.members(audience_id)["EMAIL_SHA256"] == {ALICE, BOB}
    recorded = fake.requests[-1]
    assert recorded.path == "segment/mapping/"
    assert recorded.json == mapping_body(audience_id)


def test_http_get_with_json_encoded_list(
    fake: FakeTikTok, server: RunningServer, audience: str
) -> None:
    backend = tiktok_backend(server.base_url)
    response = backend.send(
        ApiRequest(
            "GET",
            "dmp/custom_audience/get/",
            params={"advertiser_id": "adv-1", "custom_audience_ids": json.dumps([audience])},
            headers={"Access-Token": TOKEN},
        )
    )
    assert response.status == 200
    assert response.body is not None
    assert response.body["code"] == 0
    assert response.body["data"]["list"][0]["audience_details"]["audience_id"] == audience
    assert fake.requests[-1].params == {
        "advertiser_id": "adv-1",
        "custom_audience_ids": json.dumps([audience]),
    }


def test_http_unknown_paths_are_404(server: RunningServer) -> None:
    backend = tiktok_backend(server.base_url)
    response = backend.send(ApiRequest("GET", "no/such/", headers={"Access-Token": TOKEN}))
    assert response.status == 404
    assert response.body is not None
    assert response.body["code"] == 40000
    outside = requests.get(f"{server.base_url}/open_api/v1.2/user/info/", timeout=HANG_GUARD)
    assert outside.status_code == 404
    assert outside.json()["code"] == 40000


def test_http_html_502(fake: FakeTikTok, server: RunningServer) -> None:
    fake.fail_next(0, http_status=502)
    backend = tiktok_backend(server.base_url)
    response = backend.send(ApiRequest("GET", "user/info/", headers={"Access-Token": TOKEN}))
    assert response.status == 502
    assert response.body is None
    assert "Bad Gateway" in response.text


def test_http_missing_token(server: RunningServer) -> None:
    backend = tiktok_backend(server.base_url)
    response = backend.send(ApiRequest("GET", "user/info/"))
    assert response.status == 200
    assert response.body is not None
    assert response.body["code"] == 40104


def test_http_malformed_json_body_is_40002(server: RunningServer) -> None:
    reply = requests.post(
        f"{server.base_url}/open_api/v1.3/segment/audience/",
        data=b"{not json",
        headers={"Access-Token": TOKEN, "Content-Type": "application/json"},
        timeout=HANG_GUARD,
    )
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json()["code"] == 40002
    assert "Invalid JSON body" in reply.json()["message"]


def test_stopped_server_refuses_connections(fake: FakeTikTok) -> None:
    running = serve_in_thread(fake)
    url = f"{running.base_url}/open_api/v1.3/user/info/"
    assert (
        requests.get(url, headers={"Access-Token": TOKEN}, timeout=HANG_GUARD).json()["code"] == 0
    )
    running.stop()
    running.stop()  # harmless
    with pytest.raises(requests.ConnectionError):
        requests.get(url, headers={"Access-Token": TOKEN}, timeout=HANG_GUARD)


def test_http_connections_are_kept_alive_and_closed_when_the_server_stops(
    fake: FakeTikTok,
) -> None:
    running = serve_in_thread(fake)
    session = requests.Session()
    backend = tiktok_backend(running.base_url, session=session)
    info = ApiRequest("GET", "user/info/", headers={"Access-Token": TOKEN})
    for _ in range(5):
        assert backend.send(info).body["code"] == 0
    pools = session.get_adapter(running.base_url).poolmanager.pools
    opened = [pools[key].num_connections for key in pools.keys()]  # noqa: SIM118 (no __iter__)
    assert opened == [1]  # five requests, one connection (HTTP/1.1 keep-alive)
    # an unreadable body ends its connection: what follows it could not be parsed
    raw = http.client.HTTPConnection("127.0.0.1", running.port, timeout=HANG_GUARD)
    raw.putrequest("POST", "/open_api/v1.3/user/info/")
    raw.putheader("Content-Length", "-1")
    raw.endheaders()
    reply = raw.getresponse()
    assert reply.status == 400
    assert reply.getheader("Connection") == "close"
    raw.close()

    assert backend.send(info).body["code"] == 0  # on a kept connection again
    running.stop()
    # a stopped server answers nothing, not even on a connection it had kept open
    with pytest.raises(RetryableError):
        backend.send(info)


def test_serve_forever_reports_its_url_and_stops_on_ctrl_c(
    fake: FakeTikTok, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def interrupt(self: object, poll_interval: float = 0.5) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("socketserver.BaseServer.serve_forever", interrupt)
    serve_forever(fake, port=0, on_ready=seen.append)  # returns instead of raising
    assert len(seen) == 1
    assert seen[0].startswith("http://127.0.0.1:")


def test_http_server_does_not_log_requests(
    server: RunningServer, capfd: pytest.CaptureFixture[str]
) -> None:
    backend = tiktok_backend(server.base_url)
    backend.send(ApiRequest("GET", "user/info/", headers={"Access-Token": TOKEN}))
    backend.send(ApiRequest("GET", "user/info/"))
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""

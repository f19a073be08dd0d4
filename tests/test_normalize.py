"""Tests of the identifier normalizers and hashing in destination.tiktok.normalize."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from destination.errors import ConfigurationError, PayloadError
from destination.tiktok.normalize import (
    ID_TYPES,
    advertising_id_type,
    hash_advertising_id,
    hash_email,
    hash_phone,
    is_sha256_hex,
    normalize_advertising_id,
    normalize_email,
    normalize_phone,
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


HASH_UPPER = "ABCDEF0123456789" * 4
HASH_LOWER = HASH_UPPER.lower()
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"


def test_id_types_are_in_request_order() -> None:
    assert ID_TYPES == ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256")


# --- email -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("john@example.com", "john@example.com"),
        ("  John@Example.COM\t\n", "john@example.com"),
        ("JOHN.DOE+news@EXAMPLE.co.uk", "john.doe+news@example.co.uk"),
    ],
)
def test_email_is_trimmed_and_lowercased(value: str, expected: str) -> None:
    assert normalize_email(value) == expected


@pytest.mark.parametrize(
    ("value", "remove_plus_suffix", "remove_dots", "expected"),
    [
        ("a+news@x.com", False, False, "a+news@x.com"),
        ("a+news@x.com", True, False, "a@x.com"),
        ("a+news+more@x.com", True, False, "a@x.com"),
        ("john.doe@x.com", False, True, "johndoe@x.com"),
        ("john.doe@mail.x.com", False, True, "johndoe@mail.x.com"),
        ("John.Doe+Tag@X.com", True, True, "johndoe@x.com"),
        ("john.doe+t.a.g@x.com", True, False, "john.doe@x.com"),
        ("john.doe+t.a.g@x.com", False, True, "johndoe+tag@x.com"),
    ],
)
def test_email_options_remove_plus_suffix_and_dots_from_local_part(
    value: str, remove_plus_suffix: bool, remove_dots: bool, expected: str
) -> None:
    result = normalize_email(value, remove_plus_suffix=remove_plus_suffix, remove_dots=remove_dots)
    assert result == expected


# addresses the normalizer refuses (the compiled route's tests use them too)
INVALID_EMAILS = [
    "",
    "   ",
    "john.example.com",
    "john@@example.com",
    "john@doe@example.com",
    "@example.com",
    "john@",
    "john@example",
    "john@.com",
    "john@example.",
    "john@exa..mple.com",
    "john doe@example.com",
    "john@exa mple.com",
    "john@\texample.com",
    "jo\ud800hn@example.com",
]


@pytest.mark.parametrize("value", INVALID_EMAILS)
def test_invalid_email_is_rejected(value: str) -> None:
    with pytest.raises(PayloadError, match=r"^email is not a valid address$"):
        normalize_email(value)


@pytest.mark.parametrize(
    ("value", "remove_plus_suffix", "remove_dots"),
    [("+news@x.com", True, False), ("...@x.com", False, True), (".+a@x.com", True, True)],
)
def test_email_with_nothing_left_in_local_part_is_rejected(
    value: str, remove_plus_suffix: bool, remove_dots: bool
) -> None:
    with pytest.raises(PayloadError, match=r"^email has an empty local part"):
        normalize_email(value, remove_plus_suffix=remove_plus_suffix, remove_dots=remove_dots)


# --- phone -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        ("+16502530000", None, "+16502530000"),
        ("+16502530000", "DE", "+16502530000"),
        (" +1 650 253 0000 ", None, "+16502530000"),
        ("+1 (650) 253-0000", None, "+16502530000"),
        ("650-253-0000", "US", "+16502530000"),
        ("(650) 253 0000", "US", "+16502530000"),
        ("6502530000", "us", "+16502530000"),
        ("1 650 253 0000", "US", "+16502530000"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("(020) 7946-0958", "GB", "+442079460958"),
        ("030 1234567", "DE", "+49301234567"),
        ("030/123-4567", "DE", "+49301234567"),
        ("00 49 30 1234567", "DE", "+49301234567"),
        ("0044 20 7946 0958", "GB", "+442079460958"),
        ("011 44 20 7946 0958", "US", "+442079460958"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("+4930 1234567", "", "+49301234567"),
        ("650 253 0000", " us ", "+16502530000"),
    ],
)
def test_phone_is_normalized_to_e164(value: str, region: str | None, expected: str) -> None:
    assert normalize_phone(value, default_region=region) == expected


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        ("+16502530000", None, "16502530000"),
        ("020 7946 0958", "GB", "442079460958"),
    ],
)
def test_phone_e164_no_plus_format_drops_the_plus(
    value: str, region: str | None, expected: str
) -> None:
    assert normalize_phone(value, default_region=region, phone_format="e164_no_plus") == expected


@pytest.mark.parametrize("value", ["6502530000", "650-253-0000", "(020) 7946 0958", "0044 20"])
@pytest.mark.parametrize("region", [None, "", "  "])
def test_phone_without_country_code_or_region_has_its_own_reason(
    value: str, region: str | None
) -> None:
    with pytest.raises(
        PayloadError, match=r"^phone has no country code and no default_phone_region is set$"
    ):
        normalize_phone(value, default_region=region)


@pytest.mark.parametrize(
    ("value", "region"),
    [
        ("+1 650 253 00001", None),
        ("+1 123 456 7890", None),
        ("+999 123 456", None),
        ("+", None),
        ("+abc", None),
        ("12345", "US"),
        ("0044 20 7946 0958", "US"),
        ("abc", "US"),
        ("abc", None),
        ("1" * 300, "US"),
    ],
)
def test_invalid_phone_is_rejected(value: str, region: str | None) -> None:
    with pytest.raises(PayloadError, match=r"^phone is not a valid number$"):
        normalize_phone(value, default_region=region)


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_phone_is_rejected(value: str) -> None:
    with pytest.raises(PayloadError, match=r"^phone is empty$"):
        normalize_phone(value, default_region="US")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"default_region": "XX"}, "default_phone_region"),
        ({"default_region": "USA"}, "default_phone_region"),
        ({"default_region": 1}, "default_phone_region"),
        ({"phone_format": "national"}, "phone_format"),
    ],
)
def test_bad_phone_settings_are_configuration_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        normalize_phone("+16502530000", **kwargs)


# --- advertising ids ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (IDFA, IDFA.lower()),
        (f"  {IDFA}\n", IDFA.lower()),
        (GAID, GAID),
        (GAID.upper(), GAID),
        (GAID.replace("-", ""), GAID.replace("-", "")),
        (IDFA.replace("-", ""), IDFA.replace("-", "").lower()),
    ],
)
def test_advertising_id_is_trimmed_and_lowercased_keeping_hyphens(
    value: str, expected: str
) -> None:
    assert normalize_advertising_id(value) == expected


@pytest.mark.parametrize(
    "value",
    ["00000000-0000-0000-0000-000000000000", "0" * 32, " 00000000-0000-0000-0000-000000000000 "],
)
def test_all_zero_advertising_id_means_tracking_refused(value: str) -> None:
    with pytest.raises(PayloadError, match=r"^advertising id is all zeros \(tracking refused\)$"):
        normalize_advertising_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        GAID[:-1],
        GAID + "0",
        GAID.replace("-", "")[:-1],
        GAID.replace("-", "") + "a",
        GAID.replace("d", "g"),
        GAID.replace("-", "").replace("8", "x"),
        "38400000-8cf011bd-b23e-10b96e40000d",
        "384000008-cf0-11bd-b23e-10b96e40000d",
        "{38400000-8cf0-11bd-b23e-10b96e40000d}",
        "38400000 8cf0 11bd b23e 10b96e40000d",
        "\u0663" * 32,
        "0000",
    ],
)
def test_malformed_advertising_id_is_rejected(value: str) -> None:
    with pytest.raises(PayloadError, match=r"^advertising id is not 32 hex digits$"):
        normalize_advertising_id(value)


@pytest.mark.parametrize(
    ("device_type", "expected"),
    [
        ("ios", "IDFA_SHA256"),
        ("iOS", "IDFA_SHA256"),
        (" IPADOS ", "IDFA_SHA256"),
        ("tvOS", "IDFA_SHA256"),
        ("watchos", "IDFA_SHA256"),
        ("android", "AAID_SHA256"),
        ("  Android\n", "AAID_SHA256"),
        ("macos", None),
        ("windows", None),
        ("android tv", None),
        ("", None),
        (None, None),
        (3, None),
    ],
)
def test_device_type_selects_advertising_id_type(device_type: Any, expected: str | None) -> None:
    assert advertising_id_type(device_type) == expected


# --- pre-hashed values and hashing -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (HASH_UPPER, True),
        (HASH_LOWER, True),
        (f"  {HASH_UPPER}\n", True),
        (HASH_LOWER[:-1], False),
        (HASH_LOWER + "a", False),
        (HASH_LOWER[:-1] + "g", False),
        ("", False),
        (12, False),
    ],
)
def test_is_sha256_hex_recognizes_64_hex_characters(value: Any, expected: bool) -> None:
    assert is_sha256_hex(value) is expected


HASHERS: list[Callable[[str], str]] = [hash_email, hash_phone, hash_advertising_id]


@pytest.mark.parametrize("hasher", HASHERS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (HASH_UPPER, HASH_LOWER),
        (HASH_LOWER, HASH_LOWER),
        (f" {HASH_UPPER}\n", HASH_LOWER),
        ("0" * 64, "0" * 64),
    ],
)
def test_prehashed_value_is_only_lowercased(
    hasher: Callable[[str], str], value: str, expected: str
) -> None:
    assert hasher(value) == expected


@pytest.mark.parametrize("hasher", HASHERS)
@pytest.mark.parametrize("value", [HASH_UPPER[:63], HASH_UPPER + "A"])
def test_63_or_65_hex_characters_are_not_prehashed(
    hasher: Callable[[str], str], value: str
) -> None:
    with pytest.raises(PayloadError):
        hasher(value)


@pytest.mark.parametrize(
    ("actual", "normalized"),
    [
        (lambda: hash_email(" John.Doe@Example.COM "), "john.doe@example.com"),
        (
            lambda: hash_email("John.Doe+x@Example.com", remove_plus_suffix=True, remove_dots=True),
            "johndoe@example.com",
        ),
        (lambda: hash_phone("(650) 253-0000", default_region="US"), "+16502530000"),
        (
            lambda: hash_phone("020 7946 0958", default_region="GB", phone_format="e164_no_plus"),
            "442079460958",
        ),
        (lambda: hash_advertising_id(IDFA), IDFA.lower()),
        (lambda: hash_advertising_id(f" {GAID.upper()} "), GAID),
        (lambda: hash_email(" José@Exämple.com"), "josé@exämple.com"),
    ],
)
def test_hash_is_sha256_hex_of_normalized_value(actual: Callable[[], str], normalized: str) -> None:
    assert actual() == sha256(normalized)


def test_text_that_cannot_be_encoded_never_reaches_the_hash() -> None:
    with pytest.raises(PayloadError, match="email is not a valid address"):
        hash_email("j\ud800@example.com")
    # phonenumbers reads the number out of the text around it: ASCII digits are hashed
    assert hash_phone("+1 650 253 0000\ud800") == sha256("+16502530000")
    with pytest.raises(PayloadError, match="advertising id is not 32 hex digits"):
        hash_advertising_id(IDFA[:-1] + "\ud800")


# --- errors and purity -------------------------------------------------------------------


ALL_FUNCTIONS: list[tuple[str, Callable[[Any], str]]] = [
    ("email", normalize_email),
    ("email", hash_email),
    ("phone", normalize_phone),
    ("phone", hash_phone),
    ("advertising id", normalize_advertising_id),
    ("advertising id", hash_advertising_id),
]


@pytest.mark.parametrize(("kind", "function"), ALL_FUNCTIONS)
@pytest.mark.parametrize("value", [None, 12345, 1.5, b"john@example.com", ["a@b.co"]])
def test_non_string_input_raises_payload_error(
    kind: str, function: Callable[[Any], str], value: Any
) -> None:
    with pytest.raises(PayloadError, match=f"^{kind} is not a string"):
        function(value)


SECRET_VALUES: list[tuple[Callable[[str], str], str]] = [
    (normalize_email, "secret.person@nowhere"),
    (normalize_email, "secret person@example.com"),
    (hash_email, "secret.person"),
    (lambda v: normalize_email(v, remove_plus_suffix=True), "+secret@example.com"),
    (normalize_phone, "4155550199"),
    (lambda v: normalize_phone(v, default_region="US"), "415555019"),
    (hash_phone, "+99941555501"),
    (normalize_advertising_id, "deadbeef-dead-beef-dead-beefdeadbee"),
    (hash_advertising_id, "00000000-0000-0000-0000-000000000000"),
]


@pytest.mark.parametrize(("function", "value"), SECRET_VALUES)
def test_error_message_never_contains_the_value(function: Callable[[str], str], value: str) -> None:
    with pytest.raises(PayloadError) as caught:
        function(value)
    # Every message of the chain as printed (a library's message could hold the value too).
    messages = []
    current: BaseException | None = caught.value
    while current is not None:
        messages.append(repr(current))
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    assert all(value.strip("+") not in message for message in messages)


@pytest.mark.parametrize(
    ("function", "value"),
    [
        (hash_email, " John.Doe+x@Example.COM "),
        (lambda v: normalize_email(v, remove_plus_suffix=True, remove_dots=True), "A.b+c@D.com"),
        (lambda v: hash_phone(v, default_region="DE"), "030 1234567"),
        (normalize_advertising_id, IDFA),
        (hash_advertising_id, HASH_UPPER),
    ],
)
def test_results_are_deterministic(function: Callable[[str], str], value: str) -> None:
    original = str(value)
    results = {function(value) for _ in range(3)}
    assert len(results) == 1
    assert value == original

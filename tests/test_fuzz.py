"""Fuzz tests: whatever the input, only the documented errors escape.

Hypothesis feeds random input to the parts that take data from outside: the NDJSON
reader (any bytes), the mapping kit (any JSON as a mapping, any JSON as an event), the
subscription language (any text), the identifier normalizers (any text, any object) and
the whole route of an event through the shipped native mapping. Each test states what
may come out: a value of the promised shape, or the one error class the caller handles.

Inputs that once broke a promise are pinned as plain tests below the property they broke.
"""

from __future__ import annotations

import codecs
import copy
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import phonenumbers
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from destination.backends import DryRunBackend
from destination.errors import MappingError, PayloadError
from destination.kit import mapping as mapping_module
from destination.kit.action import Prepared, Subscription
from destination.kit.mapping import CompiledMapping, compile_mapping
from destination.kit.subscriptions import parse_subscription
from destination.runner.outputs import OutputFile, rejected_record
from destination.runner.reader import Line, read_ndjson
from destination.settings import Secret, Settings
from destination.tiktok.actions import Context
from destination.tiktok.api import TikTokApi
from destination.tiktok.audiences import AudienceRegistry
from destination.tiktok.destination import bind, load_mapping_file
from destination.tiktok.normalize import (
    _is_valid_split,
    advertising_id_type,
    hash_advertising_id,
    hash_email,
    hash_phone,
    normalize_advertising_id,
    normalize_email,
    normalize_phone,
)

ROOT = Path(__file__).resolve().parent.parent
NATIVE_MAPPING = ROOT / "mappings" / "segment-native.json"

FUZZ = settings(max_examples=300, deadline=None)
HEX64 = re.compile(r"[0-9a-f]{64}")
BOM = codecs.BOM_UTF8

# JSON values: what json.loads can give (no NaN: it is never equal to itself)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)


def json_values(keys: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    keys = keys if keys is not None else st.text(max_size=8)
    return st.recursive(
        json_scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=20,
    )


# ------------------------------------------------------------------------ NDJSON reader


def reference_lines(data: bytes, max_bytes: int) -> list[tuple[int, str, Any]]:
    """What the reader should yield, from splitting ``data`` at b"\\n" (the reader's
    promise): (number, "event" | "long" | "error", the event)."""
    pieces = data.split(b"\n")
    if data.endswith(b"\n"):
        pieces.pop()
    expected: list[tuple[int, str, Any]] = []
    if pieces:
        pieces[0] = pieces[0].removeprefix(BOM)
    for number, piece in enumerate(pieces, start=1):
        if len(piece) > max_bytes:
            expected.append((number, "long", None))
            continue
        if not piece.strip():
            continue
        try:
            value = orjson.loads(piece)  # the reader's codec: strict about NaN, surrogates
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError too
            value = None
        if isinstance(value, dict):
            expected.append((number, "event", value))
        else:
            expected.append((number, "error", None))
    return expected


def read_all(data: bytes, max_bytes: int) -> list[Line]:
    lines = list(read_ndjson(io.BytesIO(data), max_bytes=max_bytes))
    numbers = [line.number for line in lines]
    assert numbers == sorted(set(numbers)), "line numbers must be increasing"
    for line in lines:
        assert line.number >= 1
        if line.event is not None:
            assert isinstance(line.event, dict)
            assert line.error == ""
        else:
            assert line.error, line
            assert len(line.raw) <= 2000
    return lines


def check_against_reference(data: bytes, max_bytes: int) -> None:
    lines = read_all(data, max_bytes)
    actual = [
        (
            line.number,
            "event"
            if line.event is not None
            else "long"
            if "longer than" in line.error
            else "error",
            line.event,
        )
        for line in lines
    ]
    expected = reference_lines(data, max_bytes)
    assert [(n, kind) for n, kind, _ in actual] == [(n, kind) for n, kind, _ in expected]
    for (_, _, got), (_, _, wanted) in zip(actual, expected, strict=True):
        assert json.dumps(got, sort_keys=True) == json.dumps(wanted, sort_keys=True)


small_json = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children)
    ),
    max_leaves=6,
)


def _line_text() -> st.SearchStrategy[str]:
    """One line of text: JSON-ish fragments, valid events, random unicode, long runs."""
    fragments = st.sampled_from(
        ["{", "}", "[", "]", '"', ":", ",", "\\", "\\u00e9", "\\ud83d", "null", "true", "1e9",
         "-0", " ", "\t", "\r", "\ufeff", "é", "\u2028", "\x00", '{"a":', '"type":"track"'],
    )  # fmt: skip
    return st.one_of(
        st.lists(fragments, max_size=12).map("".join),
        st.builds(lambda value: json.dumps(value, ensure_ascii=False), small_json),
        st.dictionaries(st.text(max_size=6), small_json, max_size=4).map(json.dumps),
        st.text(max_size=40),
        st.builds(
            lambda char, count: '{"k": "' + char * count + '"}',
            st.sampled_from(["x", "é", "€", "😀", " "]),
            st.integers(0, 400),
        ),
        st.just(""),
        st.just("   "),
    )


@st.composite
def ndjson_texts(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_line_text(), max_size=8))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    text = ending.join(lines) + draw(st.sampled_from(["", ending]))
    return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(data=st.binary(max_size=400), max_bytes=st.integers(1, 120))
def test_reader_never_raises_on_any_bytes(data: bytes, max_bytes: int) -> None:
    check_against_reference(data, max_bytes)


@FUZZ
@given(data=ndjson_texts(), max_bytes=st.integers(1, 600))
def test_reader_splits_numbers_and_parses_lines_like_the_reference(
    data: bytes, max_bytes: int
) -> None:
    check_against_reference(data, max_bytes)
    # and, said plainly: a line longer than the limit is an error line, never an event
    lines = {line.number: line for line in read_ndjson(io.BytesIO(data), max_bytes=max_bytes)}
    long_lines = 0
    for number, piece in enumerate(data.split(b"\n"), start=1):
        if len(piece.removeprefix(BOM) if number == 1 else piece) > max_bytes:
            long_lines += 1
            assert lines[number].event is None
            assert f"longer than {max_bytes} bytes" in lines[number].error
    event("has a long line" if long_lines else "no long line")


@FUZZ
@given(data=ndjson_texts())
def test_every_line_the_reader_yields_can_be_written_to_the_rejected_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        output = OutputFile(Path(folder) / "rejected.ndjson", what="rejected file")
        output.open(resume_at=None)
        try:
            for line in read_ndjson(io.BytesIO(data), max_bytes=300):
                output.write(rejected_record(line, "invalid", "a message"))
        finally:
            output.close()


def test_reader_turns_a_line_with_a_huge_integer_into_an_error_line() -> None:
    data = b'{"type": "track", "n": ' + b"1" * 5000 + b"}\n{}\n"
    lines = list(read_ndjson(io.BytesIO(data)))
    assert [line.number for line in lines] == [1, 2]
    assert lines[0].event is None and lines[0].error
    assert lines[1].event == {}


def test_reader_keeps_line_numbers_when_the_first_line_has_a_bom() -> None:
    event_text = b'{"a": "xxxx"}'  # 13 bytes: within a limit of 14
    data = BOM + event_text + b"\n{}\n"
    lines = list(read_ndjson(io.BytesIO(data), max_bytes=14))
    assert [(line.number, line.event) for line in lines] == [(1, {"a": "xxxx"}), (2, {})]


def test_an_event_with_a_lone_surrogate_can_be_written_to_the_rejected_file(
    tmp_path: Path,
) -> None:
    (line,) = read_ndjson(io.BytesIO(b'{"type": "identify", "name": "\\ud800"}\n'))
    assert line.event is None and "lone surrogate" in line.error  # not valid UTF-8 text
    output = OutputFile(tmp_path / "rejected.ndjson", what="rejected file")
    output.open(resume_at=None)
    try:
        output.write(rejected_record(line, "invalid_json", line.error))
        # an event that holds one anyway (built in code, not read) is written as its escape
        output.write({"event": {"name": "\ud800"}})
    finally:
        output.close()
    first, second = [json.loads(text) for text in (tmp_path / "rejected.ndjson").open()]
    assert first["raw"] == line.raw
    assert second["event"] == {"name": "\ud800"}


# ------------------------------------------------------------------------ mapping kit

DIRECTIVE_NAMES = (
    "@path",
    "@template",
    "@literal",
    "@if",
    "@case",
    "@replace",
    "@arrayPath",
    "@merge",
    "@excludeWhenNull",
    "@unknown",
)
ARGUMENT_NAMES = (
    "exists",
    "blank",
    "then",
    "else",
    "operator",
    "value",
    "pattern",
    "replacement",
    "ignorecase",
    "global",
    "objects",
    "direction",
)
EVENT_KEYS = ("a", "b", "list", "x", "context", "traits", "email", "0", "a b")
PATHS = (
    "$",
    "$.a",
    "$.a.b",
    "$.list[0]",
    "$.list[1].x",
    "$['a b']",
    '$["a"].b',
    "$.context.traits.email",
    "$..a",
    "a.b",
    "$.a[",
    "$[0]",
)
TEMPLATES = ("{{a}}", "x {{a.b}} y", "{{list.0}}", "{{ a }}", "plain", "{{a", "{{$.a}}", "{{}}")

mapping_keys = st.one_of(
    st.sampled_from(DIRECTIVE_NAMES),
    st.sampled_from(ARGUMENT_NAMES),
    st.sampled_from(EVENT_KEYS),
    st.text(max_size=6),
    st.text(max_size=6).map(lambda text: "@" + text),
)
mapping_strings = st.one_of(
    st.sampled_from(PATHS + TEMPLATES + ("lower", "upper", "left", "right")),
    st.text(max_size=12),
)
mapping_scalars = st.one_of(st.none(), st.booleans(), st.integers(), mapping_strings)


def _directives(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Directive objects of the right shape (whose arguments may still be wrong)."""
    return st.one_of(
        st.builds(lambda p: {"@path": p}, st.sampled_from(PATHS)),
        st.builds(lambda t: {"@template": t}, st.sampled_from(TEMPLATES)),
        st.builds(lambda v: {"@literal": v}, children),
        st.builds(
            lambda test, subject, then, other: {
                "@if": {test: subject, "then": then, "else": other}
            },
            st.sampled_from(["exists", "blank"]),
            children,
            children,
            children,
        ),
        st.builds(
            lambda operator, value: {"@case": {"operator": operator, "value": value}},
            st.sampled_from(["lower", "upper"]),
            children,
        ),
        st.builds(
            lambda pattern, replacement, value, ignorecase, everywhere: {
                "@replace": {
                    "pattern": pattern,
                    "replacement": replacement,
                    "value": value,
                    "ignorecase": ignorecase,
                    "global": everywhere,
                }
            },
            st.text(min_size=1, max_size=3),
            st.text(max_size=3),
            children,
            st.booleans(),
            st.booleans(),
        ),
        st.builds(lambda source, shape: {"@arrayPath": [source, shape]}, children, children),
        st.builds(lambda source: {"@arrayPath": [source]}, children),
        st.builds(
            lambda objects, direction: {"@merge": {"objects": objects, "direction": direction}},
            st.lists(children, min_size=1, max_size=3),
            st.sampled_from(["left", "right"]),
        ),
        st.builds(
            lambda fields: {**fields, "@excludeWhenNull": True},
            st.dictionaries(st.sampled_from(EVENT_KEYS), children, max_size=3),
        ),
    )


mapping_values = st.recursive(
    mapping_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(mapping_keys, children, max_size=3),
        _directives(children),
    ),
    max_leaves=12,
)
mappings = st.one_of(
    st.dictionaries(st.sampled_from(EVENT_KEYS), mapping_values, max_size=4),
    st.dictionaries(mapping_keys, mapping_values, max_size=4),
    mapping_values,  # not always an object: compile_mapping must say so
)
json_events = st.dictionaries(st.sampled_from(EVENT_KEYS) | st.text(max_size=4), json_values(
    st.sampled_from(EVENT_KEYS) | st.text(max_size=4)
), max_size=5)  # fmt: skip


def _scribble(value: Any) -> None:
    """Change every container in ``value`` in place."""
    if isinstance(value, dict):
        for item in list(value.values()):
            _scribble(item)
        value["scribbled"] = True
    elif isinstance(value, list):
        for item in value:
            _scribble(item)
        value.append("scribbled")


@FUZZ
@given(mapping=mappings, events=st.lists(json_events, min_size=1, max_size=3))
def test_compile_mapping_raises_only_mapping_error_and_apply_never_raises(
    mapping: Any, events: list[dict[str, Any]]
) -> None:
    before = copy.deepcopy(mapping)
    try:
        compiled = compile_mapping(mapping, source="fuzz.json", pointer="/m")
    except MappingError as exc:
        event("mapping refused")
        assert exc.source == "fuzz.json"
        assert exc.pointer.startswith("/m")
        return
    event("mapping compiled")
    assert isinstance(compiled, CompiledMapping)
    for subject in events:
        original = copy.deepcopy(subject)
        first = compiled.apply(subject)
        assert isinstance(first, dict)
        expected = copy.deepcopy(first)
        _scribble(first)  # the result shares no container with the event or the mapping
        assert subject == original, "apply changed the event"
        assert compiled.apply(subject) == expected
        # the payload: what apply gives, less the empty values, in the same order
        payload = compiled.payload(subject)
        assert list(payload.items()) == [
            (key, value)
            for key, value in expected.items()
            if value is not None and (not isinstance(value, str) or value.strip())
        ]
    assert mapping == before, "compiling changed the mapping"


@pytest.mark.parametrize(
    "value",
    [{"@path": "$.list[" + "1" * 5000 + "]"}, {"@template": "{{list." + "1" * 5000 + "}}"}],
    ids=["path", "template"],
)
def test_a_huge_index_in_a_mapping_is_a_mapping_error(value: dict[str, str]) -> None:
    with pytest.raises(MappingError):
        compile_mapping({"field": value})


# ------------------------------------------------------------------------ subscriptions

SUBSCRIPTION_TOKENS = (
    "type", "event", "properties.plan", "a.b-c", "$x", "a.", ".a", "=", "!=", "==", "<",
    "and", "or", "not", "all", "AND", "(", ")", '"track"', '"a\\"b"', '"\\n"', '"\\q"', '"',
    "3", "-1.5", "-", "1.", "1e5", "9" * 20, "true", "false", "null", "'x'", "&", "|", "é",
)  # fmt: skip

subscription_texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(SUBSCRIPTION_TOKENS), max_size=14).map(" ".join),
    st.lists(st.sampled_from(SUBSCRIPTION_TOKENS), max_size=14).map("".join),
    st.integers(0, 150).map(lambda depth: "(" * depth + "all" + ")" * depth),
    st.integers(0, 150).map(lambda depth: "not " * depth + "all"),
)


@FUZZ
@given(text=subscription_texts, events=st.lists(json_events, max_size=3))
def test_parse_subscription_raises_only_mapping_error_and_matches_never_raises(
    text: str, events: list[dict[str, Any]]
) -> None:
    try:
        condition = parse_subscription(text, source="fuzz.json", pointer="/s")
    except MappingError as exc:
        event("refused")
        assert exc.pointer == "/s"
        assert "column" in exc.expected
        return
    event("parsed")
    assert parse_subscription(str(condition)) == condition  # the canonical text parses back
    for subject in events:
        assert isinstance(condition.matches(subject), bool)


def test_a_huge_integer_in_a_subscription_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="number"):
        parse_subscription("properties.count = 1" + "0" * 309)


# ------------------------------------------------------------------------ normalizers

OBJECTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=8),
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)
emails = st.one_of(
    st.emails().map(lambda e: e.upper()),
    st.emails().map(lambda e: f"  {e}\t"),
    st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=6), st.text(max_size=8)),
)
phones = st.one_of(
    st.text(alphabet="0123456789 +-().\uff0b\u0660", max_size=18),
    st.builds(lambda n: f"+1 650 253 {n:04d}", st.integers(0, 9999)),
    st.builds(lambda n: f"020 7946 {n:04d}", st.integers(0, 9999)),
    st.builds(lambda n: f"(650) 253-{n:04d}", st.integers(0, 9999)),
)
advertising_ids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex.upper()),
    st.uuids().map(lambda u: f" {u} "),
    st.text(alphabet="0123456789abcdefABCDEF-", max_size=40),
    st.just("00000000-0000-0000-0000-000000000000"),
)
with_surrogates = st.text(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(), max_size=8
).map(lambda text: text + "@example.com")
prehashed = st.binary(max_size=8).map(lambda b: hashlib.sha256(b).hexdigest().upper())

# Every message a normalizer may raise: none of them is built from the value.
KNOWN_MESSAGES = re.compile(
    r"(email|phone|advertising id|value to hash) is not a string \(got \w+\)"
    r"|value to hash cannot be encoded as UTF-8"
    r"|email is not a valid address"
    r"|email has an empty local part once normalized"
    r"|phone is empty"
    r"|phone has no country code and no default_phone_region is set"
    r"|phone is not a valid number"
    r"|advertising id is not 32 hex digits"
    r"|advertising id is all zeros \(tracking refused\)"
)

NORMALIZERS: dict[str, Callable[[Any], Any]] = {
    "hash_email": hash_email,
    "hash_email/options": lambda v: hash_email(v, remove_plus_suffix=True, remove_dots=True),
    "hash_phone": hash_phone,
    "hash_phone/US": lambda v: hash_phone(v, default_region="US"),
    "hash_phone/GB": lambda v: hash_phone(v, default_region="GB", phone_format="e164_no_plus"),
    "hash_advertising_id": hash_advertising_id,
    "normalize_email": normalize_email,
    "normalize_phone": normalize_phone,
    "normalize_phone/US": lambda v: normalize_phone(v, default_region="US"),
    "normalize_phone/GB": lambda v: normalize_phone(v, default_region="GB"),
    "normalize_advertising_id": normalize_advertising_id,
}


def check_normalizer(name: str, value: Any) -> None:
    before = copy.deepcopy(value)
    try:
        result = NORMALIZERS[name](value)
    except PayloadError as exc:
        event(f"{name}: refused")
        message = str(exc)
        assert KNOWN_MESSAGES.fullmatch(message), message
        shown = value.strip() if isinstance(value, str) else ""
        if len(shown) > 3 and shown in message:
            # only a coincidence with the fixed text is allowed (the value "phone")
            assert shown in KNOWN_MESSAGES.pattern, message
        return
    finally:
        assert value == before or value != value  # pure: the input is untouched (NaN aside)
    event(f"{name}: accepted")
    assert isinstance(result, str)
    if name.startswith(("hash_", "sha256")):
        assert HEX64.fullmatch(result), result
    elif name.startswith("normalize_phone"):
        assert re.fullmatch(r"\+[1-9][0-9]{6,14}", result), result
        assert normalize_phone(result) == result  # E.164 normalizes to itself
    elif name == "normalize_email":
        assert normalize_email(result) == result
    elif name == "normalize_advertising_id":
        assert normalize_advertising_id(result) == result


@FUZZ
@given(
    name=st.sampled_from(sorted(NORMALIZERS)),
    value=st.one_of(
        st.text(max_size=30), with_surrogates, emails, phones, advertising_ids, prehashed, OBJECTS
    ),
)
def test_normalizers_raise_only_payload_error_that_never_quotes_the_value(
    name: str, value: Any
) -> None:
    check_normalizer(name, value)


@FUZZ
@given(value=st.one_of(st.text(max_size=12), OBJECTS, st.sampled_from(["iOS", " android "])))
def test_advertising_id_type_never_raises(value: Any) -> None:
    assert advertising_id_type(value) in (None, "IDFA_SHA256", "AAID_SHA256")


# ------------------------------------------------------------------------ the event route


@pytest.fixture(scope="module")
def add_to_audience() -> Iterator[Subscription]:
    """The first subscription of the shipped native mapping, bound for a dry run."""
    with tempfile.TemporaryDirectory() as folder:
        context = Context(
            settings=Settings(audience_state=Path(folder) / "audiences.json"),
            api=TikTokApi(DryRunBackend(), Secret("unused")),
            registry=AudienceRegistry(
                Path(folder) / "audiences.json", namespace="fuzz", create=None
            ),
        )
        yield bind(load_mapping_file(NATIVE_MAPPING), context)[0]


identifier_values = st.one_of(emails, phones, advertising_ids, prehashed, json_values())
route_events = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "identify"]) | json_values(),
        "event": st.just("Audience Entered") | json_values(),
        "properties": st.fixed_dictionaries(
            {}, optional={"email": identifier_values, "phone": identifier_values}
        )
        | json_values(),
        "context": st.fixed_dictionaries(
            {},
            optional={
                "traits": st.fixed_dictionaries(
                    {}, optional={"email": identifier_values, "phone": identifier_values}
                )
                | json_values(),
                "device": st.fixed_dictionaries(
                    {},
                    optional={
                        "advertisingId": identifier_values,
                        "type": st.sampled_from(["ios", "android", "web"]) | json_values(),
                    },
                ),
                "personas": st.fixed_dictionaries(
                    {},
                    optional={
                        "external_audience_id": st.sampled_from(["123", ""]) | json_values(),
                        "computation_key": st.sampled_from(["vip", " "]) | json_values(),
                        "audience_settings": st.fixed_dictionaries(
                            {}, optional={"advertiserId": st.just("7000") | json_values()}
                        ),
                    },
                ),
            },
        )
        | json_values(),
        "extra": json_values(),
    },
)


@settings(FUZZ, suppress_health_check=[HealthCheck.too_slow])
@given(subject=route_events)
def test_routing_any_event_raises_only_payload_error(
    add_to_audience: Subscription, subject: dict[str, Any]
) -> None:
    original = copy.deepcopy(subject)
    try:
        prepared = add_to_audience.place(add_to_audience.step(0, subject))
    except PayloadError as exc:
        event(f"rejected: {exc.reason}")
        assert exc.reason
        return
    finally:
        assert subject == original, "routing changed the event"
    event("prepared")
    assert isinstance(prepared, Prepared)
    assert isinstance(prepared.group, tuple)
    advertiser_id, audience_id, action = prepared.group
    assert action == "add" and advertiser_id and audience_id
    assert prepared.item, "a prepared user has at least one identifier"
    for id_type, hashed in prepared.item.items():
        assert id_type in ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256")
        assert HEX64.fullmatch(hashed)


def assert_agrees_with_the_full_parser(text: str, region: str | None) -> None:
    """``normalize_phone`` gives what ``phonenumbers.parse`` + validation give, or refuses
    exactly what they refuse."""
    try:
        parsed = phonenumbers.parse(text, region)
        valid = phonenumbers.is_valid_number(parsed)
        expected = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    except phonenumbers.NumberParseException:
        valid, expected = False, ""
    if valid:
        assert normalize_phone(text, default_region=region) == expected
    else:
        with pytest.raises(PayloadError):
            normalize_phone(text, default_region=region)


E164_COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


@settings(max_examples=2000, deadline=None)
@given(
    code=st.sampled_from(E164_COUNTRY_CODES),
    national=st.text(alphabet="0123456789", min_size=4, max_size=13),
    region=st.sampled_from([None, "US", "GB"]),
)
def test_the_e164_fast_path_agrees_with_the_full_parser(
    code: int, national: str, region: str | None
) -> None:
    text = f"+{code}{national}"
    assert_agrees_with_the_full_parser(text, region)


NATIONAL_EXAMPLES = sorted(
    (region, phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL))
    for region in phonenumbers.SUPPORTED_REGIONS
    if (example := phonenumbers.example_number(region)) is not None
)


@settings(max_examples=2000, deadline=None)
@given(
    example=st.sampled_from(NATIONAL_EXAMPLES),
    region=st.sampled_from([None, "US", "GB", "DE", "FR", "IN", "RU", "AR", "BR", "JP"]),
    own_region=st.booleans(),
    digits=st.text(alphabet="0123456789 -().", min_size=0, max_size=4),
)
def test_the_national_fast_path_agrees_with_the_full_parser(
    example: tuple[str, str], region: str | None, own_region: bool, digits: str
) -> None:
    """National numbers (a region's example, its last digits sometimes changed) parse the
    same through the fast path as through ``phonenumbers.parse``."""
    example_region, text = example
    text = text[: len(text) - len(digits)] + digits if digits else text
    region = example_region if own_region else region
    assert_agrees_with_the_full_parser(text, region)


def example_numbers() -> list[phonenumbers.PhoneNumber]:
    """libphonenumber's example number of every type of every region and non-geo code."""
    types = [
        getattr(phonenumbers.PhoneNumberType, n)
        for n in (
            "FIXED_LINE",
            "MOBILE",
            "TOLL_FREE",
            "PREMIUM_RATE",
            "SHARED_COST",
            "VOIP",
            "PERSONAL_NUMBER",
            "PAGER",
            "UAN",
            "VOICEMAIL",
        )
    ]
    found = [
        example
        for region in sorted(phonenumbers.SUPPORTED_REGIONS)
        for kind in types
        if (example := phonenumbers.example_number_for_type(region, kind)) is not None
    ]
    found += [
        example
        for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
        if (example := phonenumbers.example_number_for_non_geo_entity(code)) is not None
    ]
    return found


EXAMPLE_NUMBERS = example_numbers()


def assert_validity_agrees(code: int, national: str) -> None:
    number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
    assert _is_valid_split(code, national) == phonenumbers.is_valid_number(number), (
        code,
        national,
    )


def test_the_joined_patterns_agree_with_is_valid_number_on_every_example_number() -> None:
    assert len(EXAMPLE_NUMBERS) > 1000  # every region, most types
    for example in EXAMPLE_NUMBERS:
        assert_validity_agrees(example.country_code, str(example.national_number))
        assert phonenumbers.is_valid_number(example)  # the examples are valid: a real check


@settings(max_examples=3000, deadline=None)
@given(
    example=st.sampled_from(EXAMPLE_NUMBERS),
    position=st.integers(min_value=0, max_value=16),
    change=st.sampled_from(["replace", "insert", "delete"]),
    digit=st.sampled_from("0123456789"),
)
def test_the_joined_patterns_agree_with_is_valid_number_near_example_numbers(
    example: phonenumbers.PhoneNumber, position: int, change: str, digit: str
) -> None:
    """Example numbers one digit off: valid or not, both tests say the same."""
    digits = list(str(example.national_number))
    at = min(position, len(digits) - 1)
    if change == "replace":
        digits[at] = digit
    elif change == "insert":
        digits.insert(at, digit)
    elif len(digits) > 1:
        del digits[at]
    national = "".join(digits).lstrip("0")
    if national:
        event(
            "valid"
            if phonenumbers.is_valid_number(
                phonenumbers.PhoneNumber(
                    country_code=example.country_code, national_number=int(national)
                )
            )
            else "invalid"
        )
        assert_validity_agrees(example.country_code, national)


KEYS = st.sampled_from(["a", "b", "0", ""])
nested_json = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children),
    max_leaves=8,
)


@settings(max_examples=1500, deadline=None)
@given(root=nested_json, keys=st.lists(KEYS, min_size=1, max_size=4))
def test_a_path_of_keys_resolves_as_the_general_walk(root: Any, keys: list[str]) -> None:
    """The chained-``get`` form of a key path gives what the step-by-step walk gives, and a
    container that is a new copy, whatever sits along the way (falsy values, lists,
    strings)."""
    path = "$" + "".join(f"['{key}']" for key in keys)
    got = compile_mapping({"x": {"@path": path}}).apply(root).get("x", mapping_module._MISSING)
    expected = mapping_module._walk(root, mapping_module.parse_path(path))
    assert got == expected and type(got) is type(expected)
    if isinstance(expected, dict | list):
        assert got is not expected


@settings(max_examples=3000, deadline=None)
@given(
    example=st.sampled_from(EXAMPLE_NUMBERS),
    form=st.sampled_from(["+{cc}{n}", "+{cc} (0){n}", "{n}", "0{n}", "{cc} {n}", "1 ({n}"]),
    own_region=st.booleans(),
    region=st.sampled_from(["US", "GB", "DE", "RU", "BR", "IT", "CA", "HU", "MX", "AR"]),
    prefix=st.text(alphabet="0123456789", max_size=2),
)
def test_phones_written_around_example_numbers_parse_as_the_full_parser(
    example: phonenumbers.PhoneNumber,
    form: str,
    own_region: bool,
    region: str,
    prefix: str,
) -> None:
    """Valid numbers (and near misses) in the forms people type, with their country
    code, national prefix, trunk digits or a region's own country code in front, parse
    through the fast path exactly as through ``phonenumbers.parse``."""
    national = prefix + str(example.national_number)
    text = form.format(cc=example.country_code, n=national)
    main = phonenumbers.region_code_for_country_code(example.country_code)
    chosen = main if own_region and main != "001" else region
    assert_agrees_with_the_full_parser(text, chosen)

"""Subscription conditions: matching, precedence, odd events, syntax errors, round trips."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from destination.errors import MappingError
from destination.kit.subscriptions import Condition, parse_subscription

TRACK = {
    "type": "track",
    "event": "Audience Entered",
    "userId": "u-1",
    "properties": {"plan": "pro", "count": 3, "ratio": 0.5, "vip": True, "note": None},
    "context": {"personas": {"computation_key": "big_spenders"}},
}
IDENTIFY = {"type": "identify", "userId": "u-2", "traits": {"email": "a@example.com"}}


class ExplodingMapping(Mapping[str, Any]):
    """A mapping whose lookups fail: matching must still answer."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@pytest.mark.parametrize(
    ("text", "event", "expected"),
    [
        # = and != on strings
        ('type = "track"', TRACK, True),
        ('type = "track"', IDENTIFY, False),
        ('type != "track"', TRACK, False),
        ('type != "track"', IDENTIFY, True),
        ('event = "Audience Entered"', TRACK, True),
        ('event = "audience entered"', TRACK, False),
        ('event != "Test"', TRACK, True),
        ('event != "Test"', {"event": "Test"}, False),
        # and / or
        ('type = "track" and event = "Audience Entered"', TRACK, True),
        ('type = "track" and event = "Audience Exited"', TRACK, False),
        ('type = "identify" or event = "Signed Up"', IDENTIFY, True),
        ('type = "identify" or event = "Signed Up"', {"type": "track", "event": "Signed Up"}, True),
        ('type = "identify" or event = "Signed Up"', TRACK, False),
        # "and" binds tighter than "or": a or (b and c)
        ('type = "identify" or type = "page" and event = "x"', IDENTIFY, True),
        ('type = "identify" or type = "track" and event = "nope"', TRACK, False),
        ('type = "track" and event = "nope" or userId = "u-1"', TRACK, True),
        # parentheses override precedence
        ('(type = "identify" or type = "track") and event = "nope"', TRACK, False),
        ('(type = "identify" or type = "track") and userId = "u-1"', TRACK, True),
        ('((((type = "track"))))', TRACK, True),
        ('(type = "track" and properties.plan = "pro") or all', IDENTIFY, True),
        # not
        ('not type = "track"', TRACK, False),
        ('not type = "track"', IDENTIFY, True),
        ('not not type = "track"', TRACK, True),
        ('not (type = "identify" or event = "Audience Entered")', TRACK, False),
        ('not type = "identify" and event = "Audience Entered"', TRACK, True),
        # all
        ("all", TRACK, True),
        ("all", {}, True),
        ("not all", TRACK, False),
        # nested fields
        ('properties.plan = "pro"', TRACK, True),
        ('properties.plan = "free"', TRACK, False),
        ('context.personas.computation_key = "big_spenders"', TRACK, True),
        ('traits.email = "a@example.com"', IDENTIFY, True),
        ('traits.email != "a@example.com"', IDENTIFY, False),
        ('$weird-name_1 = "x"', {"$weird-name_1": "x"}, True),
        # numbers compare numerically, never with strings or booleans
        ("properties.count = 3", TRACK, True),
        ("properties.count = 3.0", TRACK, True),
        ("properties.count = 3", {"properties": {"count": 3.0}}, True),
        ("properties.count = 3", {"properties": {"count": "3"}}, False),
        ("properties.count != 3", {"properties": {"count": "3"}}, False),  # Segment: numbers only
        ("properties.count = 4", TRACK, False),
        ("properties.ratio = 0.5", TRACK, True),
        ("properties.ratio = 0.50", TRACK, True),
        ("properties.delta = -2", {"properties": {"delta": -2}}, True),
        ("properties.delta = -2.5", {"properties": {"delta": -2.5}}, True),
        ("properties.flag = 1", {"properties": {"flag": True}}, False),
        ("properties.nan = 0", {"properties": {"nan": float("nan")}}, False),
        ('properties.count = "3"', TRACK, False),
        # booleans are only the booleans
        ("properties.vip = true", TRACK, True),
        ("properties.vip = false", TRACK, False),
        ("properties.vip != false", TRACK, True),
        ("properties.vip = true", {"properties": {"vip": 1}}, False),
        ("properties.vip = true", {"properties": {"vip": "true"}}, False),
        ("properties.vip = false", {"properties": {"vip": 0}}, False),
        # null: a present null or a missing field
        ("properties.note = null", TRACK, True),
        ("properties.missing = null", TRACK, True),
        ("properties.plan = null", TRACK, False),
        ("properties.note != null", TRACK, False),
        ("properties.plan != null", TRACK, True),
        ("nowhere.at.all = null", TRACK, True),
        # missing fields: "=" fails, "!=" holds
        ('properties.missing = "x"', TRACK, False),
        ('properties.missing != "x"', TRACK, True),
        ('event = "x"', {}, False),
        ('event != "x"', {}, True),
        # odd shapes: a path through a non-mapping is absent, and nothing raises
        ('type.name = "track"', TRACK, False),
        ("type.name = null", TRACK, True),
        ('properties.plan = "pro"', {"properties": ["plan", "pro"]}, False),
        ("properties.plan = null", {"properties": ["plan", "pro"]}, True),
        ('properties.plan = "pro"', {"properties": "plan"}, False),
        ('properties.plan = "pro"', {"properties": None}, False),
        ('properties.plan = "pro"', {"properties": 42}, False),
        ("properties = null", {"properties": None}, True),
        ('properties = "x"', {"properties": {"x": 1}}, False),
        ('properties = "x"', {"properties": ["x"]}, False),
        ("properties.count = 3", {"properties": {"count": [3]}}, False),
        ("properties.count = 3", {"properties": {"count": {"3": 3}}}, False),
        ('properties.plan = "pro"', {"properties": ExplodingMapping()}, False),
        ('properties.plan != "pro"', {"properties": ExplodingMapping()}, True),
        ('type = "track"', ExplodingMapping(), False),
        # strings with escapes and unusual characters
        ('event = "say \\"hi\\""', {"event": 'say "hi"'}, True),
        ('event = "back\\\\slash"', {"event": "back\\slash"}, True),
        ('event = "line\\nbreak\\ttab"', {"event": "line\nbreak\ttab"}, True),
        ('event = "and or not ( ) = != all"', {"event": "and or not ( ) = != all"}, True),
        ('event = "héllo 🎉"', {"event": "héllo 🎉"}, True),
        ('event = ""', {"event": ""}, True),
        # whitespace is free
        ('type="track"and(event!="x")', TRACK, True),
        ('  type\t=\n"track"  ', TRACK, True),
    ],
)
def test_matches_follows_the_expression(
    text: str, event: Mapping[str, Any], expected: bool
) -> None:
    assert parse_subscription(text).matches(event) is expected


@pytest.mark.parametrize(
    "event",
    [{}, {"properties": []}, {"properties": [1, 2]}, {"properties": {"plan": object()}}, {1: 2}],
)
def test_matches_never_raises_on_odd_events(event: Mapping[str, Any]) -> None:
    condition = parse_subscription(
        '(type = "track" and properties.plan = "pro") or properties.count != 3 '
        "or not properties.vip = true or properties.note = null"
    )
    assert isinstance(condition.matches(event), bool)


@pytest.mark.parametrize(
    ("text", "fragment", "column"),
    [
        ("", "expected a condition, found an empty text", 1),
        ("   \t ", "expected a condition, found an empty text", 1),
        ('event = "Signed Up', "unterminated string", 9),
        ('event = "ends with backslash\\', "unterminated string", 9),
        ('event = "bad \\x escape"', "unsupported escape '\\x'", 14),
        ('type == "track"', "unknown operator '=='", 6),
        ("properties.count =< 3", "unknown operator '=<'", 18),
        ("properties.count ~= 3", "unknown operator '~='", 18),
        ('type ! "track"', "unknown operator '!'", 6),
        (
            'type "track"',
            "expected an operator (=, !=, <, <=, >, >=) after field 'type', found '\"track\"'",
            6,
        ),
        ("type", "after field 'type', found the end of the text", 5),
        ('type = "track" and event =', "expected a value", 27),
        ('type = and event = "x"', "expected a value", 8),
        ('type = = "track"', "expected a value", 8),
        ("event = Signed", "found 'Signed' (strings need double quotes)", 9),
        ("properties.vip = True", "found 'True' (keywords are lowercase)", 18),
        ("event = 'Signed'", 'unexpected character "\'" (strings take double quotes)', 9),
        ('type = "track" and', "expected a condition after 'and'", 19),
        ('type = "track" and or event = "x"', "expected a condition after 'and'", 20),
        ('type = "track" or', "expected a condition after 'or'", 18),
        ("not", "expected a condition after 'not'", 4),
        ('and type = "track"', "expected a condition (", 1),
        ('"track" = type', "expected a condition (", 1),
        ('(type = "track"', "to close the '(' at column 1, found the end of the text", 16),
        ('((type = "track")', "to close the '(' at column 1", 18),
        ('(type = "track" event = "x")', "to close the '(' at column 1, found 'event'", 17),
        ('type = "track")', "unexpected ')' without a matching '('", 15),
        ("()", "expected a condition after '('", 2),
        ('type = "track" event = "x"', "expected 'and', 'or' or the end of the text", 16),
        ('type = "track" AND event = "x"', "found 'AND' (keywords are lowercase)", 16),
        ('all type = "track"', "expected 'and', 'or' or the end of the text", 5),
        ('type = "a" && event = "b"', "unexpected character '&' (use 'and')", 12),
        ('type = "a" || event = "b"', "unexpected character '|' (use 'or')", 12),
        ('type = "a" # comment', "unexpected character '#'", 12),
        ('tÿpe = "a"', "unexpected character 'ÿ'", 2),
        ('properties. = "a"', "expected a name after '.' in field 'properties.'", 12),
        ('properties.1st = "a"', "expected a name after '.'", 12),
        ("count = -", "expected digits after '-'", 10),
        ("count = - 3", "expected digits after '-'", 10),
        ("count = 3.", "expected digits after the decimal point", 11),
        ("count = .5", "unexpected character '.'", 9),
        ("count = 1e5", "found 'e5'", 10),
        ("count = 1" + "0" * 400 + ".0", "number out of range", 9),
        ("count = " + "9" * 5000, "number too long", 9),
        ("(" * 101 + 'type = "x"' + ")" * 101, "nesting deeper than 100", 102),
        ("not " * 101 + 'type = "x"', "nesting deeper than 100", 405),
    ],
)
def test_syntax_errors_name_the_problem_and_column(text: str, fragment: str, column: int) -> None:
    with pytest.raises(MappingError) as caught:
        parse_subscription(
            text, source="mappings/tiktok.json", pointer="/subscriptions/2/subscribe"
        )
    error = caught.value
    assert error.source == "mappings/tiktok.json"
    assert error.pointer == "/subscriptions/2/subscribe"
    assert error.expected.startswith("a valid subscription: ")
    assert fragment in error.expected
    assert f" at column {column} in " in error.expected
    assert "\n" not in error.expected


def test_error_message_quotes_the_text_and_uses_the_defaults() -> None:
    with pytest.raises(MappingError) as caught:
        parse_subscription('type = "track" and event =')
    error = caught.value
    assert (error.source, error.pointer) == ("<subscription>", "")
    assert error.expected == (
        "a valid subscription: expected a value (a double-quoted string, a number, true, false"
        " or null) after '=', found the end of the text at column 27"
        " in 'type = \"track\" and event ='"
    )


@pytest.mark.parametrize("column_at_start", [True, False])
def test_error_message_cuts_long_text_around_the_column(column_at_start: bool) -> None:
    filler = " or ".join(f'event = "e{i}"' for i in range(40))
    text = 'type == "x" or ' + filler if column_at_start else filler + ' or type == "x"'
    with pytest.raises(MappingError) as caught:
        parse_subscription(text)
    expected = caught.value.expected
    assert "type ==" in expected
    assert len(expected) < 300
    assert "..." in expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ('type = "track"', 'type = "track"'),
        ('  type="track"   and   event!="x" ', 'type = "track" and event != "x"'),
        ("a = 1 or b = 2 and c = 3", "a = 1 or b = 2 and c = 3"),
        ("(a = 1 or b = 2) and c = 3", "(a = 1 or b = 2) and c = 3"),
        ("((a = 1 and b = 2)) or (c = 3)", "a = 1 and b = 2 or c = 3"),
        ("a = 1 or (b = 2 or c = 3)", "a = 1 or b = 2 or c = 3"),
        ("a = 1 and (b = 2 and (c = 3 and d = 4))", "a = 1 and b = 2 and c = 3 and d = 4"),
        ("not (a = 1 and b = 2)", "not (a = 1 and b = 2)"),
        ("not (not a = 1)", "not not a = 1"),
        ("(not a = 1) and b = 2", "not a = 1 and b = 2"),
        ("(all)", "all"),
        ("x = true or y = false or z = null", "x = true or y = false or z = null"),
        ("x = -0.50 or y = 007", "x = -0.5 or y = 7"),
        ("x = 100000000000000000000000.0", "x = 100000000000000000000000.0"),
        ("x = 0.00000001", "x = 0.00000001"),
        ('x = "q\\"b\\\\n\\n\\t"', 'x = "q\\"b\\\\n\\n\\t"'),
        ('x = "it\'s"', 'x = "it\'s"'),
    ],
)
def test_str_is_canonical_and_parses_back_to_an_equal_condition(text: str, canonical: str) -> None:
    condition = parse_subscription(text)
    assert str(condition) == canonical
    again = parse_subscription(str(condition))
    assert again == condition
    assert hash(again) == hash(condition)
    assert str(again) == canonical
    assert repr(condition) == f"Condition({canonical!r})"


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        ("x = 3", "x = 3.0", True),
        ("x = 1", "x = true", False),
        ("x = 0", "x = false", False),
        ('x = "1"', "x = 1", False),
        ("x = 1", "x != 1", False),
        ("a = 1 and b = 2", "a = 1 or b = 2", False),
        ("a.b = 1", "a = 1", False),
    ],
)
def test_equality_is_structural_and_keeps_literal_kinds_apart(
    left: str, right: str, equal: bool
) -> None:
    assert (parse_subscription(left) == parse_subscription(right)) is equal


def test_conditions_are_immutable() -> None:
    condition = parse_subscription('type = "track"')
    assert isinstance(condition, Condition)
    with pytest.raises(AttributeError):
        condition.value = "identify"  # type: ignore[attr-defined]

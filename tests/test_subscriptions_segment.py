"""Subscriptions behave as Segment's destination subscriptions (issue 18).

Each row was derived from how Segment's runtime evaluates the same subscription
(``@segment/destination-subscriptions``: ``parseFql`` then ``validate``), except the
rows marked "differs", where Segment has a plain bug and README's "Differences from
Segment" says what this project does instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from destination.errors import MappingError
from destination.kit.subscriptions import parse_subscription

ORDER = {
    "type": "track",
    "event": "Order Completed",
    "userId": "user-42",
    "name": "Checkout",
    "properties": {
        "total": 120.5,
        "items": 3,
        "zero": 0,
        "code": "456",
        "coupon": "SPRING-SALE-2024",
        "email": "Jane@Example.com",
        "empty": "",
        "gift": True,
        "note": None,
        "product 1": {"price": 10},
        "tags": ["a", "b"],
    },
    "traits": {"plan": "enterprise", "seats": 50},
    "context": {"page": {"path": "/checkout/step-2"}, "app": {"build": 7}},
}

ROWS: list[tuple[str, Mapping[str, Any], bool]] = [
    # > >= < <= compare numbers only
    ("properties.total > 100", ORDER, True),
    ("properties.total > 120.5", ORDER, False),
    ("properties.total >= 120.5", ORDER, True),
    ("properties.total < 120.5", ORDER, False),
    ("properties.total <= 120.5", ORDER, True),
    ("properties.items < 5", ORDER, True),
    ("properties.items <= 2", ORDER, False),
    ("properties.zero >= 0", ORDER, True),
    ("properties.zero > -1.5", ORDER, True),
    ("traits.seats >= 50", ORDER, True),
    ("context.app.build > 6", ORDER, True),
    ("properties.code > 100", ORDER, False),  # the string "456" is not a number
    ("properties.code < 1000", ORDER, False),
    ("properties.gift > 0", ORDER, False),  # a boolean is not a number
    ("properties.gift >= 1", ORDER, False),
    ("properties.note < 1", ORDER, False),
    ("properties.missing < 1", ORDER, False),
    ("properties.missing >= 0", ORDER, False),
    ("properties.tags > 0", ORDER, False),
    ("properties.nan > 0", {"properties": {"nan": float("nan")}}, False),
    ("properties.nan <= 0", {"properties": {"nan": float("nan")}}, False),
    ('type = "track" and properties.total > 100 and properties.total < 200', ORDER, True),
    # = on a number: only a number of the same value
    ("properties.items = 3", ORDER, True),
    ("properties.items = 3.0", ORDER, True),
    ("properties.code = 456", ORDER, False),
    ("properties.gift = 1", ORDER, False),
    # != on a number: only a number that differs (a string, a boolean, null or absent: false)
    ("properties.items != 4", ORDER, True),
    ("properties.items != 3", ORDER, False),
    ("properties.code != 456", ORDER, False),
    ("properties.code != 457", ORDER, False),
    ("properties.missing != 1", ORDER, False),
    ("properties.note != 1", ORDER, False),
    ("properties.gift != 0", ORDER, False),
    ("properties.tags != 1", ORDER, False),
    ("properties.nan != 1", {"properties": {"nan": float("nan")}}, True),
    ("traits.seats != 10", ORDER, True),
    # = and != on strings: exact text; != holds for anything else, absent included
    ('properties.code = "456"', ORDER, True),
    ('properties.items = "3"', ORDER, False),
    ('properties.items != "3"', ORDER, True),
    ('properties.code != "456"', ORDER, False),
    ('properties.missing != "x"', ORDER, True),
    ('properties.empty = ""', ORDER, True),
    # = true / = false: only the booleans; = null: null or absent; != null: present, not null
    ("properties.gift = true", ORDER, True),
    ("properties.gift = false", ORDER, False),
    ("properties.code = true", {"properties": {"code": "true"}}, False),
    ("properties.note = null", ORDER, True),
    ("properties.missing = null", ORDER, True),
    ("properties.note != null", ORDER, False),
    ("properties.zero != null", ORDER, True),
    ("properties.empty != null", ORDER, True),
    ("userId != null", ORDER, True),
    ("userId = null", {"type": "track"}, True),
    # contains(field, "text"): the field is a string holding the text (case-sensitive)
    ('contains(properties.coupon, "SALE")', ORDER, True),
    ('contains(properties.coupon, "sale")', ORDER, False),
    ('contains(properties.coupon, "")', ORDER, True),
    ('contains(event, "Order")', ORDER, True),
    ('contains(userId, "42")', ORDER, True),
    ('contains(name, "heck")', ORDER, True),
    ('contains(traits.plan, "prise")', ORDER, True),
    ('contains(context.page.path, "/checkout")', ORDER, True),
    ('contains(properties.items, "3")', ORDER, False),  # a number is not a string
    ('contains(properties.tags, "a")', ORDER, False),  # nor is a list
    ('contains(properties.missing, "x")', ORDER, False),
    # !contains(field, "text"): the field is a string NOT holding the text
    ('!contains(properties.coupon, "WINTER")', ORDER, True),
    ('!contains(properties.coupon, "SALE")', ORDER, False),
    ('!contains(properties.missing, "x")', ORDER, False),  # absent: false, unlike "not"
    ('!contains(properties.items, "x")', ORDER, False),
    ('not contains(properties.missing, "x")', ORDER, True),
    ('! contains(properties.coupon, "WINTER")', ORDER, True),
    # match(field, "pattern"): "*" stands for any run of characters, the rest is literal
    ('match(properties.coupon, "SPRING*")', ORDER, True),
    ('match(properties.coupon, "*2024")', ORDER, True),
    ('match(properties.coupon, "SUMMER*")', ORDER, False),
    ('match(properties.coupon, "*2023")', ORDER, False),
    ('match(properties.coupon, "*SALE*")', ORDER, True),  # differs: Segment reads a 2nd "*"
    ('match(properties.coupon, "SPRING*2024")', ORDER, True),  # as a literal character
    ('match(properties.coupon, "S*S*4")', ORDER, True),
    ('match(properties.coupon, "SPRING-SALE-2024")', ORDER, True),  # differs: see README
    ('match(properties.coupon, "SPRING")', ORDER, False),
    ('match(properties.coupon, "*")', ORDER, True),
    ('match(properties.empty, "*")', ORDER, True),
    ('match(properties.coupon, "spring*")', ORDER, False),
    ('match(properties.coupon, "SPRING?SALE*")', ORDER, False),  # "?" is literal
    ('match(properties.q, "a?b*")', {"properties": {"q": "a?bc"}}, True),
    ('match(properties.q, "[ab]*")', {"properties": {"q": "[ab]c"}}, True),
    ('match(properties.q, "*.")', {"properties": {"q": "x\ny."}}, True),
    ('match(context.page.path, "/checkout/*")', ORDER, True),
    ('match(event, "Order *")', ORDER, True),
    ('match(properties.items, "*")', ORDER, False),
    ('match(properties.missing, "*")', ORDER, False),
    # !match(field, "pattern"): the field is a string that does NOT match
    ('!match(properties.coupon, "WINTER*")', ORDER, True),
    ('!match(properties.coupon, "SPRING*")', ORDER, False),
    ('!match(properties.coupon, "*2023")', ORDER, True),
    ('!match(properties.missing, "*")', ORDER, False),
    ('!match(properties.items, "x*")', ORDER, False),
    # the functions combine like any condition
    ('type = "track" and (contains(event, "Order") or match(userId, "admin-*"))', ORDER, True),
    ('!match(userId, "test-*") and properties.total >= 100', ORDER, True),
    ('contains(event, "Order") and not properties.total > 200', ORDER, True),
    # field paths take Segment's backslash escapes (keys with spaces and other characters)
    ("properties.product\\ 1.price = 10", ORDER, True),
    ("properties.product\\ 1.price > 9", ORDER, True),
    ('properties.a\\.b = "dot"', {"properties": {"a.b": "dot"}}, True),
    ('properties.a\\.b = "dot"', {"properties": {"a": {"b": "dot"}}}, False),
    ('properties.\\$ref = "x"', {"properties": {"$ref": "x"}}, True),
    ('properties.\\1st = "x"', {"properties": {"1st": "x"}}, True),
    ('contains(properties.product\\ name, "hat")', {"properties": {"product name": "a hat"}}, True),
]


@pytest.mark.parametrize(("subscription", "event", "expected"), ROWS)
def test_matches_as_segment_does(
    subscription: str, event: Mapping[str, Any], expected: bool
) -> None:
    assert parse_subscription(subscription).matches(event) is expected


@pytest.mark.parametrize(("subscription", "event", "expected"), ROWS)
def test_canonical_text_of_each_row_parses_back_and_matches_the_same(
    subscription: str, event: Mapping[str, Any], expected: bool
) -> None:
    condition = parse_subscription(subscription)
    again = parse_subscription(str(condition))
    assert again == condition
    assert again.matches(event) is expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("properties.total>100", "properties.total > 100"),
        ("a>=1 and b<=2 or c<3", "a >= 1 and b <= 2 or c < 3"),
        ('contains( properties.x ,"y" )', 'contains(properties.x, "y")'),
        ('!match(event,"a*")', '!match(event, "a*")'),
        ('not !contains(event, "a")', 'not !contains(event, "a")'),
        ("properties.product\\ 1.price = 10", "properties.product\\ 1.price = 10"),
        ('properties.a\\.b = "x"', 'properties.a\\.b = "x"'),
        ('properties.\\$ref = "x"', 'properties.$ref = "x"'),
        ('properties.\\1st = "x"', 'properties.\\1st = "x"'),
        ('\\and = "x"', '\\and = "x"'),
        ('properties.\\é = "x"', 'properties.\\é = "x"'),
    ],
)
def test_new_forms_have_a_canonical_text(text: str, canonical: str) -> None:
    condition = parse_subscription(text)
    assert str(condition) == canonical
    assert parse_subscription(canonical) == condition


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        ("x > 1", "x >= 1", False),
        ("x < 1", "x > 1", False),
        ("x > 1", "x > 1.0", True),
        ('contains(x, "a")', '!contains(x, "a")', False),
        ('contains(x, "a")', 'match(x, "a")', False),
        ('match(x, "a*")', 'match(x, "a*")', True),
    ],
)
def test_new_forms_are_equal_by_structure(left: str, right: str, equal: bool) -> None:
    assert (parse_subscription(left) == parse_subscription(right)) is equal


@pytest.mark.parametrize(
    ("text", "fragment", "column"),
    [
        ('properties.total > "100"', "expected a number after '>'", 20),
        ("properties.total >= true", "expected a number after '>='", 21),
        ("properties.total < null", "expected a number after '<'", 20),
        ("properties.total <=", "expected a number after '<=', found the end of the text", 20),
        ("properties.total => 3", "unknown operator '=>'", 18),
        ("properties.total <> 3", "unknown operator '<>'", 18),
        ("properties.total >> 3", "unknown operator '>>'", 18),
        ("properties.total ! 3", "unknown operator '!'", 18),
        ('contains(properties.x "a")', "expected ',' after the field", 23),
        ('contains(properties.x, "a"', "expected ')' to close contains(", 27),
        ('contains(properties.x, "a",)', "expected ')' to close contains(", 27),
        ("contains(properties.x, 3)", "expected a double-quoted string", 24),
        ("contains(properties.x, other)", "expected a double-quoted string", 24),
        ('contains("a", properties.x)', "expected a field as the first argument of contains(", 10),
        ('contains(, "a")', "expected a field as the first argument of contains(", 10),
        ("contains()", "expected a field as the first argument of contains(", 10),
        ('match(properties.x "a*")', "expected ',' after the field", 20),
        ('lowercase(properties.x) = "a"', "unknown function 'lowercase'", 1),
        ("length(properties.tags) > 1", "unknown function 'length'", 1),
        ("exists(properties.x)", "unknown function 'exists'", 1),
        ('!type = "track"', "'!' only negates contains(...) and match(...)", 1),
        ('!(type = "track")', "'!' only negates contains(...) and match(...)", 1),
        ('!lowercase(x, "a")', "unknown function 'lowercase'", 2),
        ('contains = "x" and contains(', "expected a field as the first argument", 29),
        ('type = "a" and !', "'!' only negates contains(...) and match(...)", 16),
        ('x,y = "a"', "after field 'x', found ','", 2),
        ("properties.a\\", "expected a character after '\\'", 14),
        ('type "track"', "expected an operator (=, !=, <, <=, >, >=) after field 'type'", 6),
    ],
)
def test_syntax_errors_in_new_forms_name_the_column(text: str, fragment: str, column: int) -> None:
    with pytest.raises(MappingError) as caught:
        parse_subscription(text, source="m.json", pointer="/subscriptions/0/subscribe")
    expected = caught.value.expected
    assert fragment in expected
    assert f" at column {column} in " in expected


def test_a_field_may_still_be_called_like_a_function() -> None:
    condition = parse_subscription('contains = "x" and match != null')
    assert condition.matches({"contains": "x", "match": 1})
    assert not condition.matches({"contains": "x"})

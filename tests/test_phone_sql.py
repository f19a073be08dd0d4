"""Tests of destination.tiktok.phone_sql: DuckDB's answers against ``normalize_phone``.

Wherever the SQL says it decided, its normalized number must be the Python normalizer's
(NULL where Python refuses the number as "not a valid number"). Binding the SQL costs
DuckDB a good part of a second, so each distinct SQL is prepared once for the module
(the default region only changes it between "none" and "some") and run over many values
at a time, from a table.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence

import duckdb
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from destination.errors import ConfigurationError, PayloadError
from destination.tiktok.normalize import PHONE_FORMATS, PhoneFormat, normalize_phone
from destination.tiktok.phone_sql import PhoneSql, phone_sql

REFUSED_OTHERWISE = object()  # Python refused the value with another message
NUMBER_TYPES = [
    getattr(PhoneNumberType, name)
    for name in dir(PhoneNumberType)
    if name.isupper() and name != "UNKNOWN"
]


class Evaluator:
    """Runs a ``PhoneSql`` over values, each distinct SQL prepared once.

    The values come as one list literal: DuckDB binds a prepared statement again when its
    parameter is used twice or read through a table that changed."""

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self.connection = connection
        self.prepared: dict[PhoneSql, str] = {}
        connection.execute("SET threads = 1")  # each thread compiles every pattern again

    def __call__(self, sql: PhoneSql, values: Sequence[str]) -> list[tuple[bool, str | None]]:
        """``(decided, normalized)`` for each value, in one query."""
        name = self.prepared.get(sql)
        if name is None:
            name = self.prepared[sql] = f"phones_{len(self.prepared)}"
            self.connection.execute(
                f"PREPARE {name} AS SELECT v, {sql.decided}, {sql.normalized}"
                " FROM (SELECT unnest($1::VARCHAR[]) AS v)"
            )
        literal = ", ".join("'" + value.replace("'", "''") + "'" for value in values)
        rows = self.connection.execute(f"EXECUTE {name}([{literal}])").fetchall()
        assert [value for value, _, _ in rows] == list(values)  # in order
        return [(decided, normalized) for _, decided, normalized in rows]


@pytest.fixture(scope="module")
def evaluate() -> Iterator[Evaluator]:
    connection = duckdb.connect()
    yield Evaluator(connection)
    connection.close()


def python_answer(value: str, region: str | None, phone_format: PhoneFormat) -> object:
    try:
        return normalize_phone(value, default_region=region, phone_format=phone_format)
    except PayloadError as exc:
        return None if str(exc) == "phone is not a valid number" else REFUSED_OTHERWISE


def disagreements(
    evaluate: Evaluator, cases: Iterable[tuple[str, str | None]], phone_format: PhoneFormat
) -> tuple[int, list[tuple[str, str | None, str | None, object]]]:
    """How many ``(value, default_region)`` cases the SQL decides, and those where it
    differs from Python. Cases whose settings give the same SQL share one query."""
    sqls: dict[str | None, PhoneSql] = {}
    by_sql: dict[PhoneSql, list[tuple[str, str | None]]] = {}
    for value, region in cases:
        if region not in sqls:
            sqls[region] = phone_sql("v", default_region=region, phone_format=phone_format)
        by_sql.setdefault(sqls[region], []).append((value, region))
    decided, wrong = 0, []
    for sql, group in by_sql.items():
        for (value, region), (is_decided, normalized) in zip(
            group, evaluate(sql, [value for value, _ in group]), strict=True
        ):
            assert is_decided in (True, False), (value, is_decided)
            if is_decided:
                decided += 1
                expected = python_answer(value, region, phone_format)
                if normalized != expected:
                    wrong.append((value, region, normalized, expected))
    return decided, wrong


def example_numbers() -> Iterator[tuple[str, phonenumbers.PhoneNumber]]:
    """Every region's example number of each type, and the non-geographic entities'."""
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for number_type in NUMBER_TYPES:
            number = phonenumbers.example_number_for_type(region, number_type)
            if number is not None:
                yield region, number
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            yield "001", number


def mutations(value: str, rng: random.Random, count: int = 3) -> list[str]:
    """The value with a digit changed, added or removed (``count`` of each)."""
    places = [i for i, char in enumerate(value) if char.isdigit()]
    found = []
    for _ in range(count):
        i = rng.choice(places)
        found.append(value[:i] + str(rng.randrange(10)) + value[i + 1 :])
        found.append(value[:i] + str(rng.randrange(10)) + value[i:])
        if len(places) > 1:
            found.append(value[:i] + value[i + 1 :])
    return found


def grouped_international(number: phonenumbers.PhoneNumber) -> str:
    """``+CC NNN NNN ...``: the code, then the national number by threes."""
    national = phonenumbers.national_significant_number(number)
    groups = [national[i : i + 3] for i in range(0, len(national), 3)]
    return f"+{number.country_code} {' '.join(groups)}"


@pytest.mark.parametrize("phone_format", PHONE_FORMATS)
def test_decided_example_numbers_and_their_mutations_match_python(
    evaluate: Evaluator, phone_format: PhoneFormat
) -> None:
    rng = random.Random(19)
    cases: list[tuple[str, str | None]] = []
    for region, number in example_numbers():
        for form in (PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL):
            value = phonenumbers.format_number(number, form)
            for variant in [value, *mutations(value, rng)]:
                cases += [(variant, None), (variant, "US" if region == "001" else region)]
        if region != "001":  # a national format needs a region
            value = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
            for variant in [value, *mutations(value, rng)]:
                cases += [(variant, None), (variant, region)]
    decided, wrong = disagreements(evaluate, cases, phone_format)
    assert not wrong, wrong[:20]
    assert decided > len(cases) // 3  # the plain international forms at least


@pytest.mark.parametrize("phone_format", PHONE_FORMATS)
def test_valid_example_numbers_in_international_forms_are_decided(
    evaluate: Evaluator, phone_format: PhoneFormat
) -> None:
    """All but what ``_quick_split`` leaves to phonenumbers: a national number starting
    with 0 (Italian leading zero) and numbers of fewer than 7 or more than 15 digits."""
    numbers = [number for _, number in example_numbers() if phonenumbers.is_valid_number(number)]
    plain = [
        number
        for number in numbers
        if not number.italian_leading_zero
        and 7 <= len(phonenumbers.format_number(number, PhoneNumberFormat.E164)) - 1 <= 15
    ]
    assert len(plain) > 0.95 * len(numbers)
    values = [
        form
        for number in plain
        for form in (
            phonenumbers.format_number(number, PhoneNumberFormat.E164),
            grouped_international(number),
            phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
        )
    ]
    expected = [python_answer(value, None, phone_format) for value in values]
    assert None not in expected and REFUSED_OTHERWISE not in expected
    sql = phone_sql("v", default_region=None, phone_format=phone_format)
    assert evaluate(sql, values) == [(True, answer) for answer in expected]


PHONE_CHARACTERS = st.text(alphabet="+0123456789 -().", min_size=1, max_size=22)
PLUS_DIGITS = st.text(alphabet="0123456789", max_size=18).map(lambda digits: "+" + digits)
WITH_A_CODE = st.tuples(
    st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)),
    st.text(alphabet="0123456789 ", max_size=14),
).map(lambda parts: f"+{parts[0]}{parts[1]}")
PHONE_VALUES = (
    st.one_of(PHONE_CHARACTERS, PLUS_DIGITS, WITH_A_CODE)
    .map(str.strip)
    .filter(bool)  # what the caller passes: trimmed, not empty
)
REGIONS = (None, "US", "GB", "DE")


@settings(max_examples=15)
@given(values=st.lists(PHONE_VALUES, min_size=1, max_size=400))
def test_decided_random_values_match_python(evaluate: Evaluator, values: list[str]) -> None:
    for phone_format in PHONE_FORMATS:
        _, wrong = disagreements(
            evaluate, [(value, region) for value in values for region in REGIONS], phone_format
        )
        assert not wrong, wrong


def test_the_value_may_be_any_varchar_expression() -> None:
    sql = phone_sql("s[2]", default_region="US", phone_format="e164_no_plus")
    with duckdb.connect() as connection:
        rows = connection.execute(
            f"SELECT {sql.decided}, {sql.normalized}"
            " FROM (VALUES (['x', '+1 (415) 555-0100']), (['x', '+1 415 555 010'])) t(s)"
        ).fetchall()
    assert rows == [(True, "14155550100"), (True, None)]


def test_values_of_any_length_make_no_error(evaluate: Evaluator) -> None:
    """Long digit strings once turned lengths into code points past Unicode's."""
    values = ["+" + "1" * n for n in (16, 55_231, 57_280, 1_200_000)] + ["+44" + "2" * 70_000]
    for region in (None, "GB"):
        sql = phone_sql("v", default_region=region, phone_format="e164")
        assert evaluate(sql, values) == [(False, None)] * len(values)


def test_a_null_value_is_not_decided() -> None:
    sql = phone_sql("v", default_region=None, phone_format="e164")
    with duckdb.connect() as connection:
        rows = connection.execute(
            f"SELECT {sql.decided}, {sql.normalized} FROM (VALUES (NULL::VARCHAR)) t(v)"
        ).fetchall()
    assert rows == [(False, None)]


def test_national_formats_are_left_to_python(evaluate: Evaluator) -> None:
    values = ["(415) 555-0100", "020 7031 3000", "0044 20 7031 3000", "(+44) 20 7031 3000"]
    for region in (None, "US", "GB"):
        sql = phone_sql("v", default_region=region, phone_format="e164")
        assert [decided for decided, _ in evaluate(sql, values)] == [False] * len(values)


def test_a_number_without_country_code_is_refused_only_without_default_region(
    evaluate: Evaluator,
) -> None:
    """With a default region, parse tries again after its international prefix."""
    values = ["+999 1234 5678", "+0044 20 7031 3000"]
    none = phone_sql("v", default_region=None, phone_format="e164")
    assert evaluate(none, values) == [(True, None), (True, None)]
    assert [python_answer(value, None, "e164") for value in values] == [None, None]
    germany = phone_sql("v", default_region="DE", phone_format="e164")
    assert [decided for decided, _ in evaluate(germany, values)] == [False, False]
    assert python_answer("+0044 20 7031 3000", "DE", "e164") == "+442070313000"


@pytest.mark.parametrize("region", ["XX", "Narnia", "001"])
def test_an_unknown_default_region_is_a_configuration_error(region: str) -> None:
    with pytest.raises(ConfigurationError, match="default_phone_region"):
        phone_sql("v", default_region=region, phone_format="e164")


def test_an_unknown_phone_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="phone_format"):
        phone_sql("v", default_region=None, phone_format="e.164")  # type: ignore[arg-type]


def test_a_blank_default_region_counts_as_none() -> None:
    blank = phone_sql("v", default_region="  ", phone_format="e164")
    assert blank == phone_sql("v", default_region=None, phone_format="e164")
    assert phone_sql("v", default_region="gb", phone_format="e164") == phone_sql(
        "v", default_region="GB", phone_format="e164"
    )

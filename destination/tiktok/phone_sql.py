"""The phone rule of ``normalize.py`` as DuckDB SQL expressions, for the compiled route.

The compiled route (issue 19) normalizes identifiers inside DuckDB, where a Python call per
phone would cost more than everything else. Its results must be exactly those of
:func:`~destination.tiktok.normalize.normalize_phone`, so the SQL here answers only where
it follows the Python steps without a doubt, and otherwise says "not decided": the caller
then sends that value to ``normalize_phone``.

Decided: a ``+`` then digits, with separators among `` ().-`` anywhere after the ``+``,

- when a country code starts the digits and there are 7 to 15 of them (the domain of
  ``_quick_split``), the national number (what follows the code) does not start with 0
  (phonenumbers' Italian leading zero) and phonenumbers leaves it whole: its national
  prefix rule (``"0"`` in most regions, ``"8"`` in Russia, ...) either does not match
  or, as for ``+7 812 ...``, matches but is kept. Then ``_is_valid_split`` (validity per
  region of the code, in phonenumbers' order) gives the answer;
- when no country code starts the digits and there is no default region: phonenumbers
  cannot read the number (with a default region, it tries again after the region's
  international prefix: not decided).

Not decided: national formats (without ``+``), a national prefix phonenumbers would
remove (``+44 (0)20 ...``), a leading zero, more than 15 digits, letters, extensions:
the Python normalizer handles them. Where it refuses a decided value, it says "phone is
not a valid number". So the default region only matters for numbers without country
code, and the SQL is the same for every region.

The regular expressions are phonenumbers' own patterns (those ``normalize`` uses), which
RE2 reads as Python's ``re`` does: they use only classes, groups, alternation, counted
repetition and ``$``, and a prefix match takes the leftmost-first match in both. Each
is a constant of the SQL, behind a CASE on the country code, and applies to the digits
string whole (``+``, code, national number), so that the national number is never cut
out: DuckDB computes the digits once per row (common subexpressions) and runs only the
patterns of the row's country code. There are no lambdas: DuckDB builds a lambda's body
again for every vector, recompiling each pattern in it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Final, NamedTuple

import phonenumbers

from destination.errors import ConfigurationError
from destination.tiktok import normalize
from destination.tiktok.normalize import PHONE_FORMATS, PhoneFormat

__all__ = ["PhoneSql", "phone_sql"]


class PhoneSql(NamedTuple):
    """Two SQL expressions over one VARCHAR value (see :func:`phone_sql`)."""

    #: BOOLEAN: TRUE where ``normalized`` is exactly what ``normalize_phone`` gives
    decided: str
    #: VARCHAR: the normalized number, or NULL where ``normalize_phone`` raises
    #: ``PayloadError("phone is not a valid number")``; only meaningful where decided
    normalized: str


def phone_sql(value: str, *, default_region: str | None, phone_format: PhoneFormat) -> PhoneSql:
    """SQL that normalizes the phone in ``value`` as ``normalize_phone`` does, where it can.

    ``value`` is an SQL expression of type VARCHAR; it is written many times in the SQL
    (DuckDB evaluates it once per row), so it should be short: a column, or ``s[2]``. The
    caller guarantees it holds printable ASCII only, no surrounding spaces, is not empty
    and is not a pre-hashed value (64 hex digits). The settings are checked as
    ``normalize_phone`` checks them (a bad one raises :class:`ConfigurationError`); the
    SQL is built once per pair of settings.
    """
    if phone_format not in PHONE_FORMATS:
        raise ConfigurationError(f"phone_format must be one of {', '.join(PHONE_FORMATS)}")
    region = normalize._check_region(default_region)
    decided, normalized = _templates(region is not None, phone_format)
    return PhoneSql(
        decided=decided.replace(_VALUE, value), normalized=normalized.replace(_VALUE, value)
    )


_VALUE: Final = "\x00"  # where the caller's value goes (never in SQL text otherwise)
#: the value without its separators: '+', the country code, the national number
_DIGITS: Final = f"regexp_replace({_VALUE}, '[ ().-]', '', 'g')"  # faster than translate
_MIN_DIGITS: Final = 7  # _quick_split's bounds, '+' excluded
_MAX_DIGITS: Final = 15


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@functools.cache
def _templates(default_region: bool, phone_format: PhoneFormat) -> tuple[str, str]:
    """``decided`` and ``normalized`` with ``_VALUE`` for the caller's value.

    Without country code, parse refuses the number when there is no default region;
    with one, it tries again after the region's international prefix: not decided. The
    region does not matter otherwise (national formats are not decided)."""
    d = _DIGITS
    no_code = "FALSE" if default_region else "TRUE"
    decided = {}
    valid = {}
    number = d if phone_format == "e164" else f"substr({d}, 2)"
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        main = normalize._main_metadata(code)
        if main is None:  # _quick_split gives up
            decided[str(code)], valid[str(code)] = "FALSE", "NULL"
            continue
        decided[str(code)] = (
            f"length({d}) BETWEEN {_MIN_DIGITS + 1} AND {_MAX_DIGITS + 1}"
            f" AND NOT starts_with({d}, '+{code}0') AND {_whole(code, main)}"
        )
        valid[str(code)] = f"CASE WHEN {_valid(code)} THEN {number} END"
    # DuckDB computes once per row what the first WHEN of a CASE computes (the digits),
    # where it computes them again for each use otherwise
    international = (
        f"WHEN NOT coalesce(regexp_full_match({d}, '\\+[0-9]*'), FALSE) THEN {{no}}"
        f" WHEN NOT starts_with({_VALUE}, '+') THEN {{no}}"
    )
    return (
        f"CASE {international.format(no='FALSE')} WHEN {_plain()} THEN TRUE"
        f" ELSE {_code_case(decided, no_code)} END",
        f"CASE {international.format(no='NULL')} ELSE {_code_case(valid, 'NULL')} END",
    )


@functools.cache
def _plain() -> str:
    """The usual case of ``decided``, in one pattern over the digits: a country code, 7
    to 15 digits in all, a national number starting with neither 0 nor the region's
    national prefix (when that prefix is one digit, without transform rule)."""
    alternatives = []
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        main = normalize._main_metadata(code)
        if main is None:
            continue
        prefix = main.national_prefix_for_parsing
        if not prefix:
            first = "1-9"
        elif _is_plain(main) and len(prefix) == 1:
            first = "".join(digit for digit in "123456789" if digit != prefix)
        else:
            continue
        rest = len(str(code)) + 1
        alternatives.append(f"{code}[{first}][0-9]{{{_MIN_DIGITS - rest},{_MAX_DIGITS - rest}}}")
    pattern = re.escape("+") + f"(?:{'|'.join(alternatives)})"
    return f"regexp_full_match({_DIGITS}, {_literal(pattern)})"


def _code_case(branches: Mapping[str, str], otherwise: str) -> str:
    """A CASE on the country code after the '+' (codes are prefix-free), a digit a level."""

    def level(prefix: str) -> str:
        whens = []
        for digit in "0123456789":
            key = prefix + digit
            if key in branches:
                whens.append(f"WHEN starts_with({_DIGITS}, '+{key}') THEN {branches[key]}")
            elif any(code.startswith(key) for code in branches):
                whens.append(f"WHEN starts_with({_DIGITS}, '+{key}') THEN {level(key)}")
        return f"CASE {' '.join(whens)} ELSE {otherwise} END"

    return level("")


# -- the national prefix ------------------------------------------------------------------------


def _whole(code: int, metadata: phonenumbers.PhoneMetadata) -> str:
    """Whether ``_strip_national_prefix`` leaves the national number whole: the region's
    national prefix does not match, or ``_maybe_strip_national_prefix_carrier_code`` keeps
    it (removing it would make a viable number not viable), or parse keeps it (what is
    left has a length parse refuses). FALSE where that is not decided."""
    prefix = metadata.national_prefix_for_parsing
    if not prefix:
        return "TRUE"
    head = f"+{code}"
    if _is_plain(metadata):
        rest = head + prefix
        strips = (
            f"starts_with({_DIGITS}, '{rest}')"
            f" AND (NOT {_general(metadata, head)} OR {_general(metadata, rest)})"
            f" AND {_kept(_DIGITS, len(rest), metadata)}"
        )
        return f"NOT ({strips})"
    national = f"substr({_DIGITS}, {len(head) + 1})"
    removed = _removed(national, metadata)
    if removed is None:
        return f"NOT regexp_matches({national}, {_literal(f'^(?:{prefix})')})"
    strips = (
        f"{removed} <> {national}"
        f" AND (NOT {_general(metadata, head)} OR {_general(metadata, '', removed)})"
        f" AND {_kept(removed, 0, metadata)}"
    )
    return f"(NOT regexp_matches({national}, {_literal(f'^(?:{prefix})')}) OR NOT ({strips}))"


def _is_plain(metadata: phonenumbers.PhoneMetadata) -> bool:
    """A national prefix of digits only, without transform rule ("0" in most regions)."""
    prefix = metadata.national_prefix_for_parsing or ""
    return prefix.isdigit() and prefix.isascii() and not metadata.national_prefix_transform_rule


def _kept(x: str, skipped: int, metadata: phonenumbers.PhoneMetadata) -> str:
    """Whether parse keeps the number without its prefix (``x`` after ``skipped``
    characters): its length is not too short, possible locally only or invalid. The
    number has at most ``_MAX_DIGITS`` digits plus what a transform rule adds: longer
    lengths need no answer."""
    longest = _MAX_DIGITS + len(metadata.national_prefix_transform_rule or "")
    refused = [
        str(skipped + length)
        for length in range(longest + 1)
        if normalize._test_number_length("0" * length, metadata) in normalize._KEEP_PREFIX
    ]
    return f"length({x}) NOT IN ({', '.join(refused)})" if refused else "TRUE"


def _removed(x: str, metadata: phonenumbers.PhoneMetadata) -> str | None:
    """``x`` once its matching national prefix is removed, or transformed by the region's
    rule when the pattern's last group took part in the match (None: not decided)."""
    prefix = metadata.national_prefix_for_parsing or ""
    pattern = _literal(f"^(?:{prefix})")
    removed = f"regexp_replace({x}, {pattern}, '')"
    rule = metadata.national_prefix_transform_rule
    if not rule:
        return removed
    # RE2 gives '' for a group that took no part in the match: that tells the two apart
    # only when the group never matches the empty string
    group = _last_group(prefix)
    if group is None:
        return None
    return (
        f"CASE WHEN regexp_extract({x}, {pattern}, {group}) <> ''"
        f" THEN regexp_replace({x}, {pattern}, {_literal(rule)}) ELSE {removed} END"
    )


def _last_group(pattern: str) -> int | None:
    """The number of the pattern's last capturing group when that group never matches the
    empty string (else None)."""
    opened: list[tuple[int, bool]] = []
    groups: list[tuple[int, int]] = []  # (start, end) of each capturing group
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            opened.append((i, pattern[i + 1 : i + 2] != "?"))
        elif char == ")":
            start, capturing = opened.pop()
            if capturing:
                groups.append((start, i))
        i += 1
    if not groups:
        return None
    start, end = max(groups)  # groups are numbered in the order they open
    if re.fullmatch(pattern[start + 1 : end], "") is not None:
        return None
    return len(groups)


def _general(metadata: phonenumbers.PhoneMetadata, head: str, x: str = _DIGITS) -> str:
    """``_match_national_number(national, metadata.general_desc, False)``, the national
    number being ``x`` after ``head`` (digits, or '+' and digits)."""
    desc = metadata.general_desc
    pattern = desc.national_number_pattern if desc is not None else None
    if not pattern:
        return "FALSE"
    return f"regexp_full_match({x}, {_literal(f'{re.escape(head)}(?:{pattern})')})"


# -- validity ---------------------------------------------------------------------------------


def _valid(code: int) -> str:
    """``_is_valid_split``: the region is the only one of the code, or the first whose
    leading digits match, or the first (without leading digits) giving a type."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    metadata = [
        found
        for region in regions
        if (found := phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region))
        is not None
    ]
    if len(regions) == 1:
        return _has_type(code, metadata[0]) if len(metadata) == 1 else "FALSE"
    whens = []
    for region in metadata:
        if region.leading_digits:
            leading = _literal(f"^{re.escape(f'+{code}')}(?:{region.leading_digits})")
            whens.append(
                f"WHEN regexp_matches({_DIGITS}, {leading}) THEN {_has_type(code, region)}"
            )
        else:
            whens.append(f"WHEN {_has_type(code, region)} THEN TRUE")
    return f"CASE {' '.join(whens)} ELSE FALSE END" if whens else "FALSE"


def _has_type(code: int, metadata: phonenumbers.PhoneMetadata) -> str:
    """``_RegionRule.has_type``: a length of the general description, its pattern, and the
    pattern of a number type having that length.

    The type test is one pattern over the digits followed by a letter giving their length
    (``A`` for 1 character, ``B`` for 2, ...): each type's pattern comes once, before the
    letters of its lengths."""
    general = metadata.general_desc
    if general is None or not general.national_number_pattern:
        return "FALSE"
    general_lengths = frozenset(general.possible_length)
    names = (
        normalize._TYPE_DESCS
        if metadata.same_mobile_and_fixed_line_pattern
        else (*normalize._TYPE_DESCS, "mobile")
    )
    head = len(f"+{code}")
    by_letters: dict[str, list[str]] = {}
    for desc in (getattr(metadata, name) for name in names):
        if desc is None or not desc.national_number_pattern:
            continue
        letters = "".join(
            _length_letter(head + length)
            for length in range(1, normalize._MAX_NATIONAL_LENGTH + 1)
            if (not desc.possible_length or length in desc.possible_length)
            and (not general_lengths or length in general_lengths)
        )
        if letters:
            by_letters.setdefault(letters, []).append(f"(?:{desc.national_number_pattern})")
    if not by_letters:
        return "FALSE"
    typed = "|".join(f"(?:{'|'.join(found)})[{letters}]" for letters, found in by_letters.items())
    # past _LETTERED characters, one letter that no type has (and always a code point)
    length = f"least(length({_DIGITS}), {_LETTERED})::INTEGER"
    marked = f"{_DIGITS} || chr({ord(_length_letter(0))} + {length})"
    pattern = re.escape(f"+{code}") + f"(?:{typed})"
    return (
        f"(regexp_full_match({marked}, {_literal(pattern)}) AND {_general(metadata, f'+{code}')})"
    )


def _length_letter(length: int) -> str:
    return chr(ord("@") + length)


#: longer than any digits a type pattern can take ('+', a code, a national number)
_LETTERED: Final = 1 + 3 + normalize._MAX_NATIONAL_LENGTH + 1

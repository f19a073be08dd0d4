"""Normalize and hash the user identifiers of TikTok audiences.

TikTok's Segment API takes users as SHA-256 hashes (lowercase hex) of normalized
identifiers. The rules applied here:

Email
    Trimmed and lowercased. It must look like an address: exactly one ``@``, a non-empty
    local part, a domain of at least two non-empty dot-separated labels, no whitespace
    inside. Optionally (both off by default) a ``+suffix`` is removed from the local part
    (``a+news@x.com`` -> ``a@x.com``) and dots are removed from the local part; the local
    part must not end up empty.

Phone
    E.164 (``+`` country code and number, digits only), through ``phonenumbers``: the value
    is parsed with ``default_region`` (ISO 3166 alpha-2 such as ``"US"``, or ``None``), so
    national formats, spaces, dashes, parentheses and the region's international prefix
    (``00`` in most of Europe) are understood. A number without country code when no
    default region is set is refused with its own reason, as is any number
    ``phonenumbers.is_valid_number`` rejects. ``phone_format`` ``"e164"`` gives
    ``+14155550100``, ``"e164_no_plus"`` gives ``14155550100``.

Advertising id
    IDFA (iOS) or Android advertising id (GAID / AAID): trimmed and lowercased, hyphens
    kept. It must be 32 hex digits, optionally hyphenated 8-4-4-4-12. The all-zero id is
    what a device sends when tracking is refused: it is not an identifier. The device
    type picks the kind: ``ios``, ``ipados``, ``tvos``, ``watchos`` -> ``IDFA_SHA256``,
    ``android`` -> ``AAID_SHA256`` (case-insensitive, trimmed), anything else -> unknown.

Pre-hashed values
    A value that, trimmed, is exactly 64 hex characters is taken as an SHA-256 hash
    already: the ``hash_*`` functions only lowercase it, without normalizing or hashing
    it again. This holds for emails, phones and advertising ids alike.

Hashing
    SHA-256 of the UTF-8 encoded normalized string, as lowercase hex.

Every function is pure. Invalid values raise :class:`PayloadError` whose message names
the kind of identifier and the reason but never the value (it is personal data). Invalid
settings (an unknown ``default_region`` or ``phone_format``) raise
:class:`ConfigurationError`. A blank ``default_region`` counts as none.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Final, Literal

import phonenumbers
from phonenumbers import phonenumberutil, re_util

from destination.errors import ConfigurationError, PayloadError

__all__ = [
    "ID_TYPES",
    "PHONE_FORMATS",
    "IdType",
    "PhoneFormat",
    "advertising_id_type",
    "hash_advertising_id",
    "hash_email",
    "hash_phone",
    "is_sha256_hex",
    "normalize_advertising_id",
    "normalize_email",
    "normalize_phone",
]

# phonenumbers compiles its metadata's regular expressions on every call unless its
# pattern cache is on; turning it on changes no result and saves a tenth of the time.
re_util.enable_pattern_cache()

IdType = Literal["EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256"]
PhoneFormat = Literal["e164", "e164_no_plus"]

#: The identifier types, in the order used in requests.
ID_TYPES: Final[tuple[IdType, ...]] = (
    "EMAIL_SHA256",
    "PHONE_SHA256",
    "IDFA_SHA256",
    "AAID_SHA256",
)
PHONE_FORMATS: Final[tuple[PhoneFormat, ...]] = ("e164", "e164_no_plus")

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_ADVERTISING_ID = re.compile(
    r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
_PLUS_SIGNS = ("+", "\uff0b")  # phonenumbers also reads the full-width plus sign
_WHITESPACE = re.compile(r"\s")  # the same characters as str.isspace (checked)
_IDFA_DEVICES = frozenset({"ios", "ipados", "tvos", "watchos"})
_AAID_DEVICES = frozenset({"android"})


def _require_str(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise PayloadError(f"{kind} is not a string (got {type(value).__name__})")
    return value


def is_sha256_hex(value: str) -> bool:
    """Whether ``value``, ignoring surrounding whitespace, is 64 hex characters."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value.strip()) is not None


def normalize_email(
    value: str, *, remove_plus_suffix: bool = False, remove_dots: bool = False
) -> str:
    """Trim and lowercase an email address, optionally dropping ``+suffix`` and dots."""
    return _email(_require_str("email", value).strip(), remove_plus_suffix, remove_dots)


def _email(text: str, remove_plus_suffix: bool, remove_dots: bool) -> str:
    """``normalize_email`` of a string already trimmed."""
    email = text.lower()
    local, at, domain = email.partition("@")
    labels = domain.split(".")
    if (
        not at
        or not local
        or "@" in domain
        or len(labels) < 2
        or not all(labels)
        or _WHITESPACE.search(email) is not None
    ):
        raise PayloadError("email is not a valid address")
    try:
        email.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError("email is not a valid address") from None
    if remove_plus_suffix:
        local = local.partition("+")[0]
    if remove_dots:
        local = local.replace(".", "")
    if not local:
        raise PayloadError("email has an empty local part once normalized")
    return f"{local}@{domain}"


def _check_region(default_region: object) -> str | None:
    if isinstance(default_region, str) and default_region in _REGIONS:
        return _REGIONS[default_region]  # the same setting for every event: checked once
    if default_region is None:
        return None
    if not isinstance(default_region, str):
        raise ConfigurationError("default_phone_region must be a string")
    region = default_region.strip().upper()
    if not region:
        return None
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigurationError(
            f"default_phone_region {default_region!r} is not a region phonenumbers knows"
        )
    _REGIONS[default_region] = region
    return region


_REGIONS: dict[str, str | None] = {}  # a default_phone_region setting -> its region


def normalize_phone(
    value: str,
    *,
    default_region: str | None = None,
    phone_format: PhoneFormat = "e164",
) -> str:
    """The phone number in E.164 (``phone_format="e164_no_plus"``: without the ``+``)."""
    return _phone(_require_str("phone", value).strip(), default_region, phone_format)


def _phone(text: str, default_region: str | None, phone_format: PhoneFormat) -> str:
    """``normalize_phone`` of a string already trimmed."""
    if phone_format not in PHONE_FORMATS:
        raise ConfigurationError(f"phone_format must be one of {', '.join(PHONE_FORMATS)}")
    region = _check_region(default_region)
    if not text:
        raise PayloadError("phone is empty")
    quick = _quick_split(text, region)
    if quick is not None and _is_valid_split(*quick):
        return _e164(*quick, phone_format)
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        if (
            exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE
            and region is None
            and not any(plus in text for plus in _PLUS_SIGNS)
        ):
            raise PayloadError(
                "phone has no country code and no default_phone_region is set"
            ) from None
        raise PayloadError("phone is not a valid number") from None
    code = number.country_code or 0
    if number.italian_leading_zero:  # "0" + national: leave the check to phonenumbers
        national = str(phonenumbers.national_significant_number(number))
        valid = phonenumbers.is_valid_number(number)
    else:
        national = str(number.national_number)
        valid = _is_valid_split(code, national)
    if not valid:
        raise PayloadError("phone is not a valid number")
    return _e164(code, national, phone_format)


def _e164(code: int, national: str, phone_format: PhoneFormat) -> str:
    """What ``phonenumbers.format_number(..., E164)`` writes, in ``phone_format``."""
    return f"+{code}{national}" if phone_format == "e164" else f"{code}{national}"


def _quick_split(text: str, region: str | None) -> tuple[int, str] | None:
    """Country code and national number as ``phonenumbers.parse`` finds them, without its
    general machinery, for the plain forms most input has.

    ``phonenumbers.parse`` spends most of its time on forms this input does not have
    (letters, extensions, RFC 3966 URIs, words around the number). Handled here: digits
    with spaces, dashes, dots and parentheses, after a ``+`` (the country code is the
    prefix the metadata knows: codes are prefix-free) or, with a region, as dialled in
    it. The rest is parse's own steps, called as parse calls them: the region's
    international prefix and country code (``1 (415) ...`` in the US), then the national
    prefix (``+44 (0)20 ...``) when what is left has a possible length. A national number
    starting with 0 (Italy's leading zero) goes to the full parser, as does anything else;
    the caller keeps the result only if ``_is_valid_split`` holds.
    """
    digits = text.translate(_SEPARATORS)
    if text[:1] == "+":
        digits = digits[1:]
        if not (digits.isdigit() and digits.isascii() and 7 <= len(digits) <= 15):
            return None
        if digits[0] == "0":  # no country code starts with 0
            return None
        for length in (1, 2, 3):
            code = int(digits[:length])
            if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                return _strip_national_prefix(code, digits[length:], _main_metadata(code))
        return None
    metadata = _region_metadata(region)
    if metadata is None or not (digits.isdigit() and digits.isascii() and 4 <= len(digits) <= 15):
        return None
    own_code = metadata.country_code or 0
    idd = _pattern(metadata.international_prefix)
    if not digits.startswith(str(own_code)) and (idd is None or not idd.match(digits)):
        # neither an international prefix nor the region's own code: parse finds none
        return _strip_national_prefix(own_code, digits, metadata)
    try:
        code, national = _extract_country_code(digits, metadata, False, phonenumbers.PhoneNumber())
    except phonenumbers.NumberParseException:
        return None
    if code == 0:
        return _strip_national_prefix(own_code, digits, metadata)
    return _strip_national_prefix(code, national, _main_metadata(code))


_SEPARATORS = str.maketrans("", "", " -().\t")
# phonenumbers.parse's own steps, used as it uses them (the fuzz tests compare the two)
_extract_country_code = phonenumberutil._maybe_extract_country_code
_strip_prefix = phonenumberutil._maybe_strip_national_prefix_carrier_code
_test_number_length = phonenumberutil._test_number_length
_KEEP_PREFIX: Final = frozenset(
    {
        phonenumberutil.ValidationResult.TOO_SHORT,
        phonenumberutil.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
        phonenumberutil.ValidationResult.INVALID_LENGTH,
    }
)


def _strip_national_prefix(
    code: int, national: str, metadata: phonenumbers.PhoneMetadata | None
) -> tuple[int, str] | None:
    """The end of ``parse``: the national prefix removed if what is left is possible."""
    if metadata is None or len(national) < 2:
        return None
    prefix = _pattern(metadata.national_prefix_for_parsing)
    if prefix is not None and prefix.match(national):
        _, stripped, _ = _strip_prefix(national, metadata)
        if _test_number_length(stripped, metadata) not in _KEEP_PREFIX:
            national = stripped
    if not national or national[0] == "0":
        return None
    return code, national


@functools.cache
def _main_metadata(code: int) -> phonenumbers.PhoneMetadata | None:
    """The metadata parse strips national prefixes with, for a number of ``code``."""
    main = phonenumbers.region_code_for_country_code(code)
    return phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, main)


@functools.cache
def _region_metadata(region: str | None) -> phonenumbers.PhoneMetadata | None:
    if region is None:
        return None
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    return metadata if metadata is not None and metadata.country_code else None


@functools.cache
def _pattern(pattern: str | None) -> re.Pattern[str] | None:
    """A pattern of the metadata (a national or international prefix), compiled once."""
    return re.compile(pattern) if pattern else None


# -- validity from the same metadata, without phonenumbers' per-call overhead ------------
#
# ``phonenumbers.is_valid_number`` picks the number's region among those of its country
# code (the only one; else the first whose ``leading_digits`` match, or failing that the
# first where the number has a type), then tests the number against the region's general
# description and each number type's (length, then pattern), one Python call at a time.
# Here each region's type patterns are joined, per national-number length, into one
# regular expression compiled once: the same test in two C-level matches. Checked equal to
# ``is_valid_number`` for every region's example numbers and random ones (tests).

# the number types ``_number_type_helper`` tries; mobile only if its pattern is not fixed
# line's (phonenumbers does not test it then)
_TYPE_DESCS: Final = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)
_MAX_NATIONAL_LENGTH: Final = 17


class _RegionRule:
    """One region's validity test: its general description, then any number type."""

    __slots__ = ("general", "general_lengths", "leading", "typed")

    def __init__(self, metadata: phonenumbers.PhoneMetadata) -> None:
        self.leading = re.compile(metadata.leading_digits) if metadata.leading_digits else None
        general = metadata.general_desc
        self.general = _desc_pattern(general)
        self.general_lengths = frozenset(general.possible_length if general else ())
        names = (
            _TYPE_DESCS if metadata.same_mobile_and_fixed_line_pattern else (*_TYPE_DESCS, "mobile")
        )
        descs = [
            (frozenset(desc.possible_length), pattern)
            for desc in (getattr(metadata, name) for name in names)
            if desc is not None and (pattern := desc.national_number_pattern)
        ]
        self.typed: dict[int, re.Pattern[str]] = {}
        for length in range(1, _MAX_NATIONAL_LENGTH + 1):
            patterns = [p for lengths, p in descs if not lengths or length in lengths]
            if patterns:
                self.typed[length] = re.compile("|".join(f"(?:{p})" for p in patterns))

    def has_type(self, national: str) -> bool:
        """Whether phonenumbers gives ``national`` a number type other than UNKNOWN here."""
        general = self.general
        if general is None:
            return False
        length = len(national)
        if self.general_lengths and length not in self.general_lengths:
            return False
        if general.fullmatch(national) is None:
            return False
        typed = self.typed.get(length)
        return typed is not None and typed.fullmatch(national) is not None


def _desc_pattern(desc: phonenumbers.PhoneNumberDesc | None) -> re.Pattern[str] | None:
    pattern = desc.national_number_pattern if desc is not None else None
    return re.compile(pattern) if pattern else None


_RULES: dict[int, tuple[_RegionRule, ...]] = {}


def _rules(code: int) -> tuple[_RegionRule, ...]:
    """The validity rules of a country code's regions, in phonenumbers' order."""
    rules = _RULES.get(code)
    if rules is None:
        found = []
        for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ()):
            metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region)
            if metadata is not None:
                found.append(_RegionRule(metadata))
        rules = _RULES[code] = tuple(found)
    return rules


def _is_valid_split(code: int, national: str) -> bool:
    """``phonenumbers.is_valid_number`` of ``+code national`` (national: ASCII digits, no
    leading zero)."""
    rules = _rules(code)
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    if len(regions) == 1:
        return len(rules) == 1 and rules[0].has_type(national)
    for rule in rules:
        if rule.leading is not None:
            if rule.leading.match(national):
                return rule.has_type(national)
        elif rule.has_type(national):
            return True
    return False


def normalize_advertising_id(value: str) -> str:
    """Trim and lowercase an IDFA or Android advertising id (hyphens are kept)."""
    return _advertising_id(_require_str("advertising id", value).strip())


def _advertising_id(text: str) -> str:
    """``normalize_advertising_id`` of a string already trimmed."""
    ad_id = text.lower()
    if _ADVERTISING_ID.fullmatch(ad_id) is None:
        raise PayloadError("advertising id is not 32 hex digits")
    if not ad_id.replace("-", "").strip("0"):
        raise PayloadError("advertising id is all zeros (tracking refused)")
    return ad_id


def advertising_id_type(
    device_type: str | None,
) -> Literal["IDFA_SHA256", "AAID_SHA256"] | None:
    """The id type of a device's advertising id, or ``None`` if the device is unknown."""
    if not isinstance(device_type, str):
        return None
    device = device_type.strip().lower()
    if device in _IDFA_DEVICES:
        return "IDFA_SHA256"
    if device in _AAID_DEVICES:
        return "AAID_SHA256"
    return None


def _trimmed(kind: str, value: str) -> tuple[str, str | None]:
    """The value trimmed, and lowercased when it is a SHA-256 already (else None)."""
    text = _require_str(kind, value).strip()
    return text, text.lower() if len(text) == 64 and _SHA256_HEX.fullmatch(text) else None


def _sha256(text: str) -> str:
    """The SHA-256 of a normalized identifier as lowercase hex (the normalizers leave only
    text that encodes as UTF-8: an email is checked, the others are ASCII)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_email(value: str, *, remove_plus_suffix: bool = False, remove_dots: bool = False) -> str:
    """The SHA-256 hex of the normalized email (a pre-hashed value is only lowercased)."""
    text, prehashed = _trimmed("email", value)
    if prehashed is not None:
        return prehashed
    return _sha256(_email(text, remove_plus_suffix, remove_dots))


def hash_phone(
    value: str,
    *,
    default_region: str | None = None,
    phone_format: PhoneFormat = "e164",
) -> str:
    """The SHA-256 hex of the normalized phone (a pre-hashed value is only lowercased)."""
    text, prehashed = _trimmed("phone", value)
    if prehashed is not None:
        return prehashed
    return _sha256(_phone(text, default_region, phone_format))


def hash_advertising_id(value: str) -> str:
    """The SHA-256 hex of the normalized advertising id (a pre-hashed value is lowercased)."""
    text, prehashed = _trimmed("advertising id", value)
    if prehashed is not None:
        return prehashed
    return _sha256(_advertising_id(text))

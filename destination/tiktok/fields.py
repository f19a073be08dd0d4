"""The fields of the TikTok Audiences actions, declared once, and the action catalogue.

Default mappings follow Segment's TikTok Audiences destination: email and phone from
``context.traits`` when present, else ``properties``; the advertising id and the device
type from ``context.device``; in native mode the audience and advertiser from
``context.personas``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from destination.kit.fields import Field

__all__ = ["CATALOGUE", "MODES", "PLACE_FIELDS", "ActionInfo", "Mode"]

Mode = Literal["native", "legacy"]
MODES: tuple[Mode, ...] = ("native", "legacy")

# the fields that name the advertiser and the audience of a membership change: what
# ``Membership.place`` reads of a payload (the rest stays in the digest), in this order
PLACE_FIELDS = ("advertiser_id", "audience_id", "external_audience_id", "audience_key")


def _traits_else_properties(name: str) -> dict[str, Any]:
    return {
        "@if": {
            "exists": {"@path": f"$.context.traits.{name}"},
            "then": {"@path": f"$.context.traits.{name}"},
            "else": {"@path": f"$.properties.{name}"},
        }
    }


EMAIL = Field(
    "email",
    "string",
    "The user's email address; trimmed, lowercased and SHA-256 hashed before sending "
    "(a 64-hex value is taken as already hashed).",
    default=_traits_else_properties("email"),
    personal_data=True,
)
PHONE = Field(
    "phone",
    "string",
    "The user's phone number; turned into E.164 (using default_phone_region when it has "
    "no country code) and SHA-256 hashed before sending.",
    default=_traits_else_properties("phone"),
    personal_data=True,
)
ADVERTISING_ID = Field(
    "advertising_id",
    "string",
    "The device's advertising id (IDFA on iOS, Google advertising id on Android); "
    "lowercased and SHA-256 hashed. An all-zero id (tracking refused) is ignored.",
    default={"@path": "$.context.device.advertisingId"},
    personal_data=True,
)
DEVICE_TYPE = Field(
    "device_type",
    "string",
    "The device type ('ios' or 'android'); decides whether the advertising id is sent as "
    "IDFA_SHA256 or AAID_SHA256.",
    default={"@path": "$.context.device.type"},
)
SEND_EMAIL = Field("send_email", "boolean", "Send the email address to TikTok.", default=True)
SEND_PHONE = Field("send_phone", "boolean", "Send the phone number to TikTok.", default=True)
SEND_ADVERTISING_ID = Field(
    "send_advertising_id", "boolean", "Send the advertising id to TikTok.", default=True
)
IDENTIFIER_FIELDS = (
    EMAIL,
    PHONE,
    ADVERTISING_ID,
    DEVICE_TYPE,
    SEND_EMAIL,
    SEND_PHONE,
    SEND_ADVERTISING_ID,
)

EXTERNAL_AUDIENCE_ID = Field(
    "external_audience_id",
    "string",
    "The TikTok audience id of the audience the event is about. When it is missing, the "
    "audience named by audience_key is created once and its id remembered.",
    default={"@path": "$.context.personas.external_audience_id"},
)
AUDIENCE_KEY = Field(
    "audience_key",
    "string",
    "The CDP's key for the audience (Segment's computation_key); also the name of an "
    "audience created for it.",
    default={"@path": "$.context.personas.computation_key"},
)
NATIVE_ADVERTISER_ID = Field(
    "advertiser_id",
    "string",
    "The TikTok advertiser that owns the audience; falls back to the advertiser_id setting.",
    default={"@path": "$.context.personas.audience_settings.advertiserId"},
)
LEGACY_ADVERTISER_ID = Field(
    "advertiser_id",
    "string",
    "The TikTok advertiser that owns the audience; unmapped, the advertiser_id setting.",
)
LEGACY_AUDIENCE_ID = Field(
    "audience_id",
    "string",
    "The TikTok audience to change; unmapped, the audience_id setting.",
)
AUDIENCE_NAME = Field(
    "audience_name",
    "string",
    "The name of the audience to create (TikTok cuts names over 70 characters).",
    required=True,
    default={"@path": "$.properties.audience_name"},
    min_length=1,
    max_length=128,
)


@dataclass(frozen=True)
class ActionInfo:
    """What is known of an action before any setting: its fields and default trigger."""

    key: str
    title: str
    description: str
    mode: Mode
    fields: tuple[Field, ...]
    default_subscribe: str


ENTERED = 'type = "track" and event = "Audience Entered"'
EXITED = 'type = "track" and event = "Audience Exited"'

CATALOGUE: dict[str, ActionInfo] = {
    info.key: info
    for info in (
        ActionInfo(
            "addToAudience",
            "Add to Audience",
            "Add users to the TikTok audience the event names (created on first use).",
            "native",
            (*IDENTIFIER_FIELDS, EXTERNAL_AUDIENCE_ID, AUDIENCE_KEY, NATIVE_ADVERTISER_ID),
            ENTERED,
        ),
        ActionInfo(
            "removeFromAudience",
            "Remove from Audience",
            "Remove users from the TikTok audience the event names.",
            "native",
            (*IDENTIFIER_FIELDS, EXTERNAL_AUDIENCE_ID, AUDIENCE_KEY, NATIVE_ADVERTISER_ID),
            EXITED,
        ),
        ActionInfo(
            "createAudience",
            "Create Audience",
            "Create a partner audience (once per advertiser and name) and report its id.",
            "legacy",
            (AUDIENCE_NAME, LEGACY_ADVERTISER_ID),
            'type = "track" and event = "Create Audience"',
        ),
        ActionInfo(
            "addUser",
            "Add Users",
            "Add users to the audience chosen in the settings.",
            "legacy",
            (*IDENTIFIER_FIELDS, LEGACY_ADVERTISER_ID, LEGACY_AUDIENCE_ID),
            ENTERED,
        ),
        ActionInfo(
            "removeUser",
            "Remove Users",
            "Remove users from the audience chosen in the settings.",
            "legacy",
            (*IDENTIFIER_FIELDS, LEGACY_ADVERTISER_ID, LEGACY_AUDIENCE_ID),
            EXITED,
        ),
    )
}

"""TikTok's documented audience facts, as data: limits, asset types, actions, lookbacks.

One place for what TikTok's help pages say (seeds 000 engagement, 001 custom audiences
and lookalikes, 002 sharing, 004 app activity; ``TIKTOK_API.md``, DMP section), so the
definition validator refuses locally exactly what the fake server refuses as TikTok
would, and a new fact is one edit here.

Where the pages are silent a choice was made, marked *choice* below and in the README:
App Profile Page and Instant Page actions use the video-ad lookbacks, and app activity
uses them too. TikTok's wire codes of actions and events are not published; the codes
here are ours and the fake server's (our name in upper case, with the asset's prefix
where two asset types under one ``audience_type`` share a name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "ACCOUNT_AUDIENCE_TYPES",
    "APP_AUDIENCE_TYPE",
    "APP_EVENTS",
    "APP_LOOKBACK_DAYS",
    "ENGAGEMENT_ASSET_TYPES",
    "LOOKALIKE_OS",
    "LOOKALIKE_SIZES",
    "MAX_AUDIENCES",
    "MAX_NAME_LENGTH",
    "MAX_RULES",
    "MAX_SHARE_IDS",
    "MAX_VIDEOS",
    "MIN_LOOKALIKE_SOURCE",
    "MIN_TARGETABLE",
    "REPLACE_WINDOW_SECONDS",
    "RETENTION_DAYS",
    "AssetType",
]

MAX_RULES = 5
"""Rules in one rule set (inclusion or exclusion): ``rules[1..5]``."""
MAX_VIDEOS = 50
"""Videos (or LIVE rooms) of one rule: "You can select up to 50 videos" (seed 000)."""
MAX_AUDIENCES = 400
"""Custom audiences one advertiser can hold at one time (seed 000)."""
MIN_TARGETABLE = 1000
"""Matched users before an audience can target an ad group (seeds 000, 004)."""
MIN_LOOKALIKE_SOURCE = 100
"""Users a lookalike's source audience needs."""
REPLACE_WINDOW_SECONDS = 24 * 3600
"""TikTok allows about one REPLACE of a customer file audience per 24 hours."""
MAX_SHARE_IDS = 10
"""Audiences per share call, and advertisers one call shares them with."""
MAX_NAME_LENGTH = 128
"""``custom_audience_name`` length."""

_AD_LOOKBACKS = (7, 14, 30, 60, 90, 180)
_ORGANIC_LOOKBACKS = (7, 14, 30)


@dataclass(frozen=True)
class AssetType:
    """What an engagement audience is built from, as seed 000's table lists it.

    ``actions`` maps our action names to wire codes; every action of an asset type offers
    the same ``lookback_days``. ``video_assets`` is true for public and LIVE videos: their
    assets are videos or rooms of one TikTok account (``identity_id`` on the wire, at most
    ``MAX_VIDEOS`` per rule); otherwise the assets are ad group ids, and none means the
    whole advertiser account.
    """

    name: str
    audience_type: str
    actions: Mapping[str, str]
    lookback_days: tuple[int, ...]
    video_assets: bool


def _asset(
    name: str, audience_type: str, actions: dict[str, str], days: tuple[int, ...], videos: bool
) -> AssetType:
    return AssetType(name, audience_type, MappingProxyType(actions), days, videos)


_VIEWS = {
    "video_view_2s": "VIDEO_VIEW_2S",
    "video_view_6s": "VIDEO_VIEW_6S",
    "video_view_25": "VIDEO_VIEW_25",
    "video_view_50": "VIDEO_VIEW_50",
    "video_view_75": "VIDEO_VIEW_75",
    "video_view_100": "VIDEO_VIEW_100",
}

ENGAGEMENT_ASSET_TYPES: Mapping[str, AssetType] = MappingProxyType(
    {
        a.name: a
        for a in (
            _asset(
                "video_ads",
                "ENGAGEMENT",
                {"click": "CLICK", "impression": "IMPRESSION", **_VIEWS},
                _AD_LOOKBACKS,
                False,
            ),
            # choice: seed 000 lists no lookbacks for these two; the video-ad ones are used
            _asset(
                "app_profile_page",
                "ENGAGEMENT",
                {"view": "APP_PROFILE_PAGE_VIEW", "click": "APP_PROFILE_PAGE_CLICK"},
                _AD_LOOKBACKS,
                False,
            ),
            _asset(
                "instant_page",
                "ENGAGEMENT",
                {"view": "INSTANT_PAGE_VIEW", "click": "INSTANT_PAGE_CLICK"},
                _AD_LOOKBACKS,
                False,
            ),
            _asset(
                "public_videos",
                "ENGAGEMENT_ORGANIC_VIDEO",
                {
                    "video_view_2s": "VIDEO_VIEW_2S",
                    "video_view_6s": "VIDEO_VIEW_6S",
                    "video_view_100": "VIDEO_VIEW_100",
                    "engagement": "ENGAGEMENT",
                },
                _ORGANIC_LOOKBACKS,
                True,
            ),
            _asset(
                "live_videos",
                "ENGAGEMENT_LIVE_VIDEO",
                {"view": "LIVE_VIEW", "engagement": "LIVE_ENGAGEMENT"},
                _ORGANIC_LOOKBACKS,
                True,
            ),
        )
    }
)
"""Our engagement asset types by name."""

APP_AUDIENCE_TYPE = "APP"
APP_LOOKBACK_DAYS = _AD_LOOKBACKS
"""*choice*: seed 004 names a lookback window but not its values; the video-ad ones."""

APP_EVENTS: Mapping[str, str] = MappingProxyType(
    {
        name: name.upper().replace("-", "_").replace(" ", "_")
        for name in (
            "Install",
            "Launch App",
            "Login",
            "Registration",
            "Complete Tutorial",
            "Add to Cart",
            "Add to Wishlist",
            "Purchase",
            "Checkout",
            "Add Payment Info",
            "View Content",
            "Search",
            "Subscribe",
            "Achieve Level",
            "Unlock Achievement",
            "Spend Credits",
            "Rate",
            "In-App Ad Click",
            "In-App Ad Impression",
        )
    }
)
"""App events as seed 004 names them -> wire codes ("Add to Cart" -> "ADD_TO_CART")."""


def _retention_days() -> Mapping[str, Mapping[str, tuple[int, ...]]]:
    table: dict[str, dict[str, tuple[int, ...]]] = {}
    for asset in ENGAGEMENT_ASSET_TYPES.values():
        codes = table.setdefault(asset.audience_type, {})
        for code in asset.actions.values():
            codes[code] = asset.lookback_days
    table[APP_AUDIENCE_TYPE] = dict.fromkeys(APP_EVENTS.values(), APP_LOOKBACK_DAYS)
    return MappingProxyType({k: MappingProxyType(v) for k, v in table.items()})


RETENTION_DAYS = _retention_days()
"""``audience_type`` -> action or event code -> the ``retention_days`` it offers: the view
of the same facts a server checking a ``rule/create`` body needs."""

ACCOUNT_AUDIENCE_TYPES = frozenset(
    a.audience_type for a in ENGAGEMENT_ASSET_TYPES.values() if a.video_assets
)
"""Audience types whose rules name one TikTok account (``identity_id``)."""

LOOKALIKE_SIZES: Mapping[str, str] = MappingProxyType(
    {"narrow": "NARROW", "balanced": "BALANCED", "broad": "BROAD"}
)
LOOKALIKE_OS: Mapping[str, str] = MappingProxyType(
    {"all": "ALL", "android": "ANDROID", "ios": "IOS"}
)

"""Realistic native-mode input for the benchmark: Segment "Audience Entered / Exited" events.

``generate(path, n, seed)`` writes ``n`` NDJSON lines, the same bytes for the same
``(n, seed)``, streaming (one event in memory at a time). The shape is what Segment's
Engage (Personas) sends a native TikTok Audiences destination:

- ``type: "track"``, ``event`` "Audience Entered" (about 80%) or "Audience Exited";
- ``context.personas``: one of 8 ``external_audience_id`` values (``AUDIENCE_IDS``, which
  ``benchmarks/fake_server.py`` creates on the fake TikTok), the advertiser
  ``7000000000000000001`` in ``audience_settings.advertiserId``, the ``computation_key``;
- ``context.traits.email`` for every user (mixed case, about 10% with spaces around);
- ``context.traits.phone`` for about 75%: E.164 or national US, UK and German numbers in
  mixed formats, all valid for ``phonenumbers`` (national US ones need the
  ``default_phone_region: "US"`` setting the benchmark's mapping file sets);
- ``context.device.advertisingId`` (a UUID, upper or lower case) with ``context.device.type``
  ios / android for about half;
- the other fields Segment adds (ids, timestamps, library, ip, locale, properties), so a
  line is about 600 to 900 bytes.

Users come one after another, each with 1 to 3 events in distinct audiences (about two
events per user, so about ``n / 2`` users): a file never changes one user's membership of
one audience twice, as a real sync window rarely does.

``python -m benchmarks.generate N [--seed S] [--out FILE]`` writes one file by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "ADVERTISER_ID",
    "AUDIENCE_IDS",
    "AUDIENCE_KEYS",
    "DEFAULT_DATA_DIR",
    "GENERATOR_VERSION",
    "cached_events",
    "events",
    "generate",
]

GENERATOR_VERSION = 1  # part of the cache key: bump it when the output changes
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / ".data"

ADVERTISER_ID = "7000000000000000001"
# The fake TikTok numbers audiences from 1800000000000000001 on; the demo fake's legacy
# audience takes the first id, the benchmark server's 8 audiences the next ones.
AUDIENCE_KEYS = (
    "high_value_customers",
    "cart_abandoners_30d",
    "newsletter_subscribers",
    "churn_risk",
    "loyalty_gold",
    "app_installers_90d",
    "winback_180d",
    "vip_prospects",
)
AUDIENCE_IDS = tuple(str(1_800_000_000_000_000_002 + i) for i in range(len(AUDIENCE_KEYS)))
SPACE_ID = "spa_9a7Hq2LrTbW3mX6cZd1FkP"

_FIRST_NAMES = (
    "james", "mary", "robert", "patricia", "john", "jennifer", "michael", "linda", "david",
    "elizabeth", "william", "barbara", "richard", "susan", "joseph", "jessica", "thomas",
    "sarah", "carlos", "maria", "wei", "li", "yuki", "hiro", "olga", "ivan", "fatima", "omar",
    "amelie", "lukas", "sofia", "mateo", "aisha", "noah", "emma", "liam", "chloe", "arjun",
)  # fmt: skip
_LAST_NAMES = (
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez",
    "martinez", "hernandez", "lopez", "gonzalez", "wilson", "anderson", "thomas", "taylor",
    "moore", "jackson", "martin", "lee", "perez", "thompson", "white", "harris", "clark",
    "nguyen", "wang", "kim", "mueller", "schmidt", "dubois", "rossi", "novak", "okafor",
)  # fmt: skip
_DOMAINS = (
    "gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "aol.com",
    "proton.me", "example.com", "example.org", "mail.example.co.uk", "web.de", "gmx.net",
)  # fmt: skip
_US_AREA_CODES = ("212", "415", "650")
_UK_LONDON_BLOCKS = ("3", "7", "8")  # +44 20 3xxx / 7xxx / 8xxx xxxx are valid London numbers
_IOS_MODELS = ("iPhone14,5", "iPhone15,2", "iPhone15,3", "iPhone16,1", "iPad13,4")
_ANDROID_MODELS = ("Pixel 7", "Pixel 8 Pro", "SM-S911B", "SM-A546B", "M2101K6G")
_IP_OCTETS = ((11, 223), (0, 255), (0, 255), (1, 254))
_START = datetime(2026, 11, 20, 8, 0, 0, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _email(rng: random.Random, user: int) -> str:
    first = rng.choice(_FIRST_NAMES)
    last = rng.choice(_LAST_NAMES)
    local = rng.choice((f"{first}.{last}{user}", f"{first}{user}", f"{first[0]}{last}.{user}"))
    address = f"{local}@{rng.choice(_DOMAINS)}"
    style = rng.random()
    if style < 0.25:  # as typed in a form: First.Last@Gmail.com
        address = address.title()
    elif style < 0.30:
        address = address.upper()
    if rng.random() < 0.10:
        address = rng.choice((" ", "  ", "\t")) + address + rng.choice(("", " ", " \n"))
    return address


def _digits(rng: random.Random, count: int) -> str:
    return f"{rng.randrange(10**count):0{count}d}"


def _phone(rng: random.Random) -> str:
    """A valid number (per ``phonenumbers``) in one of the formats people type."""
    kind = rng.random()
    if kind < 0.70:  # US, E.164 or national
        area = rng.choice(_US_AREA_CODES)
        exchange = str(rng.randint(200, 999))
        line = _digits(rng, 4)
        return rng.choice(
            (
                f"+1{area}{exchange}{line}",
                f"+1 {area}-{exchange}-{line}",
                f"({area}) {exchange}-{line}",
                f"{area}-{exchange}-{line}",
                f"{area}.{exchange}.{line}",
                f"1 ({area}) {exchange}-{line}",
            )
        )
    if kind < 0.85:  # UK, London
        block = rng.choice(_UK_LONDON_BLOCKS) + _digits(rng, 3)
        line = _digits(rng, 4)
        return rng.choice(
            (f"+44 20 {block} {line}", f"+4420{block}{line}", f"+44 (0)20 {block} {line}")
        )
    # Germany, Berlin: 7 or 8 digit subscriber numbers
    subscriber = str(rng.randint(1, 9)) + _digits(rng, rng.choice((6, 7)))
    return rng.choice((f"+49 30 {subscriber}", f"+4930{subscriber}", f"+49 (30) {subscriber}"))


def _user(rng: random.Random, user: int) -> dict[str, Any]:
    """The traits and device of one user; the same for each of their events."""
    traits: dict[str, Any] = {"email": _email(rng, user)}
    if rng.random() < 0.75:
        traits["phone"] = _phone(rng)
    traits["first_name"] = rng.choice(_FIRST_NAMES).title()
    device: dict[str, Any] = {}
    if rng.random() < 0.50:
        ios = rng.random() < 0.55
        ad_id = _uuid(rng)
        device = {
            "advertisingId": ad_id.upper() if ios or rng.random() < 0.2 else ad_id,
            "type": "ios" if ios else "android",
            "manufacturer": "Apple" if ios else rng.choice(("Google", "Samsung", "Xiaomi")),
            "model": rng.choice(_IOS_MODELS if ios else _ANDROID_MODELS),
        }
    return {
        "user_id": f"usr_{user:08d}_{rng.getrandbits(32):08x}",
        "anonymous_id": _uuid(rng),
        "traits": traits,
        "device": device,
        "ip": ".".join(str(rng.randint(low, high)) for low, high in _IP_OCTETS),
        "locale": rng.choice(("en-US", "en-GB", "de-DE", "es-US", "fr-FR")),
    }


def _event(rng: random.Random, user: dict[str, Any], audience: int, at: datetime) -> dict[str, Any]:
    entered = rng.random() < 0.80
    key = AUDIENCE_KEYS[audience]
    sent = at + timedelta(milliseconds=rng.randint(5, 900))
    context: dict[str, Any] = {
        "personas": {
            "audience_settings": {"advertiserId": ADVERTISER_ID},
            "computation_class": "audience",
            "computation_key": key,
            "external_audience_id": AUDIENCE_IDS[audience],
            "space_id": SPACE_ID,
        },
        "traits": user["traits"],
        "ip": user["ip"],
        "locale": user["locale"],
    }
    if user["device"]:
        context["device"] = user["device"]
    return {
        "type": "track",
        "event": "Audience Entered" if entered else "Audience Exited",
        "userId": user["user_id"],
        "anonymousId": user["anonymous_id"],
        "messageId": f"personas_{_uuid(rng)}",
        "timestamp": _iso(at),
        "sentAt": _iso(sent),
        "receivedAt": _iso(sent + timedelta(milliseconds=rng.randint(1, 40))),
        "properties": {
            "audience_key": key,
            key: entered,
            "source": "engage",
        },
        "context": context,
        "channel": "server",
    }


def events(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """The ``n`` events of ``(n, seed)``, one at a time."""
    rng = random.Random(seed)
    made = 0
    user = 0
    at = _START
    while made < n:
        user += 1
        profile = _user(rng, user)
        count = min(rng.choice((1, 1, 2, 2, 2, 3, 3)), n - made)
        for audience in rng.sample(range(len(AUDIENCE_KEYS)), count):
            at += timedelta(milliseconds=rng.randint(1, 120))
            yield _event(rng, profile, audience, at)
            made += 1


def generate(path: Path | str, n: int, seed: int) -> Path:
    """Write the ``n`` events of ``seed`` to ``path`` (atomically); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            for event in events(n, seed):
                out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
                out.write("\n")
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600; it holds made-up data only
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def cached_events(n: int, seed: int, data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    """The events file of ``(n, seed)`` in ``data_dir``, generated on first use."""
    path = data_dir / f"events-v{GENERATOR_VERSION}-n{n}-seed{seed}.ndjson"
    if not path.is_file():
        generate(path, n, seed)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("n", type=int, help="number of events")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, help="file to write (default: the cache folder)")
    args = parser.parse_args(argv)
    path = generate(args.out, args.n, args.seed) if args.out else cached_events(args.n, args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The state file of a folder of audience definitions: which TikTok audience each key is.

Like Terraform's state, it sits beside the folder (``audiences/`` ->
``audiences.state.json``) and is what makes a second ``apply`` a no-op: for each
definition key the audience id TikTok gave, the fingerprint of the definition applied,
the advertisers it was shared with, and for customer files the MD5 of the file sent and
when it was last replaced (TikTok allows about one replace a day). Audiences it does not
name are never touched. It is written whole to a temporary file, then renamed over the
old one, after every step of an apply, so a killed apply loses at most the step it was in.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from destination.errors import ConfigurationError, OutputError
from destination.files import replace_file

__all__ = ["AudienceState", "Held", "changing", "state_path_for"]

VERSION = 1


@dataclass
class Held:
    """One audience the state knows."""

    audience_id: str
    type: str
    fingerprint: str
    shared_with: list[str] = field(default_factory=list)
    file_md5: str | None = None  # customer files: the file last sent
    last_replace_at: float | None = None  # customer files: the last REPLACE (epoch s)
    source_id: str | None = None  # lookalikes: the source audience it was made from
    # audiences this key was before it was made again, not deleted yet (the apply that
    # made it again stopped, or TikTok refused the delete): the next apply deletes them
    replaced: list[str] = field(default_factory=list)


@dataclass
class AudienceState:
    """The state of one folder, for one advertiser."""

    path: Path
    advertiser_id: str
    audiences: dict[str, Held] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, advertiser_id: str) -> AudienceState:
        """The state at ``path`` (an empty one if there is none yet); one written for
        another advertiser is refused: its ids mean nothing to this one."""
        try:
            document = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return cls(path, advertiser_id)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"cannot read the audience state {path}: {exc}") from None
        if not isinstance(document, dict) or document.get("version") != VERSION:
            raise ConfigurationError(
                f"{path} is not an audience state this version writes (version {VERSION})"
            )
        if document.get("advertiser_id") != advertiser_id:
            raise ConfigurationError(
                f"{path} records the audiences of advertiser {document.get('advertiser_id')}, "
                f"not {advertiser_id}: give that advertiser, or another folder"
            )
        try:
            audiences = {
                str(key): Held(**_fields(value)) for key, value in document["audiences"].items()
            }
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigurationError(
                f"{path} is damaged ({type(exc).__name__}: {exc}): restore it from version "
                "control, or re-adopt each audience with `audiences import`"
            ) from None
        return cls(path, advertiser_id, audiences)

    def save(self) -> None:
        """Write the whole state atomically (a temporary file renamed over the old one)."""
        document: dict[str, Any] = {
            "version": VERSION,
            "advertiser_id": self.advertiser_id,
            "audiences": {key: asdict(held) for key, held in sorted(self.audiences.items())},
        }
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        try:
            replace_file(self.path, text)
        except OSError as exc:
            raise OutputError(f"cannot write the audience state {self.path}: {exc}") from None


def _fields(value: Any) -> dict[str, Any]:
    known = Held.__dataclass_fields__
    return {k: v for k, v in value.items() if k in known} if isinstance(value, dict) else {}


def state_path_for(directory: Path) -> Path:
    """Beside the folder: ``defs/`` -> ``defs.state.json``."""
    resolved = directory.resolve()
    return resolved.parent / f"{resolved.name}.state.json"


@contextlib.contextmanager
def changing(path: Path) -> Iterator[None]:
    """Hold the state at ``path`` for a command that changes it (``apply``, ``import``):
    a lock file beside it (``flock``), so that two applies of one folder never interleave
    their steps; refused at once when another holds it."""
    lock = path.with_name(path.name + ".lock")
    try:
        handle = lock.open("a+")
    except OSError as exc:
        raise OutputError(f"cannot lock the audience state {path}: {exc.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError(
                f"the audience state {path} is in use by another apply or import; wait for it"
            ) from None
        yield

"""What the agent has accepted in a room and not yet finished saying, kept where LiveKit keeps
it: in the agent participant's ``hive-tts.pending`` attribute.

When a worker dies, its participant's last attributes reach the control API (in LiveKit's
``participant_left`` webhook, or from the room while the dead participant lingers). The control
API then replays what it sent itself from the piece that was playing, and hands the rest to the
replacement agent in its dispatch metadata (``lost``), which reports each to its sender as an
``error`` event. Nothing accepted is dropped in silence.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

PENDING_ATTRIBUTE = "hive-tts.pending"
LOST_KEY = "lost"
"""Dispatch metadata key: entries the previous agent accepted and could not finish."""
REPLACES_KEY = "replaces"
"""Dispatch metadata key: the identity of the agent a replacement takes over from (which may
still linger in the room until LiveKit times it out)."""
MAX_ENTRIES = 64
"""Entries kept in the attribute (a room's queue limit is far below this)."""


@dataclass(frozen=True)
class PendingSpeech:
    """One accepted utterance: who hears about it, and how much of its text was spoken.

    ``spoken`` counts the characters of the pieces that had finished playing (a replay starts
    at the piece that was playing, so no word is lost)."""

    id: str
    to: str | None
    spoken: int = 0


def encode(entries: Iterable[PendingSpeech]) -> str:
    return json.dumps([asdict(e) for e in list(entries)[:MAX_ENTRIES]], separators=(",", ":"))


def decode(value: object) -> list[PendingSpeech]:
    """Entries from an attribute value or a parsed list; anything malformed is skipped."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else []
        except ValueError:
            return []
    if not isinstance(value, list):
        return []
    entries: list[PendingSpeech] = []
    for item in value[:MAX_ENTRIES]:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        to = item.get("to")
        spoken = item.get("spoken", 0)
        entries.append(
            PendingSpeech(
                id=item["id"],
                to=to if isinstance(to, str) and to else None,
                spoken=spoken if isinstance(spoken, int) and spoken >= 0 else 0,
            )
        )
    return entries


def pending_of(attributes: Mapping[str, str]) -> list[PendingSpeech]:
    return decode(attributes.get(PENDING_ATTRIBUTE, ""))


def _document(metadata: str) -> dict[str, object]:
    try:
        document = json.loads(metadata) if metadata else {}
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def lost_in(metadata: str) -> list[PendingSpeech]:
    """The ``lost`` entries of a dispatch's metadata (JSON object; anything else: none)."""
    return decode(_document(metadata).get(LOST_KEY))


def replaced_in(metadata: str) -> str | None:
    value = _document(metadata).get(REPLACES_KEY)
    return value if isinstance(value, str) and value else None


def with_handover(metadata: str, lost: Iterable[PendingSpeech], replaces: str | None) -> str:
    """``metadata`` (a JSON object, or empty) with ``lost`` and ``replaces`` set; other keys
    (the room's speak policy) are kept."""
    document = _document(metadata)
    document[LOST_KEY] = [asdict(e) for e in lost]
    document[REPLACES_KEY] = replaces
    return json.dumps(document, separators=(",", ":"))


def without_handover(metadata: str) -> str:
    """``metadata`` less ``lost`` and ``replaces`` (what a room keeps for every later agent)."""
    document = _document(metadata)
    if not document:
        return metadata if not metadata.lstrip().startswith("{") else ""
    document.pop(LOST_KEY, None)
    document.pop(REPLACES_KEY, None)
    return json.dumps(document, separators=(",", ":")) if document else ""


def unspoken_text(text: str, spoken: int) -> str:
    """The part of ``text`` after ``spoken`` characters, started at a word boundary at or
    before that point (pieces are whole words, so this repeats nothing but that boundary)."""
    if spoken <= 0:
        return text
    if spoken >= len(text):
        return ""
    cut = spoken
    while cut > 0 and not text[cut - 1].isspace():
        cut -= 1
    return text[cut:].lstrip()

"""Who may make the agent speak in a room.

The worker's config sets the default; a room narrows it through its metadata (set by whoever
created the room with an admin key) or the dispatch's metadata::

    {"hive_tts": {"allowed_identities": ["translator-1"],
                  "required_attributes": {"tts.speaker": "true"}}}

``required_attributes`` is how token grants restrict speakers: the token issuer puts the
attribute in the participant's token. Packets sent through the server API (no participant)
always pass: they took an admin key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from engines.config import SpeakPermission

logger = logging.getLogger(__name__)

METADATA_KEY = "hive_tts"


@dataclass(frozen=True)
class SpeakPolicy:
    allowed_identities: frozenset[str] = frozenset()
    required_attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, permission: SpeakPermission) -> SpeakPolicy:
        return cls(frozenset(permission.allowed_identities), dict(permission.required_attributes))

    def narrowed_by(self, metadata: str) -> SpeakPolicy:
        """This policy with a room's or dispatch's ``hive_tts`` metadata applied on top."""
        section = _section(metadata)
        if not section:
            return self
        identities = section.get("allowed_identities")
        allowed = self.allowed_identities
        if isinstance(identities, list) and all(isinstance(i, str) for i in identities):
            allowed = frozenset(identities) & allowed if allowed else frozenset(identities)
        attributes = dict(self.required_attributes)
        extra = section.get("required_attributes")
        if isinstance(extra, dict):
            attributes.update({str(k): str(v) for k, v in extra.items()})
        return SpeakPolicy(allowed, attributes)

    def refusal(self, identity: str | None, attributes: Mapping[str, str]) -> str | None:
        """Why ``identity`` may not speak here, or ``None`` when it may."""
        if identity is None:
            return None
        if self.allowed_identities and identity not in self.allowed_identities:
            return f"participant {identity!r} is not allowed to make the agent speak in this room"
        for key, value in self.required_attributes.items():
            if attributes.get(key) != value:
                return (
                    f"participant {identity!r} lacks the attribute {key}={value!r} "
                    "needed to make the agent speak in this room"
                )
        return None


def _section(metadata: str) -> dict[str, object] | None:
    if not metadata:
        return None
    try:
        value = json.loads(metadata)
    except ValueError:
        return None
    section = value.get(METADATA_KEY) if isinstance(value, dict) else None
    return section if isinstance(section, dict) else None

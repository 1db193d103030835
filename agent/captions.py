"""Captions: the spoken text on ``lk.transcription``, a piece at a time as its audio starts."""

from __future__ import annotations

import logging

from livekit import rtc
from livekit.agents.types import (
    ATTRIBUTE_TRANSCRIPTION_FINAL,
    ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID,
    ATTRIBUTE_TRANSCRIPTION_TRACK_ID,
)

from agent.speak_request import TOPIC_TRANSCRIPTION

logger = logging.getLogger(__name__)


class CaptionSegment:
    """One utterance's caption: a text stream whose header says ``final: false``, one write
    per piece as that piece starts playing, closed with ``final: true``.

    The attributes are LiveKit's (``lk.segment_id``, ``lk.transcribed_track_id``,
    ``lk.transcription_final``), so LiveKit's own front ends show it as the agent's speech."""

    def __init__(self, room: rtc.Room, segment_id: str, track_sid: str) -> None:
        self._room = room
        self._segment_id = segment_id
        self._track_sid = track_sid
        self._writer: rtc.TextStreamWriter | None = None
        self._written = False
        self._failed = False

    def _attributes(self, final: bool) -> dict[str, str]:
        return {
            ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID: self._segment_id,
            ATTRIBUTE_TRANSCRIPTION_TRACK_ID: self._track_sid,
            ATTRIBUTE_TRANSCRIPTION_FINAL: "true" if final else "false",
        }

    async def write(self, text: str) -> None:
        if not text or self._failed:
            return
        try:
            if self._writer is None:
                self._writer = await self._room.local_participant.stream_text(
                    topic=TOPIC_TRANSCRIPTION, attributes=self._attributes(final=False)
                )
            await self._writer.write((" " if self._written else "") + text)
            self._written = True
        except Exception as exc:  # captions never stop the audio
            self._failed = True
            logger.warning("caption for %s not sent: %s", self._segment_id, exc)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            await writer.aclose(attributes=self._attributes(final=True))
        except Exception as exc:
            logger.warning("caption for %s not closed: %s", self._segment_id, exc)

"""Captions: the spoken text on ``lk.transcription``, each word as it starts being heard."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from livekit import rtc
from livekit.agents import utils
from livekit.agents.types import (
    ATTRIBUTE_TRANSCRIPTION_FINAL,
    ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID,
    ATTRIBUTE_TRANSCRIPTION_TRACK_ID,
    TimedString,
)

from agent.speak_request import TOPIC_TRANSCRIPTION
from engines.word_timings import WordTiming

logger = logging.getLogger(__name__)


class CaptionSegment:
    """One utterance's caption: a text stream whose header says ``final: false``, one write
    per piece as that piece starts playing, closed with ``final: true``.

    The attributes are LiveKit's (``lk.segment_id``, ``lk.transcribed_track_id``,
    ``lk.transcription_final``), so LiveKit's own front ends show it as the agent's speech."""

    def __init__(
        self, room: rtc.Room, segment_id: str, track_sid: str, *, timed_json: bool = False
    ) -> None:
        self._room = room
        self._segment_id = segment_id
        self._track_sid = track_sid
        self._timed_json = timed_json
        self._writer: rtc.TextStreamWriter | None = None
        self._written = False
        self._last_char = ""
        self._failed = False

    def _attributes(self, final: bool) -> dict[str, str]:
        return {
            ATTRIBUTE_TRANSCRIPTION_SEGMENT_ID: self._segment_id,
            ATTRIBUTE_TRANSCRIPTION_TRACK_ID: self._track_sid,
            ATTRIBUTE_TRANSCRIPTION_FINAL: "true" if final else "false",
        }

    async def write(self, text: str | TimedString) -> None:
        """Write ``text`` (a word or more) now, after a space unless both sides are Japanese;
        as a JSON ``TimedString`` line with its times in ``timed_json`` mode."""
        if not text or self._failed:
            return
        spaced = self._written and not (_unspaced(self._last_char) and _unspaced(text[0]))
        payload = (" " if spaced else "") + text
        if self._timed_json:
            payload = encode_timed(payload, *_times(text))
        try:
            if self._writer is None:
                self._writer = await self._room.local_participant.stream_text(
                    topic=TOPIC_TRANSCRIPTION, attributes=self._attributes(final=False)
                )
            await self._writer.write(payload)
            self._written = True
            self._last_char = text[-1]
        except Exception as exc:  # captions never stop the audio
            self._failed = True
            logger.warning("caption for %s not sent: %s", self._segment_id, exc)

    async def write_word(self, word: WordTiming, playback_started: float) -> None:
        """Write ``word`` when it starts being heard: ``word.start_s`` after the utterance's
        audio began to play (``playback_started``, ``time.perf_counter``)."""
        delay = playback_started + word.start_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.write(TimedString(word.word, start_time=word.start_s, end_time=word.end_s))

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            await writer.aclose(attributes=self._attributes(final=True))
        except Exception as exc:
            logger.warning("caption for %s not closed: %s", self._segment_id, exc)


def _unspaced(char: str) -> bool:
    """Japanese and Chinese text has no spaces between words."""
    return bool(char) and (0x3000 <= ord(char) <= 0x9FFF or 0xFF00 <= ord(char) <= 0xFFEF)


def _times(text: str) -> tuple[float | None, float | None]:
    if isinstance(text, TimedString):
        start = text.start_time if utils.is_given(text.start_time) else None
        end = text.end_time if utils.is_given(text.end_time) else None
        return start, end
    return None, None


def encode_timed(text: str, start_s: float | None, end_s: float | None) -> str:
    """One caption line as livekit-agents' JSON transcript format writes a ``TimedString``:
    ``{"text", "start_time", "end_time"}`` (seconds from the utterance's first audio) and a
    newline, for front ends that highlight words as they are spoken."""
    body: dict[str, object] = {"text": text}
    if start_s is not None:
        body["start_time"] = round(start_s, 3)
    if end_s is not None:
        body["end_time"] = round(end_s, 3)
    return json.dumps(body, ensure_ascii=False) + "\n"

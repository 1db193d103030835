"""Events on ``tts.events``, sent to whoever asked for the speech."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from livekit import rtc

from agent.speak_request import TOPIC_EVENTS
from api.redaction import public_dumps

logger = logging.getLogger(__name__)


class EventType(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    FINISHED = "finished"
    ERROR = "error"


class EventSender:
    """Publishes one JSON object per event, reliably, to the requester only.

    A packet from the server API names no sender; its events go to ``reply_to`` when the packet
    named one, else to everyone in the room."""

    def __init__(self, room: rtc.Room) -> None:
        self._room = room

    async def send(
        self, event: EventType, request_id: str | None, reply_to: str | None, **fields: Any
    ) -> None:
        if not reply_to:  # text the server sent with no one to answer: nobody else hears of it
            logger.debug("event %s for %s has no one to go to", event.value, request_id)
            return
        body = {"type": event.value, "id": request_id, **fields}
        try:
            await self._room.local_participant.publish_data(
                public_dumps(body),
                reliable=True,
                topic=TOPIC_EVENTS,
                destination_identities=[reply_to],
            )
        except Exception as exc:  # the requester left, or the room is closing
            logger.info("event %s for %s not delivered: %s", event.value, request_id, exc)

    async def error(
        self,
        request_id: str | None,
        reply_to: str | None,
        code: str,
        message: str,
        retry_after_s: int | None = None,
    ) -> None:
        extra = {} if retry_after_s is None else {"retry_after_s": retry_after_s}
        await self.send(EventType.ERROR, request_id, reply_to, code=code, message=message, **extra)

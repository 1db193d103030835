"""``tts.speak`` messages (data packets and text-stream attributes) -> :class:`SpeakRequest`."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from api.errors import RetryLaterError
from api.request_parsing import (
    BadJsonError,
    flag_option,
    number_option,
    optional_str,
    parse_json_object,
)
from engines.errors import InvalidOptionError, RequestError
from engines.synthesizer import SynthesisRequest
from engines.voice_reference import decode_voice_reference

TOPIC_SPEAK = "tts.speak"
TOPIC_EVENTS = "tts.events"
TOPIC_TRANSCRIPTION = "lk.transcription"
AGENT_ATTRIBUTE = "hive-tts.agent"
"""Participant attribute marking the agent in a room."""
WORKER_ATTRIBUTE = "hive-tts.worker"
"""The LiveKit worker id serving this agent (a supervisor releases a crashed worker's rooms)."""
READY_ATTRIBUTE = "hive-tts.ready"
"""Set once the agent listens on ``tts.speak`` (text sent before would be lost)."""
SPEAK_ATTRIBUTE = "tts.speak"
"""A participant attribute the agent speaks when it appears or changes: a ``tts.speak`` JSON
object, or plain text (for tools that can only set attributes, such as
``lk perf agent-load-test --attribute tts.speak=...``)."""
TRACK_ATTRIBUTE_PREFIX = "tts.track."
"""Participant attribute per track: ``tts.track.tts-fr`` = ``{"language", "voice_id", ...}``."""

MAX_ID_CHARS = 128


class SpeakMode(StrEnum):
    QUEUE = "queue"
    INTERRUPT = "interrupt"


class NotAllowedError(RequestError):
    code = "not_allowed"
    http_status = 403


class SenderUnknownError(RetryLaterError):
    """A packet reached the agent before the rtc SDK reported its sender's join (it then names
    no sender) in a room that limits who may speak: whether this sender may is not known yet."""

    code = "sender_unknown"
    http_status = 409


class QueueFullError(RequestError):
    code = "queue_full"
    http_status = 429


class TooManyTracksError(RequestError):
    code = "too_many_tracks"
    http_status = 429


class DrainingError(RequestError):
    code = "draining"
    http_status = 503


SERVER_AUTH_KEY = "server_auth"
_KEYS = frozenset(
    {
        "id",
        "text",
        "language",
        "voice_id",
        "engine",
        "quality",
        "strategy",
        "speed",
        "mode",
        "reply_to",
        "voice_clone_reference",
        "normalize",
        SERVER_AUTH_KEY,
    }
)


def server_signature(secret: str, room: str, request_id: str) -> str:
    """What the control API signs its packets with (the LiveKit API secret it shares with the
    workers): the rtc SDK reports a packet from a participant it has not seen join yet with no
    sender, like the server's, so "no sender" alone proves nothing."""
    message = f"{room}\n{request_id}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def is_server_packet(payload: bytes, secret: str, room: str) -> bool:
    """Whether ``payload`` carries the server's signature for ``room`` (never without a
    secret)."""
    if not secret:
        return False
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    if not isinstance(body, dict):
        return False
    signature, request_id = body.get(SERVER_AUTH_KEY), body.get("id")
    if not isinstance(signature, str) or not isinstance(request_id, str | int):
        return False
    return hmac.compare_digest(signature, server_signature(secret, room, str(request_id)))


@dataclass(frozen=True)
class SpeakRequest:
    id: str
    synthesis: SynthesisRequest
    mode: SpeakMode
    reply_to: str | None
    """Identity the events go to (the sender; a server-sent packet may name one)."""
    voice_clone_reference: str | None = None
    """Base64 recording to clone; decoded off the event loop by ``with_voice_reference``."""


async def with_voice_reference(request: SpeakRequest) -> SpeakRequest:
    """``request`` with its clone reference decoded into the synthesis request."""
    if request.voice_clone_reference is None:
        return request
    reference = await asyncio.to_thread(decode_voice_reference, request.voice_clone_reference)
    synthesis = dataclasses.replace(request.synthesis, voice_reference=reference)
    return dataclasses.replace(request, synthesis=synthesis)


def new_request_id() -> str:
    return f"tts_{uuid.uuid4().hex[:12]}"


def parse_speak_packet(payload: bytes, *, sender: str | None, max_bytes: int) -> SpeakRequest:
    """A ``tts.speak`` data packet; raises a ``RequestError`` naming what was wrong."""
    if len(payload) > max_bytes:
        raise BadJsonError(f"packet of {len(payload)} bytes is over the {max_bytes} byte limit")
    try:
        raw = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BadJsonError("packet is not UTF-8 text (binary data on tts.speak)") from None
    return speak_request(parse_json_object(raw), sender=sender, require_text=True)


def parse_speak_attribute(value: str, *, sender: str, max_bytes: int) -> SpeakRequest:
    """The ``tts.speak`` participant attribute: a JSON request object, or plain text."""
    if value.lstrip().startswith("{"):
        return parse_speak_packet(value.encode(), sender=sender, max_bytes=max_bytes)
    size = len(value.encode())
    if size > max_bytes:
        raise BadJsonError(f"attribute of {size} bytes is over the {max_bytes} byte limit")
    return speak_request({"text": value}, sender=sender, require_text=True)


def parse_stream_attributes(attributes: Mapping[str, str], *, sender: str) -> SpeakRequest:
    """The options of a ``tts.speak`` text stream, carried in its attributes (text follows)."""
    body: dict[str, Any] = dict(attributes)
    if "speed" in body:
        try:
            body["speed"] = float(body["speed"])
        except ValueError:
            raise InvalidOptionError("'speed' attribute must be a number") from None
    body.pop("lk.segment_id", None)
    return speak_request(body, sender=sender, require_text=False)


def speak_request(
    body: Mapping[str, Any], *, sender: str | None, require_text: bool
) -> SpeakRequest:
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise InvalidOptionError(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KEYS))}"
        )
    reference = body.get("voice_clone_reference")
    if reference is not None and (not isinstance(reference, str) or not reference):
        raise InvalidOptionError(
            "'voice_clone_reference' must be a base64 string of a WAV, MP3 or OGG recording"
        )
    text = body.get("text", None if require_text else "")
    if not isinstance(text, str):
        raise InvalidOptionError("'text' is required and must be a string")
    request_id = body.get("id")
    if request_id is None:
        request_id = new_request_id()
    elif isinstance(request_id, bool) or not isinstance(request_id, str | int):
        raise InvalidOptionError("'id' must be a string or an integer")
    request_id = str(request_id)
    if not 0 < len(request_id) <= MAX_ID_CHARS:
        raise InvalidOptionError(f"'id' must have 1..{MAX_ID_CHARS} characters")
    mode_value = body.get("mode", SpeakMode.QUEUE.value)
    try:
        mode = SpeakMode(mode_value)
    except ValueError:
        raise InvalidOptionError(
            f"'mode' {mode_value!r} is not one of {', '.join(m.value for m in SpeakMode)}"
        ) from None
    reply_to = optional_str(body, "reply_to") if sender is None else sender
    return SpeakRequest(
        id=request_id,
        synthesis=SynthesisRequest(
            text=text,
            voice_id=optional_str(body, "voice_id"),
            language=optional_str(body, "language"),
            engine=optional_str(body, "engine"),
            quality=optional_str(body, "quality"),
            strategy=optional_str(body, "strategy"),
            speed=number_option(body, "speed", 1.0),
            normalize=flag_option(body, "normalize", True),
        ),
        mode=mode,
        reply_to=reply_to,
        voice_clone_reference=reference,
    )

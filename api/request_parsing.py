"""JSON bodies and WebSocket messages -> ``SynthesisRequest``, with errors naming the key."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engines.audio import LIVEKIT_SAMPLE_RATE
from engines.errors import InvalidOptionError, RequestError
from engines.synthesizer import SynthesisRequest
from engines.voice_reference import decode_voice_reference

from .encoders import AudioFormat


class BadJsonError(RequestError):
    code = "bad_json"


_REQUEST_KEYS = {
    "text",
    "voice_id",
    "language",
    "engine",
    "quality",
    "strategy",
    "speed",
    "sample_rate",
    "stream",
    "request_id",
    "format",
    "enhance_audio",
    "voice_clone_reference",
    "normalize",
    "timings",
    "captions",
    "type",
}
CAPTION_FORMATS = ("srt", "vtt")


@dataclass(frozen=True)
class ParsedRequest:
    synthesis: SynthesisRequest
    request_id: str | None
    audio_format: AudioFormat
    stream: bool
    enhance_audio: bool
    voice_clone_reference: str | None = None
    """Base64 recording to clone, decoded by ``with_voice_reference`` (off the event loop)."""
    timings: bool = False
    """Word timings wanted: ``words`` messages on the WebSocket, ``timings`` in a reply."""
    captions: str | None = None
    """A caption file of the reply wanted: ``srt`` or ``vtt`` (implies ``timings``)."""


def parse_json_object(raw: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BadJsonError("JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, integers past Python's digit limit
        raise BadJsonError(f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadJsonError(f"expected a JSON object, got {type(value).__name__}")
    return value


def optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidOptionError(f"'{key}' must be a string, got {type(value).__name__}")
    return value


def number_option(body: Mapping[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOptionError(f"'{key}' must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidOptionError(f"'{key}' is out of range") from None
    if not math.isfinite(number):
        raise InvalidOptionError(f"'{key}' must be a finite number")
    return number


def flag_option(body: Mapping[str, Any], key: str, default: bool) -> bool:
    """A boolean option; "true"/"false"/"1"/"0" strings too (attributes carry only text)."""
    value = body.get(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise InvalidOptionError(f"'{key}' must be true or false")
    return value


def audio_format(value: object, default: AudioFormat) -> AudioFormat:
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidOptionError(f"format must be a string, got {type(value).__name__}")
    aliases = {"pcm16": AudioFormat.PCM, "pcm_s16le": AudioFormat.PCM}
    if value in aliases:
        return aliases[value]
    try:
        return AudioFormat(value)
    except ValueError:
        allowed = ", ".join(["pcm16", *(f.value for f in AudioFormat)])
        raise InvalidOptionError(f"format {value!r} is not one of {allowed}") from None


def parse_synthesis(
    body: Mapping[str, Any],
    *,
    require_text: bool = True,
    default_format: AudioFormat = AudioFormat.PCM,
) -> ParsedRequest:
    """Validate the seed's request object (``text``, ``voice_id``, ``language``, ``engine``...)."""
    unknown = sorted(set(body) - _REQUEST_KEYS)
    if unknown:
        raise InvalidOptionError(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_REQUEST_KEYS))}"
        )
    text = body.get("text", "" if not require_text else None)
    if not isinstance(text, str):
        raise InvalidOptionError("'text' is required and must be a string")
    reference = body.get("voice_clone_reference")
    if reference is not None and (not isinstance(reference, str) or not reference):
        raise InvalidOptionError(
            "'voice_clone_reference' must be a base64 string of a WAV, MP3 or OGG recording"
        )
    sample_rate = body.get("sample_rate", LIVEKIT_SAMPLE_RATE)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
        raise InvalidOptionError("'sample_rate' must be an integer number of Hz")
    request_id = body.get("request_id")
    if request_id is not None and not isinstance(request_id, str | int):
        raise InvalidOptionError("'request_id' must be a string or an integer")
    captions = optional_str(body, "captions")
    if captions is not None and captions not in CAPTION_FORMATS:
        raise InvalidOptionError(
            f"'captions' must be one of {', '.join(CAPTION_FORMATS)}, got {captions!r}"
        )
    return ParsedRequest(
        synthesis=SynthesisRequest(
            text=text,
            voice_id=optional_str(body, "voice_id"),
            language=optional_str(body, "language"),
            engine=optional_str(body, "engine"),
            quality=optional_str(body, "quality"),
            strategy=optional_str(body, "strategy"),
            speed=number_option(body, "speed", 1.0),
            sample_rate=sample_rate,
            normalize=flag_option(body, "normalize", True),
        ),
        request_id=None if request_id is None else str(request_id),
        audio_format=audio_format(optional_str(body, "format"), default_format),
        stream=flag_option(body, "stream", True),
        enhance_audio=flag_option(body, "enhance_audio", False),
        voice_clone_reference=reference,
        timings=flag_option(body, "timings", False) or captions is not None,
        captions=captions,
    )


async def with_voice_reference(parsed: ParsedRequest) -> ParsedRequest:
    """``parsed`` with its clone reference decoded into the synthesis request (a thread: it
    decodes up to 30 s of compressed audio); a bad recording raises its typed error."""
    if parsed.voice_clone_reference is None:
        return parsed
    reference = await asyncio.to_thread(decode_voice_reference, parsed.voice_clone_reference)
    synthesis = dataclasses.replace(parsed.synthesis, voice_reference=reference)
    return dataclasses.replace(parsed, synthesis=synthesis)

"""The control API's routes: the design's WebSocket streaming protocol, HTTP synthesis, an
OpenAI-compatible speech endpoint, voices, health, Prometheus metrics and admin routes.

``control_api.create_app`` adds ``routes`` to the application it builds."""

from __future__ import annotations

import asyncio
import base64
import ctypes
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import psutil
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engines.audio import AudioChunk
from engines.errors import HiveTTSError, InvalidOptionError, UnknownLanguageError
from engines.names import primary_language
from engines.synthesizer import SynthesisRequest
from engines.voice_listing import voice_listing
from engines.word_timings import to_srt, to_vtt, word_timings

from .auth import ANONYMOUS, KEY_OF_REQUEST, is_admin
from .encoders import AudioFormat, content_type, create_encoder, encode_whole
from .enhancement import enhance
from .errors import json_error
from .openai_voices import OPENAI_MODELS, OPENAI_VOICES, looks_japanese
from .openapi import openapi_spec
from .rate_limit import caller_of
from .redaction import public_dumps, scrubbed_dict
from .request_parsing import (
    audio_format,
    number_option,
    parse_json_object,
    parse_synthesis,
    with_voice_reference,
)
from .rooms import ROOMS_KEY
from .services import SERVICES, ApiServices, encode_chunk, finish_encoding
from .ws_session import WebSocketSession

logger = logging.getLogger(__name__)

MEMORY_WARN_PERCENT = 90.0
QUEUE_WARN_PER_WORKER = 4
SESSIONS_WARN_SHARE = 0.9
WS_HEARTBEAT_S = 20.0
WS_FRAME_SLACK_BYTES = 65_536
"""aiohttp reads no frame longer than the per-message limit plus this, and closes the socket on
one (1009, message too big): memory per connection stays bounded. A message just over the
limit gets an error message and the connection stays open."""

routes = web.RouteTableDef()


def _services(request: web.Request) -> ApiServices:
    return request.app[SERVICES]


def _key(request: web.Request) -> str | None:
    """The caller's API key; None without authentication (no per-key limit applies then)."""
    key = request.get(KEY_OF_REQUEST, ANONYMOUS)
    return None if key == ANONYMOUS else key


async def _json_body(request: web.Request) -> dict[str, Any]:
    return parse_json_object(await request.read())


@routes.get("/ws/synthesize")
async def ws_synthesize(request: web.Request) -> web.StreamResponse:
    services = _services(request)
    with services.limiter.slot(_key(request)):
        ws = web.WebSocketResponse(
            heartbeat=WS_HEARTBEAT_S,
            max_msg_size=services.settings.max_ws_message_bytes + WS_FRAME_SLACK_BYTES,
        )
        await ws.prepare(request)
        await WebSocketSession(ws, services, caller_of(request)).run()
        return ws


CAPTION_TYPES = {"srt": "application/x-subrip", "vtt": "text/vtt"}
"""What ``Accept`` asks for a caption file itself instead of the JSON reply."""


@routes.post("/synthesize")
async def synthesize(request: web.Request) -> web.StreamResponse:
    """The design's HTTP synthesis: JSON in, base64 WAV out (or WAV bytes for audio/wav)."""
    services = _services(request)
    body = await _json_body(request)
    for key in ("enhance_audio", "timings", "captions"):
        if key in request.query:
            body[key] = request.query[key]
    parsed = parse_synthesis(body, default_format=AudioFormat.WAV)
    services.count_request(caller_of(request))
    with services.limiter.slot(_key(request)):  # before a cloning reference is decoded
        parsed = await with_voice_reference(parsed)
        utterance = services.admit(services.synthesizer.synthesize(parsed.synthesis))
        chunks = [chunk async for chunk in services.stream(utterance)]
    audio = AudioChunk.join([chunk.pcm for chunk in chunks], parsed.synthesis.sample_rate)
    words = await asyncio.to_thread(word_timings, chunks) if parsed.timings else None
    del chunks
    captions: str | None = None
    if parsed.captions is not None and words is not None:
        captions = to_srt(words) if parsed.captions == "srt" else to_vtt(words)
        if CAPTION_TYPES[parsed.captions] in request.headers.get("Accept", ""):
            return web.Response(
                text=captions, content_type=CAPTION_TYPES[parsed.captions], charset="utf-8"
            )
    enhancement: dict[str, Any] | None = None
    if parsed.enhance_audio:
        enhanced, report = await asyncio.to_thread(enhance, audio.pcm, audio.sample_rate)
        audio = AudioChunk(enhanced, audio.sample_rate)
        enhancement = report.to_dict()
    result = utterance.result
    data = await asyncio.to_thread(encode_whole, parsed.audio_format, audio.pcm, audio.sample_rate)
    headers = {
        "X-Engine": result.engine or "",
        "X-Voice-Id": result.voice_id,
        "X-TTFA-Ms": f"{result.ttfa_ms or 0:.1f}",
    }
    if "audio/" in request.headers.get("Accept", "") and "json" not in request.headers.get(
        "Accept", ""
    ):
        headers["Content-Type"] = content_type(parsed.audio_format, audio.sample_rate)
        return web.Response(body=data, headers=headers)
    reply: dict[str, Any] = {
        "audio_data": base64.b64encode(data).decode("ascii"),
        "format": parsed.audio_format.value,
        "sample_rate": audio.sample_rate,
        "duration_s": round(audio.duration_s, 3),
        **scrubbed_dict(result.to_dict()),
    }
    if enhancement is not None:
        reply["enhancement"] = enhancement
    if words is not None:
        reply["timings"] = [word.to_dict() for word in words]
    if captions is not None:
        reply["captions"] = captions
    return web.json_response(reply, headers=headers)


@routes.post("/v1/audio/speech")
async def openai_speech(request: web.Request) -> web.StreamResponse:
    """OpenAI-compatible speech: the body streams out as it is synthesized."""
    services = _services(request)
    body = await _json_body(request)
    text = body.get("input")
    if not isinstance(text, str):
        raise InvalidOptionError("'input' is required and must be a string")
    voice = body.get("voice", "alloy")
    if not isinstance(voice, str):
        raise InvalidOptionError("'voice' must be a string")
    model = body.get("model", "tts-1")
    if not isinstance(model, str):
        raise InvalidOptionError("'model' must be a string such as tts-1")
    quality = OPENAI_MODELS.get(model)
    if not isinstance(body.get("instructions", ""), str):
        raise InvalidOptionError("'instructions' must be a string")  # accepted, not steered by
    speed = number_option(body, "speed", 1.0)
    fmt = audio_format(body.get("response_format", "mp3"), AudioFormat.MP3)
    voice_id: str | None = voice
    language: str | None = None
    if voice in OPENAI_VOICES:
        voice_id = None if looks_japanese(text) else OPENAI_VOICES[voice]
        language = "ja" if voice_id is None else None
    synthesis = SynthesisRequest(
        text=text,
        voice_id=voice_id,
        language=language,
        quality=quality,
        speed=speed,
        sample_rate=24_000,
    )
    services.count_request(caller_of(request))
    with services.limiter.slot(_key(request)):
        utterance = services.admit(services.synthesizer.synthesize(synthesis))
        encoder = create_encoder(fmt, synthesis.sample_rate)
        response = web.StreamResponse(
            headers={
                "Content-Type": content_type(fmt, encoder.sample_rate),
                "X-Voice-Id": utterance.result.voice_id,
            }
        )
        chunks = services.stream(utterance)
        first = await _first_chunk(chunks)  # errors before any byte still become JSON
        await response.prepare(request)
        try:
            if first is not None:
                await response.write(await encode_chunk(encoder, fmt, first.pcm))
                async for chunk in chunks:
                    payload = await encode_chunk(encoder, fmt, chunk.pcm)
                    if payload:
                        await response.write(payload)  # waits while the client is slow
            await response.write(await finish_encoding(encoder, fmt))
        except HiveTTSError as exc:  # headers are out: end the body early, say why in the log
            logger.warning("speech stream ended early: %s", exc.message)
        await response.write_eof()
        return response


async def _first_chunk(chunks: AsyncIterator[AudioChunk]) -> AudioChunk | None:
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return None


@routes.get("/voices")
async def voices(request: web.Request) -> web.Response:
    return web.json_response(voice_listing(_services(request).synthesizer), dumps=public_dumps)


@routes.get("/voices/{language}")
async def voices_for_language(request: web.Request) -> web.Response:
    synthesizer = _services(request).synthesizer
    language = request.match_info["language"]
    listing = voice_listing(synthesizer, language)
    if not listing["voices"]:
        known = synthesizer.catalog.languages()
        if primary_language(language) not in synthesizer.router.known_languages():
            raise UnknownLanguageError(language, known)
        listing["note"] = (
            f"no library voice for {language!r}; requests in it are spoken by espeak-ng"
        )
    return web.json_response(listing, dumps=public_dumps)


def _memory() -> dict[str, float | int]:
    process = psutil.Process()
    return {
        "rss_bytes": process.memory_info().rss,
        "percent": round(process.memory_percent(), 2),
        "system_available_bytes": psutil.virtual_memory().available,
    }


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    services = _services(request)
    synthesizer = services.synthesizer
    engines = synthesizer.registry.status()
    loaded = [e for e in engines if e["state"] == "ready"]
    speaking = [e for e in loaded if e.get("available")]
    memory = _memory()
    queue_depth = sum(int(str(e.get("queue_depth") or 0)) for e in engines)
    problems: list[str] = []
    for engine in engines:
        if engine["state"] == "failed":
            problems.append(f"{engine['engine']} failed to load: {engine['detail']}")
        elif engine["state"] == "ready" and not engine.get("available"):
            problems.append(f"{engine['engine']} is benched after failures")
    if float(memory["percent"]) > MEMORY_WARN_PERCENT:
        problems.append(f"memory at {memory['percent']}%")
    pressure = services.memory.problem() if services.memory is not None else None
    if pressure is not None:
        problems.append(f"refusing new work: {pressure}")
    workers = max(1, len(loaded))
    if queue_depth > QUEUE_WARN_PER_WORKER * workers:
        problems.append(f"{queue_depth} syntheses waiting for an engine thread")
    settings = services.settings
    if services.limiter.active >= SESSIONS_WARN_SHARE * settings.max_sessions_total:
        problems.append("close to the session limit")
    rooms = request.app[ROOMS_KEY]
    agent_workers = await rooms.workers()
    if agent_workers and not any(w.get("registered") for w in agent_workers):
        problems.append("no agent worker is registered with LiveKit yet")
    status = "fail" if not speaking else ("warn" if problems else "pass")
    body = {
        "status": status,
        "problems": problems if speaking else ["no engine can speak", *problems],
        "engines": engines,
        "active_sessions": services.limiter.active,
        "active_utterances": synthesizer.active_utterances,
        "queue_depth": queue_depth,
        "uptime_s": round(time.monotonic() - services.started_at, 1),
        "memory_usage": memory,
        "livekit": {
            "configured": rooms.configured,
            "workers": agent_workers,
            "agents_redispatched": rooms.redispatches,
        },
    }
    return web.json_response(body, status=503 if status == "fail" else 200, dumps=public_dumps)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    payload = generate_latest(_services(request).metrics.registry)
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.post("/gc")
async def collect_garbage(request: web.Request) -> web.Response:
    settings = _services(request).settings
    if not is_admin(request, settings.api_keys, settings.admin_keys):
        return json_error(403, "forbidden", "POST /gc needs an admin key")
    before = _memory()
    collected = gc.collect()
    trimmed = _malloc_trim()
    after = _memory()
    return web.json_response(
        {
            "collected_objects": collected,
            "malloc_trim": trimmed,
            "memory_before": before,
            "memory_after": after,
            "freed_bytes": int(before["rss_bytes"]) - int(after["rss_bytes"]),
        }
    )


def _malloc_trim() -> bool:
    """Hand freed heap pages back to the system (glibc); False where unavailable."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec())

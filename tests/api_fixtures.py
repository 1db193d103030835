"""What the control API tests share: apps on real sockets, audio decoding, message reading.

Helpers, not fixtures: each test module builds its own app (its own metrics) with
:func:`api_client` around the session's loaded engines.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import json
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiohttp import ClientResponse, ClientWebSocketResponse, WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from api.rooms import LiveKitSettings
from api.services import SERVICES, ApiServices
from control_api import create_app
from engines.audio import Pcm16
from engines.config import ServiceConfig
from engines.synthesizer import SpeechSynthesizer

ApiClient = TestClient[web.Request, web.Application]

MESSAGE_TIMEOUT_S = 30.0
"""Longest wait for one WebSocket message or HTTP reply (a loaded 2-core machine, cold engines)."""
CONDITION_POLL_S = 0.02
"""How often :func:`eventually` looks at a condition that has no event to await."""


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[ApiClient]:
    """``app`` on a real loopback socket (port 0) with a client for it."""
    client: ApiClient = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def rooms_api(
    config: ServiceConfig,
    synthesizer: SpeechSynthesizer,
    livekit: LiveKitSettings,
    *,
    port: int = 0,
) -> AsyncIterator[ApiClient]:
    """The control API with its LiveKit rooms side, on ``port`` (the one a LiveKit server's
    webhooks were pointed at, when it matters)."""
    app = create_app(config, synthesizer=synthesizer, quality_scoring=False, livekit=livekit)
    client: ApiClient = TestClient(TestServer(app, port=port))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def api_client(
    config: ServiceConfig, synthesizer: SpeechSynthesizer, *, quality_scoring: bool = False
) -> AsyncIterator[ApiClient]:
    """The control API for ``config`` around an already loaded synthesizer."""
    app = create_app(config, synthesizer=synthesizer, quality_scoring=quality_scoring)
    async with serve(app) as client:
        yield client


def with_api(config: ServiceConfig, **settings: Any) -> ServiceConfig:
    """``config`` with some ``api:`` settings replaced (keys, limits)."""
    return config.model_copy(update={"api": config.api.model_copy(update=settings)})


def services_of(client: ApiClient) -> ApiServices:
    app = client.app
    assert app is not None
    return app[SERVICES]


# --- HTTP ---------------------------------------------------------------------------------


async def error_of(response: ClientResponse, status: int) -> dict[str, str]:
    """The ``{"error": {"code", "message"}}`` body of an error reply, checked for shape."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json", text
    body = json.loads(text)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message"}, body
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    return {"code": error["code"], "message": error["message"]}


def metric_samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition by (name, labels)."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


def metric(
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value, 0 when it was never observed."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: ApiClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    return metric_samples(await response.text())


# --- audio --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    pcm: Pcm16
    sample_rate: int
    channels: int
    codec: str

    @property
    def duration_s(self) -> float:
        return self.pcm.size / self.sample_rate


def decode_wav(data: bytes) -> Decoded:
    """A WAV file read strictly: 16-bit PCM, its channel count as written."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        assert wav.getsampwidth() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
        return Decoded(frames, wav.getframerate(), wav.getnchannels(), "pcm_s16le")


def decode_audio(data: bytes) -> Decoded:
    """Any container PyAV (FFmpeg) reads: the first audio stream as mono int16."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels
        codec = stream.codec_context.name
        resampler = av.AudioResampler(format="s16", layout="mono")
        parts: list[np.ndarray] = []
        rate = stream.codec_context.sample_rate
        for frame in container.decode(stream):
            for converted in resampler.resample(frame):
                rate = converted.sample_rate
                parts.append(converted.to_ndarray().reshape(-1))
        for converted in resampler.resample(None):
            parts.append(converted.to_ndarray().reshape(-1))
    pcm = np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, dtype=np.int16)
    return Decoded(pcm, rate, channels, codec)


def pcm_of(data: bytes) -> Pcm16:
    """Headerless 16-bit little-endian mono samples."""
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


# --- WebSocket ----------------------------------------------------------------------------


@dataclass
class Spoken:
    """What the server sent for one request: its audio messages, then its closing message."""

    audio: list[dict[str, Any]]
    final: dict[str, Any]

    def payload(self) -> bytes:
        return b"".join(base64.b64decode(m["audio_chunk"]) for m in self.audio)

    def pcm(self) -> Pcm16:
        return pcm_of(self.payload())

    def chunk_pcms(self) -> list[Pcm16]:
        return [pcm_of(base64.b64decode(m["audio_chunk"])) for m in self.audio]


async def receive_json(
    ws: ClientWebSocketResponse, timeout_s: float = MESSAGE_TIMEOUT_S
) -> dict[str, Any]:
    """The next message, which must be a JSON object in a text frame."""
    async with asyncio.timeout(timeout_s):
        message = await ws.receive()
    assert message.type is WSMsgType.TEXT, (message.type, message.data)
    value = json.loads(message.data)
    assert isinstance(value, dict), value
    return value


async def until_final(ws: ClientWebSocketResponse, timeout_s: float = MESSAGE_TIMEOUT_S) -> Spoken:
    """Audio messages up to and including the next message with ``is_final``."""
    audio: list[dict[str, Any]] = []
    while True:
        message = await receive_json(ws, timeout_s)
        if message.get("is_final"):
            return Spoken(audio, message)
        assert message["type"] == "audio", message
        audio.append(message)


async def speak(
    ws: ClientWebSocketResponse, request: Mapping[str, Any], timeout_s: float = MESSAGE_TIMEOUT_S
) -> Spoken:
    await ws.send_json(dict(request))
    return await until_final(ws, timeout_s)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout_s: float = MESSAGE_TIMEOUT_S,
    what: str = "",
) -> None:
    """Wait until ``condition()`` holds, for state that changes without an event to await."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                holds = condition()
                if inspect.isawaitable(holds):
                    holds = await holds
                if holds:
                    return
                await asyncio.sleep(CONDITION_POLL_S)
    except TimeoutError:
        raise AssertionError(f"not true within {timeout_s} s: {what or condition}") from None

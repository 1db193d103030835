"""Fixtures for the Edge TTS engine: the fake service and backends pointed at it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from engines.audio import AudioChunk
from engines.config import ServiceConfig
from engines.edge_engine import EDGE_NATIVE_SAMPLE_RATE_HZ, EdgeBackend, EdgeSettings
from engines.edge_engine import SETTINGS as EDGE_SETTINGS
from engines.names import EngineName
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest, UtteranceResult, build_backends
from engines.voices import VoiceCatalog
from tests.fake_edge_service import SERVICE_PATH, FakeEdgeService


@pytest.fixture
async def fake_edge() -> AsyncIterator[FakeEdgeService]:
    """A fresh fake Edge TTS service on a free loopback port (see tests/fake_edge_service.py)."""
    async with FakeEdgeService() as service:
        yield service


def edge_backend(
    url: str | None,
    *,
    connect_timeout_s: float = 2.0,
    receive_timeout_s: float = 10.0,
    sample_rate: int = EDGE_NATIVE_SAMPLE_RATE_HZ,
) -> EdgeBackend:
    """An Edge backend, loaded, whose requests go to ``url`` (via its settings, not a patch)."""
    settings = EdgeSettings(
        url=url,
        connect_timeout_s=connect_timeout_s,
        receive_timeout_s=receive_timeout_s,
        sample_rate=sample_rate,
    )
    backend = EdgeBackend(settings)
    backend.load()
    assert backend.ready, backend.detail
    return backend


def closed_port_url() -> str:
    """A service URL on 127.0.0.1 where nothing listens (the port was just freed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"ws://127.0.0.1:{port}{SERVICE_PATH}?TrustedClientToken=nobody-listens"


async def speak_with_edge_at(
    url: str, request: SynthesisRequest, config: ServiceConfig, catalog: VoiceCatalog
) -> tuple[list[AudioChunk], UtteranceResult, list[str]]:
    """Speak ``request`` with a service whose Edge engine talks to ``url`` (Piper and espeak-ng
    behind it; the torch engines and Kokoro off, to load fast): the chunks, the result and the
    texts of the pieces it was cut into."""
    engines = config.engines.with_section(
        EDGE_SETTINGS, EdgeSettings(url=url, connect_timeout_s=1.0)
    )
    disabled = (EngineName.XTTS, EngineName.SPEECHT5, EngineName.KOKORO)
    config = config.model_copy(update={"engines": engines, "disabled_engines": disabled})
    synth = SpeechSynthesizer(config, catalog, build_backends(config, deterministic=True))
    await synth.start(warm_up=False)
    try:
        utterance = synth.synthesize(request)
        chunks = [chunk async for chunk in utterance]
    finally:
        await synth.aclose()
    return chunks, utterance.result, [piece.text for piece in utterance.prepared.pieces]

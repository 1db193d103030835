"""The Edge TTS engine against a local fake of its service: streamed speech, typed failures.

Nothing here reaches Microsoft: every backend is pointed at ``tests/fake_edge_service.py`` (or
at a closed loopback port) through ``EdgeSettings.url``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
import pytest
from livekit.agents.tts import SynthesizedAudio
from pydantic import ValidationError

from engines.audio import Pcm16
from engines.edge_engine import (
    EDGE_NATIVE_SAMPLE_RATE_HZ,
    EdgeBackend,
    EdgeSettings,
    EdgeTTS,
    speed_to_rate,
)
from engines.errors import EngineError
from engines.names import EngineName
from engines.voices import EdgeBinding, EspeakBinding, VoiceCatalog
from tests.audio_checks import espeak_speech, rms
from tests.edge_fixtures import closed_port_url, edge_backend, fake_edge
from tests.fake_edge_service import FakeEdgeService, FakeMode
from tests.transcriber import Transcriber, word_error_rate

__all__ = ["fake_edge"]  # the fixture, imported for pytest

JENNY = EdgeBinding(voice="en-US-JennyNeural")
TEXT = "Hello there. This is the cloud voice, speaking from a fake service."
LOAD_BOUND_S = 2.0
"""Generous for a shared CPU; loading only imports edge-tts."""
SYNTHESIS_BOUND_S = 20.0
"""No synthesis in this file may take longer than this: a hang fails the test instead."""
FAILURE_BOUND_S = 5.0
DURATION_TOLERANCE_S = 0.25
"""MP3 adds its encoder delay and padding; the fake's audio is espeak-ng's otherwise."""
SILENCE_RMS = 300.0
ESPEAK_MAX_WER = 0.3
"""This sentence in espeak-ng (the fake's voice) through MP3 measured 0.0 with whisper tiny.en."""
SEED_LANGUAGES = {"en", "es", "fr", "de", "it", "pt", "ja"}


def _pcm(events: list[SynthesizedAudio]) -> Pcm16:
    frames = [np.frombuffer(e.frame.data, dtype=np.int16) for e in events]
    return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)


async def _synthesize(voice: EdgeTTS, text: str = TEXT) -> list[SynthesizedAudio]:
    async with asyncio.timeout(SYNTHESIS_BOUND_S):
        return [event async for event in voice.synthesize(text)]


async def test_backend_loads_instantly_without_touching_the_network(
    fake_edge: FakeEdgeService, catalog: VoiceCatalog
) -> None:
    for url in (None, fake_edge.url()):  # None: Microsoft's URL, which is never contacted here
        backend = EdgeBackend(EdgeSettings(url=url))
        backend.load()
        assert backend.ready, backend.detail
        assert backend.load_seconds < LOAD_BOUND_S
        backend.warm_up()
        backend.close()
    assert fake_edge.handshakes == 0
    assert SEED_LANGUAGES <= backend.languages()
    assert backend.can_render(JENNY)
    assert not backend.can_render(EdgeBinding(voice="Jenny"))
    assert not backend.can_render(EspeakBinding(voice="en-us"))
    assert "neural voice name" in backend.missing_reason(EdgeBinding(voice="Jenny"))
    bindings = [v.engines.get(EngineName.EDGE) for v in catalog]
    assert bindings and all(b is not None and backend.can_render(b) for b in bindings)


@dataclass(frozen=True)
class ConfigSection:
    """Shaped like the configuration's ``engines.edge-tts`` section."""

    url: str | None = None
    connect_timeout_s: float = 2.0
    receive_timeout_s: float = 10.0


def test_backend_takes_the_configuration_section_and_checks_its_url() -> None:
    backend = EdgeBackend(ConfigSection(connect_timeout_s=1.5))  # what build_backends passes
    backend.load()
    assert backend.ready, backend.detail
    assert backend.settings.sample_rate == EDGE_NATIVE_SAMPLE_RATE_HZ
    assert backend.settings.connect_timeout_s == 1.5
    broken = EdgeBackend(ConfigSection(url="ws://127.0.0.1:1/edge/v1"))
    broken.load()
    assert not broken.ready and "must contain a query" in broken.detail
    for url in ("http://127.0.0.1/edge/v1?a=1", "ws://127.0.0.1/edge/v1"):
        with pytest.raises(ValidationError):
            EdgeSettings(url=url)
    with pytest.raises(ValidationError, match="sample_rate"):
        EdgeSettings(sample_rate=12_345)
    with pytest.raises(ValidationError):
        EdgeSettings(connect_timeout_s=0)


async def test_first_audio_leaves_before_the_service_finishes_its_reply() -> None:
    async with FakeEdgeService(pause_after_frames=3) as fake:
        backend = edge_backend(fake.url())
        voice = backend.create_tts(JENNY, speed=1.0)
        events: list[SynthesizedAudio] = []
        async with asyncio.timeout(SYNTHESIS_BOUND_S):
            async for event in voice.synthesize(TEXT):
                if not events:
                    # the fake holds the rest of its reply until released: audio streamed
                    assert fake.requests[-1].audio_frames_sent <= 3
                    assert not fake.requests[-1].reply_finished.is_set()
                    fake.release_reply()
                events.append(event)
        request = fake.requests[-1]
    assert request.reply_finished.is_set()
    assert request.audio_frames_sent == fake.audio_frames
    assert voice.sample_rate == EDGE_NATIVE_SAMPLE_RATE_HZ
    assert voice.num_channels == 1
    assert all(e.frame.sample_rate == voice.sample_rate for e in events)
    assert [e.is_final for e in events].count(True) == 1 and events[-1].is_final
    pcm = _pcm(events)
    reference, reference_rate = espeak_speech(TEXT)
    assert abs(pcm.size / voice.sample_rate - reference.size / reference_rate) < (
        DURATION_TOLERANCE_S
    )
    assert rms(pcm) > SILENCE_RMS


async def test_closing_an_utterance_mid_reply_hangs_up_and_lets_go_of_the_url() -> None:
    from edge_tts import communicate

    library_url = communicate.WSS_URL
    async with FakeEdgeService(pause_after_frames=3) as fake:
        voice = edge_backend(fake.url()).create_tts(JENNY, speed=1.0)
        async with asyncio.timeout(SYNTHESIS_BOUND_S):
            stream = voice.synthesize(TEXT)
            first = await anext(stream)
            await stream.aclose()
        assert first.frame.duration > 0
        assert not fake.requests[-1].reply_finished.is_set()
        assert communicate.WSS_URL == library_url


@pytest.mark.slow
async def test_the_decoded_audio_is_the_speech_the_service_sent(
    fake_edge: FakeEdgeService, transcriber: Transcriber
) -> None:
    voice = edge_backend(fake_edge.url()).create_tts(JENNY, speed=1.0)
    pcm = _pcm(await _synthesize(voice))
    heard = await asyncio.to_thread(transcriber.transcribe, pcm, voice.sample_rate)
    assert word_error_rate(TEXT, heard) <= ESPEAK_MAX_WER, heard


async def test_voice_and_speed_reach_the_service_in_the_ssml(fake_edge: FakeEdgeService) -> None:
    backend = edge_backend(fake_edge.url())
    durations = {}
    for speed in (1.0, 1.5):
        voice = backend.create_tts(EdgeBinding(voice="en-US-GuyNeural"), speed=speed)
        durations[speed] = _pcm(await _synthesize(voice)).size / voice.sample_rate
    normal, fast = fake_edge.requests
    assert (
        normal.voice
        == fast.voice
        == ("Microsoft Server Speech Text to Speech Voice (en-US, GuyNeural)")
    )
    assert (normal.rate, fast.rate) == ("+0%", "+50%")
    assert normal.text == TEXT
    assert "audio-24khz-48kbitrate-mono-mp3" in normal.speech_config
    assert durations[1.0] > durations[1.5] * 1.3  # the fake speaks at the rate it was sent


def test_speed_maps_to_a_prosody_rate_within_the_service_range() -> None:
    assert [speed_to_rate(s) for s in (1.0, 1.5, 0.75, 0.1, 3.0)] == [
        "+0%",
        "+50%",
        "-25%",
        "-50%",
        "+100%",
    ]


async def test_output_is_resampled_to_the_configured_rate(fake_edge: FakeEdgeService) -> None:
    voice = edge_backend(fake_edge.url(), sample_rate=16_000).create_tts(JENNY, speed=1.0)
    events = await _synthesize(voice)
    assert voice.sample_rate == 16_000
    assert all(e.frame.sample_rate == 16_000 for e in events)
    reference, reference_rate = espeak_speech(TEXT)
    pcm = _pcm(events)
    assert abs(pcm.size / 16_000 - reference.size / reference_rate) < DURATION_TOLERANCE_S
    assert rms(pcm) > SILENCE_RMS


async def test_a_slow_service_within_the_receive_timeout_still_speaks(
    fake_edge: FakeEdgeService,
) -> None:
    url = fake_edge.url(FakeMode.SLOW, delay_s=0.5)
    voice = edge_backend(url, receive_timeout_s=5.0).create_tts(JENNY, speed=1.0)
    pcm = _pcm(await _synthesize(voice))
    assert pcm.size / voice.sample_rate > 2.0 and rms(pcm) > SILENCE_RMS


FAILURES = [
    pytest.param(FakeMode.FORBIDDEN, 0.0, "HTTP 403", id="403-token-rejected"),
    pytest.param(FakeMode.UNAVAILABLE, 0.0, "HTTP 503", id="503-unavailable"),
    pytest.param(FakeMode.GARBLED_HEADER, 0.0, "garbled reply", id="garbled-header"),
    pytest.param(FakeMode.GARBLED_AUDIO, 0.0, "not MP3", id="garbled-audio"),
    pytest.param(FakeMode.TRUNCATED, 0.0, "no turn.end", id="truncated"),
    pytest.param(FakeMode.SLOW, 3.0, "timed out", id="slow-first-audio"),
    pytest.param(FakeMode.SLOW_HANDSHAKE, 3.0, "timed out", id="slow-handshake"),
]
SHORT_TIMEOUT_S = 0.5


@pytest.mark.parametrize(("mode", "delay_s", "cause"), FAILURES)
async def test_service_failures_are_retryable_engine_errors_that_name_the_cause(
    fake_edge: FakeEdgeService, mode: FakeMode, delay_s: float, cause: str
) -> None:
    backend = edge_backend(
        fake_edge.url(mode, delay_s=delay_s),
        connect_timeout_s=SHORT_TIMEOUT_S,
        receive_timeout_s=SHORT_TIMEOUT_S,
    )
    voice = backend.create_tts(JENNY, speed=1.0)
    started = time.perf_counter()
    with pytest.raises(EngineError) as caught:
        async with asyncio.timeout(FAILURE_BOUND_S):
            await _synthesize(voice)
    elapsed = time.perf_counter() - started
    assert caught.value.retryable
    assert caught.value.engine == EngineName.EDGE.value
    assert cause in str(caught.value)
    assert elapsed < delay_s or delay_s == 0.0  # gave up before the slow service answered
    if mode is FakeMode.FORBIDDEN:
        assert fake_edge.handshakes == 2  # edge-tts retries a 403 once, after a clock fix


async def test_unreachable_service_fails_fast() -> None:
    connect_timeout_s = 1.0
    for url in (closed_port_url(), "ws://edge-tts-fake.invalid/edge/v1?TrustedClientToken=x"):
        voice = edge_backend(url, connect_timeout_s=connect_timeout_s).create_tts(JENNY, speed=1.0)
        with pytest.raises(EngineError) as caught:
            async with asyncio.timeout(connect_timeout_s + 1.0):
                await _synthesize(voice)
        assert caught.value.retryable
        assert "cannot connect" in str(caught.value) or "cannot resolve" in str(caught.value)


async def test_the_library_url_is_put_back_after_each_synthesis(
    fake_edge: FakeEdgeService,
) -> None:
    from edge_tts import communicate

    library_url = communicate.WSS_URL
    voice = edge_backend(fake_edge.url()).create_tts(JENNY, speed=1.0)
    other = edge_backend(closed_port_url()).create_tts(JENNY, speed=1.0)
    results = await asyncio.gather(
        _synthesize(voice), _synthesize(voice), _synthesize(other), return_exceptions=True
    )
    assert all(isinstance(r, list) and r for r in results[:2])
    assert isinstance(results[2], EngineError)
    assert len(fake_edge.requests) == 2
    assert communicate.WSS_URL == library_url

"""A track player closes promptly whatever it is doing (a job's shutdown waits for it).

Runs on a real room of the dev LiveKit server with a scripted utterance in place of an engine,
so the moment of closing is chosen exactly: mid-utterance, between utterances, idle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agent.livekit_server import DevServer
from agent.room_events import EventSender
from agent.speak_request import SpeakMode, SpeakRequest
from agent.track_player import QueuedSpeech, TrackPlayer
from api.service_metrics import WorkerMetrics
from engines.audio import LIVEKIT_SAMPLE_RATE, AudioChunk
from engines.synthesizer import SynthesisRequest, UtteranceResult
from tests.livekit_fixtures import Participant, room_name

CLOSE_BOUND_S = 5.0
"""aclose() must return well within this (it used to wait forever)."""
UTTERANCE_S = 6.0
CHUNK_MS = 100

pytestmark = pytest.mark.asyncio(loop_scope="session")


class ScriptedUtterance:
    """Stands in for a HostedUtterance: a tone in 100 ms chunks, made in real time."""

    def __init__(self, seconds: float) -> None:
        self.result = UtteranceResult(voice_id="scripted", language="en", engines=["scripted"])
        self._chunks = round(seconds * 1000 / CHUNK_MS)
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        samples = LIVEKIT_SAMPLE_RATE * CHUNK_MS // 1000
        tone = (3000 * np.sin(np.arange(samples) * 0.05)).astype(np.int16)
        for _ in range(self._chunks):
            await asyncio.sleep(samples / LIVEKIT_SAMPLE_RATE)
            self.result.audio_duration_s += samples / LIVEKIT_SAMPLE_RATE
            yield AudioChunk(tone, LIVEKIT_SAMPLE_RATE, "la")

    def record_span(self, name: str, since_s: float, attributes: dict[str, object]) -> None:
        pass  # no trace: tracing is tested in tests/test_tracing.py

    async def aclose(self) -> None:
        self.closed = True


async def closes_in_time(player: TrackPlayer) -> None:
    """aclose() finishes by itself within the bound (no cancellation helps it along, unlike
    ``wait_for``, whose cancel would end a runner that swallowed the first one)."""
    closing = asyncio.create_task(player.aclose())
    done, _ = await asyncio.wait({closing}, timeout=CLOSE_BOUND_S)
    if closing not in done:
        closing.cancel()
        raise AssertionError(f"TrackPlayer.aclose() still running after {CLOSE_BOUND_S} s")
    closing.result()


def speech(request_id: str, seconds: float) -> tuple[QueuedSpeech, ScriptedUtterance]:
    utterance = ScriptedUtterance(seconds)
    request = SpeakRequest(
        id=request_id,
        synthesis=SynthesisRequest(text="la"),
        mode=SpeakMode.QUEUE,
        reply_to=None,
    )
    item = QueuedSpeech(request, utterance, time.perf_counter())  # type: ignore[arg-type]
    return item, utterance


async def open_player(livekit_server: DevServer) -> tuple[Participant, TrackPlayer]:
    agent = await Participant("agent-under-test").join(livekit_server, room_name("player"))
    player = TrackPlayer(
        agent.room, "tts-en", "en", "scripted", EventSender(agent.room), WorkerMetrics()
    )
    await player.publish()
    return agent, player


@pytest.mark.parametrize("close_after_s", [0.5, 1.0, 1.5])
async def test_aclose_mid_utterance_returns_at_once(
    livekit_server: DevServer, close_after_s: float
) -> None:
    agent, player = await open_player(livekit_server)
    try:
        item, utterance = speech("long", UTTERANCE_S)
        later, later_utterance = speech("later", 1.0)
        player.enqueue(item)
        player.enqueue(later)
        await asyncio.sleep(close_after_s)
        assert player.busy
        await closes_in_time(player)
        assert item.done.is_set() and later.done.is_set()
        assert utterance.closed and later_utterance.closed
        assert utterance.result.audio_duration_s < UTTERANCE_S  # cut, not played out
    finally:
        await agent.leave()


async def test_aclose_when_idle_and_after_an_utterance(livekit_server: DevServer) -> None:
    agent, player = await open_player(livekit_server)
    try:
        item, _ = speech("short", 0.3)
        player.enqueue(item)
        await asyncio.wait_for(item.done.wait(), CLOSE_BOUND_S)
        await closes_in_time(player)
    finally:
        await agent.leave()


async def test_an_interrupt_does_not_stop_the_player(livekit_server: DevServer) -> None:
    """interrupt() cancels the utterance playing; the player goes on to the next one."""
    agent, player = await open_player(livekit_server)
    try:
        first, _ = speech("first", UTTERANCE_S)
        player.enqueue(first)
        await asyncio.sleep(0.3)
        await player.interrupt()
        second, second_utterance = speech("second", 0.3)
        player.enqueue(second)
        await asyncio.wait_for(second.done.wait(), CLOSE_BOUND_S)
        assert second_utterance.result.audio_duration_s > 0.25
        await closes_in_time(player)
    finally:
        await agent.leave()

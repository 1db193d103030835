"""The first piece of an utterance from an engine that streams within a piece (XTTS, Edge) goes
out part by part: shaped like a whole piece (silence trimmed, faded edges), resampled without
seams, and when the engine fails after some of it was heard the next engine goes on with the
next piece (nothing spoken twice)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from engines.audio import (
    STREAM_HOLD_MS,
    JoinPolicy,
    PieceStreamer,
    float_to_pcm16,
    resample,
)
from engines.config import ServiceConfig
from engines.synthesizer import SynthesisRequest
from engines.voices import VoiceCatalog
from tests.edge_fixtures import speak_with_edge_at
from tests.fake_edge_service import FakeEdgeService, FakeMode

RATE = 24_000
OUT_RATE = 48_000
BLOCK = 4_800  # 200 ms parts, as the engines' emitters hand them over
LEAD_S = 0.3
TONE_S = 1.0
TAIL_S = 0.4
MAX_EDGE_STEP = 0.02
"""Largest sample step allowed at the first and last sample (no click)."""
SEAM_TOLERANCE = 1e-3
"""Streamed resampling against one-shot resampling of the same samples."""


def tone_with_silence() -> np.ndarray:
    t = np.arange(int(TONE_S * RATE)) / RATE
    tone = 0.4 * np.sin(2 * np.pi * 220 * t)
    silence = np.zeros
    return np.concatenate([silence(int(LEAD_S * RATE)), tone, silence(int(TAIL_S * RATE))]).astype(
        np.float32
    )


def stream(samples: np.ndarray, out_rate: int = OUT_RATE) -> tuple[list[np.ndarray], np.ndarray]:
    streamer = PieceStreamer(RATE, out_rate, JoinPolicy())
    parts = [streamer.push(samples[i : i + BLOCK]) for i in range(0, samples.size, BLOCK)]
    parts.append(streamer.finish())
    return parts, np.concatenate(parts)


def test_a_streamed_piece_is_trimmed_faded_and_seamless() -> None:
    samples = tone_with_silence()
    parts, out = stream(samples)
    policy = JoinPolicy()
    # leading silence dropped (head margin kept), trailing silence beyond the tail margin too
    expected_s = TONE_S + (policy.head_keep_ms + policy.tail_keep_ms) / 1000
    assert out.size / OUT_RATE == pytest.approx(expected_s, abs=0.01)
    assert abs(out[0]) < MAX_EDGE_STEP and abs(out[-1]) < MAX_EDGE_STEP
    # audio went out before the piece ended: all but the held part, as it arrived
    sent_before_end = sum(part.size for part in parts[:-1])
    assert sent_before_end / OUT_RATE > TONE_S - STREAM_HOLD_MS / 1000 - 0.05
    # the stream resampler leaves no seams: the middle matches one-shot resampling
    first_audible = int(np.flatnonzero(np.abs(samples) > policy.absolute_floor)[0])
    start = first_audible - RATE * policy.head_keep_ms // 1000
    whole = resample(samples[start:], RATE, OUT_RATE)
    middle = slice(OUT_RATE // 10, int(0.9 * TONE_S * OUT_RATE))
    np.testing.assert_allclose(out[middle], whole[middle], atol=SEAM_TOLERANCE)


def test_silence_only_gives_nothing() -> None:
    _, out = stream(np.zeros(RATE, dtype=np.float32))
    assert out.size == 0


def test_same_rate_passes_through() -> None:
    _, out = stream(tone_with_silence(), out_rate=RATE)
    assert out.size / RATE == pytest.approx(TONE_S + 0.07, abs=0.01)
    assert np.all(np.isfinite(out)) and float_to_pcm16(out).dtype == np.int16


@pytest.fixture
async def edge_service() -> AsyncIterator[FakeEdgeService]:
    async with FakeEdgeService() as service:
        yield service


REQUEST = SynthesisRequest(
    "The first sentence is here. The second one follows it.",
    voice_id="en-us-male-premium",
    engine="edge-tts",
)


async def test_the_first_piece_arrives_in_parts_with_its_caption_once(
    service_config: ServiceConfig, catalog: VoiceCatalog, edge_service: FakeEdgeService
) -> None:
    chunks, result, pieces = await speak_with_edge_at(
        edge_service.url(), REQUEST, service_config, catalog
    )
    captions = [chunk.text for chunk in chunks if chunk.text]
    assert captions == pieces  # every piece's text exactly once
    first_piece_parts = next(i for i, c in enumerate(chunks) if c.text == pieces[1])
    assert first_piece_parts > 1  # the first piece went out in several parts
    assert result.engines == ["edge-tts"] and result.pieces == len(pieces)


async def test_a_failure_after_part_of_the_first_piece_goes_on_with_the_next_piece(
    service_config: ServiceConfig, catalog: VoiceCatalog, edge_service: FakeEdgeService
) -> None:
    """The fake cuts its reply off halfway (no turn.end): what was heard stays, faded out; the
    next engine speaks from the next piece on."""
    chunks, result, pieces = await speak_with_edge_at(
        edge_service.url(FakeMode.TRUNCATED), REQUEST, service_config, catalog
    )
    assert result.engines[0] == "edge-tts" and len(result.engines) == 2
    assert [f["engine"] for f in result.fallbacks] == ["edge-tts"]
    captions = [chunk.text for chunk in chunks if chunk.text]
    assert captions == pieces  # none repeated, none lost
    second = next(i for i, c in enumerate(chunks) if c.text == pieces[1])
    assert abs(int(chunks[second - 1].pcm[-1])) < MAX_EDGE_STEP * 32768  # faded, no click

"""DNSMOS quality scoring of produced speech, and the sampler that runs it off the hot path.

Speech comes from the real engines (Piper joe with deterministic noise, espeak-ng en-us); the
sampler's timing and failure behaviour are driven by the fake scorers defined below.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from api.quality import (
    MIN_CLIP_S,
    ClipTooShortError,
    QualitySampler,
    QualityScore,
    QualityScorer,
)
from engines.audio import Pcm16, float_to_pcm16, pcm16_to_float, resample
from engines.config import WindowedSettings
from engines.espeak_engine import EspeakBackend
from engines.piper_engine import PiperBackend
from engines.voices import EspeakBinding, PiperBinding

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
PIPER_VOICE = "en_US-joe-medium"
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "Please remember to bring your umbrella, because it may rain this afternoon.",
    "Our meeting has been moved to Thursday at three o'clock in the main hall.",
)
WAIT_TIMEOUT_S = 60.0
"""Upper bound for any wait on the worker thread; a pass takes a few seconds."""
MOS_MIN, MOS_MAX = 1.0, 5.0
NOISY_SNR_DB = 5.0
WHITE_NOISE_RMS = 0.1
WHITE_NOISE_S = 3.0
SILENCE_S = 2.0
RATE_TOLERANCE_MOS = 0.2
ONE_WINDOW = 1
"""Sampler and robustness tests score one DNSMOS window per clip: they test plumbing, not MOS."""
FIXED_FAKE_SCORE = QualityScore(overall=3.0, signal=3.5, background=4.0, p808=3.8)


@dataclass(frozen=True)
class Clip:
    pcm: Pcm16
    sample_rate: int


@pytest.fixture(scope="module")
def scorer() -> QualityScorer:
    return QualityScorer()


@pytest.fixture(scope="module")
def one_window_scorer() -> QualityScorer:
    return QualityScorer(max_windows=ONE_WINDOW)


@pytest.fixture(scope="module")
def piper_clips() -> Iterator[list[Clip]]:
    backend = PiperBackend(
        MODELS_DIR, WindowedSettings(workers=1, intra_op_threads=1), deterministic=True
    )
    backend.load()
    assert backend.ready, backend.detail
    tts = backend.create_tts(PiperBinding(model=PIPER_VOICE), speed=1.0)
    clips = [
        Clip(
            float_to_pcm16(np.concatenate(list(tts._render(text, threading.Event())))),
            tts.sample_rate,
        )
        for text in SENTENCES
    ]
    yield clips
    backend.close()


@pytest.fixture(scope="module")
def espeak_clips() -> Iterator[list[Clip]]:
    backend = EspeakBackend()
    backend.load()
    assert backend.ready, backend.detail
    options = backend.create_tts(EspeakBinding(voice="en-us"), speed=1.0)._opts
    clips = [
        Clip(
            float_to_pcm16(backend.synthesize_blocking(text, options, threading.Event())),
            backend.sample_rate,
        )
        for text in SENTENCES
    ]
    yield clips
    backend.close()


@pytest.fixture(scope="module")
def piper_scores(scorer: QualityScorer, piper_clips: list[Clip]) -> list[QualityScore]:
    return [scorer.score(c.pcm, c.sample_rate) for c in piper_clips]


@pytest.fixture(scope="module")
def espeak_scores(scorer: QualityScorer, espeak_clips: list[Clip]) -> list[QualityScore]:
    return [scorer.score(c.pcm, c.sample_rate) for c in espeak_clips]


def white_noise(samples: int, rms: float, seed: int) -> Pcm16:
    rng = np.random.default_rng(seed)
    return float_to_pcm16(rng.normal(0.0, rms, samples))


def mean_overall(scores: list[QualityScore]) -> float:
    return float(np.mean([s.overall for s in scores]))


# ---- fakes for the sampler ------------------------------------------------------------------


class GatedFakeScorer(QualityScorer):
    """Real DNSMOS, but each score waits for ``gate`` first; records what it was given."""

    def __init__(self) -> None:
        super().__init__(max_windows=ONE_WINDOW)
        self.gate = threading.Event()
        self.received: list[Pcm16] = []

    def score(self, pcm: Pcm16, sample_rate: int) -> QualityScore:
        if not self.gate.wait(WAIT_TIMEOUT_S):
            raise TimeoutError("the test never opened the gate")
        self.received.append(pcm)
        return super().score(pcm, sample_rate)


class FailingOnceFakeScorer(QualityScorer):
    """Raises on its first call, then scores for real."""

    def __init__(self) -> None:
        super().__init__(max_windows=ONE_WINDOW)
        self.calls = 0

    def score(self, pcm: Pcm16, sample_rate: int) -> QualityScore:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("injected scorer failure")
        return super().score(pcm, sample_rate)


class FixedFakeScorer(QualityScorer):
    """Returns :data:`FIXED_FAKE_SCORE` without running the models."""

    def score(self, pcm: Pcm16, sample_rate: int) -> QualityScore:
        return FIXED_FAKE_SCORE


class ScoreCollector:
    """``on_score`` callback that records (engine, score, thread id) and signals a count."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.results: list[tuple[str, QualityScore, int]] = []
        self.done = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, engine: str, score: QualityScore) -> None:
        with self._lock:
            self.results.append((engine, score, threading.get_ident()))
            if len(self.results) >= self.expected:
                self.done.set()

    @property
    def engines(self) -> list[str]:
        with self._lock:
            return [engine for engine, _, _ in self.results]


# ---- the scorer -------------------------------------------------------------------------------


def test_piper_speech_scores_in_plausible_range(piper_scores: list[QualityScore]) -> None:
    for score in piper_scores:
        assert 2.8 <= score.overall <= 4.2, score
        assert 3.0 <= score.signal <= 4.5, score
        assert 3.5 <= score.background <= 4.8, score
        assert 3.3 <= score.p808 <= 4.8, score


def test_espeak_speech_scores_in_plausible_range(espeak_scores: list[QualityScore]) -> None:
    for score in espeak_scores:
        assert 1.8 <= score.overall <= 3.4, score
        assert 2.5 <= score.p808 <= 4.3, score


def test_piper_scores_higher_overall_than_espeak_on_same_sentences(
    piper_scores: list[QualityScore], espeak_scores: list[QualityScore]
) -> None:
    for piper, espeak in zip(piper_scores, espeak_scores, strict=True):
        assert piper.overall > espeak.overall, (piper, espeak)
    assert mean_overall(piper_scores) - mean_overall(espeak_scores) > 0.3


def test_white_noise_scores_clearly_lower_than_speech(
    scorer: QualityScorer, piper_clips: list[Clip], piper_scores: list[QualityScore]
) -> None:
    rate = piper_clips[0].sample_rate
    noise = scorer.score(white_noise(int(WHITE_NOISE_S * rate), WHITE_NOISE_RMS, seed=0), rate)
    assert noise.overall < 1.5, noise
    assert noise.overall < min(s.overall for s in piper_scores) - 1.0
    assert noise.background < min(s.background for s in piper_scores) - 1.5


def test_loud_background_noise_lowers_background_score(
    scorer: QualityScorer, piper_clips: list[Clip], piper_scores: list[QualityScore]
) -> None:
    clip, clean = piper_clips[1], piper_scores[1]
    speech = pcm16_to_float(clip.pcm)
    speech_rms = float(np.sqrt(np.mean(speech**2)))
    noise_rms = speech_rms / 10 ** (NOISY_SNR_DB / 20)
    noise = pcm16_to_float(white_noise(speech.size, noise_rms, seed=1))
    noisy = scorer.score(float_to_pcm16(speech + noise), clip.sample_rate)
    assert noisy.background < clean.background - 1.0, (noisy, clean)
    assert noisy.overall < clean.overall - 0.5, (noisy, clean)


def test_same_clip_scores_alike_at_16_22_and_48_khz(
    scorer: QualityScorer, piper_clips: list[Clip], piper_scores: list[QualityScore]
) -> None:
    clip, native = piper_clips[0], piper_scores[0]
    assert clip.sample_rate == 22_050
    audio = pcm16_to_float(clip.pcm)
    for rate in (16_000, 48_000):
        other = scorer.score(float_to_pcm16(resample(audio, clip.sample_rate, rate)), rate)
        for field in ("overall", "signal", "background", "p808"):
            assert getattr(other, field) == pytest.approx(
                getattr(native, field), abs=RATE_TOLERANCE_MOS
            ), (rate, other, native)


def test_clip_shorter_than_minimum_raises_typed_value_error(
    scorer: QualityScorer, piper_clips: list[Clip]
) -> None:
    clip = piper_clips[0]
    too_short = clip.pcm[: int(MIN_CLIP_S * clip.sample_rate) - 1]
    with pytest.raises(ClipTooShortError):
        scorer.score(too_short, clip.sample_rate)
    with pytest.raises(ValueError):
        scorer.score(np.zeros(0, dtype=np.int16), clip.sample_rate)


def test_clip_shorter_than_dnsmos_window_is_scored(
    one_window_scorer: QualityScorer, piper_clips: list[Clip]
) -> None:
    clip = piper_clips[0]
    one_second = clip.pcm[: clip.sample_rate]
    score = one_window_scorer.score(one_second, clip.sample_rate)
    for value in (score.overall, score.signal, score.background, score.p808):
        assert math.isfinite(value) and MOS_MIN <= value <= MOS_MAX, score


def test_silence_scores_without_crashing(one_window_scorer: QualityScorer) -> None:
    rate = 24_000
    score = one_window_scorer.score(np.zeros(int(SILENCE_S * rate), dtype=np.int16), rate)
    for value in (score.overall, score.signal, score.background, score.p808):
        assert math.isfinite(value) and MOS_MIN <= value <= MOS_MAX, score


def test_full_scale_clip_is_clipped_not_rejected(one_window_scorer: QualityScorer) -> None:
    rate = 22_050
    square = np.where(np.arange(2 * rate) % 100 < 50, 32_767, -32_767).astype(np.int16)
    score = one_window_scorer.score(
        square, rate
    )  # soxr overshoots beyond full scale on these edges
    assert MOS_MIN <= score.overall <= MOS_MAX


# ---- the sampler ------------------------------------------------------------------------------


def test_sampler_scores_exactly_every_nth_offer(
    one_window_scorer: QualityScorer, piper_clips: list[Clip]
) -> None:
    every_nth, offers = 3, 9
    collector = ScoreCollector(expected=offers // every_nth)
    sampler = QualitySampler(
        one_window_scorer, every_nth=every_nth, on_score=collector, max_pending=offers
    )
    try:
        accepted = []
        for i in range(offers):
            clip = piper_clips[i % len(piper_clips)]
            accepted.append(sampler.offer(f"offer{i}", clip.pcm, clip.sample_rate))
        assert collector.done.wait(WAIT_TIMEOUT_S)
    finally:
        sampler.close(wait=True)
    assert accepted == [False, False, True] * 3
    assert collector.engines == ["offer2", "offer5", "offer8"]
    for _, score, _ in collector.results:
        assert 2.8 <= score.overall <= 4.2, score


def test_sampler_drops_offers_while_busy(piper_clips: list[Clip]) -> None:
    fake = GatedFakeScorer()
    collector = ScoreCollector(expected=1)
    sampler = QualitySampler(fake, every_nth=1, on_score=collector, max_pending=1)
    clip = piper_clips[0]
    try:
        assert sampler.offer("first", clip.pcm, clip.sample_rate)
        assert not sampler.offer("while-busy", clip.pcm, clip.sample_rate)
        assert sampler.dropped_busy == 1
        fake.gate.set()
        assert collector.done.wait(WAIT_TIMEOUT_S)
        # the worker is free again once a score is delivered
        collector.done.clear()
        collector.expected = 2
        assert sampler.offer("after", clip.pcm, clip.sample_rate)
        assert collector.done.wait(WAIT_TIMEOUT_S)
    finally:
        sampler.close(wait=True)
    assert collector.engines == ["first", "after"]
    assert sampler.accepted == 2


def test_sampler_never_raises_into_caller_when_scorer_fails(
    piper_clips: list[Clip], caplog: pytest.LogCaptureFixture
) -> None:
    fake = FailingOnceFakeScorer()
    collector = ScoreCollector(expected=1)
    sampler = QualitySampler(fake, every_nth=1, on_score=collector, max_pending=2)
    clip = piper_clips[0]
    with caplog.at_level(logging.ERROR, logger="api.quality"):
        try:
            assert sampler.offer("fails", clip.pcm, clip.sample_rate)
            assert sampler.offer("succeeds", clip.pcm, clip.sample_rate)
            assert collector.done.wait(WAIT_TIMEOUT_S)
        finally:
            sampler.close(wait=True)
    assert fake.calls == 2
    assert sampler.failed == 1
    assert collector.engines == ["succeeds"]
    assert any("quality scoring failed" in r.getMessage() for r in caplog.records)


def test_sampler_survives_a_failing_callback(
    piper_clips: list[Clip], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    both_called = threading.Event()

    def failing_callback(engine: str, score: QualityScore) -> None:
        calls.append(engine)
        if len(calls) == 2:
            both_called.set()
        raise RuntimeError("injected callback failure")

    sampler = QualitySampler(
        FixedFakeScorer(), every_nth=1, on_score=failing_callback, max_pending=2
    )
    clip = piper_clips[0]
    with caplog.at_level(logging.ERROR, logger="api.quality"):
        try:
            assert sampler.offer("a", clip.pcm, clip.sample_rate)
            assert sampler.offer("b", clip.pcm, clip.sample_rate)
            assert both_called.wait(WAIT_TIMEOUT_S)
        finally:
            sampler.close(wait=True)
    assert calls == ["a", "b"]
    assert any("callback failed" in r.getMessage() for r in caplog.records)


def test_offer_returns_before_scoring_and_scores_on_another_thread(
    piper_clips: list[Clip],
) -> None:
    fake = GatedFakeScorer()
    collector = ScoreCollector(expected=1)
    sampler = QualitySampler(fake, every_nth=1, on_score=collector)
    clip = piper_clips[0]
    try:
        # with the gate closed, scoring inline would block here until the fake timed out
        assert sampler.offer("piper", clip.pcm, clip.sample_rate)
        assert collector.results == []
        fake.gate.set()
        assert collector.done.wait(WAIT_TIMEOUT_S)
    finally:
        sampler.close(wait=True)
    (engine, score, thread_id), *_ = collector.results
    assert engine == "piper"
    assert thread_id != threading.get_ident()
    assert 2.8 <= score.overall <= 4.2, score


def test_accepted_clip_is_copied_so_caller_may_reuse_its_buffer(
    piper_clips: list[Clip],
) -> None:
    fake = GatedFakeScorer()
    collector = ScoreCollector(expected=1)
    sampler = QualitySampler(fake, every_nth=1, on_score=collector)
    clip = piper_clips[0]
    buffer = clip.pcm.copy()
    try:
        assert sampler.offer("piper", buffer, clip.sample_rate)
        buffer[:] = 0
        fake.gate.set()
        assert collector.done.wait(WAIT_TIMEOUT_S)
    finally:
        sampler.close(wait=True)
    (received,) = fake.received
    assert np.array_equal(received, clip.pcm)
    assert collector.results[0][1].overall > 2.8


def test_sampler_refuses_unscorable_and_post_close_offers(piper_clips: list[Clip]) -> None:
    collector = ScoreCollector(expected=1)
    sampler = QualitySampler(FixedFakeScorer(), every_nth=1, on_score=collector)
    clip = piper_clips[0]
    too_short = clip.pcm[: int(MIN_CLIP_S * clip.sample_rate) - 1]
    assert not sampler.offer("short", too_short, clip.sample_rate)
    assert sampler.accepted == 0
    sampler.close(wait=True)
    assert not sampler.offer("late", clip.pcm, clip.sample_rate)
    assert collector.results == []


def test_sampler_rejects_nonsense_settings(scorer: QualityScorer) -> None:
    with pytest.raises(ValueError):
        QualitySampler(scorer, every_nth=0, on_score=ScoreCollector(1))
    with pytest.raises(ValueError):
        QualitySampler(scorer, every_nth=1, on_score=ScoreCollector(1), max_pending=0)

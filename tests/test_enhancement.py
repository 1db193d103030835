"""enhance_audio: DC gone, loudness on target, clicks repaired, clean speech left alone."""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt
import pyloudnorm
import pytest
from scipy.ndimage import maximum_filter1d, median_filter

from api.enhancement import (
    DEFAULT_TARGET_LUFS,
    PEAK_CEILING_DBFS,
    EnhancementNote,
    enhance,
    true_peak,
)
from engines.audio import INT16_FULL_SCALE, Pcm16, float_to_pcm16, pcm16_to_float, resample
from engines.errors import InvalidOptionError
from tests.audio_checks import espeak_speech

RATE_HZ = 22_050
VOICED_SECONDS = 3.0
FUNDAMENTAL_HZ = 140.0
VIBRATO_HZ = 5.0
VIBRATO_DEPTH_HZ = 6.0
HARMONICS = 25
SYLLABLE_HZ = 4.0
SUSTAIN_FLOOR = 0.6
SPEECH_TEXT = "Please hold while I connect you to the next available agent."
LOUDNESS_TOLERANCE_LU = 1.0
MIN_UNTOUCHED_SNR_DB = 30.0
MAX_DC_AFTER = 1e-3
"""Full-scale units: a thousandth of full scale is about 33 int16 steps."""
CLICK_AMPLITUDE = 0.4
CLICK_COUNT = 12
MIN_CLICK_SPACING_S = 0.1
SHORT_SECONDS = 0.2


def lufs(pcm: Pcm16, rate: int = RATE_HZ) -> float:
    return float(pyloudnorm.Meter(rate).integrated_loudness(pcm16_to_float(pcm).astype(float)))


def at_loudness(pcm: Pcm16, target: float, rate: int = RATE_HZ) -> Pcm16:
    samples = pcm16_to_float(pcm).astype(np.float64)
    return float_to_pcm16(samples * 10 ** ((target - lufs(pcm, rate)) / 20))


def snr_db(reference: Pcm16, test: Pcm16) -> float:
    ref = reference.astype(np.float64)
    noise = test.astype(np.float64) - ref
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum(noise**2), 1e-12)))


def voiced(amplitude: float = 0.3, *, sustained: bool = False) -> Pcm16:
    """A vowel-like harmonic tone with vibrato.

    Syllables with silent gaps between them, or (``sustained``) a gently swelling vowel whose
    low crest factor lets it be made loud without clipping.
    """
    t = np.arange(int(RATE_HZ * VOICED_SECONDS)) / RATE_HZ
    f0 = FUNDAMENTAL_HZ + VIBRATO_DEPTH_HZ * np.sin(2 * np.pi * VIBRATO_HZ * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE_HZ
    tone = sum(np.sin(k * phase) / k for k in range(1, HARMONICS + 1))
    swell = np.sin(2 * np.pi * SYLLABLE_HZ / 2 * t)
    envelope = (
        SUSTAIN_FLOOR + (1 - SUSTAIN_FLOOR) * swell if sustained else np.clip(swell, 0, 1) ** 2
    )
    samples = tone * envelope
    return float_to_pcm16(amplitude * samples / np.max(np.abs(samples)))


@pytest.fixture(scope="module")
def speech() -> tuple[Pcm16, int]:
    """A sentence of espeak-ng speech (22.05 kHz), the engine every install has."""
    return espeak_speech(SPEECH_TEXT)


def outside_loud_fricatives(pcm: Pcm16, rate: int) -> npt.NDArray[np.bool_]:
    """Where a click stands out: within 2 ms the speech's own sample-to-sample curvature stays
    well below a click's, and over 20 ms its typical curvature is small. Clicks buried in loud
    fricatives are kept on purpose (see :func:`api.enhancement.repair_clicks`), so tests on
    speech put theirs elsewhere."""
    samples = pcm.astype(np.float64)
    curvature = np.zeros_like(samples)
    curvature[1:-1] = np.abs(samples[1:-1] - 0.5 * (samples[:-2] + samples[2:]))
    click = CLICK_AMPLITUDE * INT16_FULL_SCALE
    near = maximum_filter1d(curvature, size=2 * int(0.002 * rate) + 1)
    typical = median_filter(curvature, size=2 * int(0.01 * rate) + 1)
    return np.asarray((near < click / 4) & (typical < click / 20))


def with_clicks(
    pcm: Pcm16,
    seed: int = 7,
    rate: int = RATE_HZ,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> tuple[Pcm16, npt.NDArray[np.intp]]:
    """``CLICK_COUNT`` single-sample clicks of ``CLICK_AMPLITUDE`` at random, spaced places
    (only where ``allowed`` is true, when given)."""
    rng = np.random.default_rng(seed)
    spacing = int(MIN_CLICK_SPACING_S * rate)
    offsets = rng.integers(0, spacing // 2, size=pcm.size // spacing)
    slots = np.arange(1, pcm.size // spacing - 1)
    if allowed is not None:
        slots = slots[allowed[slots * spacing + offsets[slots]]]
    chosen = rng.choice(slots, size=CLICK_COUNT, replace=False)
    positions = np.sort(chosen * spacing + offsets[chosen])
    signs = rng.choice([-1.0, 1.0], size=CLICK_COUNT)
    clicked = pcm.astype(np.int32)
    clicked[positions] += (signs * CLICK_AMPLITUDE * INT16_FULL_SCALE).astype(np.int32)
    return np.clip(clicked, -INT16_FULL_SCALE, INT16_FULL_SCALE).astype(np.int16), positions


def test_dc_offset_is_removed() -> None:
    offset = 0.1
    shifted = float_to_pcm16(pcm16_to_float(voiced()) + offset)
    out, report = enhance(shifted, RATE_HZ)
    assert report.dc_offset_before == pytest.approx(offset, abs=0.01)
    assert abs(float(np.mean(pcm16_to_float(out)))) < MAX_DC_AFTER
    assert abs(report.dc_offset_after) < MAX_DC_AFTER


@pytest.mark.parametrize("level_lufs", [-38.0, -26.0, -12.0])
def test_quiet_and_loud_voice_reach_the_target(level_lufs: float) -> None:
    source = at_loudness(voiced(sustained=True), level_lufs)
    out, report = enhance(source, RATE_HZ)
    assert not report.peak_limited
    assert report.loudness_before_lufs == pytest.approx(level_lufs, abs=0.1)
    assert lufs(out) == pytest.approx(DEFAULT_TARGET_LUFS, abs=LOUDNESS_TOLERANCE_LU)
    assert report.loudness_after_lufs == pytest.approx(lufs(out), abs=0.01)
    assert out.size == source.size


def test_speech_reaches_a_custom_target(speech: tuple[Pcm16, int]) -> None:
    pcm, rate = speech
    target = -23.0
    out, report = enhance(pcm, rate, target_lufs=target)
    assert report.target_lufs == target
    assert lufs(out, rate) == pytest.approx(target, abs=LOUDNESS_TOLERANCE_LU)


def test_peak_guard_keeps_every_sample_below_the_ceiling() -> None:
    # A sparse pulse train is loud in peaks but quiet in loudness: the target gain would clip.
    pulses = np.zeros(int(RATE_HZ * VOICED_SECONDS))
    pulses[:: RATE_HZ // 10] = 0.5
    quiet_voice = pcm16_to_float(voiced(amplitude=0.01)).astype(np.float64)
    source = float_to_pcm16(pulses + quiet_voice)
    out, report = enhance(source, RATE_HZ, target_lufs=-10.0)
    ceiling = 10 ** (PEAK_CEILING_DBFS / 20)
    assert report.peak_limited
    assert EnhancementNote.PEAK_LIMITED in report.notes
    assert int(np.max(np.abs(out.astype(np.int32)))) < INT16_FULL_SCALE
    assert true_peak(pcm16_to_float(out).astype(np.float64), RATE_HZ) <= ceiling + 1e-3
    assert report.loudness_after_lufs is not None and report.loudness_after_lufs < -10.0


def test_injected_clicks_are_found_and_repaired() -> None:
    clean = at_loudness(voiced(), DEFAULT_TARGET_LUFS)
    clicked, positions = with_clicks(clean)
    out, report = enhance(clicked, RATE_HZ)
    reference, clean_report = enhance(clean, RATE_HZ)
    assert clean_report.clicks_repaired == 0
    assert report.clicks_repaired == CLICK_COUNT
    assert snr_db(reference, out) > MIN_UNTOUCHED_SNR_DB
    around = int(0.001 * RATE_HZ)
    for position in positions:
        window = slice(position - around, position + around)
        assert np.max(np.abs(out[window].astype(np.int32) - reference[window])) < (
            0.02 * INT16_FULL_SCALE
        )


@pytest.mark.parametrize("seed", [11, 3, 5, 8])
def test_clicks_in_speech_are_repaired(speech: tuple[Pcm16, int], seed: int) -> None:
    pcm, rate = speech
    clicked, _ = with_clicks(pcm, seed=seed, allowed=outside_loud_fricatives(pcm, rate))
    _, report = enhance(clicked, rate)
    assert report.clicks_repaired == CLICK_COUNT


def test_clicks_in_speech_at_48_khz_are_repaired(speech: tuple[Pcm16, int]) -> None:
    pcm, rate = speech
    rate_48k = 48_000
    resampled = float_to_pcm16(resample(pcm16_to_float(pcm), rate, rate_48k))
    allowed = outside_loud_fricatives(resampled, rate_48k)
    clicked, _ = with_clicks(resampled, seed=3, rate=rate_48k, allowed=allowed)
    _, clean_report = enhance(resampled, rate_48k)
    _, report = enhance(clicked, rate_48k)
    assert clean_report.clicks_repaired == 0
    assert report.clicks_repaired == CLICK_COUNT
    assert report.samples_repaired == CLICK_COUNT


def test_clean_speech_gets_no_click_repairs(speech: tuple[Pcm16, int]) -> None:
    pcm, rate = speech
    _, report = enhance(pcm, rate)
    assert report.clicks_repaired == 0
    assert report.samples_repaired == 0


def test_clean_signal_at_target_is_nearly_untouched() -> None:
    source = at_loudness(voiced(), DEFAULT_TARGET_LUFS)
    out, report = enhance(source, RATE_HZ)
    assert abs(report.gain_db) < 0.1
    assert snr_db(source, out) > MIN_UNTOUCHED_SNR_DB


def test_speech_at_target_is_nearly_untouched(speech: tuple[Pcm16, int]) -> None:
    pcm, rate = speech
    # Raw TTS speech peaks ~18-20 dB above its loudness: at -16 LUFS the peak guard would act.
    target = -23.0
    source = at_loudness(pcm, target, rate)
    out, report = enhance(source, rate, target_lufs=target)
    assert not report.peak_limited
    assert snr_db(source, out) > MIN_UNTOUCHED_SNR_DB


def test_short_audio_keeps_its_level_and_says_why() -> None:
    source = voiced()[: int(SHORT_SECONDS * RATE_HZ)]
    out, report = enhance(source, RATE_HZ)
    assert out.size == source.size
    assert EnhancementNote.TOO_SHORT_FOR_LOUDNESS in report.notes
    assert report.loudness_before_lufs is None and report.loudness_after_lufs is None
    assert report.gain_db == 0.0
    assert snr_db(source, out) > MIN_UNTOUCHED_SNR_DB


@pytest.mark.parametrize("seconds", [0.0, 0.01, 2.0])
def test_silence_stays_silent_and_says_so(seconds: float) -> None:
    source = np.zeros(int(seconds * RATE_HZ), dtype=np.int16)
    out, report = enhance(source, RATE_HZ)
    assert out.size == source.size and not np.any(out)
    expected = EnhancementNote.EMPTY if source.size == 0 else EnhancementNote.SILENT
    assert report.notes == (expected,)
    assert report.loudness_after_lufs is None and report.gain_db == 0.0


def test_constant_offset_alone_counts_as_silence() -> None:
    source = np.full(RATE_HZ, 1_000, dtype=np.int16)
    out, report = enhance(source, RATE_HZ)
    assert not np.any(out)
    assert report.notes == (EnhancementNote.SILENT,)
    assert report.dc_offset_before == pytest.approx(1_000 / INT16_FULL_SCALE)


def test_near_silent_noise_gets_at_most_the_capped_gain() -> None:
    rng = np.random.default_rng(3)
    source = rng.integers(-30, 31, size=2 * RATE_HZ).astype(np.int16)
    out, report = enhance(source, RATE_HZ)
    assert EnhancementNote.GAIN_CAPPED in report.notes
    assert int(np.max(np.abs(out.astype(np.int32)))) < INT16_FULL_SCALE


def test_report_serializes_to_strict_json() -> None:
    for source in (voiced(), np.zeros(RATE_HZ, dtype=np.int16), voiced()[:100]):
        _, report = enhance(source, RATE_HZ)
        decoded = json.loads(json.dumps(report.to_dict(), allow_nan=False))
        assert decoded["clicks_repaired"] == report.clicks_repaired
        assert decoded["notes"] == [str(note) for note in report.notes]


@pytest.mark.parametrize("target", [-80.0, 3.0, float("nan")])
def test_target_outside_the_range_is_refused(target: float) -> None:
    with pytest.raises(InvalidOptionError, match="target loudness"):
        enhance(voiced(), RATE_HZ, target_lufs=target)

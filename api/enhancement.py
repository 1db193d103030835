"""``enhance_audio=true``: clean-up of synthesized speech before it leaves the service.

Four steps, in this order, each with a maintained DSP library doing the filtering or measuring:

1. DC removal: subtract the mean, then a zero-phase 2nd-order Butterworth high-pass at 20 Hz
   (``scipy.signal.filtfilt`` with Gustafsson's edge handling) for any slow drift.
2. De-click: an isolated impulsive sample stands out of the straight line through its
   neighbours by far more than the local (robust, median-based) spread of that prediction
   error, pushes one way only, a cubic spline (``scipy.interpolate``) bridging it makes its
   surroundings fit again, and nothing else within a millisecond stands out as much. Such
   samples are re-drawn by that spline; steps, plosive bursts, formant ringing and fricatives
   fail a test and are left alone. The count of repairs is reported.
3. Loudness normalisation to an integrated loudness target (ITU-R BS.1770, K-weighted and gated,
   measured with ``pyloudnorm``), default -16 LUFS, with the gain capped at +30 dB so near-silent
   noise is never blown up.
4. Peak guard: the whole signal is scaled down if its true peak (4x oversampled with soxr, as
   BS.1770 specifies) would pass -1 dBFS, so nothing clips. The loudness then lands below the
   target, and the report says so. Piper and espeak-ng speech has its true peak 18-21 dB above
   its integrated loudness, so at the default -16 LUFS the guard usually acts and speech ends
   near -18 to -21 LUFS: a plain gain cannot do better without clipping.

Everything is measured in full-scale float units (1.0 = int16 full scale), loudness in LUFS,
gains in dB. Blocking CPU work: callers on an event loop use ``asyncio.to_thread``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt
import pyloudnorm
from scipy import interpolate, signal

from engines.audio import INT16_FULL_SCALE, Pcm16, float_to_pcm16, pcm16_to_float, resample
from engines.errors import InvalidOptionError

Float64Audio = npt.NDArray[np.float64]

DEFAULT_TARGET_LUFS: Final = -16.0
MIN_TARGET_LUFS: Final = -50.0
MAX_TARGET_LUFS: Final = -5.0
MAX_GAIN_DB: Final = 30.0
"""Largest boost loudness normalisation applies, in dB."""
PEAK_CEILING_DBFS: Final = -1.0
"""True-peak ceiling after normalisation, in dBFS."""
TRUE_PEAK_OVERSAMPLING: Final = 4
"""BS.1770-4 Annex 2: 4x oversampling estimates the inter-sample peak for rates up to 96 kHz."""
LOUDNESS_BLOCK_S: Final = 0.4
"""BS.1770 gating block in seconds; shorter audio has no integrated loudness."""

DC_HIGHPASS_HZ: Final = 20.0
DC_HIGHPASS_ORDER: Final = 2
DC_HIGHPASS_IMPULSE_S: Final = 0.5
"""The high-pass's impulse response is negligible after this (about 40 time constants), in s;
telling Gustafsson's method so makes it linear-time on long audio."""

CLICK_THRESHOLD_MADS: Final = 8.0
"""A sample is impulsive when its prediction error exceeds this many local robust deviations."""
CLICK_SCALE_WINDOW_MS: Final = 20.0
"""Window over which the local spread of the prediction error is measured, in ms."""
CLICK_MAX_DURATION_MS: Final = 0.5
"""Longer impulsive runs are transients of the speech itself, not clicks."""
CLICK_MIN_RUN_SAMPLES: Final = 3
"""A one-sample spike also throws both neighbours' predictions off: a run of three."""
CLICK_MIN_AMPLITUDE: Final = 0.05
"""Smallest repaired excursion from the bridge (full-scale units, -26 dBFS): quieter ticks,
such as espeak-ng's own stop bursts, are part of the speech."""
CLICK_BRIDGE_CONTEXT_SAMPLES: Final = 3
"""Good samples on each side the repairing cubic spline passes through."""
CLICK_SIZEABLE_SHARE: Final = 0.4
"""A click's deviations from the bridge of at least this share of its largest all have one
sign."""
CLICK_ISOLATION_MS: Final = 1.0
"""Around a click (beyond its own neighbours), this long on each side must be quiet, in ms."""
CLICK_ISOLATION_RATIO: Final = 0.3
"""Quiet: no prediction error above this fraction of the click's own (around it, and at its
edges once bridged)."""
_MAD_TO_SIGMA: Final = 1.4826
"""Median absolute deviation times this estimates a Gaussian's standard deviation."""
_MIN_FILTER_SAMPLES: Final = 3 * (DC_HIGHPASS_ORDER + 1)
"""Shorter pieces only have their mean removed."""
_SILENCE_PEAK: Final = 0.5 / INT16_FULL_SCALE
"""Below half an int16 step everything is digital silence (full-scale units)."""


class EnhancementNote(StrEnum):
    """Why a step was skipped or changed its result."""

    EMPTY = "empty"
    SILENT = "silent"
    TOO_SHORT_FOR_LOUDNESS = "too_short_for_loudness"
    BELOW_LOUDNESS_GATE = "below_loudness_gate"
    GAIN_CAPPED = "gain_capped"
    PEAK_LIMITED = "peak_limited"


@dataclass(frozen=True)
class EnhancementReport:
    """What :func:`enhance` measured and did.

    Levels are in full-scale units (``dc_offset_*``), LUFS (``loudness_*``, ``target_lufs``),
    dB (``gain_db``, the total applied gain including the peak guard) and dBFS (peaks: the
    input's largest sample, the output's 4x-oversampled true peak). ``loudness_before_lufs`` is
    measured after DC removal and de-click, just before the gain. A loudness or peak is
    ``None`` where it does not exist (too short, silent).
    """

    sample_rate: int
    duration_s: float
    dc_offset_before: float
    dc_offset_after: float
    loudness_before_lufs: float | None
    loudness_after_lufs: float | None
    target_lufs: float
    gain_db: float
    clicks_repaired: int
    samples_repaired: int
    sample_peak_before_dbfs: float | None
    true_peak_after_dbfs: float | None
    peak_limited: bool
    notes: tuple[EnhancementNote, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: plain floats, ints, bools, strings and ``None``."""
        data = asdict(self)
        data["notes"] = [str(note) for note in self.notes]
        return data


@dataclass(frozen=True)
class ClickRepair:
    """What :func:`repair_clicks` changed."""

    clicks: int
    samples: int


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _db(ratio: float) -> float:
    return 20.0 * math.log10(ratio) if ratio > 0.0 else -math.inf


def _gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def remove_dc(samples: Float64Audio, sample_rate: int) -> Float64Audio:
    """Mean removed, then a zero-phase 20 Hz Butterworth high-pass for slow drift.

    Gustafsson's initial conditions keep the filter's edge transients out of short pieces.
    """
    centred = samples - float(np.mean(samples))
    if centred.size <= _MIN_FILTER_SAMPLES:
        return centred
    b, a = signal.butter(DC_HIGHPASS_ORDER, DC_HIGHPASS_HZ, btype="highpass", fs=sample_rate)
    impulse = round(sample_rate * DC_HIGHPASS_IMPULSE_S)
    irlen = impulse if centred.size > impulse else None
    filtered = signal.filtfilt(b, a, centred, method="gust", irlen=irlen)
    return np.asarray(filtered, dtype=np.float64)


def _local_scale(error: Float64Audio, window: int) -> Float64Audio:
    """Per-sample robust spread (sigma estimate) of ``error`` over windows of ``window``."""
    blocks = -(-error.size // window)
    padded = np.zeros(blocks * window)
    padded[: error.size] = np.abs(error)
    # The prediction error has a median of ~0, so its median absolute value is its MAD.
    block_sigma = np.median(padded.reshape(blocks, window), axis=1) * _MAD_TO_SIGMA
    return np.repeat(block_sigma, window)[: error.size]


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """``(start, end)`` (end exclusive) of each run of True."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _bridge(samples: Float64Audio, start: int, end: int) -> Float64Audio:
    """Samples ``[start, end)`` re-drawn by a cubic spline through the good ones either side."""
    left = np.arange(max(0, start - CLICK_BRIDGE_CONTEXT_SAMPLES), start)
    right = np.arange(end, min(samples.size, end + CLICK_BRIDGE_CONTEXT_SAMPLES))
    known = np.concatenate([left, right])
    spline = interpolate.CubicSpline(known, samples[known])
    return np.asarray(spline(np.arange(start, end)), dtype=np.float64)


def _click_core(
    error: Float64Audio, samples: Float64Audio, start: int, end: int, span: int
) -> tuple[int, int] | None:
    """The samples to re-draw if the run ``[start, end)`` of large prediction errors is an
    isolated impulse; ``None`` if it is part of the sound."""
    limit = CLICK_ISOLATION_RATIO * float(np.max(np.abs(error[start:end])))
    # Beyond its own neighbours, the surroundings must be quiet, or this is one cycle of a
    # high-frequency oscillation (a formant, a fricative), not a click.
    left = error[max(0, start - 1 - span) : max(0, start - 1)]
    right = error[end + 1 : end + 1 + span]
    around = np.abs(np.concatenate([left, right]))
    if around.size and float(np.max(around)) > limit:
        return None
    bridge = _bridge(samples, start, end)
    deviation = samples[start:end] - bridge
    largest = float(np.max(np.abs(deviation)))
    if largest < CLICK_MIN_AMPLITUDE:
        return None
    # A click pushes one way; a step (or the sharp edge of a low-rate sawtooth) crosses the
    # bridge, below it on one side and above it on the other.
    sizeable = np.flatnonzero(np.abs(deviation) >= CLICK_SIZEABLE_SHARE * largest)
    if np.any(deviation[sizeable] > 0) and np.any(deviation[sizeable] < 0):
        return None
    # The bridge must explain the anomaly: with the run re-drawn, the samples at its edges fit
    # their neighbours again. A plosive burst or a step still stands out there.
    lo, hi = max(0, start - 2), min(samples.size, end + 2)
    bridged = samples[lo:hi].copy()
    bridged[start - lo : end - lo] = bridge
    edge_error = bridged[1:-1] - 0.5 * (bridged[:-2] + bridged[2:])
    if edge_error.size and float(np.max(np.abs(edge_error))) > limit:
        return None
    # Neighbours flagged only because the click threw their prediction off are kept.
    return start + int(sizeable[0]), start + int(sizeable[-1]) + 1


def repair_clicks(samples: Float64Audio, sample_rate: int) -> tuple[Float64Audio, ClickRepair]:
    """Find isolated impulsive samples and re-draw them with a cubic spline.

    The prediction error of each sample from the straight line through its two neighbours
    (half the negated second difference) is compared with its local robust spread (median
    absolute value over 20 ms blocks, scaled to a sigma). A run above 8 sigma is a click when
    it is short (<= 0.5 ms), nothing within 1 ms around has even 30 % of its error, it departs
    from a spline through three good samples either side by at least -26 dBFS and in one
    direction only, and with it re-drawn its edges fit their neighbours again. Steps, plosive
    bursts and formant ringing fail one of these and are kept; so, on purpose, are clicks
    buried in loud fricatives, where the local spread is large. Only the samples that really
    depart are re-drawn, not the neighbours the click merely threw off.
    """
    repaired = samples.copy()
    if samples.size < CLICK_MIN_RUN_SAMPLES + 2:
        return repaired, ClickRepair(clicks=0, samples=0)
    error = np.zeros_like(samples)
    error[1:-1] = samples[1:-1] - 0.5 * (samples[:-2] + samples[2:])
    window = max(CLICK_MIN_RUN_SAMPLES, round(sample_rate * CLICK_SCALE_WINDOW_MS / 1000))
    threshold = np.maximum(CLICK_THRESHOLD_MADS * _local_scale(error, window), CLICK_MIN_AMPLITUDE)
    max_run = max(CLICK_MIN_RUN_SAMPLES, round(sample_rate * CLICK_MAX_DURATION_MS / 1000))
    span = max(CLICK_MIN_RUN_SAMPLES, round(sample_rate * CLICK_ISOLATION_MS / 1000))
    clicks = 0
    fixed = 0
    for start, end in _runs(np.abs(error) > threshold):
        if end - start > max_run or start < 1 or end >= samples.size:
            continue
        core = _click_core(error, samples, start, end, span)
        if core is None:
            continue
        repaired[core[0] : core[1]] = _bridge(samples, *core)
        clicks += 1
        fixed += core[1] - core[0]
    return repaired, ClickRepair(clicks=clicks, samples=fixed)


def true_peak(samples: Float64Audio, sample_rate: int) -> float:
    """Largest absolute value after 4x oversampling with soxr (full-scale units)."""
    if samples.size == 0:
        return 0.0
    upsampled = resample(
        samples.astype(np.float32), sample_rate, sample_rate * TRUE_PEAK_OVERSAMPLING
    )
    return max(float(np.max(np.abs(upsampled))), float(np.max(np.abs(samples))))


def integrated_loudness(samples: Float64Audio, sample_rate: int) -> float:
    """BS.1770 integrated loudness in LUFS (``-inf`` below the -70 LUFS gate).

    Raises ``ValueError`` for audio shorter than one 400 ms block.
    """
    meter = pyloudnorm.Meter(sample_rate)
    return float(meter.integrated_loudness(samples))


def _check_target(target_lufs: float) -> None:
    if not (math.isfinite(target_lufs) and MIN_TARGET_LUFS <= target_lufs <= MAX_TARGET_LUFS):
        raise InvalidOptionError(
            f"target loudness must be between {MIN_TARGET_LUFS} and {MAX_TARGET_LUFS} LUFS, "
            f"got {target_lufs}"
        )


@dataclass(frozen=True)
class _Measured:
    """What is known before any processing; enough to report on audio left as it is."""

    sample_rate: int
    duration_s: float
    dc_offset_before: float
    sample_peak_before_dbfs: float | None
    target_lufs: float

    def report_silence(self, note: EnhancementNote) -> EnhancementReport:
        return EnhancementReport(
            sample_rate=self.sample_rate,
            duration_s=self.duration_s,
            dc_offset_before=self.dc_offset_before,
            dc_offset_after=0.0,
            loudness_before_lufs=None,
            loudness_after_lufs=None,
            target_lufs=self.target_lufs,
            gain_db=0.0,
            clicks_repaired=0,
            samples_repaired=0,
            sample_peak_before_dbfs=self.sample_peak_before_dbfs,
            true_peak_after_dbfs=None,
            peak_limited=False,
            notes=(note,),
        )


def enhance(
    pcm: Pcm16, sample_rate: int, target_lufs: float = DEFAULT_TARGET_LUFS
) -> tuple[Pcm16, EnhancementReport]:
    """Remove DC, repair clicks, normalise loudness to ``target_lufs`` (LUFS), guard peaks.

    ``pcm`` is mono int16 at ``sample_rate`` Hz; the result has the same length and rate.
    Audio shorter than 400 ms keeps its level (no integrated loudness exists), silence is
    returned as silence; both are noted in the report. Raises :class:`InvalidOptionError`
    for a target outside -50..-5 LUFS or a non-positive rate.
    """
    _check_target(target_lufs)
    if sample_rate <= 0:
        raise InvalidOptionError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    samples_in = np.asarray(pcm)
    if samples_in.ndim != 1 or samples_in.dtype != np.int16:
        raise ValueError(
            f"expected mono int16 samples, got shape {samples_in.shape} of {samples_in.dtype}"
        )
    original = pcm16_to_float(samples_in).astype(np.float64)
    dc_before = float(np.mean(original)) if original.size else 0.0
    peak_before = float(np.max(np.abs(original))) if original.size else 0.0
    unchanged = _Measured(
        sample_rate=sample_rate,
        duration_s=original.size / sample_rate,
        dc_offset_before=dc_before,
        sample_peak_before_dbfs=_finite_or_none(_db(peak_before)),
        target_lufs=target_lufs,
    )
    if original.size == 0 or float(np.max(np.abs(original - dc_before))) < _SILENCE_PEAK:
        note = EnhancementNote.EMPTY if original.size == 0 else EnhancementNote.SILENT
        return np.zeros(original.size, dtype=np.int16), unchanged.report_silence(note)

    notes: list[EnhancementNote] = []
    cleaned, repair = repair_clicks(remove_dc(original, sample_rate), sample_rate)
    measurable = original.size >= LOUDNESS_BLOCK_S * sample_rate
    loudness_before = integrated_loudness(cleaned, sample_rate) if measurable else -math.inf
    gain_db = 0.0
    if not measurable:
        notes.append(EnhancementNote.TOO_SHORT_FOR_LOUDNESS)
    elif not math.isfinite(loudness_before):
        notes.append(EnhancementNote.BELOW_LOUDNESS_GATE)
    else:
        gain_db = target_lufs - loudness_before
        if gain_db > MAX_GAIN_DB:
            gain_db = MAX_GAIN_DB
            notes.append(EnhancementNote.GAIN_CAPPED)

    ceiling = _gain(PEAK_CEILING_DBFS)
    peak_after_gain = true_peak(cleaned, sample_rate) * _gain(gain_db)
    peak_limited = peak_after_gain > ceiling
    if peak_limited:
        gain_db += _db(ceiling / peak_after_gain)
        notes.append(EnhancementNote.PEAK_LIMITED)
    result = float_to_pcm16(cleaned * _gain(gain_db))
    result_float = pcm16_to_float(result).astype(np.float64)
    loudness_after = integrated_loudness(result_float, sample_rate) if measurable else -math.inf

    return result, EnhancementReport(
        sample_rate=sample_rate,
        duration_s=unchanged.duration_s,
        dc_offset_before=dc_before,
        dc_offset_after=float(np.mean(result_float)),
        loudness_before_lufs=_finite_or_none(loudness_before),
        loudness_after_lufs=_finite_or_none(loudness_after),
        target_lufs=target_lufs,
        gain_db=gain_db,
        clicks_repaired=repair.clicks,
        samples_repaired=repair.samples,
        sample_peak_before_dbfs=unchanged.sample_peak_before_dbfs,
        true_peak_after_dbfs=_finite_or_none(_db(true_peak(result_float, sample_rate))),
        peak_limited=peak_limited,
        notes=tuple(notes),
    )

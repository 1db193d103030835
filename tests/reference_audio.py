"""Reference recordings for the cloning tests: ``tools/benchkit/reference_audio.py``, shared with
the tools."""

from __future__ import annotations

from tools.benchkit.reference_audio import (
    ENCODINGS,
    HARMONICS,
    PEAK,
    PITCH_HZ,
    REFERENCE_RATE_HZ,
    SYLLABLE_HZ,
    VIBRATO_DEPTH_HZ,
    VIBRATO_HZ,
    encode,
    voiced_signal,
)

__all__ = [
    "encode",
    "ENCODINGS",
    "HARMONICS",
    "PEAK",
    "PITCH_HZ",
    "REFERENCE_RATE_HZ",
    "SYLLABLE_HZ",
    "VIBRATO_DEPTH_HZ",
    "VIBRATO_HZ",
    "voiced_signal",
]

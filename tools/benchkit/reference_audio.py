"""Reference recordings for cloning (tests and ``tools.engine_bench``): a voiced signal encoded
as WAV, MP3 or OGG."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import soundfile

from engines.audio import FloatAudio

REFERENCE_RATE_HZ = 24_000
"""A rate every accepted codec can store (Opus needs 8, 12, 16, 24 or 48 kHz)."""
PITCH_HZ = 120.0
VIBRATO_HZ = 5.0
VIBRATO_DEPTH_HZ = 8.0
HARMONICS = 12
SYLLABLE_HZ = 4.0
"""Syllable-rate loudness swings, so the signal has the gaps speech has."""
PEAK = 0.5

ENCODINGS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg-vorbis": ("OGG", "VORBIS"),
    "ogg-opus": ("OGG", "OPUS"),
}


def voiced_signal(seconds: float, rate: int = REFERENCE_RATE_HZ, seed: int = 0) -> FloatAudio:
    """A harmonic, pitch-varying, syllable-modulated signal: voice-like energy, no words."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = PITCH_HZ + VIBRATO_DEPTH_HZ * np.sin(2 * np.pi * VIBRATO_HZ * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = np.zeros_like(t)
    for k in range(1, HARMONICS + 1):
        voice += np.sin(k * phase) / k
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * SYLLABLE_HZ * t)
    noisy = voice * envelope + 0.02 * rng.standard_normal(t.size)
    scaled: FloatAudio = (PEAK * noisy / np.max(np.abs(noisy))).astype(np.float32)
    return scaled


def encode(audio: npt.NDArray[np.floating], encoding: str, rate: int = REFERENCE_RATE_HZ) -> bytes:
    """``audio`` as a file of one of ``ENCODINGS``."""
    container, subtype = ENCODINGS[encoding]
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, format=container, subtype=subtype)
    return buffer.getvalue()

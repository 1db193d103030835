"""Checks on produced audio shared by the tests."""

from __future__ import annotations

import threading

import numpy as np

from engines.audio import AudioChunk, Pcm16, float_to_pcm16, largest_step
from engines.espeak_engine import EspeakBackend
from engines.voices import EspeakBinding

JOIN_WINDOW_MS = 5


def join_and_inner_steps(chunks: list[AudioChunk]) -> tuple[int, int]:
    """Largest sample step across each join (±5 ms) and largest step inside the chunks."""
    rate = chunks[0].sample_rate
    window = rate * JOIN_WINDOW_MS // 1000
    join_step = 0
    for before, after in zip(chunks, chunks[1:], strict=False):
        around = np.concatenate([before.pcm[-window:], after.pcm[:window]])
        join_step = max(join_step, largest_step(around))
    inner_step = max(largest_step(chunk.pcm) for chunk in chunks)
    return join_step, inner_step


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if pcm.size else 0.0


def espeak_speech(text: str) -> tuple[Pcm16, int]:
    """``text`` spoken by espeak-ng (the engine every install has), with its sample rate."""
    backend = EspeakBackend()
    backend.load()
    try:
        tts = backend.create_tts(EspeakBinding(voice="en-us"), speed=1.0)
        audio = backend.synthesize_blocking(text, tts._opts, threading.Event())
        return float_to_pcm16(audio), backend.sample_rate
    finally:
        backend.close()

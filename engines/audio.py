"""Audio inside the service: mono 16-bit PCM with an explicit sample rate.

Every conversion lives here: float <-> int16, resampling (soxr, never a hand-written loop), WAV
encoding, and the shaping that lets separately synthesized pieces join without a click or a gap
longer than the pause the text calls for.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from .segmenter import Boundary

LIVEKIT_SAMPLE_RATE = 48_000
INT16_FULL_SCALE = 32_767
SUPPORTED_OUTPUT_RATES = (8_000, 16_000, 22_050, 24_000, 44_100, 48_000)

FloatAudio = npt.NDArray[np.float32]
Pcm16 = npt.NDArray[np.int16]


def float_to_pcm16(samples: npt.NDArray[np.floating]) -> Pcm16:
    """Float audio in [-1, 1] to int16, clipping anything outside."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return np.round(clipped * INT16_FULL_SCALE).astype(np.int16)


def pcm16_to_float(samples: Pcm16) -> FloatAudio:
    return (np.asarray(samples, dtype=np.float32) / INT16_FULL_SCALE).astype(np.float32)


def resample(samples: FloatAudio, from_hz: int, to_hz: int) -> FloatAudio:
    """Resample mono float audio with soxr (high quality)."""
    if from_hz == to_hz or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    out = soxr.resample(samples.astype(np.float32, copy=False), from_hz, to_hz, quality="HQ")
    return np.asarray(out, dtype=np.float32)


def wav_bytes(pcm: Pcm16, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return buffer.getvalue()


def write_wav(path: Path, pcm: Pcm16, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_bytes(pcm, sample_rate))


def read_wav(data: bytes) -> tuple[Pcm16, int]:
    """Decode a mono 16-bit WAV (as written by :func:`wav_bytes`)."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError("only 16-bit WAV is supported")
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        channels = wav.getnchannels()
        rate = wav.getframerate()
    if channels > 1:
        frames = frames.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return frames.astype(np.int16), rate


def largest_step(pcm: Pcm16) -> int:
    """Largest absolute difference between neighbouring samples: a click shows up here."""
    if pcm.size < 2:
        return 0
    return int(np.max(np.abs(np.diff(pcm.astype(np.int32)))))


@dataclass(frozen=True)
class AudioChunk:
    """A run of mono int16 samples ready to leave the service."""

    pcm: Pcm16
    sample_rate: int
    text: str = ""
    """What this audio says (one text piece; empty where unknown), for captions."""
    ends_piece: bool = False
    """The last audio of the piece whose ``text`` an earlier (or this) chunk carried: the
    piece's words can be placed now (``engines.word_timings``)."""
    word_weights: tuple[float, ...] | None = None
    """On a piece's last chunk: how long each of its words took by the engine's own measure
    (a duration predictor's frames), where the engine knows."""

    @property
    def duration_s(self) -> float:
        return self.pcm.size / self.sample_rate

    def to_bytes(self) -> bytes:
        return np.asarray(self.pcm, dtype="<i2").tobytes()

    @classmethod
    def join(cls, pieces: list[Pcm16], sample_rate: int) -> AudioChunk:
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
        return cls(pcm.astype(np.int16, copy=False), sample_rate)


@dataclass(frozen=True)
class JoinPolicy:
    """How pieces are trimmed and spaced. Times in milliseconds, levels in dB."""

    pause_ms: dict[Boundary, int] = field(
        default_factory=lambda: {
            Boundary.SENTENCE: 260,
            Boundary.CLAUSE: 120,
            Boundary.WORD: 0,
            Boundary.END: 0,
        }
    )
    silence_below_peak_db: float = 42.0
    """A 10 ms window quieter than this below the piece's loudest window is silence."""
    absolute_floor: float = 0.002
    head_keep_ms: int = 10
    tail_keep_ms: int = 60
    """Kept after the last loud window so a final fricative or release is never cut."""
    fade_in_ms: int = 5
    fade_out_ms: int = 12


_WINDOW_MS = 10


def speech_bounds(samples: FloatAudio, sample_rate: int, policy: JoinPolicy) -> tuple[int, int]:
    """First and last sample (end exclusive) of the audible part, with the kept margins."""
    window = max(1, sample_rate * _WINDOW_MS // 1000)
    usable = samples.size - samples.size % window
    if usable == 0:
        return 0, samples.size
    rms = np.sqrt(np.mean(samples[:usable].reshape(-1, window) ** 2, axis=1))
    threshold = max(
        policy.absolute_floor, float(rms.max()) * 10 ** (-policy.silence_below_peak_db / 20)
    )
    loud = np.flatnonzero(rms > threshold)
    if loud.size == 0:
        return 0, 0
    head = max(0, loud[0] * window - sample_rate * policy.head_keep_ms // 1000)
    tail = min(samples.size, (loud[-1] + 1) * window + sample_rate * policy.tail_keep_ms // 1000)
    return int(head), int(tail)


def _raised_cosine(length: int) -> FloatAudio:
    return (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, length))).astype(np.float32)


def shape_piece(samples: FloatAudio, sample_rate: int, policy: JoinPolicy) -> FloatAudio:
    """Trim silence around a piece and fade its edges so joins cannot click."""
    start, end = speech_bounds(samples, sample_rate, policy)
    piece = samples[start:end].astype(np.float32, copy=True)
    fade_in = min(piece.size // 2, sample_rate * policy.fade_in_ms // 1000)
    fade_out = min(piece.size // 2, sample_rate * policy.fade_out_ms // 1000)
    if fade_in > 1:
        piece[:fade_in] *= _raised_cosine(fade_in)
    if fade_out > 1:
        piece[-fade_out:] *= _raised_cosine(fade_out)[::-1]
    return piece


STREAM_HOLD_MS = 30
"""Held back from a streamed piece until it ends, so its end can still be faded (more than
``fade_out_ms``). Short: a windowed engine's first window is ~140 ms, of which ~20-50 ms is
leading silence, and what is held is not heard yet."""


class PieceStreamer:
    """``shape_piece`` for a piece whose audio arrives in parts, resampled as it goes.

    Leading silence (below the policy's absolute floor) is dropped and the first audible part
    fades in; the last ``STREAM_HOLD_MS`` and any silence after the last audible sample are held
    until more audio or :meth:`finish`, which trims trailing silence (keeping ``tail_keep_ms``)
    and fades out. Unlike ``shape_piece`` it cannot
    compare with the piece's loudest part, which has not arrived yet."""

    def __init__(self, sample_rate: int, out_rate: int, policy: JoinPolicy) -> None:
        self._rate = sample_rate
        self._policy = policy
        self._hold = sample_rate * STREAM_HOLD_MS // 1000
        self._held = np.zeros(0, dtype=np.float32)
        self._started = False
        self._resampler = (
            soxr.ResampleStream(sample_rate, out_rate, 1, dtype="float32", quality="HQ")
            if sample_rate != out_rate
            else None
        )

    def push(self, block: FloatAudio) -> FloatAudio:
        """Audio ready to go out (at the output rate); often empty."""
        if not self._started:
            audible = np.flatnonzero(np.abs(block) > self._policy.absolute_floor)
            if audible.size == 0:
                return np.zeros(0, dtype=np.float32)
            keep = self._rate * self._policy.head_keep_ms // 1000
            block = block[max(0, int(audible[0]) - keep) :].astype(np.float32, copy=True)
            fade = min(block.size, self._rate * self._policy.fade_in_ms // 1000)
            if fade > 1:
                block[:fade] *= _raised_cosine(fade)
            self._started = True
        held = np.concatenate([self._held, block.astype(np.float32, copy=False)])
        audible = np.flatnonzero(np.abs(held) > self._policy.absolute_floor)
        # silence after the last audible sample waits: it may be the piece's trailing silence
        split = int(audible[-1]) + 1 - self._hold if audible.size else 0
        if split <= 0:
            self._held = held
            return np.zeros(0, dtype=np.float32)
        ready, self._held = held[:split], held[split:]
        return self._resample(ready, last=False)

    def finish(self) -> FloatAudio:
        """The held end of the piece, trimmed and faded (at the output rate)."""
        tail = self._held.copy()
        audible = np.flatnonzero(np.abs(tail) > self._policy.absolute_floor)
        keep = self._rate * self._policy.tail_keep_ms // 1000
        end = min(tail.size, int(audible[-1]) + 1 + keep) if audible.size else 0
        tail = tail[:end]
        fade = min(tail.size, self._rate * self._policy.fade_out_ms // 1000)
        if fade > 1:
            tail[-fade:] *= _raised_cosine(fade)[::-1]
        self._held = np.zeros(0, dtype=np.float32)
        return self._resample(tail, last=True) if self._started else np.zeros(0, np.float32)

    def _resample(self, samples: FloatAudio, *, last: bool) -> FloatAudio:
        if self._resampler is None:
            return samples
        out = self._resampler.resample_chunk(samples, last=last)
        return np.asarray(out, dtype=np.float32)


def pause(boundary: Boundary | None, sample_rate: int, policy: JoinPolicy) -> FloatAudio:
    """Silence to put before the next piece, after a piece that ended at ``boundary``."""
    if boundary is None:
        return np.zeros(0, dtype=np.float32)
    return np.zeros(sample_rate * policy.pause_ms[boundary] // 1000, dtype=np.float32)

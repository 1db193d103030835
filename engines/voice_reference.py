"""Reference recordings for voice cloning: decoded, measured and checked in one place.

A caller sends a short recording of the voice to clone, as base64 text (optionally a
``data:audio/...;base64,`` URL) or as raw bytes of a WAV, MP3 or OGG (Vorbis or Opus) file.
:func:`decode_voice_reference` turns it into mono float audio at the file's own sample rate
(the cloning engine resamples as its model expects) or raises a typed request error saying what
was wrong and what the limits are. It is blocking (it decodes audio): call it in a thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import re
from dataclasses import dataclass

import numpy as np
import soundfile

from .audio import FloatAudio
from .errors import RequestError

MIN_REFERENCE_S = 3.0
"""Shortest reference that carries enough of a voice to clone."""
MAX_REFERENCE_S = 30.0
"""Longest reference accepted (XTTS uses at most its first 30 s anyway)."""
MAX_REFERENCE_BYTES = 6 * 1024 * 1024
"""Largest encoded file: 30 s of 48 kHz stereo 16-bit WAV is ~5.8 MB."""
BASE64_LINE_CHARS = 76
MAX_REFERENCE_BASE64_CHARS = (
    4 * math.ceil(MAX_REFERENCE_BYTES / 3) * (BASE64_LINE_CHARS + 2) // BASE64_LINE_CHARS + 256
)
"""Largest base64 text: the encoded file, MIME line breaks and a data-URL header."""
MIN_SAMPLE_RATE_HZ = 8_000
SILENCE_RMS_DBFS = -50.0
"""A reference (or a 20 ms frame of it) quieter than this carries no speech."""
LEVEL_FRAME_MS = 20
MIN_VOICED_S = 1.0
"""Frames above ``SILENCE_RMS_DBFS`` must add up to at least this much."""
ACCEPTED_FORMATS = "WAV, MP3 or OGG (Vorbis or Opus)"

_CONTAINERS = {"WAV": "WAV", "WAVEX": "WAV", "RF64": "WAV", "MP3": "MP3", "OGG": "OGG"}
_DATA_URL = re.compile(r"^data:(?P<media>[^,;]*)(?P<params>(;[^,;]*)*?),", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


class VoiceReferenceError(RequestError):
    """A reference recording that cannot be used for cloning."""

    code = "reference_invalid"


class ReferenceUnreadableError(VoiceReferenceError):
    code = "reference_unreadable"


class ReferenceTooLargeError(VoiceReferenceError):
    code = "reference_too_large"
    http_status = 413


class ReferenceTooShortError(VoiceReferenceError):
    code = "reference_too_short"


class ReferenceTooLongError(VoiceReferenceError):
    code = "reference_too_long"


class ReferenceSilentError(VoiceReferenceError):
    code = "reference_silent"


@dataclass(frozen=True)
class VoiceReference:
    """A decoded reference recording, identified by the SHA-256 of the file's bytes."""

    audio: FloatAudio
    """Mono float32 samples in [-1, 1]."""
    sample_rate: int
    """Hz, the file's own rate."""
    digest: str
    """SHA-256 hex digest of the encoded file (the same whether sent as base64 or raw)."""
    duration_s: float


def decode_voice_reference(data: str | bytes) -> VoiceReference:
    """Decode and check a reference recording (blocking; run it in a thread).

    ``data`` is base64 text (optionally a ``data:`` URL) or the raw bytes of a WAV, MP3 or OGG
    file. Raises a :class:`VoiceReferenceError` subclass naming what was wrong and the limits.
    """
    raw = _base64_payload(data) if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_REFERENCE_BYTES:
        raise ReferenceTooLargeError(
            f"the reference recording is {len(raw)} bytes; the limit is {MAX_REFERENCE_BYTES} "
            f"bytes ({MAX_REFERENCE_S:g} s of 48 kHz stereo 16-bit WAV fits)"
        )
    if not raw:
        raise ReferenceUnreadableError(
            f"the reference recording is empty; send a {ACCEPTED_FORMATS} file of "
            f"{MIN_REFERENCE_S:g} to {MAX_REFERENCE_S:g} s"
        )
    audio, sample_rate = _decode_audio(raw)
    duration_s = audio.size / sample_rate
    if duration_s < MIN_REFERENCE_S:
        raise ReferenceTooShortError(
            f"the reference recording lasts {duration_s:.2f} s; it must last "
            f"{MIN_REFERENCE_S:g} to {MAX_REFERENCE_S:g} s"
        )
    _check_voiced(audio, sample_rate)
    return VoiceReference(
        audio=audio,
        sample_rate=sample_rate,
        digest=hashlib.sha256(raw).hexdigest(),
        duration_s=duration_s,
    )


def _base64_payload(text: str) -> bytes:
    if len(text) > MAX_REFERENCE_BASE64_CHARS:
        raise ReferenceTooLargeError(
            f"the reference recording's base64 text has {len(text)} characters; the limit is "
            f"{MAX_REFERENCE_BASE64_CHARS} ({MAX_REFERENCE_BYTES} bytes once decoded)"
        )
    body = text.strip()
    header = _DATA_URL.match(body)
    if header is not None:
        if ";base64" not in header.group("params").lower():
            raise ReferenceUnreadableError(
                "the reference data URL is not base64-encoded; send "
                f"'data:audio/...;base64,...' of a {ACCEPTED_FORMATS} file"
            )
        body = body[header.end() :]
    compact = _WHITESPACE.sub("", body)
    compact += "=" * (-len(compact) % 4)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    try:
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise ReferenceUnreadableError(
            f"the reference recording is not valid base64; send a {ACCEPTED_FORMATS} file as "
            "base64 text (optionally a 'data:audio/...;base64,' URL)"
        ) from None


def _container(raw: bytes) -> str | None:
    """The container the first bytes announce (checked before libsndfile guesses)."""
    if raw[:4] in (b"RIFF", b"RF64") and raw[8:12] == b"WAVE":
        return "WAV"
    if raw[:4] == b"OggS":
        return "OGG"
    if raw[:3] == b"ID3" or (len(raw) > 1 and raw[0] == 0xFF and raw[1] & 0xE0 == 0xE0):
        return "MP3"
    return None


def _unreadable(reason: str) -> ReferenceUnreadableError:
    return ReferenceUnreadableError(
        f"the reference recording could not be decoded ({reason}); send a {ACCEPTED_FORMATS} "
        f"file of {MIN_REFERENCE_S:g} to {MAX_REFERENCE_S:g} s"
    )


def _decode_audio(raw: bytes) -> tuple[FloatAudio, int]:
    expected = _container(raw)
    if expected is None:
        raise _unreadable("it is not a WAV, MP3 or OGG file")
    try:
        with soundfile.SoundFile(io.BytesIO(raw)) as audio_file:
            container = _CONTAINERS.get(audio_file.format)
            if container != expected:
                raise _unreadable(f"{expected} header but {audio_file.format} content")
            sample_rate = int(audio_file.samplerate)
            if sample_rate < MIN_SAMPLE_RATE_HZ:
                raise _unreadable(
                    f"its sample rate is {sample_rate} Hz, below {MIN_SAMPLE_RATE_HZ} Hz"
                )
            # read one frame past the limit only: a small compressed file may decode to hours
            limit = int(MAX_REFERENCE_S * sample_rate)
            frames = audio_file.read(limit + 1, dtype="float32", always_2d=True)
    except VoiceReferenceError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise _unreadable(str(exc).strip() or type(exc).__name__) from None
    if frames.shape[0] > limit:
        raise ReferenceTooLongError(
            f"the reference recording lasts more than {MAX_REFERENCE_S:g} s; it must last "
            f"{MIN_REFERENCE_S:g} to {MAX_REFERENCE_S:g} s (trim it)"
        )
    if not np.all(np.isfinite(frames)):
        raise _unreadable("it contains samples that are not finite numbers")
    mono = frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]
    return np.clip(mono, -1.0, 1.0).astype(np.float32), sample_rate


def _dbfs(rms: float) -> float:
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def _check_voiced(audio: FloatAudio, sample_rate: int) -> None:
    samples = audio.astype(np.float64)
    level = _dbfs(float(np.sqrt(np.mean(samples**2))))
    frame = max(1, sample_rate * LEVEL_FRAME_MS // 1000)
    count = samples.size // frame
    frame_rms = np.sqrt(np.mean(samples[: count * frame].reshape(count, frame) ** 2, axis=1))
    voiced_s = float(np.count_nonzero(frame_rms > 10 ** (SILENCE_RMS_DBFS / 20))) * frame
    voiced_s /= sample_rate
    if level < SILENCE_RMS_DBFS or voiced_s < MIN_VOICED_S:
        shown = "-inf" if math.isinf(level) else f"{level:.1f}"
        raise ReferenceSilentError(
            f"the reference recording has no speech to clone: its level is {shown} dBFS and "
            f"{voiced_s:.2f} s of it is louder than {SILENCE_RMS_DBFS:g} dBFS; it needs a "
            f"level above {SILENCE_RMS_DBFS:g} dBFS and at least {MIN_VOICED_S:g} s of speech"
        )

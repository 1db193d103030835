"""Reference recordings for cloning: every accepted format decodes, every bad one is named."""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import pytest

from engines.errors import RequestError
from engines.voice_reference import (
    MAX_REFERENCE_BASE64_CHARS,
    MAX_REFERENCE_BYTES,
    MAX_REFERENCE_S,
    MIN_REFERENCE_S,
    ReferenceSilentError,
    ReferenceTooLargeError,
    ReferenceTooLongError,
    ReferenceTooShortError,
    ReferenceUnreadableError,
    VoiceReferenceError,
    decode_voice_reference,
)
from tests.reference_audio import ENCODINGS, REFERENCE_RATE_HZ, encode, voiced_signal

REFERENCE_SECONDS = 5.0
CODEC_LENGTH_SLACK_S = 0.1
"""Encoder delay and padding of the lossy codecs."""
WAV_48K_STEREO_30S_BYTES = 30 * 48_000 * 2 * 2 + 44


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return voiced_signal(REFERENCE_SECONDS)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_each_accepted_format_decodes_to_mono_float(voice: np.ndarray, encoding: str) -> None:
    data = encode(voice, encoding)
    reference = decode_voice_reference(data)
    assert reference.sample_rate == REFERENCE_RATE_HZ
    assert reference.audio.dtype == np.float32 and reference.audio.ndim == 1
    assert reference.duration_s == pytest.approx(REFERENCE_SECONDS, abs=CODEC_LENGTH_SLACK_S)
    assert reference.audio.size == pytest.approx(
        reference.duration_s * reference.sample_rate, abs=1
    )
    assert np.all(np.isfinite(reference.audio)) and np.max(np.abs(reference.audio)) <= 1.0
    assert reference.digest == hashlib.sha256(data).hexdigest()


def test_base64_and_data_url_give_the_same_reference_as_raw_bytes(voice: np.ndarray) -> None:
    data = encode(voice, "wav")
    text = base64.b64encode(data).decode()
    raw = decode_voice_reference(data)
    for sent in (
        text,
        f"data:audio/wav;base64,{text}",
        base64.encodebytes(data).decode(),  # MIME line breaks
        text.rstrip("="),
    ):
        reference = decode_voice_reference(sent)
        assert reference.digest == raw.digest
        np.testing.assert_array_equal(reference.audio, raw.audio)


def test_stereo_is_mixed_to_mono(voice: np.ndarray) -> None:
    stereo = np.stack([voice, voice * 0.5], axis=1)
    reference = decode_voice_reference(encode(stereo, "wav"))
    assert reference.audio.ndim == 1
    assert np.max(np.abs(reference.audio)) == pytest.approx(0.75 * np.max(np.abs(voice)), rel=0.01)


def test_one_second_is_too_short() -> None:
    with pytest.raises(ReferenceTooShortError) as caught:
        decode_voice_reference(encode(voiced_signal(1.0), "wav"))
    assert caught.value.code == "reference_too_short"
    assert f"{MIN_REFERENCE_S:g}" in caught.value.message
    assert f"{MAX_REFERENCE_S:g}" in caught.value.message


@pytest.mark.parametrize("encoding", ["wav", "ogg-vorbis"])
def test_forty_seconds_is_too_long(encoding: str) -> None:
    with pytest.raises(ReferenceTooLongError) as caught:
        decode_voice_reference(encode(voiced_signal(40.0), encoding))
    assert caught.value.code == "reference_too_long"
    assert f"{MAX_REFERENCE_S:g} s" in caught.value.message


def test_zeros_are_silent() -> None:
    silence = np.zeros(int(REFERENCE_SECONDS * REFERENCE_RATE_HZ), dtype=np.float32)
    with pytest.raises(ReferenceSilentError) as caught:
        decode_voice_reference(encode(silence, "wav"))
    assert caught.value.code == "reference_silent"
    assert "-50 dBFS" in caught.value.message


def test_one_click_in_silence_is_silent() -> None:
    clicked = np.zeros(int(REFERENCE_SECONDS * REFERENCE_RATE_HZ), dtype=np.float32)
    clicked[1000:1010] = 0.9
    with pytest.raises(ReferenceSilentError):
        decode_voice_reference(encode(clicked, "wav"))


def test_faint_hiss_is_silent(voice: np.ndarray) -> None:
    with pytest.raises(ReferenceSilentError):
        decode_voice_reference(encode(voice * 10 ** (-60 / 20), "wav"))


@pytest.mark.parametrize(
    "data",
    [
        b"\x00garbage bytes that are no audio file at all" * 20,
        b"RIFF\x10\x00\x00\x00WAVEfmt broken header",
        b"OggS" + bytes(200),
        b"",
        "!!! not base64 !!!",
        "data:audio/wav,plain-text-not-base64",
        base64.b64encode(b"PK\x03\x04 a zip file, not audio").decode(),
    ],
    ids=["garbage", "broken-wav", "broken-ogg", "empty", "bad-base64", "not-base64-url", "zip"],
)
def test_unreadable_references_name_the_accepted_formats(data: str | bytes) -> None:
    with pytest.raises(ReferenceUnreadableError) as caught:
        decode_voice_reference(data)
    assert caught.value.code == "reference_unreadable"
    assert "WAV, MP3 or OGG" in caught.value.message


def test_a_flac_file_is_not_accepted(voice: np.ndarray) -> None:
    import io

    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, voice, REFERENCE_RATE_HZ, format="FLAC")
    with pytest.raises(ReferenceUnreadableError):
        decode_voice_reference(buffer.getvalue())


def test_size_bound_fits_thirty_seconds_of_48k_stereo_wav() -> None:
    assert MAX_REFERENCE_BYTES > WAV_48K_STEREO_30S_BYTES
    base64_len = 4 * -(-MAX_REFERENCE_BYTES // 3)
    assert MAX_REFERENCE_BASE64_CHARS > base64_len


def test_too_large_is_refused_before_decoding() -> None:
    with pytest.raises(ReferenceTooLargeError) as caught:
        decode_voice_reference(b"RIFF" + bytes(MAX_REFERENCE_BYTES))
    assert caught.value.code == "reference_too_large"
    assert caught.value.http_status == 413
    assert str(MAX_REFERENCE_BYTES) in caught.value.message
    with pytest.raises(ReferenceTooLargeError):
        decode_voice_reference("A" * (MAX_REFERENCE_BASE64_CHARS + 1))


def test_errors_are_request_errors() -> None:
    for error in (
        ReferenceUnreadableError,
        ReferenceTooLargeError,
        ReferenceTooShortError,
        ReferenceTooLongError,
        ReferenceSilentError,
    ):
        assert issubclass(error, VoiceReferenceError) and issubclass(error, RequestError)
        assert error("x").to_dict()["code"].startswith("reference_")

"""Streaming encoders: each format decodes back to the audio that went in, chunk by chunk."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import av
import numpy as np
import pytest
from scipy import signal

from api.encoders import (
    AAC_SAMPLE_RATES_HZ,
    CONTENT_TYPES,
    MP3_SAMPLE_RATES_HZ,
    WAV_HEADER_BYTES,
    WAV_UNKNOWN_SIZE,
    AudioFormat,
    EncoderFinishedError,
    StreamEncoder,
    content_type,
    create_encoder,
    encode_whole,
    parse_format,
)
from engines.audio import (
    INT16_FULL_SCALE,
    Pcm16,
    float_to_pcm16,
    largest_step,
    pcm16_to_float,
    read_wav,
    resample,
)
from engines.errors import InvalidOptionError
from tests.audio_checks import espeak_speech

SPEECH_TEXT = "The quick brown fox jumps over the lazy dog, then naps in the warm sun."
CHORD_RATE_HZ = 24_000
CHORD_SECONDS = 3.0
CHORD_HZ = ((261.63, 329.63, 392.0), (293.66, 349.23, 440.0), (329.63, 392.0, 493.88))
CHORD_AMPLITUDE = 0.2
CHUNK_MS = 100
MIN_CORRELATION = 0.9
MAX_CODEC_DELAY_S = 0.15
"""Lag searched when aligning a lossy decode with its input."""
OPUS_LENGTH_TOLERANCE_S = 0.025
"""One 20 ms Opus frame plus rounding of the pre-skip."""
MP3_LENGTH_TOLERANCE_S = 3 * 1152 / 22_050
"""Encoder delay, decoder delay and the last frame's padding: under three MPEG frames."""
FIRST_BYTES_WITHIN_S = 1.0
"""For a streaming format, encoded bytes must leave before this much audio went in."""
OPUS_HEAD_RATE_OFFSET = 12


@dataclass(frozen=True)
class Decoded:
    container: str
    codec: str
    sample_rate: int
    samples: Pcm16


@pytest.fixture(scope="module")
def speech() -> tuple[Pcm16, int]:
    """A sentence of espeak-ng speech (22.05 kHz), the engine every install has."""
    return espeak_speech(SPEECH_TEXT)


def chords() -> Pcm16:
    """Three major triads, one second each, with soft edges: a tonal, non-speech signal."""
    per_chord = int(CHORD_RATE_HZ * CHORD_SECONDS / len(CHORD_HZ))
    t = np.arange(per_chord) / CHORD_RATE_HZ
    envelope = np.sin(np.pi * np.arange(per_chord) / per_chord)
    pieces = [
        envelope * sum(np.sin(2 * np.pi * f * t) for f in chord) / len(chord) for chord in CHORD_HZ
    ]
    return float_to_pcm16(CHORD_AMPLITUDE * np.concatenate(pieces))


def encode_in_chunks(
    fmt: AudioFormat, pcm: Pcm16, sample_rate: int
) -> tuple[StreamEncoder, list[bytes], bytes]:
    encoder = create_encoder(fmt, sample_rate)
    step = sample_rate * CHUNK_MS // 1000
    chunks = [encoder.encode(pcm[i : i + step]) for i in range(0, pcm.size, step)]
    return encoder, chunks, encoder.finish()


def decode(data: bytes) -> Decoded:
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        raw = np.concatenate(frames)
        is_int = raw.dtype == np.int16
        samples = raw.astype(np.int16) if is_int else float_to_pcm16(raw.astype(np.float32))
        return Decoded(container.format.name, stream.codec_context.name, stream.rate, samples)


def aligned_correlation(reference: Pcm16, decoded: Pcm16, max_lag: int) -> float:
    """Pearson correlation of ``decoded`` with ``reference`` after the best shift (samples)."""
    ref = reference.astype(np.float64)
    out = decoded.astype(np.float64)
    lags = signal.correlation_lags(out.size, ref.size, mode="full")
    xcorr = signal.correlate(out, ref, mode="full", method="fft")
    window = np.abs(lags) <= max_lag
    lag = int(lags[window][np.argmax(xcorr[window])])
    shifted = out[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag), out])
    length = min(shifted.size, ref.size)
    return float(np.corrcoef(shifted[:length], ref[:length])[0, 1])


def opus_head_input_rate(data: bytes) -> int:
    head = data.index(b"OpusHead")
    start = head + OPUS_HEAD_RATE_OFFSET
    return int.from_bytes(data[start : start + 4], "little")


def test_pcm_is_raw_little_endian_passthrough(speech: tuple[Pcm16, int]) -> None:
    pcm, rate = speech
    encoder, chunks, tail = encode_in_chunks(AudioFormat.PCM, pcm, rate)
    data = b"".join(chunks) + tail
    assert encoder.sample_rate == rate
    assert np.array_equal(np.frombuffer(data, dtype="<i2"), pcm)
    assert content_type(AudioFormat.PCM, rate) == f"audio/pcm;rate={rate};channels=1"


def test_wav_stream_has_unknown_sizes_and_the_exact_samples(speech: tuple[Pcm16, int]) -> None:
    pcm, rate = speech
    encoder, chunks, tail = encode_in_chunks(AudioFormat.WAV, pcm, rate)
    data = b"".join(chunks) + tail
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert int.from_bytes(data[4:8], "little") == WAV_UNKNOWN_SIZE
    assert int.from_bytes(data[WAV_HEADER_BYTES - 4 : WAV_HEADER_BYTES], "little") == (
        WAV_UNKNOWN_SIZE
    )
    assert len(chunks[0]) > WAV_HEADER_BYTES  # the header leaves with the first audio

    samples, decoded_rate = read_wav(data)
    assert decoded_rate == rate == encoder.sample_rate
    assert np.array_equal(samples, pcm)

    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, rate)

    ffmpeg_view = decode(data)
    assert (ffmpeg_view.container, ffmpeg_view.codec) == ("wav", "pcm_s16le")
    assert np.array_equal(ffmpeg_view.samples, pcm)


def test_wav_of_nothing_is_a_header(speech: tuple[Pcm16, int]) -> None:
    _, rate = speech
    encoder = create_encoder(AudioFormat.WAV, rate)
    data = encoder.finish()
    samples, decoded_rate = read_wav(data)
    assert (samples.size, decoded_rate) == (0, rate)


def test_encode_whole_wav_has_exact_sizes(speech: tuple[Pcm16, int]) -> None:
    pcm, rate = speech
    data = encode_whole(AudioFormat.WAV, pcm, rate)
    assert int.from_bytes(data[WAV_HEADER_BYTES - 4 : WAV_HEADER_BYTES], "little") == pcm.size * 2
    samples, _ = read_wav(data)
    assert np.array_equal(samples, pcm)


@pytest.mark.parametrize("source", ["speech", "chords"])
def test_flac_stream_decodes_to_identical_samples(source: str, speech: tuple[Pcm16, int]) -> None:
    pcm, rate = speech if source == "speech" else (chords(), CHORD_RATE_HZ)
    encoder, chunks, tail = encode_in_chunks(AudioFormat.FLAC, pcm, rate)
    decoded = decode(b"".join(chunks) + tail)
    assert (decoded.container, decoded.codec) == ("flac", "flac")
    assert decoded.sample_rate == rate == encoder.sample_rate
    assert np.array_equal(decoded.samples, pcm)


@pytest.mark.parametrize("source", ["speech", "chords"])
def test_mp3_stream_decodes_to_the_same_signal(source: str, speech: tuple[Pcm16, int]) -> None:
    pcm, rate = speech if source == "speech" else (chords(), CHORD_RATE_HZ)
    encoder, chunks, tail = encode_in_chunks(AudioFormat.MP3, pcm, rate)
    decoded = decode(b"".join(chunks) + tail)
    assert (decoded.container, decoded.codec) == ("mp3", "mp3float")
    assert decoded.sample_rate == rate == encoder.sample_rate
    assert 0 <= decoded.samples.size - pcm.size <= MP3_LENGTH_TOLERANCE_S * rate
    max_lag = int(MAX_CODEC_DELAY_S * rate)
    assert aligned_correlation(pcm, decoded.samples, max_lag) > MIN_CORRELATION


@pytest.mark.parametrize("source", ["speech", "chords"])
def test_opus_stream_is_ogg_opus_of_the_same_signal(source: str, speech: tuple[Pcm16, int]) -> None:
    pcm, rate = speech if source == "speech" else (chords(), CHORD_RATE_HZ)
    encoder, chunks, tail = encode_in_chunks(AudioFormat.OPUS, pcm, rate)
    data = b"".join(chunks) + tail
    decoded = decode(data)
    assert (decoded.container, decoded.codec) == ("ogg", "opus")
    # Opus carries 8/12/16/24/48 kHz; 22.05 kHz speech goes up to 48 kHz, 24 kHz stays.
    expected_rate = 48_000 if rate == 22_050 else rate
    assert encoder.sample_rate == expected_rate == opus_head_input_rate(data)
    assert decoded.sample_rate == 48_000  # Opus decoders always play at 48 kHz
    reference = float_to_pcm16(resample(pcm16_to_float(pcm), rate, decoded.sample_rate))
    tolerance = OPUS_LENGTH_TOLERANCE_S * decoded.sample_rate
    assert abs(decoded.samples.size - reference.size) <= tolerance
    max_lag = int(MAX_CODEC_DELAY_S * decoded.sample_rate)
    assert aligned_correlation(reference, decoded.samples, max_lag) > MIN_CORRELATION


def test_aac_stream_is_adts_aac_of_the_same_signal(speech: tuple[Pcm16, int]) -> None:
    pcm, rate = speech
    rate_ok = rate if rate in AAC_SAMPLE_RATES_HZ else 24_000
    pcm = float_to_pcm16(resample(pcm16_to_float(pcm), rate, rate_ok))
    encoder, chunks, tail = encode_in_chunks(AudioFormat.AAC, pcm, rate_ok)
    decoded = decode(b"".join(chunks) + tail)
    assert (decoded.container, decoded.codec) == ("aac", "aac")
    assert encoder.sample_rate == decoded.sample_rate == rate_ok
    # AAC adds its priming and pads its last frame: at most two frames of 1024 samples more
    assert 0 <= decoded.samples.size - pcm.size <= 2 * 1024 + 1024
    max_lag = int(MAX_CODEC_DELAY_S * rate_ok) + 2048
    assert aligned_correlation(pcm, decoded.samples, max_lag) > MIN_CORRELATION
    with pytest.raises(InvalidOptionError, match="aac cannot carry 37000 Hz"):
        create_encoder(AudioFormat.AAC, 37_000)


@pytest.mark.parametrize(
    "fmt", [AudioFormat.OPUS, AudioFormat.MP3, AudioFormat.FLAC, AudioFormat.AAC]
)
def test_compressed_bytes_leave_before_finish(fmt: AudioFormat, speech: tuple[Pcm16, int]) -> None:
    pcm, rate = speech
    _, chunks, tail = encode_in_chunks(fmt, pcm, rate)
    streamed = sum(len(chunk) for chunk in chunks)
    assert streamed > len(tail)
    first_audio_chunk = next(i for i, chunk in enumerate(chunks) if chunk)
    assert (first_audio_chunk + 1) * CHUNK_MS / 1000 <= FIRST_BYTES_WITHIN_S
    # Past the header, audio keeps flowing: most of the later calls return bytes.
    later = chunks[int(FIRST_BYTES_WITHIN_S * 1000 / CHUNK_MS) :]
    assert sum(1 for chunk in later if chunk) >= len(later) // 2


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_encode_whole_writes_one_file_of_the_format(
    fmt: AudioFormat, speech: tuple[Pcm16, int]
) -> None:
    pcm, rate = speech
    data = encode_whole(fmt, pcm, rate)
    if fmt is AudioFormat.PCM:
        assert np.array_equal(np.frombuffer(data, dtype="<i2"), pcm)
        return
    decoded = decode(data)
    expected = {
        AudioFormat.WAV: ("wav", "pcm_s16le"),
        AudioFormat.OPUS: ("ogg", "opus"),
        AudioFormat.MP3: ("mp3", "mp3float"),
        AudioFormat.FLAC: ("flac", "flac"),
        AudioFormat.AAC: ("aac", "aac"),
    }
    assert (decoded.container, decoded.codec) == expected[fmt]
    max_lag = int(MAX_CODEC_DELAY_S * decoded.sample_rate) + (2048 if fmt is AudioFormat.AAC else 0)
    reference = float_to_pcm16(resample(pcm16_to_float(pcm), rate, decoded.sample_rate))
    assert aligned_correlation(reference, decoded.samples, max_lag) > MIN_CORRELATION


@pytest.mark.parametrize("fmt", [AudioFormat.MP3, AudioFormat.FLAC])
def test_whole_files_carry_their_exact_length(fmt: AudioFormat) -> None:
    pcm = chords()
    data = encode_whole(fmt, pcm, CHORD_RATE_HZ)
    # FLAC's STREAMINFO has the sample count; MP3's Xing/LAME frame lets decoders trim the
    # encoder delay and padding, so both decode to exactly the input length.
    assert decode(data).samples.size == pcm.size
    if fmt is AudioFormat.FLAC:
        assert np.array_equal(decode(data).samples, pcm)


def test_opus_resampling_is_continuous_across_chunks() -> None:
    rate = 22_050
    tone_hz = 440.0
    amplitude = 0.3
    t = np.arange(2 * rate) / rate
    pcm = float_to_pcm16(amplitude * np.sin(2 * np.pi * tone_hz * t))
    encoder = create_encoder(AudioFormat.OPUS, rate)
    uneven = np.array_split(pcm, 37)
    data = b"".join(encoder.encode(chunk) for chunk in uneven) + encoder.finish()
    decoded = decode(data)
    assert encoder.sample_rate == decoded.sample_rate == 48_000
    assert decoded.samples.size == pcm.size * 48_000 // rate
    # A resampler restarted per chunk leaves a step at each joint ten times the tone's own.
    ideal_step = amplitude * INT16_FULL_SCALE * 2 * np.pi * tone_hz / decoded.sample_rate
    settle = decoded.sample_rate // 20
    assert largest_step(decoded.samples[settle:-settle]) < 1.5 * ideal_step


def test_every_format_has_a_content_type() -> None:
    assert set(CONTENT_TYPES) == set(AudioFormat)
    assert CONTENT_TYPES[AudioFormat.MP3] == "audio/mpeg"
    assert CONTENT_TYPES[AudioFormat.OPUS].startswith("audio/ogg")
    assert content_type(AudioFormat.FLAC, 24_000) == "audio/flac"


def test_unknown_format_names_the_allowed_values() -> None:
    assert parse_format(" MP3 ") is AudioFormat.MP3
    with pytest.raises(InvalidOptionError, match="allowed values: pcm, wav, opus, mp3, flac, aac"):
        parse_format("vorbis")


def test_mp3_refuses_a_rate_it_cannot_carry() -> None:
    assert 37_000 not in MP3_SAMPLE_RATES_HZ
    with pytest.raises(InvalidOptionError, match="mp3 cannot carry 37000 Hz"):
        create_encoder(AudioFormat.MP3, 37_000)
    with pytest.raises(InvalidOptionError):
        create_encoder(AudioFormat.WAV, 0)


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_encoder_refuses_use_after_finish(fmt: AudioFormat) -> None:
    encoder = create_encoder(fmt, CHORD_RATE_HZ)
    encoder.encode(chords()[:CHORD_RATE_HZ])
    encoder.finish()
    with pytest.raises(EncoderFinishedError):
        encoder.encode(chords()[:CHORD_RATE_HZ])
    with pytest.raises(EncoderFinishedError):
        encoder.finish()


def test_encoder_refuses_stereo_or_float_input() -> None:
    encoder = create_encoder(AudioFormat.FLAC, CHORD_RATE_HZ)
    with pytest.raises(ValueError, match="mono int16"):
        encoder.encode(np.zeros((2, 100), dtype=np.int16))
    with pytest.raises(ValueError, match="mono int16"):
        encoder.encode(np.zeros(100, dtype=np.float32))

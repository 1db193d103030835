"""Streaming audio encoders for the HTTP and WebSocket API.

An encoder takes mono int16 PCM at one sample rate, chunk by chunk, and hands back the encoded
bytes that are ready so far, so a response can start before synthesis ends. Concatenating every
chunk that :meth:`StreamEncoder.encode` and :meth:`StreamEncoder.finish` returned gives one
complete, valid file.

- ``pcm``: raw signed 16-bit little-endian samples, no header (``audio/L16`` style, but
  little-endian as OpenAI's ``pcm`` format is; the rate travels in the content type).
- ``wav``: a RIFF header whose sizes say "unknown" (``0xFFFFFFFF``), then raw frames. The length
  is not known when the header leaves, so it cannot be exact; this is the convention streaming
  TTS servers use, and players read such a file to its end (FFmpeg and Python's ``wave``
  module are checked in the tests; browsers and VLC play it too). :func:`encode_whole` writes
  exact sizes instead.
- ``opus`` (Ogg Opus, what OpenAI's speech API returns), ``mp3``, ``flac`` and ``aac`` (AAC-LC
  in ADTS frames) go through PyAV (FFmpeg's libopus, libmp3lame, flac and aac encoders and its
  ogg/mp3/flac/adts muxers) into an in-memory sink that is drained after every call.

Encoding is CPU work: Opus and MP3 take roughly 10-30 ms of CPU per second of mono audio,
FLAC 1-3 ms, PCM and WAV next to nothing. Callers on an event loop run
:meth:`StreamEncoder.encode` in a thread (``asyncio.to_thread``) for lossy chunks longer than
about 100 ms. An encoder belongs to one response; it is not thread-safe and never shared. One
that is dropped without :meth:`StreamEncoder.finish` just frees its codec when collected.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Final, Protocol

import av
import numpy as np
import soxr
from av.audio.stream import AudioStream
from av.container import OutputContainer

from engines.audio import Pcm16, pcm16_to_float, wav_bytes
from engines.errors import HiveTTSError, InvalidOptionError


class AudioFormat(StrEnum):
    """Output formats a client can ask for (names as in OpenAI's ``response_format``)."""

    PCM = "pcm"
    WAV = "wav"
    OPUS = "opus"
    MP3 = "mp3"
    FLAC = "flac"
    AAC = "aac"


CONTENT_TYPES: Final[dict[AudioFormat, str]] = {
    AudioFormat.PCM: "audio/pcm",
    AudioFormat.WAV: "audio/wav",
    AudioFormat.OPUS: "audio/ogg; codecs=opus",
    AudioFormat.MP3: "audio/mpeg",
    AudioFormat.FLAC: "audio/flac",
    AudioFormat.AAC: "audio/aac",
}
"""MIME type per format. ``pcm`` is headerless s16le mono; :func:`content_type` adds the rate."""

BYTES_PER_SAMPLE: Final = 2
WAV_HEADER_BYTES: Final = 44
WAV_UNKNOWN_SIZE: Final = 0xFFFF_FFFF
"""RIFF and data chunk size written while the length is unknown (streaming convention)."""
_WAV_FMT_CHUNK_BYTES: Final = 16
_WAV_FORMAT_PCM: Final = 1
_BITS_PER_SAMPLE: Final = 16
_MONO: Final = 1

OPUS_SAMPLE_RATES_HZ: Final = (8_000, 12_000, 16_000, 24_000, 48_000)
OPUS_FALLBACK_RATE_HZ: Final = 48_000
"""Other rates are resampled (soxr) to this one before Opus encoding."""
OPUS_BITRATE_BPS: Final = 32_000
"""Opus at 32 kb/s is close to transparent for mono speech."""
OGG_PAGE_DURATION_US: Final = 100_000
"""Ogg page length in microseconds: a page leaves every 100 ms of audio (FFmpeg's default of one
second would hold the first bytes back for a whole second)."""

MP3_SAMPLE_RATES_HZ: Final = (8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)
MP3_BITRATE_BPS: Final = 64_000
"""Valid for every MPEG-1/2/2.5 rate above and plenty for mono speech."""

FLAC_MAX_SAMPLE_RATE_HZ: Final = 655_350

AAC_SAMPLE_RATES_HZ: Final = (
    *(8_000, 11_025, 12_000, 16_000, 22_050, 24_000),
    *(32_000, 44_100, 48_000, 64_000, 88_200, 96_000),
)
AAC_BITRATE_BPS: Final = 64_000
"""AAC-LC at 64 kb/s: clean mono speech."""

_AV_BUFFER_BYTES: Final = 4_096
"""FFmpeg's I/O buffer in front of the sink; packets are flushed through it as they are muxed."""


class EncoderFinishedError(HiveTTSError):
    """``encode`` or ``finish`` was called on an encoder that has already finished."""

    code = "encoder_finished"


def parse_format(name: str) -> AudioFormat:
    """The :class:`AudioFormat` a request names, or :class:`InvalidOptionError` listing them."""
    try:
        return AudioFormat(name.strip().lower())
    except ValueError:
        allowed = ", ".join(f.value for f in AudioFormat)
        raise InvalidOptionError(
            f"unknown response_format {name!r}; allowed values: {allowed}"
        ) from None


def content_type(fmt: AudioFormat, sample_rate: int) -> str:
    """HTTP ``Content-Type`` for ``fmt``; raw PCM carries its rate (Hz) and channel count."""
    if fmt is AudioFormat.PCM:
        return f"{CONTENT_TYPES[fmt]};rate={sample_rate};channels={_MONO}"
    return CONTENT_TYPES[fmt]


class StreamEncoder(Protocol):
    """Encodes one stream of mono int16 PCM incrementally.

    ``sample_rate`` is the rate (Hz) of the encoded output, which differs from the input rate
    only where the codec cannot carry it (Opus).
    """

    sample_rate: int

    def encode(self, pcm: Pcm16) -> bytes:
        """Encoded bytes ready so far; ``b""`` while the codec or container buffers."""
        ...

    def finish(self) -> bytes:
        """Flush the codec and container; the rest of the file. Call exactly once."""
        ...


def _as_pcm16(pcm: Pcm16) -> Pcm16:
    samples = np.asarray(pcm)
    if samples.ndim != 1 or samples.dtype != np.int16:
        raise ValueError(
            f"expected mono int16 samples, got shape {samples.shape} of {samples.dtype}"
        )
    return samples


class PcmEncoder:
    """Raw s16le passthrough."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._finished = False

    def encode(self, pcm: Pcm16) -> bytes:
        if self._finished:
            raise EncoderFinishedError("encode() after finish()")
        return np.asarray(_as_pcm16(pcm), dtype="<i2").tobytes()

    def finish(self) -> bytes:
        if self._finished:
            raise EncoderFinishedError("finish() called twice")
        self._finished = True
        return b""


def streaming_wav_header(sample_rate: int) -> bytes:
    """A 44-byte mono 16-bit PCM WAV header whose sizes say "unknown" (``0xFFFFFFFF``)."""
    block_align = _MONO * BYTES_PER_SAMPLE
    return b"".join(
        (
            b"RIFF",
            WAV_UNKNOWN_SIZE.to_bytes(4, "little"),
            b"WAVE",
            b"fmt ",
            _WAV_FMT_CHUNK_BYTES.to_bytes(4, "little"),
            _WAV_FORMAT_PCM.to_bytes(2, "little"),
            _MONO.to_bytes(2, "little"),
            sample_rate.to_bytes(4, "little"),
            (sample_rate * block_align).to_bytes(4, "little"),
            block_align.to_bytes(2, "little"),
            _BITS_PER_SAMPLE.to_bytes(2, "little"),
            b"data",
            WAV_UNKNOWN_SIZE.to_bytes(4, "little"),
        )
    )


class WavStreamEncoder:
    """A streaming WAV: the header (sizes unknown) leads the first chunk, then raw frames."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._pcm = PcmEncoder(sample_rate)
        self._header: bytes = streaming_wav_header(sample_rate)

    def _take_header(self) -> bytes:
        header, self._header = self._header, b""
        return header

    def encode(self, pcm: Pcm16) -> bytes:
        frames = self._pcm.encode(pcm)
        return self._take_header() + frames

    def finish(self) -> bytes:
        tail = self._pcm.finish()
        return self._take_header() + tail


class _ByteSink:
    """Write-only, non-seekable file object FFmpeg muxes into; :meth:`drain` empties it."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def drain(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class _WholeFileSink(io.BytesIO):
    """Seekable: the muxer goes back to fill in the header, so nothing leaves before the end."""

    def drain(self) -> bytes:
        return b""


@dataclass(frozen=True)
class _CodecSpec:
    """How one format is written with PyAV: muxer, encoder and their options."""

    container_format: str
    codec: str
    output_rate: int
    bit_rate: int | None
    container_options: dict[str, str] = field(default_factory=dict)
    streaming_options: dict[str, str] = field(default_factory=dict)
    """Only when the output cannot seek back (streaming)."""


def _codec_spec(fmt: AudioFormat, sample_rate: int) -> _CodecSpec:
    if fmt is AudioFormat.OPUS:
        return _CodecSpec(
            container_format="ogg",
            codec="libopus",
            output_rate=_opus_rate(sample_rate),
            bit_rate=OPUS_BITRATE_BPS,
            container_options={"page_duration": str(OGG_PAGE_DURATION_US)},
        )
    if fmt is AudioFormat.MP3:
        return _CodecSpec(
            container_format="mp3",
            codec="libmp3lame",
            output_rate=sample_rate,
            bit_rate=MP3_BITRATE_BPS,
            # Bare MPEG frames, no ID3 tag in front.
            container_options={"id3v2_version": "0"},
            # The Xing/LAME frame (length, gapless trim) is written at the end: whole files only.
            streaming_options={"write_xing": "0"},
        )
    if fmt is AudioFormat.FLAC:
        return _CodecSpec(
            container_format="flac", codec="flac", output_rate=sample_rate, bit_rate=None
        )
    if fmt is AudioFormat.AAC:
        # ADTS: every frame carries its own header, so the stream plays from its first bytes
        return _CodecSpec(
            container_format="adts", codec="aac", output_rate=sample_rate, bit_rate=AAC_BITRATE_BPS
        )
    raise ValueError(f"{fmt} is not encoded with PyAV")


class _PyAVEncoder:
    """One codec in one container, muxed into memory as packets come out of the encoder.

    Streaming, the sink cannot seek, so FFmpeg writes what it can up front (FLAC's STREAMINFO
    then says "length unknown", which the format allows) and every muxed packet is flushed to
    the sink and handed back by the next call. ``whole=True`` lets the muxer seek back and fill
    in lengths (FLAC sample count and MD5, MP3 Xing/LAME frame), at the price of returning
    everything from :meth:`finish`.
    """

    def __init__(self, spec: _CodecSpec, input_rate: int, *, whole: bool = False) -> None:
        self.sample_rate = spec.output_rate
        self._sink: _ByteSink | _WholeFileSink = _WholeFileSink() if whole else _ByteSink()
        options = {"flush_packets": "1", **spec.container_options}
        if not whole:
            options.update(spec.streaming_options)
        self._container: OutputContainer = av.open(
            self._sink,
            mode="w",
            format=spec.container_format,
            container_options=options,
            buffer_size=_AV_BUFFER_BYTES,
        )
        stream = self._container.add_stream(spec.codec, rate=spec.output_rate)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        if spec.bit_rate is not None:
            stream.bit_rate = spec.bit_rate
        self._stream = stream
        # One resampler for the whole stream: resampling chunks separately would click at
        # every chunk boundary.
        self._resampler = (
            soxr.ResampleStream(input_rate, spec.output_rate, 1, dtype="float32", quality="HQ")
            if input_rate != spec.output_rate
            else None
        )
        self._samples_out = 0
        self._finished = False

    def _encode_frame(self, frame: av.AudioFrame) -> None:
        frame.sample_rate = self.sample_rate
        frame.time_base = Fraction(1, self.sample_rate)
        frame.pts = self._samples_out
        self._samples_out += frame.samples
        self._container.mux(self._stream.encode(frame))

    def _push(self, pcm: Pcm16, *, last: bool) -> None:
        if self._resampler is None:
            if pcm.size:
                frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
                self._encode_frame(frame)
            return
        floats = np.asarray(
            self._resampler.resample_chunk(pcm16_to_float(pcm), last=last), dtype=np.float32
        )
        if floats.size:
            frame = av.AudioFrame.from_ndarray(floats.reshape(1, -1), format="flt", layout="mono")
            self._encode_frame(frame)

    def encode(self, pcm: Pcm16) -> bytes:
        if self._finished:
            raise EncoderFinishedError("encode() after finish()")
        samples = _as_pcm16(pcm)
        if samples.size:
            self._push(samples, last=False)
        return self._sink.drain()

    def finish(self) -> bytes:
        if self._finished:
            raise EncoderFinishedError("finish() called twice")
        self._finished = True
        self._push(np.zeros(0, dtype=np.int16), last=True)
        self._container.mux(self._stream.encode(None))
        self._container.close()
        if isinstance(self._sink, _WholeFileSink):
            return self._sink.getvalue()
        return self._sink.drain()


def _opus_rate(sample_rate: int) -> int:
    return sample_rate if sample_rate in OPUS_SAMPLE_RATES_HZ else OPUS_FALLBACK_RATE_HZ


def _check_rate(fmt: AudioFormat, sample_rate: int) -> None:
    if sample_rate <= 0:
        raise InvalidOptionError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    if fmt is AudioFormat.MP3 and sample_rate not in MP3_SAMPLE_RATES_HZ:
        allowed = ", ".join(str(rate) for rate in MP3_SAMPLE_RATES_HZ)
        raise InvalidOptionError(
            f"mp3 cannot carry {sample_rate} Hz; allowed sample rates: {allowed}"
        )
    if fmt is AudioFormat.AAC and sample_rate not in AAC_SAMPLE_RATES_HZ:
        allowed = ", ".join(str(rate) for rate in AAC_SAMPLE_RATES_HZ)
        raise InvalidOptionError(
            f"aac cannot carry {sample_rate} Hz; allowed sample rates: {allowed}"
        )
    if fmt is AudioFormat.FLAC and sample_rate > FLAC_MAX_SAMPLE_RATE_HZ:
        raise InvalidOptionError(
            f"flac cannot carry {sample_rate} Hz; the limit is {FLAC_MAX_SAMPLE_RATE_HZ}"
        )


def create_encoder(fmt: AudioFormat, sample_rate: int) -> StreamEncoder:
    """A fresh encoder for one stream of mono int16 PCM at ``sample_rate`` Hz.

    Raises :class:`InvalidOptionError` when ``fmt`` cannot carry ``sample_rate`` (mp3 outside
    its nine MPEG rates, flac above 655350 Hz, a non-positive rate). Opus at a rate it lacks
    is resampled (soxr, streaming) to 48 kHz; the encoder's ``sample_rate`` says so.
    """
    fmt = AudioFormat(fmt)
    _check_rate(fmt, sample_rate)
    if fmt is AudioFormat.PCM:
        return PcmEncoder(sample_rate)
    if fmt is AudioFormat.WAV:
        return WavStreamEncoder(sample_rate)
    return _PyAVEncoder(_codec_spec(fmt, sample_rate), sample_rate)


def encode_whole(fmt: AudioFormat, pcm: Pcm16, sample_rate: int) -> bytes:
    """The whole of ``pcm`` (mono int16 at ``sample_rate`` Hz) as one file in ``fmt``.

    Since the length is known, headers carry it: WAV chunk sizes, FLAC's sample count and MD5,
    and MP3's Xing/LAME frame (so decoders trim the codec delay and padding exactly).
    """
    fmt = AudioFormat(fmt)
    _check_rate(fmt, sample_rate)
    samples = _as_pcm16(pcm)
    if fmt is AudioFormat.PCM:
        return np.asarray(samples, dtype="<i2").tobytes()
    if fmt is AudioFormat.WAV:
        return wav_bytes(samples, sample_rate)
    encoder = _PyAVEncoder(_codec_spec(fmt, sample_rate), sample_rate, whole=True)
    return encoder.encode(samples) + encoder.finish()

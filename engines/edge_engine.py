"""Edge TTS: Microsoft's neural voices through the read-aloud service (``edge-tts``).

The cloud fallback. It needs the internet, so nothing here touches the network before a
synthesis: loading only imports the package and checks the settings, and every failure of the
service (unreachable, token rejected, overloaded, slow, garbled or cut-off replies) becomes an
:class:`~engines.errors.EngineError` with ``retryable=True`` within a bounded time, so the
router can fall back to a local engine.

The service streams MP3 (``audio-24khz-48kbitrate-mono-mp3``, what edge-tts asks for) in
binary WebSocket frames; it is decoded here with PyAV as the bytes arrive, so the first audio
leaves before the whole reply is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import aiohttp
import av
import av.error
import numpy as np
import soxr
from livekit.agents import APIConnectOptions, tts, utils
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .audio import SUPPORTED_OUTPUT_RATES, FloatAudio, Pcm16, float_to_pcm16
from .backend import EngineBackend, EngineNotInstalled, EngineProfile
from .config import ServiceConfig
from .engine_registry import EngineSpec, SettingsSection
from .errors import EngineError
from .local_tts import EMITTER_FRAME_MS, NO_RETRY
from .names import EngineName, QualityTier, primary_language
from .voices import Binding, EdgeBinding

logger = logging.getLogger(__name__)

ENGINE: Final = EngineName.EDGE.value
EDGE_NATIVE_SAMPLE_RATE_HZ: Final = 24_000
"""The rate of the MP3 the service sends for the format edge-tts requests."""
MIN_SPEED, MAX_SPEED = 0.5, 2.0
"""The prosody rate range the service accepts, as a multiple of the voice's own pace."""
DECODE_IN_THREAD_MIN_BYTES: Final = 24_000
"""MP3 chunks at least this big (~4 s of audio, ~10 ms of CPU) are decoded off the loop.
Decoding costs about 2 ms of CPU per second of audio; the service's frames are far smaller,
and for them a thread hop would cost more than it saves."""

NEURAL_VOICE_NAME: Final = re.compile(r"^(?P<lang>[a-z]{2,3})-(?P<region>[A-Z]{2,})-.+Neural$")
"""A short Microsoft neural voice name (``en-US-JennyNeural``), as edge-tts accepts it."""

EDGE_LANGUAGES: Final = frozenset(
    # Primary languages of the service's neural voices (locales like en-US, zh-CN, fil-PH).
    "af am ar az bg bn bs ca cs cy da de el en es et eu fa fi fil fr ga gl gu he hi hr hu id "
    "is it iu ja jv ka kk km kn ko lo lt lv mk ml mn mr ms mt my nb ne nl pl ps pt ro ru si "
    "sk sl so sq sr su sv sw ta te th tr uk ur uz vi zh zu".split()
)


def check_service_url(url: str | None) -> str | None:
    """``url`` if it can stand for the service's WebSocket URL, else ValueError saying why.

    edge-tts appends its own query parameters with ``&``, so the URL must already have a
    query (``?``), as the library's own does."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"edge-tts url must be a ws:// or wss:// URL, got {url!r}")
    if "?" not in url:
        raise ValueError(
            f"edge-tts url must contain a query ('?...'): the library appends '&...' to it; "
            f"got {url!r}"
        )
    return url


class EdgeServiceSection(Protocol):
    """Settings shaped like :class:`EdgeSettings` without its sample rate, from elsewhere than
    the configuration (which holds an ``EdgeSettings``); checked when the engine loads."""

    @property
    def url(self) -> str | None: ...

    @property
    def connect_timeout_s(self) -> float: ...

    @property
    def receive_timeout_s(self) -> float: ...


class EdgeSettings(BaseModel):
    """How this engine reaches the service, and the rate its audio leaves at: the
    configuration's ``engines.edge-tts`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    """Service WebSocket URL, with a query (None: the library's own, Microsoft's service)."""
    connect_timeout_s: float = Field(default=2.0, gt=0, le=30)
    """Seconds for DNS, TCP and TLS."""
    receive_timeout_s: float = Field(default=10.0, gt=0, le=120)
    """Seconds the service may take to answer: the handshake, the first audio after
    connecting, and the gap between two messages of a reply."""
    sample_rate: int = Field(default=EDGE_NATIVE_SAMPLE_RATE_HZ)
    """Hz of the PCM this engine emits; anything but 24000 is resampled (soxr)."""

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str | None) -> str | None:
        return check_service_url(url)

    @field_validator("sample_rate")
    @classmethod
    def _supported_rate(cls, rate: int) -> int:
        if rate not in SUPPORTED_OUTPUT_RATES:
            allowed = ", ".join(str(r) for r in SUPPORTED_OUTPUT_RATES)
            raise ValueError(f"sample_rate {rate} is not supported; allowed values: {allowed}")
        return rate


def speed_to_rate(speed: float) -> str:
    """A speaking speed (1.0 = the voice's own) as SSML prosody rate: 1.5 -> ``+50%``."""
    clamped = min(MAX_SPEED, max(MIN_SPEED, speed))
    return f"{round((clamped - 1.0) * 100):+d}%"


class _LibraryServiceUrl:
    """Access to the service URL edge-tts uses, which it takes from no argument.

    edge-tts 7.3 reads the module constant ``edge_tts.communicate.WSS_URL`` at every connect
    (its retry after a 403 and every 4 KB part of a long text included). A stream that needs a
    URL holds it for its whole run: streams wanting the same URL share it, one wanting another
    waits until they have finished, and the library's own value is put back when the last
    holder leaves. In a service there is one URL, so nobody waits; only a process with two
    differently configured backends (tests) ever serializes here.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # backends may run on several event loops
        self._holders = 0
        self._held_url = ""
        self._library_url = ""
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire(self, url: str | None) -> None:
        """Make edge-tts connect to ``url`` (None: its own URL) until :meth:`release`."""
        from edge_tts import communicate

        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                library_url = self._library_url if self._holders else communicate.WSS_URL
                wanted = url or library_url
                if self._holders == 0:
                    self._library_url = library_url
                    self._held_url = wanted
                    communicate.WSS_URL = wanted
                if self._held_url == wanted:
                    self._holders += 1
                    return
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append(waiter)
            await waiter

    def release(self) -> None:
        from edge_tts import communicate

        with self._lock:
            self._holders -= 1
            if self._holders:
                return
            communicate.WSS_URL = self._library_url
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            with contextlib.suppress(RuntimeError):  # its loop has closed meanwhile
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_SERVICE_URL = _LibraryServiceUrl()


class Mp3StreamDecoder:
    """MP3 bytes in, in pieces cut anywhere, mono int16 PCM at ``sample_rate`` Hz out.

    Raises ``av.error.FFmpegError`` on data that is not MPEG audio. One per utterance; not
    thread-safe (calls must not overlap)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._codec: Any = av.CodecContext.create("mp3", "r")
        self._resampler: soxr.ResampleStream | None = None
        self._input_rate: int | None = None
        self.samples_out = 0

    def decode(self, data: bytes) -> Pcm16:
        """PCM for every MP3 frame completed by ``data`` (may be empty)."""
        frames = [
            frame for packet in self._codec.parse(data) for frame in self._codec.decode(packet)
        ]
        return self._to_pcm(frames, last=False)

    def finish(self) -> Pcm16:
        """PCM for whatever the parser and decoder still hold. Call once, at the end."""
        frames = [
            frame for packet in self._codec.parse(None) for frame in self._codec.decode(packet)
        ]
        frames.extend(self._codec.decode(None))
        return self._to_pcm(frames, last=True)

    def _to_pcm(self, frames: list[Any], *, last: bool) -> Pcm16:
        pieces = [self._mono_float(frame) for frame in frames]
        samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        if self._input_rate is not None and self._input_rate != self.sample_rate:
            if self._resampler is None:
                self._resampler = soxr.ResampleStream(
                    self._input_rate, self.sample_rate, 1, dtype="float32", quality="HQ"
                )
            samples = np.asarray(self._resampler.resample_chunk(samples, last=last), np.float32)
        pcm = float_to_pcm16(samples)
        self.samples_out += pcm.size
        return pcm

    def _mono_float(self, frame: Any) -> FloatAudio:
        if self._input_rate is None:
            self._input_rate = int(frame.sample_rate)
        channels = len(frame.layout.channels)
        array = np.asarray(frame.to_ndarray())
        if frame.format.is_planar:
            array = array.reshape(channels, -1)
        else:
            array = array.reshape(-1, channels).T
        if np.issubdtype(array.dtype, np.integer):
            scale = float(np.iinfo(array.dtype).max)
            floats = array.astype(np.float32) / scale
        else:
            floats = array.astype(np.float32)
        mono = floats.mean(axis=0) if channels > 1 else floats[0]
        return np.asarray(mono, dtype=np.float32)


@dataclass(frozen=True)
class _Options:
    voice: str
    rate: str
    """SSML prosody rate, ``+0%`` for the voice's own pace."""


class EdgeBackend(EngineBackend):
    """Microsoft Edge's online neural voices (needs the internet; see module doc)."""

    streams_within_piece = True
    name = EngineName.EDGE
    profile = EngineProfile(
        quality_mos=3.5,
        typical_ttfa_ms=400.0,
        tier=QualityTier.PREMIUM,
        description="Microsoft Edge neural voices over the internet: natural, 70+ languages; "
        "the cloud fallback (fails fast when the service cannot be reached)",
    )
    install_hint = "pip install edge-tts"

    def __init__(self, settings: EdgeSettings | EdgeServiceSection | None = None) -> None:
        """``settings``: an :class:`EdgeSettings` (the configuration's ``engines.edge-tts``),
        or a section shaped like one (then audio leaves at the native 24 kHz)."""
        super().__init__()
        if settings is None:
            settings = EdgeSettings()
        if not isinstance(settings, EdgeSettings):
            # checked at load, where a mistake marks the engine failed instead of the start-up
            settings = EdgeSettings.model_construct(
                url=settings.url,
                connect_timeout_s=settings.connect_timeout_s,
                receive_timeout_s=settings.receive_timeout_s,
            )
        self.settings = settings
        self._languages: frozenset[str] = frozenset()

    @property
    def sample_rate(self) -> int:
        return self.settings.sample_rate

    def _load(self) -> None:
        try:
            import edge_tts  # noqa: F401
        except ImportError as exc:
            raise EngineNotInstalled("edge-tts is not installed") from exc
        self.settings = EdgeSettings.model_validate(self.settings.model_dump())
        self._languages = EDGE_LANGUAGES

    def warm_up(self) -> None:
        # The service may be unreachable: only the decoder's start-up is paid here.
        decoder = Mp3StreamDecoder(self.sample_rate)
        decoder.finish()

    def languages(self) -> frozenset[str]:
        return self._languages

    def can_render(self, binding: Binding) -> bool:
        if not isinstance(binding, EdgeBinding) or not self.ready:
            return False
        return voice_language(binding.voice) in self._languages

    def missing_reason(self, binding: Binding) -> str:
        voice = binding.voice if isinstance(binding, EdgeBinding) else "?"
        if not self.ready:
            return f"edge-tts is not loaded ({self.detail})"
        return (
            f"{voice!r} is not a Microsoft neural voice name like en-US-JennyNeural "
            "(language-REGION-NameNeural)"
        )

    def create_tts(
        self, binding: Binding, *, speed: float, latency_critical: bool = False
    ) -> EdgeTTS:
        assert isinstance(binding, EdgeBinding)
        return EdgeTTS(self.settings, _Options(binding.voice, speed_to_rate(speed)))

    def close(self) -> None:
        """Nothing to release: each synthesis owns and closes its own connection."""


class EdgeTTS(tts.TTS[Any]):
    """One Edge neural voice as a LiveKit TTS (whole text in, streamed audio out)."""

    def __init__(self, settings: EdgeSettings, options: _Options) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=settings.sample_rate,
            num_channels=1,
        )
        self._settings = settings
        self._opts = options

    @property
    def provider(self) -> str:
        return "hive-tts"

    @property
    def model(self) -> str:
        return ENGINE

    @property
    def engine(self) -> str:
        return ENGINE

    @property
    def voice(self) -> str:
        return self._opts.voice

    @property
    def rate(self) -> str:
        """The SSML prosody rate sent to the service (``+0%`` at speed 1.0)."""
        return self._opts.rate

    def update_options(self, *, speed: float | None = None) -> None:
        if speed is not None:
            self._opts = replace(self._opts, rate=speed_to_rate(speed))

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = NO_RETRY
    ) -> EdgeChunkedStream:
        return EdgeChunkedStream(
            tts=self, input_text=text, conn_options=conn_options, options=self._opts
        )


class EdgeChunkedStream(tts.ChunkedStream):
    """One request to the service: MP3 frames decoded and pushed as they arrive."""

    def __init__(
        self,
        *,
        tts: EdgeTTS,
        input_text: str,
        conn_options: APIConnectOptions,
        options: _Options,
    ) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._settings = tts._settings
        self._opts = options  # a later update_options() never changes this utterance

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        settings = self._settings
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=settings.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
            frame_size_ms=EMITTER_FRAME_MS,
        )
        try:
            await self._stream_audio(output_emitter)
        except Exception as exc:
            error = exc if isinstance(exc, EngineError) else service_error(exc, settings)
            logger.warning("synthesis failed: %s", error, extra={"engine": ENGINE})
            if error is exc:
                raise
            raise error from exc
        output_emitter.flush()

    async def _stream_audio(self, output_emitter: tts.AudioEmitter) -> None:
        import edge_tts

        settings = self._settings
        try:
            communicate = edge_tts.Communicate(
                self.input_text, self._opts.voice, rate=self._opts.rate
            )
        except (TypeError, ValueError) as exc:
            raise EngineError(
                ENGINE, f"request rejected by edge-tts: {exc}", retryable=False
            ) from exc
        # The library takes whole seconds and leaves DNS unbounded; these are exact.
        communicate.session_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout_s,
            sock_connect=settings.connect_timeout_s,
            sock_read=settings.receive_timeout_s,
        )
        decoder = Mp3StreamDecoder(settings.sample_rate)
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                await _SERVICE_URL.acquire(settings.url)
        except TimeoutError as exc:
            raise EngineError(
                ENGINE, "timed out waiting for another service URL in this process to be released"
            ) from exc
        try:
            await self._receive(communicate, decoder, output_emitter)
        finally:
            _SERVICE_URL.release()

    async def _receive(
        self, communicate: Any, decoder: Mp3StreamDecoder, output_emitter: tts.AudioEmitter
    ) -> None:
        settings = self._settings
        received = 0
        async with contextlib.aclosing(communicate.stream()) as replies:
            # the first message waits for the connection and the first audio; later ones only
            # for the next message
            wait_s = settings.connect_timeout_s + settings.receive_timeout_s
            while True:
                try:
                    async with asyncio.timeout(wait_s) as deadline:
                        reply = await anext(replies)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    if deadline.expired():
                        raise _timeout_error(received, wait_s) from exc
                    raise
                wait_s = settings.receive_timeout_s
                if reply["type"] != "audio":
                    continue  # word/sentence boundaries
                data: bytes = reply["data"]
                received += len(data)
                pcm = await _decode(decoder, data)
                if pcm.size:
                    output_emitter.push(pcm.tobytes())
        pcm = decoder.finish()
        if pcm.size:
            output_emitter.push(pcm.tobytes())
        # edge-tts ends quietly when the socket closes after some audio; only its byte count
        # at `turn.end` tells a complete reply from a cut-off one.
        if received and communicate.state["cumulative_audio_bytes"] != received:
            raise EngineError(
                ENGINE,
                "the service closed the connection before the end of the reply (no turn.end) "
                f"after {received} bytes of audio",
            )
        if received and decoder.samples_out == 0:
            raise EngineError(ENGINE, f"the service sent {received} bytes of undecodable audio")


async def _decode(decoder: Mp3StreamDecoder, data: bytes) -> Pcm16:
    if len(data) >= DECODE_IN_THREAD_MIN_BYTES:
        return await asyncio.to_thread(decoder.decode, data)
    return decoder.decode(data)


def _timeout_error(received: int, waited_s: float) -> EngineError:
    if received:
        return EngineError(
            ENGINE, f"the service stalled: no message for {waited_s:g} s in the middle of a reply"
        )
    return EngineError(ENGINE, f"timed out: no audio from the service within {waited_s:g} s")


def service_error(exc: BaseException, settings: EdgeSettings) -> EngineError:
    """The :class:`EngineError` (retryable) that says which way the service failed."""
    from edge_tts import exceptions as edge_exceptions

    cause: BaseException = exc
    if isinstance(exc, edge_exceptions.SkewAdjustmentError) and exc.__cause__ is not None:
        cause = exc.__cause__  # a 403 the library could not correct its clock from
    if isinstance(cause, aiohttp.ClientResponseError):
        meaning = {
            401: "authentication rejected",
            403: "forbidden: the Sec-MS-GEC token was rejected",
            429: "too many requests",
            503: "service unavailable",
        }.get(cause.status, cause.message or "unexpected status")
        return EngineError(ENGINE, f"the service answered HTTP {cause.status} ({meaning})")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return EngineError(ENGINE, f"cannot resolve the service's host {exc.host}: {exc.strerror}")
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return EngineError(
            ENGINE,
            f"timed out: {exc} (connect {settings.connect_timeout_s:g} s, "
            f"receive {settings.receive_timeout_s:g} s)",
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return EngineError(
            ENGINE, f"cannot connect to the service at {exc.host}:{exc.port}: {exc.os_error}"
        )
    if isinstance(exc, edge_exceptions.NoAudioReceived):
        return EngineError(ENGINE, "the service closed the reply without any audio")
    if isinstance(exc, edge_exceptions.UnexpectedResponse | edge_exceptions.UnknownResponse):
        return EngineError(ENGINE, f"garbled reply from the service: {exc}")
    if isinstance(exc, edge_exceptions.WebSocketError):
        return EngineError(ENGINE, f"WebSocket error from the service: {exc}")
    if isinstance(exc, av.error.FFmpegError):
        return EngineError(ENGINE, f"garbled audio from the service (not MP3): {exc}")
    if isinstance(exc, aiohttp.ClientError):
        return EngineError(ENGINE, f"connection to the service failed: {type(exc).__name__}: {exc}")
    return EngineError(ENGINE, f"{type(exc).__name__}: {exc}")


def voice_language(voice: str) -> str | None:
    """``en-US-JennyNeural`` -> ``en``; None when ``voice`` is not a neural voice name."""
    match = NEURAL_VOICE_NAME.match(voice)
    return primary_language(match["lang"]) if match else None


SETTINGS = SettingsSection("edge-tts", EdgeSettings())
"""``engines.edge-tts`` in config.yaml: the cloud fallback fails fast without network."""
QUALITY_RANK = 50.0
"""``quality_first``: the cloud comes after every local model."""


def build_backend(config: ServiceConfig, *, deterministic: bool) -> EdgeBackend:
    """``deterministic`` is not offered: the service decides what it sends."""
    return EdgeBackend(config.engines.section(SETTINGS))


SPEC = EngineSpec(
    name=EdgeBackend.name,
    binding=EdgeBinding,
    tier=EdgeBackend.profile.tier,
    quality_rank=QUALITY_RANK,
    build=build_backend,
    settings=SETTINGS,
)

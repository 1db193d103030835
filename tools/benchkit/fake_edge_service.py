"""A FAKE of Microsoft's Edge read-aloud TTS WebSocket service, for tests and benchmarks only.

It is not Microsoft's service and sends nothing anywhere: an aiohttp server on 127.0.0.1 that
speaks the protocol edge-tts 7.3 expects, so the Edge engine can be tested offline.

What the real service does, and this fake repeats (from edge-tts's ``communicate.py``):

- the client connects to ``WSS_URL&ConnectionId=..&Sec-MS-GEC=..&Sec-MS-GEC-Version=..``;
  a bad token is answered ``403`` at the handshake (the library then corrects its clock from
  the ``Date`` header and tries once more);
- the client sends two text messages: ``Path:speech.config`` (JSON, the output format) and
  ``Path:ssml`` (the voice, prosody rate and escaped text);
- the service answers text ``Path:turn.start``, binary audio frames (a 2-byte big-endian
  header length, ``\\r\\n``-separated headers with ``Path:audio`` and
  ``Content-Type:audio/mpeg``, then MP3 bytes), ``Path:audio.metadata`` text messages, an
  empty binary audio frame without a content type, and text ``Path:turn.end``.

The audio is real speech: espeak-ng says the SSML's text (at the SSML's rate), resampled to
24 kHz and encoded to MP3 with the service's own encoder module (``api.encoders``), cut
into several frames at arbitrary byte offsets, sent ``frame_interval_s`` apart.

Each request picks a :class:`FakeMode` through the ``FakeMode`` query parameter of the URL that
:meth:`FakeEdgeService.url` builds (edge-tts keeps the URL's query and appends its own).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from xml.sax.saxutils import unescape

import numpy as np
from aiohttp import WSMsgType, web

from api.encoders import AudioFormat, create_encoder
from engines.audio import float_to_pcm16, resample, wav_bytes
from engines.espeak_engine import EspeakBackend
from engines.voices import EspeakBinding

SERVICE_PATH = "/consumer/speech/synthesize/readaloud/edge/v1"
FAKE_TRUSTED_CLIENT_TOKEN = "fake-token-for-tests"
SAMPLE_RATE_HZ = 24_000
"""Rate of ``audio-24khz-48kbitrate-mono-mp3``, the format edge-tts asks for."""
REQUIRED_QUERY = ("TrustedClientToken", "ConnectionId", "Sec-MS-GEC", "Sec-MS-GEC-Version")
CLIENT_MESSAGE_TIMEOUT_S = 5.0
RELEASE_TIMEOUT_S = 30.0
"""Longest a paused reply waits for :meth:`FakeEdgeService.release_reply`."""
TICKS_PER_SECOND = 10_000_000
SHUTDOWN_TIMEOUT_S = 0.5
"""Replies still running (a slow one whose client gave up) are cancelled after this."""

_SSML_VOICE = re.compile(r"<voice name='(?P<voice>[^']*)'>")
_SSML_PROSODY = re.compile(
    r"<prosody pitch='(?P<pitch>[^']*)' rate='(?P<rate>[^']*)' volume='(?P<volume>[^']*)'>"
    r"(?P<text>.*)</prosody>",
    re.DOTALL,
)
_RATE = re.compile(r"^(?P<percent>[+-]\d+)%$")


class FakeMode(StrEnum):
    NORMAL = "normal"
    FORBIDDEN = "forbidden"
    """HTTP 403 at the handshake, as the service answers a rejected Sec-MS-GEC token."""
    UNAVAILABLE = "unavailable"
    """HTTP 503 at the handshake."""
    SLOW = "slow"
    """Waits ``FakeDelayMs`` after turn.start before the first audio."""
    SLOW_HANDSHAKE = "slow-handshake"
    """Waits ``FakeDelayMs`` before answering the WebSocket handshake at all."""
    GARBLED_HEADER = "garbled-header"
    """A binary frame whose header length points past its end."""
    GARBLED_AUDIO = "garbled-audio"
    """Well-formed frames whose payload is WAV, not MP3."""
    TRUNCATED = "truncated"
    """Closes the socket after half of the audio, without turn.end."""


@dataclass
class ReceivedRequest:
    """What one client sent, and how far the fake got with its reply."""

    mode: FakeMode
    query: dict[str, str]
    headers: dict[str, str]
    speech_config: str = ""
    ssml: str = ""
    voice: str = ""
    rate: str = ""
    text: str = ""
    audio_frames_sent: int = 0
    audio_bytes_sent: int = 0
    reply_finished: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the fake has sent its last message (turn.end, or the close)."""


def _message_headers(message: str) -> tuple[dict[str, str], str]:
    head, _, body = message.partition("\r\n\r\n")
    headers = dict(line.split(":", 1) for line in head.split("\r\n") if ":" in line)
    return headers, body


def _text_message(request_id: str, path: str, body: str) -> str:
    return (
        f"X-RequestId:{request_id}\r\n"
        "Content-Type:application/json; charset=utf-8\r\n"
        f"Path:{path}\r\n\r\n{body}"
    )


def _audio_message(request_id: str, stream_id: str, payload: bytes, *, typed: bool = True) -> bytes:
    content_type = "Content-Type:audio/mpeg\r\n" if typed else ""
    header = (
        f"X-RequestId:{request_id}\r\n{content_type}X-StreamId:{stream_id}\r\nPath:audio\r\n"
    ).encode()
    return len(header).to_bytes(2, "big") + header + payload


def _cut(data: bytes, pieces: int) -> list[bytes]:
    """``data`` in ``pieces`` parts cut at arbitrary byte offsets (not MP3 frame borders)."""
    bounds = np.linspace(0, len(data), pieces + 1).astype(int)
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


class FakeEdgeService:
    """The fake service (see module doc); ``async with`` starts and stops it.

    ``frame_interval_s`` paces the audio frames; ``audio_frames`` is how many the MP3 is cut
    into; with ``pause_after_frames`` set, every reply stops after that many audio frames until
    :meth:`release_reply` (so a test can prove audio came out before the reply ended)."""

    def __init__(
        self,
        *,
        frame_interval_s: float = 0.02,
        audio_frames: int = 8,
        pause_after_frames: int | None = None,
    ) -> None:
        self.frame_interval_s = frame_interval_s
        self.audio_frames = audio_frames
        self.pause_after_frames = pause_after_frames
        self.requests: list[ReceivedRequest] = []
        self.handshakes = 0
        """WebSocket upgrade requests seen, refused ones included."""
        self._released = asyncio.Event()
        self._espeak = EspeakBackend()
        self._espeak_lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> FakeEdgeService:
        await asyncio.to_thread(self._espeak.load)
        app = web.Application()
        app.router.add_get(SERVICE_PATH, self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
        self._espeak.close()

    def url(self, mode: FakeMode = FakeMode.NORMAL, *, delay_s: float = 0.0) -> str:
        """The URL to give the engine for replies in ``mode`` (``delay_s`` for the slow ones)."""
        return (
            f"ws://127.0.0.1:{self.port}{SERVICE_PATH}?TrustedClientToken="
            f"{FAKE_TRUSTED_CLIENT_TOKEN}&FakeMode={mode.value}&FakeDelayMs={round(delay_s * 1000)}"
        )

    def release_reply(self) -> None:
        """Let paused replies (``pause_after_frames``) go on to their end."""
        self._released.set()

    def speech(self, text: str, rate: str) -> bytes:
        """Blocking: ``text`` spoken at SSML ``rate``, as 24 kHz mono MP3 (no ID3, no Xing)."""
        match = _RATE.match(rate)
        speed = 1.0 + int(match["percent"]) / 100 if match else 1.0
        with self._espeak_lock:
            voice = self._espeak.create_tts(EspeakBinding(voice="en-us"), speed=speed)
            audio = self._espeak.synthesize_blocking(text, voice._opts, threading.Event())
        pcm = float_to_pcm16(resample(audio, self._espeak.sample_rate, SAMPLE_RATE_HZ))
        encoder = create_encoder(AudioFormat.MP3, SAMPLE_RATE_HZ)
        return encoder.encode(pcm) + encoder.finish()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.handshakes += 1
        query = dict(request.query)
        mode = FakeMode(query.get("FakeMode", FakeMode.NORMAL))
        delay_s = int(query.get("FakeDelayMs", "0")) / 1000
        if any(not query.get(key) for key in REQUIRED_QUERY):
            return web.Response(status=403, text="missing token parameters")
        if mode is FakeMode.FORBIDDEN:
            return web.Response(status=403, text="fake: token rejected")
        if mode is FakeMode.UNAVAILABLE:
            return web.Response(status=503, text="fake: service unavailable")
        if mode is FakeMode.SLOW_HANDSHAKE:
            await asyncio.sleep(delay_s)
        received = ReceivedRequest(mode, query, dict(request.headers))
        self.requests.append(received)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            await self._converse(ws, received, delay_s)
        except ConnectionError:
            pass  # the client hung up first (it gave up on a slow or garbled reply)
        finally:
            received.reply_finished.set()
            await ws.close()
        return ws

    async def _converse(
        self, ws: web.WebSocketResponse, received: ReceivedRequest, delay_s: float
    ) -> None:
        while not received.ssml:
            message = await ws.receive(timeout=CLIENT_MESSAGE_TIMEOUT_S)
            if message.type is not WSMsgType.TEXT:
                return
            headers, body = _message_headers(message.data)
            if headers.get("Path") == "speech.config":
                received.speech_config = body
            elif headers.get("Path") == "ssml":
                received.ssml = body
        voice = _SSML_VOICE.search(received.ssml)
        prosody = _SSML_PROSODY.search(received.ssml)
        if voice is None or prosody is None:
            return  # the real service also just hangs up on SSML it cannot read
        received.voice = voice["voice"]
        received.rate = prosody["rate"]
        received.text = unescape(prosody["text"])

        request_id = uuid.uuid4().hex
        stream_id = uuid.uuid4().hex.upper()
        mp3 = await asyncio.to_thread(self.speech, received.text, received.rate)
        await ws.send_str(
            _text_message(
                request_id,
                "turn.start",
                json.dumps({"context": {"serviceTag": "fake"}, "audio": {"streamId": stream_id}}),
            )
        )
        if received.mode is FakeMode.SLOW:
            await asyncio.sleep(delay_s)
        if received.mode is FakeMode.GARBLED_HEADER:
            frame = _audio_message(request_id, stream_id, mp3[:1000])
            await ws.send_bytes((len(frame) + 100).to_bytes(2, "big") + frame[2:])
            await self._end_turn(ws, received, request_id, stream_id)
            return
        payload = mp3
        if received.mode is FakeMode.GARBLED_AUDIO:
            pcm = float_to_pcm16(np.sin(np.linspace(0, 2000, SAMPLE_RATE_HZ)).astype(np.float32))
            payload = wav_bytes(pcm, SAMPLE_RATE_HZ)
        pieces = _cut(payload, self.audio_frames)
        if received.mode is FakeMode.TRUNCATED:
            pieces = pieces[: max(1, len(pieces) // 2)]
        for index, piece in enumerate(pieces):
            if index:
                await asyncio.sleep(self.frame_interval_s)
            if index == self.pause_after_frames:
                await asyncio.wait_for(self._released.wait(), RELEASE_TIMEOUT_S)
            await ws.send_bytes(_audio_message(request_id, stream_id, piece))
            received.audio_frames_sent += 1
            received.audio_bytes_sent += len(piece)
            if index == 0:
                await ws.send_str(
                    _text_message(request_id, "audio.metadata", self._metadata(received.text))
                )
        if received.mode is FakeMode.TRUNCATED:
            return  # the socket closes without turn.end
        await self._end_turn(ws, received, request_id, stream_id)

    @staticmethod
    def _metadata(text: str) -> str:
        boundary = {
            "Type": "SentenceBoundary",
            "Data": {
                "Offset": TICKS_PER_SECOND // 10,
                "Duration": TICKS_PER_SECOND,
                "text": {"Text": text, "Length": len(text), "BoundaryType": "SentenceBoundary"},
            },
        }
        return json.dumps({"Metadata": [boundary]})

    @staticmethod
    async def _end_turn(
        ws: web.WebSocketResponse, received: ReceivedRequest, request_id: str, stream_id: str
    ) -> None:
        await ws.send_bytes(_audio_message(request_id, stream_id, b"", typed=False))
        await ws.send_str(
            _text_message(request_id, "turn.end", json.dumps({"context": {"serviceTag": "fake"}}))
        )
        received.reply_finished.set()

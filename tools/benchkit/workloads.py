"""What the tools send, and one reply received and timed: over the WebSocket (a real-time
player listening, underruns counted as it hears them) or over HTTP (first byte, whole reply)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import aiohttp

from .probes import PlaybackClock
from .stats import MS_PER_S

PCM16_BYTES_PER_SAMPLE = 2
BASE64_BYTES_PER_CHAR = 3 / 4
CLIENT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
WS_CLOSE_TIMEOUT_S = 10.0
"""aiohttp's own default wait for the server's close frame."""
DEFAULT_REPLY_TIMEOUT_S = 60.0
"""Longest wait for one reply to finish; longer counts as an error (``timeout``)."""

REPLIES: dict[str, tuple[str, ...]] = {
    # two-sentence voice-agent replies (tools/bench.py's, whose figures are published)
    "en": (
        "Thanks for calling. How can I help you today?",
        "Your order has shipped and should arrive on Thursday. Would you like the tracking number?",
        "I'm sorry, I didn't catch that. Could you repeat your account number, please?",
        "The next train to the airport leaves at ten forty from platform three. "
        "It takes about thirty-five minutes.",
        "Sure, I've booked a table for four at seven thirty tonight. "
        "You'll get a confirmation by text message.",
        "Your current balance is two hundred and twelve dollars. "
        "The next payment is due on the fifteenth of March.",
        "It looks sunny this afternoon, with a light breeze from the west. Tomorrow brings rain.",
        "Let me check that for you. One moment while I look up your reservation.",
    ),
    "ja": (
        "お電話ありがとうございます。ご用件をお伺いします。",
        "ご注文の商品は発送されました。木曜日に届く予定です。",
        "申し訳ありません、よく聞き取れませんでした。もう一度お願いします。",
        "次の電車は十時四十分に出発します。三番線からです。",
        "今夜七時半に四名様で予約しました。確認のメールをお送りします。",
        "今日はとても良い天気ですね。明日は雨が降るそうです。",
        "少々お待ちください。ただいまお調べします。",
        "会議は午後三時から始まります。資料を忘れないでください。",
    ),
    "es": (
        "Gracias por llamar. ¿En qué puedo ayudarle hoy?",
        "Su pedido ya salió del almacén. Debería llegar el jueves por la tarde.",
        "Un momento, por favor. Estoy buscando su reserva.",
    ),
    "fr": (
        "Merci de votre appel. Comment puis-je vous aider aujourd'hui ?",
        "Votre commande a été expédiée. Elle devrait arriver jeudi après-midi.",
        "Un instant, s'il vous plaît. Je cherche votre réservation.",
    ),
    "de": (
        "Danke für Ihren Anruf. Wie kann ich Ihnen heute helfen?",
        "Ihre Bestellung wurde verschickt. Sie sollte am Donnerstag ankommen.",
        "Einen Moment bitte. Ich suche Ihre Reservierung.",
    ),
    "it": (
        "Grazie per aver chiamato. Come posso aiutarla oggi?",
        "Il suo ordine è stato spedito. Dovrebbe arrivare giovedì pomeriggio.",
        "Un attimo, per favore. Sto cercando la sua prenotazione.",
    ),
    "pt": (
        "Obrigado por ligar. Como posso ajudar hoje?",
        "O seu pedido foi enviado. Deve chegar na quinta-feira à tarde.",
        "Um momento, por favor. Estou procurando a sua reserva.",
    ),
}
"""Replies a voice agent says, per language (ISO 639-1)."""


def base64_payload_bytes(encoded: str) -> int:
    """Length of the decoded payload, without decoding it (the client stays cheap)."""
    padding = len(encoded) - len(encoded.rstrip("="))
    return int(len(encoded) * BASE64_BYTES_PER_CHAR) - padding


def ws_url(base_url: str) -> str:
    """``/ws/synthesize`` of the service at ``base_url`` (http:// or https://)."""
    return (
        base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/")
        + "/ws/synthesize"
    )


async def open_ws(
    http: aiohttp.ClientSession,
    base_url: str,
    headers: Mapping[str, str] | None = None,
    close_timeout_s: float = WS_CLOSE_TIMEOUT_S,
) -> aiohttp.ClientWebSocketResponse:
    """A connection to ``WS /ws/synthesize``; raises ``aiohttp.WSServerHandshakeError`` when the
    server refuses it (429 ``too_many_sessions``: its ``headers`` carry ``Retry-After``)."""
    return await http.ws_connect(
        ws_url(base_url),
        max_msg_size=CLIENT_MAX_MESSAGE_BYTES,
        headers=dict(headers or {}),
        timeout=aiohttp.ClientWSTimeout(ws_close=close_timeout_s),
    )


@dataclass
class WsReply:
    """One reply on the WebSocket, as a client playing it in real time hears it."""

    sent_at: float = 0.0
    """perf_counter() when the (first) message went out."""
    ttfa_ms: float | None = None
    """Sent -> first ``audio`` message received."""
    total_ms: float | None = None
    """Sent -> ``final`` message received."""
    audio_s: float = 0.0
    chunks: int = 0
    underruns: int = 0
    """Chunks that arrived after the audio received before them had finished playing."""
    largest_gap_ms: float = 0.0
    playback_end: float | None = None
    """perf_counter() when a real-time player has played everything (gaps included)."""
    final: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """The error message's ``code``, ``timeout``, ``connection closed``, ``no_audio``, ..."""
    retry_after_s: float | None = None
    """From an error message that said when to try again (``engine_busy``, ...)."""
    sample_rate: int | None = None
    pcm: bytearray | None = None
    """The audio (16-bit mono) when asked to keep it."""


async def ws_exchange(
    ws: aiohttp.ClientWebSocketResponse,
    messages: Sequence[Mapping[str, Any]],
    request_id: str,
    *,
    timeout_s: float = DEFAULT_REPLY_TIMEOUT_S,
    keep_audio: bool = False,
) -> WsReply:
    """Send ``messages`` (one request, or ``text`` messages and a ``flush``) and read the reply
    of ``request_id`` up to its ``final`` or ``error`` message. Failures are in ``error``."""
    reply = WsReply(pcm=bytearray() if keep_audio else None)
    clock = PlaybackClock()
    sent = reply.sent_at = time.perf_counter()
    deadline = sent + timeout_s
    try:
        for message in messages:
            await ws.send_json(dict(message))
        while True:
            received = await ws.receive(timeout=max(0.0, deadline - time.perf_counter()))
            arrived = time.perf_counter()
            if received.type is not aiohttp.WSMsgType.TEXT:
                reply.error = f"connection {received.type.name.lower()}"
                break
            data = json.loads(received.data)
            kind = data.get("type")
            if data.get("request_id") not in (None, request_id):
                continue  # a late reply to an earlier request (none expected)
            if kind == "audio":
                if reply.ttfa_ms is None:
                    reply.ttfa_ms = (arrived - sent) * MS_PER_S
                encoded: str = data["audio_chunk"]
                reply.sample_rate = int(data["sample_rate"])
                samples = base64_payload_bytes(encoded) / PCM16_BYTES_PER_SAMPLE
                clock.on_chunk(arrived, samples / reply.sample_rate)
                reply.chunks += 1
                if reply.pcm is not None:
                    reply.pcm += base64.b64decode(encoded)
            elif kind == "final":
                reply.total_ms = (arrived - sent) * MS_PER_S
                reply.final = data
                if data.get("cancelled"):
                    reply.error = "cancelled"
                break
            elif kind == "error":
                reply.error = str(data.get("code") or "error")
                retry = data.get("retry_after_s")
                reply.retry_after_s = float(retry) if isinstance(retry, int | float) else None
                break
    except TimeoutError:
        reply.error = "timeout"
    except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
        reply.error = type(exc).__name__
    reply.audio_s = clock.received_s
    reply.underruns = clock.underruns
    reply.largest_gap_ms = clock.largest_gap_s * MS_PER_S
    reply.playback_end = clock.end
    if reply.error is None and reply.ttfa_ms is None:
        reply.error = "no_audio"
    return reply


@dataclass(frozen=True)
class HttpReply:
    status: int
    first_byte_ms: float
    """Request sent -> first bytes of the body."""
    total_ms: float
    """Request sent -> the whole body."""
    body: bytes
    headers: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.status < HTTPStatus.BAD_REQUEST


async def post_timed(
    http: aiohttp.ClientSession,
    url: str,
    body: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_REPLY_TIMEOUT_S,
    raise_for_status: bool = True,
) -> HttpReply:
    """POST ``body`` as JSON; time the first bytes and the whole body of the answer."""
    started = time.perf_counter()
    async with http.post(
        url,
        json=dict(body),
        headers=dict(headers or {}),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    ) as response:
        if raise_for_status:
            response.raise_for_status()
        first = await response.content.readany()
        first_at = time.perf_counter()
        rest = await response.content.read()
        done = time.perf_counter()
        return HttpReply(
            response.status,
            (first_at - started) * MS_PER_S,
            (done - started) * MS_PER_S,
            first + rest,
            dict(response.headers),
        )

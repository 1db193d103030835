"""WS /ws/synthesize: the design's streaming protocol, incremental text, cancel, errors, limits."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import websockets
from aiohttp import ClientWebSocketResponse, WSServerHandshakeError

from engines.audio import AudioChunk
from engines.config import ApiSettings, ServiceConfig
from engines.synthesizer import SpeechSynthesizer
from tests.api_fixtures import (
    MESSAGE_TIMEOUT_S,
    ApiClient,
    Spoken,
    api_client,
    decode_audio,
    error_of,
    eventually,
    metric,
    receive_json,
    scrape,
    services_of,
    speak,
    until_final,
    with_api,
)
from tests.audio_checks import join_and_inner_steps
from tests.transcriber import Transcriber, word_error_rate

SEED_TEXT = "Hello, this is a streaming synthesis test!"
VOICE = "en-us-male-premium"
SEED_REQUEST = {
    "text": SEED_TEXT,
    "voice_id": VOICE,  # the seed's en-us-female-premium has no Piper model in this build
    "language": "en",
    "engine": "piper",
    "stream": True,
}
ENGLISH = (
    "Good morning everyone, and welcome to the weekly planning meeting. "
    "Today we will review the budget and the hiring plan."
)
INCREMENTAL = (
    "The weather today is sunny and warm in the city. "
    "Tomorrow we expect light rain in the afternoon and a cool evening."
)
LONG_TEXT = " ".join(
    [
        "The museum's new wing opens to the public next spring, after four years of work.",
        "It will house the collection of maps, some of them more than five centuries old.",
        "Curators spent months restoring the fragile paper and the faded ink.",
        "Visitors will be able to walk through a model of the old harbour at night.",
        "School groups can book guided tours on weekday mornings, free of charge.",
    ]
    * 4
)
LIVEKIT_RATE_HZ = 48_000
MAX_WER = 0.1
SECONDS_PER_CHAR_MIN = 0.03
"""Speech at a natural pace takes at least this long per character (Piper measured ~0.06)."""
CANCELLED_SHARE_MAX = 0.25
"""After a cancel, at most this share of the whole text's audio may have been sent."""
DURATION_ROUNDING_S = 0.002
CODEC_LENGTH_TOLERANCE_S = {"wav": 0.002, "flac": 0.002, "opus": 0.03, "mp3": 0.08}
MAX_WS_MESSAGE_BYTES = ApiSettings().max_ws_message_bytes


def chunk_samples(message: dict[str, Any]) -> int:
    return len(base64.b64decode(message["audio_chunk"])) // 2


def assert_in_order(spoken: Spoken, request_id: str) -> None:
    """Audio messages of one request: numbered 0..n-1, its id, and one closing final."""
    assert [m["sequence"] for m in spoken.audio] == list(range(len(spoken.audio)))
    assert {m["request_id"] for m in spoken.audio} <= {request_id}
    assert spoken.final["type"] == "final", spoken.final
    assert spoken.final["request_id"] == request_id
    assert spoken.final["chunks"] == len(spoken.audio)


# --- the design's request ---------------------------------------------------------------------


async def test_seed_request_streams_numbered_pcm_chunks_then_one_final(
    api: ApiClient, transcriber: Transcriber
) -> None:
    async with api.ws_connect("/ws/synthesize") as ws:
        spoken = await speak(ws, SEED_REQUEST)
        # the next message after the final belongs to the next request: one final, not two
        follow_up = await speak(ws, {"text": "Next.", "request_id": "next"})
    assert len(spoken.audio) > 1
    request_id = spoken.final["request_id"]
    assert_in_order(spoken, request_id)
    for message in spoken.audio:
        assert message["type"] == "audio"
        assert message["sample_rate"] == LIVEKIT_RATE_HZ
        assert message["format"] == "pcm16"
        assert message["request_id"] == request_id
    final = spoken.final
    assert final["is_final"] is True and final["cancelled"] is False
    assert final["engine"] == "piper"
    assert final["voice_id"] == VOICE
    assert final["ttfa_ms"] > 0
    assert final["characters"] == len(SEED_TEXT)
    total_s = sum(chunk_samples(m) for m in spoken.audio) / LIVEKIT_RATE_HZ
    assert final["audio_duration_s"] == pytest.approx(total_s, abs=DURATION_ROUNDING_S)
    heard = transcriber.transcribe(spoken.pcm(), LIVEKIT_RATE_HZ)
    assert word_error_rate(SEED_TEXT, heard) <= MAX_WER, heard
    assert_in_order(follow_up, "next")


async def test_streamed_chunks_join_without_clicks(api: ApiClient) -> None:
    async with api.ws_connect("/ws/synthesize") as ws:
        spoken = await speak(ws, {"text": ENGLISH, "voice_id": VOICE})
    chunks = [AudioChunk(pcm, LIVEKIT_RATE_HZ) for pcm in spoken.chunk_pcms()]
    assert len(chunks) >= 3
    join_step, inner_step = join_and_inner_steps(chunks)
    assert join_step <= inner_step


async def test_requests_on_one_connection_are_spoken_in_order_with_their_ids(
    api: ApiClient, transcriber: Transcriber
) -> None:
    texts = {
        "first": "The first answer is yes.",
        "second": "The second answer is no.",
        "third": "The third answer is maybe.",
    }
    async with api.ws_connect("/ws/synthesize") as ws:
        for request_id, text in texts.items():
            await ws.send_json({"text": text, "request_id": request_id})
        spoken = {request_id: await until_final(ws) for request_id in texts}
        last = await speak(ws, {"text": "Done.", "request_id": 4})
    for request_id, text in texts.items():
        assert_in_order(spoken[request_id], request_id)
        heard = transcriber.transcribe(spoken[request_id].pcm(), LIVEKIT_RATE_HZ)
        assert word_error_rate(text, heard) <= MAX_WER, (request_id, heard)
    assert_in_order(last, "4")


async def test_non_streamed_request_sends_its_audio_in_one_message(api: ApiClient) -> None:
    async with api.ws_connect("/ws/synthesize") as ws:
        spoken = await speak(ws, {"text": ENGLISH, "stream": False, "request_id": "whole"})
    assert len(spoken.audio) == 1
    assert_in_order(spoken, "whole")
    assert spoken.final["audio_duration_s"] == pytest.approx(
        spoken.pcm().size / LIVEKIT_RATE_HZ, abs=DURATION_ROUNDING_S
    )


# --- cancel -----------------------------------------------------------------------------------


async def test_cancel_stops_a_long_text_and_the_connection_speaks_the_next(
    api: ApiClient,
) -> None:
    async with api.ws_connect("/ws/synthesize") as ws:
        await ws.send_json({"text": LONG_TEXT, "request_id": "long"})
        first = await receive_json(ws)
        assert first["type"] == "audio"
        await ws.send_json({"type": "cancel"})
        rest = await until_final(ws)
        after = await speak(ws, {"text": "Cancelled, and still here.", "request_id": "after"})
    cancelled = Spoken([first, *rest.audio], rest.final)
    assert_in_order(cancelled, "long")
    assert cancelled.final["cancelled"] is True
    whole_text_s = SECONDS_PER_CHAR_MIN * len(LONG_TEXT)
    sent_s = cancelled.pcm().size / LIVEKIT_RATE_HZ
    assert sent_s < CANCELLED_SHARE_MAX * whole_text_s
    assert_in_order(after, "after")
    assert after.final["cancelled"] is False
    assert after.pcm().size > LIVEKIT_RATE_HZ // 2


# --- incremental text -------------------------------------------------------------------------


async def test_incremental_text_is_heard_before_the_flush(
    api: ApiClient, transcriber: Transcriber
) -> None:
    words = INCREMENTAL.split(" ")
    half = len(words) // 2
    async with api.ws_connect("/ws/synthesize") as ws:
        for word in words[:half]:
            await ws.send_json({"type": "text", "text": word + " ", "request_id": "stream"})
        before_flush = await receive_json(ws)
        assert before_flush["type"] == "audio", before_flush
        for word in words[half:]:
            await ws.send_json({"type": "text", "text": word + " "})
        await ws.send_json({"type": "flush"})
        rest = await until_final(ws)
    spoken = Spoken([before_flush, *rest.audio], rest.final)
    assert_in_order(spoken, "stream")
    assert spoken.final["characters"] >= len(INCREMENTAL) - half
    heard = transcriber.transcribe(spoken.pcm(), LIVEKIT_RATE_HZ)
    assert word_error_rate(INCREMENTAL, heard) <= MAX_WER, heard


# --- formats and rates ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "opus", "mp3", "flac"])
async def test_a_request_format_streams_a_file_that_decodes_to_the_audio(
    api: ApiClient, fmt: str
) -> None:
    async with api.ws_connect("/ws/synthesize") as ws:
        spoken = await speak(ws, {"text": ENGLISH, "format": fmt, "request_id": fmt})
    assert_in_order(spoken, fmt)
    assert {m["format"] for m in spoken.audio} == {fmt}
    assert {m["sample_rate"] for m in spoken.audio} == {LIVEKIT_RATE_HZ}
    decoded = decode_audio(spoken.payload())
    assert decoded.channels == 1
    assert decoded.duration_s == pytest.approx(
        spoken.final["audio_duration_s"], abs=CODEC_LENGTH_TOLERANCE_S[fmt]
    )


async def test_sample_rate_16000_gives_16_khz_pcm(api: ApiClient, transcriber: Transcriber) -> None:
    async with api.ws_connect("/ws/synthesize") as ws:
        spoken = await speak(ws, {"text": SEED_TEXT, "sample_rate": 16_000})
    assert {m["sample_rate"] for m in spoken.audio} == {16_000}
    pcm = spoken.pcm()
    assert spoken.final["audio_duration_s"] == pytest.approx(
        pcm.size / 16_000, abs=DURATION_ROUNDING_S
    )
    heard = transcriber.transcribe(pcm, 16_000)
    assert word_error_rate(SEED_TEXT, heard) <= MAX_WER, heard


# --- errors -----------------------------------------------------------------------------------


Send = Callable[[ClientWebSocketResponse], Awaitable[None]]


def text_frame(data: str) -> Send:
    async def send(ws: ClientWebSocketResponse) -> None:
        await ws.send_str(data)

    return send


def json_frame(message: dict[str, Any]) -> Send:
    return text_frame(json.dumps(message))


async def binary_frame(ws: ClientWebSocketResponse) -> None:
    await ws.send_bytes(b"\x00\x01\x02")


BAD_MESSAGES: list[tuple[str, Send, str]] = [
    ("bad-json", text_frame('{"text": "Hi",'), "bad_json"),
    ("not-an-object", text_frame("[1, 2]"), "bad_json"),
    ("binary-frame", binary_frame, "binary_frame"),
    (
        "oversize",
        json_frame({"text": "a" * (MAX_WS_MESSAGE_BYTES + 1)}),
        "message_too_large",
    ),
    ("unknown-type", json_frame({"type": "dance"}), "protocol_error"),
    ("flush-without-text", json_frame({"type": "flush"}), "protocol_error"),
    ("unknown-voice", json_frame({"text": "Hi", "voice_id": "nobody"}), "unknown_voice"),
    ("unknown-key", json_frame({"text": "Hi", "colour": "red"}), "invalid_option"),
    ("missing-text", json_frame({"voice_id": VOICE}), "invalid_option"),
    (
        "engine-not-in-this-build",
        json_frame({"text": "Hi", "engine": "xtts"}),
        "engine_unavailable",
    ),
    ("nothing-speakable", json_frame({"text": "?!"}), "empty_text"),
    ("text-too-long", json_frame({"text": "word " * 2_500}), "text_too_long"),
]


@pytest.mark.parametrize(
    ("send", "code"),
    [(send, code) for _, send, code in BAD_MESSAGES],
    ids=[name for name, _, _ in BAD_MESSAGES],
)
async def test_a_bad_message_gets_a_final_error_and_the_connection_still_speaks(
    api: ApiClient, send: Send, code: str
) -> None:
    async with api.ws_connect("/ws/synthesize") as ws:
        await send(ws)
        error = await receive_json(ws)
        after = await speak(ws, {"text": "Still listening.", "request_id": "after"})
    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error["is_final"] is True
    assert_in_order(after, "after")
    assert after.pcm().size > LIVEKIT_RATE_HZ // 4


async def test_an_error_names_the_request_it_ends(api: ApiClient) -> None:
    async with api.ws_connect("/ws/synthesize") as ws:
        await ws.send_json({"text": "Hi", "voice_id": "nobody", "request_id": "r-7"})
        error = await receive_json(ws)
    assert (error["type"], error["request_id"], error["is_final"]) == ("error", "r-7", True)


async def test_errors_are_counted_by_code(api: ApiClient) -> None:
    before = await scrape(api)
    async with api.ws_connect("/ws/synthesize") as ws:
        await ws.send_str("not json")
        assert (await receive_json(ws))["code"] == "bad_json"
    after = await scrape(api)
    counted = metric(after, "tts_request_errors_total", code="bad_json") - metric(
        before, "tts_request_errors_total", code="bad_json"
    )
    assert counted == 1


# --- keys and sessions ------------------------------------------------------------------------


async def test_websocket_accepts_a_token_query_and_refuses_without_it(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> None:
    config = with_api(service_config, api_keys=("ws-key",))
    async with api_client(config, synthesizer) as client:
        for path in ("/ws/synthesize", "/ws/synthesize?token=wrong"):
            with pytest.raises(WSServerHandshakeError) as refused:
                await client.ws_connect(path)
            assert refused.value.status == 401
        refused_body = await client.get("/ws/synthesize")
        assert (await error_of(refused_body, 401))["code"] == "unauthorized"
        async with client.ws_connect("/ws/synthesize?token=ws-key") as ws:
            by_token = await speak(ws, {"text": "Token accepted.", "request_id": "t"})
        headers = {"Authorization": "Bearer ws-key"}
        async with client.ws_connect("/ws/synthesize", headers=headers) as ws:
            by_header = await speak(ws, {"text": "Header accepted.", "request_id": "h"})
    assert_in_order(by_token, "t")
    assert_in_order(by_header, "h")
    assert by_token.pcm().size > 0 and by_header.pcm().size > 0


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_a_client_that_leaves_mid_stream_frees_its_slot_and_synthesis(
    api: ApiClient, synthesizer: SpeechSynthesizer, how: str
) -> None:
    services = services_of(api)
    utterances_before = synthesizer.active_utterances
    url = str(api.make_url("/ws/synthesize")).replace("http://", "ws://", 1)
    async with websockets.connect(url) as leaving:
        await leaving.send(json.dumps({"text": LONG_TEXT}))
        first = json.loads(await asyncio.wait_for(leaving.recv(), MESSAGE_TIMEOUT_S))
        assert first["type"] == "audio"
        assert services.limiter.active == 1
        assert synthesizer.active_utterances == utterances_before + 1
        if how == "abort":
            leaving.transport.abort()  # the network drops: no close frame
    await eventually(lambda: services.limiter.active == 0, what="session slot freed")
    await eventually(
        lambda: synthesizer.active_utterances == utterances_before, what="utterance closed"
    )

    async def gauge_back_to_zero() -> bool:
        return metric(await scrape(api), "tts_active_sessions") == 0

    await eventually(gauge_back_to_zero, what="tts_active_sessions back to 0")
    async with api.ws_connect("/ws/synthesize") as ws:
        after = await speak(ws, {"text": "The server is fine.", "request_id": "after"})
    assert_in_order(after, "after")


async def test_a_slow_reader_gets_every_chunk_in_order(
    api: ApiClient, transcriber: Transcriber
) -> None:
    text = " ".join(LONG_TEXT.split(". ")[:4]) + "."
    async with api.ws_connect("/ws/synthesize") as slow:
        await slow.send_json({"text": text, "request_id": "slow"})
        # the slow client reads nothing while another session speaks a whole request
        async with api.ws_connect("/ws/synthesize") as other:
            meanwhile = await speak(other, {"text": ENGLISH, "request_id": "other"})
        spoken = await until_final(slow)
    assert_in_order(meanwhile, "other")
    assert_in_order(spoken, "slow")
    pcm = spoken.pcm()
    assert spoken.final["audio_duration_s"] == pytest.approx(
        pcm.size / LIVEKIT_RATE_HZ, abs=DURATION_ROUNDING_S
    )
    assert spoken.final["characters"] == len(text)
    heard = transcriber.transcribe(pcm, LIVEKIT_RATE_HZ)
    assert word_error_rate(text, heard) <= MAX_WER, heard
    assert np.abs(pcm).max() > 0

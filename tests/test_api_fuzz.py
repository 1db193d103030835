"""Whatever a client sends, the API answers with a typed error or audio: never a 500, never a hang.

Random JSON bodies for the HTTP routes and random frames for the WebSocket, then the same
connection (or app) must still speak. Requests that get as far as synthesis use espeak-ng (or,
for OpenAI bodies, which name no engine, Piper) and short texts, so hundreds take seconds.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.api_fixtures import ApiClient, error_of, receive_json, speak

ANSWER_TIMEOUT_S = 30.0
"""Every request is answered within this (a hang fails the example instead of the run)."""
EXAMPLES = 150
INTERNAL_ERROR = "internal_error"
FRAME_TYPES = {"audio", "final", "error"}

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
short_texts = st.sampled_from(["Hello.", "Yes, no.", "3.14 is pi.", "", " ", "?!", "é"]) | st.text(
    max_size=24
)
plausible: dict[str, st.SearchStrategy[Any]] = {
    # mostly values the API accepts, so that many requests get as far as synthesis
    "text": short_texts,
    "voice_id": st.sampled_from(
        ["en-us-male-premium", "en-us-female-premium", "ja-jp-male-premium", "fr-fr-female-premium"]
    )
    | st.text(max_size=8),
    "language": st.sampled_from(["en", "en-US", "ja", "fr", "nl", "pt-BR", "zz", "", "en_US"]),
    "engine": st.sampled_from(["espeak-ng", "espeak-ng", "espeak-ng", "xtts", "kokoro", "nope"]),
    "quality": st.sampled_from(["fast", "standard", "premium", "best"]),
    "strategy": st.sampled_from(["auto", "manual", "quality_first", "speed_first", "random"]),
    "speed": st.sampled_from([0.5, 1, 2.0, 0.49]) | st.floats(0.5, 2.0),
    "sample_rate": st.sampled_from([8_000, 16_000, 22_050, 24_000, 44_100, 48_000, 12_345]),
    "stream": st.booleans() | st.sampled_from(["true", "0", "yes"]),
    "request_id": st.text(max_size=8) | st.integers(),
    "format": st.sampled_from(["pcm16", "pcm", "wav", "opus", "mp3", "flac", "ogg"]),
    "enhance_audio": st.booleans() | st.sampled_from(["true", "false", "1", "maybe"]),
    "voice_clone_reference": st.sampled_from([None, None, None, "UklGRg=="]),
}
keyed_bodies = st.fixed_dictionaries(
    {"text": short_texts}, optional={k: v for k, v in plausible.items() if k != "text"}
)
"""Mostly well-formed requests, which get as far as synthesis."""
mutated_bodies = st.builds(
    lambda body, key, value: {**body, key: value},
    keyed_bodies,
    st.sampled_from(sorted(plausible)) | st.text(max_size=8),
    json_values,
)
"""A well-formed request with one key set to any JSON value."""
random_bodies = st.dictionaries(
    st.sampled_from(sorted(plausible)) | st.text(max_size=8), json_values, max_size=5
)


def spoken_by_espeak(body: dict[str, Any]) -> dict[str, Any]:
    """Synthesis, where a body gets that far, by the engine that answers in milliseconds."""
    return body if "engine" in body else {**body, "engine": "espeak-ng"}


synthesis_bodies = (keyed_bodies | mutated_bodies | random_bodies).map(spoken_by_espeak)
raw_bodies = (
    st.binary(max_size=64)
    | st.text(max_size=64).map(str.encode)
    | json_values.map(lambda value: json.dumps(value).encode())
)
openai_bodies = st.fixed_dictionaries(
    {},
    optional={
        "input": short_texts | json_values,
        "voice": st.sampled_from(["alloy", "nova", "en-us-male-premium", "nobody"]) | json_values,
        "model": st.sampled_from(["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "x"]) | json_values,
        "response_format": st.sampled_from(["mp3", "opus", "wav", "pcm", "flac", "aac"])
        | json_values,
        "speed": st.sampled_from([0.25, 1.0, 4.0]) | json_values,
    },
)


async def assert_answered(api: ApiClient, path: str, data: bytes) -> None:
    """A reply within the timeout: audio, or a typed error that is not the server's fault."""
    async with asyncio.timeout(ANSWER_TIMEOUT_S):
        response = await api.post(path, data=data, headers={"Content-Type": "application/json"})
        event(f"{path}: HTTP {response.status}")
        if response.status == 200:
            assert await response.read()
            return
        error = await error_of(response, response.status)
        event(f"{path}: {error['code']}")
    assert 400 <= response.status < 500 or response.status == 503, (response.status, error)
    assert error["code"] != INTERNAL_ERROR, (data[:200], error)


async def assert_still_speaks(api: ApiClient) -> None:
    async with asyncio.timeout(ANSWER_TIMEOUT_S):
        response = await api.post("/synthesize", json={"text": "Fine.", "engine": "espeak-ng"})
        assert response.status == 200, await response.text()


@FUZZ_SETTINGS
@given(body=synthesis_bodies)
async def test_random_synthesize_bodies_get_audio_or_a_typed_error(
    api: ApiClient, body: dict[str, Any]
) -> None:
    await assert_answered(api, "/synthesize", json.dumps(body).encode())


@FUZZ_SETTINGS
@given(raw=raw_bodies)
async def test_random_bytes_to_synthesize_get_a_typed_error(api: ApiClient, raw: bytes) -> None:
    await assert_answered(api, "/synthesize", raw)
    await assert_still_speaks(api)


@settings(FUZZ_SETTINGS, max_examples=EXAMPLES // 2)
@given(body=openai_bodies)
async def test_random_openai_speech_bodies_get_audio_or_a_typed_error(
    api: ApiClient, body: dict[str, Any]
) -> None:
    await assert_answered(api, "/v1/audio/speech", json.dumps(body).encode())


# --- WebSocket --------------------------------------------------------------------------------

message_types = st.sampled_from(["text", "flush", "cancel", "synthesize", "bogus"]) | json_values
ws_messages = st.one_of(
    synthesis_bodies,
    st.builds(lambda kind, body: {**body, "type": kind}, message_types, synthesis_bodies),
)
frames = st.lists(
    st.one_of(
        ws_messages.map(lambda message: ("text", json.dumps(message))),
        st.text(max_size=40).map(lambda garbage: ("text", garbage)),
        st.binary(max_size=40).map(lambda data: ("binary", data)),
    ),
    min_size=1,
    max_size=4,
)


async def send_frame(ws: ClientWebSocketResponse, kind: str, payload: str | bytes) -> None:
    if kind == "binary":
        assert isinstance(payload, bytes)
        await ws.send_bytes(payload)
    else:
        assert isinstance(payload, str)
        await ws.send_str(payload)


@FUZZ_SETTINGS
@given(sent=frames)
async def test_random_websocket_frames_never_break_the_connection(
    api: ApiClient, sent: list[tuple[str, str | bytes]]
) -> None:
    async with api.ws_connect("/ws/synthesize") as ws:
        for kind, payload in sent:
            await send_frame(ws, kind, payload)
        await ws.send_json({"type": "flush"})  # ends any text stream a frame opened
        await ws.send_json({"text": "Fine.", "engine": "espeak-ng", "request_id": "sentinel"})
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            while True:
                message = await receive_json(ws)
                assert message.get("type") in FRAME_TYPES, message
                assert message.get("code") != INTERNAL_ERROR, (sent, message)
                event(f"ws: {message.get('code') or message.get('type')}")
                if message.get("request_id") == "sentinel" and message.get("is_final"):
                    break
    assert message["type"] == "final", (sent, message)


# --- what the fuzzing found: inputs that used to crash a handler --------------------------------

DEEP_NESTING = "[" * 100_000
HUGE_INTEGER = "1" + "0" * 400
"""Larger than any float: float() of it raises OverflowError."""
TOO_MANY_DIGITS = "7" * 5_000
"""Past Python's 4300-digit limit for int/str conversion: json.loads raises ValueError."""

CRASHERS: list[tuple[str, str, str]] = [
    ("synthesize-deep-nesting", "/synthesize", DEEP_NESTING),
    ("synthesize-huge-speed", "/synthesize", f'{{"text": "Hi", "speed": {HUGE_INTEGER}}}'),
    ("synthesize-many-digits", "/synthesize", f'{{"text": "Hi", "request_id": {TOO_MANY_DIGITS}}}'),
    ("speech-huge-speed", "/v1/audio/speech", f'{{"input": "Hi", "speed": {HUGE_INTEGER}}}'),
    ("speech-format-list", "/v1/audio/speech", '{"input": "Hi", "response_format": ["mp3"]}'),
    ("speech-deep-nesting", "/v1/audio/speech", DEEP_NESTING),
]


@pytest.mark.parametrize(
    ("path", "raw"),
    [(path, raw) for _, path, raw in CRASHERS],
    ids=[name for name, _, _ in CRASHERS],
)
async def test_pathological_json_is_a_400_not_a_500(api: ApiClient, path: str, raw: str) -> None:
    response = await api.post(path, data=raw, headers={"Content-Type": "application/json"})
    error = await error_of(response, 400)
    assert error["code"] in ("bad_json", "invalid_option")


@pytest.mark.parametrize(
    "raw",
    [
        DEEP_NESTING,
        f'{{"text": "Hi", "speed": {HUGE_INTEGER}}}',
        f'{{"text": "Hi", "request_id": {TOO_MANY_DIGITS}}}',
    ],
    ids=["deep-nesting", "huge-speed", "many-digits"],
)
async def test_pathological_json_on_the_websocket_is_an_error_message(
    api: ApiClient, raw: str
) -> None:
    async with api.ws_connect("/ws/synthesize") as ws:
        await ws.send_str(raw)
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            reply = await ws.receive()
        assert reply.type is WSMsgType.TEXT, (reply.type, reply.data)
        error = json.loads(reply.data)
        after = await speak(ws, {"text": "Fine.", "engine": "espeak-ng", "request_id": "after"})
    assert (error["type"], error["is_final"]) == ("error", True)
    assert error["code"] in ("bad_json", "invalid_option")
    assert after.final["type"] == "final"

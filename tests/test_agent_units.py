"""The agent's parts that need no room: request parsing, speak policy, 20 ms framing, load."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from livekit import rtc

from agent.load_monitor import LoadMonitor
from agent.speak_policy import SpeakPolicy
from agent.speak_request import (
    SpeakMode,
    parse_speak_attribute,
    parse_speak_packet,
    parse_stream_attributes,
)
from agent.track_player import FRAME_SAMPLES, INTERRUPT_FADE_MS, MAX_FRAME_SAMPLES, _FrameWriter
from engines.audio import LIVEKIT_SAMPLE_RATE
from engines.config import SpeakPermission
from engines.errors import RequestError

MAX_BYTES = 4096


def packet(**body: object) -> bytes:
    return json.dumps(body).encode()


def test_a_packet_becomes_a_request_with_the_sender_as_reply_target() -> None:
    request = parse_speak_packet(
        packet(id=7, text="Hi", language="fr", mode="interrupt", speed=1.2),
        sender="translator",
        max_bytes=MAX_BYTES,
    )
    assert request.id == "7" and request.mode is SpeakMode.INTERRUPT
    assert request.reply_to == "translator"
    assert request.synthesis.language == "fr" and request.synthesis.speed == 1.2


def test_a_server_packet_may_name_who_gets_the_events() -> None:
    request = parse_speak_packet(
        packet(text="Hi", reply_to="listener"), sender=None, max_bytes=MAX_BYTES
    )
    assert request.reply_to == "listener"
    assert request.id.startswith("tts_")


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        (b"\xff\xfe", "bad_json", "UTF-8"),
        (b"[1, 2]", "bad_json", "JSON object"),
        (b"{", "bad_json", "not valid JSON"),
        (b"x" * (MAX_BYTES + 1), "bad_json", "byte limit"),
        (packet(text="Hi", colour="red"), "invalid_option", "colour"),
        (packet(text=3), "invalid_option", "'text'"),
        (packet(text="Hi", mode="shout"), "invalid_option", "queue, interrupt"),
        (packet(text="Hi", id=""), "invalid_option", "'id'"),
        (packet(text="Hi", speed="fast"), "invalid_option", "'speed'"),
        (packet(text="Hi", voice_clone_reference=7), "invalid_option", "voice_clone_reference"),
    ],
)
def test_bad_packets_name_what_is_wrong(payload: bytes, code: str, fragment: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_speak_packet(payload, sender="s", max_bytes=MAX_BYTES)
    assert caught.value.code == code
    assert fragment in str(caught.value)


def test_stream_attributes_carry_the_options() -> None:
    request = parse_stream_attributes(
        {"id": "s1", "language": "de", "speed": "0.9", "lk.segment_id": "x"}, sender="llm"
    )
    assert request.synthesis.text == "" and request.synthesis.speed == 0.9
    with pytest.raises(RequestError):
        parse_stream_attributes({"speed": "quick"}, sender="llm")


def test_the_attribute_is_plain_text_or_a_request() -> None:
    plain = parse_speak_attribute("Hello there", sender="p", max_bytes=MAX_BYTES)
    assert plain.synthesis.text == "Hello there"
    full = parse_speak_attribute(
        '{"id": "a", "text": "Hola", "language": "es"}', sender="p", max_bytes=MAX_BYTES
    )
    assert full.id == "a" and full.synthesis.language == "es"


def test_policy_from_config_and_room_metadata() -> None:
    base = SpeakPolicy.from_config(SpeakPermission(required_attributes={"team": "blue"}))
    assert base.refusal("anyone", {"team": "blue"}) is None
    assert "team" in str(base.refusal("anyone", {}))
    room = base.narrowed_by(json.dumps({"hive_tts": {"allowed_identities": ["a", "b"]}}))
    assert room.refusal("a", {"team": "blue"}) is None
    assert "not allowed" in str(room.refusal("c", {"team": "blue"}))
    narrower = room.narrowed_by(json.dumps({"hive_tts": {"allowed_identities": ["b", "z"]}}))
    assert narrower.allowed_identities == frozenset({"b"})  # metadata can only narrow
    assert room.refusal(None, {}) is None  # the server API (admin key) always may
    assert base.narrowed_by("not json") == base
    assert base.narrowed_by('{"other": 1}') == base


async def test_audio_goes_in_10_ms_units_up_to_100_ms_and_the_remainder_carries_over() -> None:
    source = rtc.AudioSource(LIVEKIT_SAMPLE_RATE, 1, queue_size_ms=10_000)
    writer = _FrameWriter(source)
    sizes: list[int] = []
    capture = writer.capture

    async def counted(frame: np.ndarray) -> None:
        sizes.append(frame.size)
        await capture(frame)

    writer.capture = counted  # type: ignore[method-assign]
    await writer.write(np.ones(FRAME_SAMPLES * 2 + 100, dtype=np.int16))
    assert writer.samples_out == FRAME_SAMPLES * 2
    await writer.write(np.ones(FRAME_SAMPLES - 100, dtype=np.int16))
    assert writer.samples_out == FRAME_SAMPLES * 3
    await writer.write(np.ones(MAX_FRAME_SAMPLES * 2 + FRAME_SAMPLES + 50, dtype=np.int16))
    assert sizes[-3:] == [MAX_FRAME_SAMPLES, MAX_FRAME_SAMPLES, FRAME_SAMPLES]
    await writer.finish()
    assert sizes[-1] == FRAME_SAMPLES  # the last unit padded, not dropped
    assert writer.samples_out == FRAME_SAMPLES * 5 + MAX_FRAME_SAMPLES * 2
    await source.aclose()


async def test_an_interruption_fades_from_the_sample_playing() -> None:
    source = rtc.AudioSource(LIVEKIT_SAMPLE_RATE, 1, queue_size_ms=10_000)
    writer = _FrameWriter(source)
    level = 10_000
    await writer.write(np.full(FRAME_SAMPLES * 5, level, dtype=np.int16))
    await asyncio.sleep(0)
    fade = writer.fade_out()
    source.clear_queue()
    ramp = LIVEKIT_SAMPLE_RATE * INTERRUPT_FADE_MS // 1000
    assert fade[0] == pytest.approx(level, abs=1)  # continues from where playback is
    assert np.all(np.diff(fade[:ramp].astype(np.int32)) <= 0)  # then only falls
    assert np.all(fade[ramp:] == 0)
    await source.aclose()


class _IdleEngines:
    """An engine host with two engine threads and nothing queued (only what the load reads)."""

    def engine_threads(self) -> int:
        return 2

    def queue_depth(self) -> int:
        return 0


def test_each_room_adds_its_share_to_the_reported_load() -> None:
    """Rooms join idle: without their share a burst of them left the load at 0 and LiveKit gave
    them all to one worker."""
    monitor = LoadMonitor(_IdleEngines(), rooms_at_full_load=40)  # type: ignore[arg-type]
    try:
        assert monitor.room_share() == 0.0
        monitor.rooms = 10
        assert monitor.room_share() == 0.25
        assert monitor.load() >= 0.25
        monitor.rooms = 80
        assert monitor.room_share() == 1.0
        uncounted = LoadMonitor(_IdleEngines(), rooms_at_full_load=0)  # type: ignore[arg-type]
        uncounted.rooms = 80
        assert uncounted.room_share() == 0.0
        uncounted.close()
    finally:
        monitor.close()

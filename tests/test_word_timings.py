"""Word timings: where each word is in the audio, on every path out, and as caption files.

The placements are checked against the audio itself (words over voiced time, never in a pause),
against the engine's own durations (Piper's duration predictor), and against whisper's word
timestamps on English and Japanese speech."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientWebSocketResponse

from agent.captions import encode_timed
from engines.audio import AudioChunk
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest
from engines.word_timings import (
    WordTimeline,
    WordTiming,
    estimate_word_timings,
    split_words,
    to_srt,
    to_vtt,
    voiced_spans,
    word_timings,
)
from tests.api_fixtures import ApiClient, error_of, receive_json
from tests.transcriber import Transcriber
from tools.benchkit.word_alignment import median_ms, start_differences

RATE = 16_000
MAX_MEDIAN_START_MS = 80.0
"""Median distance of word starts from whisper's (the issue's 80 ms)."""
ENGLISH = [
    "The weather in Paris is sunny today, with a light breeze from the west.",
    "Please remember to bring your passport, your tickets and a warm coat for the evening.",
    "Our train leaves at half past seven, so we should be at the station by seven.",
]
JAPANESE = [
    "今日はとても良い天気ですね。",
    "明日の会議は午後三時から始まります。",
    "駅までは歩いて十分ほどかかります。",
]


def tone(seconds: float, frequency: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * frequency * t) * 8000).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.int16)


# --- placing words ------------------------------------------------------------------------


def test_words_are_split_by_spaces_and_japanese_by_openjtalk() -> None:
    assert split_words("Hello, world — again.") == ["Hello,", "world—", "again."]
    assert split_words("明日の会議は午後三時から始まります。") == [
        "明日",
        "の",
        "会議",
        "は",
        "午後",
        "三",
        "時",
        "から",
        "始まり",
        "ます。",
    ]


def test_voiced_spans_bridge_short_gaps_and_keep_pauses() -> None:
    pcm = np.concatenate(
        [silence(0.2), tone(0.5), silence(0.05), tone(0.3), silence(0.4), tone(0.6), silence(0.1)]
    )
    spans = voiced_spans(pcm, RATE)
    assert len(spans) == 2  # the 50 ms gap is a consonant, the 400 ms one a pause
    assert spans[0][0] == pytest.approx(0.2, abs=0.02)
    assert spans[0][1] == pytest.approx(1.05, abs=0.02)
    assert spans[1][0] == pytest.approx(1.45, abs=0.02)
    assert spans[1][1] == pytest.approx(2.05, abs=0.02)


def test_a_pause_falls_between_words_and_no_word_starts_in_it() -> None:
    # "one two," then a pause, then "three four": four equal syllables
    pcm = np.concatenate([silence(0.1), tone(0.8), silence(0.4), tone(0.8), silence(0.1)])
    words = estimate_word_timings("one two, three four", pcm, RATE, offset_s=2.0)
    assert [w.word for w in words] == ["one", "two,", "three", "four"]
    starts = [w.start_s - 2.0 for w in words]
    assert starts[0] == pytest.approx(0.1, abs=0.02)
    assert starts[2] == pytest.approx(1.3, abs=0.02)  # after the pause, not in it
    assert all(a.end_s <= b.start_s + 1e-6 for a, b in zip(words, words[1:], strict=False))
    assert words[-1].end_s - 2.0 == pytest.approx(2.1, abs=0.02)


def test_engine_durations_replace_the_estimate_when_one_per_word() -> None:
    pcm = np.concatenate([silence(0.1), tone(1.0), silence(0.1)])
    words = estimate_word_timings("a b", pcm, RATE, engine_weights=[3.0, 1.0])
    assert words[1].start_s == pytest.approx(0.85, abs=0.02)  # three quarters of the speech
    ignored = estimate_word_timings("a b", pcm, RATE, engine_weights=[3.0, 1.0, 1.0])
    assert ignored[1].start_s == pytest.approx(0.6, abs=0.02)  # count differs: the estimate


def test_the_timeline_places_a_piece_when_its_audio_is_whole() -> None:
    timeline = WordTimeline()
    first = timeline.add(AudioChunk(tone(0.5), RATE, "Hello there"))  # a streamed piece starts
    rest = timeline.add(AudioChunk(tone(0.5), RATE, "", ends_piece=True))
    pause = timeline.add(AudioChunk(silence(0.3), RATE))  # an SSML break: no piece's
    second = timeline.add(AudioChunk(tone(0.5), RATE, "again", ends_piece=True))
    assert first == [] and pause == []
    assert [w.word for w in rest] == ["Hello", "there"]
    assert rest[-1].end_s == pytest.approx(1.0, abs=0.02)
    assert second[0].start_s == pytest.approx(1.3, abs=0.02)  # after both earlier chunks
    assert timeline.finish_now() == []


def test_srt_and_vtt_are_timed_cues_of_a_few_words() -> None:
    words = [
        WordTiming("Good", 0.0, 0.3),
        WordTiming("morning.", 0.3, 0.9),
        WordTiming("It", 1.2, 1.3),
        WordTiming("is", 1.3, 1.45),
        WordTiming("sunny.", 1.45, 2.0),
    ]
    assert to_srt(words) == (
        "1\n00:00:00,000 --> 00:00:00,900\nGood morning.\n\n"
        "2\n00:00:01,200 --> 00:00:02,000\nIt is sunny.\n"
    )
    assert to_vtt(words) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:00.900\nGood <00:00:00.300>morning.\n\n"
        "00:00:01.200 --> 00:00:02.000\nIt <00:00:01.300>is <00:00:01.450>sunny.\n"
    )
    japanese = [WordTiming("今日", 0.0, 0.3), WordTiming("は。", 0.3, 0.5)]
    assert "今日<00:00:00.300>は。" in to_vtt(japanese)  # no spaces in Japanese


# --- real speech --------------------------------------------------------------------------


async def spoken_words(
    synthesizer: SpeechSynthesizer, text: str, language: str
) -> tuple[list[AudioChunk], list[WordTiming]]:
    request = SynthesisRequest(text=text, language=language)
    async with synthesizer.synthesize(request) as utterance:
        chunks = [chunk async for chunk in utterance]
    return chunks, word_timings(chunks)


def check_placed(words: list[WordTiming], chunks: list[AudioChunk], text: str) -> None:
    duration = sum(chunk.duration_s for chunk in chunks)
    assert "".join(w.word for w in words).replace(" ", "") == text.replace(" ", "")
    assert all(0 <= w.start_s <= w.end_s <= duration + 1e-6 for w in words)
    assert all(a.end_s <= b.start_s + 1e-6 for a, b in zip(words, words[1:], strict=False))


@pytest.mark.parametrize(("language", "texts"), [("en", ENGLISH), ("ja", JAPANESE)])
async def test_word_starts_are_within_80_ms_of_whispers(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber, language: str, texts: list[str]
) -> None:
    differences: list[float] = []
    for text in texts:
        chunks, words = await spoken_words(synthesizer, text, language)
        check_placed(words, chunks, text)
        if language == "en":  # Piper's duration predictor placed the words of some piece
            assert any(c.word_weights for c in chunks if c.ends_piece)
        pcm = np.concatenate([chunk.pcm for chunk in chunks])
        # whisper base: tiny.en's word timestamps lag the speech by about 100 ms
        heard = transcriber.words(pcm, chunks[0].sample_rate, language, base=True)
        found = start_differences(
            [(w.word, w.start_s) for w in words], [(w, start) for w, start, _ in heard]
        )
        assert len(found) >= len(words) // 2, (words, heard)
        differences += found
    print(f"\n{language}: {len(differences)} words, median {median_ms(differences):.0f} ms")
    assert median_ms(differences) <= MAX_MEDIAN_START_MS


# --- on the API ---------------------------------------------------------------------------


async def ws_messages(ws: ClientWebSocketResponse, request: dict[str, Any]) -> list[dict[str, Any]]:
    await ws.send_json(request)
    messages = []
    while True:
        message = await receive_json(ws)
        messages.append(message)
        if message.get("is_final"):
            return messages


async def test_websocket_sends_each_piece_s_words_after_its_audio(api: ApiClient) -> None:
    text = ENGLISH[1]
    async with api.ws_connect("/ws/synthesize") as ws:
        messages = await ws_messages(ws, {"text": text, "language": "en", "timings": True})
        plain = await ws_messages(ws, {"text": "No timings.", "language": "en"})
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "audio" and kinds[-1] == "final" and kinds.count("final") == 1
    words = [w for m in messages if m["type"] == "words" for w in m["words"]]
    assert " ".join(w["word"] for w in words) == text
    assert len([m for m in messages if m["type"] == "words"]) == messages[-1]["pieces"]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert words[-1]["end"] <= messages[-1]["audio_duration_s"] + 1e-3
    assert {m["type"] for m in plain} == {"audio", "final"}  # only when asked


async def test_synthesize_returns_timings_and_caption_files(api: ApiClient) -> None:
    body = {"text": "Good morning. The meeting starts at nine.", "language": "en"}
    reply = await api.post("/synthesize", json={**body, "captions": "srt"})
    assert reply.status == 200
    data = await reply.json()
    words = data["timings"]
    assert [w["word"] for w in words][:2] == ["Good", "morning."]
    assert words[-1]["end"] <= data["duration_s"] + 1e-3
    assert data["captions"].startswith("1\n00:00:00,")
    assert re.search(r"--> 00:00:0\d,\d{3}\nGood morning\.\n", data["captions"])

    vtt = await api.post("/synthesize?captions=vtt", json=body, headers={"Accept": "text/vtt"})
    assert vtt.status == 200 and vtt.content_type == "text/vtt"
    text = await vtt.text()
    assert text.startswith("WEBVTT\n\n00:00:00.")
    assert "Good <00:00:0" in text

    timed = await (await api.post("/synthesize?timings=true", json=body)).json()
    assert len(timed["timings"]) == 7 and "captions" not in timed
    untimed = await (await api.post("/synthesize", json=body)).json()
    assert "timings" not in untimed


async def test_an_unknown_caption_format_is_a_400_naming_it(api: ApiClient) -> None:
    reply = await api.post("/synthesize", json={"text": "Hi.", "captions": "ass"})
    error = await error_of(reply, 400)
    assert error["code"] == "invalid_option" and "'captions'" in error["message"]
    async with api.ws_connect("/ws/synthesize") as ws:
        await ws.send_json({"text": "Hi.", "timings": "often"})
        message = await receive_json(ws)
    assert message["type"] == "error" and "'timings'" in message["message"]
    assert json.dumps(message)  # a JSON error, the connection still open until closed


def test_timed_captions_are_livekit_agents_json_transcript_lines() -> None:
    line = encode_timed(" 天気", 1.2344, 1.6)
    assert line.endswith("\n")
    assert json.loads(line) == {"text": " 天気", "start_time": 1.234, "end_time": 1.6}
    assert json.loads(encode_timed("Hi", None, None)) == {"text": "Hi"}

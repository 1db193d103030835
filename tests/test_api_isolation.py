"""Concurrent WebSocket sessions each hear their own text, and nothing of anyone else's."""

from __future__ import annotations

import asyncio

import pytest

from engines.synthesizer import SpeechSynthesizer, SynthesisRequest
from tests.api_fixtures import ApiClient, Spoken, speak
from tests.transcriber import Transcriber, character_error_rate, word_error_rate

ENGLISH = {
    "fox": "The red fox runs across the quiet field at dawn.",
    "invoice": "Please send the invoice to the accounting department today.",
    "pie": "My grandmother bakes apple pie every Sunday afternoon.",
    "train": "The train to Chicago leaves from platform nine.",
    "directions": "Turn left at the second traffic light, then park near the bank.",
    "frog": "Scientists discovered a new species of frog in the rainforest.",
    "football": "Our football team won the championship after a long season.",
}
JAPANESE = {"weather": "今日はいい天気ですね。"}
LIVEKIT_RATE_HZ = 48_000
MAX_WER = 0.35
MAX_CER = 0.25
LENGTH_TOLERANCE_S = 0.01
"""Piper runs deterministically in tests: the same text has the same length, alone or not."""


async def session(api: ApiClient, request_id: str, text: str, language: str) -> Spoken:
    async with api.ws_connect("/ws/synthesize") as ws:
        return await speak(ws, {"text": text, "language": language, "request_id": request_id})


async def test_eight_concurrent_sessions_each_hear_only_their_own_text(
    api: ApiClient, synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    texts = {**ENGLISH, **JAPANESE}
    languages = {request_id: "ja" if request_id in JAPANESE else "en" for request_id in texts}
    results = await asyncio.gather(
        *(session(api, rid, text, languages[rid]) for rid, text in texts.items())
    )
    spoken = dict(zip(texts, results, strict=True))

    for request_id, heard_by in spoken.items():
        assert [m["sequence"] for m in heard_by.audio] == list(range(len(heard_by.audio)))
        assert {m["request_id"] for m in heard_by.audio} == {request_id}
        final = heard_by.final
        assert (final["type"], final["request_id"], final["cancelled"]) == (
            "final",
            request_id,
            False,
        )
        assert final["engine"] == ("kokoro" if request_id in JAPANESE else "piper")
        assert final["characters"] == len(texts[request_id])

    for request_id in ENGLISH:
        heard = transcriber.transcribe(spoken[request_id].pcm(), LIVEKIT_RATE_HZ)
        errors = {
            other: word_error_rate(other_text, heard) for other, other_text in ENGLISH.items()
        }
        assert errors[request_id] <= MAX_WER, (request_id, heard)
        assert min(errors, key=lambda other: errors[other]) == request_id, (request_id, heard)
    for request_id, text in JAPANESE.items():
        heard = transcriber.transcribe(spoken[request_id].pcm(), LIVEKIT_RATE_HZ, "ja")
        assert character_error_rate(text, heard) <= MAX_CER, heard

    # nothing was added to a session's audio: each is as long as its text spoken alone
    for request_id, text in ENGLISH.items():
        alone = await synthesizer.synthesize(SynthesisRequest(text)).collect()
        together_s = spoken[request_id].pcm().size / LIVEKIT_RATE_HZ
        assert together_s == pytest.approx(alone.duration_s, abs=LENGTH_TOLERANCE_S), request_id

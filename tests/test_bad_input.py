"""Bad input gets a typed error naming what was wrong, or is spoken sensibly; never a crash."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.errors import (
    EmptyTextError,
    EngineUnavailableError,
    HiveTTSError,
    InvalidOptionError,
    TextTooLongError,
    UnknownEngineError,
    UnknownLanguageError,
    UnknownVoiceError,
)
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest
from tests.transcriber import Transcriber, word_error_rate

MAX_SESSION_WER = 0.35


@pytest.mark.parametrize(
    ("request_", "error", "mentions"),
    [
        (SynthesisRequest(""), EmptyTextError, "empty"),
        (SynthesisRequest("   \n\t "), EmptyTextError, "empty"),
        (SynthesisRequest("?!... ---"), EmptyTextError, "speakable"),
        (SynthesisRequest("Hi", voice_id="en-gb-robot"), UnknownVoiceError, "en-us-male-premium"),
        (SynthesisRequest("Hi", engine="festival"), UnknownEngineError, "piper"),
        (SynthesisRequest("Hi", language="xx"), UnknownLanguageError, "ja"),
        (SynthesisRequest("Hi", language="not a language"), InvalidOptionError, "language"),
        (SynthesisRequest("Hi", quality="ultra"), InvalidOptionError, "premium"),
        (SynthesisRequest("Hi", strategy="random"), InvalidOptionError, "speed_first"),
        (SynthesisRequest("Hi", speed=5.0), InvalidOptionError, "speed"),
        (SynthesisRequest("Hi", sample_rate=12_345), InvalidOptionError, "48000"),
        (SynthesisRequest("Hi", engine="kokoro"), InvalidOptionError, "engines that can"),
        (SynthesisRequest("Hi", engine="xtts"), EngineUnavailableError, "xtts"),
        (
            SynthesisRequest("Hi", voice_id="fr-fr-female-premium", language="ja"),
            InvalidOptionError,
            "speaks 'fr'",
        ),
    ],
)
def test_bad_request_is_a_typed_error_naming_the_problem(
    synthesizer: SpeechSynthesizer,
    request_: SynthesisRequest,
    error: type[HiveTTSError],
    mentions: str,
) -> None:
    with pytest.raises(error) as caught:
        synthesizer.prepare(request_)
    assert mentions in caught.value.message
    assert caught.value.to_dict()["code"] == error.code


def test_hundred_kilobytes_of_text_is_refused(synthesizer: SpeechSynthesizer) -> None:
    text = "word " * 20_480
    with pytest.raises(TextTooLongError) as caught:
        synthesizer.prepare(SynthesisRequest(text))
    assert caught.value.http_status == 413
    assert caught.value.limit == synthesizer.config.limits.max_text_chars


async def test_control_characters_are_dropped_and_the_words_spoken(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    utterance = synthesizer.synthesize(
        SynthesisRequest("Hello\x00 there,\x1b[31m my\u200b friend.\x07")
    )
    audio = await utterance.collect()
    heard = transcriber.transcribe(audio.pcm, audio.sample_rate)
    assert word_error_rate("Hello there, [31m my friend.", heard) <= 0.4, heard
    assert "friend" in heard.lower()


async def test_mixed_scripts_are_spoken_without_error(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    utterance = synthesizer.synthesize(SynthesisRequest("Hello こんにちは world, привет 😀 again."))
    audio = await utterance.collect()
    assert audio.duration_s > 0.5
    heard = transcriber.transcribe(audio.pcm, audio.sample_rate).lower()
    assert "hello" in heard


async def test_language_without_a_library_voice_falls_to_espeak(
    synthesizer: SpeechSynthesizer,
) -> None:
    utterance = synthesizer.synthesize(
        SynthesisRequest("Goedemorgen, hoe gaat het?", language="nl")
    )
    audio = await utterance.collect()
    assert utterance.result.engines == ["espeak-ng"]
    assert utterance.result.voice_id == "espeak-ng:nl"
    assert np.abs(audio.pcm).max() > 1000


async def test_cancelling_mid_stream_stops_and_frees_the_session(
    synthesizer: SpeechSynthesizer,
) -> None:
    before = synthesizer.active_utterances
    utterance = synthesizer.synthesize(SynthesisRequest("One. Two. Three. Four. Five. Six. Seven."))
    async for _chunk in utterance:
        assert synthesizer.active_utterances == before + 1
        break
    await utterance.aclose()
    assert synthesizer.active_utterances == before


async def test_concurrent_sessions_each_get_their_own_words(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    texts = [
        "Please open the window in the kitchen.",
        "Seven green apples are on the table.",
        "Call the doctor tomorrow afternoon.",
        "My brother plays the piano every day.",
    ]
    utterances = [synthesizer.synthesize(SynthesisRequest(t)) for t in texts]
    audios = await asyncio.gather(*(u.collect() for u in utterances))
    heard = [transcriber.transcribe(a.pcm, a.sample_rate) for a in audios]
    for index, text in enumerate(texts):
        errors = [word_error_rate(text, h) for h in heard]
        # each session's audio is its own text and nobody else's
        assert errors[index] <= MAX_SESSION_WER, (text, heard[index])
        assert errors[index] == min(errors), (text, heard)


_optional_names = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from(
        ["piper", "kokoro", "espeak-ng", "xtts", "en", "ja", "en-us-male-premium", "fast", "auto"]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=300),
    voice_id=_optional_names,
    language=_optional_names,
    engine=_optional_names,
    quality=_optional_names,
    speed=st.floats(allow_nan=True, allow_infinity=True),
    sample_rate=st.integers(min_value=-1, max_value=200_000),
)
def test_any_request_is_planned_or_refused_with_a_typed_error(
    synthesizer: SpeechSynthesizer,
    text: str,
    voice_id: str | None,
    language: str | None,
    engine: str | None,
    quality: str | None,
    speed: float,
    sample_rate: int,
) -> None:
    request = SynthesisRequest(text, voice_id, language, engine, quality, None, speed, sample_rate)
    try:
        prepared = synthesizer.prepare(request)
    except HiveTTSError as exc:
        assert exc.message and exc.code
        assert 400 <= exc.http_status < 600
    else:
        assert prepared.plan and prepared.pieces
        assert all(piece.text for piece in prepared.pieces)

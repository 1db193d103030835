"""The service says the words it was asked to, at the rate asked for (ASR round trip)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engines.audio import AudioChunk, pcm16_to_float
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest
from tests.audio_checks import join_and_inner_steps, rms
from tests.transcriber import Transcriber, character_error_rate, word_error_rate

ENGLISH = (
    "Good morning everyone, and welcome to the weekly planning meeting. "
    "Today we will review the budget, the hiring plan and the new office."
)
JAPANESE = "東京駅から新幹線に乗って、大阪まで行きました。今日はいい天気ですね。"
MAX_ENGLISH_WER = 0.1
MAX_JAPANESE_CER = 0.15
MAX_ESPEAK_WER = 0.5  # espeak-ng is the labelled last resort: intelligible, not natural
SECONDS_PER_CHAR_RANGE = (0.03, 0.15)


async def speak(
    synth: SpeechSynthesizer, request: SynthesisRequest
) -> tuple[list[AudioChunk], dict[str, object]]:
    utterance = synth.synthesize(request)
    chunks = [chunk async for chunk in utterance]
    return chunks, utterance.result.to_dict()


def joined(chunks: list[AudioChunk]) -> np.ndarray:
    return np.concatenate([c.pcm for c in chunks])


async def test_piper_speaks_english_words_at_48_khz(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    chunks, result = await speak(
        synthesizer, SynthesisRequest(ENGLISH, voice_id="en-us-male-premium")
    )
    assert result["engine"] == "piper"
    assert result["voice_id"] == "en-us-male-premium"
    assert all(c.sample_rate == 48_000 for c in chunks)
    pcm = joined(chunks)
    duration = pcm.size / 48_000
    low, high = SECONDS_PER_CHAR_RANGE
    assert low * len(ENGLISH) < duration < high * len(ENGLISH)
    assert result["audio_duration_s"] == pytest.approx(duration, abs=0.01)
    heard = transcriber.transcribe(pcm, 48_000, "en")
    assert word_error_rate(ENGLISH, heard) <= MAX_ENGLISH_WER, heard


async def test_streaming_hands_over_a_few_frames_of_a_whole_clause_first(
    synthesizer: SpeechSynthesizer,
) -> None:
    """The first piece is a whole clause ("Good morning everyone,"), and Piper streams it in
    windows of latent frames: the first chunk is a fraction of a second of it."""
    chunks, result = await speak(synthesizer, SynthesisRequest(ENGLISH))
    assert result["engine"] == "piper"
    assert result["pieces"] == 3  # the clause, then each sentence's rest whole
    assert result["chunks"] == len(chunks) > result["pieces"]
    assert chunks[0].text == "Good morning everyone,"
    assert chunks[0].duration_s < 0.4
    assert all(c.text for c in chunks[-2:])  # later pieces come whole


async def test_kokoro_speaks_japanese(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    chunks, result = await speak(synthesizer, SynthesisRequest(JAPANESE, language="ja"))
    assert result["engine"] == "kokoro"
    assert result["voice_id"] == "ja-jp-female-premium"
    heard = transcriber.transcribe(joined(chunks), 48_000, "ja")
    assert character_error_rate(JAPANESE, heard) <= MAX_JAPANESE_CER, heard


async def test_kokoro_male_voice_speaks_japanese(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    text = "今日はいい天気ですね。"
    chunks, result = await speak(synthesizer, SynthesisRequest(text, voice_id="ja-jp-male-premium"))
    assert result["engine"] == "kokoro"
    heard = transcriber.transcribe(joined(chunks), 48_000, "ja")
    assert character_error_rate(text, heard) <= MAX_JAPANESE_CER, heard


async def test_espeak_is_intelligible_as_a_last_resort(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    text = "The weather is nice today. Please call me tomorrow morning."
    chunks, result = await speak(synthesizer, SynthesisRequest(text, engine="espeak-ng"))
    assert result["engine"] == "espeak-ng"
    heard = transcriber.transcribe(joined(chunks), 48_000, "en")
    assert word_error_rate(text, heard) <= MAX_ESPEAK_WER, heard


@pytest.mark.parametrize("language", ["es", "fr", "de", "it", "pt"])
async def test_every_seed_language_says_something(
    synthesizer: SpeechSynthesizer, language: str
) -> None:
    text = {
        "es": "Hola, buenos días.",
        "fr": "Bonjour, comment allez-vous?",
        "de": "Guten Morgen, wie geht es Ihnen?",
        "it": "Buongiorno, come stai?",
        "pt": "Bom dia, tudo bem?",
    }[language]
    chunks, result = await speak(synthesizer, SynthesisRequest(text, language=language))
    assert str(result["voice_id"]).startswith(language)
    assert result["engines"]
    assert rms(joined(chunks)) > 100


@pytest.mark.parametrize("sample_rate", [16_000, 24_000, 48_000])
async def test_output_rate_is_the_one_asked_for(
    synthesizer: SpeechSynthesizer, sample_rate: int
) -> None:
    text = "One two three four five."
    chunks, result = await speak(synthesizer, SynthesisRequest(text, sample_rate=sample_rate))
    pcm = joined(chunks)
    assert all(c.sample_rate == sample_rate for c in chunks)
    assert pcm.size / sample_rate == pytest.approx(result["audio_duration_s"], abs=0.01)
    # same speech whatever the rate: durations agree within a few milliseconds
    reference, _ = await speak(synthesizer, SynthesisRequest(text))
    assert pcm.size / sample_rate == pytest.approx(joined(reference).size / 48_000, abs=0.005)


@pytest.mark.parametrize(
    ("text", "request_kwargs"),
    [
        (ENGLISH, {}),
        (JAPANESE, {"language": "ja"}),
        ("Hello there, my friend. How are you today? I am fine, thanks.", {"engine": "espeak-ng"}),
    ],
)
async def test_joins_between_pieces_do_not_click(
    synthesizer: SpeechSynthesizer, text: str, request_kwargs: dict[str, Any]
) -> None:
    chunks, _ = await speak(synthesizer, SynthesisRequest(text, **request_kwargs))
    assert len(chunks) >= 2
    join_step, inner_step = join_and_inner_steps(chunks)
    assert join_step <= inner_step


async def test_utterance_starts_and_ends_without_a_click(synthesizer: SpeechSynthesizer) -> None:
    chunks, _ = await speak(synthesizer, SynthesisRequest("Check, check."))
    audio = pcm16_to_float(joined(chunks))
    edge = 48_000 * 2 // 1000
    assert np.abs(audio[:2]).max() < 0.01
    assert np.abs(audio[-2:]).max() < 0.01
    assert np.abs(audio[:edge]).max() < np.abs(audio).max()


async def test_last_word_is_not_cut(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    text = "Please bring the documents and the keys."
    chunks, _ = await speak(synthesizer, SynthesisRequest(text))
    heard = transcriber.transcribe(joined(chunks), 48_000, "en")
    assert heard.lower().rstrip(".!? ").endswith("keys"), heard

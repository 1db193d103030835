"""Text that arrives word by word is spoken before the sentence is complete."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engines.errors import EmptyTextError, TextTooLongError
from engines.segmenter import HARD_CUT_FACTOR, Boundary, limits_for
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest
from engines.text_normalizer import normalize_text
from engines.text_stream import IncrementalSegmenter
from tests.transcriber import Transcriber, word_error_rate

TEXT = (
    "Good morning everyone, and welcome to the weekly planning meeting. "
    "Today we will review the budget and the hiring plan."
)
FIRST_AUDIO_TIMEOUT_S = 60.0


def test_pieces_come_out_while_words_are_still_arriving() -> None:
    segmenter = IncrementalSegmenter("en", max_chars=10_000)
    out: list[tuple[int, str]] = []
    words = TEXT.split(" ")
    for index, word in enumerate(words):
        for piece in segmenter.push(word + " "):
            out.append((index, piece.text))
    tail = segmenter.flush()
    assert out, "nothing was ready before the end of input"
    assert out[0][0] < len(words) // 2  # the first piece left long before the text ended
    spoken = " ".join([text for _, text in out] + [p.text for p in tail])
    assert spoken == normalize_text(TEXT)
    # the final sentence ended with a space, so it left before the flush
    assert tail == [] and out[-1][1].endswith("plan.")
    partial = IncrementalSegmenter("en", max_chars=10_000)
    partial.push("No full stop at the end")
    assert [p.boundary for p in partial.flush()] == [Boundary.END]


def test_a_word_split_across_pushes_is_not_cut() -> None:
    segmenter = IncrementalSegmenter("en", max_chars=10_000)
    pieces = []
    for part in ["Unbeliev", "able, but ", "true. ", "Then ", "we left."]:
        pieces += segmenter.push(part)
    pieces += segmenter.flush()
    assert [p.text for p in pieces][:2] == ["Unbelievable, but true.", "Then we left."] or (
        " ".join(p.text for p in pieces) == "Unbelievable, but true. Then we left."
    )
    assert all("Unbeliev " not in p.text for p in pieces)


def test_a_finished_sentence_is_handed_over_without_waiting_for_more() -> None:
    segmenter = IncrementalSegmenter("en", max_chars=10_000)
    assert segmenter.push("Hello there.") == []  # could still be "Hello there.com"
    ready = segmenter.push(" ")
    assert [p.text for p in ready] == ["Hello there."]
    japanese = IncrementalSegmenter("ja", max_chars=10_000)
    assert [p.text for p in japanese.push("こんにちは。")] == ["こんにちは。"]


def test_a_stream_longer_than_the_limit_is_refused() -> None:
    segmenter = IncrementalSegmenter("en", max_chars=20)
    segmenter.push("Twelve chars")
    with pytest.raises(TextTooLongError):
        segmenter.push(" and some more words")


async def test_stream_speaks_before_input_ends(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    stream = synthesizer.open_text_stream(SynthesisRequest(""))
    chunks = stream.utterance.__aiter__()
    words = TEXT.split(" ")
    half = len(words) // 2
    for word in words[:half]:
        stream.push_text(word + " ")
    # the first audio arrives although the input is still open
    first = await asyncio.wait_for(anext(chunks), FIRST_AUDIO_TIMEOUT_S)
    assert not stream.ended
    for word in words[half:]:
        stream.push_text(word + " ")
    stream.end_input()
    rest = [chunk.pcm async for chunk in chunks]
    pcm = np.concatenate([first.pcm, *rest])
    heard = transcriber.transcribe(pcm, 48_000)
    assert word_error_rate(TEXT, heard) <= 0.1, heard
    # characters spoken: the text without the spaces where it was cut
    result = stream.utterance.result
    assert len(normalize_text(TEXT)) - result.pieces < result.characters <= len(TEXT)


async def test_stream_with_nothing_speakable_is_an_error(synthesizer: SpeechSynthesizer) -> None:
    stream = synthesizer.open_text_stream(SynthesisRequest(""))
    stream.push_text("  ... ")
    stream.end_input()
    with pytest.raises(EmptyTextError):
        await stream.utterance.collect()


@pytest.mark.parametrize(
    ("language", "text"),
    [("ja", "あ" * 5000), ("en", "x" * 5000), ("en", "https://example.com/" + "a" * 5000)],
)
def test_text_with_nowhere_to_cut_is_still_handed_over_as_it_arrives(
    language: str, text: str
) -> None:
    """A run of kana or one hostile token used to wait whole for a cut, and each push
    normalized and segmented everything received so far (20 000 characters pushed one by one
    took minutes on the loop that serves every room)."""
    limit = HARD_CUT_FACTOR * limits_for(language).max_chars
    segmenter = IncrementalSegmenter(language, max_chars=len(text))
    pieces = []
    for char in text:
        pieces += segmenter.push(char)
        assert segmenter.pending_chars <= limit
    pieces += segmenter.flush()
    assert all(len(piece.text) <= limit for piece in pieces)
    assert "".join(piece.text for piece in pieces) == text  # nothing lost, nothing added

"""How far word timings are from whisper's: the words both place, start against start."""

from __future__ import annotations

import difflib
import statistics
import unicodedata
from collections.abc import Sequence


def _letters(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", word).lower() if c.isalnum())


def _starts(words: Sequence[tuple[str, float]]) -> tuple[str, dict[int, float]]:
    """All the words' letters in one string, and the start time at each word's first letter."""
    text = ""
    starts: dict[int, float] = {}
    for word, start in words:
        letters = _letters(word)
        if letters:
            starts[len(text)] = start
            text += letters
    return text, starts


def start_differences(
    ours: Sequence[tuple[str, float]], heard: Sequence[tuple[str, float]]
) -> list[float]:
    """|our start - whisper's start| in seconds for each word that begins at the same letter
    in both (the letters aligned where the texts agree)."""
    our_text, our_starts = _starts(ours)
    heard_text, heard_starts = _starts(heard)
    matcher = difflib.SequenceMatcher(None, our_text, heard_text, autojunk=False)
    differences: list[float] = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            mine, theirs = block.a + k, block.b + k
            if mine in our_starts and theirs in heard_starts:
                differences.append(abs(our_starts[mine] - heard_starts[theirs]))
    return differences


def median_ms(differences: Sequence[float]) -> float:
    return statistics.median(differences) * 1000 if differences else float("nan")

"""OpenAI's speech API names mapped onto this service's voices and tiers."""

from __future__ import annotations

import unicodedata

OPENAI_VOICES: dict[str, str] = {
    # OpenAI's voices by their usual gender; an English library voice of the same gender
    "alloy": "en-us-male-premium",
    "ash": "en-us-male-premium",
    "ballad": "en-us-male-premium",
    "echo": "en-us-male-premium",
    "fable": "en-us-male-premium",
    "onyx": "en-us-male-premium",
    "verse": "en-us-male-premium",
    "coral": "en-us-female-premium",
    "nova": "en-us-female-premium",
    "sage": "en-us-female-premium",
    "shimmer": "en-us-female-premium",
}
OPENAI_MODELS: dict[str, str | None] = {
    "tts-1": "fast",
    "tts-1-hd": "premium",
    "gpt-4o-mini-tts": "standard",
}
JAPANESE_SHARE_THRESHOLD = 0.3
"""Share of kana/kanji above which text sent to an OpenAI voice is read in Japanese."""


def looks_japanese(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    japanese = sum(
        1 for c in letters if unicodedata.name(c, "").startswith(("HIRAGANA", "KATAKANA", "CJK"))
    )
    return japanese / len(letters) >= JAPANESE_SHARE_THRESHOLD

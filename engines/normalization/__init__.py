"""Text as it will be spoken: numbers, money, dates, times, phone numbers, units,
abbreviations, addresses and Roman numerals in words, per language (see ``rules``).

``normalizer_for(language, locale)`` gives a language's normalizer, or None for a language
without tables (its text gets only the Unicode clean-up of ``text_normalizer``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from .de import german
from .en import english
from .es import spanish
from .fr import french
from .it import italian
from .ja import japanese
from .language import Language
from .pt import portuguese
from .rewriter import NormalizedText, Rewriter
from .rules import continuation_token, shared_rules

__all__ = ["NormalizedText", "SpeechNormalizer", "normalizer_for", "LANGUAGES"]

LANGUAGES: dict[str, Callable[[str], Language]] = {
    "en": english,
    "es": spanish,
    "fr": french,
    "de": german,
    "it": italian,
    "pt": portuguese,
    "ja": japanese,
}
"""Primary language code -> the language for a locale ("en-US", "pt-BR")."""


class SpeechNormalizer:
    """One language's rules; ``normalize`` is pure, so one instance serves every request."""

    def __init__(self, language: Language) -> None:
        self.language = language
        token = continuation_token(language)
        self._rewriter = Rewriter(shared_rules(language), re.compile(token))
        self._continuation = re.compile(rf"(?:^|(?<=\s))(?:{token})$")

    def normalize(self, text: str, *, final: bool = True, context: str = "") -> NormalizedText:
        """``text`` (already cleaned by ``normalize_text``) with its written forms spoken.
        ``final=False`` for text that may still grow; ``context``: the text spoken before it
        (see ``Rewriter.rewrite``)."""
        return self._rewriter.rewrite(text, final=final, context=context)

    def may_continue(self, text: str) -> bool:
        """Whether ``text`` ends in a token with a dot that needs the next word ("Dr.",
        "z. B.", German "am 4."), so a sentence mark there does not end it yet."""
        return self._continuation.search(text) is not None


def normalizer_for(language: str, locale: str | None = None) -> SpeechNormalizer | None:
    """The normalizer for ``language`` ("es", "es-MX"), in ``locale``'s conventions when the
    language code names no region; None for a language without tables."""
    code = language.replace("_", "-")
    primary = code.split("-")[0].lower()
    if primary not in LANGUAGES:
        return None
    if "-" in code:
        region_locale = code
    elif locale and locale.replace("_", "-").split("-")[0].lower() == primary:
        region_locale = locale.replace("_", "-")
    else:
        region_locale = primary
    return _normalizer(primary, region_locale.lower())


NORMALIZER_CACHE_SIZE = 64
"""Locales kept built (each compiles its rules once); bounded, as request language codes are
the client's to choose."""


@lru_cache(maxsize=NORMALIZER_CACHE_SIZE)
def _normalizer(primary: str, locale: str) -> SpeechNormalizer:
    return SpeechNormalizer(LANGUAGES[primary](locale))

"""The one place where input text is rewritten before synthesis.

Rules, in order: control and format characters (C0/C1 controls, zero-width and bidi marks)
removed, line breaks and tabs turned into spaces; runs of whitespace collapsed; Unicode NFC.
Letters, digits and punctuation are never changed.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import EmptyTextError, TextTooLongError

_WHITESPACE_CONTROLS = {"\t", "\n", "\r", "\v", "\f", "\x85", "\u2028", "\u2029"}
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Return ``text`` with controls removed and whitespace collapsed (see module doc)."""
    kept: list[str] = []
    for char in text:
        if char in _WHITESPACE_CONTROLS:
            kept.append(" ")
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue
        else:
            kept.append(char)
    # composed after the removal, so a mark between a letter and its accent does not block it
    return unicodedata.normalize("NFC", _SPACES.sub(" ", "".join(kept)).strip())


def prepare_text(text: str, *, max_chars: int) -> str:
    """Normalize ``text`` and check it is speakable and within ``max_chars``."""
    if len(text) > max_chars * 4:
        # checked before normalizing so a huge input costs nothing
        raise TextTooLongError(len(text), max_chars)
    normalized = normalize_text(text)
    if not normalized or not any(ch.isalnum() for ch in normalized):
        raise EmptyTextError("text is empty or has nothing speakable")
    if len(normalized) > max_chars:
        raise TextTooLongError(len(normalized), max_chars)
    return normalized

"""Text that arrives in pieces (a translator's or an LLM's words) cut into speakable pieces.

A piece is handed over as soon as it can no longer change: when text after it has arrived, or
when it ends a sentence and whitespace follows (or a CJK sentence mark ends it). The rest waits
for more text or for ``flush``. Pieces keep the growth of one utterance (short first piece,
longer later ones) across pushes.
"""

from __future__ import annotations

from .errors import TextTooLongError
from .segmenter import Boundary, TextPiece, segment_text
from .text_normalizer import normalize_text

_SENTENCE_MARKS = ".!?…。！？"
_CJK_SENTENCE_MARKS = "。！？"


def _speakable(piece: TextPiece) -> bool:
    return any(char.isalnum() for char in piece.text)


class IncrementalSegmenter:
    def __init__(self, language: str, max_chars: int) -> None:
        self._language = language
        self._max_chars = max_chars
        self._pending = ""
        self._received_chars = 0
        self._pieces_out = 0

    @property
    def pieces_out(self) -> int:
        return self._pieces_out

    @property
    def pending_chars(self) -> int:
        """Text received and not yet handed over: bounded by the piece limits, so each push
        costs work in proportion to the push, not to all the text so far."""
        return len(self._pending)

    def push(self, text: str) -> list[TextPiece]:
        """Add text; return the pieces that are now complete."""
        self._received_chars += len(text)
        if self._received_chars > self._max_chars:
            raise TextTooLongError(self._received_chars, self._max_chars)
        self._pending += text
        normalized = normalize_text(self._pending)
        pieces = segment_text(normalized, self._language, self._pieces_out)
        if not pieces:
            return []
        ready = pieces[:-1]
        last = pieces[-1]
        ends_sentence = last.text[-1:] in _SENTENCE_MARKS and (
            self._pending[-1:].isspace() or last.text[-1:] in _CJK_SENTENCE_MARKS
        )
        if ends_sentence:
            ready = [*ready, TextPiece(last.text, Boundary.SENTENCE, last.start, last.end)]
        if not ready:
            return []
        rest = normalized[ready[-1].end :].strip()
        # keep the space after the last word, or the next push would glue onto it
        self._pending = rest + (" " if rest and self._pending[-1:].isspace() else "")
        return self._hand_over(ready)

    def flush(self) -> list[TextPiece]:
        """Everything still pending, the last piece ending the utterance."""
        normalized = normalize_text(self._pending)
        self._pending = ""
        return self._hand_over(segment_text(normalized, self._language, self._pieces_out))

    def _hand_over(self, pieces: list[TextPiece]) -> list[TextPiece]:
        speakable = [piece for piece in pieces if _speakable(piece)]
        self._pieces_out += len(speakable)
        return speakable

"""Text that arrives in pieces (a translator's or an LLM's words) cut into speakable pieces.

A piece is handed over as soon as it can no longer change: when text after it has arrived, or
when it ends a sentence and whitespace follows (or a CJK sentence mark ends it). The rest waits
for more text or for ``flush``. Pieces keep the growth of one utterance (short first piece,
longer later ones) across pushes.

With a language normalizer, each push speaks the text received so far with ``final=False``:
a number or date at its end that could still grow ("12" before "34 €") stays as written, and
uncut, until the text after it has arrived (``normalization.rewriter``). What is not handed
over is kept as written, so the next push reads it with what follows.
"""

from __future__ import annotations

from .errors import TextTooLongError
from .normalization import NormalizedText, SpeechNormalizer
from .segmenter import Boundary, TextPiece, segment_text
from .text_normalizer import normalize_text

_SENTENCE_MARKS = ".!?…。！？"
_CJK_SENTENCE_MARKS = "。！？"
NORMALIZER_CONTEXT_CHARS = 80
"""Text already handed over that the normalizer still sees (the name before "St.")."""


def _speakable(piece: TextPiece) -> bool:
    return any(char.isalnum() for char in piece.text)


class IncrementalSegmenter:
    def __init__(
        self, language: str, max_chars: int, normalizer: SpeechNormalizer | None = None
    ) -> None:
        self._language = language
        self._max_chars = max_chars
        self._normalizer = normalizer
        self._context = ""
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
        cleaned = normalize_text(self._pending)
        if not cleaned.strip():  # only spaces, zero-width or control characters so far
            self._pending = " " if self._pending[-1:].isspace() else ""
            return []
        # a dot that may not end the sentence ("Dr. ", "z. B. "): wait for the next word
        held = self._normalizer is not None and self._normalizer.may_continue(cleaned)
        # a sentence mark and a space (or a CJK mark) end what this text can still become
        final = not held and (
            cleaned[-1:] in _CJK_SENTENCE_MARKS
            or (cleaned[-1:] in _SENTENCE_MARKS and self._pending[-1:].isspace())
        )
        spoken = self._speak(cleaned, final=final)
        pieces = segment_text(spoken.text, self._language, self._pieces_out, spoken.keep_together)
        if not pieces:
            return []
        ready = pieces[:-1]
        last = pieces[-1]
        ends_sentence = (
            not held
            and last.text[-1:] in _SENTENCE_MARKS
            and (self._pending[-1:].isspace() or last.text[-1:] in _CJK_SENTENCE_MARKS)
        )
        if ends_sentence:
            ready = [*ready, TextPiece(last.text, Boundary.SENTENCE, last.start, last.end)]
        if not ready:
            return []
        rest = spoken.source_rest(ready[-1].end).strip()
        consumed = cleaned[: spoken.source_offset(ready[-1].end)]
        self._context = f"{self._context} {consumed}"[-NORMALIZER_CONTEXT_CHARS:].lstrip()
        # keep the space after the last word, or the next push would glue onto it
        self._pending = rest + (" " if rest and self._pending[-1:].isspace() else "")
        return self._hand_over(ready)

    def flush(self) -> list[TextPiece]:
        """Everything still pending, the last piece ending the utterance."""
        spoken = self._speak(normalize_text(self._pending), final=True)
        self._pending = ""
        self._context = ""
        return self._hand_over(
            segment_text(spoken.text, self._language, self._pieces_out, spoken.keep_together)
        )

    def _speak(self, text: str, *, final: bool) -> NormalizedText:
        if self._normalizer is None:
            return NormalizedText.unchanged(text)
        return self._normalizer.normalize(text, final=final, context=self._context)

    def _hand_over(self, pieces: list[TextPiece]) -> list[TextPiece]:
        speakable = [piece for piece in pieces if _speakable(piece)]
        self._pieces_out += len(speakable)
        return speakable

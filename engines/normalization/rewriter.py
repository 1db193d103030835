"""Rules that rewrite written tokens into spoken words, applied in one pass.

A rule is a pattern and a function that says the matched text (or declines, with ``None``).
Every rule is matched over the whole text; where matches overlap, the one that starts first
wins, and among those starting at the same place the rule listed first. Text no rule matched is
left exactly as it was.

Each spoken replacement is reported as a span the segmenter must not cut inside, so a number
spelled out in words is never split across pieces, as its digits never were.

Text that is still arriving (``final=False``) may end in a token that can still grow ("12" may
become "1234 €"): a match that ends within the last ``SETTLE_TOKENS`` tokens is not applied
yet. The text from its start on is left as written and reported as one span not to cut, so
nothing of it is handed over before the next push decides it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

SETTLE_TOKENS = 6
"""Tokens at the end of unfinished text that may still change a match: the longest construct
a rule reads (a phone number in five groups after its country code, "1 de diciembre de 2026")
plus the one token a rule looks at after its match."""

# a token is a run of non-space text, except that each CJK character is a token of its own
_CJK = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
_TOKEN = re.compile(rf"[^\s{_CJK}]+|[{_CJK}]")


Speak = Callable[[re.Match[str]], str | None]


@dataclass(frozen=True)
class Rule:
    """``pattern`` finds candidates; ``speak`` returns the spoken form, or None to leave the
    text to later rules."""

    name: str
    pattern: re.Pattern[str]
    speak: Speak
    gate: re.Pattern[str] | None = None
    """A cheap test: the rule is tried only on text where this finds something (a digit)."""


@dataclass(frozen=True)
class _Edit:
    source_start: int
    source_end: int
    out_start: int
    out_end: int


@dataclass(frozen=True)
class NormalizedText:
    """Spoken text with the spans the segmenter must keep whole, and a map back to the text
    it was made from (for text that arrives in pieces)."""

    text: str
    source: str
    keep_together: tuple[tuple[int, int], ...] = ()
    """(start, end) offsets in ``text`` of replacements (and an unsettled tail)."""
    _edits: tuple[_Edit, ...] = field(default=(), repr=False)

    @classmethod
    def unchanged(cls, text: str) -> NormalizedText:
        return cls(text, text)

    def source_rest(self, offset: int) -> str:
        """The text still to speak after ``offset`` of ``text``, in source form where it can
        be (so the next push normalises it with what follows). A cut inside a replacement
        keeps the rest of its spoken words."""
        index = bisect.bisect_right([e.out_start for e in self._edits], offset) - 1
        if index < 0:
            return self.source[offset:]
        edit = self._edits[index]
        if offset < edit.out_end:
            if offset == edit.out_start:
                return self.source[edit.source_start :]
            return self.text[offset : edit.out_end] + self.source[edit.source_end :]
        return self.source[edit.source_end + offset - edit.out_end :]

    def source_offset(self, offset: int) -> int:
        """Where ``offset`` of ``text`` falls in ``source`` (the end of a replacement it falls
        inside)."""
        index = bisect.bisect_right([e.out_start for e in self._edits], offset) - 1
        if index < 0:
            return offset
        edit = self._edits[index]
        if offset < edit.out_end:
            return edit.source_start if offset == edit.out_start else edit.source_end
        return edit.source_end + offset - edit.out_end


class Rewriter:
    """A language's rules in priority order (see module doc)."""

    def __init__(self, rules: Sequence[Rule], opening: re.Pattern[str] | None = None) -> None:
        """``opening``: a token that may open a match still to come ("z." of "z. B.")."""
        self.rules = tuple(rules)
        self.opening = opening

    def rewrite(self, text: str, *, final: bool = True, context: str = "") -> NormalizedText:
        """``text`` spoken. ``context`` is text before it, already spoken: rules see it (the
        name before "St.", the article before "4."), but nothing in it is rewritten."""
        full = f"{context} {text}" if context else text
        offset = len(full) - len(text)
        chosen = [(s - offset, e - offset, spoken) for s, e, spoken in self._matches(full, offset)]
        unsettled: int | None = None
        if not final:
            settle_from = max(_settle_start(full) - offset, 0)
            unsettled = self._first_opening(text, settle_from)
            for index, (start, end, _) in enumerate(chosen):
                if end > settle_from or (unsettled is not None and end > unsettled):
                    unsettled = start if unsettled is None else min(start, unsettled)
                    chosen = chosen[:index]
                    break
        out: list[str] = []
        keep: list[tuple[int, int]] = []
        edits: list[_Edit] = []
        position = 0
        length = 0
        for start, end, spoken in chosen:
            out.append(text[position:start])
            length += start - position
            out.append(spoken)
            keep.append((length, length + len(spoken)))
            edits.append(_Edit(start, end, length, length + len(spoken)))
            length += len(spoken)
            position = end
        if unsettled is not None:
            out.append(text[position:unsettled])
            length += unsettled - position
            keep.append((length, length + len(text) - unsettled))
            position = unsettled
        out.append(text[position:])
        return NormalizedText("".join(out), text, tuple(keep), tuple(edits))

    def _first_opening(self, text: str, start: int) -> int | None:
        if self.opening is None:
            return None
        for token in _TOKEN.finditer(text, start):
            if self.opening.fullmatch(token.group()):
                return token.start()
        return None

    def _matches(self, text: str, start: int) -> list[tuple[int, int, str]]:
        found: list[tuple[int, int, int, re.Match[str]]] = []
        for priority, rule in enumerate(self.rules):
            if rule.gate is not None and rule.gate.search(text, start) is None:
                continue
            for match in rule.pattern.finditer(text, start):
                if match.end() > match.start():
                    found.append((match.start(), priority, match.end(), match))
        found.sort(key=lambda c: (c[0], c[1]))
        chosen: list[tuple[int, int, str]] = []
        position = start
        for begin, priority, end, match in found:
            if begin < position:
                continue  # inside a match already taken: not worth saying
            spoken = self.rules[priority].speak(match)
            if spoken is not None:
                chosen.append((begin, end, spoken))
                position = end
        return chosen


def _settle_start(text: str) -> int:
    """Where the last ``SETTLE_TOKENS`` tokens of ``text`` begin (0 if it has fewer)."""
    starts = [m.start() for m in _TOKEN.finditer(text)]
    if len(starts) < SETTLE_TOKENS:
        return 0
    return starts[-SETTLE_TOKENS]

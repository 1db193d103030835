"""Cut text into pieces that can be synthesized one after another.

Streaming speech starts when the first piece's first audio is ready. Engines that stream inside
a piece (windowed Piper) start after a fixed few frames of work plus a front that grows with the
piece, so the first piece is a whole clause or short sentence, spoken with its natural
intonation: the earliest clause end that is not a fragment. Later pieces grow to whole sentences
so that each is synthesized while the audio before it plays. Cuts go at sentence ends first, then
at clause marks, then between words (after the first piece, preferring the place before a
function word).
Nothing is ever cut inside a word, a number, an abbreviation, an e-mail address or a URL, and
a cut between words never leaves a tiny remainder ("... command | line.") that would be spoken
as a sentence of its own.

Japanese and Chinese text is cut at 。！？ and 、 and, where a clause is too long, where a run of
hiragana (usually a particle or an inflection) gives way to kanji or katakana.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Boundary(StrEnum):
    """What follows a piece; it decides the pause inserted after it."""

    SENTENCE = "sentence"
    CLAUSE = "clause"
    WORD = "word"
    END = "end"


@dataclass(frozen=True)
class TextPiece:
    text: str
    boundary: Boundary
    start: int
    """Offset of the piece in the segmented text (characters)."""
    end: int


@dataclass(frozen=True)
class SegmenterLimits:
    """Piece sizes in characters. Piece ``i`` may be ``first_max_chars * growth**i`` long,
    capped at ``max_chars``, so synthesis of the next piece keeps ahead of playback."""

    first_max_chars: int
    min_chars: int
    first_clause_min_chars: int
    """The first piece ends at the first clause mark this far in or later (a shorter opening
    such as "Hi," stays with what follows)."""
    max_chars: int
    growth: float

    def max_for(self, index: int) -> int:
        # the exponent is capped: by then every piece is at max_chars, and a float power of a
        # piece index in the thousands would overflow
        return int(min(self.max_chars, self.first_max_chars * self.growth ** min(index, 64)))


# pieces are capped: a VITS decoder run whole holds ~50 MB of activations per second of audio
LATIN_LIMITS = SegmenterLimits(
    first_max_chars=60, min_chars=8, first_clause_min_chars=14, max_chars=200, growth=2.5
)
# Kokoro decodes a piece whole (its decoder normalises over the whole piece, so windows of it
# cost quality: docs/benchmarks.md) at ~8 ms per 25 ms frame here, so the first Japanese piece
# is a short phrase: 8 characters gave first audio at 0.8 s against 1.2 s for 16, with the same
# whisper CER and DNSMOS (tools/stream_bench.py)
CJK_LIMITS = SegmenterLimits(
    first_max_chars=8, min_chars=4, first_clause_min_chars=4, max_chars=80, growth=1.6
)
CLAUSE_SLACK = 1.25
"""A clause mark may end a piece this much past the limit: it beats a cut between words."""
_CJK_LANGUAGES = frozenset({"ja", "zh", "cmn", "yue"})

# union over the seed's languages; compared case-insensitively, without the final dot
_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st vs etc e.g i.e inc ltd corp approx mt ave dept fig jan feb
    apr jun jul aug sep sept oct nov dec u.s u.k a.m p.m ph.d sra srta dra ud uds mme mlle z.b
    bzw usw ca d.h u.a hr fr sig dott ecc p.ex cf vol gen col lt sgt capt rev""".split()
)
# abbreviations only before a number ("No. 5"); elsewhere the ordinary word ("I said no.")
_NUMERAL_ABBREVIATIONS = frozenset({"no", "nr", "nos", "pp", "p"})
# single letters that are words, not initials ("So do I. Then ...")
_ONE_LETTER_WORDS = frozenset({"i", "a", "o", "y", "e"})
_FUNCTION_WORDS = frozenset(
    """and but or so because that which who whom whose with to for of in on at from when while
    if as than then after before until since although though where into about over y que de
    en con para por pero porque cuando et pour avec mais dans sur quand und dass mit für aber
    weil wenn oder e che di per con ma perché quando com mas porque quando the a an my your
    his her its our their this these those el la los las un una le les une der die das ein
    eine il lo gli o os um uma""".split()
)

_URL = r"(?:https?://|www\.)[^\s]*[^\s.,;:!?)\]'\"”’]"
# the look-behinds make each pattern start only at the beginning of a run: linear time
_EMAIL = r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
_NUMBER = r"(?<!\d)\d+(?:[.,:/]\d+)+"
_ABBREV_TOKEN = r"(?<![\w.])(?:[A-Za-zÀ-ÿ]{1,5}\.)+(?:[A-Za-zÀ-ÿ]{1,3}\.)*"
_PROTECTED = re.compile("|".join((_URL, _EMAIL, _NUMBER)))
_ABBREV = re.compile(_ABBREV_TOKEN + r"\s*")

_LATIN_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]»]*(?=\s|$)")
_CJK_SENTENCE_END = re.compile(
    r"(?:[。．！？]+|[!?]+(?=[\u3040-\u30ff\u4e00-\u9fff]))[」』）\"”’)]*"
)
_CLAUSE_END = re.compile(r"(?:[,;:]|\s[—–-])(?=\s)|[、，；：]")
_HIRAGANA = re.compile(r"[\u3041-\u309f]")
_WORD = re.compile(r"[\w'’]+")


HARD_CUT_FACTOR = 2
"""A piece with no clause or word boundary within this many times its limit is cut at it."""


def limits_for(language: str) -> SegmenterLimits:
    primary = language.lower().replace("_", "-").split("-")[0]
    return CJK_LIMITS if primary in _CJK_LANGUAGES else LATIN_LIMITS


def _protected_mask(text: str, keep_together: Sequence[tuple[int, int]] = ()) -> list[bool]:
    mask = [False] * (len(text) + 1)
    for start, end in keep_together:
        for i in range(start + 1, end):
            mask[i] = True
    for match in _PROTECTED.finditer(text):
        for i in range(match.start() + 1, match.end()):
            mask[i] = True
    for match in _ABBREV.finditer(text):
        token = match.group().strip()
        core = token.rstrip(".").lower()
        is_initial = (
            len(core) == 1
            and core.isalpha()
            and token[0].isupper()
            and core not in _ONE_LETTER_WORDS
        )
        before_number = text[match.end() : match.end() + 1].isdigit()
        if (
            core in _ABBREVIATIONS
            or is_initial
            or core.count(".") >= 1
            or (core in _NUMERAL_ABBREVIATIONS and before_number)
        ):
            for i in range(match.start() + 1, match.end()):
                mask[i] = True
    return mask


def _sentence_cuts(text: str, protected: list[bool]) -> list[int]:
    cuts: set[int] = set()
    for match in _LATIN_SENTENCE_END.finditer(text):
        end = match.end()
        if protected[match.start()] or protected[end]:
            continue
        following = text[end:].lstrip()[:1]
        if match.group()[0] == "." and following.islower():
            continue  # "approx. five", "... and then"
        cuts.add(end)
    for match in _CJK_SENTENCE_END.finditer(text):
        if not protected[match.start()]:
            cuts.add(match.end())
    return sorted(c for c in cuts if 0 < c < len(text))


def _clause_cuts(text: str, protected: list[bool]) -> set[int]:
    return {m.end() for m in _CLAUSE_END.finditer(text) if not protected[m.start()]}


def _word_cuts(text: str, protected: list[bool]) -> tuple[set[int], set[int]]:
    """Places between words: those not right after a function word ("the | piano" sounds
    broken), and among them the ones right before a function word (preferred)."""
    plain: set[int] = set()
    preferred: set[int] = set()
    word_at = {m.start(): m.group().lower() for m in _WORD.finditer(text)}
    word_ending_at = {m.end(): m.group().lower() for m in _WORD.finditer(text)}
    for match in re.finditer(r"\s+", text):
        if protected[match.start()] or protected[match.end()]:
            continue
        after_protected = match.start() > 0 and protected[match.start() - 1]
        if not after_protected and word_ending_at.get(match.start()) in _FUNCTION_WORDS:
            continue
        plain.add(match.start())
        if word_at.get(match.end()) in _FUNCTION_WORDS:
            preferred.add(match.start())
    for i in range(1, len(text)):
        if protected[i]:
            continue
        if _HIRAGANA.match(text[i - 1]) and not _HIRAGANA.match(text[i]) and text[i].isalpha():
            plain.add(i)
    return plain, preferred


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def segment_text(
    text: str,
    language: str = "en",
    first_index: int = 0,
    keep_together: Sequence[tuple[int, int]] = (),
) -> list[TextPiece]:
    """Cut ``text`` (already normalized) into pieces; see the module doc for the rules.

    ``first_index`` is how many pieces of the same utterance were cut before (streamed text),
    so piece sizes keep growing instead of starting short again. ``keep_together`` are
    (start, end) spans never cut inside, like a number: the spoken words of one
    (``engines.normalization``)."""
    limits = limits_for(language)
    protected = _protected_mask(text, keep_together)
    sentence_ends = [*_sentence_cuts(text, protected), len(text)]
    clauses = _clause_cuts(text, protected)
    words, preferred_words = _word_cuts(text, protected)

    pieces: list[TextPiece] = []

    def add(start: int, end: int, boundary: Boundary) -> None:
        piece = text[start:end].strip()
        if piece:
            pieces.append(TextPiece(piece, boundary, start, end))

    start = _skip_spaces(text, 0)
    for sentence_end in sentence_ends:
        while sentence_end - start > limits.max_for(first_index + len(pieces)):
            lowest = start + limits.min_chars
            highest = start + limits.max_for(first_index + len(pieces))
            remainder_start = sentence_end - limits.min_chars
            allowed_words = {c for c in words if c <= remainder_start}
            # a clause mark past the limit may end the piece, but never one past this sentence
            clause_highest = min(
                start + int(limits.max_for(first_index + len(pieces)) * CLAUSE_SLACK),
                sentence_end - 1,
            )
            # the first piece is as long as its budget allows: a short one that ends before a
            # function word leaves that word utterance-initial in the next, where Piper reduces
            # it ("The weather | in Paris is" was heard as "and pairs a" by whisper tiny.en
            # and base alike; "The weather in Paris | is" round-trips exactly)
            first = first_index + len(pieces) == 0
            cut, boundary = _best_cut(
                lowest,
                highest,
                clause_highest,
                clauses,
                set() if first else {c for c in preferred_words if c <= remainder_start},
                allowed_words,
                start + limits.first_clause_min_chars if first else None,
            )
            if cut is None:
                # a long word, URL or number fills the window: cut right after it; text with
                # no place to cut at all (a run of kana, a hostile token) is cut at the limit,
                # so no piece, and no streamed text waiting for a cut, grows without bound
                hard_limit = start + HARD_CUT_FACTOR * limits.max_for(first_index + len(pieces))
                later = [c for c in clauses | allowed_words if highest < c < sentence_end]
                later = [c for c in later if c <= hard_limit]
                if later:
                    cut = min(later)
                elif sentence_end <= hard_limit:
                    break  # the whole sentence is within reach: one piece
                else:
                    cut = _before_protected(protected, start + limits.min_chars, highest)
                boundary = Boundary.CLAUSE if cut in clauses else Boundary.WORD
            add(start, cut, boundary)
            start = _skip_spaces(text, cut)
        boundary = Boundary.END if sentence_end == len(text) else Boundary.SENTENCE
        add(start, sentence_end, boundary)
        start = _skip_spaces(text, sentence_end)
    return pieces


def _before_protected(protected: list[bool], lowest: int, cut: int) -> int:
    """A forced cut at ``cut`` moved back to the start of the protected token it falls in (a
    number, a URL), if that leaves more than ``lowest``; else ``cut`` itself."""
    start = cut
    while start > lowest and protected[start]:
        start -= 1
    return start if start > lowest else cut


def _best_cut(
    lowest: int,
    highest: int,
    clause_highest: int,
    clauses: set[int],
    preferred: set[int],
    words: set[int],
    earliest_clause: int | None = None,
) -> tuple[int | None, Boundary]:
    """The cut for a piece: the last clause mark in reach, else the first just past it, else
    the last (preferred) word boundary. With ``earliest_clause`` (the first piece), the first
    clause mark from there on instead of the last."""
    in_reach = [c for c in clauses if lowest <= c <= highest]
    if earliest_clause is not None and (early := [c for c in in_reach if c >= earliest_clause]):
        return min(early), Boundary.CLAUSE
    if in_reach:
        return max(in_reach), Boundary.CLAUSE
    just_past = [c for c in clauses if highest < c <= clause_highest]
    if just_past:
        return min(just_past), Boundary.CLAUSE
    for candidates in (preferred, words):
        inside = [c for c in candidates if lowest <= c <= highest]
        if inside:
            return max(inside), Boundary.WORD
    return None, Boundary.WORD


def split_sentences(text: str, language: str = "en") -> list[str]:
    """Whole sentences only (no short first piece): for engines used on their own."""
    protected = _protected_mask(text)
    cuts = [0, *_sentence_cuts(text, protected), len(text)]
    return [s for a, b in zip(cuts, cuts[1:], strict=False) if (s := text[a:b].strip())]

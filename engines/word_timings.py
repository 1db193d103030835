"""When each word is spoken: word timings for a reply's audio, and caption files made of them.

A reply leaves the synthesizer as ``AudioChunk``s; a chunk that carries text starts a piece, and
chunks without text (the rest of a streamed piece, an SSML break) continue it. ``WordTimeline``
follows that stream and, when a piece's audio is complete, places the piece's words in it.

Words are placed over the audio itself, the same way for every engine: the piece's voiced
stretches are found from its short-time energy (pauses of ``MIN_PAUSE_S`` or more are silence),
each pause is matched to the clause mark nearest to it, and each phrase's words are laid over
its stretch in proportion to how long each takes to say. That length is the engine's own where
it knows it (Piper: its duration predictor's frames per word, ``AudioChunk.word_weights``), else
an estimate (vowel groups in alphabetic scripts; in Japanese OpenJTalk's words and their morae).
A pause therefore falls between words, where the engine paused, and no word starts in silence.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from engines import openjtalk
from engines.audio import AudioChunk, Pcm16

FRAME_S = 0.01
"""Energy is measured over 10 ms frames."""
MIN_PAUSE_S = 0.12
"""A quieter stretch at least this long is a pause; a shorter one (a stop consonant) is speech."""
SILENCE_BELOW_DB = 35.0
"""A frame more than this below the piece's loudest frames is silent."""
PUNCTUATION_PAUSE_UNITS = 1.5
"""A word before a clause or sentence mark is drawn out (phrase-final lengthening) by about
this many units. Measured against whisper's word starts on the test sentences, the median
distance was, by this value: en 40 / ja 86 ms at 0, 41 / 41 at 0.75, 36 / 24 at 1.5."""

_WORD = re.compile(r"\S+")
_VOWEL_GROUPS = re.compile(r"[aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœ]+", re.IGNORECASE)
_SMALL_KANA = set("ゃゅょぁぃぅぇぉャュョァィゥェォ")
_CLOSERS = set("'\"»)」』")


@dataclass(frozen=True)
class WordTiming:
    """One word and when it is heard, in seconds from the start of the reply's audio."""

    word: str
    start_s: float
    end_s: float

    def to_dict(self) -> dict[str, object]:
        return {"word": self.word, "start": round(self.start_s, 3), "end": round(self.end_s, 3)}


def _is_japanese(char: str) -> bool:
    code = ord(char)
    return 0x3040 <= code <= 0x30FF or 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF


def _char_class(char: str) -> str:
    code = ord(char)
    if 0x3040 <= code <= 0x309F:
        return "hiragana"
    if 0x30A0 <= code <= 0x30FF:
        return "katakana"
    if _is_japanese(char):
        return "kanji"
    if char.isspace():
        return "space"
    if char.isalnum():
        return "latin"
    return "mark"


def _script_runs(token: str) -> list[str]:
    """Japanese without a dictionary: runs of one script, a kanji run keeping the kana that
    follow it (送り仮名: 話します is one)."""
    runs: list[str] = []
    current = previous = ""
    for char in token:
        kind = _char_class(char)
        if (
            not current
            or kind == previous
            or kind == "mark"
            or (previous == "kanji" and kind == "hiragana")
        ):
            current += char
        else:
            runs.append(current)
            current = char
        if kind != "mark":
            previous = kind
    if current:
        runs.append(current)
    return runs


def _japanese_words(token: str) -> list[tuple[str, float]]:
    """OpenJTalk's words with their morae, or script runs with estimated units."""
    found = openjtalk.morphemes(token)
    if found is None or "".join(word for word, _ in found) != token:
        return [(run, speaking_units(run)) for run in _script_runs(token)]
    return [(word, float(morae)) for word, morae in found]


def words_with_units(text: str) -> list[tuple[str, float]]:
    """``text``'s words, each with how long it takes to say in rough syllables or morae:
    whitespace-separated words, and in Japanese (which has no spaces) OpenJTalk's words.
    Punctuation stays on the word before it and lengthens it (``PUNCTUATION_PAUSE_UNITS``)."""
    words: list[tuple[str, float]] = []

    def add(word: str, units: float) -> None:
        if words and not any(c.isalnum() for c in word):  # a lone mark: the word before's
            before, before_units = words[-1]
            words[-1] = (before + word, before_units + _mark_units(word))
        else:
            words.append((word, units))

    for token in _WORD.findall(text):
        if any(_is_japanese(c) for c in token):
            for word, units in _japanese_words(token):
                add(word, units)
        else:
            add(token, speaking_units(token))
    return [(word, max(units, 0.5)) for word, units in words]


def split_words(text: str) -> list[str]:
    """The words of ``text`` (see ``words_with_units``)."""
    return [word for word, _ in words_with_units(text)]


def _mark_units(word: str) -> float:
    last = word[-1:]
    return PUNCTUATION_PAUSE_UNITS if last and not last.isalnum() and last not in _CLOSERS else 0.0


def speaking_units(word: str) -> float:
    """How long ``word`` takes to say, in rough syllables or morae (a clause mark after it
    counts too)."""
    units = 0.0
    latin = "".join(c for c in word if not _is_japanese(c))
    letters = [c for c in latin if c.isalnum()]
    if letters:
        groups = len(_VOWEL_GROUPS.findall(latin))
        digits = sum(c.isdigit() for c in letters)  # a digit left unspelled: about two
        units += max(groups, 1 if len(letters) > digits else 0) + 2 * digits
    for char in word:
        kind = _char_class(char)
        if kind == "kanji":
            units += 2.0
        elif kind in ("hiragana", "katakana") and char not in _SMALL_KANA:
            units += 1.0
    return units + _mark_units(word)


def voiced_spans(pcm: Pcm16, sample_rate: int) -> list[tuple[float, float]]:
    """The stretches of ``pcm`` that are speech, in seconds: frames within
    ``SILENCE_BELOW_DB`` of the loudest, gaps shorter than ``MIN_PAUSE_S`` bridged."""
    hop = max(1, round(sample_rate * FRAME_S))
    frames = pcm.size // hop
    if frames == 0:
        return []
    blocks = pcm[: frames * hop].astype(np.float32).reshape(frames, hop)
    energy = np.sqrt(np.mean(blocks * blocks, axis=1)) + 1e-3
    level = 20 * np.log10(energy)
    loud = float(np.percentile(level, 95))
    voiced = level > loud - SILENCE_BELOW_DB
    if not voiced.any():
        return []
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for index, on in enumerate(voiced):
        if on and start is None:
            start = index
        elif not on and start is not None:
            spans.append((start, index))
            start = None
    if start is not None:
        spans.append((start, frames))
    bridge = round(MIN_PAUSE_S / FRAME_S)
    merged = [spans[0]]
    for begin, end in spans[1:]:
        if begin - merged[-1][1] < bridge:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((begin, end))
    return [(begin * FRAME_S, end * FRAME_S) for begin, end in merged]


def estimate_word_timings(
    text: str,
    pcm: Pcm16,
    sample_rate: int,
    offset_s: float = 0.0,
    engine_weights: Sequence[float] | None = None,
) -> list[WordTiming]:
    """``text``'s words placed over the voiced time of ``pcm`` (one piece's audio), shifted by
    ``offset_s`` (where the piece starts in the reply). ``engine_weights``, how long the engine
    made each word (a duration predictor's frames), replace the estimate from the letters when
    they are one per word."""
    weighted = words_with_units(text)
    if not weighted:
        return []
    if engine_weights is not None and len(engine_weights) == len(weighted):
        weighted = [
            (word, weight) for (word, _), weight in zip(weighted, engine_weights, strict=True)
        ]
    spans = voiced_spans(pcm, sample_rate)
    if not spans:
        spans = [(0.0, pcm.size / sample_rate)]
    groups = _phrases(weighted, spans)
    if groups is None:  # pauses that punctuation does not explain: one stretch of speech
        return _spread(weighted, spans, offset_s)
    timings: list[WordTiming] = []
    for group, span in zip(groups, spans, strict=True):
        timings += _spread(group, [span], offset_s)
    return timings


def _phrases(
    weighted: Sequence[tuple[str, float]], spans: Sequence[tuple[float, float]]
) -> list[list[tuple[str, float]]] | None:
    """The words in one phrase per voiced stretch, cut after the clause marks nearest to the
    pauses (by where the words would fall if spread evenly); None when there are fewer marks
    than pauses."""
    pauses = len(spans) - 1
    marked = [i for i, (word, _) in enumerate(weighted[:-1]) if _mark_units(word) > 0]
    if pauses == 0:
        return [list(weighted)]
    if len(marked) < pauses:
        return None
    total = sum(units for _, units in weighted)
    voiced = sum(end - begin for begin, end in spans)
    ends = np.cumsum([units for _, units in weighted]) / total
    pause_at = np.cumsum([end - begin for begin, end in spans[:-1]]) / voiced
    cuts: list[int] = []
    for j, position in enumerate(pause_at):
        left = pauses - j - 1  # marks still needed for the pauses after this one
        usable = [i for i in marked if (not cuts or i > cuts[-1])]
        usable = usable[: len(usable) - left] if left else usable
        if not usable:
            return None
        cuts.append(min(usable, key=lambda i: abs(ends[i] - position)))
    bounds = [0, *(i + 1 for i in cuts), len(weighted)]
    return [list(weighted[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def _spread(
    weighted: Sequence[tuple[str, float]], spans: Sequence[tuple[float, float]], offset_s: float
) -> list[WordTiming]:
    """The words laid over the voiced time of ``spans`` in proportion to their units."""
    voiced = sum(end - begin for begin, end in spans)
    scale = voiced / sum(units for _, units in weighted)

    def at(voiced_s: float, starting: bool) -> float:
        """Real time of a point ``voiced_s`` seconds into the voiced time; a word starting
        where a stretch ends starts at the next one (the pause is before it)."""
        for begin, end in spans:
            length = end - begin
            if voiced_s < length - 1e-9 or (not starting and voiced_s <= length + 1e-9):
                return begin + voiced_s
            voiced_s -= length
        return spans[-1][1]

    timings: list[WordTiming] = []
    position = 0.0
    for word, share in weighted:
        start = at(position, starting=True)
        position += share * scale
        end = at(position, starting=False)
        timings.append(WordTiming(word, offset_s + start, offset_s + max(end, start)))
    return timings


class WordTimeline:
    """Follows a reply's chunks and places each piece's words once its audio is whole: at the
    chunk that ends the piece, or at the next piece's first chunk, or at ``finish``.

    ``push`` and ``finish`` place words off the event loop (a piece's energy and, in Japanese,
    OpenJTalk's words are milliseconds of work); ``add`` and ``finish_now`` in the caller."""

    def __init__(self) -> None:
        self._elapsed_s = 0.0
        self._piece_text = ""
        self._piece_start_s = 0.0
        self._piece_audio: list[Pcm16] = []
        self._sample_rate = 0
        self._weights: tuple[float, ...] | None = None
        self.words: list[WordTiming] = []
        """Every word placed so far."""

    def _take(self, chunk: AudioChunk) -> list[_Piece]:
        """The pieces ``chunk`` completes (before it, and itself when it ends its piece)."""
        ready: list[_Piece] = []
        if chunk.text:
            ready += self._cut()
            self._piece_text = chunk.text
            self._piece_start_s = self._elapsed_s
        if self._piece_text:
            self._piece_audio.append(chunk.pcm)
            self._sample_rate = chunk.sample_rate
        self._elapsed_s += chunk.duration_s
        if chunk.ends_piece:
            self._weights = chunk.word_weights
            ready += self._cut()
        return ready

    def _cut(self) -> list[_Piece]:
        if not self._piece_text or not self._piece_audio:
            return []
        piece = _Piece(
            self._piece_text,
            np.concatenate(self._piece_audio),
            self._sample_rate,
            self._piece_start_s,
            self._weights,
        )
        self._piece_text, self._piece_audio, self._weights = "", [], None
        return [piece]

    def _place(self, pieces: list[_Piece]) -> list[WordTiming]:
        placed = [
            word
            for piece in pieces
            for word in estimate_word_timings(
                piece.text, piece.pcm, piece.rate, piece.start_s, piece.weights
            )
        ]
        self.words.extend(placed)
        return placed

    def add(self, chunk: AudioChunk) -> list[WordTiming]:
        """Take the next chunk; the words of the piece(s) it completes."""
        return self._place(self._take(chunk))

    def finish_now(self) -> list[WordTiming]:
        """The last piece's words (the reply's audio has ended)."""
        return self._place(self._cut())

    async def push(self, chunk: AudioChunk) -> list[WordTiming]:
        """``add``, with the placing in a thread."""
        pieces = self._take(chunk)
        return await asyncio.to_thread(self._place, pieces) if pieces else []

    async def finish(self) -> list[WordTiming]:
        """``finish_now``, with the placing in a thread."""
        pieces = self._cut()
        return await asyncio.to_thread(self._place, pieces) if pieces else []


@dataclass(frozen=True)
class _Piece:
    text: str
    pcm: Pcm16
    rate: int
    start_s: float
    weights: tuple[float, ...] | None


def word_timings(chunks: Iterable[AudioChunk]) -> list[WordTiming]:
    """Every word of a whole reply's chunks."""
    timeline = WordTimeline()
    for chunk in chunks:
        timeline.add(chunk)
    timeline.finish_now()
    return timeline.words


CAPTION_WORDS = 7
"""Words per caption cue at most; a cue also ends after a sentence mark, and after a clause
mark once it has ``CAPTION_MIN_WORDS``."""
CAPTION_MIN_WORDS = 3
CAPTION_MAX_S = 3.5


def caption_groups(words: Sequence[WordTiming]) -> list[list[WordTiming]]:
    """Words grouped into cues of a few words each, ending where the text pauses."""
    groups: list[list[WordTiming]] = []
    group: list[WordTiming] = []
    for word in words:
        group.append(word)
        if (
            len(group) >= CAPTION_WORDS
            or word.word[-1:] in ".!?。！？"
            or (len(group) >= CAPTION_MIN_WORDS and word.word[-1:] in ",;:、")
            or group[-1].end_s - group[0].start_s >= CAPTION_MAX_S
        ):
            groups.append(group)
            group = []
    if group:
        groups.append(group)
    return groups


def _joined(words: Sequence[str]) -> str:
    spaced = not any(_is_japanese(c) for word in words for c in word)
    return (" " if spaced else "").join(words)


def _clock(seconds: float, decimal: str) -> str:
    millis = max(0, math.floor(seconds * 1000 + 0.5))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def to_srt(words: Sequence[WordTiming]) -> str:
    """SubRip captions of ``words``."""
    return "\n".join(
        f"{n}\n{_clock(group[0].start_s, ',')} --> {_clock(group[-1].end_s, ',')}\n"
        f"{_joined([w.word for w in group])}\n"
        for n, group in enumerate(caption_groups(words), start=1)
    )


def to_vtt(words: Sequence[WordTiming]) -> str:
    """WebVTT captions of ``words``, each word after the first also timed inside its cue
    (``<00:00:01.200>``), for players that highlight words."""
    lines = ["WEBVTT", ""]
    for group in caption_groups(words):
        parts = [group[0].word] + [f"<{_clock(w.start_s, '.')}>{w.word}" for w in group[1:]]
        lines += [
            f"{_clock(group[0].start_s, '.')} --> {_clock(group[-1].end_s, '.')}",
            _joined(parts),
            "",
        ]
    return "\n".join(lines)

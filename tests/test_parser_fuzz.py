"""Whatever a participant sends on ``tts.speak``, the parsers answer with a typed error or a valid
request; whatever text arrives in pieces, the incremental segmenter loses nothing, invents
nothing, and never holds or hands over more than its piece limit.

Pure functions, hypothesis-generated input: bytes and strings of any shape, JSON nested deeply
or holding huge numbers, invalid UTF-8, random Unicode pushed in random slices.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.speak_request import (
    MAX_ID_CHARS,
    SpeakMode,
    SpeakRequest,
    parse_speak_attribute,
    parse_speak_packet,
    parse_stream_attributes,
)
from engines.errors import HiveTTSError
from engines.normalization import normalizer_for
from engines.segmenter import HARD_CUT_FACTOR, TextPiece, limits_for, segment_text
from engines.text_normalizer import normalize_text
from engines.text_stream import IncrementalSegmenter

PARSER_EXAMPLES = 400
SEGMENTER_EXAMPLES = 300
MAX_STREAM_CHARS = 10_000
"""The segmenter's total text limit in these tests (the shipped ``limits.max_text_chars``)."""
DEEP = 50_000
"""Nesting far past Python's recursion limit."""

SPEAK_KEYS = [
    *("id", "text", "language", "voice_id", "engine", "quality", "strategy", "speed", "mode"),
    *("reply_to", "voice_clone_reference", "normalize"),
]
"""The keys of a ``tts.speak`` request (README, "Text in")."""

COUNTS: Counter[str] = Counter()
"""Examples run and outcomes, per test: printed at the end of the module (``-s``)."""

FUZZ = settings(
    max_examples=PARSER_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module", autouse=True)
def print_counts() -> Iterator[None]:
    yield
    print("\nparser fuzzing, examples run:")
    for name, number in sorted(COUNTS.items()):
        print(f"  {name}: {number}")


# --- parsers --------------------------------------------------------------------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["queue", "interrupt", "en", "ja-JP", "espeak-ng", "1.5", "", " "])
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(SPEAK_KEYS) | st.text(max_size=10)
plausible_bodies = st.fixed_dictionaries(
    {"text": st.text(max_size=60)},
    optional={
        "id": st.text(max_size=140) | st.integers(),
        "language": st.sampled_from(["en", "ja", "fr-FR", "zz", ""]),
        "voice_id": st.text(max_size=20),
        "engine": st.sampled_from(["espeak-ng", "piper", "nope"]),
        "quality": st.sampled_from(["fast", "standard", "premium"]),
        "strategy": st.sampled_from(["auto", "manual"]),
        "speed": st.floats(allow_nan=True, allow_infinity=True) | st.integers(),
        "mode": st.sampled_from(["queue", "interrupt", "shout"]),
        "reply_to": st.text(max_size=12),
        "voice_clone_reference": st.sampled_from(["", "UklGRg==", "not base64"]),
    },
)
any_bodies = st.dictionaries(keys, json_values, max_size=6)
mutated_bodies = st.builds(
    lambda body, key, value: {**body, key: value}, plausible_bodies, keys, json_values
)


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def deep_nesting(opening: str, closing: str, depth: int, inner: str = "1") -> str:
    return opening * depth + inner + closing * depth


json_texts = st.one_of(
    (plausible_bodies | mutated_bodies | any_bodies).map(dumps),
    json_values.map(dumps),
    st.integers(1, DEEP).map(lambda depth: deep_nesting("[", "]", depth)),
    st.integers(1, DEEP).map(lambda depth: deep_nesting('{"a":', "}", depth)),
    st.integers(1, DEEP).map(lambda depth: '{"text": ' + deep_nesting("[", "]", depth) + "}"),
    st.integers(4_000, 6_000).map(lambda digits: '{"text": "Hi", "speed": ' + "9" * digits + "}"),
    st.just('{"text": "\\ud800 lone surrogate"}'),
    st.just('\ufeff{"text": "BOM"}'),
    st.text(max_size=80),
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Bytes of any shape: JSON (valid or not) as UTF-8, with invalid UTF-8 spliced in, other
    encodings, or plain random bytes."""
    kind = draw(st.sampled_from(["plausible", "json", "spliced", "utf16", "binary"]))
    if kind == "binary":
        random_bytes: bytes = draw(st.binary(max_size=200))
        return random_bytes
    if kind == "plausible":
        return dumps(draw(plausible_bodies | mutated_bodies)).encode("utf-8", "surrogatepass")
    text: str = draw(json_texts)
    if kind == "utf16":
        return text.encode("utf-16", "surrogatepass")
    data = text.encode("utf-8", "surrogatepass")
    if kind == "spliced" and data:
        at = draw(st.integers(0, len(data)))
        junk = draw(st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\x00"]))
        return data[:at] + junk + data[at:]
    return data


@st.composite
def limits_around(draw: st.DrawFn, size: int) -> int:
    """A byte limit at, just under or just over ``size``, or anywhere."""
    return draw(
        st.sampled_from([size, size - 1, size + 1, max(1, size // 2), 4096, 1 << 20])
        | st.integers(1, 1 << 20)
    )


def check_request(request: SpeakRequest, sender: str | None) -> None:
    """What a valid request must be, whatever it came from."""
    assert isinstance(request.synthesis.text, str)
    assert 0 < len(request.id) <= MAX_ID_CHARS
    assert isinstance(request.mode, SpeakMode)
    assert math.isfinite(request.synthesis.speed)
    for option in ("voice_id", "language", "engine", "quality", "strategy"):
        assert isinstance(getattr(request.synthesis, option), str | None), option
    if sender is not None:
        assert request.reply_to == sender
    else:
        assert request.reply_to is None or isinstance(request.reply_to, str)
    reference = request.voice_clone_reference
    assert reference is None or (isinstance(reference, str) and reference)


def outcome(name: str, parse: Callable[[], SpeakRequest]) -> SpeakRequest | None:
    """``parse()``'s request, or None for a typed error; anything else fails the example."""
    COUNTS[f"{name}: examples"] += 1
    try:
        request = parse()
    except HiveTTSError as exc:
        COUNTS[f"{name}: error {exc.code}"] += 1
        event(f"error {exc.code}")
        assert exc.message
        return None
    COUNTS[f"{name}: request"] += 1
    event("request")
    return request


@FUZZ
@given(data=st.data(), sender=st.none() | st.text(min_size=1, max_size=12))
def test_any_packet_is_a_typed_error_or_a_valid_request(
    data: st.DataObject, sender: str | None
) -> None:
    payload = data.draw(payloads())
    max_bytes = data.draw(limits_around(len(payload)))
    request = outcome(
        "parse_speak_packet",
        lambda: parse_speak_packet(payload, sender=sender, max_bytes=max_bytes),
    )
    if request is not None:
        assert len(payload) <= max_bytes
        assert len(request.synthesis.text) <= max_bytes
        check_request(request, sender)


attribute_values = (
    json_texts
    | st.text(max_size=200)
    | st.text(" \t\n{", max_size=5).flatmap(
        lambda prefix: json_texts.map(lambda body: prefix + body)
    )
)


@FUZZ
@given(data=st.data(), value=attribute_values, sender=st.text(min_size=1, max_size=12))
def test_any_speak_attribute_is_a_typed_error_or_a_valid_request(
    data: st.DataObject, value: str, sender: str
) -> None:
    # attribute values are protobuf strings: valid UTF-8, so no lone surrogates
    value = value.encode("utf-8", "replace").decode("utf-8")
    max_bytes = data.draw(limits_around(len(value.encode())))
    request = outcome(
        "parse_speak_attribute",
        lambda: parse_speak_attribute(value, sender=sender, max_bytes=max_bytes),
    )
    if request is not None:
        check_request(request, sender)
        if value.lstrip().startswith("{"):
            assert len(value.encode()) <= max_bytes
        else:
            assert request.synthesis.text == value  # plain text is spoken as it is


def test_a_plain_text_attribute_over_the_byte_limit_is_refused() -> None:
    with pytest.raises(HiveTTSError):
        parse_speak_attribute("word " * 1000, sender="p", max_bytes=4096)


stream_attributes = st.dictionaries(
    st.sampled_from([*SPEAK_KEYS, "lk.segment_id"]) | st.text(max_size=10),
    st.text(max_size=30)
    | st.sampled_from(
        ["nan", "inf", "-inf", "1e999", "1_0", "0x10", " 1.5 ", "queue", "interrupt"]
    ),
    max_size=6,
)


@FUZZ
@given(attributes=stream_attributes, sender=st.text(min_size=1, max_size=12))
def test_any_stream_attributes_are_a_typed_error_or_a_valid_request(
    attributes: dict[str, str], sender: str
) -> None:
    request = outcome(
        "parse_stream_attributes",
        lambda: parse_stream_attributes(attributes, sender=sender),
    )
    if request is not None:
        check_request(request, sender)
        assert request.synthesis.text == attributes.get("text", "")


# --- the incremental segmenter ------------------------------------------------------------

segment_alphabet = st.one_of(
    st.characters(codec="utf-8"),  # any Unicode scalar: marks, controls, emoji, RTL
    st.characters(min_codepoint=0x3041, max_codepoint=0x30FF),  # kana
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # kanji
    st.sampled_from(list("0123456789")),
    st.sampled_from(list(" \t\n\r\u00a0\u3000\u2028")),
    st.sampled_from(list(".,;:!?…。、！？「」—-'\"()")),
    st.sampled_from(list("abcdefghij ")),
)
pushes = st.lists(
    st.one_of(
        st.text(segment_alphabet, max_size=12),
        st.sampled_from(
            [
                "Dr. Smith paid $3.50 at 10:30 a.m. ",
                "https://example.com/a.b?c=d ",
                "mail@example.org, ",
                "東京駅から新幹線に乗りました。",
                "e\u0301",  # a letter and its combining accent, composed by NFC
                "\u0301",
                "…",
                " ",
            ]
        ),
        st.integers(1, 600).map(lambda n: "x" * n),  # a token with nowhere to cut
        st.integers(1, 200).map(lambda n: "あ" * n),
    ),
    max_size=40,
)


def pending_bound(hard_limit: int, pushed: list[str]) -> int:
    """What the segmenter may hold: one piece, the space after it, and any characters that
    normalize to nothing (whitespace, controls), which it keeps as received until text follows
    (test_blank_text_does_not_pile_up_in_the_segmenter)."""
    blank = sum(1 for part in pushed for char in part if not normalize_text(f"a{char}a")[1:-1])
    return hard_limit + 1 + blank + sum(1 for part in pushed for char in part if char.isspace())


def letters(text: str) -> str:
    """What is spoken of ``text``: its letters and digits, decomposed (pieces are composed one at
    a time, so a mark that arrives after its letter was handed over stays apart)."""
    return "".join(char for char in unicodedata.normalize("NFD", text) if char.isalnum())


def without_space(text: str) -> str:
    return "".join(unicodedata.normalize("NFD", text).split())


def is_subsequence(short: str, long: str) -> bool:
    remaining = iter(long)
    return all(char in remaining for char in short)


@settings(FUZZ, max_examples=SEGMENTER_EXAMPLES)
@given(language=st.sampled_from(["en", "ja", "zh", "fr-FR"]), parts=pushes)
def test_the_segmenter_hands_over_everything_within_its_limits(
    language: str, parts: list[str]
) -> None:
    COUNTS["IncrementalSegmenter: examples"] += 1
    COUNTS["IncrementalSegmenter: pushes"] += len(parts)
    hard_limit = HARD_CUT_FACTOR * limits_for(language).max_chars
    segmenter = IncrementalSegmenter(language, max_chars=MAX_STREAM_CHARS)
    pieces: list[TextPiece] = []
    pushed: list[str] = []
    for part in parts:
        if sum(map(len, pushed)) + len(part) > MAX_STREAM_CHARS:
            break  # the total limit is a typed error, tested in tests/test_text_stream.py
        pushed.append(part)
        pieces += segmenter.push(part)
        assert segmenter.pending_chars <= pending_bound(hard_limit, pushed), (language, pushed)
    pieces += segmenter.flush()
    assert segmenter.pending_chars == 0
    COUNTS["IncrementalSegmenter: pieces"] += len(pieces)

    spoken = "".join(piece.text for piece in pieces)
    text = normalize_text("".join(pushed))
    assert letters(spoken) == letters(text), "a letter or digit was lost, added or moved"
    assert is_subsequence(without_space(spoken), without_space(text)), "text was invented"
    for piece in pieces:
        assert piece.text and piece.text == piece.text.strip()
        assert any(char.isalnum() for char in piece.text), piece
        assert len(piece.text) <= hard_limit, (len(piece.text), piece.text[:40])
    assert segmenter.pieces_out == len(pieces)


normalizer_pushes = st.lists(
    st.one_of(
        st.text(segment_alphabet, max_size=12),
        st.sampled_from(
            [
                "12",
                "34 €",
                "1.000,50 ",
                "3/4 ",
                "10:30 ",
                "2024-01-02 ",
                "$5 ",
                "+1 555 123 4567 ",
                "120 km/h ",
                "Dr. ",
                "z. B. ",
                "am 4. ",
                "1st ",
                "XIV ",
                "St. ",
                "Mr",
                ". ",
                "年",
                "3月4日",
                "１２３",
            ]
        ),
        st.integers(0, 10**12).map(str),
        st.integers(1, 600).map(lambda n: "9" * n),
    ),
    max_size=40,
)


@settings(FUZZ, max_examples=SEGMENTER_EXAMPLES // 2)
@given(
    language=st.sampled_from(["en", "en-GB", "es", "fr", "de", "it", "pt-BR", "ja"]),
    parts=normalizer_pushes,
)
def test_the_segmenter_with_a_speech_normalizer_stays_within_its_limits(
    language: str, parts: list[str]
) -> None:
    """Numbers, dates and money spoken as words while the text still arrives: only typed
    errors, every piece speakable and within the hard limit, nothing waiting past it."""
    COUNTS["IncrementalSegmenter + normalizer: examples"] += 1
    normalizer = normalizer_for(language)
    assert normalizer is not None
    hard_limit = HARD_CUT_FACTOR * limits_for(language).max_chars
    segmenter = IncrementalSegmenter(language, MAX_STREAM_CHARS, normalizer)
    pieces: list[TextPiece] = []
    pushed: list[str] = []
    for part in parts:
        if sum(map(len, pushed)) + len(part) > MAX_STREAM_CHARS:
            break
        pushed.append(part)
        pieces += segmenter.push(part)
        assert segmenter.pending_chars <= pending_bound(hard_limit, pushed), (language, pushed)
    pieces += segmenter.flush()
    COUNTS["IncrementalSegmenter + normalizer: pieces"] += len(pieces)
    for piece in pieces:
        assert any(char.isalnum() for char in piece.text), piece
        assert len(piece.text) <= hard_limit, (len(piece.text), piece.text[:40])


# --- what the fuzzing found (each failed before its fix) ---------------------------------------


@pytest.mark.parametrize("language", ["en", "ja"])
def test_text_of_many_short_sentences_is_segmented(language: str) -> None:
    text = "Hi. " * 1000 if language == "en" else "はい。" * 2000
    pieces = segment_text(normalize_text(text), language)
    assert len(pieces) > 1


@pytest.mark.parametrize("blank", [" ", "\u200b", "\x00"])
def test_blank_text_does_not_pile_up_in_the_segmenter(blank: str) -> None:
    segmenter = IncrementalSegmenter("en", MAX_STREAM_CHARS)
    for _ in range(1_000):
        segmenter.push(blank)
    assert segmenter.pending_chars <= HARD_CUT_FACTOR * limits_for("en").max_chars + 1

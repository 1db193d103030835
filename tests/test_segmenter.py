"""Text is cut into short-then-growing pieces, only at places where a pause sounds natural."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engines.segmenter import (
    CJK_LIMITS,
    CLAUSE_SLACK,
    LATIN_LIMITS,
    Boundary,
    SegmenterLimits,
    TextPiece,
    limits_for,
    segment_text,
    split_sentences,
)
from engines.text_normalizer import normalize_text

LONG_SENTENCE = (
    "Well, I think that we should probably go to the store today, because the weather is nice "
    "and the shops are open until late tonight, so there is really no reason to wait any longer."
)
JAPANESE = (
    "今日はとても良い天気ですね、散歩に行きましょう。"
    "明日は雨が降るそうです、傘を持って行ってください。"
)


def allowed_length(limits: SegmenterLimits, index: int, piece: TextPiece) -> int:
    """A piece's limit; a clause mark may end it up to CLAUSE_SLACK past the limit."""
    if piece.boundary is Boundary.CLAUSE:
        return int(limits.max_for(index) * CLAUSE_SLACK)
    return limits.max_for(index)


def cuts(pieces: list[TextPiece]) -> list[int]:
    """Where one piece ends and the next begins (the end offsets of all but the last piece)."""
    return [piece.end for piece in pieces[:-1]]


def assert_pieces_cover(text: str, pieces: list[TextPiece]) -> None:
    """The pieces are the text, in order, without overlap; only whitespace falls between."""
    assert pieces, "non-empty text gave no pieces"
    position = 0
    for piece in pieces:
        assert position <= piece.start < piece.end <= len(text)
        assert text[position : piece.start].strip() == ""
        assert text[piece.start : piece.end] == piece.text
        position = piece.end
    assert text[position:].strip() == ""


def assert_not_cut_inside(text: str, pieces: list[TextPiece], phrase: str) -> None:
    start = text.index(phrase)
    end = start + len(phrase)
    inside = [c for c in cuts(pieces) if start < c < end]
    assert inside == [], f"cut inside {phrase!r}: {[p.text for p in pieces]}"
    assert any(phrase in p.text for p in pieces)


# --- limits -----------------------------------------------------------------------------------


def test_limits_for_picks_cjk_limits_for_japanese_and_chinese() -> None:
    for language in ("ja", "ja-JP", "ja_jp", "zh", "zh-CN", "cmn", "yue", "JA"):
        assert limits_for(language) is CJK_LIMITS
    for language in ("en", "en-US", "es", "fr-CA", "de", "it", "pt_BR"):
        assert limits_for(language) is LATIN_LIMITS


def test_piece_limits_start_small_grow_and_are_capped() -> None:
    for limits in (LATIN_LIMITS, CJK_LIMITS):
        sizes = [limits.max_for(i) for i in range(12)]
        assert sizes[0] == limits.first_max_chars
        assert limits.min_chars < limits.first_max_chars
        assert sizes == sorted(sizes)
        assert sizes[1] > sizes[0]
        assert sizes[-1] == limits.max_chars


# --- English ----------------------------------------------------------------------------------


def test_first_piece_is_the_first_clause_that_is_not_a_fragment() -> None:
    """ "Well," is too short to be spoken alone; the first piece runs to the next clause mark,
    and the rest of the sentence follows whole."""
    pieces = segment_text(LONG_SENTENCE, "en")
    first = pieces[0]
    assert first.text == "Well, I think that we should probably go to the store today,"
    assert first.boundary is Boundary.CLAUSE
    assert len(first.text) <= LATIN_LIMITS.first_max_chars
    assert len(pieces) == 2
    assert pieces[1].boundary is Boundary.END


def test_a_short_sentence_is_one_piece() -> None:
    text = "Thanks for calling, how can I help?"
    assert [p.text for p in segment_text(text, "en")] == [text]


def test_cut_prefers_a_clause_mark_over_a_plain_word_gap() -> None:
    text = "First of all, we need to talk about the plan for the next few weeks of work."
    first = segment_text(text, "en")[0]
    assert first.text == "First of all,"
    assert first.boundary is Boundary.CLAUSE


def test_dash_between_spaces_is_a_clause_mark() -> None:
    text = "The old house — empty for years — was finally sold to a family from the city."
    first = segment_text(text, "en")[0]
    assert first.text == "The old house —"
    assert first.boundary is Boundary.CLAUSE


def test_a_clause_mark_past_the_sentence_end_never_ends_a_piece_of_that_sentence() -> None:
    # the second piece's limit plus slack reaches past the sentence end into " —" of the next
    text = "Here we go now. Please visit the site https://example.com/a/b/c/d/e/f/g. — the end"
    pieces = segment_text(text, "en")
    assert_pieces_cover(text, pieces)
    site = next(p for p in pieces if "example.com" in p.text)
    assert site.text.endswith("g.")
    assert site.boundary is Boundary.SENTENCE


def test_no_cut_right_after_a_function_word() -> None:
    pieces = segment_text(LONG_SENTENCE, "en")
    function_words = {"the", "a", "to", "and", "of", "that", "so", "until", "because"}
    for piece in pieces[:-1]:
        last_word = piece.text.rstrip(",;:.!?").split()[-1].lower()
        assert last_word not in function_words, [p.text for p in pieces]


def test_a_word_cut_never_leaves_a_tiny_remainder_of_the_sentence() -> None:
    """The last word gap in reach of the first limit is before "line."; cutting there would
    speak "line." as a sentence of its own, so the cut goes earlier."""
    text = "Now open a terminal window and run the installer from its command line."
    assert len(text) > LATIN_LIMITS.first_max_chars
    pieces = segment_text(text, "en")
    assert_pieces_cover(text, pieces)
    assert all(len(p.text) >= LATIN_LIMITS.min_chars for p in pieces), [p.text for p in pieces]
    assert pieces[-1].text.endswith("command line.")


def test_piece_sizes_grow_within_their_limits() -> None:
    text = " ".join([LONG_SENTENCE.rstrip(".")] * 4) + "."
    pieces = segment_text(text, "en")
    assert len(pieces) >= 4
    for index, piece in enumerate(pieces):
        assert len(piece.text) <= allowed_length(LATIN_LIMITS, index, piece), (index, piece.text)
    assert max(len(p.text) for p in pieces) > LATIN_LIMITS.first_max_chars


@pytest.mark.parametrize(
    ("text", "first"),
    [
        (
            "https://example.com/downloads/releases/2026/installer-for-every-platform.zip is "
            "the file that you should download first and then run on your machine.",
            "https://example.com/downloads/releases/2026/installer-for-every-platform.zip",
        ),
        (
            "Write to customer.support.for.every.region.and.product@example-company.com for "
            "more details about the project and everything else you might want to know.",
            "Write to customer.support.for.every.region.and.product@example-company.com",
        ),
    ],
)
def test_an_unbreakable_run_is_spoken_alone_and_the_rest_is_still_cut(
    text: str, first: str
) -> None:
    """An unbreakable run may exceed the limit, but only the run itself: the words after it are
    cut as usual, so the first audio is not delayed by a whole long sentence."""
    pieces = segment_text(text, "en")
    assert pieces[0].text == first, [p.text for p in pieces]
    for index, piece in enumerate(pieces[1:], start=1):
        assert len(piece.text) <= allowed_length(LATIN_LIMITS, index, piece), [
            p.text for p in pieces
        ]


def test_last_piece_ends_the_text() -> None:
    for text, language in ((LONG_SENTENCE, "en"), ("Hi. Bye.", "en"), (JAPANESE, "ja")):
        pieces = segment_text(text, language)
        assert pieces[-1].boundary is Boundary.END
        assert pieces[-1].end == len(text)
        assert all(p.boundary is not Boundary.END for p in pieces[:-1])


def test_short_text_is_one_piece() -> None:
    pieces = segment_text("Hello there.", "en")
    assert pieces == [TextPiece("Hello there.", Boundary.END, 0, 12)]


def test_empty_text_gives_no_pieces() -> None:
    assert segment_text("", "en") == []
    assert split_sentences("", "en") == []


def test_sentences_end_at_stop_marks_followed_by_a_capital() -> None:
    pieces = segment_text("I saw it. He said hello! Did you? Yes.", "en")
    assert [p.text for p in pieces] == ["I saw it.", "He said hello!", "Did you?", "Yes."]
    assert [p.boundary for p in pieces] == [Boundary.SENTENCE] * 3 + [Boundary.END]


def test_a_period_followed_by_a_lowercase_word_is_not_a_sentence_end() -> None:
    assert split_sentences("It costs approx. five euros. Then we go.", "en") == [
        "It costs approx. five euros.",
        "Then we go.",
    ]


def test_closing_quote_stays_with_its_sentence() -> None:
    assert split_sentences('He said "Stop." Then he left.', "en") == [
        'He said "Stop."',
        "Then he left.",
    ]


def test_ellipsis_ends_a_sentence() -> None:
    assert split_sentences("Wait... What happened?", "en") == ["Wait...", "What happened?"]


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("The value of pi is roughly 3.14 and that is enough for most of us.", "3.14"),
        ("The city has 1,000,000 people living in it and more are coming.", "1,000,000"),
        ("The meeting begins at exactly 10:30 in the morning, so be on time.", "10:30"),
        ("We will ship it on 12/24/2025 to everyone who ordered it in time.", "12/24/2025"),
        (
            "Please visit https://example.com/a.b?x=1 for more details about the project.",
            "https://example.com/a.b?x=1",
        ),
        (
            "For the details, see www.example.org/path/to/page.html and read it all there.",
            "www.example.org/path/to/page.html",
        ),
        (
            "You can write to john.doe@example.com whenever you have any question at all.",
            "john.doe@example.com",
        ),
        ("Yesterday I met Dr. Smith at the hospital and we talked for an hour.", "Dr. Smith"),
        ("Take a small fruit, e.g. this apple, and cut it into very thin slices.", "e.g. this"),
        ("The new U.S. policy on trade was announced by the president last week.", "U.S. policy"),
        ("Every single morning at 7 a.m. sharp the old church bells begin to ring.", "a.m. sharp"),
        (
            "The letter was signed by J. R. R. Tolkien himself in the year he died.",
            "J. R. R. Tolkien",
        ),
    ],
)
def test_never_cut_inside_numbers_urls_emails_or_abbreviations(text: str, phrase: str) -> None:
    pieces = segment_text(text, "en")
    assert len(pieces) >= 2
    assert_pieces_cover(text, pieces)
    assert_not_cut_inside(text, pieces, phrase)


@pytest.mark.parametrize(
    "text",
    [
        "I saw Dr. Smith today. It was fine.",
        "It was 3.14 today. It was fine.",
        "We met at 10 a.m. and left. It was fine.",
        "The U.S. economy grew. It was fine.",
        "Mail john.doe@example.com today. It was fine.",
        "See https://example.com/a.b?x=1 today. It was fine.",
    ],
)
def test_protected_tokens_do_not_end_sentences(text: str) -> None:
    assert split_sentences(text, "en") == [text[: -len(" It was fine.")], "It was fine."]


def test_a_sentence_may_end_right_after_a_number_or_url() -> None:
    assert split_sentences("It is 10:30. Go now.", "en") == ["It is 10:30.", "Go now."]
    assert split_sentences("Visit https://example.com/a.b?x=1. It is good.", "en") == [
        "Visit https://example.com/a.b?x=1.",
        "It is good.",
    ]


def test_common_words_ending_a_sentence_are_not_taken_for_abbreviations() -> None:
    assert split_sentences("We sat. Then we ate.", "en") == ["We sat.", "Then we ate."]
    assert split_sentences("I said no. We left early.", "en") == ["I said no.", "We left early."]


def test_an_exclamation_inside_a_sentence_does_not_end_it() -> None:
    """Only a CJK stop ends a sentence with no space after it; ASCII ! and ? need one."""
    text = 'He shouted "Stop!", and then he left the room quietly.'
    assert split_sentences(text, "en") == [text]
    assert all(not p.text.startswith(",") for p in segment_text(text, "en"))
    assert split_sentences("I use Yahoo!Mail every day.", "en") == ["I use Yahoo!Mail every day."]


def test_split_sentences_returns_whole_sentences_without_a_short_first_piece() -> None:
    text = LONG_SENTENCE + " It was a fine day. Was it not? Yes!"
    assert split_sentences(text, "en") == [
        LONG_SENTENCE,
        "It was a fine day.",
        "Was it not?",
        "Yes!",
    ]


def test_other_latin_languages_use_latin_limits_and_marks() -> None:
    text = (
        "¿Quieres venir conmigo, o prefieres quedarte en casa esta noche? "
        "Sí, claro, pero primero tengo que terminar mi trabajo de la universidad."
    )
    pieces = segment_text(text, "es")
    assert_pieces_cover(text, pieces)
    assert len(pieces[0].text) <= allowed_length(LATIN_LIMITS, 0, pieces[0])
    assert pieces[0].text == "¿Quieres venir conmigo,"
    assert "noche?" in [p.text.split()[-1] for p in pieces]


# --- Japanese ---------------------------------------------------------------------------------


def test_japanese_sentences_end_at_the_full_stop() -> None:
    assert split_sentences(JAPANESE, "ja") == [
        "今日はとても良い天気ですね、散歩に行きましょう。",
        "明日は雨が降るそうです、傘を持って行ってください。",
    ]


def test_japanese_short_first_sentence_is_one_piece() -> None:
    text = "はい、わかりました。それでは明日の朝、駅の前で会いましょう。"
    pieces = segment_text(text, "ja")
    assert pieces[0].text == "はい、わかりました。"
    assert pieces[0].boundary is Boundary.SENTENCE
    assert_pieces_cover_cjk(text, pieces)


def test_japanese_first_piece_ends_at_a_comma_when_one_is_in_reach() -> None:
    text = "そうですね、明日は雨が降るそうですから、傘を持って行ってください。"
    pieces = segment_text(text, "ja")
    assert pieces[0].text == "そうですね、"
    assert pieces[0].boundary is Boundary.CLAUSE
    assert_pieces_cover_cjk(text, pieces)


def test_japanese_first_piece_is_short_and_cuts_fall_on_marks_or_script_changes() -> None:
    pieces = segment_text(JAPANESE, "ja")
    assert CJK_LIMITS.min_chars <= len(pieces[0].text) <= CJK_LIMITS.first_max_chars
    assert_pieces_cover_cjk(JAPANESE, pieces)
    for cut in cuts(pieces):
        before, after = JAPANESE[cut - 1], JAPANESE[cut]
        at_mark = before in "。、"
        hiragana_to_kanji = "\u3041" <= before <= "\u309f" and not "\u3041" <= after <= "\u309f"
        assert at_mark or hiragana_to_kanji, (before, after)
    assert any(p.boundary is Boundary.SENTENCE and p.text.endswith("。") for p in pieces)


def test_japanese_pieces_grow_within_their_limits() -> None:
    text = "、".join(["今日は本当に良い天気ですね"] * 8) + "。"
    pieces = segment_text(text, "ja")
    assert len(pieces) >= 3
    for index, piece in enumerate(pieces):
        assert len(piece.text) <= allowed_length(CJK_LIMITS, index, piece), (index, piece.text)
    assert all(p.text.endswith("、") for p in pieces[1:-1])
    assert pieces[-1].text.endswith("。")


def assert_pieces_cover_cjk(text: str, pieces: list[TextPiece]) -> None:
    assert "".join(p.text for p in pieces) == text
    assert [p.start for p in pieces[1:]] == [p.end for p in pieces[:-1]]


# --- properties -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    text: str
    protected: bool
    """A number, URL, e-mail or abbreviation pair: no cut may fall inside it."""
    attach: bool = False
    """Punctuation: written right after the previous token, without a space."""


_WORDS = st.sampled_from(
    "the a to and of in that so because with for when but or is was we they it people city "
    "house morning Hello World Yes Then Smith Paris piano weather tonight".split()
)
_RANDOM_WORDS = st.from_regex(r"[A-Za-z][a-z]{0,14}", fullmatch=True)
_NUMBERS = st.one_of(
    st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 999), st.integers(0, 99)),
    st.builds(
        lambda a, b, c: f"{a},{b:03d},{c:03d}",
        st.integers(1, 999),
        st.integers(0, 999),
        st.integers(0, 999),
    ),
    st.builds(lambda h, m: f"{h}:{m:02d}", st.integers(0, 23), st.integers(0, 59)),
    st.builds(
        lambda d, m, y: f"{d}/{m}/{y}", st.integers(1, 31), st.integers(1, 12), st.integers(1, 2099)
    ),
)
_HOSTS = st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){0,2}", fullmatch=True)
_URLS = st.builds(
    lambda scheme, host, path, n: f"{scheme}{host}.com/{path}?x={n}",
    st.sampled_from(["https://", "http://", "www."]),
    _HOSTS,
    st.from_regex(r"[a-z0-9]{1,6}(\.[a-z]{1,4})?(/[a-z0-9]{1,6}){0,2}", fullmatch=True),
    st.integers(0, 99),
)
_EMAILS = st.builds(
    lambda user, host: f"{user}@{host}.com",
    st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8})?", fullmatch=True),
    _HOSTS,
)
_ABBREVIATION_PAIRS = st.sampled_from(
    ["Dr. Smith", "e.g. this", "U.S. policy", "a.m. sharp", "Mr. Brown", "i.e. that", "etc. and"]
)
_PUNCTUATION = st.sampled_from([",", ".", "!", "?", ";", ":", "...", "?!"])
_DASHES = st.sampled_from(["—", "–", "-"])

_TOKENS = st.one_of(
    _WORDS.map(lambda w: Token(w, False)),
    _WORDS.map(lambda w: Token(w, False)),
    _RANDOM_WORDS.map(lambda w: Token(w, False)),
    _NUMBERS.map(lambda n: Token(n, True)),
    _URLS.map(lambda u: Token(u, True)),
    _EMAILS.map(lambda e: Token(e, True)),
    _ABBREVIATION_PAIRS.map(lambda a: Token(a, True)),
    _PUNCTUATION.map(lambda p: Token(p, False, attach=True)),
    _DASHES.map(lambda d: Token(d, False)),
)


@st.composite
def token_texts(draw: st.DrawFn) -> tuple[str, list[tuple[int, int]]]:
    """A text and the spans of its protected tokens."""
    tokens = draw(st.lists(_TOKENS, min_size=1, max_size=80))
    text = ""
    spans: list[tuple[int, int]] = []
    for token in tokens:
        if text and not token.attach:
            text += " "
        start = len(text)
        text += token.text
        if token.protected:
            spans.append((start, len(text)))
    return text, spans


_LANGUAGES = st.sampled_from(["en", "es", "fr", "de", "it", "pt"])


@settings(max_examples=200, deadline=None)
@given(token_texts(), _LANGUAGES)
# a clause mark just past the limit but beyond the sentence end once ended a piece there
@example(("the Dr. Smith the people https://aaaaaaaa.a.a.com/000000/0/0?x=0. — the", []), "en")
def test_pieces_cover_generated_text_in_order_without_overlap(
    generated: tuple[str, list[tuple[int, int]]], language: str
) -> None:
    text, _ = generated
    assert normalize_text(text) == text
    pieces = segment_text(text, language)
    assert_pieces_cover(text, pieces)
    assert pieces[-1].boundary is Boundary.END


@settings(max_examples=200, deadline=None)
@given(token_texts(), _LANGUAGES)
def test_every_piece_is_non_empty_and_stripped(
    generated: tuple[str, list[tuple[int, int]]], language: str
) -> None:
    text, _ = generated
    for piece in segment_text(text, language):
        assert piece.text
        assert piece.text == piece.text.strip()


@settings(max_examples=200, deadline=None)
@given(token_texts(), _LANGUAGES)
def test_no_cut_falls_inside_a_word_or_a_protected_token(
    generated: tuple[str, list[tuple[int, int]]], language: str
) -> None:
    text, spans = generated
    pieces = segment_text(text, language)
    for cut in cuts(pieces):
        assert not (re.match(r"\w", text[cut - 1]) and re.match(r"\w", text[cut])), (cut, text)
        for start, end in spans:
            assert not start < cut < end, (text[start:end], [p.text for p in pieces])


@settings(max_examples=200, deadline=None)
@given(token_texts(), _LANGUAGES)
def test_word_cuts_leave_at_least_min_chars_before_the_sentence_end(
    generated: tuple[str, list[tuple[int, int]]], language: str
) -> None:
    text, _ = generated
    pieces = segment_text(text, language)
    for index, piece in enumerate(pieces):
        if piece.boundary is not Boundary.WORD:
            continue
        sentence_end = next(
            p.end for p in pieces[index:] if p.boundary in (Boundary.SENTENCE, Boundary.END)
        )
        assert sentence_end - piece.end >= LATIN_LIMITS.min_chars, [p.text for p in pieces]


@settings(max_examples=200, deadline=None)
@given(token_texts())
def test_split_sentences_only_cuts_where_segment_text_may_cut(
    generated: tuple[str, list[tuple[int, int]]],
) -> None:
    text, spans = generated
    sentences = split_sentences(text, "en")
    position = 0
    for sentence in sentences:
        start = text.index(sentence, position)
        assert text[position:start].strip() == ""
        position = start + len(sentence)
        if position < len(text):
            assert text[position - 1] in ".!?…\"'”’)]»"
            for span_start, span_end in spans:
                assert not span_start < position < span_end, (text, sentences)
    assert text[position:].strip() == ""


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.sampled_from(["en", "ja", "zh", "fr"]))
def test_segmenting_any_normalized_text_never_fails(raw: str, language: str) -> None:
    text = normalize_text(raw)
    pieces = segment_text(text, language)
    if not text:
        assert pieces == []
        return
    assert len(pieces) <= len(text)
    position = 0
    for piece in pieces:
        assert piece.text and piece.text == piece.text.strip()
        assert position <= piece.start < piece.end <= len(text)
        assert text[position : piece.start].strip() == ""
        assert text[piece.start : piece.end].strip() == piece.text
        position = piece.end
    assert text[position:].strip() == ""
    assert pieces[-1].boundary is Boundary.END
    sentences = split_sentences(text, language)
    assert "".join("".join(s.split()) for s in sentences) == "".join(text.split())

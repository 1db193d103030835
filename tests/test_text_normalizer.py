"""The normalizer removes what cannot be spoken and leaves everything else exactly as written."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.errors import EmptyTextError, RequestError, TextTooLongError
from engines.text_normalizer import normalize_text, prepare_text

LIMIT = 10_000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\x00b", "ab"),
        ("bell\x07s", "bells"),
        ("\x1b[31mred\x1b[0m", "[31mred[0m"),
        ("zero\u200bwidth", "zerowidth"),
        ("\ufeffbyte order mark", "byte order mark"),
        ("left\u200eright\u200fmark", "leftrightmark"),
        ("\u202aembedded\u202c \u2066isolated\u2069", "embedded isolated"),
        ("c1\x80\x9fcontrol", "c1control"),
    ],
)
def test_control_and_format_characters_are_removed(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    "separator", ["\t", "\n", "\r", "\r\n", "\v", "\f", "\x85", "\u2028", "\u2029"]
)
def test_tabs_and_line_breaks_become_a_single_space(separator: str) -> None:
    assert normalize_text(f"one{separator}two") == "one two"


def test_runs_of_whitespace_collapse_and_the_ends_are_trimmed() -> None:
    assert normalize_text("  \t hello \n\n   big \u00a0 \u3000 world \r\n ") == "hello big world"


def test_a_control_character_between_spaces_leaves_one_space() -> None:
    assert normalize_text("one \x00 two") == "one two"


def test_decomposed_accent_is_composed_to_nfc() -> None:
    decomposed = "cafe\u0301"
    result = normalize_text(decomposed)
    assert result == "caf\u00e9"
    assert len(result) == 4


def test_precomposed_text_is_left_alone() -> None:
    assert normalize_text("Léa, João, Sofía, Québécois, Größe") == (
        "Léa, João, Sofía, Québécois, Größe"
    )


def test_accent_separated_from_its_letter_by_a_format_mark_is_still_composed() -> None:
    """Removing the zero-width space leaves e + U+0301, which must still come out as one é."""
    result = normalize_text("caf" + "e\u200b\u0301")
    assert result == "caf\u00e9"
    assert unicodedata.is_normalized("NFC", result)


def test_letters_digits_and_punctuation_are_unchanged() -> None:
    text = "Hello, World! 3.14 1,000,000 10:30 (a) [b] {c} \"q\" 'q' ¿Qué? ¡Sí! « x » — – - … ; :"
    assert normalize_text(text) == text


def test_mixed_scripts_and_emoji_are_preserved() -> None:
    text = "Hello 世界! こんにちは、カタカナ。 Straße 👋🎉 naïve café 😀"
    assert normalize_text(text) == text


_VISIBLE = st.characters(
    categories=("Lu", "Ll", "Lo", "Nd", "Po", "Ps", "Pe", "Pd", "Sm", "Sc", "So"),
).filter(lambda ch: unicodedata.normalize("NFC", ch) == ch)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(_VISIBLE, min_size=1, max_size=12), min_size=1, max_size=12))
def test_visible_words_joined_by_single_spaces_pass_through_unchanged(words: list[str]) -> None:
    text = " ".join(words)
    assert normalize_text(text) == unicodedata.normalize("NFC", text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_normalized_text_has_no_controls_and_no_doubled_or_edge_spaces(text: str) -> None:
    result = normalize_text(text)
    assert result == result.strip()
    assert "  " not in result
    assert all(
        ch == " " or not (ch.isspace() or unicodedata.category(ch).startswith("C")) for ch in result
    )


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_normalizing_twice_changes_nothing(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once


@pytest.mark.parametrize("text", ["", " ", "\t\n \r\n", "\u200b\u200e\x00", "\u3000\u00a0"])
def test_empty_or_blank_text_is_refused(text: str) -> None:
    with pytest.raises(EmptyTextError) as caught:
        prepare_text(text, max_chars=LIMIT)
    assert caught.value.code == "empty_text"
    assert isinstance(caught.value, RequestError)


@pytest.mark.parametrize("text", ["?!...", "--- ,;: ---", "…", "「」、。", "(( ))", "* * *"])
def test_punctuation_only_text_is_refused_as_unspeakable(text: str) -> None:
    with pytest.raises(EmptyTextError) as caught:
        prepare_text(text, max_chars=LIMIT)
    assert "speakable" in caught.value.message


def test_prepared_text_is_the_normalized_text() -> None:
    assert prepare_text("  Hello\tworld\u200b!\n", max_chars=LIMIT) == "Hello world!"


def test_a_single_digit_or_letter_is_speakable() -> None:
    assert prepare_text("7", max_chars=LIMIT) == "7"
    assert prepare_text("字", max_chars=LIMIT) == "字"


def test_text_exactly_at_the_limit_is_accepted() -> None:
    text = "a" * 50
    assert prepare_text(text, max_chars=50) == text


def test_text_over_the_limit_reports_its_length_and_the_limit() -> None:
    with pytest.raises(TextTooLongError) as caught:
        prepare_text("a" * 51, max_chars=50)
    assert caught.value.length == 51
    assert caught.value.limit == 50
    assert caught.value.http_status == 413
    assert "51" in caught.value.message
    assert "50" in caught.value.message


def test_the_limit_applies_to_the_normalized_text() -> None:
    """Whitespace that collapses away does not count against the limit."""
    padded = "word" + " " * 50 + "word"
    assert len(padded) > 20
    assert prepare_text(padded, max_chars=20) == "word word"


def test_hundred_kilobytes_is_refused_without_being_normalized(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def spy(text: str) -> str:
        calls.append(text)
        return text

    monkeypatch.setattr("engines.text_normalizer.normalize_text", spy)
    text = "word " * 20_480
    with pytest.raises(TextTooLongError) as caught:
        prepare_text(text, max_chars=LIMIT)
    assert caught.value.length == len(text) == 102_400
    assert caught.value.limit == LIMIT
    assert calls == []

"""What a language says for numbers, money, units, dates and times: the tables each language
module fills in, and the spoken forms built from them.

Numbers are spelled by ``num2words``; this module adds what it leaves out (grammatical gender
before a noun, decimals read the local way, money and units with their nouns, phone numbers
digit by digit, the local order of dates).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache

from num2words import num2words

from .rewriter import Rule

PHONE_GROUP_MAX_DIGITS = 4
"""A written group of a phone number longer than this is read in threes (1234567: 123 4567)."""
PHONE_LONG_GROUP_SPLIT = 3
MAX_SPELLED_DIGITS = 12
"""Longer digit runs are codes or ids, read digit by digit (num2words also stops somewhere)."""


class Gender(StrEnum):
    MASCULINE = "m"
    FEMININE = "f"
    NEUTER = "n"


class Context(StrEnum):
    """Where an abbreviation stands for its word (elsewhere it is left alone)."""

    ANYWHERE = "anywhere"
    BEFORE_NAME = "before_name"
    """Before a capitalised word: "Dr. Smith", "M. Dupont"."""
    AFTER_NAME = "after_name"
    """After a capitalised word: "John Smith Jr.", "Main St."."""
    BEFORE_NUMBER = "before_number"
    """Before a digit: "No. 5", "Nr. 3"."""
    AFTER_NUMBER = "after_number"
    """After a number: "5 Mio.", "3 Mrd."."""


@dataclass(frozen=True)
class Noun:
    """A unit or currency: its singular, plural and the gender numbers agree with."""

    singular: str
    plural: str
    gender: Gender = Gender.MASCULINE


@dataclass(frozen=True)
class Currency:
    main: Noun
    cents: Noun | None = None
    """None where the sub-unit is not spoken (yen)."""


@dataclass(frozen=True)
class Abbreviation:
    written: tuple[str, ...]
    """Forms as written ("z.B.", "z. B."); a space after an inner dot is optional anyway."""
    spoken: str
    context: Context = Context.ANYWHERE


@dataclass(frozen=True)
class RomanReading:
    """How a Roman numeral after (or before) a word is read."""

    ordinal: bool
    gender: Gender = Gender.MASCULINE
    ordinal_up_to: int = 10_000
    """Above this, a cardinal ("Felipe segundo" but "Alfonso trece")."""


@dataclass(frozen=True)
class NumberFormat:
    """Written number conventions: the decimal mark and the thousands separators."""

    decimal: str
    groups: tuple[str, ...]


_DIGIT_RUN = re.compile(r"\d+")
SPELLING_CACHE_SIZE = 4096
"""Numbers spelled recently, per language and form: num2words is most of the work."""


@lru_cache(maxsize=SPELLING_CACHE_SIZE)
def _spell(number: int, language: str, form: str) -> str:
    try:
        words = num2words(number, lang=language, to=form)
    except (NotImplementedError, OverflowError, RecursionError, KeyError, IndexError):
        # beyond what num2words spells (its limit differs per language): digit by digit
        return " ".join(_spell(int(digit), language, "cardinal") for digit in str(abs(number)))
    # num2words puts commas between groups ("one thousand, two hundred"); a comma would be a
    # place to cut and a pause in the middle of a number
    return " ".join(words.replace(",", " ").split())


@dataclass
class Language(ABC):
    """A language's tables and spoken forms. Each language module builds one with its tables
    (for a locale) and overrides a form where the language reads it its own way."""

    locale: str
    num2words_code: str = ""
    number_format: NumberFormat = field(default_factory=lambda: NumberFormat(".", (",",)))
    day_first: bool = True
    """Numeric dates are day/month/year (False: month/day/year, as in the US)."""

    # words; each language module fills these in
    word_joiner: str = " "
    """Between a number and its word ("25 percent"; Japanese writes none: 25パーセント)."""
    minus: str = "minus"
    plus: str = "plus"
    decimal_word: str = "point"
    percent: str = "percent"
    at: str = "at"
    dot: str = "dot"
    slash: str = "slash"
    dash: str = "dash"
    underscore: str = "underscore"
    colon: str = "colon"
    digit_words: tuple[str, ...] = ()
    months: Sequence[str] = ()
    month_abbreviations: dict[str, int] = field(default_factory=dict)
    currencies: dict[str, Currency] = field(default_factory=dict)
    currency_symbols: dict[str, str] = field(default_factory=dict)
    """Symbol or code as written -> key in ``currencies``."""
    cents_joiner: str = "and"
    scale_words: dict[str, Noun] = field(default_factory=dict)
    """"million" -> its noun; the currency after it takes ``scale_joiner``."""
    scale_joiner: str = ""
    units: dict[str, Noun] = field(default_factory=dict)
    abbreviations: tuple[Abbreviation, ...] = ()
    regnal_names: frozenset[str] = frozenset()
    regnal: RomanReading = field(default_factory=lambda: RomanReading(ordinal=True))
    roman_after: dict[str, RomanReading] = field(default_factory=dict)
    """Lower-cased word before a Roman numeral -> its reading ("chapter IX")."""
    roman_before: dict[str, RomanReading] = field(default_factory=dict)
    """Lower-cased word after a Roman numeral -> its reading ("XXI secolo")."""
    ordinal_suffixes: dict[str, Gender] = field(default_factory=dict)
    """Written after digits for an ordinal ("1st", "2ª") -> the ordinal's gender."""
    roman_suffixes: dict[str, str] = field(default_factory=dict)
    """Written after a Roman numeral for an ordinal (French "XIVe") -> an ordinal suffix."""
    roman_dot: bool = False
    """German: a regnal numeral carries a dot ("Ludwig XIV.") that does not end a sentence."""
    month_date_patterns: tuple[str, ...] = ()
    """Dates with the month's name: regexes with groups day, {MONTH} and an optional year."""
    time_patterns: tuple[str, ...] = ()
    """Clock times: regexes with groups h, m (optional) and mer (optional: am / pm)."""
    year_words: frozenset[str] = frozenset()
    """Words after which a four-digit number is read as a year ("in 1999")."""
    spell_fraction_up_to: int = 0
    """Decimals with at most this many digits (no leading zero) are read as a number
    ("tres coma catorce"); longer ones, and all where this is 0, digit by digit."""
    nouns_capitalised: bool = False
    """German: a capital after an abbreviation's dot does not start a sentence."""
    spells_numbers: bool = True
    """False where the engine's own front end reads digits right (Japanese): plain numbers are
    left alone, only negative ones get their sign spoken."""
    singular_below_two: bool = False
    """French: "1,5 kilomètre" (singular below two)."""

    # --- numbers -------------------------------------------------------------------------

    def cardinal(self, number: int, gender: Gender = Gender.MASCULINE, noun: bool = False) -> str:
        """``number`` in words, agreeing with a following noun of ``gender`` when ``noun``."""
        if number < 0:
            return f"{self.minus} {self.cardinal(-number, gender, noun)}"
        if len(str(number)) > MAX_SPELLED_DIGITS:
            return self.digits(str(number))
        words = _spell(number, self.num2words_code, "cardinal")
        return self.inflect(words, number, gender, noun)

    def inflect(self, words: str, number: int, gender: Gender, noun: bool) -> str:
        """Agreement of a cardinal with its noun (the base form is masculine, standalone)."""
        return words

    def ordinal(self, number: int, gender: Gender = Gender.MASCULINE) -> str:
        return _spell(number, self.num2words_code, "ordinal")

    def ordinal_with_suffix(self, number: int, suffix: str) -> str:
        """An ordinal as written with ``suffix`` (one of ``ordinal_suffixes``)."""
        return self.ordinal(number, self.ordinal_suffixes.get(suffix, Gender.MASCULINE))

    def noun_gender(self, word: str) -> tuple[Gender, bool]:
        """Whether ``word`` after a number is a noun the number agrees with, and its gender
        (a guess from its ending where the language has a rule for it)."""
        return Gender.MASCULINE, False

    def year(self, number: int) -> str:
        return _spell(number, self.num2words_code, "year")

    def digits(self, text: str) -> str:
        return " ".join(self.digit_words[int(d)] for d in text if d.isdigit())

    def fraction(self, digits: str) -> str:
        if 0 < len(digits) <= self.spell_fraction_up_to and not digits.startswith("0"):
            return self.cardinal(int(digits))
        return self.digits(digits)

    def number(
        self,
        integer: str,
        fraction: str | None,
        *,
        negative: bool = False,
        gender: Gender = Gender.MASCULINE,
        noun: bool = False,
    ) -> str:
        """A written number (integer digits, fraction digits) in words."""
        if len(integer) > 1 and integer.startswith("0") and fraction is None:
            spoken = self.digits(integer)  # "007", a code
        elif fraction is None:
            spoken = self.cardinal(int(integer), gender, noun)
        else:
            spoken = f"{self.cardinal(int(integer), gender)} {self.decimal_word} "
            spoken += self.fraction(fraction)
        return f"{self.minus} {spoken}" if negative else spoken

    def counted(self, integer: str, fraction: str | None, noun: Noun, negative: bool) -> str:
        """A quantity and its noun: "one kilometer", "two point five kilometers"."""
        value = Decimal(f"{integer}.{fraction or 0}")
        singular = value == 1 or (self.singular_below_two and value < 2)
        words = self.number(integer, fraction, negative=negative, gender=noun.gender, noun=True)
        return f"{words} {noun.singular if singular else noun.plural}"

    # --- money ---------------------------------------------------------------------------

    def money(
        self, integer: str, fraction: str | None, currency: Currency, scale: str | None
    ) -> str:
        if scale is not None:
            scale_noun = next(
                noun for word, noun in self.scale_words.items() if word.lower() == scale.lower()
            )
            amount = self.counted(integer, fraction, scale_noun, negative=False)
            return self.join_scale(amount, currency.main.plural)
        cents = int(fraction) if fraction and len(fraction) == 2 else None
        if fraction and cents is None:  # "$1.5": a decimal amount
            return self.counted(integer, fraction, currency.main, negative=False)
        whole = int(integer)
        parts = []
        if whole or not cents or currency.cents is None:
            parts.append(self.counted(str(whole), None, currency.main, negative=False))
        if cents and currency.cents is not None:
            parts.append(self.counted(str(cents), None, currency.cents, negative=False))
        return f" {self.cents_joiner} ".join(parts)

    def join_scale(self, amount: str, currency: str) -> str:
        joiner = f" {self.scale_joiner} " if self.scale_joiner else " "
        return f"{amount}{joiner}{currency}"

    # --- time and dates ------------------------------------------------------------------

    def meridiem(self, written: str) -> str:
        """The meridiem, "am" or "pm", of a written marker ("p.m.", "PM", "午後")."""
        return "pm" if written.lower().startswith("p") or written == "午後" else "am"

    @abstractmethod
    def time(self, hour: int, minute: int, meridiem: str | None) -> str:
        """A clock time; ``meridiem`` is "am" or "pm" when written."""

    @abstractmethod
    def date(
        self, day: int, month: int, year: int | None, before: str, *, month_first: bool
    ) -> str:
        """A date; ``before`` is the word before it (articles and prepositions decide case
        endings in German); ``month_first`` when written so ("December 1")."""

    def continuations(self) -> list[str]:
        """Regexes of tokens that end with a dot but not a sentence, beyond abbreviations
        (German "4." before "Mai")."""
        return []

    def extra_rules(self) -> list[Rule]:
        """Rules of this language only, tried after the shared rules for dates, times, phone
        numbers, money, quantities and ordinals, and before the rest."""
        return []

    def roman(self, number: int, reading: RomanReading) -> str:
        if reading.ordinal and number <= reading.ordinal_up_to:
            return self.ordinal(number, reading.gender)
        return self.cardinal(number, reading.gender)

    def regnal_number(self, number: int) -> str:
        return self.roman(number, self.regnal)

    # --- phone numbers, addresses ----------------------------------------------------------

    def phone(self, written: str) -> str:
        """Digit by digit, in the groups written (long groups in threes), "+" spoken."""
        groups: list[str] = []
        for run in _DIGIT_RUN.findall(written):
            while len(run) > PHONE_GROUP_MAX_DIGITS:
                groups.append(run[:PHONE_LONG_GROUP_SPLIT])
                run = run[PHONE_LONG_GROUP_SPLIT:]
            groups.append(run)
        spoken = ", ".join(self.digits(group) for group in groups)
        return f"{self.plus} {spoken}" if written.lstrip().startswith("+") else spoken

    def address(self, written: str) -> str:
        """A URL or e-mail address: words as they are, marks named, digits one by one."""
        marks = {
            ".": self.dot,
            "@": self.at,
            "/": self.slash,
            "-": self.dash,
            "_": self.underscore,
            ":": self.colon,
        }
        words: list[str] = []
        for token in re.findall(r"[^\W\d_]+|\d|[./@_:-]", written):
            if token in marks:
                words.append(marks[token])
            elif token.isdigit():
                words.append(self.digit_words[int(token)])
            else:
                words.append(token)
        return " ".join(words)

"""German: 1.234,50 €, 15:30 Uhr, am 1. Dezember (ordinal endings after articles and
prepositions), Ludwig XIV. (der Vierzehnte), z. B."""

from __future__ import annotations

import re

from .language import (
    Abbreviation,
    Context,
    Currency,
    Gender,
    Language,
    Noun,
    NumberFormat,
    RomanReading,
)
from .rewriter import Rule
from .rules import NOT_AFTER_WORD, ROMAN, next_word, previous_words

_MONTHS = (
    "Januar Februar März April Mai Juni Juli August September Oktober November Dezember"
).split()
_F = Gender.FEMININE
_N = Gender.NEUTER

_UNITS = {
    "km/h": Noun("Kilometer pro Stunde", "Kilometer pro Stunde"),
    "km²": Noun("Quadratkilometer", "Quadratkilometer"),
    "m²": Noun("Quadratmeter", "Quadratmeter"),
    "m³": Noun("Kubikmeter", "Kubikmeter"),
    "km": Noun("Kilometer", "Kilometer"),
    "cm": Noun("Zentimeter", "Zentimeter"),
    "mm": Noun("Millimeter", "Millimeter"),
    "m": Noun("Meter", "Meter"),
    "kg": Noun("Kilogramm", "Kilogramm", _N),
    "mg": Noun("Milligramm", "Milligramm", _N),
    "g": Noun("Gramm", "Gramm", _N),
    "ml": Noun("Milliliter", "Milliliter"),
    "l": Noun("Liter", "Liter"),
    "°C": Noun("Grad Celsius", "Grad Celsius"),
    "ºC": Noun("Grad Celsius", "Grad Celsius"),
    "℃": Noun("Grad Celsius", "Grad Celsius"),
    "°F": Noun("Grad Fahrenheit", "Grad Fahrenheit"),
    "°": Noun("Grad", "Grad"),
    "kWh": Noun("Kilowattstunde", "Kilowattstunden", _F),
    "kW": Noun("Kilowatt", "Kilowatt", _N),
    "GB": Noun("Gigabyte", "Gigabyte", _N),
    "MB": Noun("Megabyte", "Megabyte", _N),
    "Min.": Noun("Minute", "Minuten", _F),
    "min": Noun("Minute", "Minuten", _F),
    "Std.": Noun("Stunde", "Stunden", _F),
}

_ABBREVIATIONS = (
    Abbreviation(("Hr.",), "Herr", Context.BEFORE_NAME),
    Abbreviation(("Hrn.",), "Herrn", Context.BEFORE_NAME),
    Abbreviation(("Fr.",), "Frau", Context.BEFORE_NAME),
    Abbreviation(("Dr.",), "Doktor", Context.BEFORE_NAME),
    Abbreviation(("Prof.",), "Professor", Context.BEFORE_NAME),
    Abbreviation(("St.",), "Sankt", Context.BEFORE_NAME),
    Abbreviation(("Str.",), "Straße"),
    Abbreviation(("z. B.", "z.B."), "zum Beispiel"),
    Abbreviation(("d. h.", "d.h."), "das heißt"),
    Abbreviation(("u. a.", "u.a."), "unter anderem"),
    Abbreviation(("z. T.", "z.T."), "zum Teil"),
    Abbreviation(("usw.",), "und so weiter"),
    Abbreviation(("bzw.",), "beziehungsweise"),
    Abbreviation(("ca.",), "circa"),
    Abbreviation(("evtl.",), "eventuell"),
    Abbreviation(("inkl.",), "inklusive"),
    Abbreviation(("ggf.",), "gegebenenfalls"),
    Abbreviation(("vgl.",), "vergleiche"),
    Abbreviation(("Nr.",), "Nummer", Context.BEFORE_NUMBER),
    Abbreviation(("S.",), "Seite", Context.BEFORE_NUMBER),
    Abbreviation(("Tel.",), "Telefon"),
    Abbreviation(("Mio.",), "Millionen", Context.AFTER_NUMBER),
    Abbreviation(("Mrd.",), "Milliarden", Context.AFTER_NUMBER),
)

_REGNAL_NAMES = frozenset(
    """ludwig karl friedrich wilhelm heinrich otto maximilian franz leopold joseph josef
    elisabeth johannes benedikt pius leo gregor innozenz klemens paul""".split()
) | {"johannes paul"}
_CARDINAL = RomanReading(ordinal=False)
# the ordinal's ending after these words: "am ersten", "der erste", no article "erster"
_WEAK_ENDING_N = frozenset(
    "am im zum vom beim dem den des einem einen eines seit bis ab zur ihrem seinem".split()
)
_WEAK_ENDING_E = frozenset("der die das".split())
_FEMININE_ENDINGS = ("e", "ung", "heit", "keit", "schaft", "ion", "tät", "ik", "ei")
_NEUTER_NOUNS = frozenset("Jahr Jahre Mal Kind Kinder Haus Stück Prozent Kilo".split())
_MASCULINE_NOUNS = frozenset("Name Käse Junge Kunde Euro Tag Monat".split())
_FEMININE_NOUNS = frozenset("Person Frau Nacht Stadt Zeit Welt Hand Tür Uhr Mark".split())


def _street(match: re.Match[str]) -> str:
    return "straße"  # "Hauptstr. 5": a street's name ends in it


class German(Language):
    def inflect(self, words: str, number: int, gender: Gender, noun: bool) -> str:
        if number == 1 and noun:
            return "eine" if gender is _F else "ein"
        return words

    def noun_gender(self, word: str) -> tuple[Gender, bool]:
        if not word[:1].isupper():  # German nouns are capitalised
            return Gender.MASCULINE, False
        if word in _NEUTER_NOUNS:
            return _N, True
        if word in _FEMININE_NOUNS:
            return _F, True
        if word not in _MASCULINE_NOUNS and word.lower().endswith(_FEMININE_ENDINGS):
            return _F, True
        return Gender.MASCULINE, True

    def ordinal_inflected(self, number: int, before: str, strong_ending: str = "r") -> str:
        """The ordinal "erste" after der/die/das, "ersten" after am/im/zum..., else the strong
        form ("erster")."""
        base = self.ordinal(number)  # "erste"
        if before in _WEAK_ENDING_N:
            return base + "n"
        if before in _WEAK_ENDING_E:
            return base
        return base + strong_ending

    def regnal_number(self, number: int) -> str:
        return f"der {self.ordinal(number).capitalize()}"

    def time(self, hour: int, minute: int, meridiem: str | None) -> str:
        if meridiem == "pm" and hour < 12:
            hour += 12
        spoken = f"{'ein' if hour == 1 else self.cardinal(hour)} Uhr"
        return f"{spoken} {self.cardinal(minute)}" if minute else spoken

    def date(
        self, day: int, month: int, year: int | None, before: str, *, month_first: bool
    ) -> str:
        spoken = f"{self.ordinal_inflected(day, before)} {_MONTHS[month - 1]}"
        return f"{spoken} {self.year(year)}" if year is not None else spoken

    def continuations(self) -> list[str]:
        return [r"\d{1,3}\.", rf"{ROMAN}\.", r"\w+str\."]

    def extra_rules(self) -> list[Rule]:
        return [
            Rule("street", re.compile(r"(?<=[a-zäöüß])str\.(?=\s\S)"), _street),
            Rule(
                "ordinal",
                re.compile(rf"{NOT_AFTER_WORD}(?<![.,\d])(?P<int>\d{{1,3}})\.(?=\s\S)"),
                self._ordinal,
            ),
        ]

    def _ordinal(self, match: re.Match[str]) -> str | None:
        """An ordinal ("der 3. Platz", "zum 2. Mal"; not "Ich habe 4. Dann ..."): before a
        lower-case word, or after an article or preposition."""
        before = previous_words(match.string, match.start())
        after = next_word(match.string, match.end())
        if not after:
            return None
        if after[0].islower() or before in _WEAK_ENDING_N | _WEAK_ENDING_E:
            gender, _ = self.noun_gender(after)
            strong = {Gender.MASCULINE: "r", _F: "", _N: "s"}[gender]
            return self.ordinal_inflected(int(match.group("int")), before, strong)
        return None


def german(locale: str) -> German:
    return German(
        locale=locale,
        num2words_code="de",
        number_format=NumberFormat(",", (".",)),
        minus="minus",
        plus="plus",
        decimal_word="Komma",
        percent="Prozent",
        at="ät",
        dot="Punkt",
        slash="Schrägstrich",
        dash="Bindestrich",
        underscore="Unterstrich",
        colon="Doppelpunkt",
        digit_words=tuple("null eins zwei drei vier fünf sechs sieben acht neun".split()),
        months=_MONTHS,
        month_abbreviations={"jänner": 1},
        currencies={
            "EUR": Currency(Noun("Euro", "Euro"), Noun("Cent", "Cent")),
            "USD": Currency(Noun("Dollar", "Dollar"), Noun("Cent", "Cent")),
            "GBP": Currency(Noun("Pfund", "Pfund", _N), Noun("Penny", "Pence")),
            "JPY": Currency(Noun("Yen", "Yen")),
            "CHF": Currency(Noun("Franken", "Franken"), Noun("Rappen", "Rappen")),
        },
        currency_symbols={
            "€": "EUR",
            "EUR": "EUR",
            "$": "USD",
            "US$": "USD",
            "USD": "USD",
            "£": "GBP",
            "GBP": "GBP",
            "¥": "JPY",
            "JPY": "JPY",
            "CHF": "CHF",
        },
        cents_joiner="und",
        scale_words={
            "Million": Noun("Million", "Millionen", _F),
            "Millionen": Noun("Million", "Millionen", _F),
            "Milliarde": Noun("Milliarde", "Milliarden", _F),
            "Milliarden": Noun("Milliarde", "Milliarden", _F),
        },
        units=_UNITS,
        abbreviations=_ABBREVIATIONS,
        regnal_names=_REGNAL_NAMES,
        roman_dot=True,
        nouns_capitalised=True,
        roman_after=dict.fromkeys("kapitel teil band akt szene buch".split(), _CARDINAL),
        year_words=frozenset("im jahr jahre seit von bis anno um".split()),
        month_date_patterns=(r"(?P<day>\d{1,2})\. ?{MONTH}(?: (?P<year>\d{4}))?(?!\d)",),
        time_patterns=(
            r"(?P<h>[01]?\d|2[0-4])[:.](?P<m>[0-5]\d) Uhr\b",
            r"(?P<h>[01]?\d|2[0-4]) Uhr\b",
            r"(?P<h>[01]?\d|2[0-4]):(?P<m>[0-5]\d)(?![\d:])",
        ),
    )

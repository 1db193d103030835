"""English: US conventions (month/day/year, no "and" in numbers); en-GB reads dates day first."""

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
from .rules import NOT_AFTER_WORD

_MONTHS = (
    "January February March April May June July August September October November December"
).split()
_MONTH_ABBREVIATIONS = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "sept": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
}

_CURRENCIES = {
    "USD": Currency(Noun("dollar", "dollars"), Noun("cent", "cents")),
    "EUR": Currency(Noun("euro", "euros"), Noun("cent", "cents")),
    "GBP": Currency(Noun("pound", "pounds"), Noun("penny", "pence")),
    "JPY": Currency(Noun("yen", "yen")),
    "MXN": Currency(Noun("peso", "pesos"), Noun("centavo", "centavos")),
    "BRL": Currency(Noun("real", "reais"), Noun("centavo", "centavos")),
}
_SYMBOLS = {
    "$": "USD",
    "US$": "USD",
    "USD": "USD",
    "€": "EUR",
    "EUR": "EUR",
    "£": "GBP",
    "GBP": "GBP",
    "¥": "JPY",
    "￥": "JPY",
    "JPY": "JPY",
    "MX$": "MXN",
    "MXN": "MXN",
    "R$": "BRL",
    "BRL": "BRL",
}

_UNITS = {
    "km/h": Noun("kilometer per hour", "kilometers per hour"),
    "mph": Noun("mile per hour", "miles per hour"),
    "km²": Noun("square kilometer", "square kilometers"),
    "m²": Noun("square meter", "square meters"),
    "m³": Noun("cubic meter", "cubic meters"),
    "km": Noun("kilometer", "kilometers"),
    "cm": Noun("centimeter", "centimeters"),
    "mm": Noun("millimeter", "millimeters"),
    "m": Noun("meter", "meters"),
    "mi": Noun("mile", "miles"),
    "kg": Noun("kilogram", "kilograms"),
    "mg": Noun("milligram", "milligrams"),
    "g": Noun("gram", "grams"),
    "lb": Noun("pound", "pounds"),
    "lbs": Noun("pound", "pounds"),
    "ml": Noun("milliliter", "milliliters"),
    "l": Noun("liter", "liters"),
    "°C": Noun("degree Celsius", "degrees Celsius"),
    "ºC": Noun("degree Celsius", "degrees Celsius"),
    "℃": Noun("degree Celsius", "degrees Celsius"),
    "°F": Noun("degree Fahrenheit", "degrees Fahrenheit"),
    "℉": Noun("degree Fahrenheit", "degrees Fahrenheit"),
    "°": Noun("degree", "degrees"),
    "kWh": Noun("kilowatt hour", "kilowatt hours"),
    "kW": Noun("kilowatt", "kilowatts"),
    "GB": Noun("gigabyte", "gigabytes"),
    "MB": Noun("megabyte", "megabytes"),
    "TB": Noun("terabyte", "terabytes"),
    "min": Noun("minute", "minutes"),
}

_ABBREVIATIONS = (
    Abbreviation(("Mr.", "Mr"), "Mister", Context.BEFORE_NAME),
    Abbreviation(("Mrs.", "Mrs"), "Missus", Context.BEFORE_NAME),
    Abbreviation(("Ms.", "Ms"), "Miz", Context.BEFORE_NAME),
    Abbreviation(("Dr.", "Dr"), "Doctor", Context.BEFORE_NAME),
    Abbreviation(("Prof.",), "Professor", Context.BEFORE_NAME),
    Abbreviation(("St.",), "Saint", Context.BEFORE_NAME),
    Abbreviation(("Mt.",), "Mount", Context.BEFORE_NAME),
    Abbreviation(("St.",), "Street", Context.AFTER_NAME),
    Abbreviation(("Ave.",), "Avenue", Context.AFTER_NAME),
    Abbreviation(("Jr.", "Jr"), "Junior", Context.AFTER_NAME),
    Abbreviation(("Sr.", "Sr"), "Senior", Context.AFTER_NAME),
    Abbreviation(("etc.",), "et cetera"),
    Abbreviation(("e.g.",), "for example"),
    Abbreviation(("i.e.",), "that is"),
    Abbreviation(("vs.",), "versus"),
    Abbreviation(("approx.",), "approximately"),
    Abbreviation(("No.",), "number", Context.BEFORE_NUMBER),
    Abbreviation(("p.",), "page", Context.BEFORE_NUMBER),
)

_REGNAL_NAMES = frozenset(
    """Louis Henry Charles George Edward William Elizabeth James Richard John Pius Leo Benedict
    Gregory Innocent Clement Alexander Peter Catherine Frederick Philip Ferdinand Alfonso
    Napoleon Victor Paul Urban Boniface Sixtus Nicholas Constantine Ivan Gustav""".lower().split()
) | {"john paul", "juan carlos"}
_CARDINAL = RomanReading(ordinal=False)
_ROMAN_AFTER = dict.fromkeys(
    """chapter part volume book act scene war phase type class level grade stage section
    article appendix title bowl""".split(),
    _CARDINAL,
)
_YEAR_WORDS = frozenset(
    "in since from of by until till year circa around before after during early late".split()
)
_DIGITS = tuple("zero one two three four five six seven eight nine".split())


class English(Language):
    def cardinal(self, number: int, gender: Gender = Gender.MASCULINE, noun: bool = False) -> str:
        words = super().cardinal(number, gender, noun)
        return words if self.british else words.replace(" and ", " ")

    def ordinal(self, number: int, gender: Gender = Gender.MASCULINE) -> str:
        words = super().ordinal(number, gender)
        return words if self.british else words.replace(" and ", " ")

    def year(self, number: int) -> str:
        words = super().year(number)
        return words if self.british else words.replace(" and ", " ")

    @property
    def british(self) -> bool:
        return self.day_first

    def extra_rules(self) -> list[Rule]:
        return [Rule("decade", re.compile(rf"{NOT_AFTER_WORD}(?:1[1-9]|20)\d0s\b"), self._decade)]

    def _decade(self, match: re.Match[str]) -> str:
        """ "the 1990s": nineteen nineties, "the 2000s": two thousands."""
        words = self.year(int(match.group()[:-1]))
        return words[:-1] + "ies" if words.endswith("y") else words + "s"

    def regnal_number(self, number: int) -> str:
        return f"the {self.ordinal(number)}"

    def continuations(self) -> list[str]:
        return [r"[aApP]\.", r"[aApP]\.\s?[mM]\."]  # "3 p. m. del", "at 3 p.m. on"

    def time(self, hour: int, minute: int, meridiem: str | None) -> str:
        suffix = f" {meridiem.upper()}" if meridiem else ""
        if minute == 0:
            if meridiem:
                return f"{self.cardinal(hour)}{suffix}"
            if hour <= 12:
                return f"{self.cardinal(hour)} o'clock"
            return f"{self.cardinal(hour)} hundred"
        minutes = self.cardinal(minute) if minute >= 10 else f"oh {self.cardinal(minute)}"
        return f"{self.cardinal(hour)} {minutes}{suffix}"

    def date(
        self, day: int, month: int, year: int | None, before: str, *, month_first: bool
    ) -> str:
        name = _MONTHS[month - 1]
        if month_first:
            spoken = f"{name} {self.ordinal(day)}"
        else:  # "the first of December", unless the text says "the" already
            spoken = f"{'' if before == 'the' else 'the '}{self.ordinal(day)} of {name}"
        return f"{spoken} {self.year(year)}" if year is not None else spoken


def english(locale: str) -> English:
    british = locale.lower().replace("_", "-") in {"en-gb", "en-ie", "en-au", "en-nz", "en-in"}
    return English(
        locale=locale,
        num2words_code="en",
        number_format=NumberFormat(".", (",",)),
        day_first=british,
        digit_words=_DIGITS,
        months=_MONTHS,
        month_abbreviations=_MONTH_ABBREVIATIONS,
        currencies=_CURRENCIES,
        currency_symbols=_SYMBOLS,
        cents_joiner="and",
        scale_words={w: Noun(w, w) for w in ("thousand", "million", "billion", "trillion")},
        units=_UNITS,
        abbreviations=_ABBREVIATIONS,
        regnal_names=_REGNAL_NAMES,
        regnal=RomanReading(ordinal=True),
        roman_after=_ROMAN_AFTER,
        ordinal_suffixes=dict.fromkeys(("st", "nd", "rd", "th"), Gender.MASCULINE),
        year_words=_YEAR_WORDS,
        month_date_patterns=(
            r"{MONTH} (?P<day>\d{1,2})(?:st|nd|rd|th)?(?:,? (?P<year>\d{4}))?(?!\d)",
            r"(?P<day>\d{1,2})(?:st|nd|rd|th)? (?:of )?{MONTH}(?:,? (?P<year>\d{4}))?(?!\d)",
        ),
        time_patterns=(
            r"(?P<h>[01]?\d|2[0-4]):(?P<m>[0-5]\d)(?![\d:])"
            r"(?:\s?(?P<mer>[AaPp]\.?\s?[Mm]\.?(?![\w.])|[AaPp]\.[Mm]\.))?",
            r"(?P<h>1[0-2]|0?[1-9])\s?(?P<mer>[AaPp]\.?[Mm]\b\.?)",
        ),
    )

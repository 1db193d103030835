"""French: 1 234,50 €, 15h30, le 1er décembre, Louis XIV (quatorze), XXIe siècle."""

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

_MONTHS = (
    "janvier février mars avril mai juin juillet août septembre octobre novembre décembre"
).split()
_F = Gender.FEMININE
_M = Gender.MASCULINE

_UNITS = {
    "km/h": Noun("kilomètre heure", "kilomètres heure"),
    "km²": Noun("kilomètre carré", "kilomètres carrés"),
    "m²": Noun("mètre carré", "mètres carrés"),
    "m³": Noun("mètre cube", "mètres cubes"),
    "km": Noun("kilomètre", "kilomètres"),
    "cm": Noun("centimètre", "centimètres"),
    "mm": Noun("millimètre", "millimètres"),
    "m": Noun("mètre", "mètres"),
    "kg": Noun("kilo", "kilos"),
    "mg": Noun("milligramme", "milligrammes"),
    "g": Noun("gramme", "grammes"),
    "ml": Noun("millilitre", "millilitres"),
    "l": Noun("litre", "litres"),
    "°C": Noun("degré Celsius", "degrés Celsius"),
    "ºC": Noun("degré Celsius", "degrés Celsius"),
    "℃": Noun("degré Celsius", "degrés Celsius"),
    "°F": Noun("degré Fahrenheit", "degrés Fahrenheit"),
    "°": Noun("degré", "degrés"),
    "kWh": Noun("kilowattheure", "kilowattheures"),
    "kW": Noun("kilowatt", "kilowatts"),
    "Go": Noun("gigaoctet", "gigaoctets"),
    "Mo": Noun("mégaoctet", "mégaoctets"),
    "min": Noun("minute", "minutes", _F),
}

_ABBREVIATIONS = (
    Abbreviation(("M.",), "monsieur", Context.BEFORE_NAME),
    Abbreviation(("MM.",), "messieurs", Context.BEFORE_NAME),
    Abbreviation(("Mme",), "madame", Context.BEFORE_NAME),
    Abbreviation(("Mmes",), "mesdames", Context.BEFORE_NAME),
    Abbreviation(("Mlle",), "mademoiselle", Context.BEFORE_NAME),
    Abbreviation(("Dr",), "docteur", Context.BEFORE_NAME),
    Abbreviation(("Pr",), "professeur", Context.BEFORE_NAME),
    Abbreviation(("etc.",), "et cetera"),
    Abbreviation(("p. ex.",), "par exemple"),
    Abbreviation(("c.-à-d.", "c-à-d"), "c'est-à-dire"),
    Abbreviation(("av. J.-C.",), "avant Jésus-Christ"),
    Abbreviation(("apr. J.-C.",), "après Jésus-Christ"),
    Abbreviation(("env.",), "environ"),
    Abbreviation(("n°", "nº", "No"), "numéro", Context.BEFORE_NUMBER),
    Abbreviation(("tél.",), "téléphone", Context.BEFORE_NUMBER),
    Abbreviation(("p.",), "page", Context.BEFORE_NUMBER),
)

_REGNAL_NAMES = frozenset(
    """louis henri françois charles philippe napoléon jean benoît pie léon élisabeth édouard
    guillaume jacques grégoire innocent clément paul jean-paul""".split()
)
_CARDINAL = RomanReading(ordinal=False)
_FEMININE_NOUNS = frozenset(
    """personne personnes heure heures fois minute minutes seconde secondes semaine semaines
    année années journée journées livre livres tonne tonnes page pages place places chambre
    chambres voiture voitures étoile étoiles nuit nuits femme femmes fille filles chose choses
    question questions ville villes rue rues""".split()
)
_NOT_NOUNS = frozenset("de du des et ou à au aux en pour sur dans par avec".split())


class French(Language):
    def inflect(self, words: str, number: int, gender: Gender, noun: bool) -> str:
        if gender is Gender.FEMININE:
            return re.sub(r"\bun$", "une", words)
        return words

    def noun_gender(self, word: str) -> tuple[Gender, bool]:
        lower = word.lower()
        if lower in _NOT_NOUNS:
            return _M, False
        return (_F if lower in _FEMININE_NOUNS else _M), True

    def ordinal(self, number: int, gender: Gender = Gender.MASCULINE) -> str:
        words = super().ordinal(number)
        return "première" if gender is _F and words == "premier" else words

    def ordinal_with_suffix(self, number: int, suffix: str) -> str:
        if number == 2 and suffix.startswith("nd"):
            return "seconde" if suffix == "nde" else "second"
        return super().ordinal_with_suffix(number, suffix)

    def join_scale(self, amount: str, currency: str) -> str:
        joiner = "d'" if currency[:1].lower() in "aeiouéèh" else "de "
        return f"{amount} {joiner}{currency}"

    def time(self, hour: int, minute: int, meridiem: str | None) -> str:
        if meridiem == "pm" and hour < 12:
            hour += 12
        spoken = f"{self.cardinal(hour, _F)} {'heure' if hour <= 1 else 'heures'}"
        return f"{spoken} {self.cardinal(minute)}" if minute else spoken

    def date(
        self, day: int, month: int, year: int | None, before: str, *, month_first: bool
    ) -> str:
        spoken = f"{'premier' if day == 1 else self.cardinal(day)} {_MONTHS[month - 1]}"
        return f"{spoken} {self.cardinal(year)}" if year is not None else spoken


def french(locale: str) -> French:
    cent = Noun("centime", "centimes")
    return French(
        locale=locale,
        num2words_code="fr",
        number_format=NumberFormat(",", (" ", ".")),
        minus="moins",
        plus="plus",
        decimal_word="virgule",
        percent="pour cent",
        at="arobase",
        dot="point",
        slash="slash",
        dash="tiret",
        underscore="tiret bas",
        colon="deux-points",
        digit_words=tuple("zéro un deux trois quatre cinq six sept huit neuf".split()),
        months=_MONTHS,
        currencies={
            "EUR": Currency(Noun("euro", "euros"), cent),
            "USD": Currency(Noun("dollar", "dollars"), Noun("cent", "cents")),
            "GBP": Currency(Noun("livre sterling", "livres sterling", _F), Noun("penny", "pence")),
            "JPY": Currency(Noun("yen", "yens")),
            "CHF": Currency(Noun("franc suisse", "francs suisses"), cent),
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
        cents_joiner="et",
        scale_words={
            "million": Noun("million", "millions"),
            "millions": Noun("million", "millions"),
            "milliard": Noun("milliard", "milliards"),
            "milliards": Noun("milliard", "milliards"),
        },
        units=_UNITS,
        abbreviations=_ABBREVIATIONS,
        regnal_names=_REGNAL_NAMES,
        regnal=RomanReading(ordinal=True, ordinal_up_to=1),  # François Ier, Louis XIV
        roman_after=dict.fromkeys("chapitre tome acte scène partie livre".split(), _CARDINAL),
        roman_before={"siècle": RomanReading(ordinal=True)},
        ordinal_suffixes={
            "er": _M,
            "re": _F,
            "ère": _F,
            "e": _M,
            "ème": _M,
            "è": _M,
            "ᵉ": _M,
            "nd": _M,
            "nde": _F,
        },
        roman_suffixes={"er": "er", "re": "re", "e": "e", "ème": "e", "ᵉ": "e"},
        spell_fraction_up_to=2,
        singular_below_two=True,
        month_date_patterns=(r"(?P<day>\d{1,2})(?:er|ᵉʳ)? {MONTH}(?: (?P<year>\d{4}))?(?!\d)",),
        time_patterns=(
            r"(?P<h>[01]?\d|2[0-4]) ?[hH:] ?(?P<m>[0-5]\d)(?![\d:])",
            r"(?P<h>[01]?\d|2[0-4]) ?h(?![\w])",
        ),
    )

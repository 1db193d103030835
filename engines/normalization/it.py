"""Italian: 1.234,50 €, alle 15:30, il 1º dicembre (primo), Luigi XIV (quattordicesimo)."""

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
    "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre"
).split()
_F = Gender.FEMININE
_M = Gender.MASCULINE

_UNITS = {
    "km/h": Noun("chilometro orario", "chilometri orari"),
    "km²": Noun("chilometro quadrato", "chilometri quadrati"),
    "m²": Noun("metro quadrato", "metri quadrati"),
    "m³": Noun("metro cubo", "metri cubi"),
    "km": Noun("chilometro", "chilometri"),
    "cm": Noun("centimetro", "centimetri"),
    "mm": Noun("millimetro", "millimetri"),
    "m": Noun("metro", "metri"),
    "kg": Noun("chilo", "chili"),
    "mg": Noun("milligrammo", "milligrammi"),
    "g": Noun("grammo", "grammi"),
    "ml": Noun("millilitro", "millilitri"),
    "l": Noun("litro", "litri"),
    "°C": Noun("grado centigrado", "gradi centigradi"),
    "ºC": Noun("grado centigrado", "gradi centigradi"),
    "℃": Noun("grado centigrado", "gradi centigradi"),
    "°F": Noun("grado Fahrenheit", "gradi Fahrenheit"),
    "°": Noun("grado", "gradi"),
    "kWh": Noun("chilowattora", "chilowattora"),
    "kW": Noun("chilowatt", "chilowatt"),
    "GB": Noun("gigabyte", "gigabyte"),
    "MB": Noun("megabyte", "megabyte"),
    "min": Noun("minuto", "minuti"),
}

_ABBREVIATIONS = (
    Abbreviation(("Sig.", "Sig"), "signor", Context.BEFORE_NAME),
    Abbreviation(("Sig.ra", "Sig.ra."), "signora", Context.BEFORE_NAME),
    Abbreviation(("Sig.na", "Sig.na."), "signorina", Context.BEFORE_NAME),
    Abbreviation(("Sigg.",), "signori", Context.BEFORE_NAME),
    Abbreviation(("Dott.",), "dottor", Context.BEFORE_NAME),
    Abbreviation(("Dott.ssa",), "dottoressa", Context.BEFORE_NAME),
    Abbreviation(("Prof.",), "professor", Context.BEFORE_NAME),
    Abbreviation(("Prof.ssa",), "professoressa", Context.BEFORE_NAME),
    Abbreviation(("Ing.",), "ingegner", Context.BEFORE_NAME),
    Abbreviation(("Avv.",), "avvocato", Context.BEFORE_NAME),
    Abbreviation(("ecc.",), "eccetera"),
    Abbreviation(("ad es.", "per es."), "per esempio"),
    Abbreviation(("n.", "nr.", "N."), "numero", Context.BEFORE_NUMBER),
    Abbreviation(("pag.", "p."), "pagina", Context.BEFORE_NUMBER),
    Abbreviation(("tel.",), "telefono"),
)

_REGNAL_NAMES = frozenset(
    """luigi enrico carlo filippo napoleone vittorio emanuele umberto ferdinando francesco
    giovanni paolo benedetto pio leone gregorio innocenzo clemente elisabetta federico
    alessandro""".split()
) | {"vittorio emanuele", "giovanni paolo"}
_ORDINAL = RomanReading(ordinal=True)
_FEMININE_ENDINGS = ("a", "e", "ione", "ioni", "tà")
_MASCULINE_NOUNS = frozenset(
    """problema problemi sistema sistemi programma programmi tema temi giorno giorni anno
    anni mese mesi euro dollari milione milioni mille paese paesi nome nomi mare fiore
    cane""".split()
)
_NOT_NOUNS = frozenset("di del della e o a al alla in con per su da tra fra che".split())


class Italian(Language):
    def inflect(self, words: str, number: int, gender: Gender, noun: bool) -> str:
        if gender is _F and words.endswith("uno"):
            return words[:-1] + "a"  # una, ventuna
        if noun and words == "uno":
            return "un"
        return words

    def noun_gender(self, word: str) -> tuple[Gender, bool]:
        lower = word.lower()
        if lower in _NOT_NOUNS:
            return _M, False
        if lower not in _MASCULINE_NOUNS and lower.endswith(_FEMININE_ENDINGS):
            return _F, True
        return _M, True

    def ordinal(self, number: int, gender: Gender = Gender.MASCULINE) -> str:
        words = super().ordinal(number)
        return re.sub(r"o$", "a", words) if gender is _F else words

    def join_scale(self, amount: str, currency: str) -> str:
        return f"{amount} di {currency}"

    def time(self, hour: int, minute: int, meridiem: str | None) -> str:
        if meridiem == "pm" and hour < 12:
            hour += 12
        spoken = self.cardinal(hour, _F)  # l'una
        return f"{spoken} e {self.cardinal(minute)}" if minute else spoken

    def date(
        self, day: int, month: int, year: int | None, before: str, *, month_first: bool
    ) -> str:
        spoken = f"{'primo' if day == 1 else self.cardinal(day)} {_MONTHS[month - 1]}"
        return f"{spoken} {self.cardinal(year)}" if year is not None else spoken


def italian(locale: str) -> Italian:
    cent = Noun("centesimo", "centesimi")
    return Italian(
        locale=locale,
        num2words_code="it",
        number_format=NumberFormat(",", (".",)),
        minus="meno",
        plus="più",
        decimal_word="virgola",
        percent="per cento",
        at="chiocciola",
        dot="punto",
        slash="barra",
        dash="trattino",
        underscore="trattino basso",
        colon="due punti",
        digit_words=tuple("zero uno due tre quattro cinque sei sette otto nove".split()),
        months=_MONTHS,
        currencies={
            "EUR": Currency(Noun("euro", "euro"), cent),
            "USD": Currency(Noun("dollaro", "dollari"), cent),
            "GBP": Currency(Noun("sterlina", "sterline", _F), Noun("penny", "pence")),
            "JPY": Currency(Noun("yen", "yen")),
            "CHF": Currency(Noun("franco svizzero", "franchi svizzeri"), cent),
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
        cents_joiner="e",
        scale_words={
            "milione": Noun("milione", "milioni"),
            "milioni": Noun("milione", "milioni"),
            "miliardo": Noun("miliardo", "miliardi"),
            "miliardi": Noun("miliardo", "miliardi"),
        },
        units=_UNITS,
        abbreviations=_ABBREVIATIONS,
        regnal_names=_REGNAL_NAMES,
        regnal=_ORDINAL,
        roman_after=dict.fromkeys("capitolo atto scena parte libro volume".split(), _ORDINAL),
        roman_before={
            "secolo": _ORDINAL,
            "guerra": RomanReading(ordinal=True, gender=_F),
        },
        ordinal_suffixes={"º": _M, "ª": _F},  # "1°" is as often degrees
        spell_fraction_up_to=2,
        month_date_patterns=(r"(?P<day>\d{1,2})(?:º|°)? {MONTH}(?: (?P<year>\d{4}))?(?!\d)",),
        time_patterns=(r"(?P<h>[01]?\d|2[0-4]):(?P<m>[0-5]\d)(?![\d:])",),
    )

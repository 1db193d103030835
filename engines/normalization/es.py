"""Spanish: Spain (es-ES: 1.234,50 €, "uno de diciembre") and Latin America (es-MX, es-419:
$1,234.50 in pesos, "primero de diciembre")."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre"
).split()
_F = Gender.FEMININE

_UNITS = {
    "km/h": Noun("kilómetro por hora", "kilómetros por hora"),
    "km²": Noun("kilómetro cuadrado", "kilómetros cuadrados"),
    "m²": Noun("metro cuadrado", "metros cuadrados"),
    "m³": Noun("metro cúbico", "metros cúbicos"),
    "km": Noun("kilómetro", "kilómetros"),
    "cm": Noun("centímetro", "centímetros"),
    "mm": Noun("milímetro", "milímetros"),
    "m": Noun("metro", "metros"),
    "kg": Noun("kilo", "kilos"),
    "mg": Noun("miligramo", "miligramos"),
    "g": Noun("gramo", "gramos"),
    "ml": Noun("mililitro", "mililitros"),
    "l": Noun("litro", "litros"),
    "°C": Noun("grado centígrado", "grados centígrados"),
    "ºC": Noun("grado centígrado", "grados centígrados"),
    "℃": Noun("grado centígrado", "grados centígrados"),
    "°F": Noun("grado Fahrenheit", "grados Fahrenheit"),
    "°": Noun("grado", "grados"),
    "kWh": Noun("kilovatio hora", "kilovatios hora"),
    "kW": Noun("kilovatio", "kilovatios"),
    "GB": Noun("gigabyte", "gigabytes"),
    "MB": Noun("megabyte", "megabytes"),
    "min": Noun("minuto", "minutos"),
}

_ABBREVIATIONS = (
    Abbreviation(("Sr.",), "señor", Context.BEFORE_NAME),
    Abbreviation(("Sra.",), "señora", Context.BEFORE_NAME),
    Abbreviation(("Srta.",), "señorita", Context.BEFORE_NAME),
    Abbreviation(("Dr.",), "doctor", Context.BEFORE_NAME),
    Abbreviation(("Dra.",), "doctora", Context.BEFORE_NAME),
    Abbreviation(("Lic.",), "licenciado", Context.BEFORE_NAME),
    Abbreviation(("Ing.",), "ingeniero", Context.BEFORE_NAME),
    Abbreviation(("Av.", "Avda."), "avenida", Context.BEFORE_NAME),
    Abbreviation(("Ud.", "Vd."), "usted"),
    Abbreviation(("Uds.", "Vds."), "ustedes"),
    Abbreviation(("etc.",), "etcétera"),
    Abbreviation(("p. ej.",), "por ejemplo"),
    Abbreviation(("EE. UU.", "EE.UU."), "Estados Unidos"),
    Abbreviation(("aprox.",), "aproximadamente"),
    Abbreviation(("núm.", "No.", "nº", "n.º"), "número", Context.BEFORE_NUMBER),
    Abbreviation(("pág.",), "página", Context.BEFORE_NUMBER),
    Abbreviation(("tel.",), "teléfono", Context.BEFORE_NUMBER),
)

_REGNAL_NAMES = frozenset(
    """felipe carlos alfonso fernando isabel luis enrique benedicto pío león pedro jaime
    sancho ramiro francisco gregorio inocencio clemente juan pablo""".split()
) | {"juan carlos", "juan pablo"}
_CARDINAL = RomanReading(ordinal=False)
_FEMININE_ENDINGS = ("a", "as", "ión", "iones", "dad", "dades", "tud", "tudes")
_MASCULINE_NOUNS = frozenset(
    """día días mapa mapas problema problemas sistema sistemas programa programas tema temas
    idioma idiomas clima planeta planetas""".split()
)
_FEMININE_NOUNS = frozenset("vez veces noche noches clase clases calle calles gente".split())
_NOT_NOUNS = frozenset("de del y o a al en con por para que e u más menos entre sobre como".split())
_LAST_MILLION = re.compile(r".*\b(?:millón|millones|billón|billones)\b")
_HUNDREDS = re.compile(r"(\w+)ientos\b")


@dataclass
class Spanish(Language):
    latin_american: bool = False
    """es-MX, es-419...: "primero de diciembre" (Spain: "uno de diciembre")."""

    def inflect(self, words: str, number: int, gender: Gender, noun: bool) -> str:
        # num2words writes "veintiuno mil": before mil, millón, millones a one is short
        words = re.sub(r"\bveintiuno (?=mil|millón|millones)", "veintiún ", words)
        words = re.sub(r"\buno (?=mil|millón|millones)", "un ", words)
        if gender is Gender.FEMININE:
            # agreement stops at a million: "doscientas mil libras", "dos millones de libras"
            head = _LAST_MILLION.match(words)
            split = head.end() if head else 0
            tail = re.sub(r"uno\b", "una", words[split:])
            tail = re.sub(r"ún\b", "una", tail)
            return words[:split] + _HUNDREDS.sub(r"\1ientas", tail)
        if noun:
            words = re.sub(r"\bveintiuno$", "veintiún", words)
            return re.sub(r"\buno$", "un", words)
        return words

    def noun_gender(self, word: str) -> tuple[Gender, bool]:
        lower = word.lower()
        if lower in _NOT_NOUNS:
            return Gender.MASCULINE, False
        if lower in _FEMININE_NOUNS:
            return Gender.FEMININE, True
        if lower not in _MASCULINE_NOUNS and lower.endswith(_FEMININE_ENDINGS):
            return Gender.FEMININE, True
        return Gender.MASCULINE, True

    def ordinal(self, number: int, gender: Gender = Gender.MASCULINE) -> str:
        words = super().ordinal(number)
        if gender is Gender.FEMININE:
            words = re.sub(r"o\b", "a", words)
        return words

    def ordinal_with_suffix(self, number: int, suffix: str) -> str:
        words = super().ordinal_with_suffix(number, suffix)
        if suffix.endswith("er"):  # "1.er piso": primer, tercer
            words = re.sub(r"(primer|tercer)o$", r"\1", words)
        return words

    def continuations(self) -> list[str]:
        return [r"[aApP]\.", r"[aApP]\.\s?[mM]\."]  # "3 p. m. del", "at 3 p.m. on"

    def time(self, hour: int, minute: int, meridiem: str | None) -> str:
        spoken = self.cardinal(hour, Gender.FEMININE)  # la una, las veintiuna (horas)
        if minute:
            spoken += f" y {self.cardinal(minute)}"
        elif meridiem is None:
            spoken += " horas" if hour > 12 else " en punto"
        if meridiem == "am":
            spoken += " de la mañana"
        elif meridiem == "pm":
            spoken += " de la tarde" if hour < 8 or hour == 12 else " de la noche"
        return spoken

    def date(
        self, day: int, month: int, year: int | None, before: str, *, month_first: bool
    ) -> str:
        first = day == 1 and self.latin_american
        spoken = f"{'primero' if first else self.cardinal(day)} de {_MONTHS[month - 1]}"
        return f"{spoken} de {self.cardinal(year)}" if year is not None else spoken


def spanish(locale: str) -> Spanish:
    latin_american = locale.lower() not in {"es", "es-es"}
    symbols = {
        "US$": "USD",
        "USD": "USD",
        "€": "EUR",
        "EUR": "EUR",
        "£": "GBP",
        "GBP": "GBP",
        "¥": "JPY",
        "JPY": "JPY",
        "MX$": "MXN",
        "MXN": "MXN",
        "$": "MXN" if latin_american else "USD",
    }
    cents = Noun("centavo", "centavos")
    return Spanish(
        locale=locale,
        latin_american=latin_american,
        num2words_code="es",
        number_format=NumberFormat(".", (",",)) if latin_american else NumberFormat(",", (".",)),
        minus="menos",
        plus="más",
        decimal_word="punto" if latin_american else "coma",
        percent="por ciento",
        at="arroba",
        dot="punto",
        slash="barra",
        dash="guion",
        underscore="guion bajo",
        colon="dos puntos",
        digit_words=tuple("cero uno dos tres cuatro cinco seis siete ocho nueve".split()),
        months=_MONTHS,
        month_abbreviations={"setiembre": 9},
        currencies={
            "USD": Currency(Noun("dólar", "dólares"), cents),
            "EUR": Currency(Noun("euro", "euros"), Noun("céntimo", "céntimos")),
            "GBP": Currency(Noun("libra", "libras", _F), Noun("penique", "peniques")),
            "JPY": Currency(Noun("yen", "yenes")),
            "MXN": Currency(Noun("peso", "pesos"), cents),
        },
        currency_symbols=symbols,
        cents_joiner="con",
        scale_words={
            "millón": Noun("millón", "millones"),
            "millones": Noun("millón", "millones"),
        },
        scale_joiner="de",
        units=_UNITS,
        abbreviations=_ABBREVIATIONS,
        regnal_names=_REGNAL_NAMES,
        regnal=RomanReading(ordinal=True, ordinal_up_to=10),
        roman_after=dict.fromkeys("siglo capítulo tomo volumen acto parte".split(), _CARDINAL),
        roman_before={"guerra": RomanReading(ordinal=True, gender=_F)},
        ordinal_suffixes={
            "º": Gender.MASCULINE,
            ".º": Gender.MASCULINE,
            "ª": _F,
            ".ª": _F,
            "er": Gender.MASCULINE,
            ".er": Gender.MASCULINE,
        },
        spell_fraction_up_to=2,
        month_date_patterns=(
            r"(?P<day>\d{1,2})(?:\.?º)? de {MONTH}(?: de(?:l)? (?P<year>\d{4}))?(?!\d)",
        ),
        time_patterns=(
            r"(?P<h>[01]?\d|2[0-4]):(?P<m>[0-5]\d)(?![\d:])(?:\s?(?:h|hrs|horas)\b)?"
            r"(?:\s?(?P<mer>[ap]\.\s?m\.|[AaPp][Mm]\b))?",
        ),
    )

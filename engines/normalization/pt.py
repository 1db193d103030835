"""Portuguese: Brazil (pt-BR, the default: R$ 1.234,50, quilômetro) and Portugal (pt-PT:
quilómetro, cêntimo). Hours and pounds are feminine: "duas horas", "duzentas libras"."""

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
    "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro"
).split()
_F = Gender.FEMININE
_M = Gender.MASCULINE


def _units(o: str) -> dict[str, Noun]:
    """``o`` is the stressed o of quilômetro (Brazil) / quilómetro (Portugal)."""
    return {
        "km/h": Noun(f"quil{o}metro por hora", f"quil{o}metros por hora"),
        "km²": Noun(f"quil{o}metro quadrado", f"quil{o}metros quadrados"),
        "m²": Noun("metro quadrado", "metros quadrados"),
        "m³": Noun("metro cúbico", "metros cúbicos"),
        "km": Noun(f"quil{o}metro", f"quil{o}metros"),
        "cm": Noun("centímetro", "centímetros"),
        "mm": Noun("milímetro", "milímetros"),
        "m": Noun("metro", "metros"),
        "kg": Noun("quilo", "quilos"),
        "mg": Noun("miligrama", "miligramas"),
        "g": Noun("grama", "gramas"),
        "ml": Noun("mililitro", "mililitros"),
        "l": Noun("litro", "litros"),
        "°C": Noun("grau Celsius", "graus Celsius"),
        "ºC": Noun("grau Celsius", "graus Celsius"),
        "℃": Noun("grau Celsius", "graus Celsius"),
        "°F": Noun("grau Fahrenheit", "graus Fahrenheit"),
        "°": Noun("grau", "graus"),
        "kWh": Noun("quilowatt-hora", "quilowatts-hora"),
        "kW": Noun("quilowatt", "quilowatts"),
        "GB": Noun("gigabyte", "gigabytes"),
        "MB": Noun("megabyte", "megabytes"),
        "min": Noun("minuto", "minutos"),
    }


_ABBREVIATIONS = (
    Abbreviation(("Sr.",), "senhor", Context.BEFORE_NAME),
    Abbreviation(("Sra.",), "senhora", Context.BEFORE_NAME),
    Abbreviation(("Srta.",), "senhorita", Context.BEFORE_NAME),
    Abbreviation(("Dr.",), "doutor", Context.BEFORE_NAME),
    Abbreviation(("Dra.",), "doutora", Context.BEFORE_NAME),
    Abbreviation(("Prof.",), "professor", Context.BEFORE_NAME),
    Abbreviation(("Profa.",), "professora", Context.BEFORE_NAME),
    Abbreviation(("Av.",), "avenida", Context.BEFORE_NAME),
    Abbreviation(("V. Exa.",), "Vossa Excelência"),
    Abbreviation(("etc.",), "etcétera"),
    Abbreviation(("p. ex.",), "por exemplo"),
    Abbreviation(("nº", "n.º", "No."), "número", Context.BEFORE_NUMBER),
    Abbreviation(("pág.",), "página", Context.BEFORE_NUMBER),
    Abbreviation(("tel.",), "telefone"),
)

_REGNAL_NAMES = frozenset(
    """pedro joão manuel josé luís afonso sebastião carlos henrique filipe maria isabel bento
    pio leão""".split()
) | {"joão paulo"}
_FEMININE_ENDINGS = ("a", "as", "ção", "ções", "dade", "dades", "gem", "gens")
_MASCULINE_NOUNS = frozenset(
    """dia dias mapa mapas problema problemas sistema sistemas programa programas tema temas
    idioma idiomas clima planeta planetas""".split()
)
_FEMININE_NOUNS = frozenset("vez vezes noite noites mulher mulheres".split())
_NOT_NOUNS = frozenset(
    "de do da dos das e ou a o em no na com por para que mais menos entre".split()
)
# agreement stops at a million: "duzentas mil libras" but "dois milhões de libras"
_LAST_MILLION = re.compile(r".*\b(?:milhão|milhões|bilhão|bilhões)\b")
_FEMININE_WORDS = (
    (re.compile(r"\bum\b"), "uma"),
    (re.compile(r"\bdois\b"), "duas"),
    (re.compile(r"(\w+)entos\b"), r"\1entas"),
)


class Portuguese(Language):
    def inflect(self, words: str, number: int, gender: Gender, noun: bool) -> str:
        if gender is not _F:
            return words
        head = _LAST_MILLION.match(words)
        split = head.end() if head else 0
        tail = words[split:]
        for pattern, replacement in _FEMININE_WORDS:
            tail = pattern.sub(replacement, tail)
        return words[:split] + tail

    def noun_gender(self, word: str) -> tuple[Gender, bool]:
        lower = word.lower()
        if lower in _NOT_NOUNS:
            return _M, False
        if lower in _FEMININE_NOUNS:
            return _F, True
        if lower not in _MASCULINE_NOUNS and lower.endswith(_FEMININE_ENDINGS):
            return _F, True
        return _M, True

    def ordinal(self, number: int, gender: Gender = Gender.MASCULINE) -> str:
        words = super().ordinal(number)
        return re.sub(r"o\b", "a", words) if gender is _F else words

    def time(self, hour: int, minute: int, meridiem: str | None) -> str:
        if meridiem == "pm" and hour < 12:
            hour += 12
        spoken = self.cardinal(hour, _F, noun=True)  # uma hora, duas horas
        if minute:
            return f"{spoken} e {self.cardinal(minute)}"
        return f"{spoken} {'hora' if hour == 1 else 'horas'}"

    def date(
        self, day: int, month: int, year: int | None, before: str, *, month_first: bool
    ) -> str:
        spoken = f"{'primeiro' if day == 1 else self.cardinal(day)} de {_MONTHS[month - 1]}"
        return f"{spoken} de {self.cardinal(year)}" if year is not None else spoken


def portuguese(locale: str) -> Portuguese:
    european = locale.lower() == "pt-pt"
    cents = Noun("cêntimo", "cêntimos") if european else Noun("centavo", "centavos")
    return Portuguese(
        locale=locale,
        num2words_code="pt" if european else "pt_BR",
        number_format=NumberFormat(",", (".",)),
        minus="menos",
        plus="mais",
        decimal_word="vírgula",
        percent="por cento",
        at="arroba",
        dot="ponto",
        slash="barra",
        dash="hífen",
        underscore="sublinhado",
        colon="dois-pontos",
        digit_words=tuple("zero um dois três quatro cinco seis sete oito nove".split()),
        months=_MONTHS,
        currencies={
            "BRL": Currency(Noun("real", "reais"), Noun("centavo", "centavos")),
            "EUR": Currency(Noun("euro", "euros"), cents),
            "USD": Currency(Noun("dólar", "dólares"), Noun("centavo", "centavos")),
            "GBP": Currency(Noun("libra", "libras", _F), Noun("pêni", "pence")),
            "JPY": Currency(Noun("iene", "ienes")),
        },
        currency_symbols={
            "R$": "BRL",
            "BRL": "BRL",
            "€": "EUR",
            "EUR": "EUR",
            "$": "USD",
            "US$": "USD",
            "USD": "USD",
            "£": "GBP",
            "GBP": "GBP",
            "¥": "JPY",
            "JPY": "JPY",
        },
        cents_joiner="e",
        scale_words={
            "milhão": Noun("milhão", "milhões"),
            "milhões": Noun("milhão", "milhões"),
            "bilhão": Noun("bilhão", "bilhões"),
            "bilhões": Noun("bilhão", "bilhões"),
        },
        scale_joiner="de",
        units=_units("ó" if european else "ô"),
        abbreviations=_ABBREVIATIONS,
        regnal_names=_REGNAL_NAMES,
        regnal=RomanReading(ordinal=True, ordinal_up_to=10),
        roman_after={
            "século": RomanReading(ordinal=True, ordinal_up_to=10),
            **{w: RomanReading(ordinal=False) for w in "capítulo tomo volume ato parte".split()},
        },
        roman_before={"guerra": RomanReading(ordinal=True, gender=_F)},
        ordinal_suffixes={"º": _M, ".º": _M, "ª": _F, ".ª": _F},
        spell_fraction_up_to=2,
        month_date_patterns=(
            r"(?P<day>\d{1,2})(?:\.?º)? de {MONTH}(?: de (?P<year>\d{4}))?(?!\d)",
        ),
        time_patterns=(
            r"(?P<h>[01]?\d|2[0-4]) ?[hH:] ?(?P<m>[0-5]\d)(?![\d:])(?:min\b)?",
            r"(?P<h>[01]?\d|2[0-4]) ?h(?![\w])",
        ),
    )

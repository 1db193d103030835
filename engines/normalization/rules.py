"""The rules every language shares, built from its tables (``language.Language``).

Priority, highest first: addresses (URL, e-mail), dates, times, phone numbers, money,
percentages, units, ordinals, Roman numerals, abbreviations, plain numbers. A language module
may add rules of its own (``Language.extra_rules``), placed before the Roman numerals.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from .language import Abbreviation, Context, Gender, Language, NumberFormat
from .rewriter import Rule

_CJK_RANGES = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
WORD_CHAR = rf"[^\W{_CJK_RANGES}]"
"""A letter, digit or underscore that is not CJK: what a token may not touch."""
NOT_AFTER_WORD = rf"(?<!{WORD_CHAR})"
NOT_BEFORE_WORD = rf"(?!{WORD_CHAR})"
SIGN = rf"(?:(?<!{WORD_CHAR})(?<![.,])(?P<sign>[-−]))?"
"""A minus sign at the start of a token ("-5", "(−5)", "気温は−5度"), not a hyphen ("COVID-19")."""
_NUMBER_END = rf"(?!{WORD_CHAR}|[.,]\d)"
ROMAN = r"M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})"
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
_PREVIOUS_WORDS = re.compile(r"([^\W\d_][\w'’-]*)\W*$")
LOOK_BACK_CHARS = 80
"""How far back context is looked for (a few words): keeps each look linear in its match."""
_NEXT_WORD = re.compile(r"\s*([^\W\d_][\w'’-]*)")

URL = rf"(?:https?://|www\.)[^\s{_CJK_RANGES}]*[^\s{_CJK_RANGES}.,;:!?)\]'\"”’]"
_ADDRESS_CHAR = rf"(?:{WORD_CHAR}|-)"
EMAIL = (
    rf"(?<!{WORD_CHAR})(?<![.+-])(?:{WORD_CHAR}|[.+-])+@{_ADDRESS_CHAR}+"
    rf"(?:\.{_ADDRESS_CHAR}+)+"
)
BARE_DOMAIN = (
    r"(?<![\w.@/-])(?:[a-z0-9-]+\.)+(?:com|org|net|edu|gov|io|dev|ai|app|info|co|uk|us|de|"
    rf"fr|es|it|pt|br|mx|jp|eu)(?:/[^\s{_CJK_RANGES}]*[^\s{_CJK_RANGES}.,;:!?)\]'\"”’])?"
    rf"(?!{WORD_CHAR}|[@-]|\.\w)"
)


def number_pattern(fmt: NumberFormat, prefix: str = "") -> str:
    """An unsigned written number: groups ``{prefix}int`` and ``{prefix}frac``; the decimal
    mark is ``{prefix}mark`` (either mark is accepted; see ``split_number``)."""
    groups = "|".join(re.escape(g) for g in fmt.groups)
    return (
        rf"(?P<{prefix}int>\d{{1,3}}(?:(?:{groups})\d{{3}})+|\d+)"
        rf"(?:(?P<{prefix}mark>[.,])(?P<{prefix}frac>\d+))?"
    )


def split_number(
    fmt: NumberFormat, integer: str, mark: str | None, fraction: str | None
) -> tuple[str, str | None] | None:
    """(integer digits, fraction digits) of a matched number, or None where the mark is this
    locale's thousands separator and so no decimal mark ("3,5" in English is a list)."""
    digits = re.sub(r"\D", "", integer)
    if mark is None:
        return digits, None
    if mark != fmt.decimal and mark in fmt.groups:
        return None
    return digits, fraction


def previous_words(text: str, start: int, count: int = 1) -> str:
    """The ``count`` words before ``start`` (lower-cased, single spaces), "" at the start."""
    words: list[str] = []
    end = start
    for _ in range(count):
        match = _PREVIOUS_WORDS.search(text, max(0, end - LOOK_BACK_CHARS), end)
        if match is None:
            break
        words.insert(0, match.group(1))
        end = match.start()
    return " ".join(words).lower()


def next_word(text: str, end: int) -> str:
    """The word right after ``end`` (after spaces only), as written; "" if none."""
    match = _NEXT_WORD.match(text, end)
    return match.group(1) if match else ""


def roman_value(numeral: str) -> int:
    total = 0
    for index, char in enumerate(numeral):
        value = _ROMAN_VALUES[char]
        following = _ROMAN_VALUES[numeral[index + 1]] if index + 1 < len(numeral) else 0
        total += -value if value < following else value
    return total


def _alternation(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


def ends_sentence(match: re.Match[str], language: Language) -> bool:
    """Whether the dot that ends ``match`` also ends a sentence: the text ends there or goes
    on with a capital ("... etc. Then", "at 3 p.m. The"; in German, where nouns have
    capitals, only at the end). The spoken form keeps that dot."""
    if not match.group().endswith("."):
        return False
    following = match.string[match.end() : match.end() + 2]
    if not following.strip():
        return True
    return not language.nouns_capitalised and bool(re.match(r"\s+[A-ZÀ-Þ]", following))


DIGIT = re.compile(r"\d")
_STARTS_WITH_NUMBER = r"(?=[-−]?\d)"  # fails fast where no number starts


def _rule(
    name: str,
    pattern: str,
    speak: Callable[[re.Match[str]], str | None],
    gate: re.Pattern[str] | None = DIGIT,
) -> Rule:
    return Rule(name, re.compile(pattern), speak, gate)


def address_rules(language: Language) -> list[Rule]:
    def url(match: re.Match[str]) -> str:
        written = re.sub(r"^(?:https?://)?(?:www\.)?", "", match.group())
        return language.address(written.split("?")[0].split("#")[0].rstrip("/"))

    def email(match: re.Match[str]) -> str:
        return language.address(match.group())

    return [
        _rule("url", URL, url, re.compile(r"https?://|www\.")),
        _rule("email", EMAIL, email, re.compile("@")),
        _rule("domain", BARE_DOMAIN, url, re.compile(r"\w\.[a-z]{2,4}\b")),
    ]


def date_rules(language: Language) -> list[Rule]:
    def iso(match: re.Match[str]) -> str | None:
        year, month, day = (int(match.group(k)) for k in ("year", "month", "day"))
        return _date(language, match, day, month, year, month_first=not language.day_first)

    def numeric(match: re.Match[str]) -> str | None:
        first, second, year = (int(match.group(k)) for k in ("first", "second", "year"))
        day, month = (first, second) if language.day_first else (second, first)
        return _date(language, match, day, month, year, month_first=not language.day_first)

    month_names = {name.lower(): i + 1 for i, name in enumerate(language.months)}
    month_names.update(language.month_abbreviations)

    def words(match: re.Match[str]) -> str | None:
        month = month_names[match.group("month").lower().rstrip(".")]
        year = match.group("year")
        month_first = match.start("month") < match.start("day")
        return _date(
            language,
            match,
            int(match.group("day")),
            month,
            int(year) if year else None,
            month_first=month_first,
        )

    rules = [
        _rule(
            "iso_date",
            rf"(?=\d){NOT_AFTER_WORD}(?<![-/.])(?P<year>\d{{4}})-(?P<month>\d{{2}})-(?P<day>\d{{2}})"
            rf"(?![-/.]?\d){NOT_BEFORE_WORD}",
            iso,
        ),
        _rule(
            "numeric_date",
            rf"(?=\d){NOT_AFTER_WORD}(?<![-/.])(?P<first>\d{{1,2}})(?P<sep>[./-])(?P<second>\d{{1,2}})"
            rf"(?P=sep)(?P<year>\d{{4}})(?![-/.]?\d){NOT_BEFORE_WORD}",
            numeric,
        ),
    ]
    if language.months:
        abbreviated = [f"{a}." for a in language.month_abbreviations if len(a) <= 4]
        month = "(?i:" + _alternation([*month_names, *abbreviated]) + ")"
        for template in language.month_date_patterns:
            pattern = template.replace("{MONTH}", rf"(?P<month>{month})")
            rules.append(_rule("date", rf"{NOT_AFTER_WORD}{pattern}{NOT_BEFORE_WORD}", words))
    return rules


def _date(
    language: Language,
    match: re.Match[str],
    day: int,
    month: int,
    year: int | None,
    *,
    month_first: bool,
) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    before = previous_words(match.string, match.start())
    return language.date(day, month, year, before, month_first=month_first)


def time_rules(language: Language) -> list[Rule]:
    def speak(match: re.Match[str]) -> str | None:
        groups = match.groupdict()
        hour = int(groups["h"])
        minute = int(groups.get("m") or 0)
        meridiem = groups.get("mer")
        if meridiem is not None:
            meridiem = language.meridiem(meridiem)
            if not 1 <= hour <= 12:
                return None
        if hour > 24 or minute > 59:
            return None
        spoken = language.time(hour, minute, meridiem)
        return spoken + "." if ends_sentence(match, language) else spoken

    return [
        _rule("time", rf"{NOT_AFTER_WORD}(?<![\d:.,]){pattern}", speak)
        for pattern in language.time_patterns
    ]


_PHONE = (
    rf"(?=[+(]?\d){NOT_AFTER_WORD}(?<![+.,/-])(?:\+\d{{1,3}}[ .-]?)?(?:\(\d{{1,5}}\)[ .-]?)?"
    rf"\d{{1,8}}(?:[ .-]\d{{1,8}}){{0,5}}(?!{WORD_CHAR}|/|[.,-]\d)"
)
PHONE_DIGITS = (7, 15)


def looks_like_phone(written: str, fmt: NumberFormat) -> bool:
    """International (+), an area code in parentheses, hyphenated groups (555-123-4567,
    03-1234-5678), space or dot groups after a leading 0 (06 12 34 56 78), or three space
    groups where a space does not group thousands (612 345 678 in Spain)."""
    digits = re.sub(r"\D", "", written)
    if not PHONE_DIGITS[0] <= len(digits) <= PHONE_DIGITS[1]:
        return False
    groups = re.findall(r"\d+", written)
    if written.startswith(("+", "(")) or "(" in written:
        return True
    separators = set(re.findall(r"[ .-]", written))
    if separators == {"-"}:
        if len(groups) == 2:
            return len(groups[0]) == 3 and len(groups[1]) == 4  # 555-1234
        return len(groups) >= 3 and all(len(g) <= 4 for g in groups)
    if separators and groups[0].startswith("0") and len(groups[0]) >= 2:
        return True
    return separators == {" "} and " " not in fmt.groups and len(groups) >= 3


def phone_rules(language: Language) -> list[Rule]:
    def speak(match: re.Match[str]) -> str | None:
        written = match.group()
        if not looks_like_phone(written, language.number_format):
            return None
        return language.phone(written)

    return [_rule("phone", _PHONE, speak)]


def money_rules(language: Language) -> list[Rule]:
    if not language.currency_symbols:
        return []
    fmt = language.number_format
    symbols = _alternation(language.currency_symbols)
    scales = _alternation(language.scale_words) if language.scale_words else None
    scale = rf"(?:\s(?P<scale>(?i:{scales})))?" if scales else ""

    def speak(match: re.Match[str]) -> str | None:
        parts = split_number(fmt, match.group("int"), match.group("mark"), match.group("frac"))
        if parts is None:
            return None
        currency = language.currencies[language.currency_symbols[match.group("sym")]]
        scale_word = match.groupdict().get("scale")
        spoken = language.money(parts[0], parts[1], currency, scale_word)
        return f"{language.minus} {spoken}" if match.groupdict().get("sign") else spoken

    sign = SIGN
    number = number_pattern(fmt)
    return [
        _rule(
            "money",
            rf"(?=[-−]?(?:{symbols})){sign}{NOT_AFTER_WORD}(?P<sym>{symbols})\s?{number}{scale}"
            rf"{_NUMBER_END}",
            speak,
        ),
        _rule(
            "money",
            rf"{_STARTS_WITH_NUMBER}{sign}{NOT_AFTER_WORD}(?<![.,]){number}{scale}\s?"
            rf"(?P<sym>{symbols})"
            rf"{NOT_BEFORE_WORD}",
            speak,
        ),
    ]


def quantity_rules(language: Language) -> list[Rule]:
    """Percentages and units after a number."""
    fmt = language.number_format
    sign = SIGN
    number = rf"{_STARTS_WITH_NUMBER}{sign}{NOT_AFTER_WORD}(?<![.,]){number_pattern(fmt)}"

    def percent(match: re.Match[str]) -> str | None:
        parts = split_number(fmt, match.group("int"), match.group("mark"), match.group("frac"))
        if parts is None:
            return None
        negative = bool(match.group("sign"))
        if not language.spells_numbers and not negative:
            return None  # "50%" is read right as written
        words = language.number(parts[0], parts[1], negative=negative)
        return f"{words}{language.word_joiner}{language.percent}"

    def unit(match: re.Match[str]) -> str | None:
        parts = split_number(fmt, match.group("int"), match.group("mark"), match.group("frac"))
        if parts is None:
            return None
        noun = language.units[match.group("unit")]
        return language.counted(parts[0], parts[1], noun, negative=bool(match.group("sign")))

    rules = [_rule("percent", rf"{number}\s?(?:%|％)", percent)]
    if language.units:
        units = _alternation(language.units)
        rules.append(_rule("unit", rf"{number}\s?(?P<unit>{units})(?!{WORD_CHAR}|[/²³])", unit))
    return rules


def ordinal_rules(language: Language) -> list[Rule]:
    if not language.ordinal_suffixes:
        return []

    def speak(match: re.Match[str]) -> str:
        suffix = match.group("suffix")
        return language.ordinal_with_suffix(int(match.group("int")), suffix)

    suffixes = _alternation(language.ordinal_suffixes)
    return [
        _rule(
            "ordinal",
            rf"(?=\d){NOT_AFTER_WORD}(?<![.,])(?P<int>\d+)(?P<suffix>{suffixes})"
            rf"(?!{WORD_CHAR}|\s?[CF]\b)",
            speak,
        )
    ]


def roman_rules(language: Language) -> list[Rule]:
    """Roman numerals only where they cannot be a word or a pronoun: after a monarch's or
    pope's name (Louis XIV), after a word that takes a number (chapter IX, World War II), or
    before one (XXI secolo); written with a suffix (XIVe), in the languages that have one."""
    suffixes = _alternation(language.roman_suffixes) if language.roman_suffixes else None
    suffix = rf"(?P<suffix>{suffixes})?" if suffixes else ""
    dot = r"(?P<dot>\.(?=\s[^\W\d_A-ZÄÖÜ]))?" if language.roman_dot else ""
    regnal_names = {name.lower() for name in language.regnal_names}

    def speak(match: re.Match[str]) -> str | None:
        numeral = match.group("roman")
        if not numeral:
            return None
        number = roman_value(numeral)
        text = match.string
        written_suffix = match.groupdict().get("suffix")
        if written_suffix:
            # "Le", "Ce", "De", "Me" are words; "Ier", "Ve", "IIe", "XXIe" are ordinals
            if numeral in ("L", "C", "D", "M") or (numeral == "I" and written_suffix == "e"):
                return None
            return language.ordinal_with_suffix(number, language.roman_suffixes[written_suffix])
        before = previous_words(text, match.start(), 1)
        before_two = previous_words(text, match.start(), 2)
        after = next_word(text, match.end()).lower()
        for words in (before_two, before):
            if words in language.roman_after:
                return language.roman(number, language.roman_after[words])
        if after in language.roman_before:
            return language.roman(number, language.roman_before[after])
        if numeral == "I" and not match.groupdict().get("dot"):
            return None  # "Elizabeth I" reads well; "... when I" must stay a pronoun
        if {before, before_two} & regnal_names:
            return language.regnal_number(number)
        return None

    return [
        _rule(
            "roman",
            rf"(?=[MDCLXVI]){NOT_AFTER_WORD}(?P<roman>{ROMAN}){suffix}{dot}{NOT_BEFORE_WORD}",
            speak,
            re.compile("[MDCLXVI]"),
        )
    ]


def _abbreviation_pattern(written: str) -> str:
    parts: list[str] = []
    for index, char in enumerate(written):
        if index == 0 and char.islower():
            parts.append(f"[{char}{char.upper()}]")
        elif char == " ":
            parts.append(r"\s?")
        else:
            parts.append(re.escape(char))
        if char == "." and 0 < index < len(written) - 1 and written[index + 1] != " ":
            parts.append(r"\s?")
    end = "" if written.endswith(".") else r"(?![\w.])"
    return "".join(parts) + end


def abbreviation_rules(language: Language) -> list[Rule]:
    # one alternative per written form; a form with several meanings ("St." before a name is
    # Saint, after one Street) tries each in the table's order
    meanings: dict[str, list[Abbreviation]] = {}
    for entry in language.abbreviations:
        for written in entry.written:
            meanings.setdefault(written, []).append(entry)
    if not meanings:
        return []
    forms = sorted(meanings, key=len, reverse=True)  # "Sra." is tried before "Sr."
    pattern = (
        r"(?<![\w.])(?:"
        + "|".join(f"(?P<a{i}>{_abbreviation_pattern(written)})" for i, written in enumerate(forms))
        + ")"
    )

    def speak(match: re.Match[str]) -> str | None:
        assert match.lastgroup is not None
        for entry in meanings[forms[int(match.lastgroup[1:])]]:
            if _abbreviation_applies(entry.context, match):
                if entry.context is not Context.BEFORE_NAME and ends_sentence(match, language):
                    return entry.spoken + "."
                return entry.spoken
        return None

    return [_rule("abbreviation", pattern, speak, gate=None)]


def _abbreviation_applies(context: Context, match: re.Match[str]) -> bool:
    text = match.string
    following = text[match.end() : match.end() + LOOK_BACK_CHARS]
    preceding = text[max(0, match.start() - LOOK_BACK_CHARS) : match.start()]
    if context is Context.BEFORE_NAME:
        return bool(re.match(r"\s?[A-ZÀ-ÞĀ-Ž]", following))
    if context is Context.BEFORE_NUMBER:
        return bool(re.match(r"\s?\d", following))
    if context is Context.AFTER_NAME:
        return bool(re.search(r"[A-ZÀ-Þ][\w'’-]*,?\s$", preceding))
    if context is Context.AFTER_NUMBER:
        return bool(re.search(r"\d\s?$", preceding))
    return True


def number_rules(language: Language) -> list[Rule]:
    fmt = language.number_format

    def speak(match: re.Match[str]) -> str | None:
        parts = split_number(fmt, match.group("int"), match.group("mark"), match.group("frac"))
        if parts is None:
            return None
        integer, fraction = parts
        negative = bool(match.group("sign"))
        if not language.spells_numbers and not negative:
            return None
        text = match.string
        noun = next_word(text, match.end())
        gender, is_noun = language.noun_gender(noun) if noun else (Gender.MASCULINE, False)
        if (
            fraction is None
            and not negative
            and not is_noun
            and len(integer) == 4
            and match.group("int") == integer
            and previous_words(text, match.start()) in language.year_words
        ):
            return language.year(int(integer))
        return language.number(integer, fraction, negative=negative, gender=gender, noun=is_noun)

    sign = SIGN
    return [
        _rule(
            "number",
            rf"{_STARTS_WITH_NUMBER}{sign}{NOT_AFTER_WORD}(?<![.,]){number_pattern(fmt)}"
            rf"{_NUMBER_END}",
            speak,
        )
    ]


def continuation_token(language: Language) -> str:
    """A token that says more is coming, though it ends with a dot: an abbreviation ("Dr.",
    "i.e.", the "z." of "z. B."), a month's ("Dec."), a German ordinal ("am 4.")."""
    written = [w for a in language.abbreviations for w in a.written]
    # and the start of one written in parts: "z." of "z. B.", "p." of "p. ej."
    written += [w[: i + 1] for w in written for i, c in enumerate(w[:-1]) if c == "."]
    forms = [_abbreviation_pattern(w) for w in written]
    forms += [f"(?i:{re.escape(m)})\\." for m in language.month_abbreviations if len(m) <= 4]
    forms += language.continuations()
    return "|".join(forms) if forms else "(?!)"


def shared_rules(language: Language) -> list[Rule]:
    return [
        *address_rules(language),
        *date_rules(language),
        *time_rules(language),
        *phone_rules(language),
        *money_rules(language),
        *quantity_rules(language),
        *ordinal_rules(language),
        *language.extra_rules(),
        *roman_rules(language),
        *abbreviation_rules(language),
        *number_rules(language),
    ]

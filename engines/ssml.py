"""A subset of SSML, read into segments the synthesizer speaks one after another.

``<speak>`` holds the text. Inside it:

- ``<break time="500ms"/>`` or ``<break strength="strong"/>``: a pause (at most 10 s);
- ``<say-as interpret-as="characters|cardinal|ordinal|date|telephone">``: letters one by one,
  a number, an ordinal, a date, a phone number digit by digit;
- ``<prosody rate="slow|x-fast|80%|1.2">``: speaking rate, multiplied into the request's speed
  (clamped to the service's 0.5-2.0);
- ``<sub alias="...">``: say the alias instead of the text;
- ``<lang xml:lang="fr-FR">``: switch language, and with it the voice, for the text inside (the
  translation use case); ``<p>`` and ``<s>``: paragraph and sentence, read as text.

Anything else, malformed XML, a DTD or an entity declaration is refused with
``InvalidSsmlError`` naming what and where (line and column), never spoken as silence.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, replace

from .errors import RequestError

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
MAX_BREAK_S = 10.0
BREAK_STRENGTHS = {
    "none": 0.0,
    "x-weak": 0.1,
    "weak": 0.25,
    "medium": 0.4,
    "strong": 0.7,
    "x-strong": 1.0,
}
RATES = {"x-slow": 0.6, "slow": 0.8, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.5}
SAY_AS = ("characters", "spell-out", "cardinal", "number", "ordinal", "date", "telephone")
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")
_PERCENT = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*%\s*$")
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")


class InvalidSsmlError(RequestError):
    code = "invalid_ssml"


@dataclass(frozen=True)
class SsmlSegment:
    """Text spoken in one language at one rate, after a pause."""

    text: str
    language: str | None = None
    """None: the request's language (or its voice's)."""
    rate: float = 1.0
    pause_before_s: float = 0.0


def is_ssml(text: str) -> bool:
    return text.lstrip().startswith("<speak")


@dataclass(frozen=True)
class _Context:
    language: str | None = None
    rate: float = 1.0


def parse_ssml(text: str, language: str = "en") -> list[SsmlSegment]:
    """``text`` (a ``<speak>`` document) as segments; see the module doc. ``language``: the
    request's, for what is written per language (ordinals) outside any ``<lang>``."""
    if re.search(r"<!\s*(DOCTYPE|ENTITY)", text, re.IGNORECASE):
        raise InvalidSsmlError("SSML may not declare a DTD or entities")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        line, column = exc.position
        raise InvalidSsmlError(f"invalid SSML at line {line}, column {column + 1}: {exc}") from None
    if _name(root) != "speak":
        raise InvalidSsmlError(f"SSML must start with <speak>, not <{_name(root)}>")
    reader = _Reader(language)
    reader.element(root, _Context(language=root.get(XML_LANG)), "speak")
    return reader.finish()


def _name(element: ElementTree.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]


class _Reader:
    def __init__(self, language: str) -> None:
        self._language = language
        self._segments: list[SsmlSegment] = []
        self._pause = 0.0

    def finish(self) -> list[SsmlSegment]:
        segments = [
            replace(s, text=re.sub(r"\s+", " ", s.text)) for s in self._segments if s.text.strip()
        ]
        if not segments:
            raise InvalidSsmlError("the SSML document has no text to speak")
        return segments

    def text(self, text: str | None, context: _Context) -> None:
        if not text or not text.strip():
            return
        last = self._segments[-1] if self._segments else None
        if (
            last is not None
            and self._pause == 0.0
            and (last.language, last.rate) == (context.language, context.rate)
        ):
            self._segments[-1] = replace(last, text=last.text + text)
            return
        self._segments.append(SsmlSegment(text, context.language, context.rate, self._pause))
        self._pause = 0.0

    def element(self, element: ElementTree.Element, context: _Context, path: str) -> None:
        self.text(element.text, context)
        for index, child in enumerate(element):
            name = _name(child)
            where = f"{path}/{name}[{index + 1}]"
            self.child(child, name, context, where)
            self.text(child.tail, context)

    def child(self, child: ElementTree.Element, name: str, context: _Context, where: str) -> None:
        if name == "break":
            self._pause = min(MAX_BREAK_S, self._pause + _break_seconds(child, where))
        elif name == "say-as":
            self.text(_say_as(child, where, context.language or self._language), context)
        elif name == "sub":
            alias = child.get("alias")
            if alias is None:
                raise InvalidSsmlError(f"<sub> at {where} needs an alias attribute")
            self.text(alias, context)
        elif name == "prosody":
            rate = _rate(child.get("rate"), where)
            self.element(child, replace(context, rate=context.rate * rate), where)
        elif name == "lang":
            language = child.get(XML_LANG) or child.get("lang")
            if not language:
                raise InvalidSsmlError(f"<lang> at {where} needs xml:lang")
            self.element(child, replace(context, language=language), where)
        elif name in ("p", "s"):
            self.element(child, context, where)
            self._pause = max(self._pause, BREAK_STRENGTHS["strong" if name == "p" else "medium"])
        else:
            raise InvalidSsmlError(
                f"<{name}> at {where} is not supported; use speak, break, say-as, prosody, sub, "
                "lang, p or s"
            )


def _break_seconds(element: ElementTree.Element, where: str) -> float:
    time_value = element.get("time")
    if time_value is not None:
        match = _TIME.match(time_value)
        if match is None:
            raise InvalidSsmlError(
                f"<break time={time_value!r}> at {where}: use a duration such as 500ms or 1.5s"
            )
        seconds = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
        return min(seconds, MAX_BREAK_S)
    strength = element.get("strength", "medium")
    if strength not in BREAK_STRENGTHS:
        raise InvalidSsmlError(
            f"<break strength={strength!r}> at {where}: use one of {', '.join(BREAK_STRENGTHS)}"
        )
    return BREAK_STRENGTHS[strength]


def _rate(value: str | None, where: str) -> float:
    if value is None:
        return 1.0
    if value in RATES:
        return RATES[value]
    if (match := _PERCENT.match(value)) is not None:
        number = float(match.group(1))
        # "80%" is 0.8 of the normal rate; "+20%" / "-20%" change it relatively
        return 1.0 + number / 100 if value.strip()[0] in "+-" else number / 100
    if (match := _NUMBER.match(value)) is not None:
        return float(match.group(1))
    raise InvalidSsmlError(
        f"<prosody rate={value!r}> at {where}: use x-slow .. x-fast, a percentage or a number"
    )


def _say_as(element: ElementTree.Element, where: str, language: str) -> str:
    kind = element.get("interpret-as")
    text = "".join(element.itertext()).strip()
    if kind not in SAY_AS:
        raise InvalidSsmlError(
            f"<say-as interpret-as={kind!r}> at {where}: use one of {', '.join(SAY_AS)}"
        )
    if kind in ("characters", "spell-out"):
        return " " + " ".join(char for char in text if not char.isspace()) + " "
    if kind == "telephone":
        return " " + " ".join(char for char in text if char.isdigit() or char == "+") + " "
    if kind in ("cardinal", "number"):
        digits = text.replace(",", "").replace(" ", "")
        if not re.fullmatch(r"[+-]?\d+(\.\d+)?", digits):
            raise InvalidSsmlError(
                f"<say-as interpret-as='{kind}'> at {where}: {text!r} is not a number"
            )
        return f" {digits} "
    if kind == "ordinal":
        digits = text.rstrip(".").replace(",", "")
        if not digits.isdigit():
            raise InvalidSsmlError(
                f"<say-as interpret-as='ordinal'> at {where}: {text!r} is not a number"
            )
        return f" {ordinal(int(digits), language)} "
    return f" {text} "  # date: the text normaliser reads dates in the segment's language


def ordinal(number: int, language: str) -> str:
    """``number`` written as an ordinal the way ``language`` writes it (1st, 1º, 1er, 1., 第1)."""
    primary = language.lower().split("-")[0].split("_")[0]
    if primary == "en":
        teen = 10 <= number % 100 <= 20
        return f"{number}{'th' if teen else {1: 'st', 2: 'nd', 3: 'rd'}.get(number % 10, 'th')}"
    if primary in ("es", "it", "pt"):
        return f"{number}º"
    if primary == "fr":
        return f"{number}{'er' if number == 1 else 'e'}"
    if primary == "de":
        return f"{number}."
    if primary == "ja":
        return f"第{number}"
    return str(number)

"""The SSML subset: what each element becomes, and errors that name what and where."""

from __future__ import annotations

import numpy as np
import pytest

from engines.ssml import InvalidSsmlError, SsmlSegment, is_ssml, ordinal, parse_ssml
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest
from tests.api_fixtures import ApiClient, error_of, receive_json, speak
from tests.transcriber import Transcriber


def test_plain_text_is_not_ssml() -> None:
    assert not is_ssml("Hello <b>there</b>")
    assert is_ssml("  <speak>Hello</speak>")


def test_text_breaks_and_languages_become_segments() -> None:
    segments = parse_ssml(
        '<speak>Good morning. <break time="750ms"/>The next train is '
        '<lang xml:lang="fr-FR">le train de Paris</lang>, on time.</speak>'
    )
    assert segments == [
        SsmlSegment("Good morning. "),
        SsmlSegment("The next train is ", pause_before_s=0.75),
        SsmlSegment("le train de Paris", language="fr-FR"),
        SsmlSegment(", on time."),
    ]


def test_say_as_sub_and_prosody() -> None:
    segments = parse_ssml(
        "<speak>Call <say-as interpret-as='telephone'>+1 (555) 010-2030</say-as>, "
        "code <say-as interpret-as='characters'>AB12</say-as>, "
        "<sub alias='World Wide Web Consortium'>W3C</sub>, the "
        "<say-as interpret-as='ordinal'>3</say-as> floor, "
        "<prosody rate='slow'>slowly <prosody rate='50%'>very slowly</prosody></prosody>.</speak>"
    )
    joined = "".join(s.text for s in segments)
    assert "+ 1 5 5 5 0 1 0 2 0 3" in joined
    assert "A B 1 2" in joined and "World Wide Web Consortium" in joined and "W3C" not in joined
    assert "3rd floor" in joined
    rates = {s.text.strip(): s.rate for s in segments}
    assert rates["slowly"] == pytest.approx(0.8)
    assert rates["very slowly"] == pytest.approx(0.4)


def test_breaks_by_strength_are_capped_and_add_up() -> None:
    segments = parse_ssml(
        '<speak>A<break strength="x-strong"/><break time="20s"/>B<break time="1.5s"/>C</speak>'
    )
    assert [s.pause_before_s for s in segments] == [0.0, 10.0, 1.5]


@pytest.mark.parametrize(
    ("language", "written"),
    [("en", "22nd"), ("es-MX", "22º"), ("fr", "22e"), ("de", "22."), ("ja", "第22")],
)
def test_ordinals_follow_the_language(language: str, written: str) -> None:
    assert ordinal(22, language) == written
    segments = parse_ssml("<speak><say-as interpret-as='ordinal'>22</say-as></speak>", language)
    assert segments[0].text.strip() == written


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ("<speak>Hello <break time='soon'/></speak>", "break time='soon'"),
        ("<speak>Hello <emphasis>you</emphasis></speak>", "<emphasis> at speak/emphasis[1]"),
        ("<speak>Hello <b>unclosed</speak>", "line 1, column"),
        ("<voice>Hi</voice>", "must start with <speak>"),
        ("<speak><say-as interpret-as='cardinal'>ten</say-as></speak>", "is not a number"),
        ("<speak><say-as interpret-as='emoji'>x</say-as></speak>", "interpret-as='emoji'"),
        ("<speak><sub>W3C</sub></speak>", "needs an alias"),
        ("<speak><lang>Bonjour</lang></speak>", "needs xml:lang"),
        ("<speak><prosody rate='warp'>x</prosody></speak>", "prosody rate='warp'"),
        ("<speak>  <break/> </speak>", "no text to speak"),
        (
            '<!DOCTYPE speak [<!ENTITY a "aaaa">]><speak>&a;&a;</speak>',
            "may not declare a DTD",
        ),
    ],
)
def test_invalid_ssml_names_what_and_where(document: str, says: str) -> None:
    with pytest.raises(InvalidSsmlError) as refused:
        parse_ssml(document)
    assert says in refused.value.message, refused.value.message
    assert refused.value.code == "invalid_ssml"


def test_a_multiline_error_gives_its_line() -> None:
    with pytest.raises(InvalidSsmlError, match="line 4, column"):  # where </speak> mismatches
        parse_ssml("<speak>\nHello\n<break time='1s'>\n</speak>")


# --- spoken -----------------------------------------------------------------------------------

ENGLISH_THEN_FRENCH = (
    '<speak>The next train leaves at noon. <break time="800ms"/>'
    '<lang xml:lang="fr">Le prochain train part à midi.</lang></speak>'
)


def longest_silence_s(pcm: np.ndarray, rate: int) -> float:
    quiet = np.abs(pcm.astype(np.int32)) < 200
    longest = run = 0
    for is_quiet in quiet:
        run = run + 1 if is_quiet else 0
        longest = max(longest, run)
    return longest / rate


async def test_a_document_switches_language_and_voice_mid_text(
    synthesizer: SpeechSynthesizer, transcriber: Transcriber
) -> None:
    utterance = synthesizer.synthesize(SynthesisRequest(ENGLISH_THEN_FRENCH, language="en"))
    chunks = [chunk async for chunk in utterance]
    pcm = np.concatenate([chunk.pcm for chunk in chunks])
    assert utterance.result.engines == ["piper", "kokoro"]  # English, then a French voice
    assert longest_silence_s(pcm, 48_000) >= 0.8  # the break, at least
    english = np.concatenate([c.pcm for c in chunks[: len(chunks) // 2]])
    heard = transcriber.transcribe(english, 48_000)
    assert "train" in heard.lower(), heard


async def test_prosody_rate_changes_the_speed(synthesizer: SpeechSynthesizer) -> None:
    durations = {}
    for rate in ("slow", "fast"):
        document = f"<speak><prosody rate='{rate}'>The platform has changed.</prosody></speak>"
        utterance = synthesizer.synthesize(SynthesisRequest(document))
        await utterance.collect()
        durations[rate] = utterance.result.audio_duration_s
    assert durations["slow"] > durations["fast"] * 1.2, durations  # 0.8 against 1.25


async def test_invalid_ssml_is_a_clear_error_on_every_path(api: ApiClient) -> None:
    bad = "<speak>Hello <break time='later'/></speak>"
    reply = await api.post("/synthesize", json={"text": bad})
    error = await error_of(reply, 400)
    assert error["code"] == "invalid_ssml" and "break time='later'" in error["message"]
    reply = await api.post("/v1/audio/speech", json={"input": "<speak>Hi <b>x</speak>"})
    error = await error_of(reply, 400)
    assert error["code"] == "invalid_ssml" and "line 1, column" in error["message"]
    async with api.ws_connect("/ws/synthesize") as ws:
        await ws.send_json({"text": bad, "request_id": "s"})
        message = await receive_json(ws)
        assert (message["code"], message["request_id"], message["is_final"]) == (
            "invalid_ssml",
            "s",
            True,
        )
        spoken = await speak(ws, {"text": "<speak>Fine <break time='200ms'/> now.</speak>"})
        assert spoken.final["type"] == "final" and spoken.pcm().size > 0

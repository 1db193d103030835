"""The control API over HTTP: synthesis, OpenAI speech, voices, health, metrics, errors, limits."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp import WSServerHandshakeError
from prometheus_client.parser import text_string_to_metric_families

from api.enhancement import integrated_loudness, true_peak
from engines.audio import pcm16_to_float
from engines.config import ApiSettings, ServiceConfig
from engines.names import EngineName
from engines.synthesizer import SpeechSynthesizer
from engines.voices import VoiceCatalog
from tests.api_fixtures import (
    ApiClient,
    api_client,
    decode_audio,
    decode_wav,
    error_of,
    eventually,
    metric,
    pcm_of,
    receive_json,
    scrape,
    services_of,
    until_final,
    with_api,
)
from tests.audio_checks import rms
from tests.fakes import FlakyBackend
from tests.transcriber import Transcriber, character_error_rate, word_error_rate

ENGLISH = "Good afternoon. The quarterly report is ready, and the numbers look better than planned."
OPENAI_INPUT = "Streaming speech from a compatible client sounds clear and natural."
JAPANESE = "東京駅から新幹線に乗って、大阪まで行きました。"
LONG_TEXT = " ".join(
    [
        "The library opens at nine in the morning and closes at six in the evening.",
        "Visitors may borrow up to ten books at a time, for three weeks.",
        "The reading room on the second floor is reserved for quiet study.",
        "Children's stories are read aloud every Saturday at eleven o'clock.",
        "Please return borrowed books to the desk by the main entrance.",
    ]
)
VOICE = "en-us-male-premium"
LIVEKIT_RATE_HZ = 48_000
OPENAI_RATE_HZ = 24_000
OPUS_DECODE_RATE_HZ = 48_000
MAX_WER = 0.1
MAX_JAPANESE_CER = 0.2
DURATION_ROUNDING_S = 0.002
"""The API rounds durations to milliseconds."""
CODEC_LENGTH_TOLERANCE_S = {"flac": 0.002, "opus": 0.03, "mp3": 0.08, "wav": 0.002}
"""Lossy codecs add priming and pad their last frame (Opus 20 ms, MP3 three 1152-sample frames)."""
LOUDNESS_TOLERANCE_LU = 1.0
PEAK_CEILING_DBFS = -1.0
PEAK_TOLERANCE_DB = 0.1
FAST_SPEED_MAX_RATIO = 0.85
FAST_SPEED_MIN_RATIO = 0.5
ENGINES_OF_THE_DESIGN = {"piper", "kokoro", "espeak-ng", "speecht5", "xtts", "edge-tts"}
VOICES_IN_LIBRARY = 14
MAX_TEXT_CHARS = 10_000
MAX_BODY_BYTES = ApiSettings().max_body_bytes


async def synthesize(api: ApiClient, body: dict[str, Any], query: str = "") -> dict[str, Any]:
    response = await api.post(f"/synthesize{query}", json=body)
    assert response.status == 200, await response.text()
    reply: dict[str, Any] = await response.json()
    return reply


# --- POST /synthesize -----------------------------------------------------------------------


async def test_synthesize_returns_a_48_khz_mono_wav_that_says_the_text(
    api: ApiClient, transcriber: Transcriber
) -> None:
    response = await api.post("/synthesize", json={"text": ENGLISH, "voice_id": VOICE})
    assert response.status == 200, await response.text()
    assert response.headers["X-Engine"] == "piper"
    assert response.headers["X-Voice-Id"] == VOICE
    reply = await response.json()
    assert reply["format"] == "wav"
    assert reply["engine"] == "piper" and reply["engines"] == ["piper"]
    assert reply["voice_id"] == VOICE and reply["language"] == "en"
    assert reply["ttfa_ms"] > 0
    assert reply["characters"] == len(ENGLISH)
    assert reply["fallbacks"] == []
    wav = decode_wav(base64.b64decode(reply["audio_data"]))
    assert wav.sample_rate == reply["sample_rate"] == LIVEKIT_RATE_HZ
    assert wav.channels == 1
    assert reply["duration_s"] == pytest.approx(wav.duration_s, abs=DURATION_ROUNDING_S)
    assert reply["audio_duration_s"] == pytest.approx(wav.duration_s, abs=DURATION_ROUNDING_S)
    heard = transcriber.transcribe(wav.pcm, wav.sample_rate)
    assert word_error_rate(ENGLISH, heard) <= MAX_WER, heard


async def test_synthesize_with_accept_audio_wav_returns_the_wav_bytes(api: ApiClient) -> None:
    response = await api.post(
        "/synthesize", json={"text": "Hello from HIVE TTS."}, headers={"Accept": "audio/wav"}
    )
    assert response.status == 200, await response.text()
    assert response.content_type == "audio/wav"
    assert response.headers["X-Engine"] == "piper"
    assert response.headers["X-Voice-Id"] == VOICE
    assert float(response.headers["X-TTFA-Ms"]) > 0
    data = await response.read()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    wav = decode_wav(data)
    assert (wav.sample_rate, wav.channels) == (LIVEKIT_RATE_HZ, 1)
    assert wav.duration_s > 0.5


@pytest.mark.parametrize("sample_rate", [16_000, 22_050])
async def test_synthesize_honours_the_sample_rate(api: ApiClient, sample_rate: int) -> None:
    reply = await synthesize(api, {"text": "Twelve apples.", "sample_rate": sample_rate})
    wav = decode_wav(base64.b64decode(reply["audio_data"]))
    assert wav.sample_rate == reply["sample_rate"] == sample_rate
    assert reply["duration_s"] == pytest.approx(wav.duration_s, abs=DURATION_ROUNDING_S)


@pytest.mark.parametrize(
    ("fmt", "codecs"),
    [("mp3", {"mp3", "mp3float"}), ("opus", {"opus", "libopus"}), ("flac", {"flac"})],
)
async def test_synthesize_formats_decode_to_the_reported_duration(
    api: ApiClient, fmt: str, codecs: set[str]
) -> None:
    reply = await synthesize(api, {"text": "The quick brown fox.", "format": fmt})
    assert reply["format"] == fmt
    decoded = decode_audio(base64.b64decode(reply["audio_data"]))
    assert decoded.codec in codecs
    assert decoded.channels == 1
    assert decoded.sample_rate == reply["sample_rate"] == LIVEKIT_RATE_HZ
    tolerance = CODEC_LENGTH_TOLERANCE_S[fmt]
    assert decoded.duration_s == pytest.approx(reply["duration_s"], abs=tolerance)


@pytest.mark.parametrize("where", ["query", "body"])
async def test_enhance_audio_normalises_loudness_as_its_report_says(
    api: ApiClient, where: str
) -> None:
    text = "Quiet please, the concert is about to begin."
    plain = await synthesize(api, {"text": text})
    body: dict[str, Any] = {"text": text}
    query = ""
    if where == "query":
        query = "?enhance_audio=true"
    else:
        body["enhance_audio"] = True
    enhanced = await synthesize(api, body, query)
    assert "enhancement" not in plain
    report = enhanced["enhancement"]
    before = decode_wav(base64.b64decode(plain["audio_data"]))
    after = decode_wav(base64.b64decode(enhanced["audio_data"]))
    assert after.sample_rate == before.sample_rate and after.pcm.size == before.pcm.size
    samples = pcm16_to_float(after.pcm).astype(np.float64)
    measured = integrated_loudness(samples, after.sample_rate)
    assert report["loudness_after_lufs"] == pytest.approx(measured, abs=0.1)
    peak_dbfs = 20 * np.log10(true_peak(samples, after.sample_rate))
    if report["peak_limited"]:
        assert peak_dbfs <= PEAK_CEILING_DBFS + PEAK_TOLERANCE_DB
        assert report["true_peak_after_dbfs"] <= PEAK_CEILING_DBFS + PEAK_TOLERANCE_DB
    else:
        assert measured == pytest.approx(report["target_lufs"], abs=LOUDNESS_TOLERANCE_LU)
    # the gain the report names is the gain that was applied
    applied_db = 20 * np.log10(rms(after.pcm) / rms(before.pcm))
    assert applied_db == pytest.approx(report["gain_db"], abs=0.5)


# --- POST /v1/audio/speech -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("mp3", "audio/mpeg"),
        ("wav", "audio/wav"),
        ("pcm", f"audio/pcm;rate={OPENAI_RATE_HZ};channels=1"),
        ("opus", "audio/ogg; codecs=opus"),
        ("flac", "audio/flac"),
        ("aac", "audio/aac"),
    ],
)
async def test_openai_speech_format_has_its_content_type_and_says_the_input(
    api: ApiClient, transcriber: Transcriber, fmt: str, content_type: str
) -> None:
    response = await api.post(
        "/v1/audio/speech",
        json={
            "model": "gpt-4o-mini-tts",
            "input": OPENAI_INPUT,
            "voice": "alloy",
            "response_format": fmt,
            "speed": 1.0,
            "instructions": "Speak in a calm, friendly tone.",  # accepted; no engine steers by it
        },
    )
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == content_type
    data = await response.read()
    if fmt == "pcm":
        pcm, rate = pcm_of(data), OPENAI_RATE_HZ
    else:
        decoded = decode_audio(data)
        assert decoded.channels == 1
        pcm, rate = decoded.pcm, decoded.sample_rate
    # an Opus decoder always gives 48 kHz; the stream's own rate is in its header
    assert rate == (OPUS_DECODE_RATE_HZ if fmt == "opus" else OPENAI_RATE_HZ)
    heard = transcriber.transcribe(pcm, rate)
    assert word_error_rate(OPENAI_INPUT, heard) <= MAX_WER, heard


@pytest.mark.parametrize(
    ("voice", "voice_id"),
    [("alloy", VOICE), ("nova", "en-us-female-premium"), (VOICE, VOICE)],
)
async def test_openai_voice_maps_to_a_library_voice(
    api: ApiClient, voice: str, voice_id: str
) -> None:
    response = await api.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": "Good morning.", "voice": voice, "response_format": "pcm"},
    )
    assert response.status == 200, await response.text()
    assert response.headers["X-Voice-Id"] == voice_id
    assert pcm_of(await response.read()).size > OPENAI_RATE_HZ // 4


async def test_openai_speed_one_and_a_half_gives_shorter_audio(api: ApiClient) -> None:
    durations: dict[float, float] = {}
    for speed in (1.0, 1.5):
        response = await api.post(
            "/v1/audio/speech",
            json={
                "input": OPENAI_INPUT,
                "voice": "alloy",
                "response_format": "wav",
                "speed": speed,
            },
        )
        assert response.status == 200, await response.text()
        durations[speed] = decode_audio(await response.read()).duration_s
    ratio = durations[1.5] / durations[1.0]
    assert FAST_SPEED_MIN_RATIO < ratio < FAST_SPEED_MAX_RATIO, durations


async def test_openai_japanese_input_with_alloy_is_spoken_by_kokoro(
    api: ApiClient, transcriber: Transcriber
) -> None:
    before = await scrape(api)
    response = await api.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": JAPANESE, "voice": "alloy", "response_format": "wav"},
    )
    assert response.status == 200, await response.text()
    assert response.headers["X-Voice-Id"].startswith("ja-jp-")
    decoded = decode_audio(await response.read())
    after = await scrape(api)
    labels = {"engine": "kokoro", "language": "ja", "outcome": "ok"}
    spoken_by_kokoro = metric(after, "tts_synthesis_requests_total", **labels) - metric(
        before, "tts_synthesis_requests_total", **labels
    )
    assert spoken_by_kokoro == 1
    heard = transcriber.transcribe(decoded.pcm, decoded.sample_rate, "ja")
    assert character_error_rate(JAPANESE, heard) <= MAX_JAPANESE_CER, heard


async def test_openai_speech_streams_a_long_input_in_several_chunks(api: ApiClient) -> None:
    response = await api.post(
        "/v1/audio/speech",
        json={"input": LONG_TEXT, "voice": "alloy", "response_format": "pcm"},
    )
    assert response.status == 200, await response.text()
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.headers
    chunks = [chunk async for chunk in response.content.iter_any()]
    assert len(chunks) > 1
    pcm = pcm_of(b"".join(chunks))
    assert pcm.size / OPENAI_RATE_HZ > 0.03 * len(LONG_TEXT)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"voice": "alloy"}, 400, "invalid_option"),
        ({"input": 5}, 400, "invalid_option"),
        ({"input": "Hi.", "response_format": "wma"}, 400, "invalid_option"),
        ({"input": "Hi.", "voice": "nobody-at-all"}, 404, "unknown_voice"),
        ({"input": "Hi.", "speed": 4.0}, 400, "invalid_option"),
        ({"input": "Hi.", "speed": "fast"}, 400, "invalid_option"),
        ({"input": "!!!"}, 400, "empty_text"),
    ],
    ids=["no-input", "input-number", "format", "voice", "speed-range", "speed-type", "empty"],
)
async def test_openai_speech_refuses_a_bad_body_with_a_json_error(
    api: ApiClient, body: dict[str, Any], status: int, code: str
) -> None:
    response = await api.post("/v1/audio/speech", json=body)
    assert (await error_of(response, status))["code"] == code


async def test_a_client_that_leaves_an_openai_stream_frees_its_slot_and_synthesis(
    api: ApiClient, synthesizer: SpeechSynthesizer, caplog: pytest.LogCaptureFixture
) -> None:
    services = services_of(api)
    utterances_before = synthesizer.active_utterances
    response = await api.post(
        "/v1/audio/speech",
        json={"input": LONG_TEXT * 2, "voice": "alloy", "response_format": "pcm"},
    )
    assert response.status == 200
    assert await response.content.readany()
    response.close()  # the connection drops mid-body
    await eventually(lambda: services.limiter.active == 0, what="slot freed")
    await eventually(
        lambda: synthesizer.active_utterances == utterances_before, what="utterance closed"
    )
    assert metric(await scrape(api), "tts_active_sessions") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# --- voices -----------------------------------------------------------------------------------


async def test_voices_lists_the_library_with_engine_availability(api: ApiClient) -> None:
    response = await api.get("/voices")
    assert response.status == 200
    listing = await response.json()
    voices = listing["voices"]
    assert len(voices) == VOICES_IN_LIBRARY
    assert len({voice["id"] for voice in voices}) == VOICES_IN_LIBRARY
    assert {VOICE, "en-us-female-premium", "ja-jp-female-premium"} <= {v["id"] for v in voices}
    for voice in voices:
        assert voice["engines"], voice
        for row in voice["engines"]:
            assert row["engine"] in ENGINES_OF_THE_DESIGN
            assert isinstance(row["available"], bool)
            if not row["available"]:
                assert isinstance(row["reason"], str) and row["reason"], row
        assert voice["available"] == any(row["available"] for row in voice["engines"])
    piper_of_david = next(r for v in voices if v["id"] == VOICE for r in v["engines"])
    assert piper_of_david["engine"] == "piper" and piper_of_david["available"]
    assert {engine["engine"] for engine in listing["engines"]} == ENGINES_OF_THE_DESIGN
    assert {"en", "ja"} <= set(listing["languages"])


async def test_voices_of_japanese_are_spoken_by_kokoro(api: ApiClient) -> None:
    response = await api.get("/voices/ja")
    assert response.status == 200
    voices = (await response.json())["voices"]
    assert {v["id"] for v in voices} == {"ja-jp-female-premium", "ja-jp-male-premium"}
    for voice in voices:
        kokoro = next(row for row in voice["engines"] if row["engine"] == "kokoro")
        assert kokoro["available"]


async def test_voices_of_a_language_without_library_voice_note_espeak(api: ApiClient) -> None:
    response = await api.get("/voices/nl")
    assert response.status == 200
    listing = await response.json()
    assert listing["voices"] == []
    assert "espeak-ng" in listing["note"]


async def test_voices_of_an_unknown_language_is_404_listing_known_ones(api: ApiClient) -> None:
    error = await error_of(await api.get("/voices/xx"), 404)
    assert error["code"] == "unknown_language"
    assert "'xx'" in error["message"]
    assert "known languages" in error["message"] and "ja" in error["message"]


# --- health -----------------------------------------------------------------------------------


async def test_health_passes_with_engines_sessions_queue_uptime_and_memory(
    api: ApiClient,
) -> None:
    response = await api.get("/health")
    assert response.status == 200
    health = await response.json()
    assert health["status"] == "pass", health["problems"]
    assert health["problems"] == []
    engines = {row["engine"]: row for row in health["engines"]}
    assert set(engines) == ENGINES_OF_THE_DESIGN
    for name in ("piper", "kokoro", "espeak-ng"):
        assert engines[name]["state"] == "ready" and engines[name]["available"]
    assert engines["xtts"]["state"] == "not_installed"
    # how each engine's audio for a piece arrives: Piper's voice is decoded in windows
    assert engines["piper"]["streaming"] == {
        "within_piece": True,
        "voices": {"en_US-joe-medium": "windowed (/flow/16, /dec/10)"},
    }
    assert engines["kokoro"]["streaming"] == {"within_piece": False}
    assert engines["xtts"]["streaming"] is None  # not loaded
    assert health["active_sessions"] == 0
    assert isinstance(health["queue_depth"], int) and health["queue_depth"] >= 0
    assert health["uptime_s"] >= 0
    memory = health["memory_usage"]
    assert memory["rss_bytes"] > 0
    assert 0 < memory["percent"] <= 100


@pytest.fixture
def unbenched_synthesizer(
    service_config: ServiceConfig, catalog: VoiceCatalog, synthesizer: SpeechSynthesizer
) -> SpeechSynthesizer:
    """The shared, loaded engines behind a fresh registry whose health a test may change.

    Never closed: the engines belong to the session's synthesizer."""
    return SpeechSynthesizer(service_config, catalog, synthesizer.registry.backends())


async def test_health_warns_when_an_engine_is_benched(
    service_config: ServiceConfig, unbenched_synthesizer: SpeechSynthesizer
) -> None:
    health_of_kokoro = unbenched_synthesizer.registry.health(EngineName.KOKORO)
    assert health_of_kokoro is not None
    health_of_kokoro.bench()
    async with api_client(service_config, unbenched_synthesizer) as client:
        response = await client.get("/health")
        assert response.status == 200
        health = await response.json()
    assert health["status"] == "warn"
    assert any("kokoro" in problem and "benched" in problem for problem in health["problems"])
    kokoro = next(row for row in health["engines"] if row["engine"] == "kokoro")
    assert kokoro["available"] is False


async def test_health_fails_with_503_when_every_engine_is_benched(
    service_config: ServiceConfig, unbenched_synthesizer: SpeechSynthesizer
) -> None:
    for backend in unbenched_synthesizer.registry.backends():
        health_of_engine = unbenched_synthesizer.registry.health(backend.name)
        assert health_of_engine is not None
        health_of_engine.bench()
    async with api_client(service_config, unbenched_synthesizer) as client:
        response = await client.get("/health")
        assert response.status == 503
        health = await response.json()
        refused = await client.post("/synthesize", json={"text": "Anyone there?"})
        error = await error_of(refused, 503)
    assert health["status"] == "fail"
    assert health["problems"][0] == "no engine can speak"
    assert error["code"] == "engine_unavailable"


async def test_health_fails_with_503_when_no_engine_is_loaded(
    service_config: ServiceConfig, catalog: VoiceCatalog
) -> None:
    empty = SpeechSynthesizer(service_config, catalog, [])
    async with api_client(service_config, empty) as client:
        response = await client.get("/health")
        assert response.status == 503, await response.text()
        health = await response.json()
        refused = await client.post("/synthesize", json={"text": "Anyone there?"})
        error = await error_of(refused, 503)
    assert health["status"] == "fail"
    assert "no engine can speak" in health["problems"]
    assert error["code"] == "engine_unavailable"


async def test_health_and_voices_answer_with_engines_disabled_in_the_config(
    service_config: ServiceConfig, catalog: VoiceCatalog, synthesizer: SpeechSynthesizer
) -> None:
    config = service_config.model_copy(
        update={"disabled_engines": (EngineName.PIPER, EngineName.KOKORO)}
    )
    espeak = synthesizer.registry.backend(EngineName.ESPEAK)
    assert espeak is not None
    only_espeak = SpeechSynthesizer(config, catalog, [espeak])
    async with api_client(config, only_espeak) as client:
        health_response = await client.get("/health")
        assert health_response.status == 200, await health_response.text()
        health = await health_response.json()
        voices_response = await client.get("/voices")
        assert voices_response.status == 200, await voices_response.text()
        voices = await voices_response.json()
    engines = {row["engine"]: row for row in health["engines"]}
    assert engines["espeak-ng"]["available"] is True
    assert engines["piper"].get("available") is not True
    david = next(voice for voice in voices["voices"] if voice["id"] == VOICE)
    piper = next(row for row in david["engines"] if row["engine"] == "piper")
    assert piper["available"] is False and piper["reason"]


# --- metrics ----------------------------------------------------------------------------------


async def test_metrics_count_a_request_its_first_audio_duration_and_chunks(api: ApiClient) -> None:
    before = await scrape(api)
    reply = await synthesize(api, {"text": ENGLISH})
    after = await scrape(api)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    piper = {"engine": "piper"}
    assert delta("tts_synthesis_requests_total", language="en", outcome="ok", **piper) == 1
    assert delta("tts_ttft_duration_seconds_count", **piper) == 1
    assert delta("tts_ttft_duration_seconds_sum", **piper) == pytest.approx(
        reply["ttfa_ms"] / 1000, abs=0.001
    )
    assert (
        "tts_ttft_duration_seconds_bucket",
        frozenset({("engine", "piper"), ("le", "0.25")}),
    ) in after
    assert delta("tts_synthesis_duration_seconds_count", **piper) == 1
    assert delta("tts_chunk_gap_seconds_count", **piper) == reply["chunks"]
    assert delta("tts_audio_output_seconds_total", **piper) == pytest.approx(
        reply["duration_s"], abs=DURATION_ROUNDING_S
    )
    assert metric(after, "tts_active_sessions") == 0


async def test_metrics_name_every_family_of_the_design(api: ApiClient) -> None:
    response = await api.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    families = {
        family.name: family.type for family in text_string_to_metric_families(await response.text())
    }
    assert {
        "tts_synthesis_requests": "counter",
        "tts_ttft_duration_seconds": "histogram",
        "tts_synthesis_duration_seconds": "histogram",
        "tts_active_sessions": "gauge",
        "tts_audio_quality_score": "gauge",
        "tts_chunk_gap_seconds": "histogram",
        "tts_fallbacks": "counter",
    }.items() <= families.items()


async def test_metrics_export_each_engine_s_state_and_circuit(
    service_config: ServiceConfig, catalog: VoiceCatalog, synthesizer: SpeechSynthesizer
) -> None:
    real = {backend.name: backend for backend in synthesizer.registry.backends()}
    piper = FlakyBackend(real[EngineName.PIPER])
    piper.load()
    flaky = SpeechSynthesizer(service_config, catalog, [piper, real[EngineName.ESPEAK]])
    async with api_client(service_config, flaky) as client:
        before = await scrape(client)
        piper.fail_always = True
        for _ in range(service_config.engines.health.failures_before_cooldown):
            await synthesize(client, {"text": "The backup engine speaks now."})
        after = await scrape(client)
    for samples in (before, after):
        assert metric(samples, "tts_engine_state", engine="piper", state="ready") == 1
        assert metric(samples, "tts_engine_state", engine="piper", state="failed") == 0
        assert metric(samples, "tts_engine_state", engine="xtts", state="not_installed") == 1
        assert metric(samples, "tts_engine_circuit_open", engine="espeak-ng") == 0
        assert metric(samples, "tts_engine_queue_depth", engine="piper") == 0
    assert metric(before, "tts_engine_circuit_open", engine="piper") == 0
    assert metric(after, "tts_engine_circuit_open", engine="piper") == 1  # benched


async def test_metrics_count_refused_requests_by_error_code(api: ApiClient) -> None:
    before = await scrape(api)
    await error_of(await api.post("/synthesize", json={"text": "Hi", "voice_id": "nobody"}), 404)
    after = await scrape(api)
    refused = metric(after, "tts_request_errors_total", code="unknown_voice") - metric(
        before, "tts_request_errors_total", code="unknown_voice"
    )
    assert refused == 1


async def test_metrics_count_a_fallback_to_the_next_engine(
    service_config: ServiceConfig, catalog: VoiceCatalog, synthesizer: SpeechSynthesizer
) -> None:
    real = {backend.name: backend for backend in synthesizer.registry.backends()}
    piper = FlakyBackend(real[EngineName.PIPER], fail_on={0})
    piper.load()
    flaky = SpeechSynthesizer(service_config, catalog, [piper, real[EngineName.ESPEAK]])
    async with api_client(service_config, flaky) as client:
        reply = await synthesize(client, {"text": "The backup engine speaks now."})
        samples = await scrape(client)
    assert [fallback["engine"] for fallback in reply["fallbacks"]] == ["piper"]
    assert reply["engines"] == ["espeak-ng"]
    assert metric(samples, "tts_fallbacks_total", engine="piper") == 1
    assert (
        metric(
            samples, "tts_synthesis_requests_total", engine="espeak-ng", language="en", outcome="ok"
        )
        == 1
    )


async def test_metrics_report_a_quality_score_of_a_sampled_utterance(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> None:
    config = with_api(service_config, quality_sample_every=1)
    async with api_client(config, synthesizer, quality_scoring=True) as client:
        assert services_of(client).sampler is not None
        await synthesize(client, {"text": ENGLISH})

        async def scored() -> bool:
            return metric(await scrape(client), "tts_audio_quality_score", engine="piper") > 0

        await eventually(scored, what="a DNSMOS score for piper")
        score = metric(await scrape(client), "tts_audio_quality_score", engine="piper")
    assert 1.0 <= score <= 5.0


# --- admin and description --------------------------------------------------------------------


async def test_gc_reports_memory_before_and_after(api: ApiClient) -> None:
    response = await api.post("/gc")
    assert response.status == 200
    report = await response.json()
    for key in ("memory_before", "memory_after"):
        assert report[key]["rss_bytes"] > 0
        assert 0 < report[key]["percent"] <= 100
    assert isinstance(report["collected_objects"], int)
    assert report["freed_bytes"] == (
        report["memory_before"]["rss_bytes"] - report["memory_after"]["rss_bytes"]
    )


async def test_gc_needs_an_admin_key_when_keys_are_configured(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> None:
    config = with_api(service_config, api_keys=("user-key",), admin_keys=("admin-key",))
    async with api_client(config, synthesizer) as client:
        as_user = await client.post("/gc", headers={"Authorization": "Bearer user-key"})
        error = await error_of(as_user, 403)
        as_admin = await client.post("/gc", headers={"Authorization": "Bearer admin-key"})
        assert as_admin.status == 200
        assert (await as_admin.json())["memory_after"]["rss_bytes"] > 0
        anonymous = await client.post("/gc")
        await error_of(anonymous, 401)
    assert error["code"] == "forbidden"


async def test_openapi_describes_every_route(api: ApiClient) -> None:
    response = await api.get("/openapi.json")
    assert response.status == 200
    spec = await response.json()
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["title"] and spec["info"]["version"]
    error_schema = spec["components"]["schemas"]["Error"]
    assert error_schema["properties"]["error"]["required"] == ["code", "message"]
    app = api.app
    assert app is not None
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    described = {
        (path, method) for path, operations in spec["paths"].items() for method in operations
    }
    assert served == described
    for operations in spec["paths"].values():
        for operation in operations.values():
            assert operation["summary"] and operation["responses"]


# --- errors -----------------------------------------------------------------------------------


BAD_BODIES: list[tuple[str, bytes, int, str, str]] = [
    ("bad-json", b'{"text": "Hi",', 400, "bad_json", "JSON"),
    ("not-an-object", b'["Hi"]', 400, "bad_json", "list"),
    ("empty-body", b"", 400, "bad_json", "JSON"),
    ("missing-text", json.dumps({"voice_id": VOICE}).encode(), 400, "invalid_option", "'text'"),
    ("text-not-a-string", json.dumps({"text": 42}).encode(), 400, "invalid_option", "'text'"),
    (
        "unknown-key",
        json.dumps({"text": "Hi", "colour": "blue"}).encode(),
        400,
        "invalid_option",
        "colour",
    ),
    (
        "voice-not-a-string",
        json.dumps({"text": "Hi", "voice_id": 7}).encode(),
        400,
        "invalid_option",
        "voice_id",
    ),
    (
        "unknown-voice",
        json.dumps({"text": "Hi", "voice_id": "xx-nobody"}).encode(),
        404,
        "unknown_voice",
        "xx-nobody",
    ),
    (
        "unknown-engine",
        json.dumps({"text": "Hi", "engine": "festival"}).encode(),
        400,
        "unknown_engine",
        "festival",
    ),
    (
        "unknown-language",
        json.dumps({"text": "Hi", "language": "zz"}).encode(),
        404,
        "unknown_language",
        "'zz'",
    ),
    (
        "engine-not-in-this-build",
        json.dumps({"text": "Hi", "engine": "xtts"}).encode(),
        503,
        "engine_unavailable",
        "xtts",
    ),
    (
        "voice-clone-reference-unreadable",
        json.dumps({"text": "Hi", "voice_clone_reference": "UklGRg=="}).encode(),
        400,
        "reference_unreadable",
        "WAV, MP3 or OGG",
    ),
    (
        "voice-clone-reference-not-a-string",
        json.dumps({"text": "Hi", "voice_clone_reference": 5}).encode(),
        400,
        "invalid_option",
        "voice_clone_reference",
    ),
    (
        "text-too-long",
        json.dumps({"text": "word " * (MAX_TEXT_CHARS // 4)}).encode(),
        413,
        "text_too_long",
        str(MAX_TEXT_CHARS),
    ),
    (
        "body-too-large",
        b'{"text": "' + b"a" * MAX_BODY_BYTES + b'"}',
        413,
        "body_too_large",
        str(MAX_BODY_BYTES),
    ),
    ("nothing-speakable", json.dumps({"text": " ... "}).encode(), 400, "empty_text", "empty"),
    (
        "speed-out-of-range",
        json.dumps({"text": "Hi", "speed": 9}).encode(),
        400,
        "invalid_option",
        "speed",
    ),
    (
        "unsupported-rate",
        json.dumps({"text": "Hi", "sample_rate": 12_345}).encode(),
        400,
        "invalid_option",
        "12345",
    ),
    (
        "unknown-format",
        json.dumps({"text": "Hi", "format": "aiff"}).encode(),
        400,
        "invalid_option",
        "aiff",
    ),
]


@pytest.mark.parametrize(
    ("raw", "status", "code", "named"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
async def test_synthesize_refuses_a_bad_request_with_a_json_error(
    api: ApiClient, raw: bytes, status: int, code: str, named: str
) -> None:
    response = await api.post("/synthesize", data=raw, headers={"Content-Type": "application/json"})
    error = await error_of(response, status)
    assert error["code"] == code
    assert named in error["message"]


async def test_an_unknown_route_is_a_json_404(api: ApiClient) -> None:
    error = await error_of(await api.get("/no/such/route"), 404)
    assert error["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/synthesize"), ("GET", "/synthesize"), ("POST", "/voices"), ("DELETE", "/health")],
)
async def test_a_wrong_method_is_a_json_405_naming_the_allowed_one(
    api: ApiClient, method: str, path: str
) -> None:
    response = await api.request(method, path)
    error = await error_of(response, 405)
    assert error["code"] == "method_not_allowed"
    assert response.headers["Allow"]


# --- API keys ---------------------------------------------------------------------------------

API_KEY = "test-key-1"


@pytest.fixture(scope="module")
async def keyed(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> AsyncIterator[ApiClient]:
    async with api_client(with_api(service_config, api_keys=(API_KEY,)), synthesizer) as client:
        yield client


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {API_KEY}"}]
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/synthesize"),
        ("POST", "/v1/audio/speech"),
        ("GET", "/voices"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("POST", "/gc"),
    ],
)
async def test_without_a_valid_key_every_route_but_health_is_401(
    keyed: ApiClient, headers: dict[str, str], method: str, path: str
) -> None:
    response = await keyed.request(method, path, json={"text": "Hi."}, headers=headers)
    error = await error_of(response, 401)
    assert error["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("how", ["bearer", "token"])
async def test_a_valid_key_is_accepted_as_bearer_header_or_token_query(
    keyed: ApiClient, how: str
) -> None:
    if how == "bearer":
        response = await keyed.post(
            "/synthesize", json={"text": "Welcome."}, headers={"Authorization": f"Bearer {API_KEY}"}
        )
    else:
        response = await keyed.post(f"/synthesize?token={API_KEY}", json={"text": "Welcome."})
    assert response.status == 200, await response.text()
    wav = decode_wav(base64.b64decode((await response.json())["audio_data"]))
    assert wav.duration_s > 0.3


async def test_health_is_open_without_a_key(keyed: ApiClient) -> None:
    response = await keyed.get("/health")
    assert response.status == 200
    assert (await response.json())["status"] in ("pass", "warn")


# --- session limits ---------------------------------------------------------------------------


async def test_over_the_session_limit_a_request_gets_429_while_the_first_completes(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> None:
    config = with_api(service_config, max_sessions_total=1, retry_after_s=2)
    async with api_client(config, synthesizer) as client:
        async with client.ws_connect("/ws/synthesize") as ws:
            await ws.send_json({"text": LONG_TEXT, "request_id": "first"})
            first_audio = await receive_json(ws)
            assert first_audio["type"] == "audio"
            refused = await client.post("/synthesize", json={"text": "Me too."})
            error = await error_of(refused, 429)
            assert refused.headers["Retry-After"] == "2"
            with pytest.raises(WSServerHandshakeError) as handshake:
                await client.ws_connect("/ws/synthesize")
            assert handshake.value.status == 429
            rest = await until_final(ws)
        assert rest.final["type"] == "final" and rest.final["cancelled"] is False
        audio = [first_audio, *rest.audio]
        assert [m["sequence"] for m in audio] == list(range(len(audio)))
        samples = sum(len(base64.b64decode(m["audio_chunk"])) // 2 for m in audio)
        assert rest.final["audio_duration_s"] == pytest.approx(
            samples / LIVEKIT_RATE_HZ, abs=DURATION_ROUNDING_S
        )
        await eventually(lambda: services_of(client).limiter.active == 0, what="slot freed")
        again = await client.post("/synthesize", json={"text": "Now it is my turn."})
        assert again.status == 200, await again.text()
    assert error["code"] == "too_many_sessions"


async def test_the_per_key_limit_refuses_only_that_key(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> None:
    config = with_api(service_config, api_keys=("alice", "bob"), max_sessions_per_key=1)
    async with api_client(config, synthesizer) as client:
        async with client.ws_connect("/ws/synthesize?token=alice") as ws:
            await ws.send_json({"text": LONG_TEXT})
            assert (await receive_json(ws))["type"] == "audio"
            as_alice = await client.post("/synthesize?token=alice", json={"text": "Hi."})
            error = await error_of(as_alice, 429)
            assert as_alice.headers["Retry-After"]
            as_bob = await client.post("/synthesize?token=bob", json={"text": "Hi."})
            assert as_bob.status == 200, await as_bob.text()
            await ws.send_json({"type": "cancel"})
            assert (await until_final(ws)).final["cancelled"] is True
    assert error["code"] == "too_many_sessions"
    assert "key" in error["message"]

"""All six engines in one service: XTTS and SpeechT5 on tiny models built by the tests (random
weights: the audio is checked for rate, length and energy, not words), Edge TTS against the local
fake of its service, Piper, Kokoro and espeak-ng for real. Router order, engine states, and voice
cloning through the HTTP, WebSocket and data-channel front ends."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from agent.speak_request import parse_speak_packet, with_voice_reference
from engines.config import ServiceConfig
from engines.edge_engine import SETTINGS as EDGE_SETTINGS
from engines.edge_engine import EdgeSettings
from engines.names import EngineName, SelectionStrategy
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest, build_backends
from engines.voice_reference import (
    ReferenceTooShortError,
    VoiceReference,
    decode_voice_reference,
)
from engines.voices import VoiceCatalog
from engines.xtts_engine import XttsBackend
from tests.api_fixtures import ApiClient, api_client, error_of
from tests.edge_fixtures import closed_port_url, speak_with_edge_at
from tests.fake_edge_service import FakeEdgeService
from tests.reference_audio import encode, voiced_signal
from tests.speecht5_fixtures import build_tiny_speecht5
from tests.xtts_fixtures import write_tiny_xtts

REPO_ROOT = Path(__file__).resolve().parent.parent
ALL_ENGINES = {name.value for name in EngineName}
REFERENCE_S = 5.0
MAX_PACKET_BYTES = 1 << 20
XTTS_RATE_HZ = 24_000
MIN_RMS = 1e-4
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One models directory with the tiny XTTS (``xtts_v2/``) and SpeechT5 (``speecht5/``)."""
    models_dir = tmp_path_factory.mktemp("lineup-models")
    write_tiny_xtts(models_dir)
    build_tiny_speecht5(models_dir)
    return models_dir


@pytest.fixture(scope="module")
async def edge_service() -> AsyncIterator[FakeEdgeService]:
    async with FakeEdgeService() as service:
        yield service


@pytest.fixture(scope="module")
def lineup_config(
    service_config: ServiceConfig, tiny_models_dir: Path, edge_service: FakeEdgeService
) -> ServiceConfig:
    engines = service_config.engines.with_section(
        EDGE_SETTINGS, EdgeSettings(url=edge_service.url())
    )
    update = {"models_dir": tiny_models_dir, "engines": engines, "disabled_engines": ()}
    return service_config.model_copy(update=update)


@pytest.fixture(scope="module")
async def lineup(
    lineup_config: ServiceConfig, catalog: VoiceCatalog
) -> AsyncIterator[SpeechSynthesizer]:
    synth = SpeechSynthesizer(
        lineup_config, catalog, build_backends(lineup_config, deterministic=True)
    )
    await synth.start(warm_up=False)
    yield synth
    await synth.aclose()


@pytest.fixture(scope="module")
async def lineup_api(
    lineup_config: ServiceConfig, lineup: SpeechSynthesizer
) -> AsyncIterator[ApiClient]:
    async with api_client(lineup_config, lineup) as client:
        yield client


def reference_b64(seed: int = 0, seconds: float = REFERENCE_S, encoding: str = "wav") -> str:
    return base64.b64encode(encode(voiced_signal(seconds, seed=seed), encoding)).decode()


def reference_of(seed: int) -> VoiceReference:
    return decode_voice_reference(reference_b64(seed=seed))


def xtts_of(synth: SpeechSynthesizer) -> XttsBackend:
    backend = synth.registry.backend(EngineName.XTTS)
    assert isinstance(backend, XttsBackend)
    return backend


def plan_of(synth: SpeechSynthesizer, voice_id: str, strategy: SelectionStrategy) -> list[str]:
    resolved = synth.router.resolve_voice(voice_id, None)
    return [str(c.engine) for c in synth.router.plan(resolved, strategy=strategy)]


async def test_every_engine_loads_from_its_files(lineup: SpeechSynthesizer) -> None:
    rows = {row["engine"]: row for row in lineup.registry.status()}
    assert set(rows) == ALL_ENGINES
    assert {name: row["state"] for name, row in rows.items()} == dict.fromkeys(ALL_ENGINES, "ready")


async def test_quality_first_prefers_xtts_then_the_local_voice_then_speecht5_edge(
    lineup: SpeechSynthesizer,
) -> None:
    assert plan_of(lineup, "en-us-male-premium", SelectionStrategy.QUALITY_FIRST) == [
        "xtts",
        "piper",
        "speecht5",
        "edge-tts",
        "espeak-ng",
    ]
    # the tiny model lacks the Japanese voices' XTTS speakers (it speaks Japanese when cloning)
    assert plan_of(lineup, "ja-jp-female-premium", SelectionStrategy.QUALITY_FIRST) == [
        "kokoro",
        "edge-tts",
        "espeak-ng",
    ]
    # no Piper voice for es-MX is installed: XTTS, then the cloud's native Spanish voice, then
    # Kokoro with a bundled Japanese style (accented: after every native voice), then espeak-ng
    assert plan_of(lineup, "es-mx-female-premium", SelectionStrategy.QUALITY_FIRST) == [
        "xtts",
        "edge-tts",
        "kokoro",
        "espeak-ng",
    ]
    # the tiny model lacks es-ES Carlos's XTTS speaker: not claimed, not routed
    assert plan_of(lineup, "es-es-male-premium", SelectionStrategy.QUALITY_FIRST) == [
        "edge-tts",
        "kokoro",
        "espeak-ng",
    ]
    # French with a bundled style is measured below the threshold: after the cloud
    assert plan_of(lineup, "fr-ca-male-premium", SelectionStrategy.QUALITY_FIRST)[-3:] == [
        "edge-tts",
        "kokoro",
        "espeak-ng",
    ]


async def test_without_the_optional_weights_the_order_skips_those_engines(
    synthesizer: SpeechSynthesizer,
) -> None:
    """The session's service has no XTTS or SpeechT5 weights (and Edge is off in tests): they
    are reported, not routed."""
    rows = {row["engine"]: row for row in synthesizer.registry.status()}
    for engine in ("xtts", "speecht5"):
        assert rows[engine]["state"] == "not_installed"
        assert f"python -m tools.fetch_models {engine}" in str(rows[engine]["detail"])
    assert plan_of(synthesizer, "en-us-male-premium", SelectionStrategy.QUALITY_FIRST) == [
        "piper",
        "espeak-ng",
    ]


async def test_a_built_in_xtts_speaker_speaks_its_voice_language(
    lineup: SpeechSynthesizer,
) -> None:
    request = SynthesisRequest(
        "Hola, buenos días.", voice_id="es-mx-female-premium", engine="xtts", sample_rate=24_000
    )
    utterance = lineup.synthesize(request)
    audio = np.concatenate([chunk.pcm async for chunk in utterance])
    assert utterance.result.engines == ["xtts"] and utterance.result.language == "es"
    assert audio.size > 0 and np.sqrt(np.mean((audio / 32768.0) ** 2)) > MIN_RMS


async def test_speecht5_and_edge_speak_when_asked(lineup: SpeechSynthesizer) -> None:
    for engine in ("speecht5", "edge-tts"):
        request = SynthesisRequest("Good morning.", voice_id="en-us-female-premium", engine=engine)
        utterance = lineup.synthesize(request)
        audio = np.concatenate([chunk.pcm async for chunk in utterance])
        assert utterance.result.engines == [engine], utterance.result.fallbacks
        assert audio.size > 0 and np.abs(audio).max() > 0


async def test_cloning_over_http_reuses_the_speaker_latents(
    lineup: SpeechSynthesizer, lineup_api: ApiClient
) -> None:
    xtts = xtts_of(lineup)
    body = {"text": "Cloned voice.", "voice_clone_reference": reference_b64(seed=41)}
    misses = xtts.latent_cache_misses
    replies = []
    for _ in range(2):
        response = await lineup_api.post("/synthesize", json=body)
        assert response.status == 200, await response.text()
        replies.append(await response.json())
    assert [reply["engine"] for reply in replies] == ["xtts", "xtts"]
    assert replies[0]["voice_id"].startswith("clone:")
    assert replies[0]["voice_id"] == replies[1]["voice_id"]
    assert xtts.latent_cache_misses == misses + 1  # the second request cost no latents
    assert xtts.latent_cache_hits >= 1
    assert replies[0]["duration_s"] > 0


@pytest.mark.parametrize(
    ("language", "text"),
    [("ja", "こんにちは、元気ですか。"), ("zh", "你好，今天天气很好。")],
)
async def test_a_clone_speaks_japanese_and_chinese(
    lineup: SpeechSynthesizer, language: str, text: str
) -> None:
    """Their text goes through XTTS's own romanizers (cutlet, pypinyin)."""
    request = SynthesisRequest(text, language=language, voice_reference=reference_of(seed=46))
    utterance = lineup.synthesize(request)
    audio = np.concatenate([chunk.pcm async for chunk in utterance])
    assert utterance.result.engines == ["xtts"] and utterance.result.language == language
    assert audio.size > 0 and np.sqrt(np.mean((audio / 32768.0) ** 2)) > MIN_RMS


async def test_cloning_over_websocket(lineup_api: ApiClient) -> None:
    async with lineup_api.ws_connect("/ws/synthesize") as ws:
        request = {
            "text": "Streamed clone.",
            "voice_clone_reference": reference_b64(seed=42, encoding="mp3"),
            "request_id": "clone-ws",
        }
        await ws.send_json(request)
        samples = 0
        while True:
            message = json.loads(await ws.receive_str(timeout=TIMEOUT_S))
            assert message.get("type") != "error", message
            if message.get("is_final"):
                break
            samples += len(base64.b64decode(message["audio_chunk"])) // 2
    assert message["request_id"] == "clone-ws"
    assert message["engine"] == "xtts" and str(message["voice_id"]).startswith("clone:")
    assert samples > 0


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        ({"engine": "piper"}, 422, "cloning_unsupported", "only 'xtts'"),
        ({"voice_clone_reference": "bm90IGF1ZGlv"}, 400, "reference_unreadable", "WAV"),
        ({"voice_clone_reference": "short"}, 400, "reference_too_short", "3"),
        ({"language": "sw"}, 400, "invalid_option", "cannot clone a voice in 'sw'"),
    ],
    ids=["other-engine", "unreadable", "too-short", "language-xtts-lacks"],
)
async def test_bad_cloning_requests_name_what_is_wrong(
    lineup_api: ApiClient, body: dict[str, str], status: int, code: str, fragment: str
) -> None:
    request = {"text": "Hello.", "voice_clone_reference": reference_b64(seed=43)} | body
    if request["voice_clone_reference"] == "short":
        request["voice_clone_reference"] = reference_b64(seconds=1.0)
    error = await error_of(await lineup_api.post("/synthesize", json=request), status)
    assert error["code"] == code
    assert fragment in error["message"]


async def test_cloning_without_xtts_weights_says_how_to_get_them(api: ApiClient) -> None:
    body = {"text": "Hello.", "voice_clone_reference": reference_b64(seed=44)}
    error = await error_of(await api.post("/synthesize", json=body), 503)
    assert error["code"] == "engine_unavailable"
    assert "python -m tools.fetch_models xtts" in error["message"]


async def test_data_channel_requests_carry_a_reference(lineup: SpeechSynthesizer) -> None:
    packet = json.dumps(
        {"id": "c1", "text": "Room clone.", "voice_clone_reference": reference_b64(seed=45)}
    ).encode()
    request = await with_voice_reference(
        parse_speak_packet(packet, sender="s", max_bytes=MAX_PACKET_BYTES)
    )
    assert request.synthesis.voice_reference is not None
    utterance = lineup.synthesize(request.synthesis)
    audio = np.concatenate([chunk.pcm async for chunk in utterance])
    assert utterance.result.engines == ["xtts"] and audio.size > 0
    short = json.dumps({"text": "Hi", "voice_clone_reference": reference_b64(seconds=1.0)})
    with pytest.raises(ReferenceTooShortError):
        await with_voice_reference(
            parse_speak_packet(short.encode(), sender="s", max_bytes=MAX_PACKET_BYTES)
        )


async def test_an_unreachable_edge_service_falls_back_fast(
    service_config: ServiceConfig, catalog: VoiceCatalog
) -> None:
    """No network: Edge fails at connect, typed and retryable, and the next engine speaks."""
    chunks, result, _ = await speak_with_edge_at(
        closed_port_url(),
        SynthesisRequest("Bonjour.", voice_id="fr-fr-female-premium"),
        service_config,
        catalog,
    )
    assert chunks and result.engines == ["espeak-ng"]
    assert [f["engine"] for f in result.fallbacks] == ["edge-tts"]


def test_cli_voices_json_names_every_engine_with_its_state() -> None:
    listing = subprocess.run(
        [str(Path(sys.executable).with_name("hive-tts")), "voices", "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    engines = {row["engine"]: row for row in json.loads(listing.stdout)["engines"]}
    assert set(engines) == ALL_ENGINES
    assert engines["xtts"]["state"] == "not_installed"
    assert "not found" in engines["xtts"]["detail"]
    assert "run `python -m tools.fetch_models xtts`" in engines["xtts"]["detail"]
    assert engines["piper"]["state"] == "ready"

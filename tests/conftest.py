from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engines.config import ServiceConfig, load_config
from engines.synthesizer import SpeechSynthesizer, build_backends
from engines.voices import VoiceCatalog
from tests.api_fixtures import ApiClient, api_client
from tests.transcriber import Transcriber

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def service_config() -> ServiceConfig:
    return load_config(REPO_ROOT / "config.yaml")


@pytest.fixture(scope="session")
def catalog(service_config: ServiceConfig) -> VoiceCatalog:
    return VoiceCatalog.load(service_config.voices_file)


@pytest.fixture(scope="session")
async def synthesizer(
    service_config: ServiceConfig, catalog: VoiceCatalog
) -> AsyncIterator[SpeechSynthesizer]:
    """The real engines, loaded once for the whole run (deterministic Piper noise)."""
    synth = SpeechSynthesizer(
        service_config, catalog, build_backends(service_config, deterministic=True)
    )
    await synth.start()
    yield synth
    await synth.aclose()


@pytest.fixture(scope="session")
def transcriber() -> Transcriber:
    return Transcriber()


@pytest.fixture(scope="module")
async def api(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> AsyncIterator[ApiClient]:
    """The control API on a real loopback socket, one app (own metrics) per test module."""
    async with api_client(service_config, synthesizer) as client:
        yield client

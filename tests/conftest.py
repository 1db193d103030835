from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engines.config import ServiceConfig, load_config
from engines.synthesizer import SpeechSynthesizer, build_backends
from engines.voices import VoiceCatalog
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

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.livekit_server import DevServer
from engines.config import ServiceConfig, load_config
from engines.names import EngineName
from engines.synthesizer import SpeechSynthesizer, build_backends
from engines.voices import VoiceCatalog
from tests.api_fixtures import ApiClient, api_client
from tests.livekit_fixtures import WorkerProcess, start_server
from tests.transcriber import Transcriber

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def service_config() -> ServiceConfig:
    """The shipped config.yaml without Edge TTS: tests never call Microsoft's service (the Edge
    tests run against a local fake of it, tests/fake_edge_service.py), and without refusing
    requests for a busy engine."""
    config = load_config(REPO_ROOT / "config.yaml")
    # many sessions start at once in some tests; on a slow machine the engine wait could pass
    # its limit and refuse them (tests/test_api_engine_wait.py sets its own); fuzzing sends
    # hundreds of requests from one address (tests/test_hardening.py tests the rate limit)
    api = config.api.model_copy(update={"max_engine_wait_s": None, "rate_limit": None})
    return config.model_copy(update={"disabled_engines": (EngineName.EDGE,), "api": api})


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


@pytest.fixture(scope="session")
def livekit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """The pinned livekit-server build, ``--dev`` on free loopback ports, for the whole run."""
    server = start_server(tmp_path_factory.mktemp("livekit"))
    yield server
    server.stop()


AGENT_TEST_CONFIG = """\
agent:
  max_queue_per_room: 3
  max_packet_bytes: 4096
limits:
  max_text_chars: 2000
disabled_engines: [edge-tts]
"""


@pytest.fixture(scope="session")
def agent_config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agent-config") / "config.yaml"
    path.write_text(
        AGENT_TEST_CONFIG
        + f"voices_file: {REPO_ROOT / 'voices.yaml'}\nmodels_dir: {REPO_ROOT / 'models'}\n"
    )
    return path


@pytest.fixture(scope="module")
def agent_worker(
    livekit_server: DevServer, agent_config_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One ``hive-tts agent`` process serving every room of a test module."""
    worker = WorkerProcess(
        livekit_server, agent_config_file, tmp_path_factory.mktemp("worker") / "worker.log"
    )
    worker.wait_registered()
    yield worker
    worker.stop()

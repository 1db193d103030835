"""`hive-tts serve` as a real process, driven by the design document's own client snippets.

The snippets below are copied from the seed design (`the-hive-tts-service.md`, "API Usage")
verbatim except for trailing whitespace, which the house linter removes and Python ignores.
Each run applies only the edits its test names, and says why.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.api_fixtures import decode_wav, metric, metric_samples

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED_DESIGN = Path("/work/shared/seed/the-hive-tts-service.md")
HIVE_TTS = Path(sys.executable).with_name("hive-tts")
SEED_PORT = "8003"
SERVER_START_TIMEOUT_S = 180.0
"""Loading and warming Piper, Kokoro, espeak-ng and DNSMOS on a busy 2-core machine."""
SERVER_STOP_TIMEOUT_S = 30.0
SNIPPET_TIMEOUT_S = 90.0
HEALTH_POLL_S = 0.25
LIVEKIT_RATE_HZ = 48_000
PCM16_BYTES = 2
VOICES_IN_LIBRARY = 14
FRENCH_VOICES = 2

SEED_WEBSOCKET_SNIPPET = """\
import websockets
import json

async def synthesize_streaming():
    uri = "ws://localhost:8003/ws/synthesize"

    async with websockets.connect(uri) as websocket:
        request = {
            "text": "Hello, this is a streaming synthesis test!",
            "voice_id": "en-us-female-premium",
            "language": "en",
            "engine": "xtts",
            "stream": true
        }

        await websocket.send(json.dumps(request))

        while True:
            response = await websocket.recv()
            data = json.loads(response)

            if data.get("audio_chunk"):
                # Process audio chunk
                audio_bytes = base64.b64decode(data["audio_chunk"])
                # Feed to audio output or LiveKit track

            if data.get("is_final"):
                break
"""
SEED_HTTP_SNIPPET = """\
import requests

response = requests.post("http://localhost:8003/synthesize", json={
    "text": "Hello world!",
    "voice_id": "en-us-female-premium",
    "language": "en",
    "engine": "xtts"
})

audio_data = response.json()["audio_data"]
"""
SEED_VOICES_SNIPPET = """\
# List all voices
voices = requests.get("http://localhost:8003/voices").json()

# Get voices for specific language
fr_voices = requests.get("http://localhost:8003/voices/fr").json()
"""

# The seed's voice has no Piper model in this build (only en_US-joe ships), so Piper would
# refuse it; en-us-male-premium is the English voice Piper speaks.
FOR_PIPER = {
    '"engine": "xtts"': '"engine": "piper"',
    '"voice_id": "en-us-female-premium"': '"voice_id": "en-us-male-premium"',
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def edited(snippet: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert snippet.count(old) >= 1, old
        snippet = snippet.replace(old, new)
    return snippet


@dataclass(frozen=True)
class Server:
    port: int
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def for_snippet(self, snippet: str) -> str:
        """The snippet pointed at this server: its port instead of the design's 8003."""
        return edited(snippet, {f"localhost:{SEED_PORT}": f"localhost:{self.port}"})


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: bytes
    stderr: str


async def start_serve(
    server: Server, config: Path | None = None, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``hive-tts [--config CONFIG] serve --port PORT`` with its output in ``server.log``, in an
    environment without the caller's ``HIVE_TTS_*`` keys (plus ``env``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_TTS_")}
    options = ["--config", str(config)] if config is not None else []
    with server.log.open("wb") as output:
        return await asyncio.create_subprocess_exec(
            str(HIVE_TTS),
            *options,
            "serve",
            "--port",
            str(server.port),
            cwd=REPO_ROOT,
            env={**clean, **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def wait_until_healthy(
    process: asyncio.subprocess.Process, server: Server, session: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(SERVER_START_TIMEOUT_S):
        while True:
            assert process.returncode is None, server.log.read_text()
            try:
                async with session.get(server.url("/health")) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass  # not listening yet: the engines are still loading
            await asyncio.sleep(HEALTH_POLL_S)


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    started = Server(free_port(), tmp_path_factory.mktemp("server") / "serve.log")
    process = await start_serve(started)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_healthy(process, started, session)
        yield started
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), SERVER_STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()


async def run_python(code: str, directory: Path) -> Ran:
    script = directory / "snippet.py"
    script.write_text(code, encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), SNIPPET_TIMEOUT_S)
    assert process.returncode is not None
    return Ran(process.returncode, stdout, stderr.decode(errors="replace"))


async def scrape(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as session, session.get(server.url("/metrics")) as response:
        assert response.status == 200
        return metric_samples(await response.text())


def runnable_websocket_snippet(snippet: str) -> str:
    """The seed's WebSocket snippet made runnable, with the fewest edits.

    It uses ``base64`` without importing it and never starts its coroutine, so the imports
    and an ``asyncio.run`` are added; its ``"stream": true`` is JSON, not Python (a NameError
    when the dict is built), so it becomes ``True``."""
    fixed = edited(snippet, {'"stream": true': '"stream": True'})
    return f"import asyncio\nimport base64\n{fixed}\nasyncio.run(synthesize_streaming())\n"


def test_embedded_snippets_are_the_seeds() -> None:
    if not SEED_DESIGN.is_file():
        pytest.skip(f"{SEED_DESIGN} is not on this machine")

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.splitlines()]

    design = lines(SEED_DESIGN.read_text(encoding="utf-8"))
    for snippet in (SEED_WEBSOCKET_SNIPPET, SEED_HTTP_SNIPPET, SEED_VOICES_SNIPPET):
        wanted = lines(snippet)
        assert any(design[i : i + len(wanted)] == wanted for i in range(len(design))), wanted[0]


async def test_seed_websocket_snippet_asking_for_xtts_ends_on_the_final_error(
    server: Server, tmp_path: Path
) -> None:
    before = await scrape(server)
    ran = await run_python(
        runnable_websocket_snippet(server.for_snippet(SEED_WEBSOCKET_SNIPPET)), tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    after = await scrape(server)
    refused = metric(after, "tts_request_errors_total", code="engine_unavailable") - metric(
        before, "tts_request_errors_total", code="engine_unavailable"
    )
    assert refused == 1


async def test_seed_websocket_snippet_with_piper_receives_audio(
    server: Server, tmp_path: Path
) -> None:
    snippet = edited(
        server.for_snippet(SEED_WEBSOCKET_SNIPPET),
        {
            **FOR_PIPER,
            # count what arrives: the snippet decodes each chunk and drops it
            "# Feed to audio output or LiveKit track": "received.append(audio_bytes)",
        },
    )
    code = "received = []\n" + runnable_websocket_snippet(snippet)
    code += "print(sum(len(chunk) for chunk in received))\n"
    ran = await run_python(code, tmp_path)
    assert ran.returncode == 0, ran.stderr
    audio_bytes = int(ran.stdout.decode().strip())
    assert audio_bytes > LIVEKIT_RATE_HZ * PCM16_BYTES  # more than a second of 48 kHz PCM16


async def test_seed_http_snippet_as_written_meets_the_503_for_xtts(
    server: Server, tmp_path: Path
) -> None:
    # unchanged but for the port: xtts is not in this build, so the reply is the 503 error
    # body and the snippet's ["audio_data"] raises
    ran = await run_python(server.for_snippet(SEED_HTTP_SNIPPET), tmp_path)
    assert ran.returncode != 0
    assert "KeyError: 'audio_data'" in ran.stderr, ran.stderr
    probe = "\nprint(response.status_code, response.json())\n"
    code = server.for_snippet(SEED_HTTP_SNIPPET).replace(
        'audio_data = response.json()["audio_data"]', probe
    )
    shown = await run_python(code, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.decode().startswith("503 {'error': {'code': 'engine_unavailable'")
    assert "xtts" in shown.stdout.decode()


async def test_seed_http_snippet_with_piper_gets_a_48_khz_wav(
    server: Server, tmp_path: Path
) -> None:
    snippet = edited(server.for_snippet(SEED_HTTP_SNIPPET), FOR_PIPER)
    code = snippet + "import base64, sys\nsys.stdout.buffer.write(base64.b64decode(audio_data))\n"
    ran = await run_python(code, tmp_path)
    assert ran.returncode == 0, ran.stderr
    wav = decode_wav(ran.stdout)
    assert (wav.sample_rate, wav.channels) == (LIVEKIT_RATE_HZ, 1)
    assert wav.duration_s > 0.4


async def test_seed_voice_discovery_snippet_lists_voices(server: Server, tmp_path: Path) -> None:
    # the discovery snippet continues the HTTP one, which imports requests
    code = "import requests\n" + server.for_snippet(SEED_VOICES_SNIPPET)
    code += 'print(len(voices["voices"]), len(fr_voices["voices"]))\n'
    ran = await run_python(code, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.decode().split() == [str(VOICES_IN_LIBRARY), str(FRENCH_VOICES)]

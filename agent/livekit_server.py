"""A local LiveKit server for development and tests (``livekit-server --dev``, loopback only).

The binary comes from ``$HIVE_TTS_LIVEKIT_SERVER``, then ``PATH`` (a user's own install),
then the build cache ``make`` fills (``.cache/livekit/bin``, built from ``tools/livekit``).
Tests name the pinned build through the environment variable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hive_tts.paths import PROJECT_ROOT

SERVER_ENV = "HIVE_TTS_LIVEKIT_SERVER"
LK_ENV = "HIVE_TTS_LK"
BUILD_CACHE = PROJECT_ROOT / ".cache" / "livekit" / "bin"
DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"
"""What ``livekit-server --dev`` accepts; loopback only."""
START_TIMEOUT_S = 30.0


class LiveKitServerNotFound(RuntimeError):
    pass


def find_binary(name: str, env: str) -> Path:
    """``livekit-server`` or ``lk``: the environment's choice, PATH, then the build cache."""
    chosen = os.environ.get(env)
    candidates = [Path(chosen)] if chosen else []
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(BUILD_CACHE / name)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise LiveKitServerNotFound(
        f"{name} not found (looked at ${env}, {BUILD_CACHE / name} and PATH); "
        "`make livekit` builds it"
    )


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DevServer:
    """A running ``livekit-server --dev`` bound to 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    api_key: str = DEV_API_KEY
    api_secret: str = DEV_API_SECRET

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """``LIVEKIT_URL`` / ``LIVEKIT_API_KEY`` / ``LIVEKIT_API_SECRET`` for a worker."""
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
        }

    @classmethod
    def start(cls, port: int = 0, *, log_dir: Path | None = None) -> DevServer:
        binary = find_binary("livekit-server", SERVER_ENV)
        port = port or free_port()
        tcp_port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
        config = (
            f"port: {port}\n"
            "rtc:\n"
            f"  tcp_port: {tcp_port}\n"
            f"  udp_port: {udp_port}\n"
            "  use_external_ip: false\n"
            "  enable_loopback_candidate: true\n"
            "logging:\n"
            "  level: info\n"
        )
        log_dir = log_dir or Path(tempfile.gettempdir())
        log_path = log_dir / f"livekit-server-{port}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            [
                str(binary),
                "--dev",
                "--bind",
                "127.0.0.1",
                "--node-ip",
                "127.0.0.1",
                "--config-body",
                config,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        server = cls(process, port, log_path)
        server._wait_ready()
        return server

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"livekit-server exited ({self.process.returncode}): "
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.http_url, timeout=1) as reply:
                    if reply.status == 200:
                        return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"livekit-server did not answer on {self.http_url} in time")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

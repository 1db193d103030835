"""A local LiveKit server for development and tests (``livekit-server --dev``, loopback only).

A node runs alone or, given a Redis address, as one node of a cluster (``agent.livekit_cluster``).
Everything it opens is on 127.0.0.1: signalling (``--bind``), ICE over UDP (the loopback
interface only) and the candidates it advertises (``--node-ip``).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hive_tts.paths import PROJECT_ROOT

SERVER_ENV = "HIVE_TTS_LIVEKIT_SERVER"
LK_ENV = "HIVE_TTS_LK"
BUILD_CACHE = PROJECT_ROOT / ".cache" / "livekit" / "bin"
DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"
"""What ``livekit-server --dev`` accepts; loopback only."""
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
READY_POLL_S = 0.1
LOOPBACK_IP = "127.0.0.1"
LOOPBACK_INTERFACE = "lo"
ICE_TCP_PORT_DISABLED = 0
"""``rtc.tcp_port: 0`` turns ICE/TCP off: livekit-server 1.13.5 listens on that port on every
interface (``net.ListenTCP`` with no address, whatever ``--bind`` or ``rtc.interfaces`` say),
and clients on loopback reach the node over UDP anyway."""


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
        sock.bind((LOOPBACK_IP, 0))
        return int(sock.getsockname()[1])


def node_config(
    port: int,
    udp_port: int,
    *,
    redis_address: str | None = None,
    webhook_urls: Sequence[str] = (),
) -> str:
    """The ``--config-body`` of a loopback node (keys as in livekit-server 1.13.5's
    ``pkg/config/config.go``; the server parses it strictly, so a wrong key fails the start)."""
    config: dict[str, Any] = {
        "port": port,
        "rtc": {
            "tcp_port": ICE_TCP_PORT_DISABLED,
            "udp_port": udp_port,
            "use_external_ip": False,
            "enable_loopback_candidate": True,
            "interfaces": {"includes": [LOOPBACK_INTERFACE]},
        },
        "logging": {"level": "info"},
    }
    if redis_address is not None:
        config["redis"] = {"address": redis_address}
    if webhook_urls:
        # LiveKit signs each webhook with this key's secret
        config["webhook"] = {"api_key": DEV_API_KEY, "urls": list(webhook_urls)}
    return yaml.safe_dump(config, sort_keys=False)


def spawn_logged(command: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a server process whose output goes to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def log_tail(log_path: Path, chars: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return log_path.read_text(errors="replace")[-chars:]
    return ""


def wait_until_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    name: str,
    log_path: Path,
    timeout_s: float,
    poll_s: float,
) -> bool:
    """Poll ``ready`` until it holds (True) or ``timeout_s`` passes (False); a process that
    exits meanwhile raises, with the end of its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}): " + log_tail(log_path))
        if ready():
            return True
        time.sleep(poll_s)
    return False


@dataclass
class DevServer:
    """A running ``livekit-server --dev`` on 127.0.0.1, alone or as one node of a cluster.

    ``stop()`` is a graceful shutdown (SIGTERM: the node drains, then leaves the cluster);
    ``kill()`` is a forced one (SIGKILL, as a crash would: what it registered in Redis stays).
    """

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
    def start(
        cls,
        port: int = 0,
        *,
        log_dir: Path | None = None,
        redis_address: str | None = None,
        webhook_urls: Sequence[str] = (),
    ) -> DevServer:
        """Start a node and return once its HTTP port answers.

        ``port`` 0 picks a free one. ``redis_address`` (``"127.0.0.1:PORT"``) makes the node
        join the cluster that shares that Redis; ``webhook_urls`` receive the node's webhooks,
        signed with ``devkey``'s secret. The log goes to ``log_dir`` (the temp dir by default).
        """
        binary = find_binary("livekit-server", SERVER_ENV)
        port = port or free_port()
        config = node_config(
            port,
            free_port(socket.SOCK_DGRAM),
            redis_address=redis_address,
            webhook_urls=webhook_urls,
        )
        log_dir = log_dir or Path(tempfile.gettempdir())
        log_path = log_dir / f"livekit-server-{port}.log"
        command = [str(binary), "--dev", "--bind", LOOPBACK_IP, "--node-ip", LOOPBACK_IP]
        process = spawn_logged([*command, "--config-body", config], log_path)
        server = cls(process, port, log_path)
        server._wait_ready()
        return server

    def _answers(self) -> bool:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(self.http_url, timeout=1) as reply:
                return bool(reply.status == 200)
        return False

    def _wait_ready(self) -> None:
        ready = wait_until_ready(
            self.process,
            self._answers,
            name="livekit-server",
            log_path=self.log_path,
            timeout_s=START_TIMEOUT_S,
            poll_s=READY_POLL_S,
        )
        if not ready:
            self.kill()
            raise RuntimeError(
                f"livekit-server did not answer on {self.http_url} in time: " + self.log_tail()
            )

    def log_tail(self, chars: int = 2000) -> str:
        return log_tail(self.log_path, chars)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM), forced after ``STOP_TIMEOUT_S``; a no-op once exited."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """Forced stop (SIGKILL): no graceful leave from the cluster; a no-op once exited."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

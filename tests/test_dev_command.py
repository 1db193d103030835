"""``hive-tts dev`` as a person runs it: it says it is ready only once the agent worker has
registered, a room can be made to speak as soon as ``/health`` answers, and Ctrl-C (SIGINT)
drains and exits 0 without a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agent.livekit_server import BUILD_CACHE, SERVER_ENV, free_port
from hive_tts.paths import PROJECT_ROOT
from tests.livekit_fixtures import Endpoint, Participant

START_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 60.0
SPOKEN = "The demo room speaks as soon as the service is up."

pytestmark = pytest.mark.asyncio(loop_scope="session")


class DevProcess:
    def __init__(self, config: Path, port: int, livekit_port: int) -> None:
        self.lines: list[str] = []
        env = {key: value for key, value in os.environ.items() if not key.startswith("LIVEKIT_")}
        env[SERVER_ENV] = os.environ.get(SERVER_ENV, str(BUILD_CACHE / "livekit-server"))
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hive_tts.cli",
                "--config",
                str(config),
                "dev",
                "--port",
                str(port),
                "--livekit-port",
                str(livekit_port),
                "--room",
                "demo-test",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def output(self) -> str:
        return "\n".join(self.lines)


def health(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
            body = json.load(reply)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def post_speak(port: int, room: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/rooms/{room}/speak",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=90) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


async def test_dev_speaks_right_after_health_and_stops_cleanly_on_ctrl_c(
    agent_config_file: Path,
) -> None:
    port, livekit_port = free_port(), free_port()
    dev = DevProcess(agent_config_file, port, livekit_port)
    listener: Participant | None = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while (status := health(port)) is None:
            assert dev.process.poll() is None, dev.output()
            assert time.monotonic() < deadline, dev.output()
            await asyncio.sleep(0.2)
        livekit = status["livekit"]
        assert isinstance(livekit, dict) and livekit["configured"] is True
        assert livekit["workers"], status  # the dev worker is reported, registered or not

        # as soon as /health answers: the route waits for the worker, then it speaks
        listener = await Participant("listener").join(
            Endpoint(f"ws://127.0.0.1:{livekit_port}"), "demo-test"
        )
        code, body = await asyncio.to_thread(
            post_speak, port, "demo-test", {"text": SPOKEN, "reply_to": "listener"}
        )
        assert code == 202, (body, dev.output())
        finished = await listener.wait_event(str(body["id"]), "finished")
        assert finished["interrupted"] is False

        output = dev.output()
        registered = next(n for n, line in enumerate(dev.lines) if "registered worker" in line)
        ready = next(n for n, line in enumerate(dev.lines) if line.startswith("ready:"))
        assert registered < ready, output  # "ready" only after the worker registered
        after = health(port)
        assert after is not None
        workers = after["livekit"]["workers"]  # type: ignore[index]
        assert any(w["registered"] for w in workers), after
    finally:
        if listener is not None:
            await listener.leave()
        dev.process.send_signal(signal.SIGINT)  # Ctrl-C
        code = await asyncio.to_thread(dev.process.wait, EXIT_TIMEOUT_S)
    output = dev.output()
    assert code == 0, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert output.splitlines()[-1] == "stopped", output

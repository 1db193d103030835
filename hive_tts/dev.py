"""``hive-tts dev``: a LiveKit server, the agent worker and the control API, on loopback.

The LiveKit server is the one at ``$LIVEKIT_URL`` when that is set, else a local
``livekit-server --dev`` (from the build cache or PATH). The worker runs as a child process
(``hive-tts agent``); the control API runs here. A join token for a demo room is printed so a
person can listen, and the agent greets the first listener who joins.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import warnings
from datetime import timedelta

from aiohttp import web
from livekit import api as lkapi

from agent.livekit_server import DEV_API_KEY, DEV_API_SECRET, DevServer, free_port
from agent.speak_request import AGENT_ATTRIBUTE
from api.rooms import ROOMS_KEY, LiveKitSettings, RoomsService
from control_api import create_app
from engines.config import ServiceConfig

GREETING = "Hello! This is HIVE TTS speaking in your LiveKit room."
TOKEN_TTL = timedelta(hours=12)
LISTENER_POLL_S = 1.0
STOP_MARGIN_S = 15.0
"""Beyond the worker's drain bound, time for it to close its connections and exit."""
GREETER_KEY = web.AppKey("greeter", asyncio.Task[None])


def join_token(settings: LiveKitSettings, room: str, identity: str) -> str:
    grants = lkapi.VideoGrants(room_join=True, room=room, can_publish_data=True)
    return (
        lkapi.AccessToken(settings.api_key, settings.api_secret)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(grants)
        .with_ttl(TOKEN_TTL)
        .to_jwt()
    )


async def _greet_first_listener(
    service: RoomsService, settings: LiveKitSettings, room: str
) -> None:
    """Speak once when someone other than the agent is in the demo room."""
    client = lkapi.LiveKitAPI(settings.url, settings.api_key, settings.api_secret)
    try:
        while True:
            await asyncio.sleep(LISTENER_POLL_S)
            with contextlib.suppress(lkapi.TwirpError):
                reply = await client.room.list_participants(
                    lkapi.ListParticipantsRequest(room=room)
                )
                if any(not p.attributes.get(AGENT_ATTRIBUTE) for p in reply.participants):
                    await service.speak(room, {"text": GREETING, "language": "en"})
                    return
    finally:
        await client.aclose()


class WorkerChild:
    """``hive-tts agent`` as a child in its own session (a terminal's Ctrl-C reaches only us;
    we pass one SIGTERM on), its output echoed and watched for registration."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        self.registered = threading.Event()
        self._reader = threading.Thread(target=self._read, name="worker-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            print(f"[worker] {line.rstrip()}", flush=True)
            if line.startswith("registered worker "):
                self.registered.set()

    def stop(self, timeout_s: float) -> int:
        """SIGTERM (the worker drains), then SIGKILL after ``timeout_s``; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=2)
        return self.process.returncode


def _ready_lines(settings: LiveKitSettings, port: int, room: str, token: str) -> str:
    return (
        f"ready: the agent worker is registered with {settings.url}\n"
        f"listen:         https://meet.livekit.io/custom?liveKitUrl={settings.url}&token={token}\n"
        f"make it speak:  curl -X POST http://127.0.0.1:{port}/rooms/{room}/speak "
        '-H \'Content-Type: application/json\' -d \'{"text": "Hello room", '
        '"language": "en"}\'\n'
    )


def run_dev(
    config: ServiceConfig, config_file: str | None, *, port: int, livekit_port: int, room: str
) -> int:
    # the dev server's key pair is short on purpose (loopback only)
    warnings.filterwarnings("ignore", message="The HMAC key is .* bytes long")
    server: DevServer | None = None
    url = os.environ.get("LIVEKIT_URL")
    worker_port = free_port()
    worker_urls = (f"http://127.0.0.1:{worker_port}/worker",)
    name = config.agent.agent_name
    if url:
        settings = LiveKitSettings(
            url,
            os.environ.get("LIVEKIT_API_KEY", DEV_API_KEY),
            os.environ.get("LIVEKIT_API_SECRET", DEV_API_SECRET),
            name,
            worker_urls,
        )
    else:
        webhook = f"http://127.0.0.1:{port}/livekit/webhook"
        server = DevServer.start(livekit_port, webhook_urls=[webhook])
        settings = LiveKitSettings(
            server.url, server.api_key, server.api_secret, name, worker_urls
        )
    env = {
        **os.environ,
        "LIVEKIT_URL": settings.url,
        "LIVEKIT_API_KEY": settings.api_key,
        "LIVEKIT_API_SECRET": settings.api_secret,
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "hive_tts.cli"]
    if config_file:
        command += ["--config", config_file]
    command += ["agent", "--metrics-port", str(worker_port), "--health-port", "0"]
    worker = WorkerChild(command, env)
    try:
        app = create_app(config, livekit=settings)
        token = join_token(settings, room, "listener")
        print(
            f"LiveKit server: {settings.url} (key {settings.api_key})\n"
            f"control API:    http://127.0.0.1:{port}\n"
            f"demo room:      {room}\n"
            f"join token:     {token}\n"
            "starting:       the agent worker is loading its engines; "
            "the lines to try it follow once it has registered",
            flush=True,
        )

        async def when_registered(app: web.Application) -> None:
            async def announce() -> None:
                await asyncio.to_thread(worker.registered.wait)
                print(_ready_lines(settings, port, room, token), flush=True)
                await _greet_first_listener(app[ROOMS_KEY], settings, room)

            app[GREETER_KEY] = asyncio.create_task(announce())

        app.on_startup.append(when_registered)
        web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True)
    finally:
        # a second Ctrl-C while the worker drains: stop waiting for it
        signal.signal(signal.SIGINT, lambda *_: worker.process.kill())
        print("stopping: the agent worker finishes what it is saying", flush=True)
        worker.stop(config.agent.drain_timeout_s + STOP_MARGIN_S)
        if server is not None:
            server.stop()
        print("stopped", flush=True)
    return 0

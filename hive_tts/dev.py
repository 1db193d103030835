"""``hive-tts dev``: a LiveKit server, the agent worker and the control API, on loopback;
``hive-tts cluster``: the same with Redis, several LiveKit nodes and a worker on each.

The LiveKit server is the one at ``$LIVEKIT_URL`` when that is set, else a local
``livekit-server --dev`` (from the build cache or PATH). The worker runs as a child process
(``hive-tts agent``); the control API runs here. The studio page's URL is printed first, then a
join token for a demo room so a person can listen; the agent greets the first listener who joins.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from livekit import api as lkapi

from agent.livekit_cluster import LiveKitCluster
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
        self._terminated = False
        self._reader = threading.Thread(target=self._read, name="worker-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            print(f"[worker] {line.rstrip()}", flush=True)
            if line.startswith("registered worker "):
                self.registered.set()

    def terminate(self) -> None:
        """One SIGTERM: the worker drains (a second signal would cut it short)."""
        if not self._terminated and self.process.poll() is None:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def stop(self, timeout_s: float) -> int:
        """Terminate, then SIGKILL after ``timeout_s``; its exit status."""
        self.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=2)
        return self.process.returncode


def studio_url(port: int, room: str) -> str:
    """The studio page (voices, try them, the demo room, health) on the control API."""
    return f"http://127.0.0.1:{port}/?room={quote(room, safe='')}"


def _ready_lines(settings: LiveKitSettings, port: int, room: str, token: str) -> str:
    return (
        f"ready: the agent workers are registered with LiveKit ({settings.url})\n"
        f"open the page:  {studio_url(port, room)}  (Room: join, hear the agent)\n"
        f"listen:         https://meet.livekit.io/custom?liveKitUrl={settings.url}&token={token}\n"
        f"make it speak:  curl -X POST http://127.0.0.1:{port}/rooms/{room}/speak "
        '-H \'Content-Type: application/json\' -d \'{"text": "Hello room", '
        '"language": "en"}\'\n'
    )


def _worker_command(config_file: str | None, metrics_port: int) -> list[str]:
    command = [sys.executable, "-m", "hive_tts.cli"]
    if config_file:
        command += ["--config", config_file]
    return [*command, "agent", "--metrics-port", str(metrics_port), "--health-port", "0"]


def _worker_env(url: str, settings: LiveKitSettings) -> dict[str, str]:
    return {
        **os.environ,
        "LIVEKIT_URL": url,
        "LIVEKIT_API_KEY": settings.api_key,
        "LIVEKIT_API_SECRET": settings.api_secret,
        "PYTHONUNBUFFERED": "1",
    }


def _serve(
    config: ServiceConfig,
    settings: LiveKitSettings,
    workers: list[WorkerChild],
    *,
    port: int,
    room: str,
    banner: str,
) -> None:
    """The control API in the foreground until Ctrl-C; then every worker drains and stops."""
    try:
        app = create_app(config, livekit=settings)
        token = join_token(settings, room, "listener")
        print(
            f"open the page:  {studio_url(port, room)}\n"
            f"{banner}"
            f"control API:    http://127.0.0.1:{port}\n"
            f"demo room:      {room}\n"
            f"join token:     {token}\n"
            "starting:       the agent worker is loading its engines; "
            "the lines to try it follow once it has registered",
            flush=True,
        )

        async def when_registered(app: web.Application) -> None:
            async def announce() -> None:
                for worker in workers:
                    await asyncio.to_thread(worker.registered.wait)
                print(_ready_lines(settings, port, room, token), flush=True)
                await _greet_first_listener(app[ROOMS_KEY], settings, room)

            app[GREETER_KEY] = asyncio.create_task(announce())

        app.on_startup.append(when_registered)
        web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True)
    finally:
        # a second Ctrl-C while the workers drain: stop waiting for them
        def kill_all(*_: object) -> None:
            for worker in workers:
                worker.kill()

        signal.signal(signal.SIGINT, kill_all)
        print("stopping: the agent workers finish what they are saying", flush=True)
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.stop(config.agent.drain_timeout_s + STOP_MARGIN_S)


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
        settings = LiveKitSettings(server.url, server.api_key, server.api_secret, name, worker_urls)
    try:
        worker = WorkerChild(
            _worker_command(config_file, worker_port), _worker_env(settings.url, settings)
        )
        banner = f"LiveKit server: {settings.url} (key {settings.api_key})\n"
        _serve(config, settings, [worker], port=port, room=room, banner=banner)
    finally:
        if server is not None:
            server.stop()
        print("stopped", flush=True)
    return 0


def run_cluster(
    config: ServiceConfig, config_file: str | None, *, port: int, nodes: int, room: str
) -> int:
    """``hive-tts cluster``: Redis, ``nodes`` LiveKit nodes sharing it, one worker per node,
    and the control API receiving every node's webhooks; all on loopback."""
    warnings.filterwarnings("ignore", message="The HMAC key is .* bytes long")
    log_dir = Path(tempfile.mkdtemp(prefix="hive-tts-cluster-"))
    webhook = f"http://127.0.0.1:{port}/livekit/webhook"
    cluster = LiveKitCluster.start(nodes, log_dir=log_dir, webhook_urls=[webhook])
    try:
        worker_ports = [free_port() for _ in cluster.nodes]
        first = cluster.nodes[0]
        settings = LiveKitSettings(
            first.url,
            first.api_key,
            first.api_secret,
            config.agent.agent_name,
            tuple(f"http://127.0.0.1:{p}/worker" for p in worker_ports),
        )
        workers = [
            WorkerChild(_worker_command(config_file, p), _worker_env(node.url, settings))
            for node, p in zip(cluster.nodes, worker_ports, strict=True)
        ]
        banner = (
            f"redis:          {cluster.redis.address}\n"
            + "".join(
                f"LiveKit node {n}: {node.url} (worker /worker on port {p})\n"
                for n, (node, p) in enumerate(zip(cluster.nodes, worker_ports, strict=True))
            )
            + f"logs:           {log_dir}\n"
        )
        _serve(config, settings, workers, port=port, room=room, banner=banner)
    finally:
        cluster.stop()
        print("stopped", flush=True)
    return 0

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
import warnings
from datetime import timedelta

from aiohttp import web
from livekit import api as lkapi

from agent.livekit_server import DEV_API_KEY, DEV_API_SECRET, DevServer
from agent.speak_request import AGENT_ATTRIBUTE
from api.rooms import LiveKitSettings, RoomsService
from control_api import create_app
from engines.config import ServiceConfig

GREETING = "Hello! This is HIVE TTS speaking in your LiveKit room."
TOKEN_TTL = timedelta(hours=12)
LISTENER_POLL_S = 1.0


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


def run_dev(
    config: ServiceConfig, config_file: str | None, *, port: int, livekit_port: int, room: str
) -> int:
    # the dev server's key pair is short on purpose (loopback only)
    warnings.filterwarnings("ignore", message="The HMAC key is .* bytes long")
    server: DevServer | None = None
    url = os.environ.get("LIVEKIT_URL")
    if url:
        settings = LiveKitSettings(
            url,
            os.environ.get("LIVEKIT_API_KEY", DEV_API_KEY),
            os.environ.get("LIVEKIT_API_SECRET", DEV_API_SECRET),
            config.agent.agent_name,
        )
    else:
        server = DevServer.start(livekit_port)
        settings = LiveKitSettings(
            server.url, server.api_key, server.api_secret, config.agent.agent_name
        )
    env = {
        **os.environ,
        "LIVEKIT_URL": settings.url,
        "LIVEKIT_API_KEY": settings.api_key,
        "LIVEKIT_API_SECRET": settings.api_secret,
    }
    command = [sys.executable, "-m", "hive_tts.cli"]
    if config_file:
        command += ["--config", config_file]
    worker = subprocess.Popen([*command, "agent"], env=env)
    try:
        app = create_app(config, livekit=settings)
        token = join_token(settings, room, "listener")
        print(
            f"LiveKit server: {settings.url} (key {settings.api_key})\n"
            f"control API:    http://127.0.0.1:{port}\n"
            f"demo room:      {room}\n"
            f"join token:     {token}\n"
            "listen:         https://meet.livekit.io/custom?liveKitUrl="
            f"{settings.url}&token={token}\n"
            f"make it speak:  curl -X POST http://127.0.0.1:{port}/rooms/{room}/speak "
            '-H \'Content-Type: application/json\' -d \'{"text": "Hello room", '
            '"language": "en"}\'\n',
            flush=True,
        )

        async def greet(app: web.Application) -> None:
            from api.rooms import ROOMS_KEY

            task = asyncio.create_task(_greet_first_listener(app[ROOMS_KEY], settings, room))
            app["greeter"] = task

        app.on_startup.append(greet)
        web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if server is not None:
            server.stop()
    return 0

"""livekit-server restarted mid-utterance (crashed, then started again on the same port): the
worker reconnects and registers again without being restarted itself, the room gets its agent
back when asked, and nothing hangs on either side."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

from agent.livekit_server import DevServer
from engines.config import ServiceConfig
from engines.synthesizer import SpeechSynthesizer
from tests.api_fixtures import rooms_api
from tests.conftest import AGENT_TEST_CONFIG
from tests.livekit_fixtures import Participant, WorkerProcess, room_name, settings_for

LONG = (
    "This announcement is long on purpose, so that the server goes away while it is still "
    "being spoken, somewhere in the middle of a sentence about trains and platforms."
)
AFTER = "The room has its voice again after the restart."
EVENT_WAIT_S = 120.0
REREGISTER_TIMEOUT_S = 90.0


def worker_status(worker: WorkerProcess) -> dict[str, object]:
    assert worker.metrics_url is not None
    url = worker.metrics_url.replace("/metrics", "/worker")
    with urllib.request.urlopen(url, timeout=5) as reply:
        body = json.loads(reply.read())
    assert isinstance(body, dict)
    return body


async def wait_registered_again(worker: WorkerProcess, before: int) -> None:
    deadline = time.monotonic() + REREGISTER_TIMEOUT_S
    while sum(line.startswith("registered worker ") for line in worker.lines) <= before:
        assert worker.process.poll() is None, worker.log_tail()
        assert time.monotonic() < deadline, worker.log_tail()
        await asyncio.sleep(0.5)


async def test_a_restarted_server_gets_its_worker_back_and_the_room_speaks_again(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer, tmp_path: Path
) -> None:
    repo = Path(__file__).resolve().parent.parent
    config = tmp_path / "config.yaml"
    config.write_text(
        AGENT_TEST_CONFIG + f"voices_file: {repo / 'voices.yaml'}\nmodels_dir: {repo / 'models'}\n"
    )
    server = DevServer.start(log_dir=tmp_path)
    worker = WorkerProcess(server, config, tmp_path / "worker.log")
    try:
        await asyncio.to_thread(worker.wait_registered)
        name = room_name("restart")
        async with rooms_api(service_config, synthesizer, settings_for(server)) as api:
            listener = await Participant("listener").join(server, name)
            reply = await api.post(
                f"/rooms/{name}/speak", json={"text": LONG, "reply_to": "listener"}
            )
            body = await reply.json()
            assert reply.status == 202, body
            await listener.wait_event(str(body["id"]), "started", EVENT_WAIT_S)

            registrations = sum(line.startswith("registered worker ") for line in worker.lines)
            server.kill()  # mid-utterance, as a crash would
            restarted = await asyncio.to_thread(DevServer.start, server.port, log_dir=tmp_path)
            server = restarted
            await wait_registered_again(worker, registrations)
            assert worker.process.poll() is None  # reconnected, not restarted
            assert worker_status(worker).get("registered") is True
            await listener.leave()  # the old connection is gone with the old server

            # a client joins again, as it would; asked to speak, the room gets its agent back
            again = await Participant("listener-again").join(server, name)
            try:
                reply = await api.post(
                    f"/rooms/{name}/speak", json={"text": AFTER, "reply_to": "listener-again"}
                )
                body = await reply.json()
                assert reply.status == 202, body
                finished = await again.wait_event(str(body["id"]), "finished", EVENT_WAIT_S)
                assert finished["interrupted"] is False

                def heard() -> bool:
                    track = again.tracks.get("tts-en")
                    return track is not None and track.audible_seconds(0.0) > 1.0

                await again.wait_for(heard, 30.0, "the room's voice after the restart")
            finally:
                await again.leave()
    finally:
        await asyncio.to_thread(worker.stop)
        server.stop()

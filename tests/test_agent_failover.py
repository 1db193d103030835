"""A room keeps its agent when the worker serving it dies, and its room closing ends the job.

Each test here runs its own LiveKit server whose webhooks go to a control API on a known port,
with two ``hive-tts agent`` workers: the control API brings a new agent from the surviving
worker, replays what it sent from the piece that was playing, and the new agent tells other
senders that their accepted requests were lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from livekit import api as lkapi

from agent.livekit_server import BUILD_CACHE, SERVER_ENV, DevServer, free_port
from engines.audio import LIVEKIT_SAMPLE_RATE
from engines.config import ServiceConfig
from engines.synthesizer import SpeechSynthesizer
from tests.api_fixtures import ApiClient, rooms_api
from tests.livekit_fixtures import (
    Participant,
    WorkerProcess,
    room_name,
    running_workers,
    settings_for,
)
from tests.transcriber import Transcriber

LONG_TEXT = (
    "This announcement is long on purpose. The first part is spoken by one worker. "
    "Then that worker is stopped without warning. The rest of the announcement must still "
    "be heard, spoken by another worker, from the sentence that was playing."
)
TAIL_WORDS = ("rest", "another", "worker")
RECOVERY_TIMEOUT_S = 90.0
EXIT_TIMEOUT_S = 60.0

pytestmark = pytest.mark.asyncio(loop_scope="session")


@dataclass
class Cluster:
    server: DevServer
    workers: list[WorkerProcess]
    api: ApiClient


@pytest.fixture(scope="module")
def webhook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevServer, int]]:
    """A LiveKit server whose webhooks go to the port the control API will take."""
    import os

    os.environ.setdefault(SERVER_ENV, str(BUILD_CACHE / "livekit-server"))
    api_port = free_port()
    server = DevServer.start(
        log_dir=tmp_path_factory.mktemp("livekit-webhooks"),
        webhook_urls=[f"http://127.0.0.1:{api_port}/livekit/webhook"],
    )
    yield server, api_port
    server.stop()


@pytest.fixture
async def cluster(
    webhook_server: tuple[DevServer, int],
    agent_config_file: Path,
    service_config: ServiceConfig,
    synthesizer: SpeechSynthesizer,
    tmp_path: Path,
) -> AsyncIterator[Cluster]:
    server, api_port = webhook_server
    async with running_workers([server, server], agent_config_file, tmp_path) as workers:
        settings = settings_for(server)
        async with rooms_api(service_config, synthesizer, settings, port=api_port) as client:
            yield Cluster(server, workers, client)


async def test_killed_workers_room_speaks_again_from_the_other_worker(
    cluster: Cluster, transcriber: Transcriber
) -> None:
    room = room_name("failover")
    listener = await Participant("listener").join(cluster.server, room)
    sender = await Participant("sender").join(cluster.server, room)
    try:
        reply = await cluster.api.post(
            f"/rooms/{room}/speak",
            json={
                "id": "announcement",
                "text": LONG_TEXT,
                "language": "en",
                "reply_to": "listener",
            },
        )
        assert reply.status == 202, await reply.text()
        await listener.wait_event("announcement", "started")
        await sender.send({"id": "behind-it", "text": "I wait my turn.", "language": "en"})
        await sender.wait_event("behind-it", "queued")
        first_agent = next(
            p.identity
            for p in listener.room.remote_participants.values()
            if p.attributes.get("hive-tts.agent")
        )
        await asyncio.sleep(2.0)  # the first sentences are heard
        serving = next(w for w in cluster.workers if room in w.rooms())
        killed_at = time.perf_counter()
        await asyncio.to_thread(serving.kill_worker)

        # the sender's accepted request is reported lost by the new agent, never dropped
        lost = await sender.wait_event("behind-it", "error", RECOVERY_TIMEOUT_S)
        assert lost["code"] == "agent_lost"

        # the announcement goes on: started again, from another agent, on the survivor
        def restarted() -> bool:
            starts = [
                at
                for at, e in listener.events
                if e.get("id") == "announcement" and e.get("type") == "started" and at > killed_at
            ]
            return bool(starts)

        await listener.wait_for(restarted, RECOVERY_TIMEOUT_S, "the announcement to start again")
        finished = await listener.wait_event("announcement", "finished", RECOVERY_TIMEOUT_S)
        assert finished["interrupted"] is False
        agents = [
            p.identity
            for p in listener.room.remote_participants.values()
            if p.attributes.get("hive-tts.agent")
        ]
        assert agents and first_agent not in agents
        # the survivor, or the killed worker's restart if it registered first
        assert any(room in w.rooms() for w in cluster.workers)

        track = listener.tracks["tts-en"]
        resumed_at = track.first_audible(killed_at + 0.5)
        assert resumed_at is not None
        print(f"recovery after SIGKILL: {resumed_at - killed_at:.1f} s to speech again")
        heard = transcriber.transcribe(track.audio(since=resumed_at), LIVEKIT_SAMPLE_RATE)
        words = heard.lower()
        assert all(word in words for word in TAIL_WORDS), heard
        assert "long on purpose" not in words, heard  # replayed from where it was, not anew
    finally:
        await listener.leave()
        await sender.leave()


async def test_a_room_closed_mid_utterance_ends_its_job_at_once(cluster: Cluster) -> None:
    room = room_name("closing")
    listener = await Participant("listener").join(cluster.server, room)
    try:
        reply = await cluster.api.post(
            f"/rooms/{room}/speak",
            json={"id": "cut", "text": LONG_TEXT, "language": "en", "reply_to": "listener"},
        )
        assert reply.status == 202
        await listener.wait_event("cut", "started")
        serving = next(w for w in cluster.workers if room in w.rooms())
        async with lkapi.LiveKitAPI(
            cluster.server.http_url, cluster.server.api_key, cluster.server.api_secret
        ) as client:
            await client.room.delete_room(lkapi.DeleteRoomRequest(room=room))
        closed_at = time.monotonic()
        while room in serving.rooms():
            assert time.monotonic() - closed_at < 10.0, "the job outlived its room"
            await asyncio.sleep(0.2)
        # and the worker still serves new rooms
        other = room_name("after-close")
        again = await cluster.api.post(f"/rooms/{other}/speak", json={"text": "Still here."})
        assert again.status == 202, await again.text()
    finally:
        await listener.leave()

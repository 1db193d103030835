"""The agent driven from outside a room: control API routes, participant attributes, metrics."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.livekit_server import DevServer
from api.rooms import LiveKitSettings
from control_api import create_app
from engines.audio import LIVEKIT_SAMPLE_RATE
from engines.config import ServiceConfig
from engines.synthesizer import SpeechSynthesizer
from tests.api_fixtures import serve
from tests.livekit_fixtures import (
    Participant,
    WorkerProcess,
    dispatch_agent,
    room_name,
    wait_agent_ready,
)
from tests.transcriber import Transcriber, word_error_rate

SPOKEN = "Good evening, the conference starts in five minutes."
MAX_WER = 0.2

pytestmark = pytest.mark.asyncio(loop_scope="session")


def metric_values(worker: WorkerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert worker.metrics_url is not None
    with urllib.request.urlopen(worker.metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_control_api_dispatches_the_agent_and_it_speaks(
    livekit_server: DevServer,
    agent_worker: WorkerProcess,
    service_config: ServiceConfig,
    synthesizer: SpeechSynthesizer,
    transcriber: Transcriber,
) -> None:
    room = room_name("api")
    listener = await Participant("listener").join(livekit_server, room)
    settings = LiveKitSettings(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret, "hive-tts"
    )
    app = create_app(
        service_config, synthesizer=synthesizer, quality_scoring=False, livekit=settings
    )
    try:
        async with serve(app) as client:
            reply = await client.post(
                f"/rooms/{room}/speak",
                json={"text": SPOKEN, "language": "en", "reply_to": "listener"},
            )
            assert reply.status == 202, await reply.text()
            body = await reply.json()
            assert body["dispatched"] is True and body["room"] == room
            request_id = str(body["id"])
            finished = await listener.wait_event(request_id, "finished")
            assert finished["interrupted"] is False
            await asyncio.sleep(0.5)
            heard = transcriber.transcribe(listener.tracks["tts-en"].audio(), LIVEKIT_SAMPLE_RATE)
            assert word_error_rate(SPOKEN, heard) <= MAX_WER, heard

            again = await client.post(f"/rooms/{room}/speak", json={"text": "Once more."})
            assert (await again.json())["dispatched"] is False

            listing = await (await client.get("/rooms")).json()
            ours = next(r for r in listing["rooms"] if r["room"] == room)
            assert ours["tracks"][0]["name"] == "tts-en"
            assert ours["tracks"][0]["language"] == "en"

            bad = await client.post(f"/rooms/{room}/speak", json={"text": "Hi", "mode": "yell"})
            assert bad.status == 400
            assert (await bad.json())["error"]["code"] == "invalid_option"
    finally:
        await listener.leave()


async def test_room_routes_without_livekit_say_what_to_configure(
    service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> None:
    app = create_app(service_config, synthesizer=synthesizer, quality_scoring=False)
    async with serve(app) as client:
        reply = await client.post("/rooms/x/speak", json={"text": "Hi"})
        assert reply.status == 503
        error = (await reply.json())["error"]
        assert error["code"] == "livekit_not_configured" and "LIVEKIT_URL" in error["message"]


async def test_participant_attribute_makes_the_agent_speak(
    livekit_server: DevServer, agent_worker: WorkerProcess
) -> None:
    room = room_name("attribute")
    await dispatch_agent(livekit_server, room)
    guest = await Participant("guest").join(livekit_server, room, {"tts.speak": "Welcome aboard."})
    try:
        await wait_agent_ready(guest)
        await guest.wait_for(
            lambda: any(e["type"] == "finished" for _, e in guest.events), what="finished"
        )
        await guest.room.local_participant.set_attributes(
            {"tts.speak": '{"id": "attr-json", "text": "And again.", "language": "en"}'}
        )
        assert (await guest.wait_event("attr-json", "finished"))["interrupted"] is False
    finally:
        await guest.leave()


async def test_worker_metrics_count_rooms_and_utterances(
    livekit_server: DevServer, agent_worker: WorkerProcess
) -> None:
    room = room_name("metrics")
    await dispatch_agent(livekit_server, room)
    sender = await Participant("sender").join(livekit_server, room)
    try:
        await wait_agent_ready(sender)
        before = metric_values(agent_worker)
        await sender.send({"id": "m1", "text": "Counting.", "language": "en"})
        await sender.wait_event("m1", "finished")
        after = metric_values(agent_worker)
        ok = (
            "tts_synthesis_requests_total",
            (("engine", "piper"), ("language", "en"), ("outcome", "ok")),
        )
        assert after[ok] == before.get(ok, 0.0) + 1
        assert after[("tts_rooms_active", ())] >= 1
        assert after[("tts_room_tracks", (("room", room),))] == 1
        assert ("tts_ttft_duration_seconds_count", (("engine", "piper"),)) in after
        assert 0.0 <= after[("tts_worker_load", ())] <= 1.0
        # each room's loop is probed once a second, without livekit-agents' watchdog threads
        lag_count = ("tts_room_loop_lag_seconds_count", ())
        for _ in range(50):  # the room's first probe is a second after it joined
            if metric_values(agent_worker).get(lag_count, 0.0) >= 1:
                break
            await asyncio.sleep(0.1)
        assert metric_values(agent_worker)[lag_count] >= 1
        assert not watchdog_threads(agent_worker)
    finally:
        await sender.leave()


def watchdog_threads(worker: WorkerProcess) -> list[str]:
    """livekit-agents' loop-monitor threads in the worker's processes (off by default)."""
    assert worker.process is not None
    found: list[str] = []
    for process in [
        psutil.Process(worker.process.pid),
        *psutil.Process(worker.process.pid).children(),
    ]:
        for thread in process.threads():
            name = Path(f"/proc/{process.pid}/task/{thread.id}/comm").read_text().strip()
            if name.startswith("livekit-loop"):
                found.append(name)
    return found

"""Every dispatched room gets its agent: bursts of rooms on one worker, through the control API
and through LiveKit's own load tester.

Runs on the session's dev LiveKit server with the module's one ``hive-tts agent`` worker.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.livekit_server import BUILD_CACHE, LK_ENV, DevServer, find_binary
from engines.audio import LIVEKIT_SAMPLE_RATE
from engines.config import ServiceConfig
from engines.synthesizer import SpeechSynthesizer
from tests.api_fixtures import ApiClient, rooms_api
from tests.livekit_fixtures import (
    Participant,
    WorkerProcess,
    room_name,
    settings_for,
)
from tests.transcriber import Transcriber, word_error_rate

BURST_ROOMS = 8
LOAD_TEST_ROOMS = 16
LOAD_TEST_DURATION_S = 45
"""Long enough for a room LiveKit dropped while the worker was busy to get its agent from the
control API's look at the rooms (every 2 s, dispatching again after 6 s)."""
ROOM_WORDS = ("blue", "green", "orange", "purple", "silver", "golden", "yellow", "crimson")
SPOKEN = "Welcome to the {word} room, the translation starts now."
MAX_WER = 0.2
HEARD_TIMEOUT_S = 120.0
HEARD_SECONDS = 1.0

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def api(
    livekit_server: DevServer, service_config: ServiceConfig, synthesizer: SpeechSynthesizer
) -> AsyncIterator[ApiClient]:
    async with rooms_api(service_config, synthesizer, settings_for(livekit_server)) as client:
        yield client


async def heard(listener: Participant) -> None:
    def enough() -> bool:
        track = listener.tracks.get("tts-en")
        return track is not None and track.audible_seconds(0.0) > HEARD_SECONDS

    await listener.wait_for(enough, HEARD_TIMEOUT_S, f"speech heard by {listener.identity}")


def spoken(n: int) -> str:
    return SPOKEN.format(word=ROOM_WORDS[n % len(ROOM_WORDS)])


async def test_a_burst_of_rooms_all_get_the_agent_and_speak(
    livekit_server: DevServer,
    agent_worker: WorkerProcess,
    api: ApiClient,
    transcriber: Transcriber,
) -> None:
    names = [room_name(f"burst{n}") for n in range(BURST_ROOMS)]
    listeners = [
        await Participant(f"listener-{n}").join(livekit_server, name)
        for n, name in enumerate(names)
    ]
    try:

        async def speak(n: int) -> tuple[int, dict[str, object]]:
            reply = await api.post(
                f"/rooms/{names[n]}/speak",
                json={"text": spoken(n), "language": "en", "reply_to": f"listener-{n}"},
            )
            return reply.status, await reply.json()

        answers = await asyncio.gather(*(speak(n) for n in range(BURST_ROOMS)))
        assert [status for status, _ in answers] == [202] * BURST_ROOMS, answers
        for listener in listeners:  # the audio itself, heard in every room
            await heard(listener)
        for n, listener in enumerate(listeners):
            request_id = str(answers[n][1]["id"])
            finished = await listener.wait_event(request_id, "finished", HEARD_TIMEOUT_S)
            assert finished["interrupted"] is False
        assert set(names) <= set(agent_worker.rooms())
        # the words asked for, in the first and the last room of the burst, each spoken alone
        # (eight rooms speaking at once is more than two cores synthesize in real time)
        for n in (0, BURST_ROOMS - 1):
            since = time.perf_counter()
            _, body = await speak(n)
            await listeners[n].wait_event(str(body["id"]), "finished", HEARD_TIMEOUT_S)
            await asyncio.sleep(0.5)
            audio = listeners[n].tracks["tts-en"].audio(since)
            text = transcriber.transcribe(audio, LIVEKIT_SAMPLE_RATE)
            assert word_error_rate(spoken(n), text) <= MAX_WER, text
    finally:
        await asyncio.gather(*(listener.leave() for listener in listeners))


def lk_binary() -> Path:
    os.environ.setdefault(LK_ENV, str(BUILD_CACHE / "lk"))
    return find_binary("lk", LK_ENV)


async def test_livekit_load_tester_gets_the_agent_in_every_room(
    livekit_server: DevServer, agent_worker: WorkerProcess, api: ApiClient
) -> None:
    """``lk perf agent-load-test --rooms 16``: LiveKit dispatches 16 rooms as fast as it can;
    every one is joined (the tester's own tally, and the worker's room list). The control API
    runs beside it, as deployed: a room LiveKit dropped while the worker was busy gets its agent
    from the API's look at the rooms that have our dispatch."""
    before = set(agent_worker.rooms())
    command = [
        str(lk_binary()),
        "--url",
        livekit_server.url,
        "--api-key",
        livekit_server.api_key,
        "--api-secret",
        livekit_server.api_secret,
        "perf",
        "agent-load-test",
        "--rooms",
        str(LOAD_TEST_ROOMS),
        "--agent-name",
        "hive-tts",
        "--duration",
        f"{LOAD_TEST_DURATION_S}s",
        "--attribute",
        "tts.speak=Hello from the load test.",
    ]
    tester = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    joined: set[str] = set()

    async def watch() -> None:
        while tester.returncode is None:
            joined.update(set(agent_worker.rooms()) - before)
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    try:
        output, _ = await asyncio.wait_for(tester.communicate(), LOAD_TEST_DURATION_S + 90)
    finally:
        watcher.cancel()
        if tester.returncode is None:
            tester.kill()
    text = output.decode(errors="replace")
    assert tester.returncode == 0, text[-3000:]
    assert len(joined) == LOAD_TEST_ROOMS, (sorted(joined), text[-3000:])
    # the tester's own table: one row per room, its fourth column ticked when the agent joined
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in text.splitlines()
        if re.match(r"^│\s*\d+\s*│\s*room-", line)
    ]
    assert len(rows) == LOAD_TEST_ROOMS, text[-3000:]
    assert all(row[3] == "✓" for row in rows), text[-3000:]

"""Workers come and go: LiveKit's dispatch moves work to a live worker; SIGTERM drains.

Each test starts its own ``hive-tts agent`` processes against the shared dev server.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.livekit_server import DevServer
from tests.livekit_fixtures import (
    Participant,
    WorkerProcess,
    dispatch_agent,
    room_name,
    wait_agent_ready,
)

LONG_TEXT = (
    "Please listen carefully, because this message is long enough to still be playing when "
    "the worker is asked to stop, and it must be heard to the very last word."
)
EXIT_TIMEOUT_S = 60.0

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def start_worker(
    livekit_server: DevServer, agent_config_file: Path, tmp_path: Path
) -> Iterator[list[WorkerProcess]]:
    workers: list[WorkerProcess] = []
    yield workers
    for worker in workers:
        worker.stop()


def launch(server: DevServer, config: Path, tmp_path: Path, name: str) -> WorkerProcess:
    worker = WorkerProcess(server, config, tmp_path / f"{name}.log")
    worker.wait_registered()
    return worker


async def test_second_worker_takes_the_next_room_when_the_first_is_killed(
    livekit_server: DevServer,
    agent_config_file: Path,
    tmp_path: Path,
    start_worker: list[WorkerProcess],
) -> None:
    first = launch(livekit_server, agent_config_file, tmp_path, "first")
    start_worker.append(first)
    second = launch(livekit_server, agent_config_file, tmp_path, "second")
    start_worker.append(second)

    room_a = room_name("failover-a")
    await dispatch_agent(livekit_server, room_a)
    listener = await Participant("listener").join(livekit_server, room_a)
    await wait_agent_ready(listener)
    serving = first if room_a in first.rooms() else second
    other = second if serving is first else first
    assert room_a in serving.rooms()
    await listener.leave()

    serving.signal(signal.SIGKILL)
    serving.wait(EXIT_TIMEOUT_S)

    room_b = room_name("failover-b")
    await dispatch_agent(livekit_server, room_b)
    sender = await Participant("sender").join(livekit_server, room_b)
    try:
        await wait_agent_ready(sender)
        assert room_b in other.rooms()
        await sender.send({"id": "after-kill", "text": "I am the other worker.", "language": "en"})
        finished = await sender.wait_event("after-kill", "finished")
        assert finished["interrupted"] is False
    finally:
        await sender.leave()


async def test_sigterm_finishes_the_utterance_then_exits(
    livekit_server: DevServer,
    agent_config_file: Path,
    tmp_path: Path,
    start_worker: list[WorkerProcess],
) -> None:
    worker = launch(livekit_server, agent_config_file, tmp_path, "draining")
    start_worker.append(worker)
    room = room_name("drain")
    await dispatch_agent(livekit_server, room)
    sender = await Participant("sender").join(livekit_server, room)
    try:
        await wait_agent_ready(sender)
        await sender.send({"id": "last-words", "text": LONG_TEXT, "language": "en"})
        await sender.send({"id": "queued", "text": "This waits in the queue.", "language": "en"})
        await sender.wait_event("last-words", "started")
        worker.signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        await sender.send({"id": "too-late", "text": "Anyone there?", "language": "en"})

        finished = await sender.wait_event("last-words", "finished")
        assert finished["interrupted"] is False
        assert float(str(finished["audio_duration_s"])) > 5.0  # all of it, not a cut
        assert (await sender.wait_event("queued", "error"))["code"] == "draining"
        assert (await sender.wait_event("too-late", "error"))["code"] == "draining"
        code = await asyncio.to_thread(worker.wait, EXIT_TIMEOUT_S)
        assert code == 0
        assert any("SIGTERM: draining" in line for line in worker.log_tail().splitlines())
    finally:
        await sender.leave()


DRAIN_BOUND_CONFIG = """\
agent:
  drain_timeout_s: 2
limits:
  max_text_chars: 2000
disabled_engines: [edge-tts]
"""
VERY_LONG_TEXT = " ".join(
    f"This is sentence number {n} of a reading that would take minutes to finish."
    for n in range(24)
)
DRAIN_MARGIN_S = 25.0
"""Beyond the drain bound: closing jobs and connections, on a busy machine (the reading itself
lasts over a minute, so finishing it would overrun this by far)."""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_drain_is_bounded_and_the_worker_exits_cleanly(
    livekit_server: DevServer,
    tmp_path: Path,
    start_worker: list[WorkerProcess],
    sig: signal.Signals,
) -> None:
    config = tmp_path / "config.yaml"
    repo = Path(__file__).resolve().parent.parent
    config.write_text(
        DRAIN_BOUND_CONFIG + f"voices_file: {repo / 'voices.yaml'}\nmodels_dir: {repo / 'models'}\n"
    )
    worker = launch(livekit_server, config, tmp_path, "bounded")
    start_worker.append(worker)
    room = room_name("bounded-drain")
    await dispatch_agent(livekit_server, room)
    sender = await Participant("sender").join(livekit_server, room)
    try:
        await wait_agent_ready(sender)
        await sender.send({"id": "reading", "text": VERY_LONG_TEXT, "language": "en"})
        await sender.wait_event("reading", "started")
        stopped_at = time.monotonic()
        worker.signal(sig)
        code = await asyncio.to_thread(worker.wait, EXIT_TIMEOUT_S)
        took = time.monotonic() - stopped_at
        log = worker.log_tail()
        assert code == 0, log
        assert took < 2 + DRAIN_MARGIN_S, f"exited after {took:.1f} s"
        assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
        assert "rooms still speaking" in log  # the bound cut the reading, not its end
    finally:
        await sender.leave()

"""``hive-tts agent`` keeps its worker alive and makes its crash visible to LiveKit at once.

The worker (engines, rooms, WebRTC) runs as a child process. When it dies without draining
(killed, out of memory, a native crash), LiveKit would keep its agent participants in their rooms
for about 20 s before timing them out (ICE timeouts are fixed in the server), and only then
would ``participant_left`` bring a new agent. The supervisor does not wait: it finds the dead
worker's agent participants (each carries its worker id in the ``hive-tts.worker`` attribute)
and removes them (``RemoveParticipant``), so the webhook fires at once and the control API
dispatches a replacement. Then it starts a new worker.

A signal to the supervisor drains the worker (one SIGTERM passed on) and exits with its status.
If the supervisor itself is killed, the worker dies with it (``PR_SET_PDEATHSIG``) and LiveKit's
own timeout takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

from livekit import api as lkapi

from agent.speak_request import WORKER_ATTRIBUTE

logger = logging.getLogger(__name__)

SUPERVISOR_PID_ENV = "HIVE_TTS_SUPERVISOR_PID"
RESTART_WINDOW_S = 60.0
MAX_RESTARTS_IN_WINDOW = 5
"""More crashes than this within the window: give up (exit non-zero) for an outer supervisor."""
RESTART_DELAY_S = 1.0
SWEEP_TIMEOUT_S = 10.0
EXIT_GAVE_UP = 4
EXIT_LIVEKIT_LOST = 3
"""The worker's status when LiveKit stayed unreachable through all its retries (passed on)."""
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class LiveKitAccess:
    url: str
    api_key: str
    api_secret: str

    @property
    def http_url(self) -> str:
        return self.url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)


def die_with_supervisor() -> None:
    """In the worker: be killed when the supervisor dies (Linux), or exit if it already has."""
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if not supervisor:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(supervisor):
        os._exit(1)


async def remove_agents_of(access: LiveKitAccess, worker_id: str) -> list[tuple[str, str]]:
    """Remove from every room the agent participants that ``worker_id`` served (their
    ``hive-tts.worker`` attribute); returns the (room, identity) pairs removed."""
    removed: list[tuple[str, str]] = []
    async with lkapi.LiveKitAPI(access.http_url, access.api_key, access.api_secret) as client:
        rooms = await client.room.list_rooms(lkapi.ListRoomsRequest())
        for room in rooms.rooms:
            with contextlib.suppress(lkapi.TwirpError):
                reply = await client.room.list_participants(
                    lkapi.ListParticipantsRequest(room=room.name)
                )
                for participant in reply.participants:
                    if participant.attributes.get(WORKER_ATTRIBUTE) != worker_id:
                        continue
                    with contextlib.suppress(lkapi.TwirpError):
                        await client.room.remove_participant(
                            lkapi.RoomParticipantIdentity(
                                room=room.name, identity=participant.identity
                            )
                        )
                        removed.append((room.name, participant.identity))
    return removed


class Supervisor:
    """Runs ``command`` (the worker) and starts it again when it crashes."""

    def __init__(self, command: list[str], access: LiveKitAccess | None) -> None:
        self._command = command
        self._access = access
        self._stopping = threading.Event()
        self._child: subprocess.Popen[str] | None = None
        self._worker_id: str | None = None
        self._crashes: deque[float] = deque()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        while True:
            code = self._run_child()
            if self._stopping.is_set():
                return code
            if code == 0:
                return 0
            self._after_crash(code)
            if code == EXIT_LIVEKIT_LOST:  # its own retries are spent: an outer supervisor's turn
                return code
            now = time.monotonic()
            self._crashes.append(now)
            while self._crashes and now - self._crashes[0] > RESTART_WINDOW_S:
                self._crashes.popleft()
            if len(self._crashes) > MAX_RESTARTS_IN_WINDOW:
                print(
                    f"supervisor: the worker failed {len(self._crashes)} times in "
                    f"{RESTART_WINDOW_S:.0f} s; giving up",
                    file=sys.stderr,
                    flush=True,
                )
                return EXIT_GAVE_UP
            if self._stopping.wait(RESTART_DELAY_S):
                return code

    def _on_signal(self, signum: int, _: object) -> None:
        child = self._child
        if self._stopping.is_set():  # a second signal: stop waiting for the drain
            if child is not None and child.poll() is None:
                child.kill()
            return
        self._stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def _run_child(self) -> int:
        env = {**os.environ, SUPERVISOR_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        child = subprocess.Popen(
            self._command, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        self._child = child
        self._worker_id = None
        if self._stopping.is_set():  # a signal came while it started
            child.send_signal(signal.SIGTERM)
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.startswith("registered worker "):
                self._worker_id = line.split()[-1]
        return child.wait()

    def _after_crash(self, code: int) -> None:
        how = f"signal {-code}" if code < 0 else f"status {code}"
        print(f"supervisor: the worker ended with {how}; restarting it", flush=True)
        if self._access is None or self._worker_id is None:
            return
        try:
            removed = asyncio.run(
                asyncio.wait_for(remove_agents_of(self._access, self._worker_id), SWEEP_TIMEOUT_S)
            )
        except Exception as exc:  # LiveKit itself unreachable: its own timeout will do it
            print(f"supervisor: could not reach LiveKit to release rooms: {exc}", flush=True)
            return
        for room, identity in removed:
            print(f"supervisor: released room {room} (agent {identity})", flush=True)

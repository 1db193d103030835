"""The LiveKit agent worker: ``hive-tts agent``.

One process loads the engines once (:class:`EngineHost`) and serves every room it is
dispatched to; rooms run as livekit-agents thread jobs, each on its own loop, all streaming
from the shared engines. Load (CPU and engine queue) is reported to the server, which stops
sending rooms above ``agent.load_threshold``. SIGTERM: no new rooms, no new text, the
utterances being spoken finish, then the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web
from livekit import rtc
from livekit.agents import AgentServer, AutoSubscribe, JobContext, JobExecutorType, JobRequest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.engine_host import EngineHost
from agent.load_monitor import LoadMonitor
from agent.loop_lag import watch_loop_lag
from agent.registration import Registration
from agent.room_session import RoomSession
from agent.speak_policy import SpeakPolicy
from agent.speak_request import AGENT_ATTRIBUTE, READY_ATTRIBUTE, WORKER_ATTRIBUTE
from agent.speech_journal import replaced_in
from agent.supervisor import EXIT_LIVEKIT_LOST
from api.memory_guard import MemoryGuard
from api.service_metrics import WorkerMetrics
from engines.config import ServiceConfig

logger = logging.getLogger(__name__)

EXIT_SECOND_SIGNAL = 130
CONNECT_POLL_S = 0.02
CONNECT_TIMEOUT_S = 10.0
READY_CONFIRM_S = 3.0
"""How long the server has to echo the agent's ready attribute before it is set again."""
READY_ATTEMPTS = 4
"""A room connection that takes longer fails its job (the control API dispatches again)."""
CLOSE_TIMEOUT_S = 10.0
"""After the drain, how long closing jobs and connections may take."""

LOOP_MONITOR_ENV = "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS"
"""livekit-agents' per-job loop watchdog: ``0`` turns it off (``agent.loop_monitor``)."""

AGENT_IDENTITY_PREFIX = "hive-tts-agent"
"""Identity prefix of the agent in rooms (LiveKit adds the job id)."""


@dataclass
class WorkerState:
    """Process-wide: the engines, metrics and the rooms being served (each on its loop)."""

    config: ServiceConfig
    host: EngineHost
    metrics: WorkerMetrics
    load: LoadMonitor
    memory: MemoryGuard
    sessions: dict[RoomSession, tuple[asyncio.AbstractEventLoop, JobContext]] = field(
        default_factory=dict
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, session: RoomSession, ctx: JobContext) -> None:
        with self.lock:
            self.sessions[session] = (asyncio.get_running_loop(), ctx)

    def remove(self, session: RoomSession) -> None:
        with self.lock:
            self.sessions.pop(session, None)

    def rooms(self) -> list[dict[str, object]]:
        with self.lock:
            return [
                {
                    "room": s.room.name,
                    "identity": s.room.local_participant.identity,
                    "tracks": s.tracks(),
                    "draining": s.draining,
                }
                for s in self.sessions
            ]

    async def drain(self) -> None:
        """Every room finishes what it is saying, then its job ends."""
        with self.lock:
            sessions = list(self.sessions.items())
        futures = [
            asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_drain_room(s, ctx), loop))
            for s, (loop, ctx) in sessions
        ]
        await asyncio.gather(*futures, return_exceptions=True)

    async def end_all(self, reason: str) -> None:
        """Stop every room at once (what is playing is cut) and end its job."""
        with self.lock:
            sessions = list(self.sessions.items())
        futures = [
            asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_end_room(s, ctx, reason), loop))
            for s, (loop, ctx) in sessions
        ]
        await asyncio.gather(*futures, return_exceptions=True)


async def _drain_room(session: RoomSession, ctx: JobContext) -> None:
    await session.drain()
    await session.aclose("worker draining")
    ctx.shutdown("worker draining")


async def _end_room(session: RoomSession, ctx: JobContext, reason: str) -> None:
    await session.aclose(reason)
    ctx.shutdown(reason)


_STATE: WorkerState | None = None
_SERVER: AgentServer | None = None
_CONNECTING = threading.Lock()
_RETIRING: set[asyncio.Task[None]] = set()
"""Agents finishing their accepted text before they leave a room another agent serves."""


def state() -> WorkerState:
    assert _STATE is not None, "the worker is not running in this process"
    return _STATE


async def _on_request(request: JobRequest) -> None:
    await request.accept(
        identity=f"{AGENT_IDENTITY_PREFIX}-{request.job.id}",
        name="HIVE TTS",
        attributes={AGENT_ATTRIBUTE: "1"},
    )
    if _SERVER is not None:
        await _report_load(_SERVER)


def _load_of(load: LoadMonitor, server: AgentServer) -> float:
    """livekit-agents' ``load_fnc`` (called with the server, in a thread): rooms taken count."""
    load.rooms = len(server.active_jobs)
    return load.load()


async def _report_load(server: AgentServer) -> None:
    """Tell LiveKit this worker's load now, with the room just taken. livekit-agents reports it
    every 2.5 s only, and LiveKit picks the least loaded worker from its last report: a burst of
    rooms inside those 2.5 s all went to one worker. Uses livekit-agents' own refresh and status
    update (private; checked against 1.8.9), and skips it if they are gone."""
    refresh = getattr(server, "_refresh_worker_load", None)
    update = getattr(server, "_update_worker_status", None)
    if refresh is None or update is None:
        return
    with contextlib.suppress(Exception):
        await refresh()
        await update()


async def entrypoint(ctx: JobContext) -> None:
    """One room: connect (subscribing to nothing: the agent only speaks), then serve text."""
    worker = state()
    # one room connects at a time: many concurrent connects from job threads left one room's
    # connect callback unread, and the rtc SDK then ends the whole process (an FFI "panic")
    while not _CONNECTING.acquire(blocking=False):  # polled: a cancelled job never holds it
        await asyncio.sleep(CONNECT_POLL_S)
    try:
        await asyncio.wait_for(
            ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE), CONNECT_TIMEOUT_S
        )
    finally:
        _CONNECTING.release()
    replaced = replaced_in(ctx.job.metadata)
    present = _ready_agent(ctx.room, ignoring=replaced)
    if present is not None:  # a dispatch made twice: one agent per room
        logger.info("%s already serves %s; leaving", present.identity, ctx.room.name)
        ctx.shutdown("the room already has its agent")
        return
    policy = SpeakPolicy.from_config(worker.config.agent.permission)
    policy = policy.narrowed_by(ctx.room.metadata).narrowed_by(ctx.job.metadata)
    session = RoomSession(
        ctx.room,
        worker.host,
        worker.config.agent,
        worker.metrics,
        policy,
        worker.config.limits.max_text_chars,
        worker.memory,
        os.environ.get("LIVEKIT_API_SECRET", ""),
    )
    session.attach()
    worker.add(session, ctx)
    lag_probe = asyncio.create_task(watch_loop_lag(worker.metrics.loop_lag), name="loop-lag")

    async def on_shutdown(reason: str = "") -> None:
        lag_probe.cancel()
        worker.remove(session)
        await session.aclose(reason)

    ctx.add_shutdown_callback(on_shutdown)

    async def leave_to(other: str) -> None:
        logger.info(
            "%s also serves %s; leaving it once what was accepted is spoken", other, ctx.room.name
        )
        await session.retire()
        ctx.shutdown("the room already has its agent")

    def on_attributes(_: dict[str, str], participant: rtc.Participant) -> None:
        # two agents became ready at once: the one with the larger identity leaves, after
        # speaking what it accepted (the other never received it)
        mine = ctx.room.local_participant.identity
        other = _ready_agent(ctx.room, ignoring=replaced)
        if (
            other is not None
            and other.identity < mine
            and participant.identity == other.identity
            and not session.retired
        ):
            session.retired = True  # from now on the other answers: nothing new here
            retiring = asyncio.create_task(leave_to(other.identity))
            _RETIRING.add(retiring)
            retiring.add_done_callback(_RETIRING.discard)

    ctx.room.on("participant_attributes_changed", on_attributes)
    # listening now: the control API waits for this before it sends text
    if not await _announce_ready(ctx):
        logger.error("%s: the server never took the ready attribute; leaving", ctx.room.name)
        ctx.shutdown("the agent could not say it is ready")  # the control API dispatches again
        return
    await session.report_lost(ctx.job.metadata)
    logger.info("serving room %s", ctx.room.name)


async def _announce_ready(ctx: JobContext) -> bool:
    """Set the ready attribute until the server echoes it back. The rtc SDK's
    ``set_attributes`` returns without saying whether the server took the update, and in a
    burst of rooms one agent stayed in its room unready for good (the control API then waited
    45 s and answered 504)."""
    me = ctx.room.local_participant
    attributes = {READY_ATTRIBUTE: "1", WORKER_ATTRIBUTE: ctx.worker_id}
    for attempt in range(1, READY_ATTEMPTS + 1):
        await me.set_attributes(attributes)
        deadline = time.monotonic() + READY_CONFIRM_S
        while time.monotonic() < deadline:
            if all(me.attributes.get(key) == value for key, value in attributes.items()):
                return True
            await asyncio.sleep(CONNECT_POLL_S * 5)
        logger.warning(
            "%s: the ready attribute was not echoed within %.0f s (attempt %d of %d)",
            ctx.room.name,
            READY_CONFIRM_S,
            attempt,
            READY_ATTEMPTS,
        )
    return False


def _ready_agent(room: rtc.Room, *, ignoring: str | None) -> rtc.RemoteParticipant | None:
    """Another agent of ours listening in ``room`` (not ``ignoring``, the one replaced)."""
    for participant in room.remote_participants.values():
        attributes = participant.attributes
        if (
            participant.identity != ignoring
            and attributes.get(AGENT_ATTRIBUTE)
            and attributes.get(READY_ATTRIBUTE)
        ):
            return participant
    return None


def build_server(config: ServiceConfig, load: LoadMonitor) -> AgentServer:
    settings = config.agent
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD,
        load_threshold=settings.load_threshold,
        drain_timeout=settings.drain_timeout_s,
        # warm job threads: also what livekit-agents reserves per job being launched
        # (threshold / warm_jobs), so a burst of rooms is not refused while they launch
        num_idle_processes=settings.warm_jobs,
        max_retry=settings.reconnect_attempts,
        port=settings.health_port,
        host="127.0.0.1",
        load_fnc=functools.partial(_load_of, load),
    )
    server.rtc_session(
        entrypoint,
        agent_name="" if settings.auto_join else settings.agent_name,
        on_request=_on_request,
    )
    return server


async def _serve_metrics(
    worker: WorkerState, registration: Registration, host: str, port: int
) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        worker.metrics.worker_load.set(worker.load.last)
        body = generate_latest(worker.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def rooms(_: web.Request) -> web.Response:
        return web.json_response({"rooms": worker.rooms()})

    async def status(_: web.Request) -> web.Response:
        body = {
            **registration.to_dict(),
            "rooms": len(worker.rooms()),
            "load": round(worker.load.last, 3),
            "pid": os.getpid(),
        }
        return web.json_response(body, status=200 if registration.registered else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/rooms", rooms)
    app.router.add_get("/worker", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    logger.info("worker metrics on http://%s:%s/metrics", host, bound)
    print(f"metrics: http://{host}:{bound}/metrics", flush=True)
    return runner


async def run_worker(config: ServiceConfig, livekit_url: str = "") -> int:
    """Load the engines, register with LiveKit, serve rooms until SIGTERM/SIGINT (exit 0 after
    a bounded drain) or until LiveKit stays unreachable (exit ``EXIT_LIVEKIT_LOST``)."""
    global _STATE, _SERVER
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():  # a second signal: leave now
            os._exit(EXIT_SECOND_SIGNAL)
        logger.warning("%s: draining (at most %d s)", sig.name, config.agent.drain_timeout_s)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    if not config.agent.loop_monitor:  # read by livekit-agents as each job thread starts
        os.environ[LOOP_MONITOR_ENV] = "0"
    host = await asyncio.to_thread(EngineHost.start, config)
    if stop.is_set():  # stopped while the engines loaded
        host.close()
        return 0
    load = LoadMonitor(host, config.agent.rooms_at_full_load)
    metrics = WorkerMetrics()
    metrics.watch_engines(host.synthesizer.registry)
    metrics.know_languages(host.synthesizer.router.known_languages())
    worker = WorkerState(config, host, metrics, load, MemoryGuard(config.limits))
    _STATE = worker
    server = build_server(config, load)
    _SERVER = server
    registration = Registration(livekit_url)
    registration.watch(server)
    runner = await _serve_metrics(
        worker, registration, config.agent.metrics_host, config.agent.metrics_port
    )
    run_task = asyncio.create_task(server.run(devmode=False), name="agent-server")
    code = 0
    try:
        stop_task = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if run_task in done:
            # LiveKit unreachable after every retry: end the rooms, let a supervisor restart us
            logger.error("LiveKit lost: %s; ending rooms and exiting", _reason(run_task))
            code = EXIT_LIVEKIT_LOST
            await worker.end_all("LiveKit lost")
        else:
            await _drain(server, worker, config.agent.drain_timeout_s)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.aclose(), CLOSE_TIMEOUT_S)
        run_task.cancel()
        with contextlib.suppress(BaseException):
            await run_task
        registration.close()
        await runner.cleanup()
        load.close()
        host.close()
        _STATE = None
        _SERVER = None
        logger.warning("worker stopped")
    return code


async def _drain(server: AgentServer, worker: WorkerState, timeout_s: float) -> None:
    """No new rooms; each room finishes what it is saying within ``timeout_s``; then every
    room still open is ended (its room open, closing or gone)."""
    drain = asyncio.create_task(server.drain(timeout=None))
    await asyncio.sleep(0)  # the server marks itself full before rooms wind down
    try:
        await asyncio.wait_for(worker.drain(), timeout_s)
    except TimeoutError:
        logger.warning("drain: rooms still speaking after %.0f s; ending them", timeout_s)
    await worker.end_all("worker stopping")
    try:
        await asyncio.wait_for(drain, CLOSE_TIMEOUT_S)
    except TimeoutError:
        logger.warning("drain: jobs still running after they were ended; closing anyway")


def _reason(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return "the worker stopped" if exc is None else str(exc)

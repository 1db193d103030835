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
import logging
import os
import signal
import threading
from dataclasses import dataclass, field

from aiohttp import web
from livekit.agents import AgentServer, AutoSubscribe, JobContext, JobExecutorType, JobRequest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.engine_host import EngineHost
from agent.load_monitor import LoadMonitor
from agent.room_session import RoomSession
from agent.speak_policy import SpeakPolicy
from agent.speak_request import AGENT_ATTRIBUTE, READY_ATTRIBUTE
from api.service_metrics import WorkerMetrics
from engines.config import ServiceConfig

logger = logging.getLogger(__name__)

AGENT_IDENTITY_PREFIX = "hive-tts-agent"
"""Identity prefix of the agent in rooms (LiveKit adds the job id)."""


@dataclass
class WorkerState:
    """Process-wide: the engines, metrics and the rooms being served (each on its loop)."""

    config: ServiceConfig
    host: EngineHost
    metrics: WorkerMetrics
    load: LoadMonitor
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
                {"room": s.room.name, "tracks": s.tracks(), "draining": s.draining}
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


async def _drain_room(session: RoomSession, ctx: JobContext) -> None:
    await session.drain()
    await session.aclose("worker draining")
    ctx.shutdown("worker draining")


_STATE: WorkerState | None = None


def state() -> WorkerState:
    assert _STATE is not None, "the worker is not running in this process"
    return _STATE


async def _on_request(request: JobRequest) -> None:
    await request.accept(
        identity=f"{AGENT_IDENTITY_PREFIX}-{request.job.id}",
        name="HIVE TTS",
        attributes={AGENT_ATTRIBUTE: "1"},
    )


async def entrypoint(ctx: JobContext) -> None:
    """One room: connect (subscribing to nothing: the agent only speaks), then serve text."""
    worker = state()
    await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)
    policy = SpeakPolicy.from_config(worker.config.agent.permission)
    policy = policy.narrowed_by(ctx.room.metadata).narrowed_by(ctx.job.metadata)
    session = RoomSession(
        ctx.room,
        worker.host,
        worker.config.agent,
        worker.metrics,
        policy,
        worker.config.limits.max_text_chars,
    )
    session.attach()
    worker.add(session, ctx)
    # listening now: the control API waits for this before it sends text
    await ctx.room.local_participant.set_attributes({READY_ATTRIBUTE: "1"})

    async def on_shutdown(reason: str = "") -> None:
        worker.remove(session)
        await session.aclose(reason)

    ctx.add_shutdown_callback(on_shutdown)
    logger.info("serving room %s", ctx.room.name)


def build_server(config: ServiceConfig, load: LoadMonitor) -> AgentServer:
    settings = config.agent
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD,
        load_threshold=settings.load_threshold,
        drain_timeout=settings.drain_timeout_s,
        num_idle_processes=0,
        port=settings.health_port,
        host="127.0.0.1",
        load_fnc=load.load,
    )
    server.rtc_session(
        entrypoint,
        agent_name="" if settings.auto_join else settings.agent_name,
        on_request=_on_request,
    )
    return server


async def _serve_metrics(worker: WorkerState, port: int) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        worker.metrics.worker_load.set(worker.load.last)
        body = generate_latest(worker.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def rooms(_: web.Request) -> web.Response:
        return web.json_response({"rooms": worker.rooms()})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/rooms", rooms)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    logger.info("worker metrics on http://127.0.0.1:%s/metrics", bound)
    print(f"metrics: http://127.0.0.1:{bound}/metrics", flush=True)
    return runner


async def run_worker(config: ServiceConfig) -> None:
    """Load the engines, register with LiveKit, serve rooms until SIGTERM/SIGINT."""
    global _STATE
    loop = asyncio.get_running_loop()
    host = await asyncio.to_thread(EngineHost.start, config)
    load = LoadMonitor(host)
    worker = WorkerState(config, host, WorkerMetrics(), load)
    _STATE = worker
    server = build_server(config, load)
    runner = await _serve_metrics(worker, config.agent.metrics_port)
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():  # a second signal: leave now
            os._exit(1)
        logger.info("%s: draining", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    server.on(
        "worker_registered",
        lambda worker_id, *_: print(f"registered worker {worker_id}", flush=True),
    )
    run_task = asyncio.create_task(server.run(devmode=False), name="agent-server")
    try:
        stop_task = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if run_task in done:
            run_task.result()  # registration failed: raise it
        drain = asyncio.create_task(server.drain(timeout=config.agent.drain_timeout_s))
        await asyncio.sleep(0)  # the server marks itself full before rooms wind down
        await worker.drain()
        with contextlib.suppress(asyncio.TimeoutError):
            await drain
    finally:
        await server.aclose()
        with contextlib.suppress(BaseException):
            await run_task
        await runner.cleanup()
        load.close()
        host.close()
        _STATE = None
        logger.info("worker stopped")

"""Benchmark of the agent on real LiveKit servers with real workers: dispatch bursts, recovery
after a killed worker, and ``lk perf agent-load-test`` with one worker against two. Prints
figures, asserts nothing.

Run from the repository root::

    .venv/bin/python -m tools.cluster_bench [--parts dispatch,recovery,load] [--bursts 1,8,32]
        [--workers 1|2] [--kills 3] [--no-kill-supervisor] [--load-rooms 8,16]
        [--load-duration 60] [--wait-quiet SECONDS] [--json FILE]

1. **dispatch**: one ``livekit-server --dev`` (a 2-node cluster with ``--workers 2``, one worker
   per node) whose webhooks reach the control API. Per burst size B: B rooms, a listener in each,
   then ``POST /rooms/{room}/speak`` to all B at once; per room the API's reply time and the time
   from the POST to the listener's first audible frame on ``tts-en``.
2. **recovery**: the same server(s) with two workers. Each round speaks a long text, kills the
   serving worker's child process (its supervisor releases its rooms and restarts it) two seconds
   after ``started``, and measures the kill to the first audible frame of the replacement agent.
   The last round (``--kill-supervisor``, on by default) kills the whole ``hive-tts agent``, so
   LiveKit's own participant timeout and the webhook bring the replacement.
3. **load**: ``lk perf agent-load-test`` against a 2-node cluster, once with a worker on node 0,
   then with a second one on node 1; rooms joined, join delay, and the workers' playback
   underruns and audio seconds over the run.

Everything listens on 127.0.0.1. The workers and listeners come from ``tools.benchkit.rooms``
(which the tests use too).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from agent.livekit_cluster import LiveKitCluster
from agent.livekit_server import (
    BUILD_CACHE,
    LK_ENV,
    LOOPBACK_IP,
    SERVER_ENV,
    DevServer,
    find_binary,
    free_port,
)
from api.rooms import LiveKitSettings
from control_api import create_app
from engines.config import ServiceConfig, load_config
from engines.names import EngineName
from hive_tts.paths import PROJECT_ROOT
from tools.benchkit.machine import dump_tasks_on_sigusr1, wait_for_quiet
from tools.benchkit.probes import WorkerProbe
from tools.benchkit.report import add_report_arguments, fmt, heading, render_table, write_report
from tools.benchkit.rooms import (
    AGENT_NAME,
    ANSI,
    LK_GRACE_S,
    LK_SENTENCE,
    METRIC_UNDERRUNS,
    TRACK,
    Participant,
    WorkerProcess,
    delete_rooms,
    room_name,
    wait_rooms_gone,
)
from tools.benchkit.stats import MS_PER_S, spread

PARTS = ("dispatch", "recovery", "load")
DEFAULT_BURSTS = (1, 8, 32)
DEFAULT_KILLS = 3
DEFAULT_LOAD_ROOMS = (8, 16)
DEFAULT_LOAD_DURATION_S = 60
SENTENCE = "Your table for four is booked for seven thirty tonight, right by the window."
"""About 3 s of speech."""
LONG_TEXT = (
    "This announcement is long on purpose, so that a worker can be stopped while it speaks. "
    "The first sentences come from one worker. Then that worker is killed without warning. "
    "What was not heard yet must still be spoken, by another agent, from the sentence that "
    "was playing, and the listener should hardly notice the change at all."
)
"""About 15 s of speech."""
METRIC_AUDIO_S = "tts_audio_output_seconds_total"
LK_ROW = re.compile(r"^\s*│\s*\d+\s*│\s*room-")
LK_TICK = "✓"
LK_COLUMNS = 7
GO_DURATION_PART = re.compile(r"([\d.]+)(ns|us|µs|ms|s|m|h)")
MS_PER_GO_UNIT = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}

JOIN_CONCURRENCY = 8
SPEECH_TIMEOUT_S = 120.0
"""A room that has not spoken this long after its POST did not speak."""
STARTED_TIMEOUT_S = 60.0
SPOKEN_BEFORE_KILL_S = 2.0
RESUME_GUARD_S = 0.5
"""Audio received this soon after a kill may still be the killed agent's (jitter buffer)."""
RECOVERY_TIMEOUT_S = 90.0
WORKER_BACK_TIMEOUT_S = 180.0
ROOMS_GONE_TIMEOUT_S = 30.0
AUDIBLE_POLL_S = 0.02
STATUS_POLL_S = 0.5
HTTP_TIMEOUT_S = 5.0
ERROR_CHARS = 200
LOAD_NODES = 2


def bench_config() -> ServiceConfig:
    """The shipped config.yaml without Edge TTS and without refusing a busy engine (as tests)."""
    config = load_config(PROJECT_ROOT / "config.yaml")
    api = config.api.model_copy(update={"max_engine_wait_s": None})
    return config.model_copy(update={"disabled_engines": (EngineName.EDGE,), "api": api})


def spawn_worker(
    node: DevServer, config_file: Path, log_path: Path, processes: ExitStack
) -> WorkerProcess:
    """Start ``hive-tts agent`` on ``node`` (``wait_registered`` tells when it is ready)."""
    worker = WorkerProcess(node, config_file, log_path)
    processes.callback(worker.stop)
    return worker


async def registered(workers: Sequence[WorkerProcess]) -> None:
    await asyncio.gather(*(asyncio.to_thread(worker.wait_registered) for worker in workers))


async def start_api(config: ServiceConfig, node: DevServer, port: int) -> web.AppRunner:
    """The control API on 127.0.0.1:``port`` (loads its own engines), speaking through ``node``."""
    settings = LiveKitSettings(node.http_url, node.api_key, node.api_secret, AGENT_NAME)
    runner = web.AppRunner(create_app(config, quality_scoring=False, livekit=settings))
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK_IP, port).start()
    return runner


@dataclass
class Stage:
    """Where parts 1 and 2 speak: the node listeners join, the control API, the workers."""

    node: DevServer
    http: aiohttp.ClientSession
    api_url: str
    workers: list[WorkerProcess]

    async def speak(self, room: str, body: dict[str, str]) -> str | None:
        """``POST /rooms/{room}/speak``; None when accepted, else what went wrong."""
        try:
            async with self.http.post(f"{self.api_url}/rooms/{room}/speak", json=body) as reply:
                if reply.status == HTTPStatus.ACCEPTED:
                    return None
                return f"HTTP {reply.status}: {(await reply.text())[:ERROR_CHARS]}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def serving(self) -> dict[str, int]:
        """Room -> index of the worker serving it."""
        listed = await asyncio.gather(*(asyncio.to_thread(served_rooms, w) for w in self.workers))
        return {room: index for index, rooms in enumerate(listed) for room in rooms}

    async def close_rooms(self, rooms: Sequence[str]) -> None:
        await delete_rooms(self.node, rooms)
        for worker in self.workers:
            await wait_rooms_gone(WorkerProbe(None, worker.metrics_url), ROOMS_GONE_TIMEOUT_S)


def served_rooms(worker: WorkerProcess) -> set[str]:
    """The rooms the worker's ``/rooms`` lists (none while it is down or restarting)."""
    if worker.metrics_url is None:
        return set()
    url = worker.metrics_url.replace("/metrics", "/rooms")
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as reply:
            return {str(room["room"]) for room in json.load(reply)["rooms"]}
    except (OSError, ValueError):
        return set()


async def first_speech(
    listener: Participant, after: float, deadline: float, ignoring_sid: str | None = None
) -> float | None:
    """When (``perf_counter``) the listener received its first audible frame on ``tts-en`` after
    ``after`` (on whichever track by that name is current, unless it is ``ignoring_sid``), or
    None by ``deadline``."""
    cursor = after
    while True:
        # frames are appended with perf_counter() on this loop: each poll scans only new ones
        scan_from, cursor = cursor, max(after, time.perf_counter())
        track = listener.tracks.get(TRACK)
        heard = None
        if track is not None and track.sid != ignoring_sid:
            heard = track.first_audible(scan_from)
        if heard is not None:
            return heard
        if cursor >= deadline:
            return None
        await asyncio.sleep(AUDIBLE_POLL_S)


def figure(value: float | None, digits: int = 0) -> str:
    return fmt(value, digits)


# ---------------------------------------------------------------------------------------------
# 1. dispatch bursts


@dataclass
class RoomSample:
    room: str
    reply_ms: float | None = None
    speech_ms: float | None = None
    """POST -> the listener's first audible frame."""
    worker: int | None = None
    error: str | None = None


async def speak_and_listen(stage: Stage, listener: Participant, room: str) -> RoomSample:
    sample = RoomSample(room)
    body = {"id": f"{room}-say", "text": SENTENCE, "language": "en", "reply_to": "listener"}
    posted = time.perf_counter()
    sample.error = await stage.speak(room, body)
    sample.reply_ms = (time.perf_counter() - posted) * MS_PER_S
    if sample.error is None:
        heard = await first_speech(listener, posted, posted + SPEECH_TIMEOUT_S)
        sample.speech_ms = None if heard is None else (heard - posted) * MS_PER_S
    return sample


async def dispatch_burst(stage: Stage, size: int) -> list[RoomSample]:
    """``size`` rooms, a listener joined in each, then one POST per room, all at once."""
    listeners = {room_name(f"burst{size}"): Participant("listener") for _ in range(size)}
    gate = asyncio.Semaphore(JOIN_CONCURRENCY)

    async def join(room: str, listener: Participant) -> None:
        async with gate:
            await listener.join(stage.node, room)

    print(f"-- burst of {size}: joining listeners, then speaking", flush=True)
    try:
        await asyncio.gather(*(join(room, listener) for room, listener in listeners.items()))
        samples = await asyncio.gather(
            *(speak_and_listen(stage, listener, room) for room, listener in listeners.items())
        )
        served = await stage.serving()
        for sample in samples:
            sample.worker = served.get(sample.room)
        return list(samples)
    finally:
        await asyncio.gather(*(listener.leave() for listener in listeners.values()))
        await stage.close_rooms(list(listeners))


def print_bursts(bursts: dict[int, list[RoomSample]], workers: int) -> None:
    heading(f"Dispatch to speech: bursts of POST /rooms/{{room}}/speak, {workers} worker(s), ms")
    headers = ["rooms", f"spoke <= {SPEECH_TIMEOUT_S:.0f} s", "reply p50", "p95", "max",
               "speech p50", "p95", "max", "rooms per worker", "errors"]  # fmt: skip
    rows = []
    for size, samples in bursts.items():
        replies = [s.reply_ms for s in samples if s.reply_ms is not None]
        speech = [s.speech_ms for s in samples if s.speech_ms is not None]
        per_worker = "/".join(str(sum(s.worker == w for s in samples)) for w in range(workers))
        errors = sum(s.error is not None for s in samples)
        rows.append([str(size), f"{len(speech)}/{size}", *map(figure, spread(replies)),
                     *map(figure, spread(speech)), per_worker, str(errors)])  # fmt: skip
    print(render_table(headers, rows))
    print("reply = POST -> 202 (the API waits until the agent listens); speech = POST -> the "
          "listener's first audible frame on tts-en")  # fmt: skip
    for sample in [s for samples in bursts.values() for s in samples if s.error][:5]:
        print(f"   {sample.room}: {sample.error}")


# ---------------------------------------------------------------------------------------------
# 2. recovery after a killed worker


@dataclass
class RecoveryRound:
    round: int
    kill: str
    """``worker`` (the child that serves rooms) or ``supervisor`` (all of ``hive-tts agent``)."""
    worker: int | None = None
    killed_pid: int | None = None
    recovery_s: float | None = None
    """Kill -> the listener's first audible frame of the replacement agent."""
    back_s: float | None = None
    """Kill -> the killed worker's restarted child registered."""
    error: str | None = None


async def wait_restarted(worker: WorkerProcess, old_pid: int, deadline: float) -> float | None:
    """When (``perf_counter``) the worker's supervisor had a new child registered."""
    while time.perf_counter() < deadline:
        try:
            status = await asyncio.to_thread(worker.status)
        except (OSError, ValueError, AssertionError):  # down, or its new port not printed yet
            status = {}
        if status.get("registered") and status.get("pid") != old_pid:
            return time.perf_counter()
        await asyncio.sleep(STATUS_POLL_S)
    return None


async def recovery_round(stage: Stage, index: int, kill_supervisor: bool) -> RecoveryRound:
    """Speak a long text, SIGKILL the serving worker (or its supervisor) 2 s after ``started``,
    and time the kill to speech from the replacement agent."""
    result = RecoveryRound(index, "supervisor" if kill_supervisor else "worker")
    room, listener = room_name("recovery"), Participant("listener")
    request_id = f"recovery-{index}"
    print(f"-- recovery round {index}: SIGKILL of the {result.kill}", flush=True)
    try:
        await listener.join(stage.node, room)
        body = {"id": request_id, "text": LONG_TEXT, "language": "en", "reply_to": "listener"}
        if (error := await stage.speak(room, body)) is not None:
            result.error = error
            return result
        await listener.wait_event(request_id, "started", STARTED_TIMEOUT_S)
        await asyncio.sleep(SPOKEN_BEFORE_KILL_S)
        result.worker = (await stage.serving()).get(room)
        if result.worker is None:
            result.error = "no worker lists the room"
            return result
        worker = stage.workers[result.worker]
        # kill_worker()'s status lookup is done first, so the timed span starts at the kill
        pid = worker.process.pid
        if not kill_supervisor:
            pid = int(str((await asyncio.to_thread(worker.status))["pid"]))
        result.killed_pid = pid
        # the killed agent's track may deliver frames (10 ms cadence, loss concealment) until
        # LiveKit drops it: only the replacement's new tts-en track counts
        killed_track = listener.tracks.get(TRACK)
        killed_at = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        heard = await first_speech(
            listener,
            killed_at + RESUME_GUARD_S,
            killed_at + RECOVERY_TIMEOUT_S,
            killed_track.sid if killed_track is not None else None,
        )
        result.recovery_s = None if heard is None else heard - killed_at
        if not kill_supervisor:
            back = await wait_restarted(worker, pid, killed_at + WORKER_BACK_TIMEOUT_S)
            result.back_s = None if back is None else back - killed_at
    except AssertionError as exc:  # the fixtures' waits time out with it
        result.error = str(exc)[:ERROR_CHARS]
    finally:
        await listener.leave()
        await stage.close_rooms([room])
    return result


def print_recovery(rounds: Sequence[RecoveryRound]) -> None:
    heading("Recovery after a killed worker (s from SIGKILL)")
    headers = ["round", "killed", "worker", "pid", "speech again", "worker back", "error"]
    rows = [[str(r.round), r.kill, figure(r.worker), figure(r.killed_pid), figure(r.recovery_s, 2),
             figure(r.back_s, 1), (r.error or "")[:60]] for r in rounds]  # fmt: skip
    print(render_table(headers, rows))
    child = [r.recovery_s for r in rounds if r.kill == "worker" and r.recovery_s is not None]
    p50, _, worst = spread(child)
    print(f"worker child killed: speech again p50 {figure(p50, 2)} s, max {figure(worst, 2)} s "
          "(its supervisor removes its agents at once); supervisor killed: LiveKit's "
          "participant timeout, then the webhook")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 3. lk perf agent-load-test


@dataclass
class LoadRun:
    workers: int
    rooms: int
    returncode: int | None
    rows: int
    joined: int
    track_subscribed: int
    join_p50_ms: float | None
    join_max_ms: float | None
    underruns: float | None
    audio_s: float | None
    output_tail: str


def go_duration_ms(text: str) -> float | None:
    """A Go ``time.Duration.String()`` (``350.7ms``, ``1m2.5s``) in ms; None for ``-``."""
    parts = GO_DURATION_PART.findall(text)
    return sum(float(value) * MS_PER_GO_UNIT[unit] for value, unit in parts) if parts else None


def lk_rows(output: str) -> list[list[str]]:
    """The cells of the tester's final table: #, room, dispatched at, joined, delay, track, echo."""
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in ANSI.sub("", output).splitlines()
        if LK_ROW.match(line) and line.count("│") >= LK_COLUMNS + 1
    ]


async def metric_sum(probes: Sequence[WorkerProbe], name: str) -> float | None:
    values = [await probe.metric(name) for probe in probes]
    return None if any(v is None for v in values) else sum(v or 0.0 for v in values)


def delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


async def load_run(
    node: DevServer, workers: Sequence[WorkerProcess], rooms: int, duration_s: int
) -> LoadRun:
    probes = [WorkerProbe(None, worker.metrics_url) for worker in workers]
    underruns = await metric_sum(probes, METRIC_UNDERRUNS)
    audio_s = await metric_sum(probes, METRIC_AUDIO_S)
    command = [str(find_binary("lk", LK_ENV)), "--url", node.url, "--api-key", node.api_key,
               "--api-secret", node.api_secret, "perf", "agent-load-test", "--rooms", str(rooms),
               "--agent-name", AGENT_NAME, "--duration", f"{duration_s}s",
               "--attribute", f"tts.speak={LK_SENTENCE}"]  # fmt: skip
    print(f"-- lk perf agent-load-test: {rooms} rooms, {len(workers)} worker(s)", flush=True)
    pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    process = await asyncio.create_subprocess_exec(
        *command, stdout=pipe, stderr=asyncio.subprocess.STDOUT, stdin=devnull
    )
    output = b""
    try:
        output, _ = await asyncio.wait_for(process.communicate(), duration_s + LK_GRACE_S)
    except TimeoutError:
        output = b"lk perf did not end in time: killed"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    for probe in probes:
        await wait_rooms_gone(probe, ROOMS_GONE_TIMEOUT_S)
    text = output.decode(errors="replace")
    rows = lk_rows(text)
    delays = [d for row in rows if (d := go_duration_ms(row[4])) is not None]
    p50, _, worst = spread(delays)
    return LoadRun(
        workers=len(workers),
        rooms=rooms,
        returncode=process.returncode,
        rows=len(rows),
        joined=sum(row[3] == LK_TICK for row in rows),
        track_subscribed=sum(row[5] == LK_TICK for row in rows),
        join_p50_ms=p50,
        join_max_ms=worst,
        underruns=delta(underruns, await metric_sum(probes, METRIC_UNDERRUNS)),
        audio_s=delta(audio_s, await metric_sum(probes, METRIC_AUDIO_S)),
        output_tail="\n".join(ANSI.sub("", text).splitlines()[-(rooms + 8) :]),
    )


def print_load(runs: Sequence[LoadRun], duration_s: int) -> None:
    heading(f"lk perf agent-load-test, {duration_s} s, 2-node cluster: 1 worker against 2")
    headers = ["workers", "rooms", "joined", "track subscribed", "join p50 ms", "max",
               "underruns", "audio s", "lk exit"]  # fmt: skip
    rows = [[str(r.workers), str(r.rooms), f"{r.joined}/{r.rooms}", str(r.track_subscribed),
             figure(r.join_p50_ms), figure(r.join_max_ms), figure(r.underruns),
             figure(r.audio_s, 1), figure(r.returncode)] for r in runs]  # fmt: skip
    print(render_table(headers, rows))
    print(
        f"underruns = {METRIC_UNDERRUNS}, audio s = {METRIC_AUDIO_S}: increase over the run, "
        "summed over the workers"
    )
    for run in runs:
        if run.rows != run.rooms or run.returncode != 0:
            print(f"   {run.rooms} rooms, {run.workers} worker(s): lk said\n{run.output_tail}")


# ---------------------------------------------------------------------------------------------
# main


async def settle(args: argparse.Namespace) -> None:
    if args.wait_quiet > 0:
        await asyncio.to_thread(wait_for_quiet, args.wait_quiet)


async def speaking_parts(
    args: argparse.Namespace,
    config: ServiceConfig,
    config_file: Path,
    log_dir: Path,
    processes: ExitStack,
) -> dict[str, Any]:
    """Parts 1 and 2, on node(s) whose webhooks reach a control API on a port chosen first."""
    api_port = free_port()
    webhooks = [f"http://{LOOPBACK_IP}:{api_port}/livekit/webhook"]
    if "dispatch" in args.parts and args.workers > 1:
        start_cluster = functools.partial(LiveKitCluster.start, webhook_urls=webhooks)
        cluster = await asyncio.to_thread(start_cluster, args.workers, log_dir=log_dir)
        processes.callback(cluster.stop)
        nodes = cluster.nodes
    else:
        start_node = functools.partial(DevServer.start, webhook_urls=webhooks)
        nodes = [await asyncio.to_thread(start_node, log_dir=log_dir)]
        processes.callback(nodes[0].stop)

    def spawn(n: int) -> WorkerProcess:
        return spawn_worker(nodes[n % len(nodes)], config_file, log_dir / f"w{n}.log", processes)

    workers = [spawn(n) for n in range(args.workers if "dispatch" in args.parts else 2)]
    print(f"starting the control API and {len(workers)} worker(s); logs in {log_dir}", flush=True)
    runner: web.AppRunner | None = None
    report: dict[str, Any] = {}
    try:
        runner, _ = await asyncio.gather(start_api(config, nodes[0], api_port), registered(workers))
        timeout = aiohttp.ClientTimeout(total=SPEECH_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            stage = Stage(nodes[0], http, f"http://{LOOPBACK_IP}:{api_port}", workers)
            if "dispatch" in args.parts:
                bursts: dict[int, list[RoomSample]] = {}
                for size in args.bursts:
                    await settle(args)
                    bursts[size] = await dispatch_burst(stage, size)
                print_bursts(bursts, len(workers))
                report["dispatch"] = {
                    "workers": len(workers),
                    "bursts": {str(k): [asdict(s) for s in v] for k, v in bursts.items()},
                }
            if "recovery" in args.parts:
                while len(workers) < 2:
                    workers.append(spawn(len(workers)))
                    await registered(workers[-1:])
                rounds = []
                kinds = [False] * args.kills + [True] * args.kill_supervisor
                for index, kill_supervisor in enumerate(kinds, start=1):
                    await settle(args)
                    rounds.append(await recovery_round(stage, index, kill_supervisor))
                print_recovery(rounds)
                report["recovery"] = [asdict(r) for r in rounds]
    finally:
        if runner is not None:
            await runner.cleanup()
        await asyncio.to_thread(processes.close)
    return report


async def load_part(
    args: argparse.Namespace, config_file: Path, log_dir: Path, processes: ExitStack
) -> list[dict[str, Any]]:
    """Part 3: a worker on node 0, then a second one on node 1; the tester on node 0."""
    start_cluster = functools.partial(LiveKitCluster.start, log_dir=log_dir)
    cluster = await asyncio.to_thread(start_cluster, LOAD_NODES)
    processes.callback(cluster.stop)
    runs: list[LoadRun] = []
    workers: list[WorkerProcess] = []
    try:
        for node in cluster.nodes:
            log = log_dir / f"load-w{len(workers)}.log"
            workers.append(spawn_worker(node, config_file, log, processes))
            await registered(workers[-1:])
            for rooms in args.load_rooms:
                await settle(args)
                runs.append(await load_run(cluster.nodes[0], workers, rooms, args.load_duration))
    finally:
        await asyncio.to_thread(processes.close)
    print_load(runs, args.load_duration)
    return [asdict(run) for run in runs]


async def run(args: argparse.Namespace, log_dir: Path, processes: ExitStack) -> dict[str, Any]:
    dump_tasks_on_sigusr1()
    config = bench_config()
    config_file = log_dir / "config.yaml"  # the workers' copy of it
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    if "dispatch" in args.parts or "recovery" in args.parts:
        report.update(await speaking_parts(args, config, config_file, log_dir, processes))
    if "load" in args.parts:
        report["load"] = await load_part(args, config_file, log_dir, processes)
    return report


def numbers(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.cluster_bench",
        description="Dispatch bursts, recovery after a killed worker and lk perf "
        "agent-load-test, on real LiveKit servers with real workers.",
    )
    add = parser.add_argument
    add("--parts", type=lambda s: s.split(","), default=list(PARTS),
        help=f"comma-separated, of {','.join(PARTS)} (default: all)")  # fmt: skip
    add("--bursts", type=numbers, default=list(DEFAULT_BURSTS), help="rooms per burst (1,8,32)")
    add("--workers", type=int, choices=(1, 2), default=1,
        help="workers for the bursts (2: a 2-node cluster, one worker per node)")  # fmt: skip
    add("--kills", type=int, default=DEFAULT_KILLS, help="worker-kill rounds (default 3)")
    add("--kill-supervisor", action=argparse.BooleanOptionalAction, default=True,
        help="a last recovery round that kills the whole hive-tts agent")  # fmt: skip
    add("--load-rooms", type=numbers, default=list(DEFAULT_LOAD_ROOMS), help="default 8,16")
    add("--load-duration", type=int, default=DEFAULT_LOAD_DURATION_S, metavar="SECONDS")
    add_report_arguments(parser, wait_quiet_s=0.0, wait_quiet_help="before each measurement, "
                         "wait up to this long for an idle CPU")  # fmt: skip
    args = parser.parse_args(argv)
    if unknown := set(args.parts) - set(PARTS):
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from {','.join(PARTS)}")
    if not args.bursts or not args.load_rooms or min(args.bursts + args.load_rooms) < 1:
        parser.error("--bursts and --load-rooms: comma-separated room counts, at least 1")
    if args.kills < 0 or args.load_duration < 1:
        parser.error("--kills: at least 0; --load-duration: at least 1 s")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # the pinned builds, as the tests use them
    os.environ.setdefault(SERVER_ENV, str(BUILD_CACHE / "livekit-server"))
    os.environ.setdefault(LK_ENV, str(BUILD_CACHE / "lk"))
    logging.basicConfig(level=logging.WARNING)
    # livekit-server --dev's key is short on purpose (loopback only)
    warnings.filterwarnings("ignore", message="The HMAC key is")
    began = time.perf_counter()
    log_dir = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    with ExitStack() as processes:  # every server and worker, stopped newest first
        report = asyncio.run(run(args, log_dir, processes))
    report["total_s"] = time.perf_counter() - began
    print(f"\ntotal {report['total_s']:.0f} s; logs in {log_dir}")
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

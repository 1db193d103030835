"""What a published but silent audio track costs, and what unpublishing and publishing again
take: the figures behind ``agent.idle_track_timeout_s``. Prints figures, asserts nothing.

Run from the repository root::

    .venv/bin/python -m tools.idle_track_bench [--rooms 16] [--seconds 8] [--json out.json]

It starts ``livekit-server --dev`` on free loopback ports and, in this process, connects one
participant to each of ``--rooms`` rooms through the same rtc SDK the worker uses. This process's
CPU (user + system, all threads) is measured over ``--seconds`` three times: connected with no
track, with one published track per room that is sent nothing (as an agent's track between
utterances), and after every track was unpublished. Between them it times ``unpublish_track``
and ``publish_track`` per room.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
from livekit import rtc

from agent.livekit_server import BUILD_CACHE, SERVER_ENV, DevServer
from engines.audio import LIVEKIT_SAMPLE_RATE
from tools.benchkit.report import add_report_arguments, heading, render_table, write_report
from tools.benchkit.rooms import token

SETTLE_S = 3.0
"""After connecting, publishing or unpublishing, before CPU is measured."""
QUEUE_MS = 1000


def cores_used(process: psutil.Process, seconds: float) -> float:
    """Cores ``process`` used over the next ``seconds`` (blocking: run it in a thread)."""
    before, began = process.cpu_times(), time.monotonic()
    time.sleep(seconds)
    after = process.cpu_times()
    spent = (after.user + after.system) - (before.user + before.system)
    return float(spent / (time.monotonic() - began))


async def publish(room: rtc.Room) -> tuple[rtc.AudioSource, str]:
    source = rtc.AudioSource(LIVEKIT_SAMPLE_RATE, 1, queue_size_ms=QUEUE_MS)
    track = rtc.LocalAudioTrack.create_audio_track("tts-en", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    publication = await room.local_participant.publish_track(track, options)
    return source, publication.sid


async def run(rooms_count: int, seconds: float, log_dir: Path) -> dict[str, Any]:
    server = await asyncio.to_thread(DevServer.start, log_dir=log_dir)
    me = psutil.Process()
    rooms: list[rtc.Room] = []
    try:
        for n in range(rooms_count):
            room = rtc.Room()
            await room.connect(server.url, token(server, f"idle-{n}", "agent"))
            rooms.append(room)

        async def measure() -> float:
            await asyncio.sleep(SETTLE_S)
            return await asyncio.to_thread(cores_used, me, seconds)

        report: dict[str, Any] = {"rooms": rooms_count, "seconds": seconds}
        report["no_track_cores"] = await measure()
        began = time.perf_counter()
        published = [await publish(room) for room in rooms]
        report["publish_ms"] = (time.perf_counter() - began) * 1000 / rooms_count
        report["idle_tracks_cores"] = await measure()
        began = time.perf_counter()
        for room, (source, sid) in zip(rooms, published, strict=True):
            await room.local_participant.unpublish_track(sid)
            await source.aclose()
        report["unpublish_ms"] = (time.perf_counter() - began) * 1000 / rooms_count
        report["unpublished_cores"] = await measure()
        report["per_idle_track_cores"] = (
            report["idle_tracks_cores"] - report["unpublished_cores"]
        ) / rooms_count
        return report
    finally:
        for room in rooms:
            await room.disconnect()
        server.stop()


def print_report(report: dict[str, Any]) -> None:
    heading(f"{report['rooms']} rooms in this process, cores over {report['seconds']:.0f} s")
    headers = ["connected, no track", "one silent track each", "tracks unpublished",
               "per silent track", "publish ms", "unpublish ms"]  # fmt: skip
    row = [f"{report['no_track_cores']:.3f}", f"{report['idle_tracks_cores']:.3f}",
           f"{report['unpublished_cores']:.3f}", f"{report['per_idle_track_cores']:.4f}",
           f"{report['publish_ms']:.0f}", f"{report['unpublish_ms']:.0f}"]  # fmt: skip
    print(render_table(headers, [row]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.idle_track_bench", description=__doc__)
    parser.add_argument("--rooms", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    add_report_arguments(parser, wait_quiet_s=0.0)
    args = parser.parse_args(argv)
    if args.rooms < 1 or args.seconds <= 0:
        parser.error("--rooms: at least 1; --seconds: more than 0")
    os.environ.setdefault(SERVER_ENV, str(BUILD_CACHE / "livekit-server"))
    warnings.filterwarnings("ignore", message="The HMAC key is")  # --dev's key, loopback only
    report = asyncio.run(run(args.rooms, args.seconds, Path(tempfile.mkdtemp(prefix="idle-"))))
    print_report(report)
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

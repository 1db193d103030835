"""How late each room's event loop wakes: a cheap stand-in for livekit-agents' per-room watchdog.

A room's loop feeds its audio tracks; a loop that wakes late is audio that goes out late. Once a
second each room sleeps for a known time and records how much later than asked it woke, into one
histogram for the worker (``tts_room_loop_lag_seconds``). Two wake-ups a second per room, where
the watchdog it replaces took a hundred and a thread.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Histogram

PROBE_INTERVAL_S = 1.0


async def watch_loop_lag(lag: Histogram, interval_s: float = PROBE_INTERVAL_S) -> None:
    """Until cancelled: every ``interval_s``, how much later than asked this loop woke up."""
    while True:
        asked = time.monotonic() + interval_s
        await asyncio.sleep(interval_s)
        lag.observe(max(0.0, time.monotonic() - asked))

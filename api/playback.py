"""How far ahead of a real-time listener a stream is: underruns are chunks that came late."""

from __future__ import annotations

import time
from collections.abc import Callable


class PlaybackTracker:
    """A listener that starts playing at the first chunk and plays without pause.

    ``on_chunk`` returns how long the listener waited for this chunk after it had played
    everything sent before (0 when the stream was ahead: no underrun)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._play_start: float | None = None
        self._sent_s = 0.0
        self.underruns = 0
        self.largest_gap_s = 0.0

    def on_chunk(self, duration_s: float) -> float:
        now = self._clock()
        if self._play_start is None:
            self._play_start = now
            self._sent_s = duration_s
            return 0.0
        late_s = max(0.0, (now - self._play_start) - self._sent_s)
        if late_s > 0:
            self.underruns += 1
            self._play_start += late_s  # playback resumes when the chunk arrives
        self.largest_gap_s = max(self.largest_gap_s, late_s)
        self._sent_s += duration_s
        return late_s

"""Reading an utterance's audio ahead of playback: as soon as made, bounded, errors kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agent.read_ahead import read_ahead
from engines.audio import AudioChunk
from engines.errors import EngineError

RATE = 1000


def chunk(seconds: float = 1.0) -> AudioChunk:
    return AudioChunk(np.zeros(round(seconds * RATE), dtype=np.int16), RATE)


class Source:
    """Ten one-second chunks, made at once; remembers how many were taken and if it closed."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.made = 0
        self.closed = False
        self.fail_after = fail_after

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        try:
            for _ in range(10):
                if self.fail_after is not None and self.made == self.fail_after:
                    raise EngineError("piper", "broke")
                self.made += 1
                yield chunk()
                await asyncio.sleep(0)
        finally:
            self.closed = True


async def test_chunks_are_seen_as_made_but_read_no_more_than_the_bound_ahead() -> None:
    source = Source()
    seen: list[AudioChunk] = []
    reader = read_ahead(source, seen.append, max_ahead_s=3.0)
    first = await anext(reader)
    await asyncio.sleep(0.05)  # the reader plays the first chunk; the rest is read ahead
    assert first.duration_s == 1.0
    assert len(seen) == source.made == 5  # 1 given out + 4 buffered (over 3 s: stops)
    rest = [c async for c in reader]
    assert len(rest) == 9 and len(seen) == 10


async def test_an_error_comes_after_the_chunks_before_it() -> None:
    taken = []
    with pytest.raises(EngineError, match="broke"):
        async for item in read_ahead(Source(fail_after=3), lambda _: None):
            taken.append(item)
    assert len(taken) == 3


async def test_closing_the_reader_stops_reading_the_source() -> None:
    source = Source()
    reader = read_ahead(source, lambda _: None, max_ahead_s=2.0)
    await anext(reader)
    await reader.aclose()
    await asyncio.sleep(0.05)
    assert source.closed and source.made < 10

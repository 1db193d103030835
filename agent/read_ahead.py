"""Reading an utterance's audio ahead of its playback, a bounded number of seconds.

A track plays its audio in real time, so the loop that writes it takes the utterance's chunks
no faster than they are heard. What must know a chunk before it is heard (each piece's word
timings, which caption the words as they start) takes it here, as soon as it is made: a task
pulls the chunks into a buffer at most ``max_ahead_s`` of audio ahead of the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Callable

from engines.audio import AudioChunk

MAX_AHEAD_S = 10.0
"""Audio read ahead of playback at most (a long reply is not held whole)."""


async def read_ahead(
    source: AsyncIterable[AudioChunk],
    on_chunk: Callable[[AudioChunk], None],
    max_ahead_s: float = MAX_AHEAD_S,
) -> AsyncGenerator[AudioChunk, None]:
    """``source``'s chunks, each first given to ``on_chunk`` as soon as it is made. An error of
    ``source`` is raised here after the chunks before it; closing this closes the reading."""
    buffered: deque[AudioChunk] = deque()
    ahead_s = 0.0
    arrived = asyncio.Event()
    room = asyncio.Event()
    ended = False
    failure: BaseException | None = None

    async def pull() -> None:
        nonlocal ahead_s, ended, failure
        try:
            async for chunk in source:
                on_chunk(chunk)
                buffered.append(chunk)
                ahead_s += chunk.duration_s
                arrived.set()
                while ahead_s > max_ahead_s:
                    room.clear()
                    await room.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the reader, never swallowed
            failure = exc
        finally:
            ended = True
            arrived.set()

    puller = asyncio.create_task(pull(), name="read-ahead")
    try:
        while True:
            if buffered:
                chunk = buffered.popleft()
                ahead_s -= chunk.duration_s
                room.set()
                yield chunk
            elif ended:
                if failure is not None:
                    raise failure
                return
            else:
                arrived.clear()
                await arrived.wait()
    finally:
        puller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await puller

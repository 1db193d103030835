"""Run a split speech model (``engines.onnx_split``) window by window over its latent frames.

The front runs once per piece of text and gives a latent sequence of ``frames``. The stages
after it (a flow, a vocoder) are local in time: the audio of frames ``[start, end)`` needs only
their inputs a few frames either side. Each stage gets its own context (``pads``): the last stage
needs its inputs over ``[start - pad, end + pad)``, the stage before it needs its own inputs over
that range widened by its pad, and so on. Each window's audio is cut to exactly its frames, so
consecutive windows join sample for sample as a one-shot run would (to the precision the pads
give: tests compare them).

Windows start small (the first audio is out after a few frames' work) and grow, so later
windows pay proportionally less for their context.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .onnx_split import SplitParts


@dataclass(frozen=True)
class WindowPlan:
    """Window sizes in latent frames: ``first``, then ``second``, then ``largest`` each."""

    first: int
    second: int
    largest: int


FIRST_AUDIO = WindowPlan(first=20, second=64, largest=384)
"""A piece played as it is made. 20 Piper frames are ~230 ms of audio; after the leading
silence is trimmed and the streamer's hold, ~170 ms of it is out while the 64-frame window after
it is computed (~60 ms on two threads, a margin for a busy machine: a gap inside the first words
costs more than a few ms of first audio); the rest (a first piece is at most ~300 frames) is one
more window, computed while those ~900 ms play. Few windows: each pays for its context."""
WHOLE_PIECES = WindowPlan(first=384, second=384, largest=384)
"""A piece that is collected whole anyway: one window (no context to pay for) up to ~6.7 s of
Piper audio, and windows of ~4.5 s beyond, so memory stays bounded however long the piece."""


def window_bounds(frames: int, plan: WindowPlan = FIRST_AUDIO) -> Iterator[tuple[int, int]]:
    """``[start, end)`` of each window over ``frames`` latent frames (see ``WindowPlan``). A
    remainder shorter than half a window joins the window before it."""
    start, size, index = 0, plan.first, 0
    while start < frames:
        end = min(frames, start + size)
        if frames - end < size // 2:
            end = frames
        yield start, end
        index += 1
        start = end
        size = plan.second if index == 1 else plan.largest


@dataclass
class _Tensor:
    value: np.ndarray
    offset: int | None
    """First latent frame the value's last axis holds, or None for a tensor without a time
    axis (a speaker embedding)."""

    def frames(self, start: int, end: int) -> np.ndarray:
        if self.offset is None:
            return self.value
        return self.value[..., start - self.offset : end - self.offset]


class Latent:
    """One piece's front output: what the stages read, and how many frames it has."""

    def __init__(
        self, values: Mapping[str, np.ndarray], time_input: str, durations: str | None = None
    ) -> None:
        self.frames = int(values[time_input].shape[-1])
        self.durations: np.ndarray | None = (
            None if durations is None else np.asarray(values[durations]).reshape(-1)
        )
        """Latent frames per input symbol, when the model's front gives them."""
        self.tensors = {
            name: _Tensor(value, 0 if _has_time_axis(value, self.frames) else None)
            for name, value in values.items()
        }


def _has_time_axis(value: np.ndarray, frames: int) -> bool:
    return value.ndim >= 2 and frames > 1 and value.shape[-1] == frames


class WindowedModel:
    """The sessions of a split model's parts and each stage's context in frames."""

    def __init__(
        self, parts: SplitParts, sessions: Sequence[ort.InferenceSession], pads: Sequence[int]
    ) -> None:
        if len(sessions) != 1 + len(parts.stages) or len(pads) != len(parts.stages):
            raise ValueError("one session per part and one pad per stage")
        self.parts = parts
        self.pads = tuple(pads)
        self._front = sessions[0]
        self._stages = list(zip(parts.stages, sessions[1:], strict=True))

    def front(self, feeds: Mapping[str, np.ndarray]) -> Latent:
        outputs = self.parts.front.outputs
        values = self._front.run(list(outputs), dict(feeds))
        return Latent(
            dict(zip(outputs, values, strict=True)),
            self.parts.stages[0].inputs[0],
            self.parts.durations,
        )

    def audio(self, latent: Latent, start: int, end: int) -> np.ndarray:
        """The waveform of latent frames ``[start, end)``."""
        ranges: list[tuple[int, int]] = []
        low, high = start, end
        for pad in reversed(self.pads):
            low, high = max(0, low - pad), min(latent.frames, high + pad)
            ranges.append((low, high))
        ranges.reverse()
        tensors = dict(latent.tensors)
        result = np.zeros(0, dtype=np.float32)
        for (part, session), (low, high) in zip(self._stages, ranges, strict=True):
            feeds = {name: tensors[name].frames(low, high) for name in part.inputs}
            values = session.run(list(part.outputs), feeds)
            for name, value in zip(part.outputs, values, strict=True):
                tensors[name] = _Tensor(value, low if _has_time_axis(value, high - low) else None)
            result = values[-1]
        # the last stage's output is audio: a whole number of samples per latent frame
        low, high = ranges[-1]
        wave = np.asarray(result, dtype=np.float32).reshape(-1)
        per_frame = wave.size // (high - low)
        return wave[(start - low) * per_frame : (end - low) * per_frame]

    def windows(self, latent: Latent, plan: WindowPlan = FIRST_AUDIO) -> Iterator[np.ndarray]:
        """The piece's audio, one window at a time (see ``window_bounds``)."""
        for start, end in window_bounds(latent.frames, plan):
            yield self.audio(latent, start, end)

"""SpeechT5 (``transformers``): English text to log-mel frames, HiFi-GAN to 16 kHz audio.

The voice comes from a speaker x-vector: a row of the table in ``speakers.npy`` (the published
set, CMU Arctic x-vectors, has 7,931 rows of 512 values). Weights are read from the models
directory only (``local_files_only``; this service never downloads at run time); they are put
there by ``python -m tools.fetch_models speecht5`` in the layout of the constants below.

The decoder is autoregressive and stops when its stop-token head says so. A model that never
says so (random weights, or odd input to real ones) is bounded by the text's length: at most
``MAX_FRAMES_PER_TOKEN`` mel frames per input token.

Speed is applied to the mel frames before the vocoder (linear interpolation in time): the
duration changes and the pitch does not, because the vocoder makes the pitch from each frame.

Threads: torch's intra-op thread count is per OS thread under its OpenMP backend (once a thread
has run an operator), but ``torch.set_num_threads`` also changes the default that threads not
yet started pick up. The worker threads of this engine pin their own count when they start and
put the process default back, so the engine never changes the threads of another torch engine.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .audio import FloatAudio
from .backend import EngineNotInstalled, EngineProfile, LocalBackend
from .config import EngineThreads, ServiceConfig
from .deadline_executor import DeadlineExecutor
from .engine_registry import EngineSpec, SettingsSection
from .errors import EngineError
from .local_tts import LocalTTS
from .names import EngineName, QualityTier
from .torch_threads import pin_torch_threads
from .voices import Binding, SpeechT5Binding

logger = logging.getLogger(__name__)

SPEECHT5_DIR = Path("speecht5")
"""Everything of this engine, relative to the models directory."""
TTS_DIR = SPEECHT5_DIR / "tts"
"""``save_pretrained`` of ``SpeechT5ForTextToSpeech`` and ``SpeechT5Processor``."""
VOCODER_DIR = SPEECHT5_DIR / "hifigan"
"""``save_pretrained`` of ``SpeechT5HifiGan``."""
SPEAKERS_FILE = SPEECHT5_DIR / "speakers.npy"
"""float32 array [speakers, speaker_embedding_dim] of x-vectors."""
TOKENIZER_FILE = "spm_char.model"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
"""Any one of these in a model directory holds its weights (``save_pretrained`` writes the
first)."""

PUBLISHED_TTS_CHECKPOINT = "microsoft/speecht5_tts"
PUBLISHED_VOCODER_CHECKPOINT = "microsoft/speecht5_hifigan"
PUBLISHED_SPEAKER_DATASET = "Matthijs/cmu-arctic-xvectors"
PUBLISHED_SPEAKER_ROWS = 7_931
PUBLISHED_SPEAKER_EMBEDDING_DIM = 512

DEFAULT_SAMPLE_RATE = 16_000
"""Used only when the vocoder's configuration has no ``sampling_rate``."""
STOP_THRESHOLD = 0.5
"""Stop-token probability that ends an utterance (the published default)."""
MIN_FRAMES_PER_TOKEN = 0.0
MAX_FRAMES_PER_TOKEN = 10.0
"""Hard cap on output length: 10 frames (160 ms at a 256-sample hop) per input token, roughly
one character; speech runs at about 60-80 ms a character, so only a runaway decoder hits it."""
SPEED_RANGE = (0.5, 2.0)
DETERMINISTIC_SEED = 0
WARM_UP_TEXT = "Ready."
UNSPEAKABLE_PAUSE_MS = 100
"""What text with nothing to speak ("...") becomes: silence."""

FloatTable = npt.NDArray[np.float32]

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SpeechT5Paths:
    """Where the engine's files are under one models directory."""

    tts: Path
    vocoder: Path
    speakers: Path

    @classmethod
    def under(cls, models_dir: Path) -> SpeechT5Paths:
        return cls(models_dir / TTS_DIR, models_dir / VOCODER_DIR, models_dir / SPEAKERS_FILE)

    def missing(self) -> list[str]:
        """What a complete install has and this one lacks (empty when complete), as paths
        below the models directory's ``speecht5/``."""
        root = self.speakers.parent
        lacking: list[str] = []
        for directory, extra in ((self.tts, (TOKENIZER_FILE,)), (self.vocoder, ())):
            for name in ("config.json", *extra):
                if not (directory / name).is_file():
                    lacking.append(str((directory / name).relative_to(root)))
            if not any((directory / name).is_file() for name in WEIGHT_FILES):
                weights = " or ".join((WEIGHT_FILES[0], WEIGHT_FILES[-1]))
                lacking.append(f"{directory.relative_to(root)}/{weights}")
        if not self.speakers.is_file():
            lacking.append(self.speakers.name)
        return lacking


@dataclass(frozen=True)
class _Options:
    speaker: int
    speed: float


def is_speakable(text: str) -> bool:
    """Whether ``text`` has anything to say (punctuation alone would be spoken as noise)."""
    return any(character.isalnum() for character in text)


def _clamp_speed(speed: float) -> float:
    low, high = SPEED_RANGE
    return min(high, max(low, speed))


class SpeechT5Backend(LocalBackend):
    """SpeechT5 + HiFi-GAN, shared by every session; voices are rows of the x-vector table."""

    name = EngineName.SPEECHT5
    profile = EngineProfile(
        quality_mos=3.2,
        typical_ttfa_ms=900.0,  # full-size architecture, first piece, 2 shared cores
        tier=QualityTier.STANDARD,
        description="SpeechT5 + HiFi-GAN (transformers): balanced English voices from x-vectors",
    )
    install_hint = "run `python -m tools.fetch_models speecht5`"

    def __init__(
        self, models_dir: Path, threads: EngineThreads, deterministic: bool = False
    ) -> None:
        """``deterministic`` seeds torch's (process-wide) generator before each sentence, so
        the decoder's always-on prenet dropout repeats: for tests, never for service."""
        super().__init__()
        self._models_dir = models_dir
        self._paths = SpeechT5Paths.under(models_dir)
        self._threads = threads
        self._deterministic = deterministic
        self._seed_lock = threading.Lock()
        self._executor = DeadlineExecutor(
            threads.workers,
            thread_name_prefix="speecht5",
            initializer=pin_torch_threads,
            initargs=(threads.intra_op_threads,),
        )
        self._processor: Any = None
        self._model: Any = None
        self._vocoder: Any = None
        self._speakers: FloatTable = np.zeros((0, 0), dtype=np.float32)
        self._max_input_tokens = 0
        self.sample_rate = DEFAULT_SAMPLE_RATE

    @property
    def paths(self) -> SpeechT5Paths:
        return self._paths

    @property
    def speaker_count(self) -> int:
        return int(self._speakers.shape[0])

    @property
    def samples_per_frame(self) -> int:
        """Audio samples the vocoder makes per mel frame (its hop)."""
        if self._vocoder is None:
            return 0
        return int(np.prod(self._vocoder.config.upsample_rates))

    @property
    def max_input_tokens(self) -> int:
        """Longest token sequence one model call takes; longer text is cut between words."""
        return self._max_input_tokens

    def _load(self) -> None:
        missing = self._paths.missing()
        if missing:
            raise EngineNotInstalled(
                f"SpeechT5 weights not found in {self._models_dir / SPEECHT5_DIR} "
                f"(missing {', '.join(missing)})"
            )
        try:
            import sentencepiece  # noqa: F401  (SpeechT5Tokenizer needs it)
            import torch  # noqa: F401
            from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan, SpeechT5Processor
        except ImportError as exc:
            raise EngineNotInstalled(f"{exc.name or 'transformers'} is not installed") from exc
        processor = SpeechT5Processor.from_pretrained(str(self._paths.tts), local_files_only=True)
        model = SpeechT5ForTextToSpeech.from_pretrained(str(self._paths.tts), local_files_only=True)
        vocoder = SpeechT5HifiGan.from_pretrained(str(self._paths.vocoder), local_files_only=True)
        model.eval()
        vocoder.eval()
        config = model.config
        speakers = np.load(self._paths.speakers, allow_pickle=False)
        width = int(config.speaker_embedding_dim)
        if speakers.ndim != 2 or speakers.shape[1] != width or speakers.shape[0] == 0:
            raise ValueError(
                f"{self._paths.speakers}: expected x-vectors of shape [speakers, {width}], "
                f"found {list(speakers.shape)}"
            )
        # the decoder can hold max_speech_positions frames, reduction_factor per step
        frames_cap = (int(config.max_speech_positions) - 1) * int(config.reduction_factor)
        self._max_input_tokens = min(
            int(config.max_text_positions), int(frames_cap / MAX_FRAMES_PER_TOKEN)
        )
        self._speakers = np.ascontiguousarray(speakers, dtype=np.float32)
        self.sample_rate = int(getattr(vocoder.config, "sampling_rate", DEFAULT_SAMPLE_RATE))
        self._processor, self._model, self._vocoder = processor, model, vocoder
        logger.info(
            "SpeechT5 loaded: %d speakers, %d Hz",
            self.speaker_count,
            self.sample_rate,
            extra={"engine": self.name},
        )

    def warm_up(self) -> None:
        # on a worker thread: its torch thread pool is started, not the caller's
        tts = self.create_tts(SpeechT5Binding(speaker=0), speed=1.0)
        self._executor.submit(lambda: list(tts.render(WARM_UP_TEXT))).result()

    def languages(self) -> frozenset[str]:
        return frozenset({"en"}) if self.ready else frozenset()

    def can_render(self, binding: Binding) -> bool:
        return (
            self.ready
            and isinstance(binding, SpeechT5Binding)
            and binding.speaker < self.speaker_count
        )

    def missing_reason(self, binding: Binding) -> str:
        if not self.ready:
            return f"SpeechT5 is {self.state.value}: {self.detail or 'not loaded'}"
        if not isinstance(binding, SpeechT5Binding):
            return f"{binding.model_dump(exclude_none=True)} is not a SpeechT5 binding"
        return (
            f"SpeechT5 speaker {binding.speaker} is not in {self._paths.speakers} "
            f"(rows 0..{self.speaker_count - 1})"
        )

    def create_tts(
        self, binding: Binding, *, speed: float, latency_critical: bool = False
    ) -> SpeechT5TTS:
        """``latency_critical`` is ignored: one model, no faster mode for first pieces.

        Raises ``EngineError`` (not retryable) when ``can_render(binding)`` is False."""
        if not isinstance(binding, SpeechT5Binding) or not self.can_render(binding):
            raise EngineError(self.name, self.missing_reason(binding), retryable=False)
        return SpeechT5TTS(self, _Options(binding.speaker, _clamp_speed(speed)))

    def token_count(self, text: str) -> int:
        return len(self._processor.tokenizer(text)["input_ids"])

    def model_sized_parts(self, text: str) -> list[str]:
        """``text`` cut between words (or, for one huge word, anywhere) into parts of at most
        ``max_input_tokens`` tokens each."""
        text = text.strip()
        if len(text) < 2 or self.token_count(text) <= self._max_input_tokens:
            return [text]
        middle = len(text) // 2
        gaps = [match.start() for match in _WHITESPACE.finditer(text)]
        cut = min(gaps, key=lambda at: abs(at - middle), default=middle)
        head, tail = text[:cut].strip(), text[cut:].strip()
        return [*self.model_sized_parts(head), *self.model_sized_parts(tail)]

    def synthesize_part(self, text: str, speaker: int, speed: float) -> FloatAudio:
        """Blocking: one part of a sentence as float audio at ``sample_rate``.

        Output length is at most ``MAX_FRAMES_PER_TOKEN`` mel frames per input token (times
        1/``speed``), whatever the stop-token head says."""
        if self._deterministic:
            with self._seed_lock:
                return self._generate(text, speaker, speed, seed=DETERMINISTIC_SEED)
        return self._generate(text, speaker, speed, seed=None)

    def _generate(self, text: str, speaker: int, speed: float, *, seed: int | None) -> FloatAudio:
        import torch

        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            input_ids = self._processor(text=text, return_tensors="pt")["input_ids"]
            embedding = torch.from_numpy(self._speakers[speaker : speaker + 1].copy())
            # generate_speech(..., vocoder=v) ends with v(spectrogram); it is split in two
            # here so that speed can stretch the frames in between
            spectrogram = self._model.generate_speech(
                input_ids,
                embedding,
                threshold=STOP_THRESHOLD,
                minlenratio=MIN_FRAMES_PER_TOKEN,
                maxlenratio=MAX_FRAMES_PER_TOKEN,
            )
            if speed != 1.0:
                spectrogram = _stretch_frames(spectrogram, speed)
            waveform = self._vocoder(spectrogram)
        audio = np.asarray(waveform.detach().cpu().numpy(), dtype=np.float32).reshape(-1)
        if not np.isfinite(audio).all():
            raise RuntimeError("SpeechT5 produced non-finite audio")
        return np.clip(audio, -1.0, 1.0)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _stretch_frames(spectrogram: Any, speed: float) -> Any:
    """Log-mel frames [frames, bins] resampled in time to ``frames / speed`` frames."""
    import torch

    frames = int(spectrogram.shape[0])
    target = max(1, round(frames / speed))
    stretched = torch.nn.functional.interpolate(
        spectrogram.T.unsqueeze(0), size=target, mode="linear", align_corners=True
    )
    return stretched.squeeze(0).T.contiguous()


class SpeechT5TTS(LocalTTS):
    """One SpeechT5 voice (a speaker row) at one speed; sentence by sentence."""

    def __init__(self, backend: SpeechT5Backend, options: _Options) -> None:
        super().__init__(
            engine=backend.name,
            sample_rate=backend.sample_rate,
            executor=backend.pool,
            language="en",
        )
        self._backend = backend
        self._opts = options

    def update_options(self, *, speaker: int | None = None, speed: float | None = None) -> None:
        if speaker is not None and not self._backend.can_render(SpeechT5Binding(speaker=speaker)):
            raise EngineError(
                self._backend.name,
                self._backend.missing_reason(SpeechT5Binding(speaker=speaker)),
                retryable=False,
            )
        self._opts = replace(
            self._opts,
            speaker=self._opts.speaker if speaker is None else speaker,
            speed=self._opts.speed if speed is None else _clamp_speed(speed),
        )

    def _render_text(self, text: str, stop: threading.Event) -> Iterator[FloatAudio]:
        if text.strip() and not is_speakable(text):
            # LiveKit's ChunkedStream fails non-blank text that yields no audio; punctuation
            # alone is a pause (espeak-ng gives a blip of silence too)
            yield np.zeros(self.sample_rate * UNSPEAKABLE_PAUSE_MS // 1000, dtype=np.float32)
            return
        yield from super()._render_text(text, stop)

    def _render(self, text: str, stop: threading.Event) -> Iterator[FloatAudio]:
        opts = self._opts  # a later update_options() never changes this utterance
        if not is_speakable(text):
            return
        for part in self._backend.model_sized_parts(text):
            if stop.is_set():
                return
            if is_speakable(part):
                yield self._backend.synthesize_part(part, opts.speaker, opts.speed)


SETTINGS = SettingsSection("speecht5", EngineThreads(workers=1, intra_op_threads=1))
"""``engines.speecht5`` in config.yaml: torch threads per synthesis."""
QUALITY_RANK = 40.0
"""``quality_first``: after Piper, before the cloud."""


def build_backend(config: ServiceConfig, *, deterministic: bool) -> SpeechT5Backend:
    return SpeechT5Backend(
        config.models_dir, config.engines.section(SETTINGS), deterministic=deterministic
    )


SPEC = EngineSpec(
    name=SpeechT5Backend.name,
    binding=SpeechT5Binding,
    tier=SpeechT5Backend.profile.tier,
    quality_rank=QUALITY_RANK,
    build=build_backend,
    settings=SETTINGS,
)

"""XTTS v2 (``coqui-tts``): premium multilingual voices, streamed, and voice cloning.

The published checkpoint (``coqui/XTTS-v2``) lives under ``models_dir / xtts_v2`` as the hub
ships it: ``config.json``, ``model.pth``, ``vocab.json`` and, optionally, ``speakers_xtts.pth``
(the built-in speakers; without it only cloned voices work). ``tools/fetch_models.py xtts``
puts them there.

Audio streams from ``Xtts.inference_stream``: each chunk of GPT tokens is decoded and handed
over as soon as it exists, so the first audio leaves before the sentence is finished. A cloned
voice's speaker latents are computed once per reference recording (keyed by its SHA-256) and
kept in a bounded LRU cache; computing them runs in the engine's thread pool like synthesis.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .audio import FloatAudio
from .backend import EngineNotInstalled, EngineProfile, LocalBackend
from .config import EngineThreads, ServiceConfig, XttsSettings
from .deadline_executor import DeadlineExecutor
from .engine_registry import EngineSpec, SettingsSection
from .errors import EngineUnavailableError, UnknownLanguageError
from .local_tts import LocalTTS
from .names import EngineName, QualityTier, primary_language
from .torch_threads import pin_torch_threads
from .voice_reference import VoiceReference
from .voices import Binding, XttsBinding

logger = logging.getLogger(__name__)

XTTS_REPO = "coqui/XTTS-v2"
XTTS_DIR = Path("xtts_v2")
"""Where the weights go, relative to the models directory."""
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "model.pth"
VOCAB_FILE = "vocab.json"
SPEAKERS_FILE = "speakers_xtts.pth"
"""Built-in speakers: name -> {"gpt_cond_latent", "speaker_embedding"}. Optional."""
REQUIRED_FILES = (CONFIG_FILE, CHECKPOINT_FILE, VOCAB_FILE)
XTTS_FILES = (*REQUIRED_FILES, SPEAKERS_FILE)

REFERENCE_LOAD_RATE_HZ = 22_050
"""The rate coqui loads a reference file at before computing its latents."""
STREAM_CHUNK_TOKENS = 20
"""GPT tokens per streamed chunk (one token is 1024 samples at 22.05 kHz, ~46 ms of audio)."""
LATENCY_CHUNK_TOKENS = 10
"""Tokens per chunk for the first piece of an utterance: earlier first audio, more decoding."""
SPEED_RANGE = (0.5, 2.0)
DEFAULT_LANGUAGE = "en"
WARM_UP_TEXT = "Ready."
LATENT_CACHE_SIZE = 32

# languages whose text normalizer needs a package coqui-tts does not depend on
_LANGUAGE_PACKAGES = {"ja": "cutlet", "zh": "pypinyin"}


@dataclass(frozen=True)
class SpeakerLatents:
    """What XTTS speaks with: the GPT conditioning latents and the decoder's speaker vector."""

    gpt_cond_latent: Any  # torch.Tensor [1, 32, C]
    speaker_embedding: Any  # torch.Tensor [1, 512, 1]


class SpeakerLatentCache:
    """A bounded LRU of speaker latents by reference digest, safe across threads.

    Concurrent requests for a digest that is being computed wait for that computation instead
    of starting their own, so each reference is computed once while it stays cached."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the latent cache needs room for at least one voice")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._entries: OrderedDict[str, SpeakerLatents] = OrderedDict()
        self._pending: dict[str, Future[SpeakerLatents]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, digest: object) -> bool:
        with self._lock:
            return digest in self._entries

    def get_or_compute(self, digest: str, compute: Callable[[], SpeakerLatents]) -> SpeakerLatents:
        """The cached latents for ``digest``, computing them (blocking) on a miss."""
        with self._lock:
            cached = self._entries.get(digest)
            if cached is not None:
                self._entries.move_to_end(digest)
                self.hits += 1
                return cached
            pending = self._pending.get(digest)
            if pending is None:
                self.misses += 1
                future: Future[SpeakerLatents] = Future()
                self._pending[digest] = future
            else:
                self.hits += 1
        if pending is not None:
            return pending.result()
        try:
            latents = compute()
        except BaseException as exc:
            with self._lock:
                del self._pending[digest]
            future.set_exception(exc)
            raise
        with self._lock:
            del self._pending[digest]
            self._entries[digest] = latents
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
                self.evictions += 1
        future.set_result(latents)
        return latents


@dataclass(frozen=True)
class _Options:
    language: str
    speed: float
    chunk_tokens: int


class XttsBackend(LocalBackend):
    streams_within_piece = True
    name = EngineName.XTTS
    profile = EngineProfile(
        quality_mos=3.8,
        typical_ttfa_ms=300.0,
        tier=QualityTier.PREMIUM,
        description="XTTS v2 (coqui-tts): premium multilingual voices and voice cloning",
    )
    install_hint = "run `python -m tools.fetch_models xtts`"
    supports_cloning = True

    def __init__(
        self,
        model_dir: Path,
        threads: EngineThreads,
        *,
        latent_cache_size: int = LATENT_CACHE_SIZE,
        stream_chunk_tokens: int = STREAM_CHUNK_TOKENS,
        latency_chunk_tokens: int = LATENCY_CHUNK_TOKENS,
    ) -> None:
        super().__init__()
        self._weights_dir = model_dir / XTTS_DIR
        self._threads = threads
        self._stream_chunk_tokens = stream_chunk_tokens
        self._latency_chunk_tokens = latency_chunk_tokens
        self._executor = DeadlineExecutor(
            threads.workers,
            thread_name_prefix="xtts",
            initializer=pin_torch_threads,
            initargs=(threads.intra_op_threads,),
        )
        # the GPT keeps the sentence being generated on the model (store_prefix_emb), so one
        # sentence generates at a time; latents for cloning need no lock
        self._generation_lock = threading.Lock()
        self.latent_cache = SpeakerLatentCache(latent_cache_size)
        self._model: Any = None
        self._config: Any = None
        self._device = "cpu"
        self._speakers: dict[str, SpeakerLatents] = {}
        self._languages: frozenset[str] = frozenset()
        self._sample_rate = 0

    @property
    def weights_dir(self) -> Path:
        return self._weights_dir

    @property
    def sample_rate(self) -> int:
        """Hz of the audio this engine produces (the config's ``audio.output_sample_rate``)."""
        return self._sample_rate

    @property
    def latent_cache_hits(self) -> int:
        return self.latent_cache.hits

    @property
    def latent_cache_misses(self) -> int:
        return self.latent_cache.misses

    def _load(self) -> None:
        missing = [name for name in REQUIRED_FILES if not (self._weights_dir / name).is_file()]
        if missing:
            raise EngineNotInstalled(
                f"XTTS v2 weights not found in {self._weights_dir} (missing {', '.join(missing)})"
            )
        try:
            import torch
            from TTS.tts.configs.xtts_config import XttsConfig
            from TTS.tts.models.xtts import Xtts
        except ImportError as exc:
            raise EngineNotInstalled(f"coqui-tts cannot be imported: {exc}") from exc
        config = XttsConfig()
        config.load_json(str(self._weights_dir / CONFIG_FILE))
        model = Xtts.init_from_config(config)
        model.load_checkpoint(
            config, checkpoint_dir=str(self._weights_dir), use_deepspeed=False, eval=True
        )
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(self._device)
        self._model = model
        self._config = config
        self._sample_rate = int(config.audio.output_sample_rate)
        if self._sample_rate != int(config.model_args.output_sample_rate):
            logger.warning(
                "config.json: audio.output_sample_rate %s differs from the decoder's %s",
                self._sample_rate,
                config.model_args.output_sample_rate,
                extra={"engine": self.name},
            )
        self._languages = _speakable_languages(config.languages)
        manager = model.speaker_manager
        speakers = manager.speakers if manager is not None else {}
        self._speakers = {
            name: SpeakerLatents(
                entry["gpt_cond_latent"].to(self._device),
                entry["speaker_embedding"].to(self._device),
            )
            for name, entry in speakers.items()
        }
        if not self._speakers:
            logger.warning(
                "no %s in %s: only cloned voices can be spoken",
                SPEAKERS_FILE,
                self._weights_dir,
                extra={"engine": self.name},
            )

    def warm_up(self) -> None:
        if not self._speakers:
            return  # nothing to speak with until a reference arrives
        speaker = next(iter(self._speakers))
        tts = self.create_tts(XttsBinding(speaker=speaker), speed=1.0)
        for _ in tts.render(WARM_UP_TEXT):
            pass

    def speaker_names(self) -> list[str]:
        return sorted(self._speakers)

    def languages(self) -> frozenset[str]:
        return self._languages if self.ready else frozenset()

    def can_render(self, binding: Binding) -> bool:
        return isinstance(binding, XttsBinding) and binding.speaker in self._speakers

    def missing_reason(self, binding: Binding) -> str:
        speaker = binding.speaker if isinstance(binding, XttsBinding) else "?"
        if not self._speakers:
            return (
                f"XTTS speaker {speaker!r} needs {self._weights_dir / SPEAKERS_FILE} "
                f"({self.install_hint}); without it only cloned voices work"
            )
        return f"XTTS speaker {speaker!r} is not in {self._weights_dir / SPEAKERS_FILE}"

    def create_tts(
        self,
        binding: Binding,
        *,
        speed: float,
        latency_critical: bool = False,
        language: str = DEFAULT_LANGUAGE,
    ) -> XttsTTS:
        """A built-in speaker. XTTS speakers speak every language: ``language`` picks it."""
        assert isinstance(binding, XttsBinding)
        latents = self._speakers[binding.speaker]
        return XttsTTS(self, lambda: latents, self._options(language, speed, latency_critical))

    def create_voice(
        self, binding: Binding, *, language: str, speed: float, latency_critical: bool = False
    ) -> XttsTTS:
        return self.create_tts(
            binding, speed=speed, latency_critical=latency_critical, language=language
        )

    def create_cloned_tts(
        self,
        reference: VoiceReference,
        *,
        language: str,
        speed: float,
        latency_critical: bool = False,
    ) -> XttsTTS:
        """Speak ``language`` in the voice of ``reference``.

        Cheap: the speaker latents are computed in the engine's pool on the first sentence
        (or by :meth:`prepare_clone`) and come from the cache afterwards."""
        options = self._options(language, speed, latency_critical)
        return XttsTTS(self, lambda: self.clone_latents(reference), options)

    def clone_latents(self, reference: VoiceReference) -> SpeakerLatents:
        """Blocking: the speaker latents of ``reference``, from the cache or computed once."""
        return self.latent_cache.get_or_compute(
            reference.digest, lambda: self._compute_latents(reference)
        )

    async def prepare_clone(self, reference: VoiceReference) -> None:
        """Compute (or find cached) the latents of ``reference`` in the engine's pool."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.clone_latents, reference)

    def _compute_latents(self, reference: VoiceReference) -> SpeakerLatents:
        """What coqui's ``get_conditioning_latents`` does, from samples instead of a file."""
        import torch
        import torchaudio.functional

        config = self._config
        model = self._model
        audio = torch.from_numpy(np.ascontiguousarray(reference.audio, dtype=np.float32))[None]
        with torch.inference_mode():
            audio = torchaudio.functional.resample(
                audio, reference.sample_rate, REFERENCE_LOAD_RATE_HZ
            ).clamp_(-1.0, 1.0)
            audio = audio[:, : REFERENCE_LOAD_RATE_HZ * int(config.max_ref_len)].to(self._device)
            if config.sound_norm_refs:
                audio = (audio / torch.abs(audio).max()) * 0.75
            speaker_embedding = model.get_speaker_embedding(audio, REFERENCE_LOAD_RATE_HZ)
            gpt_cond_latent = model.get_gpt_cond_latents(
                audio,
                REFERENCE_LOAD_RATE_HZ,
                length=int(config.gpt_cond_len),
                chunk_length=int(config.gpt_cond_chunk_len),
            )
        logger.info(
            "speaker latents computed for reference %s (%.1f s)",
            reference.digest[:12],
            reference.duration_s,
            extra={"engine": self.name},
        )
        return SpeakerLatents(gpt_cond_latent, speaker_embedding)

    def _options(self, language: str, speed: float, latency_critical: bool) -> _Options:
        if not self.ready:
            raise EngineUnavailableError(f"{self.name} is not loaded: {self.detail}")
        code = primary_language(language)
        if code not in self.languages():
            raise UnknownLanguageError(language, self.languages())
        low, high = SPEED_RANGE
        chunk = self._latency_chunk_tokens if latency_critical else self._stream_chunk_tokens
        return _Options(code, min(high, max(low, speed)), chunk)

    def stream_sentence(
        self, text: str, latents: SpeakerLatents, options: _Options, stop: threading.Event
    ) -> Iterator[FloatAudio]:
        """Blocking: one sentence as float audio, chunk by chunk as the model streams it,
        until ``stop`` is set. One sentence generates at a time: the GPT keeps the sentence
        being generated on the model (``store_prefix_emb``)."""
        config = self._config
        with self._generation_lock:
            if stop.is_set():
                return
            chunks = self._model.inference_stream(
                text,
                options.language,
                latents.gpt_cond_latent,
                latents.speaker_embedding,
                stream_chunk_size=options.chunk_tokens,
                temperature=config.temperature,
                length_penalty=config.length_penalty,
                repetition_penalty=config.repetition_penalty,
                top_k=config.top_k,
                top_p=config.top_p,
                speed=options.speed,
                enable_text_splitting=False,
            )
            try:
                for chunk in chunks:
                    audio = chunk.detach().float().cpu().numpy().reshape(-1)
                    if audio.size:
                        yield np.clip(audio, -1.0, 1.0).astype(np.float32)
                    if stop.is_set():
                        return
            finally:
                chunks.close()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _speakable_languages(configured: list[str]) -> frozenset[str]:
    """The config's languages as primary codes, less those whose normalizer is missing."""
    languages: set[str] = set()
    for code in configured:
        language = primary_language(code)
        package = _LANGUAGE_PACKAGES.get(language)
        if package is not None and importlib.util.find_spec(package) is None:
            logger.warning("XTTS cannot speak %r without the %s package", language, package)
            continue
        languages.add(language)
    return frozenset(languages)


class XttsTTS(LocalTTS):
    def __init__(
        self,
        backend: XttsBackend,
        latents: Callable[[], SpeakerLatents],
        options: _Options,
    ) -> None:
        super().__init__(
            engine=backend.name,
            sample_rate=backend.sample_rate,
            executor=backend.pool,
            language=options.language,
        )
        self._backend = backend
        self._latents = latents
        self._opts = options

    def update_options(self, *, speed: float | None = None) -> None:
        if speed is not None:
            low, high = SPEED_RANGE
            self._opts = _Options(
                self._opts.language, min(high, max(low, speed)), self._opts.chunk_tokens
            )

    def _render(self, text: str, stop: threading.Event) -> Iterator[FloatAudio]:
        if not any(c.isalnum() for c in text):
            return
        opts = self._opts  # a later update_options() never changes this utterance
        latents = self._latents()  # a cloned voice's first sentence computes them here
        yield from self._backend.stream_sentence(text, latents, opts, stop)


SETTINGS = SettingsSection("xtts", XttsSettings(workers=1, intra_op_threads=1))
"""``engines.xtts`` in config.yaml."""
QUALITY_RANK = 10.0
"""``quality_first``: the premium local model comes first."""


def build_backend(config: ServiceConfig, *, deterministic: bool) -> XttsBackend:
    """``deterministic`` is not offered: XTTS samples its speech tokens."""
    settings = config.engines.section(SETTINGS)
    return XttsBackend(config.models_dir, settings, latent_cache_size=settings.latent_cache_size)


SPEC = EngineSpec(
    name=XttsBackend.name,
    binding=XttsBinding,
    tier=XttsBackend.profile.tier,
    quality_rank=QUALITY_RANK,
    build=build_backend,
    settings=SETTINGS,
)

"""Perceived quality of produced speech: DNSMOS (``speechmos``'s ONNX models), off the hot path.

:class:`QualityScorer` loads the two DNSMOS networks once and scores a clip with our own code
following ``speechmos.dnsmos`` (itself the reference DNSMOS script): the clip is resampled to
16 kHz, tiled by doubling until it fills one 9.01 s window, cut into 9.01 s windows one second
apart, and the SIG/BAK/OVRL network (on raw samples) and the P.808 network (on a log-mel
spectrogram, computed here with numpy exactly as ``librosa`` does) are averaged over windows.
``speechmos`` itself is not imported: it needs ``librosa`` (and its numba/scipy stack) for the
spectrogram alone, and its module-global sessions use onnxruntime's default of one spinning
thread per core, which would starve the engines on a small machine.

:class:`QualitySampler` scores every n-th produced utterance on its own single worker thread,
dropping samples while it is busy, so measuring quality never slows down or breaks synthesis.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from engines.audio import FloatAudio, Pcm16, pcm16_to_float, resample

logger = logging.getLogger(__name__)

DNSMOS_PACKAGE = "speechmos"
DNSMOS_INSTALL_HINT = "pip install speechmos"
PRIMARY_MODEL_FILE = "dnsmos_models/sig_bak_ovr.onnx"
P808_MODEL_FILE = "dnsmos_models/model_v8.onnx"
ONNX_INPUT_NAME = "input_1"

DNSMOS_SAMPLE_RATE_HZ = 16_000
WINDOW_S = 9.01
WINDOW_SAMPLES = round(WINDOW_S * DNSMOS_SAMPLE_RATE_HZ)
WINDOW_HOP_SAMPLES = DNSMOS_SAMPLE_RATE_HZ  # windows start one second apart
MAX_WINDOWS_PER_CLIP = 8
"""Windows scored per clip (each ≈ 0.3–0.7 s of one core); bounds the cost of long clips."""
MIN_CLIP_S = 0.5
"""Shorter clips are refused: tiling a fraction of a word to 9 s says little about the voice."""

# P.808 network input: log-mel spectrogram as in the reference (librosa defaults otherwise)
MEL_BANDS = 120
MEL_FRAME_SAMPLES = 320
MEL_FFT_SAMPLES = MEL_FRAME_SAMPLES + 1
MEL_HOP_SAMPLES = 160
MEL_TRIM_SAMPLES = 160  # the reference drops the window's last 10 ms before the spectrogram
POWER_FLOOR = 1e-10
DB_RANGE_DB = 80.0
DB_OFFSET_DB = 40.0
DB_SCALE_DB = 40.0

# Mel scale of librosa (Slaney): linear below 1 kHz, logarithmic above
_MEL_LINEAR_HZ_PER_MEL = 200.0 / 3
_MEL_LOG_START_HZ = 1000.0
_MEL_LOG_START_MEL = _MEL_LOG_START_HZ / _MEL_LINEAR_HZ_PER_MEL
_MEL_LOG_STEP = math.log(6.4) / 27.0

# Polynomials mapping the network's raw outputs to MOS (non-personalized DNSMOS P.835)
_SIG_POLY = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
_BAK_POLY = np.poly1d([-0.13166888, 1.60915514, -0.39604546])
_OVRL_POLY = np.poly1d([-0.06766283, 1.11546468, 0.04602535])

DEFAULT_INTRA_OP_THREADS = 1


class DnsmosUnavailable(RuntimeError):
    """The DNSMOS models (package ``speechmos``) are not installed."""


class ClipTooShortError(ValueError):
    """The clip is shorter than :data:`MIN_CLIP_S`, too short to score meaningfully."""


@dataclass(frozen=True)
class QualityScore:
    """DNSMOS mean opinion scores, each on the 1 (bad) to 5 (excellent) scale."""

    overall: float
    """OVRL: overall quality (P.835)."""
    signal: float
    """SIG: quality of the speech itself (distortion, robotic or muffled sound)."""
    background: float
    """BAK: how unintrusive the background is (noise, hiss); high means clean."""
    p808: float
    """Overall quality from the separate P.808 network."""


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    linear = hz / _MEL_LINEAR_HZ_PER_MEL
    log = _MEL_LOG_START_MEL + np.log(np.maximum(hz, _MEL_LOG_START_HZ) / _MEL_LOG_START_HZ) / (
        _MEL_LOG_STEP
    )
    return np.where(hz >= _MEL_LOG_START_HZ, log, linear)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    linear = mel * _MEL_LINEAR_HZ_PER_MEL
    log = _MEL_LOG_START_HZ * np.exp(_MEL_LOG_STEP * (mel - _MEL_LOG_START_MEL))
    return np.where(mel >= _MEL_LOG_START_MEL, log, linear)


@cache
def _mel_filterbank() -> npt.NDArray[np.float32]:
    """Slaney-normalized triangular filters, shape (bands, FFT bins), as ``librosa.filters.mel``."""
    fft_hz = np.fft.rfftfreq(MEL_FFT_SAMPLES, d=1.0 / DNSMOS_SAMPLE_RATE_HZ)
    edges_mel = np.linspace(
        _hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(DNSMOS_SAMPLE_RATE_HZ / 2)), MEL_BANDS + 2
    )
    edges_hz = _mel_to_hz(edges_mel)
    widths_hz = np.diff(edges_hz)
    ramps = edges_hz[:, np.newaxis] - fft_hz[np.newaxis, :]
    rising = -ramps[:-2] / widths_hz[:-1, np.newaxis]
    falling = ramps[2:] / widths_hz[1:, np.newaxis]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, np.newaxis]
    return weights.astype(np.float32)


@cache
def _analysis_window() -> npt.NDArray[np.float32]:
    """Periodic Hann window of the FFT length (``scipy.signal.get_window("hann", n)``)."""
    n = np.arange(MEL_FFT_SAMPLES)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / MEL_FFT_SAMPLES)).astype(np.float32)


def p808_features(samples: FloatAudio) -> npt.NDArray[np.float32]:
    """Log-mel features of the P.808 network, shape (frames, bands).

    The same as ``(librosa.power_to_db(librosa.feature.melspectrogram(y, sr=16000, n_fft=321,
    hop_length=160, n_mels=120), ref=np.max) + 40) / 40``, transposed.
    """
    half = MEL_FFT_SAMPLES // 2
    padded = np.pad(samples.astype(np.float32, copy=False), (half, half))
    frames = np.lib.stride_tricks.sliding_window_view(padded, MEL_FFT_SAMPLES)[::MEL_HOP_SAMPLES]
    spectrum = np.fft.rfft(frames * _analysis_window(), axis=1)
    power = (np.abs(spectrum) ** 2).astype(np.float32)
    mel: npt.NDArray[np.float32] = power @ _mel_filterbank().T
    db: npt.NDArray[np.floating] = 10.0 * np.log10(np.maximum(POWER_FLOOR, mel))
    db -= 10.0 * np.log10(max(POWER_FLOOR, float(mel.max())))
    db = np.maximum(db, db.max() - DB_RANGE_DB)
    return ((db + DB_OFFSET_DB) / DB_SCALE_DB).astype(np.float32)


def _dnsmos_session(model: Path, intra_op_threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # spinning threads steal the engines' cores on a small machine
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _dnsmos_model_path(relative: str) -> Path:
    try:
        path = Path(str(resources.files(DNSMOS_PACKAGE) / relative))
    except ModuleNotFoundError as exc:
        raise DnsmosUnavailable(
            f"DNSMOS models not installed ({DNSMOS_PACKAGE}): {DNSMOS_INSTALL_HINT}"
        ) from exc
    if not path.is_file():
        raise DnsmosUnavailable(f"DNSMOS model missing: {path}; reinstall {DNSMOS_PACKAGE}")
    return path


class QualityScorer:
    """DNSMOS (P.835 SIG/BAK/OVRL and P.808) for mono int16 clips at any sample rate.

    The constructor loads both ONNX models (blocking, ≈ 0.05 s) and raises
    :class:`DnsmosUnavailable` if ``speechmos`` is not installed. :meth:`score` is blocking and
    thread-safe; run it off the event loop (see :class:`QualitySampler`).
    """

    def __init__(
        self,
        *,
        intra_op_threads: int = DEFAULT_INTRA_OP_THREADS,
        max_windows: int = MAX_WINDOWS_PER_CLIP,
    ) -> None:
        if intra_op_threads < 1 or max_windows < 1:
            raise ValueError("intra_op_threads and max_windows must be at least 1")
        self._max_windows = max_windows
        self._primary = _dnsmos_session(_dnsmos_model_path(PRIMARY_MODEL_FILE), intra_op_threads)
        self._p808 = _dnsmos_session(_dnsmos_model_path(P808_MODEL_FILE), intra_op_threads)

    @staticmethod
    def can_score(pcm: Pcm16, sample_rate: int) -> bool:
        """Whether the clip is long enough to score (cheap: looks at the length only)."""
        return sample_rate > 0 and pcm.size >= MIN_CLIP_S * sample_rate

    def score(self, pcm: Pcm16, sample_rate: int) -> QualityScore:
        """Blocking: DNSMOS of one mono int16 clip at ``sample_rate`` Hz.

        Raises :class:`ClipTooShortError` (a ``ValueError``) for clips under :data:`MIN_CLIP_S`.
        Silence scores without error (low, meaningless values).
        """
        if not self.can_score(pcm, sample_rate):
            raise ClipTooShortError(
                f"clip of {pcm.size} samples at {sample_rate} Hz is shorter than {MIN_CLIP_S} s"
            )
        audio = resample(pcm16_to_float(pcm), sample_rate, DNSMOS_SAMPLE_RATE_HZ)
        audio = np.clip(audio, -1.0, 1.0)  # resampling overshoots near full scale
        copies = 1
        while audio.size * copies < WINDOW_SAMPLES:
            copies *= 2  # the reference doubles the clip until it fills a window
        audio = np.tile(audio, copies)
        whole_seconds = audio.size // DNSMOS_SAMPLE_RATE_HZ
        windows = min(self._max_windows, int(whole_seconds - WINDOW_S) + 1)
        results = [
            self._score_window(audio[start : start + WINDOW_SAMPLES])
            for start in range(0, windows * WINDOW_HOP_SAMPLES, WINDOW_HOP_SAMPLES)
        ]
        mean = np.mean(np.array(results, dtype=np.float64), axis=0)
        return QualityScore(
            overall=float(mean[0]),
            signal=float(mean[1]),
            background=float(mean[2]),
            p808=float(mean[3]),
        )

    def _score_window(self, window: FloatAudio) -> tuple[float, float, float, float]:
        """(OVRL, SIG, BAK, P.808) of one window of :data:`WINDOW_SAMPLES` samples."""
        raw = self._primary.run(None, {ONNX_INPUT_NAME: window[np.newaxis, :]})[0][0]
        features = p808_features(window[:-MEL_TRIM_SAMPLES])[np.newaxis, :, :]
        p808 = self._p808.run(None, {ONNX_INPUT_NAME: features})[0][0][0]
        sig_raw, bak_raw, ovrl_raw = (float(v) for v in raw)
        return (
            float(_OVRL_POLY(ovrl_raw)),
            float(_SIG_POLY(sig_raw)),
            float(_BAK_POLY(bak_raw)),
            float(p808),
        )


SCORING_NICENESS = 19
"""Scoring yields the CPU to synthesis: it is sampled monitoring, never on the hot path."""


def _lower_thread_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SCORING_NICENESS)
    except (OSError, AttributeError):  # not Linux, or not permitted: score at normal priority
        logger.info("could not lower the quality scorer's thread priority")


class QualitySampler:
    """Scores every ``every_nth`` offered utterance on its own worker thread.

    :meth:`offer` never blocks and never raises: it counts the offer, and only on every n-th
    scorable offer, and only while fewer than ``max_pending`` scorings are queued or running,
    copies the clip and hands it to the worker; otherwise the clip is dropped. Clips too short to
    score are refused without being counted. ``on_score(engine, score)`` is called **on the
    worker thread**: to reach an event loop, use ``loop.call_soon_threadsafe`` inside it.
    Failures of the scorer or of ``on_score`` are logged, never raised.
    """

    def __init__(
        self,
        scorer: QualityScorer,
        *,
        every_nth: int,
        on_score: Callable[[str, QualityScore], None],
        max_pending: int = 1,
    ) -> None:
        if every_nth < 1 or max_pending < 1:
            raise ValueError("every_nth and max_pending must be at least 1")
        self._scorer = scorer
        self._every_nth = every_nth
        self._on_score = on_score
        self._max_pending = max_pending
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix="quality", initializer=_lower_thread_priority
        )
        self._lock = threading.Lock()
        self._offers = 0
        self._pending = 0
        self._closed = False
        self.accepted = 0
        """Offers handed to the worker."""
        self.dropped_busy = 0
        """n-th offers dropped because ``max_pending`` scorings were in flight."""
        self.failed = 0
        """Scorings that raised (logged)."""

    def offer(self, engine: str, pcm: Pcm16, sample_rate: int) -> bool:
        """Offer one produced utterance; whether it was taken for scoring. Non-blocking."""
        if not QualityScorer.can_score(pcm, sample_rate):
            return False
        with self._lock:
            if self._closed:
                return False
            self._offers += 1
            if self._offers % self._every_nth:
                return False
            if self._pending >= self._max_pending:
                self.dropped_busy += 1
                return False
            self._pending += 1
            self.accepted += 1
        clip = np.array(pcm, dtype=np.int16, copy=True)  # the caller may reuse its buffer
        try:
            self._executor.submit(self._score, engine, clip, sample_rate)
        except RuntimeError:  # closed between the check and the submit
            with self._lock:
                self._pending -= 1
                self.accepted -= 1
            return False
        return True

    def _score(self, engine: str, pcm: Pcm16, sample_rate: int) -> None:
        try:
            score = self._scorer.score(pcm, sample_rate)
        except Exception:
            logger.exception("quality scoring failed", extra={"engine": engine})
            with self._lock:
                self.failed += 1
            return
        finally:
            with self._lock:
                self._pending -= 1
        try:
            self._on_score(engine, score)
        except Exception:
            logger.exception("quality score callback failed", extra={"engine": engine})

    def close(self, *, wait: bool = False) -> None:
        """Refuse further offers and drop queued ones; with ``wait``, block for the running one."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=True)

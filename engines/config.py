"""Service configuration (``config.yaml``), validated in one place.

The layout follows the design's ``config.yaml``::

    engines:
      selection_strategy: auto          # auto, manual, quality_first, speed_first
      auto_selection:
        ttft_threshold_ms: 250
        quality_threshold: 3.0
        fallback_chain: [piper, speecht5, edge-tts]
      piper: {workers: 2}               # each engine's own section (engines.engine_registry)

Every error names the file, the key and the allowed values.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    field_validator,
)

from .engine_registry import SettingsSection, SettingsT, engine_specs, validate_engine_name
from .names import EngineName, QualityTier, SelectionStrategy
from .validation import ConfigError, describe, read_yaml_mapping

EngineId = Annotated[str, AfterValidator(validate_engine_name)]
"""A registered engine's name (``engines.engine_registry``); a mistake lists the known ones."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AutoSelection(_Section):
    ttft_threshold_ms: float = Field(default=250.0, gt=0)
    quality_threshold: float = Field(default=3.0, ge=1.0, le=5.0)
    """Lowest MOS estimate an engine may have to be chosen ahead of the last resort."""
    fallback_chain: tuple[EngineId, ...] = (
        EngineName.PIPER,
        EngineName.SPEECHT5,
        EngineName.EDGE,
    )


class HealthPolicy(_Section):
    failures_before_cooldown: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)
    probe_timeout_s: float = Field(default=10.0, gt=0)
    stall_timeout_s: float = Field(default=20.0, gt=0)
    """An engine that gives no audio for this long, beyond its expected wait for a thread, has
    stalled: the piece fails over to the next engine (and counts as the engine's failure)."""


class EngineThreads(_Section):
    workers: int = Field(default=2, ge=1, le=64)
    """Syntheses this engine runs at once (its thread pool)."""
    intra_op_threads: int = Field(default=1, ge=1, le=64)
    """Threads each ONNX inference uses."""
    latency_intra_op_threads: int = Field(default=0, ge=0, le=64)
    """Threads for the first piece of an utterance, run on a second session of the same model
    (0: no second session). More threads cut the first audio's wait, fewer give throughput."""


class WindowedSettings(EngineThreads):
    windowed: bool = True
    """Run the model's frame-wise stages (flow, vocoder) in windows, so audio starts after a
    few frames' work instead of the whole piece's (``engines.windowed_model``)."""


class XttsSettings(EngineThreads):
    latent_cache_size: int = Field(default=32, ge=1, le=4096)
    """Cloned voices whose speaker latents are kept (least recently used dropped first)."""


class EngineSelection(_Section):
    """The ``engines`` section: how engines are chosen, and each engine's own section. Those
    sections are fields of the subclass ``selection_model()`` makes from the engine registry;
    read one with ``section``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    selection_strategy: SelectionStrategy = SelectionStrategy.AUTO
    default_engine: EngineId = EngineName.PIPER
    """The engine ``manual`` uses when a request names none."""
    default_quality: QualityTier = QualityTier.STANDARD
    auto_selection: AutoSelection = AutoSelection()
    health: HealthPolicy = HealthPolicy()

    def section(self, settings: SettingsSection[SettingsT]) -> SettingsT:
        """An engine's section (its default where this configuration has none)."""
        value = getattr(self, settings.field_name, None)
        if value is None:
            return settings.default
        if not isinstance(value, settings.model):
            raise TypeError(
                f"engines.{settings.key} holds a {type(value).__name__}, "
                f"not a {settings.model.__name__}"
            )
        return value

    def with_section(
        self, settings: SettingsSection[SettingsT], value: SettingsT
    ) -> EngineSelection:
        """A copy with an engine's section replaced."""
        return self.model_copy(update={settings.field_name: value})


def selection_model() -> type[EngineSelection]:
    """``EngineSelection`` with a field per registered engine section, made once per set of
    sections; config.yaml's ``engines`` is validated with it."""
    sections = tuple(spec.settings for spec in engine_specs() if spec.settings is not None)
    return _selection_model(sections)


@functools.cache
def _selection_model(sections: tuple[SettingsSection[Any], ...]) -> type[EngineSelection]:
    for section in sections:
        if section.field_name in EngineSelection.model_fields:
            raise ValueError(f"engines.{section.key} is not free for an engine's section")
    fields: dict[str, Any] = {
        section.field_name: (section.model, Field(default=section.default, alias=section.key))
        for section in sections
    }
    return create_model("EngineSelection", __base__=EngineSelection, **fields)


def _default_selection() -> EngineSelection:
    return selection_model()()


class RateLimit(_Section):
    """Requests a caller may make: ``per_minute`` on average, ``burst`` at once."""

    per_minute: float = Field(default=600.0, gt=0)
    burst: int = Field(default=60, ge=1)


class Limits(_Section):
    max_text_chars: int = Field(default=10_000, ge=1)
    max_rss_mb: int | None = Field(default=None, ge=1)
    """Refuse new work (503 ``memory_pressure``) while the process uses more (null: no limit)."""
    max_memory_percent: float = Field(default=95.0, gt=0, le=100)
    """Refuse new work while the machine's memory in use is over this share."""


class ApiSettings(_Section):
    """The control API (``hive-tts serve``): keys, limits, sampling."""

    api_keys: tuple[str, ...] = ()
    """Bearer keys; empty means no authentication (development on loopback)."""
    admin_keys: tuple[str, ...] = ()
    """Keys allowed to call admin routes (/gc, /rooms). Without keys at all, they are open."""
    room_keys: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Room-scoped keys: key -> room name patterns (``fnmatch``, e.g. ``lobby-*``) in which it
    may make the agent speak (``POST /rooms/{room}/speak``, and ``GET /rooms`` lists those
    rooms). Such a key opens nothing else."""
    max_body_bytes: int = Field(default=8_388_608, ge=1024)
    """Room for a voice-clone reference: 30 s of WAV, base64-encoded."""
    max_ws_message_bytes: int = Field(default=8_388_608, ge=1024)
    max_queued_per_connection: int = Field(default=8, ge=1)
    """Requests one WebSocket connection may have waiting behind the one being spoken; more
    are refused (``queue_full``, retry after) and nothing already queued is dropped."""
    max_sessions_total: int = Field(default=200, ge=1)
    max_sessions_per_key: int = Field(default=100, ge=1)
    retry_after_s: int = Field(default=1, ge=1)
    max_engine_wait_s: float | None = Field(default=1.0, gt=0)
    """Refuse a new request (429 ``engine_busy``) that would wait longer than this for its
    engine (``DeadlineExecutor.expected_wait_s``); null: never refuse, start late instead."""
    drain_timeout_s: float = Field(default=30.0, gt=0)
    """On SIGTERM / SIGINT: requests already accepted may finish for this long (new ones get
    503 ``draining``); then WebSockets are closed (1001) and the process exits."""
    rate_limit: RateLimit | None = RateLimit()
    """Per API key (per client address without keys): synthesis requests (HTTP, each
    WebSocket request, room speak). Over it: 429 ``rate_limited`` with Retry-After. null: none."""
    quality_sample_every: int = Field(default=50, ge=0)
    """Score every n-th utterance with DNSMOS, off the hot path (0: never)."""


class SpeakPermission(_Section):
    """Who may make the agent speak (a room's metadata may narrow it further)."""

    allowed_identities: tuple[str, ...] = ()
    """Only these participants (empty: anyone)."""
    required_attributes: dict[str, str] = Field(default_factory=dict)
    """Participant attributes a sender must carry, e.g. set by the token issuer."""


class AgentSettings(_Section):
    agent_name: str = Field(default="hive-tts", min_length=1)
    auto_join: bool = False
    """Also join every new room (LiveKit's automatic dispatch) instead of explicit only."""
    max_queue_per_room: int = Field(default=16, ge=1)
    max_tracks_per_room: int = Field(default=8, ge=1)
    """Audio tracks (one per language and voice) the agent publishes in a room. A new one
    retires the oldest idle track; with every track speaking it is refused (``too_many_tracks``)."""
    idle_track_timeout_s: float = Field(default=30.0, ge=0)
    """A track that has said nothing for this long is unpublished (0: never). A published track
    costs about 3 % of a core while silent (the rtc SDK feeds WebRTC's Opus encoder 10 ms of
    silence every 10 ms; 16 idle tracks took 0.47 cores here); the next utterance in its language
    and voice publishes it again (about 50 ms, plus the listeners' subscription)."""
    timed_captions: bool = False
    """Captions on ``lk.transcription`` as livekit-agents' JSON transcript lines (a
    ``TimedString`` per word: ``{"text", "start_time", "end_time"}``) instead of plain text.
    Either way each word is written as it starts being heard."""
    loop_monitor: bool = False
    """livekit-agents' event-loop watchdog in every room (a thread and a heartbeat that wake 50
    times a second each, per room). Off by default: the rooms share one process, and with 32
    rooms launching on two cores the watchdogs' wake-ups starved the worker's own loop of the
    GIL for minutes. ``tts_room_loop_lag_seconds`` measures each room's loop instead, once a
    second."""
    max_packet_bytes: int = Field(default=65_536, ge=256)
    load_threshold: float = Field(default=0.85, gt=0, le=1)
    """Above this load (CPU or engine queue, 0..1) the worker takes no new rooms."""
    rooms_at_full_load: int = Field(default=40, ge=0)
    """Each room adds ``1 / rooms_at_full_load`` to the load the worker reports (0: rooms do not
    count), and the worker tells LiveKit its load as soon as it takes a room. LiveKit gives a
    room to the least loaded worker as it last heard, and CPU rises only once rooms speak, so
    without this a burst of rooms went to one worker while another stood idle. At
    ``load_threshold`` (0.85) the default caps a worker at 34 rooms."""
    drain_timeout_s: int = Field(default=30, ge=1)
    """SIGTERM / SIGINT: what is playing may finish for this long, then every job ends."""
    warm_jobs: int = Field(default=8, ge=1, le=256)
    """Rooms that can be launching at one moment. Each warm job is an idle thread; the count
    also sets how much load livekit-agents reserves for a job being launched (threshold /
    warm_jobs), so a burst of this many rooms is accepted before the first has joined. More in
    one burst are refused by this worker: LiveKit gives them to another worker (once load
    reports show this one busy), and the control API dispatches a dropped room again."""
    reconnect_attempts: int = Field(default=8, ge=1)
    """Tries to reach LiveKit again after the connection is lost (backoff 0, 2, 4 .. 10 s);
    then the worker ends its rooms and exits non-zero for its supervisor to restart it."""
    metrics_host: str = Field(default="127.0.0.1", min_length=1)
    """Address the worker's metrics server binds: loopback, or ``0.0.0.0`` in a container that
    Prometheus scrapes from another one."""
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    """Prometheus metrics of the worker (0: any free port)."""
    health_port: int = Field(default=8081, ge=0, le=65535)
    """livekit-agents' own health endpoint (0: any free port)."""
    permission: SpeakPermission = SpeakPermission()
    rate_limit_per_participant: RateLimit | None = RateLimit(per_minute=120.0, burst=20)
    """``tts.speak`` requests a participant may send; over it an ``error`` event
    ``rate_limited`` with ``retry_after_s``. Text the server sends is not limited here."""


class ServiceConfig(_Section):
    engines: SerializeAsAny[EngineSelection] = Field(default_factory=_default_selection)
    limits: Limits = Limits()
    api: ApiSettings = ApiSettings()
    agent: AgentSettings = AgentSettings()
    models_dir: Path = Path("models")
    """Extra model files (Piper voices, ...). Relative paths are relative to the config file."""
    voices_file: Path = Path("voices.yaml")
    disabled_engines: tuple[EngineId, ...] = ()

    @field_validator("engines", mode="before")
    @classmethod
    def _registered_sections(cls, engines: object) -> object:
        if isinstance(engines, EngineSelection):
            return engines
        return selection_model().model_validate(engines)


def load_config(path: Path | None) -> ServiceConfig:
    """Read ``path`` (or return the defaults when it is None)."""
    if path is None:
        return ServiceConfig()
    document = read_yaml_mapping(path, "configuration", "keys such as engines, limits, models_dir")
    try:
        config = ServiceConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(describe(exc, path)) from exc
    base = path.parent
    return config.model_copy(
        update={
            "models_dir": _relative_to(config.models_dir, base),
            "voices_file": _relative_to(config.voices_file, base),
        }
    )


def _relative_to(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else base / path

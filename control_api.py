"""The control API on port 8003: ``create_app(config)`` builds the aiohttp application (its
routes are ``api.routes``; rooms, the page and LiveKit's webhooks add theirs), with the engines
loaded while it runs; ``hive-tts serve`` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from api.agent_watch import add_agent_watch
from api.auth import make_auth_middleware
from api.errors import ERROR_COUNTER, error_middleware
from api.memory_guard import MemoryGuard
from api.quality import DnsmosUnavailable, QualitySampler, QualityScore, QualityScorer
from api.rate_limit import RATE_LIMITER, RateLimiter
from api.redaction import name_models_dir, redact_access_log
from api.rooms import LiveKitSettings, add_room_routes
from api.routes import routes
from api.services import SERVICES, ApiServices
from api.studio import add_studio_routes
from engines.config import ServiceConfig
from engines.synthesizer import SpeechSynthesizer, create_synthesizer

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8003


def create_app(
    config: ServiceConfig,
    *,
    synthesizer: SpeechSynthesizer | None = None,
    quality_scoring: bool = True,
    livekit: LiveKitSettings | None = None,
) -> web.Application:
    """The control API. A given ``synthesizer`` is used as is (and not closed by the app);
    otherwise the app loads the engines when it starts and releases them when it stops.
    ``livekit`` enables the room routes (without it they answer 503 saying what to set)."""
    settings = config.api
    app = web.Application(
        middlewares=[
            error_middleware,
            make_auth_middleware(settings.api_keys, settings.admin_keys, settings.room_keys),
        ],
        client_max_size=settings.max_body_bytes,
    )
    app.add_routes(routes)  # api.routes
    if settings.rate_limit is not None:  # one per key across HTTP, WebSocket and rooms
        app[RATE_LIMITER] = RateLimiter(settings.rate_limit, "this API key or client")
    redact_access_log()  # no ?token=KEY in access logs
    name_models_dir(config.models_dir)  # replies show models_dir/..., not this machine's paths
    add_agent_watch(app, add_room_routes(app, livekit, settings))
    add_studio_routes(app)  # the page at / (needs no key; it asks for one)
    app[ERROR_COUNTER] = lambda code: app[SERVICES].metrics.errors.labels(code).inc()

    async def engines(app: web.Application) -> AsyncIterator[None]:
        owned = synthesizer is None
        synth = synthesizer or create_synthesizer(config)
        if owned:
            await synth.start()
        services = ApiServices(
            synthesizer=synth,
            settings=settings,
            rate=app.get(RATE_LIMITER),
            memory=MemoryGuard(config.limits),
        )
        services.metrics.watch_engines(synth.registry)
        services.metrics.know_languages(synth.router.known_languages())
        if quality_scoring:
            services.sampler = _quality_sampler(config, services.record_quality)
        app[SERVICES] = services
        yield
        if services.sampler is not None:
            services.sampler.close()
        if owned:
            await synth.aclose()

    app.cleanup_ctx.append(engines)
    app.on_shutdown.append(_drain)
    return app


async def _drain(app: web.Application) -> None:
    """SIGTERM / SIGINT (aiohttp stops listening first): refuse new requests, let those
    accepted on open WebSockets finish within ``api.drain_timeout_s``, then close them (1001).
    HTTP requests in flight are finished by aiohttp's own shutdown."""
    services = app.get(SERVICES)
    if services is None:
        return
    services.draining = True
    deadline = time.monotonic() + services.settings.drain_timeout_s
    while any(not session.idle for session in services.sessions):
        if time.monotonic() >= deadline:
            logger.warning("drain timed out with %d busy sessions", len(services.sessions))
            break
        await asyncio.sleep(0.1)
    await asyncio.gather(
        *(session.close() for session in list(services.sessions)), return_exceptions=True
    )


QUALITY_WINDOWS = 3
"""DNSMOS windows scored per sampled utterance: ~0.7 s of one core each on this machine."""


def _quality_sampler(
    config: ServiceConfig, on_score: Callable[[str, QualityScore], None]
) -> QualitySampler | None:
    if config.api.quality_sample_every <= 0:
        return None
    try:
        scorer = QualityScorer(max_windows=QUALITY_WINDOWS)
    except DnsmosUnavailable:  # the service speaks without quality scores rather than not at all
        logger.exception("DNSMOS quality scoring is unavailable")
        return None
    # ApiServices picks every n-th utterance; the sampler scores what it is offered
    return QualitySampler(scorer, every_nth=1, on_score=on_score)

"""Requests per caller over time: a token bucket per API key (the control API) or per
participant (the agent in a room). Over its rate a caller is told when to retry
(``rate_limited``, 429 with ``Retry-After``); other callers are not affected."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from engines.config import RateLimit

from .auth import ANONYMOUS, KEY_OF_REQUEST
from .errors import RetryLaterError

MAX_TRACKED = 10_000
"""Callers remembered at once; the least recently seen is forgotten first (a forgotten caller
starts again with a full bucket, so memory stays bounded whoever calls)."""


class RateLimitedError(RetryLaterError):
    code = "rate_limited"


def caller_of(request: web.Request) -> str:
    """Whom a request counts against: its API key, else its client address."""
    key = request.get(KEY_OF_REQUEST, ANONYMOUS)
    return f"address {request.remote}" if key == ANONYMOUS else f"key {key}"


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self, limit: RateLimit, what: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = limit.per_minute / 60.0
        self._burst = float(limit.burst)
        self._what = what
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, caller: str) -> None:
        """Count one request of ``caller``; raises ``RateLimitedError`` over its rate."""
        now = self._clock()
        bucket = self._buckets.pop(caller, None) or _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        self._buckets[caller] = bucket
        while len(self._buckets) > MAX_TRACKED:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1.0:
            wait = math.ceil((1.0 - bucket.tokens) / self._rate) if self._rate > 0 else 60
            raise RateLimitedError(
                f"{self._what} is over its rate of {self._rate * 60:g} requests a minute "
                f"(bursts of {self._burst:g}); retry in {wait} s",
                max(1, wait),
            )
        bucket.tokens -= 1.0


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)

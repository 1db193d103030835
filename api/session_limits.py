"""Concurrent sessions, counted per key and in total; over a limit the caller is told to retry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import TooManySessionsError

_UNKEYED = "\0unkeyed"  # cannot collide with a real key sent in a header


class SessionLimiter:
    def __init__(self, max_total: int, max_per_key: int, retry_after_s: int) -> None:
        self._max_total = max_total
        self._max_per_key = max_per_key
        self._retry_after_s = retry_after_s
        self._per_key: Counter[str] = Counter()

    @property
    def active(self) -> int:
        return sum(self._per_key.values())

    def check(self, key: str | None) -> None:
        if self.active >= self._max_total:
            raise TooManySessionsError(
                f"the server is at its limit of {self._max_total} concurrent sessions",
                self._retry_after_s,
            )
        if key is not None and self._per_key[key] >= self._max_per_key:
            raise TooManySessionsError(
                f"this key already has {self._max_per_key} concurrent sessions (its limit)",
                self._retry_after_s,
            )

    @contextmanager
    def slot(self, key: str | None) -> Iterator[None]:
        """Hold one session for ``key`` (None: no per-key limit, only the total); raises
        ``TooManySessionsError`` when full."""
        self.check(key)
        counted = key if key is not None else _UNKEYED
        self._per_key[counted] += 1
        try:
            yield
        finally:
            self._per_key[counted] -= 1
            if self._per_key[counted] <= 0:
                del self._per_key[counted]

"""Login throttling: after `max_failures` failed logins for one username from one address within
`window_s`, further attempts are refused with 429 until the oldest failure leaves the window.

Kept in the process's memory: one kqi process serves a site (several web processes each count
on their own, which only loosens the limit by that factor)."""
from __future__ import annotations

import threading
import time
from collections import deque

from kqi.errors import ServiceError

EXTENSION = "kqi_login_limiter"  # where the app factory keeps the app's LoginLimiter (app.extensions)
MAX_KEYS = 10_000  # beyond this, keys without recent failures are dropped before a new one is added


class TooManyAttempts(ServiceError):
    status = 429

    def __init__(self, retry_after: int):
        super().__init__(f"too many failed logins; try again in {retry_after} s", code="too_many_requests")
        self.retry_after = retry_after


class LoginLimiter:
    def __init__(self, max_failures: int, window_s: float, clock=time.monotonic):
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def check(self, username: str, ip: str) -> None:
        """Raise TooManyAttempts while this username and address are throttled."""
        now = self._clock()
        with self._lock:
            times = self._recent((username, ip), now)
            if len(times) >= self.max_failures:
                raise TooManyAttempts(max(1, int(times[0] + self.window_s - now + 0.999)))

    def failed(self, username: str, ip: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) >= MAX_KEYS:
                for key in [k for k in self._failures if not self._recent(k, now)]:
                    del self._failures[key]
            times = self._failures.setdefault((username, ip), deque())
            times.append(now)

    def succeeded(self, username: str, ip: str) -> None:
        with self._lock:
            self._failures.pop((username, ip), None)


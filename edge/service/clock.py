"""Time for the service, injectable so that tests run on a fake clock without sleeping."""

from __future__ import annotations

import threading
import time


class Clock:
    """The real clock: ``time.monotonic`` for intervals, ``time.time`` for timestamps."""

    def now(self) -> float:
        """Monotonic seconds (intervals, timeouts, cooldowns)."""
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch (timestamps written to results)."""
        return time.time()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait until ``event`` is set or ``timeout`` seconds pass; returns whether it is set."""
        return event.wait(max(0.0, timeout))

    def sleep(self, seconds: float) -> None:
        """Sleep (used between reopen attempts and camera settling)."""
        if seconds > 0:
            time.sleep(seconds)


class FakeClock(Clock):
    """A clock that only moves when waited on (or by :meth:`advance`).

    ``wait`` returns at once when the event is set; otherwise it yields the CPU for a moment
    (so that other threads, e.g. an HTTP handler, can run) and then jumps ahead by the full
    timeout. Tests therefore exercise intervals, cooldowns and backoff without sleeping.
    """

    def __init__(self, start: float = 1000.0, wall_start: float = 1_790_000_000.0) -> None:
        self._t = start
        self._wall0 = wall_start - start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def wall(self) -> float:
        with self._lock:
            return self._wall0 + self._t

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        with self._lock:
            self._t += max(0.0, seconds)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.wait(0.001):
            return True
        self.advance(timeout)
        return event.is_set()

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

"""The two bounded queues of the service, and what travels on them.

* :class:`JobQueue`: triggered frames (:class:`Job`) from the frame loop to the segmentation
  worker; it never piles up frames while the segmenter is busy (a live source's frame is
  dropped and counted, an offline source waits, HTTP requests go first).
* :class:`OutputQueue`: segmented frames (:class:`Segmented`) from the worker to the output
  stage (``service.pipeline = "staged"``); the worker waits while it is full, so a computed
  result is never dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # annotations only
    from edge.service.http import TriggerRequest
    from edge.service.live import CachedFrame
    from edge.service.sources import Capture, Frame
    from edge.types import Masks


@dataclass
class Job:
    """A triggered frame on its way through the stages (capture -> segment -> output).

    Attributes:
        frame_id: Frame number.
        image: Stored-resolution BGR image to segment.
        triggers: What fired, e.g. ``("motion",)``.
        created: Monotonic time the trigger fired.
        frame: The source's frame (name, timestamp; the pixels are :attr:`image`).
        capture: How :attr:`image` was made from the frame (orientation, ROI, scale).
        request: The HTTP request waiting for the result (``POST /trigger`` or ``/prompt``).
        cached: For ``POST /prompt``: the kept frame (and its detections) to prompt.
        enqueued: ``time.perf_counter()`` when the job was queued (queue-wait metric).
        priority: Priority jobs (HTTP requests) evict queued ordinary jobs instead of waiting.
    """

    frame_id: int
    image: NDArray[np.uint8]
    triggers: tuple[str, ...]
    created: float
    frame: Frame | None = None
    capture: Capture | None = None
    request: TriggerRequest | None = None
    cached: CachedFrame | None = None
    enqueued: float | None = None
    priority: bool = False


class JobQueue:
    """A small bounded queue: never piles up frames while the segmenter is busy."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def offer(self, job: Job) -> bool:
        """Add without waiting; False (the caller counts a drop) when full."""
        with self._cond:
            if self._closed or len(self._items) >= self.maxsize:
                return False
            self._items.append(job)
            self._cond.notify_all()
            return True

    def put(
        self,
        job: Job,
        stop: threading.Event,
        poll_s: float = 0.1,
        tick: Callable[[], None] | None = None,
    ) -> bool:
        """Add, waiting for room (offline sources); False when ``stop`` is set first.

        ``tick`` is called on every poll while waiting (the service pings its watchdog there,
        unless the segmenter is stalled).
        """
        with self._cond:
            while len(self._items) >= self.maxsize and not self._closed:
                if stop.is_set():
                    return False
                self._cond.wait(poll_s)
                if tick is not None:
                    tick()
            if self._closed:
                return False
            self._items.append(job)
            self._cond.notify_all()
            return True

    def put_priority(self, job: Job) -> list[Job]:
        """Add ahead of ordinary jobs, evicting the newest ordinary ones if full.

        Returns:
            The evicted jobs (the caller counts them as dropped); ``job`` itself when the
            queue is full of priority jobs.
        """
        evicted: list[Job] = []
        with self._cond:
            while len(self._items) >= self.maxsize:
                ordinary = [j for j in self._items if not j.priority]
                if not ordinary:
                    break
                self._items.remove(ordinary[-1])
                evicted.append(ordinary[-1])
            if len(self._items) >= self.maxsize:
                evicted.append(job)  # full of priority jobs: refuse, the bound holds
                return evicted
            pos = sum(1 for j in self._items if j.priority)
            self._items.insert(pos, job)
            self._cond.notify_all()
        return evicted

    def remove(self, pred: Callable[[Job], bool]) -> list[Job]:
        """Remove and return the queued jobs for which ``pred`` is true (cancelled ones)."""
        with self._cond:
            gone = [j for j in self._items if pred(j)]
            for j in gone:
                self._items.remove(j)
            if gone:
                self._cond.notify_all()
            return gone

    def get(self, timeout: float) -> Job | None:
        """Next job, or None after ``timeout`` seconds (or when closed and empty)."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            job = self._items.popleft()
            # wake a producer waiting for room in put() now, not at its next poll: an offline
            # source then reads the next frame while this one is segmented
            self._cond.notify_all()
            return job

    def drain(self) -> list[Job]:
        """Remove and return every queued job."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return items

    def close(self) -> None:
        """Refuse new jobs and wake waiters."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


OUTPUT_QUEUE_SIZE = 2
"""Segmented results waiting for the output stage (``service.pipeline = "staged"``): enough to
overlap one frame's output with the next segmentation; when full, the segmentation worker waits
(results already computed are never dropped), so the frame queue in front of it takes the
drops."""


class OutputQueue:
    """The bounded queue between the segmentation worker and the output thread.

    ``put`` waits while it is full; :meth:`close` lets the output thread finish what is queued
    and stop; :meth:`abandon` (a shutdown that cannot wait for a stalled output) empties it
    and makes every later ``put`` refuse, so that each frame is either written or counted.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[Segmented] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._abandoned = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def full(self) -> bool:
        """Whether a ``put`` would wait."""
        with self._cond:
            return len(self._items) >= self.maxsize

    def put(self, item: Segmented, timeout: float | None = None) -> bool:
        """Queue ``item``, waiting while full; False if abandoned (or ``timeout`` passed)."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._abandoned or len(self._items) < self.maxsize, timeout
            )
            if not ok or self._abandoned:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self) -> Segmented | None:
        """The next item, waiting for one; None once closed (or abandoned) and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed or self._abandoned)
            if self._abandoned or not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more items: the reader stops after the queued ones."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abandon(self) -> list[Segmented]:
        """Refuse every later ``put`` and return what was queued (to be counted as dropped)."""
        with self._cond:
            self._abandoned = True
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return items


@dataclass
class Segmented:
    """A segmented frame on its way to the output stage.

    Attributes:
        job: The triggered frame.
        request: The HTTP request waiting for it, if any.
        result: Its masks.
        seg_s: Seconds the segmentation took.
    """

    job: Job
    request: TriggerRequest | None
    result: Masks
    seg_s: float


class RequestSlot:
    """The HTTP trigger waiting for the frame loop's next frame.

    A newer request replaces a waiting one (that one then times out, 504). :attr:`lock` also
    guards queueing a request's job against its cancellation (a caller that timed out), so a
    cancelled request is either seen before it is queued or removed from the queue.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._request: TriggerRequest | None = None

    def put(self, request: TriggerRequest) -> None:
        """Wait for the next frame."""
        with self.lock:
            self._request = request

    def take(self) -> TriggerRequest | None:
        """The waiting request, now the frame loop's (``None``: none waits)."""
        with self.lock:
            request, self._request = self._request, None
            return request

    def forget(self, request: TriggerRequest) -> bool:
        """Forget ``request`` if it still waits (call with :attr:`lock` held)."""
        if self._request is request:
            self._request = None
            return True
        return False

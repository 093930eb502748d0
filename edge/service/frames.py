"""The frame loop's stage: read a frame when a trigger needs one, fire, queue the job.

Runs in the service's calling thread. A frame is read when a trigger is due (every frame, at
``source.fps``, when motion is on; at ``http.live_fps`` while a page watches a live source), the
triggers fire (interval, motion, GPIO, MQTT presses, an HTTP request), and the frame goes to the
bounded :class:`~edge.service.queues.JobQueue` as one :class:`~edge.service.queues.Job`. A full
queue drops the frame and counts it (live sources); an offline source waits instead, so every
frame of a replay is processed; HTTP requests go first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.service.config import ConfigError, ServiceConfig
from edge.service.live import CachedFrame, LiveFrame
from edge.service.queues import Job, JobQueue, RequestSlot
from edge.service.sources import (
    Capture,
    FrameTransform,
    ResilientSource,
    SourceDown,
    padding_waste,
)
from edge.service.triggers import GpioTrigger, IntervalTrigger, MotionTrigger

if TYPE_CHECKING:
    from edge.bundle import BundleManifest
    from edge.service.clock import Clock
    from edge.service.mqtt import MqttPublisher
    from edge.service.telemetry import Metrics

_LOGGER = logging.getLogger("edge.service")

IDLE_WAIT_S = 1.0
"""Longest the frame loop sleeps: bounds the reaction to stop requests and watchdog pings."""


class FrameLoop:
    """Triggers and the frame they fire on, up to the job queue.

    Args:
        cfg: The service configuration (``source``, ``trigger``, ``processing``, ``http``).
        source: The (reopening) frame source.
        queue: Where triggered frames go.
        requests: The HTTP trigger waiting for a frame.
        live: The page's live frame (every frame read is offered).
        metrics: The service's counters.
        clock: The service's time.
        stop_event: Set when the service stops (an offline source's wait for room ends).
        drop: Counts a frame that will not be segmented and answers its request.
        on_wait: Called while an offline source waits for room (watchdog pings).
        stop: Asks the service to stop, processing what is queued (the source ended).

    Attributes:
        interval, motion: The configured triggers (``None``: off).
        gpio, mqtt: The GPIO trigger and the MQTT publisher (its presses), once started.
        manifest: The bundle's manifest, for the padding warning (``None``: not from a bundle).
        until: Clock time a ``duration`` limit ends (``None``: none).
        frame_hw: Size of the last frame read (after orientation, ROI and scaling).
    """

    def __init__(
        self,
        cfg: ServiceConfig,
        source: ResilientSource,
        queue: JobQueue,
        requests: RequestSlot,
        live: LiveFrame,
        metrics: Metrics,
        clock: Clock,
        stop_event: threading.Event,
        drop: Callable[[Job, str], None],
        on_wait: Callable[[], None],
        stop: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.queue = queue
        self.requests = requests
        self.live = live
        self.metrics = metrics
        self.clock = clock
        self.stop_event = stop_event
        self._drop = drop
        self._on_wait = on_wait
        self._stop = stop
        self.transform = FrameTransform.from_config(cfg)
        t = cfg.trigger
        self.interval = IntervalTrigger(t.interval.seconds) if t.interval.enabled else None
        self.motion = MotionTrigger(t.motion) if t.motion.enabled else None
        self.gpio: GpioTrigger | None = None
        self.mqtt: MqttPublisher | None = None
        self.manifest: BundleManifest | None = None
        self.until: float | None = None
        self.frame_hw: tuple[int, int] | None = None
        self._next_motion_read = 0.0
        self._next_paced_read = 0.0
        self._next_live_read = 0.0

    def trigger_names(self) -> list[str]:
        """The triggers that can fire, for the start-up line (HTTP is the service's)."""
        names = []
        if self.interval:
            names.append(f"interval {self.interval.seconds:g} s")
        if self.motion:
            names.append("motion")
        if self.gpio:
            names.append(f"gpio {self.cfg.trigger.gpio.pin}")
        if self.mqtt:
            names.append(f"mqtt {self.mqtt.trigger_topic}")
        return names

    def step(self, now: float) -> float:
        """One pass: read a frame if a trigger needs one, fire, enqueue.

        Returns:
            Seconds until something is due (at most :data:`IDLE_WAIT_S`).
        """
        fired: list[str] = []
        # a live source delivers at most source.fps frames a second: "every frame" (interval
        # 0) reads at that pace instead of spinning
        paced = not self.source.live or now >= self._next_paced_read
        if self.interval is not None and self.interval.due(now):
            if self.interval.seconds > 0 or paced:
                fired.append("interval")
        gpio_edges = self.gpio.take() if self.gpio is not None else 0
        if gpio_edges:
            fired.append("gpio")
            self.metrics.inc("fastsam_triggers_total", gpio_edges - 1, trigger="gpio")
            self.metrics.inc("fastsam_triggers_merged_total", gpio_edges - 1, trigger="gpio")
        presses = self.mqtt.take() if self.mqtt is not None else 0
        if presses:
            fired.append("mqtt")
            self.metrics.inc("fastsam_triggers_total", presses - 1, trigger="mqtt")
            self.metrics.inc("fastsam_triggers_merged_total", presses - 1, trigger="mqtt")
        req = self.requests.take()
        if req is not None:
            fired.append("http")
        motion_due = self.motion is not None and now >= self._next_motion_read
        live_due = self._live_due(now)
        if not fired and not motion_due and not live_due:
            if not self.source.is_open and self.source.try_open():  # recover while idle
                self.metrics.set("fastsam_source_up", 1)
            return self.wait_time(now)
        read_t0 = time.perf_counter()
        try:
            frame = self.source.read()
        except SourceDown as exc:
            self.metrics.set("fastsam_source_up", 0)
            lost = [n for n in fired if n != "interval"]  # interval stays due: not lost
            if lost:
                self.metrics.inc("fastsam_dropped_total", len(lost), reason="source_down")
            if req is not None:
                req.finish(503, {"error": f"source unavailable: {exc}"}, {"Retry-After": "5"})
            # wait for the reopen (at least a moment: a zero backoff must not spin)
            return min(max(exc.retry_in, 0.1), IDLE_WAIT_S)
        if frame is None:
            self._stop("end of source")
            if req is not None:
                req.finish(503, {"error": "source ended"})
            return 0.0
        if self.source.live:
            self._next_paced_read = now + 1.0 / self.cfg.source.fps
        self.metrics.set("fastsam_source_up", 1)
        self.metrics.inc("fastsam_frames_total")
        self.metrics.set("fastsam_last_frame_timestamp_seconds", frame.timestamp)
        try:
            image, capture = self.transform(frame.image)
        except ConfigError:
            if req is not None:
                req.finish(500, {"error": "bad processing.roi for this camera"})
            raise
        read_s = time.perf_counter() - read_t0
        self.metrics.observe("fastsam_read_seconds", read_s)
        self._check_frame_size(image.shape[:2])
        self._offer_live(frame, image, capture, now)
        if self.motion is not None and motion_due:
            self._next_motion_read = now + 1.0 / self.cfg.source.fps
            if self.motion.update(image, now):
                fired.append("motion")
        if self.interval is not None and "interval" in fired:
            self.interval.fired(now)
        if fired:
            for name in fired:
                self.metrics.inc("fastsam_triggers_total", trigger=name)
            job = Job(
                frame_id=frame.index,
                image=image,
                triggers=tuple(fired),
                created=now,
                frame=frame,
                capture=capture,
                request=req,
                enqueued=time.perf_counter(),
                priority=req is not None,
            )
            self.enqueue(job)
        return self.wait_time(self.clock.now())

    def _live_due(self, now: float) -> bool:
        """A page watches a live source and its next live frame is due (``http.live_fps``)."""
        return self.source.live and self.live.watched(now) and now >= self._next_live_read

    def _offer_live(self, frame: Any, image: Any, capture: Capture, now: float) -> None:
        """Every frame read becomes the page's live frame (whichever trigger read it)."""
        self._next_live_read = now + 1.0 / self.cfg.http.live_fps
        self.live.offer(CachedFrame.of(frame, image, capture), now)

    def enqueue(self, job: Job) -> None:
        """Queue a job: HTTP requests first (evicting ordinary frames), a live source's frame
        dropped when the queue is full, an offline source's frame waiting for room."""
        if job.priority:
            # under the request lock: a request cancelled meanwhile (its caller timed out) is
            # either seen here or removed from the queue by cancel()
            with self.requests.lock:
                req = job.request
                if req is not None and req.cancelled:
                    self._drop(job, "cancelled")
                    return
                for evicted in self.queue.put_priority(job):
                    self._drop(evicted, "busy" if evicted is job else "superseded")
        elif self.source.live:
            if not self.queue.offer(job):
                self._drop(job, "busy")
        elif not self.queue.put(job, self.stop_event, tick=self._on_wait):
            self._drop(job, "stopping")
        self.metrics.set("fastsam_queue_depth", len(self.queue))

    def wait_time(self, now: float) -> float:
        """Seconds until the next trigger, live frame, limit or source reopen is due."""
        waits = [IDLE_WAIT_S]
        if self.interval is not None:
            wait = self.interval.wait_time(now)
            if self.interval.seconds == 0 and self.source.live:
                wait = max(wait, self._next_paced_read - now)
            waits.append(max(0.0, wait))
        if self.motion is not None:
            waits.append(max(0.0, self._next_motion_read - now))
        if self.source.live and self.live.watched(now):
            waits.append(max(0.0, self._next_live_read - now))
        if self.until is not None:
            waits.append(max(0.0, self.until - now))
        if not self.source.is_open:
            waits.append(max(0.05, self.source.retry_at - now))
        return min(waits)

    def _check_frame_size(self, hw: tuple[int, int]) -> None:
        if self.frame_hw == hw:
            return
        self.frame_hw = hw
        if self.motion is not None:
            self.motion.reset()
        if self.manifest is None:
            return
        spec = self.manifest.input
        waste = padding_waste(hw, spec.imgsz, spec.dynamic, spec.stride)
        if waste > 0.25:
            _LOGGER.warning(
                "frames of %dx%d fill only %.0f %% of the bundle's %dx%d input (the rest is "
                "letterbox padding): match source.width/height or processing.roi to the "
                "bundle's aspect ratio, or export the bundle for this aspect ratio",
                hw[1],
                hw[0],
                (1 - waste) * 100,
                spec.imgsz[1],
                spec.imgsz[0],
            )

"""The output stage: each segmented frame encoded, drawn, written, published and answered.

With ``service.pipeline = "staged"`` (default) it runs in its own thread behind an
:class:`~edge.service.queues.OutputQueue`, so the worker segments the next frame while this one
is written; one thread keeps results, MQTT messages and HTTP answers in the order the frames
were segmented. With ``"serial"`` the worker runs it inline.

With ``processing.track = true`` each frame of the sequence is tracked here, in frame order,
before it is written (:mod:`edge.service.events`): its masks get track ids, its enter / leave
events are published on MQTT and kept for the page, and ``output.save = "events"`` writes only
the frames that have one.

Only what someone reads is computed: RLE and polygons when the result is written, returned in
full to an HTTP caller or handed to ``on_result``; otherwise (an HTTP trigger with ``save`` and
``masks`` false) they wait until ``GET /latest`` asks for them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.service.events import FrameTracker
from edge.service.http import brief_answer
from edge.service.mqtt import MqttPublisher, compact_message, encode_jpeg
from edge.service.queues import OUTPUT_QUEUE_SIZE, Job, OutputQueue, Segmented

if TYPE_CHECKING:
    from edge.service.clock import Clock
    from edge.service.config import ServiceConfig
    from edge.service.sink import ResultSink
    from edge.service.telemetry import Metrics
    from edge.types import Masks

_LOGGER = logging.getLogger("edge.service")


class OutputStage:
    """Writes, publishes and answers segmented frames, in order; keeps the newest result.

    Args:
        cfg: The service configuration (``output``, ``processing``, ``mqtt``, ``service``).
        sink: Where result directories go.
        metrics: The service's counters.
        clock: The service's time.
        drop: Counts a frame that will never be output (``job, reason, queue_name``) and
            answers its request.
        wake: Set after each frame (the frame loop waits on it).
        on_result: Called with each result JSON (embedding, tests).

    Attributes:
        staged: Output runs in its own thread (``service.pipeline = "staged"``).
        mqtt: The MQTT publisher, once the service has started one.
        bundle: The bundle facts every result carries.
        busy_since: Clock time the frame being output started (stall detection).
        last_latency_ms: Trigger-to-result latency of the newest result.
    """

    def __init__(
        self,
        cfg: ServiceConfig,
        sink: ResultSink,
        metrics: Metrics,
        clock: Clock,
        drop: Callable[[Job, str, str], None],
        wake: threading.Event,
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.staged = cfg.service.pipeline == "staged"
        self.mqtt: MqttPublisher | None = None
        self.bundle: dict[str, Any] = {}
        self.busy_since: float | None = None
        self.last_latency_ms: float | None = None
        self._drop = drop
        self._wake = wake
        self._on_result = on_result
        self._queue = OutputQueue(OUTPUT_QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._latest: dict[str, Any] | None = None
        # the latest result while its doc lacks the encodings (added when first read)
        self._latest_unencoded: Masks | None = None
        self._latest_lock = threading.Lock()
        self.tracker = FrameTracker(cfg) if cfg.processing.track else None

    def __len__(self) -> int:
        """Segmented frames waiting for the output thread."""
        return len(self._queue)

    def start(self) -> None:
        """Start the output thread (staged pipeline only)."""
        if self.staged:
            self._thread = threading.Thread(target=self._work, name="output-worker", daemon=True)
            self._thread.start()

    def put(self, item: Segmented) -> None:
        """Output a segmented frame: queued for the output thread (waiting while the queue is
        full: a computed result is never dropped), or right here with the serial pipeline."""
        if not self.staged:
            t0 = time.perf_counter()
            try:
                self._output(item)
            finally:
                self.metrics.observe("fastsam_output_seconds", time.perf_counter() - t0)
            return
        if not self._queue.put(item):  # a shutdown gave up on a stalled output stage
            self._drop(item.job, "stopping", "output")
        self.metrics.set("fastsam_output_queue_depth", len(self._queue))

    def close(self, deadline: float, worker: threading.Thread | None = None) -> None:
        """Write every frame already segmented (until ``deadline``, a ``time.monotonic()``),
        then stop; what cannot be finished is counted as dropped.

        Args:
            deadline: When to give up on a stalled output.
            worker: The segmentation worker, joined briefly after an abandon (it may be
                waiting to hand over a frame, which is then refused and counted).
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.close()  # the output thread stops once the queue is empty
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                _LOGGER.error(
                    "output still running after %.0f s (service.stall_timeout_s); exiting "
                    "without it",
                    self.cfg.service.stall_timeout_s,
                )
                self.metrics.inc("fastsam_errors_total", kind="output")
                for item in self._queue.abandon():
                    self._drop(item.job, "stopping", "output")
                if worker is not None:
                    worker.join(timeout=1.0)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def latest(self) -> dict[str, Any] | None:
        """The newest result JSON (its encodings added on first read when they were skipped)."""
        with self._latest_lock:
            if self._latest is not None and self._latest_unencoded is not None:
                from edge.result_schema import add_encodings

                add_encodings(
                    self._latest, self._latest_unencoded, self.cfg.processing.polygon_epsilon
                )
                self._latest_unencoded = None
            return self._latest

    def _work(self) -> None:
        """The output thread: one result at a time, in the order they were segmented."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            self.metrics.set("fastsam_output_queue_depth", len(self._queue))
            self.busy_since = self.clock.now()
            t0 = time.perf_counter()
            try:
                self._output(item)
            except Exception as exc:
                self.metrics.inc("fastsam_errors_total", kind="output")
                _LOGGER.exception("frame %d: output failed", item.job.frame_id)
                req = item.request
                if req is not None and not req.done.is_set():
                    req.finish(500, {"error": f"output failed: {exc!r}"})
            finally:
                self.metrics.observe("fastsam_output_seconds", time.perf_counter() - t0)
                self.busy_since = None
                self._wake.set()

    def _output(self, item: Segmented) -> None:
        """Encode, draw, write, publish and answer one result: only what someone reads."""
        from edge.encode import mask_contours
        from edge.marks import overlay_with_prompts
        from edge.result_schema import result_to_dict

        cfg, job, req = self.cfg, item.job, item.request
        frame, capture = job.frame, job.capture
        assert frame is not None and capture is not None  # set by both producers
        result = self._filter(item.result)
        events: list[dict[str, Any]] = []
        thumbs: list[bytes | None] = []
        # the sequence is tracked; prompt answers on kept frames and prompted requests
        # (selections, not the scene) are not
        if self.tracker is not None and job.cached is None and (req is None or not req.prompts):
            result, events, thumbs = self.tracker.update(
                result, job.image, job.frame_id, frame.timestamp
            )
        save = req is None or req.save
        if req is None and cfg.output.save == "events" and not events:
            save = False
        encodings = save or (req is not None and req.masks) or self._on_result is not None
        draw = save and cfg.output.overlay
        # traced once for the polygons and the overlay's outlines
        traced = [mask_contours(c) for c in result.crops] if encodings or draw else None
        drawing: Future[Any] | None = None
        prompts = req.prompts if req is not None else None  # marked on the overlay
        if draw:  # drawn in a helper thread while the masks are encoded
            drawing = self._helper().submit(
                overlay_with_prompts, job.image, result, prompts, traced=traced
            )
        doc = result_to_dict(
            result,
            bundle=self.bundle,
            frame_id=job.frame_id,
            trigger="+".join(job.triggers),
            prompt=req.prompt_json if req is not None else None,
            polygon_epsilon=cfg.processing.polygon_epsilon,
            source=frame.name,
            encodings=encodings,
            contours=traced,
        )
        doc["capture"] = capture.to_dict()
        if self.tracker is not None and result.metadata.get("tracking"):
            doc["events"] = events  # filled with result_dir below, once written
        written = None
        if save:
            written = self.sink.write(
                doc,
                frame.timestamp,
                job.frame_id,
                overlay=drawing.result if drawing is not None else None,
                frame=job.image if cfg.output.frame else None,
                prompt=job.cached is not None,  # a kept frame's own result may exist
            )
        else:
            reason = "no_event" if req is None and cfg.output.save == "events" else "not_requested"
            self.metrics.inc("fastsam_results_skipped_total", reason=reason)
        if written is not None:
            doc["files"] = written.files
            doc["result_dir"] = str(written.dir)
            for ev in events:
                ev["result_dir"] = str(written.dir)
        elif save and req is not None:  # the caller asked for files: say they are missing
            doc["save_error"] = self.sink.last_failure or "not saved"
        latency = self.clock.now() - job.created
        latency_s = max(latency, item.seg_s) if latency >= 0 else item.seg_s
        self.metrics.observe("fastsam_latency_seconds", latency_s)
        self.metrics.set("fastsam_masks", len(result))
        self.metrics.set("fastsam_last_result_timestamp_seconds", self.clock.wall())
        self.last_latency_ms = latency_s * 1e3
        if self.mqtt is not None:
            jpeg = None
            if cfg.mqtt.image:
                overlay = drawing.result() if drawing is not None else None
                if overlay is None:
                    overlay = overlay_with_prompts(job.image, result, prompts)
                jpeg = encode_jpeg(overlay, cfg.mqtt.image_max_side)
            message = compact_message(
                doc,
                cfg.mqtt.max_masks,
                written.files if written else None,
                str(written.dir) if written else None,
                self.last_latency_ms,
            )
            self.mqtt.publish(message, jpeg)
        if events and cfg.events.enabled and self.tracker is not None:
            for ev, thumb in zip(events, thumbs, strict=True):
                self.metrics.inc("fastsam_track_events_total", type=ev["type"])
                self.tracker.log.add(ev, thumb)
                if self.mqtt is not None:
                    self.mqtt.publish_event(ev)
        if self.tracker is not None:
            self.metrics.set("fastsam_tracks", self.tracker.tracker.active)
        with self._latest_lock:
            self._latest = doc
            self._latest_unencoded = None if encodings else result
        if self._on_result is not None:
            self._on_result(doc)
        if req is not None:
            req.finish(200, doc if req.masks else brief_answer(doc, self.last_latency_ms))
        _LOGGER.debug(
            "frame %d (%s): %d masks in %.0f ms%s",
            job.frame_id,
            "+".join(job.triggers),
            len(result),
            item.seg_s * 1e3,
            f" -> {written.dir}" if written else "",
        )

    def _helper(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="overlay")
        return self._pool

    def _filter(self, result: Masks) -> Masks:
        """``processing.min_mask_area`` and ``processing.max_masks`` applied."""
        p = self.cfg.processing
        if p.min_mask_area and len(result):
            result = result[np.flatnonzero(result.area >= p.min_mask_area)]
        if p.max_masks and len(result) > p.max_masks:
            result = result[: p.max_masks]
        return result

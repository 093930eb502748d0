"""The segmentation worker: triggered frames from the job queue to the output stage.

One thread takes a :class:`~edge.service.queues.Job` at a time, segments it through the prompt
cache (so that ``POST /prompt`` can select on its detections later) with the thresholds and
prompts of its HTTP request, and hands the result to the
:class:`~edge.service.output.OutputStage`. A request whose caller gave up is dropped; a bad
prompt is answered 400 naming ``prompt``; any other failure is logged, counted and answered
500, and the worker goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.errors import InputError
from edge.service.http import HttpError
from edge.service.live import CachedFrame, PromptCache
from edge.service.output import OutputStage
from edge.service.protocols import SegmentsFrames, bundle_of
from edge.service.queues import Job, JobQueue, Segmented

if TYPE_CHECKING:
    from edge.service.clock import Clock
    from edge.service.config import ServiceConfig
    from edge.service.telemetry import Metrics
    from edge.service.vocabulary import VocabularyStage
    from edge.types import Masks

_LOGGER = logging.getLogger("edge.service")


class SegmentWorker:
    """The worker thread between the job queue and the output stage.

    Args:
        cfg: The service configuration (``model`` thresholds, ``processing.max_masks``).
        queue: Where triggered frames wait.
        prompt_cache: Keeps segmented frames with their detections.
        output: Where results go.
        metrics: The service's counters.
        clock: The service's time.
        stop_event: Set when the service stops (the worker ends once the queue is empty).
        wake: Set after each job (the frame loop waits on it).
        drop: Counts a job that will not be segmented and answers its request.
        vocabulary: Hands over a changed vocabulary, swapped in before the next job (YOLOE).

    Attributes:
        segmenter: The segmenter (given by :meth:`start`).
        busy_since: Clock time the job being segmented started (stall detection).
    """

    def __init__(
        self,
        cfg: ServiceConfig,
        queue: JobQueue,
        prompt_cache: PromptCache,
        output: OutputStage,
        metrics: Metrics,
        clock: Clock,
        stop_event: threading.Event,
        wake: threading.Event,
        drop: Callable[[Job, str], None],
        vocabulary: VocabularyStage | None = None,
    ) -> None:
        self.cfg = cfg
        self.queue = queue
        self.prompt_cache = prompt_cache
        self.output = output
        self.metrics = metrics
        self.clock = clock
        self.stop_event = stop_event
        self.wake = wake
        self._drop = drop
        self.vocabulary = vocabulary
        self.segmenter: SegmentsFrames | None = None
        self.busy_since: float | None = None
        self.thread: threading.Thread | None = None

    def start(self, segmenter: SegmentsFrames) -> None:
        """Start the worker thread with ``segmenter``."""
        self.segmenter = segmenter
        self.thread = threading.Thread(target=self._work, name="segment-worker", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        """The worker thread: one job at a time until the service stops and the queue is empty."""
        while True:
            job = self.queue.get(timeout=0.2)
            if job is None:
                if self.stop_event.is_set() and len(self.queue) == 0:
                    return
                continue
            self.metrics.set("fastsam_queue_depth", len(self.queue))
            req = job.request
            if req is not None and not req.start():  # its caller gave up (504)
                self._drop(job, "cancelled")
                continue
            enqueued = job.enqueued
            if enqueued is not None:
                self.metrics.observe(
                    "fastsam_queue_wait_seconds", max(time.perf_counter() - enqueued, 0.0)
                )
            self.busy_since = self.clock.now()
            self.metrics.set("fastsam_busy", 1)
            try:
                self._process(job)
            except Exception as exc:
                self.metrics.inc("fastsam_errors_total", kind="segment")
                _LOGGER.exception("frame %d: segmentation failed", job.frame_id)
                req = job.request
                if req is not None and not req.done.is_set():
                    req.finish(500, {"error": f"segmentation failed: {exc!r}"})
            finally:
                self.busy_since = None
                self.metrics.set("fastsam_busy", 0)
                self.wake.set()

    def _process(self, job: Job) -> None:
        """Segment one job (its request's thresholds and prompts) and hand it to output."""
        if self.vocabulary is not None:  # a changed vocabulary: between frames, never inside
            self.vocabulary.apply(self._segmenter())
        cfg = self.cfg
        req = job.request
        kwargs: dict[str, Any] = {}
        conf = req.conf if req is not None and req.conf is not None else cfg.model.conf
        iou = req.iou if req is not None and req.iou is not None else cfg.model.iou
        if conf is not None:
            kwargs["conf"] = conf
        if iou is not None:
            kwargs["iou"] = iou
        if cfg.processing.max_masks:
            manifest = bundle_of(self.segmenter)
            kwargs["max_det"] = min(
                cfg.processing.max_masks,
                manifest.thresholds.max_det if manifest is not None else 10**9,
            )
        if req is not None and req.prompts is not None:
            kwargs["prompt"] = req.prompts
        t0 = time.perf_counter()
        try:
            result = self._segment(job, kwargs)
        except InputError as exc:  # e.g. a prompt outside the image: the caller's mistake
            if req is None:
                raise
            # answered 400 (counted in fastsam_http_requests_total), not a service error
            _LOGGER.info("frame %d: request refused: %s", job.frame_id, exc)
            message = str(exc)
            field_name = message.split(":")[0]
            if req.prompts is not None:  # thresholds were checked already: the prompt is bad
                field_name = "prompt"
                if not message.startswith("prompt"):
                    message = f"prompt: {message}"
            req.finish(400, HttpError(400, message, field_name).body())
            return
        seg_s = time.perf_counter() - t0
        self.metrics.observe("fastsam_segment_seconds", seg_s)
        self.metrics.inc("fastsam_results_total")
        if self.output.staged:
            self.busy_since = None  # segmentation is done: a wait here is the output's stall
        self.output.put(Segmented(job, req, result, seg_s))

    def _segment(self, job: Job, kwargs: dict[str, Any]) -> Masks:
        """Segment a job's frame through the prompt cache (a kept frame for ``POST /prompt``,
        else this frame, kept for later prompts)."""
        entry, kept = job.cached, job.cached is not None
        if entry is None:
            assert job.frame is not None and job.capture is not None  # set by both producers
            entry = CachedFrame.of(job.frame, job.image, job.capture)
        try:
            return self.prompt_cache.segment(self._segmenter(), entry, kept, **kwargs)
        finally:
            self.cache_metrics()

    def _segmenter(self) -> SegmentsFrames:
        if self.segmenter is None:
            raise RuntimeError("SegmentWorker.start() has not been given the segmenter yet")
        return self.segmenter

    def cache_metrics(self) -> None:
        """The prompt cache's size in ``/metrics``."""
        cache = self.prompt_cache
        self.metrics.set("fastsam_prompt_cache_frames", len(cache))
        self.metrics.set("fastsam_prompt_cache_bytes", cache.nbytes)

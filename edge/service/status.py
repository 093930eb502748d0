"""What a running service reports: ``/healthz``, the page's ``/state`` and its caches.

Read-only views over the running :class:`~edge.service.runner.Service` (through the
:class:`RunningService` protocol, so this module does not import the runner).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

from edge import __version__
from edge.service.protocols import bundle_of

if TYPE_CHECKING:
    from edge.service.clock import Clock
    from edge.service.frames import FrameLoop
    from edge.service.http import ApiServer
    from edge.service.live import LiveFrame, PromptCache
    from edge.service.mqtt import MqttPublisher
    from edge.service.output import OutputStage
    from edge.service.queues import JobQueue
    from edge.service.sink import ResultSink
    from edge.service.sources import ResilientSource
    from edge.service.telemetry import Metrics
    from edge.service.vocabulary import VocabularyStage
    from edge.service.worker import SegmentWorker


class RunningService(Protocol):
    """The parts of a running service that status reports read."""

    clock: Clock
    metrics: Metrics
    source: ResilientSource
    live: LiveFrame
    prompt_cache: PromptCache
    queue: JobQueue
    frames: FrameLoop
    worker: SegmentWorker
    output: OutputStage
    sink: ResultSink
    segmenter: Any
    mqtt: MqttPublisher | None
    http: ApiServer | None
    vocabulary: VocabularyStage
    ready: threading.Event
    stop_event: threading.Event
    bundle: dict[str, Any]
    started_at: float

    def stalled_stage(self, now: float) -> tuple[str, float] | None: ...

    def worker_stalled(self, now: float) -> float | None: ...


def text_prompt_problem(manifest: Any) -> str:
    """Why text prompts cannot work with this bundle here ("" when they can).

    Args:
        manifest: The loaded bundle's :class:`edge.bundle.BundleManifest` (``None``: unknown,
            e.g. a test double without one).

    Returns:
        The reason, for the page (next to the disabled text box), the HTTP answer (``field``
        ``prompt``) and the one warning ``serve`` logs at start.
    """
    from edge.bundle import NO_CLIP_HINT
    from edge.tokenizer import missing_text_deps

    if manifest is None or not manifest.has_text:
        return NO_CLIP_HINT
    missing = missing_text_deps()
    if missing:
        return (
            f"text prompts need the package(s) {', '.join(missing)}, which are not installed "
            "where the service runs: pip install ftfy regex in its venv (both are dependencies "
            "of fastsam-edge; sudo scripts/install_pi.sh on a Pi)"
        )
    return ""


def recent_events(svc: RunningService) -> list[dict[str, Any]]:
    """The page's recent enter / leave events, newest first ([] without tracking or events)."""
    tracker = svc.output.tracker
    if tracker is None or not svc.output.cfg.events.enabled:
        return []
    return tracker.log.recent()


def vocabulary_facts(svc: RunningService) -> dict[str, Any]:
    """The model's kind (``yoloe`` / ``fastsam``), YOLOE family and vocabulary, with the masks
    per word of the last result (``counts``; absent before one, or for a class-agnostic one)."""
    from edge.service.vocabulary import label_counts

    facts = svc.vocabulary.facts()
    latest = svc.output.latest()
    counts = label_counts(latest) if latest is not None else None
    if counts is not None:
        facts["counts"] = counts
    return facts


def page_facts(svc: RunningService) -> dict[str, Any]:
    """What the page polls (``GET /state``): live frame, last result, kept frames, the
    vocabulary."""
    from edge.service.web import frame_facts

    now = svc.clock.now()
    entry, read_at = svc.live.latest()
    latest = svc.output.latest()
    text_problem = text_prompt_problem(bundle_of(svc.segmenter))
    return {
        "live": frame_facts(entry, read_at, now),
        "live_reads": bool(svc.source.live),
        "source": {
            "name": svc.source.name,
            "open": svc.source.is_open,
            "error": svc.source.last_error if not svc.source.is_open else "",
        },
        "latest": None
        if latest is None
        else {
            "frame_id": latest.get("frame_id"),
            "trigger": latest.get("trigger"),
            "timestamp": latest.get("timestamp"),
            "num_masks": latest.get("num_masks"),
            "latency_ms": (
                round(svc.output.last_latency_ms, 1)
                if svc.output.last_latency_ms is not None
                else None
            ),
            "timings": latest.get("timings"),
        },
        "prompt_cache": {
            "frames": svc.prompt_cache.frame_ids(),
            "bytes": svc.prompt_cache.nbytes,
            "limit_bytes": svc.prompt_cache.max_bytes,
        },
        "text_prompts": not text_problem,
        "text_prompts_why": text_problem,
        "tracking": svc.output.tracker is not None,
        "vocabulary": vocabulary_facts(svc),
        "events": recent_events(svc),
        "bundle": svc.bundle,
        "busy": svc.worker.busy_since is not None,
        "stalled_s": svc.worker_stalled(now),
    }


def cache_stats(svc: RunningService) -> dict[str, dict[str, int]]:
    """Every bounded cache clients can fill, by name (:meth:`edge.lru.BoundedLRU.stats`);
    the prompt cache has its own ``fastsam_prompt_cache_*`` metrics."""
    from edge.service.web import SUMMARIES, THUMBS

    caches: dict[str, dict[str, int]] = {
        "thumbnails": THUMBS.stats(),
        "summaries": SUMMARIES.stats(),
        "viewers": svc.prompt_cache.viewer_stats(),
    }
    seg_caches = getattr(svc.segmenter, "cache_stats", None)
    if callable(seg_caches):
        caches.update(seg_caches())
    if svc.http is not None:
        caches.update(svc.http.cache_stats())
    return caches


def cache_metrics(svc: RunningService) -> None:
    """Every cache's size in ``/metrics`` (``fastsam_cache_*{cache=...}``)."""
    for name, st in cache_stats(svc).items():
        svc.metrics.set("fastsam_cache_entries", st.get("entries", 0), cache=name)
        svc.metrics.set("fastsam_cache_bytes", st.get("bytes", 0), cache=name)
        if "max_bytes" in st:
            svc.metrics.set("fastsam_cache_limit_bytes", st["max_bytes"], cache=name)
        svc.metrics.set_total("fastsam_cache_evictions_total", st.get("evictions", 0), cache=name)


def health(svc: RunningService) -> tuple[int, dict[str, Any]]:
    """``GET /healthz``: 200 when all is well, 503 with the problems otherwise."""
    now = svc.clock.now()
    stalled = svc.stalled_stage(now)
    src = svc.source
    problems = []
    if not svc.ready.is_set():
        problems.append("starting")
    if stalled is not None:
        problems.append(f"{stalled[0]} stalled for {stalled[1]:.0f} s")
    if not src.is_open and src.failures:
        problems.append(f"source down: {src.last_error}")
    if svc.stop_event.is_set():
        problems.append("stopping")
    mqtt_problem = svc.mqtt.problem() if svc.mqtt is not None else None
    if mqtt_problem:
        problems.append(mqtt_problem)
    degraded = []
    if svc.sink.write_error is not None:
        degraded.append(f"results cannot be written: {svc.sink.write_error}")
    body = {
        "status": "unhealthy" if problems else "degraded" if degraded else "ok",
        "problems": problems + degraded,
        "version": __version__,
        "bundle": svc.bundle,
        "model_loaded": svc.segmenter is not None,
        # no token here: the vocabulary (configuration), never the scene's counts
        "model": {
            k: v
            for k, v in svc.vocabulary.facts().items()
            if k in ("kind", "family", "vocabulary")
        },
        "source": {
            "name": src.name,
            "open": src.is_open,
            "failures": src.failures,
            "last_error": src.last_error,
            "last_frame_age_s": (
                round(now - src.last_frame_at, 3) if src.last_frame_at is not None else None
            ),
        },
        "frame": (
            {"width": svc.frames.frame_hw[1], "height": svc.frames.frame_hw[0]}
            if svc.frames.frame_hw
            else None
        ),
        "busy": svc.worker.busy_since is not None,
        "queue_depth": len(svc.queue),
        "output_queue_depth": len(svc.output) if svc.output.staged else None,
        "last_latency_ms": (
            round(svc.output.last_latency_ms, 1)
            if svc.output.last_latency_ms is not None
            else None
        ),
        "frames": int(svc.metrics.get("fastsam_frames_total")),
        "results": int(svc.metrics.get("fastsam_results_total")),
        "disk_free_bytes": svc.sink.free_bytes(),
        "mqtt": (
            {"connected": svc.mqtt.connected, "broker": svc.mqtt.broker}
            if svc.mqtt is not None
            else None
        ),
        "uptime_s": round(now - svc.started_at, 3),
    }
    return (200 if not problems and not degraded else 503), body

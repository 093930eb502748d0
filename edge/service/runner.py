"""The service: frame loop, segmentation worker, results, HTTP, MQTT, systemd integration.

Threads:

* the **frame loop** (the calling thread) reads frames when a trigger needs one (every frame,
  at ``source.fps``, when motion is on), evaluates the triggers, and offers triggered frames
  to a bounded :class:`~edge.service.triggers.JobQueue`. A full queue drops the frame and counts
  it (live sources); an offline source waits instead, so every frame of a replay is processed.
  The loop pings the systemd watchdog after each iteration, but only while the worker is not
  stalled: a hung camera read or segmentation call stops the pings.
* the **worker** segments. With ``service.pipeline = "staged"`` (default) it hands each
  result to the **output thread** through a queue of :data:`OUTPUT_QUEUE_SIZE` (waiting when
  it is full), which writes the result directory, publishes to MQTT and answers HTTP while the
  worker segments the next frame; one output thread keeps results, MQTT messages and answers
  in the order the frames were segmented. With ``"serial"`` the worker does the output itself.
* the HTTP server and paho-mqtt's network loop run in their own threads.

SIGTERM / SIGINT stop the loop; the worker finishes the frame it is on, queued frames are
dropped (counted), the output thread writes every frame already segmented, and the service
exits 0 after printing its one-line summary. The watchdog and ``/healthz`` notice a frame stuck
in either stage for longer than ``service.stall_timeout_s``.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge import __version__
from edge.errors import BundleError
from edge.paths import describe_path_kind
from edge.result_schema import bundle_facts
from edge.service import status
from edge.service.clock import Clock
from edge.service.config import (
    ConfigError,
    ServiceConfig,
    bench_defaults,
    check_exposure,
    is_loopback_host,
    resolve_state_dir,
    resolve_token,
)
from edge.service.frames import FrameLoop
from edge.service.http import ApiServer, HttpError, TriggerRequest, default_routes
from edge.service.live import CachedFrame, LiveFrame, PromptCache
from edge.service.mqtt import MqttPublisher
from edge.service.notify import Notifier, WatchdogPinger
from edge.service.output import OutputStage
from edge.service.protocols import (
    SegmentsFrames,
    bundle_of,
)
from edge.service.queues import Job, JobQueue, RequestSlot
from edge.service.sink import ResultSink
from edge.service.sources import (
    FrameSource,
    ReplaySource,
    ResilientSource,
    make_source,
)
from edge.service.telemetry import Metrics
from edge.service.triggers import GpioTrigger
from edge.service.vocabulary import VocabularyStage, vocabulary_routes
from edge.service.web import Sessions, page_routes
from edge.service.worker import SegmentWorker

if TYPE_CHECKING:
    from edge.segmenter import Segmenter

_LOGGER = logging.getLogger("edge.service")


@dataclass
class Summary:
    """Counts of a run, for the closing line and for tests."""

    frames: int = 0
    triggers: int = 0
    results: int = 0
    written: int = 0
    dropped: int = 0
    errors: int = 0
    mean_latency_ms: float = 0.0
    mean_read_ms: float = 0.0
    mean_queue_wait_ms: float = 0.0
    mean_segment_ms: float = 0.0
    mean_output_ms: float = 0.0
    elapsed_s: float = 0.0
    reason: str = ""

    def line(self) -> str:
        """The one-line summary printed at the end of ``serve``."""
        return (
            f"fastsam-edge serve: {self.frames} frames, {self.triggers} triggers, "
            f"{self.written} results written, {self.dropped} dropped, {self.errors} errors, "
            f"mean latency {self.mean_latency_ms:.1f} ms (read {self.mean_read_ms:.1f}, "
            f"queue {self.mean_queue_wait_ms:.1f}, segment {self.mean_segment_ms:.1f}, "
            f"output {self.mean_output_ms:.1f} ms) in {self.elapsed_s:.1f} s [{self.reason}]"
        )


def _refuse_text_prompts(request: TriggerRequest, problem: str) -> None:
    """A request with a text prompt that cannot work here: 400 before any segmentation.

    Raises:
        HttpError: 400, ``field`` = ``prompt`` (the client's request, not a service error).
    """
    from edge.prompts import TextPrompt

    if problem and any(isinstance(p, TextPrompt) for p in request.prompts or ()):
        raise HttpError(400, f"prompt: {problem}", "prompt")


def load_segmenter(cfg: ServiceConfig) -> Segmenter:
    """Load the configured bundle (``"demo"``: the embedded demo bundle)."""
    from edge.demo import resolve_bundle
    from edge.segmenter import Segmenter

    bundle = resolve_bundle(cfg.model.bundle)
    precision, threads, notes = bench_defaults(cfg.model)
    for note in notes:
        _LOGGER.info("%s", note)
    seg = Segmenter.load(bundle, precision=precision or None, threads=threads or None)
    # text and word embeddings persist across restarts (systemd's StateDirectory= by default),
    # so a restarted service loads no text tower for texts it has seen
    seg.state_dir = resolve_state_dir(cfg)
    text = replace(
        seg.text,
        prefilter=cfg.processing.text_prefilter,
        shortlist=cfg.processing.text_shortlist,
    )
    clip = seg.manifest.clip
    if clip is not None:
        try:
            text.check_bundle(clip.dense is not None, clip.model)
        except BundleError as exc:
            raise ConfigError(f"processing.{exc}") from None
    seg.text = text
    return seg


class Service:
    """One running service; see the module docstring.

    Args:
        cfg: Validated configuration.
        segmenter: A loaded segmenter (default: load ``model.bundle``).
        source: A frame source (default: built from ``[source]``).
        clock: Time source (tests pass :class:`~edge.service.clock.FakeClock`).
        notifier: systemd notifier (default: from the environment).
        mqtt_client_factory: paho client factory (tests pass a fake).
        gpio_pin_factory: gpiozero pin factory (tests pass ``MockFactory()``).
        camera_factory: Passed to the camera source (tests pass a fake Picamera2).
        max_frames: Stop after this many frames (None: no limit).
        duration_s: Stop after this many seconds (None: no limit).
        on_result: Called from the worker with each result JSON (embedding, tests).
        metrics: Where the counters go (the bench passes one that keeps every sample).
    """

    def __init__(
        self,
        cfg: ServiceConfig,
        *,
        segmenter: SegmentsFrames | None = None,
        source: FrameSource | None = None,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        mqtt_client_factory: Callable[[str], Any] | None = None,
        gpio_pin_factory: Any = None,
        camera_factory: Callable[..., Any] | None = None,
        max_frames: int | None = None,
        duration_s: float | None = None,
        on_result: Callable[[dict[str, Any]], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock or Clock()
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier()
        self.pinger = WatchdogPinger(self.notifier)
        self.segmenter = segmenter
        self.max_frames = max_frames
        self.duration_s = duration_s
        self._mqtt_factory = mqtt_client_factory
        self._gpio_pin_factory = gpio_pin_factory
        raw_source = source or make_source(cfg.source, self.clock, camera_factory)
        self.source = ResilientSource(
            raw_source,
            self.clock,
            cfg.source.reopen_backoff_s,
            cfg.source.reopen_backoff_max_s,
            on_error=lambda _msg: self.metrics.inc("fastsam_errors_total", kind="source"),
        )
        if isinstance(raw_source, ReplaySource) and raw_source.on_skip is None:
            raw_source.on_skip = lambda _msg: self.metrics.inc(
                "fastsam_errors_total", kind="input"
            )
        self.sink = ResultSink(cfg.output, self.metrics)
        self.queue = JobQueue(cfg.trigger.queue_size)
        self.requests = RequestSlot()
        self.live = LiveFrame()
        self.gpio: GpioTrigger | None = None
        self.mqtt: MqttPublisher | None = None
        self.http: ApiServer | None = None
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self._stop_reason = ""
        self._drain = False
        self.output = OutputStage(
            cfg, self.sink, self.metrics, self.clock, self._drop, self.wake, on_result
        )
        self.frames = FrameLoop(
            cfg,
            self.source,
            self.queue,
            self.requests,
            self.live,
            self.metrics,
            self.clock,
            self.stop_event,
            self._drop,
            self._tick,
            lambda reason: self.request_stop(reason, drain=True),
        )
        self.state_dir = resolve_state_dir(cfg)
        self.vocabulary = VocabularyStage(cfg.processing.vocabulary, self.state_dir, self.metrics)
        self.prompt_cache = PromptCache(
            cfg.http.prompt_cache_frames, int(cfg.http.prompt_cache_mb * 2**20)
        )
        self.worker = SegmentWorker(
            cfg,
            self.queue,
            self.prompt_cache,
            self.output,
            self.metrics,
            self.clock,
            self.stop_event,
            self.wake,
            self._drop,
            self.vocabulary,
        )
        self.started_at = 0.0
        self._next_status = 0.0
        self.bundle: dict[str, Any] = {}
        self.ready = threading.Event()
        self.summary = Summary()

    # --------------------------------------------------------------------------------------
    # lifecycle
    # --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the model, start outputs and inputs, tell systemd READY=1.

        Raises:
            ConfigError, FastSAMEdgeError, OSError: Fatal start-up problems (bad bundle,
                unwritable output dir, port in use, missing optional dependency).
        """
        cfg = self.cfg
        self.started_at = self.clock.now()
        if self.duration_s is not None:
            self.frames.until = self.started_at + self.duration_s
        self.metrics.set("fastsam_start_time_seconds", self.clock.wall())
        self.metrics.set("fastsam_prompt_cache_limit_bytes", self.prompt_cache.max_bytes)
        self.worker.cache_metrics()
        check_output_dir(cfg.output.dir)  # before the (slow) model load: fail fast
        if cfg.http.enabled:
            check_listen(cfg.http.host, cfg.http.port)
        token = ""
        if cfg.http.enabled or cfg.http.unix_socket:
            token = resolve_token(cfg.http)  # a missing or short token stops here, not later
            check_exposure(cfg.http, token)
        self.notifier.status("loading model")
        if self.segmenter is None:
            self.segmenter = load_segmenter(cfg)
        if hasattr(self.segmenter, "state_dir") and self.segmenter.state_dir is None:
            self.segmenter.state_dir = self.state_dir  # a given segmenter: the service's
        self.bundle = self.output.bundle = bundle_facts(self.segmenter)
        self.frames.manifest = bundle_of(self.segmenter)
        self.vocabulary.start(self.segmenter)  # before the warm-up: a YOLOE frame needs words
        if cfg.model.warmup:
            self._warmup(self.segmenter)
        try:
            self.sink.start()
        except OSError as exc:
            raise ConfigError(
                f"output.dir: cannot use {cfg.output.dir!r}: {exc.strerror or exc}"
            ) from None
        if cfg.mqtt.enabled:
            self.mqtt = MqttPublisher(
                cfg.mqtt,
                self._mqtt_factory,
                self.metrics,
                now=self.clock.now,
                on_trigger=self.wake.set,
                version=__version__,
                events=cfg.processing.track and cfg.events.enabled,
                state_dir=self.state_dir,
            )
            if self.vocabulary.kind == "yoloe":
                self.mqtt.set_vocabulary(self.vocabulary.words)
                self.vocabulary.on_change = self.mqtt.set_vocabulary
            self.mqtt.start()
            self.output.mqtt = self.frames.mqtt = self.mqtt
        if cfg.trigger.gpio.enabled:
            self.gpio = GpioTrigger(cfg.trigger.gpio, self.wake.set, self._gpio_pin_factory)
            self.gpio.open()
            self.frames.gpio = self.gpio
        if cfg.http.enabled or cfg.http.unix_socket:
            if cfg.http.enabled and not token and not is_loopback_host(cfg.http.host):
                _LOGGER.warning(
                    "http: listening on %s without a token (http.allow_unauthenticated): anyone "
                    "on the network can trigger, watch the live camera and read every result",
                    cfg.http.host,
                )
            try:
                self.http = ApiServer(
                    self,
                    cfg.http.host,
                    cfg.http.port if cfg.http.enabled else None,
                    cfg.http.unix_socket,
                    token,
                    cfg.http.max_body_bytes,
                    cfg.http.request_timeout_s,
                    cfg.http.max_connections,
                    cfg.http.allowed_hosts,
                    routes={**default_routes(), **page_routes(), **vocabulary_routes()},
                    sessions=Sessions(token),
                )
            except OSError as exc:  # the TCP address was checked: most likely the socket
                key = "http.unix_socket" if cfg.http.unix_socket else "http.host, http.port"
                raise ConfigError(f"{key}: cannot listen: {exc.strerror or exc}") from None
            self.http.start()
            where = [f"http://{cfg.http.host}:{self.http.port}"] if self.http.port else []
            where += [f"unix:{cfg.http.unix_socket}"] if cfg.http.unix_socket else []
            _LOGGER.info("http: API on %s", ", ".join(where))
            if self.http.port:
                _LOGGER.info("http: page on %s", page_url(cfg.http.host, self.http.port))
        self.worker.start(self.segmenter)
        self.output.start()
        # open the source once now, so that READY and the first log line tell the camera state
        self.metrics.set("fastsam_source_up", int(self.source.try_open()))
        state = "source open" if self.source.is_open else f"source down: {self.source.last_error}"
        _LOGGER.info(
            "fastsam-edge %s serving: bundle %s, source %s (%s), triggers: %s, output %s",
            __version__,
            self.bundle.get("name"),
            self.source.name,
            state,
            ", ".join(self._trigger_names()) or "none",
            cfg.output.dir,
        )
        self.notifier.ready(f"ready; {state}")
        self.ready.set()
        self._next_status = self.clock.now() + cfg.service.status_interval_s

    def _trigger_names(self) -> list[str]:
        return self.frames.trigger_names() + (["http"] if self.http else [])

    def _warmup(self, segmenter: SegmentsFrames) -> None:
        manifest = bundle_of(segmenter)
        h, w = manifest.input.imgsz if manifest is not None else (64, 64)
        t0 = time.perf_counter()
        segmenter.segment(np.zeros((h, w, 3), np.uint8))
        _LOGGER.info("warm-up inference: %.0f ms", (time.perf_counter() - t0) * 1e3)

    def request_stop(self, reason: str = "stop requested", drain: bool = False) -> None:
        """Ask the loop to stop (signal handlers, tests). ``drain``: process queued frames."""
        if not self.stop_event.is_set():
            self._stop_reason = reason
            self._drain = drain
            self.stop_event.set()
        self.wake.set()

    def run(self, install_signals: bool = True) -> Summary:
        """Start, run the frame loop until stopped or a limit is reached, shut down.

        Returns:
            The run's :class:`Summary`.
        """
        previous: dict[int, Any] = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            self.start()
            self._loop()
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.summary

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.stop_event.is_set():
            _LOGGER.warning("%s again: still finishing the current frame", name)
            return
        _LOGGER.info("%s: finishing the current frame, then exiting", name)
        self.request_stop(name, drain=False)

    def shutdown(self) -> None:
        """Stop everything (idempotent); fills :attr:`summary`."""
        if not self.stop_event.is_set():
            self.request_stop("shutdown", drain=False)
        self.notifier.stopping(f"stopping: {self._stop_reason}")
        if not self._drain:
            for job in self.queue.drain():
                self._drop(job, "stopping")
        self.queue.close()
        # one stall limit for both stages together (systemd's TimeoutStopSec is above it)
        deadline = time.monotonic() + self.cfg.service.stall_timeout_s
        worker = self.worker.thread
        if worker is not None:
            worker.join(timeout=self.cfg.service.stall_timeout_s)
            if worker.is_alive() and self.worker.busy_since is not None:
                _LOGGER.error(
                    "segmentation still running after %.0f s (service.stall_timeout_s); "
                    "exiting without it",
                    self.cfg.service.stall_timeout_s,
                )
                self.metrics.inc("fastsam_errors_total", kind="segment")
            # else still alive: waiting for a stalled output stage (handled just below)
        self.output.close(deadline, worker)
        req = self.requests.take()
        if req is not None:
            req.finish(503, {"error": "stopping: the service is shutting down"})
        if self.http is not None:
            self.http.close()
            self.http = None
        if self.gpio is not None:
            self.gpio.close()
            self.gpio = None
        self.source.close()
        self.vocabulary.close()
        self.metrics.set("fastsam_source_up", 0)
        self.sink.close()
        if self.mqtt is not None:
            self.mqtt.stop()
            self.mqtt = None
        self._fill_summary()
        self.notifier.close()

    def _fill_summary(self) -> None:
        m = self.metrics
        stages = m.stage_means_ms()
        self.summary = Summary(
            frames=int(m.get("fastsam_frames_total")),
            triggers=int(m.get("fastsam_triggers_total")),
            results=int(m.get("fastsam_results_total")),
            written=int(m.get("fastsam_results_written_total")),
            dropped=int(m.get("fastsam_dropped_total")),
            errors=int(m.get("fastsam_errors_total")),
            mean_latency_ms=m.mean_ms("fastsam_latency_seconds"),
            mean_read_ms=stages["read"],
            mean_queue_wait_ms=stages["queue_wait"],
            mean_segment_ms=stages["segment"],
            mean_output_ms=stages["output"],
            elapsed_s=self.clock.now() - self.started_at,
            reason=self._stop_reason,
        )

    # --------------------------------------------------------------------------------------
    # the frame loop
    # --------------------------------------------------------------------------------------

    def _limits_reached(self, now: float) -> str:
        if self.max_frames is not None and self.source.frames >= self.max_frames:
            return f"max frames ({self.max_frames})"
        if self.duration_s is not None and now - self.started_at >= self.duration_s:
            return f"duration ({self.duration_s:g} s)"
        return ""

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            now = self.clock.now()
            reason = self._limits_reached(now)
            if reason:
                self.request_stop(reason, drain=True)
                break
            timeout = self.frames.step(now)
            self._tick()
            self._periodic_status(self.clock.now())
            if timeout > 0 and not self.stop_event.is_set():
                self.clock.wait(self.wake, timeout)
            self.wake.clear()

    def _tick(self) -> None:
        """Frame-loop progress: ping the watchdog unless a segmentation is stalled."""
        now = self.clock.now()
        if self.worker_stalled(now) is None:
            self.pinger.progress(now)
        if self.mqtt is not None:
            self.mqtt.poll()

    def _drop(self, job: Job, reason: str, queue_name: str = "frames") -> None:
        """Count a frame that will not be output (``queue_name``: where it was) and answer its
        request."""
        self.metrics.inc("fastsam_dropped_total", reason=reason)
        self.metrics.inc("fastsam_queue_dropped_total", queue=queue_name)
        req = job.request
        if req is not None:
            req.finish(503, {"error": f"dropped: {reason}"})
        _LOGGER.debug("frame %d (%s) dropped: %s", job.frame_id, "+".join(job.triggers), reason)

    def worker_stalled(self, now: float) -> float | None:
        """Seconds the current segmentation (or output) has run if over the stall limit."""
        stalled = self.stalled_stage(now)
        return stalled[1] if stalled is not None else None

    def stalled_stage(self, now: float) -> tuple[str, float] | None:
        """The stage whose current frame has run longer than ``service.stall_timeout_s``
        (``"segmentation"``, or ``"output"`` with the staged pipeline), and for how long."""
        worst: tuple[str, float] | None = None
        for stage, since in (
            ("segmentation", self.worker.busy_since),
            ("output", self.output.busy_since),
        ):
            if since is None:
                continue
            age = now - since
            if age > self.cfg.service.stall_timeout_s and (worst is None or age > worst[1]):
                worst = (stage, age)
        return worst

    def _periodic_status(self, now: float) -> None:
        interval = self.cfg.service.status_interval_s
        if not interval or now < self._next_status:
            return
        self._next_status = now + interval
        m = self.metrics
        text = (
            f"{int(m.get('fastsam_frames_total'))} frames, "
            f"{int(m.get('fastsam_results_total'))} results, "
            f"{int(m.get('fastsam_dropped_total'))} dropped, "
            f"{int(m.get('fastsam_errors_total'))} errors; last latency "
            + (
                f"{self.output.last_latency_ms:.0f} ms"
                if self.output.last_latency_ms is not None
                else "-"
            )
            + ("" if self.source.is_open else f"; source down: {self.source.last_error}")
        )
        _LOGGER.info("status: %s", text)
        self.notifier.status(text)

    # --------------------------------------------------------------------------------------
    # the HTTP API (edge.service.http.ServiceAPI)
    # --------------------------------------------------------------------------------------

    def submit(self, request: TriggerRequest) -> None:
        if self.stop_event.is_set():
            raise HttpError(503, "stopping: the service is shutting down")
        _refuse_text_prompts(request, status.text_prompt_problem(bundle_of(self.segmenter)))
        if not self.source.is_open and self.source.failures:
            raise HttpError(
                503, f"source unavailable: {self.source.last_error}", None, {"Retry-After": "5"}
            )
        self.requests.put(request)
        self.wake.set()

    def submit_prompt(self, request: TriggerRequest, entry: CachedFrame) -> None:
        """Queue ``POST /prompt`` on a kept frame for the worker, ahead of triggered frames."""
        if self.stop_event.is_set():
            raise HttpError(503, "stopping: the service is shutting down")
        _refuse_text_prompts(request, status.text_prompt_problem(bundle_of(self.segmenter)))
        job = Job(
            frame_id=entry.frame_id,
            image=entry.image,
            triggers=("prompt",),
            created=self.clock.now(),
            frame=entry.frame,
            capture=entry.capture,
            request=request,
            cached=entry,
            priority=True,
        )
        self.frames.enqueue(job)

    def monotonic(self) -> float:
        return self.clock.now()

    def results_dir(self) -> Path:
        return self.sink.dir

    def recent_events(self) -> list[dict[str, Any]]:
        """The page's recent enter / leave events, newest first ([] without tracking)."""
        return status.recent_events(self)

    def event_thumbnail(self, seq: int) -> bytes | None:
        """The JPEG of a kept event (None: no such event, or no thumbnail)."""
        tracker = self.output.tracker
        return tracker.log.thumbnail(seq) if tracker is not None else None

    def cancel(self, request: TriggerRequest) -> None:
        """Forget a request whose caller timed out, unless its segmentation already began."""
        if not request.cancel():
            return
        with self.requests.lock:
            if self.requests.forget(request):
                self.metrics.inc("fastsam_dropped_total", reason="cancelled")
            for job in self.queue.remove(lambda j: j.request is request):
                self._drop(job, "cancelled")
        self.metrics.set("fastsam_queue_depth", len(self.queue))

    def count_request(self, path: str, status: int) -> None:
        known = (
            "/trigger",
            "/healthz",
            "/metrics",
            "/latest",
            "/prompt",
            "/live.jpg",
            "/vocabulary",
        )
        if path not in known:
            path = "other"
        self.metrics.inc("fastsam_http_requests_total", path=path, code=str(status))

    def latest(self) -> dict[str, Any] | None:
        return self.output.latest()

    def metrics_text(self) -> str:
        status.cache_metrics(self)
        return self.metrics.render()

    def page_facts(self) -> dict[str, Any]:
        """What the page polls (``GET /state``): live frame, last result, kept frames."""
        return status.page_facts(self)

    def health(self) -> tuple[int, dict[str, Any]]:
        return status.health(self)


# ------------------------------------------------------------------------------------------
# start-up checks: configuration that can never work stops the service with the key's name
# ------------------------------------------------------------------------------------------


def check_output_dir(path: str) -> None:
    """``output.dir`` must be a directory or creatable as one.

    Raises:
        ConfigError: It, or one of its parents, is a file (or a FIFO, a symlink loop...).
    """
    p = Path(path)
    for node in (p, *p.parents):
        if node.is_dir():
            return
        kind = describe_path_kind(node)
        if kind is not None and (kind == "does not exist" or kind.startswith("cannot exist")):
            continue  # the first existing ancestor decides
        what = "it" if node == p else f"its parent {str(node)!r}"
        raise ConfigError(
            f"output.dir: {path!r} cannot be a directory: {what} {kind or 'is a file'}"
        )


def check_listen(host: str, port: int) -> None:
    """Bind ``host:port`` once (as the HTTP server will) to report what is wrong by key.

    Raises:
        ConfigError: Unknown host (``http.host``), address not on this machine (``http.host``),
            port in use or not permitted (``http.port``).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"http.host: cannot resolve {host!r}: {exc}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"http.port: {port} is already in use on {host} (another fastsam-edge? "
                    "choose a free port, or 0 for any)"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(
                    f"http.host: {host!r} is not an address of this machine"
                ) from None
            if exc.errno == errno.EACCES:
                raise ConfigError(
                    f"http.port: binding port {port} is not permitted (ports below 1024 need "
                    "root; use e.g. 8080)"
                ) from None
            raise ConfigError(
                f"http.host, http.port: cannot listen on {host}:{port}: {exc}"
            ) from None


def page_url(host: str, port: int) -> str:
    """The page's URL for a bind address (a wildcard bind: this machine's mDNS name)."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname().split(".")[0] + ".local"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


# ------------------------------------------------------------------------------------------
# entry point used by the CLI
# ------------------------------------------------------------------------------------------


class _JournalFormatter(logging.Formatter):
    """``<N>`` priority prefixes that journald understands (SyslogLevelPrefix=yes)."""

    PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = self.PRIORITY.get(record.levelname, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def configure_logging(level: str, debug: bool = False) -> None:
    """Log to stderr; under systemd (``JOURNAL_STREAM``) with journald priorities and no time."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper()))


def serve(
    cfg: ServiceConfig,
    max_frames: int | None = None,
    duration_s: float | None = None,
    **kwargs: Any,
) -> Summary:
    """Run the service until stopped or a limit is reached; returns the summary."""
    service = Service(cfg, max_frames=max_frames, duration_s=duration_s, **kwargs)
    return service.run()


__all__ = ["Service", "Summary", "configure_logging", "load_segmenter", "serve"]

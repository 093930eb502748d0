"""Service telemetry: Prometheus metrics in the text exposition format (hand-rolled, no
dependency), served at ``GET /metrics``."""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field

LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0
)  # fmt: skip

STAGES = ("read", "queue_wait", "segment", "output")
"""The stages of a result's latency, each a ``fastsam_<stage>_seconds`` histogram."""

# name -> (type, help)
METRICS: dict[str, tuple[str, str]] = {
    "fastsam_frames_total": ("counter", "Frames read from the source."),
    "fastsam_triggers_total": ("counter", "Triggers that fired, by trigger kind."),
    "fastsam_dropped_total": (
        "counter",
        "Triggered frames not segmented, by reason (busy, superseded, stopping, source_down, "
        "cancelled).",
    ),
    "fastsam_queue_dropped_total": (
        "counter",
        "Frames dropped at each queue: frames (triggered, waiting for the segmenter) or output "
        "(segmented, waiting for the output stage; only at a stalled shutdown).",
    ),
    "fastsam_errors_total": (
        "counter",
        "Errors, by kind: source (open/read failed), input (an unreadable replay file, "
        "skipped), segment, output, write (result files), mqtt, vocabulary (a vocabulary "
        "that could not be encoded or applied). A client's bad request is not "
        "one: it is answered 4xx and counted in fastsam_http_requests_total.",
    ),
    "fastsam_results_total": ("counter", "Frames segmented."),
    "fastsam_results_written_total": ("counter", "Result directories written to disk."),
    "fastsam_results_skipped_total": (
        "counter",
        "Results not written, by reason (disk_full, not_requested, no_event).",
    ),
    "fastsam_track_events_total": (
        "counter",
        "Objects that entered or left (processing.track), by type (enter, leave).",
    ),
    "fastsam_results_deleted_total": ("counter", "Result directories deleted by retention."),
    "fastsam_http_requests_total": ("counter", "HTTP requests, by path and status code."),
    "fastsam_latency_seconds": (
        "histogram",
        "Trigger to result: frame read, queue wait, segmentation and output (docs/service.md).",
    ),
    "fastsam_read_seconds": (
        "histogram",
        "Stage: reading a frame from the source, with orientation, ROI and scaling.",
    ),
    "fastsam_queue_wait_seconds": (
        "histogram",
        "Stage: a triggered frame waiting in the queue for the segmentation worker.",
    ),
    "fastsam_segment_seconds": ("histogram", "Stage: the segmentation call alone."),
    "fastsam_output_seconds": (
        "histogram",
        "Stage: encoding (RLE, polygons, overlay), writing, publishing and answering a result.",
    ),
    "fastsam_vocabulary_changes_total": (
        "counter",
        "Open-vocabulary (YOLOE) changes swapped in by the worker (POST /vocabulary, the page).",
    ),
    "fastsam_masks": ("gauge", "Masks in the last result."),
    "fastsam_tracks": (
        "gauge",
        "Objects tracked (with an id, lost ones included) after the last result.",
    ),
    "fastsam_busy": ("gauge", "1 while a frame is being segmented."),
    "fastsam_queue_depth": ("gauge", "Triggered frames waiting for the segmenter."),
    "fastsam_output_queue_depth": (
        "gauge",
        "Segmented frames waiting for the output stage (service.pipeline = staged).",
    ),
    "fastsam_source_up": ("gauge", "1 while the frame source is open."),
    "fastsam_mqtt_connected": ("gauge", "1 while connected to the MQTT broker (mqtt.enabled)."),
    "fastsam_mqtt_dropped_total": (
        "counter",
        "Results not published to MQTT: the oldest of those waiting while the broker was away, "
        "or refused by a full paho queue.",
    ),
    "fastsam_triggers_merged_total": (
        "counter",
        "Trigger events merged into a capture already due (MQTT presses, GPIO edges), by trigger.",
    ),
    "fastsam_last_frame_timestamp_seconds": ("gauge", "Time of the last frame (epoch)."),
    "fastsam_last_result_timestamp_seconds": ("gauge", "Time of the last result (epoch)."),
    "fastsam_start_time_seconds": ("gauge", "Service start time (epoch)."),
    "fastsam_prompt_cache_frames": ("gauge", "Frames kept for POST /prompt."),
    "fastsam_prompt_cache_bytes": ("gauge", "Memory held by the frames kept for POST /prompt."),
    "fastsam_prompt_cache_limit_bytes": ("gauge", "http.prompt_cache_mb in bytes."),
    "fastsam_cache_entries": (
        "gauge",
        "Entries of the caches clients fill, by cache (bpe: the tokenizer's words, "
        "text_embeddings, thumbnails, summaries: recent results' mask counts, auth_clients: "
        "addresses with wrong credentials, viewers: "
        "pages' kept frames, sessions: page logins).",
    ),
    "fastsam_cache_bytes": ("gauge", "Memory held by those caches, by cache."),
    "fastsam_cache_limit_bytes": ("gauge", "The memory bound of each of those caches."),
    "fastsam_cache_evictions_total": (
        "counter",
        "Entries those caches evicted (or refused: larger than the bound), by cache.",
    ),
}


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.n += 1


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return "{" + body + "}"


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Metrics:
    """Thread-safe counters, gauges and histograms; :meth:`render` gives the /metrics text.

    Args:
        keep_samples: Also keep every histogram sample (for percentiles in
            ``fastsam-edge bench --service-replay``; a running service leaves it off).
    """

    def __init__(self, keep_samples: bool = False) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._hists: dict[str, _Histogram] = {}
        self._samples: dict[str, list[float]] | None = {} if keep_samples else None

    def _check(self, name: str, kind: str) -> None:
        if name not in METRICS or METRICS[name][0] != kind:
            raise KeyError(f"metrics: {name!r} is not a registered {kind}")

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add to a counter."""
        self._check(name, "counter")
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values.setdefault(name, {})
            series[key] = series.get(key, 0.0) + value

    def set_total(self, name: str, value: float, **labels: str) -> None:
        """Set a counter to a total counted elsewhere (e.g. a cache's evictions)."""
        self._check(name, "counter")
        with self._lock:
            self._values.setdefault(name, {})[tuple(sorted(labels.items()))] = float(value)

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        self._check(name, "gauge")
        with self._lock:
            self._values.setdefault(name, {})[tuple(sorted(labels.items()))] = float(value)

    def observe(self, name: str, value: float) -> None:
        """Record one histogram sample (seconds)."""
        self._check(name, "histogram")
        with self._lock:
            self._hists.setdefault(name, _Histogram(LATENCY_BUCKETS)).observe(value)
            if self._samples is not None:
                self._samples.setdefault(name, []).append(value)

    def samples(self, name: str) -> list[float]:
        """Every sample of a histogram, in order (needs ``keep_samples``).

        Raises:
            RuntimeError: The metrics were made without ``keep_samples``.
        """
        if self._samples is None:
            raise RuntimeError("metrics: samples are kept only with Metrics(keep_samples=True)")
        with self._lock:
            return list(self._samples.get(name, []))

    def get(self, name: str, **labels: str) -> float:
        """A counter or gauge value (0 if never set); without labels, the sum over labels."""
        with self._lock:
            series = self._values.get(name, {})
            if labels:
                return series.get(tuple(sorted(labels.items())), 0.0)
            return sum(series.values())

    def histogram(self, name: str) -> tuple[int, float]:
        """(count, sum) of a histogram."""
        with self._lock:
            h = self._hists.get(name)
            return (h.n, h.total) if h else (0, 0.0)

    def mean_ms(self, name: str) -> float:
        """Mean of a histogram's samples in milliseconds (0 without samples)."""
        n, total = self.histogram(name)
        return total / n * 1e3 if n else 0.0

    def stage_means_ms(self) -> dict[str, float]:
        """Mean milliseconds of each stage in :data:`STAGES`."""
        return {stage: self.mean_ms(f"fastsam_{stage}_seconds") for stage in STAGES}

    def render(self) -> str:
        """Prometheus text format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_text) in METRICS.items():
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                if kind == "histogram":
                    h = self._hists.get(name) or _Histogram(LATENCY_BUCKETS)
                    cum = 0
                    for bound, count in zip(h.buckets, h.counts, strict=True):
                        cum += count
                        lines.append(f'{name}_bucket{{le="{_num(bound)}"}} {cum}')
                    lines.append(f'{name}_bucket{{le="+Inf"}} {h.n}')
                    lines.append(f"{name}_sum {_num(h.total)}")
                    lines.append(f"{name}_count {h.n}")
                    continue
                series = self._values.get(name) or ({(): 0.0} if not _labelled(name) else {})
                for key, value in sorted(series.items()):
                    lines.append(f"{name}{_labels(dict(key))} {_num(value)}")
        return "\n".join(lines) + "\n"


def _labelled(name: str) -> bool:
    return name in (
        "fastsam_triggers_total",
        "fastsam_dropped_total",
        "fastsam_errors_total",
        "fastsam_results_skipped_total",
        "fastsam_http_requests_total",
        "fastsam_track_events_total",
    )

"""``fastsam-edge bench --track-sequence``: tracking quality and cost on moving objects.

For each seed, :func:`edge.demo.scenes.generate_sequence` renders a sequence of objects that
cross, occlude each other and leave, with every object's identity on every frame. Two passes
over it, in one process with one loaded segmenter:

* **identity**: the bundle's thresholds; each frame segmented and tracked
  (:class:`edge.track.Tracker`), then scored by :class:`edge.metrics.TrackTally`: *id
  consistency* (share of an object's detected frames carrying its majority id) and *id
  switches*;
* **cost**: the same frames at a near-zero score threshold and ``max_det`` = the target mask
  count (100 by default), so that the tracker sees as many masks a frame as the bundle gives
  (the demo bundle tops out near 30); the tracker's time per frame against the
  segmentation's, the budget being 5 %. Because a small bundle may not reach the target, a
  last row tracks exactly that many synthetic masks (:func:`synthetic_masks`: ellipses of
  many sizes drifting over the frame, most overlapping several others) on the same frames'
  size.

With ``--stream-fps`` it also measures a network camera's end-to-end latency
(:mod:`edge.bench.stream`).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

SCHEMA_VERSION = 1
COST_BUDGET = 0.05
"""The tracker may cost at most this share of the segmentation time."""


def run_track_bench(
    bundle: str,
    seeds: list[int],
    frames: int,
    size: tuple[int, int],
    mask_target: int,
    precision: str | None,
    threads: int | None,
    min_frames: int = 2,
    max_missed: int = 5,
) -> dict[str, Any]:
    """Identity and cost rows for each seed (see the module docstring).

    Args:
        bundle: Bundle directory.
        seeds: Sequence seeds.
        frames: Frames per sequence.
        size: ``(width, height)`` of the frames.
        mask_target: Masks per frame of the cost pass.
        precision: Detector precision (None: the bundle's).
        threads: onnxruntime threads (None: the default).
        min_frames: Tracker confirmation (``events.min_frames``).
        max_missed: Tracker lost-track buffer (``events.max_missed``).

    Returns:
        The JSON-able report: ``rows`` (one per seed) and ``total``.
    """
    from edge.bench.system import machine_facts
    from edge.demo.scenes import generate_sequence
    from edge.metrics import TrackTally
    from edge.segmenter import Segmenter
    from edge.track import Tracker, TrackerConfig

    seg = Segmenter.load(bundle, precision=precision, threads=threads)
    config = TrackerConfig(min_frames=min_frames, max_missed=max_missed)
    seg.segment(generate_sequence(seeds[0], 1, *size)[0].image)  # warm-up
    rows = []
    for seed in seeds:
        seq = generate_sequence(seed, frames, *size)
        tally = TrackTally()
        tracker = Tracker(config)
        seg_s, track_s = [], []
        for f in seq:
            t0 = time.perf_counter()
            result = seg.segment(f.image)
            t1 = time.perf_counter()
            ids = tracker.update(result)
            t2 = time.perf_counter()
            seg_s.append(t1 - t0)
            track_s.append(t2 - t1)
            tally.add(f.masks, f.ids, result.crops, ids)
        cost = _cost_pass(seg, seq, mask_target, config)
        rows.append(
            {
                "seed": seed,
                "frames": len(seq),
                **tally.summary(),
                "segment_ms": 1e3 * statistics.mean(seg_s),
                "track_ms": 1e3 * statistics.mean(track_s),
                "cost": cost,
            }
        )
    total = _total(rows)
    images = [f.image for f in generate_sequence(seeds[0], min(frames, 30), *size)]
    total["synthetic"] = synthetic_cost(seg, images, mask_target, config, size)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "track-sequence",
        "bundle": str(bundle),
        "precision": seg.precision,
        "size": list(size),
        "tracker": {"min_frames": min_frames, "max_missed": max_missed},
        "machine": machine_facts(),
        "rows": rows,
        "total": total,
    }


def _cost_pass(seg: Any, seq: list[Any], target: int, config: Any) -> dict[str, Any]:
    """The tracker's cost at about ``target`` masks a frame, against the segmentation's."""
    from edge.track import Tracker

    tracker = Tracker(config)
    seg_s, track_s, masks = [], [], []
    for f in seq:
        t0 = time.perf_counter()
        result = seg.segment(f.image, conf=0.001, max_det=target)
        t1 = time.perf_counter()
        tracker.update(result)
        t2 = time.perf_counter()
        seg_s.append(t1 - t0)
        track_s.append(t2 - t1)
        masks.append(len(result))
    seg_ms, track_ms = 1e3 * statistics.mean(seg_s), 1e3 * statistics.mean(track_s)
    return {
        "masks_mean": statistics.mean(masks),
        "segment_ms": seg_ms,
        "track_ms": track_ms,
        "track_ms_p90": 1e3 * sorted(track_s)[int(0.9 * (len(track_s) - 1))],
        "share": track_ms / seg_ms if seg_ms else float("nan"),
        "within_budget": track_ms <= COST_BUDGET * seg_ms,
    }


def synthetic_masks(size: tuple[int, int], count: int, frame: int, seed: int = 0) -> Any:
    """Frame ``frame`` of ``count`` ellipses drifting over a ``(width, height)`` frame, as
    :class:`~edge.types.Masks` (half-axes 5 to 120 px, random scores)."""
    import cv2
    import numpy as np

    from edge.types import MaskCrop, Masks

    w, h = size
    rng = np.random.default_rng(seed)
    centre = rng.uniform((0, 0), (w, h), (count, 2))
    axes = rng.uniform(5, 120, (count, 2))
    velocity = rng.uniform(-5, 5, (count, 2))
    scores = rng.uniform(0.3, 1.0, count).astype(np.float32)
    crops, boxes = [], []
    for i in range(count):
        cx, cy = centre[i] + velocity[i] * frame
        a, b = axes[i]
        x0, y0 = int(max(cx - a - 1, 0)), int(max(cy - b - 1, 0))
        x1, y1 = int(min(cx + a + 2, w)), int(min(cy + b + 2, h))
        local = np.zeros((max(y1 - y0, 1), max(x1 - x0, 1)), np.uint8)
        center = (int(cx) - x0, int(cy) - y0)
        cv2.ellipse(local, center, (int(a), int(b)), 0, 0, 360, 1, -1)
        crop = MaskCrop.from_dense(local.astype(bool), x0, y0)
        crops.append(crop)
        boxes.append([crop.x0, crop.y0, crop.x0 + crop.shape[1], crop.y0 + crop.shape[0]])
    return Masks(np.array(boxes, np.float32), scores, tuple(crops), (h, w))


def synthetic_cost(
    seg: Any, images: list[Any], count: int, config: Any, size: tuple[int, int]
) -> dict[str, Any]:
    """The tracker's time per frame on :func:`synthetic_masks` (``count`` masks a frame),
    each tracker update timed right after a segmentation of a sequence frame at ``max_det``
    ``count`` (so both see the same machine load) and set against it."""
    from edge.track import Tracker

    n = max(len(images), 2)
    seq = [synthetic_masks(size, count, k) for k in range(n)]
    tracker = Tracker(config)
    tracker.update(seq[0])
    track_s, seg_s = [], []
    for k in range(1, n):
        t0 = time.perf_counter()
        seg.segment(images[k % len(images)], conf=0.001, max_det=count)
        t1 = time.perf_counter()
        tracker.update(seq[k])
        t2 = time.perf_counter()
        seg_s.append(t1 - t0)
        track_s.append(t2 - t1)
    track_ms, seg_ms = 1e3 * statistics.mean(track_s), 1e3 * statistics.mean(seg_s)
    return {
        "masks": count,
        "track_ms": track_ms,
        "track_ms_p90": 1e3 * sorted(track_s)[int(0.9 * (len(track_s) - 1))],
        "segment_ms": seg_ms,
        "share": track_ms / seg_ms if seg_ms else float("nan"),
    }


def _total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    detected = sum(r["detected_frames"] for r in rows)
    consistent = sum(
        r["id_consistency"] * r["detected_frames"] for r in rows if r["detected_frames"]
    )
    seg_ms = statistics.mean(r["cost"]["segment_ms"] for r in rows)
    track_ms = statistics.mean(r["cost"]["track_ms"] for r in rows)
    return {
        "objects": sum(r["objects"] for r in rows),
        "detected_frames": detected,
        "id_consistency": consistent / detected if detected else float("nan"),
        "id_switches": sum(r["id_switches"] for r in rows),
        "cost_masks_mean": statistics.mean(r["cost"]["masks_mean"] for r in rows),
        "cost_segment_ms": seg_ms,
        "cost_track_ms": track_ms,
        "cost_share": track_ms / seg_ms if seg_ms else float("nan"),
    }


def track_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (identity per seed, then cost)."""
    lines = [
        f"### Tracking on moving objects ({report['bundle']}, {report['precision']}, "
        f"{report['size'][0]}x{report['size'][1]}, min_frames "
        f"{report['tracker']['min_frames']}, max_missed {report['tracker']['max_missed']})",
        "",
        "| seed | frames | objects | detected | id consistency | id switches | tracked | "
        "segment ms | track ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['seed']} | {r['frames']} | {r['objects']} | {r['detected_frames']} / "
            f"{r['visible_frames']} | {r['id_consistency']:.3f} | {r['id_switches']} | "
            f"{r['tracked_share']:.3f} | {r['segment_ms']:.1f} | {r['track_ms']:.2f} |"
        )
    t = report["total"]
    lines.append(
        f"| **all** | | {t['objects']} | {t['detected_frames']} | "
        f"**{t['id_consistency']:.3f}** | **{t['id_switches']}** | | | |"
    )
    lines += [
        "",
        "| seed | masks / frame | segment ms | track ms (p90) | track / segment |",
        "|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        c = r["cost"]
        lines.append(
            f"| {r['seed']} | {c['masks_mean']:.0f} | {c['segment_ms']:.1f} | "
            f"{c['track_ms']:.2f} ({c['track_ms_p90']:.2f}) | {100 * c['share']:.1f} % |"
        )
    lines.append(
        f"| **all** | {t['cost_masks_mean']:.0f} | {t['cost_segment_ms']:.1f} | "
        f"{t['cost_track_ms']:.2f} | **{100 * t['cost_share']:.1f} %** |"
    )
    syn = t.get("synthetic")
    if syn:
        lines.append(
            f"| synthetic | {syn['masks']} | {syn['segment_ms']:.1f} | "
            f"{syn['track_ms']:.2f} ({syn['track_ms_p90']:.2f}) | {100 * syn['share']:.1f} % |"
        )
    stream = report.get("stream")
    if stream:
        lines += [
            "",
            f"### Stream latency, frame sent by the camera to result ({stream['camera_fps']:g} "
            "frames/s MJPEG camera on 127.0.0.1)",
            "",
            "| service fps | results | p50 ms | p90 ms | max ms | segment ms |",
            "|---|---|---|---|---|---|",
        ]
        for r in stream["rows"]:
            lines.append(
                f"| {r['fps']:g} | {r['results']} | {r['p50_ms']:.0f} | {r['p90_ms']:.0f} | "
                f"{r['max_ms']:.0f} | {r['segment_ms']:.0f} |"
            )
    return "\n".join(lines) + "\n"

"""One benchmark configuration, measured in its own process: ``python -m edge.bench.worker``.

A fresh interpreter per configuration keeps peak RSS honest (interpreter + numpy + onnxruntime
+ this model + one image's work) and stops one configuration's allocator or thread-pool state
from leaking into the next. The parent passes everything on the command line and reads one JSON
line from stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.bench.system import board_state, peak_rss_mb
from edge.types import MaskCrop, Masks

STAGES = ("preprocess", "infer", "postprocess", "prompt")
PROMPT_MODES = ("everything", "point", "box", "text")
DEFAULT_TEXT = "a red circle"


def percentiles(values: list[float] | np.ndarray) -> dict[str, float]:
    """``{"p50", "p90", "p99", "mean", "min", "max"}`` of a sample (linear interpolation).

    An empty sample gives NaNs (a stage that never ran, e.g. ``prompt`` in everything mode).
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return dict.fromkeys(("p50", "p90", "p99", "mean", "min", "max"), float("nan"))
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(arr.mean()),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def save_crops(path: str | Path, crops: list[MaskCrop], image_hw: tuple[int, int]) -> None:
    """Write masks as crops (offset + COCO RLE of the crop) to a JSON file.

    Crop-sized RLE keeps 300 masks of a 1080p frame small; :func:`load_crops` reads them back
    for :func:`edge.metrics.mask_agreement`. Used by this worker and the reference worker.
    """
    from edge.encode import rle_counts, rle_string
    from edge.io import atomic_write_json

    atomic_write_json(
        Path(path),
        {
            "image_hw": list(image_hw),
            "masks": [
                {
                    "x0": c.x0,
                    "y0": c.y0,
                    "size": list(c.shape),
                    "counts": rle_string(rle_counts(c.data)),
                }
                for c in crops
            ],
        },
    )


def load_crops(path: str | Path) -> list[MaskCrop]:
    """Masks written by :func:`save_crops`."""
    from edge.encode import decode_rle

    doc = json.loads(Path(path).read_text())
    return [
        MaskCrop(decode_rle({"size": m["size"], "counts": m["counts"]}), m["x0"], m["y0"])
        for m in doc["masks"]
    ]


def prompt_for(mode: str, result: Masks, text: str = DEFAULT_TEXT) -> Any:
    """The prompt a configuration times, derived from an everything-mode result.

    ``point``: the pixel deepest inside the highest-scoring mask (distance transform), a
    foreground click on a real object. ``box``: that mask's tight bounding box. ``text``:
    ``text``. ``everything``: ``None``.

    Raises:
        ValueError: Unknown mode, or a point/box mode on a result without masks.
    """
    import cv2

    from edge.prompts import BoxPrompt, PointPrompt, TextPrompt

    if mode == "everything":
        return None
    if mode == "text":
        return TextPrompt(text)
    if mode not in PROMPT_MODES:
        raise ValueError(f"prompt mode: expected one of {PROMPT_MODES}, got {mode!r}")
    if len(result) == 0:
        raise ValueError(f"prompt mode {mode!r}: the everything-mode result has no masks")
    crop = result.crops[int(np.argmax(result.confidence))]
    if mode == "box":
        h, w = crop.shape
        return BoxPrompt([crop.x0, crop.y0, crop.x0 + w - 1, crop.y0 + h - 1])
    dist = cv2.distanceTransform(np.pad(crop.data, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return PointPrompt([[crop.x0 + int(x), crop.y0 + int(y)]], [1], mode="best")


def run_worker(
    bundle: str,
    precision: str,
    image_path: str,
    conf: float,
    threads: int,
    runs: int,
    warmup: int,
    mode: str = "everything",
    text: str = DEFAULT_TEXT,
    duration_s: float = 0.0,
    sample_s: float = 5.0,
    masks_out: str | None = None,
) -> dict[str, Any]:
    """Time this runtime on one image and configuration.

    Args:
        bundle: Bundle directory.
        precision: ``"fp32"`` or ``"int8"``.
        image_path: Image file.
        conf: Score threshold (chosen by the parent for a target mask count).
        threads: onnxruntime intra-op threads.
        runs: Timed runs (ignored when ``duration_s`` > 0).
        warmup: Untimed runs first.
        mode: One of :data:`PROMPT_MODES`.
        text: The text of ``mode="text"``. Its embedding is cached after the warm-up, as in a
            service that repeats its prompt; the crops' image embeddings are computed per run,
            by the bundle's CLIP at ``precision`` where the bundle has it.
        duration_s: Sustained mode: run back to back for this long, sampling the board state.
        sample_s: Sustained mode: seconds between samples.
        masks_out: Write the (everything-mode) masks here for agreement checks.

    Returns:
        The JSON-able measurement (see ``docs/benchmarks.md``, "bench.json").
    """
    from dataclasses import replace

    from edge.io import read_image
    from edge.segmenter import Segmenter

    image = read_image(image_path)
    t0 = time.perf_counter()
    seg = Segmenter.load(bundle, precision=precision, threads=threads)
    clip = seg.manifest.clip
    if clip is not None and precision in clip.precisions:
        seg.clip_precision = precision  # text mode: CLIP at the detector's precision
    # the text mode times the pipeline: the best mask is kept whatever its similarity
    seg.text = replace(seg.text, threshold=None)
    load_ms = (time.perf_counter() - t0) * 1e3
    base = seg.segment(image, conf=conf)
    prompt = prompt_for(mode, base, text)
    for _ in range(max(warmup, 1) - 1):
        seg.segment(image, conf=conf, prompt=prompt)
    if prompt is not None:
        seg.segment(image, conf=conf, prompt=prompt)  # lazy CLIP load + text embedding

    per_stage: dict[str, list[float]] = {k: [] for k in STAGES}
    total: list[float] = []
    samples: list[dict[str, Any]] = []
    result = base
    start = time.perf_counter()
    next_sample = 0.0
    while True:
        elapsed = time.perf_counter() - start
        if duration_s > 0:
            if elapsed >= next_sample:
                state = board_state()
                samples.append(
                    {
                        "t_s": round(elapsed, 2),
                        "runs": len(total),
                        "recent_ms": percentiles(total[-20:])["p50"] if total else None,
                        **state,
                    }
                )
                next_sample += sample_s
            if elapsed >= duration_s:
                break
        elif len(total) >= runs:
            break
        ta = time.perf_counter()
        result = seg.segment(image, conf=conf, prompt=prompt)
        total.append((time.perf_counter() - ta) * 1e3)
        for k in STAGES:
            if k in result.timings:
                per_stage[k].append(result.timings[k])
    wall = time.perf_counter() - start
    if masks_out:
        save_crops(masks_out, base.crops, base.image_hw)
    out: dict[str, Any] = {
        "mode": mode,
        "prompt": prompt.to_json() if prompt is not None else None,
        "masks": len(base),
        "selected": len(result) if prompt is not None else None,
        "runs": len(total),
        "load_ms": load_ms,
        "stages_ms": {k: percentiles(v) for k, v in per_stage.items() if v},
        "end_to_end_ms": percentiles(total),
        "fps": len(total) / wall if wall > 0 else float("nan"),
        "peak_rss_mb": peak_rss_mb(),
    }
    if duration_s > 0:
        out["duration_s"] = wall
        out["samples"] = samples
        out["series_ms"] = [round(v, 2) for v in total]
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line of the worker (used by ``fastsam-edge bench``; prints one JSON line)."""
    p = argparse.ArgumentParser(prog="python -m edge.bench.worker")
    p.add_argument("--bundle", required=True)
    p.add_argument("--precision", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--conf", type=float, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mode", choices=PROMPT_MODES, default="everything")
    p.add_argument("--text", default=DEFAULT_TEXT)
    p.add_argument("--duration", type=float, default=0.0)
    p.add_argument("--sample", type=float, default=5.0)
    p.add_argument("--masks-out")
    a = p.parse_args(argv)
    res = run_worker(
        a.bundle,
        a.precision,
        a.image,
        a.conf,
        a.threads,
        a.runs,
        a.warmup,
        a.mode,
        a.text,
        a.duration,
        a.sample,
        a.masks_out,
    )
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

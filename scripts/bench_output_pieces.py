"""The output stage's pieces before and after issue 12, side by side in one process.

For the frames of a replay folder (the masks of the demo bundle at about ``--masks``), times
each piece of what the service does with a result, the frame-sized way it was done before and
the way it is done now, alternating per frame so that load drifts hit both alike:

* RLE: every mask pasted into a frame-sized array, run-lengths and string in Python loops
  (before) vs from the crop with the strings in one vectorised pass (now);
* polygons: traced per mask (unchanged: they were already computed from crops);
* overlay: a frame-sized label image and float blend (before) vs per-crop blend tables
  (now; byte-identical, ``tests/test_overlay.py``), outlines traced again (before) vs shared
  with the polygons (now);
* image file: PNG (before) vs JPEG quality 90 (now);
* JSON: indented (before, Python's encoder) vs compact (now, the C encoder).

Usage::

    PYTHONPATH=. python scripts/bench_output_pieces.py REPLAY_DIR [--masks 100] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from edge.bench.service import pick_conf, replay_files
from edge.demo import demo_bundle
from edge.encode import (
    encode_rles,
    mask_contours,
    mask_to_polygons,
    rle_counts,
)
from edge.io import read_image
from edge.overlay import draw_overlay, mask_colors
from edge.result_schema import result_to_dict
from edge.segmenter import Segmenter
from edge.types import Masks


def _old_rle_string(counts: list[int]) -> str:
    """The per-count Python loop that compressed run lengths before (pycocotools' scheme)."""
    out: list[str] = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _old_rles(result: Masks) -> list[str]:
    h, w = result.image_hw
    return [_old_rle_string(rle_counts(c.dense(h, w))) for c in result.crops]


def _old_overlay(image: np.ndarray, result: Masks, alpha: float = 0.6) -> np.ndarray:
    """The frame-sized overlay of before (as kept in tests/test_overlay.py)."""
    out = image.copy()
    colors = mask_colors(len(result))
    label = np.full(result.image_hw, -1, dtype=np.int32)
    for i in np.argsort(-result.area, kind="stable"):
        crop = result.crops[i]
        h, w = crop.shape
        label[crop.y0 : crop.y0 + h, crop.x0 : crop.x0 + w][crop.data] = i
    painted = label >= 0
    layer = colors[label[painted]].astype(np.float32)
    out[painted] = (out[painted] * (1 - alpha) + layer * alpha).astype(np.uint8)
    for crop in result.crops:
        cs, _ = cv2.findContours(
            crop.data.astype(np.uint8),
            cv2.RETR_EXTERNAL,
            cv2.CHAIN_APPROX_SIMPLE,
            offset=(crop.x0, crop.y0),
        )
        cv2.drawContours(out, cs, -1, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _ms(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    return (time.perf_counter() - t0) * 1e3, value


def _polygons(result: Masks, traced: list[Any] | None = None) -> list[list[list[float]]]:
    return [
        mask_to_polygons(c, 1.0, traced[i] if traced else None) for i, c in enumerate(result.crops)
    ]


def _jpeg(image: np.ndarray) -> np.ndarray:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]


def measure(folder: str, target: int, threads: int = 2) -> dict[str, Any]:
    """Median ms per frame of each piece, before and after, on the folder's frames."""
    images = [read_image(p) for p in replay_files(folder)]
    seg = Segmenter.load(demo_bundle(), precision="int8", threads=threads)
    conf = pick_conf(seg, images, target)
    times: dict[str, list[float]] = {}
    masks = []

    def timed(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        ms, value = _ms(fn, *args, **kwargs)
        times.setdefault(name, []).append(ms)
        return value

    for image in images:
        result = timed("segment", seg.segment, image, conf=conf)
        masks.append(len(result))
        h, w = result.image_hw
        doc = result_to_dict(result, polygon_epsilon=1.0)
        # before
        old = timed("rle before", _old_rles, result)
        timed("polygons before", _polygons, result)
        overlay = timed("overlay before", _old_overlay, image, result)
        png = timed("image file before (PNG)", lambda o: cv2.imencode(".png", o)[1], overlay)
        timed("json before (indented)", json.dumps, doc, indent=1)
        # now
        new = timed("rle now", encode_rles, result.crops, h, w)
        if [n["counts"] for n in new] != old:
            raise AssertionError("RLE strings differ between before and now")
        traced = timed("contours now (shared)", lambda r: [mask_contours(c) for c in r.crops],
                       result)  # fmt: skip
        timed("polygons now", _polygons, result, traced)
        overlay = timed("overlay now", draw_overlay, image, result, traced=traced)
        jpg = timed("image file now (JPEG q90)", _jpeg, overlay)
        timed("json now (compact)", json.dumps, doc, separators=(",", ":"))
        times.setdefault("png KB", []).append(png.size / 1e3)
        times.setdefault("jpeg KB", []).append(jpg.size / 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    before = sum(v for k, v in med.items() if "before" in k)
    now = sum(v for k, v in med.items() if "now" in k)
    h, w = images[0].shape[:2]
    return {
        "folder": folder,
        "frame": [w, h],
        "frames": len(images),
        "masks": statistics.mean(masks),
        "median_ms": med,
        "before_ms": before,
        "now_ms": now,
        "before_over_segment": before / med["segment"],
        "now_over_segment": now / med["segment"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="replay folders (edge.bench.service)")
    p.add_argument("--masks", type=int, default=100, help="target masks per frame (100)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime threads (2)")
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args()
    rows = [measure(f, args.masks, args.threads) for f in args.folders]
    for r in rows:
        print(
            f"{r['frame'][0]}x{r['frame'][1]} {r['masks']:.0f} masks: segment "
            f"{r['median_ms']['segment']:.1f} ms; pieces before {r['before_ms']:.1f} ms "
            f"({r['before_over_segment']:.2f}x), now {r['now_ms']:.1f} ms "
            f"({r['now_over_segment']:.2f}x)"
        )
        for k, v in r["median_ms"].items():
            print(f"    {k:28s} {v:8.1f}")
    if args.json:
        from edge.io import atomic_write_json

        atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()

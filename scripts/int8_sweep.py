"""Compare int8 recipes on a bundle's fp32 detector: agreement with fp32, recall, speed.

Usage: python scripts/int8_sweep.py BUNDLE_DIR [--eval 40] [--threads 2] [--out FILE.json]

Calibrates each recipe on 24 built-in calibration scenes and evaluates on held-out scenes
(seeds >= 1_000_000, ground truth known) at the bundle's input aspect. Needs the export extra.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from edge.bundle import read_manifest
from edge.scenes import EVAL_SEED_START, generate_scene
from export.quantize import (
    CalibrationSet,
    QuantConfig,
    compare_precisions,
    load_calibration,
    quantize_detector,
)

RECIPES = [
    QuantConfig("minmax", True, ()),
    QuantConfig("minmax", True, ("cv3",)),
    QuantConfig("minmax", True, ("cv3", "cv4")),
    QuantConfig("minmax", True, ("cv2", "cv3", "cv4")),
    QuantConfig("minmax", False, ("cv3", "cv4")),
    QuantConfig("percentile", True, ("cv3", "cv4")),
    QuantConfig("entropy", True, ("cv3", "cv4")),
]


def main() -> None:
    """Run the sweep and print one line per recipe."""
    p = argparse.ArgumentParser()
    p.add_argument("bundle")
    p.add_argument("--eval", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    a = p.parse_args()
    m = read_manifest(a.bundle)
    h, w = m.input.imgsz
    calib = load_calibration(None, (h, w), 24)
    scenes = [generate_scene(EVAL_SEED_START + 20_000 + i, w, h) for i in range(a.eval)]
    held_out = CalibrationSet(
        [s.image for s in scenes], "held-out scenes", [s.masks for s in scenes]
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in RECIPES:
            q = Path(tmp) / "q.onnx"
            quantize_detector(
                Path(a.bundle) / "fastsam.fp32.onnx", q, calib.images, (h, w), m.input.dynamic, cfg
            )
            th = m.thresholds
            rep = compare_precisions(
                Path(a.bundle) / "fastsam.fp32.onnx",
                q,
                held_out,
                (h, w),
                m.input.dynamic,
                th.conf,
                th.iou,
                th.max_det,
                a.threads,
            )
            row = {"recipe": cfg.to_dict(), **rep}
            rows.append(row)
            floats = ",".join(cfg.float_branches) or "-"
            rec = (rep.get("recall_fp32", float("nan")), rep.get("recall_int8", float("nan")))
            print(
                f"{cfg.method:10s} per_channel={cfg.per_channel!s:5s} float={floats:12s} "
                f"IoU {rep['mean_iou_fp32_to_int8']:.3f}/{rep['mean_iou_int8_to_fp32']:.3f} "
                f"recall {rec[0]:.3f}->{rec[1]:.3f} speed-up {rep['speedup']:.2f}x "
                f"({rep['infer_ms_fp32']:.0f}->{rep['infer_ms_int8']:.0f} ms)",
                flush=True,
            )
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

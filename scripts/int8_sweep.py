"""Compare int8 recipes on a bundle's fp32 detector: agreement with fp32, recall, speed.

Usage: python scripts/int8_sweep.py BUNDLE_DIR [--eval 40] [--calib 24] [--threads 2]
       [--recipes default,proto,...] [--objects MIN,MAX] [--out FILE.json]

Calibrates each recipe on built-in calibration scenes and evaluates it on held-out scenes
(seeds >= 1_000_000, ground truth known) at the bundle's input aspect, twice: with the
CPU-independent reference kernels (the unfused QDQ graph: what a Pi's exact integer kernels
compute, up to rounding; the numbers to choose a recipe on) and with this host's fused kernels
(its speed, and its numbers: on x86 without VNNI they saturate). Needs the export extra.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tqdm import tqdm

from edge.bundle import read_manifest
from edge.demo.scenes import EVAL_SEED_START, generate_scene
from export.quantize import (
    CalibrationSet,
    QuantConfig,
    agreement_of,
    load_calibration,
    verify_int8,
    write_int8_detector,
)

RECIPES = {
    "default": QuantConfig(),
    "no-float-branch": QuantConfig(float_branches=()),
    "box-float": QuantConfig(float_branches=("cv2", "cv3", "cv4")),
    "per-tensor": QuantConfig(per_channel=False),
    "percentile": QuantConfig(method="percentile"),
    "entropy": QuantConfig(method="entropy"),
    "proto": QuantConfig(float_modules=("proto",)),
    "stem+proto": QuantConfig(float_modules=("stem", "proto")),
    "coef+proto": QuantConfig(float_modules=("coef", "proto")),
    "head+proto": QuantConfig(float_modules=("head", "proto")),
    "percentile+proto": QuantConfig(method="percentile", float_modules=("proto",)),
    "percentile+head+proto": QuantConfig(method="percentile", float_modules=("head", "proto")),
}


def main() -> None:
    """Run the sweep, print one line per recipe, optionally write JSON rows."""
    p = argparse.ArgumentParser()
    p.add_argument("bundle")
    p.add_argument("--eval", type=int, default=40, help="held-out scenes")
    p.add_argument("--calib", type=int, default=24, help="calibration scenes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names")
    p.add_argument("--objects", default="3,8", help="MIN,MAX objects per held-out scene")
    p.add_argument("--seed-offset", type=int, default=20_000, help="held-out seed block")
    p.add_argument("--conf", type=float, help="score threshold (default: the bundle's)")
    p.add_argument("--out")
    a = p.parse_args()
    names = [n for n in a.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}; known: {list(RECIPES)}")
    lo, hi = (int(v) for v in a.objects.split(","))
    m = read_manifest(a.bundle)
    h, w = m.input.imgsz
    calib = load_calibration(None, (h, w), a.calib)
    scenes = [
        generate_scene(EVAL_SEED_START + a.seed_offset + i, w, h, lo, hi) for i in range(a.eval)
    ]
    held_out = CalibrationSet(
        [s.image for s in scenes], "held-out scenes", [s.masks for s in scenes]
    )
    th = m.thresholds
    rows = []
    fp32 = Path(a.bundle) / "fastsam.fp32.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        for name in tqdm(names, desc="recipes", unit="recipe"):
            cfg = QuantConfig(**{**RECIPES[name].__dict__, "num_images": a.calib})
            q = Path(tmp) / "q.onnx"
            write_int8_detector(fp32, q, calib.images, (h, w), m.input.dynamic, cfg)
            reps = verify_int8(
                fp32, q, held_out, (h, w), m.input.dynamic, a.conf or th.conf, th.iou, th.max_det,
                a.threads,
            )  # fmt: skip
            ref, host = reps["reference"], reps["host"]
            row = {"recipe": name, "config": cfg.to_dict(), "reference": ref, "host": host}
            rows.append(row)
            tqdm.write(
                f"{name:22s} ref IoU {ref['mean_iou_fp32_to_int8']:.3f}/"
                f"{ref['mean_iou_int8_to_fp32']:.3f} recall {ref['recall_fp32']:.3f}->"
                f"{ref['recall_int8']:.3f} | host ({host['cpu_class']['name']}) "
                f"{agreement_of(host):.3f} recall {host['recall_int8']:.3f} | "
                f"int8/fp32 speed-up {host['speedup']:.2f}x"
            )
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Reference worker of ``fastsam-edge bench --compare-reference``: ultralytics FastSAM timings.

Runs ``FastSAM(model)(image, imgsz, conf, iou=0.9, retina_masks=True)`` on a .pt or .onnx file
in this (fresh) process and prints one JSON line in the edge worker's format: per-stage
percentiles (ultralytics' own ``result.speed``), end-to-end percentiles, mask count and peak RSS;
``--masks-out`` also writes the masks (as crops) for the agreement check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("YOLO_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    p = argparse.ArgumentParser(prog="fastsam-bench-reference")
    p.add_argument("--model", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--imgsz", type=int, required=True)
    p.add_argument("--conf", type=float, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--masks-out")
    a = p.parse_args(argv)

    import cv2
    import numpy as np
    import torch
    from ultralytics import FastSAM

    from edge.bench.system import peak_rss_mb
    from edge.bench.worker import percentiles, save_crops
    from edge.types import MaskCrop

    torch.set_num_threads(a.threads)
    image = cv2.imread(a.image)
    model = FastSAM(a.model)

    def once() -> tuple[float, dict[str, float], object]:
        t0 = time.perf_counter()
        r = model(image, imgsz=a.imgsz, conf=a.conf, iou=0.9, retina_masks=True, verbose=False)[0]
        return (time.perf_counter() - t0) * 1e3, dict(r.speed), r

    t0 = time.perf_counter()
    _, _, first = once()
    load_ms = (time.perf_counter() - t0) * 1e3  # model load + first inference
    for _ in range(a.warmup - 1):
        once()
    total: list[float] = []
    stages: dict[str, list[float]] = {"preprocess": [], "infer": [], "postprocess": []}
    for _ in range(a.runs):
        ms, speed, _ = once()
        total.append(ms)
        stages["preprocess"].append(speed["preprocess"])
        stages["infer"].append(speed["inference"])
        stages["postprocess"].append(speed["postprocess"])
    n = len(first)
    if a.masks_out:
        dense = first.masks.data.cpu().numpy() > 0.5 if n else np.zeros((0, 1, 1), bool)
        save_crops(a.masks_out, [MaskCrop.from_dense(m) for m in dense], image.shape[:2])
    wall = sum(total) / 1e3
    print(
        json.dumps(
            {
                "mode": "everything",
                "prompt": None,
                "masks": n,
                "selected": None,
                "runs": a.runs,
                "load_ms": load_ms,
                "stages_ms": {k: percentiles(v) for k, v in stages.items()},
                "end_to_end_ms": percentiles(total),
                "fps": a.runs / wall if wall > 0 else float("nan"),
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

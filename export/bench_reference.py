"""Reference worker of ``fastsam-edge bench --compare-reference``: ultralytics FastSAM timings.

Runs ``FastSAM(model)(image, imgsz, conf, iou=0.9, retina_masks=True)`` on a .pt or .onnx file
in this (fresh) process and prints one JSON line: median per-stage ms (ultralytics' own
``result.speed``), end-to-end ms, mask count and peak RSS.
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
    p = argparse.ArgumentParser(prog="python -m export.bench_reference")
    p.add_argument("--model", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--imgsz", type=int, required=True)
    p.add_argument("--conf", type=float, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    a = p.parse_args(argv)

    import cv2
    import numpy as np
    import torch
    from ultralytics import FastSAM

    from edge.bench import peak_rss_mb

    torch.set_num_threads(a.threads)
    image = cv2.imread(a.image)
    model = FastSAM(a.model)

    def once() -> tuple[float, dict[str, float], int]:
        t0 = time.perf_counter()
        r = model(image, imgsz=a.imgsz, conf=a.conf, iou=0.9, retina_masks=True, verbose=False)[0]
        return (time.perf_counter() - t0) * 1e3, dict(r.speed), len(r)

    for _ in range(a.warmup):
        once()
    total, stages, n = [], {"preprocess": [], "infer": [], "postprocess": []}, 0
    for _ in range(a.runs):
        ms, speed, n = once()
        total.append(ms)
        stages["preprocess"].append(speed["preprocess"])
        stages["infer"].append(speed["inference"])
        stages["postprocess"].append(speed["postprocess"])
    print(
        json.dumps(
            {
                "masks": n,
                "stages_ms": {k: float(np.median(v)) for k, v in stages.items()},
                "end_to_end_ms": float(np.median(total)),
                "runs": a.runs,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

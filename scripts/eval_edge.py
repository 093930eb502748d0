"""Recall and fp32/int8 agreement of a bundle on held-out demo scenes, through this runtime.

Usage: python scripts/eval_edge.py [--bundle DIR] [--scenes 200] [--sizes 320x320,480x360]
       [--threads 2]

Scenes use seeds >= 1_000_000 (never trained on or calibrated on). A ground-truth object counts
as found when some predicted mask has IoU >= 0.5 with it. Agreement: per scene, the mean over
fp32 masks of the best IoU with an int8 mask, and back (``edge.metrics.mask_agreement``),
averaged over scenes: the int8 target of the issue is >= 0.97 both ways with <= 1 point of
recall lost.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from edge import Segmenter
from edge.demo import demo_bundle
from edge.demo.scenes import EVAL_SEED_START, generate_scene
from edge.metrics import mask_agreement, recall_at_iou


def main() -> None:
    """Print recall per precision and the agreement as JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("--bundle")
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--sizes", default="320x320,480x360", help="scene sizes WxH")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    bundle = a.bundle or demo_bundle()
    segs = {
        prec: Segmenter.load(bundle, precision=prec, threads=a.threads)
        for prec in ("fp32", "int8")
    }
    found = {prec: 0 for prec in segs}
    total = 0
    a2b, b2a = [], []
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",") if s]
    for i in range(a.scenes):
        for k, (w, h) in enumerate(sizes):
            scene = generate_scene(EVAL_SEED_START + 5000 * k + i, w, h)
            res = {prec: seg.segment(scene.image) for prec, seg in segs.items()}
            total += len(scene.masks)
            for prec, r in res.items():
                found[prec] += recall_at_iou(scene.masks, r.mask)[0]
            agree = mask_agreement(res["fp32"].crops, res["int8"].crops)
            a2b.append(agree["a_to_b"])
            b2a.append(agree["b_to_a"])
    out = {
        "bundle": str(bundle),
        "scenes": a.scenes * len(sizes),
        "sizes": a.sizes,
        "instances": total,
        **{f"recall@0.5_{prec}": round(found[prec] / total, 4) for prec in segs},
        "mean_iou_fp32_to_int8": round(float(np.mean(a2b)), 4),
        "mean_iou_int8_to_fp32": round(float(np.mean(b2a)), 4),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

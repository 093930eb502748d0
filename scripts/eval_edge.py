"""Recall of a bundle on held-out demo scenes, through this runtime (no torch).

Usage: python scripts/eval_edge.py [--bundle DIR] [--scenes 200] [--threads 2]

Scenes use seeds >= 1_000_000 (never trained on), at 320x320 and 480x360. A ground-truth object
counts as found when some predicted mask has IoU >= 0.5 with it.
"""

from __future__ import annotations

import argparse
import json

from edge import Segmenter
from edge.demo import demo_bundle
from edge.metrics import recall_at_iou
from edge.scenes import EVAL_SEED_START, generate_scene


def main() -> None:
    """Print recall per precision as JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("--bundle")
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    bundle = a.bundle or demo_bundle()
    out = {}
    for precision in ("fp32", "int8"):
        seg = Segmenter.load(bundle, precision=precision, threads=a.threads)
        found = total = 0
        for i in range(a.scenes):
            for w, h, offset in ((320, 320, 0), (480, 360, 5000)):
                scene = generate_scene(EVAL_SEED_START + offset + i, w, h)
                f, t = recall_at_iou(scene.masks, seg.segment(scene.image).mask)
                found, total = found + f, total + t
        out[precision] = {"recall@0.5": round(found / total, 4), "instances": total}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

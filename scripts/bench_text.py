"""Text-prompt cost vs everything mode, side by side in one process.

Usage: python scripts/bench_text.py BUNDLE [--conf 0.52] [--runs 3]
(the bundle needs CLIP: fastsam-export ... --clip MODEL --clip-pretrained TAG|PATH|none).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edge import Segmenter, TextPrompt
from edge.demo.scenes import generate_scene


def main() -> None:
    """Print everything-mode and text-prompt medians per precision."""
    p = argparse.ArgumentParser()
    p.add_argument("bundle")
    p.add_argument("--conf", type=float, default=0.52)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    img = generate_scene(1_700_000, 640, 480).image
    for prec in ("int8", "fp32"):
        seg = Segmenter.load(a.bundle, precision=prec, threads=a.threads)
        seg.clip_precision = prec
        seg.segment(img, conf=a.conf, prompt=TextPrompt("warm-up"))  # loads CLIP
        everything, text = [], []
        for i in range(a.runs):  # interleaved; a new text each time (no embedding cache hit)
            t = time.perf_counter()
            n = len(seg.segment(img, conf=a.conf))
            everything.append(time.perf_counter() - t)
            t = time.perf_counter()
            seg.segment(img, conf=a.conf, prompt=TextPrompt(f"a red circle {i}"))
            text.append(time.perf_counter() - t)
        e, x = float(np.median(everything)) * 1e3, float(np.median(text)) * 1e3
        print(
            f"{prec}: {n} masks, everything {e:.0f} ms, text (top-{seg.text_top_k}) "
            f"{x:.0f} ms, ratio {x / e:.2f}"
        )


if __name__ == "__main__":
    main()

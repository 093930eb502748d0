#!/usr/bin/env python3
"""Text prompts: how the top-K prefilter trades CLIP time against the all-masks choice.

Two measurements, for K in ``--ks`` (and ``all`` = no prefilter, the reference's behaviour):

1. **Agreement** on the demo world (embedded demo bundle: demo detector + tiny CLIP): held-out
   scenes, one text per object (``"a {colour} {shape}"``); how often the top-K choice equals
   the all-masks choice. Two scene sets: the default demo scenes (3-8 objects) and busy ones
   (12-20 objects), where the prefilter really has to drop candidates.
2. **Time** on a bundle with a real-size CLIP (e.g. FastSAM-s 640 + ViT-B/32, random weights are
   fine for time): everything mode vs a text prompt, both precisions int8, side by side and
   interleaved on one 640x480 scene with ~``--masks`` masks; the text's embedding is cached
   (as in a service that repeats its prompt), the crops are encoded every frame.

Writes ``<out>/text-topk.json`` and prints a Markdown table.

Example:
    python scripts/text_topk.py --timing-bundle work/bench/s640 --out docs/bench
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from edge.demo import demo_bundle  # noqa: E402
from edge.demo.scenes import EVAL_SEED_START, generate_scene  # noqa: E402
from edge.prompts import TextPrompt  # noqa: E402
from edge.segmenter import Segmenter  # noqa: E402
from edge.textmatch import select_by_text  # noqa: E402

SEEDS = EVAL_SEED_START + 850_000


def agreement(ks: list[int | None], scenes: int, busy: bool, threads: int) -> dict[str, Any]:
    """Fraction of (scene, object) texts where top-K picks the all-masks choice, per K."""
    seg = Segmenter.load(demo_bundle(), precision="fp32", threads=threads)
    encoder = seg.text_encoder()
    same = {str(k): 0 for k in ks}
    total = 0
    masks_per_scene = []
    for s in range(scenes):
        kw = {"min_objects": 12, "max_objects": 20} if busy else {}
        sc = generate_scene(SEEDS + s + (100_000 if busy else 0), 320, 320, **kw)
        result = seg.segment(sc.image)
        masks_per_scene.append(len(result))
        texts = sorted({f"a {c} {sh}" for c, sh in zip(sc.colors, sc.shapes, strict=True)})
        if not texts or len(result) == 0:
            continue
        choice = {str(k): select_by_text(result, sc.image, texts, encoder, top_k=k) for k in ks}
        ref = choice["None"]
        total += len(texts)
        for k in ks:
            same[str(k)] += sum(a == b for a, b in zip(choice[str(k)], ref, strict=True))
    return {
        "scenes": scenes,
        "busy": busy,
        "texts": total,
        "mean_masks": float(np.mean(masks_per_scene)),
        "agreement": {k: v / max(total, 1) for k, v in same.items()},
    }


def timing(
    bundle: str,
    ks: list[int | None],
    masks: int,
    runs: int,
    threads: int,
    clip_precision: str = "int8",
) -> dict[str, Any]:
    """Median ms of everything mode and of a text prompt per K, interleaved (detector int8,
    CLIP ``clip_precision``)."""
    from edge.bench.run import choose_confs

    image = generate_scene(1_700_000, 640, 480).image
    conf = choose_confs(bundle, image, [masks], threads, "fp32")[masks]
    seg = Segmenter.load(bundle, precision="int8", threads=threads)
    seg.clip_precision = clip_precision
    prompt = TextPrompt("a red circle")
    seg.segment(image, conf=conf, prompt=prompt)  # loads CLIP, caches the text embedding
    times: dict[str, list[float]] = {"everything": [], **{str(k): [] for k in ks}}
    n = len(seg.segment(image, conf=conf))
    for _ in range(runs):
        t0 = time.perf_counter()
        seg.segment(image, conf=conf)
        times["everything"].append((time.perf_counter() - t0) * 1e3)
        for k in ks:
            seg.text_top_k = k
            t0 = time.perf_counter()
            seg.segment(image, conf=conf, prompt=prompt)
            times[str(k)].append((time.perf_counter() - t0) * 1e3)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "bundle": bundle,
        "masks": n,
        "runs": runs,
        "threads": threads,
        "clip_precision": clip_precision,
        "ms": med,
        "ratio_to_everything": {k: v / med["everything"] for k, v in med.items()},
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--ks", default="1,2,4,8,16,32,all")
    p.add_argument("--scenes", type=int, default=100)
    p.add_argument("--timing-bundle", help="bundle with a real-size CLIP (skip timing if unset)")
    p.add_argument("--masks", type=int, default=100)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="text-topk")
    a = p.parse_args(argv)
    from edge.io import atomic_write_json

    ks: list[int | None] = [None if v == "all" else int(v) for v in a.ks.split(",")]
    report: dict[str, Any] = {
        "ks": [str(k) for k in ks],
        "demo": agreement(ks, a.scenes, False, a.threads),
        "demo_busy": agreement(ks, a.scenes, True, a.threads),
    }
    if a.timing_bundle:
        report["timing"] = timing(a.timing_bundle, ks, a.masks, a.runs, a.threads)
    atomic_write_json(Path(a.out) / "text-topk.json", report)
    head = "| K | agreement, demo scenes | agreement, busy scenes |"
    if "timing" in report:
        head += " text ms | x everything |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for k in ks:
        row = (
            f"| {'all' if k is None else k} | {report['demo']['agreement'][str(k)]:.3f} "
            f"| {report['demo_busy']['agreement'][str(k)]:.3f} |"
        )
        if "timing" in report:
            t = report["timing"]
            row += f" {t['ms'][str(k)]:.0f} | {t['ratio_to_everything'][str(k)]:.2f} |"
        lines.append(row)
    print("\n".join(lines))
    if "timing" in report:
        t = report["timing"]
        print(f"everything mode: {t['ms']['everything']:.0f} ms, {t['masks']} masks")
    d, b = report["demo"], report["demo_busy"]
    print(
        f"texts: {d['texts']} (demo, {d['mean_masks']:.1f} masks/scene), "
        f"{b['texts']} (busy, {b['mean_masks']:.1f} masks/scene)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory and segment time of everything mode, one fresh process per measurement.

For each image size and target mask count, a conf giving about that many masks is chosen once
(in this process), then child processes each load the bundle, segment the frame ``--warmup`` +
``--runs`` times and report the median ``segment`` time, the median ``postprocess`` time
(decode, NMS and mask assembly) and their peak RSS (``VmHWM``: the whole process, model
included). ``--full-boxes`` cuts every mask from the whole frame instead of its box: the
worst case for memory (the masks of a trained model's low-score detections on a busy 1080p frame
come close). With ``--tree NAME=DIR`` (repeatable) the children import ``edge`` from each
source tree in turn (e.g. a checkout before a change and one after), alternating the order
every round so load drifts hit both alike; the report gives each tree's medians over rounds and
the ratios against the first tree.

Usage::

    PYTHONPATH=. python scripts/bench_mask_memory.py --bundle DIR --precision int8 \\
        --sizes 640x480,1920x1080 --masks 100,300 --rounds 3 \\
        [--tree before=/path/to/old/checkout --tree after=.] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _scene(size: str, index: int) -> np.ndarray:
    """The scene ``fastsam-edge bench --sizes`` uses at this position of its size list."""
    from edge.demo.scenes import EVAL_SEED_START, generate_scene

    w, h = (int(v) for v in size.lower().split("x"))
    return generate_scene(EVAL_SEED_START + 700_000 + index, w, h).image  # as edge.bench.cli


def _child(args: argparse.Namespace) -> None:
    from edge.bench.system import peak_rss_mb
    from edge.segmenter import Segmenter

    if args.full_boxes:
        import edge.segmenter

        def whole_frame(xyxy: np.ndarray, source_hw: tuple[int, int]) -> np.ndarray:
            h, w = source_hw
            return np.tile(np.array([0, 0, w, h], dtype=np.int64), (len(xyxy), 1))

        edge.segmenter.box_roi = whole_frame  # type: ignore[attr-defined]
    image = _scene(args.size, args.index)
    seg = Segmenter.load(args.bundle, precision=args.precision, threads=args.threads)
    seg_ms, post_ms, masks = [], [], []
    for k in range(args.warmup + args.runs):
        t0 = time.perf_counter()
        result = seg.segment(image, conf=args.conf)
        dt = (time.perf_counter() - t0) * 1e3
        if k >= args.warmup:
            seg_ms.append(dt)
            post_ms.append(result.timings["postprocess"])
            masks.append(len(result))
        del result
    out = {
        "segment_ms": statistics.median(seg_ms),
        "postprocess_ms": statistics.median(post_ms),
        "masks": int(statistics.median(masks)),
        "peak_rss_mib": peak_rss_mb(),
    }
    print(json.dumps(out))


def _spawn(tree: str, args: argparse.Namespace, size: str, index: int, conf: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--bundle", str(args.bundle),
        "--precision", args.precision,
        "--threads", str(args.threads),
        "--size", size,
        "--index", str(index),
        "--conf", repr(conf),
        "--runs", str(args.runs),
        "--warmup", str(args.warmup),
    ] + (["--full-boxes"] if args.full_boxes else [])  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({tree}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=None, help="bundle directory (default: the demo bundle)")
    p.add_argument("--precision", default="int8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", default="640x480,1920x1080")
    p.add_argument("--masks", default="100,300")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tree", action="append", default=[], help="NAME=DIR source tree")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument(
        "--full-boxes",
        action="store_true",
        help="worst case for memory: every mask is cut from the whole frame, not its box",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--conf", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bundle is None:
        from edge.demo import demo_bundle

        args.bundle = str(demo_bundle())
    if args.child:
        _child(args)
        return

    from edge.bench.service import pick_conf
    from edge.segmenter import Segmenter

    trees = dict(t.split("=", 1) for t in args.tree) or {"this": "."}
    names = list(trees)
    seg = Segmenter.load(args.bundle, precision=args.precision, threads=args.threads)
    sizes = [s for s in args.sizes.split(",") if s]
    rows: list[dict[str, Any]] = []
    for index, size in enumerate(sizes):
        image = _scene(size, index)
        for target in (int(m) for m in args.masks.split(",")):
            conf = pick_conf(seg, [image], target)
            runs: dict[str, list[dict]] = {n: [] for n in names}
            for r in range(args.rounds):
                for n in names if r % 2 == 0 else names[::-1]:
                    runs[n].append(_spawn(trees[n], args, size, index, conf))
            row: dict[str, Any] = {"size": size, "target": target, "conf": conf, "trees": {}}
            for n in names:
                row["trees"][n] = {
                    k: statistics.median(x[k] for x in runs[n])
                    for k in ("segment_ms", "postprocess_ms", "peak_rss_mib")
                }
                row["trees"][n]["masks"] = int(statistics.median(x["masks"] for x in runs[n]))
                row["trees"][n]["rounds"] = runs[n]
            base = row["trees"][names[0]]
            for n in names[1:]:
                t = row["trees"][n]
                # ratio of per-round medians, paired by round (the pairs ran back to back)
                pairs = zip(runs[names[0]], runs[n], strict=True)
                t["segment_ratio"] = float(
                    np.median([b["segment_ms"] / a["segment_ms"] for a, b in pairs])
                )
                t["peak_ratio"] = t["peak_rss_mib"] / base["peak_rss_mib"]
            rows.append(row)
            cells = "; ".join(
                f"{n}: {t['masks']} masks, segment {t['segment_ms']:.1f} ms "
                f"(post {t['postprocess_ms']:.1f}), peak {t['peak_rss_mib']:.0f} MiB"
                + (f", segment x{t['segment_ratio']:.3f}" if "segment_ratio" in t else "")
                for n, t in row["trees"].items()
            )
            print(f"{size} ~{target} masks (conf {conf:.4f}): {cells}", flush=True)
    report = {
        "bundle": str(args.bundle),
        "precision": args.precision,
        "threads": args.threads,
        "runs": args.runs,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "full_boxes": args.full_boxes,
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

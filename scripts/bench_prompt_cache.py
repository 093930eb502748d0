"""Prompts on a kept frame vs segmenting it again, end to end through the service's HTTP API.

Runs ``fastsam-edge serve``'s :class:`~edge.service.runner.Service` in-process on one repeated
demo scene (640x480, ``model.conf`` lowered until the demo bundle gives about ``--masks``
masks), HTTP triggers only, and times from the client:

* ``POST /trigger {"save": false}`` (full JSON answer) and ``{"save": false, "masks": false}``
  (compact answer): capture + detector + every mask + output, the baseline;
* ``POST /prompt {"frame_id": F, "save": false}`` with a point, then a box, on the frame ``F``
  just triggered (kept detections: no detector run);
* with the text extra (ftfy, regex): a first text prompt on ``F`` (CLIP-encodes the top-K
  crops) and a second text with another word (encodes only its text).

Usage::

    PYTHONPATH=. python scripts/bench_prompt_cache.py [--reps 15] [--masks 100] [--json OUT]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.demo import demo_bundle
from edge.demo.scenes import COLORS, EVAL_SEED_START, SHAPES, generate_scene
from edge.segmenter import Segmenter
from edge.service.config import demo_config
from edge.service.runner import Service
from edge.tokenizer import missing_text_deps


def pick_conf(seg: Segmenter, image: np.ndarray, target: int) -> tuple[float, int]:
    """A score threshold giving about ``target`` masks (bisection on a log scale)."""
    lo, hi = -6.0, np.log10(0.4)
    best = (0.4, len(seg.segment(image, conf=0.4, max_det=300)))
    for _ in range(14):
        mid = (lo + hi) / 2
        n = len(seg.segment(image, conf=10**mid, max_det=300))
        if abs(n - target) < abs(best[1] - target):
            best = (10**mid, n)
        if abs(n - target) <= target * 0.05:
            break
        if n > target:
            lo = mid
        else:
            hi = mid
    return best


def post(port: int, path: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    conn.request("POST", path, data, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    raw = resp.read()
    ms = (time.perf_counter() - t0) * 1e3
    conn.close()
    doc = json.loads(raw)
    if resp.status != 200:
        raise RuntimeError(f"{path}: {resp.status} {doc}")
    return ms, doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--masks", type=int, default=100, help="target masks per frame")
    ap.add_argument("--seed", type=int, default=EVAL_SEED_START + 700)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    ap.add_argument("--json", type=Path, help="write the raw timings here")
    args = ap.parse_args()

    scene = generate_scene(args.seed, 640, 480)
    seg = Segmenter.load(demo_bundle(), threads=args.threads)
    conf, n_masks = pick_conf(seg, scene.image, args.masks)
    text = not missing_text_deps()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = demo_config(
            tmp,
            **{
                "source.seed": args.seed,
                "source.count": 1,
                "source.loop": True,
                "trigger.interval.enabled": False,
                "http.enabled": True,
                "http.port": 0,
                "model.conf": conf,
                "processing.max_masks": 0,
            },
        )
        svc = Service(cfg, segmenter=seg)
        thread = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
        thread.start()
        svc.ready.wait(120)
        port = svc.http.port
        k = int(np.argmax(scene.masks.sum(axis=(1, 2))))
        ys, xs = np.nonzero(scene.masks[k])
        point = {"type": "point", "data": [int(xs[len(xs) // 2]), int(ys[len(ys) // 2])]}
        box = {"type": "box", "data": [float(v) for v in scene.xyxy[k]]}
        words = [f"a {c} {s}" for c in COLORS for s in SHAPES]
        rows: dict[str, list[float]] = {}
        masks_seen = []
        if text:  # load CLIP once, outside the timings
            _, doc = post(port, "/trigger", {"save": False, "masks": False})
            post(
                port,
                "/prompt",
                {"frame_id": doc["frame_id"], "prompt": {"type": "text", "data": "warm up"}},
            )
        for r in range(args.reps):
            ms, doc = post(port, "/trigger", {"save": False, "masks": False})
            rows.setdefault("trigger (compact answer)", []).append(ms)
            ms, doc = post(port, "/trigger", {"save": False})
            rows.setdefault("trigger (full answer)", []).append(ms)
            masks_seen.append(doc["num_masks"])
            frame = doc["frame_id"]
            for name, prompt in (("point", point), ("box", box)):
                ms, got = post(port, "/prompt", {"frame_id": frame, "prompt": prompt})
                assert got["num_masks"] >= 1, got
                rows.setdefault(f"prompt {name} on the kept frame", []).append(ms)
            if text:
                first, second = words[(2 * r) % len(words)], words[(2 * r + 1) % len(words)]
                for name, word in (("first", first), ("second", second)):
                    body = {"frame_id": frame, "prompt": {"type": "text", "data": word}}
                    ms, got = post(port, "/prompt", body)
                    rows.setdefault(f"prompt text, {name} word on the frame", []).append(ms)
        cache = svc.prompt_cache
        cache_facts = (len(cache), cache.nbytes)
        svc.request_stop("bench")
        thread.join(60)

    med = {k: statistics.median(v) for k, v in rows.items()}
    p90 = {k: float(np.percentile(v, 90)) for k, v in rows.items()}
    base = med["trigger (full answer)"]
    base_c = med["trigger (compact answer)"]
    print(
        f"demo bundle {seg.manifest.name} ({seg.precision}, {seg.threads} threads), scene "
        f"{args.seed} 640x480, conf {conf:.2g}: {statistics.median(masks_seen):.0f} masks "
        f"(Python API: {n_masks}); {args.reps} reps; kept frames at the end: {cache_facts[0]}, "
        f"{cache_facts[1] / 2**20:.1f} MiB"
    )
    print()
    print("| request | median ms | p90 ms | / trigger (full) | / trigger (compact) |")
    print("|---|---:|---:|---:|---:|")
    for key in rows:
        print(
            f"| {key} | {med[key]:.1f} | {p90[key]:.1f} | {med[key] / base:.3f} | "
            f"{med[key] / base_c:.3f} |"
        )
    if text:
        second = med["prompt text, second word on the frame"]
        first = med["prompt text, first word on the frame"]
        print(f"\nsecond text / first text: {second / first:.3f}")
    else:
        print("\n(text rows skipped: the text extra (ftfy, regex) is not installed)")
    if args.json:
        args.json.write_text(
            json.dumps({"conf": conf, "masks": masks_seen, "rows": rows}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Text prompts: which prefilter keeps CLIP's all-masks choice at the cost of a few crops.

Two measurements:

1. **Agreement** (``--agreement BUNDLE...``): bundles with a *trained* CLIP on the demo world
   (the embedded demo bundle's tiny ViT; the MobileCLIP-family proxy of
   ``scripts/train_clip_demo.py --tower mci0``). Held-out scenes, one text per object
   (``"a {colour} {shape}"``); the reference is the all-masks choice (every mask with area >
   100 encoded as a crop, as FastSAM's reference). Each prefilter picks a subset of the
   candidates, the crop encoder chooses among it; agreement = how often that equals the
   reference. Prefilters: ``score@K`` (top-K by ``score * sqrt(area)``, the runtime's
   ``top_k``) and, for bundles with a dense encoder, ``dense@M`` (the M best masks by the
   frame's dense map, :mod:`edge.prefilter`). All crops of a frame are encoded once; every
   prefilter's choice is the argmax of the same crop similarities over its subset, so the
   numbers differ only by the subsets.
2. **Time** (``--timing BUNDLE``): a full-size tower (random weights are fine for time) on a
   FastSAM-s-architecture bundle: everything mode and a text prompt through
   ``Segmenter.segment`` side by side, interleaved in one process, per prefilter, one 640x480
   scene with ~100 masks; the text embedding is cached (a service repeating its prompt), the
   dense map and crops are computed every frame.

Writes ``<out>/text-prefilter.json`` and prints Markdown tables.

Example:
    python scripts/text_prefilter.py --agreement edge/assets/demo-bundle work/demo-mci0 \\
        --timing work/towers/s640-MobileCLIP2-S0 --out docs/bench
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from edge.demo.scenes import EVAL_SEED_START, generate_scene  # noqa: E402
from edge.prefilter import mask_embeddings  # noqa: E402
from edge.prompts import TextPrompt  # noqa: E402
from edge.segmenter import Segmenter  # noqa: E402
from edge.selection import TEXT_MIN_AREA, embed_text_candidates  # noqa: E402

SEEDS = EVAL_SEED_START + 850_000  # the held-out seeds of scripts/text_topk.py


def agreement(
    bundle: Path, scenes: int, busy: bool, ks: list[int], ms: list[int], threads: int
) -> dict[str, Any]:
    """Per prefilter, the fraction of texts whose choice equals the all-masks choice."""
    from tqdm import tqdm

    seg = Segmenter.load(bundle, precision="fp32", threads=threads)
    enc = seg.text_encoder()
    clip = enc.encoder
    dense = bool(getattr(clip, "has_dense", False))
    names = [f"score@{k}" for k in ks] + ([f"dense@{m}" for m in ms] if dense else [])
    same = dict.fromkeys(names, 0)
    crops = dict.fromkeys(names, 0)
    total = frames = masks = 0
    for s in tqdm(range(scenes), desc=f"{bundle.name} {'busy' if busy else 'demo'}"):
        kw = {"min_objects": 12, "max_objects": 20} if busy else {}
        sc = generate_scene(SEEDS + s + (100_000 if busy else 0), 320, 320, **kw)
        result = seg.segment(sc.image)
        texts = sorted({f"a {c} {sh}" for c, sh in zip(sc.colors, sc.shapes, strict=True)})
        emb = embed_text_candidates(result, sc.image, enc, top_k=None)
        cand = emb.candidates
        if len(cand) == 0 or not texts:
            continue
        frames += 1
        masks += len(cand)
        tf = enc.encode_text(texts)
        sims = tf @ emb.features.T  # (T, C) crop similarities
        ref = np.argmax(sims, axis=1)
        total += len(texts)
        area = result.area[cand]
        rank = np.argsort(
            -(result.confidence[cand].astype(np.float64) * np.sqrt(area)), kind="stable"
        )
        for k in ks:
            keep = np.sort(rank[:k])
            pick = keep[np.argmax(sims[:, keep], axis=1)]
            same[f"score@{k}"] += int((pick == ref).sum())
            crops[f"score@{k}"] += len(keep)
        if dense:
            dm = clip.encode_dense(np.ascontiguousarray(sc.image[:, :, ::-1]))
            ds = tf @ mask_embeddings(result.crops, cand, dm).T  # (T, C)
            order = np.argsort(-ds, axis=1, kind="stable")
            for m in ms:
                short = order[:, :m]  # per text
                pick = short[
                    np.arange(len(texts)), np.argmax(np.take_along_axis(sims, short, 1), 1)
                ]
                same[f"dense@{m}"] += int((pick == ref).sum())
                crops[f"dense@{m}"] += min(m, len(cand))  # per text (a service prompt)
    return {
        "bundle": str(bundle),
        "clip": clip.model,
        "scenes": scenes,
        "busy": busy,
        "texts": total,
        "masks_per_frame": round(masks / max(frames, 1), 1),
        "agreement": {n: round(same[n] / max(total, 1), 4) for n in names},
        "crops_per_frame": {n: round(crops[n] / max(frames, 1), 1) for n in names},
    }


def timing(
    bundles: list[Path], ks: list[int], ms: list[int], reps: int, threads: int, masks: int
) -> list[dict[str, Any]]:
    """Everything vs text per prefilter and bundle, interleaved, median ms over ``reps``.

    One 640x480 demo scene, the score threshold chosen (``edge.bench.run.choose_confs``) so
    that the detector gives about ``masks`` masks; detector and CLIP int8.
    """
    from edge.bench.run import choose_confs

    image = generate_scene(1_700_000, 640, 480).image
    prompt = TextPrompt("a red circle")
    segs, rows = [], []
    for bundle in bundles:
        conf = choose_confs(str(bundle), image, [masks], threads, "fp32")[masks]
        seg = Segmenter.load(bundle, precision="int8", threads=threads)
        seg.clip_precision = "int8"
        seg.segment(image, conf=conf, prompt=prompt)  # loads CLIP, caches the text embedding
        modes: dict[str, dict[str, Any]] = {"everything": {}}
        modes.update({f"score@{k}": {"text_prefilter": "score", "text_top_k": k} for k in ks})
        if seg.text_encoder().has_dense:
            modes.update(
                {f"dense@{m}": {"text_prefilter": "dense", "text_shortlist": m} for m in ms}
            )
        n = len(seg.segment(image, conf=conf))
        segs.append((seg, conf, modes, {name: [] for name in modes}))
        rows.append({"bundle": str(bundle), "clip": seg.text_encoder().encoder.model, "masks": n})
    for _ in range(reps + 1):  # round 0: warm-up (sessions, caches)
        for seg, conf, modes, times in segs:  # bundles and modes interleaved
            for name, cfg in modes.items():
                for key, value in cfg.items():
                    setattr(seg, key, value)
                t = time.perf_counter()
                seg.segment(image, conf=conf, prompt=None if name == "everything" else prompt)
                times[name].append((time.perf_counter() - t) * 1000)
    for row, (_, _, _, times) in zip(rows, segs, strict=True):
        med = {n: float(np.median(v[1:])) for n, v in times.items()}
        row.update(
            {
                "threads": threads,
                "reps": reps,
                "ms": {n: round(v, 1) for n, v in med.items()},
                "x_everything": {n: round(v / med["everything"], 2) for n, v in med.items()},
            }
        )
    return rows


def print_tables(report: dict[str, Any]) -> None:
    """Markdown: agreement per prefilter and bundle, then time per prefilter and bundle."""
    rows = report["agreement"]
    if rows:
        names = list(dict.fromkeys(n for r in rows for n in r["agreement"]))
        print("\n| CLIP | scenes | texts | masks/frame | " + " | ".join(names) + " |")
        print("|---|---|---:|---:|" + "---:|" * len(names))
        for r in rows:
            cells = " | ".join(
                f"{r['agreement'][n]:.3f}" if n in r["agreement"] else "-" for n in names
            )
            kind = "busy" if r["busy"] else "demo"
            print(f"| {r['clip']} | {kind} | {r['texts']} | {r['masks_per_frame']} | {cells} |")
    for r in report.get("timing", []):
        print(f"\n{r['clip']} ({r['masks']} masks, {r['threads']} threads, median of {r['reps']})")
        print("| mode | ms | x everything |\n|---|---:|---:|")
        for n, v in r["ms"].items():
            print(f"| {n} | {v:.0f} | {r['x_everything'][n]:.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agreement", type=Path, nargs="*", default=[], metavar="BUNDLE")
    ap.add_argument("--timing", type=Path, nargs="*", default=[], metavar="BUNDLE")
    ap.add_argument("--scenes", type=int, default=60)
    ap.add_argument("--ks", default="2,4,8,16,32")
    ap.add_argument("--ms", default="1,2,3,4,6,8")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--masks", type=int, default=100, help="timing scene: about this many masks")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    ks = [int(v) for v in args.ks.split(",")]
    ms = [int(v) for v in args.ms.split(",")]
    report: dict[str, Any] = {"agreement": [], "min_area": TEXT_MIN_AREA}
    for bundle in args.agreement:
        for busy in (False, True):
            row = agreement(bundle, args.scenes, busy, ks, ms, args.threads)
            report["agreement"].append(row)
            print(json.dumps(row))
    if args.timing:
        report["timing"] = timing(args.timing, ks, ms, args.reps, args.threads, args.masks)
        for row in report["timing"]:
            print(json.dumps(row))
    print_tables(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "text-prefilter.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from edge.demo.scenes import EVAL_SEED_START, generate_scene  # noqa: E402
from edge.prefilter import candidates_only, mask_embeddings  # noqa: E402
from edge.prompts import TextPrompt  # noqa: E402
from edge.segmenter import Segmenter  # noqa: E402
from edge.textmatch import TEXT_MIN_AREA, embed_text_candidates  # noqa: E402

SEEDS = EVAL_SEED_START + 850_000  # held-out seeds (issue 4's top-K measurements)


def _gt_labels(result: Any, cand: np.ndarray, scene: Any) -> list[str | None]:
    """Per candidate: the caption of the ground-truth object it covers (mask IoU >= 0.5)."""
    pairs = list(zip(scene.colors, scene.shapes, strict=True))
    out: list[str | None] = []
    for i in cand:
        m = result.crops[int(i)].dense(*result.image_hw)
        inter = (scene.masks & m).sum((1, 2))
        iou = inter / np.maximum((scene.masks | m).sum((1, 2)), 1)
        k = int(np.argmax(iou))
        out.append(f"a {pairs[k][0]} {pairs[k][1]}" if iou[k] >= 0.5 else None)
    return out


def agreement(
    bundle: Path,
    scenes: int,
    busy: bool,
    ks: list[int],
    ms: list[int],
    sides: list[int],
    threads: int,
) -> dict[str, Any]:
    """Per prefilter, how often its choice is the all-masks choice (``exact``) or a mask of an
    object with the same caption (``same_object``: a busy scene often has two red circles)."""
    from tqdm import tqdm

    seg = Segmenter.load(bundle, precision="fp32", threads=threads)
    enc = seg.text_encoder()
    clip = enc.encoder
    dense = bool(getattr(clip, "has_dense", False))
    names = [f"score@{k}" for k in ks]
    if dense:
        names += [f"dense{side}@{m}" for side in sides for m in ms]
    exact = dict.fromkeys(names, 0)
    same = dict.fromkeys(names, 0)
    total = frames = masks = ref_right = 0
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
        labels = _gt_labels(result, cand, sc)
        tf = enc.encode_text(texts)
        sims = tf @ emb.features.T  # (T, C) crop similarities
        ref = np.argmax(sims, axis=1)
        total += len(texts)
        ref_right += sum(labels[r] == t for r, t in zip(ref, texts, strict=True))
        prior = result.confidence[cand].astype(np.float64) * np.sqrt(result.area[cand])
        orders = {f"score@{k}": np.argsort(-prior, kind="stable")[None, :k] for k in ks}
        if dense:
            frame = candidates_only(sc.image, result.crops, cand)
            for side in sides:
                dm = clip.encode_dense(np.ascontiguousarray(frame[:, :, ::-1]), side)
                ds = tf @ mask_embeddings(result.crops, cand, dm).T  # (T, C)
                order = np.argsort(-ds, axis=1, kind="stable")
                orders.update({f"dense{side}@{m}": order[:, :m] for m in ms})
        for name in names:
            short = np.broadcast_to(orders[name], (len(texts), orders[name].shape[1]))
            best = np.argmax(np.take_along_axis(sims, short, 1), axis=1)
            pick = short[np.arange(len(texts)), best]
            exact[name] += int((pick == ref).sum())
            same[name] += sum(
                p == r or (labels[p] is not None and labels[p] == labels[r])
                for p, r in zip(pick, ref, strict=True)
            )
    n = max(total, 1)
    return {
        "bundle": str(bundle),
        "clip": clip.model,
        "scenes": scenes,
        "busy": busy,
        "texts": total,
        "masks_per_frame": round(masks / max(frames, 1), 1),
        "all_masks_choice_right_object": round(ref_right / n, 4),
        "agreement": {k: round(exact[k] / n, 4) for k in names},
        "same_object": {k: round(same[k] / n, 4) for k in names},
    }


def timing(
    bundles: list[Path],
    ks: list[int],
    ms: list[int],
    sides: list[int],
    reps: int,
    threads: int,
    masks: int,
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
        modes.update({f"score@{k}": {"prefilter": "score", "top_k": k} for k in ks})
        if seg.text_encoder().has_dense:
            modes.update(
                {
                    f"dense{side}@{m}": {"prefilter": "dense", "shortlist": m, "dense_side": side}
                    for side in sides
                    for m in ms
                }
            )
        n = len(seg.segment(image, conf=conf))
        segs.append((seg, conf, modes, {name: [] for name in modes}, seg.text))
        rows.append({"bundle": str(bundle), "clip": seg.text_encoder().encoder.model, "masks": n})
    for _ in range(reps + 1):  # round 0: warm-up (sessions, caches)
        for seg, conf, modes, times, base in segs:  # bundles and modes interleaved
            for name, cfg in modes.items():
                seg.text = replace(base, **cfg)  # TextOptions fields
                t = time.perf_counter()
                seg.segment(image, conf=conf, prompt=None if name == "everything" else prompt)
                times[name].append((time.perf_counter() - t) * 1000)
    for row, (_, _, _, times, _) in zip(rows, segs, strict=True):
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
        print(
            "\nsame object (the pick is the all-masks choice or shows an object with its caption)"
        )
        for r in rows:
            cells = " | ".join(
                f"{r['same_object'][n]:.3f}" if n in r["same_object"] else "-" for n in names
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
    ap.add_argument("--sides", default="320,480,640", help="dense input sizes (longer side)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--masks", type=int, default=100, help="timing scene: about this many masks")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    ks = [int(v) for v in args.ks.split(",")]
    ms = [int(v) for v in args.ms.split(",")]
    sides = [int(v) for v in args.sides.split(",")]
    report: dict[str, Any] = {"agreement": [], "min_area": TEXT_MIN_AREA}
    for bundle in args.agreement:
        for busy in (False, True):
            row = agreement(bundle, args.scenes, busy, ks, ms, sides, args.threads)
            report["agreement"].append(row)
            print(json.dumps(row))
    if args.timing:
        report["timing"] = timing(args.timing, ks, ms, sides, args.reps, args.threads, args.masks)
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

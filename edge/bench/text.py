"""What a text prompt costs on this board (``fastsam-edge bench --text-cost``).

Three numbers for the bundle at hand, each against everything mode on the same frame:

* **time** (a fresh process per bundle, :func:`time_text`): everything mode and a text prompt
  with a *new word each call* (the text tower runs every time, as for a user typing), then a
  **second word on the same frame** (``Segmenter.select`` on the kept detections: the dense map
  and the crops already encoded are reused), new, and one whose embedding is cached (asked
  before: only the crops of its shortlist not yet encoded run), interleaved, median of
  ``runs`` after a warm-up;
  the process's peak RSS (``VmHWM``) at the end is the text pipeline's, sessions included;
* **agreement** (:func:`text_agreement`): on busy demo scenes (12-20 objects), how often the
  runtime's text choice (its default prefilter) is the all-masks choice (every mask over 100 px
  encoded, the reference's rule). It needs a detector and CLIP trained on the demo world (the
  demo bundle, or the MobileCLIP-family proxy of ``scripts/train_clip_demo.py --tower mci0``):
  on a bundle with random weights it measures nothing, so it runs on ``agreement_bundle``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np

from edge.bench.system import peak_rss_mb
from edge.demo.scenes import EVAL_SEED_START, generate_scene
from edge.errors import BundleError

AGREEMENT_SEED = EVAL_SEED_START + 950_000
"""First seed of the busy agreement scenes (held out from training and other benches)."""
BUSY = {"min_objects": 12, "max_objects": 20}
"""Objects per busy demo scene."""
TEXT_TIME_BUDGET = 3.0
"""Issue 27's bound on a text prompt (new word), in everything-mode times."""
SECOND_WORD_BUDGET = 0.3
"""Its bound on a second word on the same frame."""


def _words(n: int) -> list[str]:
    colours = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
    shapes = ("circle", "square", "triangle", "star", "ring", "cross", "bar", "blob")
    return [f"a {colours[i % 8]} {shapes[(i // 8) % 8]} number {i}" for i in range(n)]


def time_text(
    bundle: str,
    image: np.ndarray,
    conf: float,
    precision: str,
    threads: int,
    runs: int,
    warmup: int = 1,
) -> dict[str, Any]:
    """Everything mode vs a new word vs a second word on the same frame, in this process.

    Returns:
        Medians in ms, their ratios to everything mode, the mask count and this process's
        peak RSS in MiB (call it in a fresh process: :func:`measure_text_cost`).
    """
    from edge.prompts import TextPrompt
    from edge.segmenter import Segmenter

    t0 = time.perf_counter()
    seg = Segmenter.load(bundle, precision=precision, threads=threads)
    if seg.manifest.clip is None:
        raise BundleError(f"--text-cost: {bundle!r} has no CLIP (export with --clip MODEL)")
    if precision in seg.manifest.clip.precisions:
        seg.clip_precision = precision  # CLIP at the detector's precision, as the bench
    seg.text = replace(seg.text, threshold=None)  # the pipeline's cost, whatever the match
    load_ms = (time.perf_counter() - t0) * 1e3
    n = warmup + runs
    words = iter(_words(4 * n))
    seen = [next(words) for _ in range(n)]
    seg.text_encoder().encode_text(seen)  # texts asked before (cached embeddings)
    times: dict[str, list[float]] = {k: [] for k in ("everything", "text", "second_word")}
    times["second_word_seen"] = []
    masks = 0
    for i in range(n):
        ta = time.perf_counter()
        masks = len(seg.segment(image, conf=conf))
        tb = time.perf_counter()
        seg.segment(image, conf=conf, prompt=TextPrompt(next(words)))
        tc = time.perf_counter()
        dets = seg.detect(image, conf=conf)
        seg.select(dets, TextPrompt(next(words)))
        td = time.perf_counter()
        seg.select(dets, TextPrompt(next(words)))
        te = time.perf_counter()
        seg.select(dets, TextPrompt(seen[i]))
        tf = time.perf_counter()
        if i >= warmup:
            times["everything"].append((tb - ta) * 1e3)
            times["text"].append((tc - tb) * 1e3)
            times["second_word"].append((te - td) * 1e3)
            times["second_word_seen"].append((tf - te) * 1e3)
    med = {k: float(np.median(v)) for k, v in times.items()}
    enc = seg.text_encoder().encoder
    return {
        "bundle": bundle,
        "clip": getattr(enc, "model", ""),
        "clip_precision": getattr(enc, "precision", ""),
        "prefilter": seg.text.prefilter,
        "dense": bool(getattr(enc, "has_dense", False)),
        "masks": masks,
        "runs": runs,
        "threads": threads,
        "load_ms": round(load_ms, 1),
        "ms": {k: round(v, 1) for k, v in med.items()},
        "x_everything": {k: round(v / med["everything"], 3) for k, v in med.items()},
        "peak_rss_mib": round(peak_rss_mb(), 1),
    }


def measure_text_cost(
    bundle: str,
    image_path: str,
    conf: float,
    precision: str,
    threads: int,
    runs: int,
    warmup: int = 1,
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """:func:`time_text` in a fresh Python process (its peak RSS is the text pipeline's only).

    Raises:
        BundleError: The child failed (its last output lines are quoted).
    """
    cmd = [sys.executable, "-m", "edge.bench.text", bundle, image_path, str(conf), precision]
    cmd += [str(threads), str(runs), str(warmup)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise BundleError(f"--text-cost: the timing process failed: {tail}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def text_agreement(bundle: str, scenes: int, threads: int, size: int = 320) -> dict[str, Any]:
    """How often the runtime's text choice is the all-masks choice on busy demo scenes.

    One text per distinct caption of a scene (``"a {colour} {shape}"``); the runtime's choice
    uses the bundle's default text options (dense prefilter where the CLIP has a dense map,
    else the top-K by score), the reference encodes every mask over 100 px.

    Returns:
        ``exact`` (same mask), the texts, scenes and masks per frame.
    """
    from edge.segmenter import Segmenter
    from edge.textmatch import dense_text_matches, score_text_matches, use_dense

    seg = Segmenter.load(bundle, precision="fp32", threads=threads)
    enc = seg.text_encoder()
    opts = seg.text
    same = total = masks = 0
    for s in range(scenes):
        sc = generate_scene(AGREEMENT_SEED + s, size, size, **BUSY)
        dets = seg.detect(sc.image)
        texts = sorted({f"a {c} {sh}" for c, sh in zip(sc.colors, sc.shapes, strict=True)})
        if not len(dets) or not texts:
            continue
        feats = enc.encode_text(texts)
        ref = score_text_matches(dets, sc.image, enc, feats, None, opts.crop)
        if use_dense(enc, opts):
            got = dense_text_matches(
                dets, sc.image, enc, feats, opts.shortlist, opts.crop, opts.dense_side
            )
        else:
            got = score_text_matches(dets, sc.image, enc, feats, opts.top_k, opts.crop)
        masks += len(dets)
        total += len(texts)
        same += sum(a.index == b.index for a, b in zip(got, ref, strict=True))
    return {
        "bundle": bundle,
        "clip": getattr(enc.encoder, "model", ""),
        "prefilter": "dense" if use_dense(enc, opts) else f"score@{opts.top_k}",
        "scenes": scenes,
        "texts": total,
        "masks_per_frame": round(masks / max(scenes, 1), 1),
        "exact": round(same / max(total, 1), 4),
    }


def text_markdown(report: dict[str, Any]) -> str:
    """The text rows as a Markdown table (time ratios, peak RSS, agreement)."""
    t = report["time"]
    x = t["x_everything"]
    lines = [
        f"Text prompt cost: {t['bundle']} (CLIP {t['clip']} {t['clip_precision']}, "
        f"{'dense' if t['dense'] else 'score'} prefilter), {t['masks']} masks, "
        f"{t['threads']} threads, median of {t['runs']}",
        "",
        "| row | ms | x everything | budget | peak RSS |",
        "|---|---:|---:|---|---:|",
        f"| everything | {t['ms']['everything']:.1f} | 1.00 | - | |",
        f"| text, new word each call | {t['ms']['text']:.1f} | {x['text']:.2f} | "
        f"<= {TEXT_TIME_BUDGET:g}x: {'met' if x['text'] <= TEXT_TIME_BUDGET else 'missed'} | "
        f"{t['peak_rss_mib']:.0f} MiB |",
        f"| second word, same frame | {t['ms']['second_word']:.1f} | {x['second_word']:.2f} | "
        f"<= {SECOND_WORD_BUDGET:g}x: "
        f"{'met' if x['second_word'] <= SECOND_WORD_BUDGET else 'missed'} | |",
    ]
    if "second_word_seen" in t["ms"]:
        lines.append(
            f"| second word, same frame, text seen before | {t['ms']['second_word_seen']:.1f} | "
            f"{x['second_word_seen']:.2f} | - | |"
        )
    a = report.get("agreement")
    if a:
        lines += [
            "",
            f"Agreement with the all-masks choice, busy demo scenes ({a['bundle']}, CLIP "
            f"{a['clip']}, {a['prefilter']}): **{a['exact']:.3f}** over {a['texts']} texts, "
            f"{a['scenes']} scenes, {a['masks_per_frame']} masks per frame",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The timing child: ``python -m edge.bench.text BUNDLE IMAGE CONF PRECISION THREADS RUNS
    WARMUP`` prints one JSON line."""
    from edge.io import read_image

    bundle, image_path, conf, precision, threads, runs, warmup = (argv or sys.argv[1:])[:7]
    out = time_text(
        bundle, read_image(image_path), float(conf), precision, int(threads), int(runs),
        int(warmup),
    )  # fmt: skip
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What an open vocabulary costs: ``fastsam-edge bench --vocab-sizes 1,5,20``.

One YOLOE bundle, one frame, K words (K = 1, 5, 20, ...), timed side by side in one process and
interleaved (load noise hits every row alike), against K = 1 and against a FastSAM bundle's
everything mode at the same input size; plus what a *new* word costs (one text-tower call, the
tower loaded on demand). Everything here runs the public API: ``Segmenter.set_vocabulary`` and
``Segmenter.segment``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge.segmenter import Segmenter

WORDS = (
    "person", "car", "dog", "cat", "bicycle", "bus", "truck", "bird", "chair", "cup",
    "bottle", "laptop", "potted plant", "traffic light", "backpack", "umbrella", "handbag",
    "suitcase", "bench", "book", "clock", "vase", "teddy bear", "toothbrush",
)  # fmt: skip
"""Words of the vocabularies timed (the first K)."""
NEW_WORDS = ("a red mug", "a parcel on the doorstep", "a fox", "a wheelie bin", "a ladder")
"""Words encoded once each to time a new word (never in :data:`WORDS`)."""


def _vocabulary(seg: Segmenter, k: int, words: tuple[str, ...]) -> list[str]:
    names = list(words[:k])
    names += [f"word {i}" for i in range(len(names), k)]
    return names


def _set(seg: Segmenter, names: list[str], random_words: bool) -> None:
    if random_words:
        assert seg.yoloe is not None
        rng = np.random.default_rng(len(names))
        raw = rng.standard_normal((len(names), seg.yoloe.embed_dim)).astype(np.float32)
        seg.set_vocabulary(names, raw / np.linalg.norm(raw, axis=1, keepdims=True))
    else:
        seg.set_vocabulary(names)


def _frame_ms(seg: Segmenter, image: np.ndarray) -> tuple[float, int]:
    t0 = time.perf_counter()
    result = seg.segment(image)
    return (time.perf_counter() - t0) * 1e3, len(result)


def run_vocab_bench(
    yoloe_bundle: str,
    image: np.ndarray,
    sizes: list[int],
    precision: str | None = None,
    threads: int = 2,
    runs: int = 10,
    warmup: int = 2,
    fastsam_bundle: str | None = None,
    fastsam_precision: str | None = None,
) -> dict[str, Any]:
    """Time a frame per vocabulary size (and FastSAM everything mode), then new words.

    Args:
        yoloe_bundle: A YOLOE bundle.
        image: The (H, W, 3) BGR frame.
        sizes: Vocabulary sizes K; 1 is added when missing (the baseline).
        precision: Detector precision (default the bundle's).
        threads: onnxruntime threads.
        runs: Timed frames per row (after ``warmup``), rows interleaved.
        warmup: Untimed frames per row first.
        fastsam_bundle: A FastSAM bundle for the everything-mode row (same input size).
        fastsam_precision: Its precision (default: ``precision``).

    Returns:
        ``{"rows": [...], "new_word": {...} | None, "words": "text tower" | "random", ...}``;
        each row has ``k``, ``median_ms``, ``masks``, ``vs_k1`` and ``vs_fastsam``.
    """
    sizes = sorted({1, *sizes})
    seg = Segmenter.load(yoloe_bundle, precision=precision, threads=threads)
    if seg.yoloe is None:
        from edge.errors import InputError

        raise InputError(f"--vocab-sizes: {yoloe_bundle!r} is not a YOLOE bundle")
    tower = seg.yoloe.text is not None
    rows: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    segs: dict[str, tuple[Segmenter, list[str] | None]] = {
        f"k={k}": (seg, _vocabulary(seg, k, WORDS)) for k in sizes
    }
    if fastsam_bundle is not None:
        fast = Segmenter.load(fastsam_bundle, precision=fastsam_precision or precision,
                              threads=threads)  # fmt: skip
        segs["fastsam"] = (fast, None)
    new_word = None
    if tower:  # encode the timed vocabularies first (cached): rows time the frame only
        seg.encode_words(list(WORDS))
        t0 = time.perf_counter()
        seg.encode_words([NEW_WORDS[0]])  # the tower loads on demand: first word pays it
        first = (time.perf_counter() - t0) * 1e3
        seg.text_tower_keep = True
        seg._tower = None  # noqa: SLF001 - time the steady state with a kept session
        seg.encode_words([NEW_WORDS[1]])
        times = []
        for word in NEW_WORDS[2:]:
            t0 = time.perf_counter()
            seg.encode_words([word])
            times.append((time.perf_counter() - t0) * 1e3)
        new_word = {
            "first_ms": round(first, 1),
            "warm_ms": round(float(np.median(times)), 1),
            "precision": seg.text_tower_precision or seg.yoloe.text.default_precision,
        }
    for name, (s, names) in segs.items():
        if names is not None:
            _set(s, names, not tower)
        for _ in range(warmup):
            _frame_ms(s, image)
        rows[name] = []
    for _ in range(runs):
        for name, (s, names) in segs.items():
            if names is not None:
                _set(s, names, not tower)  # cached words: only the fold is redone
            ms, n = _frame_ms(s, image)
            rows[name].append(ms)
            counts[name] = n
    base = float(np.median(rows["k=1"]))
    fast_ms = float(np.median(rows["fastsam"])) if "fastsam" in rows else None
    out_rows = []
    for name, values in rows.items():
        med = float(np.median(values))
        out_rows.append(
            {
                "row": name,
                "median_ms": round(med, 1),
                "masks": counts[name],
                "vs_k1": round(med / base, 3),
                "vs_fastsam": None if fast_ms is None else round(med / fast_ms, 3),
            }
        )
    return {
        "bundle": yoloe_bundle,
        "fastsam_bundle": fastsam_bundle,
        "image_hw": list(image.shape[:2]),
        "threads": threads,
        "precision": seg.precision,
        "runs": runs,
        "words": "text tower" if tower else "random embeddings",
        "rows": out_rows,
        "new_word": new_word,
    }


def vocab_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    h, w = report["image_hw"]
    lines = [
        f"Open-vocabulary cost: {report['bundle']} ({report['precision']}, "
        f"{report['threads']} threads, {w}x{h} frame, median of {report['runs']}, words: "
        f"{report['words']})",
        "",
        "| row | median ms | masks | vs K=1 | vs FastSAM everything |",
        "|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        vs_f = "" if r["vs_fastsam"] is None else f"{r['vs_fastsam']:.2f}x"
        lines.append(
            f"| {r['row']} | {r['median_ms']:.1f} | {r['masks']} | {r['vs_k1']:.2f}x | {vs_f} |"
        )
    nw = report.get("new_word")
    if nw:
        lines += [
            "",
            f"New word (text tower {nw['precision']}): {nw['first_ms']:.1f} ms the first time "
            f"(session created), {nw['warm_ms']:.1f} ms with the session kept",
        ]
    return "\n".join(lines) + "\n"

"""Text-prompt threshold calibration: where a CLIP's "matches" and "does not match" separate.

CLIP similarities have no universal scale (OpenAI's ViT-B/32 puts matches near 0.3, the demo
CLIP elsewhere), so a text threshold is measured per bundle: for images with known words (words
that name something in the image, and words that do not), take each word's best-mask similarity
(what a text prompt would select) and choose the threshold that best separates the two groups
(highest balanced accuracy, midway between neighbouring scores). The result goes into
``bundle.json`` as ``clip.text_threshold`` (the default of ``Segmenter.text_threshold``) and
``clip.text_threshold_calibration`` (how it was measured).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.errors import InputError

WORDS_FILE = "words.json"
"""Calibration folder manifest: ``{"images": {"a.jpg": ["a mug", ...]}, "negatives": [...]}``."""


@dataclass(frozen=True)
class CalibrationSample:
    """One image and its words.

    Attributes:
        image: (H, W, 3) uint8 BGR image.
        positives: Words naming something in the image.
        negatives: Words naming nothing in the image.
        name: For messages.
    """

    image: NDArray[np.uint8]
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    name: str = ""


def best_similarities(seg: Any, image: NDArray[np.uint8], words: Sequence[str]) -> list[float]:
    """Best-mask CLIP similarity of each word on one image (NaN: no candidate mask).

    Args:
        seg: A loaded ``edge.segmenter.Segmenter`` with CLIP.
        image: The image.
        words: Text prompts.
    """
    from edge.prompts import TextPrompt

    if not words:
        return []
    # threshold -1 accepts every best mask, so each prompt reports its similarity
    result = seg.segment(image, prompt=[TextPrompt(w, threshold=-1.0) for w in words])
    scores = {s["prompt_index"]: s["similarity"] for s in result.metadata.get("text_scores", [])}
    return [float(scores.get(k, float("nan"))) for k in range(len(words))]


def choose_threshold(positive: Sequence[float], negative: Sequence[float]) -> dict[str, Any]:
    """The threshold with the best balanced accuracy (mean of accept and reject rates).

    Candidates are midpoints between neighbouring distinct scores; among equally good ones
    the middle of the best run is taken (the widest margin).

    Returns:
        ``threshold``, ``balanced_accuracy``, ``true_accept``, ``true_reject`` (rates at the
        threshold) and the counts and means of both groups.

    Raises:
        InputError: A group is empty.
    """
    pos = np.asarray([v for v in positive if np.isfinite(v)], dtype=np.float64)
    neg = np.asarray([v for v in negative if np.isfinite(v)], dtype=np.float64)
    if not len(pos) or not len(neg):
        raise InputError(
            f"text calibration: need matching and non-matching words with a score, got "
            f"{len(pos)} matching and {len(neg)} non-matching"
        )
    values = np.unique(np.concatenate([pos, neg]))
    cands = np.concatenate([[values[0] - 1e-3], (values[1:] + values[:-1]) / 2])
    accept = (pos[None, :] >= cands[:, None]).mean(axis=1)
    reject = (neg[None, :] < cands[:, None]).mean(axis=1)
    bal = (accept + reject) / 2
    best = np.flatnonzero(bal >= bal.max() - 1e-12)
    k = int(best[len(best) // 2])
    return {
        "threshold": round(float(cands[k]), 4),
        "balanced_accuracy": round(float(bal[k]), 4),
        "true_accept": round(float(accept[k]), 4),
        "true_reject": round(float(reject[k]), 4),
        "matching": {"count": int(len(pos)), "mean": round(float(pos.mean()), 4)},
        "non_matching": {"count": int(len(neg)), "mean": round(float(neg.mean()), 4)},
    }


def calibrate(seg: Any, samples: Iterable[CalibrationSample]) -> dict[str, Any]:
    """Measure a text threshold on samples (see the module docstring).

    Returns:
        :func:`choose_threshold`'s dict plus ``images``.
    """
    pos: list[float] = []
    neg: list[float] = []
    images = 0
    for s in samples:
        sims = best_similarities(seg, s.image, [*s.positives, *s.negatives])
        pos += sims[: len(s.positives)]
        neg += sims[len(s.positives) :]
        images += 1
    return {**choose_threshold(pos, neg), "images": images}


def load_samples(folder: str | Path) -> list[CalibrationSample]:
    """Samples from a folder of images plus :data:`WORDS_FILE`.

    ``words.json``: ``{"images": {"kitchen.jpg": ["a mug", "a kettle"], ...}, "negatives":
    ["a dog", ...]}``. An image's non-matching words are ``negatives`` plus every other image's
    words that it does not list (so list everything visible that other images name).

    Raises:
        InputError: Missing or malformed ``words.json``, or an unreadable image.
    """
    from edge.io import read_image

    folder = Path(folder)
    path = folder / WORDS_FILE
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"--calibrate-text: cannot read {str(path)!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise InputError(f"--calibrate-text: {str(path)!r} is not valid JSON: {exc}") from None
    images = spec.get("images") if isinstance(spec, dict) else None
    extra = spec.get("negatives", []) if isinstance(spec, dict) else None
    if not isinstance(images, dict) or not images or not isinstance(extra, list):
        raise InputError(
            f"--calibrate-text: {str(path)!r} must hold "
            '{"images": {"file.jpg": ["word", ...], ...}, "negatives": ["word", ...]}'
        )
    every = {str(w) for words in images.values() for w in words} | {str(w) for w in extra}
    out = []
    for name, words in images.items():
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise InputError(f"--calibrate-text: images[{name!r}]: expected a list of words")
        neg = sorted(every - set(words))
        out.append(CalibrationSample(read_image(folder / name), tuple(words), tuple(neg), name))
    return out


def demo_samples(count: int = 40, seed: int | None = None) -> list[CalibrationSample]:
    """Held-out demo scenes with their words: each scene's objects (matching) and, as
    non-matching words, colour/shape pairs absent from it plus words outside the demo world."""
    from edge.demo.scenes import COLORS, EVAL_SEED_START, SHAPES, generate_scene

    start = EVAL_SEED_START + 850_000 if seed is None else seed
    rng = np.random.default_rng(start)
    outside = ("a dog", "a car", "a photo of a cat", "a tree", "a person")
    samples = []
    for k in range(count):
        sc = generate_scene(start + k, 320, 320)
        present = set(sc.prompts)
        absent = [f"a {c} {s}" for c in COLORS for s in SHAPES if f"a {c} {s}" not in present]
        picks = [absent[i] for i in rng.choice(len(absent), size=4, replace=False)]
        negatives = (*picks, outside[k % len(outside)])
        samples.append(
            CalibrationSample(sc.image, tuple(sorted(present)), negatives, f"scene {sc.seed}")
        )
    return samples


def write_threshold(bundle_dir: str | Path, measured: dict[str, Any], source: str) -> Path:
    """Store a measured threshold in ``bundle.json`` (``clip.text_threshold`` and
    ``clip.text_threshold_calibration``), atomically; file hashes are untouched.

    Raises:
        InputError: The bundle has no CLIP section.
    """
    from edge.bundle import MANIFEST_NAME, NO_CLIP_HINT, read_manifest
    from edge.io import atomic_write_bytes

    path = Path(bundle_dir) / MANIFEST_NAME
    read_manifest(bundle_dir)  # a valid bundle before we touch it
    doc = json.loads(path.read_text(encoding="utf-8"))
    clip = doc.get("clip")
    if not isinstance(clip, dict) or not clip:
        raise InputError(f"text calibration: {str(bundle_dir)!r}: {NO_CLIP_HINT}")
    clip["text_threshold"] = measured["threshold"]
    clip["text_threshold_calibration"] = {**measured, "source": source}
    # indent 2 as the exporter writes it, so the diff is the two keys
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    read_manifest(bundle_dir)  # still loads
    return path

"""The embedded open-vocabulary demo (``demo-yoloe``): shipped, small, and it names things.

A YOLOE-v8n-seg trained here on the demo world (``scripts/train_yoloe_demo.py``) with the demo
CLIP's text tower: words typed at runtime are encoded offline by the bundle's own tower. The
quality floors sit well below what the shipped model measured (docs/benchmarks.md, "The demo
YOLOE") on scenes it never saw, so a broken export, decode or tokenizer fails them.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge import Segmenter
from edge.bundle import read_manifest
from edge.demo import DEMO_BUNDLES, demo_bundle
from edge.demo.scenes import COLORS, EVAL_SEED_START, iter_scenes
from edge.metrics import mask_iou_matrix

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENES = 12
SEED = EVAL_SEED_START + 50_000  # held out: the training used seeds < 900_100


def _training_script():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(
        "train_yoloe_demo", REPO_ROOT / "scripts" / "train_yoloe_demo.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRAINING = _training_script()


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    return Segmenter.load(demo_bundle("demo-yoloe"), threads=2)


def _tally(seg: Segmenter, words: list[str], truth: str) -> tuple[float, float, float]:
    """Recall (IoU >= 0.5, any label) and label accuracy of the objects whose word is in
    ``words``, and precision of the masks (right word on some object), over held-out scenes."""
    seg.set_vocabulary(words)
    objects = found = right = masks = true = 0
    for scene in iter_scenes(SEED, SCENES):
        gt = list(scene.colors if truth == "colour" else scene.shapes)
        if truth == "phrase":
            gt = [f"{c} {s}" for c, s in zip(scene.colors, scene.shapes, strict=True)]
        res = seg.segment(scene.image)
        labels = res.labels
        iou = mask_iou_matrix(scene.masks, res.mask) if len(res) else np.zeros((len(gt), 0))
        for k, word in enumerate(gt):
            if word not in words:
                continue
            objects += 1
            if iou.shape[1] and iou[k].max() >= 0.5:
                found += 1
                right += labels[int(iou[k].argmax())] == word
        for j, label in enumerate(labels):
            masks += 1
            true += any(iou[k, j] >= 0.5 and gt[k] == label for k in range(len(gt)))
    return found / objects, right / max(found, 1), true / max(masks, 1)


def test_shipped_small_and_offline() -> None:
    bundle = demo_bundle("demo-yoloe")
    assert DEMO_BUNDLES["demo-yoloe"] == bundle
    size = sum(f.stat().st_size for f in bundle.iterdir())
    assert size <= 15 * 2**20, f"{size / 2**20:.1f} MB"
    m = read_manifest(bundle)
    assert m.yoloe is not None and m.yoloe.embed_dim == 64
    assert m.precisions == ("int8",)  # the verified int8 detector alone keeps it small
    assert m.yoloe.text is not None  # words typed at runtime need no download
    assert m.quantization is not None and m.quantization.ok


@pytest.mark.parametrize(
    ("vocabulary", "truth", "recall", "accuracy", "precision"),
    [
        # the default: all 63 phrases (measured on 100 scenes: 0.958 / 0.905 / 0.901)
        ("default", "phrase", 0.85, 0.8, 0.8),
        # the 9 combinations no training scene held, typed at runtime (0.949 / 1.0; its
        # precision is low by design: other objects take the nearest of only 9 words)
        ("held_out", "phrase", 0.8, 0.85, 0.0),
        # bare colour words were never trained: few found, but rightly (0.248 / 1.0 / 0.993)
        ("colours", "colour", 0.08, 0.85, 0.85),
    ],
)
def test_labels_on_held_out_scenes(
    seg: Segmenter, vocabulary: str, truth: str, recall: float, accuracy: float,
    precision: float,
) -> None:  # fmt: skip
    words = {
        "default": list(read_manifest(demo_bundle("demo-yoloe")).yoloe.vocabulary),
        "held_out": list(TRAINING.HELD_OUT),
        "colours": list(COLORS),
    }[vocabulary]
    got = _tally(seg, words, truth)
    assert seg.vocabulary == tuple(words)  # encoded by the bundle's tower: no download
    floors = (recall, accuracy, precision)
    assert all(g >= t for g, t in zip(got, floors, strict=True)), f"measured {got}, {floors}"


def test_default_vocabulary_labels_the_json(seg: Segmenter, tmp_path: Path) -> None:
    m = read_manifest(demo_bundle("demo-yoloe"))
    assert m.yoloe is not None and len(m.yoloe.vocabulary) >= 1
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "serve", "--demo", "--bundle", "demo-yoloe",
         "--max-frames", "2", "--out", str(out), "--log-level", "error"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    assert results
    labels = {a.get("label") for r in results for a in r["masks"]}
    assert labels and labels <= set(m.yoloe.vocabulary), labels

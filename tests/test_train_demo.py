"""Tests for scripts/train_demo.py: label and metric helpers (numpy only), smoke training."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from edge.demo.scenes import iter_scenes
from edge.metrics import SegEvalAccumulator, best_iou_per_gt, mask_iou_matrix, recall_at_iou

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "train_demo.py"


@pytest.fixture(scope="module")
def train_demo() -> ModuleType:
    """The script as a module (importing it needs numpy/OpenCV only; torch is imported lazily)."""
    spec = importlib.util.spec_from_file_location("train_demo", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_iou_matrix_values() -> None:
    a = _box(10, 10, 0, 4, 0, 4)  # 16 px
    b = _box(10, 10, 0, 4, 2, 6)  # 16 px, overlap 8 -> IoU 8/24
    c = _box(10, 10, 6, 10, 6, 10)
    iou = mask_iou_matrix(np.stack([a, c]), np.stack([a, b, np.zeros_like(a)]))
    assert iou.shape == (2, 3) and iou.dtype == np.float64
    np.testing.assert_allclose(iou, [[1.0, 8 / 24, 0.0], [0.0, 0.0, 0.0]])


def test_empty_inputs() -> None:
    gt = np.stack([_box(8, 8, 0, 2, 0, 2)])
    none = np.zeros((0, 8, 8), dtype=bool)
    assert mask_iou_matrix(gt, none).shape == (1, 0)
    assert mask_iou_matrix(none, gt).shape == (0, 1)
    np.testing.assert_array_equal(best_iou_per_gt(gt, none), [0.0])
    assert recall_at_iou(gt, none) == (0, 1)
    assert recall_at_iou(none, gt) == (0, 0)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        mask_iou_matrix(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 5), bool))


def test_recall_threshold_and_reuse() -> None:
    gt = np.stack([_box(20, 20, 0, 10, 0, 10), _box(20, 20, 10, 20, 10, 20)])
    pred = np.stack([_box(20, 20, 0, 10, 0, 6), _box(20, 20, 10, 20, 10, 14)])  # IoU .6, .4
    assert recall_at_iou(gt, pred, 0.5) == (1, 2)
    assert recall_at_iou(gt, pred, 0.4) == (2, 2)
    assert recall_at_iou(gt, pred, 0.61) == (0, 2)


def test_accumulator_summary() -> None:
    acc = SegEvalAccumulator()
    gt = np.stack([_box(100, 100, 0, 50, 0, 50), _box(100, 100, 90, 95, 90, 95)])
    pred = np.stack([gt[0], _box(100, 100, 60, 70, 0, 10)])  # one hit, one stray
    best = acc.add(gt, pred)
    np.testing.assert_allclose(best, [1.0, 0.0])
    acc.add(gt[:1], np.zeros((0, 100, 100), bool))
    s = acc.summary()
    assert s["images"] == 2 and s["instances"] == 3
    assert s["recall"] == pytest.approx(1 / 3)
    assert s["mean_best_iou"] == pytest.approx(1 / 3)
    assert s["predictions_per_image"] == pytest.approx(1.0)
    assert s["unmatched_predictions"] == 1
    assert s["small"]["instances"] == 1 and s["large"]["instances"] == 2


@pytest.mark.parametrize(("width", "height"), [(320, 320), (480, 360)])
def test_polygon_labels_reproduce_masks(train_demo: ModuleType, width: int, height: int) -> None:
    """Polygons (joined multi-part/holed contours) rasterise back to the ground-truth masks."""
    n_multi = 0
    for scene in iter_scenes(0, 80, width=width, height=height):
        for m in scene.masks:
            contours, _ = cv2.findContours(
                m.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE
            )
            n_multi += len(contours) > 1
            poly = train_demo.mask_to_polygon(m)
            assert poly is not None and poly.ndim == 2 and poly.shape[1] == 2 and len(poly) >= 3
            r = np.zeros(m.shape, np.uint8)
            cv2.fillPoly(r, [poly], 1)
            iou = mask_iou_matrix(m[None], r[None].astype(bool))[0, 0]
            assert iou >= 0.95
    assert n_multi >= 1  # the joining path is exercised


def test_polygon_two_parts_and_hole(train_demo: ModuleType) -> None:
    m = np.zeros((40, 60), dtype=bool)
    m[5:35, 5:25] = True
    m[15:25, 12:18] = False  # hole
    m[10:20, 40:55] = True  # second part
    poly = train_demo.mask_to_polygon(m)
    r = np.zeros(m.shape, np.uint8)
    cv2.fillPoly(r, [poly], 1)
    assert not r[18, 15]  # hole stays empty
    assert r[15, 47]  # second part is filled
    assert mask_iou_matrix(m[None], r[None].astype(bool))[0, 0] >= 0.95
    assert train_demo.mask_to_polygon(np.zeros((5, 5), bool)) is None


def test_label_lines_format(train_demo: ModuleType) -> None:
    scene = next(iter_scenes(3, 1, width=480, height=360))
    lines = train_demo.label_lines(scene.masks)
    assert len(lines) == len(scene)
    for line in lines:
        vals = line.split()
        assert vals[0] == "0" and len(vals) % 2 == 1 and len(vals) >= 7
        xy = np.array(vals[1:], dtype=float)
        assert (xy >= 0).all() and (xy <= 1).all()


def test_label_lines_class_ids(train_demo: ModuleType) -> None:
    scene = next(iter_scenes(3, 1, width=320, height=320))
    ids = list(range(7, 7 + len(scene)))
    lines = train_demo.label_lines(scene.masks, ids)
    assert [int(line.split()[0]) for line in lines] == ids
    with pytest.raises(ValueError, match="classes: expected"):
        train_demo.label_lines(scene.masks, ids[:-1])


@pytest.mark.export
def test_smoke_training(tmp_path: Path) -> None:
    """``--smoke`` trains one tiny epoch offline and leaves a weights file (CI, < 3 min)."""
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    env = dict(os.environ, YOLO_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    weights = tmp_path / "runs" / "fastsam-demo" / "weights"
    assert (weights / "best.pt").is_file() or (weights / "last.pt").is_file()
    assert (tmp_path / "eval.json").is_file()
    assert (tmp_path / "data" / "data.yaml").is_file()

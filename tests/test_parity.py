"""Parity with the reference: ultralytics 8.4.190 ``FastSAM(...)(img, retina_masks=True)``.

The FastSAM-s and FastSAM-x architectures (yolov8s/x-seg, nc=1, -x with reg_max 26) get seeded,
spread heads (``export.archs``), are exported with ``fastsam-export``, and both pipelines run on
the same ONNX file (and on the .pt for the dynamic export). Each case's conf threshold sits in
the middle of a wide gap between candidate scores, so float noise cannot flip a count.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.export
pytest.importorskip("ultralytics")
skdata = pytest.importorskip("skimage.data")

from helpers import score_gap_conf  # noqa: E402

from edge import Segmenter  # noqa: E402
from edge.demo.scenes import generate_scene  # noqa: E402

IOU = 0.9


def _photo(name: str) -> np.ndarray:
    img = cv2.imread(os.path.join(skdata.data_dir, name), cv2.IMREAD_COLOR)
    assert img is not None, name
    return img


def _images() -> dict[str, np.ndarray]:
    coffee = _photo("coffee.png")
    return {
        "astronaut-1x1": _photo("astronaut.png"),  # 512x512
        "coffee-3x2": coffee,  # 600x400
        "chelsea-odd": _photo("chelsea.png"),  # 451x300
        "motorcycle-wide": _photo("motorcycle_left.png"),  # 741x500
        "coffee-odd-333x517": cv2.resize(coffee, (517, 333), interpolation=cv2.INTER_AREA),
        "scene-4x3": generate_scene(11, 640, 480).image,
        "scene-16x9": generate_scene(12, 1280, 720).image,
        "scene-portrait": generate_scene(13, 480, 640).image,
        "scene-tiny-upscaled": generate_scene(14, 200, 150).image,
    }


IMAGES = _images()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from export.archs import make_checkpoint
    from export.fastsam import export_bundle

    root = tmp_path_factory.mktemp("parity")
    s_pt = make_checkpoint("fastsam-s", root / "fastsam-s.pt", seed=0)
    x_pt = make_checkpoint("fastsam-x", root / "fastsam-x.pt", seed=1)
    return {
        "s.pt": s_pt,
        "s-static": export_bundle(
            s_pt, root / "s-static", imgsz=640, int8=False, measure_memory=False
        ),
        "s-dynamic": export_bundle(
            s_pt, root / "s-dynamic", imgsz=640, dynamic=True, int8=False, measure_memory=False
        ),
        "s-640x480": export_bundle(
            s_pt, root / "s-640x480", imgsz="640x480", int8=False, measure_memory=False
        ),
        "x-static": export_bundle(
            x_pt, root / "x-static", imgsz=640, int8=False, measure_memory=False
        ),
    }


@pytest.fixture(scope="module")
def segmenters(models: dict[str, Path]) -> dict[str, Segmenter]:
    return {k: Segmenter.load(v, threads=2) for k, v in models.items() if not k.endswith(".pt")}


def compare(ref, ours, box_tol: float = 1.0) -> dict[str, float]:  # noqa: ANN001
    h, w = ours.image_hw
    ref_masks = (
        ref.masks.data.numpy().astype(bool) if ref.masks is not None else np.zeros((0, h, w), bool)
    )
    assert len(ref_masks) == len(ours), f"mask count: reference {len(ref_masks)}, ours {len(ours)}"
    if len(ours) == 0:
        return {"n": 0}
    mine = ours.mask
    inter = (ref_masks & mine).sum((1, 2))
    union = (ref_masks | mine).sum((1, 2))
    iou = inter / np.maximum(union, 1)
    box_err = np.abs(ref.boxes.xyxy.numpy() - ours.xyxy).max()
    conf_err = np.abs(ref.boxes.conf.numpy() - ours.confidence).max()
    worst = int(np.argmin(iou))
    assert iou.min() >= 0.99, f"mask {worst}: IoU {iou[worst]:.4f} (area {union[worst]})"
    assert iou.mean() >= 0.995, f"mean IoU {iou.mean():.4f}"
    assert box_err <= box_tol, f"box error {box_err:.3f} px"
    assert conf_err <= 1e-3, f"score error {conf_err}"
    return {"n": len(ours), "min_iou": float(iou.min()), "mean_iou": float(iou.mean())}


CASES = [
    # (bundle, image, target candidates)
    ("s-static", "astronaut-1x1", 30),
    ("s-static", "astronaut-1x1", 200),
    ("s-static", "coffee-3x2", 160),
    ("s-static", "chelsea-odd", 25),
    ("s-static", "motorcycle-wide", 180),
    ("s-static", "coffee-odd-333x517", 40),
    ("s-static", "scene-4x3", 220),
    ("s-static", "scene-16x9", 60),
    ("s-static", "scene-portrait", 160),
    ("s-static", "scene-tiny-upscaled", 30),
    ("s-dynamic", "coffee-3x2", 40),
    ("s-dynamic", "scene-16x9", 170),
    ("s-dynamic", "scene-portrait", 30),
    ("s-dynamic", "coffee-odd-333x517", 150),
    ("s-640x480", "scene-4x3", 200),
    ("s-640x480", "motorcycle-wide", 30),
    ("x-static", "astronaut-1x1", 40),
    ("x-static", "scene-4x3", 160),
]


@pytest.mark.parametrize(("bundle", "image", "target"), CASES)
def test_onnx_parity(
    models: dict[str, Path], segmenters: dict[str, Segmenter], bundle: str, image: str, target: int
) -> None:
    from ultralytics import FastSAM

    seg = segmenters[bundle]
    img = IMAGES[image]
    conf = score_gap_conf(seg, img, target, 1.1, 1e-5)
    ref_model = FastSAM(str(models[bundle] / "fastsam.fp32.onnx"))
    imgsz = list(seg.manifest.input.imgsz)
    ref = ref_model(img, imgsz=imgsz, conf=conf, iou=IOU, retina_masks=True, verbose=False)[0]
    ours = seg.segment(img, conf=conf, iou=IOU)
    stats = compare(ref, ours)
    assert stats["n"] >= 20, f"only {stats['n']} masks: the case does not test much"


@pytest.mark.parametrize(("image", "target"), [("scene-16x9", 40), ("coffee-3x2", 170)])
def test_dynamic_matches_pt_reference(
    models: dict[str, Path], segmenters: dict[str, Segmenter], image: str, target: int
) -> None:
    """The dynamic export reproduces the torch .pt pipeline (rectangular letterbox)."""
    from ultralytics import FastSAM

    seg = segmenters["s-dynamic"]
    img = IMAGES[image]
    conf = score_gap_conf(seg, img, target, 1.1, 1e-5)
    ref = FastSAM(str(models["s.pt"]))(
        img, imgsz=640, conf=conf, iou=IOU, retina_masks=True, verbose=False
    )[0]
    stats = compare(ref, seg.segment(img, conf=conf, iou=IOU))
    assert stats["n"] >= 20


def test_case_table_has_large_counts(segmenters: dict[str, Segmenter]) -> None:
    """At least a few cases really produce >= 150 masks."""
    big = [c for c in CASES if c[2] >= 150]
    counts = []
    for bundle, image, target in big[:3]:
        seg = segmenters[bundle]
        counts.append(
            len(
                seg.segment(
                    IMAGES[image], conf=score_gap_conf(seg, IMAGES[image], target, 1.1, 1e-5)
                )
            )
        )
    assert min(counts) >= 150, counts


def test_full_box_case(models: dict[str, Path], segmenters: dict[str, Segmenter]) -> None:
    """A near-full-frame detection is reported as the whole frame, as in the reference."""
    from ultralytics import FastSAM

    seg = segmenters["s-static"]
    img = IMAGES["motorcycle-wide"]
    conf = score_gap_conf(seg, img, 320, 1.1, 1e-5)
    ours = seg.segment(img, conf=conf, iou=IOU)
    h, w = img.shape[:2]
    full = np.all(ours.xyxy == np.array([0, 0, w, h], np.float32), axis=1)
    assert full.sum() >= 1, "no full-box detection in this case"
    ref = FastSAM(str(models["s-static"] / "fastsam.fp32.onnx"))(
        img, imgsz=640, conf=conf, iou=IOU, retina_masks=True, verbose=False
    )[0]
    ref_full = np.all(ref.boxes.xyxy.numpy() == np.array([0, 0, w, h]), axis=1)
    np.testing.assert_array_equal(full, ref_full)
    compare(ref, ours)


def test_zero_detections(models: dict[str, Path], segmenters: dict[str, Segmenter]) -> None:
    from ultralytics import FastSAM

    seg = segmenters["s-static"]
    img = IMAGES["chelsea-odd"]
    ref = FastSAM(str(models["s-static"] / "fastsam.fp32.onnx"))(
        img, imgsz=640, conf=0.99999, iou=IOU, retina_masks=True, verbose=False
    )[0]
    ours = seg.segment(img, conf=0.99999)
    assert len(ref) == len(ours) == 0
    assert ours.mask.shape == (0, *img.shape[:2])

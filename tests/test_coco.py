"""COCO output: ``masks_to_coco``, ``segment --format coco`` under pycocotools' COCOeval, the
demo scenes' ground truth, and the documented ``supervision.Detections`` recipe."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from edge.coco import CATEGORY_ID, masks_to_coco, scenes_to_coco, xyxy_to_xywh
from edge.demo.scenes import EVAL_SEED_START, generate_scene
from edge.segmenter import Segmenter


@pytest.fixture(scope="module")
def seg(demo_bundle: Path) -> Segmenter:
    return Segmenter.load(demo_bundle, threads=1)


def test_to_coco_decodes_to_the_masks(seg: Segmenter) -> None:
    sc = generate_scene(EVAL_SEED_START + 11, 200, 150)
    result = seg.segment(sc.image)
    anns = masks_to_coco(result, image_id=7)
    assert len(anns) == len(result) > 0
    dense = result.mask
    for i, ann in enumerate(anns):
        assert ann["image_id"] == 7 and ann["category_id"] == CATEGORY_ID
        decoded = mask_utils.decode(ann["segmentation"]).astype(bool)
        assert decoded.shape == (150, 200) and (decoded == dense[i]).all()
        x1, y1, x2, y2 = result.xyxy[i].tolist()
        assert ann["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=1e-3)
        assert ann["score"] == pytest.approx(float(result.confidence[i]), abs=1e-6)
        assert ann["area"] == int(dense[i].sum())


def test_to_coco_of_an_empty_result(seg: Segmenter) -> None:
    sc = generate_scene(EVAL_SEED_START + 12, 120, 90)
    assert masks_to_coco(seg.segment(sc.image, conf=1.0)) == []


@pytest.mark.parametrize(
    ("box", "expected"),
    [([10, 20, 30, 60], [10, 20, 20, 40]), ([0.5, 1.25, 2.5, 3.0], [0.5, 1.25, 2.0, 1.75])],
)
def test_xyxy_to_xywh(box, expected) -> None:  # noqa: ANN001
    assert xyxy_to_xywh(box) == expected


def test_scenes_ground_truth_loads_in_pycocotools() -> None:
    scenes = [generate_scene(EVAL_SEED_START + 20 + k, 160, 120) for k in range(3)]
    gt_doc = scenes_to_coco(scenes, [f"s{k}.png" for k in range(3)])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_doc
        gt.createIndex()
    assert sorted(gt.getImgIds()) == [1, 2, 3]
    ann = gt.loadAnns(gt.getAnnIds(imgIds=[2]))[0]
    assert (gt.annToMask(ann).astype(bool) == scenes[1].masks[0]).all()


def test_cocoeval_on_the_cli_output_of_a_scene_folder(tmp_path: Path) -> None:
    """``scenes`` + ``segment --format coco`` + COCOeval, as the README's recipe."""
    scenes = tmp_path / "demo-scenes"
    assert run_cli("scenes", str(scenes), "--count", "6").returncode == 0
    dt = tmp_path / "dt.json"
    proc = run_cli("segment", str(scenes), "--format", "coco", "--json", str(dt), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(scenes / "annotations.json"))
        ev = COCOeval(gt, gt.loadRes(str(dt)), "segm")  # the file loads as it is
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap, ap50 = ev.stats[0], ev.stats[1]
    # the demo model on held-out scenes (50 scenes by hand: AP 0.859, AP50 0.983)
    assert ap50 > 0.9 and ap > 0.7, ev.stats
    # the images list names the same files and ids as the ground truth
    images = json.loads((tmp_path / "dt.images.json").read_text())["images"]
    gt_images = {im["id"]: im["file_name"] for im in gt.dataset["images"]}
    assert {im["id"]: im["file_name"] for im in images} == gt_images


@pytest.mark.export
def test_supervision_recipe(seg: Segmenter) -> None:
    """The README's ``supervision.Detections`` recipe, as written there."""
    sv = pytest.importorskip("supervision")
    sc = generate_scene(EVAL_SEED_START + 13, 200, 150)
    image = sc.image
    result = seg.segment(image)
    detections = sv.Detections(
        xyxy=result.xyxy,
        mask=result.mask,
        confidence=result.confidence,
        class_id=np.zeros(len(result), dtype=int),
    )
    assert len(detections) == len(result) > 0
    assert (detections.area == result.area).all()
    annotated = sv.MaskAnnotator().annotate(image.copy(), detections)
    assert annotated.shape == image.shape and (annotated != image).any()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    recipe = "xyxy=result.xyxy, mask=result.mask, confidence=result.confidence,"
    assert recipe in readme

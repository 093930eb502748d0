"""edge.bench.worker: statistics, prompts derived from a result, mask files, one real run."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge.bench.worker import (
    load_crops,
    percentiles,
    prompt_for,
    run_worker,
    save_crops,
)
from edge.demo.scenes import generate_scene
from edge.prompts import BoxPrompt, PointPrompt, TextPrompt
from edge.types import MaskCrop, Masks


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([5.0], {"p50": 5.0, "p90": 5.0, "p99": 5.0, "mean": 5.0, "min": 5.0, "max": 5.0}),
        (list(range(1, 102)), {"p50": 51.0, "p90": 91.0, "p99": 100.0, "mean": 51.0}),
        ([1.0, 3.0], {"p50": 2.0, "p90": 2.8}),
    ],
)
def test_percentiles(values, expected):
    got = percentiles(values)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v)


def test_percentiles_of_nothing_are_nan():
    assert all(math.isnan(v) for v in percentiles([]).values())


def _result() -> Masks:
    a = np.zeros((10, 20), bool)
    a[2:8, 3:15] = True  # 6 x 12 rectangle at (3, 2) in the crop
    b = np.ones((4, 4), bool)
    crops = [MaskCrop(b, 50, 50), MaskCrop(a, 100, 40)]
    return Masks(
        xyxy=np.array([[50, 50, 54, 54], [100, 40, 120, 50]], np.float32),
        confidence=np.array([0.5, 0.9], np.float32),
        crops=crops,
        image_hw=(200, 300),
    )


def test_prompt_for_uses_the_best_scoring_mask():
    res = _result()
    assert prompt_for("everything", res) is None
    box = prompt_for("box", res)
    assert isinstance(box, BoxPrompt)
    np.testing.assert_array_equal(box.xyxy, [[100, 40, 119, 49]])
    point = prompt_for("point", res)
    assert isinstance(point, PointPrompt) and point.mode == "best"
    x, y = point.points[0]
    assert 103 <= x < 115 and 42 <= y < 48  # inside the rectangle, not at its edge
    assert res.crops[1].contains(int(x), int(y))
    text = prompt_for("text", res, "a blue square")
    assert isinstance(text, TextPrompt) and text.text == "a blue square"


def test_prompt_for_errors():
    empty = Masks(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [], (10, 10))
    with pytest.raises(ValueError, match="no masks"):
        prompt_for("point", empty)
    with pytest.raises(ValueError, match="prompt mode"):
        prompt_for("lasso", _result())


def test_crops_round_trip(tmp_path):
    dense = np.zeros((30, 40), bool)
    dense[5:9, 7:20] = True
    dense[8, 25] = True
    crop = MaskCrop.from_dense(dense)
    assert (crop.x0, crop.y0, crop.data.shape) == (7, 5, (4, 19))
    np.testing.assert_array_equal(crop.dense(30, 40), dense)
    empty = MaskCrop.from_dense(np.zeros((5, 5), bool))
    assert empty.area == 0
    save_crops(tmp_path / "m.json", [crop, empty], (30, 40))
    back = load_crops(tmp_path / "m.json")
    np.testing.assert_array_equal(back[0].dense(30, 40), dense)
    assert back[1].area == 0


@pytest.mark.parametrize(
    "mode", ["everything", "point", pytest.param("text", marks=pytest.mark.export)]
)  # text needs the text extra (ftfy, regex), which the export env has
def test_run_worker_on_demo_bundle(tmp_path, demo_bundle, mode):
    image = generate_scene(1_000_123, 320, 240).image
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), image)
    out = tmp_path / "masks.json"
    res = run_worker(str(demo_bundle), "int8", str(path), 0.4, 1, runs=3, warmup=1, mode=mode,
                     masks_out=str(out))  # fmt: skip
    assert res["runs"] == 3 and res["masks"] >= 1 and res["mode"] == mode
    assert set(res["stages_ms"]) == {"preprocess", "infer", "postprocess"} | (
        set() if mode == "everything" else {"prompt"}
    )
    assert len(load_crops(out)) == res["masks"]
    if mode == "everything":
        assert res["prompt"] is None and res["selected"] is None
    else:
        assert res["prompt"]["type"] == mode and res["selected"] >= 1


def test_run_worker_sustained_samples(tmp_path, demo_bundle):
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), generate_scene(1_000_124, 320, 240).image)
    res = run_worker(str(demo_bundle), "int8", str(path), 0.4, 1, runs=1, warmup=1,
                     duration_s=1.0, sample_s=0.4)  # fmt: skip
    assert res["duration_s"] >= 1.0 and res["runs"] > 1
    assert len(res["series_ms"]) == res["runs"]
    assert [s["t_s"] for s in res["samples"]] == sorted(s["t_s"] for s in res["samples"])
    assert len(res["samples"]) >= 3

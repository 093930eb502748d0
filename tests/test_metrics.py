"""edge.metrics: IoU of packed mask crops equals IoU of the dense masks."""

from __future__ import annotations

import numpy as np
import pytest

from edge.metrics import (
    crop_iou_matrix,
    crop_recall_at_iou,
    iou_agreement,
    mask_agreement,
    mask_iou_matrix,
    recall_at_iou,
)
from edge.types import MaskCrop


def _random_crops(n: int, hw: tuple[int, int], seed: int) -> list[MaskCrop]:
    rng = np.random.default_rng(seed)
    h, w = hw
    crops = []
    for _ in range(n):
        ch, cw = int(rng.integers(0, h // 2 + 1)), int(rng.integers(0, w // 2 + 1))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crops.append(MaskCrop(rng.random((ch, cw)) < rng.uniform(0.1, 0.9), x0, y0))
    return crops


@pytest.mark.parametrize(
    ("na", "nb", "hw", "seed", "stack_bytes", "popcount"),
    [
        (7, 9, (37, 53), 0, None, True),
        (12, 5, (64, 41), 1, None, True),
        (9, 11, (40, 150), 8, 1, True),  # b laid out one mask at a time; crops past a word
        (9, 11, (40, 150), 9, 3000, False),  # a few masks a chunk; numpy < 2 bit counts
    ],
)
def test_crop_iou_matrix_equals_dense(monkeypatch, na, nb, hw, seed, stack_bytes, popcount):
    import edge.metrics

    if stack_bytes is not None:
        monkeypatch.setattr(edge.metrics, "_FRAME_STACK_BYTES", stack_bytes)
    if not popcount:
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    a, b = _random_crops(na, hw, seed), _random_crops(nb, hw, seed + 100)
    dense_a = np.stack([c.dense(*hw) for c in a])
    dense_b = np.stack([c.dense(*hw) for c in b])
    np.testing.assert_array_equal(crop_iou_matrix(a, b), mask_iou_matrix(dense_a, dense_b))
    # each non-empty mask matches itself (IoU 1); an empty one matches nothing (IoU 0)
    nonempty = sum(1 for c in a if c.area)
    assert nonempty > 0
    same = mask_agreement(a, a)
    assert same["a_to_b"] == pytest.approx(nonempty / len(a)) and same["n_a"] == len(a)


@pytest.mark.parametrize(
    ("ng", "np_", "hw", "seed", "thr"),
    [
        (6, 9, (37, 53), 2, 0.5),
        (4, 30, (48, 48), 3, 0.1),  # many overlapping predictions, a low threshold
        (5, 0, (20, 30), 4, 0.5),  # no prediction: nothing found
        (0, 4, (20, 30), 5, 0.5),  # no ground truth
    ],
)
def test_crop_recall_equals_dense_recall(ng, np_, hw, seed, thr):
    gt, pred = _random_crops(ng, hw, seed), _random_crops(np_, hw, seed + 100)
    gt.append(MaskCrop.from_dense(np.zeros(hw, bool)))  # an empty ground-truth mask: never found
    # one prediction equal to a ground-truth mask: found at any threshold
    pred = pred + gt[:1] if ng else pred
    dense_gt = np.stack([c.dense(*hw) for c in gt])
    dense_pred = np.stack([c.dense(*hw) for c in pred]) if pred else np.zeros((0, *hw), bool)
    expected = recall_at_iou(dense_gt, dense_pred, thr)
    assert crop_recall_at_iou(gt, pred, thr) == expected
    assert expected[1] == len(gt) and (expected[0] > 0) == (ng > 0)


@pytest.mark.parametrize(("na", "nb"), [(7, 9), (0, 3), (3, 0), (0, 0)])
def test_iou_agreement_is_mask_agreement(na, nb):
    a, b = _random_crops(na, (30, 40), 6), _random_crops(nb, (30, 40), 7)
    assert iou_agreement(crop_iou_matrix(a, b)) == mask_agreement(a, b)


def _crop(x0: int, y0: int, x1: int, y1: int, hw=(40, 60)) -> MaskCrop:
    m = np.zeros(hw, bool)
    m[y0:y1, x0:x1] = True
    return MaskCrop.from_dense(m)


def _dense(x0: int, y0: int, x1: int, y1: int, hw=(40, 60)) -> np.ndarray:
    m = np.zeros(hw, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_track_tally_consistency_and_switches():
    from edge.metrics import TrackTally

    tally = TrackTally()
    gt = np.stack([_dense(0, 0, 10, 10), _dense(30, 20, 50, 40)])
    frames = [
        ([7, 3], [-1, -1]),  # tentative: detected, no id yet
        ([7, 3], [1, 2]),
        ([7, 3], [1, 2]),
        ([7, 3], [4, 2]),  # object 7 switched to 4
        ([7, 3], [4, 2]),
    ]
    for gt_ids, track_ids in frames:
        crops = [_crop(0, 0, 10, 10), _crop(30, 20, 50, 40)]
        tally.add(gt, gt_ids, crops, track_ids)
    tally.add(gt[:1], [7], [], [])  # missed by the detector: visible, not detected
    s = tally.summary()
    assert s["objects"] == 2 and s["visible_frames"] == 11 and s["detected_frames"] == 10
    assert s["id_switches"] == 1
    assert s["id_consistency"] == pytest.approx((2 + 4) / 10)  # 7: {1,1,4,4} -> 2; 3: 4
    assert s["tracked_share"] == pytest.approx(8 / 10)


def test_track_tally_matches_one_to_one_above_the_threshold():
    from edge.metrics import TrackTally

    tally = TrackTally(thr=0.5)
    gt = np.stack([_dense(0, 0, 10, 10)])
    # two predictions on one object: only the better one counts; a poor one never matches
    tally.add(gt, [0], [_crop(0, 0, 10, 9), _crop(0, 0, 10, 10)], [5, 6])
    tally.add(gt, [0], [_crop(0, 0, 3, 3)], [9])
    assert tally.ids == {0: [6]}

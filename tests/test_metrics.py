"""edge.metrics: IoU of packed mask crops equals IoU of the dense masks."""

from __future__ import annotations

import numpy as np
import pytest

from edge.metrics import crop_iou_matrix, mask_agreement, mask_iou_matrix
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


@pytest.mark.parametrize(("na", "nb", "hw", "seed"), [(7, 9, (37, 53), 0), (12, 5, (64, 41), 1)])
def test_crop_iou_matrix_equals_dense(na, nb, hw, seed):
    a, b = _random_crops(na, hw, seed), _random_crops(nb, hw, seed + 100)
    dense_a = np.stack([c.dense(*hw) for c in a])
    dense_b = np.stack([c.dense(*hw) for c in b])
    np.testing.assert_allclose(crop_iou_matrix(a, b), mask_iou_matrix(dense_a, dense_b))
    # each non-empty mask matches itself (IoU 1); an empty one matches nothing (IoU 0)
    nonempty = sum(1 for c in a if c.area)
    assert nonempty > 0
    same = mask_agreement(a, a)
    assert same["a_to_b"] == pytest.approx(nonempty / len(a)) and same["n_a"] == len(a)

"""edge.segmenter: parallel mask assembly equals serial assembly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edge.postprocess import box_roi
from edge.scenes import generate_scene
from edge.segmenter import Detections, Segmenter, _resampler


def _detections(n: int, source_hw: tuple[int, int], seed: int = 0) -> Detections:
    rng = np.random.default_rng(seed)
    h, w = source_hw
    x0 = rng.uniform(-20, w, n)
    y0 = rng.uniform(-20, h, n)
    xyxy = np.stack(
        [x0, y0, x0 + rng.uniform(0, w / 2, n), y0 + rng.uniform(0, h / 2, n)], axis=1
    ).astype(np.float32)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
    protos = rng.standard_normal((32, 160, 160)).astype(np.float32)
    return Detections(
        xyxy=xyxy,
        confidence=np.sort(rng.random(n).astype(np.float32))[::-1],
        coefficients=rng.standard_normal((n, 32)).astype(np.float32),
        rois=box_roi(xyxy, source_hw),
        protos=protos,
        resampler=_resampler((160, 160), source_hw),
        source_hw=source_hw,
    )


@pytest.mark.parametrize(("n", "workers"), [(0, 2), (3, 2), (57, 2), (120, 3), (40, 1)])
def test_prefetch_on_pool_equals_serial(n, workers):
    serial = _detections(n, (1080, 1920))
    parallel = _detections(n, (1080, 1920))
    with ThreadPoolExecutor(workers) as pool:
        parallel.pool, parallel.workers = pool, workers
        parallel.prefetch(range(n))
        assert parallel.num_assembled == n
        a, b = serial.to_masks(), parallel.to_masks()
    assert len(a) == len(b)
    for ca, cb in zip(a.crops, b.crops, strict=True):
        assert (ca.x0, ca.y0) == (cb.x0, cb.y0)
        np.testing.assert_array_equal(ca.data, cb.data)


def test_prefetch_skips_assembled_and_duplicates():
    dets = _detections(10, (480, 640))
    first = dets.crop(3)
    with ThreadPoolExecutor(2) as pool:
        dets.pool, dets.workers = pool, 2
        dets.prefetch([3, 3, 5, 7, 9, 1, 1])
    assert dets.num_assembled == 5
    assert dets.crop(3) is first


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_segmenter_results_do_not_depend_on_assembly_workers(demo_bundle, workers):
    image = generate_scene(1_000_321, 640, 480).image
    ref = Segmenter.load(demo_bundle, threads=1)
    ref.assembly_workers = 1
    seg = Segmenter.load(demo_bundle, threads=2)
    seg.assembly_workers = workers
    a, b = ref.segment(image, conf=0.001), seg.segment(image, conf=0.001)
    assert len(a) == len(b) >= 8  # enough masks for the pool to be used (>= 2 per worker)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    for ca, cb in zip(a.crops, b.crops, strict=True):
        np.testing.assert_array_equal(ca.data, cb.data)
    assert (seg.assembly_pool()[1]) == workers

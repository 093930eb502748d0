"""Tests for decode, NMS, box scaling, the full-box step and ROI mask assembly.

The references in this file are written independently of ``edge.postprocess`` and follow the
ultralytics 8.4.190 chain (``non_max_suppression``, ``scale_boxes``, ``process_mask_native`` ->
``scale_masks`` -> ``crop_mask``) with numpy + OpenCV only.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext as DoesNotRaise

import cv2
import numpy as np
import pytest

from edge.postprocess import (
    MAX_NMS,
    Detections,
    MaskResampler,
    _resampler,
    apply_full_box,
    assemble_mask,
    box_iou_matrix,
    box_roi,
    decode_predictions,
    nms,
    prepare_detections,
    scale_boxes_to_source,
)
from edge.preprocess import letterbox_geometry
from edge.types import Masks

# --------------------------------------------------------------------------------------------
# helpers / references
# --------------------------------------------------------------------------------------------


def _iou_pair(a, b) -> float:
    """IoU of two xyxy boxes in float64, no +1 convention."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _greedy_nms_reference(boxes, scores, thr, max_det):
    """Textbook greedy NMS: sort by score, keep the best, drop everything with IoU > thr."""
    boxes = [tuple(float(v) for v in b) for b in boxes]
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep = []
    suppressed = set()
    for pos, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[pos + 1 :]:
            if j not in suppressed and _iou_pair(boxes[i], boxes[j]) > thr:
                suppressed.add(j)
    return keep[:max_det]


def _random_boxes(rng, n, clustered):
    if clustered:  # many near-duplicates so that high thresholds still suppress something
        k = max(n // 6, 1)
        cluster = rng.integers(0, k, n)
        base = rng.uniform(20, 200, size=(k, 2))[cluster]
        wh = rng.uniform(20, 60, size=(k, 2))[cluster]
        jitter = rng.normal(0, 1.0, size=(n, 4))
        boxes = np.concatenate([base - wh / 2, base + wh / 2], axis=1) + jitter
    else:
        xy = rng.uniform(0, 200, size=(n, 2))
        wh = rng.uniform(2, 80, size=(n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.permutation(n).astype(np.float32) / n + np.float32(0.01)  # distinct scores
    return boxes.astype(np.float32), scores


# --------------------------------------------------------------------------------------------
# nms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("iou_threshold", [0.3, 0.7, 0.9])
@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("max_det", [300, 5])
def test_nms_matches_brute_force_greedy(seed, iou_threshold, clustered, max_det):
    rng = np.random.default_rng(seed)
    boxes, scores = _random_boxes(rng, 60, clustered)
    # Guard against float32 vs float64 IoU ties at the threshold (would make the test flaky).
    ious = box_iou_matrix(boxes, boxes).astype(np.float64)
    assert not np.any(np.abs(ious - iou_threshold) < 1e-5)
    expected = _greedy_nms_reference(boxes, scores, iou_threshold, max_det)
    keep = nms(boxes, scores, iou_threshold, max_det)
    assert keep.dtype == np.intp
    assert keep.tolist() == expected
    assert len(keep) <= max_det
    # Score-descending order.
    assert np.all(np.diff(scores[keep]) < 0)


def test_nms_suppresses_something_in_clustered_case():
    # Make sure the parametrized comparison above is not vacuous at iou 0.9.
    boxes, scores = _random_boxes(np.random.default_rng(0), 60, True)
    assert len(nms(boxes, scores, 0.9)) < 60
    assert len(nms(boxes, scores, 0.3)) < len(nms(boxes, scores, 0.9))


@pytest.mark.parametrize("max_det", [1, 2, 3, 7])
def test_nms_max_det_is_prefix_of_full_run(max_det):
    boxes, scores = _random_boxes(np.random.default_rng(42), 40, False)
    full = nms(boxes, scores, 0.5, max_det=1000)
    assert len(full) > 7
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, max_det=max_det), full[:max_det])


@pytest.mark.parametrize(
    ("boxes", "scores", "thr", "max_det", "expected"),
    [
        pytest.param(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.5, 300, [], id="empty"
        ),
        pytest.param(
            np.array([[0, 0, 10, 10]], np.float32),
            np.array([0.5], np.float32),
            0.5,
            0,
            [],
            id="max_det-0",
        ),
        pytest.param(
            np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32),
            np.array([0.2, 0.9], np.float32),
            0.5,
            300,
            [1],
            id="identical-keeps-best",
        ),
        pytest.param(
            # IoU exactly 0.5 (inter 50, union 100): strict '>' keeps both.
            np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32),
            np.array([0.9, 0.8], np.float32),
            0.5,
            300,
            [0, 1],
            id="iou-equal-threshold-kept",
        ),
        pytest.param(
            np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32),
            np.array([0.9, 0.8], np.float32),
            0.49,
            300,
            [0],
            id="iou-above-threshold-dropped",
        ),
        pytest.param(
            # Chain: A suppresses B, B would have suppressed C, but B is gone so C survives.
            np.array([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]], np.float32),
            np.array([0.9, 0.8, 0.7], np.float32),
            0.4,
            300,
            [0, 2],
            id="greedy-chain",
        ),
        pytest.param(
            np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32),
            np.array([0.1, 0.3, 0.2], np.float32),
            0.5,
            300,
            [1, 2, 0],
            id="disjoint-sorted",
        ),
        pytest.param(
            # two identical zero-area boxes: IoU 0 / 0 is NaN, which suppresses nothing
            # (torchvision's NMS keeps both too)
            np.array([[5, 5, 5, 5], [5, 5, 5, 5]], np.float32),
            np.array([0.9, 0.8], np.float32),
            0.5,
            300,
            [0, 1],
            id="zero-area-boxes-kept",
        ),
    ],
)
def test_nms_table(boxes, scores, thr, max_det, expected):
    assert nms(boxes, scores, thr, max_det).tolist() == expected


def test_nms_zero_area_boxes_warn_nothing():
    boxes = np.zeros((3, 4), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5, 300).tolist() == [0, 1, 2]


def test_nms_keeps_only_top_max_nms_candidates():
    # MAX_NMS + 1 boxes: the top-scoring one suppresses the next MAX_NMS - 1 duplicates; the
    # lowest-scoring box is disjoint but falls outside the pre-NMS cut, so it is never kept.
    n = MAX_NMS + 1
    boxes = np.tile(np.array([[0, 0, 10, 10]], np.float32), (n, 1))
    boxes[-1] = [100, 100, 110, 110]
    scores = np.linspace(0.99, 0.5, n, dtype=np.float32)
    scores[-1] = 0.01
    assert nms(boxes, scores, 0.5).tolist() == [0]
    # Control: with one box fewer the disjoint one is inside the cut and survives.
    assert nms(boxes[1:], scores[1:], 0.5).tolist() == [0, MAX_NMS - 1]


# --------------------------------------------------------------------------------------------
# decode_predictions
# --------------------------------------------------------------------------------------------


def _make_output0(rows):
    """rows: list of (cx, cy, w, h, score, coeff-fill) -> (1, 37, N) float32."""
    out = np.zeros((1, 37, len(rows)), dtype=np.float32)
    for j, (cx, cy, w, h, s, c) in enumerate(rows):
        out[0, :5, j] = [cx, cy, w, h, s]
        out[0, 5:, j] = np.arange(32, dtype=np.float32) * c
    return out


def test_decode_strict_threshold_and_xyxy():
    thr = 0.4
    rows = [
        (50, 40, 20, 10, np.float32(0.4), 1.0),  # exactly at threshold: dropped
        (10, 10, 4, 6, np.nextafter(np.float32(0.4), np.float32(1)), 2.0),  # just above: kept
        (30, 20, 8, 8, 0.9, 3.0),  # kept
        (0, 0, 1, 1, 0.1, 4.0),  # dropped
    ]
    cand = decode_predictions(_make_output0(rows), thr)
    assert len(cand) == 2
    np.testing.assert_array_equal(
        cand.xyxy, np.array([[8, 7, 12, 13], [26, 16, 34, 24]], np.float32)
    )
    np.testing.assert_array_equal(
        cand.confidence, np.array([np.nextafter(np.float32(0.4), np.float32(1)), 0.9], np.float32)
    )
    np.testing.assert_array_equal(cand.coefficients[0], np.arange(32, dtype=np.float32) * 2)
    np.testing.assert_array_equal(cand.coefficients[1], np.arange(32, dtype=np.float32) * 3)
    assert cand.xyxy.dtype == cand.confidence.dtype == cand.coefficients.dtype == np.float32


@pytest.mark.parametrize("batched", [True, False])
def test_decode_accepts_2d_and_3d(batched):
    out = _make_output0([(5, 5, 2, 2, 0.8, 1.0)])
    cand = decode_predictions(out if batched else out[0], 0.5)
    np.testing.assert_array_equal(cand.xyxy, [[4, 4, 6, 6]])


@pytest.mark.parametrize("n_anchors", [0, 5])
def test_decode_zero_survivors(n_anchors):
    rows = [(5, 5, 2, 2, 0.2, 1.0)] * n_anchors
    cand = decode_predictions(_make_output0(rows), 0.25)
    assert len(cand) == 0
    assert cand.xyxy.shape == (0, 4)
    assert cand.confidence.shape == (0,)
    assert cand.coefficients.shape == (0, 32)
    assert len(nms(cand.xyxy, cand.confidence, 0.9)) == 0


# --------------------------------------------------------------------------------------------
# box_iou_matrix
# --------------------------------------------------------------------------------------------

_B = np.array(
    [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [2, 2, 6, 6], [5, 0, 15, 10]], np.float32
)


@pytest.mark.parametrize(
    ("i", "j", "expected"),
    [
        pytest.param(0, 1, 1.0, id="identical"),
        pytest.param(0, 2, 0.0, id="disjoint"),
        pytest.param(0, 3, 16 / 100, id="contained"),
        pytest.param(3, 0, 16 / 100, id="container"),
        pytest.param(0, 4, 50 / 150, id="half-overlap"),
        pytest.param(2, 4, 0.0, id="disjoint-2"),
    ],
)
def test_box_iou_matrix_table(i, j, expected):
    m = box_iou_matrix(_B, _B)
    assert m.dtype == np.float32 and m.shape == (5, 5)
    assert m[i, j] == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(m, m.T, atol=1e-7)


def test_box_iou_matrix_touching_edges_is_zero():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[10, 0, 20, 10], [0, 10, 10, 20]], np.float32)
    np.testing.assert_array_equal(box_iou_matrix(a, b), [[0.0, 0.0]])


@pytest.mark.parametrize(("na", "nb"), [(0, 0), (0, 3), (4, 0)])
def test_box_iou_matrix_empty_shapes(na, nb):
    m = box_iou_matrix(np.zeros((na, 4), np.float32), np.ones((nb, 4), np.float32))
    assert m.shape == (na, nb)
    assert m.dtype == np.float32


def test_box_iou_matrix_matches_pairwise_reference():
    boxes, _ = _random_boxes(np.random.default_rng(5), 12, True)
    m = box_iou_matrix(boxes[:7], boxes[5:])
    ref = np.array([[_iou_pair(a, b) for b in boxes[5:].astype(np.float64)] for a in boxes[:7]])
    np.testing.assert_allclose(m, ref, atol=1e-6)


# --------------------------------------------------------------------------------------------
# scale_boxes_to_source
# --------------------------------------------------------------------------------------------

SCALE_CASES = [
    ((480, 640), (1024, 1024), True),
    ((533, 800), (1024, 1024), True),
    ((533, 800), (1024, 1024), False),
    ((480, 640), (640, 640), False),
    ((599, 1000), (1024, 1024), True),
    ((517, 333), (256, 256), True),
    ((517, 333), (256, 256), False),
    ((45, 60), (128, 128), False),  # upscaling
    ((3, 1000), (64, 64), True),
]


@pytest.mark.parametrize(("source_hw", "target_hw", "auto"), SCALE_CASES)
def test_scale_boxes_inverts_letterbox(source_hw, target_hw, auto):
    info = letterbox_geometry(source_hw, target_hw, 32, auto)
    h0, w0 = source_hw
    rng = np.random.default_rng(h0 * 7 + w0)
    # Boxes inside the source frame, mapped forward through the letterbox's per-axis scale.
    xy1 = rng.uniform(0, 0.6, size=(20, 2)) * [w0, h0]
    xy2 = xy1 + rng.uniform(0.05, 0.4, size=(20, 2)) * [w0, h0]
    src = np.concatenate([xy1, np.minimum(xy2, [w0, h0])], axis=1)
    sx, sy = info.resized_hw[1] / w0, info.resized_hw[0] / h0
    fwd = src * [sx, sy, sx, sy] + [info.pad_left, info.pad_top, info.pad_left, info.pad_top]
    back = scale_boxes_to_source(fwd.astype(np.float32), info.input_hw, source_hw)
    assert back.dtype == np.float32 and back.shape == (20, 4)
    np.testing.assert_allclose(back, src, rtol=0, atol=1e-3 * max(1.0, max(h0, w0) / 100))


@pytest.mark.parametrize(("source_hw", "target_hw", "auto"), SCALE_CASES[:4])
def test_scale_boxes_clips_to_frame(source_hw, target_hw, auto):
    info = letterbox_geometry(source_hw, target_hw, 32, auto)
    ih, iw = info.input_hw
    boxes = np.array([[-50, -50, iw + 50, ih + 50], [0, 0, iw, ih]], np.float32)
    out = scale_boxes_to_source(boxes, info.input_hw, source_hw)
    h0, w0 = source_hw
    np.testing.assert_array_equal(out[0], [0, 0, w0, h0])
    assert out[:, [0, 2]].min() >= 0 and out[:, [0, 2]].max() <= w0
    assert out[:, [1, 3]].min() >= 0 and out[:, [1, 3]].max() <= h0


def test_scale_boxes_does_not_modify_input():
    boxes = np.array([[10, 20, 30, 40]], np.float32)
    scale_boxes_to_source(boxes, (576, 1024), (603, 1072))
    np.testing.assert_array_equal(boxes, [[10, 20, 30, 40]])


# --------------------------------------------------------------------------------------------
# apply_full_box
# --------------------------------------------------------------------------------------------

_HW = (100, 200)  # H, W


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        pytest.param([19.9, 40, 60, 60], [0, 40, 60, 60], id="x1-19.9-snaps"),
        pytest.param([20.0, 40, 60, 60], [20, 40, 60, 60], id="x1-20.0-stays"),
        pytest.param([50, 19.9, 60, 60], [50, 0, 60, 60], id="y1-19.9-snaps"),
        pytest.param([50, 20.0, 60, 60], [50, 20, 60, 60], id="y1-20.0-stays"),
        pytest.param([50, 40, 180.1, 60], [50, 40, 200, 60], id="x2-right-snaps"),
        pytest.param([50, 40, 180.0, 60], [50, 40, 180, 60], id="x2-right-stays"),
        pytest.param([50, 40, 60, 80.1], [50, 40, 60, 100], id="y2-bottom-snaps"),
        pytest.param([50, 40, 60, 80.0], [50, 40, 60, 80], id="y2-bottom-stays"),
        pytest.param([5, 5, 195, 95], [0, 0, 200, 100], id="all-edges-snap"),
        # IoU 185/200 = 0.925 > 0.9 with nothing to snap on the right: replaced by the frame.
        pytest.param([0, 0, 185, 100], [0, 0, 200, 100], id="near-full-replaced"),
        pytest.param([10, 3, 185, 97], [0, 0, 200, 100], id="near-full-after-snap"),
        # IoU exactly 0.9 (180/200) is not > 0.9.
        pytest.param([0, 0, 180, 100], [0, 0, 180, 100], id="iou-0.9-not-replaced"),
        pytest.param([0, 0, 179, 100], [0, 0, 179, 100], id="iou-0.895-not-replaced"),
        pytest.param([40, 30, 120, 70], [40, 30, 120, 70], id="interior-untouched"),
    ],
)
def test_apply_full_box_single(box, expected):
    out = apply_full_box(np.array([box], np.float32), _HW)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], np.array(expected, np.float32))


def test_apply_full_box_several_boxes():
    boxes = np.array(
        [
            [40, 30, 120, 70],  # untouched
            [2, 1, 199, 99],  # near-full -> frame
            [10, 50, 60, 60],  # x1 snaps only
            [0, 0, 186, 100],  # near-full -> frame (second one, also replaced)
            [150, 10, 190, 90],  # y1, x2, y2 snap; IoU small
        ],
        np.float32,
    )
    before = boxes.copy()
    out = apply_full_box(boxes, _HW)
    expected = np.array(
        [
            [40, 30, 120, 70],
            [0, 0, 200, 100],
            [0, 50, 60, 60],
            [0, 0, 200, 100],
            [150, 0, 200, 100],
        ],
        np.float32,
    )
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(boxes, before)  # a copy, input untouched


def test_apply_full_box_empty():
    out = apply_full_box(np.zeros((0, 4), np.float32), _HW)
    assert out.shape == (0, 4) and out.dtype == np.float32


# --------------------------------------------------------------------------------------------
# box_roi
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        pytest.param([0, 0, 10, 10], [0, 0, 10, 10], id="integers"),
        pytest.param([0.1, 2.5, 9.9, 10.0], [1, 3, 10, 10], id="ceil"),
        pytest.param([-3, -1, 250, 120], [0, 0, 200, 100], id="clipped"),
        pytest.param([5.2, 5.2, 5.8, 5.8], [6, 6, 6, 6], id="empty-subpixel"),
    ],
)
def test_box_roi(box, expected):
    roi = box_roi(np.array([box], np.float32), _HW)
    assert roi.dtype == np.int64
    np.testing.assert_array_equal(roi[0], expected)
    # The ROI is exactly the set of pixel centres kept by x1 <= col < x2, y1 <= row < y2.
    cols = np.arange(_HW[1], dtype=np.float32)
    rows = np.arange(_HW[0], dtype=np.float32)
    b = np.array(box, np.float32)
    kept_c = np.flatnonzero((cols >= b[0]) & (cols < b[2]))
    kept_r = np.flatnonzero((rows >= b[1]) & (rows < b[3]))
    assert roi[0, 2] - roi[0, 0] == len(kept_c)
    assert roi[0, 3] - roi[0, 1] == len(kept_r)
    if len(kept_c):
        assert (kept_c[0], kept_c[-1] + 1) == (roi[0, 0], roi[0, 2])
    if len(kept_r):
        assert (kept_r[0], kept_r[-1] + 1) == (roi[0, 1], roi[0, 3])


# --------------------------------------------------------------------------------------------
# mask assembly vs a dense reference
# --------------------------------------------------------------------------------------------


def _upsample_factor(proto_hw, source_hw):
    mh, mw = proto_hw
    h, w = source_hw
    gain = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - round(h * gain)) | (4 * mw - round(w * gain))
    return 4 // math.gcd(4, pad | pad // 2)


def _dense_reference_masks(protos, coeffs, boxes, source_hw):
    """process_mask_native as in ultralytics 8.4.190, with cv2.resize for F.interpolate."""
    c, mh, mw = protos.shape
    h, w = source_hw
    logits = (coeffs @ protos.reshape(c, -1)).reshape(-1, mh, mw).astype(np.float32)
    f = _upsample_factor((mh, mw), source_hw)
    uh, uw = f * mh, f * mw
    g = min(uh / h, uw / w)
    ch, cw = round(h * g), round(w * g)
    top = round((uh - ch) / 2 - 0.1)
    left = round((uw - cw) / 2 - 0.1)
    cols = np.arange(w, dtype=np.float32)[None, :]
    rows = np.arange(h, dtype=np.float32)[:, None]
    out = np.zeros((len(coeffs), h, w), dtype=bool)
    for i, lg in enumerate(logits):
        up = cv2.resize(lg, (uw, uh), interpolation=cv2.INTER_LINEAR)
        crop = np.ascontiguousarray(up[top : top + ch, left : left + cw])
        full = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
        x1, y1, x2, y2 = boxes[i]
        inside = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
        out[i] = (full > 0) & inside
    return out


# (source_hw, imgsz, auto): proto size = letterbox input size / 4.
MASK_CASES = [
    pytest.param((480, 640), (256, 256), True, id="4:3-auto"),
    pytest.param((480, 640), (256, 256), False, id="4:3-static"),
    pytest.param((180, 320), (256, 256), True, id="16:9-auto"),
    pytest.param((320, 180), (256, 256), False, id="portrait-static"),
    pytest.param((533, 800), (256, 256), True, id="800x533-auto"),
    pytest.param((517, 333), (256, 256), True, id="333x517-auto"),
    pytest.param((517, 333), (256, 256), False, id="333x517-static"),
    pytest.param((599, 1000), (128, 128), True, id="1000x599-auto"),
    pytest.param((45, 60), (128, 128), False, id="upscale-60x45"),
    pytest.param((37, 91), (128, 128), True, id="upscale-odd-auto"),
    pytest.param((32, 32), (128, 128), False, id="upscale-equal-proto"),
    pytest.param((64, 64), (64, 64), False, id="source-equals-input"),
]


def _mask_case(source_hw, imgsz, auto, seed=0, n=6):
    info = letterbox_geometry(source_hw, imgsz, 32, auto)
    ih, iw = info.input_hw
    assert ih % 4 == 0 and iw % 4 == 0
    rng = np.random.default_rng(seed + 31 * source_hw[0] + source_hw[1])
    protos = rng.normal(size=(32, ih // 4, iw // 4)).astype(np.float32)
    coeffs = rng.normal(size=(n, 32)).astype(np.float32)
    h, w = source_hw
    xy1 = rng.uniform(-0.1, 0.7, size=(n, 2)) * [w, h]
    xy2 = xy1 + rng.uniform(0.1, 0.6, size=(n, 2)) * [w, h]
    boxes = np.concatenate([xy1, xy2], axis=1).astype(np.float32)
    boxes[0] = [0, 0, w, h]  # one full-frame box: every pixel compared
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return protos, coeffs, boxes


def test_mask_cases_cover_all_upsample_factors():
    factors = set()
    for p in MASK_CASES:
        source_hw, imgsz, auto = p.values
        ih, iw = letterbox_geometry(source_hw, imgsz, 32, auto).input_hw
        factors.add(_upsample_factor((ih // 4, iw // 4), source_hw))
    assert factors == {1, 2, 4}


@pytest.mark.parametrize(("source_hw", "imgsz", "auto"), MASK_CASES)
def test_assemble_mask_matches_dense_reference(source_hw, imgsz, auto):
    protos, coeffs, boxes = _mask_case(source_hw, imgsz, auto)
    h, w = source_hw
    reference = _dense_reference_masks(protos, coeffs, boxes, source_hw)
    resampler = MaskResampler.create(protos.shape[1:], source_hw)
    rois = box_roi(boxes, source_hw)
    for i in range(len(coeffs)):
        c0, r0, c1, r1 = rois[i]
        crop = assemble_mask(coeffs[i], protos, rois[i], resampler)
        assert crop.dtype == bool
        assert crop.shape == (r1 - r0, c1 - c0)
        dense = np.zeros((h, w), dtype=bool)
        dense[r0:r1, c0:c1] = crop
        ref = reference[i]
        # Exact outside the ROI (both zero there), >= 99.9 % agreement inside.
        outside = np.ones((h, w), dtype=bool)
        outside[r0:r1, c0:c1] = False
        np.testing.assert_array_equal(dense[outside], ref[outside])
        mismatches = int(np.count_nonzero(dense != ref))
        assert mismatches <= 0.001 * max(crop.size, 1), (i, mismatches, crop.size)
    # Non-vacuous: the full-frame mask has both classes.
    assert 0 < reference[0].mean() < 1


@pytest.mark.parametrize("roi", [(5, 5, 5, 10), (5, 5, 10, 5), (10, 10, 5, 5), (0, 0, 0, 0)])
def test_assemble_mask_empty_roi(roi):
    protos, coeffs, _ = _mask_case((45, 60), (128, 128), False, n=1)
    resampler = MaskResampler.create(protos.shape[1:], (45, 60))
    crop = assemble_mask(coeffs[0], protos, roi, resampler)
    assert crop.dtype == bool
    assert crop.size == 0


def test_assemble_mask_sign():
    # Positive everywhere -> full crop; negative everywhere -> empty crop.
    protos = np.ones((32, 16, 16), np.float32)
    resampler = MaskResampler.create((16, 16), (50, 50))
    roi = (3, 4, 40, 45)
    assert assemble_mask(np.full(32, 0.1, np.float32), protos, roi, resampler).all()
    assert not assemble_mask(np.full(32, -0.1, np.float32), protos, roi, resampler).any()


# --------------------------------------------------------------------------------------------
# prepare_detections(...).to_masks(): everything mode from raw outputs (no model)
# --------------------------------------------------------------------------------------------


def _everything(
    output0: np.ndarray,
    protos: np.ndarray,
    input_hw: tuple[int, int],
    source_hw: tuple[int, int],
    conf: float,
    iou: float,
    max_det: int,
) -> Masks:
    return prepare_detections(output0, protos, input_hw, source_hw, conf, iou, max_det).to_masks()


@pytest.mark.parametrize(
    ("source_hw", "scores", "coeff_sign"),
    [
        pytest.param((45, 60), [0.1, 0.2], 1.0, id="below-conf"),
        pytest.param((480, 640), [], 1.0, id="no-anchors"),
        pytest.param((37, 91), [0.9, 0.8], -1.0, id="all-masks-empty"),
    ],
)
def test_everything_from_raw_outputs_zero_detections(source_hw, scores, coeff_sign):
    info = letterbox_geometry(source_hw, (128, 128), 32, True)
    ih, iw = info.input_hw
    output0 = _make_output0([(ih / 2, iw / 2, 30, 30, s, 0.0) for s in scores])
    output0[0, 5:, :] = coeff_sign
    protos = np.ones((1, 32, ih // 4, iw // 4), np.float32)
    result = _everything(output0, protos, info.input_hw, source_hw, 0.4, 0.9, 300)
    assert isinstance(result, Masks)
    assert len(result) == 0
    assert result.image_hw == source_hw
    assert result.xyxy.shape == (0, 4)
    assert result.confidence.shape == (0,)
    assert result.mask.shape == (0, *source_hw)


def test_everything_from_raw_outputs_matches_reference_chain():
    source_hw, imgsz = (533, 800), (256, 256)
    info = letterbox_geometry(source_hw, imgsz, 32, True)
    ih, iw = info.input_hw
    rng = np.random.default_rng(9)
    n = 40
    cxcy = rng.uniform(0, 1, size=(n, 2)) * [iw, ih]
    wh = rng.uniform(10, 120, size=(n, 2))
    scores = rng.uniform(0, 1, size=n).astype(np.float32)
    output0 = np.zeros((1, 37, n), np.float32)
    output0[0, 0:2] = cxcy.T
    output0[0, 2:4] = wh.T
    output0[0, 4] = scores
    output0[0, 5:] = rng.normal(size=(32, n))
    protos = rng.normal(size=(1, 32, ih // 4, iw // 4)).astype(np.float32)
    conf, iou, max_det = 0.4, 0.5, 12
    result = _everything(output0, protos, info.input_hw, source_hw, conf, iou, max_det)

    # Reference chain.
    keep = np.flatnonzero(scores > np.float32(conf))
    xyxy = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)[keep].astype(np.float32)
    order = [keep[i] for i in _greedy_nms_reference(xyxy, scores[keep], iou, max_det)]
    boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)[order]
    sx, sy = info.resized_hw[1] / source_hw[1], info.resized_hw[0] / source_hw[0]
    boxes = (boxes - [info.pad_left, info.pad_top] * 2) / [sx, sy, sx, sy]
    boxes = boxes.clip(0, [source_hw[1], source_hw[0]] * 2).astype(np.float32)
    ref_masks = _dense_reference_masks(protos[0], output0[0, 5:, order], boxes, source_hw)
    nonempty = ref_masks.reshape(len(order), -1).any(axis=1)
    assert len(order) == max_det  # the cut is exercised

    assert len(result) == int(nonempty.sum())
    np.testing.assert_array_equal(result.confidence, scores[order][nonempty])
    np.testing.assert_allclose(
        result.xyxy, apply_full_box(boxes[nonempty], source_hw), atol=0.05, rtol=0
    )
    dense = result.mask
    for k, ref in enumerate(ref_masks[nonempty]):
        assert np.count_nonzero(dense[k] != ref) <= 0.001 * dense[k].size


@pytest.mark.parametrize(
    ("max_det", "expectation"),
    [(0, DoesNotRaise()), (1, DoesNotRaise())],
)
def test_everything_from_raw_outputs_max_det(max_det, expectation):
    info = letterbox_geometry((45, 60), (128, 128), 32, False)
    ih, iw = info.input_hw
    output0 = _make_output0([(40, 40, 30, 30, 0.9, 0.0), (90, 90, 30, 30, 0.8, 0.0)])
    output0[0, 5:, :] = 1.0
    protos = np.ones((1, 32, ih // 4, iw // 4), np.float32)
    with expectation:
        result = _everything(output0, protos, info.input_hw, (45, 60), 0.4, 0.9, max_det)
        assert len(result) == max_det


# --------------------------------------------------------------------------------------------
# Detections: masks assembled on demand (stage (a))
# --------------------------------------------------------------------------------------------


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
    first = dets.mask_crop(3)
    with ThreadPoolExecutor(2) as pool:
        dets.pool, dets.workers = pool, 2
        dets.prefetch([3, 3, 5, 7, 9, 1, 1])
    assert dets.num_assembled == 5
    assert dets.mask_crop(3) is first  # cached, not assembled again


def test_packed_crops_equal_the_dense_assembly():
    """Every kept crop decodes to exactly what assemble_mask computes (the bool path)."""
    dets = _detections(60, (480, 640), seed=3)
    res = dets.to_masks()
    assert len(res) > 20
    dense = res.mask
    kept = [i for i in range(len(dets)) if dets.area(i) > 0]
    for k, i in enumerate(kept):
        ref = assemble_mask(dets.coefficients[i], dets.protos, dets.rois[i], dets.resampler)
        crop = res.crops[k]
        assert (crop.x0, crop.y0) == (int(dets.rois[i, 0]), int(dets.rois[i, 1]))
        np.testing.assert_array_equal(crop.data, ref)
        np.testing.assert_array_equal(dets.crop(i), ref)
        assert crop.area == int(ref.sum()) == int(dense[k].sum())
        h, w = ref.shape
        np.testing.assert_array_equal(dense[k, crop.y0 : crop.y0 + h, crop.x0 : crop.x0 + w], ref)


def test_assembled_masks_stay_in_bounded_memory():
    """Assembling many large masks holds them packed: the traced peak stays far below the bool
    crops (each assembled mask is packed before the next one is made)."""
    import tracemalloc

    h, w = 720, 1280
    n = 64
    dets = _detections(n, (h, w), seed=4)
    dets.xyxy[:] = np.array([0, 0, w, h], np.float32)  # every box the whole frame: worst case
    dets.rois[:] = np.array([0, 0, w, h])
    tracemalloc.start()
    try:
        res = dets.to_masks()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bool_bytes = n * h * w
    assert len(res) == n
    assert sum(c.nbytes for c in res.crops) == n * h * (w // 8)
    # packed 7.4 MB + one mask's float32 assembly temporaries (~4 x 3.7 MB); bool: 59 MB
    assert peak < bool_bytes / 2, (peak, bool_bytes)


class _Cache:
    """A later stage's per-frame state (FrameCache)."""

    def __init__(self) -> None:
        self.released = 0
        self.payload = np.zeros(1000, np.uint8)

    @property
    def nbytes(self) -> int:
        return int(self.payload.nbytes)

    def release(self) -> None:
        self.released += 1


def test_detections_keep_typed_caches_of_later_stages():
    dets = _detections(5, (120, 160))
    base = dets.nbytes
    cache = dets.cache(_Cache)
    assert isinstance(cache, _Cache) and dets.cache(_Cache) is cache  # one per type and frame
    assert dets.nbytes == base + 1000
    dets.mask_crop(0)
    dets.release_masks()
    assert cache.released == 1 and dets.num_assembled == 0
    assert dets.cache(_Cache) is cache  # released, not dropped: it decides what to keep

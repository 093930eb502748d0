"""edge.track: the pure functions against dense references, and the Tracker's promises."""

from __future__ import annotations

from contextlib import ExitStack as DoesNotRaise

import numpy as np
import pytest

from edge.track import (
    Tracker,
    TrackerConfig,
    box_iou,
    crop_iou_pairs,
    greedy_match,
    predict_boxes,
)
from edge.types import MaskCrop, Masks

H, W = 120, 160


def _rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return m


def _masks(
    rects: list[tuple[int, int, int, int]],
    scores: list[float] | None = None,
    class_id: list[int] | None = None,
) -> Masks:
    dense = [_rect(*r) for r in rects]
    crops = tuple(MaskCrop.from_dense(m) for m in dense)
    xyxy = np.array(
        [[c.x0, c.y0, c.x0 + c.shape[1], c.y0 + c.shape[0]] for c in crops], np.float32
    ).reshape(-1, 4)
    conf = np.array(scores if scores is not None else [0.9] * len(rects), np.float32)
    result = Masks(xyxy, conf, crops, (H, W))
    if class_id is not None:
        result.class_id = np.array(class_id, np.int64)  # the YOLOE field, where it exists
    return result


# ------------------------------------------------------------------------------------------
# pure functions
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([[0, 0, 10, 10]], [[0, 0, 10, 10]], [[1.0]]),
        ([[0, 0, 10, 10]], [[5, 0, 15, 10]], [[50 / 150]]),
        ([[0, 0, 10, 10]], [[20, 20, 30, 30]], [[0.0]]),
        ([[0, 0, 0, 10]], [[0, 0, 0, 10]], [[0.0]]),  # degenerate: no division by zero
        (np.zeros((0, 4)), [[0, 0, 1, 1]], np.zeros((0, 1))),
    ],
)
def test_box_iou(a, b, expected):
    np.testing.assert_allclose(box_iou(np.array(a), np.array(b)), np.array(expected))


def test_predict_boxes_moves_by_velocity_times_gap():
    out = predict_boxes(np.array([[0, 0, 10, 10]]), np.array([[2, 1, 2, 1]]), np.array([3]))
    np.testing.assert_allclose(out, [[6, 3, 16, 13]])


@pytest.mark.parametrize("shift", [(0, 0), (5, -3), (-40, 7), (200, 0)])
def test_crop_iou_pairs_equals_dense_iou(shift):
    rng = np.random.default_rng(0)
    a_dense = [rng.random((H, W)) < 0.02 for _ in range(2)] + [_rect(10, 10, 60, 50)]
    b_dense = [_rect(15, 5, 70, 45), rng.random((H, W)) < 0.5, np.zeros((H, W), bool)]
    a = [MaskCrop.from_dense(m) for m in a_dense]
    b = [MaskCrop.from_dense(m) for m in b_dense]
    pairs = np.array([(i, j) for i in range(3) for j in range(3)])
    shifts = np.array([shift] * 3)
    got = crop_iou_pairs(a, b, pairs, shifts)
    dx, dy = shift
    for p, (i, j) in enumerate(pairs):
        moved = np.zeros((H + 400, W + 400), bool)
        ys, xs = np.nonzero(a_dense[i])
        moved[ys + dy + 200, xs + dx + 200] = True
        other = np.zeros_like(moved)
        other[200 : 200 + H, 200 : 200 + W] = b_dense[j]
        union = np.count_nonzero(moved | other)
        want = np.count_nonzero(moved & other) / union if union else 0.0
        assert got[p] == pytest.approx(want), (i, j)


def test_crop_iou_pairs_no_pairs():
    assert crop_iou_pairs([], [], np.zeros((0, 2), int)).shape == (0,)


@pytest.mark.parametrize(
    ("sim", "min_sim", "matches", "free_rows", "free_cols"),
    [
        # the best pair first: row 0 takes col 1 (0.9), row 1 gets col 0
        ([[0.5, 0.9], [0.4, 0.8]], 0.3, [(0, 1), (1, 0)], [], []),
        # below the gate: nothing
        ([[0.2]], 0.3, [], [0], [0]),
        # more detections than tracks
        ([[0.1, 0.6, 0.7]], 0.3, [(0, 2)], [], [0, 1]),
        # ties: the lower row, then the lower column
        ([[0.5, 0.5], [0.5, 0.5]], 0.3, [(0, 0), (1, 1)], [], []),
        (np.zeros((0, 3)), 0.3, [], [], [0, 1, 2]),
    ],
)
def test_greedy_match(sim, min_sim, matches, free_rows, free_cols):
    m, fr, fc = greedy_match(np.array(sim, dtype=float), min_sim)
    assert [tuple(x) for x in m.tolist()] == matches
    assert fr.tolist() == free_rows
    assert fc.tolist() == free_cols


@pytest.mark.parametrize(
    ("changes", "expectation"),
    [
        ({}, DoesNotRaise()),
        ({"min_frames": 0}, pytest.raises(ValueError, match="min_frames")),
        ({"max_missed": -1}, pytest.raises(ValueError, match="max_missed")),
        ({"high_score": 1.5}, pytest.raises(ValueError, match="high_score")),
        ({"velocity_smoothing": 0.0}, pytest.raises(ValueError, match="velocity_smoothing")),
    ],
)
def test_tracker_config_names_the_bad_field(changes, expectation):
    with expectation:
        TrackerConfig(**changes)


# ------------------------------------------------------------------------------------------
# the tracker
# ------------------------------------------------------------------------------------------


def _run(tracker: Tracker, frames: list[Masks]) -> list[list[int]]:
    return [tracker.update(f).tolist() for f in frames]


def test_a_moving_object_keeps_one_id_after_confirmation():
    frames = [_masks([(10 + 6 * k, 20, 40 + 6 * k, 50)]) for k in range(8)]
    tracker = Tracker(TrackerConfig(min_frames=2))
    ids = _run(tracker, frames)
    assert ids[0] == [-1]  # tentative on its first frame
    assert all(i == [1] for i in ids[1:])
    assert [e.type for e in tracker.events] == []


def test_enter_event_on_confirmation_and_leave_after_max_missed():
    cfg = TrackerConfig(min_frames=3, max_missed=2)
    tracker = Tracker(cfg)
    seen = [_masks([(10, 10, 40, 40)])] * 3
    events = []
    for f in [*seen, _masks([]), _masks([]), _masks([])]:
        tracker.update(f)
        events += [(e.type, e.track_id, e.frame) for e in tracker.events]
    assert events == [("enter", 1, 3), ("leave", 1, 6)]


def test_a_lost_track_comes_back_with_its_id_and_predicted_motion():
    # moves right 8 px a frame, vanishes for 2 frames (occluded), comes back further on
    tracker = Tracker(TrackerConfig(min_frames=1, max_missed=3))
    path = [0, 8, 16, 24, None, None, 48, 56]
    ids = [
        tracker.update(_masks([] if x is None else [(10 + x, 30, 30 + x, 50)])).tolist()
        for x in path
    ]
    assert ids == [[1], [1], [1], [1], [], [], [1], [1]]


def test_without_motion_prediction_the_jump_would_not_match():
    # the same reappearance is far from the last seen box: only the prediction bridges it
    last, back = np.array([[34, 30, 54, 50]]), np.array([[58, 30, 78, 50]])
    assert box_iou(last, back)[0, 0] == 0.0
    pred = predict_boxes(last, np.array([[8, 0, 8, 0]]), np.array([3]))
    assert box_iou(pred, back)[0, 0] == 1.0


def test_crossing_objects_keep_their_ids():
    # two squares move towards each other and cross, the first in front of the second
    tracker = Tracker(TrackerConfig(min_frames=1))
    out = []
    for k in range(13):
        a = _rect(10 + 10 * k, 20, 40 + 10 * k, 50)
        b = _rect(120 - 10 * k, 35, 150 - 10 * k, 65) & ~a  # occluded by a while they cross
        dense = [a, b] if k % 2 else [b, a]  # detection order must not matter
        crops = tuple(MaskCrop.from_dense(m) for m in dense)
        xyxy = np.array(
            [[c.x0, c.y0, c.x0 + c.shape[1], c.y0 + c.shape[0]] for c in crops], np.float32
        )
        ids = tracker.update(Masks(xyxy, np.full(2, 0.9, np.float32), crops, (H, W))).tolist()
        out.append(ids if k % 2 else ids[::-1])
    assert sorted(out[0]) == [1, 2]
    assert all(ids == out[0] for ids in out)


def test_flicker_spends_no_id():
    tracker = Tracker(TrackerConfig(min_frames=3))
    frames = [_masks([(10, 10, 30, 30)]), _masks([]), _masks([(80, 80, 100, 100)]), _masks([])]
    assert _run(tracker, frames) == [[-1], [], [-1], []]
    steady = [_masks([(50, 50, 70, 70)])] * 3
    assert _run(tracker, steady)[-1] == [1]  # the first id handed out


def test_low_score_detection_continues_a_track_but_starts_none():
    cfg = TrackerConfig(min_frames=1, high_score=0.5)
    tracker = Tracker(cfg)
    box = (20, 20, 50, 50)
    assert tracker.update(_masks([box], [0.9])).tolist() == [1]
    assert tracker.update(_masks([box], [0.2])).tolist() == [1]  # score dipped: kept
    assert tracker.update(_masks([(90, 70, 120, 100)], [0.2])).tolist() == [-1]  # not new


def test_class_aware_when_classes_are_given():
    tracker = Tracker(TrackerConfig(min_frames=1))
    box = (20, 20, 50, 50)
    assert tracker.update(_masks([box], class_id=[0])).tolist() == [1]
    # same place, other class: a new object, not the same track
    assert tracker.update(_masks([box], class_id=[1])).tolist() == [2]


def test_class_agnostic_masks_match_across_any_class_id():
    tracker = Tracker(TrackerConfig(min_frames=1))
    box = (20, 20, 50, 50)
    assert tracker.update(_masks([box])).tolist() == [1]
    assert tracker.update(_masks([box], class_id=[-1])).tolist() == [1]


def test_mask_iou_separates_a_whole_from_its_part():
    # a big mask and a small part inside it: box IoU alone would let the part steal the id
    tracker = Tracker(TrackerConfig(min_frames=1))
    whole, part = (10, 10, 90, 90), (10, 10, 40, 40)
    first = tracker.update(_masks([whole, part])).tolist()
    for _ in range(5):
        assert tracker.update(_masks([part, whole])).tolist() == first[::-1]


def test_zero_detections_and_ids_stay_ints():
    tracker = Tracker()
    out = tracker.update(Masks.empty(H, W))
    assert out.dtype == np.int64 and out.shape == (0,)
    assert tracker.events == [] and tracker.active == 0


def test_masks_track_id_defaults_to_minus_one_and_follows_selection():
    m = _masks([(0, 0, 10, 10), (20, 20, 30, 30)])
    assert m.track_id.tolist() == [-1, -1]
    m.track_id = np.array([4, 7])
    assert m[[1]].track_id.tolist() == [7]
    with pytest.raises(ValueError, match="track_id"):
        Masks(m.xyxy, m.confidence, m.crops, (H, W), track_id=np.array([1]))


@pytest.mark.parametrize("step", [2, 3, 4])
def test_crop_iou_pairs_on_a_coarser_grid_stays_close(step):
    a = [MaskCrop.from_dense(_rect(11, 9, 61, 53))]
    b = [MaskCrop.from_dense(_rect(17, 5, 70, 46))]
    exact = crop_iou_pairs(a, b, np.array([[0, 0]]), np.array([[5, 3]]))[0]
    coarse = crop_iou_pairs(a, b, np.array([[0, 0]]), np.array([[5, 3]]), step=step)[0]
    assert abs(coarse - exact) < 0.08


def test_a_duplicate_mask_shares_its_parents_id():
    # FastSAM keeps near-identical masks of one object: one object, one id
    tracker = Tracker(TrackerConfig(min_frames=1))
    a, a2 = (20, 20, 60, 60), (20, 20, 60, 61)
    for _ in range(3):
        ids = tracker.update(_masks([a, a2], [0.9, 0.8])).tolist()
        assert ids == [1, 1]
    assert tracker.active == 1


def test_a_resized_box_moves_the_track_but_not_its_velocity():
    tracker = Tracker(TrackerConfig(min_frames=1, max_missed=3))
    for x in (0, 10, 20):
        tracker.update(_masks([(10 + x, 30, 40 + x, 60)]))
    tracker.update(_masks([(30, 30, 45, 60)]))  # half of it detected: not a jump back
    assert tracker._tracks[0].velocity[0] == pytest.approx(10.0)


@pytest.mark.parametrize("seed", range(6))
def test_lazy_greedy_equals_greedy_on_the_exact_matrix(seed):
    from edge.track import lazy_greedy_match

    rng = np.random.default_rng(seed)
    exact = np.round(rng.random((7, 9)), 1)  # rounded: plenty of ties
    upper = np.minimum(exact + np.round(rng.random((7, 9)), 1) * (rng.random((7, 9)) < 0.5), 1)
    calls = []

    def value(r, c):
        calls.append((r, c))
        return float(exact[r, c])

    lazy = lazy_greedy_match(upper, value, 0.3)
    greedy, _, _ = greedy_match(exact, 0.3)
    assert lazy.tolist() == greedy.tolist()
    assert len(set(calls)) == len(calls) < exact.size  # each pair at most once, not all

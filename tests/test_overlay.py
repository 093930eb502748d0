"""Tests for the crop-space overlay (edge.overlay) against the frame-sized reference."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.overlay import LABEL_KINDS, draw_overlay, label_texts, mask_colors
from edge.types import MaskCrop, Masks


def _reference_overlay(image_bgr, result, alpha=0.6, contours=True, boxes=False):
    """The previous implementation (a frame-sized label image and float blend), kept verbatim
    as the reference the crop-space painting must reproduce byte for byte."""
    out = image_bgr.copy()
    if len(result) == 0:
        return out
    colors = mask_colors(len(result))
    label = np.full(result.image_hw, -1, dtype=np.int32)
    for i in np.argsort(-result.area, kind="stable"):
        crop = result.crops[i]
        h, w = crop.data.shape
        view = label[crop.y0 : crop.y0 + h, crop.x0 : crop.x0 + w]
        view[crop.data] = i
    painted = label >= 0
    layer = colors[label[painted]].astype(np.float32)
    out[painted] = (out[painted] * (1 - alpha) + layer * alpha).astype(np.uint8)
    if contours:
        for crop in result.crops:
            cs, _ = cv2.findContours(
                crop.data.astype(np.uint8),
                cv2.RETR_EXTERNAL,
                cv2.CHAIN_APPROX_SIMPLE,
                offset=(crop.x0, crop.y0),
            )
            cv2.drawContours(out, cs, -1, (255, 255, 255), 1, cv2.LINE_AA)
    if boxes:
        for i, (x1, y1, x2, y2) in enumerate(result.xyxy):
            color = tuple(int(c) for c in colors[i])
            cv2.rectangle(out, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), color, 1)
    return out


def _random_result(h, w, n, seed, equal_areas=False):
    """Overlapping blob masks, some touching the frame's borders, some empty."""
    rng = np.random.default_rng(seed)
    crops, boxes = [], []
    for i in range(n):
        ch, cw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        if equal_areas:
            ch, cw = min(h, 8), min(w, 8)
        small = rng.random((max(ch // 3, 1), max(cw // 3, 1))) < 0.6
        data = cv2.resize(small.astype(np.uint8), (cw, ch), interpolation=cv2.INTER_NEAREST)
        data = data.astype(bool)
        if equal_areas:
            data[:] = True
        if i % 7 == 3:
            data[:] = False  # an empty mask in a non-empty crop
        x0 = int(rng.choice([0, w - cw, rng.integers(0, w - cw + 1)]))
        y0 = int(rng.choice([0, h - ch, rng.integers(0, h - ch + 1)]))
        crops.append(MaskCrop(data, x0, y0))
        boxes.append([x0, y0, x0 + cw, y0 + ch])
    crops.append(MaskCrop(np.zeros((0, 0), bool), 0, 0))
    boxes.append([0, 0, 0, 0])
    return Masks(
        xyxy=np.array(boxes, np.float32).reshape(-1, 4),
        confidence=rng.random(len(crops)).astype(np.float32),
        crops=tuple(crops),
        image_hw=(h, w),
    )


@pytest.mark.parametrize(
    ("hw", "n", "seed", "equal_areas"),
    [
        pytest.param((48, 64), 12, 0, False, id="64x48-12"),
        pytest.param((97, 131), 40, 1, False, id="131x97-40-overlapping"),
        pytest.param((31, 17), 5, 2, False, id="17x31-odd"),
        pytest.param((40, 40), 9, 3, True, id="equal-areas-tie-order"),
        pytest.param((240, 320), 100, 4, False, id="320x240-100"),
    ],
)
@pytest.mark.parametrize("alpha", [0.6, 0.35, 1.0])
@pytest.mark.parametrize(("contours", "boxes"), [(False, False), (True, False), (True, True)])
def test_overlay_equals_reference(hw, n, seed, equal_areas, alpha, contours, boxes):
    rng = np.random.default_rng(seed + 100)
    image = rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    before = image.copy()
    result = _random_result(*hw, n, seed, equal_areas)
    ours = draw_overlay(image, result, alpha=alpha, contours=contours, boxes=boxes)
    ref = _reference_overlay(image, result, alpha=alpha, contours=contours, boxes=boxes)
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(image, before)  # the input is not modified
    # and the same bytes once saved as PNG (the lossless format compares file contents)
    assert cv2.imencode(".png", ours)[1].tobytes() == cv2.imencode(".png", ref)[1].tobytes()


def test_overlay_outside_masks_untouched_without_contours():
    image = np.full((50, 60, 3), 77, np.uint8)
    result = _random_result(50, 60, 6, 5)
    out = draw_overlay(image, result, contours=False)
    union = result.mask.any(axis=0)
    assert not np.any(out[~union] != 77)
    assert np.all(np.any(out[union] != 77, axis=1))  # every mask pixel is painted


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param("id", ["0", "1"], id="id"),
        pytest.param("score", ["0.90", "0.25"], id="score"),
        pytest.param("id+score", ["0 0.90", "1 0.25"], id="id+score"),
    ],
)
def test_label_texts(kind, expected):
    result = _two_masks()
    assert label_texts(result, kind) == expected


def _two_masks():
    a = np.ones((10, 12), bool)
    b = np.ones((6, 6), bool)
    return Masks(
        xyxy=np.array([[20, 15, 32, 25], [0, 0, 6, 6]], np.float32),
        confidence=np.array([0.9, 0.25], np.float32),
        crops=(MaskCrop(a, 20, 15), MaskCrop(b, 0, 0)),
        image_hw=(40, 50),
    )


@pytest.mark.parametrize("labels", [*LABEL_KINDS, ["car", ""]])
def test_labels_draw_tags_near_boxes(labels):
    image = np.zeros((40, 50, 3), np.uint8)
    result = _two_masks()
    plain = draw_overlay(image, result)
    tagged = draw_overlay(image, result, labels=labels)
    changed = np.any(tagged != plain, axis=2)
    assert changed.any()
    ys, xs = np.nonzero(changed)
    # tags sit at a box's top-left corner (clamped into the frame), not elsewhere
    assert ys.max() <= 25 and xs.min() >= 0
    if isinstance(labels, list):  # an empty text draws no tag for mask 1 at (0, 0)
        assert not changed[:6, :6].any()


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        pytest.param("name", "expected one of", id="unknown-kind"),
        pytest.param(["only one"], "expected 2 texts", id="wrong-count"),
    ],
)
def test_labels_rejects_bad_input(labels, message):
    with pytest.raises(ValueError, match=message):
        draw_overlay(np.zeros((40, 50, 3), np.uint8), _two_masks(), labels=labels)


def test_overlay_with_precomputed_contours_is_the_same():
    from edge.encode import mask_contours

    image = np.random.default_rng(9).integers(0, 256, size=(97, 131, 3), dtype=np.uint8)
    result = _random_result(97, 131, 30, 9)
    traced = [mask_contours(c) for c in result.crops]
    np.testing.assert_array_equal(
        draw_overlay(image, result, traced=traced), _reference_overlay(image, result)
    )


def test_track_colors_stable_by_id_and_grey_when_untracked():
    from edge.overlay import UNTRACKED_COLOR, mask_colors, track_colors

    a = track_colors(np.array([5, -1, 2]))
    b = track_colors(np.array([2, 5]))
    assert (a[0] == b[1]).all() and (a[2] == b[0]).all()  # same id, same colour, any order
    assert tuple(a[1]) == UNTRACKED_COLOR
    assert (track_colors(np.arange(4)) == mask_colors(4)).all()  # ids walk the same palette
    assert track_colors(np.zeros(0, np.int64)).shape == (0, 3)


def test_tracked_overlay_paints_by_track_id_and_labels_it():
    from edge.overlay import draw_overlay, label_texts, track_colors
    from edge.types import MaskCrop, Masks

    img = np.zeros((20, 30, 3), np.uint8)
    crops = (MaskCrop(np.ones((5, 5), bool), 2, 2), MaskCrop(np.ones((5, 5), bool), 20, 10))
    xyxy = np.array([[2, 2, 7, 7], [20, 10, 25, 15]], np.float32)
    tracked = Masks(xyxy, np.array([0.9, 0.8], np.float32), crops, (20, 30),
                    metadata={"tracking": True}, track_id=np.array([7, -1]))  # fmt: skip
    out = draw_overlay(img, tracked, contours=False, alpha=1.0)
    assert (out[4, 4] == track_colors(np.array([7]))[0]).all()
    assert label_texts(tracked, "id+score") == ["#7 0.90", "#- 0.80"]
    swapped = tracked[[1, 0]]  # another frame, other order: the same colour for track 7
    out2 = draw_overlay(img, swapped, contours=False, alpha=1.0)
    assert (out2[4, 4] == out[4, 4]).all()

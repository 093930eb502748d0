"""Tests for the result types ``Masks`` and ``MaskCrop``."""

from __future__ import annotations

from contextlib import nullcontext as DoesNotRaise

import numpy as np
import pytest

from edge.types import MaskCrop, Masks

HW = (12, 16)


def _crops():
    a = np.zeros((3, 4), bool)
    a[0, 0] = a[2, 3] = True  # area 2
    b = np.ones((2, 2), bool)  # area 4
    c = np.zeros((5, 1), bool)  # area 0
    d = np.array([[True, False, True]])  # area 2, touching the bottom-right corner
    return (MaskCrop(a, 1, 2), MaskCrop(b, 10, 0), MaskCrop(c, 0, 7), MaskCrop(d, 13, 11))


def _masks():
    crops = _crops()
    return Masks(
        xyxy=np.arange(16, dtype=np.float32).reshape(4, 4),
        confidence=np.array([0.9, 0.8, 0.7, 0.6], np.float32),
        crops=crops,
        image_hw=HW,
        timings={"infer": 1.5},
        data={"prompt_index": np.array([10, 11, 12, 13]), "label": np.array(list("abcd"))},
        metadata={"frame_id": 7},
    )


# --------------------------------------------------------------------------------------------
# construction / validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expectation"),
    [
        pytest.param({}, DoesNotRaise(), id="valid"),
        pytest.param({"crops": list(_crops())}, DoesNotRaise(), id="crops-as-list"),
        pytest.param(
            {"xyxy": np.zeros((3, 4), np.float32)},
            pytest.raises(ValueError, match=r"xyxy must have shape \(4, 4\)"),
            id="xyxy-rows",
        ),
        pytest.param(
            {"xyxy": np.zeros((4, 5), np.float32)},
            pytest.raises(ValueError, match="xyxy"),
            id="xyxy-cols",
        ),
        pytest.param(
            {"xyxy": np.zeros((16,), np.float32)},
            pytest.raises(ValueError, match="xyxy"),
            id="xyxy-flat",
        ),
        pytest.param(
            {"confidence": np.zeros((5,), np.float32)},
            pytest.raises(ValueError, match=r"confidence must have shape \(4,\)"),
            id="confidence-length",
        ),
        pytest.param(
            {"confidence": np.zeros((4, 1), np.float32)},
            pytest.raises(ValueError, match="confidence"),
            id="confidence-2d",
        ),
        pytest.param(
            {"data": {"prompt_index": np.arange(3)}},
            pytest.raises(ValueError, match="prompt_index"),
            id="data-length",
        ),
    ],
)
def test_masks_validation(kwargs, expectation):
    args = {
        "xyxy": np.zeros((4, 4), np.float32),
        "confidence": np.zeros((4,), np.float32),
        "crops": _crops(),
        "image_hw": HW,
    }
    args.update(kwargs)
    with expectation:
        m = Masks(**args)
        assert isinstance(m.crops, tuple)
        assert len(m) == 4


@pytest.mark.parametrize("hw", [(1, 1), (480, 640), (7, 3)])
def test_masks_empty(hw):
    m = Masks.empty(*hw)
    assert len(m) == 0
    assert m.image_hw == hw
    assert m.xyxy.shape == (0, 4) and m.xyxy.dtype == np.float32
    assert m.confidence.shape == (0,) and m.confidence.dtype == np.float32
    assert m.mask.shape == (0, *hw) and m.mask.dtype == bool
    assert m.area.shape == (0,) and m.area.dtype == np.int64
    assert len(m[:]) == 0
    # Separate instances do not share mutable dicts.
    other = Masks.empty(*hw)
    m.timings["infer"] = 1.0
    assert other.timings == {}


# --------------------------------------------------------------------------------------------
# indexing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        pytest.param(0, [0], id="int-0"),
        pytest.param(3, [3], id="int-last"),
        pytest.param(-1, [3], id="int-negative"),
        pytest.param(np.int64(2), [2], id="numpy-int"),
        pytest.param(slice(1, 3), [1, 2], id="slice"),
        pytest.param(slice(None, None, -1), [3, 2, 1, 0], id="slice-reversed"),
        pytest.param(slice(5, 9), [], id="slice-empty"),
        pytest.param(np.array([True, False, True, True]), [0, 2, 3], id="bool-array"),
        pytest.param(np.zeros(4, bool), [], id="bool-none"),
        pytest.param(np.array([3, 0]), [3, 0], id="int-array-reorder"),
        pytest.param([1, 1], [1, 1], id="list-repeat"),
        pytest.param(np.array([], dtype=np.intp), [], id="int-array-empty"),
    ],
)
def test_masks_getitem(index, expected):
    m = _masks()
    sub = m[index]
    assert isinstance(sub, Masks)
    assert len(sub) == len(expected)
    np.testing.assert_array_equal(sub.xyxy, m.xyxy[expected].reshape(-1, 4))
    np.testing.assert_array_equal(sub.confidence, m.confidence[expected])
    assert sub.crops == tuple(m.crops[i] for i in expected)
    np.testing.assert_array_equal(sub.data["prompt_index"], m.data["prompt_index"][expected])
    np.testing.assert_array_equal(sub.data["label"], m.data["label"][expected])
    assert sub.image_hw == m.image_hw
    assert sub.timings == m.timings and sub.metadata == m.metadata
    # Copies of the dicts, not the same objects.
    assert sub.timings is not m.timings and sub.metadata is not m.metadata
    np.testing.assert_array_equal(sub.mask, m.mask[expected].reshape(-1, *HW))
    np.testing.assert_array_equal(sub.area, m.area[expected])


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(4, id="int-out-of-range"),
        pytest.param(-5, id="negative-out-of-range"),
        pytest.param(np.array([True, False]), id="bool-wrong-length"),
        pytest.param(np.array([0, 9]), id="int-array-out-of-range"),
    ],
)
def test_masks_getitem_errors(index):
    with pytest.raises(IndexError):
        _masks()[index]


# --------------------------------------------------------------------------------------------
# densification / area
# --------------------------------------------------------------------------------------------


def test_masks_mask_matches_crops():
    m = _masks()
    dense = m.mask
    assert dense.shape == (4, *HW) and dense.dtype == bool
    expected = np.zeros((4, *HW), bool)
    expected[0, 2, 1] = expected[0, 4, 4] = True
    expected[1, 0:2, 10:12] = True
    expected[3, 11, 13] = expected[3, 11, 15] = True
    np.testing.assert_array_equal(dense, expected)
    # Each dense mask is exactly the crop pasted at its offset.
    for i, crop in enumerate(m.crops):
        h, w = crop.data.shape
        np.testing.assert_array_equal(
            dense[i, crop.y0 : crop.y0 + h, crop.x0 : crop.x0 + w], crop.data
        )
        assert dense[i].sum() == crop.area
    # Densifying twice gives independent arrays.
    dense[0] = True
    assert m.mask[0].sum() == 2


def test_masks_area():
    area = _masks().area
    assert area.dtype == np.int64
    np.testing.assert_array_equal(area, [2, 4, 0, 2])


def test_mask_crop_dense_and_paste():
    crop = MaskCrop(np.array([[True, False], [True, True]]), 2, 1)
    np.testing.assert_array_equal(
        crop.dense(3, 4),
        [[False, False, False, False], [False, False, True, False], [False, False, True, True]],
    )
    out = np.zeros((3, 4), bool)
    out[0, 0] = True
    crop.paste(out)
    assert out[0, 0] and out.sum() == 4  # paste ORs into the frame


# --------------------------------------------------------------------------------------------
# MaskCrop.contains
# --------------------------------------------------------------------------------------------

_CROP = MaskCrop(np.array([[True, False, True], [False, True, True]]), 5, 3)


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        pytest.param(5, 3, True, id="top-left-fg"),
        pytest.param(6, 3, False, id="bg-inside-crop"),
        pytest.param(7, 3, True, id="top-right-fg"),
        pytest.param(6, 4, True, id="interior-fg"),
        pytest.param(7, 4, True, id="bottom-right-fg"),
        pytest.param(5, 4, False, id="bottom-left-bg"),
        pytest.param(8, 3, False, id="right-of-crop"),
        pytest.param(7, 5, False, id="below-crop"),
        # Left/above the crop: must not wrap around to data[., -1] (which is True).
        pytest.param(4, 3, False, id="left-of-crop-no-wrap"),
        pytest.param(7, 2, False, id="above-crop-no-wrap"),
        pytest.param(-1, -1, False, id="negative"),
        pytest.param(0, 0, False, id="origin"),
    ],
)
def test_mask_crop_contains(x, y, expected):
    assert _CROP.contains(x, y) is expected
    # Consistent with the dense mask wherever the pixel is in a frame.
    if x >= 0 and y >= 0:
        assert bool(_CROP.dense(10, 10)[y, x]) is expected


@pytest.mark.parametrize(
    ("dense", "offset", "expected"),
    [
        pytest.param(np.eye(3, dtype=bool), (0, 0), ((0, 0), (3, 3)), id="whole"),
        pytest.param(
            np.pad(np.ones((2, 3), bool), ((4, 1), (5, 2))),
            (10, 20),
            ((15, 24), (2, 3)),
            id="offset",
        ),  # fmt: skip
        pytest.param(np.zeros((4, 4), bool), (7, 8), ((7, 8), (0, 0)), id="empty"),
    ],
)
def test_mask_crop_from_dense(dense, offset, expected):
    crop = MaskCrop.from_dense(dense, *offset)
    assert ((crop.x0, crop.y0), crop.data.shape) == expected
    assert crop.area == int(dense.sum()) and crop.data.flags["C_CONTIGUOUS"]
    h, w = dense.shape
    frame = crop.dense(offset[1] + h, offset[0] + w)
    np.testing.assert_array_equal(frame[offset[1] :, offset[0] :], dense)


# --------------------------------------------------------------------------------------------
# bit-packed storage
# --------------------------------------------------------------------------------------------


def _pattern(kind: str, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 31 * w + h)
    if kind == "random":
        return rng.random((h, w)) < 0.5
    if kind == "full":
        return np.ones((h, w), bool)
    if kind == "empty":
        return np.zeros((h, w), bool)
    out = np.zeros((h, w), bool)  # "edges": only the first and last column (padding bits)
    if w:
        out[:, 0] = out[:, -1] = True
    return out


@pytest.mark.parametrize("kind", ["random", "full", "empty", "edges"])
@pytest.mark.parametrize("w", [0, 1, 7, 8, 9, 15, 17, 63, 1921])
@pytest.mark.parametrize("h", [0, 1, 5])
def test_mask_crop_packed_round_trip(kind, w, h):
    data = _pattern(kind, h, w)
    crop = MaskCrop(data, 3, 4)
    assert crop.shape == (h, w) and crop.width == w
    assert crop.bits.shape == (h, (w + 7) // 8) and crop.bits.dtype == np.uint8
    assert crop.nbytes == h * ((w + 7) // 8)  # an eighth of the bool crop, rounded up per row
    back = crop.data
    assert back.dtype == bool and back.shape == (h, w) and back.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(back, data)
    assert crop.area == int(data.sum())
    again = MaskCrop.from_bits(crop.bits, w, 3, 4)  # area counted from the bits
    np.testing.assert_array_equal(again.data, data)
    assert again.area == crop.area
    np.testing.assert_array_equal(crop.dense(h + 4, w + 3)[4:, 3:], data)


def test_mask_crop_is_immutable_and_decodes_fresh_arrays():
    crop = MaskCrop(_pattern("random", 6, 13), 1, 2)
    with pytest.raises(AttributeError, match="immutable"):
        crop.x0 = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        crop.bits[0, 0] = 1
    first = crop.data
    first[:] = True  # a decoded copy: the crop does not change
    np.testing.assert_array_equal(crop.data, _pattern("random", 6, 13))
    assert crop.area == int(_pattern("random", 6, 13).sum())


def test_mask_crop_pickles_and_copies():
    import copy
    import pickle

    crop = MaskCrop(_pattern("random", 9, 21), 4, 7)
    for other in (pickle.loads(pickle.dumps(crop)), copy.deepcopy(crop), copy.copy(crop)):
        assert (other.x0, other.y0, other.shape, other.area) == (4, 7, (9, 21), crop.area)
        np.testing.assert_array_equal(other.data, crop.data)


@pytest.mark.parametrize(
    ("bits", "width", "match"),
    [
        pytest.param(np.zeros((2, 2), np.uint8), 17, r"\(h, 3\) uint8", id="too-few-bytes"),
        pytest.param(np.zeros((2, 3), np.uint8), 16, r"\(h, 2\) uint8", id="too-many-bytes"),
        pytest.param(np.zeros((2, 2), bool), 16, "uint8", id="bool-bits"),
        pytest.param(np.zeros(4, np.uint8), 8, "uint8", id="1-d"),
    ],
)
def test_mask_crop_from_bits_rejects_bad_shapes(bits, width, match):
    with pytest.raises(ValueError, match=match):
        MaskCrop.from_bits(bits, width, 0, 0)


def test_mask_crop_rejects_non_2d_data():
    with pytest.raises(ValueError, match=r"2-D \(h, w\), got shape \(4,\)"):
        MaskCrop(np.ones(4, bool), 0, 0)


def test_mask_crop_packed_reads_equal_the_dense_mask():
    """contains / count_in / rows (read from the bits) against the decoded dense frame."""
    data = _pattern("random", 23, 37, seed=5)
    crop = MaskCrop(data, 6, 9)
    frame = crop.dense(40, 50)
    rng = np.random.default_rng(1)
    for _ in range(300):
        x0, x1 = sorted(rng.integers(-5, 55, 2).tolist())
        y0, y1 = sorted(rng.integers(-5, 45, 2).tolist())
        expected = int(frame[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)].sum())
        assert crop.count_in(x0, y0, x1, y1) == expected, (x0, y0, x1, y1)
    for y in range(-2, 42):
        for x in range(-2, 52):
            inside = 0 <= x < 50 and 0 <= y < 40
            assert crop.contains(x, y) is (bool(frame[y, x]) if inside else False)
    np.testing.assert_array_equal(crop.rows(3, 11), data[3:11])
    np.testing.assert_array_equal(crop.rows(-4, 99), data)
    assert crop.rows(30, 40).shape == (0, 37)

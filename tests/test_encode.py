"""Tests for COCO RLE / polygon encodings and mask cleaning (checked against pycocotools)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from edge.encode import (
    clean_mask,
    crop_rle_counts,
    decode_rle,
    encode_rle,
    encode_rles,
    mask_contours,
    mask_to_polygons,
    parse_rle_string,
    rle_counts,
    rle_string,
    rle_strings,
)
from edge.types import MaskCrop

# pycocotools' decode trips a NumPy 2 copy-keyword DeprecationWarning; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _random_blobs(h, w, seed, density=0.5):
    rng = np.random.default_rng(seed)
    small = rng.random((max(h // 4, 1), max(w // 4, 1))) < density
    return cv2.resize(small.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def _border_mask(h, w):
    m = np.zeros((h, w), bool)
    m[0, :] = True
    m[:, -1] = True
    m[h // 2, w // 2] = True
    return m


def _starts_with_one(h, w):
    m = np.zeros((h, w), bool)
    m[0, 0] = True
    m[-1, -1] = True
    return m


RLE_MASKS = [
    pytest.param(_random_blobs(7, 13, 0), id="7x13"),
    pytest.param(_random_blobs(13, 7, 1), id="13x7"),
    pytest.param(_random_blobs(333, 517, 2), id="333x517"),
    pytest.param(np.random.default_rng(3).random((31, 17)) < 0.5, id="noise-31x17"),
    pytest.param(np.zeros((1, 1), bool), id="1x1-zero"),
    pytest.param(np.ones((1, 1), bool), id="1x1-one"),
    pytest.param(np.zeros((9, 11), bool), id="all-zero"),
    pytest.param(np.ones((9, 11), bool), id="all-one"),
    pytest.param(_starts_with_one(5, 6), id="starts-with-one"),
    pytest.param(_border_mask(10, 14), id="touches-borders"),
    pytest.param(np.eye(6, 8, dtype=bool), id="diagonal"),
    # Long runs (> 31 and > 1023) exercise multi-group varints and negative deltas.
    pytest.param(np.pad(np.ones((40, 60), bool), ((100, 60), (3, 200))), id="long-runs"),
]


@pytest.mark.parametrize("mask", RLE_MASKS)
def test_rle_matches_pycocotools(mask):
    h, w = mask.shape
    counts = rle_counts(mask)
    # Uncompressed counts: start with zeros, sum to the pixel count, only the first may be 0.
    assert sum(counts) == h * w
    assert all(c > 0 for c in counts[1:])
    assert (counts[0] == 0) == bool(mask.ravel(order="F")[0])

    rle = encode_rle(MaskCrop(mask, 0, 0), h, w)
    assert rle["size"] == [h, w]
    assert isinstance(rle["counts"], str)
    decoded = mask_utils.decode(rle)
    assert decoded.shape == (h, w)
    np.testing.assert_array_equal(decoded.astype(bool), mask)

    theirs = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert theirs["counts"].decode("ascii") == rle["counts"]
    assert list(theirs["size"]) == [h, w]
    assert int(mask_utils.area(theirs)) == int(mask.sum())

    # and back: our decoder inverts both encoders
    assert parse_rle_string(rle["counts"]) == counts
    np.testing.assert_array_equal(decode_rle(rle), mask)
    np.testing.assert_array_equal(decode_rle({**rle, "counts": theirs["counts"].decode()}), mask)


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        pytest.param({"size": [2, 2], "counts": "P"}, "truncated", id="truncated"),
        pytest.param({"size": [2, 2], "counts": "4 "}, "bad character", id="bad-char"),
        pytest.param({"size": [2, 2], "counts": "3"}, "add up to 3", id="short"),
        pytest.param({"size": [2, 2], "counts": "05"}, "add up to 5", id="long"),
    ],
)
def test_decode_rle_rejects_malformed(rle, message):
    with pytest.raises(ValueError, match=message):
        decode_rle(rle)


@pytest.mark.parametrize(
    ("data", "x0", "y0", "hw"),
    [
        pytest.param(np.ones((3, 4), bool), 5, 2, (10, 12), id="interior"),
        pytest.param(_random_blobs(8, 9, 4), 0, 0, (8, 9), id="full-frame"),
        pytest.param(_random_blobs(6, 7, 5), 12, 9, (15, 19), id="bottom-right-corner"),
        pytest.param(np.zeros((0, 4), bool), 3, 3, (7, 7), id="empty-crop"),
    ],
)
def test_encode_rle_of_crop_is_frame_sized(data, x0, y0, hw):
    crop = MaskCrop(data, x0, y0)
    decoded = mask_utils.decode(encode_rle(crop, *hw)).astype(bool)
    np.testing.assert_array_equal(decoded, crop.dense(*hw))


def _coco(dense):
    return mask_utils.encode(np.asfortranarray(dense.astype(np.uint8)))["counts"].decode("ascii")


def _frame_crop(kind, h, w, seed):
    """A crop of a (h, w) frame: (data, x0, y0) for one placement kind."""
    rng = np.random.default_rng(seed)
    if kind == "empty":
        return np.zeros((0, 0), bool), 0, 0
    if kind == "empty-data":  # a crop with pixels, none of them set
        ch, cw = min(3, h), min(4, w)
        return np.zeros((ch, cw), bool), (w - cw) // 2, (h - ch) // 2
    if kind == "full-frame":
        return np.ones((h, w), bool), 0, 0
    if kind == "full-height":  # runs join across column breaks
        ch, cw = h, max(1, w // 2)
        return rng.random((ch, cw)) < 0.9, int(rng.integers(0, w - cw + 1)), 0
    if kind == "all-borders":  # the crop is the frame, every border pixel set
        data = rng.random((h, w)) < 0.3
        data[0, :] = data[-1, :] = data[:, 0] = data[:, -1] = True
        return data, 0, 0
    ch, cw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
    data = rng.random((ch, cw)) < 0.5
    corners = {
        "top-left": (0, 0),
        "bottom-right": (w - cw, h - ch),
        "top-right": (w - cw, 0),
        "bottom-left": (0, h - ch),
        "random": (int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))),
    }
    x0, y0 = corners[kind]
    return data, x0, y0


CROP_KINDS = [
    "empty",
    "empty-data",
    "full-frame",
    "full-height",
    "all-borders",
    "top-left",
    "bottom-right",
    "top-right",
    "bottom-left",
    "random",
]
FRAME_SIZES = [(1, 1), (1, 7), (7, 1), (5, 3), (17, 29), (64, 48), (97, 131)]


@pytest.mark.parametrize("kind", CROP_KINDS)
@pytest.mark.parametrize("hw", FRAME_SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("seed", [0, 1])
def test_rle_from_crop_is_byte_identical_to_pycocotools(kind, hw, seed):
    h, w = hw
    data, x0, y0 = _frame_crop(kind, h, w, seed)
    crop = MaskCrop(data, x0, y0)
    dense = crop.dense(h, w)
    rle = encode_rle(crop, h, w)
    assert rle["size"] == [h, w]
    assert rle["counts"] == _coco(dense)
    assert crop_rle_counts(crop, h, w).tolist() == rle_counts(dense)


@pytest.mark.parametrize("batch_runs", [None, 1, 50])
@pytest.mark.parametrize("hw", [(480, 640), (1081, 1921)], ids=["640x480", "1921x1081"])
def test_encode_rles_bulk_matches_pycocotools_per_mask(hw, batch_runs, monkeypatch):
    """Also in bounded batches (issue 11: memory of 50 MP frames): the same strings."""
    import edge.encode

    if batch_runs is not None:
        monkeypatch.setattr(edge.encode, "RLE_BATCH_RUNS", batch_runs)
    h, w = hw
    rng = np.random.default_rng(7)
    crops = []
    for i in range(40):
        ch, cw = int(rng.integers(1, h // 2)), int(rng.integers(1, w // 2))
        data = _random_blobs(ch, cw, i, density=float(rng.uniform(0.1, 0.9)))
        crops.append(MaskCrop(data, int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))))
    crops += [MaskCrop(np.zeros((0, 0), bool), 0, 0), MaskCrop(np.ones((h, w), bool), 0, 0)]
    rles = encode_rles(crops, h, w)
    assert len(rles) == len(crops)
    for crop, rle in zip(crops, rles, strict=True):
        assert rle == {"size": [h, w], "counts": _coco(crop.dense(h, w))}
    assert encode_rles([], h, w) == []


def test_rle_strings_bulk_equals_one_by_one():
    rng = np.random.default_rng(11)
    lists = [rng.integers(0, 5000, size=int(n)) for n in rng.integers(1, 30, size=25)]
    lists.insert(3, np.zeros(0, np.int64))  # an empty list keeps its slot
    assert rle_strings(lists) == [rle_string(c) for c in lists]
    assert rle_strings([]) == []


@pytest.mark.parametrize(
    ("data", "x0", "y0"),
    [
        pytest.param(np.ones((3, 3), bool), 8, 0, id="past-right"),
        pytest.param(np.ones((3, 3), bool), 0, 6, id="past-bottom"),
        pytest.param(np.ones((3, 3), bool), -1, 0, id="negative"),
    ],
)
def test_rle_rejects_crop_outside_frame(data, x0, y0):
    with pytest.raises(ValueError, match="does not fit a 10x8 frame"):
        encode_rle(MaskCrop(data, x0, y0), 8, 10)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([0], "0"),
        ([6], "6"),
        ([32], "P1"),  # 32 = 0b1_00000: low group 0 with continuation (0x20 + 48), then 1
        ([0, 1, 1], "011"),  # deltas start only at the 4th count
        ([5, 100, 3, 2], None),  # 4th count is delta-coded: 2 - 100 < 0
        ([0, 2000, 1, 3000, 7, 1], None),
    ],
)
def test_rle_string_small_table(counts, expected):
    ours = rle_string(counts)
    if expected is not None:  # hand-checked against pycocotools' rleToString
        assert ours == expected
    h = sum(counts)
    theirs = mask_utils.frPyObjects({"counts": counts, "size": [h, 1]}, h, 1)
    assert theirs["counts"].decode("ascii") == ours


# --------------------------------------------------------------------------------------------
# polygons
# --------------------------------------------------------------------------------------------


def _fill(polygons, hw):
    out = np.zeros(hw, np.uint8)
    pts = [np.array(p, np.float64).reshape(-1, 2).round().astype(np.int32) for p in polygons]
    cv2.fillPoly(out, pts, 1)
    return out.astype(bool)


def _rect(hw, y0, y1, x0, x1):
    m = np.zeros(hw, bool)
    m[y0:y1, x0:x1] = True
    return m


def _diamond(size):
    c = size // 2
    yy, xx = np.mgrid[:size, :size]
    return (np.abs(yy - c) + np.abs(xx - c)) <= c


def _convex_poly(hw, pts):
    m = np.zeros(hw, np.uint8)
    cv2.fillConvexPoly(m, np.array(pts, np.int32), 1)
    return m.astype(bool)


CONVEX_MASKS = [
    pytest.param(_rect((10, 12), 2, 7, 3, 10), id="rectangle"),
    pytest.param(_rect((6, 6), 0, 6, 0, 6), id="full-crop"),
    pytest.param(_rect((5, 9), 0, 1, 0, 9), id="one-row"),
    pytest.param(_rect((9, 5), 0, 9, 2, 3), id="one-column"),
    pytest.param(_diamond(9), id="diamond"),
    pytest.param(_convex_poly((20, 24), [[2, 3], [20, 1], [22, 15], [6, 18]]), id="quad"),
]


@pytest.mark.parametrize("mask", CONVEX_MASKS)
def test_polygon_fill_reproduces_convex_mask(mask):
    polygons = mask_to_polygons(MaskCrop(mask, 0, 0))
    assert len(polygons) == 1
    assert len(polygons[0]) % 2 == 0
    np.testing.assert_array_equal(_fill(polygons, mask.shape), mask)


@pytest.mark.parametrize(
    "mask",
    [
        pytest.param(_random_blobs(40, 50, 6, 0.4), id="blobs"),
        pytest.param(_diamond(11), id="diamond"),
        pytest.param(_border_mask(10, 14), id="touches-borders"),
    ],
)
def test_polygon_vertices_are_boundary_pixels(mask):
    x0, y0 = 7, 3
    polygons = mask_to_polygons(MaskCrop(mask, x0, y0))
    assert polygons
    padded = np.pad(mask, 1)
    # A boundary pixel is foreground with at least one 4-neighbour outside the mask.
    interior = (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
    boundary = mask & ~interior
    for poly in polygons:
        pts = np.array(poly).reshape(-1, 2)
        assert np.all(pts == np.round(pts))  # pixel centres
        xs, ys = pts[:, 0].astype(int) - x0, pts[:, 1].astype(int) - y0
        assert xs.min() >= 0 and ys.min() >= 0
        assert xs.max() < mask.shape[1] and ys.max() < mask.shape[0]
        assert boundary[ys, xs].all()


def test_polygon_offsets_applied():
    mask = _rect((8, 8), 1, 5, 2, 7)
    base = mask_to_polygons(MaskCrop(mask, 0, 0))
    moved = mask_to_polygons(MaskCrop(mask, 30, 11))
    assert len(base) == len(moved) == 1
    a = np.array(base[0]).reshape(-1, 2)
    b = np.array(moved[0]).reshape(-1, 2)
    np.testing.assert_array_equal(b - a, np.broadcast_to([30, 11], a.shape))
    # The rectangle's four corners, in frame pixels.
    assert {tuple(p) for p in b} == {(32, 12), (36, 12), (36, 15), (32, 15)}


@pytest.mark.parametrize(
    ("data", "n_polygons"),
    [
        pytest.param(np.zeros((5, 5), bool), 0, id="empty"),
        pytest.param(np.zeros((0, 0), bool), 0, id="zero-size"),
        pytest.param(_rect((5, 5), 2, 3, 2, 3), 1, id="single-pixel"),
        pytest.param(_rect((9, 9), 0, 3, 0, 3) | _rect((9, 9), 5, 9, 5, 9), 2, id="two-regions"),
        # 8-connected: touching diagonally is one region.
        pytest.param(
            _rect((6, 6), 0, 3, 0, 3) | _rect((6, 6), 3, 6, 3, 6), 1, id="diagonal-touch"
        ),
    ],
)
def test_polygon_counts(data, n_polygons):
    polygons = mask_to_polygons(MaskCrop(data, 1, 1))
    assert len(polygons) == n_polygons
    if n_polygons:
        assert all(len(p) >= 2 for p in polygons)


@pytest.mark.parametrize("epsilon", [0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_polygons_from_precomputed_contours_are_the_same(epsilon, seed):
    crop = MaskCrop(_random_blobs(37, 53, seed, 0.4), 11, 4)
    traced = mask_contours(crop)
    assert len(traced) == len(mask_to_polygons(crop))
    assert mask_to_polygons(crop, epsilon, traced) == mask_to_polygons(crop, epsilon)


def test_polygon_single_pixel_is_kept():
    assert mask_to_polygons(MaskCrop(_rect((5, 5), 2, 3, 2, 3), 10, 20)) == [[12.0, 22.0]]


def test_polygon_epsilon_reduces_vertices():
    mask = np.zeros((60, 60), np.uint8)
    cv2.circle(mask, (30, 30), 25, 1, -1)
    crop = MaskCrop(mask.astype(bool), 0, 0)
    exact = mask_to_polygons(crop)[0]
    coarse = mask_to_polygons(crop, epsilon=2.0)[0]
    assert 6 <= len(coarse) < len(exact)
    # Still close to the mask: IoU of the filled polygon with the mask is high.
    filled = _fill([coarse], mask.shape)
    iou = (filled & crop.data).sum() / (filled | crop.data).sum()
    assert iou > 0.9


# --------------------------------------------------------------------------------------------
# clean_mask
# --------------------------------------------------------------------------------------------


def _m(rows):
    return np.array([[c == "#" for c in r] for r in rows], bool)


CLEAN_CASES = [
    pytest.param(
        _m(["##....", "##....", "......", "....#."]),
        2,
        False,
        _m(["##....", "##....", "......", "......"]),
        id="drop-single-pixel",
    ),
    pytest.param(
        _m(["##....", "##....", "......", "...##."]),
        2,
        False,
        _m(["##....", "##....", "......", "...##."]),
        id="area-equal-min-kept",
    ),
    pytest.param(
        _m(["##....", "##....", "......", "...##."]),
        3,
        False,
        _m(["##....", "##....", "......", "......"]),
        id="area-below-min-dropped",
    ),
    pytest.param(
        _m(["#.....", ".#....", "..#...", "......"]),
        3,
        False,
        _m(["#.....", ".#....", "..#...", "......"]),
        id="diagonal-chain-is-one-region",
    ),
    pytest.param(
        _m(["#.....", "......", "....#."]),
        5,
        False,
        _m(["......", "......", "......"]),
        id="everything-dropped",
    ),
    pytest.param(
        _m(["#####", "#...#", "#.#.#", "#...#", "#####"]),
        0,
        True,
        _m(["#####", "#####", "#####", "#####", "#####"]),
        id="fill-hole",
    ),
    pytest.param(
        _m(["#####", "#...#", "#...#", "#....", "#####"]),
        0,
        True,
        _m(["#####", "#...#", "#...#", "#....", "#####"]),
        id="bay-open-to-border-kept",
    ),
    pytest.param(
        # A hole in a region that does not touch the right/bottom crop border.
        _m(["####.", "#..#.", "#..#.", "####.", "....."]),
        0,
        True,
        _m(["####.", "####.", "####.", "####.", "....."]),
        id="fill-hole-not-on-border",
    ),
    pytest.param(
        # Background leaking only diagonally is still enclosed (8-connected foreground).
        _m(["###.", "#.#.", ".##.", "...."]),
        0,
        True,
        _m(["###.", "###.", ".##.", "...."]),
        id="diagonal-gap-encloses",
    ),
    pytest.param(
        _m(["#####", "#...#", "#####", ".....", "....#"]),
        2,
        True,
        _m(["#####", "#####", "#####", ".....", "....."]),
        id="drop-and-fill",
    ),
    pytest.param(_m(["....", "....", "...."]), 3, True, _m(["....", "....", "...."]), id="empty"),
    pytest.param(_m(["#.#", ".#.", "#.#"]), 0, False, _m(["#.#", ".#.", "#.#"]), id="no-op"),
]


@pytest.mark.parametrize(("data", "min_area", "fill", "expected"), CLEAN_CASES)
def test_clean_mask_table(data, min_area, fill, expected):
    crop = MaskCrop(data, 4, 9)
    before = data.copy()
    out = clean_mask(crop, min_region_area=min_area, fill_holes=fill)
    assert isinstance(out, MaskCrop)
    assert (out.x0, out.y0) == (4, 9)
    assert out.data.dtype == bool
    assert out.data.shape == data.shape
    np.testing.assert_array_equal(out.data, expected)
    np.testing.assert_array_equal(crop.data, before)  # input not modified

"""Tests for image reading, atomic writes and the overlay."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext as DoesNotRaise

import cv2
import numpy as np
import pytest

from edge.errors import InputError
from edge.io import atomic_write_bytes, atomic_write_image, atomic_write_json, read_image
from edge.overlay import draw_overlay, mask_colors
from edge.types import MaskCrop, Masks

# --------------------------------------------------------------------------------------------
# read_image
# --------------------------------------------------------------------------------------------


def _png_bytes(image):
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        pytest.param(None, "does not exist", id="missing"),
        pytest.param(b"", "empty", id="zero-bytes"),
        pytest.param(
            b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a readable image", id="corrupt-png"
        ),
        pytest.param(b"hello, this is plain text\n" * 10, "not a readable image", id="text-file"),
        pytest.param(
            _png_bytes(np.full((20, 20, 3), 7, np.uint8))[:40],
            "not a readable image",
            id="truncated-png",
        ),
    ],
)
def test_read_image_errors(tmp_path, make, needle):
    path = tmp_path / "some dir" / "frame_01.png"
    path.parent.mkdir()
    if make is not None:
        path.write_bytes(make)
    with pytest.raises(InputError) as excinfo:
        read_image(path)
    msg = str(excinfo.value)
    assert str(path) in msg
    assert needle in msg


def test_read_image_directory_is_an_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path)


_rng = np.random.default_rng(0)
_BGR = _rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
_GRAY = _rng.integers(0, 256, size=(9, 13), dtype=np.uint8)
_BGRA = _rng.integers(0, 256, size=(9, 13, 4), dtype=np.uint8)
_GRAY16 = _rng.integers(0, 65536, size=(9, 13), dtype=np.uint16)
_BGR16 = _rng.integers(0, 65536, size=(9, 13, 3), dtype=np.uint16)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param(_BGR, _BGR, id="bgr"),
        pytest.param(_GRAY, np.repeat(_GRAY[:, :, None], 3, axis=2), id="gray"),
        pytest.param(_BGRA, _BGRA[:, :, :3], id="bgra"),
        pytest.param(
            _GRAY16, np.repeat((_GRAY16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2), id="gray16"
        ),
        pytest.param(_BGR16, (_BGR16 >> 8).astype(np.uint8), id="bgr16"),
    ],
)
def test_read_image_converts_png(tmp_path, image, expected):
    path = tmp_path / "img.png"
    path.write_bytes(_png_bytes(image))
    out = read_image(str(path))  # str paths work too
    assert out.dtype == np.uint8
    assert out.shape == (9, 13, 3)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


def _leftovers(directory, name):
    return [p.name for p in directory.iterdir() if p.name != name]


@pytest.mark.parametrize("existing", [None, b"old contents"])
def test_atomic_write_bytes_success(tmp_path, existing):
    path = tmp_path / "sub" / "out.json"
    if existing is not None:
        path.parent.mkdir()
        path.write_bytes(existing)
    ret = atomic_write_bytes(path, b"new contents")
    assert ret == path
    assert path.read_bytes() == b"new contents"
    assert _leftovers(path.parent, "out.json") == []


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_atomic_write_bytes_failure_keeps_old_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "out.json"
    path.write_bytes(b"old contents")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(path, b"new contents that never land")
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents"
    assert _leftovers(tmp_path, "out.json") == []


def test_atomic_write_bytes_failure_without_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.bin"

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"x" * 100)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_json_and_image(tmp_path):
    obj = {"a": [1, 2.5, "x"], "b": None}
    p = atomic_write_json(tmp_path / "r.json", obj)
    assert json.loads(p.read_text()) == obj
    image = _rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    q = atomic_write_image(tmp_path / "o.png", image)
    np.testing.assert_array_equal(cv2.imread(str(q)), image)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["o.png", "r.json"]


@pytest.mark.parametrize(
    ("name", "expectation"),
    [
        pytest.param("o.png", DoesNotRaise(), id="png"),
        pytest.param("o.jpg", DoesNotRaise(), id="jpg"),
        pytest.param("o", DoesNotRaise(), id="no-suffix-png"),
        pytest.param(
            "o.notanimageformat",
            pytest.raises(InputError, match="notanimageformat"),
            id="unknown-suffix",
        ),
        pytest.param(
            "o.txt",
            pytest.raises(InputError, match="txt"),
            id="txt-suffix",
        ),
    ],
)
def test_atomic_write_image_suffix(tmp_path, name, expectation):
    image = np.zeros((4, 4, 3), np.uint8)
    with expectation:
        atomic_write_image(tmp_path / name, image)
    if not isinstance(expectation, DoesNotRaise):
        assert list(tmp_path.iterdir()) == []


def test_atomic_write_bytes_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "r.json", b"{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------------------------
# overlay
# --------------------------------------------------------------------------------------------


def _result(hw):
    a = np.zeros((6, 8), bool)
    a[1:5, 2:7] = True
    b = np.ones((3, 3), bool)
    return Masks(
        xyxy=np.array([[10, 5, 18, 11], [2, 2, 5, 5]], np.float32),
        confidence=np.array([0.9, 0.5], np.float32),
        crops=(MaskCrop(a, 10, 5), MaskCrop(b, 2, 2)),
        image_hw=hw,
    )


def test_draw_overlay_empty_result_returns_unchanged_copy():
    image = _rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    before = image.copy()
    out = draw_overlay(image, Masks.empty(20, 30), boxes=True)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, image)
    assert out is not image
    out[:] = 0
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize("contours", [False, True])
@pytest.mark.parametrize("boxes", [False, True])
def test_draw_overlay_paints_masks_only(contours, boxes):
    image = np.full((20, 30, 3), 100, np.uint8)
    result = _result((20, 30))
    out = draw_overlay(image, result, alpha=0.6, contours=contours, boxes=boxes)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, 100)  # input untouched
    union = result.mask.any(axis=0)
    changed = np.any(out != image, axis=2)
    assert changed[union].mean() > 0.9  # masks are painted
    if not contours and not boxes:
        assert not changed[~union].any()  # nothing outside the masks
        # Fill colour: each mask blended with its own colour.
        colors = mask_colors(2).astype(np.float32)
        expected = (100 * 0.4 + colors[1] * 0.6).astype(np.uint8)
        np.testing.assert_array_equal(out[3, 3], expected)


def test_mask_colors_reproducible():
    c = mask_colors(5)
    assert c.shape == (5, 3) and c.dtype == np.uint8
    np.testing.assert_array_equal(c, mask_colors(5))
    assert len({tuple(x) for x in c}) == 5

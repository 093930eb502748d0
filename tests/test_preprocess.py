"""Tests for the letterbox pre-processing and input normalisation (numpy + OpenCV only)."""

from __future__ import annotations

from contextlib import nullcontext as DoesNotRaise

import cv2
import numpy as np
import pytest

from edge.errors import InputError
from edge.preprocess import (
    PAD_VALUE,
    letterbox,
    letterbox_geometry,
    make_divisible,
    normalize_image,
)

# --------------------------------------------------------------------------------------------
# letterbox_geometry: worked examples (source given as W x H like the reference doc, hw below)
# --------------------------------------------------------------------------------------------

# (source_hw, target_hw, auto, input_hw, resized_hw, pad_top, pad_left, pad_bottom, pad_right)
GEOMETRY_CASES = [
    # Reference doc §4 worked examples at imgsz 1024, auto=True.
    pytest.param(
        (603, 1072), (1024, 1024), True, (576, 1024), (576, 1024), 0, 0, 0, 0, id="dogs-1072x603"
    ),
    pytest.param(
        (480, 640), (1024, 1024), True, (768, 1024), (768, 1024), 0, 0, 0, 0, id="640x480"
    ),
    pytest.param(
        (533, 800), (1024, 1024), True, (704, 1024), (682, 1024), 11, 0, 11, 0, id="800x533"
    ),
    pytest.param(
        (1080, 1920), (1024, 1024), True, (576, 1024), (576, 1024), 0, 0, 0, 0, id="1920x1080"
    ),
    pytest.param(
        (720, 1280), (1024, 1024), True, (576, 1024), (576, 1024), 0, 0, 0, 0, id="1280x720"
    ),
    # Portrait, auto: 480x640 (WxH) -> 768 wide, no padding.
    pytest.param(
        (640, 480), (1024, 1024), True, (1024, 768), (1024, 768), 0, 0, 0, 0, id="portrait"
    ),
    # Static (auto=False): the full target shape.
    pytest.param(
        (480, 640), (640, 640), False, (640, 640), (480, 640), 80, 0, 80, 0, id="static-640x480"
    ),
    pytest.param(
        (533, 800),
        (1024, 1024),
        False,
        (1024, 1024),
        (682, 1024),
        171,
        0,
        171,
        0,
        id="static-800x533",
    ),
    # Odd total padding: the extra pixel goes bottom / right.
    pytest.param(
        (481, 640), (640, 640), False, (640, 640), (481, 640), 79, 0, 80, 0, id="odd-bottom"
    ),
    pytest.param(
        (640, 481), (640, 640), False, (640, 640), (640, 481), 0, 79, 0, 80, id="odd-right"
    ),
    # 1000x599 at 1024 auto: r = 1.024, new_h = round(613.376) = 613, dh = 411 % 32 = 27 -> 13/14.
    pytest.param(
        (599, 1000), (1024, 1024), True, (640, 1024), (613, 1024), 13, 0, 14, 0, id="odd-auto"
    ),
    # Upscaling a tiny image.
    pytest.param(
        (1, 1), (1024, 1024), True, (1024, 1024), (1024, 1024), 0, 0, 0, 0, id="1x1-auto"
    ),
    pytest.param(
        (1, 1), (640, 480), False, (640, 480), (480, 480), 80, 0, 80, 0, id="1x1-static-rect"
    ),
    # Thin images: the short side rounds to 0 and is clamped to 1.
    # H=3, W=1000 at 64: r = 0.064, new_h = round(0.192) = 0 -> 1, dh = 63 -> 31 / 32.
    pytest.param(
        (3, 1000), (64, 64), False, (64, 64), (1, 64), 31, 0, 32, 0, id="thin-wide-static"
    ),
    # auto: dh = 63 % 32 = 31 -> 15 / 16, input height 1 + 31 = 32.
    pytest.param((3, 1000), (64, 64), True, (32, 64), (1, 64), 15, 0, 16, 0, id="thin-wide-auto"),
    pytest.param(
        (1000, 3), (64, 64), False, (64, 64), (64, 1), 0, 31, 0, 32, id="thin-tall-static"
    ),
    pytest.param((1000, 3), (64, 64), True, (64, 32), (64, 1), 0, 15, 0, 16, id="thin-tall-auto"),
    # Non-square target.
    pytest.param(
        (480, 640), (480, 640), False, (480, 640), (480, 640), 0, 0, 0, 0, id="exact-fit"
    ),
]


@pytest.mark.parametrize(
    ("source_hw", "target_hw", "auto", "input_hw", "resized_hw", "top", "left", "bottom", "right"),
    GEOMETRY_CASES,
)
def test_letterbox_geometry_worked_examples(
    source_hw, target_hw, auto, input_hw, resized_hw, top, left, bottom, right
):
    info = letterbox_geometry(source_hw, target_hw, stride=32, auto=auto)
    assert info.source_hw == source_hw
    assert info.input_hw == input_hw
    assert info.resized_hw == resized_hw
    assert (info.pad_top, info.pad_left) == (top, left)
    # Bottom/right padding is what remains of the input around the content.
    assert info.input_hw[0] - info.resized_hw[0] - info.pad_top == bottom
    assert info.input_hw[1] - info.resized_hw[1] - info.pad_left == right


@pytest.mark.parametrize(
    "source_hw",
    [(480, 640), (533, 800), (599, 1000), (1080, 1920), (3, 1000), (1000, 3), (517, 333), (7, 13)],
)
@pytest.mark.parametrize("target_hw", [(1024, 1024), (640, 640), (256, 320)])
def test_letterbox_geometry_invariants(source_hw, target_hw):
    auto_info = letterbox_geometry(source_hw, target_hw, stride=32, auto=True)
    static_info = letterbox_geometry(source_hw, target_hw, stride=32, auto=False)
    # Same content size in both modes; static fills the target; auto pads to a stride multiple.
    assert auto_info.resized_hw == static_info.resized_hw
    assert static_info.input_hw == target_hw
    ih, iw = auto_info.input_hw
    assert ih <= target_hw[0] and iw <= target_hw[1]
    # Minimum rectangle: the padding removed from the target is a whole number of strides,
    # and what is left is less than one stride.
    assert (target_hw[0] - ih) % 32 == 0 and (target_hw[1] - iw) % 32 == 0
    assert ih - auto_info.resized_hw[0] < 32 and iw - auto_info.resized_hw[1] < 32
    for info in (auto_info, static_info):
        rh, rw = info.resized_hw
        assert rh >= 1 and rw >= 1
        assert 0 <= info.pad_top and 0 <= info.pad_left
        bottom = info.input_hw[0] - rh - info.pad_top
        right = info.input_hw[1] - rw - info.pad_left
        assert bottom - info.pad_top in (0, 1)  # extra pixel goes bottom
        assert right - info.pad_left in (0, 1)  # ... and right


@pytest.mark.parametrize(
    ("value", "divisor", "expected"), [(720, 32, 736), (736, 32, 736), (1, 32, 32), (0, 32, 0)]
)
def test_make_divisible(value, divisor, expected):
    assert make_divisible(value, divisor) == expected


# --------------------------------------------------------------------------------------------
# letterbox: pixels
# --------------------------------------------------------------------------------------------


def _expected_tensor(image_bgr, info):
    """Independent reconstruction: cv2.resize, grey 114 canvas, BGR->RGB, CHW, / 255."""
    new_h, new_w = info.resized_hw
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((*info.input_hw, 3), 114, dtype=np.uint8)
    canvas[info.pad_top : info.pad_top + new_h, info.pad_left : info.pad_left + new_w] = resized
    rgb = canvas[:, :, [2, 1, 0]].astype(np.float32) / np.float32(255.0)
    return rgb.transpose(2, 0, 1)[None]


@pytest.mark.parametrize(
    ("source_hw", "target_hw", "auto"),
    [
        ((37, 53), (64, 64), False),
        ((37, 53), (64, 64), True),
        ((53, 37), (96, 64), False),
        ((64, 64), (64, 64), False),  # no resize at all
        ((120, 90), (64, 64), True),  # downscale
        ((3, 100), (64, 64), True),  # thin, clamped to 1 row
        ((1, 1), (32, 32), False),
    ],
)
def test_letterbox_matches_cv2_resize_and_pad(source_hw, target_hw, auto):
    rng = np.random.default_rng(sum(source_hw) + 7 * sum(target_hw) + int(auto))
    image = rng.integers(0, 256, size=(*source_hw, 3), dtype=np.uint8)
    tensor, info = letterbox(image, target_hw, stride=32, auto=auto)
    assert info == letterbox_geometry(source_hw, target_hw, 32, auto)
    assert tensor.dtype == np.float32
    assert tensor.shape == (1, 3, *info.input_hw)
    assert tensor.flags.c_contiguous
    np.testing.assert_array_equal(tensor, _expected_tensor(image, info))
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0


def test_letterbox_pad_value_and_rgb_order():
    # Pure blue in BGR: (255, 0, 0). The network sees RGB, so channel 2 (blue) is 1.0.
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    image[:, :, 0] = 255
    tensor, info = letterbox(image, (64, 64), auto=False)
    assert info.resized_hw == (48, 64) and info.pad_top == 8
    content = tensor[0, :, 8:56, :]
    np.testing.assert_array_equal(content[2], 1.0)
    np.testing.assert_array_equal(content[0], 0.0)
    np.testing.assert_array_equal(content[1], 0.0)
    pad = np.float32(PAD_VALUE) / np.float32(255)
    assert PAD_VALUE == 114
    np.testing.assert_array_equal(tensor[0, :, :8, :], pad)
    np.testing.assert_array_equal(tensor[0, :, 56:, :], pad)


def test_letterbox_does_not_modify_input():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    before = image.copy()
    letterbox(image, (64, 64))
    np.testing.assert_array_equal(image, before)


# --------------------------------------------------------------------------------------------
# normalize_image
# --------------------------------------------------------------------------------------------

_rng = np.random.default_rng(11)
_BGR = _rng.integers(0, 256, size=(6, 9, 3), dtype=np.uint8)
_GRAY = _rng.integers(0, 256, size=(6, 9), dtype=np.uint8)
_BGRA = _rng.integers(0, 256, size=(6, 9, 4), dtype=np.uint8)

NORMALIZE_OK = [
    pytest.param(_BGR, _BGR, id="bgr-passthrough"),
    pytest.param(_GRAY, np.repeat(_GRAY[:, :, None], 3, axis=2), id="gray-2d"),
    pytest.param(_GRAY[:, :, None], np.repeat(_GRAY[:, :, None], 3, axis=2), id="gray-hw1"),
    pytest.param(_BGRA, _BGRA[:, :, :3], id="bgra-drops-alpha"),
    pytest.param(_BGR[:, ::2], _BGR[:, ::2], id="non-contiguous"),
    pytest.param(np.zeros((1, 1), np.uint8), np.zeros((1, 1, 3), np.uint8), id="gray-1x1"),
]


@pytest.mark.parametrize(("image", "expected"), NORMALIZE_OK)
def test_normalize_image_converts(image, expected):
    out = normalize_image(image)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


NORMALIZE_ERRORS = [
    pytest.param(_BGR.astype(np.float32), ["frame", "float32"], id="float32"),
    pytest.param(_BGR.astype(np.float64) / 255, ["frame", "float64"], id="float64"),
    pytest.param(_BGR.astype(np.uint16), ["frame", "uint16"], id="uint16"),
    pytest.param(np.zeros((10,), np.uint8), ["frame", "(10,)"], id="ndim-1"),
    pytest.param(np.zeros((2, 4, 4, 3), np.uint8), ["frame", "(2, 4, 4, 3)"], id="ndim-4"),
    pytest.param(np.zeros((4, 4, 5), np.uint8), ["frame", "(4, 4, 5)"], id="5-channels"),
    pytest.param(np.zeros((4, 4, 2), np.uint8), ["frame", "(4, 4, 2)"], id="2-channels"),
    pytest.param(np.zeros((0, 5, 3), np.uint8), ["frame", "empty"], id="empty-0x5x3"),
    pytest.param(np.zeros((5, 0, 3), np.uint8), ["frame", "empty"], id="empty-5x0x3"),
    pytest.param([[1, 2], [3, 4]], ["frame", "list"], id="list"),
    pytest.param(None, ["frame", "NoneType"], id="none"),
    pytest.param("image.png", ["frame", "str"], id="path-string"),
]


@pytest.mark.parametrize(("image", "needles"), NORMALIZE_ERRORS)
def test_normalize_image_rejects(image, needles):
    with pytest.raises(InputError) as excinfo:
        normalize_image(image, field="frame")
    for needle in needles:
        assert needle in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)  # callers may catch the std-lib base


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((0, 5), id="empty-gray"),
        pytest.param((0, 5, 1), id="empty-gray-hw1"),
        pytest.param((5, 0, 4), id="empty-bgra"),
    ],
)
def test_normalize_image_rejects_empty_gray_and_bgra(shape):
    with pytest.raises(InputError, match="frame"):
        normalize_image(np.zeros(shape, np.uint8), field="frame")


@pytest.mark.parametrize(
    ("image", "expectation"),
    [
        (_BGR, DoesNotRaise()),
        (_BGR.astype(np.int8), pytest.raises(InputError, match="image: expected dtype uint8")),
    ],
)
def test_normalize_image_default_field_name(image, expectation):
    with expectation:
        normalize_image(image)

"""Letterbox pre-processing, identical to the ultralytics 8.4.190 FastSAM reference.

The reference resizes with ``cv2.INTER_LINEAR`` to ``round(side * r)``, pads with grey 114 (the
extra pixel of an odd padding going bottom/right), flips BGR to RGB and divides by 255. With a
dynamic-shape model it picks the *minimum rectangle* (padding only up to a multiple of the
stride); a static model gets the full target shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.errors import InputError

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxInfo:
    """Geometry of one letterbox transform.

    Attributes:
        source_hw: (height, width) of the source image.
        input_hw: (height, width) of the network input.
        resized_hw: (height, width) of the resized image content inside the input.
        pad_top: Rows of padding above the content.
        pad_left: Columns of padding left of the content.
    """

    source_hw: tuple[int, int]
    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    pad_top: int
    pad_left: int


def make_divisible(value: int, divisor: int) -> int:
    """Round ``value`` up to a multiple of ``divisor``."""
    return int(math.ceil(value / divisor) * divisor)


def letterbox_geometry(
    source_hw: tuple[int, int], target_hw: tuple[int, int], stride: int = 32, auto: bool = False
) -> LetterboxInfo:
    """Compute the letterbox geometry without touching pixels.

    Args:
        source_hw: (height, width) of the source image, both >= 1.
        target_hw: (height, width) the image is fitted into.
        stride: Model stride; with ``auto`` the padded input is the minimum rectangle whose sides
            are multiples of it.
        auto: Minimum-rectangle mode (dynamic-shape models), as the reference's ``rect`` mode.

    Returns:
        The geometry: input size, resized content size and the top/left padding.
    """
    h, w = source_hw
    th, tw = target_hw
    r = min(th / h, tw / w)
    # Python's round() (banker's rounding) matches the reference exactly.
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = tw - new_w, th - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
    left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
    return LetterboxInfo(
        source_hw=(h, w),
        input_hw=(new_h + top + bottom, new_w + left + right),
        resized_hw=(new_h, new_w),
        pad_top=top,
        pad_left=left,
    )


def letterbox(
    image_bgr: NDArray[np.uint8], target_hw: tuple[int, int], stride: int = 32, auto: bool = False
) -> tuple[NDArray[np.float32], LetterboxInfo]:
    """Letterbox a BGR image into an NCHW float32 RGB tensor in [0, 1].

    Args:
        image_bgr: (H, W, 3) uint8 BGR image.
        target_hw: (height, width) to fit into (the model input, or the imgsz for dynamic models).
        stride: Model stride (used with ``auto``).
        auto: Minimum-rectangle padding, for dynamic-shape models.

    Returns:
        ``(tensor, info)``: tensor is (1, 3, H_in, W_in) float32 RGB in [0, 1].
    """
    info = letterbox_geometry(image_bgr.shape[:2], target_hw, stride, auto)
    new_h, new_w = info.resized_hw
    resized = image_bgr
    if (new_h, new_w) != image_bgr.shape[:2]:
        resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    in_h, in_w = info.input_hw
    canvas = np.full((in_h, in_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[info.pad_top : info.pad_top + new_h, info.pad_left : info.pad_left + new_w] = resized
    # BGR -> RGB and HWC -> CHW in one strided copy, then scale to [0, 1]. Divide (not multiply
    # by 1/255) so the tensor is bit-identical to the reference's.
    tensor = np.empty((1, 3, in_h, in_w), dtype=np.float32)
    np.divide(canvas[:, :, ::-1].transpose(2, 0, 1), np.float32(255), out=tensor[0])
    return tensor, info


def normalize_image(image: object, field: str = "image") -> NDArray[np.uint8]:
    """Check a caller-supplied image and bring it to (H, W, 3) uint8 BGR.

    Gray (H, W) or (H, W, 1) images are expanded to BGR and BGRA (H, W, 4) has its alpha dropped.

    Args:
        image: The candidate image.
        field: Name used in error messages.

    Returns:
        A C-contiguous (H, W, 3) uint8 BGR array.

    Raises:
        InputError: Not an array, wrong dtype, wrong number of dimensions or channels, or empty.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"{field}: expected a numpy array (H, W, 3) uint8 BGR, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise InputError(f"{field}: expected dtype uint8, got {image.dtype}")
    if image.ndim in (2, 3) and (image.shape[0] < 1 or image.shape[1] < 1):
        raise InputError(f"{field}: image is empty, shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(
            f"{field}: expected shape (H, W), (H, W, 3) or (H, W, 4), got {image.shape}"
        )
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{field}: image is empty, shape {image.shape}")
    return np.ascontiguousarray(image)

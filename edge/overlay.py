"""Overlay drawing with OpenCV only (no matplotlib on the Pi)."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.types import Masks


def mask_colors(n: int, seed: int = 0) -> NDArray[np.uint8]:
    """(n, 3) uint8 BGR colours, vivid and reproducible (golden-ratio hue walk)."""
    hues = ((np.arange(n) * 0.618033988749895 + seed * 0.1) % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full(n, 200, np.uint8), np.full(n, 255, np.uint8)], axis=1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]


def draw_overlay(
    image_bgr: NDArray[np.uint8],
    result: Masks,
    alpha: float = 0.6,
    contours: bool = True,
    boxes: bool = False,
) -> NDArray[np.uint8]:
    """Paint the masks over the image.

    Masks are painted largest first so smaller ones stay visible on top (FastSAM's display
    order), each in its own colour at ``alpha``, with contours.

    Args:
        image_bgr: (H, W, 3) uint8 BGR source image.
        result: Result for this image.
        alpha: Mask opacity.
        contours: Draw mask outlines.
        boxes: Draw the detection boxes.

    Returns:
        (H, W, 3) uint8 BGR overlay (a new array).
    """
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

"""Overlay drawing with OpenCV only (no matplotlib on the Pi)."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.types import Masks

_BAND_ROWS = 64
"""Rows blended at a time by :func:`draw_overlay`."""


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
    copy: bool = True,
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
        copy: Paint a copy (default). ``False`` paints ``image_bgr`` itself, which saves a
            frame-sized copy when the caller no longer needs the image (the CLI).

    Returns:
        (H, W, 3) uint8 BGR overlay (a new array unless ``copy=False``).
    """
    out = image_bgr.copy() if copy else image_bgr
    if len(result) == 0:
        return out
    colors = mask_colors(len(result))
    order = np.argsort(-result.area, kind="stable")
    height, width = out.shape[:2]
    # Blend in bands of rows: the per-pixel label and the float blend temporaries then stay a
    # few MB even for a 50 MP frame (whole-frame temporaries were several times the image).
    for r0 in range(0, height, _BAND_ROWS):
        r1 = min(height, r0 + _BAND_ROWS)
        label: NDArray[np.int32] | None = None
        for i in order:
            crop = result.crops[i]
            h, w = crop.data.shape
            y0, y1 = max(crop.y0, r0), min(crop.y0 + h, r1)
            if y1 <= y0:
                continue
            if label is None:
                label = np.full((r1 - r0, width), -1, dtype=np.int32)
            view = label[y0 - r0 : y1 - r0, crop.x0 : crop.x0 + w]
            view[crop.data[y0 - crop.y0 : y1 - crop.y0]] = i
        if label is None:
            continue
        painted = label >= 0
        band = out[r0:r1]
        layer = colors[label[painted]].astype(np.float32)
        band[painted] = (band[painted] * (1 - alpha) + layer * alpha).astype(np.uint8)
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

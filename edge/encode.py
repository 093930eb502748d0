"""Mask encodings for results: COCO compressed RLE and polygons (pure numpy + OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.types import MaskCrop


def rle_counts(mask: NDArray[np.bool_]) -> list[int]:
    """Uncompressed COCO run lengths of a (H, W) mask in column-major order.

    The first run counts zeros (possibly 0), then runs alternate.
    """
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return [int(r) for r in runs]


def rle_string(counts: list[int]) -> str:
    """Compress run lengths into COCO's ASCII RLE string (pycocotools ``rleToString``).

    Each count (delta-coded against the count two before it, from the third on) is written
    as little-endian 5-bit groups with a continuation bit, offset by 48.
    """
    out: list[str] = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def parse_rle_string(counts: str) -> list[int]:
    """Inverse of :func:`rle_string`: COCO's ASCII RLE string back to run lengths.

    Raises:
        ValueError: The string is truncated or has characters outside COCO's alphabet.
    """
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        x = 0
        shift = 0
        while True:
            if pos >= len(counts):
                raise ValueError("RLE string: truncated run")
            c = ord(counts[pos]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"RLE string: bad character {counts[pos]!r} at {pos}")
            x |= (c & 0x1F) << shift
            pos += 1
            shift += 5
            if not c & 0x20:
                if c & 0x10:
                    x |= -1 << shift
                break
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def decode_rle(rle: dict[str, object]) -> NDArray[np.bool_]:
    """Dense (H, W) mask from a COCO compressed RLE ``{"size": [h, w], "counts": str}``.

    Raises:
        ValueError: Malformed counts, or runs that do not add up to ``h * w``.
    """
    h, w = (int(v) for v in rle["size"])  # type: ignore[union-attr]
    runs = parse_rle_string(str(rle["counts"]))
    if sum(runs) != h * w or any(r < 0 for r in runs):
        raise ValueError(f"RLE: runs add up to {sum(runs)}, expected {h}*{w}={h * w}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape((w, h)).T.copy()


def encode_rle(crop: MaskCrop, height: int, width: int) -> dict[str, object]:
    """COCO compressed RLE of one mask at frame size, decodable by ``pycocotools.mask.decode``.

    Returns:
        ``{"size": [height, width], "counts": str}``.
    """
    return {"size": [height, width], "counts": rle_string(rle_counts(crop.dense(height, width)))}


def mask_to_polygons(crop: MaskCrop, epsilon: float = 0.0) -> list[list[float]]:
    """Outer contours of a mask as polygons ``[x1, y1, x2, y2, ...]`` in frame pixels.

    Vertices are the centres of boundary pixels (OpenCV's contour convention). Clean the mask
    first with :func:`clean_mask` to drop small regions or fill holes.

    Args:
        crop: The mask.
        epsilon: Douglas-Peucker tolerance in pixels (0: every corner of the pixel chain).

    Returns:
        One polygon per 8-connected region; a one- or two-pixel region gives a polygon with
        fewer than 3 vertices rather than vanishing.
    """
    if crop.data.size == 0 or not crop.data.any():
        return []
    # Pad by one pixel so regions touching the crop edge trace like interior ones.
    padded = cv2.copyMakeBorder(
        crop.data.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0
    )
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons: list[list[float]] = []
    for contour in contours:
        if epsilon > 0:
            contour = cv2.approxPolyDP(contour, epsilon, True)
        pts = contour.reshape(-1, 2).astype(np.int64)
        pts[:, 0] += crop.x0 - 1
        pts[:, 1] += crop.y0 - 1
        polygons.append([float(v) for v in pts.ravel()])
    return polygons


def clean_mask(crop: MaskCrop, min_region_area: int = 0, fill_holes: bool = False) -> MaskCrop:
    """Remove small regions and/or fill holes in a mask (optional post-processing).

    Args:
        crop: The mask.
        min_region_area: Drop 8-connected foreground regions smaller than this (pixels).
        fill_holes: Fill background regions not connected to the crop border.

    Returns:
        A new :class:`MaskCrop` with the same offset and shape.
    """
    data = crop.data.astype(np.uint8)
    if min_region_area > 0 and data.any():
        n, labels, stats, _ = cv2.connectedComponentsWithStats(data, connectivity=8)
        small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_region_area)
        small = small[small > 0]
        if small.size:
            data[np.isin(labels, small)] = 0
    if fill_holes and data.any():
        inv = cv2.copyMakeBorder(1 - data, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
        n, labels = cv2.connectedComponents(inv, connectivity=4)
        outside = labels == labels[0, 0]
        data = (~outside[1:-1, 1:-1]).astype(np.uint8)
    return MaskCrop(data.astype(bool), crop.x0, crop.y0)

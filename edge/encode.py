"""Mask encodings for results: COCO compressed RLE and polygons (pure numpy + OpenCV)."""

from __future__ import annotations

from collections.abc import Sequence

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


def _crop_boundaries(crop: MaskCrop, height: int) -> NDArray[np.int64]:
    """Frame positions (column-major index) where the mask's runs start and end, sorted.

    Each crop column contributes its 0->1 and 1->0 transitions, shifted by the crop's offset
    into the frame's column-major order (``x * height + y``). A run that ends at the bottom of
    a full-height column and one that starts at the top of the next meet at the same position;
    those pairs cancel (one run across the column break).
    """
    data = crop.data.view(np.uint8)  # decoded from the packed bits, this crop only
    h, w = data.shape
    # A 0 row above and below makes every column's runs open and close inside the crop; the
    # transitions are found row-major (no transposed copy) and sorted into column-major order.
    padded = cv2.copyMakeBorder(data, 1, 1, 0, 0, cv2.BORDER_CONSTANT, value=0)
    rows, cols = np.divmod(np.flatnonzero(padded[1:] != padded[:-1]), w)
    pos = (cols + crop.x0) * height + (rows + crop.y0)
    pos.sort()
    if crop.y0 == 0 and h == height and pos.size > 2:
        joined = np.flatnonzero(pos[1:] == pos[:-1])
        if joined.size:
            pos = np.delete(pos, np.concatenate([joined, joined + 1]))
    return pos


def crop_rle_counts(crop: MaskCrop, height: int, width: int) -> NDArray[np.int64]:
    """Uncompressed COCO run lengths of a crop placed in a (height, width) frame.

    Same runs as :func:`rle_counts` of the dense mask, computed from the crop alone: the cost
    follows the crop's size, not the frame's.

    Raises:
        ValueError: The crop does not lie inside the frame.
    """
    h, w = crop.shape
    if h * w and (crop.x0 < 0 or crop.y0 < 0 or crop.x0 + w > width or crop.y0 + h > height):
        raise ValueError(
            f"RLE: crop {w}x{h} at ({crop.x0}, {crop.y0}) does not fit a {width}x{height} frame"
        )
    total = height * width
    pos = _crop_boundaries(crop, height) if crop.area else np.zeros(0, np.int64)
    if pos.size == 0:
        return np.array([total], dtype=np.int64)
    counts = np.empty(pos.size + 1, dtype=np.int64)
    counts[0] = pos[0]
    np.subtract(pos[1:], pos[:-1], out=counts[1:-1])
    counts[-1] = total - pos[-1]
    # the last run always counts pixels; a mask ending at the last pixel has no zero tail
    return counts[:-1] if counts[-1] == 0 else counts


def _varint_chars(x: NDArray[np.int64]) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """COCO's characters for signed values ``x``, and how many characters each value takes.

    Each value is written as little-endian 5-bit groups, the 0x20 bit set on every group but
    the last, offset by 48; it takes the fewest groups whose 5k-bit two's complement holds it
    (pycocotools ``rleToString``'s loop, in bulk).
    """
    if x.size == 0:
        return np.zeros(0, np.uint8), np.zeros(0, np.int64)
    magnitude = np.where(x >= 0, x, ~x)
    bits = np.frexp(magnitude.astype(np.float64))[1].astype(np.int64)  # bit length (< 2**53)
    ngroups = (bits + 5) // 5  # + the sign bit, rounded up to 5-bit groups
    ends = np.cumsum(ngroups)
    starts = ends - ngroups
    out = np.empty(int(ends[-1]), dtype=np.int64)
    # group by group over the values that still have one: most deltas fit in one or two
    for j in range(int(ngroups.max())):
        sel = slice(None) if j == 0 else np.flatnonzero(ngroups > j)
        more = ngroups[sel] > j + 1
        out[starts[sel] + j] = ((x[sel] >> (5 * j)) & 0x1F) | (more.astype(np.int64) << 5)
    return (out + 48).astype(np.uint8), ngroups


def _deltas(counts: NDArray[np.int64], starts: NDArray[np.int64]) -> NDArray[np.int64]:
    """COCO's delta coding: from the 4th count of each list on, the count minus the one two
    before it. ``starts`` are the offsets of each list in the concatenated ``counts``."""
    x = counts.copy()
    if counts.size > 3:
        index = np.arange(counts.size) - np.repeat(starts, np.diff(np.append(starts, counts.size)))
        coded = np.flatnonzero(index > 2)
        x[coded] -= counts[coded - 2]
    return x


def rle_string(counts: Sequence[int] | NDArray[np.integer]) -> str:
    """Compress run lengths into COCO's ASCII RLE string (pycocotools ``rleToString``).

    Each count (delta-coded against the count two before it, from the fourth on) is written
    as little-endian 5-bit groups with a continuation bit, offset by 48.
    """
    c = np.asarray(counts, dtype=np.int64).ravel()
    chars, _ = _varint_chars(_deltas(c, np.zeros(1, np.int64)))
    return chars.tobytes().decode("ascii")


def rle_strings(counts: Sequence[NDArray[np.int64]]) -> list[str]:
    """:func:`rle_string` of many count lists in one vectorised pass (one per mask)."""
    if not counts:
        return []
    lengths = np.array([len(c) for c in counts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = np.concatenate([np.asarray(c, dtype=np.int64) for c in counts])
    chars, ngroups = _varint_chars(_deltas(flat, starts))
    text = chars.tobytes().decode("ascii")
    # a list's characters end where the groups of its last value end
    char_ends = np.concatenate([[0], np.cumsum(ngroups)])
    bounds = char_ends[np.concatenate([[0], np.cumsum(lengths)])].tolist()
    return [text[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


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

    Computed from the crop and its offset (no frame-sized array): byte-identical to
    ``pycocotools.mask.encode`` of the dense mask.

    Returns:
        ``{"size": [height, width], "counts": str}``.

    Raises:
        ValueError: The crop does not lie inside the frame.
    """
    return encode_rles([crop], height, width)[0]


RLE_BATCH_RUNS = 1 << 18
"""Run lengths compressed per vectorised pass of :func:`encode_rles` (bounds its memory)."""


def encode_rles(crops: Sequence[MaskCrop], height: int, width: int) -> list[dict[str, object]]:
    """:func:`encode_rle` of many masks of one frame, the strings compressed in one pass.

    Raises:
        ValueError: A crop does not lie inside the frame.
    """
    strings: list[str] = []
    batch: list[NDArray[np.int64]] = []
    runs = 0
    for crop in crops:
        counts = crop_rle_counts(crop, height, width)
        batch.append(counts)
        runs += len(counts)
        # the vectorised pass takes ~100 bytes per run: bound it (noisy masks of a 50 MP frame
        # have tens of millions of runs)
        if runs >= RLE_BATCH_RUNS:
            strings += rle_strings(batch)
            batch, runs = [], 0
    strings += rle_strings(batch)
    return [{"size": [height, width], "counts": s} for s in strings]


Contours = list[NDArray[np.int32]]
"""OpenCV contours of one mask: (k, 1, 2) int32 (x, y) points in crop pixels."""


def mask_contours(crop: MaskCrop) -> Contours:
    """Outer contours of a mask (one per 8-connected region), in crop pixels.

    Computed once per mask, they serve both :func:`mask_to_polygons` and the overlay's
    outlines (``edge.overlay.draw_contours``). OpenCV traces regions that touch the crop's
    edge like interior ones (no padding needed).
    """
    if crop.area == 0:
        return []
    data = crop.data.view(np.uint8)  # decoded from the packed bits, this crop only
    contours, _ = cv2.findContours(data, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return list(contours)


def mask_to_polygons(
    crop: MaskCrop, epsilon: float = 0.0, contours: Contours | None = None
) -> list[list[float]]:
    """Outer contours of a mask as polygons ``[x1, y1, x2, y2, ...]`` in frame pixels.

    Vertices are the centres of boundary pixels (OpenCV's contour convention). Clean the mask
    first with :func:`clean_mask` to drop small regions or fill holes.

    Args:
        crop: The mask.
        epsilon: Douglas-Peucker tolerance in pixels (0: every corner of the pixel chain).
        contours: The mask's :func:`mask_contours`, if already computed.

    Returns:
        One polygon per 8-connected region; a one- or two-pixel region gives a polygon with
        fewer than 3 vertices rather than vanishing.
    """
    polygons: list[list[float]] = []
    offset = np.array([crop.x0, crop.y0], dtype=np.int64)
    for contour in mask_contours(crop) if contours is None else contours:
        if epsilon > 0:
            contour = cv2.approxPolyDP(contour, epsilon, True)
        pts = contour.reshape(-1, 2) + offset
        polygons.append(pts.ravel().astype(np.float64).tolist())
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

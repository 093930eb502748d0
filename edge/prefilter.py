"""Text-prompt prefilter: rank every mask by CLIP's dense map, encode only the few best crops.

A text prompt's cost is CLIP's image tower, once per candidate crop (20-100 ms each on two
cores, a Pi is slower). Ranking the candidates by detection score (``top_k``) is cheap but
blind to the text. For conv image towers (MobileCLIP, MobileCLIP2: average pooling, then linear
maps) the export writes a *dense* encoder whose per-location terms average to the pooled
embedding (:class:`edge.clip.DenseMap`). One pass over the whole frame, at about the cost of
one crop, then gives every mask a text score: the mean of the terms under the mask, L2-
normalised, against the text embedding. Only the ``shortlist`` best masks per text are cut and
encoded as crops, and the final choice among them is the crop encoder's, exactly as without
the prefilter.

All functions are pure numpy; shapes in the docstrings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from edge.errors import InputError
from edge.types import MaskCrop

if TYPE_CHECKING:
    from edge.clip import DenseMap

# Crops encoded per text after the dense ranking: with the export's 640 px map, 10 keeps the
# all-masks choice on 96 % of the texts of the demo world's busy scenes (MobileCLIP-family proxy
# tower; 8: 93 %) at about half the time of the 32 best by score (docs/benchmarks.md, "the
# dense prefilter").
DENSE_SHORTLIST = 10
# How text candidates are narrowed before their crops are encoded: "dense" ranks every candidate
# by the dense map and encodes the ``DENSE_SHORTLIST`` best (bundles with ``clip.dense``),
# "score" encodes the ``top_k`` best by ``score * sqrt(area)``, "auto" is dense where available.
TEXT_PREFILTERS: tuple[str, ...] = ("auto", "dense", "score")


def _bands(
    start: int, length: int, scale: float, stride: int, cells: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Cells hit by frame pixels ``start .. start + length - 1`` along one axis.

    Returns:
        (cell index per band, first pixel offset of each band); bands are runs of pixels whose
        centres fall in the same cell (the map's cells are ``stride / scale`` frame pixels).
    """
    centres = (np.arange(start, start + length, dtype=np.float64) + 0.5) * scale
    idx = np.minimum((centres // stride).astype(np.intp), cells - 1)
    first = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    return idx[first], first


def cell_counts(crop: MaskCrop, dense: DenseMap) -> NDArray[np.float32]:
    """(rows, cols) number of the mask's pixels in each cell of ``dense``'s grid.

    Args:
        crop: One mask (frame coordinates via its ``x0``/``y0``).
        dense: The frame's dense map (its ``scale`` maps frame pixels into the dense input).
    """
    rows, cols = dense.grid_hw
    out = np.zeros((rows, cols), dtype=np.float32)
    h, w = crop.shape
    if h == 0 or w == 0 or crop.area == 0:
        return out
    ry, y_first = _bands(crop.y0, h, dense.scale, dense.stride, rows)
    cx, x_first = _bands(crop.x0, w, dense.scale, dense.stride, cols)
    per_col_band = np.add.reduceat(crop.data.astype(np.int32), x_first, axis=1)  # (h, Bx)
    per_cell = np.add.reduceat(per_col_band, y_first, axis=0)  # (By, Bx)
    out[np.ix_(ry, cx)] = per_cell
    return out


def mask_embeddings(
    crops: tuple[MaskCrop, ...] | list[MaskCrop], indices: NDArray[np.intp], dense: DenseMap
) -> NDArray[np.float32]:
    """(N, D) L2-normalised mean of the dense terms under each mask ``crops[indices[n]]``.

    A mask outside the map (no pixel in any cell) gets a zero row (similarity 0).
    """
    rows, cols = dense.grid_hw
    d = dense.features.shape[-1]
    if len(indices) == 0:
        return np.zeros((0, d), dtype=np.float32)
    weights = np.stack([cell_counts(crops[int(i)], dense).reshape(-1) for i in indices])
    emb = weights @ dense.features.reshape(rows * cols, d)  # sums; the norm drops the count
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    return (emb / np.maximum(norm, 1e-12)).astype(np.float32)


def candidates_only(
    image: NDArray[np.uint8],
    crops: tuple[MaskCrop, ...] | list[MaskCrop],
    indices: NDArray[np.intp],
) -> NDArray[np.uint8]:
    """(H, W, 3) copy of the frame, black outside every candidate mask.

    The crops CLIP scores are masked on black; the dense map of a frame blacked out alike is
    closer to them (on the demo world's busy scenes it keeps the all-masks choice 6-8 points
    more often at every size, docs/benchmarks.md).
    """
    keep = np.zeros(image.shape[:2], dtype=bool)
    for i in indices:
        crops[int(i)].paste(keep)
    return image * keep[:, :, None].astype(np.uint8)


def shortlist(
    scores: NDArray[np.float32], candidates: NDArray[np.intp], size: int
) -> NDArray[np.intp]:
    """The ``size`` best candidates of each text by dense score, united over the texts.

    Args:
        scores: (T, N) dense similarity of each text to each candidate.
        candidates: (N,) mask indices of the candidates.
        size: Crops kept per text (>= 1).

    Returns:
        (M,) sorted unique mask indices, M <= min(N, T * size); ties keep the lower index.
    """
    rows = shortlist_rows(scores, size)
    return np.unique(np.asarray(candidates, dtype=np.intp)[rows.reshape(-1)])


def shortlist_rows(scores: NDArray[np.float32], size: int) -> NDArray[np.intp]:
    """(T, min(N, size)) candidate positions of each text's shortlist, best first (ties: lower
    position); :func:`shortlist` is their union as mask indices."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"text_shortlist: expected a positive integer, got {size!r}")
    return np.argsort(-scores, axis=1, kind="stable")[:, :size].astype(np.intp, copy=False)

"""Decode, NMS, box scaling, the full-box step and per-box-ROI mask assembly.

Everything here is pure numpy on the raw ONNX outputs of a FastSAM (YOLOv8-seg, nc=1) model:

* ``output0``: (1, 4 + 1 + 32, N) -- cx, cy, w, h in input pixels, sigmoided score, 32 raw mask
  coefficients.
* ``output1``: (1, 32, H_in / 4, W_in / 4) -- prototype masks.

The maths follows the ultralytics 8.4.190 FastSAM pipeline with ``retina_masks=True``: strict
``score > conf``, greedy NMS dropping ``IoU > iou``, masks as ``sign(coeffs @ protos)``
upsampled (first by 1, 2 or 4 so the letterbox padding falls on whole proto pixels, then to the
source size) and cut to ``x1 <= col < x2, y1 <= row < y2`` of the source-space box, detections
with an empty mask dropped, and finally the full-box step on the
*reported* boxes only (border snap within 20 px, IoU > 0.9 with the frame -> the frame).

Unlike the reference, masks are computed only inside each box ROI via separable interpolation
matrices, so memory and time follow mask area instead of N x H x W.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from edge.types import MaskCrop, Masks

MAX_NMS = 30000
BORDER_SNAP_PX = 20
FULL_BOX_IOU = 0.9
_IOU_EPS = 1e-7


@dataclass(frozen=True)
class Candidates:
    """Detections after thresholding (and NMS), in letterboxed-input pixels.

    Attributes:
        xyxy: (M, 4) float32 boxes.
        confidence: (M,) float32 scores.
        coefficients: (M, 32) float32 mask coefficients.
    """

    xyxy: NDArray[np.float32]
    confidence: NDArray[np.float32]
    coefficients: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.confidence.shape[0])

    def take(self, index: NDArray[np.intp] | NDArray[np.bool_]) -> Candidates:
        """Return the rows selected by an integer or boolean index."""
        return Candidates(self.xyxy[index], self.confidence[index], self.coefficients[index])


def decode_predictions(output0: NDArray[np.float32], conf_threshold: float) -> Candidates:
    """Keep anchors with ``score > conf_threshold`` and convert their boxes to xyxy.

    Args:
        output0: (1, 5 + nm, N) or (5 + nm, N) float32 raw detector output.
        conf_threshold: Strict score threshold in [0, 1].

    Returns:
        Candidates in anchor order (not yet sorted).
    """
    pred = output0[0] if output0.ndim == 3 else output0
    scores = pred[4]
    keep = np.flatnonzero(scores > np.float32(conf_threshold))
    rows = pred[:, keep].T  # (M, 5 + nm), only the survivors are transposed
    xy, half_wh = rows[:, 0:2], rows[:, 2:4] / np.float32(2)
    xyxy = np.concatenate([xy - half_wh, xy + half_wh], axis=1).astype(np.float32, copy=False)
    return Candidates(
        xyxy=np.ascontiguousarray(xyxy),
        confidence=np.ascontiguousarray(rows[:, 4], dtype=np.float32),
        coefficients=np.ascontiguousarray(rows[:, 5:], dtype=np.float32),
    )


def box_iou_matrix(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    """Pairwise IoU of two sets of xyxy boxes.

    Args:
        a: (N, 4) boxes.
        b: (M, 4) boxes.

    Returns:
        (N, M) float32 IoU, areas without the +1 convention.
    """
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return (inter / (area_a[:, None] + area_b[None, :] - inter)).astype(np.float32)


def nms(
    xyxy: NDArray[np.float32],
    confidence: NDArray[np.float32],
    iou_threshold: float,
    max_det: int = 300,
) -> NDArray[np.intp]:
    """Greedy class-agnostic NMS, as torchvision's ``nms``.

    The highest-scoring remaining box is kept and every box with ``IoU > iou_threshold`` against
    it is dropped. Greedy NMS never revisits a kept box, so stopping after ``max_det`` keeps gives
    exactly the first ``max_det`` of the full run.

    Args:
        xyxy: (N, 4) float32 boxes.
        confidence: (N,) float32 scores.
        iou_threshold: Suppression threshold in [0, 1].
        max_det: Maximum number of boxes to keep.

    Returns:
        (K,) indices into the inputs, score-descending, K <= max_det.
    """
    n = len(confidence)
    if n == 0 or max_det <= 0:
        return np.zeros((0,), dtype=np.intp)
    order = np.argsort(-confidence, kind="stable")
    if n > MAX_NMS:
        order = order[:MAX_NMS]
    boxes = xyxy[order].astype(np.float32)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    alive = np.ones(len(order), dtype=bool)
    keep: list[int] = []
    thr = np.float32(iou_threshold)
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) >= max_det:
            break
        rest = i + 1 + np.flatnonzero(alive[i + 1 :])
        if rest.size == 0:
            break
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        # two zero-area boxes: 0 / 0 = NaN, which never suppresses (as torchvision's NMS)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (areas[i] + areas[rest] - inter)
        alive[rest[iou > thr]] = False
    return order[np.asarray(keep, dtype=np.intp)]


def scale_boxes_to_source(
    xyxy: NDArray[np.float32], input_hw: tuple[int, int], source_hw: tuple[int, int]
) -> NDArray[np.float32]:
    """Map boxes from letterboxed-input pixels to source pixels and clip them to the frame.

    The gains and padding are re-derived from the two shapes exactly as the reference does.

    Args:
        xyxy: (N, 4) float32 boxes in input pixels.
        input_hw: (height, width) of the network input.
        source_hw: (height, width) of the source image.

    Returns:
        (N, 4) float32 boxes in source pixels, clipped to [0, W] x [0, H].
    """
    (ih, iw), (h0, w0) = input_hw, source_hw
    gain = min(ih / h0, iw / w0)
    new_h, new_w = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
    pad_x, pad_y = round((iw - new_w) / 2 - 0.1), round((ih - new_h) / 2 - 0.1)
    out = xyxy.astype(np.float32, copy=True)
    out[:, [0, 2]] -= np.float32(pad_x)
    out[:, [1, 3]] -= np.float32(pad_y)
    out[:, [0, 2]] /= np.float32(new_w / w0)
    out[:, [1, 3]] /= np.float32(new_h / h0)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w0)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h0)
    return out


def apply_full_box(xyxy: NDArray[np.float32], source_hw: tuple[int, int]) -> NDArray[np.float32]:
    """FastSAM's border snap and full-box replacement on reported (source-pixel) boxes.

    Edges within 20 px of the frame border are snapped to it; every snapped box whose IoU with
    the whole frame exceeds 0.9 becomes the whole frame. Masks are not affected (they were cut
    with the unsnapped boxes, as in the reference).

    Args:
        xyxy: (N, 4) float32 boxes in source pixels.
        source_hw: (height, width) of the source image.

    Returns:
        (N, 4) float32 adjusted copy.
    """
    h, w = source_hw
    out = xyxy.astype(np.float32, copy=True)
    if len(out) == 0:
        return out
    out[out[:, 0] < BORDER_SNAP_PX, 0] = 0
    out[out[:, 1] < BORDER_SNAP_PX, 1] = 0
    out[out[:, 2] > w - BORDER_SNAP_PX, 2] = w
    out[out[:, 3] > h - BORDER_SNAP_PX, 3] = h
    full = np.array([0, 0, w, h], dtype=np.float32)
    iw = np.clip(np.minimum(out[:, 2], full[2]) - np.maximum(out[:, 0], 0), 0, None)
    ih = np.clip(np.minimum(out[:, 3], full[3]) - np.maximum(out[:, 1], 0), 0, None)
    inter = iw * ih
    area = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
    iou = inter / (np.float32(w * h) + area - inter + np.float32(_IOU_EPS))
    out[iou > FULL_BOX_IOU] = full
    return out


def _bilinear_matrix(n_in: int, n_out: int, scale: float) -> NDArray[np.float64]:
    """(n_out, n_in) matrix of torch/cv2 bilinear resampling (half-pixel centres, edge clamp)."""
    d = np.arange(n_out, dtype=np.float64)
    s = np.maximum((d + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(s).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = s - i0
    mat = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(mat, (rows, i0), 1.0 - lam)
    np.add.at(mat, (rows, i1), lam)
    return mat


@dataclass(frozen=True)
class AxisTaps:
    """Sparse bilinear taps of one axis: output ``i`` = sum_k ``weight[i, k] * src[index[i, k]]``.

    Attributes:
        index: (n_out, K) int64 source indices (unused taps repeat a valid index, weight 0).
        weight: (n_out, K) float32 weights.
        first: (n_out,) smallest source index with a non-zero weight.
        stop: (n_out,) one past the largest such index.
    """

    index: NDArray[np.int64]
    weight: NDArray[np.float32]
    first: NDArray[np.int64]
    stop: NDArray[np.int64]

    @classmethod
    def from_matrix(cls, mat: NDArray[np.float64]) -> AxisTaps:
        """Compress a banded (n_out, n_in) resampling matrix into taps."""
        nz = mat != 0
        k = max(int(nz.sum(axis=1).max()), 1)
        first = np.argmax(nz, axis=1)
        stop = mat.shape[1] - np.argmax(nz[:, ::-1], axis=1)
        offsets = np.arange(k)
        index = np.minimum(first[:, None] + offsets[None, :], mat.shape[1] - 1)
        weight = np.take_along_axis(mat, index, axis=1)
        # A band narrower than k near the edge would repeat an index: zero the repeats.
        weight[(first[:, None] + offsets[None, :]) >= stop[:, None]] = 0.0
        return cls(index.astype(np.int64), weight.astype(np.float32), first, stop)


@dataclass(frozen=True)
class MaskResampler:
    """Separable proto -> source resampling for one (proto size, source size) pair.

    Applying the taps of both axes equals the reference's chain (optional x1/x2/x4 bilinear
    upsample, crop of the letterbox padding, bilinear resize to the source size): each chain is
    linear and separable, so it collapses into at most 4 taps per output row/column.

    Attributes:
        rows: Taps from proto rows to source rows.
        cols: Taps from proto columns to source columns.
    """

    rows: AxisTaps
    cols: AxisTaps

    @classmethod
    def create(cls, proto_hw: tuple[int, int], source_hw: tuple[int, int]) -> MaskResampler:
        """Build the taps.

        Args:
            proto_hw: (hp, wp) prototype size (input size / 4).
            source_hw: (H0, W0) source image size.
        """
        mh, mw = proto_hw
        h, w = source_hw
        gain = min(4 * mh / h, 4 * mw / w)
        pad = (4 * mh - max(round(h * gain), 1)) | (4 * mw - max(round(w * gain), 1))
        # Upsample by 1, 2 or 4 first so that the crop of the padding falls on whole pixels.
        f = 4 // math.gcd(4, pad | pad // 2)
        uh, uw = f * mh, f * mw
        g = min(uh / h, uw / w)
        ch, cw = max(round(h * g), 1), max(round(w * g), 1)
        top, left = round((uh - ch) / 2 - 0.1), round((uw - cw) / 2 - 0.1)
        if (uh, uw) == (h, w):  # the reference skips the resize (and crop) for equal sizes
            top, left, ch, cw = 0, 0, h, w
        wy = _bilinear_matrix(ch, h, ch / h) @ _bilinear_matrix(mh, uh, 1 / f)[top : top + ch]
        wx = _bilinear_matrix(cw, w, cw / w) @ _bilinear_matrix(mw, uw, 1 / f)[left : left + cw]
        return cls(AxisTaps.from_matrix(wy), AxisTaps.from_matrix(wx))


def box_roi(xyxy: NDArray[np.float32], source_hw: tuple[int, int]) -> NDArray[np.int64]:
    """Integer pixel ROI ``[c0, r0, c1, r1)`` kept by ``x1 <= col < x2, y1 <= row < y2``.

    Args:
        xyxy: (N, 4) float32 source-pixel boxes.
        source_hw: (height, width) of the source image.

    Returns:
        (N, 4) int64 half-open ROIs, clipped to the frame (possibly empty).
    """
    h, w = source_hw
    roi = np.ceil(xyxy.astype(np.float64)).astype(np.int64)
    roi[:, [0, 2]] = roi[:, [0, 2]].clip(0, w)
    roi[:, [1, 3]] = roi[:, [1, 3]].clip(0, h)
    return roi


def assemble_mask(
    coefficients: NDArray[np.float32],
    protos: NDArray[np.float32],
    roi: NDArray[np.int64] | tuple[int, int, int, int],
    resampler: MaskResampler,
) -> NDArray[np.bool_]:
    """Assemble one binary mask inside its ROI at source resolution.

    Args:
        coefficients: (32,) float32 mask coefficients of one detection.
        protos: (32, hp, wp) float32 prototypes.
        roi: ``(c0, r0, c1, r1)`` half-open pixel ROI in source pixels (from :func:`box_roi`).
        resampler: Resampling taps for this proto/source size pair.

    Returns:
        (r1 - r0, c1 - c0) bool mask crop (logit > 0).
    """
    c0, r0, c1, r1 = (int(v) for v in roi)
    if c1 <= c0 or r1 <= r0:
        return np.zeros((max(r1 - r0, 0), max(c1 - c0, 0)), dtype=bool)
    rows, cols = resampler.rows, resampler.cols
    sy0, sy1 = int(rows.first[r0]), int(rows.stop[r1 - 1])
    sx0, sx1 = int(cols.first[c0]), int(cols.stop[c1 - 1])
    sub = protos[:, sy0:sy1, sx0:sx1]
    logits = (coefficients @ sub.reshape(sub.shape[0], -1)).reshape(sy1 - sy0, sx1 - sx0)
    # Columns first, exactly, on the few proto rows of the band: (nr, roi_w).
    cidx = np.minimum(cols.index[c0:c1] - sx0, sx1 - sx0 - 1)
    cw = cols.weight[c0:c1]
    # np.take + in-place products: about 1.7x faster than fancy indexing (fewer temporaries).
    narrow = np.take(logits, cidx[:, 0], axis=1)
    narrow *= cw[:, 0]
    for k in range(1, cidx.shape[1]):
        tap = np.take(logits, cidx[:, k], axis=1)
        tap *= cw[:, k]
        narrow += tap
    # Then rows at full ROI size. (Interpolating only mixed-sign cells was tried: on trained
    # and untrained models alike it was no faster than this dense pass; see git history.)
    ridx = np.minimum(rows.index[r0:r1] - sy0, sy1 - sy0 - 1)
    rw = rows.weight[r0:r1]
    full = np.take(narrow, ridx[:, 0], axis=0)
    full *= rw[:, 0:1]
    for k in range(1, ridx.shape[1]):
        tap = np.take(narrow, ridx[:, k], axis=0)
        tap *= rw[:, k : k + 1]
        full += tap
    return full > 0


# --------------------------------------------------------------------------------------------
# Stage (a): one frame's detections, masks assembled on demand
# --------------------------------------------------------------------------------------------


class FrameCache(Protocol):
    """Per-frame state a later stage keeps on :class:`Detections` (:meth:`Detections.cache`)."""

    def __init__(self) -> None: ...

    @property
    def nbytes(self) -> int:
        """Memory held, counted in :attr:`Detections.nbytes`."""
        ...

    def release(self) -> None:
        """Drop what was derived from assembled masks (:meth:`Detections.release_masks`)."""
        ...


_C = TypeVar("_C", bound=FrameCache)


@lru_cache(maxsize=8)
def _resampler(proto_hw: tuple[int, int], source_hw: tuple[int, int]) -> MaskResampler:
    """Cached per (proto, source) size: camera frames repeat one size."""
    return MaskResampler.create(proto_hw, source_hw)


@dataclass
class Detections:
    """Stage (a) of the post-processing: kept detections with ROIs, masks assembled on demand.

    Everything mode assembles all of them (:meth:`to_masks`); prompts assemble only what they
    need (:mod:`edge.selection`). Assembled crops are cached bit-packed (:class:`MaskCrop`, an
    eighth of a bool crop), so nothing is assembled twice and many masks of a 1080p frame stay
    small.

    Attributes:
        xyxy: (N, 4) float32 source-pixel boxes as cut (before the full-box step).
        confidence: (N,) float32 scores, descending (NMS order).
        coefficients: (N, 32) float32 mask coefficients.
        rois: (N, 4) int64 half-open ROIs ``c0, r0, c1, r1`` (:func:`box_roi`).
        protos: (32, hp, wp) float32 prototypes.
        resampler: Proto -> source taps (``None`` when there are no detections).
        source_hw: (height, width) of the source image.
    """

    xyxy: NDArray[np.float32]
    confidence: NDArray[np.float32]
    coefficients: NDArray[np.float32]
    rois: NDArray[np.int64]
    protos: NDArray[np.float32]
    resampler: MaskResampler | None
    source_hw: tuple[int, int]
    _crops: dict[int, MaskCrop] = field(default_factory=dict, repr=False)
    _caches: dict[type[FrameCache], FrameCache] = field(default_factory=dict, repr=False)
    pool: Executor | None = field(default=None, repr=False)
    """Threads for :meth:`prefetch` (``None`` = assemble serially)."""
    workers: int = 1
    """Size of :attr:`pool`."""
    image: NDArray[np.uint8] | None = field(default=None, repr=False)
    """The (H, W, 3) BGR source image (set by ``Segmenter.detect``; text prompts crop it)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Detection stage times in ms (``preprocess``, ``infer``, ``postprocess``)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """``thresholds`` and ``input_hw`` of the detection, copied into every selected result."""
    class_id: NDArray[np.int64] | None = None
    """(N,) int64 word of each detection (open-vocabulary bundles); ``None``: class-agnostic."""
    names: tuple[str, ...] = ()
    """The vocabulary :attr:`class_id` indexes."""
    full_box: bool = True
    """Apply FastSAM's full-box step to reported boxes (not for YOLOE)."""

    def __len__(self) -> int:
        return int(self.confidence.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held: arrays, the image, assembled masks and CLIP embeddings (approximate)."""
        arrays = (self.xyxy, self.confidence, self.coefficients, self.rois, self.protos)
        total = sum(a.nbytes for a in arrays)
        total += self.image.nbytes if self.image is not None else 0
        # a copy: the worker may be assembling masks while another thread asks
        total += sum(c.nbytes for c in list(self._crops.values()))
        total += sum(c.nbytes for c in list(self._caches.values()))
        # the resampler is shared by every frame of the same size (cached), not counted here
        return int(total)

    def release_masks(self) -> None:
        """Forget the assembled masks (they are re-assembled on demand): frees memory.

        Caches of later stages drop what they derived from the masks
        (:meth:`FrameCache.release`) and keep the rest (e.g. CLIP crop embeddings).
        """
        self._crops.clear()
        for cache in list(self._caches.values()):
            cache.release()

    def cache(self, kind: type[_C]) -> _C:
        """This frame's cache of type ``kind``, created empty on first use.

        A later stage (:mod:`edge.selection`) keeps its per-frame state here, typed, without
        this module knowing its type; it lives and dies with the detections.
        """
        found = self._caches.get(kind)
        if found is None:
            found = self._caches[kind] = kind()
        assert isinstance(found, kind)
        return found

    @property
    def num_assembled(self) -> int:
        """How many masks have been assembled so far."""
        return len(self._crops)

    def mask_crop(self, i: int) -> MaskCrop:
        """The packed mask of detection ``i``, its crop = its ROI (assembled once, cached)."""
        crop = self._crops.get(i)
        if crop is None:
            crop = self._crops[i] = self._assemble(i)
        return crop

    def crop(self, i: int) -> NDArray[np.bool_]:
        """The (r1 - r0, c1 - c0) bool mask of detection ``i`` inside its ROI (decoded from
        the cached packed crop on each call)."""
        return self.mask_crop(i).data

    def _assemble(self, i: int) -> MaskCrop:
        assert self.resampler is not None
        roi = self.rois[i]
        data = assemble_mask(self.coefficients[i], self.protos, roi, self.resampler)
        # packed right away: only the workers' current crops are ever held as bool
        return MaskCrop(data, int(roi[0]), int(roi[1]))

    def prefetch(self, indices: Sequence[int]) -> None:
        """Assemble the not-yet-assembled ``indices`` at once, on :attr:`pool` if set.

        Work is split into one interleaved chunk per worker (masks come score-sorted, not
        size-sorted, so interleaving balances the chunks); results are identical to serial
        assembly, only faster where the masks are many or large.
        """
        todo = [int(i) for i in dict.fromkeys(indices) if int(i) not in self._crops]
        workers = self.workers
        if self.pool is None or workers <= 1 or len(todo) < 2 * workers:
            for i in todo:
                self.crop(i)
            return

        def run(chunk: list[int]) -> list[MaskCrop]:
            return [self._assemble(i) for i in chunk]

        chunks = [todo[k::workers] for k in range(workers)]
        for chunk, crops in zip(chunks, self.pool.map(run, chunks), strict=True):
            self._crops.update(zip(chunk, crops, strict=True))

    def area(self, i: int) -> int:
        """Foreground pixels of detection ``i`` (assembles it)."""
        return self.mask_crop(i).area

    def nonempty(self, indices: Sequence[int] | None = None) -> list[int]:
        """The given detections (default all) whose mask is not empty, in order."""
        idx = [int(i) for i in (range(len(self)) if indices is None else indices)]
        self.prefetch(idx)
        return [i for i in idx if self.area(i) > 0]

    def to_masks(
        self, indices: Sequence[int] | None = None, data: dict[str, Sequence[Any]] | None = None
    ) -> Masks:
        """Assemble detections (default all, in the given order) into a result.

        Detections with an empty mask are dropped, as in the reference; reported boxes get the
        full-box step. ``data`` holds per-index extras (same length as ``indices``), filtered
        alike and stored as ``Masks.data``.
        """
        idx_all = list(range(len(self))) if indices is None else [int(i) for i in indices]
        self.prefetch(idx_all)
        rows = [j for j, i in enumerate(idx_all) if self.area(i) > 0]
        idx = np.asarray([idx_all[j] for j in rows], dtype=np.intp)
        extras = {
            k: np.asarray(v)[rows] if len(v) else np.zeros(0, np.int64)
            for k, v in (data or {}).items()
        }
        if len(idx) == 0:
            out = Masks.empty(*self.source_hw, names=self.names)
            out.data.update({k: v[:0] for k, v in extras.items()})
            return out
        xyxy = self.xyxy[idx]
        return Masks(
            xyxy=apply_full_box(xyxy, self.source_hw) if self.full_box else xyxy.copy(),
            confidence=self.confidence[idx].astype(np.float32),
            crops=tuple(self.mask_crop(int(i)) for i in idx),  # immutable: shared
            image_hw=self.source_hw,
            data=extras,
            class_id=None if self.class_id is None else self.class_id[idx],
            names=self.names,
        )


def prepare_detections(
    output0: NDArray[np.float32],
    protos: NDArray[np.float32],
    input_hw: tuple[int, int],
    source_hw: tuple[int, int],
    conf: float,
    iou: float,
    max_det: int,
) -> Detections:
    """Stage (a): decode, NMS, source boxes and ROIs; no mask is assembled yet.

    Args:
        output0: (1, 5 + nm, N) float32 detector output.
        protos: (1, nm, H_in / 4, W_in / 4) float32 prototypes.
        input_hw: (height, width) of the network input.
        source_hw: (height, width) of the source image.
        conf: Score threshold (strict).
        iou: NMS IoU threshold.
        max_det: Maximum detections.
    """
    cand = decode_predictions(output0, conf)
    return candidates_to_detections(
        cand.take(nms(cand.xyxy, cand.confidence, iou, max_det)), protos, input_hw, source_hw
    )


def candidates_to_detections(
    cand: Candidates,
    protos: NDArray[np.float32],
    input_hw: tuple[int, int],
    source_hw: tuple[int, int],
) -> Detections:
    """Kept candidates (input pixels) as :class:`Detections`: source boxes, ROIs, prototypes.

    Args:
        cand: Detections after thresholding and NMS (or top-k), score-descending.
        protos: (1, nm, H_in / 4, W_in / 4) float32 prototypes.
        input_hw: (height, width) of the network input.
        source_hw: (height, width) of the source image.
    """
    proto = np.ascontiguousarray(protos[0], dtype=np.float32)
    xyxy = scale_boxes_to_source(cand.xyxy, input_hw, source_hw)
    resampler = _resampler((proto.shape[1], proto.shape[2]), source_hw) if len(cand) else None
    return Detections(
        xyxy=xyxy,
        confidence=cand.confidence.astype(np.float32),
        coefficients=np.ascontiguousarray(cand.coefficients, dtype=np.float32),
        rois=box_roi(xyxy, source_hw),
        protos=proto,
        resampler=resampler,
        source_hw=source_hw,
    )

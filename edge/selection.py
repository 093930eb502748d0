"""Prompt selection: which of one frame's detections a point, box or text prompt selects.

Input: :class:`~edge.postprocess.Detections` (masks assembled on demand) and prompts already
validated by :mod:`edge.prompts`. Output: a :class:`Selection`, turned into the result
:class:`~edge.types.Masks` by :func:`selection_to_masks`.

Semantics follow ultralytics 8.4.190 ``FastSAMPredictor.prompt`` ("UL-new", see
``docs/prompts.md``) unless stated otherwise:

* **Box** (``BoxPrompt``): each box is truncated toward zero to integer pixels (as
  ``torch.as_tensor(..., dtype=int32)``) and clipped to the frame. For every mask M,
  ``IoU = |M ∩ box| / (|box| + |M| - |M ∩ box|)`` (the filled rectangle against the mask pixels),
  computed in float32 like the reference; the argmax per box (first index on ties) is selected and
  the winners of all boxes are OR-ed (deduplicated, kept in score order). Reference quirk, kept
  for parity: when every IoU is 0 the argmax is index 0, i.e. the *first non-empty* mask (the
  reference drops empty masks before prompting).
* **Point** (``PointPrompt``), ``mode="reference"`` (default): points are truncated to
  integers and clipped to ``[0, W-1] x [0, H-1]``; a mask is selected iff it contains at least one
  positive point (label 1) and no negative point (label 0); with only negative points every mask
  containing none of them is selected. ``mode="official"``: the FastSAM repository rule -- masks
  sorted by area (descending, stable), each painted with the label of the *last* point inside it,
  the result is ONE merged mask (pixels painted 1). ``mode="best"`` (not in any reference): the
  single smallest-area mask satisfying the reference rule -- what a click usually means.
* **Text** (``TextPrompt``): CLIP over mask crops, the argmax per text (:mod:`edge.textmatch`,
  which holds the text matching and its candidates' prefilters).
* **Several prompts**: the union of their selections (the reference ORs its box, point and text
  selections). ``result.data["prompt_index"]`` records, for each returned mask, the index of the
  *first* prompt (in the order given) that selected it. Masks are returned in score order; the
  merged mask of each ``mode="official"`` point prompt is appended after them, in prompt order.
* **No prompt**: everything mode.

Speed beyond the reference: point and box prompts never assemble every mask. Whether mask i
contains pixel (x, y) is decided from the ROI and the sign of the mask logit at that pixel
(:func:`mask_logit_at`, a handful of taps); box IoUs are evaluated in decreasing order of the
upper bound ``|box ∩ roi_i| / |box|`` and the search stops as soon as no remaining candidate can
beat the best exact IoU.
Sign bounds (:class:`SignBounds`) of a mask, from prototype-resolution logits only, tighten the
box bound and order the ``best`` point search. Per-frame state (the bounds) is a typed
:class:`SelectionCache` on the detections.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from edge.errors import InputError
from edge.postprocess import AxisTaps, Detections, MaskResampler
from edge.prompts import (
    BoxPrompt,
    PointPrompt,
    Prompt,
    TextPrompt,
    describe,
    json_number,
    pixel_box,
)
from edge.textmatch import (
    TEXT_MIN_AREA,
    CachedTextEncoder,
    TextEncoder,
    TextOptions,
    dense_text_matches,
    score_text_matches,
    use_dense,
)
from edge.types import MaskCrop, Masks

# sign(logit) computed here in float64 equals assemble_mask's float32 sign whenever
# |logit| > _LOGIT_REL_TOL * sum(|w| * |c| * |p|): float32 rounding of a 32-term dot product plus
# two <=4-tap sums is below ~45 ulp (2^-24 each) of that sum; 2^-16 leaves a 5x margin.
_LOGIT_REL_TOL = 2.0**-16


def _int_points(pts: NDArray[np.float64], image_hw: tuple[int, int]) -> NDArray[np.int64]:
    """Truncate toward zero (``int64`` cast) and clip to ``[0, W-1] x [0, H-1]``."""
    h, w = image_hw
    c = np.trunc(pts).astype(np.int64)
    c[:, 0] = c[:, 0].clip(0, w - 1)
    c[:, 1] = c[:, 1].clip(0, h - 1)
    return c


# --------------------------------------------------------------------------------------------
# Pixel test without assembling the mask
# --------------------------------------------------------------------------------------------


def mask_logit_at(
    coefficients: NDArray[np.float32],
    protos: NDArray[np.float32],
    x: int,
    y: int,
    resampler: MaskResampler,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mask logits at source pixel (x, y) for one or many detections, without assembling.

    The resampled logit is ``sum_k sum_l rw_k * cw_l * (c @ protos[:, ri_k, ci_l])`` over the
    (at most 4 x 4) taps of row ``y`` and column ``x``. It is computed in float64 with the same
    float32 weights as :func:`edge.postprocess.assemble_mask`, so ``logit > 0`` equals the
    assembled pixel whenever ``|logit| > tolerance``; inside that band (float32 rounding of the
    assembly decides) callers must assemble the mask. The ROI test is the caller's.

    Args:
        coefficients: (32,) or (N, 32) float32 mask coefficients.
        protos: (32, hp, wp) float32 prototypes.
        x: Source column.
        y: Source row.
        resampler: The proto -> source taps.

    Returns:
        ``(logits, tolerance)``: (N,) float64 each (or 0-d arrays for one detection).
    """
    rows, cols = resampler.rows, resampler.cols
    ri, rw = rows.index[y], rows.weight[y].astype(np.float64)
    ci, cw = cols.index[x], cols.weight[x].astype(np.float64)
    patch = protos[:, ri][:, :, ci].astype(np.float64).reshape(protos.shape[0], -1)  # (32, K*L)
    w = (rw[:, None] * cw[None, :]).reshape(-1)
    c = np.asarray(coefficients, dtype=np.float64)
    logits = (c @ patch) @ w
    scale = (np.abs(c) @ np.abs(patch)) @ np.abs(w)
    return logits, scale * _LOGIT_REL_TOL + 1e-30


# --------------------------------------------------------------------------------------------
# Points and boxes
# --------------------------------------------------------------------------------------------


class MergedMask(NamedTuple):
    """The one mask an ``official`` point prompt paints (:func:`merge_points`).

    Attributes:
        crop: The merged mask, cropped to the involved ROIs' union.
        confidence: Best score of the masks painted foreground.
        prompt_index: Index of the point prompt (set by :func:`select`; -1 until then).
    """

    crop: MaskCrop
    confidence: float
    prompt_index: int = -1


@dataclass
class Selection:
    """Outcome of prompt selection on lazily assembled detections.

    Attributes:
        prompt_index: Candidate (post-NMS detection) index -> index of the first prompt that
            selected it.
        merged: The merged masks of ``official`` point prompts, in prompt order.
        text: Candidate index -> ``(similarity, probability)`` of the text prompt that
            selected it.
        text_scores: Per text prompt (by prompt index): its best match as JSON
            (``text``, ``similarity``, ``probability``, ``candidates``, ``threshold``,
            ``selected``), also when it fell below the threshold.
        notes: Why a prompt selected nothing (or only by a fallback rule), one line each.
    """

    prompt_index: dict[int, int] = field(default_factory=dict)
    merged: list[MergedMask] = field(default_factory=list)
    text: dict[int, tuple[float, float]] = field(default_factory=dict)
    text_scores: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _contains(dets: Detections, x: int, y: int) -> NDArray[np.bool_]:
    """(N,) whether each detection's assembled mask has pixel (x, y), assembling only in the
    float32 uncertainty band."""
    rois = dets.rois
    inside = (rois[:, 0] <= x) & (x < rois[:, 2]) & (rois[:, 1] <= y) & (y < rois[:, 3])
    out = np.zeros(len(dets), dtype=bool)
    cand = np.flatnonzero(inside)
    if cand.size == 0:
        return out
    logits, tol = mask_logit_at(dets.coefficients[cand], dets.protos, x, y, dets.resampler)
    out[cand] = logits > 0
    for j in np.flatnonzero(np.abs(logits) <= tol):
        i = int(cand[j])
        out[i] = dets.mask_crop(i).contains(x, y)  # one packed byte, no decode
    return out


def _point_hits(dets: Detections, p: PointPrompt) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """(N, K) hit matrix and (K,) int labels."""
    pts = _int_points(p.points, dets.source_hw)
    hits = np.stack([_contains(dets, int(x), int(y)) for x, y in pts], axis=1)
    return hits, np.asarray(p.labels, dtype=np.float64).astype(np.int64)


def _reference_point_rule(hits: NDArray[np.bool_], labels: NDArray[np.int64]) -> NDArray[np.bool_]:
    pos, neg = labels == 1, labels == 0
    sel = hits[:, pos].any(axis=1) if pos.any() else np.ones(len(hits), dtype=bool)
    return sel & ~hits[:, neg].any(axis=1)


def select_points(dets: Detections, p: PointPrompt) -> list[int]:
    """Detection indices selected by a ``reference`` or ``best`` point prompt, in score order.

    Raises:
        ValueError: An ``official`` prompt (it paints one merged mask: :func:`merge_points`).
    """
    if p.mode == "official":
        raise ValueError("select_points: an official point prompt merges masks (merge_points)")
    if len(dets) == 0:
        return []
    hits, labels = _point_hits(dets, p)
    sel = np.flatnonzero(_reference_point_rule(hits, labels))
    if p.mode == "reference":
        return [int(i) for i in sel]
    # "best": the smallest non-empty area, first index on ties. Visit candidates by increasing
    # lower bound of their area and stop once that bound exceeds the best exact area.
    lower = {int(i): sign_bounds(dets, int(i)).area_bounds()[0] for i in sel}
    best, best_area = -1, -1
    for i in sorted(lower, key=lambda j: (lower[j], j)):
        if best >= 0 and (lower[i] > best_area or (lower[i] == best_area and i > best)):
            break
        a = dets.area(i)
        if a > 0 and (best < 0 or a < best_area or (a == best_area and i < best)):
            best, best_area = i, a
    return [best] if best >= 0 else []


def merge_points(dets: Detections, p: PointPrompt) -> MergedMask | None:
    """The FastSAM repository's one merged mask of a point prompt (any ``mode``; :func:`select`
    uses it for ``official``), or ``None`` when it paints nothing.

    Masks containing a point are painted largest first (stable), each with the label of the last
    point inside it; the merged mask is the pixels painted 1.
    """
    if len(dets) == 0:
        return None
    hits, labels = _point_hits(dets, p)
    return _official_merge(dets, hits, labels)


def _official_merge(
    dets: Detections, hits: NDArray[np.bool_], labels: NDArray[np.int64]
) -> MergedMask | None:
    involved = [int(i) for i in np.flatnonzero(hits.any(axis=1))]
    if not involved:
        return None
    # label of the last point inside each mask; masks painted largest first (stable)
    last = {i: int(labels[np.flatnonzero(hits[i])[-1]]) for i in involved}
    order = sorted(involved, key=lambda i: -dets.area(i))
    rois = dets.rois[involved]
    x0, y0 = int(rois[:, 0].min()), int(rois[:, 1].min())
    x1, y1 = int(rois[:, 2].max()), int(rois[:, 3].max())
    canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    for i in order:
        c0, r0 = int(dets.rois[i, 0]), int(dets.rois[i, 1])
        data = dets.crop(i)
        view = canvas[r0 - y0 : r0 - y0 + data.shape[0], c0 - x0 : c0 - x0 + data.shape[1]]
        view[data] = last[i]
    merged = canvas >= 1
    if not merged.any():
        return None
    crop = MaskCrop.from_dense(merged, x0, y0)
    conf = max(float(dets.confidence[i]) for i in involved if last[i] == 1)
    return MergedMask(crop, conf)


def select_boxes(dets: Detections, p: BoxPrompt) -> list[int]:
    """Candidate indices selected by a box prompt (one winner per box, deduplicated, sorted)."""
    winners: set[int] = set()
    for b in p.xyxy:
        w = _best_box_match(dets, pixel_box(b, dets.source_hw))
        if w is not None:
            winners.add(w)
    return sorted(winners)


# --------------------------------------------------------------------------------------------
# Bounds without assembly, and the per-frame cache
# --------------------------------------------------------------------------------------------

TapRuns = tuple[NDArray[np.int64], NDArray[np.int64]]
"""Tap indices of one axis (zero-weight taps pointing at tap 0) and the run id per row/column."""


@dataclass
class SelectionCache:
    """Per-frame state of prompt selection, kept on the detections (``dets.cache(...)``).

    Attributes:
        sign_bounds: Detection index -> its :class:`SignBounds` (derived from the frame's
            prototypes; dropped by ``release_masks`` and recomputed on demand).
        tap_runs: Row and column :data:`TapRuns` of the frame's resampler.
        protos_absmax: ``max |protos|`` (the sign margin's scale).

    The text prompts' state (CLIP crop embeddings, the dense prefilter) is
    :class:`edge.textmatch.TextCache`.
    """

    sign_bounds: dict[int, SignBounds] = field(default_factory=dict)
    tap_runs: tuple[TapRuns, TapRuns] | None = None
    protos_absmax: float | None = None

    @property
    def nbytes(self) -> int:
        """Not counted: the bounds are a few small arrays per mask."""
        return 0

    def release(self) -> None:
        """Drop the bounds (derived from the frame's assembly taps)."""
        self.sign_bounds.clear()
        self.tap_runs = None
        self.protos_absmax = None


def _taps_in_use(taps: AxisTaps) -> TapRuns:
    """Tap indices with the zero-weight padding taps pointing at tap 0 (always weighted), and
    the run id per output row/column (neighbours with identical taps share a run)."""
    index = np.where(taps.weight != 0, taps.index, taps.index[:, :1])
    change = np.ones(len(index), dtype=bool)
    change[1:] = (index[1:] != index[:-1]).any(axis=1)
    return index, np.cumsum(change) - 1


class SignBounds:
    """Pixels of one mask whose sign is certain, from prototype-resolution logits only.

    An assembled pixel is a convex combination (non-negative bilinear weights summing to 1) of
    the prototype-resolution logits at its row x column taps. If all of them exceed the float32
    rounding margin, the pixel is foreground; if all are below minus the margin, background.
    Output rows (columns) with identical taps form runs, so counts over a rectangle cost
    O(runs^2), not O(pixels).
    """

    def __init__(
        self,
        dets: Detections,
        i: int,
        row_taps: TapRuns,
        col_taps: TapRuns,
        protos_absmax: float,
    ) -> None:
        c0, r0, c1, r1 = (int(v) for v in dets.rois[i])
        self.roi = (c0, r0, c1, r1)
        self.size = max(c1 - c0, 0) * max(r1 - r0, 0)
        if self.size == 0:
            return
        assert dets.resampler is not None
        rows, cols = dets.resampler.rows, dets.resampler.cols
        sy0, sy1 = int(rows.first[r0]), int(rows.stop[r1 - 1])
        sx0, sx1 = int(cols.first[c0]), int(cols.stop[c1 - 1])
        sub = dets.protos[:, sy0:sy1, sx0:sx1].reshape(len(dets.protos), -1)
        c = dets.coefficients[i]
        logits = (c @ sub).reshape(sy1 - sy0, sx1 - sx0)
        # float32 here and in the assembly each err by < 32 ulp of sum|c| * max|protos|
        pmax = protos_absmax
        margin = _LOGIT_REL_TOL * float(np.abs(c).sum()) * pmax + 1e-30
        (row_index, row_runs), (col_index, col_runs) = row_taps, col_taps
        ry, cx = row_runs[r0:r1], col_runs[c0:c1]
        _, rfirst = np.unique(ry, return_index=True)
        _, cfirst = np.unique(cx, return_index=True)
        self.ry, self.cx = ry - ry[0], cx - cx[0]
        ridx = row_index[r0 + rfirst] - sy0
        cidx = col_index[c0 + cfirst] - sx0
        maps = []
        for certain in (logits > margin, logits < -margin):
            along = certain[ridx[:, 0]]
            for k in range(1, ridx.shape[1]):
                along &= certain[ridx[:, k]]
            both = along[:, cidx[:, 0]]
            for k in range(1, cidx.shape[1]):
                both &= along[:, cidx[:, k]]
            maps.append(both.astype(np.int64))
        self.pos, self.neg = maps

    def counts(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int]:
        """(pixels, certainly foreground, certainly background) in ROI ∩ [x0, x1) x [y0, y1)."""
        c0, r0, c1, r1 = self.roi
        xa, xb, ya, yb = max(x0, c0), min(x1, c1), max(y0, r0), min(y1, r1)
        if self.size == 0 or xb <= xa or yb <= ya:
            return 0, 0, 0
        nu = np.bincount(self.ry[ya - r0 : yb - r0], minlength=self.pos.shape[0])
        mv = np.bincount(self.cx[xa - c0 : xb - c0], minlength=self.pos.shape[1])
        return (xb - xa) * (yb - ya), int(nu @ self.pos @ mv), int(nu @ self.neg @ mv)

    def area_bounds(self) -> tuple[int, int]:
        """(lower, upper) bound of the mask area."""
        n, pos, neg = self.counts(*self.roi)
        return pos, n - neg


def sign_bounds(dets: Detections, i: int) -> SignBounds:
    """The :class:`SignBounds` of detection ``i`` (computed once per frame, cached on it)."""
    cache = dets.cache(SelectionCache)
    sb = cache.sign_bounds.get(i)
    if sb is None:
        if cache.tap_runs is None or cache.protos_absmax is None:
            assert dets.resampler is not None
            rows, cols = dets.resampler.rows, dets.resampler.cols
            cache.tap_runs = (_taps_in_use(rows), _taps_in_use(cols))
            cache.protos_absmax = float(np.abs(dets.protos).max())
        sb = cache.sign_bounds[i] = SignBounds(dets, i, *cache.tap_runs, cache.protos_absmax)
    return sb


def _best_box_match(dets: Detections, box: NDArray[np.int64]) -> int | None:
    """The reference's float32 ``argmax(IoU)`` over non-empty masks, assembling as few as
    possible.

    Two upper bounds, both rigorous: ``|box ∩ roi| / |box|`` (geometry only) and
    ``(|box ∩ roi| - certainly-background pixels in the box) / (|box| + certainly-foreground
    pixels outside the box)`` (:class:`SignBounds`). Candidates are assembled in decreasing order
    of the bound and the search stops when no remaining bound reaches the best exact IoU.
    """
    n = len(dets)
    if n == 0:
        return None
    bx0, by0, bx1, by1 = (int(v) for v in box)
    box_area = (bx1 - bx0) * (by1 - by0)
    rois = dets.rois
    iw = np.clip(np.minimum(rois[:, 2], bx1) - np.maximum(rois[:, 0], bx0), 0, None)
    ih = np.clip(np.minimum(rois[:, 3], by1) - np.maximum(rois[:, 1], by0), 0, None)
    geometric = (iw * ih).astype(np.float32) / np.float32(max(box_area, 1))
    # Best-first search: (-bound, index, refined). A popped geometric bound is first refined
    # with SignBounds (cheap), a popped refined bound gets the exact IoU (assembly).
    heap = [(-float(geometric[i]), int(i), False) for i in np.flatnonzero(geometric > 0)]
    heapq.heapify(heap)
    best, best_iou = -1, np.float32(0)
    while heap:
        neg_bound, i, refined = heapq.heappop(heap)
        bound = np.float32(-neg_bound)
        if bound < best_iou:  # nothing left can beat (or tie) the best
            break
        if bound == best_iou and i > best:  # can at most tie, and loses the index rule
            continue
        if not refined:
            sb = sign_bounds(dets, i)
            n_in, pos_in, neg_in = sb.counts(bx0, by0, bx1, by1)
            _, pos_roi, _ = sb.counts(*sb.roi)
            tight = np.float32(n_in - neg_in) / np.float32(box_area + pos_roi - pos_in)
            if tight > 0:
                heapq.heappush(heap, (-float(min(bound, tight)), i, True))
            continue
        area = dets.area(i)
        if area == 0:
            continue
        inter = dets.mask_crop(i).count_in(bx0, by0, bx1, by1)
        iou = np.float32(inter) / np.float32(box_area + area - inter)
        if iou > best_iou or (iou == best_iou and iou > 0 and i < best):
            best, best_iou = i, iou
    if best >= 0 and best_iou > 0:
        return best
    # Every IoU is 0: the reference's argmax returns its index 0 = the first non-empty mask.
    for i in range(n):
        if dets.area(i) > 0:
            return i
    return None


# --------------------------------------------------------------------------------------------
# All prompts of a frame
# --------------------------------------------------------------------------------------------


def _box_overlaps(dets: Detections, i: int, box: NDArray[np.int64]) -> bool:
    """Whether mask ``i`` has a pixel inside the (integer, clipped) box."""
    bx0, by0, bx1, by1 = (int(v) for v in box)
    return dets.mask_crop(i).count_in(bx0, by0, bx1, by1) > 0


def _point_note(dets: Detections, p: PointPrompt, desc: str) -> str:
    if len(dets) == 0:
        return f"{desc}: selected nothing: no mask in this frame (conf threshold?)"
    hits, labels = _point_hits(dets, p)
    if not hits[:, labels == 1].any():
        return f"{desc}: selected nothing: the point lies outside every mask"
    return f"{desc}: selected nothing: every mask with a positive point has a negative point"


def select(
    dets: Detections,
    prompts: Sequence[Prompt],
    image_bgr: NDArray[np.uint8] | None = None,
    encoder: TextEncoder | None = None,
    text: TextOptions | None = None,
) -> Selection:
    """Apply validated prompts to lazily assembled detections.

    Args:
        dets: Detections of one frame (stage (a) of the post-processing).
        prompts: Prompts, already validated against the frame.
        image_bgr: Source image (text prompts only).
        encoder: Text/image encoder (text prompts only).
        text: How text prompts choose their masks (candidates, crop style, threshold;
            ``None``: the defaults).

    Returns:
        The selection (first selecting prompt per candidate, merged masks, text scores, and a
        note for every prompt that selected nothing or only by the reference's fallback).
    """
    text = text if text is not None else TextOptions()
    out = Selection()

    def mark(indices: Iterable[int], k: int) -> None:
        for i in indices:
            out.prompt_index.setdefault(int(i), k)

    text_ids = [k for k, p in enumerate(prompts) if isinstance(p, TextPrompt)]
    for k, p in enumerate(prompts):
        if isinstance(p, BoxPrompt):
            chosen = select_boxes(dets, p)
            mark(chosen, k)
            if not chosen:
                out.notes.append(f"{describe(p)}: selected nothing: no mask in this frame")
            for b in p.xyxy:
                ib = pixel_box(b, dets.source_hw)
                if chosen and not any(_box_overlaps(dets, i, ib) for i in chosen):
                    out.notes.append(
                        f"box {[json_number(v) for v in b]}: overlaps no mask (IoU 0); the "
                        "reference rule returned the first mask anyway"
                    )
        elif isinstance(p, PointPrompt) and p.mode == "official":
            merged = merge_points(dets, p)
            if merged is not None:
                out.merged.append(merged._replace(prompt_index=k))
            else:
                out.notes.append(_point_note(dets, p, describe(p)))
        elif isinstance(p, PointPrompt):
            chosen = select_points(dets, p)
            mark(chosen, k)
            if not chosen:
                out.notes.append(_point_note(dets, p, describe(p)))
    if text_ids and not len(dets):
        out.notes += [
            f"{describe(prompts[k])}: selected nothing: no mask in this frame" for k in text_ids
        ]
    if text_ids and len(dets):
        if encoder is None or image_bgr is None:
            raise InputError("text: a text prompt needs the image and a CLIP encoder")
        texts = [prompts[k].text for k in text_ids]  # type: ignore[union-attr]
        # text first: an encoder that loads its sessions on demand (ClipEncoder keep_text=False)
        # then never holds the text and image sessions at once
        text_feats = np.asarray(encoder.encode_text(texts), dtype=np.float32)
        if use_dense(encoder, text):
            assert isinstance(encoder, CachedTextEncoder)
            matches = dense_text_matches(
                dets, image_bgr, encoder, text_feats, text.shortlist, text.crop, text.dense_side
            )
        else:
            matches = score_text_matches(
                dets, image_bgr, encoder, text_feats, text.top_k, text.crop
            )
        for k, m in zip(text_ids, matches, strict=True):
            p = prompts[k]
            assert isinstance(p, TextPrompt)
            desc = describe(p)
            if m.index < 0:
                out.notes.append(
                    f"{desc}: selected nothing: no mask larger than {TEXT_MIN_AREA} px"
                )
                continue
            th = p.threshold if p.threshold is not None else text.threshold
            ok = th is None or m.similarity >= th
            out.text_scores[k] = {
                "text": p.text,
                "similarity": round(m.similarity, 6),
                "probability": round(m.probability, 6),
                "candidates": m.candidates,
                "threshold": th,
                "selected": ok,
            }
            if not ok:
                out.notes.append(
                    f"{desc}: selected nothing: best similarity {m.similarity:.3f} is below the "
                    f"text threshold {th:.3f} (nothing here looks like it)"
                )
                continue
            cand = m.index
            if cand not in out.prompt_index:
                out.text[cand] = (m.similarity, m.probability)
            mark([cand], k)
    return out


def selection_to_masks(dets: Detections, sel: Selection) -> Masks:
    """Assemble the selected masks: detections in score order, then merged masks.

    Sets ``data["prompt_index"]`` (int64) on the result, and for text prompts
    ``data["clip_similarity"]`` / ``data["clip_probability"]`` (float64, NaN for masks selected
    by other prompts).
    """
    order = sorted(sel.prompt_index)
    data: dict[str, list[Any]] = {"prompt_index": [sel.prompt_index[i] for i in order]}
    if sel.text:  # per-mask CLIP scores; NaN for masks that no text prompt selected
        nan = float("nan")
        data["clip_similarity"] = [sel.text.get(i, (nan, nan))[0] for i in order]
        data["clip_probability"] = [sel.text.get(i, (nan, nan))[1] for i in order]
    result = dets.to_masks(order, data=data)
    if not sel.merged:
        return result
    extra_xyxy = np.array(
        [[c.x0, c.y0, c.x0 + c.shape[1], c.y0 + c.shape[0]] for c, _, _ in sel.merged],
        dtype=np.float32,
    )
    return Masks(
        xyxy=np.concatenate([result.xyxy, extra_xyxy]).astype(np.float32),
        confidence=np.concatenate(
            [result.confidence, np.array([m.confidence for m in sel.merged], np.float32)]
        ),
        crops=(*result.crops, *(m.crop for m in sel.merged)),
        image_hw=result.image_hw,
        data={
            key: np.concatenate(
                [
                    values,
                    np.array([m.prompt_index for m in sel.merged], np.int64)
                    if key == "prompt_index"
                    else np.full(len(sel.merged), np.nan),
                ]
            )
            for key, values in result.data.items()
        },
        class_id=np.concatenate([result.class_id, np.full(len(sel.merged), -1, np.int64)]),
        names=result.names,
    )

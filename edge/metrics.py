"""Instance-mask metrics (numpy only): IoU, recall and two-way mask agreement.

Used by the export's int8 check (fp32 vs int8 masks), the bench's agreement rows,
``scripts/train_demo.py --eval-only`` and tests that compare predicted masks against the exact
ground truth of ``edge.demo.scenes``.

The headline number is **recall at mask IoU 0.5**: a ground-truth instance counts as found
if *some* predicted mask has IoU >= 0.5 with it (best match, a prediction may be reused).
Because the ground-truth masks of a scene are pairwise disjoint, a prediction can have
IoU > 0.5 with at most one of them, so for thresholds >= 0.5 best-match recall equals the
recall of a one-to-one matching (up to exact ties at 0.5). Extra predictions (duplicates,
parts, background) are not penalised by recall; ``SegEvalAccumulator`` also reports how many
predictions match nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.types import MaskCrop

__all__ = [
    "SIZE_BUCKETS",
    "SegEvalAccumulator",
    "TrackTally",
    "best_iou_per_gt",
    "crop_iou_matrix",
    "crop_recall_at_iou",
    "found_at_iou",
    "iou_agreement",
    "mask_agreement",
    "mask_iou_matrix",
    "recall_at_iou",
]

#: Size buckets for per-size recall: sqrt(mask area) as a fraction of the image short side.
SIZE_BUCKETS: dict[str, tuple[float, float]] = {
    "small": (0.0, 0.08),
    "medium": (0.08, 0.2),
    "large": (0.2, float("inf")),
}


def _flatten(masks: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W), got shape {m.shape}")
    return m.reshape(m.shape[0], m.shape[1] * m.shape[2]).astype(bool, copy=False)


def mask_iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pairwise mask IoU.

    Args:
        gt: (K, H, W) bool (or 0/1) ground-truth masks.
        pred: (N, H, W) bool (or 0/1) predicted masks, same H, W.

    Returns:
        (K, N) float64 IoU matrix; IoU of two empty masks is 0.

    Raises:
        ValueError: If the shapes do not match.
    """
    g, p = _flatten(gt, "gt"), _flatten(pred, "pred")
    if g.shape[1] != p.shape[1]:
        raise ValueError(f"mask sizes differ: {np.shape(gt)[1:]} vs {np.shape(pred)[1:]}")
    if g.shape[0] == 0 or p.shape[0] == 0:
        return np.zeros((g.shape[0], p.shape[0]), dtype=np.float64)
    gf, pf = g.astype(np.float32), p.astype(np.float32)
    inter = (gf @ pf.T).astype(np.float64)  # exact: counts < 2**24 for images < 16 Mpx
    area_g = g.sum(axis=1, dtype=np.float64)
    area_p = p.sum(axis=1, dtype=np.float64)
    union = area_g[:, None] + area_p[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def best_iou_per_gt(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Best IoU of each ground-truth mask with any prediction.

    Args:
        gt: (K, H, W) ground-truth masks.
        pred: (N, H, W) predicted masks.

    Returns:
        (K,) float64, 0 where there are no predictions.
    """
    iou = mask_iou_matrix(gt, pred)
    if iou.shape[1] == 0:
        return np.zeros(iou.shape[0], dtype=np.float64)
    return iou.max(axis=1)


def recall_at_iou(gt: np.ndarray, pred: np.ndarray, thr: float = 0.5) -> tuple[int, int]:
    """Count ground-truth instances found by some prediction with IoU >= ``thr``.

    Args:
        gt: (K, H, W) ground-truth masks.
        pred: (N, H, W) predicted masks.
        thr: IoU threshold.

    Returns:
        ``(found, total)`` with ``total = K``.
    """
    iou = mask_iou_matrix(gt, pred)
    return found_at_iou(iou, thr), int(iou.shape[0])


def found_at_iou(iou: np.ndarray, thr: float = 0.5) -> int:
    """Rows of an IoU matrix whose best IoU reaches ``thr``: recall's numerator.

    Args:
        iou: (K, N) IoU of K reference masks (ground truth, or fp32's) with N predictions.
        thr: IoU threshold.

    Returns:
        How many of the K rows have some prediction at IoU >= ``thr`` (with N == 0 every
        row's best IoU is 0).
    """
    best = iou.max(axis=1) if iou.shape[1] else np.zeros(iou.shape[0], dtype=np.float64)
    return int((best >= thr).sum())


@dataclass
class SegEvalAccumulator:
    """Accumulates recall / best-IoU statistics over many images.

    Attributes:
        thr: IoU threshold for "found".
        best_ious: Best IoU of every ground-truth instance seen so far.
        rel_sizes: sqrt(area) / short side of every ground-truth instance.
        n_images: Images added.
        n_pred: Predictions added.
        n_pred_unmatched: Predictions whose best IoU with every ground truth is below ``thr``.
    """

    thr: float = 0.5
    best_ious: list[float] = field(default_factory=list)
    rel_sizes: list[float] = field(default_factory=list)
    n_images: int = 0
    n_pred: int = 0
    n_pred_unmatched: int = 0

    def add(self, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Add one image.

        Args:
            gt: (K, H, W) ground-truth masks.
            pred: (N, H, W) predicted masks (N may be 0).

        Returns:
            (K,) best IoU per ground-truth instance of this image.
        """
        iou = mask_iou_matrix(gt, pred)
        best = iou.max(axis=1) if iou.shape[1] else np.zeros(iou.shape[0])
        h, w = np.shape(gt)[1:]
        areas = _flatten(gt, "gt").sum(axis=1)
        self.best_ious.extend(best.tolist())
        self.rel_sizes.extend((np.sqrt(areas) / min(h, w)).tolist())
        self.n_images += 1
        self.n_pred += iou.shape[1]
        if iou.shape[1]:
            best_pred = iou.max(axis=0) if iou.shape[0] else np.zeros(iou.shape[1])
            self.n_pred_unmatched += int((best_pred < self.thr).sum())
        return best

    def summary(self) -> dict[str, float | int | dict[str, float | int]]:
        """Recall, mean best IoU and counts, overall and per size bucket (JSON-ready)."""
        best = np.asarray(self.best_ious, dtype=np.float64)
        rel = np.asarray(self.rel_sizes, dtype=np.float64)
        out: dict[str, float | int | dict[str, float | int]] = {
            "images": self.n_images,
            "instances": int(best.size),
            "recall": float((best >= self.thr).mean()) if best.size else float("nan"),
            "mean_best_iou": float(best.mean()) if best.size else float("nan"),
            "predictions_per_image": self.n_pred / max(self.n_images, 1),
            "unmatched_predictions": self.n_pred_unmatched,
        }
        for name, (lo, hi) in SIZE_BUCKETS.items():
            sel = (rel >= lo) & (rel < hi)
            out[name] = {
                "instances": int(sel.sum()),
                "recall": float((best[sel] >= self.thr).mean()) if sel.any() else float("nan"),
                "mean_best_iou": float(best[sel].mean()) if sel.any() else float("nan"),
            }
        return out


# bits set in each byte value (numpy < 2 has no bitwise_count)
_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)
# the most memory crop_iou_matrix gives b's masks laid out in the frame (one chunk at a time)
_FRAME_STACK_BYTES = 32 << 20


def _bits_set(x: np.ndarray) -> np.ndarray:
    """(n, ...) uint64 -> (n,) int64: bits set in each of the n sub-arrays."""
    if hasattr(np, "bitwise_count"):
        counts = np.bitwise_count(x)
    else:
        counts = _POPCOUNT[np.ascontiguousarray(x).view(np.uint8)]
    return counts.reshape(len(x), -1).sum(axis=1, dtype=np.int64)


def _frame_words(crop: MaskCrop) -> tuple[np.ndarray, int]:
    """A crop's rows on the frame's grid of 64-pixel words (word q holds frame columns
    64q .. 64q + 63, in packbits order within each byte).

    Returns:
        ``(words, q0)``: (h, n) uint64 rows, zero outside the crop, and the frame word column
        of their first word.
    """
    h, w = crop.shape
    shift = crop.x0 & 63
    n = (shift + w + 63) >> 6
    if shift & 7 == 0:  # the crop's packed rows start on a byte of the grid: copy them
        rows = np.zeros((h, 8 * n), dtype=np.uint8)
        rows[:, shift >> 3 : (shift >> 3) + crop.bits.shape[1]] = crop.bits
    else:
        pixels = np.zeros((h, 64 * n), dtype=bool)
        pixels[:, shift : shift + w] = crop.data
        rows = np.packbits(pixels, axis=1)
    return rows.view(np.uint64), crop.x0 >> 6


def crop_iou_matrix(a: Sequence[MaskCrop], b: Sequence[MaskCrop]) -> np.ndarray:
    """Pairwise IoU of two sets of cropped masks, touching only overlapping crops.

    Equivalent to :func:`mask_iou_matrix` on the densified masks (the same numbers: integer
    intersections, the same division), but time follows the crop overlaps instead of
    N x M x H x W, so 300 x 300 masks on a large frame are cheap: b's masks are laid out on
    the frame bit-packed (in chunks of at most 32 MiB), and each mask of a is intersected with
    every b mask whose box overlaps its own in one step (AND of 64-pixel words, bits counted).

    Args:
        a: N masks as :class:`~edge.types.MaskCrop`.
        b: M masks, same frame.

    Returns:
        (N, M) float64 IoU.
    """
    area_a = np.array([c.area for c in a], dtype=np.float64)
    area_b = np.array([c.area for c in b], dtype=np.float64)
    inter = np.zeros((len(a), len(b)), dtype=np.float64)

    def boxes(crops: Sequence[MaskCrop]) -> np.ndarray:
        return np.array(
            [(c.x0, c.y0, c.x0 + c.shape[1], c.y0 + c.shape[0]) for c in crops], dtype=np.int64
        ).reshape(-1, 4)

    box_a, box_b = boxes(a), boxes(b)
    if len(a) == 0 or len(b) == 0:
        return inter
    # b's frame: rows oy.., word columns oq.. (relative to the top-left of b's boxes)
    oy, oq = int(box_b[:, 1].min()), int(box_b[:, 0].min()) >> 6
    height = int(box_b[:, 3].max()) - oy
    nwords = ((int(box_b[:, 2].max()) + 63) >> 6) - oq
    chunk = max(1, _FRAME_STACK_BYTES // max(8 * height * nwords, 1))
    a_words: dict[int, tuple[np.ndarray, int]] = {}
    for c0 in range(0, len(b), chunk):
        part = range(c0, min(c0 + chunk, len(b)))
        stack = np.zeros((len(part), height, nwords), dtype=np.uint64)
        for j in part:
            cb = b[j]
            if cb.area:
                words, q0 = _frame_words(cb)
                y0, q0 = cb.y0 - oy, q0 - oq
                stack[j - c0, y0 : y0 + words.shape[0], q0 : q0 + words.shape[1]] = words
        bb = box_b[c0 : part.stop]
        for i, ca in enumerate(a):
            ax0, ay0, ax1, ay1 = box_a[i]
            hits = np.flatnonzero(
                (np.minimum(bb[:, 2], ax1) > np.maximum(bb[:, 0], ax0))
                & (np.minimum(bb[:, 3], ay1) > np.maximum(bb[:, 1], ay0))
            )
            if hits.size == 0 or not ca.area:
                continue
            if i not in a_words:
                a_words[i] = _frame_words(ca)
            words, q0 = a_words[i]
            y0, q0 = int(ay0) - oy, q0 - oq  # a's rows and words in b's frame, clipped to it
            r0, r1 = max(y0, 0), min(y0 + words.shape[0], height)
            s0, s1 = max(q0, 0), min(q0 + words.shape[1], nwords)
            if r1 <= r0 or s1 <= s0:
                continue
            both = stack[hits, r0:r1, s0:s1]  # a copy: ANDed in place
            np.bitwise_and(both, words[r0 - y0 : r1 - y0, s0 - q0 : s1 - q0], out=both)
            inter[i, c0 + hits] = _bits_set(both)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def mask_agreement(a: Sequence[MaskCrop], b: Sequence[MaskCrop]) -> dict[str, float]:
    """How well two results agree (e.g. fp32 vs int8): mean best-match IoU in both directions.

    Returns:
        ``{"a_to_b": mean over a of the best IoU with any b mask, "b_to_a": ..., "n_a", "n_b"}``;
        a side with no masks scores 1.0 against an empty other side and 0.0 otherwise.
    """
    return iou_agreement(crop_iou_matrix(a, b))


def iou_agreement(iou: np.ndarray) -> dict[str, float]:
    """:func:`mask_agreement` from an IoU matrix already computed (callers that also need the
    matrix itself compute it once).

    Args:
        iou: (N_a, N_b) IoU of the masks of result a with those of result b.

    Returns:
        As :func:`mask_agreement`.
    """

    def mean_best(m: np.ndarray, other: int) -> float:
        if m.shape[0] == 0:
            return 1.0
        return float(m.max(axis=1).mean()) if other else 0.0

    n_a, n_b = iou.shape
    return {
        "a_to_b": mean_best(iou, n_b),
        "b_to_a": mean_best(iou.T, n_a),
        "n_a": float(n_a),
        "n_b": float(n_b),
    }


def crop_recall_at_iou(
    gt: Sequence[MaskCrop], pred: Sequence[MaskCrop], thr: float = 0.5
) -> tuple[int, int]:
    """:func:`recall_at_iou` on cropped masks: the same counts (:func:`crop_iou_matrix` equals
    :func:`mask_iou_matrix` on the densified masks), but time and memory follow the crop
    overlaps, not K x N x H x W (300 predictions on a 640 x 640 frame densify to 123 MB).

    Args:
        gt: K ground-truth masks (e.g. ``MaskCrop.from_dense`` of each).
        pred: N predicted masks, same frame.
        thr: IoU threshold.

    Returns:
        ``(found, total)`` with ``total = K``.
    """
    return found_at_iou(crop_iou_matrix(gt, pred), thr), len(gt)


@dataclass
class TrackTally:
    """Identity metrics of a tracker over a sequence with ground-truth identities.

    On each frame every ground-truth object is matched one-to-one to the predicted mask of
    highest IoU (at least ``thr``; the best pairs first). An object's *detected frames* are
    the frames it was matched on; the track id of its match on each of them is recorded
    (-1: the track was not confirmed yet). Per object:

    * **id consistency**: the share of its detected frames that carry its majority id (frames
      with -1 count against it);
    * **id switches**: how often the id changes between two of its detected frames that both
      carry an id (the MOT convention; a gap of missed frames is no switch by itself).

    Attributes:
        thr: Mask IoU a match needs.
        ids: Ground-truth identity -> the track ids of its detected frames, in order.
        visible: Ground-truth identity -> frames it was in view.
    """

    thr: float = 0.5
    ids: dict[int, list[int]] = field(default_factory=dict)
    visible: dict[int, int] = field(default_factory=dict)

    def add(
        self,
        gt_masks: np.ndarray,
        gt_ids: Sequence[int],
        crops: Sequence[MaskCrop],
        track_ids: Sequence[int],
    ) -> None:
        """Add one frame.

        Args:
            gt_masks: (K, H, W) bool ground-truth masks of the objects in view.
            gt_ids: (K,) their identities.
            crops: The N predicted masks.
            track_ids: (N,) their track ids.
        """
        gt_crops = [MaskCrop.from_dense(m) for m in np.asarray(gt_masks, dtype=bool)]
        iou = crop_iou_matrix(gt_crops, list(crops))
        for g in gt_ids:
            self.visible[int(g)] = self.visible.get(int(g), 0) + 1
        if iou.size == 0:
            return
        rows, cols = np.nonzero(iou >= self.thr)
        order = np.argsort(-iou[rows, cols], kind="stable")
        used_r: set[int] = set()
        used_c: set[int] = set()
        for k in order:
            r, c = int(rows[k]), int(cols[k])
            if r in used_r or c in used_c:
                continue
            used_r.add(r)
            used_c.add(c)
            self.ids.setdefault(int(gt_ids[r]), []).append(int(track_ids[c]))

    def summary(self) -> dict[str, float | int]:
        """``objects``, ``visible_frames``, ``detected_frames``, ``id_consistency``,
        ``id_switches``, ``tracked_share`` (detected frames that carry an id), JSON-ready."""
        detected = majority = switches = tracked = 0
        for seq in self.ids.values():
            known = [i for i in seq if i >= 0]
            detected += len(seq)
            tracked += len(known)
            if known:
                values, counts = np.unique(known, return_counts=True)
                majority += int(counts.max())
                switches += sum(1 for a, b in zip(known, known[1:], strict=False) if a != b)
        return {
            "objects": len(self.visible),
            "visible_frames": sum(self.visible.values()),
            "detected_frames": detected,
            "id_consistency": majority / detected if detected else float("nan"),
            "id_switches": switches,
            "tracked_share": tracked / detected if detected else float("nan"),
        }

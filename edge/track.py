"""Objects across frames: track ids for each frame's masks, and enter / leave events.

A :class:`Tracker` takes one :class:`~edge.types.Masks` per frame, in frame order, and answers
each mask's ``track_id`` (``-1`` while its track is not confirmed yet). Learnt from ByteTrack
(Zhang et al., 2022; its matching scheme, not its code):

* **motion**: every track predicts its box for the new frame with a constant velocity (an
  exponential average of its box centre's per-frame displacement; a box that suddenly
  changes size, a part of the object or two objects merged, does not count);
* **similarity**: a track and a detection whose boxes overlap score
  ``box_weight * box IoU + (1 - box_weight) * mask IoU``, the mask IoU taken between the
  track's last mask shifted by its predicted motion and the detection's mask, both as
  bit-packed crops (:func:`crop_iou_pairs`; pairs whose boxes do not overlap are never
  decoded). Bundles with classes (``Masks.class_id >= 0``) never match across classes;
  class-agnostic masks (FastSAM, ``-1``) match any;
* **two-stage matching**: detections scoring at least ``high_score`` are matched first, to
  the confirmed and lost tracks; the remaining *low-score* detections are then matched to
  the tracks still unmatched that were seen on the previous frame (an object whose score
  dipped keeps its id instead of breaking its track); tentative tracks take what is left of
  the high-score detections;
* **lost-track buffer**: a confirmed track that is not matched is *lost* but kept, still
  predicting, for ``max_missed`` frames; seen again within them, it keeps its id;
* **duplicates**: a mask whose mask IoU with a higher-scoring mask of the same frame is at
  least ``duplicate_sim`` (FastSAM keeps near-identical masks of one object: its NMS is at
  box IoU 0.9) is the same object: it takes that mask's id instead of a track of its own, so
  one object never carries two ids that trade places from frame to frame;
* **confirmation**: an unmatched high-score detection starts a *tentative* track, which gets
  an id (the next integer) only once it has been seen on ``min_frames`` frames in a row; a
  tentative track that misses a frame is forgotten, so flicker never consumes ids.

Assignment is greedy by similarity (the best-scoring pair first, then the next pair whose
track and detection are both free), not Hungarian: with the gate below only overlapping
pairs compete, nearly every track has one clear candidate, and where a whole mask and one
of its parts compete for a track (FastSAM's nested masks), taking the most similar pair
first is the wanted answer, whereas a sum-optimal assignment may give the track to the part
to gain elsewhere. Greedy also allows lazy evaluation (:func:`lazy_greedy_match`): pairs are
ranked by an upper bound from their boxes and mask areas (:func:`iou_bound`), and a pair's
masks are decoded only when it comes up, so with 100 masks a frame a few dozen mask IoUs are
computed instead of hundreds, and there is no cubic worst case
(``fastsam-edge bench --track-sequence`` reports the cost and the id switches).

Events: a track's confirmation is an ``enter`` (:class:`TrackEvent`), its removal after
``max_missed`` unmatched frames a ``leave``.

Pure numpy: :func:`box_iou`, :func:`predict_boxes`, :func:`crop_iou_pairs`,
:func:`greedy_match`, :func:`lazy_greedy_match`, :func:`iou_bound` take and return
arrays whose shapes their docstrings give.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from edge.types import MaskCrop, Masks

__all__ = [
    "TrackEvent",
    "Tracker",
    "TrackerConfig",
    "box_iou",
    "crop_iou_pairs",
    "greedy_match",
    "iou_bound",
    "lazy_greedy_match",
    "predict_boxes",
]


RESIZE_LIMIT = 1.4
"""A matched box this many times wider / taller (or narrower) than the track's last one does
not update the track's velocity."""

Sampled = tuple[NDArray[np.bool_], int, int, int]
"""A crop on the frame's sampling grid: ``(pixels, x0, y0, area)``, the origin in grid cells."""


def box_iou(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Pairwise IoU of xyxy boxes (degenerate boxes: 0).

    Args:
        a: (N, 4) boxes.
        b: (M, 4) boxes.

    Returns:
        (N, M) float64 IoU.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    inter = _box_intersection(a, b)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def predict_boxes(
    xyxy: NDArray[np.floating], velocity: NDArray[np.floating], frames: NDArray[np.integer]
) -> NDArray[np.float64]:
    """Constant-velocity prediction of boxes ``frames`` frames ahead.

    Args:
        xyxy: (T, 4) last seen boxes.
        velocity: (T, 4) per-frame displacement of each box coordinate.
        frames: (T,) frames since each box was seen (>= 1).

    Returns:
        (T, 4) float64 predicted boxes.
    """
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    velocity = np.asarray(velocity, dtype=np.float64).reshape(-1, 4)
    frames = np.asarray(frames, dtype=np.float64).reshape(-1, 1)
    return xyxy + velocity * frames


def crop_iou_pairs(
    a: Sequence[MaskCrop],
    b: Sequence[MaskCrop],
    pairs: NDArray[np.integer],
    shift: NDArray[np.integer] | None = None,
    step: int = 1,
    decoded: dict[MaskCrop, Sampled] | None = None,
) -> NDArray[np.float64]:
    """Mask IoU of selected pairs of cropped masks, ``a[i]`` moved by ``shift[i]``.

    Each crop is decoded at most once, and only crops in some pair are. With ``step > 1``
    both masks are sampled on the frame's grid of every ``step``-th row and column (the pixels
    whose frame coordinates are multiples of ``step``; shifts are rounded to multiples of it),
    which costs ``step**2`` times less and is what a tracker needs.

    Args:
        a: Masks of the first set (the tracks' last masks).
        b: Masks of the second set (this frame's detections).
        pairs: (P, 2) int ``(i, j)`` index pairs into ``a`` and ``b``.
        shift: (len(a), 2) int ``(dx, dy)`` added to each ``a`` crop's position (None: 0).
        step: Sampling step in pixels (1: every pixel, exact).
        decoded: Crops already sampled at this ``step`` (filled with the ones decoded here,
            so that a caller can keep them for the next call).

    Returns:
        (P,) float64 IoU of each pair (0 for disjoint or empty masks).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.zeros(len(pairs), dtype=np.float64)
    if len(pairs) == 0:
        return out
    step = max(int(step), 1)
    shift = np.zeros((len(a), 2), np.int64) if shift is None else np.asarray(shift, np.int64)
    cells = np.rint(shift / step).astype(np.int64)
    cache: dict[MaskCrop, Sampled] = {} if decoded is None else decoded
    for p in range(len(pairs)):
        i, j = int(pairs[p, 0]), int(pairs[p, 1])
        out[p] = _pair_iou(a[i], b[j], int(cells[i, 0]), int(cells[i, 1]), step, cache)
    return out


def _pair_iou(
    ca: MaskCrop, cb: MaskCrop, dx: int, dy: int, step: int, cache: dict[MaskCrop, Sampled]
) -> float:
    """Mask IoU of ``ca`` moved by ``(dx, dy)`` grid cells and ``cb``, on the ``step`` grid."""
    if ca.area == 0 or cb.area == 0:
        return 0.0
    da, ax0, ay0, area_a = _sampled(ca, step, cache)
    db, bx0, by0, area_b = _sampled(cb, step, cache)
    ax0 += dx
    ay0 += dy
    x0, y0 = max(ax0, bx0), max(ay0, by0)
    x1 = min(ax0 + da.shape[1], bx0 + db.shape[1])
    y1 = min(ay0 + da.shape[0], by0 + db.shape[0])
    inter = 0
    if x1 > x0 and y1 > y0:
        pa = da[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
        pb = db[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
        inter = int(np.count_nonzero(pa & pb))
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _sampled(crop: MaskCrop, step: int, cache: dict[MaskCrop, Sampled]) -> Sampled:
    """A crop's pixels on the frame's ``step`` grid, decoded once per ``cache``."""
    hit = cache.get(crop)
    if hit is not None:
        return hit
    if step == 1:
        hit = (crop.data, crop.x0, crop.y0, crop.area)
    else:
        h, w = crop.shape
        r0, c0 = (-crop.y0) % step, (-crop.x0) % step
        rows = crop.bits[r0::step]  # only the sampled rows are unpacked
        data = np.unpackbits(rows, axis=1, count=w).view(np.bool_) if w else rows[:, :0]
        data = np.ascontiguousarray(data[:, c0::step].astype(bool, copy=False))
        hit = (data, (crop.x0 + c0) // step, (crop.y0 + r0) // step, int(np.count_nonzero(data)))
    cache[crop] = hit
    return hit


def greedy_match(
    sim: NDArray[np.floating], min_sim: float
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Greedy one-to-one assignment: the most similar free pair first.

    Ties go to the lower row, then the lower column (stable).

    Args:
        sim: (T, D) similarity of each track to each detection.
        min_sim: Pairs below this are never matched.

    Returns:
        ``(matches, free_rows, free_cols)``: (K, 2) int64 ``(row, col)`` pairs, and the
        unmatched row and column indices, ascending.
    """
    sim = np.asarray(sim, dtype=np.float64)
    t, d = sim.shape
    rows, cols = np.nonzero(sim >= min_sim)
    order = np.lexsort((cols, rows, -sim[rows, cols]))
    row_used = np.zeros(t, dtype=bool)
    col_used = np.zeros(d, dtype=bool)
    matches: list[tuple[int, int]] = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if row_used[r] or col_used[c]:
            continue
        row_used[r] = col_used[c] = True
        matches.append((r, c))
    return (
        np.array(matches, dtype=np.int64).reshape(-1, 2),
        np.flatnonzero(~row_used).astype(np.int64),
        np.flatnonzero(~col_used).astype(np.int64),
    )


def lazy_greedy_match(
    upper: NDArray[np.floating], exact: Callable[[int, int], float], min_sim: float
) -> NDArray[np.int64]:
    """:func:`greedy_match` on similarities computed only when they can matter.

    Pairs are taken best upper bound first; a pair's exact similarity is computed when it
    comes up, and the pair goes back in line with it. A pair whose exact value comes up first
    is then the best of all remaining pairs (every other value in line is an upper bound of
    its own), so the matches equal :func:`greedy_match` on the exact matrix, ties included,
    while pairs whose track or detection was taken before are never computed.

    Args:
        upper: (T, D) upper bounds of the similarities (0: never a match).
        exact: ``(row, col) -> similarity``, at most ``upper[row, col]``.
        min_sim: Pairs below this are never matched.

    Returns:
        (K, 2) int64 ``(row, col)`` matches, in the order made.
    """
    upper = np.asarray(upper, dtype=np.float64)
    rows, cols = np.nonzero(upper >= min_sim)
    heap = [(-float(upper[r, c]), int(r), int(c), 1) for r, c in zip(rows, cols, strict=True)]
    heapq.heapify(heap)
    row_used: set[int] = set()
    col_used: set[int] = set()
    matches: list[tuple[int, int]] = []
    while heap:
        neg, r, c, bound = heapq.heappop(heap)
        if r in row_used or c in col_used:
            continue
        if bound:
            value = exact(r, c)
            if value >= min_sim:
                heapq.heappush(heap, (-value, r, c, 0))
            continue
        row_used.add(r)
        col_used.add(c)
        matches.append((r, c))
    return np.array(matches, dtype=np.int64).reshape(-1, 2)


@dataclass(frozen=True)
class TrackerConfig:
    """How a :class:`Tracker` associates masks (see the module docstring).

    Attributes:
        min_frames: Frames in a row a new object must be seen to get an id (its ``enter``).
        max_missed: Frames a confirmed track survives unmatched (lost) before it is removed
            (its ``leave``).
        high_score: Detections scoring at least this are matched in the first stage and may
            start tracks; lower ones only continue tracks seen on the previous frame.
        match_sim: Least similarity of a first-stage (and tentative-track) match.
        low_match_sim: Least similarity of a low-score detection's match (stricter).
        box_weight: Weight of box IoU against mask IoU in the similarity.
        velocity_smoothing: Weight of the newest displacement in the velocity average.
        duplicate_sim: Mask IoU at which a mask duplicates a higher-scoring one of the same
            frame and shares its id (1: only identical masks).
        mask_side: Mask IoU is taken on a grid of about this many cells along the frame's
            longer side (every ``step``-th pixel): enough to tell objects apart, and at most
            a sixteenth of the pixels of a 1280 px frame.
    """

    min_frames: int = 2
    max_missed: int = 5
    high_score: float = 0.5
    match_sim: float = 0.3
    low_match_sim: float = 0.5
    box_weight: float = 0.5
    velocity_smoothing: float = 0.5
    duplicate_sim: float = 0.8
    mask_side: int = 320

    def __post_init__(self) -> None:
        if self.min_frames < 1:
            raise ValueError(f"min_frames: expected >= 1, got {self.min_frames}")
        if self.max_missed < 0:
            raise ValueError(f"max_missed: expected >= 0, got {self.max_missed}")
        for name in ("high_score", "match_sim", "low_match_sim", "box_weight", "duplicate_sim"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1], got {value}")
        if self.mask_side < 1:
            raise ValueError(f"mask_side: expected >= 1, got {self.mask_side}")
        if not 0.0 < self.velocity_smoothing <= 1.0:
            raise ValueError(
                f"velocity_smoothing: expected a number in (0, 1], got {self.velocity_smoothing}"
            )


@dataclass(frozen=True)
class TrackEvent:
    """A track entered (confirmed) or left (removed after ``max_missed`` frames unseen).

    Attributes:
        type: ``"enter"`` or ``"leave"``.
        track_id: The track's id.
        frame: The tracker's frame number (1 = first update) the event happened on.
        box: Its box (xyxy; the last one seen for a ``leave``).
        class_id: Its class (-1: class-agnostic).
    """

    type: str
    track_id: int
    frame: int
    box: tuple[float, float, float, float]
    class_id: int = -1


@dataclass
class _Track:
    box: NDArray[np.float64]
    crop: MaskCrop
    class_id: int
    seen: int  # the frame number it was last matched on
    hits: int = 1
    velocity: NDArray[np.float64] = field(default_factory=lambda: np.zeros(4))
    track_id: int = -1  # -1 while tentative
    det: int = -1  # index of the detection it was last matched to

    @property
    def confirmed(self) -> bool:
        return self.track_id >= 0


class Tracker:
    """Associates each frame's masks with tracks; see the module docstring.

    Not thread-safe: one caller feeds it frames in order.

    Args:
        config: Matching parameters (default: :class:`TrackerConfig`'s).
        first_id: The first id handed out.

    Attributes:
        frame: Frames seen so far.
        events: Events of the last :meth:`update`.
    """

    def __init__(self, config: TrackerConfig | None = None, first_id: int = 1) -> None:
        self.config = config or TrackerConfig()
        self.frame = 0
        self.events: list[TrackEvent] = []
        self._tracks: list[_Track] = []
        self._next_id = int(first_id)
        self._decoded: dict[MaskCrop, Sampled] = {}
        self._step = 0

    @property
    def active(self) -> int:
        """Confirmed tracks, lost ones included."""
        return sum(t.confirmed for t in self._tracks)

    def update(self, masks: Masks) -> NDArray[np.int64]:
        """Associate one frame's masks; fills :attr:`events`.

        Args:
            masks: This frame's N masks (any order; zero masks is a frame with nothing).

        Returns:
            (N,) int64 track id per mask, -1 for a mask whose track is not confirmed.
        """
        cfg = self.config
        self.frame += 1
        self.events = []
        n = len(masks)
        ids = np.full(n, -1, dtype=np.int64)
        boxes = np.asarray(masks.xyxy, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(masks.confidence, dtype=np.float64)
        classes = _class_ids(masks)
        tracks = self._tracks
        step = max(1, round(max(masks.image_hw) / cfg.mask_side))
        if step != self._step:
            self._decoded, self._step = {}, step
        parent = self._duplicates(masks, boxes, scores, classes)
        upper, exact = self._similarity(tracks, masks, boxes, classes)
        det_free = parent < 0  # duplicates follow their parent, they match nothing themselves
        track_matched = np.zeros(len(tracks), dtype=bool)
        high = scores >= cfg.high_score

        def stage(
            track_sel: NDArray[np.bool_], det_sel: NDArray[np.bool_], min_sim: float
        ) -> None:
            rows, cols = np.flatnonzero(track_sel), np.flatnonzero(det_sel & det_free)
            if len(rows) == 0 or len(cols) == 0:
                return
            matches = lazy_greedy_match(
                upper[np.ix_(rows, cols)],
                lambda r, c: exact(int(rows[r]), int(cols[c])),
                min_sim,
            )
            for r, c in matches:
                ti, di = int(rows[r]), int(cols[c])
                track_matched[ti] = True
                det_free[di] = False
                self._absorb(tracks[ti], masks, di, boxes[di])
                ids[di] = tracks[ti].track_id

        confirmed = np.array([t.confirmed for t in tracks], dtype=bool)
        recent = np.array([t.seen == self.frame - 1 for t in tracks], dtype=bool)
        # 1: high-score detections to confirmed tracks, lost ones included
        stage(confirmed, high, cfg.match_sim)
        # 2: low-score detections to confirmed tracks seen on the previous frame
        stage(confirmed & recent & ~track_matched, ~high, cfg.low_match_sim)
        # 3: tentative tracks take what is left of the high-score detections
        stage(~confirmed, high, cfg.match_sim)
        kept: list[_Track] = []
        for t, matched in zip(tracks, track_matched, strict=True):
            if matched:
                if not t.confirmed and t.hits >= cfg.min_frames:
                    self._confirm(t)
                    ids[t.det] = t.track_id
                kept.append(t)
            elif t.confirmed and self.frame - t.seen <= cfg.max_missed:
                kept.append(t)  # lost: still predicted, may come back
            elif t.confirmed:
                self.events.append(self._event("leave", t))
            # an unmatched tentative track is forgotten (no id was spent on it)
        # new tentative tracks from the unmatched high-score detections
        for di in np.flatnonzero(det_free & high):
            t = _Track(
                boxes[di].copy(), masks.crops[di], int(classes[di]), self.frame, det=int(di)
            )
            if cfg.min_frames <= 1:
                self._confirm(t)
                ids[di] = t.track_id
            kept.append(t)
        self._tracks = kept
        dup = np.flatnonzero(parent >= 0)
        ids[dup] = ids[parent[dup]]
        # keep the sampled masks the tracks hold now (this frame's), for the next frame
        held = {t.crop for t in kept}
        self._decoded = {c: v for c, v in self._decoded.items() if c in held}
        return ids

    # ------------------------------------------------------------------------------------

    def _similarity(
        self,
        tracks: list[_Track],
        masks: Masks,
        boxes: NDArray[np.float64],
        classes: NDArray[np.int64],
    ) -> tuple[NDArray[np.float64], Callable[[int, int], float]]:
        """Every track's (at its predicted place) similarity to every detection.

        Returns:
            ``(upper, exact)``: (T, N) upper bounds from the boxes and mask areas alone (0 for
            pairs whose boxes do not overlap or whose classes differ), and
            ``(track, detection) -> similarity``, which decodes the two masks (cached).
        """
        cfg = self.config
        t, n = len(tracks), len(masks)
        if t == 0 or n == 0:
            return np.zeros((t, n), dtype=np.float64), lambda _r, _c: 0.0
        last = np.array([tr.box for tr in tracks], dtype=np.float64)
        vel = np.array([tr.velocity for tr in tracks], dtype=np.float64)
        gap = np.array([self.frame - tr.seen for tr in tracks], dtype=np.int64)
        pred = predict_boxes(last, vel, gap)
        biou = box_iou(pred, boxes)
        t_cls = np.array([tr.class_id for tr in tracks], dtype=np.int64)
        biou[~_class_compatible(t_cls, classes)] = 0.0
        w = cfg.box_weight
        t_area = np.array([tr.crop.area for tr in tracks], dtype=np.float64)
        bound = iou_bound(pred, t_area, boxes, masks.area.astype(np.float64))
        upper = np.where(biou > 0, w * biou + (1 - w) * bound, 0.0)
        # each track's mask moves with its predicted box centre
        move = (pred[:, :2] + pred[:, 2:] - last[:, :2] - last[:, 2:]) / 2.0
        shift = np.rint(move).astype(np.int64)
        step = self._step
        cells = np.rint(shift / step).astype(np.int64).tolist()
        done: dict[tuple[int, int], float] = {}

        def exact(ti: int, di: int) -> float:
            key = (ti, di)
            if key not in done:
                dx, dy = cells[ti]
                miou = _pair_iou(tracks[ti].crop, masks.crops[di], dx, dy, step, self._decoded)
                done[key] = w * float(biou[ti, di]) + (1 - w) * miou
            return done[key]

        return upper, exact

    def _duplicates(
        self,
        masks: Masks,
        boxes: NDArray[np.float64],
        scores: NDArray[np.float64],
        classes: NDArray[np.int64],
    ) -> NDArray[np.int64]:
        """(N,) index of the higher-scoring mask each mask duplicates, -1 for none."""
        n = len(masks)
        parent = np.full(n, -1, dtype=np.int64)
        thr = self.config.duplicate_sim
        if n < 2:
            return parent
        # box IoU bounds mask IoU loosely; mask IoU <= smaller / larger area bounds it too
        area = masks.area.astype(np.float64)
        bound = iou_bound(boxes, area, boxes, area)
        same = _class_compatible(classes, classes)
        cand = np.triu((box_iou(boxes, boxes) >= thr * 0.5) & (bound >= thr) & same, k=1)
        pairs = np.argwhere(cand)
        if len(pairs) == 0:
            return parent
        miou = crop_iou_pairs(masks.crops, masks.crops, pairs, None, self._step, self._decoded)
        order = np.argsort(-scores, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        dup_of: dict[int, list[int]] = {}
        for (i, j), v in zip(pairs.tolist(), miou.tolist(), strict=True):
            if v >= thr:
                hi, lo = (i, j) if rank[i] < rank[j] else (j, i)
                dup_of.setdefault(lo, []).append(hi)
        for d in order.tolist():  # best first: a parent is never a duplicate itself
            for p in sorted(dup_of.get(d, ()), key=lambda k: rank[k]):
                if parent[p] < 0:
                    parent[d] = p
                    break
        return parent

    def _absorb(self, t: _Track, masks: Masks, di: int, box: NDArray[np.float64]) -> None:
        """Update a matched track with detection ``di``.

        The velocity follows the box centre; a box whose width or height changed by more than
        :data:`RESIZE_LIMIT` (a part of the object detected, or two merged) moves the track
        but leaves its velocity alone, so one bad mask does not throw the prediction off.
        """
        gap = max(self.frame - t.seen, 1)
        ox1, oy1, ox2, oy2 = t.box.tolist()
        nx1, ny1, nx2, ny2 = box.tolist()
        rw = max(nx2 - nx1, 1.0) / max(ox2 - ox1, 1.0)
        rh = max(ny2 - ny1, 1.0) / max(oy2 - oy1, 1.0)
        if 1 / RESIZE_LIMIT < rw < RESIZE_LIMIT and 1 / RESIZE_LIMIT < rh < RESIZE_LIMIT:
            mx = (nx1 + nx2 - ox1 - ox2) / (2.0 * gap)
            my = (ny1 + ny2 - oy1 - oy2) / (2.0 * gap)
            if t.hits == 1:
                vx, vy = mx, my
            else:
                a = self.config.velocity_smoothing
                vx = a * mx + (1 - a) * float(t.velocity[0])
                vy = a * my + (1 - a) * float(t.velocity[1])
            t.velocity = np.array([vx, vy, vx, vy])
        t.box = box.copy()
        t.crop = masks.crops[di]
        t.hits = t.hits + 1 if gap == 1 or t.confirmed else 1
        t.seen = self.frame
        t.det = di

    def _confirm(self, t: _Track) -> None:
        t.track_id = self._next_id
        self._next_id += 1
        self.events.append(self._event("enter", t))

    def _event(self, kind: str, t: _Track) -> TrackEvent:
        box = tuple(round(float(v), 2) for v in t.box)
        return TrackEvent(kind, t.track_id, self.frame, box, t.class_id)  # type: ignore[arg-type]


def _box_intersection(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """(N, M) intersection areas of (N, 4) and (M, 4) xyxy boxes."""
    w = np.minimum.outer(a[:, 2], b[:, 2]) - np.maximum.outer(a[:, 0], b[:, 0])
    h = np.minimum.outer(a[:, 3], b[:, 3]) - np.maximum.outer(a[:, 1], b[:, 1])
    return np.maximum(w, 0.0) * np.maximum(h, 0.0)


def iou_bound(
    box_a: NDArray[np.float64],
    area_a: NDArray[np.float64],
    box_b: NDArray[np.float64],
    area_b: NDArray[np.float64],
    inter: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Upper bound of the mask IoU of masks inside given boxes, from boxes and areas only.

    The intersection ``I`` is at most ``m = min(box intersection, area_a, area_b)``, and IoU
    ``I / (a + b - I)`` grows with ``I``, so IoU <= ``m / (a + b - m)``.

    Args:
        box_a: (N, 4) xyxy boxes holding the first masks.
        area_a: (N,) their pixel counts.
        box_b: (M, 4) boxes of the second masks.
        area_b: (M,) their pixel counts.
        inter: (N, M) box intersection areas, if already computed.

    Returns:
        (N, M) float64 bound in [0, 1].
    """
    if inter is None:
        inter = _box_intersection(box_a, box_b)
    m = np.minimum(np.minimum.outer(area_a, area_b), inter)
    union = area_a[:, None] + area_b[None, :] - m
    return np.divide(m, union, out=np.zeros_like(m), where=union > 0)


def _class_compatible(a: NDArray[np.int64], b: NDArray[np.int64]) -> NDArray[np.bool_]:
    """(N, M) whether masks of classes ``a`` (N,) and ``b`` (M,) may be the same object: the
    same class, or either class-agnostic (-1)."""
    return (a[:, None] < 0) | (b[None, :] < 0) | (a[:, None] == b[None, :])


def _class_ids(masks: Masks) -> NDArray[np.int64]:
    """(N,) class id per mask: ``Masks.class_id`` where the result type has it, else -1."""
    class_id = getattr(masks, "class_id", None)
    if class_id is None:
        return np.full(len(masks), -1, dtype=np.int64)
    return np.asarray(class_id, dtype=np.int64).reshape(len(masks))

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
* **Text** (``TextPrompt``): masks with area > 100 px are candidates; each is cropped to its
  reported box and multiplied by its mask (black background), converted BGR -> RGB and encoded
  with CLIP; ``similarity = text @ image.T`` and the argmax per text is selected.
  ``crop="official"`` instead pastes the mask's bounding box region on a white full-frame canvas
  (the FastSAM repository's crops, without its colour bug). Deviation: by default only the top
  ``TEXT_TOP_K`` (32) candidates by ``score * sqrt(area)`` are encoded (``top_k=None`` = all, as
  the reference). Texts longer than 1000 characters are rejected; CLIP's tokenizer truncates at 77
  tokens anyway.
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
box bound and order the ``best`` point search. Per-frame state (the bounds, the CLIP crop
embeddings of the text candidates) is a typed :class:`SelectionCache` on the detections.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.errors import BundleError, InputError
from edge.lru import BoundedLRU
from edge.postprocess import AxisTaps, Detections, MaskResampler
from edge.prefilter import (
    DENSE_SHORTLIST,
    TEXT_PREFILTERS,
    candidates_only,
    mask_embeddings,
    shortlist_rows,
)
from edge.prompts import (
    BoxPrompt,
    PointPrompt,
    Prompt,
    TextPrompt,
    describe,
    json_number,
    pixel_box,
)
from edge.types import MaskCrop, Masks

if TYPE_CHECKING:
    from edge.clip import DenseMap

TEXT_CROPS: tuple[str, ...] = ("reference", "official")
"""Crop styles of text candidates (see the module docstring)."""
TEXT_MIN_AREA = 100
"""Text candidates need ``area > TEXT_MIN_AREA`` pixels, as in the reference."""
TEXT_TOP_K = 32
"""Default number of masks encoded with CLIP per frame (ranked by ``score * sqrt(area)``)."""
TEXT_CACHE_SIZE = 64
"""Text embeddings kept by :class:`CachedTextEncoder`."""
TEXT_CACHE_BYTES = 4 << 20
"""Memory bound of those (texts and embeddings): a prompt's text may be 60 KB."""

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
# Text: CLIP over mask crops
# --------------------------------------------------------------------------------------------


class TextEncoder(Protocol):
    """What text prompts need of an encoder (``edge.clip.ClipEncoder`` provides it).

    Attributes:
        logit_scale: CLIP's similarity scale (softmax probabilities of the matches).
        max_batch: Crops per image-encoder call (``None``: no cap).
        has_dense: Whether :meth:`encode_dense` works (conv towers with ``clip.dense``).
    """

    logit_scale: float
    max_batch: int | None

    @property
    def has_dense(self) -> bool: ...

    def encode_text(self, texts: list[str]) -> NDArray[np.float32]: ...

    def encode_images(self, crops_rgb: list[NDArray[np.uint8]]) -> NDArray[np.float32]: ...

    def encode_dense(
        self, image_rgb: NDArray[np.uint8], long_side: int | None = None
    ) -> DenseMap: ...


@dataclass(frozen=True)
class TextOptions:
    """How text prompts choose their masks (``Segmenter.text``); checked when built.

    Attributes:
        top_k: Masks encoded with CLIP per text-prompted frame, best ``score * sqrt(area)``
            first (``None`` = all, as the reference), with the ``score`` prefilter.
        crop: CLIP crop style, ``"reference"`` or ``"official"`` (:data:`TEXT_CROPS`).
        threshold: Minimum similarity of a text prompt's best mask (a prompt's own
            ``TextPrompt.threshold`` wins; ``None``: the best mask always, as the reference).
        prefilter: How candidates are narrowed before their crops are encoded
            (``edge.prefilter.TEXT_PREFILTERS``): ``"auto"`` (dense where the encoder has a
            dense map), ``"dense"`` (every mask ranked by one CLIP pass over the frame, the
            ``shortlist`` best encoded) or ``"score"`` (``top_k``).
        shortlist: Crops encoded per text with the dense prefilter.
        dense_side: Longer side of the dense map's input (``None``: the bundle's
            ``clip.dense.long_side``); larger ranks small objects better at a cost that grows
            with its square.
    """

    top_k: int | None = TEXT_TOP_K
    crop: str = "reference"
    threshold: float | None = None
    prefilter: str = "auto"
    shortlist: int = DENSE_SHORTLIST
    dense_side: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("text_top_k", self.top_k), ("text_shortlist", self.shortlist)):
            if value is None and name == "text_top_k":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}: expected an integer >= 1, got {value!r}")
        if self.crop not in TEXT_CROPS:
            raise InputError(f"text_crop: expected one of {list(TEXT_CROPS)}, got {self.crop!r}")
        if self.prefilter not in TEXT_PREFILTERS:
            raise InputError(
                f"text_prefilter: expected one of {list(TEXT_PREFILTERS)}, got {self.prefilter!r}"
            )
        th = self.threshold
        if th is not None and (
            isinstance(th, bool) or not isinstance(th, int | float) or not -1 <= th <= 1
        ):
            raise InputError(f"text_threshold: expected a number in [-1, 1], got {th!r}")
        side = self.dense_side
        if side is not None and (
            isinstance(side, bool) or not isinstance(side, int) or not 32 <= side <= 4096
        ):
            raise InputError(f"text_dense_side: expected an integer in [32, 4096], got {side!r}")

    def check_bundle(self, has_dense: bool, model: str) -> None:
        """Refuse ``prefilter="dense"`` for a CLIP without a dense map (the one place).

        Raises:
            BundleError: Naming ``text_prefilter`` and what to use instead.
        """
        if self.prefilter == "dense" and not has_dense:
            raise BundleError(
                f"text_prefilter: 'dense' needs a CLIP with a dense image encoder; {model} has "
                "none (conv towers such as MobileCLIP have one; re-export with a current "
                "fastsam-export): use 'auto' or 'score'"
            )


class CachedTextEncoder:
    """Wraps an encoder and keeps the last ``maxsize`` text embeddings (LRU, also bounded to
    ``max_bytes``: :class:`edge.lru.BoundedLRU`).

    A camera service asks for the same few texts every frame; only new texts are encoded (in one
    batch). Image encoding is passed through.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        maxsize: int = TEXT_CACHE_SIZE,
        max_bytes: int = TEXT_CACHE_BYTES,
    ) -> None:
        self.encoder = encoder
        self.maxsize = maxsize
        self._cache: BoundedLRU[str, NDArray[np.float32]] = BoundedLRU(maxsize, max_bytes)

    @property
    def cache_stats(self) -> dict[str, int]:
        """The embedding cache's entries, bytes, bounds and evictions."""
        return self._cache.stats()

    @property
    def tokenizer_cache_stats(self) -> dict[str, int] | None:
        """The wrapped encoder's tokenizer cache (None if it has none)."""
        stats = getattr(getattr(self.encoder, "tokenizer", None), "cache_stats", None)
        return dict(stats) if isinstance(stats, dict) else None

    def encode_text(self, texts: list[str]) -> NDArray[np.float32]:
        """(T, D) embeddings, from the cache where possible."""
        found = {t: self._cache.get(t) for t in dict.fromkeys(texts)}
        missing = [t for t, f in found.items() if f is None]
        if missing:
            feats = np.asarray(self.encoder.encode_text(missing), dtype=np.float32)
            for t, f in zip(missing, feats, strict=True):
                found[t] = f = f.copy()  # a row alone, not a view holding the whole batch
                self._cache.put(t, f)
        out = [found[t] for t in texts]
        return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)

    def encode_images(self, crops_rgb: list[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """Pass-through to the wrapped encoder."""
        return self.encoder.encode_images(crops_rgb)

    @property
    def max_batch(self) -> int | None:
        """The wrapped encoder's crops per image-encoder call (``None``: it has no cap)."""
        return self.encoder.max_batch

    @property
    def logit_scale(self) -> float:
        """The wrapped encoder's CLIP logit scale."""
        return self.encoder.logit_scale

    @property
    def has_dense(self) -> bool:
        """Whether the wrapped encoder has a dense image encoder (``encode_dense``)."""
        return self.encoder.has_dense

    def encode_dense(self, image_rgb: NDArray[np.uint8], long_side: int | None = None) -> DenseMap:
        """Pass-through to the wrapped encoder's dense map of a whole frame."""
        return self.encoder.encode_dense(image_rgb, long_side)


def _text_crop(
    result: Masks, i: int, image_bgr: NDArray[np.uint8], crop: str
) -> NDArray[np.uint8]:
    h, w = result.image_hw
    mc = result.crops[i]
    mc_h, mc_w = mc.shape
    if crop == "official":
        ys, xs = np.nonzero(mc.data)
        y0, y1 = mc.y0 + int(ys.min()), mc.y0 + int(ys.max()) + 1
        x0, x1 = mc.x0 + int(xs.min()), mc.x0 + int(xs.max()) + 1
        canvas = np.full((h, w, 3), 255, dtype=np.uint8)
        canvas[y0:y1, x0:x1] = image_bgr[y0:y1, x0:x1]
        return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    x1b, y1b, x2b, y2b = (int(v) for v in result.xyxy[i].tolist())
    x1b, y1b = max(x1b, 0), max(y1b, 0)
    region = image_bgr[y1b:y2b, x1b:x2b]
    hh, ww = region.shape[:2]
    mask = np.zeros((hh, ww), dtype=bool)
    # The crop's own box [x0, x0 + w) intersected with the region.
    ox0, oy0 = max(mc.x0, x1b), max(mc.y0, y1b)
    ox1 = min(mc.x0 + mc_w, x1b + ww)
    oy1 = min(mc.y0 + mc_h, y1b + hh)
    if ox1 > ox0 and oy1 > oy0:
        mask[oy0 - y1b : oy1 - y1b, ox0 - x1b : ox1 - x1b] = mc.rows(oy0 - mc.y0, oy1 - mc.y0)[
            :, ox0 - mc.x0 : ox1 - mc.x0
        ]
    out = region * mask[:, :, None].astype(np.uint8)
    return np.ascontiguousarray(out[:, :, ::-1])


@dataclass(frozen=True)
class TextMatch:
    """The best mask for one text prompt.

    Attributes:
        index: Mask index in the scored result (-1: no candidate mask).
        similarity: Cosine similarity of text and that mask's crop (CLIP's raw score).
        probability: Its softmax over all candidates, at CLIP's logit scale.
        candidates: Number of masks scored.
    """

    index: int
    similarity: float
    probability: float
    candidates: int


@dataclass(frozen=True, eq=False)
class CropEmbeddings:
    """CLIP image embeddings of one frame's text candidates, reusable by later text prompts.

    :func:`select` stores it in the detections' :class:`SelectionCache` the first time a text
    prompt is applied to them; any later text prompt with the same encoder,
    ``top_k`` and ``crop`` encodes only its text.

    Attributes:
        candidates: (C,) indices of the masks the crops were cut from (rows of the result
            for :func:`embed_text_candidates`, detection indices when cached on detections).
        features: (C, D) float32 L2-normalised image embeddings, one row per candidate.
        top_k: Candidate cap they were computed with.
        crop: Crop style they were computed with.
        encoder: The encoder that produced them (compared by identity).
    """

    candidates: NDArray[np.intp]
    features: NDArray[np.float32]
    top_k: int | None
    crop: str
    encoder: object

    def matches(self, encoder: object, top_k: int | None, crop: str) -> bool:
        """Whether these embeddings are what ``encoder``/``top_k``/``crop`` would compute."""
        return self.encoder is encoder and self.top_k == top_k and self.crop == crop

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return int(self.candidates.nbytes + self.features.nbytes)

    def best(self, text_feats: NDArray[np.float32]) -> list[int]:
        """For each text embedding, the best-matching candidate's result index (``-1``: none)."""
        return [m.index for m in self.best_matches(text_feats)]

    def best_matches(
        self, text_feats: NDArray[np.float32], logit_scale: float = 100.0
    ) -> list[TextMatch]:
        """For each text embedding, its best candidate with similarity and softmax probability
        over the candidates at ``logit_scale`` (index ``-1``: no candidate)."""
        n = len(self.candidates)
        if n == 0:
            return [TextMatch(-1, float("nan"), float("nan"), 0) for _ in text_feats]
        similarity = np.asarray(text_feats, dtype=np.float32) @ self.features.T  # (T, C)
        logits = similarity.astype(np.float64) * logit_scale
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return [
            TextMatch(int(self.candidates[j]), float(similarity[t, j]), float(probs[t, j]), n)
            for t, j in enumerate(np.argmax(similarity, axis=1))
        ]


def embed_text_candidates(
    result: Masks,
    image_bgr: NDArray[np.uint8],
    encoder: TextEncoder,
    top_k: int | None = TEXT_TOP_K,
    crop: str = "reference",
) -> CropEmbeddings:
    """Pick the text candidates of ``result`` and encode their crops with CLIP (see
    :func:`select_by_text` for the rule)."""
    if crop not in TEXT_CROPS:
        raise InputError(f"crop: expected one of {list(TEXT_CROPS)}, got {crop!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InputError(f"top_k: expected a positive integer or None, got {top_k!r}")
    area = result.area
    keep = np.flatnonzero(area > TEXT_MIN_AREA)
    if top_k is not None and len(keep) > top_k:
        rank = result.confidence[keep].astype(np.float64) * np.sqrt(area[keep])
        keep = np.sort(keep[np.argsort(-rank, kind="stable")[:top_k]])
    if len(keep) == 0:
        feats = np.zeros((0, 0), dtype=np.float32)
    else:
        # Crops are cut per encoder call, not all at once: with top_k=None or "official" crops
        # (a full-frame canvas each) the whole list would hold hundreds of MB. The chunks are
        # the encoder's own (max_batch), so the batches it sees, and its results, are unchanged.
        step = encoder.max_batch or len(keep)
        parts = [
            np.asarray(
                encoder.encode_images(
                    [_text_crop(result, int(i), image_bgr, crop) for i in keep[j : j + step]]
                ),
                dtype=np.float32,
            )
            for j in range(0, len(keep), step)
        ]
        feats = np.concatenate(parts)
    return CropEmbeddings(keep.astype(np.intp), feats, top_k, crop, encoder)


@dataclass(eq=False)
class DenseText:
    """One frame's dense text state, reused by every later text prompt on it.

    Attributes:
        encoder: The encoder it was computed with (compared by identity).
        crop: Crop style of the encoded crops.
        dense_side: The dense input's longer side it was computed at (``None``: the bundle's).
        candidates: (C,) detection indices of the text candidates (area > 100 px).
        pooled: (C, D) float32 L2-normalised mask-pooled dense embeddings, one per candidate.
        crops: Detection index -> (D,) crop embedding, for the candidates encoded so far.
    """

    encoder: object
    crop: str
    dense_side: int | None
    candidates: NDArray[np.intp]
    pooled: NDArray[np.float32]
    crops: dict[int, NDArray[np.float32]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return int(
            self.candidates.nbytes
            + self.pooled.nbytes
            + sum(v.nbytes for v in self.crops.values())
        )


def dense_text_matches(
    dets: Detections,
    image_bgr: NDArray[np.uint8],
    encoder: CachedTextEncoder,
    text_feats: NDArray[np.float32],
    size: int = DENSE_SHORTLIST,
    crop: str = "reference",
    dense_side: int | None = None,
) -> list[TextMatch]:
    """For each text, its best mask among the ``size`` best by the frame's dense map.

    Every non-empty detection with area > 100 px is a candidate. The dense map (one image-tower
    pass over the frame) and each candidate's pooled embedding are computed once per frame;
    each text's shortlist is then encoded as crops (:func:`_text_crop`, only the crops not
    encoded for an earlier text) and the best crop similarity wins, as in
    :func:`text_matches`. The probability is the softmax over the shortlist.

    Args:
        dets: Detections of one frame (its :class:`SelectionCache` keeps this frame's state).
        image_bgr: (H, W, 3) uint8 source image.
        encoder: Encoder with a dense map (``encoder.has_dense``).
        text_feats: (T, D) L2-normalised text embeddings.
        size: Crops encoded per text (:data:`edge.prefilter.DENSE_SHORTLIST`).
        crop: ``"reference"`` or ``"official"``.
        dense_side: Longer side of the dense map's input (default: the bundle's
            ``clip.dense.long_side``); the frame is blacked out outside every candidate first
            (:func:`edge.prefilter.candidates_only`).

    Returns:
        One :class:`TextMatch` per text; ``index`` is a detection index (``-1``: no candidate).
    """
    cache = dets.cache(SelectionCache)
    state = cache.dense_text
    if (
        state is None
        or state.encoder is not encoder
        or state.crop != crop
        or state.dense_side != dense_side
    ):
        kept = np.asarray(dets.nonempty(), dtype=np.intp)
        masks = dets.to_masks(kept)
        rows = np.flatnonzero(masks.area > TEXT_MIN_AREA)
        frame = candidates_only(image_bgr, masks.crops, rows)
        dense = encoder.encode_dense(np.ascontiguousarray(frame[:, :, ::-1]), dense_side)
        state = DenseText(
            encoder, crop, dense_side, kept[rows], mask_embeddings(masks.crops, rows, dense)
        )
        cache.dense_text = state
    n = len(state.candidates)
    if n == 0:
        return [TextMatch(-1, float("nan"), float("nan"), 0) for _ in text_feats]
    # one ranking per call: each text's rows, and their union is what gets encoded
    order = shortlist_rows(text_feats @ state.pooled.T, size)
    picks = np.unique(state.candidates[order.reshape(-1)])
    todo = [int(i) for i in picks if int(i) not in state.crops]
    if todo:
        masks = dets.to_masks(todo)
        step = int(encoder.max_batch or len(todo))
        for j in range(0, len(todo), step):
            feats = encoder.encode_images(
                [_text_crop(masks, r, image_bgr, crop) for r in range(j, min(j + step, len(todo)))]
            )
            for r, f in enumerate(np.asarray(feats, dtype=np.float32)):
                state.crops[todo[j + r]] = f
    scale = float(encoder.logit_scale)
    out = []
    for t, rows in enumerate(order):
        det_ids = state.candidates[rows]
        feats = np.stack([state.crops[int(i)] for i in det_ids])
        shortlisted = CropEmbeddings(det_ids, feats, None, crop, encoder)
        out += shortlisted.best_matches(text_feats[t : t + 1], scale)
    return out


def select_by_text(
    result: Masks,
    image_bgr: NDArray[np.uint8],
    texts: Sequence[str],
    encoder: TextEncoder,
    top_k: int | None = TEXT_TOP_K,
    crop: str = "reference",
) -> list[int]:
    """For each text, the index of the best-matching mask (:func:`text_matches`' indices)."""
    return [m.index for m in text_matches(result, image_bgr, texts, encoder, top_k, crop)]


def text_matches(
    result: Masks,
    image_bgr: NDArray[np.uint8],
    texts: Sequence[str],
    encoder: TextEncoder,
    top_k: int | None = TEXT_TOP_K,
    crop: str = "reference",
) -> list[TextMatch]:
    """For each text, the index of the best-matching mask of ``result`` (UL-new rule).

    Candidates are the masks with area > 100 px; with ``top_k`` only the ``top_k`` best by
    ``score * sqrt(area)`` (ties: lower index) are encoded (``None`` = all, as the reference).
    Each candidate crop is ``image[y1:y2, x1:x2] * mask[y1:y2, x1:x2]`` with ``x1 .. y2`` the
    ``int()`` of the reported box, converted to RGB (``crop="official"``: the mask's bounding box
    region pasted on a white full-frame canvas). ``similarity = text_feats @ image_feats.T`` and
    the argmax per text (first on ties) is mapped back to the mask index.

    Args:
        result: Assembled masks (e.g. everything mode) with reported boxes.
        image_bgr: (H, W, 3) uint8 source image.
        texts: Text prompts.
        encoder: Encoder returning L2-normalised features.
        top_k: Candidate cap, or ``None``.
        crop: ``"reference"`` or ``"official"``.

    Returns:
        One :class:`TextMatch` per text (index ``-1`` where no mask is large enough), with the
        winner's similarity and its softmax probability over the candidates (logit scale from
        ``encoder.logit_scale``, else 100 as OpenAI's CLIP).
    """
    texts = list(texts)
    if not texts:
        return []
    emb = embed_text_candidates(result, image_bgr, encoder, top_k, crop)
    if len(emb.candidates) == 0:
        return [TextMatch(-1, float("nan"), float("nan"), 0) for _ in texts]
    text_feats = np.asarray(encoder.encode_text(texts), dtype=np.float32)
    return emb.best_matches(text_feats, encoder.logit_scale)


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
        crop_embeddings: CLIP embeddings of the text candidates (set by the first text prompt,
            then reused by later ones with the same encoder, ``top_k`` and ``crop``; kept by
            ``release_masks``).
        dense_text: The dense prefilter's state (dense map pooled per candidate, crops encoded
            so far), set by the first text prompt with the dense prefilter, then reused.
    """

    sign_bounds: dict[int, SignBounds] = field(default_factory=dict)
    tap_runs: tuple[TapRuns, TapRuns] | None = None
    protos_absmax: float | None = None
    crop_embeddings: CropEmbeddings | None = None
    dense_text: DenseText | None = None

    @property
    def nbytes(self) -> int:
        """Memory of the CLIP embeddings (the bounds are a few small arrays per mask)."""
        total = self.crop_embeddings.nbytes if self.crop_embeddings is not None else 0
        return total + (self.dense_text.nbytes if self.dense_text is not None else 0)

    def release(self) -> None:
        """Drop the bounds; the CLIP embeddings stay (they do not depend on assembly)."""
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


def _use_dense(encoder: TextEncoder, options: TextOptions) -> bool:
    """Whether text candidates go through the dense prefilter (see :class:`TextOptions`)."""
    options.check_bundle(encoder.has_dense, "this bundle's CLIP")
    return encoder.has_dense and options.prefilter != "score"


def _score_text_matches(
    dets: Detections,
    image_bgr: NDArray[np.uint8],
    encoder: TextEncoder,
    text_feats: NDArray[np.float32],
    top_k: int | None,
    crop: str,
) -> list[TextMatch]:
    """Best mask per text among the ``top_k`` candidates by score (detection indices)."""
    cache = dets.cache(SelectionCache)
    emb = cache.crop_embeddings
    if emb is None or not emb.matches(encoder, top_k, crop):
        # first text prompt on these detections: embed the candidates' crops once; the
        # candidates are indices of the non-empty detections, mapped back below
        kept = dets.nonempty()
        emb = embed_text_candidates(dets.to_masks(kept), image_bgr, encoder, top_k, crop)
        emb = CropEmbeddings(
            np.asarray(kept, dtype=np.intp)[emb.candidates],
            emb.features,
            emb.top_k,
            emb.crop,
            emb.encoder,
        )
        cache.crop_embeddings = emb
    return emb.best_matches(text_feats, encoder.logit_scale)


def select(
    dets: Detections,
    prompts: Sequence[Prompt],
    image_bgr: NDArray[np.uint8] | None = None,
    encoder: TextEncoder | None = None,
    text: TextOptions = TextOptions(),
) -> Selection:
    """Apply validated prompts to lazily assembled detections.

    Args:
        dets: Detections of one frame (stage (a) of the post-processing).
        prompts: Prompts, already validated against the frame.
        image_bgr: Source image (text prompts only).
        encoder: Text/image encoder (text prompts only).
        text: How text prompts choose their masks (candidates, crop style, threshold).

    Returns:
        The selection (first selecting prompt per candidate, merged masks, text scores, and a
        note for every prompt that selected nothing or only by the reference's fallback).
    """
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
        if _use_dense(encoder, text):
            assert isinstance(encoder, CachedTextEncoder)
            matches = dense_text_matches(
                dets, image_bgr, encoder, text_feats, text.shortlist, text.crop, text.dense_side
            )
        else:
            matches = _score_text_matches(
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

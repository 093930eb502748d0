"""Text prompts: which of one frame's detections a phrase selects, through CLIP.

Masks with area > :data:`TEXT_MIN_AREA` px are candidates; each is cropped to its reported box
and multiplied by its mask (black background), converted BGR -> RGB and encoded with CLIP;
``similarity = text @ image.T`` and the argmax per text is selected (the reference's rule,
``docs/prompts.md``). ``crop="official"`` pastes the box region on a white full-frame canvas
instead. Candidates are narrowed first (:class:`TextOptions`): the ``top_k`` best by
``score * sqrt(area)``, or, for conv towers with a dense map, the shortlist the dense prefilter
(:mod:`edge.prefilter`) ranks best. The CLIP crop embeddings and the dense state are a typed
:class:`TextCache` on the detections, so a second word on the same frame encodes only new crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.errors import BundleError, InputError
from edge.lru import WORD_CACHE_BYTES, WordCache
from edge.postprocess import Detections
from edge.prefilter import (
    DENSE_SHORTLIST,
    TEXT_PREFILTERS,
    candidates_only,
    mask_embeddings,
    shortlist_rows,
)
from edge.types import Masks

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
    """Wraps an encoder and keeps text embeddings: the last ``maxsize`` in memory (LRU, also
    bounded to ``max_bytes``) and, with a ``directory``, every one on disk
    (:class:`edge.lru.WordCache`, YOLOE's word store).

    A camera service asks for the same few texts every frame; only new texts are encoded (in one
    batch), so an encoder that releases its text session after encoding
    (``ClipEncoder.keep_text=False``) loads it only for texts never seen, even across restarts.
    Image encoding is passed through.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        maxsize: int = TEXT_CACHE_SIZE,
        max_bytes: int = WORD_CACHE_BYTES,
        directory: str | Path | None = None,
    ) -> None:
        self.encoder = encoder
        self.maxsize = maxsize
        self._cache = WordCache(directory, maxsize, max_bytes)

    @property
    def cache_stats(self) -> dict[str, int]:
        """The embedding cache's entries, bytes, bounds and evictions (memory tier)."""
        return self._cache.stats()

    @property
    def tokenizer_cache_stats(self) -> dict[str, int] | None:
        """The wrapped encoder's tokenizer cache (None if it has none)."""
        stats = getattr(getattr(self.encoder, "tokenizer", None), "cache_stats", None)
        return dict(stats) if isinstance(stats, dict) else None

    def encode_text(self, texts: list[str]) -> NDArray[np.float32]:
        """(T, D) embeddings, from the cache where possible."""
        return self._cache.encode(texts, self.encoder.encode_text)[0]

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
    cache = dets.cache(TextCache)
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


@dataclass
class TextCache:
    """Per-frame state of text prompts, kept on the detections (``dets.cache(TextCache)``).

    Attributes:
        crop_embeddings: CLIP embeddings of the text candidates (set by the first text prompt,
            then reused by later ones with the same encoder, ``top_k`` and ``crop``).
        dense_text: The dense prefilter's state (dense map pooled per candidate, crops encoded
            so far), set by the first text prompt with the dense prefilter, then reused.
    """

    crop_embeddings: CropEmbeddings | None = None
    dense_text: DenseText | None = None

    @property
    def nbytes(self) -> int:
        """Memory of the CLIP embeddings and the dense state."""
        total = self.crop_embeddings.nbytes if self.crop_embeddings is not None else 0
        return total + (self.dense_text.nbytes if self.dense_text is not None else 0)

    def release(self) -> None:
        """Nothing to drop: the embeddings do not depend on mask assembly."""


def use_dense(encoder: TextEncoder, options: TextOptions) -> bool:
    """Whether text candidates go through the dense prefilter (see :class:`TextOptions`)."""
    options.check_bundle(encoder.has_dense, "this bundle's CLIP")
    return encoder.has_dense and options.prefilter != "score"


def score_text_matches(
    dets: Detections,
    image_bgr: NDArray[np.uint8],
    encoder: TextEncoder,
    text_feats: NDArray[np.float32],
    top_k: int | None,
    crop: str,
) -> list[TextMatch]:
    """Best mask per text among the ``top_k`` candidates by score (detection indices)."""
    cache = dets.cache(TextCache)
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

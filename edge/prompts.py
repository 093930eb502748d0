"""Point, box and text prompts: parsing, validation and (lazy) mask selection.

Semantics follow ultralytics 8.4.190 ``FastSAMPredictor.prompt`` ("UL-new", see
``docs/prompts.md``) unless stated otherwise:

* **Box** (:class:`BoxPrompt`): each box is truncated toward zero to integer pixels (as
  ``torch.as_tensor(..., dtype=int32)``) and clipped to the frame. For every mask M,
  ``IoU = |M ∩ box| / (|box| + |M| - |M ∩ box|)`` (the filled rectangle against the mask pixels),
  computed in float32 like the reference; the argmax per box (first index on ties) is selected and
  the winners of all boxes are OR-ed (deduplicated, kept in score order). Reference quirk, kept
  for parity: when every IoU is 0 the argmax is index 0, i.e. the *first non-empty* mask (the
  reference drops empty masks before prompting).
* **Point** (:class:`PointPrompt`), ``mode="reference"`` (default): points are truncated to
  integers and clipped to ``[0, W-1] x [0, H-1]``; a mask is selected iff it contains at least one
  positive point (label 1) and no negative point (label 0); with only negative points every mask
  containing none of them is selected. ``mode="official"``: the FastSAM repository rule -- masks
  sorted by area (descending, stable), each painted with the label of the *last* point inside it,
  the result is ONE merged mask (pixels painted 1). ``mode="best"`` (not in any reference): the
  single smallest-area mask satisfying the reference rule -- what a click usually means.
* **Text** (:class:`TextPrompt`): masks with area > 100 px are candidates; each is cropped to its
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
"""

from __future__ import annotations

import heapq
import math
import reprlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.errors import BundleError, InputError
from edge.prefilter import DENSE_SHORTLIST, TEXT_PREFILTERS, mask_embeddings, shortlist
from edge.types import MaskCrop, Masks

if TYPE_CHECKING:
    from edge.clip import DenseMap
    from edge.postprocess import AxisTaps, MaskResampler
    from edge.segmenter import Detections

PointMode = Literal["reference", "official", "best"]
POINT_MODES: tuple[str, ...] = ("reference", "official", "best")
TEXT_CROPS: tuple[str, ...] = ("reference", "official")
MAX_TEXT_CHARS = 1000
"""Longest accepted text prompt (CLIP's tokenizer keeps only 77 tokens anyway)."""
TEXT_MIN_AREA = 100
"""Text candidates need ``area > TEXT_MIN_AREA`` pixels, as in the reference."""
TEXT_TOP_K = 32
"""Default number of masks encoded with CLIP per frame (ranked by ``score * sqrt(area)``)."""
TEXT_CACHE_SIZE = 64

"""Text embeddings kept by :class:`CachedTextEncoder`."""

# sign(logit) computed here in float64 equals assemble_mask's float32 sign whenever
# |logit| > _LOGIT_REL_TOL * sum(|w| * |c| * |p|): float32 rounding of a 32-term dot product plus
# two <=4-tap sums is below ~45 ulp (2^-24 each) of that sum; 2^-16 leaves a 5x margin.
_LOGIT_REL_TOL = 2.0**-16


# --------------------------------------------------------------------------------------------
# Prompt types
# --------------------------------------------------------------------------------------------


def _num(v: float) -> float | int:
    """A JSON-friendly number: integral floats become ints."""
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxstring, _SHOW.maxother = 3, 8, 60, 60


def show(value: Any) -> str:
    """A bounded ``repr`` for error messages (a 100000-deep list must not recurse)."""
    return _SHOW.repr(value)


def _is_number(v: Any) -> bool:
    """int/float (numpy's too), but not bool: ``true`` is not a coordinate or a label."""
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _check_numbers(value: Any, name: str, width: int) -> None:
    """``value`` is [n, ...] or [[n, ...], ...] of plain numbers (no strings, bools, deeper
    nesting), checked before numpy would coerce ``"1"`` or ``true`` to 1.0."""
    shape = "[x, y]" if width == 2 else "[x1, y1, x2, y2]"
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise InputError(f"{name}: expected numbers, got a {value.dtype} array")
        return
    if not isinstance(value, list | tuple):
        raise InputError(f"{name}: expected {shape} or a list of them, got {show(value)}")
    rows = value if value and isinstance(value[0], list | tuple | np.ndarray) else [value]
    for row in rows:
        if isinstance(row, np.ndarray) and row.dtype.kind in "iuf":
            continue
        if not isinstance(row, list | tuple):
            raise InputError(f"{name}: expected {shape} or a list of them, got {show(value)}")
        for v in row:
            if not _is_number(v):
                raise InputError(f"{name}: coordinates must be numbers, got {show(v)}")


def _as_float_array(value: Any, name: str, width: int) -> NDArray[np.float64]:
    _check_numbers(value, name, width)
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected numbers, got {show(value)}") from exc
    if arr.ndim == 1 and arr.shape[0] == width:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != width:
        shape = "[x, y]" if width == 2 else "[x1, y1, x2, y2]"
        raise InputError(f"{name}: expected {shape} or a list of them, got {show(value)}")
    return arr


@dataclass(frozen=True, eq=False)
class PointPrompt:
    """Clicks on the image, in source pixels.

    Attributes:
        points: (K, 2) float64 ``x, y`` (column, row) coordinates.
        labels: (K,) labels, 1 = foreground, 0 = background (checked by :func:`validate_prompt`).
        mode: ``"reference"`` (UL-new, separate masks), ``"official"`` (FastSAM repository, one
            merged mask) or ``"best"`` (the smallest mask satisfying the reference rule).
    """

    points: NDArray[np.float64]
    labels: NDArray[Any]
    mode: PointMode = "reference"

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", _as_float_array(self.points, "point", 2))
        labels = self.labels
        if labels is None:
            labels = np.ones(len(self.points), dtype=np.int64)
        elif isinstance(labels, list | tuple):
            for i, v in enumerate(labels):
                if not (_is_number(v) or isinstance(v, str)):  # strings: validate_prompt says
                    raise InputError(f"label[{i}]: expected 0 or 1, got {show(v)}")
        elif isinstance(labels, np.ndarray) and labels.ndim == 0:
            labels = [labels.item()] * len(self.points)
        elif not isinstance(labels, np.ndarray):
            labels = [labels] * len(self.points)
        try:
            arr = np.array(labels)
        except (TypeError, ValueError) as exc:  # ragged
            raise InputError(f"label: expected 0/1 integers, got {show(labels)}") from exc
        if arr.ndim != 1:
            raise InputError(f"label: expected a flat list of 0/1, got {show(labels)}")
        object.__setattr__(self, "labels", arr)

    def to_json(self) -> dict[str, Any]:
        """The prompt in the JSON prompt schema."""
        return {
            "type": "point",
            "data": [[_num(x), _num(y)] for x, y in self.points],
            "label": [_num(v) if not isinstance(v, str) else v for v in self.labels.tolist()],
            "mode": self.mode,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PointPrompt) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(repr(self.to_json()))


@dataclass(frozen=True, eq=False)
class BoxPrompt:
    """Boxes in source pixels, ``x1, y1, x2, y2``; each selects its best-IoU mask.

    Attributes:
        xyxy: (M, 4) float64 boxes.
    """

    xyxy: NDArray[np.float64]

    def __post_init__(self) -> None:
        object.__setattr__(self, "xyxy", _as_float_array(self.xyxy, "box", 4))

    def to_json(self) -> dict[str, Any]:
        """The prompt in the JSON prompt schema."""
        return {"type": "box", "data": [[_num(v) for v in b] for b in self.xyxy]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BoxPrompt) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(repr(self.to_json()))


@dataclass(frozen=True)
class TextPrompt:
    """A text description; selects the mask whose CLIP image embedding matches it best.

    Attributes:
        text: The description (1..1000 characters, not only whitespace).
        threshold: Minimum cosine similarity of the best mask; below it the prompt selects
            nothing. ``None``: the segmenter's default (the bundle's ``clip.text_threshold``,
            if measured). Scales differ per CLIP model, so calibrate per bundle.
    """

    text: str
    threshold: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The prompt in the JSON prompt schema."""
        out: dict[str, Any] = {"type": "text", "data": self.text}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


Prompt = PointPrompt | BoxPrompt | TextPrompt
"""Any prompt type."""

_PROMPT_KEYS = {
    "point": {"type", "data", "label", "mode"},
    "box": {"type", "data"},
    "text": {"type", "data", "threshold"},
}


def parse_prompts(obj: Any) -> list[Prompt]:
    """Build prompts from the JSON prompt schema.

    Schema: a list (or one object) of ``{"type": "point", "data": [x, y] | [[x, y], ...],
    "label": 0 | 1 | [0/1, ...], "mode": "reference" | "official" | "best"}`` (``label``
    default 1, ``mode`` default ``"reference"``), ``{"type": "box", "data": [x1, y1, x2, y2] |
    [[...], ...]}`` or ``{"type": "text", "data": "a red circle", "threshold": 0.2}``
    (``threshold`` optional). Frame-independent checks
    of :func:`validate_prompt` are applied; frame bounds are checked later.

    Raises:
        InputError: Naming the entry, field and bad value.
    """
    if isinstance(obj, Mapping):
        obj = [obj]
    if not isinstance(obj, list | tuple):
        raise InputError(f"prompts: expected an object or a list of objects, got {show(obj)}")
    out: list[Prompt] = []
    for i, entry in enumerate(obj):
        where = f"prompts[{i}]"
        if not isinstance(entry, Mapping):
            raise InputError(f"{where}: expected an object, got {show(entry)}")
        kind = entry.get("type")
        if not isinstance(kind, str) or kind not in _PROMPT_KEYS:
            raise InputError(
                f"{where}.type: expected one of {sorted(_PROMPT_KEYS)}, got {show(kind)}"
            )
        unknown = sorted(set(entry) - _PROMPT_KEYS[kind])
        if unknown:
            raise InputError(
                f"{where}: unknown key(s) {unknown} for a {kind} prompt "
                f"(allowed: {sorted(_PROMPT_KEYS[kind])})"
            )
        if "data" not in entry:
            raise InputError(f"{where}.data: missing")
        data = entry["data"]
        try:
            prompt: Prompt
            if kind == "point":
                prompt = PointPrompt(data, entry.get("label", 1), entry.get("mode", "reference"))
            elif kind == "box":
                prompt = BoxPrompt(data)
            else:
                prompt = TextPrompt(data, entry.get("threshold"))
            validate_prompt(prompt, None)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        out.append(prompt)
    return out


def validate_prompt(prompt: Any, image_hw: tuple[int, int] | None) -> None:
    """Check a prompt; ``image_hw=None`` skips the checks that need the frame size.

    Raises:
        InputError: Naming the field (``point``, ``label``, ``mode``, ``box``, ``text``,
            ``type``) and the bad value.
    """
    if isinstance(prompt, PointPrompt):
        _validate_points(prompt, image_hw)
    elif isinstance(prompt, BoxPrompt):
        _validate_boxes(prompt, image_hw)
    elif isinstance(prompt, TextPrompt):
        text = prompt.text
        if not isinstance(text, str):
            raise InputError(f"text: expected a string, got {show(text)}")
        if not text.strip():
            raise InputError(f"text: empty or whitespace-only text {text!r}")
        if len(text) > MAX_TEXT_CHARS:
            raise InputError(
                f"text: {len(text)} characters, at most {MAX_TEXT_CHARS} allowed "
                f"(starts {text[:40]!r})"
            )
        th = prompt.threshold
        if th is not None and (
            isinstance(th, bool) or not isinstance(th, int | float) or not -1.0 <= th <= 1.0
        ):
            raise InputError(f"threshold: expected a cosine similarity in [-1, 1], got {th!r}")
    else:
        raise InputError(
            f"type: expected a PointPrompt, BoxPrompt or TextPrompt, got {type(prompt).__name__} "
            f"{prompt!r}"
        )


def _validate_points(p: PointPrompt, image_hw: tuple[int, int] | None) -> None:
    if p.mode not in POINT_MODES:
        raise InputError(f"mode: expected one of {list(POINT_MODES)}, got {show(p.mode)}")
    pts, labels = p.points, p.labels
    if len(pts) == 0:
        raise InputError("point: no points given")
    for i, (x, y) in enumerate(pts):
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InputError(f"point[{i}]: coordinates must be finite, got ({x}, {y})")
    if len(labels) != len(pts):
        raise InputError(
            f"label: {len(labels)} label(s) {labels.tolist()} for {len(pts)} point(s)"
        )
    for i, v in enumerate(labels.tolist()):
        if isinstance(v, bool) or not isinstance(v, int | float) or v not in (0, 1):
            raise InputError(f"label[{i}]: expected 0 or 1, got {v!r}")
    if image_hw is not None:
        h, w = image_hw
        for i, (x, y) in enumerate(pts):
            if x < 0 or y < 0 or x >= w or y >= h:
                raise InputError(
                    f"point[{i}]: ({_num(x)}, {_num(y)}) is off the {w}x{h} frame "
                    f"(need 0 <= x < {w}, 0 <= y < {h})"
                )


def _validate_boxes(p: BoxPrompt, image_hw: tuple[int, int] | None) -> None:
    if len(p.xyxy) == 0:
        raise InputError("box: no boxes given")
    for i, b in enumerate(p.xyxy):
        shown = [_num(v) for v in b]
        if not np.isfinite(b).all():
            raise InputError(f"box[{i}]: coordinates must be finite, got {shown}")
        x1, y1, x2, y2 = b
        if x2 <= x1 or y2 <= y1:
            raise InputError(f"box[{i}]: inverted or empty box {shown} (need x2 > x1, y2 > y1)")
        if image_hw is None:
            continue
        h, w = image_hw
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            raise InputError(f"box[{i}]: {shown} lies entirely outside the {w}x{h} frame")
        c = _int_box(b, image_hw)
        if c[2] <= c[0] or c[3] <= c[1]:
            raise InputError(
                f"box[{i}]: {shown} is empty after truncation to whole pixels {c.tolist()}"
            )


def _int_box(b: NDArray[np.float64], image_hw: tuple[int, int]) -> NDArray[np.int64]:
    """Truncate toward zero (``int32`` cast) and clip to the frame, like the reference."""
    h, w = image_hw
    c = np.trunc(b).astype(np.int64)
    c[[0, 2]] = c[[0, 2]].clip(0, w)
    c[[1, 3]] = c[[1, 3]].clip(0, h)
    return c


def _int_points(pts: NDArray[np.float64], image_hw: tuple[int, int]) -> NDArray[np.int64]:
    """Truncate toward zero (``int64`` cast) and clip to ``[0, W-1] x [0, H-1]``."""
    h, w = image_hw
    c = np.trunc(pts).astype(np.int64)
    c[:, 0] = c[:, 0].clip(0, w - 1)
    c[:, 1] = c[:, 1].clip(0, h - 1)
    return c


def as_prompt_list(prompt: Any) -> list[Prompt]:
    """Normalise ``None`` / one prompt / a sequence of prompts to a list (type-checked)."""
    if prompt is None:
        return []
    items = [prompt] if isinstance(prompt, PointPrompt | BoxPrompt | TextPrompt) else prompt
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
        raise InputError(
            f"prompt: expected a Prompt or a list of prompts, got {type(prompt).__name__} "
            f"{prompt!r} (use edge.prompts.parse_prompts for JSON)"
        )
    out = list(items)
    for i, p in enumerate(out):
        if not isinstance(p, PointPrompt | BoxPrompt | TextPrompt):
            raise InputError(
                f"prompt[{i}]: type: expected a PointPrompt, BoxPrompt or TextPrompt, "
                f"got {type(p).__name__} {p!r}"
            )
    return out


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
# Selection
# --------------------------------------------------------------------------------------------


class TextEncoder(Protocol):
    """What :func:`select_by_text` needs (``edge.clip.ClipEncoder`` provides it)."""

    def encode_text(self, texts: list[str]) -> NDArray[np.float32]: ...

    def encode_images(self, crops_rgb: list[NDArray[np.uint8]]) -> NDArray[np.float32]: ...


class CachedTextEncoder:
    """Wraps an encoder and keeps the last ``maxsize`` text embeddings (LRU).

    A camera service asks for the same few texts every frame; only new texts are encoded (in one
    batch). Image encoding is passed through.
    """

    def __init__(self, encoder: TextEncoder, maxsize: int = TEXT_CACHE_SIZE) -> None:
        self.encoder = encoder
        self.maxsize = maxsize
        self._cache: OrderedDict[str, NDArray[np.float32]] = OrderedDict()

    def encode_text(self, texts: list[str]) -> NDArray[np.float32]:
        """(T, D) embeddings, from the cache where possible."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            feats = np.asarray(self.encoder.encode_text(missing), dtype=np.float32)
            for t, f in zip(missing, feats, strict=True):
                self._cache[t] = f
        out = []
        for t in texts:
            self._cache.move_to_end(t)
            out.append(self._cache[t])
        while len(self._cache) > self.maxsize:
            self._cache.popitem(last=False)
        return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)

    def encode_images(self, crops_rgb: list[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """Pass-through to the wrapped encoder."""
        return self.encoder.encode_images(crops_rgb)

    @property
    def max_batch(self) -> int | None:
        """The wrapped encoder's crops per image-encoder call (``None``: it has no cap)."""
        value = getattr(self.encoder, "max_batch", None)
        return int(value) if value else None

    @property
    def logit_scale(self) -> float:
        """The wrapped encoder's CLIP logit scale (100 when it has none)."""
        return float(getattr(self.encoder, "logit_scale", 100.0))

    @property
    def has_dense(self) -> bool:
        """Whether the wrapped encoder has a dense image encoder (``encode_dense``)."""
        return bool(getattr(self.encoder, "has_dense", False))

    def encode_dense(self, image_rgb: NDArray[np.uint8]) -> DenseMap:
        """Pass-through to the wrapped encoder's dense map of a whole frame."""
        return self.encoder.encode_dense(image_rgb)  # type: ignore[attr-defined,no-any-return]


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

    :func:`select` stores it on :attr:`edge.segmenter.Detections.crop_embeddings` the first time
    a text prompt is applied to the detections; any later text prompt with the same encoder,
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
        step = int(getattr(encoder, "max_batch", None) or len(keep))
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
        candidates: (C,) detection indices of the text candidates (area > 100 px).
        pooled: (C, D) float32 L2-normalised mask-pooled dense embeddings, one per candidate.
        crops: Detection index -> (D,) crop embedding, for the candidates encoded so far.
    """

    encoder: object
    crop: str
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
) -> list[TextMatch]:
    """For each text, its best mask among the ``size`` best by the frame's dense map.

    Every non-empty detection with area > 100 px is a candidate. The dense map (one image-tower
    pass over the frame) and each candidate's pooled embedding are computed once per frame;
    each text's shortlist is then encoded as crops (:func:`_text_crop`, only the crops not
    encoded for an earlier text) and the best crop similarity wins, as in
    :func:`text_matches`. The probability is the softmax over the shortlist.

    Args:
        dets: Detections of one frame (its ``dense_text`` caches this frame's state).
        image_bgr: (H, W, 3) uint8 source image.
        encoder: Encoder with a dense map (``encoder.has_dense``).
        text_feats: (T, D) L2-normalised text embeddings.
        size: Crops encoded per text (:data:`edge.prefilter.DENSE_SHORTLIST`).
        crop: ``"reference"`` or ``"official"``.

    Returns:
        One :class:`TextMatch` per text; ``index`` is a detection index (``-1``: no candidate).
    """
    state = dets.dense_text
    if state is None or state.encoder is not encoder or state.crop != crop:
        kept = np.asarray(dets.nonempty(), dtype=np.intp)
        masks = dets.to_masks(kept)
        rows = np.flatnonzero(masks.area > TEXT_MIN_AREA)
        dense = encoder.encode_dense(np.ascontiguousarray(image_bgr[:, :, ::-1]))
        state = DenseText(encoder, crop, kept[rows], mask_embeddings(masks.crops, rows, dense))
        dets.dense_text = state
    n = len(state.candidates)
    if n == 0:
        return [TextMatch(-1, float("nan"), float("nan"), 0) for _ in text_feats]
    picks = shortlist(text_feats @ state.pooled.T, state.candidates, size)
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
    order = np.argsort(-(text_feats @ state.pooled.T), axis=1, kind="stable")[:, :size]
    out = []
    for t, rows in enumerate(order):
        det_ids = state.candidates[rows]
        feats = np.stack([state.crops[int(i)] for i in det_ids])
        sims = feats @ text_feats[t]
        logits = sims.astype(np.float64) * scale
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        j = int(np.argmax(sims))
        out.append(TextMatch(int(det_ids[j]), float(sims[j]), float(probs[j]), len(det_ids)))
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
    return emb.best_matches(text_feats, float(getattr(encoder, "logit_scale", 100.0)))


@dataclass
class Selection:
    """Outcome of prompt selection on lazily assembled detections.

    Attributes:
        prompt_index: Candidate (post-NMS detection) index -> index of the first prompt that
            selected it.
        merged: ``(crop, confidence, prompt index)`` of the merged masks of ``official`` point
            prompts, in prompt order.
        text: Candidate index -> ``(similarity, probability)`` of the text prompt that
            selected it.
        text_scores: Per text prompt (by prompt index): its best match as JSON
            (``text``, ``similarity``, ``probability``, ``candidates``, ``threshold``,
            ``selected``), also when it fell below the threshold.
        notes: Why a prompt selected nothing (or only by a fallback rule), one line each.
    """

    prompt_index: dict[int, int] = field(default_factory=dict)
    merged: list[tuple[MaskCrop, float, int]] = field(default_factory=list)
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


def select_points(dets: Detections, p: PointPrompt) -> list[int] | tuple[MaskCrop, float] | None:
    """Candidate indices selected by a point prompt (``official``: the merged mask or None)."""
    if len(dets) == 0:
        return [] if p.mode != "official" else None
    hits, labels = _point_hits(dets, p)
    if p.mode == "official":
        return _official_merge(dets, hits, labels)
    sel = np.flatnonzero(_reference_point_rule(hits, labels))
    if p.mode == "reference":
        return [int(i) for i in sel]
    # "best": the smallest non-empty area, first index on ties. Visit candidates by increasing
    # lower bound of their area and stop once that bound exceeds the best exact area.
    lower = {int(i): _sign_bounds(dets, int(i)).area_bounds()[0] for i in sel}
    best, best_area = -1, -1
    for i in sorted(lower, key=lambda j: (lower[j], j)):
        if best >= 0 and (lower[i] > best_area or (lower[i] == best_area and i > best)):
            break
        a = dets.area(i)
        if a > 0 and (best < 0 or a < best_area or (a == best_area and i < best)):
            best, best_area = i, a
    return [best] if best >= 0 else []


def _official_merge(
    dets: Detections, hits: NDArray[np.bool_], labels: NDArray[np.int64]
) -> tuple[MaskCrop, float] | None:
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
    return crop, conf


def select_boxes(dets: Detections, p: BoxPrompt) -> list[int]:
    """Candidate indices selected by a box prompt (one winner per box, deduplicated, sorted)."""
    winners: set[int] = set()
    for b in p.xyxy:
        w = _best_box_match(dets, _int_box(b, dets.source_hw))
        if w is not None:
            winners.add(w)
    return sorted(winners)


def _taps_in_use(taps: AxisTaps) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Tap indices with the zero-weight padding taps pointing at tap 0 (always weighted), and
    the run id per output row/column (neighbours with identical taps share a run)."""
    index = np.where(taps.weight != 0, taps.index, taps.index[:, :1])
    change = np.ones(len(index), dtype=bool)
    change[1:] = (index[1:] != index[:-1]).any(axis=1)
    return index, np.cumsum(change) - 1


class _SignBounds:
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
        row_taps: tuple[NDArray[np.int64], NDArray[np.int64]],
        col_taps: tuple[NDArray[np.int64], NDArray[np.int64]],
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
        pmax = dets.memo.get("protos_absmax")
        if pmax is None:
            pmax = dets.memo["protos_absmax"] = float(np.abs(dets.protos).max())
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


def _sign_bounds(dets: Detections, i: int) -> _SignBounds:
    memo = dets.memo.setdefault("sign_bounds", {})
    sb = memo.get(i)
    if sb is None:
        runs = dets.memo.get("taps_in_use")
        if runs is None:
            assert dets.resampler is not None
            rows, cols = dets.resampler.rows, dets.resampler.cols
            runs = dets.memo["taps_in_use"] = (_taps_in_use(rows), _taps_in_use(cols))
        sb = memo[i] = _SignBounds(dets, i, *runs)
    return sb


def _best_box_match(dets: Detections, box: NDArray[np.int64]) -> int | None:
    """The reference's float32 ``argmax(IoU)`` over non-empty masks, assembling as few as
    possible.

    Two upper bounds, both rigorous: ``|box ∩ roi| / |box|`` (geometry only) and
    ``(|box ∩ roi| - certainly-background pixels in the box) / (|box| + certainly-foreground
    pixels outside the box)`` (:class:`_SignBounds`). Candidates are assembled in decreasing order
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
    # with _SignBounds (cheap), a popped refined bound gets the exact IoU (assembly).
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
            sb = _sign_bounds(dets, i)
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


def _describe(p: Prompt) -> str:
    """A short human name of a prompt for messages."""
    if isinstance(p, PointPrompt):
        pts = ", ".join(
            f"({_num(x)}, {_num(y)}){'' if lab == 1 else ' negative'}"
            for (x, y), lab in zip(p.points.tolist(), p.labels, strict=True)
        )
        return f"point {pts}"
    if isinstance(p, BoxPrompt):
        return "box " + ", ".join(str([_num(v) for v in b]) for b in p.xyxy.tolist())
    return f"text {p.text!r}"


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


def _use_dense(encoder: TextEncoder, prefilter: str) -> bool:
    """Whether text candidates go through the dense prefilter (see :data:`TEXT_PREFILTERS`)."""
    if prefilter not in TEXT_PREFILTERS:
        raise InputError(
            f"text_prefilter: expected one of {list(TEXT_PREFILTERS)}, got {prefilter!r}"
        )
    has = bool(getattr(encoder, "has_dense", False))
    if prefilter == "dense" and not has:
        raise BundleError(
            "text_prefilter 'dense': this bundle's CLIP has no dense image encoder (conv towers "
            "such as MobileCLIP have one; re-export with a current fastsam-export), use 'score'"
        )
    return has and prefilter != "score"


def _score_text_matches(
    dets: Detections,
    image_bgr: NDArray[np.uint8],
    encoder: TextEncoder,
    text_feats: NDArray[np.float32],
    top_k: int | None,
    crop: str,
) -> list[TextMatch]:
    """Best mask per text among the ``top_k`` candidates by score (detection indices)."""
    emb = dets.crop_embeddings
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
        dets.crop_embeddings = emb
    return emb.best_matches(text_feats, float(getattr(encoder, "logit_scale", 100.0)))


def select(
    dets: Detections,
    prompts: Sequence[Prompt],
    image_bgr: NDArray[np.uint8] | None = None,
    encoder: TextEncoder | None = None,
    text_top_k: int | None = TEXT_TOP_K,
    text_crop: str = "reference",
    text_threshold: float | None = None,
    text_prefilter: str = "auto",
    text_shortlist: int = DENSE_SHORTLIST,
) -> Selection:
    """Apply validated prompts to lazily assembled detections.

    Args:
        dets: Detections of one frame (stage (a) of the post-processing).
        prompts: Prompts, already validated against the frame.
        image_bgr: Source image (text prompts only).
        encoder: Text/image encoder (text prompts only).
        text_top_k: Candidate cap of text prompts.
        text_crop: Crop style of text prompts.
        text_threshold: Default minimum similarity of text prompts whose own ``threshold`` is
            ``None`` (``None``: the best mask is always selected, as the reference).
        text_prefilter: How text candidates are narrowed (:data:`TEXT_PREFILTERS`): ``"dense"``
            encodes the ``text_shortlist`` best by the dense map (:func:`dense_text_matches`),
            ``"score"`` the ``text_top_k`` best by score, ``"auto"`` dense where available.
        text_shortlist: Crops encoded per text with the dense prefilter.

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
                out.notes.append(f"{_describe(p)}: selected nothing: no mask in this frame")
            for b in p.xyxy:
                ib = _int_box(b, dets.source_hw)
                if chosen and not any(_box_overlaps(dets, i, ib) for i in chosen):
                    out.notes.append(
                        f"box {[_num(v) for v in b]}: overlaps no mask (IoU 0); the reference "
                        "rule returned the first mask anyway"
                    )
        elif isinstance(p, PointPrompt):
            chosen = select_points(dets, p)
            if isinstance(chosen, tuple):
                out.merged.append((chosen[0], chosen[1], k))
            elif chosen:
                mark(chosen, k)
            else:
                out.notes.append(_point_note(dets, p, _describe(p)))
    if text_ids and not len(dets):
        out.notes += [
            f"{_describe(prompts[k])}: selected nothing: no mask in this frame" for k in text_ids
        ]
    if text_ids and len(dets):
        if encoder is None or image_bgr is None:
            raise InputError("text: a text prompt needs the image and a CLIP encoder")
        texts = [prompts[k].text for k in text_ids]  # type: ignore[union-attr]
        # text first: an encoder that loads its sessions on demand (ClipEncoder keep_text=False)
        # then never holds the text and image sessions at once
        text_feats = np.asarray(encoder.encode_text(texts), dtype=np.float32)
        if _use_dense(encoder, text_prefilter):
            assert isinstance(encoder, CachedTextEncoder)
            matches = dense_text_matches(
                dets, image_bgr, encoder, text_feats, text_shortlist, text_crop
            )
        else:
            matches = _score_text_matches(
                dets, image_bgr, encoder, text_feats, text_top_k, text_crop
            )
        for k, m in zip(text_ids, matches, strict=True):
            p = prompts[k]
            assert isinstance(p, TextPrompt)
            desc = _describe(p)
            if m.index < 0:
                out.notes.append(
                    f"{desc}: selected nothing: no mask larger than {TEXT_MIN_AREA} px"
                )
                continue
            th = p.threshold if p.threshold is not None else text_threshold
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
            [result.confidence, np.array([c for _, c, _ in sel.merged], dtype=np.float32)]
        ),
        crops=(*result.crops, *(c for c, _, _ in sel.merged)),
        image_hw=result.image_hw,
        data={
            key: np.concatenate(
                [
                    values,
                    np.array([k for *_, k in sel.merged], np.int64)
                    if key == "prompt_index"
                    else np.full(len(sel.merged), np.nan),
                ]
            )
            for key, values in result.data.items()
        },
    )

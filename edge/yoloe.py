"""YOLOE's open vocabulary in numpy: the text adapter, per-anchor scoring and both decodes.

A YOLOE bundle's detector (``fastsam.fp32.onnx`` / ``fastsam.int8.onnx``, written by
``fastsam-export`` from a YOLOE checkpoint) knows no words. It has one input, ``images``, and
three outputs:

* ``output0``: (1, 4 + nm, N) boxes in input pixels (``xywh`` for the v8/11 heads, ``xyxy``
  for YOLOE-26's end-to-end head, as ``bundle.json``'s ``yoloe.box_format`` says) and nm raw
  mask coefficients per anchor;
* ``embeddings``: (1, D, N) each anchor's raw embedding (the head's embedding branch, before
  the contrastive head's batch norm);
* ``protos``: (1, nm, H_in / 4, W_in / 4) prototype masks, as FastSAM's.

The words live here, in float32 numpy, so a new word never needs a new export and the int8
graph never quantizes the scoring:

1. :meth:`YoloeHead.adapt`: raw text embeddings (the text tower's L2-normalised output) ->
   the head's text adapter (a residual SwiGLU MLP, ``reprta``) -> L2-normalised prompts;
2. :meth:`YoloeHead.class_weights`: each scale's contrastive head (batch norm, ``logit_scale``,
   ``bias``) folded into a (D, K) matrix and a (K,) offset: ``BN(x) . w * e^s + b`` is linear in
   ``x``, so ``x . (g / sigma * w) e^s + ((beta - mu g / sigma) . w) e^s + b``;
3. :func:`score_anchors`: (N, K) logits = embeddings^T @ weights, per scale;
4. :func:`decode_nms` (v8/11: best word per anchor, class-aware NMS as ultralytics'
   ``non_max_suppression``) or :func:`decode_topk` (YOLOE-26: the one-to-one head's top-k,
   no NMS).

The mask assembly afterwards is FastSAM's (:mod:`edge.postprocess`), without the full-box step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.bundle import YoloeSection
from edge.errors import BundleError, InputError
from edge.postprocess import MAX_NMS, Candidates, Detections, candidates_to_detections, nms

MAX_WH = 7680
"""Per-class box offset of class-aware NMS (pixels), as ultralytics."""
E2E_MAX_DET = 300
"""Anchors the end-to-end head keeps before the score threshold (ultralytics' head max_det)."""
HEAD_KEYS = ("w12", "b12", "w3", "b3", "bn_scale", "bn_shift", "logit_scale", "bias")


def l2_normalize(x: NDArray[np.float32], eps: float = 1e-12) -> NDArray[np.float32]:
    """Rows of ``x`` divided by their L2 norm (at least ``eps``), as ``F.normalize``.

    Args:
        x: (K, D) float32.

    Returns:
        (K, D) float32.
    """
    norm = np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(eps))
    return (x / norm).astype(np.float32)


def _silu(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return (x / (np.float32(1) + np.exp(-x))).astype(np.float32)


@dataclass(frozen=True)
class YoloeHead:
    """The text side of a YOLOE head: its text adapter and folded contrastive heads.

    Attributes:
        w12: (2H, D) float32 first SwiGLU projection (``reprta.m.w12``).
        b12: (2H,) float32.
        w3: (D, H) float32 output projection (``reprta.m.w3``).
        b3: (D,) float32.
        bn_scale: (S, D) float32 ``gamma / sqrt(var + eps)`` of each scale's contrastive BN.
        bn_shift: (S, D) float32 ``beta - mean * bn_scale``.
        logit_scale: (S,) float32 raw ``logit_scale`` (the head multiplies by its exp).
        bias: (S,) float32 contrastive bias.
    """

    w12: NDArray[np.float32]
    b12: NDArray[np.float32]
    w3: NDArray[np.float32]
    b3: NDArray[np.float32]
    bn_scale: NDArray[np.float32]
    bn_shift: NDArray[np.float32]
    logit_scale: NDArray[np.float32]
    bias: NDArray[np.float32]

    @property
    def embed_dim(self) -> int:
        """D, the embedding size."""
        return int(self.w3.shape[0])

    @property
    def num_scales(self) -> int:
        """S, the detection scales (3)."""
        return int(self.bn_scale.shape[0])

    @classmethod
    def load(cls, path: str | Path) -> YoloeHead:
        """Read the head's ``.npz`` (written by ``fastsam-export``).

        Raises:
            BundleError: A missing key or inconsistent shapes.
        """
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k], dtype=np.float32) for k in HEAD_KEYS}
        except (OSError, KeyError, ValueError) as exc:
            raise BundleError(f"yoloe head: cannot read {str(path)!r}: {exc}") from exc
        head = cls(**arrays)
        head.check()
        return head

    def check(self) -> None:
        """Check the shapes agree.

        Raises:
            BundleError: They do not.
        """
        d = self.w3.shape[0] if self.w3.ndim == 2 else -1
        hidden = self.w3.shape[1] if self.w3.ndim == 2 else -1
        s = self.bn_scale.shape[0] if self.bn_scale.ndim == 2 else -1
        ok = (
            d > 0
            and self.w12.shape == (2 * hidden, d)
            and self.b12.shape == (2 * hidden,)
            and self.b3.shape == (d,)
            and self.bn_scale.shape == (s, d)
            and self.bn_shift.shape == (s, d)
            and self.logit_scale.shape == (s,)
            and self.bias.shape == (s,)
        )
        if not ok:
            shapes = {k: getattr(self, k).shape for k in HEAD_KEYS}
            raise BundleError(f"yoloe head: inconsistent array shapes {shapes}")

    def save(self, path: str | Path) -> None:
        """Write the head as an uncompressed ``.npz``."""
        np.savez(Path(path), **{k: getattr(self, k) for k in HEAD_KEYS})

    def adapt(self, raw: NDArray[np.float32]) -> NDArray[np.float32]:
        """The head's prompt embeddings from raw text embeddings (ultralytics ``get_tpe``).

        Args:
            raw: (K, D) float32 text-model outputs (``get_text_pe(without_reprta=True)``).

        Returns:
            (K, D) float32 ``normalize(raw + w3(silu(a) * b))``, ``a, b = split(w12 raw)``.
        """
        raw = np.asarray(raw, dtype=np.float32)
        x12 = raw @ self.w12.T + self.b12
        hidden = x12.shape[-1] // 2
        mid = _silu(x12[:, :hidden]) * x12[:, hidden:]
        return l2_normalize(raw + mid @ self.w3.T + self.b3)

    def class_weights(
        self, prompts: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Each scale's contrastive head folded with the prompts.

        Args:
            prompts: (K, D) float32 adapted prompts (:meth:`adapt`).

        Returns:
            ``weights`` (S, D, K) and ``offsets`` (S, K), float32, such that a scale-``s``
            anchor embedding ``x`` (D,) scores ``x @ weights[s] + offsets[s]`` (logits).
        """
        w = l2_normalize(np.asarray(prompts, dtype=np.float32))  # the head normalises again
        scale = np.exp(self.logit_scale.astype(np.float64)).astype(np.float32)  # (S,)
        weights = (self.bn_scale[:, :, None] * w.T[None]) * scale[:, None, None]
        offsets = (self.bn_shift @ w.T) * scale[:, None] + self.bias[:, None]
        return weights.astype(np.float32), offsets.astype(np.float32)


def scale_sizes(input_hw: tuple[int, int], strides: tuple[int, ...]) -> list[int]:
    """Anchors per scale for an input size (``ceil`` of the size over each stride).

    Args:
        input_hw: (height, width) of the network input.
        strides: The head's strides, e.g. (8, 16, 32).

    Returns:
        One anchor count per scale; they sum to N.
    """
    h, w = input_hw
    return [(-(-h // s)) * (-(-w // s)) for s in strides]


def score_anchors(
    embeddings: NDArray[np.float32],
    sizes: list[int],
    weights: NDArray[np.float32],
    offsets: NDArray[np.float32],
) -> NDArray[np.float32]:
    """Word logits of every anchor.

    Args:
        embeddings: (1, D, N) or (D, N) float32 anchor embeddings (the detector's output).
        sizes: Anchors per scale (:func:`scale_sizes`), summing to N.
        weights: (S, D, K) folded weights (:meth:`YoloeHead.class_weights`).
        offsets: (S, K) folded offsets.

    Returns:
        (N, K) float32 logits (the sigmoid is the reference's score).

    Raises:
        BundleError: The sizes do not match the embeddings.
    """
    emb = embeddings[0] if embeddings.ndim == 3 else embeddings
    if sum(sizes) != emb.shape[1] or len(sizes) != weights.shape[0]:
        raise BundleError(
            f"yoloe: {emb.shape[1]} anchors from the detector, expected {sum(sizes)} "
            f"({sizes}) over {weights.shape[0]} scales"
        )
    out = np.empty((emb.shape[1], weights.shape[2]), dtype=np.float32)
    start = 0
    for s, n in enumerate(sizes):
        out[start : start + n] = emb[:, start : start + n].T @ weights[s] + offsets[s]
        start += n
    return out


def sigmoid(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Elementwise logistic function, float32."""
    return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)


@dataclass(frozen=True)
class LabelledCandidates:
    """Decoded detections with their word: :class:`~edge.postprocess.Candidates` plus labels.

    Attributes:
        candidates: Boxes (xyxy, input pixels), scores, coefficients; score-descending.
        class_id: (M,) int64 index of each detection's word in the vocabulary.
    """

    candidates: Candidates
    class_id: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.candidates)


def _xyxy(boxes: NDArray[np.float32], box_format: str) -> NDArray[np.float32]:
    """(M, 4) boxes as xyxy from ``xywh`` (centre, size) or ``xyxy``."""
    if box_format == "xyxy":
        return np.ascontiguousarray(boxes, dtype=np.float32)
    xy, half = boxes[:, 0:2], boxes[:, 2:4] / np.float32(2)
    return np.concatenate([xy - half, xy + half], axis=1).astype(np.float32)


def decode_nms(
    output0: NDArray[np.float32],
    logits: NDArray[np.float32],
    conf: float,
    iou: float,
    max_det: int,
    box_format: str = "xywh",
    agnostic: bool = True,
) -> LabelledCandidates:
    """v8/11 heads: each anchor's best word, ``score > conf``, greedy NMS.

    As ultralytics' ``non_max_suppression`` with ``multi_label=False``. ``agnostic`` (the YOLOE
    predictor's default, ``agnostic_nms=True``): any two boxes may suppress each other;
    otherwise boxes of different words never do (offset by ``word * 7680`` px).

    Args:
        output0: (1, 4 + nm, N) or (4 + nm, N) boxes and coefficients.
        logits: (N, K) word logits (:func:`score_anchors`).
        conf: Strict score threshold.
        iou: NMS IoU threshold.
        max_det: Most detections kept.
        box_format: ``xywh`` or ``xyxy`` rows 0-3 of ``output0``.
        agnostic: Class-agnostic NMS.

    Returns:
        The kept detections, score-descending.
    """
    pred = output0[0] if output0.ndim == 3 else output0
    if logits.shape[1] == 0:
        keep = np.zeros(0, dtype=np.intp)
        best, score = np.zeros(0, np.int64), np.zeros(0, np.float32)
    else:
        best_logit = logits.max(axis=1)
        keep = np.flatnonzero(sigmoid(best_logit) > np.float32(conf))
        sub = logits[keep]
        best = sub.argmax(axis=1).astype(np.int64)
        score = sigmoid(sub[np.arange(len(keep)), best])
    rows = pred[:, keep].T
    xyxy = _xyxy(rows[:, :4], box_format)
    order = np.argsort(-score, kind="stable")[:MAX_NMS]
    xyxy, score, best, rows = xyxy[order], score[order], best[order], rows[order]
    offset = (best.astype(np.float32) * np.float32(0 if agnostic else MAX_WH))[:, None]
    kept = nms(xyxy + offset, score, iou, max_det)
    cand = Candidates(
        xyxy=np.ascontiguousarray(xyxy[kept]),
        confidence=np.ascontiguousarray(score[kept], dtype=np.float32),
        coefficients=np.ascontiguousarray(rows[kept, 4:], dtype=np.float32),
    )
    return LabelledCandidates(cand, best[kept])


def _topk(values: NDArray[np.float32], k: int) -> NDArray[np.intp]:
    """Indices of the ``k`` largest values, largest first (ties: lower index first)."""
    if k >= len(values):
        return np.argsort(-values, kind="stable")
    part = np.argpartition(-values, k - 1)[:k]
    return part[np.argsort(-values[part], kind="stable")]


def decode_topk(
    output0: NDArray[np.float32],
    logits: NDArray[np.float32],
    conf: float,
    max_det: int,
    box_format: str = "xyxy",
    head_max_det: int = E2E_MAX_DET,
    agnostic: bool = True,
) -> LabelledCandidates:
    """YOLOE-26's end-to-end head: no NMS, the best anchors (or (anchor, word) pairs).

    As the reference head's top-k, then ``score > conf`` and the first ``max_det``.
    ``agnostic`` (the YOLOE predictor's default): each anchor's best word, the
    ``head_max_det`` best anchors. Otherwise: the ``head_max_det`` anchors with the highest
    best-word score, then the ``head_max_det`` highest (anchor, word) scores among them (an
    anchor may then appear once per word).

    Args:
        output0: (1, 4 + nm, N) or (4 + nm, N) boxes and coefficients.
        logits: (N, K) word logits.
        conf: Strict score threshold.
        max_det: Most detections kept.
        box_format: Format of rows 0-3 (``xyxy`` for the end-to-end head).
        head_max_det: The head's own top-k (300).
        agnostic: One word per anchor.

    Returns:
        The kept detections, score-descending.
    """
    pred = output0[0] if output0.ndim == 3 else output0
    n, k_words = logits.shape
    if n == 0 or k_words == 0:
        idx = np.zeros(0, np.intp)
        words, score = np.zeros(0, np.int64), np.zeros(0, np.float32)
    else:
        scores = sigmoid(logits)
        k = min(head_max_det, n)
        anchors = _topk(scores.max(axis=1), k)
        if agnostic:
            idx = anchors
            words = scores[anchors].argmax(axis=1).astype(np.int64)
            score = scores[anchors, words]
        else:
            flat = scores[anchors].reshape(-1)
            top = _topk(flat, k)
            score = flat[top]
            words = (top % k_words).astype(np.int64)
            idx = anchors[top // k_words]
        keep = np.flatnonzero(score > np.float32(conf))[: max(max_det, 0)]
        idx, words, score = idx[keep], words[keep], score[keep]
    rows = pred[:, idx].T
    cand = Candidates(
        xyxy=_xyxy(rows[:, :4], box_format),
        confidence=np.ascontiguousarray(score, dtype=np.float32),
        coefficients=np.ascontiguousarray(rows[:, 4:], dtype=np.float32),
    )
    return LabelledCandidates(cand, words)


@dataclass(frozen=True)
class Vocabulary:
    """The words a YOLOE segmenter scores, with everything derived from them once.

    Attributes:
        names: The K words or phrases.
        raw: (K, D) float32 text-model embeddings (before the text adapter).
        weights: (S, D, K) folded contrastive weights (:meth:`YoloeHead.class_weights`).
        offsets: (S, K) folded offsets.
    """

    names: tuple[str, ...]
    raw: NDArray[np.float32]
    weights: NDArray[np.float32]
    offsets: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def build(cls, head: YoloeHead, names: list[str], raw: NDArray[np.float32]) -> Vocabulary:
        """Adapt and fold ``raw`` (K, D) for ``names`` (checked by :func:`check_vocabulary`)."""
        weights, offsets = head.class_weights(head.adapt(raw))
        return cls(tuple(names), np.asarray(raw, np.float32), weights, offsets)


def vocabulary_detections(
    outputs: Sequence[NDArray[np.float32]],
    input_hw: tuple[int, int],
    source_hw: tuple[int, int],
    section: YoloeSection,
    vocab: Vocabulary,
    thresholds: tuple[float, float, int],
) -> Detections:
    """A YOLOE frame's detections of ``vocab``: score every anchor, decode, assemble masks.

    The runtime's frames (:class:`edge.segmenter.Segmenter`) and the export's int8 agreement
    both come here, so what int8 is verified on is what a frame computes.

    Args:
        outputs: The detector's ``output0`` (1, 4 + nm, N), ``embeddings`` (1, D, N) and
            ``protos`` (1, nm, Hp, Wp).
        input_hw: Letterboxed input (H_in, W_in).
        source_hw: Source image (H, W).
        section: The bundle's ``yoloe`` section (strides, head kind, box format).
        vocab: The words scored.
        thresholds: ``(conf, iou, max_det)`` (iou unused by the end-to-end head).

    Returns:
        Detections with ``class_id`` (indices into ``vocab.names``) and ``names`` set.
    """
    output0, embeddings, protos = outputs
    conf, iou, max_det = thresholds
    logits = score_anchors(
        embeddings, scale_sizes(input_hw, section.strides), vocab.weights, vocab.offsets
    )
    if section.end2end:
        lab = decode_topk(output0, logits, conf, max_det, section.box_format)
    else:
        lab = decode_nms(output0, logits, conf, iou, max_det, section.box_format)
    dets = candidates_to_detections(lab.candidates, protos, input_hw, source_hw)
    dets.class_id = lab.class_id
    dets.names = vocab.names
    dets.full_box = False
    return dets


def check_names(names: object) -> list[str]:
    """A vocabulary's words: a non-empty sequence of distinct, non-blank strings, stripped.

    Raises:
        InputError: Anything else (naming the offending entry).
    """
    if isinstance(names, str) or not isinstance(names, list | tuple):
        raise InputError(
            f"vocabulary: expected a list of words, got {type(names).__name__} {names!r}"
        )
    out: list[str] = []
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"vocabulary[{i}]: expected a non-blank string, got {name!r}")
        out.append(name.strip())
    if not out:
        raise InputError("vocabulary: expected at least one word")
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise InputError(f"vocabulary: repeated word(s) {dup}")
    return out


def check_embeddings(embeddings: object, k: int, dim: int) -> NDArray[np.float32]:
    """Caller-given raw embeddings: a finite (k, dim) float array.

    Raises:
        InputError: Wrong type, shape or non-finite values.
    """
    try:
        arr = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"embeddings: expected a ({k}, {dim}) float array: {exc}") from None
    if arr.shape != (k, dim):
        raise InputError(f"embeddings: expected shape ({k}, {dim}), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError("embeddings: values must be finite")
    return arr


class OpenVocabFrame:
    """A YOLOE frame's raw detector outputs, kept on its ``Detections`` (``Detections.cache``)
    so a text prompt can re-score them with new words without running the detector again.

    Costs ``4 * D * N`` bytes for the embeddings (17 MB at 640 px, D = 512): counted in
    ``Detections.nbytes``, and kept by ``release_masks`` (it is not derived from masks).
    """

    def __init__(self) -> None:
        self.outputs: list[NDArray[np.float32]] | None = None
        self.input_hw: tuple[int, int] | None = None

    def keep(self, outputs: Sequence[NDArray[np.float32]], input_hw: tuple[int, int]) -> None:
        """Store one frame's ``output0``, ``embeddings`` and ``protos``."""
        self.outputs = list(outputs)
        self.input_hw = input_hw

    @property
    def nbytes(self) -> int:
        """Memory held."""
        return sum(int(a.nbytes) for a in self.outputs or [])

    def release(self) -> None:
        """Nothing to drop: the outputs are not derived from assembled masks."""

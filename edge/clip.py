"""CLIP image and text encoders for text prompts (numpy + onnxruntime; no torch, no PIL).

The export stage (``export/clip.py``) writes two ONNX encoders with L2 normalisation inside
the graph, the tokenizer's BPE file and a ``clip`` section in ``bundle.json``::

    "clip": {
      "model": "ViT-B-32-quickgelu", "pretrained": {...}, "embed_dim": 512,
      "image": {"size": 224, "mean": [...], "std": [...], "interpolation": "bicubic",
                "resize_mode": "shortest", "crop": "center", "input": "pixels",
                "output": "embeddings", "max_batch": 8},
      "text": {"input": "tokens", "input_dtype": "int32", "output": "embeddings"},
      "tokenizer": {"type": "open_clip.SimpleTokenizer",
                    "bpe": "clip-bpe_simple_vocab_16e6.txt.gz", "context_length": 77,
                    "sot_id": 49406, "eot_id": 49407, "pad_id": 0, ...},
      "files": {"image": {"fp32": ..., "int8": ...}, "text": {"fp32": ..., "int8": ...}},
      "precisions": ["fp32", "int8"], "default_precision": "fp32", "verify": {...}, ...
    }

Image preprocessing reproduces open_clip's validation transform on a PIL image (torchvision
``Resize(S)`` of the shorter side with PIL's antialiased bicubic, ``CenterCrop(S)``, ``/255``,
mean/std) **exactly**: :func:`pil_resize` is a numpy port of Pillow's ``ImagingResample``
(same filter, same coefficient rounding to 22-bit fixed point, same horizontal-then-vertical
order with uint8 rounding in between). Only the output pixels that survive the centre crop are
computed, so long thin crops cost no more than square ones.

Typical use (text prompts)::

    enc = ClipEncoder.load(bundle_dir, read_manifest(bundle_dir))
    t = enc.encode_text(["a dog"])               # (1, D), L2-normalised
    v = enc.encode_images(crops_rgb)             # (N, D), L2-normalised, one session call
    best = int(np.argmax(v @ t[0]))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.bundle import (
    DEFAULT_LOGIT_SCALE,
    MAX_CLIP_BATCH,
    NO_CLIP_HINT,
    BundleManifest,
    ClipSection,
    read_manifest,
    verify_file,
)
from edge.errors import BundleError, InputError
from edge.session import create_session, release_memory, run_transient
from edge.tokenizer import CONTEXT_LENGTH, ClipTokenizer

RESIZE_ORDERS = ("pillow13", "horizontal_first")
_PRECISION_BITS = 22  # Pillow's fixed-point precision for 8-bit images (32 - 8 - 2)


# --------------------------------------------------------------------------------------------
# Pillow-exact resampling


def _bicubic(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pillow's bicubic filter (a = -0.5), same operation order as ``Resample.c``."""
    a = -0.5
    x = np.abs(x)
    out = np.zeros_like(x)
    m1 = x < 1.0
    m2 = (x >= 1.0) & (x < 2.0)
    x1, x2 = x[m1], x[m2]
    out[m1] = ((a + 2.0) * x1 - (a + 3.0)) * x1 * x1 + 1
    out[m2] = (((x2 - 5) * x2 + 8) * x2 - 4) * a
    return out


def _bilinear(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pillow's bilinear (triangle) filter."""
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


_FILTERS: dict[str, tuple[Callable[[NDArray[np.float64]], NDArray[np.float64]], float]] = {
    "bicubic": (_bicubic, 2.0),
    "bilinear": (_bilinear, 1.0),
}


def _coeffs(
    in_size: int, out_size: int, interpolation: str
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int32]]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc``.

    Returns:
        xmin (out,), xlen (out,) and fixed-point weights (out, ksize); weights past xlen are 0.
    """
    filt, base_support = _FILTERS[interpolation]
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = base_support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    ss = 1.0 / filterscale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64)
    xlen = xmax - xmin
    k = np.arange(ksize, dtype=np.int64)
    pos = (k[None, :] + xmin[:, None]).astype(np.float64)
    w = filt((pos - center[:, None] + 0.5) * ss)
    w[k[None, :] >= xlen[:, None]] = 0.0
    ww = np.zeros(out_size, dtype=np.float64)
    for j in range(ksize):  # sequential sum, as the C loop (np.sum is pairwise)
        ww += w[:, j]
    nz = ww != 0.0
    w[nz] /= ww[nz, None]
    scaled = w * float(1 << _PRECISION_BITS)
    # |sum| <= 255 * sum(|w|) * 2**22 < 2**31: int32 accumulation is exact, as in Pillow
    fixed = np.where(w < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled)).astype(np.int32)
    return xmin, xlen, fixed


def _resample_axis(
    img: NDArray[np.uint8],
    axis: int,
    in_size: int,
    out_size: int,
    keep: slice,
    interpolation: str,
    offset: int = 0,
) -> NDArray[np.uint8]:
    """One Pillow resampling pass along ``axis`` (1 = horizontal, 0 = vertical).

    Only outputs ``keep`` (a slice of range(out_size)) are computed; each output depends only on
    its own coefficients, so the values equal those of the full pass. ``img`` may be a band of
    the input that starts at input index ``offset`` along ``axis`` and covers every input index
    the kept outputs read.
    """
    xmin, _, fixed = _coeffs(in_size, out_size, interpolation)
    xmin, fixed = xmin[keep] - offset, fixed[keep]
    shape = [1, 1, 1]
    shape[axis] = len(xmin)
    acc_shape = list(img.shape)
    acc_shape[axis] = len(xmin)
    acc = np.full(acc_shape, 1 << (_PRECISION_BITS - 1), dtype=np.int32)
    last = img.shape[axis] - 1
    for j in range(fixed.shape[1]):
        idx = np.clip(xmin + j, 0, last)  # the weight is 0 wherever idx was clipped
        acc += np.take(img, idx, axis=axis) * fixed[:, j].reshape(shape)  # uint8 * int32
    return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)


def vertical_first(in_hw: tuple[int, int], out_hw: tuple[int, int], order: str) -> bool:
    """Whether Pillow runs the vertical pass first.

    Pillow <= 12 always resamples horizontally first. Pillow 13 (python-pillow/Pillow#9549)
    runs the vertical pass first when the height shrinks by more than twice as many pixels as
    the width: ``out_h < in_h and in_h - out_h > 2 * (in_w - out_w)``. Inferred from Pillow 13.0's
    output (no mismatch on ~2,000 random size pairs, including the equality boundary);
    ``tests/test_clip.py`` re-checks it against the installed Pillow.
    """
    if order == "horizontal_first":
        return False
    (in_h, in_w), (out_h, out_w) = in_hw, out_hw
    return out_h < in_h and in_h - out_h > 2 * (in_w - out_w)


def pil_resize(
    img: NDArray[np.uint8],
    size: tuple[int, int],
    interpolation: str = "bicubic",
    window: tuple[int, int, int, int] | None = None,
    order: str = "pillow13",
) -> NDArray[np.uint8]:
    """``PIL.Image.resize((w, h), BICUBIC|BILINEAR)`` of an (H, W, C) uint8 array, bit-exact.

    Two separable passes, each rounded to uint8 as in Pillow, in Pillow's order (see
    :func:`vertical_first`); a pass whose size does not change is skipped (it is the identity).

    Args:
        img: (H, W, C) uint8.
        size: Output (height, width).
        interpolation: ``"bicubic"`` or ``"bilinear"``.
        window: Optional (top, left, height, width) of the output to compute (a crop of the full
            resized image); default the whole output.
        order: ``"pillow13"`` (Pillow >= 13) or ``"horizontal_first"`` (Pillow <= 12).

    Returns:
        The resized image (or its window), uint8.
    """
    if interpolation not in _FILTERS:
        raise ValueError(f"interpolation: expected one of {list(_FILTERS)}, got {interpolation!r}")
    if order not in RESIZE_ORDERS:
        raise ValueError(f"order: expected one of {list(RESIZE_ORDERS)}, got {order!r}")
    in_h, in_w = img.shape[:2]
    out_h, out_w = size
    top, left, win_h, win_w = window if window is not None else (0, 0, out_h, out_w)
    rows, cols = slice(top, top + win_h), slice(left, left + win_w)
    passes = [(0, in_h, out_h, rows), (1, in_w, out_w, cols)]
    if not vertical_first((in_h, in_w), (out_h, out_w), order):
        passes.reverse()
    (a1, in1, out1, keep1), (a2, in2, out2, keep2) = passes
    # first pass: only the lines of the second axis that the kept second-pass outputs read
    first = keep2.start
    if out2 == in2:
        band = img[keep2] if a2 == 0 else img[:, keep2]
    else:
        lo, ln, _ = _coeffs(in2, out2, interpolation)
        first = int(lo[keep2].min())
        lines = slice(first, int((lo[keep2] + ln[keep2]).max()))
        band = img[lines] if a2 == 0 else img[:, lines]
    if out1 != in1:
        band = _resample_axis(band, a1, in1, out1, keep1, interpolation)
    else:
        band = band[keep1] if a1 == 0 else band[:, keep1]
    if out2 != in2:
        band = _resample_axis(band, a2, in2, out2, keep2, interpolation, offset=first)
    return np.ascontiguousarray(band)


def resized_shortest(h: int, w: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(size)`` output (height, width): short side ``size``, long truncated."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


@dataclass(frozen=True)
class ClipPreprocess:
    """open_clip's validation transform, from the bundle's ``clip.image`` section.

    ``resize_order`` names the Pillow generation whose pass order to reproduce (``pillow13`` or
    ``horizontal_first`` for Pillow <= 12); the export stage records the one it verified with.
    """

    size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    resize_order: str = "pillow13"

    @classmethod
    def from_section(cls, d: dict[str, Any]) -> ClipPreprocess:
        """Parse and validate ``clip.image``; unsupported modes raise :class:`BundleError`."""
        try:
            size = d["size"]
            if isinstance(size, (list, tuple)):
                if len(size) != 2 or int(size[0]) != int(size[1]):
                    raise BundleError(
                        f"bundle.json: clip.image.size {size} is not square (unsupported)"
                    )
                size = size[0]
            pre = cls(
                size=int(size),
                mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
                std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
                interpolation=str(d.get("interpolation", "bicubic")),
                resize_mode=str(d.get("resize_mode", "shortest")),
                resize_order=str(d.get("resize_order", "pillow13")),
            )
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(
                f"bundle.json: clip.image is malformed: {type(exc).__name__}: {exc}"
            ) from exc
        if len(pre.mean) != 3 or len(pre.std) != 3 or pre.size < 1:
            raise BundleError(
                f"bundle.json: clip.image needs 3 mean/std values and size >= 1: {d}"
            )
        if pre.interpolation not in _FILTERS:
            raise BundleError(
                f"bundle.json: clip.image.interpolation {pre.interpolation!r} is not supported "
                f"(supported: {list(_FILTERS)})"
            )
        if pre.resize_mode not in ("shortest", "squash"):
            raise BundleError(
                f"bundle.json: clip.image.resize_mode {pre.resize_mode!r} is not supported "
                "(supported: 'shortest' with centre crop, 'squash')"
            )
        if pre.resize_order not in RESIZE_ORDERS:
            raise BundleError(
                f"bundle.json: clip.image.resize_order {pre.resize_order!r} is not supported "
                f"(supported: {list(RESIZE_ORDERS)})"
            )
        return pre

    def __call__(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """(N, 3, S, S) float32 network input from uint8 RGB (h, w, 3) crops of any size."""
        s = self.size
        out = np.empty((len(crops), 3, s, s), dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        for i, crop in enumerate(crops):
            _check_crop(crop, i)
            h, w = crop.shape[:2]
            if self.resize_mode == "squash":
                img = pil_resize(crop, (s, s), self.interpolation, order=self.resize_order)
            else:
                nh, nw = resized_shortest(h, w, s)
                top = int(round((nh - s) / 2.0))
                left = int(round((nw - s) / 2.0))
                if (nh, nw) == (h, w):
                    img = crop[top : top + s, left : left + s]
                else:
                    img = pil_resize(
                        crop, (nh, nw), self.interpolation, (top, left, s, s), self.resize_order
                    )
            x = img.astype(np.float32) / np.float32(255.0)
            out[i] = ((x - mean) / std).transpose(2, 0, 1)
        return out


def _check_crop(crop: object, i: int) -> None:
    if not isinstance(crop, np.ndarray):
        raise InputError(f"crops[{i}]: expected a numpy array, got {type(crop).__name__}")
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise InputError(
            f"crops[{i}]: expected a uint8 RGB array of shape (h, w, 3), got {crop.dtype} "
            f"{crop.shape}"
        )
    if crop.shape[0] < 1 or crop.shape[1] < 1:
        raise InputError(f"crops[{i}]: empty crop of shape {crop.shape}")


# --------------------------------------------------------------------------------------------
# Encoders


def clip_section(manifest: BundleManifest) -> ClipSection:
    """The manifest's typed ``clip`` section, or :class:`BundleError` with the re-export hint."""
    if manifest.clip is None:
        raise BundleError(NO_CLIP_HINT)
    return manifest.clip


def _l2n(x: NDArray[np.float32]) -> NDArray[np.float32]:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class DenseMap:
    """Per-location image embedding terms of one whole frame (conv towers, ``clip.dense``).

    The tower's pooled embedding of an image is the mean of its map over all locations, so the
    mean over the cells a mask covers approximates that mask's own embedding (same tower, but
    with the frame around it as context): cheap enough to rank every mask of a frame before the
    few best are encoded as crops (:mod:`edge.prefilter`).

    Attributes:
        features: (rows, cols, D) float32, not normalised.
        scale: Dense-input pixels per frame pixel (the frame was resized by this factor).
        stride: Dense-input pixels per cell (32 for FastViT/MobileOne towers).
    """

    features: NDArray[np.float32]
    scale: float
    stride: int

    @property
    def grid_hw(self) -> tuple[int, int]:
        """(rows, cols) of the map."""
        return int(self.features.shape[0]), int(self.features.shape[1])


def check_texts(texts: object) -> None:
    """Texts to encode must be a list (or tuple) of strings.

    Raises:
        InputError: They are not.
    """
    if isinstance(texts, str) or not isinstance(texts, list | tuple):
        raise InputError(f"texts: expected a list of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"texts[{i}]: expected a string, got {type(t).__name__}")


def encode_tokens(
    session: Any, tokenizer: ClipTokenizer, texts: Sequence[str]
) -> NDArray[np.float32]:
    """Tokenize ``texts`` and run a text encoder session (input (T, ctx) int32/int64 tokens).

    Returns:
        (T, D) float32 embeddings, L2-normalised.
    """
    inp = session.get_inputs()[0]
    dtype = np.int32 if inp.type == "tensor(int32)" else np.int64
    tokens = tokenizer(list(texts)).astype(dtype)
    (emb,) = session.run(None, {inp.name: tokens})
    return _l2n(np.asarray(emb, dtype=np.float32))


@dataclass
class TextTower:
    """A text encoder on its own (YOLOE's word encoder): tokenizer + one ONNX session.

    Attributes:
        path: The ONNX file (tokens (T, ctx) -> embeddings (T, D)).
        tokenizer: open_clip-exact tokenizer.
        embed_dim: D.
        threads: Intra-op threads of its session.
        keep: Keep the session between calls (``False``: created per call, freed after it).
        session: The session while loaded.
    """

    path: Path
    tokenizer: ClipTokenizer
    embed_dim: int
    threads: int | None = None
    keep: bool = True
    session: Any = None

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """(T, D) float32 L2-normalised embeddings of ``texts`` in one session call.

        Raises:
            InputError: ``texts`` is not a list of strings.
            BundleError: The encoder's output size is not :attr:`embed_dim`.
        """
        check_texts(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        session = self.session or create_session(self.path, threads=self.threads)
        self.session = session if self.keep else None
        emb = encode_tokens(session, self.tokenizer, texts)
        if emb.shape[1] != self.embed_dim:
            raise BundleError(
                f"text encoder {str(self.path)!r}: output dim {emb.shape[1]} != {self.embed_dim}"
            )
        return emb


@dataclass
class ClipEncoder:
    """ONNX CLIP image + text encoders of a bundle, with open_clip's tokenizer and transform.

    Build with :meth:`load`. Embeddings are float32 and L2-normalised, so cosine similarity is
    ``image_emb @ text_emb.T``.

    Attributes:
        image_session: onnxruntime session of the image encoder (``pixels`` -> ``embeddings``).
        text_session: onnxruntime session of the text encoder (``tokens`` -> ``embeddings``).
        tokenizer: open_clip-exact tokenizer (``None`` with ``keep_text=False``: built with the
            text session for new texts and dropped with it, ~28 MiB of BPE tables).
        preprocess: open_clip-exact image transform.
        precision: ``fp32`` or ``int8``.
        embed_dim: Embedding size D.
        model: open_clip model name the bundle was exported from.
        logit_scale: CLIP's logit scale (100 for OpenAI weights), for probabilities.
        max_batch: Largest crop batch per image-session call (``clip.image.max_batch``, default
            :data:`edge.bundle.MAX_CLIP_BATCH`); bounds the encoder's activation memory.
        text_path: The text encoder's file (for a text session created on demand).
        keep_text: Keep the text session between :meth:`encode_text` calls. ``False`` creates
            it when a prompt needs encoding and drops it right after, and creates the image
            session only at the first image encoding, so the two are never resident together
            (with text encoded first, as ``edge.selection.select`` does): ~180 MiB less peak RSS
            with MobileCLIP2-S0 int8 in ``segment --text``, at one session load per *new*
            prompt (cached prompts cost nothing); for one-shot runs.
        image_path: The image encoder's file (for an image session created on demand).
        dense_path: The dense image encoder's file (``clip.dense``, conv towers only; ``None``:
            the bundle has none). Its session is created at the first :meth:`encode_dense`.
        dense_stride: Its input pixels per output cell.
        dense_long_side: Its default input size (longer side, pixels).
        dense_session: Its onnxruntime session (``pixels`` -> ``dense``), created on first use
            (at load unless ``keep_text=False``); it also encodes crops, so a bundle with a
            dense encoder never loads :attr:`image_session`.
        transient: CLIP's sessions are ``edge.session.create_session(transient=True)`` and give
            their activation memory back after each run (``edge.session.run_transient``;
            default ``True``), so a dense map's or a crop batch's activations do not stay
            resident between prompts; the detector keeps its arena.
    """

    image_session: Any
    text_session: Any
    tokenizer: ClipTokenizer | None
    preprocess: ClipPreprocess
    precision: str
    embed_dim: int
    model: str = ""
    logit_scale: float = DEFAULT_LOGIT_SCALE
    max_batch: int = MAX_CLIP_BATCH
    text_path: Path | None = None
    keep_text: bool = True
    image_path: Path | None = None
    dense_path: Path | None = None
    dense_stride: int = 0
    dense_long_side: int = 0
    dense_session: Any = None
    transient: bool = True
    _image_cfg: dict[str, Any] | None = None
    _text_cfg: dict[str, Any] | None = None
    _threads: int | None = None
    _tokenizer_src: tuple[Path, dict[str, Any]] | None = None
    _context_length: int = CONTEXT_LENGTH

    @classmethod
    def load(
        cls,
        bundle_dir: Path,
        manifest: BundleManifest,
        precision: str | None = None,
        threads: int | None = None,
        keep_text: bool = True,
        transient: bool = True,
    ) -> ClipEncoder:
        """Load both encoders and the tokenizer of a bundle.

        Args:
            bundle_dir: Bundle directory.
            manifest: Its parsed ``bundle.json`` (``edge.bundle.read_manifest``).
            precision: ``"fp32"`` or ``"int8"`` (default: the ``clip.default_precision``).
            threads: Intra-op threads per session (default: ``edge.session.default_threads``).
            keep_text: ``False``: the text session is created per :meth:`encode_text` call and
                dropped after it, the image session on first use (:attr:`keep_text`); both
                files are still verified here.
            transient: CLIP's sessions give their activation memory back (:attr:`transient`).

        Raises:
            BundleError: No ``clip`` section (with the re-export command), a missing, modified
                or unloadable file, an unsupported preprocessing mode, or ``ftfy``/``regex``
                not installed (names the ``text`` extra).
        """
        bundle_dir = Path(bundle_dir)
        section = clip_section(manifest)
        prec = precision or section.default_precision
        if prec not in section.precisions:
            raise BundleError(
                f"precision: CLIP precision {prec!r} is not in this bundle "
                f"(available: {list(section.precisions)})"
            )
        image_cfg, text_cfg = section.image, section.text
        preprocess = ClipPreprocess.from_section(image_cfg)
        verify_file(bundle_dir, manifest, str(section.tokenizer["bpe"]))
        # the BPE tables hold ~28 MiB of Python objects: kept only with the text session
        tokenizer = ClipTokenizer.from_manifest(bundle_dir, section.tokenizer)
        image_name, text_name = section.file("image", prec), section.file("text", prec)
        image_path = verify_file(bundle_dir, manifest, image_name)
        text_path = verify_file(bundle_dir, manifest, text_name)
        dense = section.dense
        dense_path = None if dense is None else verify_file(bundle_dir, manifest, dense.file(prec))
        # A conv tower's dense encoder computes the image encoder's function too (its mean over
        # locations is the pooled embedding): one session serves crops and frames.
        eager_image = keep_text and dense_path is None

        def session(path: Path, eager: bool) -> Any:
            return create_session(path, threads=threads, transient=transient) if eager else None

        enc = cls(
            image_session=session(image_path, eager_image),
            text_session=session(text_path, keep_text),
            tokenizer=tokenizer if keep_text else None,
            preprocess=preprocess,
            precision=prec,
            embed_dim=section.embed_dim,
            model=section.model,
            logit_scale=section.logit_scale,
            max_batch=section.max_batch,
            text_path=text_path,
            keep_text=keep_text,
            image_path=image_path,
            dense_path=dense_path,
            dense_stride=0 if dense is None else dense.stride,
            dense_long_side=0 if dense is None else dense.long_side,
            transient=transient,
            _image_cfg=dict(image_cfg),
            _text_cfg=dict(text_cfg),
            _threads=threads,
            _tokenizer_src=(bundle_dir, dict(section.tokenizer)),
            _context_length=tokenizer.context_length,
        )
        if keep_text and dense_path is not None:
            enc._dense()
        enc._check_io(image_cfg, text_cfg)
        return enc

    @classmethod
    def from_bundle(
        cls, bundle_dir: str | Path, precision: str | None = None, threads: int | None = None
    ) -> ClipEncoder:
        """:meth:`load` after reading ``bundle.json``."""
        return cls.load(Path(bundle_dir), read_manifest(bundle_dir), precision, threads)

    def _check_io(self, image_cfg: dict[str, Any] | None, text_cfg: dict[str, Any]) -> None:
        s = self.preprocess.size
        pairs = []
        if image_cfg is not None and self.image_session is not None:
            pairs.append((self.image_session, image_cfg.get("input", "pixels"), "image"))
        if self.text_session is not None:
            pairs.append((self.text_session, text_cfg.get("input", "tokens"), "text"))
        for sess, want_in, what in pairs:
            ins, outs = sess.get_inputs(), sess.get_outputs()
            if len(ins) != 1 or ins[0].name != want_in or len(outs) != 1:
                raise BundleError(
                    f"CLIP {what} encoder: expected one input {want_in!r} and one output, got "
                    f"{[i.name for i in ins]} -> {[o.name for o in outs]}"
                )
            dim = outs[0].shape[-1]
            if isinstance(dim, int) and dim != self.embed_dim:
                raise BundleError(
                    f"CLIP {what} encoder: output dim {dim} != clip.embed_dim {self.embed_dim}"
                )
        if image_cfg is not None and self.image_session is not None:
            shape = self.image_session.get_inputs()[0].shape
            if [d for d in shape[1:]] != [3, s, s]:
                raise BundleError(f"CLIP image encoder: input shape {shape} != [N, 3, {s}, {s}]")
        if self.text_session is None:
            return
        tshape = self.text_session.get_inputs()[0].shape
        if tshape[-1] != self._context_length:
            raise BundleError(
                f"CLIP text encoder: input shape {tshape} does not end in context length "
                f"{self._context_length}"
            )

    def _tokenizer(self) -> ClipTokenizer:
        """The tokenizer: :attr:`tokenizer`, or built for this call (``keep_text=False``)."""
        if self.tokenizer is not None:
            return self.tokenizer
        if self._tokenizer_src is None:
            raise BundleError("CLIP tokenizer: none loaded and no bundle to load it from")
        return ClipTokenizer.from_manifest(*self._tokenizer_src)

    def tokenize(self, texts: list[str]) -> NDArray[np.int64]:
        """(T, 77) token ids, identical to ``open_clip.get_tokenizer(model)(texts)``."""
        return self._tokenizer()(texts)

    def encode_text(self, texts: list[str]) -> NDArray[np.float32]:
        """Embed prompts.

        Args:
            texts: Prompt strings (any length; longer than 75 tokens is truncated as open_clip).

        Returns:
            (T, D) float32, L2-normalised, in one session call (wrap the encoder in
            ``edge.textmatch.CachedTextEncoder`` to cache prompts).

        Raises:
            InputError: ``texts`` is not a list of strings.
        """
        check_texts(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        if self.text_session is None:
            if self.text_path is None:
                raise BundleError("CLIP text encoder: no session and no file to create one from")
            self.text_session = create_session(
                self.text_path, threads=self._threads, transient=self.transient
            )
            self._check_io(None, self._text_cfg or {})
        try:
            return encode_tokens(self.text_session, self._tokenizer(), texts)
        finally:
            if not self.keep_text:
                self.text_session = None  # freed now: not resident while crops are encoded
                release_memory()

    def preprocess_crops(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """(N, 3, S, S) float32 network input from uint8 RGB (h, w, 3) crops of any size.

        Bit-exact with open_clip's PIL transform (see the module docstring).

        Raises:
            InputError: A crop is not a non-empty uint8 (h, w, 3) array.
        """
        if not isinstance(crops, (list, tuple)):
            raise InputError(f"crops: expected a list of arrays, got {type(crops).__name__}")
        return self.preprocess(crops)

    def encode_pixels(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """Image embeddings of preprocessed (N, 3, S, S) input, in chunks of :attr:`max_batch`.

        With a dense encoder (conv towers) the embedding is its map's mean over locations (the
        same function as the image encoder, verified at export), so only one session is loaded.
        """
        n = len(pixels)
        if n == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        if self.dense_path is not None:
            sess = self._dense()
            name = sess.get_inputs()[0].name
            pooled = [
                np.asarray(self._run(sess, {name: pixels[i : i + self.max_batch]})[0]).mean(
                    axis=(2, 3)
                )
                for i in range(0, n, self.max_batch)
            ]
            return _l2n(np.concatenate(pooled).astype(np.float32, copy=False))
        if self.image_session is None:
            if self.image_path is None:
                raise BundleError("CLIP image encoder: no session and no file to create one from")
            self.image_session = create_session(
                self.image_path, threads=self._threads, transient=self.transient
            )
            self._check_io(self._image_cfg or {}, self._text_cfg or {})
        name = self.image_session.get_inputs()[0].name
        parts = [
            self._run(self.image_session, {name: pixels[i : i + self.max_batch]})[0]
            for i in range(0, n, self.max_batch)
        ]
        return _l2n(np.concatenate(parts).astype(np.float32, copy=False))

    def encode_images(self, crops_rgb: list[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """Embed RGB crops.

        Args:
            crops_rgb: uint8 RGB (h, w, 3) crops of any size (convert OpenCV's BGR first).

        Returns:
            (N, D) float32, L2-normalised; one session call for up to :attr:`max_batch` crops.

        Raises:
            InputError: A crop is not a non-empty uint8 (h, w, 3) array.
        """
        if not isinstance(crops_rgb, (list, tuple)):
            raise InputError(f"crops: expected a list of arrays, got {type(crops_rgb).__name__}")
        if len(crops_rgb) <= self.max_batch:
            return self.encode_pixels(self.preprocess_crops(crops_rgb))
        for i, crop in enumerate(crops_rgb):  # errors name the index in the whole list
            _check_crop(crop, i)
        # network input per call only: (max_batch, 3, S, S) float32, not (N, 3, S, S)
        parts = [
            self.encode_pixels(self.preprocess_crops(list(crops_rgb[i : i + self.max_batch])))
            for i in range(0, len(crops_rgb), self.max_batch)
        ]
        return np.concatenate(parts)

    @property
    def has_dense(self) -> bool:
        """Whether the bundle has a dense image encoder (:meth:`encode_dense`)."""
        return self.dense_path is not None

    def dense_input(
        self, image_rgb: NDArray[np.uint8], long_side: int | None = None
    ) -> tuple[NDArray[np.float32], float]:
        """(1, 3, H, W) dense-encoder input of a whole frame and its scale.

        The frame is resized so that its longer side is ``long_side`` (default
        :attr:`dense_long_side`; area-averaged when shrinking), normalised with the tower's
        mean/std and padded with zeros on the bottom/right to whole cells.
        """
        if not self.has_dense:
            raise BundleError(f"CLIP {self.model or 'model'}: this bundle has no dense encoder")
        _check_crop(image_rgb, 0)
        side = int(long_side or self.dense_long_side)
        if side < self.dense_stride:
            raise InputError(f"long_side: expected >= {self.dense_stride}, got {side}")
        h, w = image_rgb.shape[:2]
        scale = side / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(image_rgb, (nw, nh), interpolation=interp)
        st = self.dense_stride
        ph, pw = -(-nh // st) * st, -(-nw // st) * st
        mean = np.asarray(self.preprocess.mean, dtype=np.float32) * 255.0
        std = np.asarray(self.preprocess.std, dtype=np.float32) * 255.0
        pixels = np.zeros((1, 3, ph, pw), dtype=np.float32)  # padding: zeros after mean/std
        pixels[0, :, :nh, :nw] = ((small.astype(np.float32) - mean) / std).transpose(2, 0, 1)
        return pixels, scale

    def encode_dense(self, image_rgb: NDArray[np.uint8], long_side: int | None = None) -> DenseMap:
        """The frame's per-location embedding terms (see :class:`DenseMap`), one session call.

        Args:
            image_rgb: (H, W, 3) uint8 RGB frame.
            long_side: Dense input size (longer side); default :attr:`dense_long_side`.

        Raises:
            BundleError: The bundle has no dense encoder (:attr:`has_dense`).
            InputError: ``image_rgb`` is not a non-empty uint8 (H, W, 3) array.
        """
        pixels, scale = self.dense_input(image_rgb, long_side)
        sess = self._dense()
        (out,) = self._run(sess, {sess.get_inputs()[0].name: pixels})
        out = np.asarray(out, dtype=np.float32)
        return DenseMap(np.ascontiguousarray(out[0].transpose(1, 2, 0)), scale, self.dense_stride)

    def _run(self, session: Any, feed: dict[str, Any]) -> list[Any]:
        """One image-side session run; :attr:`transient` sessions give their memory back."""
        return run_transient(session, feed) if self.transient else list(session.run(None, feed))

    def _dense(self) -> Any:
        """The dense encoder's session, created (and its I/O checked) on first use."""
        if self.dense_session is None:
            if self.dense_path is None:
                raise BundleError(
                    f"CLIP {self.model or 'model'}: this bundle has no dense encoder"
                )
            sess = create_session(self.dense_path, threads=self._threads, transient=self.transient)
            ins, outs = sess.get_inputs(), sess.get_outputs()
            shape = outs[0].shape if len(outs) == 1 else []
            if (
                len(ins) != 1
                or len(outs) != 1
                or len(ins[0].shape) != 4
                or len(shape) != 4
                or (isinstance(shape[1], int) and shape[1] != self.embed_dim)
            ):
                raise BundleError(
                    f"CLIP dense encoder: expected one (N, 3, H, W) input and one (N, "
                    f"{self.embed_dim}, h, w) output, got {[i.shape for i in ins]} -> "
                    f"{[o.shape for o in outs]}"
                )
            self.dense_session = sess
        return self.dense_session

"""Export YOLOE -seg checkpoints (v8, 11, 26) to bundles whose vocabulary changes at runtime.

Ultralytics' own export fuses the words into the head (``set_classes`` then ``fuse``), so a new
word needs a new export. Here the detector stops one step earlier: it outputs each anchor's
embedding (the head's embedding branch) next to its box, mask coefficients and the prototypes,
and the runtime (:mod:`edge.yoloe`) scores the words in float32 numpy. Why the embedding output
rather than a second ``(K, D)`` graph input:

* K stays out of the graph: one static graph for any vocabulary, and int8 never touches the
  scoring (the embedding conv stays float, like FastSAM's score conv);
* one frame's detector run can be re-scored against a new phrase (a text prompt on stored
  detections) without running the detector again;
* the scoring itself is one (N, D) x (D, K) product: at 640 px, N = 8400 and D = 512, K = 20
  costs about 86 M multiply-adds (a few ms), against ~10 G for the detector (measured in
  ``fastsam-edge bench``).

The text adapter (``reprta``) and each scale's contrastive head (batch norm folded,
``logit_scale``, ``bias``) go into ``yoloe_head.npz``; the default vocabulary's raw embeddings
into ``vocabulary.npy``; the text encoder (ultralytics' TorchScript ``mobileclip_blt.ts`` /
``mobileclip2_b.ts``, from the user's file) into ``yoloe_text.{fp32,int8}.onnx`` with the
repo's tokenizer. Everything is described by ``bundle.json``'s ``yoloe`` section
(:class:`edge.bundle.YoloeSection`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import (
    DETECTOR_FILES,
    InputSpec,
    QuantSection,
    TextTowerSection,
    Thresholds,
    YoloeSection,
    sha256_file,
)
from edge.yoloe import HEAD_KEYS, YoloeHead
from export.common import ExportError
from export.fastsam import (
    STRIDE,
    DetectorExport,
    _count_gop,
    _staging_dir,
    bundle_manifest,
    finish_bundle,
    parse_imgsz,
    write_manifest,
)

_LOGGER = logging.getLogger(__name__)

HEAD_FILE = "yoloe_head.npz"
VOCAB_FILE = "vocabulary.npy"
TEXT_FILES = {"fp32": "yoloe_text.fp32.onnx", "int8": "yoloe_text.int8.onnx"}
OPSET = 17
TEXT_MODELS = {"v8": "mobileclip:blt", "11": "mobileclip:blt", "26": "mobileclip2:b"}
"""Ultralytics' default text model per family (the yaml's ``text_model``)."""
TEXT_WEIGHTS = {"mobileclip:blt": "mobileclip_blt.ts", "mobileclip2:b": "mobileclip2_b.ts"}
"""The TorchScript file ultralytics loads for each text model."""
MIN_TEXT_COSINE = {"fp32": 0.9999, "int8": 0.99}
"""ONNX vs torch text embeddings: the smallest cosine accepted per precision."""
VERIFY_WORDS = (
    "person", "car", "dog", "a red mug", "traffic light", "bicycle", "the cat on a sofa",
    "potted plant", "COVID-19 test", "100 dollars",
)  # fmt: skip
YAMLS = {
    "v8": "yoloe-v8{scale}-seg.yaml",
    "11": "yoloe-11{scale}-seg.yaml",
    "26": "yoloe-26{scale}-seg.yaml",
}


def _offline() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")


# --------------------------------------------------------------------------------------------
# What a checkpoint is
# --------------------------------------------------------------------------------------------


def yoloe_head(model: Any) -> Any | None:
    """The model's YOLOE segmentation head, or ``None`` (not a YOLOE -seg model)."""
    from ultralytics.nn.modules.head import YOLOESegment

    head = model.model[-1] if hasattr(model, "model") else None
    return head if isinstance(head, YOLOESegment) else None


def family_of(model: Any) -> str:
    """``v8``, ``11`` or ``26``: from the yaml file name, else from the head's type."""
    from ultralytics.nn.modules.head import YOLOESegment26

    yaml = getattr(model, "yaml", {}) or {}
    stem = Path(str(yaml.get("yaml_file", ""))).stem.lower()
    for family in ("26", "11", "v8"):
        if f"yoloe-{family}" in stem:
            return family
    head = model.model[-1]
    if isinstance(head, YOLOESegment26):
        return "26"
    return "v8" if getattr(head, "legacy", False) else "11"


def load_checkpoint_model(weights: str | Path) -> Any:
    """The model of an ultralytics ``.pt`` (``ema`` or ``model``), float32, eval mode.

    Raises:
        ExportError: Missing or unreadable file, or no model in it.
    """
    path = Path(weights)
    if not path.is_file():
        raise ExportError(f"weights: {str(path)!r} does not exist")
    _offline()
    import torch
    import ultralytics  # noqa: F401  (the checkpoint pickles its classes: a missing export
    # extra is said as such by the CLI, not as "an unreadable checkpoint")

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ExportError(
            f"weights: {str(path)!r} is not a readable torch checkpoint: {exc}"
        ) from exc
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if model is None:
        raise ExportError(f"weights: {str(path)!r} holds no 'model' (is it an ultralytics .pt?)")
    return model.float().eval()


def is_yoloe_checkpoint(weights: str | Path) -> bool:
    """Whether ``weights`` is an ultralytics checkpoint of a YOLOE model (any head).

    Raises:
        ExportError: A YOLOE detection-only model (this project exports -seg models).
    """
    try:
        model = load_checkpoint_model(weights)
    except ExportError:
        return False
    from ultralytics.nn.modules.head import YOLOEDetect

    head = model.model[-1] if hasattr(model, "model") else None
    if not isinstance(head, YOLOEDetect):
        return False
    if yoloe_head(model) is None:
        raise ExportError(
            f"weights: {str(weights)!r} is a YOLOE detection model; fastsam-edge needs masks: "
            "use a YOLOE -seg checkpoint (yoloe-v8/11/26*-seg)"
        )
    if hasattr(head, "lrpc"):
        raise ExportError(
            f"weights: {str(weights)!r} is a prompt-free (-pf) YOLOE with a built-in vocabulary; "
            "export the text-prompt checkpoint of the same size instead"
        )
    return True


# --------------------------------------------------------------------------------------------
# Seeded models for tests, benchmarks and parity (no weights can be downloaded here)
# --------------------------------------------------------------------------------------------


def calibration_frames(count: int = 6, size: tuple[int, int] = (320, 256)) -> list[np.ndarray]:
    """Demo-world scenes (BGR uint8) for re-estimating batch norms: real-ish frames."""
    from edge.demo.scenes import generate_scene

    w, h = size
    return [generate_scene(2_100_000 + i, w, h).image for i in range(count)]


def build_model(
    family: str,
    scale: str = "n",
    seed: int = 0,
    embed: int = 512,
    frames: Sequence[np.ndarray] | None = None,
    score_std: float = 0.6,
    score_mean: float = -3.5,
) -> Any:
    """A YOLOE -seg model built from ultralytics' yaml, made non-degenerate without weights.

    A fresh YOLOE scores nothing (contrastive bias -10, zero text adapter) and an untrained
    backbone gives near image-independent outputs. So: the last conv of the box, embedding and
    mask branches (both heads of YOLOE-26) and the text adapter's output projection are re-drawn
    from a seeded normal, every batch norm's running statistics are re-estimated on real-ish
    frames (the demo world's scenes), and each contrastive head gets the ``logit_scale`` and
    ``bias`` that give its logits (random unit prompts, those frames) the mean ``score_mean``
    and the standard deviation ``score_std``: scores spread over (0, 1).

    Args:
        family: ``v8``, ``11`` or ``26``.
        scale: Model scale letter (``n``, ``s``, ...).
        seed: Seed of every random weight.
        embed: Embedding size D (512 for the released models' text towers).
        frames: BGR frames for the batch-norm statistics (default :func:`calibration_frames`).
        score_std: Standard deviation of the contrastive logits.
        score_mean: Mean of the contrastive logits.

    Returns:
        A ``YOLOESegModel`` in eval mode, with ``names`` = ``{0: "object"}``.
    """
    _offline()
    import torch
    from ultralytics.nn.tasks import YOLOESegModel, yaml_model_load

    if family not in YAMLS:
        raise ValueError(f"family: expected one of {list(YAMLS)}, got {family!r}")
    cfg = yaml_model_load(YAMLS[family].format(scale=scale))
    head_args = cfg["head"][-1][-1]
    head_args[3] = embed  # [nc, nm, npr, embed, with_bn]
    torch.manual_seed(seed)
    model = YOLOESegModel(cfg, ch=3, nc=cfg.get("nc", 80), verbose=False)
    if cfg.get("end2end") and hasattr(model, "end2end"):
        model.end2end = True  # as released YOLOE-26 checkpoints: the NMS-free one-to-one head
    head = model.model[-1]
    gen = torch.Generator().manual_seed(seed + 1)
    prefixes = ("", "one2one_") if getattr(head, "one2one_cv2", None) is not None else ("",)
    with torch.no_grad():
        for prefix in prefixes:
            for name, std, bias_mean in (("cv2", 2.0, 0.0), ("cv3", 1.0, 0.0), ("cv5", 0.5, 0.0)):
                for seq in getattr(head, prefix + name):
                    conv = seq[-1]
                    fan_in = conv.weight.shape[1] ** 0.5
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * std / fan_in)
                    conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.3 + bias_mean)
        w3 = head.reprta.m.w3
        w3.weight.copy_(
            torch.randn(w3.weight.shape, generator=gen) * 0.5 / w3.weight.shape[1] ** 0.5
        )
        w3.bias.copy_(torch.randn(w3.bias.shape, generator=gen) * 0.02)
    frames = frames if frames is not None else calibration_frames()
    _reestimate_batchnorm(model, frames, gen)
    _spread_scores(model, frames, gen, prefixes, score_std, score_mean)
    model.names = {0: "object"}
    model.args = {"imgsz": 640, "task": "segment"}
    model.eval()
    return model


def _reestimate_batchnorm(model: Any, frames: Sequence[np.ndarray], gen: Any) -> None:
    """Every BatchNorm's running statistics from ``frames`` (cumulative, train-mode forwards)."""
    import torch

    from edge.preprocess import letterbox

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    tensors = [torch.from_numpy(letterbox(f, (256, 320), 32)[0]) for f in frames]
    batch = torch.cat(tensors)
    tpe = torch.nn.functional.normalize(
        torch.randn(1, 8, model.model[-1].embed, generator=gen), dim=-1
    )
    model.train()
    with torch.no_grad():
        for i in range(0, len(batch), 2):
            model.predict(batch[i : i + 2], tpe=tpe.expand(len(batch[i : i + 2]), -1, -1))
    model.eval()


def _spread_scores(
    model: Any, frames: Sequence[np.ndarray], gen: Any, prefixes: tuple[str, ...], std: float,
    mean: float,
) -> None:  # fmt: skip
    """Set each contrastive head's logit scale and bias from its measured logit statistics."""
    import math

    import torch

    from edge.preprocess import letterbox

    head = model.model[-1]
    heads = [ch for prefix in prefixes for ch in getattr(head, prefix + "cv4")]
    with torch.no_grad():
        for ch in heads:
            ch.logit_scale.fill_(0.0)
            ch.bias.fill_(0.0)
    seen: dict[int, list[Any]] = {id(ch): [] for ch in heads}
    hooks = [
        ch.register_forward_hook(lambda m, _i, out: seen[id(m)].append(out.detach().flatten()))
        for ch in heads
    ]
    batch = torch.cat([torch.from_numpy(letterbox(f, (256, 320), 32)[0]) for f in frames])
    tpe = torch.nn.functional.normalize(torch.randn(1, 8, head.embed, generator=gen), dim=-1)
    model.eval()
    try:
        with torch.no_grad():
            model.predict(batch, tpe=tpe.expand(len(batch), -1, -1))
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for ch in heads:
            values = torch.cat(seen[id(ch)])
            scale = std / max(float(values.std()), 1e-6)
            ch.logit_scale.fill_(math.log(scale))
            ch.bias.fill_(mean - float(values.mean()) * scale)


def save_checkpoint(model: Any, path: str | Path, imgsz: int = 640) -> Path:
    """Save a model as an ultralytics-loadable ``.pt`` (what ``YOLOE(path)`` reads)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "model": model.float(),
        "train_args": {"imgsz": imgsz, "task": "segment"},
        "date": None,
        "version": "fastsam-edge",
    }
    torch.save(ckpt, path)
    return path


MOBILECLIP_TEXT = {"width": 512, "layers": 12, "heads": 8}
"""MobileCLIP-B(LT) / MobileCLIP2-B's text transformer sizes (``bench``'s random tower)."""


def make_text_tower(
    path: str | Path,
    embed: int = 512,
    width: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    context_length: int = 77,
    vocab_size: int = 49408,
) -> Path:
    """A random-weight text tower saved as ultralytics ships YOLOE's: TorchScript, int64
    tokens (T, 77) -> L2-normalised (T, embed), features at the end-of-text token.

    Its transformer is written with plain tensor operations, as MobileCLIP's text encoder is
    (a traced ``nn.MultiheadAttention`` does not survive TorchScript -> ONNX). For tests and
    ``bench`` (:data:`MOBILECLIP_TEXT` gives the released towers' cost); never a real model.
    """
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.mlp = nn.Sequential(
                nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, _ = x.shape
            q, k, v = (
                self.qkv(self.ln1(x))
                .reshape(b, n, 3, heads, width // heads)
                .permute(2, 0, 3, 1, 4)
            )
            att = torch.softmax(q @ k.transpose(-2, -1) * (width // heads) ** -0.5, dim=-1)
            x = x + self.out((att @ v).transpose(1, 2).reshape(b, n, width))
            return x + self.mlp(self.ln2(x))

    class Tower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(vocab_size, width)
            self.pos = nn.Parameter(torch.randn(context_length, width) * 0.01)
            self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
            self.ln = nn.LayerNorm(width)
            self.proj = nn.Parameter(torch.randn(width, embed) * width**-0.5)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            x = self.ln(self.blocks(self.tok(tokens) + self.pos))
            eot = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.proj
            return eot / eot.norm(dim=-1, keepdim=True)

    torch.manual_seed(seed)
    tower = Tower().eval()
    dummy = torch.zeros(2, context_length, dtype=torch.int64)
    dummy[:, 0], dummy[:, 1], dummy[:, 2] = 49406, 320, 49407
    path = Path(path)
    with torch.no_grad():
        torch.jit.trace(tower, dummy).save(str(path))
    return path


# --------------------------------------------------------------------------------------------
# The open-vocabulary detector graph and the head's text side
# --------------------------------------------------------------------------------------------


def fused_model(model: Any) -> Any:
    """A private copy, conv+BN fused and the unused branch dropped (as the predictor runs it)."""
    import copy

    m = copy.deepcopy(model).float().eval()
    m.fuse(verbose=False)
    return m


def _branches(head: Any) -> dict[str, Any]:
    """The head branches inference uses: one-to-one for end-to-end heads, else one-to-many."""
    if head.end2end:
        return {
            "box": head.one2one_cv2,
            "embed": head.one2one_cv3,
            "mask": head.one2one_cv5,
            "contrastive": head.one2one_cv4,
        }
    return {"box": head.cv2, "embed": head.cv3, "mask": head.cv5, "contrastive": head.cv4}


def _detector_module(model: Any) -> Any:
    """``images`` -> (``output0`` boxes + coefficients, ``embeddings``, ``protos``)."""
    import torch
    from ultralytics.nn.modules.head import YOLOESegment26

    class OpenVocabDetector(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.model = m

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
            layers = self.model.model
            head = layers[-1]
            y: list[Any] = []
            x: Any = images
            for m in layers[:-1]:
                if m.f != -1:
                    x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
                x = m(x)
                y.append(x if m.i in self.model.save else None)
            feats = [y[j] for j in head.f]
            br = _branches(head)
            bs = feats[0].shape[0]
            boxes = torch.cat(
                [br["box"][i](f).view(bs, 4 * head.reg_max, -1) for i, f in enumerate(feats)], 2
            )
            dbox = head._get_decode_boxes({"boxes": boxes, "feats": feats})
            emb = torch.cat(
                [br["embed"][i](f).view(bs, head.embed, -1) for i, f in enumerate(feats)], 2
            )
            coef = torch.cat(
                [br["mask"][i](f).view(bs, head.nm, -1) for i, f in enumerate(feats)], 2
            )
            if isinstance(head, YOLOESegment26):
                protos = head.proto(feats, return_semantic=False)
            else:
                protos = head.proto(feats[0])
            return torch.cat([dbox, coef], 1), emb, protos

    return OpenVocabDetector(model).eval()


def head_arrays(model: Any) -> YoloeHead:
    """The head's text adapter and contrastive heads as :class:`edge.yoloe.YoloeHead` arrays."""
    head = model.model[-1]
    ffn = head.reprta.m
    scales, shifts, logit, bias = [], [], [], []
    for ch in _branches(head)["contrastive"]:
        bn = ch.norm
        g = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().double()
        scales.append(g.numpy())
        shifts.append((bn.bias.detach().double() - bn.running_mean.double() * g).numpy())
        logit.append(float(ch.logit_scale.detach()))
        bias.append(float(ch.bias.detach().reshape(-1)[0]))

    def f32(t: Any) -> np.ndarray:
        return np.ascontiguousarray(t.detach().float().numpy(), dtype=np.float32)

    out = YoloeHead(
        w12=f32(ffn.w12.weight),
        b12=f32(ffn.w12.bias),
        w3=f32(ffn.w3.weight),
        b3=f32(ffn.w3.bias),
        bn_scale=np.stack(scales).astype(np.float32),
        bn_shift=np.stack(shifts).astype(np.float32),
        logit_scale=np.asarray(logit, np.float32),
        bias=np.asarray(bias, np.float32),
    )
    out.check()
    assert set(HEAD_KEYS) == set(out.__dataclass_fields__)
    return out


def export_detector_onnx(model: Any, path: Path, imgsz: tuple[int, int], dynamic: bool) -> int:
    """Write the open-vocabulary detector ONNX and check it runs; returns D.

    Args:
        model: The model fused as the predictor runs it (:func:`fused_model`); its head is
            switched to export mode.
        path: The ONNX file to write.
        imgsz: (height, width) of the export.
        dynamic: Dynamic H/W.

    Raises:
        ExportError: The export failed or the outputs have unexpected shapes.
    """
    import warnings

    import torch

    fused = model
    head = fused.model[-1]
    head.dynamic = dynamic
    head.shape = None
    head.export = True
    module = _detector_module(fused)
    dummy = torch.zeros(1, 3, *imgsz)
    axes = None
    if dynamic:
        axes = {
            "images": {2: "height", 3: "width"},
            "output0": {2: "anchors"},
            "embeddings": {2: "anchors"},
            "protos": {2: "proto_height", 3: "proto_width"},
        }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=["images"],
            output_names=["output0", "embeddings", "protos"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    try:
        import onnxslim

        onnxslim.slim(str(path), str(path))
    except Exception as exc:  # optional: the plain export is correct, only larger
        _LOGGER.warning("onnxslim failed (%s); keeping the unsimplified graph", exc)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out0, emb, protos = sess.run(None, {"images": dummy.numpy()})
    h, w = imgsz
    n = sum((h // s) * (w // s) for s in (8, 16, 32))
    if out0.shape != (1, 4 + head.nm, n) or emb.shape != (1, head.embed, n):
        raise ExportError(
            f"exported YOLOE detector has unexpected outputs {out0.shape}, {emb.shape}"
        )
    if protos.shape[:2] != (1, head.nm):
        raise ExportError(f"exported YOLOE detector has unexpected protos {protos.shape}")
    return int(head.embed)


# --------------------------------------------------------------------------------------------
# The text tower: ultralytics' TorchScript text encoder -> ONNX
# --------------------------------------------------------------------------------------------


def tokenizer_section(out_dir: Path, context_length: int = 77) -> tuple[dict[str, Any], Any]:
    """Copy open_clip's BPE file (the vocabulary of OpenAI CLIP's tokenizer, which ultralytics'
    text towers use) into the bundle; returns the section and the edge tokenizer."""
    from open_clip import tokenizer as oct

    from edge.tokenizer import ClipTokenizer
    from export.clip import BPE_FILE

    shutil.copyfile(oct.default_bpe(), out_dir / BPE_FILE)
    tok = ClipTokenizer.from_file(out_dir / BPE_FILE, context_length=context_length)
    section = {
        "type": "open_clip.SimpleTokenizer",
        "bpe": BPE_FILE,
        "context_length": context_length,
        "sot_id": tok.sot_id,
        "eot_id": tok.eot_id,
        "pad_id": 0,
        "vocab_size": tok.vocab_size,
        "clean": "lower",
    }
    return section, tok


def export_text_tower(
    weights: str | Path,
    text_model: str,
    out_dir: Path,
    int8: bool = True,
    threads: int = 2,
) -> TextTowerSection:
    """Export a YOLOE text encoder (TorchScript ``.ts``, tokens -> normalised embeddings).

    Verified against torch on :data:`VERIFY_WORDS` tokenized by the edge tokenizer: the fp32
    file must reach :data:`MIN_TEXT_COSINE`; an int8 copy (dynamic, as the CLIP text tower's:
    MatMul/Gemm weights and the token table) is kept only when it does too.

    Args:
        weights: The user's ``mobileclip_blt.ts`` / ``mobileclip2_b.ts`` (or compatible).
        text_model: Ultralytics' name for it (``mobileclip:blt``, ``mobileclip2:b``).
        out_dir: The bundle directory being assembled.
        int8: Also try an int8 copy.
        threads: onnxruntime threads of the check.

    Raises:
        ExportError: Unreadable file, failed export or an fp32 file that disagrees with torch.
    """
    import torch

    from edge.session import create_session
    from export.clip import QUANT_OPS_BY_TOWER, _export_tower, quantize

    path = Path(weights)
    if not path.is_file():
        raise ExportError(f"--text-weights: {str(path)!r} does not exist")
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise ExportError(
            f"--text-weights: {str(path)!r} is not a TorchScript file: {exc}"
        ) from exc
    tok_section, tok = tokenizer_section(out_dir)
    tokens = tok(list(VERIFY_WORDS))
    with torch.no_grad():
        ref = module(torch.from_numpy(tokens.astype(np.int64))).float().numpy()
    fp32 = out_dir / TEXT_FILES["fp32"]
    try:
        _export_tower(module, torch.from_numpy(tokens[:2].astype(np.int64)), fp32, "tokens")
    except Exception as exc:
        raise ExportError(f"--text-weights: ONNX export failed: {exc}") from exc
    verify: dict[str, Any] = {}
    precisions = ["fp32"]

    def cosine(onnx_path: Path) -> float:
        sess = create_session(onnx_path, threads=threads)
        (emb,) = sess.run(None, {"tokens": tokens.astype(np.int64)})
        a = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        b = ref / np.linalg.norm(ref, axis=1, keepdims=True)
        return float(np.min(np.sum(a * b, axis=1)))

    verify["fp32"] = {"min_cosine": round(cosine(fp32), 6), "words": len(VERIFY_WORDS)}
    if verify["fp32"]["min_cosine"] < MIN_TEXT_COSINE["fp32"]:
        raise ExportError(f"text tower: ONNX fp32 disagrees with torch: {verify['fp32']}")
    if int8:
        q = out_dir / TEXT_FILES["int8"]
        quantize(fp32, q, QUANT_OPS_BY_TOWER["text"])  # the token table too: a 4x smaller file
        verify["int8"] = {"min_cosine": round(cosine(q), 6), "words": len(VERIFY_WORDS)}
        if verify["int8"]["min_cosine"] >= MIN_TEXT_COSINE["int8"]:
            precisions.append("int8")
        else:
            verify["int8"]["status"] = f"refused: min cosine < {MIN_TEXT_COSINE['int8']}"
            q.unlink()
    return TextTowerSection(
        model=text_model,
        files={p: TEXT_FILES[p] for p in precisions},
        precisions=tuple(precisions),
        default_precision="int8" if "int8" in precisions else "fp32",
        tokenizer=tok_section,
        source={"weights": path.name, "sha256": sha256_file(path)},
        verify=verify,
    )


def copy_text_tower(
    source: str | Path, out_dir: Path, embed: int, int8: bool = True, threads: int = 2
) -> TextTowerSection:
    """Take the text tower of another bundle's CLIP (its ``clip`` section) as the YOLOE one.

    For a detector trained on that CLIP's text embeddings (the demo YOLOE on the demo CLIP,
    ``scripts/train_yoloe_demo.py``): the bundle's text ONNX files (each precision it has;
    int8 only with ``int8``) and its tokenizer file are copied after their checksums are
    verified, and each copy is run on :data:`VERIFY_WORDS` against the source's fp32 file; a
    copy below :data:`MIN_TEXT_COSINE` is refused (the fp32 copy: an error).

    Args:
        source: Bundle directory whose ``clip`` section has a text tower.
        out_dir: The bundle directory being assembled.
        embed: The detector head's embedding size D (the tower must output D).
        int8: Also take the int8 text file when the source has one.
        threads: onnxruntime threads of the check.

    Raises:
        ExportError: No such bundle, no CLIP text tower in it, a size other than D, a bad
            checksum, or a copy that disagrees with the source.
    """
    from edge.bundle import read_manifest, verify_file
    from edge.clip import encode_tokens
    from edge.errors import FastSAMEdgeError
    from edge.session import create_session
    from edge.tokenizer import ClipTokenizer

    src = Path(source)
    try:
        m = read_manifest(src)
    except FastSAMEdgeError as exc:
        raise ExportError(f"--text-from-bundle: {exc}") from exc
    clip = m.clip
    if clip is None or not clip.files.get("text"):
        raise ExportError(f"--text-from-bundle: {str(src)!r} has no CLIP text tower")
    if clip.embed_dim != embed:
        raise ExportError(
            f"--text-from-bundle: its text tower gives D={clip.embed_dim}, the YOLOE head "
            f"expects D={embed}"
        )
    bpe = str(clip.tokenizer.get("bpe", ""))
    try:
        shutil.copyfile(verify_file(src, m, bpe), out_dir / bpe)
        tok = ClipTokenizer.from_manifest(out_dir, dict(clip.tokenizer))
        precisions = [p for p in ("fp32", "int8") if p in clip.files["text"]]
        if "fp32" not in precisions:
            raise ExportError(f"--text-from-bundle: {str(src)!r} has no fp32 text tower")
        if not int8:
            precisions = ["fp32"]
        files, sources = {}, {}
        for prec in precisions:
            name = clip.files["text"][prec]
            shutil.copyfile(verify_file(src, m, name), out_dir / TEXT_FILES[prec])
            files[prec] = TEXT_FILES[prec]
            sources[prec] = {"file": name, "sha256": m.files[name].sha256}
    except FastSAMEdgeError as exc:
        raise ExportError(f"--text-from-bundle: {exc}") from exc

    def run(path: Path) -> np.ndarray:
        return encode_tokens(create_session(path, threads=threads), tok, VERIFY_WORDS)

    ref = run(src / clip.files["text"]["fp32"])
    verify: dict[str, Any] = {}
    for prec in list(precisions):
        cos = float(np.min(np.sum(run(out_dir / files[prec]) * ref, axis=1)))
        verify[prec] = {"min_cosine": round(cos, 6), "words": len(VERIFY_WORDS), "against": "fp32"}
        if cos < MIN_TEXT_COSINE[prec]:
            if prec == "fp32":
                raise ExportError(f"--text-from-bundle: the fp32 copy disagrees: {verify}")
            verify[prec]["status"] = f"refused: min cosine < {MIN_TEXT_COSINE[prec]}"
            (out_dir / files.pop(prec)).unlink()
            precisions.remove(prec)
    return TextTowerSection(
        model=clip.model,
        files=files,
        precisions=tuple(precisions),
        default_precision=clip.default_precision if clip.default_precision in files else "fp32",
        tokenizer=dict(clip.tokenizer),
        source={"bundle": m.name, "files": sources},
        verify=verify,
    )


def encode_words(out_dir: Path, text: TextTowerSection, words: Sequence[str]) -> np.ndarray:
    """Raw (K, D) embeddings of ``words`` with the bundle's fp32 text tower (default vocab)."""
    from edge.clip import encode_tokens
    from edge.session import create_session
    from edge.tokenizer import ClipTokenizer

    tok = ClipTokenizer.from_file(out_dir / text.tokenizer["bpe"])
    sess = create_session(out_dir / text.files["fp32"], threads=2)
    return encode_tokens(sess, tok, list(words))


# --------------------------------------------------------------------------------------------
# int8 and the bundle
# --------------------------------------------------------------------------------------------

VERIFY_VOCAB_SIZE = 16
INT8_RECIPE: dict[str, Any] = {"float_branches": ("cv3", "cv5")}
"""The YOLOE int8 recipe (``export.quantize.QuantConfig`` arguments)."""


def _verify_vocabulary(head: YoloeHead, raw: np.ndarray | None) -> np.ndarray:
    """The vocabulary int8 is verified with: the default one, else seeded unit vectors."""
    if raw is not None and len(raw):
        return raw
    rng = np.random.default_rng(0)
    v = rng.standard_normal((VERIFY_VOCAB_SIZE, head.embed_dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def quantize_yoloe(
    bundle_dir: Path,
    imgsz: tuple[int, int],
    dynamic: bool,
    thresholds: Thresholds,
    section: YoloeSection,
    raw: np.ndarray | None,
    calib_dir: str | Path | None = None,
    min_iou: float = 0.95,
    threads: int = 2,
    config: Any = None,
    *,
    verify_images: str | Path | None = None,
    plan: Any = None,
) -> QuantSection:
    """``fastsam.int8.onnx`` as for FastSAM (static QDQ, a plan chosen and verified on held-out
    images, refused when none reaches the target), with the embedding and coefficient convs and
    everything after them kept float (``config``: another ``export.quantize.QuantConfig``,
    default :data:`INT8_RECIPE`; ``verify_images`` and ``plan`` as for
    :func:`export.quantize.quantize_detector`)."""
    from functools import partial

    from edge.yoloe import Vocabulary, vocabulary_detections
    from export.quantize import QuantConfig, quantize_detector

    head = YoloeHead.load(bundle_dir / section.head)
    words = _verify_vocabulary(head, raw)
    vocab = Vocabulary.build(head, [f"w{i}" for i in range(len(words))], words)
    th = (thresholds.conf, thresholds.iou, thresholds.max_det)
    decode = partial(vocabulary_detections, section=section, vocab=vocab, thresholds=th)

    config = config or QuantConfig(**INT8_RECIPE)
    return quantize_detector(
        bundle_dir, imgsz, dynamic, thresholds, calib_dir, config, min_iou, threads,
        verify_dir=verify_images, plan=plan, decode=decode,
    )  # fmt: skip


@dataclass(frozen=True)
class YoloeOptions:
    """The YOLOE part of an export.

    Attributes:
        vocab: Default vocabulary words (``--vocab "person,car,dog"``).
        text_weights: The text encoder's TorchScript file (``mobileclip_blt.ts``, ...);
            ``None``: no text tower (words need caller-given embeddings).
        vocab_embeddings: Raw (K, D) embeddings of ``vocab`` (``.npy``) when there is no
            text tower to encode them.
        text_from: A bundle whose CLIP text tower (ONNX + tokenizer) becomes the YOLOE text
            tower as it is (:func:`copy_text_tower`): for a detector trained on that CLIP's
            text embeddings; instead of ``text_weights``.
        text_int8: Also try (or, with ``text_from``, take) an int8 text tower.
        end2end: Which head a YOLOE-26 bundle decodes with: ``True`` its NMS-free one-to-one
            head (top-k), ``False`` the one-to-many head with NMS; ``None`` (default) the
            checkpoint's own mode (released YOLOE-26: end-to-end, as ultralytics exports it).
    """

    vocab: tuple[str, ...] = ()
    text_weights: str | Path | None = None
    vocab_embeddings: str | Path | None = None
    text_from: str | Path | None = None
    text_int8: bool = True
    end2end: bool | None = None


DEFAULT_THRESHOLDS = Thresholds(conf=0.25, iou=0.7, max_det=300)
"""Ultralytics' predictor defaults (YOLOE's), not FastSAM's 0.4 / 0.9."""


def export_yoloe_bundle(
    weights: str | Path,
    out: str | Path,
    imgsz: str | int | tuple[int, int] = 640,
    dynamic: bool = False,
    name: str | None = None,
    thresholds: Thresholds | None = None,
    options: YoloeOptions | None = None,
    int8: bool = True,
    calib_images: str | Path | None = None,
    verify_threads: int = 2,
    int8_min_iou: float = 0.95,
    measure_memory: bool = False,
    *,
    quant_config: Any = None,
    verify_images: str | Path | None = None,
    int8_plan: Any = None,
) -> Path:
    """Export a YOLOE -seg checkpoint into an open-vocabulary bundle directory.

    Args:
        weights: YOLOE -seg ``.pt`` (v8, 11 or 26; from a release or built from a yaml).
        out: Bundle directory (an existing bundle there is replaced atomically).
        imgsz: Square side, ``"WxH"`` or (H, W).
        dynamic: Dynamic H/W (the reference's rectangular letterbox).
        name: Bundle name (default: weights stem + size).
        thresholds: Default thresholds (default :data:`DEFAULT_THRESHOLDS`).
        options: Vocabulary and text tower.
        int8: Also write a verified static int8 detector.
        calib_images: Calibration image directory (default: built-in scenes).
        verify_threads: onnxruntime threads of the int8 verification.
        int8_min_iou: Refuse int8 below this mean mask IoU against fp32.
        measure_memory: Record the peak memory per precision (``export.memory``; everything
            mode with the default vocabulary). A failed measurement only logs a warning.
        quant_config: The int8 recipe (``export.quantize.QuantConfig``; default
            :data:`INT8_RECIPE`, whose float branches are YOLOE's embedding and coefficient
            convs).
        verify_images: Held-out int8 verification images (default: every other calibration
            image is held out).
        int8_plan: How the int8 precision plan is chosen (``export.int8plan.PlanOptions``;
            default: the search, as for FastSAM).

    Returns:
        The bundle directory.

    Raises:
        ExportError: Bad weights, vocabulary or text tower, or a failed check.
    """
    opts = options or YoloeOptions()
    hw = parse_imgsz(imgsz)
    path = Path(weights)
    model = load_checkpoint_model(path)
    head = yoloe_head(model)
    if head is None:
        raise ExportError(f"weights: {str(path)!r} is not a YOLOE -seg model")
    family = family_of(model)
    th = thresholds or DEFAULT_THRESHOLDS
    out = Path(out).absolute()
    tmp_dir = _staging_dir(out)
    try:
        detector = tmp_dir / DETECTOR_FILES["fp32"]
        if opts.end2end is not None:
            if opts.end2end and getattr(head, "one2one_cv2", None) is None:
                raise ExportError(f"weights: {str(path)!r} has no end-to-end (one-to-one) head")
            model.end2end = opts.end2end
        fused = fused_model(model)
        fused_head = fused.model[-1]
        head_arrays(fused).save(tmp_dir / HEAD_FILE)
        embed = export_detector_onnx(fused, detector, hw, dynamic)
        text = None
        if opts.text_weights is not None and opts.text_from is not None:
            raise ExportError("--text-weights and --text-from-bundle: give one text tower")
        if opts.text_from is not None:
            text = copy_text_tower(opts.text_from, tmp_dir, embed, opts.text_int8)
        if opts.text_weights is not None:
            text_model = str(
                (getattr(model, "yaml", {}) or {}).get("text_model") or TEXT_MODELS[family]
            )
            text = export_text_tower(opts.text_weights, text_model, tmp_dir, opts.text_int8)
        raw = _vocabulary_embeddings(opts, tmp_dir, text, embed)
        if raw is not None:
            np.save(tmp_dir / VOCAB_FILE, raw)
        section = YoloeSection(
            family=family,
            end2end=bool(fused_head.end2end),
            box_format="xyxy" if fused_head.end2end else "xywh",
            embed_dim=embed,
            strides=tuple(int(s) for s in fused_head.stride.tolist()),
            head=HEAD_FILE,
            vocabulary=tuple(opts.vocab),
            vocabulary_file=VOCAB_FILE if raw is not None else None,
            text=text,
        )
        quantization = None
        if int8:
            try:
                quantization = quantize_yoloe(
                    tmp_dir, hw, dynamic, th, section, raw, calib_images, int8_min_iou,
                    verify_threads, quant_config, verify_images=verify_images, plan=int8_plan,
                )  # fmt: skip
            except ValueError as exc:
                raise ExportError(str(exc)) from exc
        det = DetectorExport(
            file=detector.name,
            opset=OPSET,
            gop=_count_gop(detector, hw),
            source={
                "weights": path.name,
                "sha256": sha256_file(path),
                "architecture": Path(str(model.yaml.get("yaml_file", ""))).stem
                or type(model).__name__,
                "reg_max": int(fused_head.reg_max),
                "family": family,
            },
        )
        manifest = bundle_manifest(
            tmp_dir,
            name or f"{path.stem}-{hw[0]}x{hw[1]}{'-dynamic' if dynamic else ''}",
            InputSpec(dynamic=dynamic, imgsz=hw, stride=STRIDE, name="images"),
            th,
            det,
            quantization,
        )
        files = dict(manifest.files)
        for fname, entry in files.items():
            if entry.role == "asset" and fname.endswith(".onnx"):
                files[fname] = replace(entry, role="text_encoder")
        manifest = replace(manifest, files=files, yoloe=section)
        write_manifest(tmp_dir, manifest)
        finish_bundle(tmp_dir, out, measure_memory)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out


def _vocabulary_embeddings(
    opts: YoloeOptions, tmp_dir: Path, text: TextTowerSection | None, embed: int
) -> np.ndarray | None:
    """The default vocabulary's raw embeddings: given (``.npy``) or encoded by the tower."""
    from edge.yoloe import check_embeddings, check_names

    if not opts.vocab:
        if opts.vocab_embeddings is not None:
            raise ExportError("--vocab-embeddings needs --vocab (the words they embed)")
        return None
    try:
        words = check_names(list(opts.vocab))
    except ValueError as exc:
        raise ExportError(f"--vocab: {exc}") from exc
    if opts.vocab_embeddings is not None:
        try:
            arr = np.load(Path(opts.vocab_embeddings), allow_pickle=False)
            return check_embeddings(arr, len(words), embed)
        except (OSError, ValueError) as exc:
            raise ExportError(f"--vocab-embeddings: {exc}") from exc
    if text is None:
        raise ExportError(
            "--vocab needs the text tower (--text-weights mobileclip_blt.ts / mobileclip2_b.ts, "
            "--text-from-bundle DIR) or --vocab-embeddings FILE.npy"
        )
    raw = encode_words(tmp_dir, text, words)
    if raw.shape != (len(words), embed):
        raise ExportError(f"text tower: embeddings {raw.shape}, the head expects D={embed}")
    return raw

"""Export open_clip encoders into a bundle, for text prompts on the Pi (``edge/clip.py``).

Writes, into the bundle directory being assembled:

- ``clip-image.fp32.onnx``: ``pixels`` (N, 3, S, S) float32 -> ``embeddings`` (N, D),
  L2-normalised;
- ``clip-text.fp32.onnx``: ``tokens`` (N, 77) int32 -> ``embeddings`` (N, D), L2-normalised;
- ``clip-image.int8.onnx`` / ``clip-text.int8.onnx``: onnxruntime dynamic int8 (MatMul/Gemm
  weights, per channel; activations quantised per call);
- ``clip-bpe_simple_vocab_16e6.txt.gz``: open_clip's BPE merges for ``edge/tokenizer.py``;

and a ``clip`` section in the manifest (``edge/clip.py`` documents it) with the preprocessing
read from the model's open_clip config, the tokenizer facts, the file names per precision and a
verify report: cosine similarity of ONNX vs torch embeddings on noise, a structured image and
the object crops of two demo scenes (fp32 must reach :data:`MIN_FP32_COSINE`; int8 must reach
:data:`MIN_INT8_COSINE` on the crops and prompts, else it is left out, or refused for an
int8-only export) and token-id parity of the edge tokenizer.

Towers: any open_clip model with the SimpleTokenizer, e.g. ViT-B-32-quickgelu (FastSAM's CLIP)
and the MobileCLIP family (MobileCLIP-S1/S2/B, MobileCLIP2-S0/S2/B/S3/S4). FastViT/MobileOne
towers are re-parameterised for inference first (:func:`reparameterize`, checked against the
unfused model), and a checkpoint *file* gets the preprocessing its model's pretrained tags
share (:func:`tag_preprocess`: MobileCLIP uses mean 0, std 1, bilinear), which open_clip
applies only to weights loaded by tag.

Export choices: legacy TorchScript exporter (``dynamo=False``), opset 17,
dynamic batch axis, MHA fast path off (its fused op has no ONNX symbolic), token input int32
(``ArgMax`` on int64 is missing from onnxruntime < 1.20; the runtime casts to the graph's type).
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import CLIP_PRECISIONS, ClipSection, sha256_file
from edge.clip import ClipPreprocess
from edge.session import create_session
from edge.tokenizer import ClipTokenizer
from export.common import ExportError, package_versions

_LOGGER = logging.getLogger(__name__)

OPSET = 17
MIN_FP32_COSINE = 0.9999
MIN_INT8_COSINE = 0.99
# Crops per image-encoder call the runtime uses (``clip.image.max_batch``). Measured here
# (docs/benchmarks.md, scripts/bench_clip_towers.py): ms per crop is flat from batch 1 to 32
# for every tower, while peak RSS grows with the batch: ViT-B/32 int8 248 / 275 / 368 MiB at
# batch 1 / 8 / 32, MobileCLIP2-S0 (FastViT at 256 px, ~18 MiB of activations per crop)
# 185 / 329 / 757 MiB. So conv towers run 2 crops per call, ViTs 8.
MAX_BATCH_VIT = 8
MAX_BATCH_CONV = 2
VERIFY_SCENES = (1_700_000, 1_700_001)  # demo scenes whose object crops gate the encoders
BPE_FILE = "clip-bpe_simple_vocab_16e6.txt.gz"
TOWERS = ("image", "text")
QUANT_OPS = ["MatMul", "Gemm"]
# The text tower's token table (49408 x width, a Gather) is 101 MB of its 140 MB int8 file at
# width 512; quantizing it too gives 64 MB (cosine vs fp32 0.9995 on MobileCLIP2-S0, random
# weights). The gate below still checks every prompt.
QUANT_OPS_BY_TOWER = {"image": QUANT_OPS, "text": [*QUANT_OPS, "Gather"]}
VERIFY_PROMPTS = (
    "a photo of a dog",
    "the black cat on the sofa",
    "a red car parked next to 2 trees",
    "",
)
PRETRAINED_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")


def clip_file(tower: str, precision: str) -> str:
    """Bundle file name of one encoder: ``clip-{image,text}.{fp32,int8}.onnx``."""
    return f"clip-{tower}.{precision}.onnx"


def _looks_like_path(value: str) -> bool:
    return (
        os.sep in value
        or "/" in value
        or value.startswith(".")
        or value.lower().endswith(PRETRAINED_SUFFIXES)
    )


def resolve_pretrained(
    model_name: str, pretrained: str | os.PathLike[str] | None
) -> dict[str, Any]:
    """Classify ``--clip-pretrained``: ``None`` (random), an existing file, or a known tag.

    Returns:
        The manifest's ``pretrained`` facts: ``{"kind": "none"}``, ``{"kind": "file", "file",
        "sha256", "bytes", "path"}`` or ``{"kind": "tag", "tag", "hf_hub"}``.

    Raises:
        ExportError: A missing file, or a tag open_clip does not know for this model.
    """
    import open_clip

    if pretrained is None or str(pretrained).lower() in ("", "none"):
        return {"kind": "none"}
    value = str(pretrained)
    path = Path(value).expanduser()
    if path.is_file():
        return {
            "kind": "file",
            "file": path.name,
            "path": str(path.resolve()),
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
        }
    if _looks_like_path(value):
        raise ExportError(f"--clip-pretrained: checkpoint file {value!r} does not exist")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if value not in tags:
        raise ExportError(
            f"--clip-pretrained: {value!r} is neither a file nor a pretrained tag of "
            f"{model_name!r} (tags: {tags or 'none'}); pass a tag or the path of a local "
            "checkpoint file"
        )
    cfg = open_clip.get_pretrained_cfg(model_name, value)
    return {"kind": "tag", "tag": value, "hf_hub": str(cfg.get("hf_hub", "")).rstrip("/")}


def _check_quick_gelu(model_name: str, info: dict[str, Any], model_kwargs: dict[str, Any]) -> None:
    """Refuse a tag trained with QuickGELU on a GELU config (open_clip only warns)."""
    import open_clip

    if info["kind"] != "tag":
        return
    tag_qg = bool(open_clip.get_pretrained_cfg(model_name, info["tag"]).get("quick_gelu", False))
    model_cfg = open_clip.get_model_config(model_name) or {}
    model_qg = bool(model_kwargs.get("quick_gelu", model_cfg.get("quick_gelu", False)))
    if tag_qg != model_qg:
        hint = f"{model_name}-quickgelu" if tag_qg else model_name.removesuffix("-quickgelu")
        raise ExportError(
            f"--clip {model_name} --clip-pretrained {info['tag']}: the weights were trained with "
            f"quick_gelu={tag_qg} but the config uses quick_gelu={model_qg}; the embeddings would "
            f"be wrong. Use --clip {hint}"
        )


def check_clip_args(
    model_name: str,
    pretrained: str | os.PathLike[str] | None,
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check ``--clip``/``--clip-pretrained`` without building the model (fast, offline).

    Returns:
        The pretrained facts (:func:`resolve_pretrained`).

    Raises:
        ExportError: Unknown model, missing file, unknown tag or a QuickGELU mismatch.
    """
    import open_clip

    if model_name not in open_clip.list_models():
        raise ExportError(
            f"--clip: unknown open_clip model {model_name!r}; e.g. ViT-B-32-quickgelu "
            "(open_clip.list_models() lists all)"
        )
    info = resolve_pretrained(model_name, pretrained)
    _check_quick_gelu(model_name, info, dict(model_kwargs or {}))
    return info


def tag_preprocess(model_name: str) -> tuple[str, dict[str, Any]] | None:
    """The image preprocessing shared by all of ``model_name``'s pretrained tags.

    open_clip applies a tag's mean/std/interpolation only when it loads the weights *by tag*;
    a local checkpoint file (or random weights) gets the OpenAI defaults, which is wrong for
    e.g. MobileCLIP (mean 0, std 1, bilinear). When every tag of the model agrees, their
    preprocessing is what any checkpoint of it was trained with.

    Returns:
        ``(tags, kwargs)`` with ``create_model_and_transforms`` keyword arguments
        (``image_mean``, ``image_std``, ``image_interpolation``, ``image_resize_mode``), or
        ``None`` when the model has no tags or its tags disagree.
    """
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(model_name)
    seen = set()
    for tag in tags:
        cfg = open_clip.get_pretrained_cfg(model_name, tag)
        seen.add(
            tuple(
                tuple(v) if isinstance(v, (list, tuple)) else v
                for v in (
                    cfg.get("mean"),
                    cfg.get("std"),
                    cfg.get("interpolation"),
                    cfg.get("resize_mode"),
                )
            )
        )
    if len(seen) != 1:
        return None
    mean, std, interpolation, resize_mode = seen.pop()
    if mean is None or std is None:
        return None
    kwargs: dict[str, Any] = {"image_mean": mean, "image_std": std}
    if interpolation is not None:
        kwargs["image_interpolation"] = interpolation
    if resize_mode is not None:
        kwargs["image_resize_mode"] = resize_mode
    return ",".join(tags), kwargs


def reparameterize(model: Any) -> list[str]:
    """Fuse train-time branches for inference, in place (MobileOne, RepMixer, RepCPE, ...).

    MobileCLIP's FastViT/MobileOne blocks train with parallel conv + BN branches that
    ``timm.models.reparameterize_model`` folds into single convs (the same function; exact up
    to float rounding). Models without such blocks (ViT) are left untouched.

    Returns:
        Sorted class names of the modules that were re-parameterised (empty: none).
    """
    names = sorted(
        {
            type(m).__name__
            for m in model.modules()
            if hasattr(m, "reparameterize") or hasattr(m, "switch_to_deploy")
        }
    )
    if names:
        from timm.models import reparameterize_model

        reparameterize_model(model, inplace=True)
    return names


def load_model(
    model_name: str,
    pretrained: str | os.PathLike[str] | None,
    model_kwargs: dict[str, Any] | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Build the open_clip model (CPU, fp32, eval) and its validation transform.

    A checkpoint file or random weights get the preprocessing all of the model's pretrained
    tags share (:func:`tag_preprocess`; ``clip.image.from_tags`` names them), unless
    ``model_kwargs`` set it; a tag gets its own.

    Returns:
        (model, preprocess_val, pretrained facts for the manifest).

    Raises:
        ExportError: Unknown model, bad ``pretrained`` or weights that cannot be loaded; an
            uncached tag names the tag and how to pass a local file instead.
    """
    import open_clip

    model_kwargs = dict(model_kwargs or {})
    info = check_clip_args(model_name, pretrained, model_kwargs)
    arg = {"none": None, "file": info.get("path"), "tag": info.get("tag")}[info["kind"]]
    build_kwargs = dict(model_kwargs)
    shared = tag_preprocess(model_name) if info["kind"] != "tag" else None
    if shared is not None and not any(k.startswith("image_") for k in model_kwargs):
        build_kwargs.update(shared[1])
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=arg, **build_kwargs
        )
    except Exception as exc:  # open_clip raises RuntimeError/OSError/KeyError variants
        if info["kind"] == "tag":
            raise ExportError(
                f"--clip-pretrained {info['tag']}: cannot load the {model_name!r} weights for tag "
                f"{info['tag']!r}: they are not in the local cache and could not be downloaded "
                f"({type(exc).__name__}: {exc}). Offline, download them elsewhere (HF hub "
                f"{info['hf_hub']!r}, e.g. open_clip_pytorch_model.bin) and pass the file: "
                "--clip-pretrained /path/to/open_clip_pytorch_model.bin"
            ) from exc
        if info["kind"] == "file":
            raise ExportError(
                f"--clip-pretrained: {info['path']!r} is not a checkpoint of {model_name!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        raise ExportError(f"--clip {model_name}: cannot build the model: {exc}") from exc
    if info["kind"] == "none":
        _LOGGER.warning(
            "CLIP %s has RANDOM weights (no --clip-pretrained): for tests only", model_name
        )
    info.pop("path", None)  # a workstation path is no bundle fact
    model.from_tags = shared[0] if shared is not None and build_kwargs != model_kwargs else None
    model.eval()
    return model, preprocess, info


class _ImageEncoder:
    """``encode_image(pixels, normalize=True)`` as a module (built lazily: torch is optional)."""

    @staticmethod
    def build(model: Any) -> Any:
        import torch

        class ImageEncoder(torch.nn.Module):
            def __init__(self, m: Any) -> None:
                super().__init__()
                self.m = m

            def forward(self, pixels: torch.Tensor) -> torch.Tensor:
                return self.m.encode_image(pixels, normalize=True)

        return ImageEncoder(model).eval()


class _TextEncoder:
    @staticmethod
    def build(model: Any) -> Any:
        import torch

        class TextEncoder(torch.nn.Module):
            def __init__(self, m: Any) -> None:
                super().__init__()
                self.m = m

            def forward(self, tokens: torch.Tensor) -> torch.Tensor:
                return self.m.encode_text(tokens, normalize=True)

        return TextEncoder(model).eval()


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """Disable torch's fused MHA path (``_native_multi_head_attention`` has no ONNX symbolic)."""
    import torch

    prev = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(prev)


def _export_tower(module: Any, dummy: Any, path: Path, input_name: str) -> None:
    import warnings

    import torch

    with warnings.catch_warnings(), _mha_fastpath_off(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer warnings
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=[input_name],
            output_names=["embeddings"],
            dynamic_axes={input_name: {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


# The dense input's longer side (the runtime's default; it may choose another): 20 cells of a
# stride-32 tower; a 640x480 frame keeps its size (4.7x the pixels of one 256 px crop). On the
# demo world's busy scenes, with the MobileCLIP-family proxy, 640 px and a 10-crop shortlist
# keep the all-masks choice 96 % of the time at the cost of 480 px and 12 crops (95 %):
# docs/benchmarks.md, "the dense prefilter".
DENSE_LONG_SIDE = 640
# ONNX dense vs torch dense, per location, on the check frame
MIN_DENSE_COSINE = 0.9999


def dense_file(precision: str) -> str:
    """Bundle file name of the dense image encoder: ``clip-dense.{fp32,int8}.onnx``."""
    return f"clip-dense.{precision}.onnx"


def dense_linears(model: Any) -> list[Any] | None:
    """The linear maps after global average pooling of a conv image tower, or ``None``.

    A timm trunk (FastViT/MobileOne: MobileCLIP, MobileCLIP2) whose head is average pooling
    then ``fc`` (and optionally open_clip's own linear ``proj``) pools *before* anything
    non-linear, so ``embedding = mean over locations of (linear maps of each location)``:
    the per-location terms are exact parts of the embedding (the dense map). ViTs (attention
    pooling through the class token) and attention-pool/MLP heads have no such decomposition.
    """
    import torch

    visual = getattr(model, "visual", None)
    trunk = getattr(visual, "trunk", None)
    head = getattr(trunk, "head", None)
    if trunk is None or head is None or not hasattr(trunk, "forward_features"):
        return None
    pool = getattr(getattr(head, "global_pool", None), "pool_type", None)
    if pool != "avg" or type(head).__name__ != "ClassifierHead":
        return None
    linears = []
    fc = getattr(head, "fc", None)
    if isinstance(fc, torch.nn.Linear):
        linears.append(fc)
    elif not isinstance(fc, torch.nn.Identity):
        return None
    for layer in getattr(visual, "head", torch.nn.Sequential()).children():
        if isinstance(layer, torch.nn.Linear):
            linears.append(layer)
        elif not isinstance(layer, (torch.nn.Identity, torch.nn.Dropout)):
            return None  # an MLP projection: non-linear after pooling
    return linears or None


class _DenseImage:
    """``pixels (N, 3, H, W) -> dense (N, D, H/s, W/s)``: the tower's per-location embedding
    terms (:func:`dense_linears`); their spatial mean is ``encode_image`` before L2 norm."""

    @staticmethod
    def build(model: Any, linears: list[Any]) -> Any:
        import torch

        class DenseImage(torch.nn.Module):
            def __init__(self, trunk: Any, maps: list[Any]) -> None:
                super().__init__()
                self.trunk = trunk
                self.maps = torch.nn.ModuleList(maps)

            def forward(self, pixels: torch.Tensor) -> torch.Tensor:
                x = self.trunk.forward_features(pixels)  # (N, C, h, w), final conv included
                for lin in self.maps:
                    x = torch.einsum("nchw,dc->ndhw", x, lin.weight)
                    if lin.bias is not None:
                        x = x + lin.bias[None, :, None, None]
                return x

        return DenseImage(model.visual.trunk, linears).eval()


def export_dense(
    model: Any,
    out_dir: Path,
    pixels: np.ndarray,
    ref: np.ndarray,
    precisions: list[str],
    threads: int | None = None,
) -> dict[str, Any] | None:
    """Export the dense image encoder of a conv tower (``None`` for towers without one).

    Checks: the spatial mean of torch's dense map equals the pooled embedding on ``pixels``
    (exactness of the decomposition), and the ONNX map equals torch's per location on a
    non-square frame (dynamic height and width). An int8 map below :data:`MIN_INT8_COSINE`
    (mean-pooled, vs torch) is left out.

    Args:
        model: Re-parameterised open_clip model (eval mode).
        out_dir: Bundle directory being assembled.
        pixels: (N, 3, S, S) verify inputs at the tower's size.
        ref: (N, D) their L2-normalised torch image embeddings.
        precisions: CLIP precisions being written (``fp32`` is exported in any case, removed
            again when not in the list).
        threads: onnxruntime threads for the checks.

    Returns:
        The ``clip.dense`` manifest section, or ``None``.
    """
    import warnings

    import torch

    linears = dense_linears(model)
    if linears is None:
        return None
    module = _DenseImage.build(model, linears)
    with torch.no_grad():
        dense = module(torch.from_numpy(pixels)).numpy()
    pooled = dense.mean(axis=(2, 3))
    pool_cos = float(_cosines(pooled, ref).min())
    if pool_cos < MIN_FP32_COSINE:
        raise ExportError(
            f"CLIP dense image map: mean over locations vs the pooled embedding cosine "
            f"{pool_cos:.6f} < {MIN_FP32_COSINE}; the tower does not decompose"
        )
    size = pixels.shape[-1]
    stride = size // dense.shape[-1]
    if stride < 1 or size % stride or dense.shape[-2] * stride != pixels.shape[-2]:
        raise ExportError(f"CLIP dense image map: no integer stride ({dense.shape})")
    # a non-square frame with the default long side: checks dynamic height/width as well
    rng = np.random.default_rng(1)
    height = DENSE_LONG_SIDE * 3 // 4 // stride * stride  # 4:3, whole cells (the runtime pads)
    frame = rng.standard_normal((1, 3, height, DENSE_LONG_SIDE)).astype(np.float32)
    with torch.no_grad():
        frame_ref = module(torch.from_numpy(frame)).numpy()
    fp32_path = out_dir / dense_file("fp32")
    with warnings.catch_warnings(), _mha_fastpath_off(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.from_numpy(frame),),
            str(fp32_path),
            input_names=["pixels"],
            output_names=["dense"],
            dynamic_axes={
                "pixels": {0: "batch", 2: "height", 3: "width"},
                "dense": {0: "batch", 2: "rows", 3: "cols"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    files: dict[str, str] = {}
    verify: dict[str, Any] = {"pool_vs_embedding_cosine_min": round(pool_cos, 7)}

    def per_location(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = a.shape[1]
        return _cosines(
            a.transpose(0, 2, 3, 1).reshape(-1, d), b.transpose(0, 2, 3, 1).reshape(-1, d)
        )

    for prec in ("fp32", "int8"):
        if prec not in precisions:
            continue
        path = out_dir / dense_file(prec)
        if prec == "int8":
            quantize(fp32_path, path, QUANT_OPS_BY_TOWER["image"])
        sess = create_session(path, threads=threads)
        got = sess.run(None, {"pixels": frame})[0]
        cos_loc = float(per_location(got, frame_ref).min())
        got_px = np.concatenate(
            [sess.run(None, {"pixels": pixels[i : i + 1]})[0] for i in range(len(pixels))]
        )
        cos_pool = float(_cosines(got_px.mean(axis=(2, 3)), ref).min())
        verify[prec] = {
            "location_cosine_min": round(cos_loc, 7),
            "pooled_cosine_min": round(cos_pool, 7),
        }
        if prec == "fp32" and cos_loc < MIN_DENSE_COSINE:
            raise ExportError(
                f"CLIP dense image map: ONNX fp32 vs torch per-location cosine {cos_loc:.6f} < "
                f"{MIN_DENSE_COSINE}"
            )
        if prec == "int8" and cos_pool < MIN_INT8_COSINE:
            path.unlink()
            verify["int8_refused"] = f"pooled cosine {cos_pool:.6f} < {MIN_INT8_COSINE}"
            continue
        files[prec] = path.name
    if "fp32" not in precisions:
        fp32_path.unlink()
    if not files:
        return None
    return {
        "files": files,
        "input": "pixels",
        "output": "dense",
        "stride": int(stride),
        "long_side": DENSE_LONG_SIDE,
        "verify": verify,
    }


def quantization_section() -> dict[str, Any]:
    """The manifest's description of :func:`quantize` (the CLIP int8 recipe)."""
    return {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QUInt8",
        "per_channel": True,
        "op_types": QUANT_OPS,
        "op_types_by_tower": QUANT_OPS_BY_TOWER,
        "matmul_const_b_only": True,
    }


def quantize(fp32: Path, int8: Path, op_types: list[str] | None = None) -> None:
    """onnxruntime dynamic int8: ``op_types`` (default MatMul/Gemm) weights per channel as
    uint8, MatMuls with a constant B only."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs one INFO line per skipped node on root
    try:
        quantize_dynamic(
            fp32,
            int8,
            weight_type=QuantType.QUInt8,
            per_channel=True,
            op_types_to_quantize=op_types or QUANT_OPS,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def demo_crops(seeds: tuple[int, ...] = VERIFY_SCENES) -> list[np.ndarray]:
    """RGB object crops of 640x480 demo scenes, cut as the runtime cuts text candidates.

    Each crop is the object's box times its mask on black (``edge.prompts``' reference crop).
    """
    from edge.demo.scenes import generate_scene

    crops = []
    for seed in seeds:
        sc = generate_scene(seed, 640, 480)
        for mask, box in zip(sc.masks, sc.xyxy, strict=True):
            x1, y1, x2, y2 = (int(v) for v in box)
            region = sc.image[y1:y2, x1:x2] * mask[y1:y2, x1:x2, None].astype(np.uint8)
            if region.size:
                crops.append(np.ascontiguousarray(region[:, :, ::-1]))
    return crops


def _verify_images(size: int, pre: ClipPreprocess, seed: int = 0) -> tuple[np.ndarray, int]:
    """Two random-normal inputs, one structured image and the demo-scene object crops.

    Returns:
        (pixels, index of the first demo crop).
    """
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    yy, xx = np.mgrid[0:300, 0:400]
    img = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    img[100:200, 150:250] = (220, 40, 40)
    return np.concatenate([noise, pre([img]), pre(demo_crops())]), 3


def _pillow_order() -> str:
    """The Pillow pass order the installed Pillow uses (what open_clip's transform gives)."""
    try:
        major = int(md.version("pillow").split(".")[0])
    except (md.PackageNotFoundError, ValueError):
        return "pillow13"
    return "pillow13" if major >= 13 else "horizontal_first"


def _image_section(model: Any) -> dict[str, Any]:
    import open_clip

    cfg = dict(open_clip.get_model_preprocess_cfg(model))
    size = cfg.get("size", 224)
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ExportError(f"--clip: non-square image size {size} is not supported")
        size = size[0]
    mean, std = cfg.get("mean"), cfg.get("std")
    mean = [float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean] * 3)]
    std = [float(v) for v in (std if isinstance(std, (list, tuple)) else [std] * 3)]
    resize_mode = str(cfg.get("resize_mode", "shortest"))
    interpolation = str(cfg.get("interpolation", "bicubic"))
    if interpolation == "random":  # open_clip maps it to bicubic for inference
        interpolation = "bicubic"
    section = {
        "size": int(size),
        "mean": mean,
        "std": std,
        "interpolation": interpolation,
        "resize_mode": resize_mode,
        "crop": "center" if resize_mode == "shortest" else "none",
        "resize_order": _pillow_order(),
        "input": "pixels",
        "output": "embeddings",
    }
    if getattr(model, "from_tags", None):
        section["from_tags"] = model.from_tags  # preprocessing of these tags (checkpoint file)
    try:
        ClipPreprocess.from_section(section)
    except Exception as exc:
        raise ExportError(
            f"--clip: the edge runtime cannot reproduce this preprocessing: {exc}"
        ) from exc
    return section


def _tokenizer_section(model_name: str, model: Any, out_dir: Path) -> tuple[dict[str, Any], Any]:
    import open_clip
    from open_clip import tokenizer as oct

    tok = open_clip.get_tokenizer(model_name)
    if not isinstance(tok, oct.SimpleTokenizer):
        raise ExportError(
            f"--clip {model_name}: its tokenizer is {type(tok).__name__}; the edge runtime "
            "implements open_clip's SimpleTokenizer only (OpenAI/LAION CLIP, MobileCLIP)"
        )
    if tok.reduction_fn is not None or tok.clean_fn is not oct.get_clean_fn("lower"):
        raise ExportError(
            f"--clip {model_name}: its SimpleTokenizer uses non-default cleaning/reduction, "
            "which the edge tokenizer does not implement"
        )
    ctx = int(getattr(model, "context_length", tok.context_length) or tok.context_length)
    if ctx != tok.context_length:
        raise ExportError(
            f"--clip {model_name}: tokenizer context {tok.context_length} != model {ctx}"
        )
    shutil.copyfile(oct.default_bpe(), out_dir / BPE_FILE)
    section = {
        "type": "open_clip.SimpleTokenizer",
        "bpe": BPE_FILE,
        "context_length": ctx,
        "sot_id": int(tok.sot_token_id),
        "eot_id": int(tok.eot_token_id),
        "pad_id": 0,
        "vocab_size": int(tok.vocab_size),
        "clean": "lower",
    }
    return section, tok


@dataclass
class _Towers:
    """The two encoders of one export on their way into the bundle.

    Attributes:
        out_dir: The bundle being assembled.
        files: Tower -> precision -> file name (every precision, before any is dropped).
        inputs: Tower -> the verification inputs (pixels, token ids).
        ref: Tower -> torch's normalised embeddings of :attr:`inputs`.
        first_crop: Index of the first demo crop in the image inputs (the rest is random).
        threads: onnxruntime threads for the checks.
    """

    out_dir: Path
    files: dict[str, dict[str, str]]
    inputs: dict[str, np.ndarray]
    ref: dict[str, np.ndarray]
    first_crop: int
    threads: int | None

    def path(self, tower: str, precision: str) -> Path:
        """The ``tower``'s encoder file of ``precision``."""
        return self.out_dir / self.files[tower][precision]

    def check(self, precision: str, verify: dict[str, Any]) -> list[str]:
        """ONNX vs torch cosines of both towers at ``precision``, recorded in ``verify``.

        Returns:
            The int8 shortfalls (int8 is gated on what it will see: demo crops and real
            prompts; random-normal pixels are no image, their ranges are reported, not gated).

        Raises:
            ExportError: An fp32 encoder below :data:`MIN_FP32_COSINE` (a broken export).
        """
        failures = []
        for tower in TOWERS:
            sess = create_session(self.path(tower, precision), threads=self.threads)
            name = sess.get_inputs()[0].name
            got = sess.run(None, {name: self.inputs[tower]})[0]
            single = sess.run(None, {name: self.inputs[tower][:1]})[0]  # dynamic batch
            cos = _cosines(got, self.ref[tower])
            facts = verify[f"{tower}_{precision}"] = {
                "cosine_min": round(float(cos.min()), 7),
                "cosine_mean": round(float(cos.mean()), 7),
                "max_abs": float(np.abs(got - self.ref[tower]).max()),
                "batch1_max_abs": float(np.abs(single[0] - got[0]).max()),
            }
            if tower == "image":
                facts["demo_crops_cosine_min"] = round(float(cos[self.first_crop :].min()), 7)
            if precision == "fp32" and cos.min() < MIN_FP32_COSINE:
                raise ExportError(
                    f"CLIP {tower} encoder: ONNX fp32 vs torch cosine {cos.min():.6f} < "
                    f"{MIN_FP32_COSINE}; refusing to write a bundle with a broken encoder"
                )
            gated = cos[self.first_crop :] if tower == "image" else cos
            if precision == "int8" and gated.min() < MIN_INT8_COSINE:
                failures.append(
                    f"{tower} int8 vs torch cosine {gated.min():.6f} < {MIN_INT8_COSINE} on "
                    f"the verify {'crops' if tower == 'image' else 'prompts'}"
                )
        return failures


def _reparameterized_reference(
    model: Any, pixels: np.ndarray
) -> tuple[np.ndarray, list[str], float]:
    """Re-parameterise a conv tower for inference (MobileOne/FastViT branches folded).

    Returns:
        (torch's normalised image embeddings of ``pixels`` after it, the folded modules, the
        lowest cosine between before and after).

    Raises:
        ExportError: The folded tower computes something else (cosine < MIN_FP32_COSINE).
    """
    import torch

    with torch.no_grad(), _mha_fastpath_off():
        before = model.encode_image(torch.from_numpy(pixels), normalize=True).numpy()
        folded = reparameterize(model)
        after = model.encode_image(torch.from_numpy(pixels), normalize=True).numpy()
    cos = float(_cosines(before, after).min())
    if cos < MIN_FP32_COSINE:
        raise ExportError(
            f"CLIP image tower: re-parameterised vs original torch cosine {cos:.6f} "
            f"< {MIN_FP32_COSINE} ({', '.join(folded)})"
        )
    return after, folded, cos


def _export_towers(
    model: Any, ref_tok: Any, size: int, out_dir: Path
) -> dict[str, dict[str, str]]:
    """Both fp32 encoders exported; returns tower -> precision -> file name."""
    import torch

    files = {t: {p: clip_file(t, p) for p in CLIP_PRECISIONS} for t in TOWERS}
    _export_tower(
        _ImageEncoder.build(model),
        torch.zeros(1, 3, size, size),
        out_dir / files["image"]["fp32"],
        "pixels",
    )
    dummy_tokens = torch.as_tensor(ref_tok(["a photo of a dog"]).numpy().astype(np.int32))
    _export_tower(
        _TextEncoder.build(model), dummy_tokens, out_dir / files["text"]["fp32"], "tokens"
    )
    return files


def _quantized(
    towers: _Towers, verify: dict[str, Any], model_name: str, keep_fp32: bool
) -> list[str]:
    """Both towers quantized and checked; returns the int8 shortfalls after removing the int8
    files they condemn (an int8-only export with one is an error)."""
    for tower in TOWERS:
        quantize(towers.path(tower, "fp32"), towers.path(tower, "int8"), QUANT_OPS_BY_TOWER[tower])
    failures = towers.check("int8", verify)
    if not failures:
        return []
    verify["int8_refused"] = failures
    if not keep_fp32:
        raise ExportError(
            f"CLIP {model_name}: {'; '.join(failures)}; refusing an int8-only "
            "bundle (export with --clip-precision all for fp32 CLIP)"
        )
    _LOGGER.warning(
        "CLIP %s: int8 left out (%s); the bundle keeps fp32 CLIP", model_name, "; ".join(failures)
    )
    for tower in TOWERS:
        towers.path(tower, "int8").unlink()
    return failures


def export_clip(
    model_name: str,
    pretrained: str | os.PathLike[str] | None,
    out_dir: Path,
    int8: bool = True,
    keep_fp32: bool = True,
    *,
    model_kwargs: dict[str, Any] | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> ClipSection:
    """Export an open_clip model's image and text encoders into ``out_dir``.

    One straight line: load the model, write the tokenizer, fold a conv tower's branches,
    export both fp32 encoders, check them against torch, quantize and check int8, export a
    conv tower's dense map, and describe it all as the typed ``clip`` section.

    Args:
        model_name: open_clip model, e.g. ``"ViT-B-32-quickgelu"`` (FastSAM's CLIP).
        pretrained: Pretrained tag (e.g. ``"openai"``; needs the open_clip/HF cache or network),
            a local checkpoint file, or ``None`` for random weights (tests only).
        out_dir: Bundle directory being assembled (the encoders and tokenizer files land here).
        int8: Also write dynamic-int8 encoders.
        keep_fp32: Keep the fp32 encoders (``False``: int8 only; they are still exported to
            quantize and verify, then removed).
        model_kwargs: Overrides for ``open_clip.create_model_and_transforms`` (tiny test configs).
        threads: onnxruntime threads for the checks.
        progress: Show a tqdm progress bar.

    Returns:
        The ``clip`` manifest section (``export_bundle`` writes it into ``bundle.json``).

    Raises:
        ExportError: Bad model/pretrained, unsupported tokenizer or preprocessing, or an
            fp32 encoder whose embeddings differ from torch (cosine < :data:`MIN_FP32_COSINE`).
    """
    if not int8 and not keep_fp32:
        raise ExportError("--precision: CLIP needs fp32 or int8 encoders; both were dropped")
    import torch
    from tqdm import tqdm

    out_dir = Path(out_dir)
    steps = ["load", "tokenizer", "export", "verify fp32"] + (["int8"] if int8 else [])
    bar = tqdm(total=len(steps) + 1, desc=f"CLIP {model_name}", unit="step", disable=not progress)
    try:
        bar.set_postfix_str("load")
        with torch.no_grad():
            model, _, pretrained_info = load_model(model_name, pretrained, model_kwargs)
        bar.update()
        bar.set_postfix_str("tokenizer")
        tok_section, ref_tok = _tokenizer_section(model_name, model, out_dir)
        edge_tok = ClipTokenizer.from_file(
            out_dir / BPE_FILE, context_length=tok_section["context_length"]
        )
        image_section = _image_section(model)
        pixels, first_crop = _verify_images(
            image_section["size"], ClipPreprocess.from_section(image_section)
        )
        bar.update()
        bar.set_postfix_str("export")
        image_ref, folded, reparam_cos = _reparameterized_reference(model, pixels)
        image_section["max_batch"] = MAX_BATCH_CONV if folded else MAX_BATCH_VIT
        files = _export_towers(model, ref_tok, image_section["size"], out_dir)
        bar.update()
        bar.set_postfix_str("verify fp32")
        prompts = list(VERIFY_PROMPTS)
        ref_ids = ref_tok(prompts).numpy()
        tokens = ref_ids.astype(np.int32)
        with torch.no_grad(), _mha_fastpath_off():
            text_ref = model.encode_text(torch.from_numpy(tokens), normalize=True).numpy()
        towers = _Towers(
            out_dir,
            files,
            {"image": pixels, "text": tokens},
            {"image": image_ref, "text": text_ref},
            first_crop,
            threads,
        )
        verify: dict[str, Any] = {
            "inputs": {
                "images": len(pixels),
                "demo_crops": len(pixels) - first_crop,
                "demo_scenes": list(VERIFY_SCENES),
                "prompts": prompts,
            },
            "tokenizer_parity": bool(np.array_equal(edge_tok(prompts), ref_ids)),
            "min_fp32_cosine": MIN_FP32_COSINE,
            "min_int8_cosine": MIN_INT8_COSINE,
            "reparameterized": folded,
            "reparam_cosine_min": round(reparam_cos, 7),
        }
        if not verify["tokenizer_parity"]:
            raise ExportError("edge tokenizer ids differ from open_clip's on the verify prompts")
        towers.check("fp32", verify)
        bar.update()
        int8_ok = False
        if int8:
            bar.set_postfix_str("int8")
            int8_ok = not _quantized(towers, verify, model_name, keep_fp32)
            bar.update()
        # int8 refused keeps fp32 (an int8-only export raised above)
        precisions = [
            p for p in CLIP_PRECISIONS if (p == "fp32" and keep_fp32) or (p == "int8" and int8_ok)
        ] or ["fp32"]
        bar.set_postfix_str("dense")
        dense = export_dense(model, out_dir, pixels, image_ref, precisions, threads)
        bar.update()
        if not keep_fp32:
            for tower in TOWERS:
                towers.path(tower, "fp32").unlink()
    finally:
        bar.close()
    return _clip_section(
        model_name, model, model_kwargs, pretrained_info, image_section, tok_section,
        files, precisions, verify, dense, int(image_ref.shape[1]),
    )  # fmt: skip


def _clip_section(
    model_name: str,
    model: Any,
    model_kwargs: dict[str, Any] | None,
    pretrained_info: Any,
    image_section: dict[str, Any],
    tok_section: dict[str, Any],
    files: dict[str, dict[str, str]],
    precisions: list[str],
    verify: dict[str, Any],
    dense: dict[str, Any] | None,
    embed_dim: int,
) -> ClipSection:
    """The typed ``clip`` section of an export."""
    section: dict[str, Any] = {
        "model": model_name,
        "model_kwargs": model_kwargs or {},
        "pretrained": pretrained_info,
        "embed_dim": embed_dim,
        "logit_scale": round(float(model.logit_scale.detach().exp()), 6),
        "image": image_section,
        "text": {"input": "tokens", "input_dtype": "int32", "output": "embeddings"},
        "tokenizer": tok_section,
        "files": {t: {p: files[t][p] for p in precisions} for t in TOWERS},
        "precisions": precisions,
        "default_precision": precisions[0],
        "opset": OPSET,
        "quantization": quantization_section() if "int8" in precisions else None,
        "verify": verify,
        "exporter": package_versions(
            ("open-clip-torch", "torch", "onnx", "onnxruntime", "pillow", "torchvision")
        ),
    }
    if dense is not None:  # conv towers only: per-location image embeddings (text prefilter)
        section["dense"] = dense
    return ClipSection.from_json(section)


@dataclass(frozen=True)
class ClipOptions:
    """``export_bundle(clip=...)``: the :func:`export_clip` arguments but the bundle directory."""

    model_name: str
    pretrained: str | os.PathLike[str] | None
    int8: bool = True
    keep_fp32: bool = True
    model_kwargs: dict[str, Any] | None = None
    threads: int | None = None
    progress: bool = True

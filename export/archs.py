"""FastSAM architectures built from ultralytics configs, for tests, benchmarks and the demo.

No weights can be downloaded here, so parity tests and benchmarks use the real FastSAM-s / -x
architectures (``yolov8s-seg.yaml`` / ``yolov8x-seg.yaml``, nc=1; -x with DFL reg_max 26) with
seeded weights. A freshly initialised YOLOv8 head is degenerate (a handful of distinct scores,
all boxes one size), so the last conv of each head branch is re-initialised from a seeded
generator: scores, box sizes and mask coefficients then spread like a trained model's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # name: (ultralytics yaml, reg_max)
    "fastsam-s": {"yaml": "yolov8s-seg.yaml", "reg_max": 16, "score_std": 0.03},
    # The x head sees larger features: a narrower score spread keeps scores off 0 and 1.
    "fastsam-x": {"yaml": "yolov8x-seg.yaml", "reg_max": 26, "score_std": 0.002},
    "fastsam-n": {"yaml": "yolov8n-seg.yaml", "reg_max": 16, "score_std": 0.03},
}


def _offline() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")


def build_model(
    arch: str, seed: int = 0, score_bias: float = -1.0, score_std: float | None = None
) -> Any:
    """Build a FastSAM-architecture ``SegmentationModel`` with a seeded, spread head.

    Args:
        arch: One of :data:`ARCHITECTURES`.
        seed: Seed of every random weight (the model is reproducible).
        score_bias: Bias of the class logits (shifts how many anchors pass a threshold).
        score_std: Std of the class-logit conv weights (spreads the scores); default per
            architecture.

    Returns:
        A ``ultralytics.nn.tasks.SegmentationModel`` in eval mode, nc=1.
    """
    _offline()
    import torch
    from ultralytics.nn.tasks import SegmentationModel, yaml_model_load

    spec = ARCHITECTURES[arch]
    if score_std is None:
        score_std = spec["score_std"]
    cfg = yaml_model_load(spec["yaml"])
    cfg["nc"] = 1
    cfg["reg_max"] = spec["reg_max"]
    torch.manual_seed(seed)
    model = SegmentationModel(cfg, ch=3, nc=1, verbose=False)
    head = model.model[-1]
    gen = torch.Generator().manual_seed(seed + 1)
    _calibrate_batchnorm(model, gen)
    with torch.no_grad():
        for branch, std, bias in (
            (head.cv2, 2.0, 0.0),  # DFL box logits: varied box sizes
            (head.cv3, score_std, score_bias),  # class logits: spread scores
            (head.cv4, 0.5, 0.0),  # mask coefficients
        ):
            for seq in branch:
                conv = seq[-1]
                w = (
                    torch.randn(conv.weight.shape, generator=gen)
                    * std
                    / conv.weight.shape[1] ** 0.5
                )
                conv.weight.copy_(w)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.3 + bias)
    model.names = {0: "object"}
    model.args = {"imgsz": 640, "task": "segment"}
    model.eval()
    return model


def _calibrate_batchnorm(model: Any, gen: Any, batches: int = 3, size: int = 256) -> None:
    """Set every BatchNorm's running statistics from seeded multi-scale noise images.

    Fresh BN layers are the identity, and activations shrink layer after layer until the head
    sees near-constant features (hence the degenerate scores); normalising with real statistics
    keeps features O(1) everywhere, like a trained network's.
    """
    import torch
    import torch.nn.functional as F

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            img = torch.zeros(2, 3, size, size)
            for cells in (4, 16, 64):
                noise = torch.rand(2, 3, cells, cells, generator=gen)
                img += F.interpolate(noise, size=(size, size), mode="bilinear") / 3
            model(img)
    model.eval()


def save_checkpoint(model: Any, path: str | Path, imgsz: int = 640) -> Path:
    """Save a model as an ultralytics-loadable ``.pt`` (what ``FastSAM(path)`` reads)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "model": model.float(),
        "train_args": {"imgsz": imgsz, "task": "segment", "single_cls": True},
        "date": None,
        "version": "fastsam-edge",
    }
    torch.save(ckpt, path)
    return path


def make_checkpoint(arch: str, path: str | Path, seed: int = 0, **kwargs: Any) -> Path:
    """Build (:func:`build_model`) and save (:func:`save_checkpoint`) in one call."""
    return save_checkpoint(build_model(arch, seed=seed, **kwargs), path)

"""Export FastSAM weights to an ONNX model bundle (``bundle.json`` + ``fastsam.fp32.onnx``).

The detector is exported with ultralytics' own exporter (so the reference pipeline can run on
the very same ONNX file), checked with onnxruntime, hashed and described in the manifest. The
bundle is assembled in a temporary sibling directory and renamed into place, so a failed export
never leaves a half-written bundle.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.bundle import (
    DETECTOR_FILES,
    MANIFEST_NAME,
    BundleManifest,
    ClipSection,
    FileEntry,
    InputSpec,
    QuantSection,
    Thresholds,
    sha256_file,
)
from edge.errors import FastSAMEdgeError
from edge.preprocess import make_divisible
from export.common import ExportError, package_versions

if TYPE_CHECKING:
    from export.clip import ClipOptions
    from export.int8plan import PlanOptions
    from export.quantize import QuantConfig

_LOGGER = logging.getLogger(__name__)

STRIDE = 32
NUM_COEFFICIENTS = 32


def parse_imgsz(value: str | int | tuple[int, int]) -> tuple[int, int]:
    """Parse an input size: ``640`` (square) or ``"640x480"`` (width x height, a camera mode).

    Sides that are not multiples of the stride are rounded up, as the reference does.

    Returns:
        (height, width), both multiples of 32.

    Raises:
        ExportError: Unparseable or non-positive size.
    """
    if isinstance(value, tuple):
        h, w = value
    elif isinstance(value, int):
        h = w = value
    else:
        text = str(value).lower().strip()
        try:
            if "x" in text:
                ws, hs = text.split("x")
                w, h = int(ws), int(hs)
            else:
                h = w = int(text)
        except ValueError as exc:
            raise ExportError(
                f"--imgsz: expected N or WxH (e.g. 640 or 640x480), got {value!r}"
            ) from exc
    if h <= 0 or w <= 0:
        raise ExportError(f"--imgsz: sides must be positive, got {value!r}")
    rh, rw = make_divisible(h, STRIDE), make_divisible(w, STRIDE)
    if (rh, rw) != (h, w):
        _LOGGER.warning(
            "--imgsz %s is not a multiple of %d; using H=%d W=%d", value, STRIDE, rh, rw
        )
    return rh, rw


@dataclass(frozen=True)
class CheckpointInfo:
    """What an exported checkpoint is."""

    path: Path
    sha256: str
    architecture: str
    num_classes: int
    reg_max: int
    train_imgsz: int | None


def inspect_checkpoint(weights: str | Path) -> CheckpointInfo:
    """Load and validate a FastSAM (YOLOv8-seg, nc=1) checkpoint.

    Raises:
        ExportError: Missing, unreadable or corrupt file, or not a one-class segmentation model.
    """
    path = Path(weights)
    if not path.is_file():
        raise ExportError(f"weights: {str(path)!r} does not exist")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    import ultralytics  # noqa: F401  (a checkpoint pickles its classes: a missing one is the
    # export extra missing, said by the CLI, not "an unreadable checkpoint")

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ExportError(
            f"weights: {str(path)!r} is not a readable torch checkpoint: {exc}"
        ) from exc
    model = ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else None
    if model is None:
        raise ExportError(f"weights: {str(path)!r} holds no 'model' (is it an ultralytics .pt?)")
    from ultralytics.nn.modules.head import Segment

    head = model.model[-1] if hasattr(model, "model") else None
    if type(head).__name__.startswith("YOLOE"):
        raise ExportError(
            f"weights: {str(path)!r} is a YOLOE checkpoint: fastsam-export exports it as an "
            "open-vocabulary bundle (from Python: export.yoloe.export_yoloe_bundle)"
        )
    if not isinstance(head, Segment):
        raise ExportError(
            f"weights: {str(path)!r} is not a segmentation model (head {type(head).__name__}); "
            "FastSAM checkpoints are YOLOv8-seg"
        )
    if head.nc != 1 or head.nm != NUM_COEFFICIENTS:
        raise ExportError(
            f"weights: {str(path)!r} has nc={head.nc}, nm={head.nm}; FastSAM is class-agnostic "
            f"(nc=1, nm={NUM_COEFFICIENTS})"
        )
    yaml_file = getattr(model, "yaml", {}).get("yaml_file", "") if hasattr(model, "yaml") else ""
    args = ckpt.get("train_args") or {}
    return CheckpointInfo(
        path=path,
        sha256=sha256_file(path),
        architecture=Path(str(yaml_file)).stem or type(model).__name__,
        num_classes=int(head.nc),
        reg_max=int(head.reg_max),
        train_imgsz=args.get("imgsz") if isinstance(args.get("imgsz"), int) else None,
    )


def _export_onnx(info: CheckpointInfo, imgsz: tuple[int, int], dynamic: bool, work: Path) -> Path:
    """Run ultralytics' ONNX exporter on a private copy of the weights; returns the .onnx."""
    from ultralytics import YOLO

    local = work / "model.pt"
    shutil.copy2(info.path, local)
    model = YOLO(str(local), task="segment")
    out = model.export(
        format="onnx",
        imgsz=list(imgsz),
        dynamic=dynamic,
        simplify=True,
        batch=1,
        device="cpu",
        half=False,
        verbose=False,
    )
    onnx_path = Path(out)
    if not onnx_path.is_file():
        raise ExportError(f"ultralytics exporter did not write {onnx_path}")
    return onnx_path


def _check_detector(path: Path, imgsz: tuple[int, int]) -> int:
    """Run the exported detector once and check its I/O; returns the opset."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    out0, out1 = sess.run(None, {inp.name: np.zeros((1, 3, *imgsz), dtype=np.float32)})
    h, w = imgsz
    n = (h // 8) * (w // 8) + (h // 16) * (w // 16) + (h // 32) * (w // 32)
    expected0 = (1, 5 + NUM_COEFFICIENTS, n)
    expected1 = (1, NUM_COEFFICIENTS, h // 4, w // 4)
    if out0.shape != expected0 or out1.shape != expected1:
        raise ExportError(f"exported model has unexpected outputs {out0.shape}, {out1.shape}")
    return int(opset)


def _count_gop(detector: Path, hw: tuple[int, int]) -> float:
    """Operations per image (1e9, multiply-add = 2) at the export size, for ``bench`` on bundles
    whose fp32 file is dropped; counted as ``edge.opcount`` does (onnxruntime profile)."""
    from edge.opcount import profile_model

    return round(profile_model(detector, (1, 3, hw[0], hw[1]), threads=1, runs=1)["gop"], 3)


def write_manifest(bundle_dir: Path, manifest: BundleManifest) -> None:
    """Write ``bundle.json`` (pretty, sorted file list)."""
    import json

    (bundle_dir / MANIFEST_NAME).write_text(
        json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8"
    )


def file_entry(path: Path, role: str, precision: str | None = None) -> FileEntry:
    """Integrity facts of one bundle file."""
    return FileEntry(
        sha256=sha256_file(path), bytes=path.stat().st_size, role=role, precision=precision
    )


def publish_bundle(tmp_dir: Path, out: Path) -> None:
    """Atomically move a finished bundle directory into place, replacing an older bundle."""
    old = None
    if out.exists():
        if not (out / MANIFEST_NAME).is_file() and any(out.iterdir()):
            raise ExportError(
                f"--out: {str(out)!r} exists and is not a bundle; refusing to replace it"
            )
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp_dir, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class DetectorExport:
    """The fp32 detector written into a bundle, and its facts for the manifest.

    Attributes:
        file: Its file name in the bundle (``fastsam.fp32.onnx``).
        opset: Its ONNX opset.
        gop: Operations per image (1e9) at the export size (``detector_gop``).
        source: Facts about the source weights (``bundle.json``'s ``source``).
    """

    file: str
    opset: int
    gop: float
    source: dict[str, Any]


def export_detector(
    info: CheckpointInfo, imgsz: tuple[int, int], dynamic: bool, bundle_dir: Path
) -> DetectorExport:
    """Export the checkpoint's detector to ``bundle_dir/fastsam.fp32.onnx`` and check it.

    Args:
        info: The checkpoint (:func:`inspect_checkpoint`).
        imgsz: (height, width), multiples of 32 (:func:`parse_imgsz`).
        dynamic: Dynamic H/W (reference-exact rectangular letterbox).
        bundle_dir: The bundle directory being assembled.

    Raises:
        ExportError: The exporter failed or wrote a model with unexpected outputs.
    """
    with tempfile.TemporaryDirectory(prefix="fastsam-export-") as work:
        onnx_path = _export_onnx(info, imgsz, dynamic, Path(work))
        detector = bundle_dir / DETECTOR_FILES["fp32"]
        shutil.move(str(onnx_path), detector)
    return DetectorExport(
        file=detector.name,
        opset=_check_detector(detector, imgsz),
        gop=_count_gop(detector, imgsz),
        source={
            "weights": info.path.name,
            "sha256": info.sha256,
            "architecture": info.architecture,
            "reg_max": info.reg_max,
            "train_imgsz": info.train_imgsz,
        },
    )


def bundle_manifest(
    bundle_dir: Path,
    name: str,
    input_spec: InputSpec,
    thresholds: Thresholds,
    detector: DetectorExport,
    quantization: QuantSection | None = None,
    clip: ClipSection | None = None,
) -> BundleManifest:
    """The manifest of an assembled bundle: every file in ``bundle_dir`` hashed, the detector
    precisions present, and the typed sections in ``bundle.json``'s order."""
    files = {detector.file: file_entry(bundle_dir / detector.file, "detector", "fp32")}
    precisions = ["fp32"]
    for p in sorted(bundle_dir.iterdir()):
        if p.name not in files and p.name != MANIFEST_NAME:
            prec = next((k for k, v in DETECTOR_FILES.items() if v == p.name), None)
            files[p.name] = file_entry(p, "detector" if prec else "asset", prec)
            if prec and prec not in precisions:
                precisions.append(prec)
    return BundleManifest(
        name=name,
        input=input_spec,
        thresholds=thresholds,
        files=files,
        precisions=tuple(precisions),
        default_precision="fp32",
        opset=detector.opset,
        num_coefficients=NUM_COEFFICIENTS,
        source=detector.source,
        exporter=package_versions(
            ("fastsam-edge", "torch", "ultralytics", "onnx", "onnxruntime", "onnxslim")
        ),
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        detector_gop=detector.gop,
        quantization=quantization,
        clip=clip,
    )


def finish_bundle(tmp_dir: Path, out: Path, measure_memory: bool) -> None:
    """The last steps of every export: record the staged bundle's peak memory (a failed
    measurement only warns: the bundle is fine without its figures), then rename it into
    place (:func:`publish_bundle`)."""
    if measure_memory:
        from export.memory import record_memory

        try:
            record_memory(tmp_dir)
        except FastSAMEdgeError as exc:
            _LOGGER.warning("peak memory not recorded: %s", exc)
    publish_bundle(tmp_dir, out)


def _staging_dir(out: Path) -> Path:
    """A fresh sibling of ``out`` to assemble the bundle in (renamed into place at the end)."""
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
        tmp_dir.chmod(0o755)  # mkdtemp is private (0700); a bundle is read by a service user
    except OSError as exc:
        raise ExportError(f"--out: cannot write to {str(parent)!r}: {exc}") from exc
    return tmp_dir


def export_bundle(
    weights: str | Path,
    out: str | Path,
    imgsz: str | int | tuple[int, int] = 640,
    dynamic: bool = False,
    name: str | None = None,
    thresholds: Thresholds | None = None,
    clip: ClipOptions | None = None,
    int8: bool = True,
    calib_images: str | Path | None = None,
    quant_config: QuantConfig | None = None,
    verify_threads: int = 2,
    int8_min_iou: float = 0.95,
    calibrate_text: str | Path | None = None,
    measure_memory: bool = True,
    verify_images: str | Path | None = None,
    int8_plan: PlanOptions | None = None,
) -> Path:
    """Export FastSAM weights (and optionally CLIP) into a bundle directory.

    YOLOE -seg checkpoints are refused with a pointer to :func:`export.yoloe.export_yoloe_bundle`
    (``fastsam-export`` picks the right one itself).

    One straight line: :func:`export_detector`, then ``quantize_detector``
    (:mod:`export.quantize`, with ``int8``), then ``export_clip`` (:mod:`export.clip`, with
    ``clip``), each returning its section; :func:`bundle_manifest` writes them into
    ``bundle.json``; the text threshold is measured (``calibrate_text``) and the peak memory
    recorded (``measure_memory``) on the staged bundle, which is then renamed into place, so
    every caller gets the same complete bundle.

    Args:
        weights: FastSAM ``.pt`` checkpoint (FastSAM-s.pt, FastSAM-x.pt or compatible).
        out: Bundle directory to create (an existing bundle there is replaced atomically).
        imgsz: Square side, ``"WxH"`` string or (H, W) tuple. With ``dynamic`` it is the letterbox
            target (the reference's imgsz) and the model accepts any stride-multiple shape.
        dynamic: Export with dynamic H/W (reference-exact rectangular letterbox).
        name: Bundle name (default: weights stem + size).
        thresholds: Default thresholds (FastSAM's conf 0.4, iou 0.9, max_det 300).
        clip: Also export these CLIP encoders (text prompts); ``None``: detector only.
        int8: Also write ``fastsam.int8.onnx`` (static QDQ, calibrated, verified; see
            :mod:`export.quantize`). A model that fails verification is left out.
        calib_images: Calibration image directory (default: built-in synthetic scenes).
        quant_config: :class:`export.quantize.QuantConfig` (default recipe if ``None``).
        verify_threads: onnxruntime threads for the int8 verification timings.
        int8_min_iou: ``fixed`` plan: refuse the int8 model below this held-out mean mask IoU
            against fp32.
        calibrate_text: Measure the text threshold on this folder (images + ``words.json``;
            needs ``clip``) into ``clip.text_threshold``.
        measure_memory: Record the peak memory per precision (``memory``; the Pi unit's
            ``MemoryMax=`` follows it). A failed measurement only logs a warning.
        verify_images: Held-out int8 verification images (default: every other calibration
            image is held out).
        int8_plan: How the int8 precision plan is chosen (default: search for the cheapest plan
            reaching mean IoU >= 0.97 both ways, recall loss <= 1 pt, >= 1.3x fp32).

    Returns:
        The bundle directory.

    Raises:
        ExportError: Bad weights, bad size, unwritable output, or a failed check.
    """
    hw = parse_imgsz(imgsz)
    out = Path(out).absolute()
    info = inspect_checkpoint(weights)
    th = thresholds or Thresholds()
    tmp_dir = _staging_dir(out)
    try:
        detector = export_detector(info, hw, dynamic, tmp_dir)
        quantization = None
        if int8:
            from export.quantize import quantize_detector

            try:
                quantization = quantize_detector(
                    tmp_dir, hw, dynamic, th, calib_images, quant_config, int8_min_iou,
                    verify_threads, verify_dir=verify_images, plan=int8_plan,
                )  # fmt: skip
            except ValueError as exc:
                raise ExportError(str(exc)) from exc
        clip_section = None
        if clip is not None:
            from export.clip import export_clip

            clip_section = export_clip(
                clip.model_name, clip.pretrained, tmp_dir, clip.int8, clip.keep_fp32,
                model_kwargs=clip.model_kwargs, threads=clip.threads, progress=clip.progress,
            )  # fmt: skip
        manifest = bundle_manifest(
            tmp_dir,
            name or f"{info.path.stem}-{hw[0]}x{hw[1]}{'-dynamic' if dynamic else ''}",
            InputSpec(dynamic=dynamic, imgsz=hw, stride=STRIDE, name="images"),
            th,
            detector,
            quantization,
            clip_section,
        )
        write_manifest(tmp_dir, manifest)
        if calibrate_text is not None:
            from export.calibrate_text import calibrate_bundle

            calibrate_bundle(tmp_dir, calibrate_text)
        finish_bundle(tmp_dir, out, measure_memory)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out

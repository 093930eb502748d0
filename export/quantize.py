"""Static int8 (QDQ) quantization of the FastSAM detector, calibrated through edge's letterbox.

What stays float, and why:

* **The decode tail** (everything downstream of the head's last convs: DFL softmax, anchor
  decode, score sigmoid, the final concat). The concat mixes pixel coordinates (0..640), scores
  (0..1) and mask coefficients (about +-10) into one tensor; a single int8 scale for it wipes
  out the scores and no detection survives.
* **Head branches listed in ``float_branches``** (default: the score branch ``cv3`` and the
  mask-coefficient branch ``cv4``, their last convs only). Scores decide which masks exist and
  coefficients decide every mask pixel (a mask is ``sign(c . P)``), so small int8 errors there
  flip thresholds and mask edges; they cost little time (1x1 convs).

Weights are quantized per channel (int8, symmetric), activations per tensor (uint8) with the
chosen calibration method. The result is verified against the fp32 model by
:func:`verify_int8` (mask IoU both ways and recall) twice: with this host's fused integer kernels
and with a CPU-independent reference (the QDQ graph unfused), because x86 CPUs without VNNI
saturate u8 x s8 sums and compute numbers a Pi does not (:mod:`edge.cpu`). The export refuses an
int8 model whose reference agreement falls below the threshold.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import QuantSection, Thresholds
from edge.preprocess import letterbox

_LOGGER = logging.getLogger(__name__)

# the last conv of each head branch: cv2 box, cv3 score (YOLOE: embedding), cv4 coefficients
# (YOLOE: cv5), and YOLOE-26's one2one_ copies (export.yoloe calls the branches directly, so
# its names lack the head's /model.N scope); group 2 is the branch without the prefix
_HEAD_LAST_CONV = re.compile(
    r"(?:^|/)(?:model\.\d+/)?((?:one2one_)?)(cv[2-5])\.(\d+)/\1\2\.\3\.2/Conv$"
)
DEFAULT_FLOAT_BRANCHES = ("cv3", "cv4")
# Whole modules that a recipe can keep float (every node whose name matches), by name:
FLOAT_MODULES = {
    "stem": re.compile(r"^/model\.0/"),  # the first conv: sees raw pixels
    "proto": re.compile(r"^/model\.\d+/proto/"),  # prototype masks: every mask pixel
    "head": re.compile(r"^/model\.\d+/cv[234]\.\d+/"),  # all box/score/coefficient convs
    "coef": re.compile(r"^/model\.\d+/cv4\.\d+/"),  # all coefficient-branch convs
    "score": re.compile(r"^/model\.\d+/cv3\.\d+/"),  # all score-branch convs
    # YOLOE (export.yoloe names head branches without the /model.N scope): the whole
    # embedding branch (what the words are scored against) and coefficient branch
    "embed": re.compile(r"(?:^|/)(?:model\.\d+/)?(?:one2one_)?cv3\.\d+/"),
    "coef5": re.compile(r"(?:^|/)(?:model\.\d+/)?(?:one2one_)?cv5\.\d+/"),
}
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class QuantConfig:
    """Int8 recipe.

    Attributes:
        method: Activation calibration: ``minmax``, ``percentile`` (99.999) or ``entropy``.
        per_channel: Per-output-channel weight scales.
        float_branches: Head branches whose last conv stays float (``cv2`` box, ``cv3`` score,
            ``cv4`` coefficients).
        num_images: Calibration images used.
        format: ``"qdq"`` (QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into
            QLinear kernels at load) or ``"qoperator"`` (QLinearConv etc. written directly).
        float_ops: Operator types left float everywhere (e.g. ``("Sigmoid", "Mul")`` keeps
            every SiLU float); empty = quantize every supported operator.
        activations: ``"uint8"`` (asymmetric, u8s8 kernels) or ``"int8"`` (symmetric, s8s8).
        float_modules: Keys of :data:`FLOAT_MODULES` kept float entirely (e.g. ``("proto",)``).
    """

    method: str = "minmax"
    per_channel: bool = True
    float_branches: tuple[str, ...] = DEFAULT_FLOAT_BRANCHES
    num_images: int = 24
    format: str = "qdq"
    float_ops: tuple[str, ...] = ()
    activations: str = "uint8"
    float_modules: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description for the manifest."""
        return {
            "format": {"qdq": "QDQ", "qoperator": "QOperator"}.get(self.format, self.format),
            "weights": "int8 per-channel" if self.per_channel else "int8 per-tensor",
            "activations": f"{self.activations} per-tensor",
            "float_ops": list(self.float_ops),
            "calibration": self.method,
            "float_branches": list(self.float_branches),
            "float_modules": list(self.float_modules),
            "decode_tail": "float",
            "calibration_images": self.num_images,
        }


def float_nodes(model: Any, float_branches: Iterable[str]) -> list[str]:
    """Names of nodes to keep float: the decode tail and the chosen head-branch last convs.

    Args:
        model: ``onnx.ModelProto`` of the fp32 detector (ultralytics export).
        float_branches: Branch names (``cv2``, ``cv3``, ``cv4``) whose last conv stays float.

    Returns:
        Node names.
    """
    branches = set(float_branches)
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    head_last = [n for n in model.graph.node if _HEAD_LAST_CONV.search(n.name)]
    if not head_last:
        raise RuntimeError(
            "cannot find the YOLOv8-seg head convs (is this an ultralytics export?)"
        )
    excluded: set[str] = set()
    stack = [out for n in head_last for out in n.output]
    while stack:  # every node downstream of the head's last convs is the decode tail
        for node in consumers.get(stack.pop(), []):
            if node.name not in excluded:
                excluded.add(node.name)
                stack.extend(node.output)
    for node in head_last:
        if _HEAD_LAST_CONV.search(node.name).group(2) in branches:  # type: ignore[union-attr]
            excluded.add(node.name)
    return sorted(excluded)


class _Reader:
    """onnxruntime ``CalibrationDataReader`` over letterboxed images.

    Supports ``len`` and ``set_range`` so that quantize_static's ``CalibStridedMinMax`` can
    calibrate a few images at a time (ranges merged between strides): the calibrator keeps every
    intermediate tensor of every image it holds, ~1.5 GB per image for FastSAM-x at 640.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        input_name: str,
        imgsz: tuple[int, int],
        dynamic: bool,
        progress: Any = None,
    ) -> None:
        self._images = images
        self._it: Iterator[np.ndarray] = iter(images)
        self._name, self._imgsz, self._dynamic = input_name, imgsz, dynamic
        self._progress = progress

    def __len__(self) -> int:
        return len(self._images)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._images[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        img = next(self._it, None)
        if img is None:
            return None
        if self._progress is not None:
            self._progress.update(1)
        tensor, _ = letterbox(img, self._imgsz, auto=self._dynamic)
        return {self._name: tensor}

    def rewind(self) -> None:  # pragma: no cover - not used by the static calibrators here
        raise NotImplementedError


def calibration_stride(n: int, most: int = 4) -> int:
    """Largest divisor of ``n`` that is <= ``most`` (onnxruntime needs ``n % stride == 0``)."""
    return max(d for d in range(1, max(min(most, n), 1) + 1) if n % d == 0)


def write_int8_detector(
    fp32_path: Path,
    int8_path: Path,
    images: list[np.ndarray],
    imgsz: tuple[int, int],
    dynamic: bool = False,
    config: QuantConfig | None = None,
) -> dict[str, Any]:
    """Write a static QDQ int8 copy of the detector.

    Args:
        fp32_path: Float detector.
        int8_path: Output file.
        images: Calibration images, (H, W, 3) uint8 BGR (letterboxed here exactly as at runtime).
        imgsz: Letterbox target (the bundle's ``input.imgsz``).
        dynamic: Minimum-rectangle letterbox (dynamic-shape bundles).
        config: Recipe (defaults: :class:`QuantConfig`).

    Returns:
        The recipe as recorded in the manifest.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from tqdm import tqdm

    config = config or QuantConfig(num_images=len(images))
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if config.method not in methods:
        raise ValueError(
            f"calibration method: expected one of {list(methods)}, got {config.method!r}"
        )
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    if config.format not in formats:
        raise ValueError(f"quant format: expected one of {list(formats)}, got {config.format!r}")
    act_types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if config.activations not in act_types:
        raise ValueError(
            f"activations: expected one of {list(act_types)}, got {config.activations!r}"
        )
    with tempfile.TemporaryDirectory(prefix="fastsam-quant-") as work:
        prepped = Path(work) / "prepped.onnx"
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=dynamic)
        model = onnx.load(str(prepped))
        exclude = float_nodes(model, config.float_branches)
        if config.float_ops:
            exclude += [n.name for n in model.graph.node if n.op_type in config.float_ops]
        unknown = [k for k in config.float_modules if k not in FLOAT_MODULES]
        if unknown:
            raise ValueError(
                f"float_modules: unknown {unknown}; expected some of {list(FLOAT_MODULES)}"
            )
        for key in config.float_modules:
            exclude += [n.name for n in model.graph.node if FLOAT_MODULES[key].search(n.name)]
        exclude = sorted(set(exclude))
        input_name = model.graph.input[0].name
        extra: dict[str, Any] = {
            "ActivationSymmetric": config.activations == "int8",
            "WeightSymmetric": True,
            # calibrate <= 4 images at a time, ranges merged between strides (memory); NB
            # CalibMaxIntermediateOutputs would be simpler but discards data in onnxruntime 1.32
            "CalibStridedMinMax": calibration_stride(len(images)),
        }
        if config.method == "percentile":
            extra["CalibPercentile"] = 99.999
        with tqdm(total=len(images), desc="int8 calibration", unit="img") as bar:
            quantize_static(
                str(prepped),
                str(int8_path),
                _Reader(images, input_name, imgsz, dynamic, bar),
                quant_format=formats[config.format],
                activation_type=act_types[config.activations],
                weight_type=QuantType.QInt8,
                per_channel=config.per_channel,
                calibrate_method=methods[config.method],
                nodes_to_exclude=exclude,
                extra_options=extra,
            )
    info = config.to_dict()
    info["float_nodes"] = len(exclude)
    return info


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Built-in calibration scenes use their own seed block (held out from training and evaluation).
CALIB_SEED_START = 1_500_000


@dataclass
class CalibrationSet:
    """Calibration images, plus ground-truth masks when they are built-in scenes."""

    images: list[np.ndarray]
    source: str
    gt_masks: list[np.ndarray] | None = None


def load_calibration(
    calib_dir: str | Path | None, imgsz: tuple[int, int], count: int = 24
) -> CalibrationSet:
    """Read up to ``count`` images from ``calib_dir`` or generate built-in scenes.

    Built-in scenes are drawn at the bundle's aspect ratio. Frames from the target camera are
    better (they calibrate the activation ranges the model will really see); a warning says so.

    Raises:
        ValueError: The directory is missing or holds no readable image.
    """
    from edge.io import read_image

    if calib_dir is None:
        from edge.demo.scenes import generate_scene

        _LOGGER.warning(
            "int8 calibration on %d built-in synthetic scenes; pass --calib-images DIR with "
            "frames from the target camera for better int8 accuracy",
            count,
        )
        h, w = imgsz
        scenes = [generate_scene(CALIB_SEED_START + i, w, h) for i in range(count)]
        return CalibrationSet(
            [s.image for s in scenes], "built-in scenes", [s.masks for s in scenes]
        )
    path = Path(calib_dir)
    if not path.is_dir():
        raise ValueError(f"--calib-images: {str(path)!r} is not a directory")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    images = []
    for f in files:
        try:
            images.append(read_image(f))
        except ValueError as exc:
            _LOGGER.warning("skipping calibration image: %s", exc)
    if not images:
        raise ValueError(f"--calib-images: no readable images in {str(path)!r}")
    return CalibrationSet(images, str(path))


Decode = Callable[[list[np.ndarray], tuple[int, int], tuple[int, int]], Any]
"""A detector's outputs, input (h, w) and source (h, w) -> ``edge.postprocess.Detections``
(default: FastSAM's ``prepare_detections`` at the bundle's thresholds)."""


INT8_KERNELS = {
    # this host's fused integer kernels (QLinearConv etc.): its speed, and its numbers, which on
    # x86 without VNNI are not a Pi's (u8 x s8 pair sums saturate; see edge.cpu)
    "host": "all",
    # the same QDQ file with graph optimisations off: float ops on quantized values, no fused
    # integer kernels, so the same numbers on every CPU (what exact int32 kernels compute, up
    # to rounding); the export decides on it
    "reference": "disable",
}


def _agreement(
    fp32_path: Path,
    int8_paths: dict[str, tuple[Path, str]],
    calib: CalibrationSet,
    imgsz: tuple[int, int],
    dynamic: bool,
    conf: float,
    iou: float,
    max_det: int,
    threads: int,
    decode: Decode | None = None,
) -> dict[str, dict[str, Any]]:
    """fp32 once, then each labelled int8 session (path, graph optimisation) against it."""
    import time

    from edge.metrics import mask_agreement, recall_at_iou
    from edge.postprocess import prepare_detections
    from edge.session import create_session

    sessions = {"fp32": create_session(fp32_path, threads=threads)}
    for label, (path, level) in int8_paths.items():
        sessions[label] = create_session(path, threads=threads, optimization=level)
    name = sessions["fp32"].get_inputs()[0].name
    labels = list(int8_paths)
    a2b: dict[str, list[float]] = {k: [] for k in labels}
    b2a: dict[str, list[float]] = {k: [] for k in labels}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    found = dict.fromkeys(sessions, 0)
    total = 0
    for k, img in enumerate(calib.images):
        tensor, info = letterbox(img, imgsz, auto=dynamic)
        results = {}
        order = list(sessions) if k % 2 == 0 else list(sessions)[::-1]  # load noise hits all
        for prec in order:
            t0 = time.perf_counter()
            outputs = sessions[prec].run(None, {name: tensor})
            times[prec].append(time.perf_counter() - t0)
            if decode is not None:
                dets = decode(outputs, info.input_hw, info.source_hw)
            else:
                out0, protos = outputs
                dets = prepare_detections(
                    out0, protos, info.input_hw, info.source_hw, conf, iou, max_det
                )
            results[prec] = dets.to_masks()
        for label in labels:
            agree = mask_agreement(results["fp32"].crops, results[label].crops)
            a2b[label].append(agree["a_to_b"])
            b2a[label].append(agree["b_to_a"])
        if calib.gt_masks is not None:
            gt = calib.gt_masks[k]
            total += len(gt)
            for prec in found:
                found[prec] += recall_at_iou(gt, results[prec].mask)[0]
    fp32_ms = round(1e3 * float(np.median(times["fp32"])), 1)
    reports = {}
    for label in labels:
        report: dict[str, Any] = {
            "images": len(calib.images),
            "kernels": label,
            "mean_iou_fp32_to_int8": round(float(np.mean(a2b[label])), 4),
            "mean_iou_int8_to_fp32": round(float(np.mean(b2a[label])), 4),
            "infer_ms_fp32": fp32_ms,
            "infer_ms_int8": round(1e3 * float(np.median(times[label])), 1),
            "threads": threads,
        }
        report["speedup"] = round(fp32_ms / max(report["infer_ms_int8"], 1e-9), 2)
        if total:
            report["recall_fp32"] = round(found["fp32"] / total, 4)
            report["recall_int8"] = round(found[label] / total, 4)
        reports[label] = report
    return reports


def compare_precisions(
    fp32_path: Path,
    int8_path: Path,
    calib: CalibrationSet,
    imgsz: tuple[int, int],
    dynamic: bool,
    conf: float,
    iou: float,
    max_det: int,
    threads: int = 2,
    kernels: str = "host",
) -> dict[str, Any]:
    """Agreement and speed of the int8 detector against the fp32 one, image by image.

    Mean IoU is measured both ways (each fp32 mask to its best int8 mask, and back); with
    ground truth (built-in scenes) the recall at mask IoU 0.5 of both models too. Inference
    times are medians over the images, the models interleaved so load noise hits both.

    Args:
        kernels: ``"host"`` (this CPU's fused integer kernels) or ``"reference"`` (the
            CPU-independent unfused QDQ graph; its time is not a deployment time).
    """
    if kernels not in INT8_KERNELS:
        raise ValueError(f"kernels: expected one of {list(INT8_KERNELS)}, got {kernels!r}")
    return _agreement(
        fp32_path, {kernels: (int8_path, INT8_KERNELS[kernels])}, calib, imgsz, dynamic,
        conf, iou, max_det, threads,
    )[kernels]  # fmt: skip


def verify_int8(
    fp32_path: Path,
    int8_path: Path,
    calib: CalibrationSet,
    imgsz: tuple[int, int],
    dynamic: bool,
    conf: float,
    iou: float,
    max_det: int,
    threads: int = 2,
    decode: Decode | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`compare_precisions` with both kernels in one pass (fp32 run once).

    Returns:
        ``{"host": report + {"cpu_class": ...}, "reference": report}``.
    """
    from edge.cpu import int8_class

    reports = _agreement(
        fp32_path,
        {k: (int8_path, level) for k, level in INT8_KERNELS.items()},
        calib, imgsz, dynamic, conf, iou, max_det, threads, decode,
    )  # fmt: skip
    reports["host"]["cpu_class"] = int8_class().to_dict()
    return reports


def agreement_of(report: dict[str, Any]) -> float:
    """The smaller of the two mean IoUs (what the refusal threshold applies to)."""
    return min(report["mean_iou_fp32_to_int8"], report["mean_iou_int8_to_fp32"])


def _verify_line(report: dict[str, Any], what: str) -> str:
    line = (
        f"int8 vs fp32 on {report['images']} calibration images ({what}): mean mask IoU "
        f"{report['mean_iou_fp32_to_int8']:.3f} (fp32->int8) / "
        f"{report['mean_iou_int8_to_fp32']:.3f} (int8->fp32)"
    )
    if "recall_int8" in report:
        line += f", recall {report['recall_fp32']:.3f} -> {report['recall_int8']:.3f}"
    return line


# The host and reference agreements may differ by this much before the export warns that this
# CPU computes int8 differently from the target (e.g. x86 without VNNI).
HOST_REFERENCE_TOLERANCE = 0.01


def quantize_detector(
    bundle_dir: Path,
    imgsz: tuple[int, int],
    dynamic: bool,
    thresholds: Thresholds,
    calib_dir: str | Path | None = None,
    config: QuantConfig | None = None,
    min_iou: float = 0.95,
    threads: int = 2,
    decode: Decode | None = None,
) -> QuantSection:
    """Add ``fastsam.int8.onnx`` to a bundle being assembled, after verifying it.

    Quantizes ``bundle_dir/fastsam.fp32.onnx`` (:func:`write_int8_detector`) and compares int8
    with fp32 on the calibration images twice (:func:`verify_int8`): with this host's fused
    kernels and with the CPU-independent reference. Both go into the section (``verify`` = the
    reference, with this host's speed; ``verify_host`` = this host, with its CPU class); it
    warns when they differ by more than :data:`HOST_REFERENCE_TOLERANCE`. When either reference
    mean IoU falls below ``min_iou`` it deletes the int8 file (the bundle keeps fp32) and
    records the refusal.

    Args:
        bundle_dir: The bundle directory being assembled (holds the fp32 detector).
        imgsz: The bundle's ``input.imgsz``.
        dynamic: Minimum-rectangle letterbox (dynamic-shape bundles).
        thresholds: The bundle's default thresholds (the verification's post-processing).
        calib_dir: Calibration image directory (default: built-in synthetic scenes).
        config: Recipe (default :class:`QuantConfig`).
        min_iou: Refuse the int8 model below this mean mask IoU against fp32.
        threads: onnxruntime threads of the verification timings.
        decode: How the detector's outputs become detections (YOLOE bundles score their
            vocabulary); default FastSAM's.

    Returns:
        The ``quantization`` manifest section (``export_bundle`` writes it).

    Raises:
        ValueError: Bad calibration images or recipe.
    """
    cfg = config or QuantConfig()
    calib = load_calibration(calib_dir, imgsz, cfg.num_images)
    cfg = replace(cfg, num_images=len(calib.images))
    fp32, int8 = bundle_dir / "fastsam.fp32.onnx", bundle_dir / "fastsam.int8.onnx"
    recipe = write_int8_detector(fp32, int8, calib.images, imgsz, dynamic, cfg)
    th = thresholds
    reports = verify_int8(
        fp32, int8, calib, imgsz, dynamic, th.conf, th.iou, th.max_det, threads, decode
    )
    host, ref = reports["host"], reports["reference"]
    # the decision is made on the CPU-independent reference; speed comes from this host
    verify = {k: v for k, v in ref.items() if not k.startswith("infer_ms") and k != "speedup"}
    for key in ("infer_ms_fp32", "infer_ms_int8", "speedup"):
        verify[key] = host[key]
    agreement, host_agreement = agreement_of(ref), agreement_of(host)
    cpu = host["cpu_class"]
    print(_verify_line(ref, "reference kernels, CPU-independent"))
    print(
        _verify_line(host, f"this host's kernels, {cpu['name']}")
        + f"; speed-up {host['speedup']:.2f}x ({host['infer_ms_fp32']:.0f} -> "
        f"{host['infer_ms_int8']:.0f} ms, {threads} threads)"
    )
    host_differs = abs(agreement - host_agreement) > HOST_REFERENCE_TOLERANCE
    if host_differs:
        _LOGGER.warning(
            "int8 agreement on this host (%.3f) differs from the CPU-independent reference "
            "(%.3f) by more than %.2f: this CPU (%s) computes int8 differently from a Pi; "
            "numbers measured here are not what a Pi computes. %s",
            host_agreement, agreement, HOST_REFERENCE_TOLERANCE, cpu["name"], cpu["note"],
        )  # fmt: skip
    status = "ok"
    if agreement < min_iou:
        int8.unlink()
        status = f"refused: agreement {agreement:.3f} < {min_iou}"
        print(
            f"int8 model REFUSED (agreement {agreement:.3f} < {min_iou}); the bundle keeps "
            "fp32 only. Try --calib-images with frames from your camera."
        )
    return QuantSection(
        recipe=recipe,
        status=status,
        calibration_source=calib.source,
        verify=verify,
        verify_host=host,
        host_differs=host_differs,
    )

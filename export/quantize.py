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
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.bundle import HeldOut, QuantSection, Thresholds
from edge.preprocess import letterbox
from export.int8plan import INT8_KERNELS

if TYPE_CHECKING:
    from export.int8plan import PlanOptions

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
PERCENTILE = 99.999  # the Percentile calibration's cut (CalibPercentile)
# The histograms that quantize_static gives the histogram methods (onnxruntime's
# create_calibrator defaults, with PERCENTILE): Percentile collects |x| in 2048 bins and
# computes symmetric ranges, Entropy collects x in 128 bins (128 quantized bins).
# :func:`calibrate_ranges` collects both in one pass with exactly these settings.
HISTOGRAMS: dict[str, dict[str, Any]] = {
    "percentile": {"symmetric": True, "num_bins": 2048, "num_quantized_bins": 2048},
    "entropy": {"symmetric": False, "num_bins": 128, "num_quantized_bins": 128},
}
# the onnxruntime whose calibrators calibrate_ranges was checked against (tests/test_quantize.py:
# the same ranges as quantize_static's); with an older one the plan search calibrates each
# method in the quantize step of its first candidate
CALIBRATE_RANGES_SINCE = (1, 32)


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


def prepare_model(fp32_path: Path, out: Path, dynamic: bool = False) -> Path:
    """onnxruntime's quantization pre-processing (shape inference, graph cleanup), once.

    Returns:
        ``out``.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=dynamic)
    return out


def quantize_prepared(
    prepped: Path,
    int8_path: Path,
    images: list[np.ndarray],
    imgsz: tuple[int, int],
    dynamic: bool = False,
    config: QuantConfig | None = None,
    cache: Path | None = None,
    extra_float: Iterable[str] = (),
) -> dict[str, Any]:
    """Quantize a pre-processed model (:func:`prepare_model`); see :func:`write_int8_detector`.

    Args:
        cache: Calibration cache (onnxruntime JSON): calibrated into when missing, read when
            present (then ``images`` are not run), so candidates that differ only in the nodes
            they keep float share one calibration pass. The cache must match ``config.method``.
        extra_float: Further node names kept float (a precision plan's float blocks).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
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
    exclude = sorted(set(exclude) | set(extra_float))
    input_name = model.graph.input[0].name
    del model
    extra: dict[str, Any] = {
        "ActivationSymmetric": config.activations == "int8",
        "WeightSymmetric": True,
        # calibrate <= 4 images at a time, ranges merged between strides (memory); NB
        # CalibMaxIntermediateOutputs would be simpler but discards data in onnxruntime 1.32
        "CalibStridedMinMax": calibration_stride(len(images)),
    }
    if config.method == "percentile":
        extra["CalibPercentile"] = PERCENTILE
    calibrate = cache is None or not cache.is_file()
    with tqdm(
        total=len(images), desc=f"int8 calibration ({config.method})", unit="img",
        disable=not calibrate,
    ) as bar:  # fmt: skip
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
            calibration_cache_path=cache,
        )
    info = config.to_dict()
    info["float_nodes"] = len(exclude)
    return info


def calibrate_ranges_supported() -> bool:
    """Whether this onnxruntime is one :func:`calibrate_ranges` was checked against (at least
    :data:`CALIBRATE_RANGES_SINCE`, with the collector it feeds)."""
    import onnxruntime

    try:
        version = tuple(int(p) for p in onnxruntime.__version__.split(".")[:2])
        from onnxruntime.quantization.calibrate import (  # noqa: F401
            CalibrationDataCollector,
            HistogramCollector,
        )
    except (ImportError, ValueError):
        return False
    return version >= CALIBRATE_RANGES_SINCE


def _calibrated_op_types() -> list[str]:
    """The operator types whose tensors quantize_static calibrates (its default: every type
    it can quantize)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def calibrate_ranges(
    prepped: Path,
    images: list[np.ndarray],
    imgsz: tuple[int, int],
    dynamic: bool,
    caches: dict[str, Path],
) -> None:
    """Calibrate activation ranges into onnxruntime calibration caches, without quantizing:
    :func:`quantize_prepared` then reads them (``cache=``).

    The histogram methods (Percentile, Entropy) share one pass: the images run once through the
    model with every activation exposed, and each stride of images feeds one histogram per
    method (onnxruntime's ``HistogramCollector`` with quantize_static's settings,
    :data:`HISTOGRAMS`), so each cache holds exactly the ranges quantize_static would have
    calibrated for that method alone (same strides, :func:`calibration_stride`). MinMax, if
    asked for too, is a pass of its own (its graph reduces each tensor to its min and max).

    Args:
        prepped: The pre-processed model (:func:`prepare_model`).
        images: Calibration images, (H, W, 3) uint8 BGR.
        imgsz: Letterbox target.
        dynamic: Minimum-rectangle letterbox.
        caches: Method (some of :data:`CALIBRATION_METHODS`) -> cache file to write.

    Raises:
        ValueError: An unknown method, or no image.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, TensorsData, create_calibrator
    from onnxruntime.quantization.calibrate import (
        CalibrationDataCollector,
        HistogramCollector,
        save_tensors_data,
    )
    from tqdm import tqdm

    unknown = [m for m in caches if m not in CALIBRATION_METHODS]
    if unknown:
        raise ValueError(f"calibration: unknown {unknown}; expected some of {CALIBRATION_METHODS}")
    if not images:
        raise ValueError("calibration: no image")
    enums = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    histograms = {
        m: HistogramCollector(method=m, percentile=PERCENTILE, scenario="same", **HISTOGRAMS[m])
        for m in caches
        if m in HISTOGRAMS
    }

    class Collectors(CalibrationDataCollector):
        """Hands each stride's activations to every histogram."""

        def collect(self, name_to_arr: dict[str, Any]) -> None:
            for collector in histograms.values():
                collector.collect(name_to_arr)

        def compute_collection_result(self) -> None:  # each histogram computes its own
            raise NotImplementedError

    passes = (["minmax"] if "minmax" in caches else []) + (["histograms"] if histograms else [])
    input_name = onnx.load(str(prepped), load_external_data=False).graph.input[0].name
    stride = calibration_stride(len(images))
    desc = f"int8 calibration ({' + '.join(caches)})"
    with (
        tempfile.TemporaryDirectory(prefix="fastsam-calib-") as tmp,
        tqdm(total=len(images) * len(passes), desc=desc, unit="img") as bar,
    ):
        for kind in passes:
            calibrator = create_calibrator(
                Path(prepped),
                _calibrated_op_types(),
                augmented_model_path=str(Path(tmp) / f"augmented-{kind}.onnx"),
                # any histogram method: they augment the graph alike
                calibrate_method=enums["minmax" if kind == "minmax" else next(iter(histograms))],
                extra_options={"percentile": PERCENTILE} if kind != "minmax" else {},
            )
            if kind != "minmax":
                calibrator.collector = Collectors()
            reader = _Reader(images, input_name, imgsz, dynamic, bar)
            for start in range(0, len(images), stride):
                reader.set_range(start, start + stride)
                calibrator.collect_data(reader)
            if kind == "minmax":
                save_tensors_data(calibrator.compute_data(), caches["minmax"])
            del calibrator
        for m, collector in histograms.items():
            ranges = TensorsData(enums[m], collector.compute_collection_result())
            save_tensors_data(ranges, caches[m])


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
    with tempfile.TemporaryDirectory(prefix="fastsam-quant-") as work:
        prepped = prepare_model(fp32_path, Path(work) / "prepped.onnx", dynamic)
        return quantize_prepared(prepped, int8_path, images, imgsz, dynamic, config)


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
    calib_dir: str | Path | None,
    imgsz: tuple[int, int],
    count: int = 24,
    offset: int = 0,
    flag: str = "--calib-images",
) -> CalibrationSet:
    """Read up to ``count`` images from ``calib_dir`` or generate built-in scenes.

    Built-in scenes are drawn at the bundle's aspect ratio. Frames from the target camera are
    better (they calibrate the activation ranges the model will really see); a warning says so.

    Args:
        calib_dir: Image directory (sorted by name), or ``None`` for built-in scenes.
        imgsz: The bundle's input size (built-in scenes are drawn at its aspect ratio).
        count: Images wanted.
        offset: Skip this many (the next images after a first set: "more calibration images").
        flag: The option named in errors.

    Raises:
        ValueError: The directory is missing or holds no readable image.
    """
    from edge.io import read_image

    if calib_dir is None:
        from edge.demo.scenes import generate_scene

        if offset == 0:
            _LOGGER.warning(
                "int8 calibration on %d built-in synthetic scenes; pass --calib-images DIR with "
                "frames from the target camera for better int8 accuracy",
                count,
            )
        h, w = imgsz
        seeds = range(CALIB_SEED_START + offset, CALIB_SEED_START + offset + count)
        scenes = [generate_scene(seed, w, h) for seed in seeds]
        return CalibrationSet(
            [s.image for s in scenes], "built-in scenes", [s.masks for s in scenes]
        )
    path = Path(calib_dir)
    if not path.is_dir():
        raise ValueError(f"{flag}: {str(path)!r} is not a directory")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    files = files[offset : offset + count]
    if not files and offset:
        return CalibrationSet([], str(path))
    images = []
    for f in files:
        try:
            images.append(read_image(f))
        except ValueError as exc:
            _LOGGER.warning("skipping calibration image: %s", exc)
    if not images and not offset:
        raise ValueError(f"{flag}: no readable images in {str(path)!r}")
    return CalibrationSet(images, str(path))


Decode = Callable[[list[np.ndarray], tuple[int, int], tuple[int, int]], Any]
"""A detector's outputs, input (h, w) and source (h, w) -> ``edge.postprocess.Detections``
(default: FastSAM's ``prepare_detections`` at the bundle's thresholds)."""


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

    from edge.metrics import crop_recall_at_iou, mask_agreement
    from edge.postprocess import prepare_detections
    from edge.session import create_session
    from edge.types import MaskCrop

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
            gt = [MaskCrop.from_dense(m) for m in calib.gt_masks[k]]
            total += len(gt)
            for prec in found:
                found[prec] += crop_recall_at_iou(gt, results[prec].crops)[0]
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
    decode: Decode | None = None,
    kernels: str = "host",
) -> dict[str, Any]:
    """Agreement and speed of the int8 detector against the fp32 one, image by image.

    Mean IoU is measured both ways (each fp32 mask to its best int8 mask, and back); with
    ground truth (built-in scenes) the recall at mask IoU 0.5 of both models too. Inference
    times are medians over the images, the models interleaved so load noise hits both.

    Args:
        decode: How outputs become detections (YOLOE: its vocabulary scored); default
            FastSAM's decode.
        kernels: ``"host"`` (this CPU's fused integer kernels) or ``"reference"`` (the
            CPU-independent unfused QDQ graph; its time is not a deployment time).
    """
    if kernels not in INT8_KERNELS:
        raise ValueError(f"kernels: expected one of {list(INT8_KERNELS)}, got {kernels!r}")
    return _agreement(
        fp32_path, {kernels: (int8_path, INT8_KERNELS[kernels])}, calib, imgsz, dynamic,
        conf, iou, max_det, threads, decode,
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


def _describe(report: dict[str, Any]) -> str:
    return (
        f"{report['mean_iou_fp32_to_int8']:.3f} / {report['mean_iou_int8_to_fp32']:.3f}, "
        f"recall loss {100 * report['recall_loss']:.1f} pt"
        + (f", {report['speedup']:.2f}x" if "speedup" in report else "")
    )


def quantize_detector(
    bundle_dir: Path,
    imgsz: tuple[int, int],
    dynamic: bool,
    thresholds: Thresholds,
    calib_dir: str | Path | None = None,
    config: QuantConfig | None = None,
    min_iou: float = 0.95,
    threads: int = 2,
    *,
    verify_dir: str | Path | None = None,
    plan: PlanOptions | None = None,
    keep_best: Path | None = None,
    decode: Decode | None = None,
) -> QuantSection:
    """Add ``fastsam.int8.onnx`` to a bundle being assembled: a precision plan chosen and
    verified on held-out images.

    The calibration images are split (every other one held out; or ``verify_dir`` holds the
    verification images and all calibration images calibrate). :func:`export.int8plan.choose_plan`
    tries the fixed recipe, then cheap fixes, then sensitivity-ranked float blocks until the
    held-out agreement reaches ``plan.target`` within the speed floor (``plan.mode == "fixed"``:
    the recipe alone, refused below ``min_iou``). The chosen file is then measured on the
    held-out images with this host's fused kernels and with the CPU-independent reference; the
    verdict is the reference's (``verify``, with this host's speed; ``verify_host`` with its CPU
    class); it warns when they differ by more than :data:`HOST_REFERENCE_TOLERANCE`. A refused
    model is not written (the bundle keeps fp32) and the section says why.

    Args:
        bundle_dir: The bundle directory being assembled (holds the fp32 detector).
        imgsz: The bundle's ``input.imgsz``.
        dynamic: Minimum-rectangle letterbox (dynamic-shape bundles).
        thresholds: The bundle's default thresholds (the verification's post-processing).
        calib_dir: Calibration image directory (default: built-in synthetic scenes).
        config: Base recipe (default :class:`QuantConfig`); ``num_images`` images are read.
        min_iou: ``fixed`` mode: refuse below this held-out mean mask IoU against fp32.
        threads: onnxruntime threads of the verification timings.
        verify_dir: Held-out verification images (default: split off the calibration images).
        plan: How the plan is chosen (default :class:`export.int8plan.PlanOptions`: search).
        decode: How the detector's outputs become detections (YOLOE bundles score their
            vocabulary): outputs, input (h, w), source (h, w) -> ``Detections``; default
            FastSAM's ``prepare_detections``.
        keep_best: Also copy the chosen int8 file, or when refused the best candidate, here
            (experiments comparing plans; the bundle never holds a refused model).

    Returns:
        The ``quantization`` manifest section (``export_bundle`` writes it).

    Raises:
        ValueError: Bad calibration/verification images or recipe.
    """
    from edge.cpu import int8_class
    from export.int8plan import (
        GraphOps,
        HeldOutEval,
        PlanOptions,
        choose_plan,
        every_kth,
        meets,
        split_held_out,
    )

    options = replace(plan or PlanOptions(), fixed_min_iou=min_iou)
    cfg = config or QuantConfig()
    count = cfg.num_images
    calib = load_calibration(calib_dir, imgsz, count)
    if verify_dir is not None:
        cal = calib
        held = load_calibration(verify_dir, imgsz, count, flag="--verify-images")
        held_source = str(verify_dir)
    else:
        cal, held = split_held_out(calib, options.hold_out_every)
        held_source = f"{calib.source}: {every_kth(options.hold_out_every)}, not calibrated on"
    cfg = replace(cfg, num_images=len(cal.images))

    def more() -> list[np.ndarray]:
        return load_calibration(calib_dir, imgsz, count, offset=len(calib.images)).images

    fp32, int8 = bundle_dir / "fastsam.fp32.onnx", bundle_dir / "fastsam.int8.onnx"
    cpu = int8_class()
    # the search measures with this host's kernels where they are exact int8 (a Pi's numbers)
    search_kernels = "reference" if cpu.saturates or cpu.name == "x86-avx2" else "host"
    evaluator = HeldOutEval(fp32, held, imgsz, dynamic, thresholds, threads, decode)
    with tempfile.TemporaryDirectory(prefix="fastsam-int8plan-") as work:
        result = choose_plan(
            fp32, Path(work), cal, more, evaluator, imgsz, dynamic, cfg, options,
            GraphOps(prepare_model, float_nodes, quantize_prepared,
                     calibrate_ranges if calibrate_ranges_supported() else None),
            search_kernels,
        )  # fmt: skip
        host = evaluator.measure(result.best_path, "host", timed=True)
        ref = evaluator.measure(result.best_path, "reference")
        if result.path is not None:
            shutil.copy2(result.path, int8)
        if keep_best is not None:
            shutil.copy2(result.best_path, keep_best)
    host["cpu_class"] = cpu.to_dict()
    verify = dict(ref)
    for key in ("infer_ms_fp32", "infer_ms_int8", "speedup"):
        verify[key] = host[key]
    agreement, host_agreement = agreement_of(ref), agreement_of(host)
    n = len(evaluator)
    print(f"int8 plan ({options.mode}): {result.plan.chosen or 'none'}; tried:")
    for t in result.plan.tried:
        print(
            f"  {'*' if t.name == result.plan.chosen else ' '} {t.name}: "
            f"{t.mean_iou_fp32_to_int8:.3f} / {t.mean_iou_int8_to_fp32:.3f}, recall loss "
            f"{100 * t.recall_loss:.1f} pt"
            + (f", {t.speedup:.2f}x fp32" if t.speedup is not None else "")
        )
    for b in result.plan.float_blocks:
        cost = f", +{b.speed_cost_ms} ms" if b.speed_cost_ms is not None else ""
        print(f"  float {b.block} ({b.nodes} nodes{cost}): {b.reason}")
    print(f"int8 vs fp32 on {n} held-out images (reference kernels, CPU-independent): "
          f"{_describe(ref)}")  # fmt: skip
    print(
        f"int8 vs fp32 on {n} held-out images (this host's kernels, {cpu.name}): "
        f"{_describe(host)} ({host['infer_ms_fp32']:.0f} -> {host['infer_ms_int8']:.0f} ms, "
        f"{threads} threads)"
    )
    host_differs = abs(agreement - host_agreement) > HOST_REFERENCE_TOLERANCE
    if host_differs:
        _LOGGER.warning(
            "int8 agreement on this host (%.3f) differs from the CPU-independent reference "
            "(%.3f) by more than %.2f: this CPU (%s) computes int8 differently from a Pi; "
            "numbers measured here are not what a Pi computes. %s",
            host_agreement, agreement, HOST_REFERENCE_TOLERANCE, cpu.name, cpu.note,
        )  # fmt: skip
    target = options.target
    status = "ok"
    if result.path is None or (options.mode == "search" and not meets(ref, target)):
        if options.mode == "fixed":
            status = f"refused: held-out agreement {agreement:.3f} < {min_iou} (fixed recipe)"
        else:
            floor = (
                f" at >= {target.min_speedup:g}x fp32 on this host"
                if result.plan.speed_floor
                else ""
            )
            status = (
                f"refused: no int8 plan reaches the target ({target.describe()}){floor}; "
                f"best held-out: {_describe(ref)}"
            )
        int8.unlink(missing_ok=True)
        print(
            f"int8 model REFUSED ({status[len('refused: ') :]}); the bundle keeps fp32 only. "
            "Try --calib-images with frames from your camera, or --int8-target / "
            "--int8-min-speedup."
        )
    held_out = HeldOut(n, held_source, len(cal.images), evaluator.recall_basis)
    return QuantSection(
        recipe=result.recipe,
        status=status,
        calibration_source=calib.source,
        verify=verify,
        verify_host=host,
        host_differs=host_differs,
        held_out=held_out,
        plan=result.plan,
    )

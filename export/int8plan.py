"""Held-out int8 verification and the per-block precision plan chosen at export.

One int8 recipe does not keep the masks of every model: a model the recipe was never tuned on
can lose them. So the export measures on images it did not calibrate on (every other calibration
image, or ``--verify-images``) and searches for the cheapest plan that reaches the target:

1. **The fixed recipe** (:class:`export.quantize.QuantConfig`: MinMax ranges, per-channel
   weights, the decode tail and the score/coefficient last convs float).
2. **Cheap fixes**, in order, the first that reaches the target wins: Percentile ranges
   (99.999), a per-tensor mix (a tensor whose MinMax span is more than twice its Percentile
   span takes the Percentile range: its scale is set by outliers), Entropy ranges, and more
   calibration images (twice as many, MinMax). Ranges are calibrated once per method and
   cached (onnxruntime's calibration cache), so each candidate only re-writes the graph; the
   two histogram methods share one pass over the images, and "more images" runs only the
   images not yet calibrated on (:func:`merged_ranges`), each with the same ranges as a
   calibration of its own (:func:`export.quantize.calibrate_ranges`).
3. **Float fallbacks**: a sensitivity pass keeps one block at a time float (a block = the nodes
   under one module path: ``/model.N`` for the backbone and neck, ``/model.22/cv4.0`` or
   ``/model.22/proto`` in the head) on the best cheap-fix candidate and measures the agreement
   gained (with the reference kernels each such candidate runs only from its block on, fed
   the best candidate's tensors: the same numbers, :mod:`export.downstream`); then blocks are
   added greedily by gain, each plan timed against fp32 (interleaved), until the target is
   reached, the speed floor is crossed or ``max_float_blocks`` is spent.

Every candidate but the fixed recipe is first measured on a few held-out images; one whose
agreement there already rules out the target on all of them (:func:`cannot_reach`, an exact
bound) is not measured further or timed. On a model that int8 cannot hold this is most of the
search's cost (docs/benchmarks.md, export time).

The search measures with this host's kernels when they compute exact int8 (VNNI, ARM) and with
the CPU-independent reference otherwise; the chosen plan is then verified with both, and the
verdict is the reference's. Weights stay per-channel in every candidate; bias correction is
not offered by onnxruntime's static quantizer and is not tried (the plan's ``notes`` say so).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import FloatBlock, HeldOut, Int8Plan, Int8Target, PlanTrial, Thresholds
from edge.preprocess import letterbox

_LOGGER = logging.getLogger(__name__)

# a block: /model.N, or a head branch /model.N/cv2.0 ... /model.N/proto
# (YOLOE's head branches may lack the /model.N scope, and have cv5 and one2one_ copies)
_BLOCK = re.compile(r"^(/model\.\d+)?(/(?:one2one_)?(?:cv[2-5]\.\d+|proto))?/")
PLAN_MODES = ("search", "fixed")
INT8_KERNELS = {
    # this host's fused integer kernels (QLinearConv etc.): its speed, and its numbers, which on
    # x86 without VNNI are not a Pi's (u8 x s8 pair sums saturate; see edge.cpu)
    "host": "all",
    # the same QDQ file with graph optimisations off: float ops on quantized values, no fused
    # integer kernels, so the same numbers on every CPU (what exact int32 kernels compute, up
    # to rounding); the export decides on it
    "reference": "disable",
}


@dataclass(frozen=True)
class GraphOps:
    """The quantizer's graph steps, passed in by :mod:`export.quantize` (which runs the plan
    search, so this module cannot import it).

    Attributes:
        prepare: ``(fp32, out, dynamic) -> out``: onnxruntime's pre-processing, once.
        float_nodes: ``(model, float_branches) -> names``: the fixed recipe's float nodes.
        quantize: ``(prepped, out, images, imgsz, dynamic, config, cache=, extra_float=)
            -> recipe``: one candidate, calibration cached.
        calibrate: ``(prepped, images, imgsz, dynamic, {method: cache})``: ranges only, the
            histogram methods in one pass (:func:`export.quantize.calibrate_ranges`); ``None``:
            each method is calibrated by the quantize step of its first candidate.
    """

    prepare: Callable[[Path, Path, bool], Path]
    float_nodes: Callable[[Any, Iterable[str]], list[str]]
    quantize: Callable[..., dict[str, Any]]
    calibrate: Callable[..., None] | None = None


# the most memory the sensitivity pass gives the tensors the block candidates take from the
# plan they are ranked against (HeldOutEval.measure_variants; FastSAM-s at 640: 120 MB an image)
VARIANT_FEED_BYTES = 1 << 30
# the cheap fixes, in the order tried (names as recorded in the plan)
CHEAP_FIXES = ("percentile", "mixed", "entropy", "more-images")
# the fixes whose ranges come from histograms of every activation (calibrated in one pass)
HISTOGRAM_FIXES = ("percentile", "entropy")
MIXED_SPAN_RATIO = 2.0


@dataclass(frozen=True)
class PlanOptions:
    """How the export chooses the int8 plan.

    Attributes:
        mode: ``search`` (cheap fixes, then float fallbacks) or ``fixed`` (the recipe as
            given, verified held-out; refused below ``fixed_min_iou``).
        target: What the plan must reach on the held-out images.
        max_float_blocks: Most blocks the greedy fallback keeps float.
        hold_out_every: Without ``--verify-images``, every k-th calibration image is held out
            (2: half of them; 8 held-out images of 32 passed a model that missed the target on
            16 fresh scenes, docs/benchmarks.md "int8 precision plans").
        fixed_min_iou: ``fixed`` mode's refusal threshold (the smaller mean IoU, held-out).
        fixes: Cheap fixes tried, in order (some of :data:`CHEAP_FIXES`).
        blocks: Blocks the sensitivity pass may keep float (``None``: every block).
        sensitivity_images: Held-out images the sensitivity pass ranks blocks on, and that
            every candidate is screened on first (:func:`cannot_reach`; the plans that may
            pass are measured on all of them).
        speed_floor: Whether plans must reach ``target.min_speedup`` on this host (and are
            timed): ``None`` = where this host's int8 kernels are exact (VNNI, ARM), i.e. where
            its int8 speed says something of a Pi's; an x86 host without VNNI runs other
            (saturating) kernels, so there the floor is not applied and recorded as such.
    """

    mode: str = "search"
    target: Int8Target = field(default_factory=Int8Target)
    max_float_blocks: int = 6
    hold_out_every: int = 2
    fixed_min_iou: float = 0.95
    fixes: tuple[str, ...] = CHEAP_FIXES
    blocks: tuple[str, ...] | None = None
    sensitivity_images: int = 4
    speed_floor: bool | None = None

    def __post_init__(self) -> None:
        if self.mode not in PLAN_MODES:
            raise ValueError(f"--int8-plan: expected one of {list(PLAN_MODES)}, got {self.mode!r}")
        if self.hold_out_every < 2:
            raise ValueError(f"hold_out_every: expected >= 2, got {self.hold_out_every}")
        unknown = [f for f in self.fixes if f not in CHEAP_FIXES]
        if unknown:
            raise ValueError(f"fixes: unknown {unknown}; expected some of {list(CHEAP_FIXES)}")


def every_kth(k: int) -> str:
    """``every other image``, ``every 3rd image``, ``every 4th image`` ..."""
    return {2: "every other image", 3: "every 3rd image"}.get(k, f"every {k}th image")


def split_held_out(calib: Any, every: int = 4) -> tuple[Any, Any]:
    """Split calibration images: every ``every``-th is held out, the rest calibrate.

    Args:
        calib: :class:`export.quantize.CalibrationSet`.
        every: Hold out images ``every - 1, 2 * every - 1, ...``.

    Returns:
        ``(calibrate, held_out)`` calibration sets (ground truth split alike).

    Raises:
        ValueError: Fewer than ``every`` images (nothing could be held out).
    """
    n = len(calib.images)
    if n < every:
        raise ValueError(
            f"--calib-count: {n} image(s) cannot be split into calibration and held-out "
            f"verification images (every {every}th is held out); give at least {every}, or "
            "--verify-images DIR"
        )
    held = [i for i in range(n) if i % every == every - 1]
    cal = [i for i in range(n) if i % every != every - 1]

    def pick(idx: list[int], what: str) -> Any:
        gt = None if calib.gt_masks is None else [calib.gt_masks[i] for i in idx]
        return type(calib)([calib.images[i] for i in idx], f"{calib.source} ({what})", gt)

    return pick(cal, "calibration part"), pick(held, f"{every_kth(every)}, held out")


def blocks_of(model: Any, skip: set[str]) -> dict[str, list[str]]:
    """Group the nodes of a YOLOv8-seg graph into blocks by module path.

    Args:
        model: ``onnx.ModelProto``.
        skip: Node names already float (not part of any block).

    Returns:
        Block -> node names, for blocks with at least one Conv (what int8 changes).
    """
    blocks: dict[str, list[str]] = {}
    for node in model.graph.node:
        m = _BLOCK.match(node.name)
        key = (m.group(1) or "") + (m.group(2) or "") if m else ""
        if key and node.name not in skip:
            blocks.setdefault(key, []).append(node.name)
    convs = {n.name for n in model.graph.node if n.op_type == "Conv"}
    return {k: v for k, v in blocks.items() if convs.intersection(v)}


@dataclass(frozen=True)
class _ImageScore:
    """One int8 file's result on one held-out image, against fp32's.

    Attributes:
        a_to_b: Mean best IoU of fp32's masks with int8's.
        b_to_a: The same, int8's masks with fp32's.
        matched: fp32 masks with an int8 mask at IoU >= 0.5.
        n_fp32: fp32 masks.
        gt_found: Ground-truth instances int8 found at IoU >= 0.5 (0 without ground truth).
        seconds: int8 inference time.
    """

    a_to_b: float
    b_to_a: float
    matched: int
    n_fp32: int
    gt_found: int
    seconds: float


class HeldOutEval:
    """fp32 results on the held-out images, computed once; int8 candidates measured against them.

    Everything of fp32's is computed once: its masks, and with ground truth the instances it
    finds. A file's per-image scores are kept (by path, size and modification time), so
    measuring it again on images already measured with the same kernels runs nothing: the
    screening's first images are not re-run when a candidate is then measured in full, nor a
    candidate's full measurement when it is scored on the first images, nor the search's
    reference measurement of the chosen file at the final verification (inference on one file
    and one kernel setting is deterministic). Timed measurements always run every image.

    Args:
        fp32_path: The fp32 detector.
        held: Held-out images (:class:`export.quantize.CalibrationSet`).
        imgsz: Letterbox target.
        dynamic: Minimum-rectangle letterbox.
        thresholds: The bundle's default thresholds (conf, iou, max_det).
        threads: onnxruntime threads.
        decode: Outputs, input (h, w), source (h, w) -> ``Detections`` (default: FastSAM's
            ``prepare_detections`` at ``thresholds``; YOLOE bundles score their vocabulary).
    """

    def __init__(
        self,
        fp32_path: Path,
        held: Any,
        imgsz: tuple[int, int],
        dynamic: bool,
        thresholds: Thresholds,
        threads: int = 2,
        decode: Callable[..., Any] | None = None,
    ) -> None:
        from tqdm import tqdm

        from edge.session import create_session
        from edge.types import MaskCrop

        self.threads, self.th, self.decode = threads, thresholds, decode
        self.fp32 = create_session(fp32_path, threads=threads)
        self.name = self.fp32.get_inputs()[0].name
        self.inputs = [letterbox(img, imgsz, auto=dynamic) for img in held.images]
        self.gt = held.gt_masks
        self.recall_basis = "ground truth" if self.gt is not None else "fp32 masks"
        # ground truth as crops: recall costs the crop overlaps, not K x N x H x W
        self._gt_crops = (
            None if self.gt is None else [[MaskCrop.from_dense(m) for m in g] for g in self.gt]
        )
        self.results = []
        for k in tqdm(range(len(self.inputs)), desc="int8 held-out fp32", unit="img"):
            self.results.append(self._run(self.fp32, k)[0])
        # (found, total) ground-truth instances of fp32, per image
        self._gt32 = [self._gt_found(k, res) for k, res in enumerate(self.results)]
        self._scores: dict[tuple[str, int, int, str], list[_ImageScore]] = {}

    def __len__(self) -> int:
        return len(self.inputs)

    def _run(self, session: Any, k: int) -> tuple[Any, float]:
        tensor, _ = self.inputs[k]
        t0 = time.perf_counter()
        outputs = session.run(None, {self.name: tensor})
        dt = time.perf_counter() - t0
        return self._masks(outputs, k), dt

    def _masks(self, outputs: list[np.ndarray], k: int) -> Any:
        """The detector's outputs on image ``k`` -> its ``MaskResult``."""
        from edge.postprocess import prepare_detections

        info = self.inputs[k][1]
        th = self.th
        if self.decode is not None:
            dets = self.decode(outputs, info.input_hw, info.source_hw)
        else:
            out0, protos = outputs
            dets = prepare_detections(
                out0, protos, info.input_hw, info.source_hw, th.conf, th.iou, th.max_det
            )
        return dets.to_masks()

    def _gt_found(self, k: int, res: Any) -> tuple[int, int]:
        """``(found, total)`` ground-truth instances of image ``k`` in ``res`` ((0, 0) without
        ground truth)."""
        from edge.metrics import crop_recall_at_iou

        if self._gt_crops is None:
            return 0, 0
        return crop_recall_at_iou(self._gt_crops[k], res.crops)

    def _score(self, k: int, res: Any, seconds: float) -> _ImageScore:
        """One int8 result on image ``k`` against fp32's (one IoU matrix for both)."""
        from edge.metrics import crop_iou_matrix, found_at_iou, iou_agreement

        ref = self.results[k]
        iou = crop_iou_matrix(ref.crops, res.crops)
        agree = iou_agreement(iou)
        return _ImageScore(
            agree["a_to_b"], agree["b_to_a"], found_at_iou(iou), len(ref.crops),
            self._gt_found(k, res)[0], seconds,
        )  # fmt: skip

    @staticmethod
    def _key(path: Path, kernels: str) -> tuple[str, int, int, str]:
        st = Path(path).stat()
        return str(Path(path).resolve()), st.st_size, st.st_mtime_ns, kernels

    def measure(
        self, int8_path: Path, kernels: str = "host", timed: bool = False, limit: int | None = None
    ) -> dict[str, Any]:
        """Agreement of one int8 file with fp32 on the held-out images.

        Images this file was already measured on with these kernels are not run again (see the
        class doc); with ``timed`` every image runs.

        Args:
            int8_path: The int8 detector.
            kernels: ``host`` (fused integer kernels) or ``reference`` (CPU-independent).
            timed: Also time fp32 and int8, interleaved image by image (order alternating).
            limit: Only the first ``limit`` images (the sensitivity pass: a ranking, cheaply).

        Returns:
            The report: ``images``, ``kernels``, both mean IoUs, ``recall_of_fp32`` (share of
            fp32's masks with an int8 mask at IoU >= 0.5), ``recall_loss`` and
            ``recall_basis``, GT recalls when known, ``held_out: true``; with ``timed``
            ``infer_ms_fp32``, ``infer_ms_int8`` (medians) and ``speedup`` (the median of the
            per-image fp32/int8 time ratios).
        """
        from edge.session import create_session

        n = len(self.inputs) if limit is None else min(limit, len(self.inputs))
        key = self._key(int8_path, kernels)
        known = self._scores.get(key, [])
        scores = [] if timed else known[:n]
        t32: list[float] = []
        if len(scores) < n:
            sess = create_session(
                int8_path, threads=self.threads, optimization=INT8_KERNELS[kernels]
            )
            for k in range(len(scores), n):
                if timed and k % 2:
                    res, dt8 = self._run(sess, k)
                    t32.append(self._run(self.fp32, k)[1])
                else:
                    if timed:
                        t32.append(self._run(self.fp32, k)[1])
                    res, dt8 = self._run(sess, k)
                scores.append(self._score(k, res, dt8))
            if len(scores) > len(known):
                self._scores[key] = scores
        return self._report(scores, kernels, t32 if timed else None)

    def _report(
        self, scores: list[_ImageScore], kernels: str, t32: list[float] | None = None
    ) -> dict[str, Any]:
        """:meth:`measure`'s report from the per-image scores (timed: with fp32's times)."""
        n = len(scores)
        matched = sum(s.matched for s in scores)
        n_fp32 = sum(s.n_fp32 for s in scores)
        report: dict[str, Any] = {
            "images": n,
            "held_out": True,
            "kernels": kernels,
            "mean_iou_fp32_to_int8": round(float(np.mean([s.a_to_b for s in scores])), 4),
            "mean_iou_int8_to_fp32": round(float(np.mean([s.b_to_a for s in scores])), 4),
            "recall_of_fp32": round(matched / n_fp32, 4) if n_fp32 else 1.0,
            "recall_basis": self.recall_basis,
            "threads": self.threads,
        }
        if self.gt is not None:
            found32 = sum(f for f, _ in self._gt32[:n])
            total = sum(t for _, t in self._gt32[:n])
            found8 = sum(s.gt_found for s in scores)
            report["recall_fp32"] = round(found32 / total, 4) if total else 1.0
            report["recall_int8"] = round(found8 / total, 4) if total else 1.0
            report["recall_loss"] = round(report["recall_fp32"] - report["recall_int8"], 4)
        else:
            report["recall_loss"] = round(1.0 - report["recall_of_fp32"], 4)
        if t32 is not None:
            t8 = [s.seconds for s in scores]
            report["infer_ms_fp32"] = round(1e3 * float(np.median(t32)), 1)
            report["infer_ms_int8"] = round(1e3 * float(np.median(t8)), 1)
            # paired, image by image (fp32 and int8 back to back): robust to load drifting
            ratios = [a / max(b, 1e-9) for a, b in zip(t32, t8, strict=True)]
            report["speedup"] = round(float(np.median(ratios)), 2)
        return report

    def measure_variants(
        self, paths: list[Path], base: Path, kernels: str, limit: int
    ) -> Iterator[dict[str, Any]]:
        """Measure files that each differ from ``base`` in part of the graph (the sensitivity
        pass: one block float each) on the first ``limit`` images, untimed.

        With the reference kernels each file runs only its part downstream of where it differs
        from ``base``, fed ``base``'s values of the tensors where the two meet
        (:mod:`export.downstream`): ``base`` runs once per image for all of them. The first
        file is also run in full on the first image; if the outputs differ in any bit, or the
        tensors handed over would take more than :data:`VARIANT_FEED_BYTES`, every file is run
        in full (:meth:`measure`). With the host's kernels every file is run in full.

        Args:
            paths: The variant files (read when their turn comes: each may be deleted once its
                report is yielded).
            base: The file they were derived from.
            kernels: ``host`` or ``reference``.
            limit: Images (the first ones).

        Yields:
            Each file's :meth:`measure` report, in order.
        """
        import onnx
        from onnx.helper import np_dtype_to_tensor_dtype

        from edge.session import create_session
        from export.downstream import affected_nodes, boundary, downstream, with_outputs

        n = min(limit, len(self.inputs))
        if kernels != "reference" or not paths:
            for path in paths:
                yield self.measure(path, kernels, limit=n)
            return
        level = INT8_KERNELS[kernels]
        base_model = onnx.load(str(base))
        parts: list[set[str] | None] = []
        feed: set[str] = set()
        for path in paths:  # what each variant reads from base
            variant = onnx.load(str(path))
            parts.append(affected_nodes(base_model, variant))
            if parts[-1] is not None:
                feed.update(boundary(variant, parts[-1]))
            del variant
        feed.discard(self.name)
        session = create_session(
            with_outputs(base_model, sorted(feed)), threads=self.threads, optimization=level
        )
        del base_model
        names = [o.name for o in session.get_outputs()]
        values: list[dict[str, np.ndarray]] = []
        for k in range(n):
            tensor = self.inputs[k][0]
            values.append(dict(zip(names, session.run(None, {self.name: tensor}), strict=True)))
            values[k][self.name] = tensor
            if k == 0 and sum(v.nbytes for v in values[0].values()) * n > VARIANT_FEED_BYTES:
                _LOGGER.info("sensitivity: the tensors to hand over are too large; full runs")
                values = []
                break
        del session
        types = {k: np_dtype_to_tensor_dtype(v.dtype) for k, v in (values or [{}])[0].items()}
        checked = False
        for path, aff in zip(paths, parts, strict=True):
            variant = onnx.load(str(path))
            part = downstream(variant, aff, types) if values and aff is not None else None
            outputs = [o.name for o in variant.graph.output]
            del variant
            scores = []
            if part is not None:
                sess = None
                if part.outputs:  # (none: every output is the base's)
                    sess = create_session(part.model, threads=self.threads, optimization=level)
                for k in range(n):
                    ran = (
                        []
                        if sess is None
                        else sess.run(None, {i: values[k][i] for i in part.inputs})
                    )
                    got = dict(zip(part.outputs, ran, strict=True))
                    full = [got[o] if o in got else values[k][o] for o in outputs]
                    if not checked:  # once: the part gives the variant's outputs, bit for bit
                        checked = True
                        whole = create_session(path, threads=self.threads, optimization=level)
                        same = whole.run(None, {self.name: self.inputs[k][0]})
                        if not all(np.array_equal(a, b) for a, b in zip(full, same, strict=True)):
                            _LOGGER.warning(
                                "sensitivity: a block's downstream part computes other numbers "
                                "than its whole graph; every candidate is measured in full"
                            )
                            values = []
                            break
                    scores.append(self._score(k, self._masks(full, k), 0.0))
            if len(scores) < n:
                yield self.measure(path, kernels, limit=n)
                continue
            self._scores[self._key(path, kernels)] = scores
            yield self._report(scores, kernels)


def meets(report: dict[str, Any], target: Int8Target) -> bool:
    """Agreement both ways and recall within the target (speed is checked separately)."""
    return (
        min(report["mean_iou_fp32_to_int8"], report["mean_iou_int8_to_fp32"]) >= target.min_iou
        and report["recall_loss"] <= target.max_recall_loss + 1e-9
    )


def cannot_reach(partial: dict[str, Any], total_images: int, target: Int8Target) -> bool:
    """Whether a candidate measured on the first few held-out images provably misses the
    target on all of them: each image's mean IoU is at most 1, so a mean below
    ``1 - total / measured * (1 - min_iou)`` on ``measured`` images keeps the mean over
    ``total`` images below ``min_iou`` whatever the rest score (16 images, 4 measured, target
    0.97: below 0.88). Exact, not a heuristic: screening never drops a candidate that could pass.

    Args:
        partial: :meth:`HeldOutEval.measure` report on the first ``partial["images"]`` images.
        total_images: Held-out images in all.
        target: The plan's target.

    Returns:
        ``True`` when the candidate need not be measured further.
    """
    n = int(partial["images"])
    if n >= total_images:
        return False
    worst = min(partial["mean_iou_fp32_to_int8"], partial["mean_iou_int8_to_fp32"])
    return worst < 1.0 - total_images / n * (1.0 - target.min_iou)


def score(report: dict[str, Any], target: Int8Target) -> float:
    """One number to rank candidates: the smaller mean IoU, less recall lost beyond target."""
    worst = min(report["mean_iou_fp32_to_int8"], report["mean_iou_int8_to_fp32"])
    return worst - max(0.0, report["recall_loss"] - target.max_recall_loss)


def mixed_ranges(minmax_cache: Path, percentile_cache: Path, out: Path) -> int:
    """Write a MinMax calibration cache that takes, per tensor, the Percentile range when the
    MinMax span is more than :data:`MIXED_SPAN_RATIO` times it (outliers set that tensor's
    scale) and the MinMax range otherwise.

    Returns:
        How many tensors took the Percentile range.
    """
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorsData,
        load_tensors_data,
        save_tensors_data,
    )

    mm, pc = load_tensors_data(minmax_cache), load_tensors_data(percentile_cache)
    data, switched = {}, 0
    for name, td in mm.items():
        lo, hi = np.asarray(td.range_value[0]), np.asarray(td.range_value[1])
        if name in pc:
            plo, phi = (np.asarray(v) for v in pc[name].range_value)
            span, pspan = float(np.max(hi) - np.min(lo)), float(np.max(phi) - np.min(plo))
            if span > MIXED_SPAN_RATIO * max(pspan, 1e-12):
                lo, hi = plo.astype(lo.dtype), phi.astype(hi.dtype)
                switched += 1
        data[name] = (lo, hi)
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), out)
    return switched


def merged_ranges(first: Path, second: Path, out: Path) -> None:
    """Write the MinMax calibration cache of two image sets calibrated apart: per tensor the
    lower low and the higher high, which is what one MinMax calibration over both sets computes
    (onnxruntime merges its strides so), so the first set need not run again.

    Args:
        first: MinMax cache of the first images.
        second: MinMax cache of the others (the same model, so the same tensors).
        out: The merged cache.

    Raises:
        ValueError: The caches are not MinMax or do not hold the same tensors.
    """
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorsData,
        load_tensors_data,
        save_tensors_data,
    )

    a, b = load_tensors_data(first), load_tensors_data(second)
    methods = {a.calibration_method, b.calibration_method}
    if methods != {CalibrationMethod.MinMax} or set(a.keys()) != set(b.keys()):
        raise ValueError(f"merged_ranges: {first} and {second} are not MinMax of one model")
    data = {}
    for name, td in a.items():
        (lo, hi), (blo, bhi) = td.range_value, b[name].range_value
        data[name] = (
            np.minimum(lo, blo).astype(np.asarray(lo).dtype),
            np.maximum(hi, bhi).astype(np.asarray(hi).dtype),
        )
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), out)


def _log(name: str, report: dict[str, Any], screened: bool = False) -> None:
    """One candidate's held-out numbers (INFO)."""
    _LOGGER.info(
        "int8 candidate %s: %.3f / %.3f, recall loss %.3f%s%s", name,
        report["mean_iou_fp32_to_int8"], report["mean_iou_int8_to_fp32"], report["recall_loss"],
        f", {report['speedup']:.2f}x" if "speedup" in report else "",
        f" (screened out on {report['images']} images)" if screened else "",
    )  # fmt: skip


@dataclass
class _Candidate:
    name: str
    calibration: str
    blocks: tuple[str, ...]
    path: Path
    report: dict[str, Any]
    recipe: dict[str, Any]
    screened: bool = False  # measured on the first few images only (:func:`cannot_reach`)


def _trial(c: _Candidate, target: Int8Target) -> PlanTrial:
    r = c.report
    return PlanTrial(
        name=c.name,
        calibration=c.calibration,
        float_blocks=c.blocks,
        mean_iou_fp32_to_int8=r["mean_iou_fp32_to_int8"],
        mean_iou_int8_to_fp32=r["mean_iou_int8_to_fp32"],
        recall_loss=r["recall_loss"],
        speedup=r.get("speedup"),
        meets_target=not c.screened and meets(r, target),
        kernels=r["kernels"],
        images=r["images"] if c.screened else None,
    )


@dataclass
class PlanResult:
    """What :func:`choose_plan` found.

    Attributes:
        path: The chosen int8 file (in the work directory), or ``None`` when refused.
        recipe: The chosen candidate's recipe (manifest keys).
        plan: The typed plan for ``bundle.json``.
        fixed: The fixed recipe's held-out report (for the side-by-side).
        best_path: The chosen file, or when refused the best candidate's (for the record).
    """

    path: Path | None
    recipe: dict[str, Any]
    plan: Int8Plan
    fixed: dict[str, Any]
    best_path: Path


def choose_plan(
    fp32_path: Path,
    work: Path,
    cal: Any,
    more: Callable[[], list[np.ndarray]],
    evaluator: HeldOutEval,
    imgsz: tuple[int, int],
    dynamic: bool,
    config: Any,
    options: PlanOptions,
    ops: GraphOps,
    kernels: str = "host",
) -> PlanResult:
    """Search the cheapest int8 plan that reaches ``options.target`` (see the module doc).

    Args:
        fp32_path: The fp32 detector.
        work: Scratch directory (candidates and calibration caches).
        cal: Calibration part (:class:`export.quantize.CalibrationSet`).
        more: Returns further calibration images (the "more images" fix; may be empty).
        evaluator: The held-out images with their fp32 results.
        imgsz: Letterbox target.
        dynamic: Minimum-rectangle letterbox.
        config: The base :class:`export.quantize.QuantConfig` (the fixed recipe).
        options: Mode, target, limits.
        ops: The quantizer's graph steps (:data:`export.quantize.GRAPH_OPS`).
        kernels: Kernels the search measures with (``host`` where they are exact).

    Returns:
        The chosen file (or ``None``: no plan within the speed floor reaches the target), with
        the plan and the fixed recipe's report.
    """
    import onnx
    from tqdm import tqdm

    target = options.target
    floor = kernels == "host" if options.speed_floor is None else options.speed_floor
    prepped = ops.prepare(fp32_path, work / "prepped.onnx", dynamic)
    model = onnx.load(str(prepped))
    base_float = set(ops.float_nodes(model, config.float_branches))
    blocks = blocks_of(model, base_float)
    del model
    candidates = sorted(blocks) if options.blocks is None else list(options.blocks)
    missing = [b for b in candidates if b not in blocks]
    if missing:
        raise ValueError(f"blocks: {missing} not in this model (it has {sorted(blocks)})")
    caches: dict[str, Path] = {}
    tried: list[_Candidate] = []
    counter = iter(range(10_000))

    n_screen = options.sensitivity_images

    def rewrite(
        calibration: str, chosen_blocks: tuple[str, ...], images: list[np.ndarray] | None = None
    ) -> tuple[Path, dict[str, Any]]:
        """One candidate file (its calibration cached, or calibrated first) and its recipe."""
        method = {"mixed": "minmax", "more-images": "minmax"}.get(calibration, calibration)
        cache = caches.get(calibration) or work / f"ranges-{calibration}.json"
        caches[calibration] = cache
        if ops.calibrate is not None and calibration in HISTOGRAM_FIXES and not cache.is_file():
            # every histogram method the search may try, from one pass over the images
            todo = {f: work / f"ranges-{f}.json" for f in options.fixes if f in HISTOGRAM_FIXES}
            todo = {f: p for f, p in todo.items() if not p.is_file()} | {calibration: cache}
            ops.calibrate(prepped, cal.images, imgsz, dynamic, todo)
            caches.update(todo)
            if len(todo) > 1:
                notes["histograms"] = (
                    f"{' and '.join(todo)} ranges from one pass over the calibration images "
                    "(one histogram each, onnxruntime's settings)"
                )
        extra = [n for b in chosen_blocks for n in blocks[b]]
        path = work / f"cand-{next(counter)}.onnx"
        recipe = ops.quantize(
            prepped, path, images if images is not None else cal.images, imgsz, dynamic,
            replace(config, method=method), cache=cache, extra_float=extra,
        )  # fmt: skip
        recipe["calibration"] = calibration
        if chosen_blocks:
            recipe["float_blocks"] = list(chosen_blocks)
        return path, recipe

    def candidate(
        name: str, calibration: str, chosen_blocks: tuple[str, ...], timed: bool = True,
        images: list[np.ndarray] | None = None, screen: bool = True,
    ) -> _Candidate:  # fmt: skip
        path, recipe = rewrite(calibration, chosen_blocks, images)
        report, screened = None, False
        if screen and n_screen < len(evaluator):
            # a few images first: a candidate that provably misses costs no full measurement
            first = evaluator.measure(path, kernels, limit=n_screen)
            if cannot_reach(first, len(evaluator), target):
                report, screened = first, True
        if report is None:
            report = evaluator.measure(path, kernels, timed=timed and floor)
        c = _Candidate(name, calibration, chosen_blocks, path, report, recipe, screened)
        tried.append(c)
        _log(name, report, screened)
        return c

    first: dict[Path, float] = {}

    def first_score(c: _Candidate) -> float:
        """The score on the first ``n_screen`` images: candidates compared on one basis."""
        if c.path not in first:
            first[c.path] = score(
                c.report if c.screened else evaluator.measure(c.path, kernels, limit=n_screen),
                target,
            )
        return first[c.path]

    def fast_enough(c: _Candidate) -> bool:
        return not floor or c.report.get("speedup", 0.0) >= target.min_speedup

    def ok(c: _Candidate) -> bool:
        return not c.screened and meets(c.report, target) and fast_enough(c)

    notes = {
        "per-channel weights": "in every candidate (int8 symmetric per output channel)",
        "bias correction": "not offered by onnxruntime's static quantizer; not tried",
    }
    if not floor:
        notes["speed floor"] = (
            f"not applied: this host's int8 kernels ({kernels} measured the agreement) are not "
            "the exact ones a Pi runs, so its int8 speed says nothing of a Pi's; plans untimed"
        )
    fixed = candidate("fixed", "minmax", (), screen=False)  # in full: the side-by-side
    chosen: _Candidate | None = fixed if ok(fixed) else None
    sensitivity: dict[str, float] = {}
    if options.mode == "fixed":  # the old rule: refused below fixed_min_iou, no speed floor
        worst = min(fixed.report["mean_iou_fp32_to_int8"], fixed.report["mean_iou_int8_to_fp32"])
        chosen = fixed if worst >= options.fixed_min_iou else None
    elif chosen is None:
        best = fixed
        fixes = tqdm(options.fixes, desc="int8 cheap fixes", unit="fix")
        for fix in fixes:
            if fix == "mixed":
                if "percentile" not in caches:
                    continue
                switched = mixed_ranges(caches["minmax"], caches["percentile"], work / "m.json")
                caches["mixed"] = work / "m.json"
                notes["mixed ranges"] = f"{switched} tensors took the Percentile range"
                c = candidate("mixed (per tensor)", "mixed", ())
            elif fix == "more-images":
                extra_images = more()
                if not extra_images:
                    notes["more images"] = "no further calibration images available"
                    continue
                notes["more images"] = f"{len(cal.images) + len(extra_images)} images"
                if ops.calibrate is not None:  # the first images' ranges are known: run the rest
                    ops.calibrate(prepped, extra_images, imgsz, dynamic,
                                  {"minmax": work / "ranges-extra.json"})  # fmt: skip
                    caches["more-images"] = work / "ranges-more-images.json"
                    merged_ranges(caches["minmax"], work / "ranges-extra.json",
                                  caches["more-images"])  # fmt: skip
                    notes["more images"] += (
                        f" (MinMax ranges of the {len(cal.images)} calibration images widened by "
                        f"those of {len(extra_images)} more)"
                    )
                c = candidate("more images", "more-images", (), images=cal.images + extra_images)
            else:
                c = candidate(fix, fix, ())
            if first_score(c) > first_score(best):
                best = c
            if ok(c):
                chosen = c
                break
        fixes.close()
        if chosen is None:
            # ranked on a few held-out images against the best candidate on the same images
            # (each block's candidate differs from it there only downstream of the block)
            n_sens = options.sensitivity_images
            base_score = first_score(best)
            files = [
                rewrite(best.calibration, (b,))[0]
                for b in tqdm(candidates, desc="int8 sensitivity (rewrites)", unit="block")
            ]
            reports = evaluator.measure_variants(files, best.path, kernels, n_sens)
            for b, path, report in zip(
                candidates,
                files,
                tqdm(reports, total=len(files), desc="int8 sensitivity", unit="block"),
                strict=True,
            ):
                sensitivity[b] = round(score(report, target) - base_score, 4)
                _log(f"float {b}", report)
                path.unlink()
            ranked = [b for b, g in sorted(sensitivity.items(), key=lambda kv: -kv[1]) if g > 0]
            steps = ranked[: options.max_float_blocks]
            for i in tqdm(range(1, len(steps) + 1), desc="int8 float fallbacks", unit="plan"):
                c = candidate(f"{best.name} + float {', '.join(steps[:i])}", best.calibration,
                              tuple(steps[:i]))  # fmt: skip
                if c.screened:  # not timed: one more float block, then the speed floor
                    continue
                if not fast_enough(c):
                    notes["speed floor"] = (
                        f"{c.name}: {c.report.get('speedup')}x < {target.min_speedup}x; "
                        "no more blocks kept float"
                    )
                    break
                if ok(c):
                    chosen = c
                    break
            if not ranked:
                notes["float fallbacks"] = "no single block raised the agreement"
        screened = [c.name for c in tried if c.screened]
        if screened:
            notes["screening"] = (
                f"{len(screened)} candidate(s) measured on the first {n_screen} held-out images "
                f"only: their mean IoU there keeps the {len(evaluator)}-image mean below the "
                "target whatever the other images score"
            )
    float_blocks: list[FloatBlock] = []
    if chosen is not None and chosen.blocks:
        # timed candidates of the chosen calibration, by their float blocks
        timed = [c for c in tried if "infer_ms_int8" in c.report]
        prev = {c.blocks: c for c in timed if c.calibration == chosen.calibration}
        for i, b in enumerate(chosen.blocks):
            before = prev.get(chosen.blocks[:i])
            after = prev.get(chosen.blocks[: i + 1])
            cost = None
            if before is not None and after is not None:
                cost = round(after.report["infer_ms_int8"] - before.report["infer_ms_int8"], 1)
            why = f"sensitivity: +{sensitivity[b]:.4f} agreement when float alone"
            float_blocks.append(FloatBlock(b, len(blocks[b]), why, cost))
    plan = Int8Plan(
        mode=options.mode,
        target=target,
        chosen=chosen.name if chosen is not None else "",
        meets_target=chosen is not None and meets(chosen.report, target),
        float_blocks=tuple(float_blocks),
        tried=tuple(_trial(c, target) for c in tried),
        sensitivity=sensitivity,
        notes=notes,
        speed_floor=floor,
    )
    out = None
    if chosen is not None:
        out = work / "chosen.onnx"
        shutil.copy2(chosen.path, out)
    # refused: the best fully measured candidate is what gets recorded and re-verified
    best = chosen or max(tried, key=lambda c: (not c.screened, score(c.report, target)))
    return PlanResult(out, best.recipe, plan, fixed.report, best.path)


def held_out_section(images: int, source: str, calibration_images: int, basis: str) -> HeldOut:
    """The typed ``quantization.held_out``."""
    return HeldOut(images, source, calibration_images, basis)

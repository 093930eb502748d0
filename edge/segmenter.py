"""``Segmenter``: a loaded bundle plus the everything-mode FastSAM pipeline."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from edge.bundle import BundleManifest, read_manifest, verify_file
from edge.errors import BundleError, InputError
from edge.postprocess import (
    MaskResampler,
    apply_full_box,
    assemble_mask,
    box_roi,
    decode_predictions,
    nms,
    scale_boxes_to_source,
)
from edge.preprocess import letterbox, normalize_image
from edge.session import create_session, default_threads
from edge.types import MaskCrop, Masks

_LOGGER = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _resampler(proto_hw: tuple[int, int], source_hw: tuple[int, int]) -> MaskResampler:
    """Cached per (proto, source) size: camera frames repeat one size."""
    return MaskResampler.create(proto_hw, source_hw)


def _check_threshold(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name}: expected a finite number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise InputError(f"{name}: expected a value in [0, 1], got {value!r}")
    return float(value)


@dataclass
class Segmenter:
    """A FastSAM bundle loaded into an onnxruntime session.

    Build it with :meth:`load`. It keeps no per-frame state, so one instance can serve a stream
    of frames (calls are not thread-safe only in the sense that onnxruntime serialises them).

    Attributes:
        bundle_dir: Directory of the bundle.
        manifest: Parsed ``bundle.json``.
        precision: Detector precision in use (``fp32`` or ``int8``).
        threads: Intra-op threads of the session.
        session: The detector session.
    """

    bundle_dir: Path
    manifest: BundleManifest
    precision: str
    threads: int
    session: ort.InferenceSession

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        precision: str | None = None,
        threads: int | None = None,
        verify: bool = True,
    ) -> Segmenter:
        """Load a bundle.

        Args:
            bundle_dir: Bundle directory (with ``bundle.json``).
            precision: ``"fp32"`` or ``"int8"``; default from the manifest.
            threads: onnxruntime intra-op threads; default ``OMP_NUM_THREADS`` or all cores.
            verify: Check the detector's size and sha256 against the manifest.

        Raises:
            BundleError: Missing/corrupt bundle, unknown precision, or a model whose input
                does not match the manifest.
        """
        bundle_dir = Path(bundle_dir)
        manifest = read_manifest(bundle_dir)
        precision = precision or manifest.default_precision
        name = manifest.detector_file(precision)
        path = verify_file(bundle_dir, manifest, name) if verify else bundle_dir / name
        threads = threads if threads is not None else default_threads()
        session = create_session(path, threads=threads)
        _check_session(session, manifest, path)
        _LOGGER.info("loaded %s (%s, %d threads)", path, precision, threads)
        return cls(bundle_dir, manifest, precision, threads, session)

    @property
    def input_name(self) -> str:
        """Name of the detector input tensor."""
        return self.manifest.input.name

    def segment(
        self,
        image: NDArray[np.uint8],
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
    ) -> Masks:
        """Segment everything in one image.

        Args:
            image: (H, W, 3) uint8 BGR image (gray (H, W) and BGRA (H, W, 4) are converted).
            conf: Score threshold (strict ``>``); default from the bundle (0.4).
            iou: NMS IoU threshold; default from the bundle (0.9).
            max_det: Maximum masks; default from the bundle (300).

        Returns:
            :class:`~edge.types.Masks` in score-descending order, with ``timings`` in ms.

        Raises:
            InputError: Bad image or threshold.
        """
        th = self.manifest.thresholds
        conf_t = _check_threshold("conf", th.conf if conf is None else conf)
        iou_t = _check_threshold("iou", th.iou if iou is None else iou)
        max_det = th.max_det if max_det is None else max_det
        if isinstance(max_det, bool) or not isinstance(max_det, int) or max_det < 0:
            raise InputError(f"max_det: expected a non-negative integer, got {max_det!r}")

        t0 = time.perf_counter()
        image = normalize_image(image)
        spec = self.manifest.input
        tensor, info = letterbox(image, spec.imgsz, spec.stride, auto=spec.dynamic)
        t1 = time.perf_counter()
        output0, protos = self.session.run(None, {spec.name: tensor})
        t2 = time.perf_counter()
        result = postprocess_outputs(
            output0, protos, info.input_hw, info.source_hw, conf_t, iou_t, max_det
        )
        t3 = time.perf_counter()
        result.timings.update(
            preprocess=(t1 - t0) * 1e3, infer=(t2 - t1) * 1e3, postprocess=(t3 - t2) * 1e3
        )
        result.metadata.update(
            thresholds={"conf": conf_t, "iou": iou_t, "max_det": max_det},
            input_hw=info.input_hw,
        )
        return result


def postprocess_outputs(
    output0: NDArray[np.float32],
    protos: NDArray[np.float32],
    input_hw: tuple[int, int],
    source_hw: tuple[int, int],
    conf: float,
    iou: float,
    max_det: int,
) -> Masks:
    """Turn raw detector outputs into masks at source resolution.

    Args:
        output0: (1, 5 + nm, N) float32 detector output.
        protos: (1, nm, H_in / 4, W_in / 4) float32 prototypes.
        input_hw: (height, width) of the network input.
        source_hw: (height, width) of the source image.
        conf: Score threshold (strict).
        iou: NMS IoU threshold.
        max_det: Maximum detections.

    Returns:
        Masks (possibly empty) in score-descending order; detections whose mask is empty are
        dropped, as in the reference.
    """
    cand = decode_predictions(output0, conf)
    cand = cand.take(nms(cand.xyxy, cand.confidence, iou, max_det))
    if len(cand) == 0:
        return Masks.empty(*source_hw)
    xyxy = scale_boxes_to_source(cand.xyxy, input_hw, source_hw)
    rois = box_roi(xyxy, source_hw)
    proto = np.ascontiguousarray(protos[0], dtype=np.float32)
    resampler = _resampler((proto.shape[1], proto.shape[2]), source_hw)
    keep: list[int] = []
    crops: list[MaskCrop] = []
    for i, roi in enumerate(rois):
        data = assemble_mask(cand.coefficients[i], proto, roi, resampler)
        if data.any():
            keep.append(i)
            crops.append(MaskCrop(data, int(roi[0]), int(roi[1])))
    idx = np.asarray(keep, dtype=np.intp)
    return Masks(
        xyxy=apply_full_box(xyxy[idx], source_hw),
        confidence=cand.confidence[idx].astype(np.float32),
        crops=tuple(crops),
        image_hw=source_hw,
    )


def _check_session(session: ort.InferenceSession, manifest: BundleManifest, path: Path) -> None:
    """The model's I/O must agree with the manifest (catches a mixed-up bundle)."""
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != manifest.input.name:
        raise BundleError(
            f"model: {str(path)!r} inputs {[i.name for i in inputs]} do not match bundle.json "
            f"input name {manifest.input.name!r}"
        )
    if len(outputs) != 2:
        raise BundleError(f"model: {str(path)!r} has {len(outputs)} outputs, expected 2")
    shape = inputs[0].shape
    if not manifest.input.dynamic:
        expected = [1, 3, *manifest.input.imgsz]
        if list(shape) != expected:
            raise BundleError(
                f"model: {str(path)!r} input shape {shape} does not match bundle.json {expected}"
            )
    ch = outputs[0].shape[1]
    if isinstance(ch, int) and ch != 5 + manifest.num_coefficients:
        raise BundleError(
            f"model: {str(path)!r} output0 has {ch} channels, expected "
            f"{5 + manifest.num_coefficients} (one class + {manifest.num_coefficients} coefficients)"
        )
